"""Ed25519 signing: the original checksum scheme, signed manifests with key rotation, and
the distinct errors of a bad download."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from plughost.errors import (
    ChecksumMismatchError,
    PlughostError,
    SignatureInvalidError,
    ValidationError,
)
from plughost.packages.signing import (
    MalformedKeyError,
    MalformedSignatureError,
    Manifest,
    RetiredKeyError,
    SizeMismatchError,
    TruncatedDownloadError,
    TrustedKey,
    UnknownKeyError,
    UnsignedArtifactError,
    check_download,
    generate_keypair,
    key_id_for,
    load_private_key,
    manifest_for_file,
    public_key_hex,
    sign_checksum,
    sign_manifest,
    verify_checksum_signature,
    verify_file,
    verify_manifest,
)

CHECKSUM = hashlib.sha256(b"a plugin package").hexdigest()


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, str]:
    return generate_keypair()


def error_type(exc: pytest.ExceptionInfo[PlughostError]) -> str:
    return exc.value.type


# --------------------------------------------------------------------------- keys


def test_generate_keypair_formats(keypair: tuple[bytes, str]) -> None:
    pem, public = keypair
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert len(public) == 64 and public == public.lower()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw.hex() == public == public_key_hex(pem)


def test_load_private_key_from_bytes_text_and_path(
    keypair: tuple[bytes, str], tmp_path: Path
) -> None:
    pem, public = keypair
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    for source in (pem, pem.decode(), path, str(path)):
        assert public_key_hex(load_private_key(source)) == public


def test_load_private_key_refusals(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot load the private key"):
        load_private_key(tmp_path / "missing.pem")
    with pytest.raises(ValidationError, match="not a PEM private key"):
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    encrypted = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(ValidationError, match="encrypted"):
        load_private_key(encrypted)


def test_key_id_is_sha256_prefix(keypair: tuple[bytes, str]) -> None:
    _, public = keypair
    expected = hashlib.sha256(bytes.fromhex(public)).hexdigest()[:16]
    assert key_id_for(public) == expected == key_id_for(public.upper())


# --------------------------------------------------------------------------- original scheme


def test_checksum_signature_round_trip(keypair: tuple[bytes, str]) -> None:
    pem, public = keypair
    signature = sign_checksum(CHECKSUM, pem)
    raw = base64.b64decode(signature, validate=True)
    assert len(raw) == 64
    # the original scheme: the signature is over the hex string's ASCII bytes
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(public)).verify(raw, CHECKSUM.encode())
    verify_checksum_signature(CHECKSUM, signature, public)


def test_tampered_checksum_is_refused(keypair: tuple[bytes, str]) -> None:
    pem, public = keypair
    signature = sign_checksum(CHECKSUM, pem)
    other = hashlib.sha256(b"another package").hexdigest()
    with pytest.raises(SignatureInvalidError) as exc:
        verify_checksum_signature(other, signature, public)
    assert error_type(exc) == "signature_invalid"
    assert exc.value.suggestions


def test_tampered_signature_is_refused(keypair: tuple[bytes, str]) -> None:
    pem, public = keypair
    raw = bytearray(base64.b64decode(sign_checksum(CHECKSUM, pem)))
    raw[10] ^= 0x01
    with pytest.raises(SignatureInvalidError) as exc:
        verify_checksum_signature(CHECKSUM, base64.b64encode(bytes(raw)).decode(), public)
    assert error_type(exc) == "signature_invalid"


def test_other_key_is_refused(keypair: tuple[bytes, str]) -> None:
    pem, _ = keypair
    _, other_public = generate_keypair()
    with pytest.raises(SignatureInvalidError) as exc:
        verify_checksum_signature(CHECKSUM, sign_checksum(CHECKSUM, pem), other_public)
    assert error_type(exc) == "signature_invalid"


@pytest.mark.parametrize(
    "signature", ["not base64 !!", base64.b64encode(b"short").decode(), "QUJD=extra"]
)
def test_malformed_signature(keypair: tuple[bytes, str], signature: str) -> None:
    with pytest.raises(MalformedSignatureError) as exc:
        verify_checksum_signature(CHECKSUM, signature, keypair[1])
    assert error_type(exc) == "signature_malformed"
    assert isinstance(exc.value, SignatureInvalidError)


def test_missing_signature_is_unsigned(keypair: tuple[bytes, str]) -> None:
    with pytest.raises(UnsignedArtifactError) as exc:
        verify_checksum_signature(CHECKSUM, "", keypair[1])
    assert error_type(exc) == "unsigned"


@pytest.mark.parametrize("public", ["", "abc", "zz" * 32, "00" * 31, "00" * 33])
def test_malformed_public_key(keypair: tuple[bytes, str], public: str) -> None:
    signature = sign_checksum(CHECKSUM, keypair[0])
    with pytest.raises(MalformedKeyError) as exc:
        verify_checksum_signature(CHECKSUM, signature, public)
    assert error_type(exc) == "public_key_malformed"
    assert "64 hex characters" in str(exc.value)


def test_sign_checksum_refuses_non_digest(keypair: tuple[bytes, str]) -> None:
    with pytest.raises(ValidationError, match="not a SHA-256 hex digest"):
        sign_checksum("abc", keypair[0])


# --------------------------------------------------------------------------- manifests


def manifest(**changes: Any) -> Manifest:
    fields: dict[str, Any] = {
        "id": "hello",
        "version": "1.2.0",
        "platform": "linux_amd64",
        "sha256": CHECKSUM,
        "size": 1234,
    }
    fields.update(changes)
    return Manifest(**fields)


def test_canonical_bytes() -> None:
    assert manifest().canonical_bytes() == (
        b'{"id":"hello","platform":"linux_amd64","sha256":"'
        + CHECKSUM.encode()
        + b'","size":1234,"version":"1.2.0"}'
    )


@pytest.fixture(scope="module")
def rotation() -> dict[str, Any]:
    """Three keys: 'old' (retired), 'new' (active), 'stranger' (not trusted)."""
    keys = {name: generate_keypair() for name in ("old", "new", "stranger")}
    trusted = [
        TrustedKey(key_id="old", public_key_hex=keys["old"][1], retired=True),
        TrustedKey(key_id=key_id_for(keys["new"][1]), public_key_hex=keys["new"][1]),
    ]
    return {"keys": keys, "trusted": trusted}


def test_manifest_round_trip_with_the_active_key(rotation: dict[str, Any]) -> None:
    pem = rotation["keys"]["new"][0]
    signed = sign_manifest(manifest(), pem)
    assert signed["key_id"] == key_id_for(rotation["keys"]["new"][1])
    assert set(signed) == {"manifest", "key_id", "signature"}
    # survives a trip through JSON, as it does on the wire
    assert verify_manifest(json.loads(json.dumps(signed)), rotation["trusted"]) == manifest()


def test_manifest_signed_by_retired_key(rotation: dict[str, Any]) -> None:
    signed = sign_manifest(manifest(), rotation["keys"]["old"][0], "old")
    with pytest.raises(RetiredKeyError) as exc:
        verify_manifest(signed, rotation["trusted"])
    assert error_type(exc) == "signature_retired_key"
    assert exc.value.plugin_id == "hello"


def test_manifest_signed_by_unknown_key(rotation: dict[str, Any]) -> None:
    signed = sign_manifest(manifest(), rotation["keys"]["stranger"][0])
    with pytest.raises(UnknownKeyError) as exc:
        verify_manifest(signed, rotation["trusted"])
    assert error_type(exc) == "signature_unknown_key"
    assert "not trusted" in str(exc.value)


def test_manifest_key_id_pointing_at_another_key(rotation: dict[str, Any]) -> None:
    new_id = rotation["trusted"][1].key_id
    signed = sign_manifest(manifest(), rotation["keys"]["stranger"][0], new_id)
    with pytest.raises(SignatureInvalidError) as exc:
        verify_manifest(signed, rotation["trusted"])
    assert error_type(exc) == "signature_invalid"


@pytest.mark.parametrize(
    ("field", "value"),
    [("sha256", hashlib.sha256(b"evil").hexdigest()), ("size", 1), ("version", "9.9.9")],
)
def test_tampered_manifest_is_refused(rotation: dict[str, Any], field: str, value: Any) -> None:
    signed = sign_manifest(manifest(), rotation["keys"]["new"][0])
    signed["manifest"][field] = value
    with pytest.raises(SignatureInvalidError) as exc:
        verify_manifest(signed, rotation["trusted"])
    assert error_type(exc) == "signature_invalid"


def test_rotation_adding_a_key_keeps_old_signatures_valid(rotation: dict[str, Any]) -> None:
    new_pem, new_public = rotation["keys"]["new"]
    signed = sign_manifest(manifest(), new_pem)
    newer_public = generate_keypair()[1]
    trusted = [*rotation["trusted"], TrustedKey(key_id="newer", public_key_hex=newer_public)]
    assert verify_manifest(signed, trusted).id == "hello"
    assert key_id_for(new_public) == signed["key_id"]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: "not a mapping",
        lambda s: {**s, "manifest": "oops"},
        lambda s: {k: v for k, v in s.items() if k != "key_id"},
        lambda s: {**s, "manifest": {**s["manifest"], "size": "1234"}},
        lambda s: {**s, "manifest": {**s["manifest"], "extra": 1}},
        lambda s: {**s, "manifest": {**s["manifest"], "id": "../evil"}},
        lambda s: {**s, "manifest": {**s["manifest"], "sha256": "ABC"}},
        lambda s: {**s, "signature": "@@@"},
    ],
)
def test_malformed_signed_manifest(rotation: dict[str, Any], mangle: Any) -> None:
    signed = sign_manifest(manifest(), rotation["keys"]["new"][0])
    with pytest.raises(MalformedSignatureError) as exc:
        verify_manifest(mangle(signed), rotation["trusted"])
    assert error_type(exc) == "signature_malformed"


def test_unsigned_manifest(rotation: dict[str, Any]) -> None:
    signed = sign_manifest(manifest(), rotation["keys"]["new"][0])
    del signed["signature"]
    with pytest.raises(UnsignedArtifactError) as exc:
        verify_manifest(signed, rotation["trusted"])
    assert error_type(exc) == "unsigned"


def test_trusted_key_with_malformed_public_key() -> None:
    with pytest.raises(MalformedKeyError):
        TrustedKey(key_id="bad", public_key_hex="1234")


# --------------------------------------------------------------------------- downloads


def test_download_errors_are_distinct() -> None:
    with pytest.raises(TruncatedDownloadError) as truncated:
        check_download(10, CHECKSUM, expected_size=20, expected_sha256=CHECKSUM)
    with pytest.raises(SizeMismatchError) as bigger:
        check_download(30, CHECKSUM, expected_size=20, expected_sha256=CHECKSUM)
    with pytest.raises(ChecksumMismatchError) as checksum:
        check_download(20, "0" * 64, expected_size=20, expected_sha256=CHECKSUM)
    types = [error_type(e) for e in (truncated, bigger, checksum)]
    assert types == ["truncated_download", "size_mismatch", "checksum_mismatch"]
    assert all(isinstance(e.value, ChecksumMismatchError) for e in (truncated, bigger))
    check_download(20, CHECKSUM.upper(), expected_size=None, expected_sha256=CHECKSUM)


def test_signed_file_manifest_round_trip(rotation: dict[str, Any], tmp_path: Path) -> None:
    package = tmp_path / "p.tar.gz"
    package.write_bytes(os.urandom(4096))
    made = manifest_for_file(package, plugin_id="hello", version="1.0.0", platform="linux_arm64")
    signed = sign_manifest(made, rotation["keys"]["new"][0])
    verified = verify_manifest(signed, rotation["trusted"])
    verify_file(package, verified)
    package.write_bytes(package.read_bytes()[:100])
    with pytest.raises(TruncatedDownloadError):
        verify_file(package, verified)
    package.write_bytes(os.urandom(4096))
    with pytest.raises(ChecksumMismatchError) as exc:
        verify_file(package, verified)
    assert error_type(exc) == "checksum_mismatch"


def test_errors_serialise_as_problems() -> None:
    for cls in (
        UnsignedArtifactError,
        UnknownKeyError,
        RetiredKeyError,
        MalformedSignatureError,
        MalformedKeyError,
    ):
        assert issubclass(cls, SignatureInvalidError)
        problem = cls("detail").to_problem()
        assert problem["errorType"] == cls.type and problem["title"] == cls.default_title
    for cls2 in (SizeMismatchError, TruncatedDownloadError):
        assert issubclass(cls2, ChecksumMismatchError)
        assert cls2("detail").to_dict()["type"] == cls2.type
