#!/usr/bin/env bash
# bench/api.sh — what the control plane costs the broker, side by side in one run.
#
#   bench/api.sh [clients|fanout|webhook|all]        (default all)
#
# clients  N connections held (ringmq-swarm idle, many loopback source addresses, one
#          shard per core): the answer time of GET /metrics,
#          GET /api/v1/clients (a page of 100, and of 1000) and GET /api/v1/sessions, each
#          asked ROUNDS times one after the other, as curl measures it.
# fanout   fan-out 1 → 1,000 subscribers, QoS 0, at full rate, ROUNDS runs without and
#          ROUNDS with 1,000 API publishes/s (examples/api_load) to topics nobody
#          subscribes to, interleaved, each on a freshly started broker: deliveries/s.
# webhook  a probe (1 publisher → 100 subscribers, QoS 1, 1,000 msg/s) while a second swarm
#          connects and closes 2,000 clients/s (3 webhook events each), on a broker with no
#          webhook and on one whose webhook receiver is down (a port nobody listens on),
#          interleaved: the probe's latency percentiles, and the events dropped (the
#          endpoint holds at most 10,000: --webhook-max-pending).
#
# Environment: RINGMQ_BIN, SWARM_BIN, LOAD_BIN (default: target/release/{ringmq,ringmq-swarm}
# and target/release/examples/api_load, built if missing), OUT (default /tmp/ringmq-api-bench),
# CONNS (clients; default 100000), ROUNDS (default 2), SRC (swarm source addresses,
# default 127.88.0.1-127.88.0.16), IDLE_PCT (before each run, wait up to 90 s for the
# machine to be this % idle over 3 s; default 60; the figure is printed with the run).
# Brokers listen on free loopback ports. Every broker and swarm this starts is stopped on
# exit.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=peers/lib.sh
source bench/peers/lib.sh

what=${1:-all}
target=${CARGO_TARGET_DIR:-target}
RINGMQ_BIN=${RINGMQ_BIN:-$target/release/ringmq}
SWARM_BIN=${SWARM_BIN:-$target/release/ringmq-swarm}
LOAD_BIN=${LOAD_BIN:-$target/release/examples/api_load}
OUT=${OUT:-/tmp/ringmq-api-bench}
CONNS=${CONNS:-100000}
ROUNDS=${ROUNDS:-2}
IDLE_PCT=${IDLE_PCT:-60}
SRC=${SRC:-127.88.0.1-127.88.0.16}
mkdir -p "$OUT"

# idle: waits for the machine to be IDLE_PCT % idle (at most 90 s); prints the idle share.
idle() {
  wait_idle "$IDLE_PCT" 90
  echo "idle $IDLE %"
}

if [[ ! -x $RINGMQ_BIN || ! -x $SWARM_BIN || ! -x $LOAD_BIN ]]; then
  cargo build --release -p ringmq -p ringmq-bench --bins >&2 || exit 1
  cargo build --release -p ringmq-bench --example api_load >&2 || exit 1
fi

say() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
pids=()
broker=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  [[ -n $broker ]] && kill "$broker" 2>/dev/null
  wait 2>/dev/null
}
trap cleanup EXIT

metric() { curl -s -m 5 "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v n="ringmq_$1" '$1 == n { print $2 }'; }
load() { awk '{ print $1 }' /proc/loadavg; }

# start_broker NAME ARGS...: a fresh ringmq on the fixed ports.
start_broker() {
  local name=$1; shift
  free_port MQTT_PORT || exit 1
  free_port HTTP_PORT || exit 1
  "$RINGMQ_BIN" --mqtt "127.0.0.1:$MQTT_PORT" --ws none --http "127.0.0.1:$HTTP_PORT" \
    --data-dir "$OUT/data-$name" "$@" >"$OUT/$name.broker.log" 2>&1 &
  broker=$!
  for _ in $(seq 1 100); do
    grep -q listening "$OUT/$name.broker.log" && return 0
    sleep 0.1
  done
  say "ringmq did not start: $(cat "$OUT/$name.broker.log")"
  exit 1
}

stop_broker() {
  kill -TERM "$broker" 2>/dev/null
  wait "$broker" 2>/dev/null
  broker=
  sleep 2
}

# times URL N: N answer times of GET URL in ms, one per line; an answer other than 200
# stops the benchmark.
times() {
  for _ in $(seq 1 "$2"); do
    curl -s -o "$OUT/last-answer" -m 10 -w '%{http_code} %{time_total}\n' "$1"
  done | awk -v url="$1" -v body="$OUT/last-answer" '
    $1 != 200 { getline b < body; print "GET " url " answered " $1 ": " b > "/dev/stderr"; exit 1 }
    { printf "%.1f\n", $2 * 1000 }'
}

# summary: p50 and max of numbers on stdin.
summary() { sort -n | awk '{ v[NR] = $1 } END { printf "p50 %s ms, max %s ms (n=%d)", v[int((NR + 1) / 2)], v[NR], NR }'; }

clients_bench() {
  # One shard per core: a shard opens lanes (rings with their own fixed-file tables)
  # for connections past one table.
  local shards
  shards=$(nproc)
  say "clients: $CONNS connections over $shards shards"
  start_broker clients --shards "$shards" --recv-buffers 256 --mesh-capacity 64
  "$SWARM_BIN" idle --target "tcp://127.0.0.1:$MQTT_PORT" -n "$CONNS" --duration 600 \
    --max-pending 256 --source-addrs "$SRC" --client-id-prefix held -q \
    >"$OUT/clients.swarm.txt" 2>&1 &
  pids+=($!)
  local held=0
  for _ in $(seq 1 600); do
    held=$(metric connections_current)
    [[ ${held:-0} -ge $CONNS ]] && break
    sleep 0.5
  done
  say "clients: $held connections held (load $(load))"
  sleep 5
  {
    echo "connections held: $held, shards: $shards, load average before: $(load)"
    for path in /metrics "/api/v1/clients" "/api/v1/clients?limit=1000" "/api/v1/sessions?limit=1000"; do
      times "http://127.0.0.1:$HTTP_PORT$path" 2 >/dev/null # warm the connection pool's path
      echo "GET $path: $(times "http://127.0.0.1:$HTTP_PORT$path" $((ROUNDS * 10)) | summary)"
    done
    local page
    page=$(curl -s -m 10 "http://127.0.0.1:$HTTP_PORT/api/v1/clients?limit=1000")
    echo "a page of 1000 clients: ${#page} bytes of JSON, $(grep -o '"client_id"' <<<"$page" | wc -l) clients, next: $(grep -o '"next":"[^"]*"' <<<"$page")"
  } | tee "$OUT/clients.txt"
  kill "${pids[-1]}" 2>/dev/null
  wait "${pids[-1]}" 2>/dev/null
  stop_broker
}

# thread_ticks PID: CPU clock ticks (user + system) of the process's shard threads and of
# its HTTP threads: "SHARD HTTP". The fan-out's cost is the shards'; the API's is mostly
# the HTTP threads'.
thread_ticks() {
  local shard=0 http=0 f name ticks
  for f in /proc/"$1"/task/*/stat; do
    read -r name ticks < <(awk '{ c = $0; sub(/^[^(]*\(/, "", c); n = c; sub(/\).*/, "", n);
      sub(/^[^)]*\) /, "", c); split(c, v, " "); print n, v[12] + v[13] }' "$f" 2>/dev/null) || continue
    case $name in
      shard-*) shard=$((shard + ticks)) ;;
      ringmq-http*) http=$((http + ticks)) ;;
    esac
  done
  echo "$shard $http"
}

# swarm_line FILE: deliveries/s and latency percentiles from a swarm summary.
swarm_line() {
  awk '/^delivered/ { gsub(",", "", $2); d = $2 }
       /^latency µs/ { for (i = 1; i <= NF; i++) { if ($i == "p50" || $i == "p99" || $i == "p99.9" || $i == "max") { v = $(i + 1); gsub(",", "", v); l = l " " $i " " v } } }
       /^broker CPU/ { c = $3 " s broker CPU" }
       END { printf "%s deliveries/s; latency µs%s; %s", d, l, c }' "$1"
}

fanout_bench() {
  for round in $(seq 1 "$ROUNDS"); do
    for mode in without with; do
      local name="fanout-$mode-$round"
      start_broker "$name"
      local loader=
      if [[ $mode == with ]]; then
        "$LOAD_BIN" "http://127.0.0.1:$HTTP_PORT" 1000 12 api/load >"$OUT/$name.load.txt" 2>&1 &
        loader=$!
        pids+=($loader)
      fi
      local before
      before="$(idle), load $(load)"
      local t0 t1
      t0=$(thread_ticks "$broker")
      "$SWARM_BIN" fanout --target "tcp://127.0.0.1:$MQTT_PORT" -n 1000 -p 1 --qos 0 \
        --payload 64 --rate 0 --duration 10 --source-addrs "$SRC" --broker-pid "$broker" \
        --client-id-prefix "$name" -q >"$OUT/$name.txt" 2>&1
      t1=$(thread_ticks "$broker")
      [[ -n $loader ]] && wait "$loader"
      local api delivered shard_s http_s hz
      hz=$(getconf CLK_TCK)
      api=$(metric api_messages_in)
      delivered=$(metric messages_out)
      read -r shard_s http_s < <(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN {
        split(a, x, " "); split(b, y, " "); printf "%.2f %.2f", (y[1] - x[1]) / hz, (y[2] - x[2]) / hz }')
      echo "$name ($before): $(swarm_line "$OUT/$name.txt"); shard threads $shard_s s CPU, $(awk -v c="$shard_s" -v d="$delivered" 'BEGIN { printf "%.3f", c * 1e6 / d }') µs per delivery (all $delivered); HTTP threads $http_s s; API publishes taken: ${api:-0}${loader:+; $(cat "$OUT/$name.load.txt")}" |
        tee -a "$OUT/fanout.txt"
      stop_broker
    done
  done
}

webhook_bench() {
  for round in $(seq 1 "$ROUNDS"); do
    for mode in none dead; do
      local name="webhook-$mode-$round"
      if [[ $mode == dead ]]; then
        start_broker "$name" --webhook-url "http://127.0.0.1:9/hook" --webhook-secret bench-secret \
          --webhook-max-pending 10000
      else
        start_broker "$name"
      fi
      local before
      before="$(idle), load $(load)"
      "$SWARM_BIN" connect --target "tcp://127.0.0.1:$MQTT_PORT" -n 30000 --close \
        --connect-rate 2000 --duration 20 --source-addrs "$SRC" --client-id-prefix "churn-$name" -q \
        >"$OUT/$name.churn.txt" 2>&1 &
      local churn=$!
      pids+=($churn)
      sleep 1
      "$SWARM_BIN" fanout --target "tcp://127.0.0.1:$MQTT_PORT" -n 100 -p 1 --qos 1 \
        --rate 1000 --duration 10 --source-addrs "$SRC" --broker-pid "$broker" \
        --client-id-prefix "probe-$name" -q >"$OUT/$name.txt" 2>&1
      wait "$churn"
      local events dropped
      events=$(metric webhook_events_total)
      dropped=$(curl -s -m 5 "http://127.0.0.1:$HTTP_PORT/metrics" |
        awk '/^ringmq_webhook_dropped_total/ { s += $2 } END { print s + 0 }')
      echo "$name ($before): probe $(swarm_line "$OUT/$name.txt"); connections made $(metric connections_total); webhook events taken ${events:-0}, dropped $dropped" |
        tee -a "$OUT/webhook.txt"
      stop_broker
    done
  done
}

case $what in
  clients) clients_bench ;;
  fanout) fanout_bench ;;
  webhook) webhook_bench ;;
  all) clients_bench; fanout_bench; webhook_bench ;;
  *) echo "usage: bench/api.sh [clients|fanout|webhook|all]" >&2; exit 2 ;;
esac
