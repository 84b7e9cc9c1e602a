#!/usr/bin/env bash
# Installs every Debian 12 package iptkit needs to build, test and benchmark. Run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
  build-essential cmake ninja-build pkg-config git \
  libgtest-dev libgmock-dev libbenchmark-dev \
  nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev \
  libxtables-dev libnftnl-dev libmnl-dev \
  iptables ipset nftables nfacct iproute2 util-linux procps groff-base \
  python3 python3-iptables python3-yaml python3-jsonschema \
  libsqlite3-dev libssl-dev openssl libcpp-httplib-dev prometheus curl
