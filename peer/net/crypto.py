"""Ed25519 identities of the peers: key files, public key text, signing.

Why it is built this way:

* **Pinned keys, no PKI.**  A run file lists every peer's public key.  A message counts
  as coming from peer *i* only if it verifies under the key pinned for *i*; there is no
  certificate, no key exchange, nothing a network attacker can substitute.  The run id
  hashes the roster with its keys, so peers given different rosters cannot mix.
* **One canonical text per key** (``ed25519:`` + standard base64 of the 32 raw bytes,
  padded, nothing else).  Parsing is strict -- no surrounding whitespace, no
  non-canonical base64 -- so two different strings never denote the same key; the run
  file's "no two peers share a key" check and the run id, which both look at the text,
  therefore cannot be sidestepped by spelling a key twice.
* **Domain separation.**  `sign` signs ``domain || body``, never the bare body, so a
  signature made for one purpose (a round message) can never be replayed as a valid
  signature for another purpose that might be added later.  Domains end in a NUL byte and
  contain no other, so no domain is a prefix of another and the split between domain and
  body is unambiguous.
* **Private keys are secrets.**  Key files are created with mode 0600 and written
  atomically (temporary file in the same directory, fsync, rename), so a crash never
  leaves a truncated key and there is never a moment when the key is readable by others.
  Like ssh, `load_private_key` refuses a key file that the group or others may read:
  such a key may already be compromised, and silently using it would hide that.
* `verify` never raises on a bad signature; a forged message is an ordinary event for a
  Byzantine-robust system, not an exceptional one.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from peer.engine.errors import KeyFileError

__all__ = [
    "PUBLIC_KEY_PREFIX",
    "SIGNATURE_BYTES",
    "KeyFileError",
    "generate_key",
    "load_private_key",
    "public_key_from_text",
    "public_key_text",
    "public_key_to_text",
    "read_private_file",
    "sign",
    "verify",
]

PUBLIC_KEY_PREFIX = "ed25519:"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_MAX_KEY_FILE_BYTES = 64 * 1024  # a PEM Ed25519 key is ~120 bytes; never slurp a huge file


# --------------------------------------------------------------------------- key files


def generate_key(path: Path | str, *, overwrite: bool = False) -> str:
    """Create a new Ed25519 private key at `path` (PEM PKCS8, unencrypted, mode 0600).

    Returns the public key text (``ed25519:...``) to put in the run file's roster.

    Refuses to replace an existing file unless ``overwrite=True``: overwriting a key
    silently would orphan the public key already pinned in other peers' run files.  The
    no-overwrite case publishes the key with a hard link, which fails atomically if the
    name exists (no check-then-write race); with ``overwrite=True`` it uses os.replace.
    Either way readers see the old file or the complete new one, never a partial key.
    """
    path = Path(path)
    directory = path.parent
    if path.exists() and not overwrite:
        raise _exists_error(path)
    if not directory.is_dir():
        raise KeyFileError(f"cannot create key file {path}: directory {directory} does not exist")

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as err:
        raise KeyFileError(f"cannot create key file {path}: {err.strerror or err}") from None
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask can only narrow the mode; make it exact
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        _publish(tmp, path, overwrite)
    except KeyFileError:
        _unlink_quietly(tmp)
        raise
    except OSError as err:
        _unlink_quietly(tmp)
        raise KeyFileError(f"cannot write key file {path}: {err.strerror or err}") from None
    _fsync_directory(directory)
    return public_key_to_text(key.public_key())


def _exists_error(path: Path) -> KeyFileError:
    return KeyFileError(f"key file {path} already exists; refusing to overwrite it (use overwrite=True)")


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished temporary file to its final name."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic create-if-absent
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        # A filesystem without hard links: fall back to check-then-rename.
        if path.exists():
            raise _exists_error(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_private_file(path: Path | str, what: str = "a private key") -> bytes:
    """The bytes of a private key file (Ed25519 signing key or TLS key), refused unless private.

    Raises `KeyFileError` (one line) if the file is missing, not a regular file, readable
    by group or others (like ssh: a possibly leaked key must not be used silently; fix
    with ``chmod 600``) or too large.  The permission check uses fstat on the opened
    descriptor, so it checks the very file that is read.
    """
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO planted at the key path must not hang the peer
        # (it is then refused as not a regular file); no effect on regular files.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except OSError as err:
        raise KeyFileError(f"cannot open key file {path}: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        if os.name == "posix" and info.st_mode & 0o077:
            raise KeyFileError(
                f"key file {path} is accessible by group/others (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"refusing to use it: run chmod 600 {path}"
            )
        if info.st_size > _MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"key file {path} is too large ({info.st_size} bytes) to be {what}")
        chunks = []
        while chunk := os.read(fd, _MAX_KEY_FILE_BYTES + 1):
            chunks.append(chunk)
            if sum(map(len, chunks)) > _MAX_KEY_FILE_BYTES:
                raise KeyFileError(f"key file {path} is too large to be {what}")
        return b"".join(chunks)
    except OSError as err:
        raise KeyFileError(f"cannot read key file {path}: {err.strerror or err}") from None
    finally:
        os.close(fd)


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """Read an unencrypted PEM (PKCS8) Ed25519 private key written by `generate_key`.

    Raises `KeyFileError` (one line) if the file is missing, not a regular file, readable
    by group or others (see `read_private_file`), too large, not PEM, encrypted, or a key
    of another algorithm.
    """
    path = Path(path)
    data = read_private_file(path, "an Ed25519 key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"key file {path} is encrypted; DecByzPG needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"key file {path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"key file {path} holds a {type(key).__name__.lstrip('_')}, not an Ed25519 private key")
    return key


# --------------------------------------------------------------------------- public keys


def public_key_to_text(key: Ed25519PublicKey) -> str:
    """The canonical text of a public key: ``ed25519:`` + base64 of the 32 raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def public_key_text(signing_key: Ed25519PrivateKey) -> str:
    """The public key text belonging to a private key (what the roster must pin)."""
    return public_key_to_text(signing_key.public_key())


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """Parse ``ed25519:<base64 of 32 bytes>`` strictly.

    Raises TypeError if `text` is not a str and ValueError (one line, not echoing the
    whole input) for a wrong prefix, invalid or non-canonical base64, or a wrong length.
    Strictness makes the text canonical: exactly one string per key (see module doc).
    """
    if not isinstance(text, str):
        raise TypeError(f"public key must be a string like 'ed25519:<base64>', got {type(text).__name__}")
    if not text.startswith(PUBLIC_KEY_PREFIX):
        shown = text[:16] + ("..." if len(text) > 16 else "")
        raise ValueError(f"public key must start with {PUBLIC_KEY_PREFIX!r}, got {shown!r}")
    encoded = text[len(PUBLIC_KEY_PREFIX):]
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("public key is not valid standard base64 after 'ed25519:'") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"public key must encode {PUBLIC_KEY_BYTES} bytes, got {len(raw)}")
    if base64.b64encode(raw).decode("ascii") != encoded:
        raise ValueError("public key base64 is not canonical (padding or trailing bits)")
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("public key bytes are not a valid Ed25519 key") from None


# --------------------------------------------------------------------------- signatures


def _check_domain(domain: bytes) -> None:
    if not isinstance(domain, bytes) or not domain.endswith(b"\0") or domain.count(b"\0") != 1:
        raise ValueError("signature domain must be bytes ending in a single NUL (b'.../purpose\\0')")


def sign(signing_key: Ed25519PrivateKey, domain: bytes, body: bytes) -> bytes:
    """Ed25519 signature (64 bytes) over ``domain || body``.

    The domain separates this signature's purpose from every other use of the key
    (see module doc); ``body`` must be the exact bytes that will be sent.
    """
    _check_domain(domain)
    return signing_key.sign(domain + bytes(body))


def verify(public_key: Ed25519PublicKey, domain: bytes, body: bytes, signature: bytes) -> bool:
    """True iff `signature` is a valid Ed25519 signature of ``domain || body``.

    Never raises on a bad, truncated or garbage signature: it returns False.  (A
    malformed `domain` is a programming error and raises ValueError.)
    """
    _check_domain(domain)
    try:
        signature = bytes(memoryview(signature))
        body = bytes(memoryview(body))
    except TypeError:
        return False
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        public_key.verify(signature, domain + body)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
