#!/bin/bash
# Runs the already built iptkitd benchmark as root and prints its Markdown report on stdout (progress on stderr).
# Builds nothing. The benchmark creates its own network namespaces (iptkit-bench-<pid>-<variant>-daemon|loop), a
# temporary state directory (/tmp/iptkit-bench-<pid>-*) and one iptkitd at a time, and removes them; this script
# removes whatever is left if the binary dies anyway (the daemon itself dies with it: PR_SET_PDEATHSIG).
#
#   cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release && \
#     cmake --build build/release --target iptkitd iptkitd_bench
#   sudo bench/daemon_run.sh build/release/bench/iptkitd_bench [--variants nft,legacy] [--nft-backend nft|native] \
#     [--preload 10000] \
#     [--adds 10000] [--clients 64] [--loop-adds N] [--ttl-adds 2000] [--iptkitd PATH]
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 PATH/TO/iptkitd_bench [iptkitd_bench options...]" >&2
  exit 2
fi
bin=$1
shift
if [[ $EUID -ne 0 ]]; then
  echo "$0: must run as root (the benchmark creates network namespaces)" >&2
  exit 2
fi
if [[ ! -x $bin ]]; then
  echo "$0: $bin is not an executable; build the iptkitd and iptkitd_bench targets first" >&2
  exit 2
fi

"$bin" "$@" &
pid=$!
# A background job of a non-interactive shell ignores SIGINT, so forward interruptions as SIGTERM (the binary
# kills its daemon and deletes its namespaces on SIGTERM).
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM HUP
rc=0
wait "$pid" || rc=$?
while kill -0 "$pid" 2>/dev/null; do
  rc=0
  wait "$pid" || rc=$?
done
trap - INT TERM HUP

# A daemon started by this run serves one of its namespaces: --netns iptkit-bench-<pid>-...
for dpid in $(pgrep -x iptkitd || true); do
  if tr '\0' ' ' <"/proc/$dpid/cmdline" 2>/dev/null | grep -q -- "--netns iptkit-bench-${pid}-"; then
    echo "$0: killing leftover iptkitd $dpid" >&2
    kill -KILL "$dpid" 2>/dev/null || true
  fi
done
for ns in $(ip netns list | awk '{print $1}' | grep -E "^iptkit-bench-${pid}-" || true); do
  echo "$0: deleting leftover namespace $ns" >&2
  ip netns del "$ns" || true
done
for dir in /tmp/iptkit-bench-"${pid}"-*; do
  [[ -d $dir ]] || continue
  echo "$0: removing leftover state directory $dir" >&2
  rm -rf -- "$dir"
done
exit "$rc"
