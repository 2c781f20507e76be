#!/bin/sh
# Regenerate the Python protobuf/gRPC modules from proto/decbyzpg/v1/peer.proto.
# Run from anywhere; the output lands next to the .proto (proto/decbyzpg/v1/).
# tests/test_proto_current.py checks that the committed modules match this output.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" -m grpc_tools.protoc -I proto --python_out=proto --pyi_out=proto \
    --grpc_python_out=proto proto/decbyzpg/v1/peer.proto
