#!/usr/bin/env bash
# Build plughost's Go test plugins and the go-plugin reference host.
#
#   scripts/build_go_plugins.sh OUTDIR
#
# Produces installed-plugin directories plus the benchmark host:
#   OUTDIR/gohello/plugin.yaml    OUTDIR/gohello/bin/plugin
#   OUTDIR/omnihello/plugin.yaml  OUTDIR/omnihello/bin/plugin
#   OUTDIR/refhost
#
# Needs the Go toolchain ($GO, go on PATH, or /usr/local/go/bin/go). Sources and
# pinned versions are in tests/goplugins/ (see its README.md); a rebuild with
# nothing changed is served from Go's build cache and takes about a second.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

# $GO may name a toolchain explicitly; otherwise use PATH, then Go's default
# install location (CI shells do not always have it on PATH).
GO="${GO:-$(command -v go || true)}"
if [[ -z "$GO" && -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
fi
if [[ -z "$GO" ]] || ! "$GO" version >/dev/null 2>&1; then
    echo "build_go_plugins.sh: error: the Go toolchain was not found (looked at \$GO," \
         "PATH and /usr/local/go/bin/go); install Go >= 1.26 to build the Go test plugins" >&2
    exit 1
fi

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/goplugins" && pwd)"
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"

# No VCS stamping (the tree may be a bare export), and never edit go.mod/go.sum
# during a build: they are committed and must already be complete.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false -mod=readonly"

# build MODULE_DIR OUTPUT_BINARY
build() {
    echo "building $2" >&2
    (cd "$SRC/$1" && "$GO" build -trimpath -o "$2" .)
}

build goplugin "$OUT/gohello/bin/plugin"
cp "$SRC/goplugin/plugin.yaml" "$OUT/gohello/plugin.yaml"
build echo "$OUT/goecho/bin/plugin"
cp "$SRC/echo/plugin.yaml" "$OUT/goecho/plugin.yaml"
build bidir "$OUT/gobidir/bin/plugin"
cp "$SRC/bidir/plugin.yaml" "$OUT/gobidir/plugin.yaml"

build omniplugin "$OUT/omnihello/bin/plugin"
cp "$SRC/omniplugin/plugin.yaml" "$OUT/omnihello/plugin.yaml"

build refhost "$OUT/refhost"

echo "Go test plugins built in $OUT" >&2
