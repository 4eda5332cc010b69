"""Plugin packages: safe extraction, validation, inspection and reproducible packing.

A package is a gzip tarball from a stranger, so nothing in it is trusted.
``safe_extract`` never calls ``tarfile.extractall``: it reads the archive as a
stream and creates every entry itself, through directory file descriptors
opened with ``O_NOFOLLOW``, so no entry can be written through a symlink or
outside the destination. It refuses absolute paths, ``..``, links leaving the
plugin directory, hard links, devices and FIFOs, oversized files and totals
(counted from the bytes really written, not from the headers' claims), too many
entries, duplicates and truncated or corrupt archives (the gzip CRC is checked
to the end). On refusal the destination is emptied again, so the caller only has
to remove the temporary directory it created.

``pack`` is the other side: a byte-for-byte reproducible package of a plugin
source tree (sorted entries, fixed mtimes, no owners, normalised modes).
"""

from __future__ import annotations

import errno
import fnmatch
import gzip
import hashlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, NoReturn

from .. import MAX_PLUGIN_SIZE
from ..errors import PluginInstallError, UnsafeArchiveError, ValidationError
from ..metadata import (
    METADATA_FILE,
    PluginMeta,
    load_meta,
    load_meta_from_tarball,
    validate_plugin_id,
)
from ..store import atomic_replace

__all__ = [
    "DEFAULT_EXCLUDE",
    "MAX_ENTRIES",
    "inspect_package",
    "pack",
    "safe_extract",
    "sha256_file",
    "validate_package_dir",
]

MAX_ENTRIES = 100_000
DEFAULT_EXCLUDE: tuple[str, ...] = (".git", "__pycache__", "node_modules", ".devinfo", "*.pyc")

ProgressCallback = Callable[[int, int], None]

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1024 * 1024
_HEADER_BUDGET = 256 * 1024  # bytes tarfile may read to parse one entry's headers
_MAX_TRAILER = 1024 * 1024  # zero padding tolerated after the end-of-archive marker
_PROGRESS_STEP = 256 * 1024
_DIR_MODE = 0o755
_EXEC_MODE = 0o755
_FILE_MODE = 0o644
_LINK_MODE = 0o777
_BINARY = ("bin", "plugin")
_BAD_PACKAGE_ADVICE = "build plugin packages with 'plughost pack <dir>'"
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, ValueError, UnicodeError)


# --------------------------------------------------------------------------- helpers


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Lower-case hex SHA-256 of a file, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _unsafe(detail: str, title: str = "Unsafe plugin package") -> NoReturn:
    raise UnsafeArchiveError(
        detail,
        title=title,
        suggestions=[
            "do not install this package; ask its author for a clean build",
            _BAD_PACKAGE_ADVICE,
        ],
    )


def _corrupt(archive: Path, cause: object) -> NoReturn:
    raise UnsafeArchiveError(
        f"{archive}: package is truncated or corrupt ({cause})",
        title="Corrupt plugin package",
        suggestions=["download or copy the package again", _BAD_PACKAGE_ADVICE],
    )


def _within(path: str, root: str) -> bool:
    return path == root or os.path.commonpath([root, path]) == root


def _file_mode(mode: int) -> int:
    """0o755 if any execute bit is set, else 0o644: no setuid, setgid, sticky or odd modes."""
    return _EXEC_MODE if mode & 0o111 else _FILE_MODE


def _check_gzip(archive: Path) -> None:
    """Refuse anything that does not start like a gzip file, with a hint for plain tars."""
    try:
        with open(archive, "rb") as fh:
            head = fh.read(512)
    except FileNotFoundError as exc:
        raise PluginInstallError(
            f"package not found: {archive}", title="Package not found"
        ) from exc
    except OSError as exc:
        raise PluginInstallError(f"cannot read package {archive}: {exc.strerror}") from exc
    if not head:
        _unsafe(f"{archive}: file is empty, not a gzip tarball", title="Not a plugin package")
    if head[:2] != _GZIP_MAGIC:
        hint = (
            " (it looks like an uncompressed tar; compress it with gzip)"
            if head[257:262] == b"ustar"
            else ""
        )
        _unsafe(f"{archive}: not a gzip tarball{hint}", title="Not a plugin package")


# --------------------------------------------------------------------------- safe_extract


class _Tap(io.RawIOBase):
    """The decompressed stream as tarfile sees it. It remembers the last header block
    read (to tell a clean end of archive from a damaged header), limits what tarfile
    may read while parsing one header (pax records, long names, sparse maps:
    ``budget``), and refuses backward seeks (which would rewind the gzip stream and
    could loop forever on crafted offsets)."""

    def __init__(self, source: gzip.GzipFile) -> None:
        super().__init__()
        self._source = source
        self.last_block: bytes | None = None
        self.budget: int | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            _unsafe("an entry header has a negative or missing size; refusing")
        if self.budget is not None:
            self.budget -= size
            if self.budget < 0:
                _unsafe(f"an entry header is larger than {_HEADER_BUDGET // 1024} KiB; refusing")
        data = self._source.read(size)
        if size == tarfile.BLOCKSIZE:
            self.last_block = data
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or offset < self._source.tell():
            _unsafe("the archive's headers point backwards; refusing a crafted archive")
        return self._source.seek(offset)

    def tell(self) -> int:
        return self._source.tell()


class _Extractor:
    """One extraction: the destination's fds, the limits and the running counts."""

    def __init__(
        self,
        archive: Path,
        dest: Path,
        *,
        max_total: int,
        max_file: int,
        max_entries: int,
        progress: ProgressCallback | None,
    ) -> None:
        self.archive = archive
        self.max_total = max_total
        self.max_file = max_file
        self.max_entries = max_entries
        self.progress = progress
        self.root_real = os.path.realpath(dest)
        self.root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.total = 0
        self.entries = 0
        self.names: list[str] = []
        self.links: list[str] = []
        self._cached: tuple[tuple[str, ...], int] | None = None
        self._raw: IO[bytes] | None = None
        self._raw_size = 0
        self._reported = -_PROGRESS_STEP

    def close(self) -> None:
        """Release the fds; safe to call twice."""
        self._drop_cache()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    # ---- driving

    def run(self) -> list[str]:
        with open(self.archive, "rb") as raw:
            self._raw = raw
            self._raw_size = os.fstat(raw.fileno()).st_size
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                tap = _Tap(gz)
                tar = self._open_tar(tap)
                with tar:
                    for member in self._members(tar, tap):
                        self._extract(tar, member)
                self._check_end(tap, gz)
        for rel in self.links:
            self._check_link_target(rel, final=True)
        self._report(force=True)
        return self.names

    def _open_tar(self, tap: _Tap) -> tarfile.TarFile:
        tap.budget = _HEADER_BUDGET  # opening reads the first header
        try:
            return tarfile.open(fileobj=tap, mode="r:")
        except _READ_ERRORS as exc:
            _corrupt(self.archive, exc)

    def _members(self, tar: tarfile.TarFile, tap: _Tap) -> Iterator[tarfile.TarInfo]:
        while True:
            tap.budget = _HEADER_BUDGET
            try:
                member = tar.next()
            except _READ_ERRORS as exc:
                _corrupt(self.archive, exc)
            finally:
                tap.budget = None
            if member is None:
                return
            if member.size < 0:
                _corrupt(self.archive, f"entry {member.name!r} has a negative size")
            self.entries += 1
            if self.entries > self.max_entries:
                _unsafe(
                    f"package has more than {self.max_entries} entries; refusing at {member.name!r}"
                )
            yield member
            self._report()

    def _check_end(self, tap: _Tap, gz: gzip.GzipFile) -> None:
        """The archive must end with a zero block (or plain EOF), then only zero padding,
        and the gzip stream must be complete with a matching CRC."""
        last = tap.last_block
        if last and (len(last) < tarfile.BLOCKSIZE or last.count(0) != len(last)):
            _corrupt(
                self.archive, "a damaged entry header where the archive should continue or end"
            )
        seen = 0
        try:
            while chunk := gz.read(_CHUNK):
                seen += len(chunk)
                if chunk.count(0) != len(chunk):
                    _corrupt(self.archive, "unexpected data after the end-of-archive marker")
                if seen > _MAX_TRAILER:
                    _corrupt(
                        self.archive, "more than 1 MiB of padding after the end of the archive"
                    )
        except _READ_ERRORS as exc:
            _corrupt(self.archive, exc)

    def _report(self, *, force: bool = False) -> None:
        if self.progress is None or self._raw is None:
            return
        done = self._raw.tell() if not force else self._raw_size
        if force or done - self._reported >= _PROGRESS_STEP:
            self._reported = done
            self.progress(done, self._raw_size)

    # ---- one entry

    def _extract(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _entry_parts(member.name)
        if not parts:
            if member.isdir():
                return
            _unsafe(
                f"entry {member.name!r} names the plugin directory itself but is not a directory"
            )
        rel = "/".join(parts)
        if member.isdir():
            self._make_dir(parts, rel)
        elif member.issym():
            self._make_symlink(member, parts, rel)
        elif member.isreg():
            self._make_file(tar, member, parts, rel)
        elif member.islnk():
            _unsafe(
                f"entry {member.name!r} is a hard link (to {member.linkname!r}); "
                "hard links are not allowed in plugin packages"
            )
        elif member.isfifo():
            _unsafe(
                f"entry {member.name!r} is a FIFO; special files are not allowed in plugin packages"
            )
        elif member.ischr() or member.isblk():
            kind = "character" if member.ischr() else "block"
            _unsafe(
                f"entry {member.name!r} is a {kind} device; devices are not allowed in plugin packages"
            )
        else:
            _unsafe(f"entry {member.name!r} has an unsupported type {member.type!r}")
        self.names.append(rel)

    def _make_dir(self, parts: tuple[str, ...], rel: str) -> None:
        parent = self._parent_fd(parts, rel)
        try:
            os.mkdir(parts[-1], _DIR_MODE, dir_fd=parent)
        except FileExistsError:
            pass  # a real directory is fine (listed twice, or created for an earlier file)
        except OSError as exc:
            self._write_failed(rel, exc)
        fd = self._open_dir(parent, parts[-1], rel, rel)
        try:
            os.fchmod(fd, _DIR_MODE)
        finally:
            os.close(fd)

    def _make_symlink(self, member: tarfile.TarInfo, parts: tuple[str, ...], rel: str) -> None:
        target = member.linkname
        if not target or "\x00" in target:
            _unsafe(f"symlink {member.name!r} has an empty or invalid target")
        resolved = posixpath.normpath(posixpath.join("/".join(parts[:-1]), target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            _unsafe(
                f"symlink {member.name!r} points to {target!r}, which leaves the plugin directory"
            )
        parent = self._parent_fd(parts, rel)
        try:
            os.symlink(target, parts[-1], dir_fd=parent)
        except FileExistsError:
            _unsafe(f"entry {member.name!r} already exists in the package (duplicate entry)")
        except OSError as exc:
            self._write_failed(rel, exc)
        self.links.append(rel)
        self._check_link_target(rel, final=False)

    def _check_link_target(self, rel: str, *, final: bool) -> None:
        """Links are checked on the real filesystem too: ``d/up -> ..`` then ``x -> d/up/..``
        stays inside on paper but not on disk."""
        real = os.path.realpath(os.path.join(self.root_real, rel))
        if not _within(real, self.root_real):
            target = os.readlink(os.path.join(self.root_real, rel))
            when = "once the package is extracted" if final else "through the links before it"
            _unsafe(
                f"symlink {rel!r} points to {target!r}, which leaves the plugin directory {when}"
            )

    def _make_file(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, parts: tuple[str, ...], rel: str
    ) -> None:
        self._check_size(member.name, member.size, claimed=True)
        parent = self._parent_fd(parts, rel)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(parts[-1], flags, 0o600, dir_fd=parent)
        except FileExistsError:
            _unsafe(f"entry {member.name!r} already exists in the package (duplicate entry)")
        except OSError as exc:
            self._write_failed(rel, exc)
        with open(fd, "wb") as out:  # buffered: write() writes everything or raises
            written = self._copy(tar, member, out)
            try:
                os.fchmod(fd, _file_mode(member.mode))
            except OSError as exc:
                self._write_failed(rel, exc)
        if written != member.size:
            _corrupt(self.archive, f"entry {member.name!r} has {written} of {member.size} bytes")

    def _copy(self, tar: tarfile.TarFile, member: tarfile.TarInfo, out: IO[bytes]) -> int:
        try:
            source = tar.extractfile(member)
        except _READ_ERRORS as exc:
            _corrupt(self.archive, exc)
        if source is None:
            _unsafe(f"entry {member.name!r} cannot be read as a regular file")
        written = 0
        with source:
            while True:
                try:
                    chunk = source.read(_CHUNK)
                except _READ_ERRORS as exc:
                    _corrupt(self.archive, exc)
                if not chunk:
                    return written
                written += len(chunk)
                self.total += len(chunk)
                self._check_size(member.name, written, claimed=False)
                try:
                    out.write(chunk)
                except OSError as exc:
                    self._write_failed(member.name, exc)
                self._report()

    def _check_size(self, name: str, size: int, *, claimed: bool) -> None:
        """``claimed``: the header's size, before writing; else the bytes written so far
        (``self.total`` already counts them), so a lying header cannot pass the limits."""
        if size > self.max_file:
            _unsafe(f"entry {name!r} is larger than the limit of {self.max_file} bytes per file")
        total = self.total + size if claimed else self.total
        if total > self.max_total:
            _unsafe(f"package expands to more than {self.max_total} bytes (at entry {name!r})")

    # ---- directories, never through a symlink

    def _parent_fd(self, parts: tuple[str, ...], rel: str) -> int:
        """An fd of the entry's parent, each component opened with O_NOFOLLOW and
        created (0755) when missing; cached for the common case of siblings."""
        dirs = parts[:-1]
        if self._cached is not None and self._cached[0] == dirs:
            return self._cached[1]
        self._drop_cache()
        fd = self.root_fd
        for depth, name in enumerate(dirs):
            where = "/".join(dirs[: depth + 1])
            try:
                os.mkdir(name, _DIR_MODE, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError as exc:
                self._close_walk(fd)
                self._write_failed(rel, exc)
            try:
                child = self._open_dir(fd, name, rel, where)
            finally:
                self._close_walk(fd)
            fd = child
        if fd != self.root_fd:
            self._cached = (dirs, fd)
        return fd

    def _open_dir(self, parent: int, name: str, rel: str, where: str) -> int:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(name, flags, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                self._write_failed(rel, exc)
        kind = "a file"
        try:
            if stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode):
                kind = "a symlink"
        except OSError:
            pass
        if where == rel:
            _unsafe(f"entry {rel!r} already exists in the package as {kind} (duplicate entry)")
        _unsafe(
            f"entry {rel!r} would be written through {where!r}, which is {kind}, not a directory"
        )

    def _close_walk(self, fd: int) -> None:
        if fd != self.root_fd:
            os.close(fd)

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _write_failed(self, rel: str, exc: OSError) -> NoReturn:
        raise PluginInstallError(
            f"cannot create {rel!r} from the package: {exc.strerror or exc}",
            title="Plugin install failed",
            suggestions=["check free disk space and permissions of the plugins directory"],
        ) from exc


def _entry_parts(name: str) -> tuple[str, ...]:
    """The entry's path components with ``./`` and empty parts removed; refuses
    absolute paths, ``..`` and NUL bytes."""
    if "\x00" in name:
        _unsafe(f"entry {name!r} has a NUL byte in its name")
    if name.startswith("/"):
        _unsafe(
            f"entry {name!r} has an absolute path; entries must be relative to the plugin directory"
        )
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        _unsafe(f"entry {name!r} has a '..' component that would leave the plugin directory")
    return parts


def _check_dest(dest: Path) -> None:
    if not dest.is_dir() or dest.is_symlink():
        raise PluginInstallError(
            f"extraction destination {dest} is not an existing directory",
            suggestions=["create an empty directory for the extraction first"],
        )
    with os.scandir(dest) as entries:
        if any(True for _ in entries):
            raise PluginInstallError(
                f"extraction destination {dest} is not empty",
                suggestions=["extract into a fresh temporary directory"],
            )


def _empty_dir(dest: Path) -> None:
    """Remove what a failed extraction wrote; never follows links."""
    try:
        with os.scandir(dest) as entries:
            for entry in list(entries):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    try:
                        os.unlink(entry.path)
                    except OSError:
                        pass
    except OSError:
        pass


def safe_extract(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    max_total: int = MAX_PLUGIN_SIZE,
    max_file: int = MAX_PLUGIN_SIZE,
    max_entries: int = MAX_ENTRIES,
    progress: ProgressCallback | None = None,
) -> list[str]:
    """Extract the gzip tarball ``archive`` into the existing empty directory ``dest``.

    Returns the extracted entries' relative paths (``./`` stripped). Refuses,
    with UnsafeArchiveError naming the entry, anything listed in the module
    docstring; then ``dest`` is left empty. ``progress(bytes_read, archive_size)``
    is called as compressed bytes are consumed, and once at the end; an exception
    raised by it (to cancel) also empties ``dest`` and propagates.
    """
    archive_path, dest_path = Path(archive), Path(dest)
    _check_gzip(archive_path)
    _check_dest(dest_path)
    extractor = _Extractor(
        archive_path,
        dest_path,
        max_total=max_total,
        max_file=max_file,
        max_entries=max_entries,
        progress=progress,
    )
    try:
        return extractor.run()
    except BaseException:
        extractor.close()
        _empty_dir(dest_path)
        raise
    finally:
        extractor.close()


# --------------------------------------------------------------------------- validation


def validate_package_dir(directory: str | os.PathLike[str]) -> PluginMeta:
    """Check an extracted package (or a source tree) and return its metadata.

    plugin.yaml must be a regular file (not a link) and valid, its id safe, and a
    plugin with backend capabilities needs an executable regular ``bin/plugin``
    that stays inside the directory.
    """
    root = Path(directory)
    _check_metadata_file(root)
    meta = load_meta(root)
    validate_plugin_id(meta.id)
    if meta.has_backend_capabilities():
        _check_binary(root, meta)
    return meta


def _check_metadata_file(root: Path) -> None:
    path = root / METADATA_FILE
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError as exc:
        raise PluginInstallError(
            f"package has no {METADATA_FILE} at its top level ({root})",
            title="Missing plugin.yaml",
            suggestions=[f"put {METADATA_FILE} at the root of the plugin directory"],
        ) from exc
    except OSError as exc:
        raise PluginInstallError(f"cannot read {path}: {exc.strerror}") from exc
    if stat.S_ISLNK(mode):
        raise UnsafeArchiveError(
            f"{METADATA_FILE} is a symlink ({path}); it must be a regular file",
            title="Invalid plugin package",
            suggestions=[f"replace the link with the {METADATA_FILE} file itself"],
        )
    if not stat.S_ISREG(mode):
        raise PluginInstallError(
            f"{METADATA_FILE} is not a regular file ({path})",
            title="Invalid plugin package",
        )


def _check_binary(root: Path, meta: PluginMeta) -> None:
    binary = root.joinpath(*_BINARY)
    caps = ", ".join(meta.capabilities)
    try:
        mode = binary.stat().st_mode
    except FileNotFoundError as exc:
        raise PluginInstallError(
            f"backend plugin (capabilities: {caps}) has no bin/plugin in {root}",
            title="Plugin binary missing",
            suggestions=["build the plugin so that bin/plugin exists before packing"],
            plugin_id=meta.id,
        ) from exc
    except OSError as exc:
        raise PluginInstallError(
            f"cannot read {binary}: {exc.strerror}", plugin_id=meta.id
        ) from exc
    if not _within(os.path.realpath(binary), os.path.realpath(root)):
        raise UnsafeArchiveError(
            f"bin/plugin is a link that leaves the plugin directory ({binary})",
            plugin_id=meta.id,
        )
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a special file"
        raise PluginInstallError(
            f"bin/plugin is not a regular file (it is {kind}) in {root}",
            title="Plugin binary invalid",
            suggestions=["bin/plugin must be the plugin's executable"],
            plugin_id=meta.id,
        )
    if not mode & 0o111:
        raise PluginInstallError(
            f"bin/plugin is not executable in {root}",
            title="Plugin binary not executable",
            suggestions=["run 'chmod +x bin/plugin' before packing"],
            plugin_id=meta.id,
        )


def inspect_package(path: str | os.PathLike[str]) -> PluginMeta:
    """Read and validate plugin.yaml from inside a package, extracting nothing."""
    archive = Path(path)
    _check_gzip(archive)
    meta = load_meta_from_tarball(archive)
    validate_plugin_id(meta.id)
    return meta


# --------------------------------------------------------------------------- pack


def _source_date_epoch() -> int:
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise ValidationError(
            f"SOURCE_DATE_EPOCH must be a non-negative integer of seconds, got {raw!r}",
            suggestions=["unset SOURCE_DATE_EPOCH or set it to e.g. $(git log -1 --format=%ct)"],
        )
    return int(raw)


def _excluded(name: str, exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)


def _file_id(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _walk(
    here: Path, exclude: Sequence[str], skip: frozenset[tuple[int, int] | None], prefix: str = ""
) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of everything to pack: depth first, sorted by name,
    each directory before its contents. ``skip``: (device, inode) of the package being
    written, in case it lies inside the tree."""
    with os.scandir(here) as it:
        children = sorted(it, key=lambda entry: entry.name)
    for entry in children:
        path = Path(entry.path)
        if _excluded(entry.name, exclude) or _file_id(path) in skip:
            continue
        rel = f"{prefix}{entry.name}"
        yield rel, path
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path, exclude, skip, f"{rel}/")


def _tarinfo(rel: str, path: Path, root: Path, mtime: int) -> tarfile.TarInfo:
    st = path.lstat()
    info = tarfile.TarInfo(rel)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISDIR(st.st_mode):
        info.type, info.mode = tarfile.DIRTYPE, _DIR_MODE
    elif stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        lexical = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        leaves = target.startswith("/") or lexical == ".." or lexical.startswith("../")
        if leaves or not _within(os.path.realpath(path), os.path.realpath(root)):
            raise UnsafeArchiveError(
                f"cannot pack symlink {rel!r} -> {target!r}: it leaves the plugin directory",
                title="Unsafe symlink",
                suggestions=[
                    "replace the link with a copy of the file, or point it inside the tree"
                ],
            )
        info.type, info.mode, info.linkname = tarfile.SYMTYPE, _LINK_MODE, target
    elif stat.S_ISREG(st.st_mode):
        info.type, info.mode, info.size = tarfile.REGTYPE, _file_mode(st.st_mode), st.st_size
    else:
        raise PluginInstallError(
            f"cannot pack {rel!r}: not a regular file, directory or symlink",
            suggestions=["remove sockets, FIFOs and devices from the plugin tree"],
        )
    return info


def pack(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> Path:
    """Build a reproducible ``.tar.gz`` of the plugin tree ``source`` at ``out``.

    The same tree gives the same bytes: entries sorted, mtimes 0 (or
    ``SOURCE_DATE_EPOCH``), owners 0 and unnamed, modes 0755/0644, gzip header
    without name or time. Names matching ``exclude`` (any path component) are left
    out; links inside the tree are kept, links leaving it are refused. The tree is
    validated first (validate_package_dir).
    """
    root, target = Path(source), Path(out)
    validate_package_dir(root)
    mtime = _source_date_epoch()

    def write(tmp: Path) -> None:
        skip = frozenset({_file_id(tmp), _file_id(target)} - {None})  # never pack ourselves
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar,
        ):
            for rel, path in _walk(root, exclude, skip):
                info = _tarinfo(rel, path, root, mtime)
                if info.isreg():
                    with open(path, "rb") as data:
                        tar.addfile(info, data)
                else:
                    tar.addfile(info)

    atomic_replace(target, write, 0o644)
    return target
