#!/usr/bin/env bash
# `cmake --install` puts the CLI, the daemon, their man pages and the bash completion in place, and they work:
# the pages render without groff warnings, the completion completes from the installed iptkit's help. The Python
# package is installed with the installed library's path and works without IPTKIT_LIBRARY.
# The C ABI: headers, libiptkit.so.1 / libiptkit.a / libiptkit++.a and iptkit.pc are installed; the C examples build
# against them with pkg-config (ban_ip with `pkg-config --static`); as root they run in a private namespace, and
# ban_ip, installed setuid root and run by nobody with XTABLES_LIBDIR & co. pointing at a canary extension, bans
# the address without loading the canary. port_knock is checked with real knocks from a second namespace over a
# veth pair.
# Usage: install_test.sh BUILD_DIR
set -euo pipefail
build=$1
prefix=$(mktemp -d /tmp/iptkit-install-test-XXXXXX)
netns=""
client_ns=""
listener=""
cleanup() {
  [[ -z $listener ]] || kill "$listener" 2>/dev/null || true
  [[ -z $client_ns ]] || ip netns delete "$client_ns" 2>/dev/null || true
  [[ -z $netns ]] || ip netns delete "$netns" 2>/dev/null || true
  rm -rf "$prefix"
}
trap cleanup EXIT
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

# ---- The C ABI ----
source_dir=$(cd "$(dirname "$0")/../.." && pwd)
for f in include/iptkit/c/iptkit.h include/iptkit/firewall.h include/iptkit/status.h sbin/iptkitd; do
  [[ -f $prefix/$f ]] || fail "$f was not installed"
done
pc=$(find "$prefix" -name iptkit.pc)
[[ -n $pc ]] || fail "iptkit.pc was not installed"
libdir=$(dirname "$(dirname "$pc")")
for f in libiptkit.so.1 libiptkit.so libiptkit.a libiptkit++.a; do
  [[ -e $libdir/$f ]] || fail "$libdir/$f was not installed"
done
export PKG_CONFIG_PATH=$libdir/pkgconfig
[[ $(pkg-config --variable=libdir iptkit) -ef $libdir ]] || fail "iptkit.pc's libdir is not $libdir"
# (nm's output is read whole first: grep -q would stop early and fail the pipe with SIGPIPE under pipefail.)
exports=$(nm -D --defined-only "$libdir/libiptkit.so.1")
grep -q ' T iptkit_open@@IPTKIT_1.0$' <<<"$exports" || fail "libiptkit.so.1 does not export iptkit_open@@IPTKIT_1.0"
grep -q ' T iptkit_txn_set_family@@IPTKIT_1.1$' <<<"$exports" ||
  fail "libiptkit.so.1 does not export iptkit_txn_set_family@@IPTKIT_1.1"

bin=$prefix/examples
mkdir -p "$bin"
for example in list_rules port_knock; do
  # shellcheck disable=SC2046
  cc -std=c11 -Wall -Wextra -Werror -o "$bin/$example" "$source_dir/examples/c/$example.c" \
    $(pkg-config --cflags --libs iptkit) -Wl,-rpath,"$libdir" || fail "examples/c/$example.c does not build"
done
# Statically: libiptkit.a and what `pkg-config --static` says it needs (Libs.private), nothing else.
static_libs=" $(pkg-config --static --libs iptkit) "
static_libs=${static_libs/ -liptkit / -l:libiptkit.a }
# shellcheck disable=SC2046,SC2086
cc -std=c11 -Wall -Wextra -Werror -o "$bin/ban_ip" "$source_dir/examples/c/ban_ip.c" \
  $(pkg-config --cflags iptkit) $static_libs || fail "examples/c/ban_ip.c does not link with pkg-config --static"
if readelf -d "$bin/ban_ip" | grep -q 'libiptkit'; then fail "ban_ip is linked against libiptkit.so"; fi
if "$bin/list_rules" --bogus >/dev/null 2>&1; then fail "list_rules accepted --bogus"; fi
# The C++ API: the installed headers and libiptkit++.a are enough for the C++ example.
# shellcheck disable=SC2046
c++ -std=c++20 -o "$bin/list_rules_cxx" "$source_dir/examples/list_rules.cc" $(pkg-config --cflags iptkit) \
  "$libdir/libiptkit++.a" $(pkg-config --static --libs-only-l iptkit | sed 's/-liptkit //') ||
  fail "examples/list_rules.cc does not build against the installed headers and libiptkit++.a"

# The Python package, next to the library it records.
pkg=$(find "$prefix" -path '*/dist-packages/iptkit/__init__.py')
[[ -n $pkg ]] || fail "the iptkit Python package was not installed"
pydir=$(dirname "$(dirname "$pkg")")
grep -qx "LIBRARY = \"$libdir/libiptkit.so.1\"" "$pydir/iptkit/_installed.py" ||
  fail "the installed package does not record $libdir/libiptkit.so.1: $(cat "$pydir/iptkit/_installed.py")"
out=$(env -u IPTKIT_LIBRARY PYTHONPATH="$pydir" /usr/bin/python3 -c \
  'import iptkit; print(iptkit.__file__); print(iptkit._lib._name); print(iptkit.library_version())') ||
  fail "the installed Python package does not load: $out"
[[ $(sed -n 1p <<<"$out") == "$pkg" && $(sed -n 2p <<<"$out") == "$libdir/libiptkit.so.1" ]] ||
  fail "python imported the package or the library from elsewhere: $out"

if [[ $(id -u) -ne 0 ]]; then
  echo "install test passed (the examples' runs in a namespace need root: skipped)"
  exit 0
fi
netns=iptkit-install-$$
ip netns add "$netns"
in_ns() { ip netns exec "$netns" "$@"; }

out=$("$bin/list_rules" --netns "$netns" --backend nft filter) || fail "list_rules failed: $out"
grep -qx 'filter INPUT ACCEPT' <<<"$out" || fail "list_rules printed: $out"
"$bin/port_knock" --netns "$netns" install 2222 7001 7002 >/dev/null || fail "port_knock install failed"
out=$("$bin/list_rules" --netns "$netns" filter)
[[ $(grep -c '^filter KNOCK-IN [0-9]' <<<"$out") -eq 5 ]] || fail "port_knock installed:"$'\n'"$out"
grep -q '^filter INPUT 1 \[0:0\] -p tcp -m comment --comment "\?iptkit:knock:' <<<"$out" || fail "no hook rule: $out"
# Real knocks: a client namespace reaches the server namespace over a veth pair; port 2222 has a listener.
client_ns=iptkit-install-client-$$
ip netns add "$client_ns"
ip link add iptkit-k0 netns "$netns" type veth peer name iptkit-k1 netns "$client_ns"
in_ns ip addr add 10.99.0.1/24 dev iptkit-k0
in_ns ip link set iptkit-k0 up
ip netns exec "$client_ns" ip addr add 10.99.0.2/24 dev iptkit-k1
ip netns exec "$client_ns" ip link set iptkit-k1 up
ip netns exec "$netns" /usr/bin/python3 -c '
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.99.0.1", 2222))
s.listen(16)
while True:
    s.accept()[0].close()
' </dev/null >/dev/null 2>&1 &
listener=$! # ip netns exec execs python: this is the listener itself
# connect PORT TIMEOUT: exit 0 when a TCP connection to the server is made.
connect() {
  ip netns exec "$client_ns" /usr/bin/python3 -c '
import socket, sys
try:
    socket.create_connection(("10.99.0.1", int(sys.argv[1])), timeout=float(sys.argv[2])).close()
except OSError:
    sys.exit(1)
' "$1" "$2"
}
# Without the listener's port dropping SYNs this would prove nothing: the first check waits until the listener is up
# by opening the port without the knock rules in the way.
in_ns iptables-nft -I INPUT -p tcp --dport 2222 -j ACCEPT
for _ in $(seq 50); do connect 2222 1 && break; sleep 0.1; done
connect 2222 1 || fail "port_knock test: the listener on 10.99.0.1:2222 is not reachable"
in_ns iptables-nft -D INPUT -p tcp --dport 2222 -j ACCEPT
if connect 2222 1; then fail "port_knock: 2222 is open without a knock"; fi
connect 7002 0.3 || true # the second knock alone opens nothing
if connect 2222 1; then fail "port_knock: 2222 opened after the second knock alone"; fi
connect 7001 0.3 || true
connect 7002 0.3 || true
connect 2222 2 || fail "port_knock: 2222 stays closed after knocking on 7001 then 7002"
"$bin/port_knock" --netns "$netns" remove >/dev/null || fail "port_knock remove failed"
out=$("$bin/list_rules" --netns "$netns" filter)
if grep -q KNOCK <<<"$out"; then fail "port_knock remove left: $out"; fi

# ban_ip as a real setuid-root binary run by nobody, with the xtables search path variables pointing at a canary.
chmod 755 "$prefix" "$bin"
chown root:root "$bin/ban_ip"
chmod 4755 "$bin/ban_ip"
canary=$prefix/canary
mkdir -p "$canary"
chmod 1777 "$canary"
printf '%s\n' '#include <stdio.h>' \
  '__attribute__((constructor)) static void loaded(void) {' \
  "  FILE *f = fopen(\"$canary/LOADED\", \"a\");" \
  '  if (f) { fputs("canary loaded", f); fclose(f); }' \
  '}' >"$canary/canary.c"
cc -shared -fPIC -o "$canary/libxt_canary.so" "$canary/canary.c"
for name in libxt_set libxt_standard libxt_tcp libxt_udp libxt_comment libxt_recent libipt_standard libxt_SET; do
  cp "$canary/libxt_canary.so" "$canary/$name.so"
done
chmod 755 "$canary"/*.so
# Control: the canary is live (iptables itself loads it from XTABLES_LIBDIR).
in_ns env XTABLES_LIBDIR="$canary" iptables-nft -A INPUT -m set --match-set nosuch src -j DROP >/dev/null 2>&1 || true
[[ -f $canary/LOADED ]] || fail "control: iptables did not load the canary from XTABLES_LIBDIR"
rm -f "$canary/LOADED"

out=$(in_ns setpriv --reuid=65534 --regid=65534 --clear-groups \
  env XTABLES_LIBDIR="$canary" IPTABLES_LIB_DIR="$canary" IP6TABLES_LIB_DIR="$canary" "$bin/ban_ip" 192.0.2.9 2>&1) ||
  fail "setuid ban_ip run by nobody failed: $out"
grep -q 'banned 192.0.2.9 for 3600 s' <<<"$out" || fail "ban_ip printed: $out"
[[ ! -e $canary/LOADED ]] || fail "ban_ip loaded the canary from XTABLES_LIBDIR"
sets=$(in_ns ipset list iptkit-ban)
grep -Eq '^192\.0\.2\.9 timeout [0-9]+' <<<"$sets" || fail "192.0.2.9 is not in iptkit-ban with a timeout: $sets"
in_ns iptables-nft-save -t filter | grep -q -- '-A INPUT -m set --match-set iptkit-ban src -j DROP' ||
  fail "no DROP rule for iptkit-ban: $(in_ns iptables-nft-save -t filter)"
# Banning again refreshes the entry and adds no second rule.
in_ns setpriv --reuid=65534 --regid=65534 --clear-groups "$bin/ban_ip" 192.0.2.9 >/dev/null || fail "second ban failed"
[[ $(in_ns iptables-nft-save -t filter | grep -c 'match-set iptkit-ban') -eq 1 ]] || fail "the ban rule is doubled"
# Without the setuid bit nobody cannot ban; a host name is refused before any privilege is used.
chmod 755 "$bin/ban_ip"
if in_ns setpriv --reuid=65534 --regid=65534 --clear-groups "$bin/ban_ip" 192.0.2.10 >/dev/null 2>&1; then
  fail "ban_ip worked without the setuid bit"
fi
if "$bin/ban_ip" example.com >/dev/null 2>&1; then fail "ban_ip accepted a host name"; fi
echo "install test passed"
