"""A read-only client of a running peer: its Status and the equivocation evidence it holds.

Peers answer reads from roster members only (`peer.net.reads`), so the client signs its
requests with a roster member's key when given one; without credentials it can read only
a peer whose run file sets `network.open_status` (and then only Status).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from decbyzpg.v1 import peer_pb2, peer_pb2_grpc

from peer.engine.errors import PeerUnreachableError
from peer.net import reads
from peer.net.tls import TlsFiles, peer_name


@dataclass(frozen=True)
class ReaderIdentity:
    """Who signs the read requests: a roster member of the run `run_id`."""

    run_id: bytes
    reader: int
    signing_key: Ed25519PrivateKey
    tls: TlsFiles | None = None  # the reader's TLS material when the run uses mutual TLS


def _channel(address: str, identity: ReaderIdentity | None, peer_id: int | None) -> grpc.Channel:
    if identity is None or identity.tls is None:
        return grpc.insecure_channel(address)
    if peer_id is None:
        raise ValueError("a TLS channel needs the roster id of the peer at the address")
    tls = identity.tls
    credentials = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.private_key,
                                               certificate_chain=tls.certificate)
    return grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", peer_name(peer_id))])


def query_status(address: str, timeout: float, evidence: bool = False,
                 identity: ReaderIdentity | None = None, peer_id: int | None = None) -> dict[str, Any]:
    """Status of the peer at `address` as a JSON-ready dict; PeerUnreachableError if it does not answer.

    `peer_id` (the roster id at `address`) is needed with TLS: the server's certificate must name it."""
    status_request, evidence_request = peer_pb2.StatusRequest(), peer_pb2.EvidenceRequest()
    if identity is not None:
        reads.authorize(status_request, "Status", identity.run_id, identity.reader, identity.signing_key)
        reads.authorize(evidence_request, "Evidence", identity.run_id, identity.reader, identity.signing_key)
    with _channel(address, identity, peer_id) as channel:
        stub = peer_pb2_grpc.PeerStub(channel)
        try:
            status = stub.Status(status_request, timeout=timeout)
            proofs = stub.Evidence(evidence_request, timeout=timeout) if evidence else None
        except grpc.RpcError as err:
            hint = ""
            if err.code() == grpc.StatusCode.UNAUTHENTICATED and identity is None:
                hint = " (pass --config, --id and --key of a roster member)"
            raise PeerUnreachableError(f"{address}: {err.code().name}: {err.details()}{hint}") from None
    report: dict[str, Any] = {
        "peer_id": status.peer_id, "run_id": status.run_id.hex(), "iteration": status.iteration,
        "finished": status.finished, "accepted": status.accepted, "rejected": dict(status.rejected),
    }
    if proofs is not None:
        report["equivocations"] = [{"sender": e.first.sender, "first": e.first.body.hex(),
                                    "second": e.second.body.hex()} for e in proofs.equivocations]
    return report
