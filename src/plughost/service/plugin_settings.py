"""A plugin's own settings through the host: Omniview SDK plugins' ``SettingsPlugin``.

The local service's ``GET /v1/plugins/{id}/settings``, ``GET .../settings/{key}`` and
``PUT .../settings/{key}`` (so ``plughost settings`` and the dashboard's settings
form) end here. The typed client is :mod:`plughost.omniview`'s, built from the
user's copy of Omniview's SDK, which the host loads once, on first use (a missing
SDK is OmniviewSdkNotFoundError, 412, with its hints).

A setting as JSON: ``id``, ``label``, ``description``, ``type`` (``text``,
``integer``, ``float``, ``toggle``, ``select``, ``multi_select``, ``color``,
``datetime``, ``password``), ``value``, ``default`` (null when the plugin does
not say: SDK v0.5.0 never does), ``options`` (``label``, ``description``,
``value``), ``sensitive``, ``devOnly``, ``fileSelection``, ``redacted`` and
``hasValue``. The SDK does not send its ``Sensitive`` flag, so a ``password``
setting is what counts as sensitive (``sensitive: true``; ``null``: the plugin
does not say). A sensitive value is left out (``value: null``, ``redacted: true``)
of everything but ``GET .../settings/{key}``, the one explicit ask for it.

A new value is checked against the setting's type before it is sent: the SDK
drops a value of the wrong type without a word (a string for a toggle) or
converts it (2.5 for an integer is stored as 2). A value the plugin refuses
(its validator, or a conversion it cannot make) is refused with the plugin's own
message (400 ``validation``).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import math
from typing import TYPE_CHECKING, Any

from ..errors import PlughostError, PluginCallError, ValidationError

if TYPE_CHECKING:
    from ..host.manager import PluginManager
    from ..omniview import OmniviewSdk, Setting, SettingsClient

__all__ = [
    "CAPABILITY",
    "DEFAULT_TIMEOUT",
    "PluginSettings",
    "SettingNotFoundError",
    "json_value",
    "set_setting",
    "setting_json",
]

CAPABILITY = "settings"
DEFAULT_TIMEOUT = 10.0
# The codes the Go SDK answers a refused value with ("failed to set setting: ...").
_REFUSALS = frozenset({"INTERNAL", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE"})


class SettingNotFoundError(PlughostError):
    """The plugin has no such setting, or no settings at all."""

    type = "setting_not_found"
    status = 404
    default_title = "Setting not found"


def json_value(value: Any) -> Any:
    """A decoded setting value as JSON data (datetimes as ISO text, durations in seconds,
    an Any plughost cannot read as ``{"@type", "value": base64}``)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_value(v) for v in value]
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    type_url = getattr(value, "type_url", None)
    if isinstance(type_url, str):
        raw = getattr(value, "value", b"")
        return {"@type": type_url, "value": base64.b64encode(raw).decode()}
    return str(value)


def _sensitive(setting: Setting) -> bool | None:
    return True if setting.type == "password" else None


def setting_json(setting: Setting, *, reveal: bool = False) -> dict[str, Any]:
    """One setting as the API answers it (see the module docstring)."""
    value = json_value(setting.value)
    sensitive = _sensitive(setting)
    redacted = bool(sensitive) and not reveal
    return {
        "id": setting.id,
        "label": setting.label,
        "description": setting.description,
        "type": setting.type,
        "value": None if redacted else value,
        "default": None if redacted else json_value(setting.default),
        "options": [
            {"label": o.label, "description": o.description, "value": json_value(o.value)}
            for o in setting.options
        ],
        "sensitive": sensitive,
        "devOnly": setting.dev_only,
        "fileSelection": setting.file_selection,
        "redacted": redacted,
        "hasValue": value not in (None, "", [], {}),
    }


def _not_found(plugin_id: str, key: str, known: list[str]) -> SettingNotFoundError:
    return SettingNotFoundError(
        f"{plugin_id} has no setting {key!r}",
        plugin_id=plugin_id,
        suggestions=[f"its settings: {', '.join(known)}" if known else "it declares none"],
    )


def _shown(setting: Setting, value: Any) -> str:
    """A value for a message: as JSON, a sensitive setting's hidden."""
    if _sensitive(setting):
        return "(hidden)"
    return json.dumps(json_value(value), ensure_ascii=False)[:200]


async def set_setting(
    client: SettingsClient, key: str, value: Any, *, timeout: float = DEFAULT_TIMEOUT
) -> Setting:
    """Set one setting of the plugin ``client`` talks to, checked first; the setting as the
    plugin has it afterwards.

    Unknown ``key``: SettingNotFoundError. A value of the wrong type: ValidationError
    naming the type expected. A value the plugin refuses: ValidationError with the
    plugin's own message. Anything else the plugin answers stays a PluginCallError.
    """
    from ..omniview import check_value

    plugin_id = client.plugin_id
    settings = await client.list(timeout=timeout)
    setting = settings.get(key)
    if setting is None:
        raise _not_found(plugin_id, key, sorted(settings))
    expected = check_value(setting, value)
    if expected is not None:
        hints = []
        if setting.options:
            hints.append(
                "its options: " + ", ".join(_shown(setting, o.value) for o in setting.options)
            )
        if not _sensitive(setting):
            hints.append(f"its value now: {_shown(setting, setting.value)}")
        raise ValidationError(
            f"setting {key!r} of {plugin_id} ({setting.type}) takes {expected}, "
            f"got {_shown(setting, value)}",
            title="Wrong setting value",
            plugin_id=plugin_id,
            suggestions=hints,
        )
    try:
        await client.set(key, value, check=False, timeout=timeout)
    except PluginCallError as exc:
        if exc.grpc_code not in _REFUSALS:
            raise
        said = exc.detail.partition(f"answered {exc.grpc_code}: ")[2] or exc.detail
        raise ValidationError(
            f"{plugin_id} refused {_shown(setting, value)} for setting {key!r}: {said}",
            title="Setting value refused",
            plugin_id=plugin_id,
            suggestions=[f"see the plugin's log: plughost logs {plugin_id}"],
        ) from None
    return await client.setting(key, timeout=timeout)


class PluginSettings:
    """The settings routes' work for one manager; the SDK is loaded on first use, once."""

    def __init__(self, manager: PluginManager, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.manager = manager
        self.timeout = timeout
        self._sdk: OmniviewSdk | None = None
        self._loading = asyncio.Lock()

    async def sdk(self) -> OmniviewSdk:
        """The host's Omniview SDK ($PLUGHOST_OMNIVIEW_SDK, the ``omniview_sdk`` setting,
        else Go's module cache); a failure is raised, and tried again next time."""
        if self._sdk is None:
            async with self._loading:
                if self._sdk is None:
                    from ..omniview import load_sdk

                    settings = self.manager.settings
                    self._sdk = await asyncio.to_thread(load_sdk, settings=settings)
        return self._sdk

    async def client(self, plugin_id: str) -> SettingsClient:
        """The typed client of a plugin that has the settings capability."""
        info = self.manager.get_plugin(plugin_id)  # PluginNotFoundError
        if CAPABILITY not in info.capabilities:
            have = ", ".join(info.capabilities) or "none"
            raise SettingNotFoundError(
                f"{plugin_id} does not have the settings capability (its capabilities: {have})",
                title="No settings",
                plugin_id=plugin_id,
                suggestions=[
                    "settings are served by plugins built with Omniview's plugin SDK; a "
                    "plugin that is not running is known by its plugin.yaml only: start it"
                ],
            )
        return (await self.sdk()).settings(self.manager.client(plugin_id))

    async def list(self, plugin_id: str) -> list[dict[str, Any]]:
        client = await self.client(plugin_id)
        settings = await client.list(timeout=self.timeout)
        return [setting_json(s) for s in settings.values()]

    async def get(self, plugin_id: str, key: str) -> dict[str, Any]:
        client = await self.client(plugin_id)
        settings = await client.list(timeout=self.timeout)
        if key not in settings:
            raise _not_found(plugin_id, key, sorted(settings))
        return setting_json(settings[key], reveal=True)

    async def set(self, plugin_id: str, key: str, value: Any) -> dict[str, Any]:
        client = await self.client(plugin_id)
        return setting_json(await set_setting(client, key, value, timeout=self.timeout))
