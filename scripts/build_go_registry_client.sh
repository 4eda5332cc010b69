#!/usr/bin/env bash
# Build the Go marketplace client used by the registry interop test.
#
#   scripts/build_go_registry_client.sh OUTDIR      -> OUTDIR/goregistry
#
# Source: tests/goregistry/ (main.go + ./registry, a client with the original
# Omniview registry client's API and wire behaviour; see registry/registry.go
# for why it is not the original module). Standard library only, so the build
# needs no network; go.mod is committed and the build never edits it.
# Needs the Go toolchain ($GO, go on PATH, or /usr/local/go/bin/go).
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

GO="${GO:-$(command -v go || true)}"
if [[ -z "$GO" && -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
fi
if [[ -z "$GO" ]] || ! "$GO" version >/dev/null 2>&1; then
    echo "build_go_registry_client.sh: error: the Go toolchain was not found (looked at \$GO," \
         "PATH and /usr/local/go/bin/go); install Go >= 1.23 to build the registry interop client" >&2
    exit 1
fi

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/goregistry" && pwd)"
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"

export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false -mod=readonly"
echo "building $OUT/goregistry" >&2
(cd "$SRC" && "$GO" build -trimpath -o "$OUT/goregistry" .)
