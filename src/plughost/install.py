"""Installing packages: from a file, from the marketplace, and rolling back.

A package is extracted into a private temp directory next to the plugins and
fully checked there; only then is the running plugin stopped and the
directories swapped, so a bad package never damages a working installation.
The replaced version is kept (``plugins/.previous/<id>``) for rollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .archive import safe_extract, validate_package_dir
from .errors import (
    ChecksumMismatchError,
    PlughostError,
    PluginInstallError,
    PluginNotFoundError,
    SignatureInvalidError,
    ValidationError,
)
from .events import (
    EVENT_INSTALL_ERROR,
    EVENT_INSTALL_FINISHED,
    EVENT_INSTALL_STARTED,
    EVENT_ROLLED_BACK,
    EVENT_UPDATE_COMPLETE,
    EVENT_UPDATE_ERROR,
    EVENT_UPDATE_STARTED,
)
from .metadata import METADATA_FILE, PluginMeta, load_meta
from .phases import Phase
from .records import PluginRecord
from .settings import Settings
from .signing import (
    TrustedKey,
    UnsignedArtifactError,
    check_download,
    key_id_for,
    verify_manifest,
)

if TYPE_CHECKING:
    from .manager import PluginManager
    from .registry.client import DownloadResult

__all__ = [
    "PREVIOUS_DIR",
    "auto_rollback",
    "install_from_path",
    "install_plugin_version",
    "previous_version",
    "rollback_plugin",
    "sweep_staging",
    "trusted_keys",
    "verify_artifact",
]

PREVIOUS_DIR = ".previous"
Progress = Callable[[int, int | None], None]


def _previous_dir(manager: PluginManager, plugin_id: str) -> Path:
    return manager.plugins_dir / PREVIOUS_DIR / plugin_id


def previous_version(manager: PluginManager, plugin_id: str) -> PluginMeta | None:
    """The version kept for rollback, if any."""
    try:
        return load_meta(_previous_dir(manager, plugin_id))
    except ValidationError:
        return None


def _override_version(directory: Path, version: str) -> PluginMeta:
    """The marketplace's version wins over the one written inside the package."""
    path = directory / METADATA_FILE
    raw: dict[str, Any] = yaml.safe_load(path.read_text())
    raw["version"] = version
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_meta(directory)


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


def _swap_in(manager: PluginManager, staged: Path, plugin_id: str) -> None:
    """Put ``staged`` at plugins/<id>; the old directory becomes the rollback copy."""
    target = manager.layout.plugin_dir(plugin_id)
    previous = _previous_dir(manager, plugin_id)
    moved = False
    if target.exists():
        previous.parent.mkdir(exist_ok=True)
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


async def _start_if_wanted(manager: PluginManager, record: PluginRecord) -> bool:
    """Start the plugin when it is enabled and this manager runs plugins; True if Running."""
    if not (record.enabled and manager.start_plugins):
        return True
    with contextlib.suppress(PlughostError):  # the record says why it failed
        await manager._load_locked(record.id, _options())
    return record.phase is Phase.RUNNING


async def _activate(
    manager: PluginManager, meta: PluginMeta, staged: Path, reason: str, *, auto_rollback: bool
) -> str | None:
    """Stop the old instance, swap directories, record and (if enabled) start the new one.

    An update whose new version does not start is rolled back at once; then the
    reason is returned.
    """
    plugin_id = meta.id
    async with manager._lock_for(plugin_id):
        record = manager._records.get(plugin_id)
        replaced = record.meta.version if record is not None else None
        if record is not None:
            manager.health.cancel_recovery(plugin_id)
            await manager._unload_locked(plugin_id, reason)
        try:
            await asyncio.to_thread(_swap_in, manager, staged, plugin_id)
        except OSError:
            if record is not None:  # the old version is back in place: run it again
                await _start_if_wanted(manager, record)
            raise
        if record is None:
            record = manager._adopt(PluginRecord.new(meta, Phase.UNINSTALLED))
            record.machine.transition_to(Phase.INSTALLING, reason)
            record.machine.transition_to(Phase.INSTALLED, reason)
        else:
            record.meta, record.last_error, record.error_count = meta, "", 0
            manager._try_move(record, Phase.INSTALLED, reason, force=True)
        started = await _start_if_wanted(manager, record)
        record.updated_at = time.monotonic() if replaced is not None else None
        why = None
        if not started and replaced is not None and auto_rollback:
            why = f"version {meta.version} failed to start: {record.last_error}"
            await _rollback_locked(manager, record, why)
        await manager.persist()
        return why


async def _rollback_locked(manager: PluginManager, record: PluginRecord, why: str) -> None:
    """Swap the kept previous version back in and start it (caller holds the lock)."""
    plugin_id = record.id
    previous = _previous_dir(manager, plugin_id)
    staged = Path(tempfile.mkdtemp(prefix=".rollback-", dir=manager.plugins_dir))
    try:
        await asyncio.to_thread(
            shutil.copytree, previous, staged, symlinks=True, dirs_exist_ok=True
        )
        meta = load_meta(staged)
        await manager._unload_locked(plugin_id, "rollback")
        await asyncio.to_thread(_swap_in, manager, staged, plugin_id)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, staged, True)
        raise
    from_version, record.meta = record.meta.version, meta
    record.last_error, record.updated_at = "", None
    manager._try_move(record, Phase.INSTALLED, f"rolled back to {meta.version}", force=True)
    manager.bus.publish(
        EVENT_ROLLED_BACK,
        {"pluginID": plugin_id, "from": from_version, "to": meta.version, "reason": why},
    )
    await _start_if_wanted(manager, record)


async def auto_rollback(manager: PluginManager, plugin_id: str, why: str) -> bool:
    """Roll back an update that crashed inside the stability window; False if none is kept."""
    if previous_version(manager, plugin_id) is None:
        return False
    async with manager._lock_for(plugin_id):
        record = manager._records.get(plugin_id)
        if record is None:
            return False
        await _rollback_locked(manager, record, why)
        await manager.persist()
    return True


def _options() -> Any:
    from .manager import LoadPluginOptions

    return LoadPluginOptions()


async def install_from_path(
    manager: PluginManager,
    path: str | os.PathLike[str],
    *,
    version: str | None = None,
    expected_id: str | None = None,
    progress: Progress | None = None,
) -> PluginMeta:
    """Install (or update) the plugin packaged at ``path``; events install_*.

    ``expected_id`` (marketplace installs) refuses a package that says it is
    another plugin, so a listing cannot replace a different installed plugin.
    """
    source = Path(path).expanduser()
    manager.bus.publish(EVENT_INSTALL_STARTED, {"path": str(source)})
    staged: Path | None = None
    try:
        _check_source(source)
        manager.plugins_dir.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=".install-", dir=manager.plugins_dir))
        await asyncio.to_thread(
            safe_extract,
            source,
            staged,
            max_total=manager.max_plugin_size,
            max_file=manager.max_file_size,
            max_entries=manager.max_plugin_entries,
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
        if version:
            meta = _override_version(staged, version)
        why = await _activate(
            manager, meta, staged, f"installed {meta.version}", auto_rollback=True
        )
        staged = None
        if why is not None:
            raise PluginInstallError(
                f"{why}; rolled back to {manager.get_plugin(meta.id).version}",
                title="Update rolled back",
                plugin_id=meta.id,
                suggestions=[f"see the plugin's log: plughost logs {meta.id}"],
            )
    except Exception as exc:
        error = _as_install_error(exc)
        manager.bus.publish(EVENT_INSTALL_ERROR, {"path": str(source), "error": error.to_dict()})
        if error is exc:
            raise
        raise error from exc
    finally:
        if staged is not None:
            await asyncio.to_thread(shutil.rmtree, staged, True)
    info = manager.get_plugin(meta.id)
    manager.bus.publish(
        EVENT_INSTALL_FINISHED,
        {"pluginID": meta.id, "version": meta.version, "phase": info.phase.value},
    )
    return meta


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
    from .registry.client import verify_download

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


async def install_plugin_version(
    manager: PluginManager,
    plugin_id: str,
    version: str,
    *,
    progress: Progress | None = None,
    require_signature: bool = True,
) -> PluginMeta:
    """Download, verify (checksum, Ed25519 signature) and install one marketplace version."""
    client = manager.marketplace()
    payload = {"pluginID": plugin_id, "version": version}
    manager.bus.publish(EVENT_UPDATE_STARTED, payload)
    workdir: Path | None = None
    try:
        manager.plugins_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=".download-", dir=manager.plugins_dir))
        result = await client.download_artifact(plugin_id, version, dest=workdir, progress=progress)
        verify_artifact(manager.settings, result, require_signature=require_signature)
        meta = await install_from_path(manager, result.path, version=version, expected_id=plugin_id)
        with contextlib.suppress(PlughostError):
            await client.record_download(plugin_id, version, result.platform)
    except Exception as exc:
        error = _as_install_error(exc)
        manager.bus.publish(EVENT_UPDATE_ERROR, {**payload, "error": error.to_dict()})
        if error is exc:
            raise
        raise error from exc
    finally:
        if workdir is not None:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
    manager.bus.publish(EVENT_UPDATE_COMPLETE, payload)
    return meta


async def rollback_plugin(manager: PluginManager, plugin_id: str) -> PluginMeta:
    """Swap the kept previous version back in (the current one becomes the previous)."""
    if previous_version(manager, plugin_id) is None:
        raise PluginNotFoundError(
            f"no previous version of {plugin_id} is kept",
            plugin_id=plugin_id,
            suggestions=["a previous version is kept when an install replaces another"],
        )
    async with manager._lock_for(plugin_id):
        record = manager._get(plugin_id)
        manager.health.cancel_recovery(plugin_id)
        await _rollback_locked(manager, record, "requested by the user")
        await manager.persist()
        return record.meta
