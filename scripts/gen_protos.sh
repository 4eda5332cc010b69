#!/usr/bin/env bash
# Regenerates the checked-in Python stubs in src/plughost/_proto from proto/,
# and the hello example's own stubs (src/plughost/examples/hello/gen_stubs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
"$py" -m grpc_tools.protoc -Iproto \
  --python_out=src --pyi_out=src --grpc_python_out=src \
  proto/plughost/_proto/*.proto
touch src/plughost/_proto/__init__.py
case "$py" in */*) py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")" ;; esac
PLUGHOST_PYTHON=$py sh src/plughost/examples/hello/gen_stubs.sh
echo "stubs regenerated in src/plughost/_proto and src/plughost/examples/hello"
