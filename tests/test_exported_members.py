"""Every exported name exists, and the seed's names (the Go API's, in Python) are where promised."""

from __future__ import annotations

import importlib

import pytest

import plughost

FOUNDATION_MODULES = [
    "errors",
    "events",
    "fsutil",
    "lifecycle",
    "lock",
    "metadata",
    "paths",
    "phases",
    "pids",
    "reconcile",
    "records",
    "settings",
    "store",
    "validate",
]


def test_package_exports_exist() -> None:
    assert len(plughost.__all__) == len(set(plughost.__all__))
    for name in plughost.__all__:
        assert hasattr(plughost, name), name


@pytest.mark.parametrize("module_name", FOUNDATION_MODULES)
def test_module_exports_exist(module_name: str) -> None:
    module = importlib.import_module(f"plughost.{module_name}")
    exported = getattr(module, "__all__", None)
    assert exported, f"plughost.{module_name} has no __all__"
    assert len(exported) == len(set(exported))
    for name in exported:
        assert hasattr(module, name), f"plughost.{module_name}.{name}"


@pytest.mark.parametrize("module_name", FOUNDATION_MODULES)
def test_package_re_exports_are_the_same_objects(module_name: str) -> None:
    module = importlib.import_module(f"plughost.{module_name}")
    for name in module.__all__:
        if name in plughost.__all__:
            assert getattr(plughost, name) is getattr(module, name), name


SEED_NAMES = {
    "plughost": ["MAX_PLUGIN_SIZE"],
    "plughost.fsutil": [
        "copy_file",
        "copy_dir",
        "copy_directory",
        "copy_symlink",
        "create_if_not_exists",
        "exists",
    ],
    "plughost.validate": ["validate_for_phase"],
    "plughost.pids": ["PluginPIDTracker"],
    "plughost.reconcile": ["ReconcileResult", "Reconciler"],
    "plughost.events": ["StateChangePayload"],
}


@pytest.mark.parametrize(("module_name", "names"), list(SEED_NAMES.items()))
def test_seed_names(module_name: str, names: list[str]) -> None:
    module = importlib.import_module(module_name)
    assert [name for name in names if not hasattr(module, name)] == []


def test_max_plugin_size_is_one_gib() -> None:
    assert plughost.MAX_PLUGIN_SIZE == 1024**3
