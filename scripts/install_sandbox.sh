#!/usr/bin/env bash
# Debian's bubblewrap (bwrap): plughost confines plugins that declare permissions
# with it, and tests/test_sandbox.py proves the confinement with a hostile plugin.
set -euo pipefail
exec bash "$(dirname "$0")/apt_install.sh" bubblewrap bwrap "the plugin sandbox"
