"""A read-only client of a running peer: its Status and the equivocation evidence it holds."""

from __future__ import annotations

from typing import Any

import grpc
from decbyzpg.v1 import peer_pb2, peer_pb2_grpc

from peer.engine.errors import PeerUnreachableError


def query_status(address: str, timeout: float, evidence: bool = False) -> dict[str, Any]:
    """Status of the peer at `address` as a JSON-ready dict; PeerUnreachableError if it does not answer."""
    with grpc.insecure_channel(address) as channel:
        stub = peer_pb2_grpc.PeerStub(channel)
        try:
            status = stub.Status(peer_pb2.StatusRequest(), timeout=timeout)
            proofs = stub.Evidence(peer_pb2.EvidenceRequest(), timeout=timeout) if evidence else None
        except grpc.RpcError as err:
            raise PeerUnreachableError(f"{address}: {err.code().name}: {err.details()}") from None
    report: dict[str, Any] = {
        "peer_id": status.peer_id, "run_id": status.run_id.hex(), "iteration": status.iteration,
        "finished": status.finished, "accepted": status.accepted, "rejected": dict(status.rejected),
    }
    if proofs is not None:
        report["equivocations"] = [{"sender": e.first.sender, "first": e.first.body.hex(),
                                    "second": e.second.body.hex()} for e in proofs.equivocations]
    return report
