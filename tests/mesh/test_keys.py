"""Member keys: created once with 0600, loaded by id, refused when exposed or broken."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mesh.errors import ConfigError
from mesh.keys import key_path, load_identity, load_or_create_identity


def test_created_on_first_start_with_owner_only_permissions(tmp_path: Path) -> None:
    identity = load_or_create_identity(tmp_path / "keys", "amstel")
    path = key_path(tmp_path / "keys", "amstel")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_identity(tmp_path / "keys", "amstel")
    assert again.key_id == identity.key_id
    assert load_identity(tmp_path / "keys", "amstel").public_b64 == identity.public_b64


def test_signatures_verify_with_the_public_key(tmp_path: Path) -> None:
    from mesh.keys import public_key_from_b64, verify

    identity = load_or_create_identity(tmp_path, "dommel")
    sig = identity.sign(b"payload")
    assert verify(public_key_from_b64(identity.public_b64), sig, b"payload")
    assert not verify(public_key_from_b64(identity.public_b64), sig, b"other")


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path, "zuidas")
    key_path(tmp_path, "zuidas").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_identity(tmp_path, "zuidas")


def test_missing_and_garbage_keys_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no key for member"):
        load_identity(tmp_path, "nobody")
    path = key_path(tmp_path, "broken")
    path.write_text("not a key")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not a PEM private key"):
        load_identity(tmp_path, "broken")


def test_the_key_id_is_derived_once_and_names_the_public_key() -> None:
    from cryptography.hazmat.primitives import serialization

    from mesh.keys import Identity, key_id_of

    identity = Identity.generate("amstel")
    raw = identity.private.public_key().public_bytes(serialization.Encoding.Raw,
                                                     serialization.PublicFormat.Raw)
    assert identity.public_raw == raw and identity.key_id == key_id_of(raw)
    assert Identity(identity.member, identity.private) == identity
    assert "_key_id" not in repr(identity)
