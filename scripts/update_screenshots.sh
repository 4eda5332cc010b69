#!/usr/bin/env bash
# Regenerates the tracked dashboard screenshots in docs/screenshots/ by running the
# browser tests with PLUGHOST_UPDATE_SCREENSHOTS=1 (a plain test run writes them to a
# temporary directory and leaves the working tree alone). Needs .venv (scripts/bootstrap.sh)
# and Debian's chromium (scripts/install_browser.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PLUGHOST_UPDATE_SCREENSHOTS=1 exec .venv/bin/python -m pytest -q tests/test_dashboard_e2e.py "$@"
