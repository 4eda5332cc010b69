"""One exception family: type, status, title, detail, suggestions, plugin id."""

from __future__ import annotations

import inspect
import json

import pytest

from plughost import errors
from plughost.errors import (
    InvalidTransitionError,
    PlughostError,
    PluginBuildError,
    PluginInstallError,
    PluginLoadError,
    PluginNotFoundError,
    ValidationError,
    plugin_context,
)
from plughost.textcap import ITEMS, LIMIT

# class -> (type, status, parent)
TREE = {
    "ValidationError": ("validation", 400, "PlughostError"),
    "InvalidTransitionError": ("invalid_transition", 409, "ValidationError"),
    "PluginNotFoundError": ("plugin_not_found", 404, "PlughostError"),
    "PluginNotLoadedError": ("plugin_not_loaded", 409, "PlughostError"),
    "PluginConflictError": ("conflict", 409, "PlughostError"),
    "PluginLoadError": ("plugin_load_failed", 500, "PlughostError"),
    "HandshakeError": ("handshake_failed", 502, "PluginLoadError"),
    "PluginInstallError": ("plugin_install_failed", 400, "PlughostError"),
    "UnsafeArchiveError": ("unsafe_archive", 400, "PluginInstallError"),
    "PluginBuildError": ("plugin_build_failed", 422, "PlughostError"),
    "CancelledError": ("cancelled", 499, "PlughostError"),
    "SettingsMissingError": ("settings_missing_config", 412, "PlughostError"),
    "OmniviewSdkNotFoundError": ("omniview_sdk_not_found", 412, "SettingsMissingError"),
    "RootLockedError": ("root_locked", 423, "PlughostError"),
    "RegistryUnavailableError": ("registry_unavailable", 503, "PlughostError"),
    "ChecksumMismatchError": ("checksum_mismatch", 422, "PlughostError"),
    "SignatureInvalidError": ("signature_invalid", 422, "PlughostError"),
    "BrokerError": ("broker_failed", 502, "PlughostError"),
    "PluginCallError": ("plugin_call_failed", 502, "PlughostError"),
    "InternalError": ("internal", 500, "PlughostError"),
}

# The types the design names (docs/concepts.md, "Errors", lists them all).
DESIGN_TYPES = {
    "validation",
    "plugin_not_found",
    "plugin_not_loaded",
    "plugin_load_failed",
    "plugin_install_failed",
    "plugin_build_failed",
    "cancelled",
    "settings_missing_config",
    "registry_unavailable",
    "checksum_mismatch",
    "signature_invalid",
    "internal",
}


def _error_classes() -> dict[str, type[PlughostError]]:
    return {
        name: obj
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, PlughostError) and obj is not PlughostError
    }


def test_the_tree_is_as_documented() -> None:
    classes = _error_classes()
    assert set(TREE) <= set(classes)
    for name, (type_, status, parent) in TREE.items():
        cls = classes[name]
        assert cls.type == type_, name
        assert cls.status == status, name
        assert cls.__bases__ == (getattr(errors, parent),), name


def test_the_module_docstring_draws_every_class() -> None:
    doc = errors.__doc__ or ""
    for name, cls in _error_classes().items():
        line = next((line for line in doc.splitlines() if f" {name} " in line), "")
        assert f"type={cls.type}" in line, name
        assert line.rstrip().endswith(str(cls.status)), name
        assert cls.default_title != PlughostError.default_title, name
        assert name in errors.__all__


def test_every_design_type_exists() -> None:
    assert {cls.type for cls in _error_classes().values()} >= DESIGN_TYPES


def test_types_are_unique() -> None:
    types = [cls.type for cls in _error_classes().values()]
    assert len(types) == len(set(types))


def test_fields() -> None:
    err = PluginLoadError(
        "process exited with status 2 before the handshake",
        title="Kubernetes did not start",
        suggestions=["rebuild the plugin", "check its log"],
        plugin_id="kubernetes",
    )
    assert err.type == "plugin_load_failed"
    assert err.status == 500
    assert err.title == "Kubernetes did not start"
    assert err.detail == "process exited with status 2 before the handshake"
    assert err.suggestions == ["rebuild the plugin", "check its log"]
    assert err.plugin_id == "kubernetes"
    assert str(err) == "[kubernetes] process exited with status 2 before the handshake"
    assert isinstance(err, Exception)


def test_defaults() -> None:
    err = PluginNotFoundError("no plugin 'x'")
    assert err.title == "Plugin not found"
    assert err.suggestions == []
    assert err.plugin_id is None
    assert str(err) == "no plugin 'x'"


def test_suggestions_are_copied() -> None:
    source = ["one"]
    err = ValidationError("bad", suggestions=source)
    source.append("two")
    assert err.suggestions == ["one"]


def test_to_dict_and_problem_json() -> None:
    err = InvalidTransitionError("cannot move", suggestions=["try Stopping"], plugin_id="p")
    data = err.to_dict()
    assert data == {
        "type": "invalid_transition",
        "status": 409,
        "title": "Invalid lifecycle transition",
        "detail": "cannot move",
        "suggestions": ["try Stopping"],
        "pluginID": "p",
    }
    problem = err.to_problem()
    assert problem["type"] == "urn:plughost:error:invalid_transition"
    assert problem["errorType"] == "invalid_transition"
    for key in ("status", "title", "detail", "suggestions", "pluginID"):
        assert problem[key] == data[key]
    assert json.loads(json.dumps(problem)) == problem


def test_every_text_is_capped_where_the_error_is_made() -> None:
    """A detail quoting a huge path (or a server's huge message) is cut, saying how much."""
    huge = "/tmp/" + "a" * 3_000_000
    err = PluginInstallError(
        f"cannot open {huge}",
        title="T" * 10_000,
        suggestions=[f"remove {huge}"] * 1000,
        plugin_id="p" * 10_000,
    )
    assert err.detail.startswith("cannot open /tmp/aaa")
    assert err.detail.endswith(f"…[cut {len('cannot open ') + 3_000_005 - 4064:,} bytes]")
    assert str(err.args[0]) == err.detail
    assert len(str(err).encode()) <= 2 * LIMIT
    assert len(err.title) <= LIMIT and len(err.plugin_id or "") <= LIMIT
    assert len(err.suggestions) == ITEMS + 1 and err.suggestions[-1] == "…[cut 744 items]"
    assert all(len(hint) <= LIMIT for hint in err.suggestions)
    assert len(json.dumps(err.to_problem())) < (ITEMS + 4) * LIMIT
    build = PluginBuildError("failed", errors=[{"file": "x.go", "message": huge}] * 1000)
    assert len(build.errors) == ITEMS and len(build.errors[0]["message"]) <= LIMIT
    with pytest.raises(PluginLoadError) as info, plugin_context("q" * 10_000):
        raise PluginLoadError("boom")
    assert len(info.value.plugin_id or "") <= LIMIT


def test_plugin_context_attaches_the_id() -> None:
    with pytest.raises(PluginLoadError) as info, plugin_context("alpha"):
        raise PluginLoadError("boom")
    assert info.value.plugin_id == "alpha"
    assert str(info.value) == "[alpha] boom"


def test_plugin_context_keeps_an_existing_id() -> None:
    with pytest.raises(PluginLoadError) as info, plugin_context("outer"):
        raise PluginLoadError("boom", plugin_id="inner")
    assert info.value.plugin_id == "inner"


def test_plugin_context_nested_uses_the_innermost() -> None:
    with pytest.raises(ValidationError) as info, plugin_context("outer"), plugin_context("inner"):
        raise ValidationError("bad")
    assert info.value.plugin_id == "inner"


def test_plugin_context_leaves_other_exceptions_alone() -> None:
    original = KeyError("x")
    with pytest.raises(KeyError) as info, plugin_context("alpha"):
        raise original
    assert info.value is original
    with plugin_context("alpha"):
        pass
