#!/usr/bin/env bash
# Runs the whole test suite: installs what is needed, builds the Go interop plugins, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ]; then
  bash scripts/build_go_plugins.sh .cache/goplugins
elif [ "${CI:-}" = "true" ]; then
  echo "Go is required in CI: the interop tests must run" >&2
  exit 1
else
  echo "note: Go not found; the interop tests will be skipped (install Go to run them)"
fi
# The dashboard's end-to-end tests drive Debian's chromium (never a downloaded browser).
bash scripts/install_browser.sh
# Plugins that declare permissions run in bubblewrap; the sandbox tests need it.
bash scripts/install_sandbox.sh
# The registry's database and object-store tests run real PostgreSQL and SeaweedFS.
bash scripts/install_services.sh
# A pytest worker per core (at most 4), each test file kept on one worker, so its fixtures
# are made once. Temporary directories go under a short base of this run's own: a plugin's
# socket directory must leave room for a socket's name in 108 bytes (process/sockdir.py).
basetemp=$(mktemp -d /tmp/ph-t.XXXXXX)  # short: see above
trap 'rm -rf "$basetemp" 2>/dev/null || true' EXIT
.venv/bin/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile --basetemp "$basetemp" "$@"
