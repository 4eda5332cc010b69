"""``plughost doctor``: is this root, this machine and the marketplace ready?

Each check is one line: ``ok``, ``warn`` (works, but something is missing
that some feature needs) or ``problem`` (something is broken), with a fix.
The command exits 1 when any check is a problem.

The profile given on the command line (``--profile omniview``) beats the one in
``plughost.toml``, as it does for the host. Under the omniview profile doctor
also checks what plugins of Omniview's Go SDK expect: the cookie key
``OMNIVIEW``, and their ``plugin.yaml`` where the SDK reads it, which is
``$HOME/.omniview/plugins/<id>/plugin.yaml`` whatever the host's root is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

from .. import __version__
from ..errors import PlughostError
from ..paths import OMNIVIEW_COOKIE_KEY, RootLayout
from ..rootcheck import audit_root, not_writable

__all__ = ["Check", "run_checks"]

Status = Literal["ok", "warn", "problem"]


@dataclasses.dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_root(layout: RootLayout) -> Check:
    root = layout.root
    if not root.exists():
        return Check("root", "ok", f"{root} does not exist yet", "'plughost run' creates it")
    if not root.is_dir():
        return Check("root", "problem", f"{root} is not a directory", "use another --root")
    if not os.access(root, os.W_OK | os.X_OK):
        error = not_writable(root)
        return Check("root", "problem", error.detail, "; or ".join(error.suggestions))
    return Check("root", "ok", f"{root} exists and is writable")


def _check_permissions(layout: RootLayout) -> list[Check]:
    """Owners and modes of the root's entries (rootcheck.audit_root; run/ among them), each
    with its fix. A directory others may only pass through (run_as) is fine."""
    from ..registry.index import KEY_FILE

    findings = audit_root(layout, secrets=[layout.registry / KEY_FILE])
    if not findings:
        return [Check("permissions", "ok", "the root's directories, files and secrets are private")]
    checks = []
    for finding in findings:
        detail = finding.detail
        if finding.severity == "refuse":
            detail += ": the host refuses to start from this root"
        status: Status = "warn" if finding.severity == "warn" else "problem"
        checks.append(Check("permissions", status, detail, finding.fix))
    return checks


def _check_settings(layout: RootLayout, profile: str | None = None) -> tuple[Check, Any]:
    """The root's settings as the host would use them: ``profile`` (the command line's)
    beats the file's, and picks the cookie key unless ``cookie_key`` is set."""
    from ..settings import SettingsProvider

    try:
        overrides = {"profile": profile} if profile else None
        settings = SettingsProvider(layout.settings_file, overrides).settings
    except PlughostError as exc:
        return Check(
            "settings", "problem", exc.detail, f"fix or remove {layout.settings_file}"
        ), None
    where = layout.settings_file if layout.settings_file.exists() else "defaults (no plughost.toml)"
    detail = f"{where}, profile {settings.profile}, cookie key {settings.effective_cookie_key}"
    return Check("settings", "ok", detail), settings


def _lock_holder(layout: RootLayout) -> int | None:
    """The pid in host.lock if that process is alive and really holds the lock."""
    import fcntl

    if not layout.lock_file.exists():
        return None
    try:
        fd = os.open(layout.lock_file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _check_lock(layout: RootLayout) -> tuple[Check, bool]:
    from .client import ServiceClient

    holder = _lock_holder(layout)
    if holder is None:
        return Check("lock", "ok", "no host holds the root"), False
    who = f"pid {holder}" if holder > 0 else "an unknown process"
    client = ServiceClient.connect(layout.root)
    if client is not None:
        client.close()
        return Check("lock", "ok", f"held by the running host ({who}); its API answers"), True
    return (
        Check(
            "lock",
            "warn",
            f"held by {who}, whose local API does not answer",
            "a host embedded in another program, or one still starting; "
            f"stop it to manage {layout.root} directly",
        ),
        True,
    )


def _check_pids(layout: RootLayout, host_running: bool) -> Check:
    from ..pids import PidEntry, process_identity

    try:
        raw = json.loads(layout.pid_file.read_text())
    except FileNotFoundError:
        return Check("stale processes", "ok", "no PID file: nothing left over")
    except (OSError, ValueError) as exc:
        return Check(
            "stale processes",
            "warn",
            f"{layout.pid_file} is unreadable ({exc})",
            "the next 'plughost run' replaces it",
        )
    alive = []
    for plugin_id, item in (raw or {}).items() if isinstance(raw, dict) else []:
        try:
            entry = PidEntry.model_validate(item)
        except ValueError:
            continue
        current = process_identity(entry.pid)
        if (
            current is not None
            and abs(current.create_time - entry.create_time) <= 0.05
            and current.exe == entry.exe
        ):
            alive.append(f"{plugin_id} (pid {entry.pid})")
    if not alive:
        return Check("stale processes", "ok", "no plugin process left over")
    if host_running:
        return Check(
            "stale processes", "ok", f"{len(alive)} plugin process(es) of the running host"
        )
    return Check(
        "stale processes",
        "problem",
        f"plugin processes left by a host that died: {', '.join(alive)}",
        "'plughost run' kills them when it starts (or kill those pids)",
    )


def _check_state(layout: RootLayout) -> list[Check]:
    from ..reconcile import Reconciler
    from ..store import StateFileCorrupt, StateStore

    checks = []
    persisted = []
    if layout.state_file.exists():
        try:
            persisted = StateStore(layout.root).read(repair=False)
        except StateFileCorrupt as exc:
            restores = exc.backup_ok
            checks.append(
                Check(
                    "state",
                    "warn" if restores else "problem",
                    exc.detail,
                    "the next 'plughost run' keeps it aside and "
                    + ("restores the backup" if restores else "rebuilds the state from plugins/"),
                )
            )
    result = Reconciler().reconcile(layout.plugins, persisted)
    phases = {p.id: p for p in persisted}
    failed = []
    for plugin_id, record in sorted(result.records.items()):
        state = phases.get(plugin_id)
        phase = state.phase.value if state else record.phase.value
        if phase in ("Failed", "BuildFailed") and record.enabled:
            error = (record.last_error or "").splitlines()[:1]
            failed.append(f"{plugin_id} ({phase}{': ' + error[0][:80] if error else ''})")
    total = len(result.records)
    if failed:
        checks.append(
            Check(
                "plugins",
                "problem",
                f"{total} installed; not running: {'; '.join(failed)}",
                "see 'plughost logs ID', then 'plughost retry ID'",
            )
        )
    else:
        checks.append(Check("plugins", "ok", f"{total} installed, none failed"))
    return checks


def _check_pasta(pasta: str | None) -> Check:
    if pasta is not None:
        return Check(
            "pasta", "ok", f"{pasta}: network: loopback plugins get a network of their own"
        )
    return Check(
        "pasta",
        "warn",
        "pasta is not installed: network: loopback plugins share the host's network "
        "(they reach every address, not only 127.0.0.1)",
        "install pasta: scripts/install_sandbox.sh (apt-get install passt)",
    )


def _check_sandbox(layout: RootLayout, settings: Any) -> list[Check]:
    """bubblewrap, limits and pasta, then each plugin's grants and whether they are enforced."""
    from ..process.netns import pasta_path
    from ..process.sandbox import enforcement, policy_for, probe
    from ..reconcile import Reconciler
    from ..store import StateFileCorrupt, StateStore

    found = probe()
    install = "install bubblewrap: scripts/install_sandbox.sh (apt-get install bubblewrap)"
    if found.usable:
        checks = [
            Check("sandbox", "ok", f"bubblewrap {found.bwrap}; limits by {found.limits_text()}")
        ]
        checks.append(_check_pasta(pasta_path()))
    else:
        status: Status = "problem" if settings.sandbox == "enforce" else "warn"
        checks = [
            Check("sandbox", status, f"{found.reason} (sandbox = {settings.sandbox})", install)
        ]
    if not layout.plugins.is_dir():
        return checks
    persisted = []
    with contextlib.suppress(StateFileCorrupt, OSError):
        persisted = StateStore(layout.root).read(repair=False)
    grants = {p.id: p.granted for p in persisted}
    records = Reconciler().reconcile(layout.plugins, persisted).records
    for plugin_id, record in sorted(records.items()):
        policy = policy_for(
            record.meta, grants.get(plugin_id), settings, layout.root, layout.plugins / plugin_id
        )
        how = enforcement(policy)
        granted = (
            "; ".join(policy.permissions.describe()) if policy.permissions else "none declared"
        )
        status = "problem" if how.startswith("cannot start") else "ok"
        checks.append(Check(f"grants {plugin_id}", status, f"{granted} — {how}"))
    return checks


def _dev_languages(layout: RootLayout) -> set[str]:
    """Languages of the dev-mode plugins (their toolchains are needed, not optional)."""
    from ..store import StateFileCorrupt, StateStore

    languages: set[str] = set()
    try:
        persisted = StateStore(layout.root).read(repair=False) if layout.state_file.exists() else []
    except StateFileCorrupt:
        return languages
    for p in persisted:
        if p.dev_mode and p.dev_path:
            source = Path(p.dev_path)
            if (source / "go.mod").is_file():
                languages.add("go")
            if (source / "ui" / "package.json").is_file():
                languages.update({"node", "pnpm"})
    return languages


def _check_toolchains(layout: RootLayout, settings: Any) -> list[Check]:
    from ..dev import toolchain

    needed = _dev_languages(layout)
    finders = {
        "go": (toolchain.find_go_binary, "building Go plugins"),
        "node": (toolchain.find_node_binary, "plugin UIs in dev mode"),
        "pnpm": (toolchain.find_pnpm_binary, "plugin UIs in dev mode"),
    }
    checks = []
    for tool, (find, purpose) in finders.items():
        try:
            path = find(settings=settings)
        except PlughostError as exc:
            status: Status = "problem" if tool in needed else "warn"
            fix = "; ".join(exc.suggestions) or f"install {tool}"
            checks.append(Check(tool, status, f"not found (needed for {purpose})", fix))
        else:
            checks.append(Check(tool, "ok", path))
    return checks


def _check_marketplace(layout: RootLayout, settings: Any) -> list[Check]:
    import httpx

    from ..registry.local import has_registry, local_registry_url

    url = str(settings.marketplace_url or "").strip().rstrip("/")
    key = str(settings.registry_public_key or "").strip()
    local = local_registry_url(layout).rstrip("/")
    checks = []
    if not url:
        checks.append(
            Check(
                "marketplace",
                "warn",
                "marketplace_url is not set: search and install by id are unavailable",
                'set marketplace_url = "https://..." in plughost.toml, or run '
                "'plughost run' on a fresh root (it serves the bundled registry)",
            )
        )
    else:
        try:
            response = httpx.get(f"{url}/v1/health", timeout=3.0)
            ok = response.status_code == 200
            reason = f"answered {response.status_code}"
        except httpx.HTTPError as exc:
            ok, reason = False, str(exc) or type(exc).__name__
        if ok:
            checks.append(Check("marketplace", "ok", f"{url} answers"))
        elif url == local and has_registry(layout):
            checks.append(
                Check(
                    "marketplace",
                    "warn",
                    f"{url} is this root's bundled registry, served while 'plughost run' runs",
                    "start 'plughost run' (one-shot commands serve it themselves)",
                )
            )
        else:
            checks.append(
                Check(
                    "marketplace",
                    "problem",
                    f"{url} is unreachable: {reason}",
                    "check the URL and the network, or fix marketplace_url in plughost.toml",
                )
            )
    if key:
        from ..packages.signing import key_id_for

        try:
            checks.append(Check("registry key", "ok", f"key id {key_id_for(key)}"))
        except PlughostError as exc:
            checks.append(
                Check(
                    "registry key",
                    "problem",
                    exc.detail,
                    "set registry_public_key to the registry's 64-hex-char public key",
                )
            )
    elif url:
        checks.append(
            Check(
                "registry key",
                "problem",
                "registry_public_key is not set: every marketplace install will be refused",
                'add registry_public_key = "<64 hex chars>" (the registry\'s public key)',
            )
        )
    return checks


def _plugin_dirs(layout: RootLayout) -> list[Path]:
    """The installed plugins' directories (not ``.previous`` or staging directories)."""
    try:
        entries = sorted(layout.plugins.iterdir()) if layout.plugins.is_dir() else []
    except OSError:
        return []
    return [e for e in entries if e.is_dir() and not e.name.startswith(".")]


def _check_omniview(layout: RootLayout, settings: Any) -> list[Check]:
    """What plugins of Omniview's Go SDK need from the host (tests/goplugins/README.md).

    The SDK's ``NewPlugin`` opens ``$HOME/.omniview/plugins/<id>/plugin.yaml`` (it
    panics "plugin.yaml not found", exit 2, without it) and its handshake wants the
    cookie ``OMNIVIEW=<id>`` (else "This binary is a plugin ...", exit 1).
    """
    from ..metadata import METADATA_FILE, load_meta

    checks: list[Check] = []
    key = settings.effective_cookie_key
    if key == OMNIVIEW_COOKIE_KEY:
        checks.append(
            Check("cookie key", "ok", f"{key}=<plugin id>, the cookie Omniview's SDK expects")
        )
    else:
        checks.append(
            Check(
                "cookie key",
                "problem",
                f"cookie_key = {key!r} replaces {OMNIVIEW_COOKIE_KEY}: plugins of Omniview's "
                "SDK refuse to start ('This binary is a plugin ...', exit 1)",
                f"remove cookie_key from {layout.settings_file} (the omniview profile "
                f"sets {OMNIVIEW_COOKIE_KEY})",
            )
        )

    sdk_root = Path.home() / ".omniview"
    plugins = _plugin_dirs(layout)
    if os.path.realpath(layout.root) == os.path.realpath(sdk_root):
        checks.append(
            Check("omniview root", "ok", f"{layout.root} is $HOME/.omniview, where the SDK looks")
        )
    else:
        missing = [
            p.name for p in plugins if not (sdk_root / "plugins" / p.name / METADATA_FILE).is_file()
        ]
        fix = (
            "run the host without --root and PLUGHOST_HOME (the omniview profile's root is "
            "~/.omniview)"
        )
        if layout.root.name == ".omniview":
            fix += f", or with HOME={layout.root.parent} (plugins inherit HOME)"
        why = (
            f"; without it there: {', '.join(missing)}"
            if missing
            else ("" if plugins else "; no plugin installed yet")
        )
        checks.append(
            Check(
                "omniview root",
                "warn",
                f"the root is {layout.root}, but SDK plugins read their plugin.yaml from "
                f"{sdk_root}/plugins/<id>/plugin.yaml and panic 'plugin.yaml not found' "
                f"(exit 2) when it is not there{why}",
                fix,
            )
        )

    bad: list[str] = []
    for plugin_dir in plugins:
        path = plugin_dir / METADATA_FILE
        if path.is_symlink() or not path.is_file():
            bad.append(f"{plugin_dir.name}: no {METADATA_FILE}")
            continue
        try:
            meta = load_meta(plugin_dir)
        except PlughostError as exc:
            first = exc.detail.splitlines()[0].removeprefix(f"{path}: ")
            bad.append(f"{plugin_dir.name}: {first[:120]}")
            continue
        if meta.id != plugin_dir.name:
            bad.append(f"{plugin_dir.name}: its {METADATA_FILE} says id {meta.id!r}")
    where = f"{layout.plugins}/<id>/{METADATA_FILE}"
    if bad:
        checks.append(
            Check(
                METADATA_FILE,
                "problem",
                f"SDK plugins need a valid {where} (their id, the directory's): {'; '.join(bad)}",
                "install the plugin again from its package (plugin.yaml at the package's "
                "top, its id the plugin's): plughost --profile omniview install PACKAGE",
            )
        )
    else:
        count = f"{len(plugins)} plugin(s), each with" if plugins else "no plugin yet; each needs"
        checks.append(Check(METADATA_FILE, "ok", f"{count} {where}"))
    return checks


def run_checks(root: Path, profile: str | None = None) -> list[Check]:
    """Every check, in order."""
    from ..registry.models import current_platform

    layout = RootLayout(Path(root))
    python = ".".join(map(str, sys.version_info[:3]))
    checks = [
        Check(
            "plughost",
            "ok",
            f"{__version__} on Python {python}, {current_platform()}"
            + (f", profile {profile}" if profile else ""),
        ),
        _check_root(layout),
    ]
    if layout.root.is_dir():
        checks.extend(_check_permissions(layout))
    settings_check, settings = _check_settings(layout, profile)
    checks.append(settings_check)
    if settings is not None and settings.profile == "omniview":
        checks.extend(_check_omniview(layout, settings))
    lock_check, host_running = _check_lock(layout)
    checks.append(lock_check)
    checks.append(_check_pids(layout, host_running))
    if layout.root.is_dir():
        checks.extend(_check_state(layout))
    if settings is not None:
        checks.extend(_check_toolchains(layout, settings))
        checks.extend(_check_marketplace(layout, settings))
        checks.extend(_check_sandbox(layout, settings))
    return checks
