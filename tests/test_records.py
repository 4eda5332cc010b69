"""PluginRecord (live) <-> PluginStateRecord (on disk) <-> PluginInfo (answers)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from plughost.metadata import PluginMeta
from plughost.phases import Phase
from plughost.records import PluginInfo, PluginRecord, PluginStateRecord

STATE_KEYS = {
    "id",
    "phase",
    "metadata",
    "enabled",
    "devMode",
    "devPath",
    "lastError",
    "errorCount",
    "installedAt",
}
WHEN = datetime(2024, 5, 17, 9, 30, 15, 123456, tzinfo=UTC)


def _meta(**extra: object) -> PluginMeta:
    return PluginMeta.model_validate(
        {
            "id": "alpha",
            "version": "1.2.3",
            "name": "Alpha",
            "capabilities": ["resource", "ui"],
            "author": {"name": "Ada"},
            **extra,
        }
    )


def _state() -> PluginStateRecord:
    return PluginStateRecord(
        id="alpha",
        phase=Phase.BUILD_FAILED,
        metadata=_meta(x_unknown={"kept": True}),
        enabled=False,
        dev_mode=True,
        dev_path="/src/alpha",
        last_error="go build failed",
        error_count=3,
        installed_at=WHEN,
    )


def test_state_record_json_keys_are_exactly_the_originals() -> None:
    data = _state().to_json_dict()
    assert set(data) == STATE_KEYS
    assert data["phase"] == "BuildFailed"
    assert data["devMode"] is True
    assert data["devPath"] == "/src/alpha"
    assert data["lastError"] == "go build failed"
    assert data["errorCount"] == 3
    assert datetime.fromisoformat(data["installedAt"]) == WHEN
    assert data["metadata"]["id"] == "alpha"
    assert data["metadata"]["x_unknown"] == {"kept": True}


def test_state_record_round_trips_through_json_text() -> None:
    state = _state()
    text = json.dumps(state.to_json_dict())
    again = PluginStateRecord.model_validate(json.loads(text))
    assert again == state
    assert again.metadata.model_extra == {"x_unknown": {"kept": True}}
    assert again.to_json_dict() == state.to_json_dict()


def test_state_record_reads_a_file_written_with_the_original_keys() -> None:
    raw = {
        "id": "beta",
        "phase": "Running",
        "metadata": {"id": "beta", "version": "0.1.0", "capabilities": ["exec"]},
        "enabled": True,
        "devMode": False,
        "devPath": "",
        "lastError": "",
        "errorCount": 0,
        "installedAt": "2024-01-02T03:04:05Z",
    }
    state = PluginStateRecord.model_validate(raw)
    assert state.phase is Phase.RUNNING
    assert state.installed_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert state.metadata.capabilities == ["exec"]


def test_state_record_defaults() -> None:
    state = PluginStateRecord(
        id="a", phase=Phase.INSTALLED, metadata=PluginMeta(id="a", version="1")
    )
    assert state.enabled is True
    assert (state.dev_mode, state.dev_path, state.last_error, state.error_count) == (
        False,
        "",
        "",
        0,
    )
    assert state.installed_at.tzinfo is not None


def test_record_to_state_and_back() -> None:
    state = _state()
    record = PluginRecord.from_state(state)
    assert record.id == "alpha"
    assert record.phase is Phase.BUILD_FAILED
    assert record.machine.plugin_id == "alpha"
    assert record.history() == []
    assert (record.enabled, record.dev_mode, record.dev_path) == (False, True, "/src/alpha")
    assert (record.last_error, record.error_count, record.installed_at) == (
        "go build failed",
        3,
        WHEN,
    )
    assert record.to_state() == state


def test_record_state_follows_its_machine() -> None:
    record = PluginRecord.new(_meta(), Phase.INSTALLED, installed_at=WHEN)
    record.machine.transition_to(Phase.VALIDATING, "load")
    record.machine.transition_to(Phase.STARTING, "valid")
    record.machine.transition_to(Phase.RUNNING, "handshook")
    assert record.to_state().phase is Phase.RUNNING
    assert [t.to_phase for t in record.history()] == [
        Phase.VALIDATING,
        Phase.STARTING,
        Phase.RUNNING,
    ]
    # Persisted and read back, it starts where it was, with a fresh history.
    again = PluginRecord.from_state(
        PluginStateRecord.model_validate(record.to_state().to_json_dict())
    )
    assert again.phase is Phase.RUNNING
    assert again.history() == []


def test_info_from_record() -> None:
    record = PluginRecord.new(
        _meta(), Phase.RUNNING, installed_at=WHEN, dev_mode=True, dev_path="/src/alpha"
    )
    record.pid = 4242
    record.protocol_version = 2
    info = record.to_info()
    assert isinstance(info, PluginInfo)
    assert (info.id, info.version, info.name, info.phase) == (
        "alpha",
        "1.2.3",
        "Alpha",
        Phase.RUNNING,
    )
    assert info.capabilities == ["resource", "ui"]
    assert (info.pid, info.protocol_version) == (4242, 2)
    assert info.metadata == record.meta
    data = info.to_json_dict()
    assert {
        "devMode",
        "devPath",
        "lastError",
        "errorCount",
        "installedAt",
        "protocolVersion",
    } <= set(data)
    assert data["phase"] == "Running"
    assert data["pid"] == 4242
    # Plain JSON, and readable back into the same answer.
    assert PluginInfo.model_validate(json.loads(json.dumps(data))) == info


def test_info_name_falls_back_to_id_and_detected_capabilities_win() -> None:
    meta = PluginMeta(id="beta", version="1", capabilities=["resource"])
    record = PluginRecord.new(meta)
    assert record.to_info().name == "beta"
    assert record.to_info().capabilities == ["resource"]
    record.capabilities = ["resource", "exec"]
    assert record.to_info().capabilities == ["resource", "exec"]
    assert meta.capabilities == ["resource"]  # the metadata itself is untouched


def test_info_capabilities_is_a_copy() -> None:
    record = PluginRecord.new(PluginMeta(id="beta", version="1", capabilities=["log"]))
    info = record.to_info()
    info.capabilities.append("exec")
    assert record.meta.capabilities == ["log"]
