"""Optional mutual TLS between peers: a run CA, one certificate per roster member.

Message signatures already bind every vector to its sender, whoever relays it; TLS adds
what signatures cannot: nobody on the path reads the gradients and parameters, and only
holders of a certificate from the run's CA can open a connection at all (an outsider's
junk never reaches the validator).  Why it is built this way:

* **A run CA, not pinned self-signed certificates.**  The run file names one CA file and
  per-peer certificate and key paths (``{id}`` in a path is the peer's roster id), so the
  run file stays the same for every peer and the CA's private key never leaves the
  machine that ran `decbyzpg certs`.
* **Identity by roster id.**  Peer *i*'s certificate names ``decbyzpg-peer-<i>`` (and its
  roster host, for ordinary tools); clients check that name, not the address they dialed,
  so a peer behind NAT or a renamed host keeps its identity.
* **ECDSA P-256 certificates**, which every TLS stack accepts; the Ed25519 signing keys
  stay what they are, a separate identity for the protocol's content.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from peer.engine.errors import ConfigError, KeyFileError
from peer.engine.fields import check_keys, invalid
from peer.net.crypto import read_private_file
from peer.net.files import atomic_write

__all__ = ["TlsConfig", "TlsFiles", "make_certificates", "parse_tls", "peer_name", "tls_table"]

CERTIFICATE_DAYS = 825  # the longest validity browsers accept; a run is far shorter
_MAX_CERTIFICATE_BYTES = 64 * 1024


def peer_name(peer_id: int) -> str:
    """The name peer `peer_id`'s certificate carries and every client checks."""
    return f"decbyzpg-peer-{peer_id}"


@dataclass(frozen=True)
class TlsFiles:
    """One peer's TLS material, read: PEM bytes for gRPC's credentials."""

    ca: bytes
    certificate: bytes
    private_key: bytes


@dataclass(frozen=True)
class TlsConfig:
    """The run file's [tls] table: where the CA and each peer's certificate and key are."""

    ca: Path
    cert: str  # a path template: "{id}" is the peer's roster id
    key: str

    def paths(self, peer_id: int) -> tuple[Path, Path]:
        return Path(self.cert.replace("{id}", str(peer_id))), Path(self.key.replace("{id}", str(peer_id)))

    def load(self, peer_id: int) -> TlsFiles:
        """Peer `peer_id`'s CA, certificate and key; KeyFileError (one line) if any is unusable."""
        cert_path, key_path = self.paths(peer_id)
        private_key = read_private_file(key_path, "a TLS key")
        try:
            serialization.load_pem_private_key(private_key, password=None)
        except (TypeError, ValueError):
            raise KeyFileError(f"TLS key {key_path} is not an unencrypted PEM private key") from None
        return TlsFiles(_read_certificate(self.ca), _read_certificate(cert_path), private_key)


def _read_certificate(path: Path) -> bytes:
    try:
        data = path.read_bytes()[:_MAX_CERTIFICATE_BYTES + 1]
    except OSError as err:
        raise KeyFileError(f"cannot read certificate {path}: {err.strerror or err}") from None
    try:
        x509.load_pem_x509_certificate(data)
    except ValueError:
        raise KeyFileError(f"{path} is not a PEM certificate") from None
    return data


def parse_tls(data: Any, base: Path | None) -> TlsConfig | None:
    """Validate a run file's [tls] table (absent: plaintext); relative paths are from the run file's directory."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise invalid("tls", "a table with ca, cert and key", data)
    check_keys("tls", data, {"ca", "cert", "key"})
    values = {}
    for name in ("ca", "cert", "key"):
        raw = data.get(name)
        if not isinstance(raw, str) or not raw:
            raise invalid(f"tls.{name}", "a file path", raw)
        path = Path(raw)
        values[name] = str(path if path.is_absolute() or base is None else base / path)
    if "{id}" not in values["cert"] or "{id}" not in values["key"]:
        raise ConfigError("config error: tls.cert and tls.key must contain {id} (every peer reads the same run file)")
    return TlsConfig(Path(values["ca"]), values["cert"], values["key"])


# ---------------------------------------------------------------- creating certificates


def _private_pem(private_key: ec.EllipticCurvePrivateKey) -> bytes:
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


def _subject_names(peer_id: int, host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(peer_name(peer_id))]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
    except ValueError:
        if host and host != peer_name(peer_id):
            names.append(x509.DNSName(host))
    return names


def make_certificates(directory: Path, roster: Sequence[tuple[int, str]], overwrite: bool = False,
                      now: datetime.datetime | None = None) -> None:
    """Write ca.pem, ca.key and <id>.pem, <id>.key for every (id, host:port) of `roster`.

    Keys are written private (0600), certificates public (0644), each atomically.  Refuses
    to replace existing files unless `overwrite`: new certificates orphan the CA every
    other peer trusts.
    """
    directory = Path(directory)
    names = ["ca.pem", "ca.key"] + [f"{k}.{ext}" for k, _ in roster for ext in ("pem", "key")]
    existing = [n for n in names if (directory / n).exists()]
    if existing and not overwrite:
        raise ConfigError(f"config error: {directory / existing[0]} exists; pass --force to replace the run's "
                          "certificates (every peer then needs the new CA)")
    start = (now or datetime.datetime.now(datetime.timezone.utc)) - datetime.timedelta(hours=1)  # clock skew
    end = start + datetime.timedelta(days=CERTIFICATE_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "decbyzpg run CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=True, crl_sign=True, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / "ca.key", _private_pem(ca_key))
    atomic_write(directory / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    for peer_id, address in roster:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, peer_name(peer_id))]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName(_subject_names(peer_id, address.rsplit(":", 1)[0])),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        atomic_write(directory / f"{peer_id}.key", _private_pem(key))
        atomic_write(directory / f"{peer_id}.pem", cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def tls_table(directory: Path, run_directory: Path) -> dict[str, str]:
    """The run file's [tls] table for certificates in `directory` (relative to the run file when inside its directory)."""
    directory, run_directory = Path(directory).resolve(), Path(run_directory).resolve()
    base = directory.relative_to(run_directory) if directory.is_relative_to(run_directory) else directory
    return {"ca": str(base / "ca.pem"), "cert": str(base / "{id}.pem"), "key": str(base / "{id}.key")}
