"""``SettingsClient``: a plugin's settings (``omniview.sdk.settings.v1.SettingsPlugin``) as
Python values.

The SDK carries each value as a ``google.protobuf.Any`` holding a ``BytesValue`` of
the value's JSON (its ``ConvertInterfaceToAny``), so a value is anything JSON can
say: str, int, float, bool, None, lists and dicts (a ``datetime`` is sent as its ISO
text, as Go's time.Time marshals). Values in other wrappers (``StringValue``,
``Struct`` ...) are read too.

``set`` checks the value against the setting's type first (one GetSetting call;
``check=False`` skips it): the SDK itself drops a value of the wrong type without a
word, or fails deep in reflection, depending on the types.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from google.protobuf import any_pb2, duration_pb2, json_format, struct_pb2, timestamp_pb2
from google.protobuf import wrappers_pb2 as w
from google.protobuf.message import DecodeError, Message

from ..errors import ValidationError
from .clients import ServiceClient

__all__ = [
    "Setting",
    "SettingOption",
    "SettingsClient",
    "check_value",
    "decode_value",
    "encode_value",
]


@dataclasses.dataclass(frozen=True)
class SettingOption:
    label: str
    description: str
    value: Any


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting of a plugin, its value decoded."""

    id: str
    label: str
    description: str
    type: str
    """``text``, ``select``, ``multi_select``, ``integer``, ``float``, ``toggle``, ``color``,
    ``datetime`` or ``password`` (the SDK's SettingType without its prefix)."""
    value: Any
    default: Any = None
    options: tuple[SettingOption, ...] = ()
    dev_only: bool = False
    file_selection: dict[str, Any] | None = None
    message: Any = dataclasses.field(default=None, repr=False, compare=False)
    """The SDK's ``Setting`` message it was read from."""


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"a {type(value).__name__} cannot be a setting value")


def encode_value(value: Any) -> any_pb2.Any:
    """``value`` as the SDK sends it: Any(BytesValue(JSON of value)), google.protobuf's Any."""
    try:
        text = json.dumps(value, default=_json_default, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"cannot send {value!r} as a setting value: {exc}",
            suggestions=["use str, int, float (finite), bool, None, a list or a dict"],
        ) from None
    packed = any_pb2.Any()
    packed.Pack(w.BytesValue(value=text.encode()))
    return packed


_WRAPPERS: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        w.StringValue,
        w.BoolValue,
        w.Int32Value,
        w.Int64Value,
        w.UInt32Value,
        w.UInt64Value,
        w.FloatValue,
        w.DoubleValue,
    )
}


def decode_value(packed: Message | None) -> Any:
    """A value the plugin sent (an ``Any`` of any pool) as Python; an Any of a type it
    cannot read is returned as it is."""
    if packed is None:
        return None
    type_url: str = getattr(packed, "type_url", "")
    data: bytes = getattr(packed, "value", b"")
    if not type_url and not data:
        return None
    name = type_url.rsplit("/", 1)[-1]
    try:
        if name == "google.protobuf.BytesValue":
            raw = w.BytesValue.FromString(data).value
            try:
                return json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                return raw
        if name in _WRAPPERS:
            return getattr(_WRAPPERS[name].FromString(data), "value")  # noqa: B009
        if name in ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"):
            structs: dict[str, type[Message]] = {
                "google.protobuf.Struct": struct_pb2.Struct,
                "google.protobuf.Value": struct_pb2.Value,
                "google.protobuf.ListValue": struct_pb2.ListValue,
            }
            return json_format.MessageToDict(structs[name].FromString(data))
        if name == "google.protobuf.Timestamp":
            return timestamp_pb2.Timestamp.FromString(data).ToDatetime(datetime.UTC)
        if name == "google.protobuf.Duration":
            return duration_pb2.Duration.FromString(data).ToTimedelta()
    except DecodeError:
        pass
    return packed


_TYPE_PREFIX = "SETTING_TYPE_"


def check_value(setting: Setting, value: Any) -> str | None:
    """What the value of ``setting`` must be (``"an integer"``), when ``value`` cannot be
    it; None when it can. Types the SDK converts without a word (a float to an integer
    setting) or drops (a string for a toggle) are refused here."""
    kind = setting.type
    if kind in ("text", "password", "color") and not isinstance(value, str):
        return "a string"
    if kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        return "an integer"
    if kind == "float" and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        return "a number"
    if kind == "toggle" and not isinstance(value, bool):
        return "true or false"
    if kind == "datetime" and not isinstance(value, str | datetime.datetime | datetime.date):
        return "a date and time (a datetime or ISO 8601 text)"
    allowed = [o.value for o in setting.options]
    if kind == "select" and allowed and value not in allowed:
        return f"one of {allowed!r}"
    if kind == "multi_select":
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            return "a list"
        if allowed and any(v not in allowed for v in value):
            return f"a list of values among {allowed!r}"
    return None


class SettingsClient(ServiceClient):
    """A plugin's settings: ``list()``, ``setting(key)``, ``get(key)``, ``set(key, value)``,
    ``set_many({...})``; the raw RPCs stay available (``list_settings()`` ...)."""

    def _setting(self, message: Any) -> Setting:
        types = self.sdk.messages("settings").SettingType
        type_name = types.Name(message.type) if message.type in types.values() else "TEXT"
        selection = None
        if message.HasField("file_selection"):
            selection = self.sdk.to_dict(message.file_selection)
        return Setting(
            id=message.id,
            label=message.label,
            description=message.description,
            type=type_name.removeprefix(_TYPE_PREFIX).lower(),
            value=decode_value(message.value if message.HasField("value") else None),
            default=decode_value(message.default if message.HasField("default") else None),
            options=tuple(
                SettingOption(o.label, o.description, decode_value(o.value))
                for o in message.options
            ),
            dev_only=message.dev_only,
            file_selection=selection,
            message=message,
        )

    def _packed(self, value: Any) -> Message:
        return self.sdk.convert(encode_value(value))

    async def list(self, *, timeout: float | None = None) -> dict[str, Setting]:
        """Every setting of the plugin, by id."""
        response = await self.call("ListSettings", timeout=timeout)
        return {key: self._setting(response.settings[key]) for key in sorted(response.settings)}

    async def setting(self, key: str, *, timeout: float | None = None) -> Setting:
        """One setting: its type, label, options and value."""
        return self._setting(await self.call("GetSetting", id=key, timeout=timeout))

    async def get(self, key: str, *, timeout: float | None = None) -> Any:
        """The value of one setting, as Python."""
        response = await self.call("GetSettingValue", id=key, timeout=timeout)
        return decode_value(response.value if response.HasField("value") else None)

    async def _checked(self, key: str, value: Any, timeout: float | None) -> None:
        setting = await self.setting(key, timeout=timeout)
        expected = check_value(setting, value)
        if expected is not None:
            raise ValidationError(
                f"setting {key!r} is {setting.type}, so its value must be {expected}; "
                f"got {value!r}",
                title="Wrong setting value",
                plugin_id=self.plugin_id,
                suggestions=[f"its current value is {setting.value!r}"],
            )

    async def set(
        self, key: str, value: Any, *, check: bool = True, timeout: float | None = None
    ) -> None:
        """Set one setting (``check``: refuse a value of the wrong type before sending)."""
        packed = self._packed(value)
        if check:
            await self._checked(key, value, timeout)
        await self.call("SetSetting", id=key, value=packed, timeout=timeout)

    async def set_many(
        self, values: Mapping[str, Any], *, check: bool = True, timeout: float | None = None
    ) -> None:
        """Set several settings in one call (the SDK validates them all before it commits)."""
        packed = {key: self._packed(value) for key, value in values.items()}
        if check:
            for key, value in values.items():
                await self._checked(key, value, timeout)
        await self.call("SetSettings", settings=packed, timeout=timeout)
