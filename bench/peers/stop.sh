#!/usr/bin/env bash
# stop.sh: stop the brokers that bench/peers/start.sh started, by PID file only (with a
# start-time check against PID reuse), never by name.
#   bench/peers/stop.sh [NAME...]     (default: every PID file in $PEERS_RUN)
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib.sh"
PEERS_RUN=${PEERS_RUN:-/tmp/ringmq-peers-$(id -u)}
names=("$@")
if ((${#names[@]} == 0)); then
  for f in "$PEERS_RUN"/*.pid; do [[ -e $f ]] && names+=("$(basename "$f" .pid)"); done
fi
for n in "${names[@]}"; do
  if [[ -f $PEERS_RUN/$n.pid ]]; then
    stop_broker "$PEERS_RUN" "$n"
    echo "$n: stopped"
  fi
  [[ -f $PEERS_RUN/ports.env ]] && sed -i "/^${n^^}_PID=/d" "$PEERS_RUN/ports.env"
done
