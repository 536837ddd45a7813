"""Member keys: Ed25519, created on first start, stored 0600, loaded by member id."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mesh.errors import ConfigError


def key_id_of(public_raw: bytes) -> str:
    """A short, stable fingerprint of a public key: the first 16 hex digits of sha256."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text))


# Keys are `cryptography` objects (PEM files, the roster); signing and verifying go through
# libsodium (PyNaCl, which nkeys needs anyway): the same Ed25519 with the same, deterministic
# signatures, in about 60 % (sign) and 55 % (verify) of the time OpenSSL takes. Every
# message a service takes in is verified, so this is a tenth of a busy node's CPU.
_verify_keys: dict[bytes, nacl.signing.VerifyKey] = {}
_MAX_VERIFY_KEYS = 4096  # a roster's keys, past and present; more is someone's mistake


def _verify_key(public: Ed25519PublicKey) -> nacl.signing.VerifyKey:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = _verify_keys.get(raw)
    if key is None:
        if len(_verify_keys) >= _MAX_VERIFY_KEYS:
            _verify_keys.clear()
        key = _verify_keys[raw] = nacl.signing.VerifyKey(raw)
    return key


def verify(public: Ed25519PublicKey, signature_b64: str, payload: bytes) -> bool:
    try:
        _verify_key(public).verify(payload, base64.b64decode(signature_b64, validate=True))
    except (nacl.exceptions.BadSignatureError, ValueError):  # bad base64 or length, too
        return False
    return True


@dataclass(frozen=True)
class Identity:
    """A member's signing identity: its id and private key."""

    member: str
    private: Ed25519PrivateKey
    # Derived once: every signed message names the key (`Fed-Key`).
    _public_raw: bytes = field(init=False, repr=False, compare=False)
    _key_id: str = field(init=False, repr=False, compare=False)
    _signing: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_public_raw", self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        object.__setattr__(self, "_key_id", key_id_of(self._public_raw))
        object.__setattr__(self, "_signing", nacl.signing.SigningKey(self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption())))

    @property
    def public_raw(self) -> bytes:
        return self._public_raw

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_raw).decode()

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, payload: bytes) -> str:
        return base64.b64encode(self._signing.sign(payload).signature).decode()

    @classmethod
    def generate(cls, member: str) -> Identity:
        return cls(member, Ed25519PrivateKey.generate())


def key_path(keys_dir: Path, member: str) -> Path:
    return keys_dir / f"{member}.key"


def save_identity(identity: Identity, keys_dir: Path) -> Path:
    """Write the private key as PEM, readable by its owner only (0600 from the start)."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = key_path(keys_dir, identity.member)
    pem = identity.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: never overwrite an existing key; the mode applies before any byte is written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return path


def load_identity(keys_dir: Path, member: str) -> Identity:
    path = key_path(keys_dir, member)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no key for member {member!r}") from None
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path}: key file is readable by others; chmod 600 it")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise ConfigError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 key")
    return Identity(member, private)


def load_or_create_identity(keys_dir: Path, member: str) -> Identity:
    """Load the member's key, or create and store one on first start."""
    if key_path(keys_dir, member).exists():
        return load_identity(keys_dir, member)
    identity = Identity.generate(member)
    try:
        save_identity(identity, keys_dir)
    except FileExistsError:
        # Another process created it between our check and our write: use theirs.
        return load_identity(keys_dir, member)
    return identity
