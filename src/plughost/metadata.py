"""The plugin.yaml model: the original schema's keys, validated with pydantic.

Existing plugin packages must load as they are, so keys we do not know are kept
(``model_extra``) and ignored, and every known key keeps its original name.
"""

from __future__ import annotations

import codecs
import re
import tarfile
import types
import typing
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .atomic import atomic_write_bytes
from .errors import ValidationError

__all__ = [
    "BACKEND_CAPABILITIES",
    "METADATA_FILE",
    "NETWORK_LEVELS",
    "UI_CAPABILITIES",
    "Author",
    "Components",
    "DevConfig",
    "Maintainer",
    "Permissions",
    "PluginMeta",
    "Theme",
    "ThemeColors",
    "load_meta",
    "load_meta_from_bytes",
    "load_meta_from_tarball",
    "set_version",
    "validate_plugin_id",
]

METADATA_FILE = "plugin.yaml"
BACKEND_CAPABILITIES: frozenset[str] = frozenset(
    {"resource", "exec", "networker", "log", "metric", "settings"}
)
UI_CAPABILITIES: frozenset[str] = frozenset({"ui"})
KNOWN_CAPABILITIES = BACKEND_CAPABILITIES | UI_CAPABILITIES

_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_MAX_METADATA_BYTES = 1024 * 1024
_MAX_VALUES = 1_000_000  # values in plugin.yaml, aliases expanded


def validate_plugin_id(plugin_id: object) -> str:
    """Return ``plugin_id`` if it is a safe directory name, else raise ValidationError.

    Checked before anything touches the disk: the id becomes ``plugins/<id>``.
    """
    if not isinstance(plugin_id, str) or not _ID_RE.fullmatch(plugin_id) or ".." in plugin_id:
        raise ValidationError(
            f"invalid plugin id {plugin_id!r}: expected 1-64 characters of "
            "[a-z0-9._-] starting with a letter or digit, and no '..'",
            title="Invalid plugin id",
            suggestions=["use a lower-case id such as 'my-plugin' in plugin.yaml"],
        )
    return plugin_id


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Author(_Model):
    name: str = ""
    email: str = ""
    url: str = ""


class Maintainer(_Model):
    name: str = ""
    email: str = ""


class ThemeColors(_Model):
    primary: str = ""
    secondary: str = ""
    tertiary: str = ""


class Theme(_Model):
    colors: ThemeColors = Field(default_factory=ThemeColors)


class Components(_Model):
    resource: list[Any] = Field(default_factory=list)


class DevConfig(_Model):
    """plughost's dev-mode extension: how to build the plugin and what to watch."""

    build: str | None = Field(None, description="shell command that builds the plugin")
    output: str | None = Field(None, description="path of the built binary, relative to the source")
    watch: list[str] = Field(default_factory=list, description="globs that trigger a rebuild")


NETWORK_LEVELS: tuple[str, ...] = ("none", "loopback", "all")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NETWORK_WORDS = {
    "none": "no network",
    "loopback": "connect to services on this computer (127.0.0.1)",
    "all": "the whole network, internet included",
}


class Permissions(BaseModel):
    """What a plugin may do beyond its own files: plugin.yaml's ``permissions`` block.

    Strict, unlike the rest of plugin.yaml: a misspelt key would silently grant
    less (or more) than the author meant, so unknown keys and loose values are refused.
    The sandbox enforces the *granted* set; ``covers`` decides whether an update's
    request fits inside an earlier grant.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    network: Literal["none", "loopback", "all"] = Field(
        "none", description="none | loopback (127.0.0.1 services) | all"
    )
    filesystem: dict[str, Literal["ro", "rw"]] = Field(
        default_factory=dict, description="absolute or ~ paths, each ro or rw"
    )
    env: list[str] = Field(
        default_factory=list, description="host environment names passed beyond the allow-list"
    )
    exec: bool = Field(False, description="may start other programs")
    devices: list[str] = Field(default_factory=list, description="device nodes under /dev")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: object) -> object:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("expected a mapping with some of: " + ", ".join(cls.model_fields))
        unknown = sorted(str(k) for k in value if k not in cls.model_fields)
        if unknown:
            raise ValueError(
                f"unknown keys {unknown}; expected some of: " + ", ".join(cls.model_fields)
            )
        return value

    @field_validator("filesystem")
    @classmethod
    def _check_paths(cls, value: dict[str, str]) -> dict[str, str]:
        checked: dict[str, str] = {}
        for raw, mode in value.items():
            path = raw.rstrip("/") or "/"
            if not (path == "~" or path.startswith(("/", "~/"))):
                raise ValueError(f"path {raw!r}: expected an absolute path or one under ~/")
            if ".." in PurePosixPath(path).parts:
                raise ValueError(f"path {raw!r}: '..' is not allowed")
            checked[path] = mode
        return checked

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not _ENV_NAME_RE.fullmatch(name)]
        if bad:
            raise ValueError(f"{bad}: expected environment variable names such as 'KUBECONFIG'")
        return sorted(set(value))

    @field_validator("devices")
    @classmethod
    def _check_devices(cls, value: list[str]) -> list[str]:
        for device in value:
            parts = PurePosixPath(device).parts
            if len(parts) < 3 or parts[:2] != ("/", "dev") or ".." in parts:
                raise ValueError(f"device {device!r}: expected a path under /dev/")
        return sorted(set(value))

    def covers(self, asked: Permissions) -> bool:
        """Does this grant include everything ``asked`` wants?"""
        return not self.exceeded_by(asked)

    def exceeded_by(self, asked: Permissions) -> list[str]:
        """What ``asked`` wants beyond this grant, in plain words (empty: nothing)."""
        more: list[str] = []
        if NETWORK_LEVELS.index(asked.network) > NETWORK_LEVELS.index(self.network):
            more.append(f"network: {_NETWORK_WORDS[asked.network]}")
        for path, mode in asked.filesystem.items():
            granted = self._mode_of(path)
            if granted is None or (mode == "rw" and granted != "rw"):
                more.append(f"{'read and write' if mode == 'rw' else 'read'} {path}")
        extra_env = sorted(set(asked.env) - set(self.env))
        if extra_env:
            more.append("environment variables " + ", ".join(extra_env))
        if asked.exec and not self.exec:
            more.append("start other programs")
        extra_devices = sorted(set(asked.devices) - set(self.devices))
        if extra_devices:
            more.append("devices " + ", ".join(extra_devices))
        return more

    def _mode_of(self, path: str) -> str | None:
        """The mode this grant gives ``path``: its own entry or its nearest granted parent's."""
        best: tuple[int, str] | None = None
        for granted, mode in self.filesystem.items():
            inside = path == granted or path.startswith(granted.rstrip("/") + "/")
            if inside and (best is None or len(granted) > best[0]):
                best = (len(granted), mode)
        return best[1] if best else None

    def describe(self) -> list[str]:
        """One plain line per permission, for install prompts, ``info`` and ``doctor``."""
        lines = [f"network: {_NETWORK_WORDS[self.network]}"]
        for path, mode in self.filesystem.items():
            lines.append(f"{'read and write' if mode == 'rw' else 'read'} {path}")
        if self.env:
            lines.append("read environment variables " + ", ".join(self.env))
        lines.append("start other programs" if self.exec else "no other programs")
        if self.devices:
            lines.append("use devices " + ", ".join(self.devices))
        return lines


class PluginMeta(_Model):
    """Everything plugin.yaml says about a plugin."""

    id: str
    version: str
    name: str = ""
    icon: str = ""
    icon_url: str = ""
    description: str = ""
    repository: str = ""
    website: str = ""
    category: str = ""
    license: str = ""
    author: Author = Field(default_factory=Author)
    maintainers: list[Maintainer] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    dependencies: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=list)
    theme: Theme = Field(default_factory=Theme)
    components: Components = Field(default_factory=Components)
    schema_version: int | None = None
    sdk_protocol_version: int | None = None
    dev: DevConfig | None = None
    min_host_version: str | None = None
    max_host_version: str | None = None
    permissions: Permissions | None = None
    """None: the plugin declares nothing and runs unconfined, as before permissions existed."""

    @field_validator("id", mode="before")
    @classmethod
    def _check_id(cls, value: object) -> str:
        if not isinstance(value, str) or not _ID_RE.fullmatch(value) or ".." in value:
            raise ValueError(
                "expected 1-64 characters of [a-z0-9._-] starting with a letter or digit"
            )
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _check_version(cls, value: object) -> str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError("expected a non-empty version string such as '1.2.0'")
        return value.strip()

    @field_validator("capabilities")
    @classmethod
    def _check_capabilities(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - KNOWN_CAPABILITIES)
        if unknown:
            known = ", ".join(sorted(KNOWN_CAPABILITIES))
            raise ValueError(f"unknown capabilities {unknown}; expected some of: {known}")
        return list(dict.fromkeys(value))

    def has_backend_capabilities(self) -> bool:
        """True when the plugin has a process to run."""
        return any(cap in BACKEND_CAPABILITIES for cap in self.capabilities)

    def has_ui_capabilities(self) -> bool:
        """True when the plugin ships compiled UI assets."""
        return any(cap in UI_CAPABILITIES for cap in self.capabilities)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True, by_alias=True)
        return yaml.safe_dump(data, sort_keys=False)


_STR_TAG = "tag:yaml.org,2002:str"
_RETAGGED = frozenset(f"tag:yaml.org,2002:{kind}" for kind in ("int", "float", "bool", "timestamp"))


def _keep_text(node: yaml.Node, annotation: Any) -> None:
    """Make a plain scalar meant for a text field load as the text that was written.

    PyYAML follows YAML 1.1, so ``id: off`` loads as False, ``id: 123`` as an
    int and ``version: 1.10`` as the float 1.1. The original's Go loader fills
    string fields with the text itself; so do we, for every ``str`` field.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is str or (origin in (typing.Union, types.UnionType) and str in args):
        if isinstance(node, yaml.ScalarNode) and node.tag in _RETAGGED:
            node.tag = _STR_TAG
    elif origin is list and args and isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _keep_text(item, args[0])
    else:
        for candidate in (annotation, *args):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                _keep_text_fields(node, candidate)
                break


def _keep_text_fields(node: yaml.Node, model: type[BaseModel]) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value in model.model_fields:
            _keep_text(value, model.model_fields[key.value].annotation)


def _check_tree(value: Any) -> None:
    """Refuse what YAML can say but the host can neither hold nor serve as JSON.

    Aliases may share a node (a tree of shared parts is fine up to
    ``_MAX_VALUES`` values once expanded: an alias-free 1 MiB file holds at
    most half as many), but not contain themselves; text must be Unicode without lone
    surrogates (``"\\ud800"``) and ``!!binary`` values UTF-8. Iterative, so no
    depth makes it recurse.
    """
    count = 0
    path: set[int] = set()  # containers on the way from the top to here
    checked: set[int] = set()  # text already checked (aliases repeat it)
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        item, leaving = stack.pop()
        if leaving:
            path.discard(id(item))
            continue
        count += 1
        if count > _MAX_VALUES:
            raise ValueError(f"aliases expand to more than {_MAX_VALUES} values")
        if isinstance(item, dict | list | set | tuple):
            if id(item) in path:
                raise ValueError("an alias refers to a node that contains it")
            path.add(id(item))
            stack.append((item, True))
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, False) for child in children)
        elif isinstance(item, str | bytes) and id(item) not in checked:
            checked.add(id(item))
            try:
                if isinstance(item, str):
                    item.encode()
                else:
                    item.decode()
            except UnicodeError:
                kind = "text with a lone surrogate" if isinstance(item, str) else "!!binary"
                raise ValueError(f"{kind} value {item[:40]!r} is not UTF-8") from None


def _parse_yaml(data: bytes) -> Any:
    """``yaml.safe_load``, except that text fields of PluginMeta keep their text."""
    loader = yaml.SafeLoader(data)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _keep_text_fields(node, PluginMeta)
        value = loader.construct_document(node)
    finally:
        loader.dispose()
    _check_tree(value)
    return value


def _describe(errors: list[Any], source: str) -> str:
    lines = []
    for err in errors:
        field = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"{source}: field '{field}': {err['msg']}")
    return "; ".join(lines)


def load_meta_from_bytes(data: bytes, source: str = METADATA_FILE) -> PluginMeta:
    """Parse and validate plugin.yaml content; errors name ``source`` and the field."""
    if len(data) > _MAX_METADATA_BYTES:
        raise ValidationError(f"{source}: file is larger than 1 MiB", title="Invalid plugin.yaml")
    try:
        raw = _parse_yaml(data)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValidationError(
            f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}",
            title="Invalid plugin.yaml",
            suggestions=["check the indentation and quoting of plugin.yaml"],
        ) from exc
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValidationError(
            f"{source}: cannot be read as YAML: {exc}", title="Invalid plugin.yaml"
        ) from exc
    if not isinstance(raw, dict):
        raise ValidationError(
            f"{source}: expected a mapping of fields (id, version, ...), got {type(raw).__name__}",
            title="Invalid plugin.yaml",
        )
    try:
        return PluginMeta.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ValidationError(
            _describe(exc.errors(), source),
            title="Invalid plugin.yaml",
            suggestions=["fix the named fields; every key is described in docs/plugin-yaml.md"],
        ) from exc


def load_meta(directory: str | Path) -> PluginMeta:
    """Read ``<directory>/plugin.yaml``."""
    path = Path(directory) / METADATA_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ValidationError(
            f"{path}: file not found",
            title="Missing plugin.yaml",
            suggestions=["every plugin directory needs a plugin.yaml at its top"],
        ) from exc
    except OSError as exc:
        raise ValidationError(f"{path}: cannot be read: {exc.strerror}") from exc
    return load_meta_from_bytes(data, str(path))


def _decode_yaml(data: bytes) -> tuple[str, str]:
    """The text of YAML ``data`` and the codec that gives back the same bytes (BOM kept)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        codec = "utf-16-le" if data.startswith(codecs.BOM_UTF16_LE) else "utf-16-be"
    else:
        codec = "utf-8"
    return data.decode(codec), codec


def _node_end(node: yaml.Node) -> int:
    """Where ``node``'s own text ends: a block collection's last value, not the next key."""
    while isinstance(node, yaml.CollectionNode) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, yaml.MappingNode) else last
    return int(node.end_mark.index)


def _after_line(text: str, index: int) -> tuple[int, str]:
    """The start of the line after the one holding ``index``, and that line's break."""
    if index > 0 and text[index - 1] in "\r\n":  # a block scalar ends at the next line
        return index, "\r\n" if text[index - 2 : index] == "\r\n" else text[index - 1]
    match = re.compile(r"\r\n|\r|\n").search(text, index)
    if match is None:  # the last line, with no break: give it one
        found = re.search(r"\r\n|\r|\n", text)
        return len(text), "" if found is None else found.group()
    return match.end(), match.group()


def set_version(directory: Path, version: str) -> PluginMeta:
    """Set the top-level ``version`` of ``<directory>/plugin.yaml``, keeping every other byte.

    Only the value's text changes (to a double-quoted scalar, so ``1.10`` stays
    a string); comments, quoting and the other values stay as written, so
    ``name: off`` is still ``off``. Without a ``version`` key, ``version: "<v>"``
    goes on a new line after the ``id`` entry (else after the last entry). The
    result is validated before it is written; returns the new metadata.
    """
    path = Path(directory) / METADATA_FILE
    source = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ValidationError(
            f"{path}: file not found",
            title="Missing plugin.yaml",
            suggestions=["every plugin directory needs a plugin.yaml at its top"],
        ) from exc
    except OSError as exc:
        raise ValidationError(f"{path}: cannot be read: {exc.strerror}") from exc
    if len(data) > _MAX_METADATA_BYTES:
        raise ValidationError(f"{source}: file is larger than 1 MiB", title="Invalid plugin.yaml")
    try:
        text, codec = _decode_yaml(data)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValidationError(
            f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}",
            title="Invalid plugin.yaml",
            suggestions=["check the indentation and quoting of plugin.yaml"],
        ) from exc
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValidationError(
            f"{source}: cannot be read as YAML: {exc}", title="Invalid plugin.yaml"
        ) from exc
    if not isinstance(root, yaml.MappingNode) or not root.value:
        raise ValidationError(
            f"{source}: expected a mapping of fields (id, version, ...)",
            title="Invalid plugin.yaml",
        )
    quoted = yaml.safe_dump(version, default_style='"', allow_unicode=True, width=1 << 30)
    quoted = quoted.removesuffix("\n")
    entries = {k.value: (k, v) for k, v in root.value if isinstance(k, yaml.ScalarNode)}
    if "version" in entries:  # the last one, as the loader keeps the last
        key, value = entries["version"]
        start, end = int(value.start_mark.index), _node_end(value)
        if start < int(key.end_mark.index):  # an alias (*name): its node is elsewhere
            alias = re.compile(r"\s*:\s*(\*[^\s,\[\]{}]+)").match(text, key.end_mark.index)
            assert alias is not None, "an alias value follows its key"
            start, end = alias.span(1)
        old = text[start:end]
        kept = old[len(old.rstrip()) :]  # a block scalar's line breaks
        text = text[:start] + (" " if start == end else "") + quoted + kept + text[end:]
    elif root.flow_style:  # {id: x, ...}: before the closing brace
        close = int(root.end_mark.index) - 1
        text = f"{text[:close]}, version: {quoted}{text[close:]}"
    else:
        key, value = entries.get("id", root.value[-1])
        at, newline = _after_line(text, _node_end(value))
        line = " " * int(key.start_mark.column) + f"version: {quoted}"
        if at == len(text) and text[-1:] not in ("\n", "\r"):  # keep "no break at the end"
            text = f"{text}{newline or chr(10)}{line}"
        else:
            text = f"{text[:at]}{line}{newline}{text[at:]}"
    new = text.encode(codec)
    meta = load_meta_from_bytes(new, source)  # never write a file the host cannot read back
    atomic_write_bytes(path, new, None)
    return meta


def _is_metadata_member(name: str) -> bool:
    parts = [p for p in PurePosixPath(name).parts if p not in (".", "")]
    return parts == [METADATA_FILE]


def load_meta_from_tarball(path: str | Path) -> PluginMeta:
    """Read plugin.yaml from a .tar.gz package without extracting anything else."""
    source = f"{path}!{METADATA_FILE}"
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if _is_metadata_member(member.name):
                    if not member.isfile():
                        kind = (
                            "symlink"
                            if member.issym()
                            else "hard link"
                            if member.islnk()
                            else "directory"
                            if member.isdir()
                            else "special file"
                        )
                        raise ValidationError(
                            f"{source}: plugin.yaml is a {kind}, not a regular file",
                            title="Invalid plugin package",
                        )
                    fileobj = tar.extractfile(member)
                    assert fileobj is not None
                    return load_meta_from_bytes(fileobj.read(_MAX_METADATA_BYTES + 1), source)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValidationError(
            f"{path}: not a readable gzip tarball: {exc}",
            title="Invalid plugin package",
            suggestions=["build packages with 'plughost pack'"],
        ) from exc
    raise ValidationError(
        f"{path}: package has no {METADATA_FILE} at its top level",
        title="Invalid plugin package",
        suggestions=["put plugin.yaml at the root of the archive"],
    )
