#!/bin/sh
# Regenerates hello_pb2.py, hello_pb2_grpc.py and hello_pb2.pyi next to plugin.py
# from proto/ with grpcio-tools' protoc (what dev mode runs when a .proto changes).
set -eu
cd "$(dirname "$0")"
exec "${PLUGHOST_PYTHON:-python3}" -m grpc_tools.protoc -Iproto/hello/v1 -Iproto \
  --python_out=. --pyi_out=. --grpc_python_out=. proto/hello/v1/hello.proto
