"""Ed25519 signatures for plugin packages: the original scheme and signed manifests.

The original marketplace signs only the hex SHA-256 of a package with one key;
its client takes that key as 64 hex characters (``SetPublicKey``). We keep that
scheme byte for byte (``sign_checksum`` / ``verify_checksum_signature``) so the
original client and registry interoperate with ours.

Signed manifests go further: the signature covers
``{id, version, platform, sha256, size}`` as canonical JSON, and names the key
that made it, so a client trusting several keys can add a new one and retire an
old one without breaking installs. Every way verification can fail has its own
error type and advice, so a user can tell a truncated download from a forged one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pydantic
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import ChecksumMismatchError, SignatureInvalidError, ValidationError
from ..metadata import validate_plugin_id
from .archive import sha256_file
from .platforms import ANY_PLATFORM

__all__ = [
    "MalformedKeyError",
    "MalformedSignatureError",
    "Manifest",
    "PrivateKeyLike",
    "RetiredKeyError",
    "SizeMismatchError",
    "TruncatedDownloadError",
    "TrustedKey",
    "UnknownKeyError",
    "UnsignedArtifactError",
    "check_download",
    "generate_keypair",
    "key_id_for",
    "load_private_key",
    "manifest_for_file",
    "public_key_hex",
    "sign_checksum",
    "sign_manifest",
    "verify_checksum_signature",
    "verify_file",
    "verify_manifest",
]

PrivateKeyLike = Ed25519PrivateKey | bytes | str | os.PathLike[str]
"""A private key, its PEM text or bytes, or the path of a PEM file."""

_HEX64 = re.compile(r"[0-9a-f]{64}")
_PLATFORM = re.compile(r"[a-z0-9]+_[a-z0-9]+")
_SIGNATURE_LEN = 64


# --------------------------------------------------------------------------- errors


class UnsignedArtifactError(SignatureInvalidError):
    type = "unsigned"
    default_title = "Package is not signed"


class UnknownKeyError(SignatureInvalidError):
    type = "signature_unknown_key"
    default_title = "Signed by an unknown key"


class RetiredKeyError(SignatureInvalidError):
    type = "signature_retired_key"
    default_title = "Signed by a retired key"


class MalformedSignatureError(SignatureInvalidError):
    type = "signature_malformed"
    default_title = "Malformed signature"


class MalformedKeyError(SignatureInvalidError):
    type = "public_key_malformed"
    default_title = "Malformed public key"


class SizeMismatchError(ChecksumMismatchError):
    type = "size_mismatch"
    default_title = "Size mismatch"


class TruncatedDownloadError(ChecksumMismatchError):
    type = "truncated_download"
    default_title = "Download truncated"


_FORGED_ADVICE = (
    "do not install this package: it was altered after signing or signed by someone else",
    "if the publisher rotated keys, update the trusted public keys from a source you trust",
)


# --------------------------------------------------------------------------- keys


def generate_keypair() -> tuple[bytes, str]:
    """A new key: (private key as unencrypted PKCS8 PEM, public key as 64 hex chars)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, public_key_hex(key)


def _bad_private_key(where: str, why: str) -> NoReturn:
    raise ValidationError(
        f"cannot load the private key from {where}: {why}",
        title="Invalid signing key",
        suggestions=["create a key with 'plughost keygen' (unencrypted PKCS8 PEM, Ed25519)"],
    )


def load_private_key(pem_or_path: PrivateKeyLike) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from PEM bytes or text, or from a PEM file's path."""
    if isinstance(pem_or_path, Ed25519PrivateKey):
        return pem_or_path
    if isinstance(pem_or_path, bytes):
        data, where = pem_or_path, "the given PEM data"
    elif isinstance(pem_or_path, str) and pem_or_path.lstrip().startswith("-----BEGIN"):
        data, where = pem_or_path.encode(), "the given PEM text"
    else:
        path = Path(pem_or_path)
        where = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            _bad_private_key(where, exc.strerror or str(exc))
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        _bad_private_key(where, "it is encrypted; plughost needs an unencrypted key")
    except (ValueError, binascii.Error) as exc:
        _bad_private_key(where, f"not a PEM private key ({exc})")
    except UnsupportedAlgorithm as exc:
        _bad_private_key(where, f"unsupported key type ({exc})")
    if not isinstance(key, Ed25519PrivateKey):
        _bad_private_key(where, f"it is a {type(key).__name__}, not an Ed25519 key")
    return key


def public_key_hex(private_key: PrivateKeyLike) -> str:
    """The raw 32-byte public key as 64 lower-case hex chars (``SetPublicKey`` format)."""
    raw = (
        load_private_key(private_key)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return raw.hex()


def _public_key(public_key_hex: str) -> Ed25519PublicKey:
    text = public_key_hex.strip().lower() if isinstance(public_key_hex, str) else ""
    if not _HEX64.fullmatch(text):
        shown = (
            public_key_hex if len(str(public_key_hex)) <= 80 else f"{str(public_key_hex)[:77]}..."
        )
        raise MalformedKeyError(
            f"public key {shown!r} is not 64 hex characters (a raw 32-byte Ed25519 key)",
            suggestions=[
                "set the registry public key to the 64-hex-char output of 'plughost keygen'"
            ],
        )
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    except ValueError as exc:
        raise MalformedKeyError(f"public key {text!r} is not a valid Ed25519 key: {exc}") from exc


def key_id_for(public_key_hex: str) -> str:
    """A short stable name for a key: the first 16 hex chars of SHA-256 of its raw bytes."""
    _public_key(public_key_hex)
    return hashlib.sha256(bytes.fromhex(public_key_hex.strip().lower())).hexdigest()[:16]


# --------------------------------------------------------------------------- original scheme


def _checksum(checksum_hex: str) -> str:
    text = checksum_hex.strip().lower() if isinstance(checksum_hex, str) else ""
    if not _HEX64.fullmatch(text):
        raise ValidationError(
            f"checksum {checksum_hex!r} is not a SHA-256 hex digest (64 hex characters)"
        )
    return text


def _decode_signature(signature_b64: object) -> bytes:
    if not isinstance(signature_b64, str) or not signature_b64.strip():
        raise UnsignedArtifactError(
            "the package has no signature",
            suggestions=["ask the publisher for a signed package, or sign it with 'plughost sign'"],
        )
    try:
        raw = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedSignatureError(
            f"signature is not valid standard base64 ({exc})",
            suggestions=list(_FORGED_ADVICE[:1]),
        ) from exc
    if len(raw) != _SIGNATURE_LEN:
        raise MalformedSignatureError(
            f"signature is {len(raw)} bytes; an Ed25519 signature is {_SIGNATURE_LEN}",
            suggestions=list(_FORGED_ADVICE[:1]),
        )
    return raw


def sign_checksum(checksum_hex: str, private_key: PrivateKeyLike) -> str:
    """Standard base64 of the Ed25519 signature over the hex checksum's ASCII bytes."""
    message = _checksum(checksum_hex).encode("ascii")
    return base64.b64encode(load_private_key(private_key).sign(message)).decode("ascii")


def verify_checksum_signature(checksum_hex: str, signature_b64: str, public_key_hex: str) -> None:
    """Raise a SignatureInvalidError unless ``signature_b64`` signs ``checksum_hex``."""
    raw = _decode_signature(signature_b64)
    key = _public_key(public_key_hex)
    try:
        key.verify(raw, _checksum(checksum_hex).encode("ascii"))
    except InvalidSignature as exc:
        raise SignatureInvalidError(
            f"signature does not match checksum {checksum_hex} for the configured public key",
            suggestions=list(_FORGED_ADVICE),
        ) from exc


# --------------------------------------------------------------------------- manifests


class Manifest(BaseModel):
    """What a signed manifest vouches for: one platform's package of one version."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str
    version: str = Field(min_length=1)
    platform: str
    sha256: str
    size: int = Field(ge=0)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        try:
            return validate_plugin_id(value)
        except ValidationError as exc:
            raise ValueError(exc.detail) from None

    @field_validator("platform")
    @classmethod
    def _check_platform(cls, value: str) -> str:
        if value != ANY_PLATFORM and not _PLATFORM.fullmatch(value):
            raise ValueError("expected a GOOS_GOARCH platform such as 'linux_amd64', or 'any'")
        return value

    @field_validator("sha256")
    @classmethod
    def _check_sha256(cls, value: str) -> str:
        if not _HEX64.fullmatch(value):
            raise ValueError("expected 64 lower-case hex characters")
        return value

    def canonical_bytes(self) -> bytes:
        """The signed bytes: JSON with sorted keys and no spaces, UTF-8."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")


class TrustedKey(BaseModel):
    """A public key the client accepts manifests from; ``retired`` keys are refused."""

    model_config = ConfigDict(frozen=True)

    key_id: str = Field(min_length=1)
    public_key_hex: str
    retired: bool = False

    @field_validator("public_key_hex")
    @classmethod
    def _check_key(cls, value: str) -> str:
        _public_key(value)
        return value.strip().lower()


def sign_manifest(
    manifest: Manifest, private_key: PrivateKeyLike, key_id: str | None = None
) -> dict[str, Any]:
    """``{"manifest": {...}, "key_id": ..., "signature": base64}``; ``key_id``
    defaults to ``key_id_for`` of the key's public half."""
    key = load_private_key(private_key)
    if key_id is None:
        key_id = key_id_for(public_key_hex(key))
    signature = key.sign(manifest.canonical_bytes())
    return {
        "manifest": manifest.model_dump(mode="json"),
        "key_id": key_id,
        "signature": base64.b64encode(signature).decode("ascii"),
    }


def _malformed(detail: str) -> NoReturn:
    raise MalformedSignatureError(
        detail,
        suggestions=["the signed manifest must be {manifest: {...}, key_id, signature}"],
    )


def _parse_signed(signed: object) -> tuple[Manifest, str, bytes]:
    if not isinstance(signed, Mapping):
        _malformed(f"signed manifest must be a JSON object, got {type(signed).__name__}")
    body = signed.get("manifest")
    if not isinstance(body, Mapping):
        _malformed("signed manifest has no 'manifest' object")
    raw = _decode_signature(signed.get("signature"))
    key_id = signed.get("key_id")
    if not isinstance(key_id, str) or not key_id:
        _malformed("signed manifest has no 'key_id' naming the key that signed it")
    try:
        manifest = Manifest.model_validate(dict(body))
    except pydantic.ValidationError as exc:
        fields = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '(top level)'}': {err['msg']}"
            for err in exc.errors()
        )
        _malformed(f"manifest is malformed: {fields}")
    return manifest, key_id, raw


def verify_manifest(signed: Mapping[str, Any], trusted: Sequence[TrustedKey]) -> Manifest:
    """Return the manifest if a trusted, non-retired key signed it; else raise
    UnsignedArtifactError, MalformedSignatureError, UnknownKeyError, RetiredKeyError
    or SignatureInvalidError (bad signature)."""
    manifest, key_id, raw = _parse_signed(signed)
    matching = [key for key in trusted if key.key_id == key_id]
    if not matching:
        known = ", ".join(sorted({key.key_id for key in trusted})) or "none"
        raise UnknownKeyError(
            f"{manifest.id} {manifest.version} is signed by key {key_id!r}, which is not "
            f"trusted (trusted keys: {known})",
            suggestions=[
                "add the publisher's new public key to the trusted keys if you trust it",
                _FORGED_ADVICE[0],
            ],
            plugin_id=manifest.id,
        )
    active = [key for key in matching if not key.retired]
    if not active:
        raise RetiredKeyError(
            f"{manifest.id} {manifest.version} is signed by key {key_id!r}, which is retired",
            suggestions=["ask the publisher to re-sign the package with a current key"],
            plugin_id=manifest.id,
        )
    message = manifest.canonical_bytes()
    for key in active:
        try:
            _public_key(key.public_key_hex).verify(raw, message)
            return manifest
        except InvalidSignature:
            continue
    raise SignatureInvalidError(
        f"signature of the {manifest.id} {manifest.version} ({manifest.platform}) manifest "
        f"does not verify with key {key_id!r}",
        suggestions=list(_FORGED_ADVICE),
        plugin_id=manifest.id,
    )


# --------------------------------------------------------------------------- downloads


def _check_size(size: int, expected_size: int | None) -> None:
    if expected_size is None or size == expected_size:
        return
    if size < expected_size:
        raise TruncatedDownloadError(
            f"download stopped after {size} of {expected_size} bytes",
            suggestions=["retry the download; check the network or proxy"],
        )
    raise SizeMismatchError(
        f"received {size} bytes, but {expected_size} were expected",
        suggestions=list(_FORGED_ADVICE[:1]),
    )


def check_download(
    size: int, sha256: str, *, expected_size: int | None, expected_sha256: str
) -> None:
    """Compare what was received with what was promised, most specific error first:
    fewer bytes -> TruncatedDownloadError, more -> SizeMismatchError, then the
    checksum -> ChecksumMismatchError. ``expected_size`` None skips the size check."""
    _check_size(size, expected_size)
    if sha256.strip().lower() != expected_sha256.strip().lower():
        raise ChecksumMismatchError(
            f"SHA-256 {sha256} does not match the expected {expected_sha256}",
            suggestions=["retry the download", _FORGED_ADVICE[0]],
        )


def manifest_for_file(
    path: str | os.PathLike[str], *, plugin_id: str, version: str, platform: str
) -> Manifest:
    """The manifest of a package file as it is on disk (for signing)."""
    file = Path(path)
    return Manifest(
        id=plugin_id,
        version=version,
        platform=platform,
        sha256=sha256_file(file),
        size=file.stat().st_size,
    )


def verify_file(path: str | os.PathLike[str], manifest: Manifest) -> None:
    """Raise TruncatedDownloadError, SizeMismatchError or ChecksumMismatchError unless
    the file is exactly the one ``manifest`` describes."""
    file = Path(path)
    size = file.stat().st_size
    _check_size(size, manifest.size)  # before hashing: a wrong size needs no hash
    check_download(
        size, sha256_file(file), expected_size=manifest.size, expected_sha256=manifest.sha256
    )
