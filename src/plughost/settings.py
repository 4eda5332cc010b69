"""Settings from ``<root>/plughost.toml``, with a default for every knob.

Every timing is a setting so that tests run crash recovery in milliseconds.
The provider re-reads the file when it changed, so a marketplace URL or key
edited while the host runs is used by the next call.
"""

from __future__ import annotations

import os
import threading
import tomllib
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from .errors import SettingsMissingError, ValidationError
from .paths import OMNIVIEW_COOKIE_KEY, PLUGHOST_COOKIE_KEY

__all__ = ["Settings", "SettingsProvider", "TrustedKeySetting"]


class TrustedKeySetting(BaseModel):
    """One entry of ``trusted_keys`` in plughost.toml."""

    public_key_hex: str = Field(description="64 hex chars: the raw Ed25519 public key")
    key_id: str = Field("", description="defaults to the first 16 hex chars of its SHA-256")
    retired: bool = Field(False, description="signatures by a retired key are refused")


class Settings(BaseModel):
    """All of plughost's settings; the TOML keys are the field names."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    profile: Literal["plughost", "omniview"] = Field(
        "plughost", description="'omniview' selects ~/.omniview and cookie key OMNIVIEW"
    )
    cookie_key: str = Field("", description="magic cookie env name; empty = the profile's")
    protocol_versions: list[int] = Field(
        [1], description="app protocol versions offered to plugins, newest last"
    )
    env_allow: list[str] = Field(
        default_factory=list, description="extra host env names passed to plugins"
    )
    extra_env: dict[str, str] = Field(
        default_factory=dict, description="variables set for every plugin"
    )
    min_port: int = Field(
        10000, description="lowest tcp port a plugin may listen on (PLUGIN_MIN_PORT)"
    )
    max_port: int = Field(
        25000, description="highest tcp port a plugin may listen on (PLUGIN_MAX_PORT)"
    )
    transport: Literal["unix", "tcp"] = Field(
        "unix", description="what plughost plugins are asked to listen on"
    )
    auto_mtls: Literal["off", "tcp", "always"] = Field(
        "tcp", description="go-plugin AutoMTLS: for tcp plugins, for every plugin, or never"
    )
    start_timeout: float = Field(15.0, description="seconds to wait for the handshake line")
    stop_grace: float = Field(2.0, description="seconds between Shutdown RPC and SIGTERM")
    kill_grace: float = Field(2.0, description="seconds between SIGTERM and SIGKILL")
    parent_death_signal: bool = Field(
        True,
        description="SIGKILL plugins (and their process groups) when the host dies, however "
        "it dies (off: only the PID file cleans up after a killed host)",
    )
    sandbox: Literal["enforce", "warn", "off"] = Field(
        "enforce",
        description="plugins that declare permissions: enforce them with bubblewrap (refuse "
        "to start without it), warn and run unconfined when it is missing, or never confine",
    )
    sandbox_memory_mb: int = Field(
        1024, ge=16, description="memory limit of each sandboxed plugin, MiB (cgroup or rlimit)"
    )
    sandbox_processes: int = Field(
        256, ge=8, description="process (and thread) limit of each sandboxed plugin"
    )
    protect_host_process: bool = Field(
        True,
        description="mark the host process non-dumpable (Linux) when a PluginManager "
        "initializes, so a plugin of the same user cannot read the host's environment or "
        "memory through /proc; this also turns off core dumps of the embedding application",
    )
    run_as: str = Field(
        "",
        description="run plugins as this user (name or uid; the host must be root or hold "
        "CAP_SETUID, CAP_SETGID, CAP_KILL, CAP_CHOWN and CAP_DAC_OVERRIDE); the root and "
        "plugins/ are then made passable by others (0711); empty: the host's own user",
    )
    health_interval: float = Field(30.0, ge=0.1, description="seconds between health checks")
    health_timeout: float = Field(5.0, gt=0, description="deadline of one health RPC")
    health_misses: int = Field(
        3, ge=1, description="consecutive failed health checks before a hung plugin is restarted"
    )
    load_concurrency: int = Field(
        0,
        ge=0,
        description="plugins initialize has between spawn and handshake line at once (the "
        "CPU-heavy part of a start); connecting and the rest of loading overlap freely; "
        "0: one per CPU core",
    )
    shutdown_concurrency: int = Field(16, ge=1, description="plugins stopped at once")
    backoff_initial: float = Field(2.0, ge=0, description="first wait after a crash")
    backoff_max: float = Field(30.0, ge=0, description="cap of the crash backoff")
    recovery_attempts: int = Field(3, ge=1, description="restart attempts per crash")
    crash_budget: int = Field(5, ge=1, description="crashes allowed per window")
    crash_window: float = Field(300.0, gt=0, description="seconds of the crash budget window")
    stable_time: float = Field(
        10.0,
        ge=0,
        description="seconds a restarted plugin must stay Running to count as recovered "
        "(a crash sooner is the next attempt of the same recovery, like supervisord's startsecs)",
    )
    log_ring_size: int = Field(5000, ge=10, description="log lines kept in memory per plugin")
    log_max_bytes: int = Field(5 * 1024 * 1024, ge=1024, description="log file rotation size")
    log_backups: int = Field(5, ge=0, description="rotated log files kept (gzip)")
    marketplace_url: str = Field("", description="base URL of the marketplace API")
    registry_public_key: str = Field(
        "",
        description="64 hex chars: the marketplace registry's Ed25519 public key; trusted "
        "like an entry of trusted_keys",
    )
    service_port: int | None = Field(
        None, description="also serve the local API on 127.0.0.1:PORT (0 = any free port)"
    )
    service_token: str = Field("", description="bearer token required on the tcp listener")
    service_body_limit: int = Field(
        1024 * 1024,
        ge=1024,
        description="bytes of a request body the local service accepts; a bigger one is "
        "refused (413) before it is read",
    )
    trusted_keys: list[TrustedKeySetting] = Field(
        default_factory=list,
        description="Ed25519 keys that may sign manifests; retire old ones, add new ones",
    )
    accept_checksum_signatures: bool | None = Field(
        None,
        description="accept the original scheme (signature over the hex checksum) when an "
        "artifact has no signed manifest; default: yes under the omniview profile, else no",
    )
    rollback_window: float = Field(
        30.0, ge=0, description="seconds after an update in which a crash rolls it back (0 = off)"
    )
    failed_retry_interval: float = Field(
        0.0, ge=0, description="seconds between slow retries of Failed plugins (0 = off)"
    )
    dev_debounce_ms: int = Field(
        500, ge=0, description="dev mode: changes within this window make one rebuild"
    )
    dev_step_ms: int = Field(
        50, ge=1, description="dev mode: quiet time after the last change before rebuilding"
    )
    dev_ui_command: str = Field("pnpm run dev", description="dev mode: the UI dev server command")
    dev_ui_build_command: str = Field(
        "pnpm run build", description="dev mode: the UI build command"
    )
    devinfo_check_interval: float = Field(
        5.0, gt=0, description="seconds between checks of an attached (.devinfo) plugin"
    )
    go_binary: str = Field("", description="path of the go tool, if not on PATH")
    node_binary: str = Field("", description="path of node, if not on PATH")
    pnpm_binary: str = Field("", description="path of pnpm, if not on PATH")
    omniview_sdk: str = Field(
        "",
        description="directory of Omniview's plugin SDK (github.com/omniviewdev/plugin-sdk) "
        "whose .proto files plughost.omniview reads ($PLUGHOST_OMNIVIEW_SDK beats it; "
        "empty: the newest plugin-sdk@v* in Go's module cache)",
    )

    @property
    def legacy_signatures_allowed(self) -> bool:
        if self.accept_checksum_signatures is not None:
            return self.accept_checksum_signatures
        return self.profile == "omniview"

    @property
    def effective_cookie_key(self) -> str:
        if self.cookie_key:
            return self.cookie_key
        return OMNIVIEW_COOKIE_KEY if self.profile == "omniview" else PLUGHOST_COOKIE_KEY

    @property
    def effective_load_concurrency(self) -> int:
        """A plugin's start is mostly CPU (a Python plugin's imports): one per core."""
        return self.load_concurrency or os.cpu_count() or 1


def _load(path: Path) -> Settings:
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return Settings()
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(
            f"{path}: not valid TOML: {exc}",
            title="Invalid settings",
            suggestions=[f"fix or remove {path}"],
        ) from exc
    try:
        return Settings.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
        raise ValidationError(f"{path}: {problems}", title="Invalid settings") from exc


class SettingsProvider:
    """The seed's settings provider: typed getters over a file that may change."""

    def __init__(self, path: Path | None = None, overrides: dict[str, Any] | None = None) -> None:
        self.path = path
        self._overrides = dict(overrides or {})
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._settings = Settings()
        self.reload()

    def _file_stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def reload(self) -> Settings:
        with self._lock:
            base = _load(self.path) if self.path else Settings()
            data = base.model_dump()
            data.update(self._overrides)
            self._settings = Settings.model_validate(data)
            self._stamp = self._file_stamp()
            return self._settings

    @property
    def settings(self) -> Settings:
        """The current settings, re-read if the file changed since last time."""
        if self._file_stamp() != self._stamp:
            return self.reload()
        return self._settings

    def override(self, **values: Any) -> None:
        """Set values that beat the file (from the command line or tests)."""
        self._overrides.update(values)
        self.reload()

    def get(self, key: str) -> Any:
        try:
            return getattr(self.settings, key)
        except AttributeError:
            raise SettingsMissingError(f"unknown setting {key!r}") from None

    def get_string(self, key: str) -> str:
        return str(self.get(key))

    def get_int(self, key: str) -> int:
        return int(self.get(key))

    def get_float(self, key: str) -> float:
        return float(self.get(key))

    def get_bool(self, key: str) -> bool:
        return bool(self.get(key))

    def require_string(self, key: str) -> str:
        """The value of ``key``, or SettingsMissingError naming it when empty."""
        value = self.get_string(key)
        if not value:
            raise SettingsMissingError(
                f"setting '{key}' is not set",
                suggestions=[f'add {key} = "..." to {self.path or "plughost.toml"}'],
            )
        return value
