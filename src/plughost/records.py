"""The three shapes of a plugin's record: in memory, on disk, and in answers.

``PluginRecord`` is the manager's live bookkeeping; ``PluginStateRecord`` is
what ``plugin_state.json`` holds (the original's JSON keys); ``PluginInfo`` is
what queries return: plain and JSON-serialisable.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .lifecycle import PluginStateMachine, Transition
from .metadata import Permissions, PluginMeta
from .phases import Phase

__all__ = ["BuildIssue", "BuildRecord", "PluginInfo", "PluginRecord", "PluginStateRecord"]


def _now() -> datetime:
    return datetime.now(UTC)


class BuildIssue(BaseModel):
    """One place where a dev build broke: ``file:line:column: message``."""

    file: str
    line: int = 0
    column: int = 0
    message: str = ""

    def __str__(self) -> str:
        column = f":{self.column}" if self.column else ""
        return f"{self.file}:{self.line}{column}: {self.message}"


class BuildRecord(BaseModel):
    """A dev plugin's last build: when it ran, how long it took, and where it broke."""

    model_config = ConfigDict(populate_by_name=True)

    at: datetime
    ok: bool
    duration_ms: float = Field(0.0, alias="durationMs")
    error: str = ""
    """One line saying why it failed (empty when ok)."""
    errors: list[BuildIssue] = Field(default_factory=list)


class PluginStateRecord(BaseModel):
    """One entry of ``plugin_state.json``.

    ``lastSeen`` (when the host wrote this entry, so when its ``phase`` was last
    known to be true) and ``lastBuild`` (dev plugins) are ours; files without them load.
    """

    model_config = ConfigDict(populate_by_name=True)

    id: str
    phase: Phase
    metadata: PluginMeta
    enabled: bool = True
    dev_mode: bool = Field(False, alias="devMode")
    dev_path: str = Field("", alias="devPath")
    last_error: str = Field("", alias="lastError")
    error_count: int = Field(0, alias="errorCount")
    installed_at: datetime = Field(default_factory=_now, alias="installedAt")
    last_seen: datetime | None = Field(None, alias="lastSeen")
    last_build: BuildRecord | None = Field(None, alias="lastBuild")
    granted: Permissions | None = Field(None, alias="grantedPermissions")
    """What the user granted (at install, or to release a held update); None: never asked."""

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


class PluginInfo(BaseModel):
    """What ``get_plugin`` / ``list_plugins`` answer."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    version: str
    name: str
    phase: Phase
    enabled: bool
    dev_mode: bool = Field(alias="devMode")
    dev_path: str = Field(alias="devPath")
    capabilities: list[str]
    last_error: str = Field(alias="lastError")
    error_count: int = Field(alias="errorCount")
    installed_at: datetime = Field(alias="installedAt")
    pid: int | None = None
    protocol_version: int | None = Field(None, alias="protocolVersion")
    metadata: PluginMeta
    last_build: BuildRecord | None = Field(None, alias="lastBuild")
    """Dev plugins: the last build (when, how long, its errors)."""
    granted: Permissions | None = Field(None, alias="grantedPermissions")
    sandbox: str = ""
    """How its last start was confined, in words ('' until started)."""

    @property
    def capabilities_differ(self) -> bool:
        """Does the plugin report (lifecycle GetCapabilities) other capabilities than its
        plugin.yaml declares (``metadata.capabilities``)?"""
        return set(self.capabilities) != set(self.metadata.capabilities)

    def to_json_dict(self) -> dict[str, Any]:
        """The answer's JSON, with ``declaredCapabilities`` (plugin.yaml's) and
        ``capabilitiesDiffer`` beside ``capabilities`` (reported, else declared)."""
        data = self.model_dump(by_alias=True, mode="json")
        data["declaredCapabilities"] = list(self.metadata.capabilities)
        data["capabilitiesDiffer"] = self.capabilities_differ
        return data


@dataclasses.dataclass(eq=False)
class PluginRecord:
    """The manager's live view of one plugin."""

    meta: PluginMeta
    machine: PluginStateMachine
    enabled: bool = True
    dev_mode: bool = False
    dev_path: str = ""
    last_error: str = ""
    error_count: int = 0
    installed_at: datetime = dataclasses.field(default_factory=_now)
    pid: int | None = None
    protocol_version: int | None = None
    capabilities: list[str] | None = None  # detected from the plugin; None = from metadata
    updated_at: float | None = None  # monotonic time of the last update (rollback window)
    last_build: BuildRecord | None = None  # dev plugins: set by the dev server after each build
    granted: Permissions | None = None  # persisted; enforced instead of what plugin.yaml asks
    sandbox: str = ""  # how the last start was confined, in words

    @classmethod
    def new(cls, meta: PluginMeta, phase: Phase = Phase.INSTALLED, **kw: Any) -> PluginRecord:
        return cls(meta=meta, machine=PluginStateMachine(meta.id, phase), **kw)

    @classmethod
    def from_state(cls, state: PluginStateRecord) -> PluginRecord:
        return cls(
            meta=state.metadata,
            machine=PluginStateMachine(state.id, state.phase),
            enabled=state.enabled,
            dev_mode=state.dev_mode,
            dev_path=state.dev_path,
            last_error=state.last_error,
            error_count=state.error_count,
            installed_at=state.installed_at,
            last_build=state.last_build,
            granted=state.granted,
        )

    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def phase(self) -> Phase:
        return self.machine.phase

    def history(self) -> list[Transition]:
        return self.machine.history()

    def to_state(self, last_seen: datetime | None = None) -> PluginStateRecord:
        """The entry for plugin_state.json; ``last_seen``: when the host vouches for it (now)."""
        return PluginStateRecord(
            id=self.id,
            phase=self.phase,
            metadata=self.meta,
            enabled=self.enabled,
            dev_mode=self.dev_mode,
            dev_path=self.dev_path,
            last_error=self.last_error,
            error_count=self.error_count,
            installed_at=self.installed_at,
            last_seen=last_seen,
            last_build=self.last_build,
            granted=self.granted,
        )

    def to_info(self) -> PluginInfo:
        return PluginInfo(
            id=self.id,
            version=self.meta.version,
            name=self.meta.name or self.id,
            phase=self.phase,
            enabled=self.enabled,
            dev_mode=self.dev_mode,
            dev_path=self.dev_path,
            capabilities=list(self.capabilities or self.meta.capabilities),
            last_error=self.last_error,
            error_count=self.error_count,
            installed_at=self.installed_at,
            pid=self.pid,
            protocol_version=self.protocol_version,
            metadata=self.meta,
            last_build=self.last_build,
            granted=self.granted,
            sandbox=self.sandbox,
        )
