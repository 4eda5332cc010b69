#!/usr/bin/env bash
# Debian's Chromium for the dashboard's browser tests (tests/test_dashboard_e2e.py
# drive /usr/bin/chromium through Playwright's executablePath; Playwright's own
# browser downloads are never used).
set -euo pipefail
exec bash "$(dirname "$0")/apt_install.sh" chromium chromium "the dashboard's browser tests"
