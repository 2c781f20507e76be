#!/opt/decbyzpg/bin/python
"""Container health check: asks this container's peer daemon over the standard
grpc.health.v1 service whether `decbyzpg.v1.Peer` is SERVING.

Exit 0 when it is, 1 otherwise (what Docker's HEALTHCHECK expects).  The port is the
daemon's listening port: DECBYZPG_PORT, or 50051 (the port `decbyzpg init --compose`
puts in the roster); a peer listens on loopback as well as on its roster address.
Usage: decbyzpg-health [host:port]

With mutual TLS ([tls] in the run file) the probe needs a certificate of the run's CA:
set DECBYZPG_TLS_CA, DECBYZPG_TLS_CERT and DECBYZPG_TLS_KEY (PEM files, e.g. the peer's
own) and DECBYZPG_TLS_NAME (decbyzpg-peer-<id>, the name the peer's certificate carries).
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def channel_to(target: str) -> grpc.Channel:
    tls = [os.environ.get(f"DECBYZPG_TLS_{part}") for part in ("CA", "CERT", "KEY")]
    if not any(tls):
        return grpc.insecure_channel(target)
    if not all(tls):
        raise OSError("set all of DECBYZPG_TLS_CA, DECBYZPG_TLS_CERT and DECBYZPG_TLS_KEY, or none")
    ca, cert, key = (open(path, "rb").read() for path in tls)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    name = os.environ.get("DECBYZPG_TLS_NAME")
    return grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", name)] if name else [])


def main() -> int:
    target = sys.argv[1] if len(sys.argv) > 1 else f"127.0.0.1:{os.environ.get('DECBYZPG_PORT', '50051')}"
    try:
        with channel_to(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="decbyzpg.v1.Peer"), timeout=10)  # < the 15 s HEALTHCHECK timeout
    except grpc.RpcError as err:
        print(f"{target}: {err.code().name}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"decbyzpg-health: {err}", file=sys.stderr)
        return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{target}: {name}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
