#!/usr/bin/env bash
# Make sure Debian's bubblewrap (bwrap) is installed: plughost confines plugins
# that declare permissions with it, and tests/test_sandbox.py proves the
# confinement with a hostile plugin. Idempotent: a no-op when bwrap is there.
# Needs root (or sudo) and Debian's package mirror.
set -euo pipefail

if command -v bwrap >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_sandbox.sh: error: bwrap is missing and this user cannot install" \
             "packages (not root, no sudo); install it with: apt-get install -y bubblewrap" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_sandbox.sh: error: bwrap is missing and there is no apt-get here;" \
         "install bubblewrap with this system's package manager" >&2
    exit 1
fi

echo "installing bubblewrap (Debian package) for the plugin sandbox" >&2
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap >/dev/null; }; then
    echo "install_sandbox.sh: error: 'apt-get install bubblewrap' failed; plugins that" \
         "declare permissions cannot be sandboxed" >&2
    exit 1
fi
if ! command -v bwrap >/dev/null 2>&1; then
    echo "install_sandbox.sh: error: the bubblewrap package installed but no bwrap" \
         "command is on PATH" >&2
    exit 1
fi
echo "bubblewrap installed: $(bwrap --version)" >&2
