#!/usr/bin/env bash
# The style checks can fail: each runs on a small tree made to break it and must exit non-zero naming the file.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp/layering/src/model" "$tmp/layering/src/txn" "$tmp/layering/include/iptkit"
printf '#include "iptkit/model.h"\n#include "src/txn/planner.h"\n' >"$tmp/layering/src/model/rule.cc"
printf '#include "src/store/store.h"\n' >"$tmp/layering/src/txn/plan.cc"
printf '#include "iptkit/firewall.h"\n' >"$tmp/layering/include/iptkit/json.h"
if out=$("$here/check_layering.sh" "$tmp/layering" 2>&1); then
  echo "FAIL: check_layering passed a tree with upward includes"; exit 1
fi
for want in "src/model/rule.cc:2" "src/txn/plan.cc:1" "include/iptkit/json.h:1"; do
  grep -q "^$want:" <<<"$out" || { echo "FAIL: check_layering did not name $want:"; echo "$out"; exit 1; }
done

mkdir -p "$tmp/format/src/base"
cp "$here/../../.clang-format" "$tmp/format/"
printf 'int  f( int x ){return x;}\n' >"$tmp/format/src/base/ugly.cc"
if out=$("$here/check_format.sh" "$tmp/format" 2>&1); then
  echo "FAIL: check_format passed an unformatted file"; exit 1
fi
grep -q "src/base/ugly.cc" <<<"$out" || { echo "FAIL: check_format did not name the file:"; echo "$out"; exit 1; }
echo "style self-test: both checks fail where they must"
