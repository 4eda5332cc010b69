"""Typed clients of Omniview plugins, built at run time from Omniview's own plugin SDK.

plughost ships no code of the SDK (AGPL-3.0): it reads the user's copy of its
``.proto`` files (:mod:`.locate`), compiles them with grpcio-tools' protoc
(:mod:`.generate`) and builds message classes, stub classes and clients from them
(:mod:`.sdk`)::

    from plughost.omniview import load_sdk

    sdk = load_sdk()                     # or load_sdk("/path/to/plugin-sdk")
    settings = sdk.settings(manager.client("kubernetes"))
    print(await settings.list())         # {"kubeconfig": Setting(...), ...}
    await settings.set("kubeconfig", "~/.kube/config")

    resources = sdk.resource(manager.client("kubernetes"))
    pods = await resources.list("core::v1::Pod", connection="minikube")

    Setting = sdk.messages("settings").Setting            # raw messages and stubs
    stub = manager.client("kubernetes").stub(sdk.stub("settings"))

``plughost omniview stubs -o DIR`` writes protoc's Python modules for the same files,
for an application that prefers checked-in stubs.
"""

from __future__ import annotations

from .classes import ProtoNamespace, SdkProtos
from .clients import ServiceClient, snake_case
from .generate import write_python_stubs
from .locate import ENV_VAR, MODULE, SETTING, TESTED_VERSION, SdkLocation, locate_sdk
from .resource import ResourceClient, ResourcePage
from .sdk import OmniviewSdk, load_sdk
from .settings import (
    Setting,
    SettingOption,
    SettingsClient,
    check_value,
    decode_value,
    encode_value,
)

__all__ = [
    "ENV_VAR",
    "MODULE",
    "SETTING",
    "TESTED_VERSION",
    "OmniviewSdk",
    "ProtoNamespace",
    "ResourceClient",
    "ResourcePage",
    "SdkLocation",
    "SdkProtos",
    "ServiceClient",
    "Setting",
    "SettingOption",
    "SettingsClient",
    "check_value",
    "decode_value",
    "encode_value",
    "load_sdk",
    "locate_sdk",
    "snake_case",
    "write_python_stubs",
]
