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
from .metadata import PluginMeta
from .phases import Phase

__all__ = ["PluginInfo", "PluginRecord", "PluginStateRecord"]


def _now() -> datetime:
    return datetime.now(UTC)


class PluginStateRecord(BaseModel):
    """One entry of ``plugin_state.json``."""

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

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


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
        )

    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def phase(self) -> Phase:
        return self.machine.phase

    def history(self) -> list[Transition]:
        return self.machine.history()

    def to_state(self) -> PluginStateRecord:
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
        )
