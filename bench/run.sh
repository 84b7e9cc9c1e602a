#!/bin/bash
# Runs the already built iptkit benchmark as root and prints its Markdown report on stdout (progress on stderr).
# Builds nothing. The benchmark creates its own network namespaces (iptkit-bench-<pid>-<variant>-<size>) and
# deletes them; this script deletes any that are left if the binary dies anyway.
#
#   cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release && cmake --build build/release --target iptkit_bench
#   sudo bench/run.sh build/release/bench/iptkit_bench [--sizes 100,10000] [--variants nft,legacy] [--reps 30] ...
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 PATH/TO/iptkit_bench [iptkit_bench options...]" >&2
  exit 2
fi
bin=$1
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ $EUID -ne 0 ]]; then
  echo "$0: must run as root (the benchmark creates network namespaces)" >&2
  exit 2
fi
if [[ ! -x $bin ]]; then
  echo "$0: $bin is not an executable; build the iptkit_bench target first" >&2
  exit 2
fi
if [[ ! -x /usr/bin/python3 ]] || ! /usr/bin/python3 -c 'import iptc' 2>/dev/null; then
  echo "$0: python-iptables missing (apt-get install python3-iptables); its rows will show an error" >&2
fi

"$bin" --python /usr/bin/python3 --python-script "$here/pyiptc_bench.py" "$@" &
pid=$!
# A background job of a non-interactive shell ignores SIGINT, so forward interruptions as SIGTERM (the binary
# deletes its namespaces on SIGTERM).
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM HUP
rc=0
wait "$pid" || rc=$?
while kill -0 "$pid" 2>/dev/null; do
  rc=0
  wait "$pid" || rc=$?
done
trap - INT TERM HUP

for ns in $(ip netns list | awk '{print $1}' | grep -E "^iptkit-bench-${pid}-" || true); do
  echo "$0: deleting leftover namespace $ns" >&2
  ip netns del "$ns" || true
done
exit "$rc"
