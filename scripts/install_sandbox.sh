#!/usr/bin/env bash
# Debian's bubblewrap (bwrap): plughost confines plugins that declare permissions
# with it, and tests/test_sandbox.py proves the confinement with a hostile plugin.
# Debian's passt (pasta): a plugin granted network: loopback gets a network namespace
# of its own with the host's loopback ports forwarded into it (tests/test_netns.py).
set -euo pipefail
here="$(dirname "$0")"
bash "$here/apt_install.sh" bubblewrap bwrap "the plugin sandbox"
exec bash "$here/apt_install.sh" passt pasta "network: loopback plugins' own network"
