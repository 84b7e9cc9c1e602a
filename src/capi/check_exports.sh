#!/usr/bin/env bash
# libiptkit.so exports only the C ABI: `nm -D --defined-only` lists iptkit_* functions at the version node
# IPTKIT_<major>.<minor> (and the node itself), nothing else; every function the header declares is exported.
# Usage: check_exports.sh LIBIPTKIT_SO IPTKIT_H
set -euo pipefail
lib=$1
header=$2
fail() { echo "FAIL: $*" >&2; exit 1; }

soname=$(objdump -p "$lib" | awk '$1 == "SONAME" { print $2 }')
[[ $soname =~ ^libiptkit\.so\.[0-9]+$ ]] || fail "SONAME is '$soname', expected libiptkit.so.N"

symbols=$(nm -D --defined-only "$lib")
[[ -n $symbols ]] || fail "$lib exports nothing"
bad=$(awk '!(($2 == "T" && $3 ~ /^iptkit_[a-z0-9_]+@@IPTKIT_[0-9]+\.[0-9]+$/) || ($2 == "A" && $3 ~ /^IPTKIT_[0-9]+\.[0-9]+$/))' \
  <<<"$symbols")
[[ -z $bad ]] || fail "symbols outside the C ABI are exported:"$'\n'"$bad"

exported=$(awk '$2 == "T" { sub(/@@.*/, "", $3); print $3 }' <<<"$symbols" | sort)
declared=$(grep -oE '^[a-z].*\b(iptkit_[a-z0-9_]+)\(' "$header" | grep -oE 'iptkit_[a-z0-9_]+\($' | tr -d '(' | sort -u)
missing=$(comm -13 <(echo "$exported") <(echo "$declared"))
[[ -z $missing ]] || fail "declared in $header but not exported:"$'\n'"$missing"
extra=$(comm -23 <(echo "$exported") <(echo "$declared"))
[[ -z $extra ]] || fail "exported but not declared in $header:"$'\n'"$extra"
echo "exports ok: $(wc -l <<<"$exported") functions, SONAME $soname"
