#!/usr/bin/env bash
# The ABI of libiptkit.so (functions, their parameter and return types, the types those reach) equals the baseline
# src/capi/abi/libiptkit.abi, compared with abidiff (Debian abigail-tools). Any difference fails: a compatible
# addition goes with a new symbol version node (src/capi/libiptkit.map) and a new baseline (--update).
# Usage: check_abi.sh LIBIPTKIT_SO [--update]
set -euo pipefail
lib=$1
here=$(cd "$(dirname "$0")" && pwd)
baseline=$here/abi/libiptkit.abi
command -v abidw >/dev/null || { echo "abidw not found: apt-get install abigail-tools" >&2; exit 1; }
current=$(mktemp /tmp/iptkit-abi-XXXXXX.abi)
trap 'rm -f "$current"' EXIT
abidw --no-corpus-path --no-comp-dir-path --no-show-locs --exported-interfaces-only --drop-private-types --headers-dir "$here/../../include/iptkit/c" "$lib" >"$current"
if [[ ${2:-} == --update ]]; then
  cp "$current" "$baseline"
  chmod 644 "$baseline"
  echo "baseline updated: $baseline"
  exit 0
fi
set +e
report=$(abidiff "$baseline" "$current" 2>&1)
rc=$?
set -e
if [[ $rc -ne 0 ]]; then
  echo "FAIL: the ABI of $lib differs from $baseline (abidiff exit $rc):" >&2
  echo "$report" >&2
  exit 1
fi
echo "abi ok: $(grep -c '<elf-symbol ' "$current") symbols as in the baseline"
