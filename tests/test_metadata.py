"""plugin.yaml: every field of docs/plugin-yaml.md, tolerant of unknown keys, strict on ids."""

from __future__ import annotations

import io
import tarfile
import textwrap
from pathlib import Path

import pydantic
import pytest

from plughost.errors import ValidationError
from plughost.metadata import (
    BACKEND_CAPABILITIES,
    PluginMeta,
    load_meta,
    load_meta_from_bytes,
    load_meta_from_tarball,
    set_version,
    validate_plugin_id,
)

FULL = textwrap.dedent(
    """\
    id: kubernetes
    version: 0.3.1
    name: Kubernetes
    icon: LuShip
    icon_url: https://example.com/k8s.svg
    description: Browse clusters
    repository: https://github.com/example/kubernetes
    website: https://example.com
    category: cloud
    license: MPL-2.0
    author:
      name: Ada
      email: ada@example.com
      url: https://ada.example.com
    maintainers:
      - name: Bob
        email: bob@example.com
      - name: Cy
        email: cy@example.com
    tags: [k8s, cloud]
    dependencies: [helm]
    capabilities: [resource, exec, ui]
    theme:
      colors:
        primary: "#111111"
        secondary: "#222222"
        tertiary: "#333333"
    components:
      resource:
        - name: Pod
          group: core
    schema_version: 2
    sdk_protocol_version: 1
    dev:
      build: go build -o build/plugin ./pkg
      output: build/plugin
      watch: ["**/*.go", go.mod]
    min_host_version: 0.1.0
    max_host_version: 2.0.0
    """
)


DESIGN_FIELDS = [
    *("id", "version", "name", "icon", "icon_url", "description", "repository", "website"),
    *("category", "license", "author", "maintainers", "tags", "dependencies", "capabilities"),
    *("theme", "components", "schema_version", "sdk_protocol_version", "dev"),
    *("min_host_version", "max_host_version"),
]


def test_every_field_loads_with_its_original_key() -> None:
    meta = load_meta_from_bytes(FULL.encode())
    assert meta.id == "kubernetes"
    assert meta.version == "0.3.1"
    assert meta.name == "Kubernetes"
    assert meta.icon == "LuShip"
    assert meta.icon_url == "https://example.com/k8s.svg"
    assert meta.description == "Browse clusters"
    assert meta.repository == "https://github.com/example/kubernetes"
    assert meta.website == "https://example.com"
    assert meta.category == "cloud"
    assert meta.license == "MPL-2.0"
    assert (meta.author.name, meta.author.email, meta.author.url) == (
        "Ada",
        "ada@example.com",
        "https://ada.example.com",
    )
    assert [(m.name, m.email) for m in meta.maintainers] == [
        ("Bob", "bob@example.com"),
        ("Cy", "cy@example.com"),
    ]
    assert meta.tags == ["k8s", "cloud"]
    assert meta.dependencies == ["helm"]
    assert meta.capabilities == ["resource", "exec", "ui"]
    colors = meta.theme.colors
    assert (colors.primary, colors.secondary, colors.tertiary) == ("#111111", "#222222", "#333333")
    assert meta.components.resource == [{"name": "Pod", "group": "core"}]
    assert meta.schema_version == 2
    assert meta.sdk_protocol_version == 1
    assert meta.dev is not None
    assert meta.dev.build == "go build -o build/plugin ./pkg"
    assert meta.dev.output == "build/plugin"
    assert meta.dev.watch == ["**/*.go", "go.mod"]
    assert meta.min_host_version == "0.1.0"
    assert meta.max_host_version == "2.0.0"
    assert meta.model_extra == {}


def test_dump_uses_the_original_keys_and_round_trips() -> None:
    meta = load_meta_from_bytes(FULL.encode())
    dumped = meta.model_dump(mode="json", by_alias=True)
    assert set(DESIGN_FIELDS) <= set(dumped)
    assert load_meta_from_bytes(meta.to_yaml().encode()) == meta


def test_minimal_file_gets_defaults() -> None:
    meta = load_meta_from_bytes(b"id: tiny\nversion: '1'\n")
    assert meta.name == ""
    assert meta.capabilities == []
    assert meta.maintainers == []
    assert meta.dev is None
    assert meta.schema_version is None
    assert not meta.has_backend_capabilities()
    assert not meta.has_ui_capabilities()


def test_numeric_version_is_read_as_text() -> None:
    assert load_meta_from_bytes(b"id: tiny\nversion: 2\n").version == "2"
    assert load_meta_from_bytes(b"id: tiny\nversion: 1.5\n").version == "1.5"


def test_unknown_keys_are_kept_and_ignored() -> None:
    text = FULL + "x_marketplace:\n  featured: true\nreleased: 2024\n"
    text = text.replace(
        "  url: https://ada.example.com\n", "  url: https://a.example\n  mastodon: '@ada'\n"
    )
    meta = load_meta_from_bytes(text.encode())
    assert meta.model_extra == {"x_marketplace": {"featured": True}, "released": 2024}
    assert meta.author.model_extra == {"mastodon": "@ada"}
    # Kept when written out again, so nothing the original tools wrote is lost.
    again = load_meta_from_bytes(meta.to_yaml().encode())
    assert again.model_extra == meta.model_extra
    assert again.author.model_extra == {"mastodon": "@ada"}


@pytest.mark.parametrize(
    ("capabilities", "backend", "ui"),
    [
        ([], False, False),
        (["ui"], False, True),
        (["resource", "ui"], True, True),
        *[([cap], True, False) for cap in sorted(BACKEND_CAPABILITIES)],
    ],
)
def test_capability_kinds(capabilities: list[str], backend: bool, ui: bool) -> None:
    meta = PluginMeta(id="p", version="1", capabilities=capabilities)
    assert meta.has_backend_capabilities() is backend
    assert meta.has_ui_capabilities() is ui


def test_backend_capabilities_are_the_design_list() -> None:
    assert {"resource", "exec", "networker", "log", "metric", "settings"} == BACKEND_CAPABILITIES


def test_unknown_capability_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        load_meta_from_bytes(b"id: p\nversion: '1'\ncapabilities: [resource, teleport]\n", "p.yaml")
    assert "p.yaml" in info.value.detail
    assert "capabilities" in info.value.detail
    assert "teleport" in info.value.detail


# --------------------------------------------------------------------------
# Plugin ids.

BAD_IDS = [
    "..",
    "a/b",
    "../etc",
    "My-Plugin",
    "UPPER",
    "",
    "a" * 65,
    ".hidden",
    "-dash",
    "a..b",
    "a b",
    "é",
]
GOOD_IDS = ["a", "0", "a" * 64, "my-plugin", "x.y_z-1", "0abc", "kubernetes"]


@pytest.mark.parametrize("plugin_id", BAD_IDS)
def test_bad_ids_are_refused(plugin_id: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_plugin_id(plugin_id)
    assert "1-64" in info.value.detail
    assert repr(plugin_id) in info.value.detail
    with pytest.raises(pydantic.ValidationError):
        PluginMeta.model_validate({"id": plugin_id, "version": "1"})


@pytest.mark.parametrize("plugin_id", BAD_IDS)
def test_bad_ids_in_a_file_name_the_field(plugin_id: str) -> None:
    data = f"id: {plugin_id!r}\nversion: '1'\n".encode()
    with pytest.raises(ValidationError) as info:
        load_meta_from_bytes(data, "somewhere/plugin.yaml")
    detail = info.value.detail
    assert "somewhere/plugin.yaml" in detail
    assert "field 'id'" in detail
    assert "expected 1-64 characters" in detail


@pytest.mark.parametrize("value", [None, 12, ["a"]])
def test_non_string_ids_are_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        validate_plugin_id(value)


@pytest.mark.parametrize("plugin_id", GOOD_IDS)
def test_good_ids_are_accepted(plugin_id: str) -> None:
    assert validate_plugin_id(plugin_id) == plugin_id
    assert PluginMeta(id=plugin_id, version="1").id == plugin_id


# --------------------------------------------------------------------------
# Errors name the file, the field path and what was expected.


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("id: p\n", "version", "Field required"),
        ("version: '1'\n", "id", "Field required"),
        ("id: p\nversion: '  '\n", "version", "non-empty version"),
        ("id: p\nversion: '1'\ntags: 5\n", "tags", "valid list"),
        ("id: p\nversion: '1'\nauthor: {name: [1]}\n", "author.name", "valid string"),
        (
            "id: p\nversion: '1'\nmaintainers: [{name: Bob}, {email: [3]}]\n",
            "maintainers.1.email",
            "valid string",
        ),
        (
            "id: p\nversion: '1'\ntheme: {colors: {primary: [1]}}\n",
            "theme.colors.primary",
            "valid string",
        ),
        ("id: p\nversion: '1'\nschema_version: two\n", "schema_version", "valid integer"),
        ("id: p\nversion: '1'\ndev: {watch: '*.go'}\n", "dev.watch", "valid list"),
    ],
)
def test_errors_name_file_field_and_expectation(text: str, field: str, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_meta_from_bytes(text.encode(), "/plugins/p/plugin.yaml")
    err = info.value
    assert err.type == "validation"
    assert "/plugins/p/plugin.yaml" in err.detail
    assert f"field '{field}'" in err.detail
    assert expected in err.detail


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as info:
        load_meta_from_bytes(b"id: BAD\ntags: 5\n", "f.yaml")
    for field in ("id", "version", "tags"):
        assert f"field '{field}'" in info.value.detail


def test_invalid_yaml_names_file_and_line() -> None:
    with pytest.raises(ValidationError) as info:
        load_meta_from_bytes(b"id: p\nversion: '1'\ntags: [a, b\n", "x/plugin.yaml")
    assert "x/plugin.yaml" in info.value.detail
    assert "not valid YAML" in info.value.detail
    assert "line" in info.value.detail


@pytest.mark.parametrize("text", [b"- id: p\n", b"just text\n", b""])
def test_top_level_must_be_a_mapping(text: bytes) -> None:
    with pytest.raises(ValidationError) as info:
        load_meta_from_bytes(text, "top.yaml")
    assert "top.yaml" in info.value.detail
    assert "expected a mapping" in info.value.detail


def test_binary_garbage_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as info:
        load_meta_from_bytes(b"\xff\xfe\x00garbage\x00", "g.yaml")
    assert "g.yaml" in info.value.detail


def test_oversized_file_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        load_meta_from_bytes(b"id: p\nversion: '1'\n" + b"#" * (1024 * 1024 + 1), "big.yaml")
    assert "big.yaml" in info.value.detail


# --------------------------------------------------------------------------
# Sources: a directory, bytes, a .tar.gz.


def test_load_from_directory(tmp_path: Path) -> None:
    (tmp_path / "plugin.yaml").write_text(FULL)
    assert load_meta(tmp_path) == load_meta_from_bytes(FULL.encode())
    assert load_meta(str(tmp_path)).id == "kubernetes"


def test_load_from_directory_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        load_meta(tmp_path)
    assert str(tmp_path / "plugin.yaml") in info.value.detail
    assert "not found" in info.value.detail
    (tmp_path / "plugin.yaml").write_text("id: p\nversion: '1'\ncapabilities: resource\n")
    with pytest.raises(ValidationError) as info:
        load_meta(tmp_path)
    assert str(tmp_path / "plugin.yaml") in info.value.detail
    assert "field 'capabilities'" in info.value.detail


def _tarball(path: Path, members: dict[str, bytes], *, gz: bool = True) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("name", ["plugin.yaml", "./plugin.yaml"])
def test_load_from_tarball(tmp_path: Path, name: str) -> None:
    pkg = _tarball(
        tmp_path / "pkg.tar.gz",
        {"bin/plugin": b"\x7fELF", "assets/index.js": b"", name: FULL.encode()},
    )
    assert load_meta_from_tarball(pkg) == load_meta_from_bytes(FULL.encode())


def test_tarball_with_plugin_yaml_only_below_the_top_is_refused(tmp_path: Path) -> None:
    pkg = _tarball(tmp_path / "pkg.tar.gz", {"sub/plugin.yaml": FULL.encode()})
    with pytest.raises(ValidationError) as info:
        load_meta_from_tarball(pkg)
    assert str(pkg) in info.value.detail
    assert "no plugin.yaml at its top level" in info.value.detail


def test_tarball_bad_metadata_names_archive_and_field(tmp_path: Path) -> None:
    pkg = _tarball(tmp_path / "pkg.tar.gz", {"plugin.yaml": b"id: p\n"})
    with pytest.raises(ValidationError) as info:
        load_meta_from_tarball(pkg)
    assert f"{pkg}!plugin.yaml" in info.value.detail
    assert "field 'version'" in info.value.detail


def test_tarball_plugin_yaml_must_be_a_regular_file(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg.tar.gz"
    with tarfile.open(pkg, "w:gz") as tar:
        link = tarfile.TarInfo("plugin.yaml")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ValidationError) as info:
        load_meta_from_tarball(pkg)
    assert "not a regular file" in info.value.detail


@pytest.mark.parametrize("content", [b"not a tarball at all", b""])
def test_not_a_gzip_tarball(tmp_path: Path, content: bytes) -> None:
    pkg = tmp_path / "pkg.tar.gz"
    pkg.write_bytes(content)
    with pytest.raises(ValidationError) as info:
        load_meta_from_tarball(pkg)
    assert str(pkg) in info.value.detail


def test_plain_tar_is_not_a_gzip_tarball(tmp_path: Path) -> None:
    pkg = _tarball(tmp_path / "pkg.tar.gz", {"plugin.yaml": FULL.encode()}, gz=False)
    with pytest.raises(ValidationError) as info:
        load_meta_from_tarball(pkg)
    assert "gzip" in info.value.detail


def test_missing_tarball(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        load_meta_from_tarball(tmp_path / "nope.tar.gz")
    assert "nope.tar.gz" in info.value.detail


# --------------------------------------------------------------------------
# Text fields keep the text that was written (YAML 1.1 would turn it into
# booleans, numbers or dates; the original's Go loader keeps the string).


@pytest.mark.parametrize("plugin_id", ["off", "on", "yes", "no", "true", "123", "0", "1e3", "007"])
def test_unquoted_ids_that_look_like_other_types_load_as_written(plugin_id: str) -> None:
    meta = load_meta_from_bytes(f"id: {plugin_id}\nversion: '1'\n".encode())
    assert meta.id == plugin_id


@pytest.mark.parametrize("version", ["1.10", "1.0", "2", "2024-01-01", "1e5"])
def test_unquoted_versions_load_as_written(version: str) -> None:
    text = f"id: p\nversion: {version}\nmin_host_version: {version}\n"
    meta = load_meta_from_bytes(text.encode())
    assert meta.version == version
    assert meta.min_host_version == version


def test_nested_text_fields_keep_their_text() -> None:
    text = (
        "id: p\nversion: '1'\nname: 2048\nauthor: {name: No, email: yes}\n"
        "maintainers: [{name: off}]\ntags: [on, 1.0]\ndependencies: [123]\n"
        "theme: {colors: {primary: 000000}}\ndev: {build: make, watch: [1.5]}\n"
    )
    meta = load_meta_from_bytes(text.encode())
    assert meta.name == "2048"
    assert (meta.author.name, meta.author.email) == ("No", "yes")
    assert meta.maintainers[0].name == "off"
    assert meta.tags == ["on", "1.0"]
    assert meta.dependencies == ["123"]
    assert meta.theme.colors.primary == "000000"
    assert meta.dev is not None and meta.dev.watch == ["1.5"]


def test_typed_and_unknown_fields_keep_their_yaml_types() -> None:
    meta = load_meta_from_bytes(b"id: p\nversion: '1'\nschema_version: 2\nx_flag: yes\nx_n: 7\n")
    assert meta.schema_version == 2
    assert meta.model_extra == {"x_flag": True, "x_n": 7}


def test_null_text_field_is_still_an_error() -> None:
    with pytest.raises(ValidationError) as info:
        load_meta_from_bytes(b"id: p\nversion:\n", "n.yaml")
    assert "field 'version'" in info.value.detail


def test_multiple_documents_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        load_meta_from_bytes(b"id: p\nversion: '1'\n---\nid: q\n", "multi.yaml")
    assert "multi.yaml" in info.value.detail


# --------------------------------------------------------------------------
# set_version: only the version's bytes change.

ODD = (
    b"# a plugin, hand-written\n"
    b"id: odd   # the id\n"
    b"name: off\n"
    b"version:   '0.1.0'   # set by the marketplace\n"
    b"description: 1.10\n"
    b"tags: [ 'a' , \"b\" ,c ]\n"
    b"author: {name: \"Ada\", email: 'ada@example.com'}\n"
    b'icon: "Lu\\u0053hip"\n'
    b"# trailing comment\n"
)


def _diff_span(before: bytes, after: bytes) -> tuple[bytes, bytes]:
    """The differing middle of two byte strings (common prefix and suffix removed)."""
    start = 0
    while start < min(len(before), len(after)) and before[start] == after[start]:
        start += 1
    end = 0
    while end < min(len(before), len(after)) - start and before[-1 - end] == after[-1 - end]:
        end += 1
    return before[start : len(before) - end], after[start : len(after) - end]


def test_set_version_changes_only_the_version_bytes(tmp_path: Path) -> None:
    (tmp_path / "plugin.yaml").write_bytes(ODD)
    meta = set_version(tmp_path, "1.10")
    after = (tmp_path / "plugin.yaml").read_bytes()
    assert after == ODD.replace(b"'0.1.0'", b'"1.10"')
    assert _diff_span(ODD, after) == (b"'0.1.0'", b'"1.10"')
    assert (meta.version, meta.name, meta.description) == ("1.10", "off", "1.10")
    assert meta.icon == "LuShip" and meta.tags == ["a", "b", "c"]
    assert meta == load_meta(tmp_path)


def test_set_version_keeps_crlf_and_a_missing_final_break(tmp_path: Path) -> None:
    data = b"id: p\r\nversion: 1.0 # old\r\nname: off"
    (tmp_path / "plugin.yaml").write_bytes(data)
    assert set_version(tmp_path, "2.0.0-rc.1").version == "2.0.0-rc.1"
    assert (tmp_path / "plugin.yaml").read_bytes() == data.replace(b"1.0", b'"2.0.0-rc.1"')


def test_set_version_replaces_a_number(tmp_path: Path) -> None:
    data = b"id: p\nversion: 1.10\nname: off\n"
    (tmp_path / "plugin.yaml").write_bytes(data)
    assert load_meta(tmp_path).version == "1.10"  # kept as written, not the float 1.1
    meta = set_version(tmp_path, "1.20")
    assert (tmp_path / "plugin.yaml").read_bytes() == b'id: p\nversion: "1.20"\nname: off\n'
    assert meta.version == "1.20" and meta.name == "off"


def test_set_version_adds_a_missing_version_after_the_id(tmp_path: Path) -> None:
    data = b"# top\nname: off\nid: p  # id\ndescription: 1.10\n"
    (tmp_path / "plugin.yaml").write_bytes(data)
    meta = set_version(tmp_path, "3")
    assert (tmp_path / "plugin.yaml").read_bytes() == (
        b'# top\nname: off\nid: p  # id\nversion: "3"\ndescription: 1.10\n'
    )
    assert (meta.version, meta.name, meta.description) == ("3", "off", "1.10")


def test_set_version_adds_a_missing_version_to_a_last_line_without_a_break(
    tmp_path: Path,
) -> None:
    (tmp_path / "plugin.yaml").write_bytes(b"name: x\nid: p")
    assert set_version(tmp_path, "1.0").version == "1.0"
    assert (tmp_path / "plugin.yaml").read_bytes() == b'name: x\nid: p\nversion: "1.0"'


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (b"id: p\nversion:\nname: n\n", b'id: p\nversion: "9"\nname: n\n'),  # null
        (b"id: p\nversion: |\n  1.0\n\nname: n\n", b'id: p\nversion: "9"\n\nname: n\n'),
        (b"x: &v 1.0\nid: p\nversion: *v\n", b'x: &v 1.0\nid: p\nversion: "9"\n'),
        (b"{id: p, version: 1}\n", b'{id: p, version: "9"}\n'),
        (b"{id: p}\n", b'{id: p, version: "9"}\n'),
        (b"  id: p\n  name: n\n", b'  id: p\n  version: "9"\n  name: n\n'),
    ],
)
def test_set_version_odd_shapes(tmp_path: Path, before: bytes, after: bytes) -> None:
    (tmp_path / "plugin.yaml").write_bytes(before)
    assert set_version(tmp_path, "9").version == "9"
    assert (tmp_path / "plugin.yaml").read_bytes() == after


@pytest.mark.parametrize("version", ['1.0 "beta"', "it's", "a\\b", "é-1", "x: y # z", "off"])
def test_set_version_quotes_any_text(tmp_path: Path, version: str) -> None:
    (tmp_path / "plugin.yaml").write_bytes(b"id: p\nversion: 1\n")
    assert set_version(tmp_path, version).version == version
    assert load_meta(tmp_path).version == version


def test_set_version_writes_nothing_it_cannot_read_back(tmp_path: Path) -> None:
    data = b"id: p\nversion: 1\ncapabilities: [nope]\n"
    (tmp_path / "plugin.yaml").write_bytes(data)
    with pytest.raises(ValidationError):
        set_version(tmp_path, "2")
    with pytest.raises(ValidationError):
        set_version(tmp_path / "missing", "2")
    assert (tmp_path / "plugin.yaml").read_bytes() == data


# --------------------------------------------------------------------------
# The example plugins shipped in the repository.

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_there_are_example_plugins() -> None:
    assert sorted(EXAMPLES.glob("*/plugin.yaml"))


@pytest.mark.parametrize(
    "directory", sorted(p.parent for p in EXAMPLES.glob("*/plugin.yaml")), ids=lambda p: p.name
)
def test_example_metadata_loads(directory: Path) -> None:
    meta = load_meta(directory)
    assert meta.id == directory.name
    assert meta.version
    assert meta.model_extra == {}, "examples should use only known keys"
