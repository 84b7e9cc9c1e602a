#!/usr/bin/env bash
# The main job: set everything up, build, and run the daemon on 127.0.0.1:8080 (and /run/iptkitd.sock) with its
# SQLite store in /var/lib/iptkitd. The first run creates an admin token and prints it (only its hash is kept).
# The daemon serves this machine's own namespace; it changes no rule until a client asks it to. Run as root.
#   IPTKITD_LISTEN=127.0.0.1:9090 IPTKITD_STATE_DIR=/tmp/iptkitd scripts/run.sh    # other address / store
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
bin=./build/release/tools/iptkitd/iptkitd
state=${IPTKITD_STATE_DIR:-/var/lib/iptkitd}
listen=${IPTKITD_LISTEN:-127.0.0.1:8080}
socket=${IPTKITD_SOCKET:-/run/iptkitd.sock}
./build/release/tools/iptkit/iptkit info
if "$bin" token list --state-dir "$state" 2>/dev/null | grep -q $'^admin\tactive'; then
  echo "An admin token exists already (tokens are shown once). Another one:"
  echo "  $bin token create --name NAME --scope read --scope write --state-dir $state"
else
  token=$("$bin" token create --name admin --scope read --scope write --state-dir "$state")
  echo "First admin token (shown only now; keep it): $token"
  echo "  curl -H 'Authorization: Bearer $token' http://$listen/v1/ipv4"
fi
echo "Unix socket for root, no token needed: curl --unix-socket $socket http://iptkitd/v1/version"
exec "$bin" --listen "$listen" --socket "$socket" --socket-allow uid:0 --state-dir "$state"
