#!/usr/bin/env bash
# Installs every Debian 12 package iptkit needs to build, test and benchmark. Run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
  build-essential cmake ninja-build pkg-config git \
  libgtest-dev libgmock-dev libbenchmark-dev \
  nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev \
  libxtables-dev libnftnl-dev libmnl-dev libip4tc-dev libip6tc-dev \
  iptables ipset nftables nfacct iproute2 util-linux procps groff-base clang-format \
  python3 python3-iptables python3-yaml python3-jsonschema \
  libsqlite3-dev libssl-dev openssl libcpp-httplib-dev prometheus curl \
  libipset-dev abigail-tools python3-pytest etcd-server etcd-client \
  lld
# The OpenAPI linter of tests/rest/openapi_lint.sh: Redocly CLI from npm (2.x needs Node.js 20; 1.34 runs on
# Debian 12's Node.js 18).
command -v npm >/dev/null 2>&1 || apt-get install -y --no-install-recommends nodejs npm
if ! command -v redocly >/dev/null 2>&1; then
  if [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ]; then
    npm install -g @redocly/cli@2.77.0
  else
    npm install -g @redocly/cli@1.34.20
  fi
fi
# The dashboard's end-to-end tests (tests/ui): Debian's Chromium, and playwright-core pinned in
# tests/ui/package-lock.json (npm is used only by the tests; the dashboard itself is plain files).
apt-get install -y --no-install-recommends chromium
npm ci --prefix "$(dirname "$0")/../tests/ui" --no-audit --no-fund
