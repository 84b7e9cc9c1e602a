#!/usr/bin/env bash
# The main job: set everything up, build, and show this machine's current ruleset (IPv4 and IPv6) as JSON.
# Read-only: it changes no firewall rule. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
./build/release/tools/iptkit/iptkit info
./build/release/tools/iptkit/iptkit -4 --json list
./build/release/tools/iptkit/iptkit -6 --json list
