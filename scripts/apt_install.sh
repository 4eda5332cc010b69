#!/usr/bin/env bash
# apt_install.sh PACKAGE COMMAND PURPOSE: make sure Debian's PACKAGE, which provides
# COMMAND, is installed; PURPOSE says what needs it. Idempotent: a no-op when COMMAND
# is there. Needs root (or sudo) and Debian's package mirror; says what to do otherwise.
set -euo pipefail
package=$1 command=$2 purpose=$3
me="$(basename "$0") $package"

if command -v "$command" >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "$me: error: $command is missing and this user cannot install packages" \
             "(not root, no sudo); install it with: apt-get install -y $package" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$me: error: $command is missing and there is no apt-get here;" \
         "install $package with this system's package manager" >&2
    exit 1
fi
echo "installing $package (Debian package) for $purpose" >&2
if ! { $SUDO apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$package" >/dev/null; }; then
    echo "$me: error: 'apt-get install $package' failed: $purpose cannot work" >&2
    exit 1
fi
if ! command -v "$command" >/dev/null 2>&1; then
    echo "$me: error: the $package package installed but no $command command is on PATH" >&2
    exit 1
fi
echo "$package installed" >&2
