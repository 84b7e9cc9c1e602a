#!/usr/bin/env bash
# Set everything up, build, and run all tests: unit tests and the integration tests, which create their own
# network namespaces and never touch the host's firewall. Run as root (integration tests skip otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
ctest --preset release -j 2 --timeout 900
