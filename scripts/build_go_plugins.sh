#!/usr/bin/env bash
# Build plughost's Go test plugins and the go-plugin reference host.
#
#   scripts/build_go_plugins.sh OUTDIR
#
# Produces installed-plugin directories plus the benchmark host:
#   OUTDIR/gohello/plugin.yaml    OUTDIR/gohello/bin/plugin    (also goecho, gobidir)
#   OUTDIR/omnihello/plugin.yaml  OUTDIR/omnihello/bin/plugin  (and every other main
#       of tests/goplugins/omnisdk/cmd: plugins built with Omniview's real Go SDK)
#   OUTDIR/refhost
#
# Needs the Go toolchain ($GO, go on PATH, or /usr/local/go/bin/go). Sources and
# pinned versions are in tests/goplugins/ (see its README.md); a rebuild with
# nothing changed is served from Go's build cache and takes a few seconds.
#
# The Omniview SDK plugins (tests/goplugins/omnisdk) require
# github.com/omniviewdev/plugin-sdk v0.5.0, fetched from the Go module proxy like
# any dependency. Where the proxy refuses that module and the SDK's source is
# next to the checkout (../shared/third_party/omniview-plugin-sdk, or
# $OMNIVIEW_SDK_DIR), they are built instead from a throw-away copy of the
# module (OUTDIR/.omnisdk-src) whose go.mod replaces the SDK with that folder;
# the committed go.mod and go.sum are never changed. OMNISDK_SOURCE=proxy or
# OMNISDK_SOURCE=third_party forces one way (default: auto).
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

# -- Omniview SDK plugins: one module, one `go build` for all of its mains -----------------
SDK_MODULE=github.com/omniviewdev/plugin-sdk
REPO="$(cd "$SRC/../.." && pwd)"
SDK_DIR="${OMNIVIEW_SDK_DIR:-$(dirname "$REPO")/shared/third_party/omniview-plugin-sdk}"
OMNISDK_SOURCE="${OMNISDK_SOURCE:-auto}"

# True if SDK_DIR holds the SDK module's source.
have_sdk_source() {
    [[ -f "$SDK_DIR/go.mod" ]] && grep -q "^module $SDK_MODULE\$" "$SDK_DIR/go.mod"
}

omnisdk_dir="$SRC/omnisdk"
why="OMNISDK_SOURCE=$OMNISDK_SOURCE"
case "$OMNISDK_SOURCE" in
    auto)
        # The version the committed go.mod requires, from the module cache or the proxy.
        if ! refusal="$(cd "$SRC/omnisdk" && "$GO" mod download "$SDK_MODULE" 2>&1)"; then
            if ! have_sdk_source; then
                echo "build_go_plugins.sh: error: cannot download $SDK_MODULE and its source" \
                     "is not at $SDK_DIR (set OMNIVIEW_SDK_DIR):" >&2
                echo "$refusal" >&2
                exit 1
            fi
            echo "go mod download $SDK_MODULE failed:" >&2
            echo "$refusal" | sed 's/^/    /' >&2
            OMNISDK_SOURCE=third_party
            why="the proxy refuses the module"
        fi
        ;;
    proxy | third_party) ;;
    *)
        echo "build_go_plugins.sh: error: OMNISDK_SOURCE=$OMNISDK_SOURCE: want auto, proxy or third_party" >&2
        exit 2
        ;;
esac
if [[ "$OMNISDK_SOURCE" == third_party ]]; then
    if ! have_sdk_source; then
        echo "build_go_plugins.sh: error: no $SDK_MODULE source at $SDK_DIR (set OMNIVIEW_SDK_DIR)" >&2
        exit 1
    fi
    sdk_abs="$(cd "$SDK_DIR" && pwd)"
    echo "building against the SDK from $sdk_abs ($why)" >&2
    # A throw-away copy: only its go.mod gets the replace. A directory replacement
    # is not checksummed, and the SDK's own dependencies are checked against the
    # committed go.sum as usual, so -mod=readonly still holds.
    omnisdk_dir="$(mktemp -d "$OUT/.omnisdk-src.XXXXXX")"
    trap 'rm -rf "$omnisdk_dir"' EXIT
    cp -R "$SRC/omnisdk/." "$omnisdk_dir/"
    (cd "$omnisdk_dir" && "$GO" mod edit -replace "$SDK_MODULE=$sdk_abs")
    grep '^replace' "$omnisdk_dir/go.mod" >&2  # the copy's only change, shown
else
    echo "building against $SDK_MODULE from the Go module proxy (committed go.mod)" >&2
fi

echo "building the Omniview SDK plugins (tests/goplugins/omnisdk/cmd/*)" >&2
# A private directory per run, so two builds at once never take each other's binaries.
bins="$(mktemp -d "$OUT/.omnisdk-bin.XXXXXX")"
(cd "$omnisdk_dir" && "$GO" build -trimpath -o "$bins/" ./cmd/...)
for main in "$SRC"/omnisdk/cmd/*/; do
    id="$(basename "$main")"
    mkdir -p "$OUT/$id/bin"
    cp "$main/plugin.yaml" "$OUT/$id/plugin.yaml"
    mv -f "$bins/$id" "$OUT/$id/bin/plugin"  # a rename: never seen half-written
done
rm -rf "$bins"

build refhost "$OUT/refhost"

echo "Go test plugins built in $OUT" >&2
