#!/usr/bin/env bash
# `cmake --install` puts the CLI, the daemon, their man pages and the bash completion in place, and they work:
# the pages render without groff warnings, the completion completes from the installed iptkit's help.
# Usage: install_test.sh BUILD_DIR
set -euo pipefail
build=$1
prefix=$(mktemp -d /tmp/iptkit-install-test-XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null

fail() { echo "FAIL: $*" >&2; exit 1; }
for f in bin/iptkit share/man/man8/iptkit.8 share/man/man8/iptkitd.8 share/bash-completion/completions/iptkit; do
  [[ -f $prefix/$f ]] || fail "$f was not installed"
done
"$prefix/bin/iptkit" --version | grep -q '^iptkit ' || fail "installed iptkit does not run"

for page in iptkit iptkitd; do
  warnings=$(groff -man -ww -z "$prefix/share/man/man8/$page.8" 2>&1) || fail "groff failed on $page.8"
  [[ -z $warnings ]] || fail "groff warns about $page.8: $warnings"
  if command -v man >/dev/null; then
    text=$(MANWIDTH=100 man -l "$prefix/share/man/man8/$page.8" 2>/dev/null)
    grep -q "SEE ALSO" <<<"$text" || fail "man -l $page.8 shows no SEE ALSO section"
  fi
done

# The completion, as bash runs it, against the installed binary.
out=$(PATH="$prefix/bin:$PATH" bash -c '
  source "$1"
  t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _iptkit; echo "${COMPREPLY[*]}"; }
  t iptkit ap; t iptkit -t n; t iptkit append --un; t iptkit chain delete --c; t iptkit list --line; t iptkit chain po
' _ "$prefix/share/bash-completion/completions/iptkit")
expected=$'append apply\nnat\n--unique\n--cascade\n--line-numbers\npolicy'
[[ $out == "$expected" ]] || fail "completion gave:"$'\n'"$out"$'\n'"expected:"$'\n'"$expected"
echo "install test passed"
