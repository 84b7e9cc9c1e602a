#!/usr/bin/env bash
# Fails when a file includes a header of a layer above its own (docs/architecture.md, "Layers"). The layers, bottom
# up: base < model < dialect < json < backend < txn, store < service < rest, fleet < tools. txn and store are side
# by side and may not include each other; so are rest (the HTTP adapter) and fleet (the etcd agent, docs/fleet.md).
# Public headers belong to the layer that implements them: iptkit/status.h is base; model.h, backend_info.h,
# transaction.h, desired.h and set_types.h are model (value types); dialect.h is dialect; json.h is json;
# firewall.h is txn; ipset.h is ipset, a layer beside backend (libipset; uses base and model only); c/iptkit.h is
# capi, the C ABI beside tools (it uses the public C++ API only). Tests, benchmarks, fuzzers and examples sit on top and are not checked.
# Usage: check_layering.sh [SOURCE_ROOT]   (prints every upward include as FILE:LINE: ... and exits 1)
set -euo pipefail
root=${1:-$(dirname "$0")/../..}
cd "$root"

rank_of_layer() {
  case "$1" in
    base) echo 0 ;; model) echo 1 ;; dialect) echo 2 ;; json) echo 3 ;; backend | ipset) echo 4 ;;
    txn | store) echo 5 ;; service) echo 6 ;; rest | fleet) echo 7 ;; tools | capi) echo 8 ;;
    *) echo "" ;;
  esac
}

# The layer of an included path, or nothing for headers outside the project (system, third party).
layer_of_include() {
  case "$1" in
    iptkit/status.h) echo base ;;
    iptkit/model.h | iptkit/backend_info.h | iptkit/transaction.h | iptkit/desired.h | iptkit/set_types.h) echo model ;;
    iptkit/dialect.h) echo dialect ;;
    iptkit/json.h) echo json ;;
    iptkit/firewall.h) echo txn ;;
    iptkit/ipset.h) echo ipset ;;
    iptkit/c/iptkit.h) echo capi ;;
    iptkit/*) echo "unknown-public" ;;
    src/*/*) local rest=${1#src/}; echo "${rest%%/*}" ;;
    tools/*) echo tools ;;
    *) echo "" ;;
  esac
}

# The layer a file lives in.
layer_of_file() {
  case "$1" in
    include/iptkit/*) layer_of_include "${1#include/}" ;;
    src/*/*) local rest=${1#src/}; echo "${rest%%/*}" ;;
    tools/*) echo tools ;;
  esac
}

violations=0
files=$( { find include/iptkit src tools -type f \( -name '*.h' -o -name '*.cc' \) 2>/dev/null || true; } | sort)
for file in $files; do
  from=$(layer_of_file "$file")
  from_rank=$(rank_of_layer "$from")
  if [ -z "$from_rank" ]; then
    echo "$file: in no known layer (add its folder to tests/style/check_layering.sh)"
    violations=$((violations + 1))
    continue
  fi
  while IFS=: read -r line include; do
    [ -n "$line" ] || continue
    to=$(layer_of_include "$include")
    [ -n "$to" ] || continue
    if [ "$to" = "unknown-public" ]; then
      echo "$file:$line: includes $include, a public header of no known layer (add it to tests/style/check_layering.sh)"
      violations=$((violations + 1))
      continue
    fi
    to_rank=$(rank_of_layer "$to")
    if [ -z "$to_rank" ]; then
      echo "$file:$line: includes $include from src/$to, a folder of no known layer"
      violations=$((violations + 1))
    elif [ "$to_rank" -gt "$from_rank" ] || { [ "$to_rank" -eq "$from_rank" ] && [ "$to" != "$from" ]; }; then
      echo "$file:$line: $from includes $include ($to): upward or sideways include"
      violations=$((violations + 1))
    fi
  done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p;t;s/.*//p' "$file" |
             awk 'NF { print NR ":" $0 }')
done
if [ "$violations" -gt 0 ]; then
  echo "check_layering: $violations include(s) against the layering" >&2
  exit 1
fi
echo "check_layering: $(echo "$files" | wc -l) files, no upward includes"
