#!/usr/bin/env bash
# Installs the servers the registry's tests run against (tests/services.py):
# PostgreSQL from Debian's package and SeaweedFS's weed (an S3-compatible object
# store) built with Go modules; and wrk, the load generator of bench/registry.py.
# weed's build takes ~15 minutes, so the binary is kept in the user's cache
# (shared by every clone on the machine) and linked into .cache/services/bin.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: ${missing[*]} missing; install (apt-get install ${missing[*]}) to run the registry's database tests and its benchmark" >&2
  fi
fi

WEED_VERSION=v0.0.0-20261109003541-7506e5f91cd6
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/plughost-test-services"
WEED="$CACHE/bin/weed"
LINK=.cache/services/bin/weed
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
if [ ! -x "$WEED" ] || [ "$(cat "$WEED.version" 2>/dev/null)" != "$WEED_VERSION" ]; then
  if [ -x "$GO" ]; then
    # weed's go.mod has replace directives, so 'go install pkg@version' refuses it:
    # build it as the main module from a copy of the module's source.
    echo "building SeaweedFS's weed for the registry's S3 tests (about 15 minutes, once per machine)" >&2
    "$GO" mod download "github.com/seaweedfs/seaweedfs@$WEED_VERSION"
    src=$("$GO" env GOMODCACHE)/github.com/seaweedfs/seaweedfs@$WEED_VERSION
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    cp -r "$src/." "$work/"
    chmod -R u+w "$work"
    mkdir -p "$(dirname "$WEED")"
    (cd "$work" && "$GO" build -trimpath -o "$WEED.new" ./weed)
    mv -f "$WEED.new" "$WEED"
    echo "$WEED_VERSION" > "$WEED.version"
  else
    echo "note: Go not found; the registry's S3 tests will be skipped (install Go to build weed)" >&2
  fi
fi
if [ -x "$WEED" ]; then
  mkdir -p "$(dirname "$LINK")"
  ln -sfn "$WEED" "$LINK"
fi
