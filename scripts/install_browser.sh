#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the dashboard's browser tests
# (tests/test_dashboard_e2e.py drive it through Playwright's executablePath;
# Playwright's own browser downloads are not used). Idempotent: a no-op when
# chromium is already there. Needs root (or sudo) and Debian's package mirror.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_browser.sh: error: chromium is missing and this user cannot install" \
             "packages (not root, no sudo); install it with: apt-get install -y chromium" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: error: chromium is missing and there is no apt-get here;" \
         "install Chromium so that /usr/bin/chromium exists" >&2
    exit 1
fi

echo "installing chromium (Debian package) for the dashboard browser tests" >&2
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; }; then
    echo "install_browser.sh: error: 'apt-get install chromium' failed; the dashboard" \
         "browser tests (pytest -m browser) cannot run" >&2
    exit 1
fi
if ! command -v chromium >/dev/null 2>&1; then
    echo "install_browser.sh: error: the chromium package installed but no chromium" \
         "command is on PATH" >&2
    exit 1
fi
echo "chromium installed: $(chromium --version 2>/dev/null || echo /usr/bin/chromium)" >&2
