"""peer.net.crypto: key files, public key text, domain-separated signatures."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from peer.net import crypto
from peer.net.crypto import KeyFileError

DOMAIN = b"decbyzpg/test\0"
posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# --------------------------------------------------------------------------- key files


@posix_only
def test_generate_key_mode_0600_even_with_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "peer0.key"
    old = os.umask(0)
    try:
        text = crypto.generate_key(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = crypto.load_private_key(path)
    assert crypto.public_key_text(key) == text
    assert text.startswith("ed25519:")
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in tmp_path.iterdir()] == ["peer0.key"]  # no temp file left behind


def test_generate_key_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first = crypto.generate_key(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists") as err:
        crypto.generate_key(path)
    assert "\n" not in str(err.value)
    assert path.read_bytes() == before
    second = crypto.generate_key(path, overwrite=True)
    assert second != first
    assert crypto.public_key_text(crypto.load_private_key(path)) == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


def test_generate_key_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        crypto.generate_key(tmp_path / "nope" / "k")


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        crypto.load_private_key(tmp_path / "absent.key")


@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_load_refuses_group_or_world_accessible(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k"
    crypto.generate_key(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600") as err:
        crypto.load_private_key(path)
    assert "\n" not in str(err.value)
    path.chmod(0o400)  # read-only for the owner is fine
    crypto.load_private_key(path)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def test_load_rejects_non_pem(tmp_path: Path) -> None:
    path = tmp_path / "k"
    _write_private(path, b"not a key at all\n")
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        crypto.load_private_key(path)


def test_load_rejects_other_algorithm(tmp_path: Path) -> None:
    path = tmp_path / "k"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(path, pem)
    with pytest.raises(KeyFileError, match="not an Ed25519 private key"):
        crypto.load_private_key(path)


def test_load_rejects_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "k"
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    _write_private(path, pem)
    with pytest.raises(KeyFileError, match="encrypted"):
        crypto.load_private_key(path)


def test_load_rejects_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        crypto.load_private_key(tmp_path / "d")


def test_key_file_error_is_value_error() -> None:
    assert issubclass(KeyFileError, ValueError)


# --------------------------------------------------------------------------- public key text


def test_public_key_text_round_trip() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    text = crypto.public_key_to_text(key)
    assert text == "ed25519:" + base64.b64encode(_raw(key)).decode()
    assert "\n" not in text and len(text) == len("ed25519:") + 44
    assert _raw(crypto.public_key_from_text(text)) == _raw(key)


GOOD = crypto.public_key_to_text(Ed25519PrivateKey.generate().public_key())


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "must start with 'ed25519:'"),
        ("ssh-ed25519 AAAA", "must start with 'ed25519:'"),
        ("ED25519:" + GOOD[8:], "must start with 'ed25519:'"),
        ("ed25519:", "must encode 32 bytes, got 0"),
        ("ed25519:!!!notbase64!!!", "not valid standard base64"),
        ("ed25519:" + GOOD[8:].rstrip("="), "not valid standard base64"),  # missing padding
        ("ed25519:" + base64.b64encode(b"x" * 31).decode(), "must encode 32 bytes, got 31"),
        ("ed25519:" + base64.b64encode(b"x" * 33).decode(), "must encode 32 bytes, got 33"),
        ("ed25519:" + base64.urlsafe_b64encode(b"\xfb" * 32).decode(), "not valid standard base64"),
        (GOOD + "\n", "not valid standard base64"),
        (" " + GOOD, "must start with 'ed25519:'"),
        ("ed25519:é" + GOOD[9:], "not valid standard base64"),
    ],
)
def test_bad_public_key_texts(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        crypto.public_key_from_text(text)
    assert "\n" not in str(err.value)


def test_non_canonical_base64_rejected() -> None:
    raw = _raw(Ed25519PrivateKey.generate().public_key())
    encoded = base64.b64encode(raw).decode()
    # 32 bytes -> 43 significant chars + '='; the last char carries 2 unused bits.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(encoded[42])
    tweaked = encoded[:42] + alphabet[last ^ 1] + "="
    assert base64.b64decode(tweaked) == raw  # Python itself would accept it
    with pytest.raises(ValueError, match="not canonical"):
        crypto.public_key_from_text("ed25519:" + tweaked)


def test_public_key_from_non_string_is_type_error() -> None:
    with pytest.raises(TypeError, match="must be a string"):
        crypto.public_key_from_text(b"ed25519:" + GOOD[8:].encode())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        crypto.public_key_from_text(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- sign / verify


def test_sign_verify() -> None:
    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    sig = crypto.sign(key, DOMAIN, b"body")
    assert len(sig) == 64
    assert crypto.verify(key.public_key(), DOMAIN, b"body", sig)
    assert not crypto.verify(other.public_key(), DOMAIN, b"body", sig)  # wrong key
    assert not crypto.verify(key.public_key(), DOMAIN, b"bodY", sig)  # tampered body
    assert not crypto.verify(key.public_key(), b"decbyzpg/other\0", b"body", sig)  # other domain


def test_signature_covers_domain_not_just_body() -> None:
    key = Ed25519PrivateKey.generate()
    bare = key.sign(b"body")  # a signature of the bare body (another purpose)
    assert not crypto.verify(key.public_key(), DOMAIN, b"body", bare)
    assert key.public_key().verify(crypto.sign(key, DOMAIN, b"body"), DOMAIN + b"body") is None


@pytest.mark.parametrize("signature", [b"", b"\0" * 64, b"\xff" * 64, b"\0" * 63, b"\0" * 65, b"x" * 1000])
def test_verify_garbage_signature_is_false(signature: bytes) -> None:
    key = Ed25519PrivateKey.generate()
    assert crypto.verify(key.public_key(), DOMAIN, b"body", signature) is False


def test_verify_truncated_real_signature_is_false() -> None:
    key = Ed25519PrivateKey.generate()
    sig = crypto.sign(key, DOMAIN, b"body")
    assert not crypto.verify(key.public_key(), DOMAIN, b"body", sig[:-1])
    assert not crypto.verify(key.public_key(), DOMAIN, b"body", sig + b"\0")


@pytest.mark.parametrize("domain", [b"", b"no-terminator", b"two\0nuls\0", "text\0"])
def test_domain_must_end_in_single_nul(domain: bytes) -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(ValueError, match="single NUL"):
        crypto.sign(key, domain, b"body")
    with pytest.raises(ValueError, match="single NUL"):
        crypto.verify(key.public_key(), domain, b"body", b"\0" * 64)


@posix_only
def test_load_refuses_fifo_without_hanging(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path, 0o600)
    with pytest.raises(KeyFileError, match="not a regular file"):
        crypto.load_private_key(path)
