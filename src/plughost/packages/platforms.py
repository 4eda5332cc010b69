"""Which platform a package is for, read from the machine code inside it.

A marketplace lists one artifact per platform, named as Go names them
(``GOOS_GOARCH``: ``linux_amd64``, ``darwin_arm64`` ...), plus ``any`` for a
package that runs everywhere. ``detect_platform`` decides which one a package
is, without extracting it:

- ``bin/plugin`` an ELF, Mach-O or PE executable: that binary's platform
  (ELF ``e_machine`` and ``EI_OSABI``, Mach-O ``cputype``, PE ``Machine``);
- ``bin/plugin`` a ``#!`` launcher (a Python plugin), or no ``bin/plugin`` at
  all (a UI-only plugin): ``any``, unless the package carries other native code
  (a vendored ``.so``, an executable helper), whose platform it then takes;
- anything else (a universal Mach-O, binaries of two platforms, bytes that are
  neither a script nor a known executable) is a ValidationError that asks for
  an explicit platform.

Only the first bytes of each candidate file are read, in one pass over the
archive.
"""

from __future__ import annotations

import os
import posixpath
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import ValidationError

__all__ = ["ANY_PLATFORM", "binary_platform", "detect_platform", "is_script"]

ANY_PLATFORM = "any"
"""The platform of a package that runs on every platform (a Python plugin, UI assets)."""

_HEADER_BYTES = 4096  # enough for ELF, Mach-O and a PE header at a usual offset
_NATIVE_SUFFIXES = (".so", ".dylib", ".pyd", ".dll", ".exe")
_BINARY = ("bin", "plugin")

# ELF e_machine -> GOARCH (by class and byte order where one machine has several).
_ELF_MACHINES: dict[int, str] = {
    3: "386",
    8: "mips",  # refined below by class and byte order
    20: "ppc",
    21: "ppc64",  # ppc64le when little-endian
    22: "s390x",
    40: "arm",
    62: "amd64",
    183: "arm64",
    243: "riscv64",
    258: "loong64",
}
# ELF EI_OSABI -> GOOS. Go writes 0 (System V) for Linux and 9 for FreeBSD.
_ELF_OS: dict[int, str] = {0: "linux", 3: "linux", 9: "freebsd", 2: "netbsd", 12: "openbsd"}

_CPU_ARCH_ABI64 = 0x01000000
_MACHO_CPUS: dict[int, str] = {
    7: "386",
    7 | _CPU_ARCH_ABI64: "amd64",
    12: "arm",
    12 | _CPU_ARCH_ABI64: "arm64",
    18 | _CPU_ARCH_ABI64: "ppc64",
}
_MACHO_MAGIC = {
    b"\xcf\xfa\xed\xfe": "<",  # 64-bit, little-endian (every current Mac)
    b"\xce\xfa\xed\xfe": "<",
    b"\xfe\xed\xfa\xcf": ">",
    b"\xfe\xed\xfa\xce": ">",
}
_FAT_MAGIC = (b"\xca\xfe\xba\xbe", b"\xca\xfe\xba\xbf")

_PE_MACHINES: dict[int, str] = {0x14C: "386", 0x8664: "amd64", 0x1C4: "arm", 0xAA64: "arm64"}


def _cannot_tell(detail: str) -> ValidationError:
    return ValidationError(
        detail,
        title="Cannot tell the package's platform",
        suggestions=[
            "give the platform explicitly: --platform GOOS_GOARCH (such as linux_amd64), "
            "or --platform any",
            "publish one package per platform, each with its own bin/plugin",
        ],
    )


def is_script(header: bytes) -> bool:
    """A ``#!`` launcher (shell, Python ...): runs wherever its interpreter does."""
    return header.startswith(b"#!")


def _elf(header: bytes) -> str | None:
    if len(header) < 20:
        return None
    bits64, little = header[4] == 2, header[5] == 1
    osabi = header[7]
    (machine,) = struct.unpack_from("<H" if little else ">H", header, 18)
    arch = _ELF_MACHINES.get(machine)
    goos = _ELF_OS.get(osabi)
    if arch is None or goos is None:
        raise _cannot_tell(
            f"an ELF binary for machine {machine} (OS ABI {osabi}), which plughost cannot name"
        )
    if machine == 8:
        arch = ("mips64" if bits64 else "mips") + ("le" if little else "")
    elif machine == 21 and little:
        arch = "ppc64le"
    return f"{goos}_{arch}"


def _macho(header: bytes) -> str | None:
    order = _MACHO_MAGIC.get(header[:4])
    if order is None or len(header) < 8:
        return None
    (cpu,) = struct.unpack_from(order + "i", header, 4)
    arch = _MACHO_CPUS.get(cpu)
    if arch is None:
        raise _cannot_tell(f"a Mach-O binary for CPU type {cpu:#x}, which plughost cannot name")
    return f"darwin_{arch}"


def _fat(header: bytes) -> str | None:
    if header[:4] not in _FAT_MAGIC or len(header) < 8:
        return None
    (count,) = struct.unpack_from(">I", header, 4)
    if not 0 < count < 20:  # 0xcafebabe is also a Java class file (its version is >= 45)
        return None
    arches = []
    for n in range(count):
        offset = 8 + 20 * n
        if offset + 4 > len(header):
            break
        (cpu,) = struct.unpack_from(">i", header, offset)
        arches.append(_MACHO_CPUS.get(cpu, f"{cpu:#x}"))
    raise _cannot_tell(
        f"a universal Mach-O binary ({', '.join(arches)}): one package serves several platforms"
    )


def _pe(header: bytes) -> str | None:
    if not header.startswith(b"MZ") or len(header) < 0x40:
        return None
    (offset,) = struct.unpack_from("<I", header, 0x3C)
    if offset + 6 > len(header) or header[offset : offset + 4] != b"PE\x00\x00":
        return None
    (machine,) = struct.unpack_from("<H", header, offset + 4)
    arch = _PE_MACHINES.get(machine)
    if arch is None:
        raise _cannot_tell(f"a Windows binary for machine {machine:#x}, which plughost cannot name")
    return f"windows_{arch}"


def binary_platform(header: bytes) -> str | None:
    """The ``GOOS_GOARCH`` of an executable from its first bytes; None if it is not one.

    ValidationError when it is an executable whose platform has no single name
    (a universal Mach-O, an unknown machine).
    """
    if header.startswith(b"\x7fELF"):
        return _elf(header)
    return _macho(header) or _fat(header) or _pe(header)


@dataclass
class _Found:
    binary: bytes | None = None  # bin/plugin's first bytes
    binary_link: str = ""  # bin/plugin's link target, normalised, when it is a link
    headers: dict[str, bytes] | None = None  # other candidates' first bytes, by path


def _parts(name: str) -> tuple[str, ...]:
    return tuple(part for part in name.split("/") if part not in ("", "."))


def _candidate(parts: tuple[str, ...], member: tarfile.TarInfo) -> bool:
    name = parts[-1] if parts else ""
    return bool(member.mode & 0o111) or name.endswith(_NATIVE_SUFFIXES) or ".so." in name


def _scan(path: Path) -> _Found:
    found = _Found(headers={})
    assert found.headers is not None
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            parts = _parts(member.name)
            if parts == _BINARY and member.issym():
                found.binary_link = posixpath.normpath(str(PurePosixPath("bin", member.linkname)))
                continue
            if not member.isfile() or (parts != _BINARY and not _candidate(parts, member)):
                continue
            fileobj = tar.extractfile(member)
            if fileobj is None:
                continue
            header = fileobj.read(_HEADER_BYTES)
            if parts == _BINARY:
                found.binary = header
            else:
                found.headers["/".join(parts)] = header
    return found


def detect_platform(path: str | os.PathLike[str]) -> str:
    """``any`` or the ``GOOS_GOARCH`` a package's native code is built for.

    See the module's docstring for the rules; ValidationError when the package
    does not say (or says two things).
    """
    archive = Path(path)
    try:
        found = _scan(archive)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ValidationError(
            f"{archive}: not a readable gzip tarball: {exc}",
            title="Invalid plugin package",
            suggestions=["build packages with 'plughost pack'"],
        ) from exc
    headers = found.headers or {}
    binary = found.binary
    if binary is None and found.binary_link:
        binary = headers.get(found.binary_link)
        if binary is None:
            raise _cannot_tell(
                f"bin/plugin links to {found.binary_link}, which is not an executable "
                "in the package"
            )
    if binary is not None:
        platform = binary_platform(binary)
        if platform is None and not is_script(binary):
            raise _cannot_tell(
                "bin/plugin is neither a #! launcher nor an ELF, Mach-O or PE executable"
            )
        if platform is not None:
            others = {
                name: other
                for name, header in headers.items()
                if (other := binary_platform(header)) is not None and other != platform
            }
            if others:
                name, other = sorted(others.items())[0]
                raise _cannot_tell(
                    f"bin/plugin is a {platform} binary, but {name} is built for {other}"
                )
            return platform
    natives = {
        name: native for name, header in headers.items() if (native := binary_platform(header))
    }
    platforms = sorted(set(natives.values()))
    if not platforms:
        return ANY_PLATFORM
    if len(platforms) == 1:
        return platforms[0]
    examples = ", ".join(
        f"{next(n for n, p in sorted(natives.items()) if p == platform)} ({platform})"
        for platform in platforms
    )
    raise _cannot_tell(f"the package holds native code for several platforms: {examples}")
