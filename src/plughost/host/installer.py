"""Installing packages: from a file, from the marketplace, and rolling back.

A package is extracted into a private temp directory next to the plugins and
fully checked there; only then is the running plugin stopped and the
directories swapped, so a bad package never damages a working installation.
The replaced version is kept (``plugins/.previous/<id>``) for rollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .. import MAX_PLUGIN_SIZE
from ..errors import (
    ChecksumMismatchError,
    PlughostError,
    PluginInstallError,
    PluginNotFoundError,
    SignatureInvalidError,
    ValidationError,
)
from ..events import (
    EVENT_INSTALL_ERROR,
    EVENT_INSTALL_FINISHED,
    EVENT_INSTALL_STARTED,
    EVENT_ROLLED_BACK,
    EVENT_UPDATE_COMPLETE,
    EVENT_UPDATE_ERROR,
    EVENT_UPDATE_HELD,
    EVENT_UPDATE_STARTED,
)
from ..fsutil import PRIVATE_DIR, private_dir
from ..metadata import Permissions, PluginMeta, load_meta, set_version
from ..packages.archive import safe_extract, validate_package_dir
from ..packages.signing import (
    TrustedKey,
    UnsignedArtifactError,
    check_download,
    key_id_for,
    verify_manifest,
)
from ..phases import Phase
from ..records import PluginRecord
from ..settings import Settings
from .slot import LockedSlot, PluginSlot
from .table import PluginTable

if TYPE_CHECKING:
    from ..registry.client import DownloadResult, RegistryClient

__all__ = [
    "PREVIOUS_DIR",
    "Installer",
    "PackageLimits",
    "held_reason",
    "sweep_staging",
    "trusted_keys",
    "ungranted",
    "verify_artifact",
]

PREVIOUS_DIR = ".previous"
Progress = Callable[[int, int | None], None]


def _check_source(path: Path) -> None:
    if not path.exists():
        raise PluginInstallError(
            f"{path}: no such file", suggestions=["check the path to the .tar.gz package"]
        )
    if not path.is_file():
        raise PluginInstallError(f"{path}: not a file; expected a .tar.gz plugin package")


_STAGING_PREFIXES = (".install-", ".download-", ".rollback-")


def sweep_staging(plugins_dir: Path) -> None:
    """Remove staging directories a killed host left (call under the root lock)."""
    if not plugins_dir.is_dir():
        return
    for entry in plugins_dir.iterdir():
        if entry.name.startswith(_STAGING_PREFIXES) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def _as_install_error(exc: Exception) -> PlughostError:
    """Every failure of an install is reported as a PlughostError (events need one)."""
    if isinstance(exc, PlughostError):
        return exc
    return PluginInstallError(
        f"install failed: {type(exc).__name__}: {exc}",
        suggestions=["check free disk space and permissions of the plugin root"],
    )


def _swap_in(plugins_dir: Path, staged: Path, plugin_id: str) -> None:
    """Put ``staged`` at plugins/<id>; the old directory becomes the rollback copy."""
    target = plugins_dir / plugin_id
    previous = plugins_dir / PREVIOUS_DIR / plugin_id
    moved = False
    if target.exists():
        private_dir(previous.parent)  # 0700 whatever the umask: rollback runs what is kept here
        if previous.exists():
            shutil.rmtree(previous)
        os.replace(target, previous)
        moved = True
    try:
        os.replace(staged, target)
    except OSError:
        if moved:  # put the working installation back where it was
            os.replace(previous, target)
        raise


@dataclasses.dataclass
class PackageLimits:
    """Limits on one package; parameters, so tests can use small numbers."""

    max_total: int = MAX_PLUGIN_SIZE
    """Total bytes of one package."""
    max_file: int = MAX_PLUGIN_SIZE
    """Bytes of any one file in it."""
    max_entries: int = 100_000


class Installer:
    """Install, update and roll back plugins of one table.

    A package is extracted into a private temp directory next to the plugins
    and fully checked there; only then is the running plugin stopped and the
    directories swapped, so a bad package never damages a working installation.
    """

    def __init__(
        self,
        table: PluginTable,
        marketplace: Callable[[], RegistryClient],
        limits: PackageLimits | None = None,
    ) -> None:
        self._table = table
        self._bus = table.bus
        self._marketplace = marketplace
        self.limits = limits or PackageLimits()

    @property
    def plugins_dir(self) -> Path:
        return self._table.layout.plugins

    def previous_dir(self, plugin_id: str) -> Path:
        return self.plugins_dir / PREVIOUS_DIR / plugin_id

    def previous_version(self, plugin_id: str) -> PluginMeta | None:
        """The version kept for rollback, if any."""
        try:
            return load_meta(self.previous_dir(plugin_id))
        except ValidationError:
            return None

    # -- activation ----------------------------------------------------------------------
    async def _start_if_wanted(self, slot: LockedSlot) -> bool:
        """Start the plugin when it is enabled and the host runs plugins; True if Running."""
        if not (slot.record.enabled and self._table.start_plugins):
            return True
        with contextlib.suppress(PlughostError):  # the record says why it failed
            await slot.start()
        return slot.phase is Phase.RUNNING

    def _hold(self, slot: LockedSlot, granted: Permissions | None, grant: bool) -> bool:
        """Settle the new version's grant; True when it asks for more than was granted
        (like a browser extension's update, it then waits, stopped, for the user).

        ``granted`` None: the installed version was unconfined, so any request is less.
        """
        record, asked = slot.record, slot.record.meta.permissions
        if asked is None or grant or granted is None:
            record.granted = asked
            return False
        record.granted = granted
        more = ungranted(record.meta, granted)
        if not more:
            return False
        why = held_reason(record.meta, more)
        record.last_error = why
        slot.change(Phase.STOPPED, why)
        self._bus.publish(
            EVENT_UPDATE_HELD,
            {"pluginID": slot.id, "version": record.meta.version, "reason": why, "more": more},
        )
        return True

    async def grant_permissions(self, plugin_id: str) -> Permissions | None:
        """Grant what the installed version asks for (releasing a held update) and start it."""
        async with self._table.exclusive(plugin_id) as slot:
            held = bool(ungranted(slot.record.meta, slot.record.granted))
            slot.record.granted = slot.record.meta.permissions
            if held or slot.record.last_error.startswith("held:"):
                slot.record.last_error = ""
                await self._start_if_wanted(slot)
            await self._table.persist()
            return slot.record.granted

    async def _activate(
        self,
        meta: PluginMeta,
        staged: Path,
        reason: str,
        *,
        auto_rollback: bool,
        grant: bool = True,
    ) -> str | None:
        """Stop the old instance, swap directories, record and (if enabled) start the new one.

        An update whose new version does not start is rolled back at once; then the
        reason is returned.
        """
        create = lambda: PluginRecord.new(meta, Phase.UNINSTALLED)  # noqa: E731
        async with self._table.exclusive(meta.id, create=create) as slot:
            replaced = None if slot.created else slot.record.meta.version
            # What the user granted so far: the recorded grant, else (never asked) what the
            # installed version declared; nothing yet for a first install (granted by
            # ``grant``, else held until the user grants it).
            granted = (
                Permissions()
                if slot.created
                else slot.record.granted or slot.record.meta.permissions
            )
            if slot.created:
                slot.change(Phase.INSTALLING, reason)
            else:
                await slot.stop(reason)
            try:
                await asyncio.to_thread(_swap_in, self.plugins_dir, staged, meta.id)
            except OSError:
                if slot.created:  # nothing was there before: forget it again
                    slot.change(Phase.FAILED, "the package could not be put in place")
                    self._table.remove(meta.id)
                else:  # the old version is back in place: run it again
                    await self._start_if_wanted(slot)
                raise
            slot.replaced(meta, reason)
            if self._hold(slot, granted, grant):
                await self._table.persist()
                return None
            started = await self._start_if_wanted(slot)
            slot.record.updated_at = time.monotonic() if replaced is not None else None
            why = None
            if not started and replaced is not None and auto_rollback:
                why = f"version {meta.version} failed to start: {slot.record.last_error}"
                await self._rollback(slot, why)
            await self._table.persist()
            return why

    async def _rollback(self, slot: LockedSlot, why: str) -> None:
        """Swap the kept previous version back in and start it."""
        plugin_id = slot.id
        staged = Path(tempfile.mkdtemp(prefix=".rollback-", dir=self.plugins_dir))
        try:
            await asyncio.to_thread(
                shutil.copytree,
                self.previous_dir(plugin_id),
                staged,
                symlinks=True,
                dirs_exist_ok=True,
            )
            staged.chmod(PRIVATE_DIR)  # as mkdtemp made it: copytree gave it the kept copy's mode
            meta = load_meta(staged)
            await slot.stop("rollback")
            await asyncio.to_thread(_swap_in, self.plugins_dir, staged, plugin_id)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staged, True)
            raise
        from_version = slot.record.meta.version
        slot.replaced(meta, f"rolled back to {meta.version}")
        slot.record.updated_at = None
        self._bus.publish(
            EVENT_ROLLED_BACK,
            {"pluginID": plugin_id, "from": from_version, "to": meta.version, "reason": why},
        )
        await self._start_if_wanted(slot)

    def rollback_if_fresh(self, slot: PluginSlot, reason: str) -> bool:
        """A crash interceptor: a fresh update that crashes inside the window goes back."""
        window = self._table.settings.rollback_window
        updated = slot.record.updated_at
        if not window or updated is None or time.monotonic() - updated > window:
            return False
        if self.previous_version(slot.id) is None:
            return False
        why = (
            f"version {slot.record.meta.version} crashed "
            f"{time.monotonic() - updated:.1f} s after the update: {reason}"
        )
        self._table.tasks.spawn(
            self.auto_rollback(slot.id, why), name=f"plughost:{slot.id}:rollback"
        )
        return True

    async def auto_rollback(self, plugin_id: str, why: str) -> bool:
        """Roll back an update that crashed inside the stability window; False if none is kept."""
        if self.previous_version(plugin_id) is None or plugin_id not in self._table:
            return False
        async with self._table.exclusive(plugin_id) as slot:
            await self._rollback(slot, why)
            await self._table.persist()
        return True

    async def rollback_plugin(self, plugin_id: str) -> PluginMeta:
        """Swap the kept previous version back in (the current one becomes the previous)."""
        if self.previous_version(plugin_id) is None:
            raise PluginNotFoundError(
                f"no previous version of {plugin_id} is kept",
                plugin_id=plugin_id,
                suggestions=["a previous version is kept when an install replaces another"],
            )
        async with self._table.exclusive(plugin_id) as slot:
            await self._rollback(slot, "requested by the user")
            await self._table.persist()
            return slot.record.meta

    # -- installing ----------------------------------------------------------------------
    async def install_from_path(
        self,
        path: str | os.PathLike[str],
        *,
        version: str | None = None,
        expected_id: str | None = None,
        progress: Progress | None = None,
        grant: bool = True,
    ) -> PluginMeta:
        """Install (or update) the plugin packaged at ``path``; events install_*.

        ``expected_id`` (marketplace installs) refuses a package that says it is
        another plugin, so a listing cannot replace a different installed plugin.
        ``grant``: the user agreed to the permissions the package asks for (the CLI
        asks before installing); without it an update asking for more is held.
        """
        source = Path(path).expanduser()
        bus, limits = self._bus, self.limits
        bus.publish(EVENT_INSTALL_STARTED, {"path": str(source)})
        staged: Path | None = None
        try:
            _check_source(source)
            self.plugins_dir.mkdir(parents=True, exist_ok=True)
            staged = Path(tempfile.mkdtemp(prefix=".install-", dir=self.plugins_dir))
            await asyncio.to_thread(
                safe_extract,
                source,
                staged,
                max_total=limits.max_total,
                max_file=limits.max_file,
                max_entries=limits.max_entries,
                progress=(lambda done, total: progress(done, total)) if progress else None,
            )
            meta = await asyncio.to_thread(validate_package_dir, staged)
            # A package cannot bring a .devinfo: it would make the host attach to an
            # address the package chose instead of starting the plugin.
            (staged / ".devinfo").unlink(missing_ok=True)
            if expected_id is not None and meta.id != expected_id:
                raise PluginInstallError(
                    f"the package for {expected_id} says it is plugin {meta.id!r}",
                    plugin_id=expected_id,
                    suggestions=["the marketplace serves the wrong package; report it"],
                )
            if version:  # the marketplace's version wins over the one inside the package
                meta = await asyncio.to_thread(set_version, staged, version)
            why = await self._activate(
                meta, staged, f"installed {meta.version}", auto_rollback=True, grant=grant
            )
            staged = None
            if why is not None:
                raise PluginInstallError(
                    f"{why}; rolled back to {self._table.get(meta.id).record.meta.version}",
                    title="Update rolled back",
                    plugin_id=meta.id,
                    suggestions=[f"see the plugin's log: plughost logs {meta.id}"],
                )
        except Exception as exc:
            error = _as_install_error(exc)
            bus.publish(EVENT_INSTALL_ERROR, {"path": str(source), "error": error.to_dict()})
            if error is exc:
                raise
            raise error from exc
        finally:
            if staged is not None:
                await asyncio.to_thread(shutil.rmtree, staged, True)
        phase = self._table.get(meta.id).phase
        bus.publish(
            EVENT_INSTALL_FINISHED,
            {"pluginID": meta.id, "version": meta.version, "phase": phase.value},
        )
        return meta

    async def install_plugin_version(
        self,
        plugin_id: str,
        version: str,
        *,
        progress: Progress | None = None,
        require_signature: bool = True,
        grant: bool = False,
    ) -> PluginMeta:
        """Download, verify (checksum, Ed25519 signature) and install one marketplace version."""
        client = self._marketplace()
        payload = {"pluginID": plugin_id, "version": version}
        self._bus.publish(EVENT_UPDATE_STARTED, payload)
        workdir: Path | None = None
        try:
            self.plugins_dir.mkdir(parents=True, exist_ok=True)
            workdir = Path(tempfile.mkdtemp(prefix=".download-", dir=self.plugins_dir))
            result = await client.download_artifact(
                plugin_id, version, dest=workdir, progress=progress
            )
            verify_artifact(self._table.settings, result, require_signature=require_signature)
            meta = await self.install_from_path(
                result.path, version=version, expected_id=plugin_id, grant=grant
            )
            with contextlib.suppress(PlughostError):
                await client.record_download(plugin_id, version, result.platform)
        except Exception as exc:
            error = _as_install_error(exc)
            self._bus.publish(EVENT_UPDATE_ERROR, {**payload, "error": error.to_dict()})
            if error is exc:
                raise
            raise error from exc
        finally:
            if workdir is not None:
                await asyncio.to_thread(shutil.rmtree, workdir, True)
        self._bus.publish(EVENT_UPDATE_COMPLETE, payload)
        return meta


def ungranted(meta: PluginMeta, granted: Permissions | None) -> list[str]:
    """What ``meta`` asks for beyond ``granted``, in plain words (empty: it may start).

    No grant recorded (a dev tree, a copied directory) means nothing was withheld.
    """
    if meta.permissions is None or granted is None:
        return []
    return granted.exceeded_by(meta.permissions)


def held_reason(meta: PluginMeta, more: list[str]) -> str:
    """The phase reason and last error of a plugin held for a grant."""
    return f"held: version {meta.version} asks for more than was granted: " + "; ".join(more)


def trusted_keys(settings: Settings) -> list[TrustedKey]:
    """The keys that may sign manifests: the configured list plus the registry's key."""
    keys = [
        TrustedKey(
            key_id=k.key_id or key_id_for(k.public_key_hex),
            public_key_hex=k.public_key_hex,
            retired=k.retired,
        )
        for k in settings.trusted_keys
    ]
    main = settings.registry_public_key.strip().lower()
    if main and all(k.public_key_hex.lower() != main for k in keys):
        keys.append(TrustedKey(key_id=key_id_for(main), public_key_hex=main))
    return keys


def verify_artifact(
    settings: Settings, result: DownloadResult, *, require_signature: bool = True
) -> None:
    """Refuse a download unless a trusted key vouches for exactly these bytes.

    A signed manifest ``{id, version, platform, sha256, size}`` is checked
    against the trusted keys (so keys can rotate); the original scheme, a
    signature over the hex checksum, is accepted only where the settings allow.
    """
    from ..registry.client import verify_download

    signed = result.artifact.manifest
    if signed is None:
        if settings.legacy_signatures_allowed or not require_signature:
            verify_download(
                result, settings.registry_public_key, require_signature=require_signature
            )
            return
        raise UnsignedArtifactError(
            f"{result.plugin_id} {result.version} has no signed manifest, and checksum-only "
            "signatures are not accepted",
            plugin_id=result.plugin_id or None,
            suggestions=[
                "publish it from a registry that signs manifests (plughost registry publish)",
                "or set accept_checksum_signatures = true to accept the original scheme",
            ],
        )
    manifest = verify_manifest(signed.model_dump(mode="json"), trusted_keys(settings))
    listed = result.artifact.checksum.strip().lower()
    if listed and listed != manifest.sha256:
        raise ChecksumMismatchError(
            f"the listing's checksum {listed} contradicts the signed manifest's {manifest.sha256}",
            plugin_id=result.plugin_id or None,
            suggestions=["the marketplace listing was altered; do not install from it"],
        )
    expected = (result.plugin_id, result.version, result.platform)
    if (manifest.id, manifest.version, manifest.platform) != expected:
        raise SignatureInvalidError(
            f"the signed manifest is for {manifest.id} {manifest.version} ({manifest.platform}), "
            f"not {' '.join(expected[:2])} ({expected[2]})",
            plugin_id=result.plugin_id or None,
            suggestions=["the marketplace may be serving a swapped package; do not install it"],
        )
    check_download(
        result.size, result.sha256, expected_size=manifest.size, expected_sha256=manifest.sha256
    )
