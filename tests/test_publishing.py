"""Publishing with a publisher key next to the registry's, and platforms.

Real packages, a real registry directory, a real registry server on 127.0.0.1
and real installs: a package published with the publisher's key installs on a
host that trusts only that key; what ``plughost sign`` wrote is published as it
is, after it was checked; a signature that does not match is refused before
anything is stored. Platforms are read from the package: ``any`` for a Python
plugin, the binary's GOOS_GOARCH for a native ``bin/plugin`` (tiny ELF,
Mach-O and PE headers are enough to show it; a real Go binary too, with Go).
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import struct
import tarfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import cli, new_root
from test_install import FAST, make_package

from plughost.errors import ChecksumMismatchError, SignatureInvalidError, ValidationError
from plughost.host.manager import PluginManager
from plughost.packages.platforms import ANY_PLATFORM, binary_platform, detect_platform
from plughost.packages.signing import (
    RetiredKeyError,
    TrustedKey,
    UnknownKeyError,
    generate_keypair,
    key_id_for,
    sign_checksum,
    verify_manifest,
)
from plughost.registry.client import RegistryClient, checkable_artifact
from plughost.registry.index import RegistryIndex
from plughost.registry.models import Artifact, SignedManifest, current_platform
from plughost.registry.server import create_app, running_server
from plughost.settings import Settings, SettingsProvider

pytestmark = pytest.mark.timeout(180)

PLATFORM = current_platform()


# -- machine code headers ----------------------------------------------------------------


def elf(machine: int, *, bits64: bool = True, little: bool = True, osabi: int = 0) -> bytes:
    ident = b"\x7fELF" + bytes([2 if bits64 else 1, 1 if little else 2, 1, osabi]) + bytes(8)
    return ident + struct.pack("<HH" if little else ">HH", 2, machine) + bytes(44)


def macho(cpu: int) -> bytes:
    return b"\xcf\xfa\xed\xfe" + struct.pack("<i", cpu) + bytes(24)


def pe(machine: int) -> bytes:
    header = bytearray(0x100)
    header[:2] = b"MZ"
    struct.pack_into("<I", header, 0x3C, 0x80)
    header[0x80:0x84] = b"PE\x00\x00"
    struct.pack_into("<H", header, 0x84, machine)
    return bytes(header)


def fat(*cpus: int) -> bytes:
    arches = b"".join(struct.pack(">iiIII", cpu, 0, 0, 0, 0) for cpu in cpus)
    return b"\xca\xfe\xba\xbe" + struct.pack(">I", len(cpus)) + arches


LAUNCHER = b'#!/bin/sh\nexec python3 "$(dirname "$0")/../plugin.py"\n'


@pytest.mark.parametrize(
    ("header", "platform"),
    [
        (elf(62), "linux_amd64"),
        (elf(183), "linux_arm64"),
        (elf(3, bits64=False), "linux_386"),
        (elf(40, bits64=False), "linux_arm"),
        (elf(243), "linux_riscv64"),
        (elf(21), "linux_ppc64le"),
        (elf(21, little=False), "linux_ppc64"),
        (elf(62, osabi=9), "freebsd_amd64"),
        (macho(0x0100000C), "darwin_arm64"),
        (macho(0x01000007), "darwin_amd64"),
        (pe(0x8664), "windows_amd64"),
        (pe(0xAA64), "windows_arm64"),
        (LAUNCHER, None),
        (b"PK\x03\x04not an executable", None),
    ],
)
def test_binary_platform_from_the_header(header: bytes, platform: str | None) -> None:
    assert binary_platform(header) == platform


def test_headers_without_a_single_name_ask_for_a_platform() -> None:
    with pytest.raises(ValidationError, match=r"universal Mach-O binary \(amd64, arm64\)"):
        binary_platform(fat(0x01000007, 0x0100000C))
    with pytest.raises(ValidationError, match="machine 4242"):
        binary_platform(elf(4242))
    assert binary_platform(b"\xca\xfe\xba\xbe\x00\x00\x00\x34") is None  # a Java class file


# -- packages --------------------------------------------------------------------------------


def package(
    directory: Path,
    files: dict[str, bytes],
    *,
    plugin_id: str = "native",
    version: str = "1.0.0",
    capabilities: str = "[exec]",
    links: dict[str, str] | None = None,
) -> Path:
    """A package written with tarfile: plugin.yaml plus ``files`` (executable under bin/
    and build/), and ``links`` (name -> target)."""
    meta = textwrap.dedent(
        f"""\
        id: {plugin_id}
        version: "{version}"
        name: Native
        capabilities: {capabilities}
        author: {{name: Ada}}
        """
    ).encode()
    path = directory / f"{plugin_id}-{version}-{len(list(directory.iterdir()))}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {"plugin.yaml": meta, **files}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.startswith(("bin/", "build/")) else 0o644
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def test_a_python_or_ui_only_package_is_any(tmp_path: Path) -> None:
    assert detect_platform(make_package(tmp_path)) == ANY_PLATFORM  # the hello example
    ui_only = package(tmp_path, {"assets/app.js": b"x = 1\n"}, capabilities="[ui]")
    assert detect_platform(ui_only) == ANY_PLATFORM
    scripts = package(tmp_path, {"bin/plugin": LAUNCHER, "bin/helper.sh": b"#!/bin/sh\n"})
    assert detect_platform(scripts) == ANY_PLATFORM


def test_a_native_package_is_its_binarys_platform(tmp_path: Path) -> None:
    assert detect_platform(package(tmp_path, {"bin/plugin": elf(62)})) == "linux_amd64"
    assert detect_platform(package(tmp_path, {"./bin/plugin": elf(183)})) == "linux_arm64"
    assert detect_platform(package(tmp_path, {"bin/plugin": macho(0x0100000C)})) == "darwin_arm64"
    linked = package(
        tmp_path, {"build/plugin-linux": elf(183)}, links={"bin/plugin": "../build/plugin-linux"}
    )
    assert detect_platform(linked) == "linux_arm64"
    # A Python plugin that vendors compiled code is that code's platform.
    vendored = package(tmp_path, {"bin/plugin": LAUNCHER, "lib/_speedups.so": elf(183)})
    assert detect_platform(vendored) == "linux_arm64"


def test_a_package_that_does_not_say_is_refused_with_advice(tmp_path: Path) -> None:
    cases = {
        "universal Mach-O": {"bin/plugin": fat(0x01000007, 0x0100000C)},
        "neither a #! launcher": {"bin/plugin": b"\x00\x01junk"},
        "built for linux_arm64": {"bin/plugin": elf(62), "lib/x.so": elf(183)},
        "several platforms": {"bin/plugin": LAUNCHER, "a.so": elf(62), "b.so": elf(183)},
    }
    for message, files in cases.items():
        with pytest.raises(ValidationError, match=message) as info:
            detect_platform(package(tmp_path, files))
        assert "--platform" in " ".join(info.value.suggestions)


def test_publish_reads_the_platform_and_refuses_a_contradiction(tmp_path: Path) -> None:
    index = RegistryIndex(tmp_path / "reg")
    arm = package(tmp_path, {"bin/plugin": elf(183)})
    assert index.publish(arm).platform == "linux_arm64"
    assert index.publish(make_package(tmp_path)).platform == ANY_PLATFORM
    with pytest.raises(ValidationError, match="holds linux_arm64 machine code") as info:
        index.publish(arm, platform="linux_amd64")
    assert info.value.title == "Wrong platform"
    with pytest.raises(ValidationError, match="cannot be published as any"):
        index.publish(arm, platform="any")
    universal = package(tmp_path, {"bin/plugin": fat(0x01000007, 0x0100000C)}, version="2.0.0")
    with pytest.raises(ValidationError, match="universal"):
        index.publish(universal)
    assert index.publish(universal, platform="darwin_arm64").platform == "darwin_arm64"
    listed = index.get_version("native", "1.0.0", base_url="").artifacts
    assert set(listed) == {"linux_arm64"}


@pytest.mark.interop
def test_a_real_go_plugin_is_published_for_this_machine(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from gobuild import go_plugins

    built = go_plugins(tmp_path_factory, ["gohello"]) / "gohello"
    from plughost.packages.archive import pack

    go_package = pack(built, tmp_path / "gohello.tar.gz")
    assert detect_platform(go_package) == PLATFORM
    result = RegistryIndex(tmp_path / "reg").publish(go_package)
    assert result.platform == PLATFORM and result.path.name == f"{PLATFORM}.tar.gz"


# -- the publisher's signature ------------------------------------------------------------------


@dataclass
class Keys:
    pem: Path
    public: str
    other_pem: Path
    other_public: str


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    pem, public = generate_keypair()
    other_pem, other_public = generate_keypair()
    (tmp_path / "publisher.pem").write_bytes(pem)
    (tmp_path / "other.pem").write_bytes(other_pem)
    return Keys(tmp_path / "publisher.pem", public, tmp_path / "other.pem", other_public)


def signed_files(path: Path) -> tuple[dict[str, Any], str]:
    return (
        json.loads(Path(f"{path}.manifest.json").read_text()),
        Path(f"{path}.sig").read_text().strip(),
    )


def test_publish_with_the_publisher_key_lists_both_signatures(tmp_path: Path, keys: Keys) -> None:
    directory = tmp_path / "reg"
    hello = make_package(tmp_path)
    result = RegistryIndex(directory).publish(hello, publisher_key=keys.pem)
    assert result.publisher_public_key_hex == keys.public
    assert result.publisher_key_id == key_id_for(keys.public)
    assert result.key_id == key_id_for(result.public_key_hex) != result.publisher_key_id
    artifact = RegistryIndex(directory).get_version("hello", "1.0.0", base_url="").artifacts["any"]
    assert artifact.manifest is not None and artifact.publisher_manifest is not None
    publisher = [TrustedKey(key_id=result.publisher_key_id, public_key_hex=keys.public)]
    registry = [TrustedKey(key_id=result.key_id, public_key_hex=result.public_key_hex)]
    by_publisher = verify_manifest(artifact.publisher_manifest.model_dump(), publisher)
    by_registry = verify_manifest(artifact.manifest.model_dump(), registry)
    assert by_publisher == by_registry
    assert (by_publisher.sha256, by_publisher.platform) == (result.sha256, "any")
    stored = json.loads(Path(f"{result.path}.publisher.json").read_text())
    assert SignedManifest.model_validate(stored) == artifact.publisher_manifest
    # Publishing it again without the publisher's signature drops it, file and listing.
    RegistryIndex(directory).publish(hello)
    again = RegistryIndex(directory).get_version("hello", "1.0.0", base_url="").artifacts["any"]
    assert again.publisher_manifest is None
    assert not Path(f"{result.path}.publisher.json").exists()


def test_sign_output_is_published_as_it_is(tmp_path: Path, keys: Keys) -> None:
    hello = make_package(tmp_path)
    signed = cli("sign", hello, "--key", keys.pem, "--json").ok().json()
    assert signed["platform"] == "any"  # read from the package, not this machine
    manifest, sig = signed_files(hello)
    result = RegistryIndex(tmp_path / "reg").publish(
        hello,
        publisher_manifest=manifest,
        publisher_signature=sig,
        publisher_public_key=keys.public,
    )
    assert result.platform == "any" and result.publisher_key_id == manifest["key_id"]
    stored = json.loads(Path(f"{result.path}.publisher.json").read_text())
    assert stored["signature"] == manifest["signature"]  # the publisher's own bytes


def test_a_signature_that_does_not_match_is_refused_before_anything_is_stored(
    tmp_path: Path, keys: Keys
) -> None:
    directory = tmp_path / "reg"
    hello = make_package(tmp_path)
    cli("sign", hello, "--key", keys.pem).ok()
    manifest, sig = signed_files(hello)
    index = RegistryIndex(directory)

    def publish(path: Path = hello, **kw: Any) -> Any:
        args: dict[str, Any] = {
            "publisher_manifest": manifest,
            "publisher_signature": sig,
            "publisher_public_key": keys.public,
        }
        return index.publish(path, **{**args, **kw})

    with pytest.raises(SignatureInvalidError, match="does not verify with the given public key"):
        publish(publisher_public_key=keys.other_public)
    with pytest.raises(ValidationError, match="public key is needed") as missing:
        publish(publisher_public_key="")
    assert missing.value.title == "Publisher public key missing"
    other_sig = sign_checksum("0" * 64, keys.pem)
    with pytest.raises(SignatureInvalidError, match=r"checksum signature \(.sig\) does not verify"):
        publish(publisher_signature=other_sig)
    (tmp_path / "again").mkdir()
    changed = make_package(tmp_path / "again", greeting="bonjour")  # same plugin, other bytes
    with pytest.raises(ChecksumMismatchError, match="vouches for another file") as other:
        publish(changed)
    assert other.value.title == "Signature does not match the package"
    with pytest.raises(SignatureInvalidError, match="signed for platform any, not linux_arm64"):
        publish(platform="linux_arm64")
    forged = {**manifest, "manifest": {**manifest["manifest"], "version": "9.9.9"}}
    with pytest.raises(SignatureInvalidError, match="does not verify"):
        publish(publisher_manifest=forged)
    with pytest.raises(ValidationError, match="not both"):
        publish(publisher_key=keys.pem)
    with pytest.raises(ValidationError, match="alone is not enough"):
        index.publish(hello, publisher_signature=sig, publisher_public_key=keys.public)
    # Nothing of any of these reached the registry, not even a staged copy or a key.
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith("index.")) == []
    assert index.count_plugins() == 0


def test_a_new_registry_key_keeps_the_publishers_signature(tmp_path: Path, keys: Keys) -> None:
    """docs/publishing.md, "Rotating keys": re-publish the stored package with its
    .publisher.json after the registry's key changed."""
    directory = tmp_path / "reg"
    first = RegistryIndex(directory).publish(make_package(tmp_path), publisher_key=keys.pem)
    (directory / "registry.key").write_bytes(generate_keypair()[0])
    stored = json.loads(Path(f"{first.path}.publisher.json").read_text())
    again = RegistryIndex(directory).publish(
        first.path, publisher_manifest=stored, publisher_public_key=keys.public
    )
    assert again.key_id != first.key_id and again.publisher_key_id == first.publisher_key_id
    assert again.sha256 == first.sha256 and first.path.is_file()
    artifact = RegistryIndex(directory).get_version("hello", "1.0.0", base_url="").artifacts["any"]
    assert artifact.manifest is not None and artifact.manifest.key_id == again.key_id
    assert artifact.publisher_manifest == SignedManifest.model_validate(stored)


def test_an_older_registry_directory_gains_the_column(tmp_path: Path, keys: Keys) -> None:
    directory = tmp_path / "reg"
    directory.mkdir()
    with sqlite3.connect(directory / "index.sqlite3") as db:
        db.execute(
            "CREATE TABLE artifacts (plugin_id TEXT NOT NULL, version TEXT NOT NULL, "
            "platform TEXT NOT NULL, path TEXT NOT NULL, checksum TEXT NOT NULL, "
            "signature TEXT NOT NULL DEFAULT '', size INTEGER NOT NULL, manifest TEXT, "
            "created_at TEXT NOT NULL, PRIMARY KEY (plugin_id, version, platform))"
        )
    index = RegistryIndex(directory)
    index.publish(make_package(tmp_path), publisher_key=keys.pem)
    RegistryIndex(directory)  # idempotent
    artifact = index.get_version("hello", "1.0.0", base_url="").artifacts["any"]
    assert artifact.publisher_manifest is not None


# -- installs ----------------------------------------------------------------------------------


@dataclass
class Market:
    url: str
    registry_key: str
    directory: Path


@pytest.fixture
def market(tmp_path: Path, keys: Keys) -> Iterator[Market]:
    """hello 1.0.0 published with the publisher's key, served on 127.0.0.1."""
    directory = tmp_path / "registry"
    result = RegistryIndex(directory).publish(make_package(tmp_path), publisher_key=keys.pem)
    with running_server(create_app(directory)) as url:
        yield Market(url, result.public_key_hex, directory)


async def install(root: Path, url: str, **settings: Any) -> PluginManager:
    manager = PluginManager(
        root,
        settings=SettingsProvider(None, {**FAST, "marketplace_url": url, **settings}),
        start_plugins=False,
    )
    await manager.initialize()
    try:
        await manager.install_plugin_version("hello", "1.0.0")
    finally:
        await manager.shutdown()
    return manager


async def test_an_install_trusting_only_the_publisher_verifies_its_signature(
    tmp_path: Path, keys: Keys, market: Market
) -> None:
    root = tmp_path / "root"
    await install(root, market.url, trusted_keys=[{"public_key_hex": keys.public}])
    assert (root / "plugins" / "hello" / "plugin.yaml").is_file()


async def test_the_registry_key_alone_still_installs(tmp_path: Path, market: Market) -> None:
    root = tmp_path / "root"
    await install(root, market.url, registry_public_key=market.registry_key)
    assert (root / "plugins" / "hello" / "plugin.yaml").is_file()


async def test_a_retired_publisher_key_is_refused_although_the_registry_signed(
    tmp_path: Path, keys: Keys, market: Market
) -> None:
    root = tmp_path / "root"
    with pytest.raises(RetiredKeyError):
        await install(
            root,
            market.url,
            registry_public_key=market.registry_key,
            trusted_keys=[{"public_key_hex": keys.public, "retired": True}],
        )
    assert not (root / "plugins" / "hello").exists()


async def test_another_publishers_key_does_not_install_it(
    tmp_path: Path, keys: Keys, market: Market
) -> None:
    root = tmp_path / "root"
    with pytest.raises(UnknownKeyError):
        await install(root, market.url, trusted_keys=[{"public_key_hex": keys.other_public}])
    assert not (root / "plugins" / "hello").exists()


def test_the_publishers_manifest_is_checked_when_its_key_is_named(keys: Keys) -> None:
    registry = SignedManifest.model_validate(
        {"manifest": {"id": "a", "version": "1", "platform": "any", "sha256": "0" * 64, "size": 1},
         "key_id": "registry", "signature": "x"}
    )  # fmt: skip
    publisher = registry.model_copy(update={"key_id": key_id_for(keys.public)})
    artifact = Artifact(checksum="0" * 64, manifest=registry, publisher_manifest=publisher)
    trusts = {
        "nothing": (Settings(), registry),
        "the registry": (Settings(registry_public_key=keys.other_public), registry),
        "the publisher": (Settings(trusted_keys=[{"public_key_hex": keys.public}]), publisher),
        "a retired publisher": (
            Settings(trusted_keys=[{"public_key_hex": keys.public, "retired": True}]),
            publisher,
        ),
        "by key id": (
            Settings(trusted_keys=[{"public_key_hex": keys.other_public, "key_id": publisher.key_id}]),
            publisher,
        ),
    }  # fmt: skip
    for what, (settings, expected) in trusts.items():
        assert checkable_artifact(artifact, settings).manifest == expected, what
    alone = Artifact(checksum="0" * 64, publisher_manifest=publisher)
    assert checkable_artifact(alone, Settings()).manifest == publisher


NATIVE_HEADERS = {
    "linux_amd64": elf(62),
    "linux_arm64": elf(183),
    "darwin_amd64": macho(0x01000007),
    "darwin_arm64": macho(0x0100000C),
}


async def test_an_install_takes_its_own_platform_first_then_any(tmp_path: Path) -> None:
    directory = tmp_path / "reg"
    index = RegistryIndex(directory)
    index.publish(make_package(tmp_path))  # any
    other = "linux_arm64" if PLATFORM != "linux_arm64" else "linux_amd64"
    provider = SettingsProvider(None)
    with running_server(create_app(directory)) as url:
        provider.override(marketplace_url=url)
        async with RegistryClient(provider) as client:
            result = await client.download_artifact("hello", "1.0.0", dest=tmp_path)
            assert result.platform == "any"
            elsewhere = await client.download_artifact("hello", "1.0.0", other, dest=tmp_path)
            assert elsewhere.platform == "any"
            if PLATFORM not in NATIVE_HEADERS:
                pytest.skip(f"no test binary header for {PLATFORM}")
            native = package(tmp_path, {"bin/plugin": NATIVE_HEADERS[PLATFORM]}, plugin_id="hello")
            assert index.publish(native).platform == PLATFORM
            mine = await client.download_artifact("hello", "1.0.0", dest=tmp_path)
            assert mine.platform == PLATFORM
            assert mine.path.read_bytes() == native.read_bytes()


# -- the command line ---------------------------------------------------------------------------


def test_cli_publishes_what_sign_wrote_and_refuses_a_mismatch(tmp_path: Path, keys: Keys) -> None:
    directory = tmp_path / "reg"
    hello = make_package(tmp_path)
    cli("sign", hello, "--key", keys.pem).ok()

    missing = cli("registry", "publish", hello, "--dir", directory)
    assert missing.returncode == 1 and "Publisher public key missing" in missing.stderr
    wrong = cli("registry", "publish", hello, "--dir", directory, "--public-key", keys.other_public)
    assert wrong.returncode == 1 and "Publisher signature invalid" in wrong.stderr
    assert "does not verify with the given public key" in wrong.stderr

    # The files moved away from the package: named with --manifest / --signature.
    elsewhere = tmp_path / "sigs"
    elsewhere.mkdir()
    for suffix in (".sig", ".manifest.json"):
        shutil.move(f"{hello}{suffix}", elsewhere / f"hello{suffix}")
    args = ["--manifest", elsewhere / "hello.manifest.json", "--signature", elsewhere / "hello.sig"]
    published = cli(
        "registry", "publish", hello, "--dir", directory, "--public-key", keys.public, *args,
        "--json",
    ).ok().json()  # fmt: skip
    assert published["platform"] == "any"
    assert published["publisher_key_id"] == key_id_for(keys.public)
    assert published["publisher_public_key_hex"] == keys.public

    now = cli("registry", "publish", hello, "--dir", directory, "--key", keys.other_pem).ok()
    assert f"signed by the publisher (key {key_id_for(keys.other_public)})" in now.stdout
    both = cli("registry", "publish", hello, "--dir", directory, "--key", keys.pem, *args)
    assert both.returncode == 1 and "Two publisher signatures" in both.stderr


def test_install_public_key_requires_and_checks_the_signature(tmp_path: Path, keys: Keys) -> None:
    root = new_root(tmp_path / "root")
    hello = make_package(tmp_path)
    unsigned = cli("install", hello, "--public-key", keys.public, root=root)
    assert unsigned.returncode == 1 and "has no signature file" in unsigned.stderr
    cli("sign", hello, "--key", keys.pem).ok()
    wrong = cli("install", hello, "--public-key", keys.other_public, root=root)
    assert wrong.returncode == 1 and "unknown key" in wrong.stderr
    assert not (root / "plugins" / "hello").exists()
    cli("install", hello, "--public-key", keys.public, root=root).ok()
    assert (root / "plugins" / "hello" / "plugin.yaml").is_file()

    arm = package(tmp_path, {"bin/plugin": elf(183)}, plugin_id="armed")
    cli("sign", arm, "--key", keys.pem, "--platform", "linux_arm64").ok()
    if PLATFORM != "linux_arm64":
        refused = cli("install", arm, "--public-key", keys.public, root=root)
        assert refused.returncode == 1 and "Package for another platform" in refused.stderr
