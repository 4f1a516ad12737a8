#!/usr/bin/env bash
# restart.sh: how long ringmq takes to come back with many persistent sessions and
# queued messages, and what they cost in memory and on disk.
#
#   bench/restart.sh [--dir DATA_DIR] [--sessions N] [--batch N] [--queued N]
#                    [--restart-only]
#
# 1. N persistent sessions (MQTT 3.1.1, clean session off), each subscribed to one topic,
#    made by `ringmq-swarm idle --persistent --subscribe-own` in batches of --batch
#    clients (each batch connects, subscribes to `rs/<i>`, i < batch, and leaves): the
#    topic `rs/<i>` has N / batch subscribers.
# 2. About --queued messages queued for them while they are away: clean-session
#    `ringmq-swarm pairs` clients on the same topics publish QoS 1 messages (each fans
#    out to the N / batch offline sessions of its topic, stored once per shard).
# 3. ringmq is stopped (SIGTERM) and started again on the same data directory: the time
#    from its start to its "listening" line, its RSS, and the data directory's size, per
#    session and per queued message. Then the same after `kill -9`.
#
# --restart-only skips 1 and 2: the restarts of step 3 on the data directory an earlier
# run left.
#
# The data directory defaults to /dev/shm (tmpfs: this machine's disk is small and
# shared; the recovery reads the files through the page cache either way, as it would
# after a restart without a reboot).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=peers/lib.sh
source "$here/peers/lib.sh"

data=/dev/shm/ringmq-restart sessions=1000000 batch=15000 queued=10000000 fill=1
while (($#)); do
  case $1 in
    --dir) data=${2:?}; shift ;;
    --sessions) sessions=${2:?}; shift ;;
    --batch) batch=${2:?}; shift ;;
    --queued) queued=${2:?}; shift ;;
    --restart-only) fill=0 ;;
    -h | --help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "restart.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
ringmq_bin=${RINGMQ_BIN:-$root/target/release/ringmq}
swarm_bin=${SWARM_BIN:-$root/target/release/ringmq-swarm}
raise_nofile
logs=$data.logs
if ((fill)); then
  rm -rf "$data" "$logs"
fi
mkdir -p "$data" "$logs"
src=127.88.0.1-127.88.0.16

free_port tcp && free_port metrics || exit 1
start() {
  rm -f "$logs/ringmq.$1.log"
  local t0=$EPOCHREALTIME
  "$ringmq_bin" --mqtt "127.0.0.1:$tcp" --ws none --http "127.0.0.1:$metrics" \
    --data-dir "$data/data" >"$logs/ringmq.$1.log" 2>&1 &
  pid=$!
  until grep -q ' listening: ' "$logs/ringmq.$1.log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      # Another process took a port meanwhile (the machine is shared): other ports.
      if grep -q 'Address already in use' "$logs/ringmq.$1.log"; then
        free_port tcp && free_port metrics || exit 1
        start "$1"
        return
      fi
      echo "ringmq died:"
      cat "$logs/ringmq.$1.log"
      exit 1
    fi
    sleep 0.05
  done
  started_s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
}
rss_mib() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status"; }
metric() { curl -s "http://127.0.0.1:$metrics/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }

restarts() {
  start graceful
  rss_graceful=$(rss_mib)
  rec_sessions=$(metric ringmq_recovered_sessions)
  rec_messages=$(metric ringmq_recovered_messages)
  rec_ms=$(metric ringmq_recovery_ms)
  graceful_s=$started_s
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null
  start killed
  killed_s=$started_s
  rss_killed=$(rss_mib)
  kill -TERM "$pid"
  wait "$pid"
}

if ((!fill)); then
  restarts
  cat <<OUT
recovered            $rec_sessions sessions, $rec_messages deliveries in queues and in flight
data directory       $(du -sb "$data/data" | awk '{print $1}') B
restart (SIGTERM)    listening ${graceful_s}s after start (recovery ${rec_ms} ms summed over shards), RSS $rss_graceful MiB
restart (kill -9)    listening ${killed_s}s after start, RSS $rss_killed MiB
OUT
  exit 0
fi

start fill
made=0 b=0
while ((made < sessions)); do
  n=$((sessions - made < batch ? sessions - made : batch))
  "$swarm_bin" idle --target "tcp://127.0.0.1:$tcp" -n "$n" --duration 0.2 --persistent --qos 1 \
    --subscribe-own --topic rs --client-id-prefix "s$b" --source-addrs "$src" \
    --max-pending 256 -q >"$logs/idle.$b.txt" 2>&1 || { echo "batch $b failed"; cat "$logs/idle.$b.txt"; }
  made=$((made + n)) b=$((b + 1))
done
sleep 1
rss_sessions=$(rss_mib)
bytes_sessions=$(du -sb "$data/data" | awk '{print $1}')
per_topic=$(( (sessions + batch - 1) / batch ))
messages=$(( (queued + per_topic - 1) / per_topic ))
rate=20000
secs=$(awk -v m="$messages" -v r="$rate" 'BEGIN { printf "%.1f", m / r }')
"$swarm_bin" pairs --target "tcp://127.0.0.1:$tcp" -n "$batch" --qos 1 --rate "$rate" \
  --duration "$secs" --warmup 0 --drain 30 --topic rs --client-id-prefix fill \
  --source-addrs "$src" --max-pending 256 -q >"$logs/pairs.txt" 2>&1
sleep 2
rss_filled=$(rss_mib)
kill -TERM "$pid"
wait "$pid"
bytes=$(du -sb "$data/data" | awk '{print $1}')

restarts
q=${rec_messages:-1}
cat <<OUT
sessions             $sessions made (one subscription each, $per_topic per topic rs/<i>); $rec_sessions recovered
published            $(grep -E '^published' "$logs/pairs.txt")
queued (recovered)   $q deliveries in queues and in flight
data directory       $bytes_sessions B with the sessions only: $(awk -v b="$bytes_sessions" -v s="$sessions" 'BEGIN { printf "%.0f", b / s }') B per session
                     $bytes B with the messages: $(awk -v b="$bytes" -v a="$bytes_sessions" -v q="$q" 'BEGIN { printf "%.1f", (b - a) / q }') B per queued message
RSS                  $rss_sessions MiB with the sessions ($(awk -v r="$rss_sessions" -v s="$sessions" 'BEGIN { printf "%.0f", r * 1048576 / s }') B per session, process included), $rss_filled MiB with the messages ($(awk -v r="$rss_filled" -v a="$rss_sessions" -v q="$q" 'BEGIN { printf "%.0f", (r - a) * 1048576 / q }') B per queued message)
restart (SIGTERM)    listening ${graceful_s}s after start (recovery ${rec_ms} ms summed over shards), RSS $rss_graceful MiB
restart (kill -9)    listening ${killed_s}s after start, RSS $rss_killed MiB
logs                 $logs
OUT
