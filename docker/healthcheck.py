#!/opt/decbyzpg/bin/python
"""Container health check: asks this container's peer daemon over the standard
grpc.health.v1 service whether `decbyzpg.v1.Peer` is SERVING.

Exit 0 when it is, 1 otherwise (what Docker's HEALTHCHECK expects).  The port is the
daemon's listening port: DECBYZPG_PORT, or 50051 (the port `decbyzpg init --compose`
puts in the roster).  Usage: decbyzpg-health [host:port]
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    target = sys.argv[1] if len(sys.argv) > 1 else f"127.0.0.1:{os.environ.get('DECBYZPG_PORT', '50051')}"
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="decbyzpg.v1.Peer"), timeout=3)
    except grpc.RpcError as err:
        print(f"{target}: {err.code().name}", file=sys.stderr)
        return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{target}: {name}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
