"""Settings: defaults, plughost.toml, re-reading a changed file, the omniview profile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plughost.errors import SettingsMissingError, ValidationError
from plughost.paths import RootLayout, resolve_root
from plughost.settings import Settings, SettingsProvider


def test_defaults() -> None:
    settings = Settings()
    assert settings.profile == "plughost"
    assert settings.effective_cookie_key == "PLUGHOST"
    assert settings.protocol_versions == [1]
    assert settings.load_concurrency == 0
    assert settings.effective_load_concurrency == (os.cpu_count() or 1)
    assert settings.marketplace_url == ""
    assert settings.registry_public_key == ""
    provider = SettingsProvider()
    assert provider.settings == settings
    assert provider.get_int("load_concurrency") == 0


def test_every_setting_is_described() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name!r} has no description"


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert SettingsProvider(tmp_path / "plughost.toml").settings == Settings()


def test_toml_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "plughost.toml"
    path.write_text(
        'marketplace_url = "https://market.example"\n'
        "health_interval = 0.5\n"
        "protocol_versions = [1, 2]\n"
        "load_concurrency = 2\n"
        "[extra_env]\n"
        'REGION = "eu"\n'
    )
    provider = SettingsProvider(path)
    assert provider.get_string("marketplace_url") == "https://market.example"
    assert provider.get_float("health_interval") == 0.5
    assert provider.get("protocol_versions") == [1, 2]
    assert provider.get_int("load_concurrency") == 2
    assert provider.settings.extra_env == {"REGION": "eu"}
    assert provider.get_bool("marketplace_url") is True


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "plughost.toml"
    path.write_text('from_a_newer_version = true\nmarketplace_url = "x"\n')
    assert SettingsProvider(path).settings.marketplace_url == "x"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "plughost.toml"
    path.write_text("marketplace_url = \n")
    with pytest.raises(ValidationError) as info:
        SettingsProvider(path)
    assert str(path) in info.value.detail
    assert "TOML" in info.value.detail


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("health_interval = 0.01\n", "health_interval"),
        ('profile = "eclipse"\n', "profile"),
        ('load_concurrency = "many"\n', "load_concurrency"),
    ],
)
def test_invalid_value_names_the_file_and_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "plughost.toml"
    path.write_text(text)
    with pytest.raises(ValidationError) as info:
        SettingsProvider(path)
    assert str(path) in info.value.detail
    assert f"'{key}'" in info.value.detail


def _rewrite(path: Path, text: str) -> None:
    """Write ``text`` and make sure the stamp differs even on a coarse clock."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def test_provider_rereads_the_file_after_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "plughost.toml"
    _rewrite(path, 'marketplace_url = "https://one.example"\n')
    provider = SettingsProvider(path)
    assert provider.get_string("marketplace_url") == "https://one.example"
    _rewrite(path, 'marketplace_url = "https://two.example"\n')  # same size, new content
    assert provider.get_string("marketplace_url") == "https://two.example"
    path.unlink()
    assert provider.get_string("marketplace_url") == ""
    _rewrite(path, 'marketplace_url = "https://three.example"\n')
    assert provider.get_string("marketplace_url") == "https://three.example"


def test_unchanged_file_is_not_reread(tmp_path: Path) -> None:
    path = tmp_path / "plughost.toml"
    _rewrite(path, 'marketplace_url = "https://one.example"\n')
    provider = SettingsProvider(path)
    first = provider.settings
    assert provider.settings is first


def test_overrides_beat_the_file(tmp_path: Path) -> None:
    path = tmp_path / "plughost.toml"
    _rewrite(path, 'marketplace_url = "https://file.example"\nload_concurrency = 2\n')
    provider = SettingsProvider(path, overrides={"load_concurrency": 8})
    assert provider.get_int("load_concurrency") == 8
    provider.override(marketplace_url="https://cli.example")
    assert provider.get_string("marketplace_url") == "https://cli.example"
    _rewrite(path, 'marketplace_url = "https://changed.example"\n')
    assert provider.get_string("marketplace_url") == "https://cli.example"


def test_require_string_names_the_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "plughost.toml"
    provider = SettingsProvider(path)
    with pytest.raises(SettingsMissingError) as info:
        provider.require_string("registry_public_key")
    err = info.value
    assert (err.type, err.status) == ("settings_missing_config", 412)
    assert "registry_public_key" in err.detail
    assert str(path) in err.suggestions[0]
    _rewrite(path, 'registry_public_key = "' + "ab" * 32 + '"\n')
    assert provider.require_string("registry_public_key") == "ab" * 32


def test_unknown_setting_is_a_settings_error() -> None:
    with pytest.raises(SettingsMissingError) as info:
        SettingsProvider().get("no_such_knob")
    assert "no_such_knob" in info.value.detail


def test_omniview_profile_uses_the_omniview_cookie_key(tmp_path: Path) -> None:
    assert Settings(profile="omniview").effective_cookie_key == "OMNIVIEW"
    path = tmp_path / "plughost.toml"
    path.write_text('profile = "omniview"\n')
    assert SettingsProvider(path).settings.effective_cookie_key == "OMNIVIEW"
    assert Settings(profile="omniview", cookie_key="CUSTOM").effective_cookie_key == "CUSTOM"


def test_root_resolution(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clean_environ: Path
) -> None:
    assert resolve_root() == clean_environ  # PLUGHOST_HOME, set by the autouse fixture
    assert resolve_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_root(profile="omniview") == clean_environ
    monkeypatch.delenv("PLUGHOST_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_root(profile="omniview") == tmp_path / "home" / ".omniview"
    assert resolve_root(tmp_path / "explicit", profile="omniview") == tmp_path / "explicit"
    assert resolve_root().name == "plughost"


def test_root_layout(tmp_path: Path) -> None:
    layout = RootLayout(tmp_path / "root")
    assert layout.state_file == tmp_path / "root" / "plugin_state.json"
    assert layout.pid_file == tmp_path / "root" / "plugin_pids.json"
    assert layout.lock_file == tmp_path / "root" / "host.lock"
    assert layout.settings_file == tmp_path / "root" / "plughost.toml"
    assert layout.plugin_dir("alpha") == tmp_path / "root" / "plugins" / "alpha"
    assert layout.log_file("alpha") == tmp_path / "root" / "logs" / "alpha.log"
    layout.ensure()
    for directory in (layout.root, layout.plugins, layout.logs, layout.run):
        assert directory.is_dir()
    assert layout.run.stat().st_mode & 0o777 == 0o700
