#!/usr/bin/env bash
# Runs a dashboard test file with node's test runner, after checking what it needs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -d "$here/node_modules/playwright-core" ]; then
  echo "tests/ui: playwright-core is not installed: run scripts/install-deps.sh (npm ci --prefix tests/ui)" >&2
  exit 1
fi
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "tests/ui: ${CHROMIUM:-/usr/bin/chromium} is missing: run scripts/install-deps.sh (Debian package chromium)" >&2
  exit 1
fi
exec node --test --test-reporter=spec "$@"
