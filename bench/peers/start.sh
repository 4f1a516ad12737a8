#!/usr/bin/env bash
# start.sh: install (if missing) and start peer brokers on loopback, each on free ports,
# for runs by hand; bench/compare.sh does this itself, one broker at a time.
#
#   bench/peers/start.sh [NAME...]      NAME: mosquitto nats rumqttd ringmq (default: the
#                                       three peers); ringmq needs RINGMQ_BIN or target/
#   bench/peers/stop.sh                 stops them (by PID file, never by name)
#
# Writes $PEERS_RUN (default /tmp/ringmq-peers-$(id -u)): NAME.pid, NAME.broker.log, the
# configs, and ports.env, one line per broker:
#   NAME_PID=… NAME_TCP=… NAME_WS=… (and RUMQTTD_V5, RINGMQ_METRICS)
# The WebSocket URL is ws://127.0.0.1:$NAME_WS/mqtt for every broker.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib.sh"
PEERS_RUN=${PEERS_RUN:-/tmp/ringmq-peers-$(id -u)}
names=("$@")
((${#names[@]})) || names=(mosquitto nats rumqttd)
mkdir -p "$PEERS_RUN" "$PEERS_CACHE"
peers=()
for n in "${names[@]}"; do [[ $n == ringmq ]] || peers+=("$n"); done
((${#peers[@]})) && { peers_install "${peers[@]}" || true; }
raise_nofile
rc=0
for n in "${names[@]}"; do
  if [[ -f $PEERS_RUN/$n.pid ]] && kill -0 "$(cat "$PEERS_RUN/$n.pid")" 2>/dev/null; then
    echo "$n already running (pid $(cat "$PEERS_RUN/$n.pid")), see $PEERS_RUN/ports.env"
    continue
  fi
  free_port tcp && free_port ws || exit 1
  up=${n^^}
  extra=
  case $n in
    mosquitto) start_mosquitto "$PEERS_RUN" "$tcp" "$ws" ;;
    nats) start_nats "$PEERS_RUN" "$tcp" "$ws" ;;
    rumqttd)
      free_port v5 || exit 1
      start_rumqttd "$PEERS_RUN" "$tcp" "$v5" "$ws"
      extra=" RUMQTTD_V5=$v5"
      ;;
    ringmq)
      root=$(cd "$here/../.." && pwd)
      free_port metrics || exit 1
      start_ringmq "$PEERS_RUN" "${RINGMQ_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/ringmq}" \
        "$tcp" "$ws" "$metrics"
      extra=" RINGMQ_METRICS=$metrics"
      ;;
    *) echo "unknown broker $n" >&2; rc=1; continue ;;
  esac || { echo "$n did not start, see $PEERS_RUN/$n.broker.log" >&2; rc=1; continue; }
  line="${up}_PID=$BROKER_PID ${up}_TCP=$tcp ${up}_WS=$ws$extra"
  { grep -v "^${up}_PID=" "$PEERS_RUN/ports.env" 2>/dev/null; echo "$line"; } >"$PEERS_RUN/ports.env.new"
  mv "$PEERS_RUN/ports.env.new" "$PEERS_RUN/ports.env"
  echo "$n: $line"
done
exit $rc
