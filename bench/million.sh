#!/usr/bin/env bash
# bench/million.sh — one ringmq process, a million concurrent MQTT connections (a quarter of
# them over WebSocket), held with 60 s keepalives, with a latency probe during the hold.
#
# usage: bench/million.sh [CONNECTIONS] [HOLD_SECONDS]      (defaults 1000000 and 300)
#   e.g. bench/million.sh 100000 60   for a quick scaled-down run
#
# Fewer connection attempts in flight at once (--max-pending) keep every WebSocket
# upgrade and CONNECT well inside the broker's 10 s handshake and CONNECT timeouts while
# both swarms ramp at the same time.
#
# Steps: build (release) → tune the kernel (ringmq-tune apply; needs root) → start ringmq
# with one shard per core (each shard's thread opens io_uring rings, "lanes", as it fills:
# a ring's fixed-file table holds up to RLIMIT_NOFILE sockets, 20,000 here, which cannot
# be raised) → ramp two ringmq-swarm
# processes (TCP and WebSocket, many loopback source addresses) → hold, measuring the
# broker's CPU while only keepalives flow → probe: 1 publisher → 1,000 of the clients at
# 1,000 msg/s → a light probe at 100 msg/s → hold to the end → check every connection
# survived → tear down → print the figures. Every step has a time limit; the script stops
# by itself.
#
# Environment: SHARDS (default: one per core, `nproc`), PORT_BASE (default 31000),
# OUT (results folder, default target/million), KEEPALIVE (default 60), PROBE_RATE
# (messages per second of the probe, default 1000), PROBE2_RATE (the light probe, default
# 100; 0 skips it), RECV_BUFFERS (ringmq --recv-buffers, default 256, see tuning.md).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
HOLD=${2:-300}
KEEPALIVE=${KEEPALIVE:-60}
PROBE_SUBS=1000
PROBE_SECS=60
PROBE_RATE=${PROBE_RATE:-1000}
PROBE2_RATE=${PROBE2_RATE:-100}
RECV_BUFFERS=${RECV_BUFFERS:-256}
PROBE_CLIENTS=$((PROBE_SUBS + 1))
WS_N=$(((N + 3) / 4))                       # at least a quarter over WebSocket
TCP_N=$((N - WS_N - PROBE_CLIENTS))         # the probe's clients count in the million
SHARDS=${SHARDS:-$(nproc)}                  # one shard per core; lanes hold the rest
PORT_BASE=${PORT_BASE:-31000}
MQTT_PORT=$PORT_BASE WS_PORT=$((PORT_BASE + 1)) METRICS_PORT=$((PORT_BASE + 2))
OUT=${OUT:-target/million}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release
mkdir -p "$OUT"

say() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
metric() { # metric NAME -> the unlabelled sum from /metrics
  curl -s -m 5 "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v n="ringmq_$1" '$1 == n { print $2 }'
}
meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
user_ticks() { awk '{ print $14 }' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
slab_kb() { # the slab caches a TCP connection uses, in kB
  awk 'NR > 2 && ($1 ~ /^(TCP|tcp_bind|sock_inode_cache|filp|dentry|request_sock_TCP|skbuff|kmalloc-(rnd-)?[0-9]+|kmem_cache)/) { s += $3 * $4 } END { print int(s / 1024) }' /proc/slabinfo
}

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -n ${BROKER:-} ]] && kill -TERM "$BROKER" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

say "building release binaries"
cargo build --release -p ringmq -p ringmq-bench -p ringmq-tools >&2

say "tuning the kernel (ringmq-tune apply)"
"$BIN/ringmq-tune" apply | tee "$OUT/tune.txt" >&2 || true

mem_before=$(meminfo MemAvailable) slab_before=$(meminfo Slab) sunreclaim_before=$(meminfo SUnreclaim)
tcp_slab_before=$(slab_kb)

say "starting ringmq: $SHARDS shards for $N connections"
"$BIN/ringmq" --mqtt "127.0.0.1:$MQTT_PORT" --ws "127.0.0.1:$WS_PORT" \
  --metrics "127.0.0.1:$METRICS_PORT" --shards "$SHARDS" --recv-buffers "$RECV_BUFFERS" \
  --mesh-capacity 64 --data-dir "$OUT/data" >"$OUT/broker.log" 2>&1 &
BROKER=$!
for _ in $(seq 1 100); do grep -q listening "$OUT/broker.log" && break; sleep 0.2; done
grep -q listening "$OUT/broker.log" || { say "broker did not start"; cat "$OUT/broker.log"; exit 1; }
rss_before=$(rss_kb "$BROKER")

# The idle swarms hold for this long after all their clients are connected: the script's
# hold plus a margin, so the figures below are taken while every connection is open.
HOLD_ALL=$((HOLD + 20))
say "ramping $TCP_N TCP + $WS_N WebSocket + $PROBE_CLIENTS probe connections"
t0=$(date +%s.%N)
"$BIN/ringmq-swarm" idle --target "tcp://127.0.0.1:$MQTT_PORT" -n "$TCP_N" \
  --keepalive "$KEEPALIVE" --duration "$HOLD_ALL" --source-addrs 127.0.10.1-127.0.10.60 \
  --client-id-prefix million-tcp --max-pending 512 --connect-timeout 60 -q \
  --json "$OUT/idle-tcp.json" >"$OUT/idle-tcp.txt" 2>&1 &
tcp_swarm=$!; pids+=("$tcp_swarm")
"$BIN/ringmq-swarm" idle --target "ws://127.0.0.1:$WS_PORT/mqtt" -n "$WS_N" \
  --keepalive "$KEEPALIVE" --duration "$HOLD_ALL" --source-addrs 127.0.11.1-127.0.11.30 \
  --client-id-prefix million-ws --max-pending 256 --connect-timeout 60 -q \
  --json "$OUT/idle-ws.json" >"$OUT/idle-ws.txt" 2>&1 &
ws_swarm=$!; pids+=("$ws_swarm")

want=$((TCP_N + WS_N))
ramp_deadline=$(($(date +%s) + 600))
while :; do
  have=$(metric connections_current || echo 0)
  say "  connected: ${have:-0} / $want"
  [[ ${have:-0} -ge $want ]] && break
  if [[ $(date +%s) -ge $ramp_deadline ]]; then say "ramp did not finish in 600 s"; exit 1; fi
  if ! kill -0 "$tcp_swarm" 2>/dev/null || ! kill -0 "$ws_swarm" 2>/dev/null; then
    say "a swarm process ended during the ramp"; tail -5 "$OUT"/idle-*.txt >&2; exit 1
  fi
  sleep 2
done
t1=$(date +%s.%N)
ramp_s=$(echo "$t1 - $t0" | bc -l)

# Idle hold, first part: only keepalives flow; measure the broker's CPU.
idle_secs=$(((HOLD - PROBE_SECS) / 2))
((idle_secs < 10)) && idle_secs=10
say "holding ${idle_secs} s with keepalives only"
c0=$(cpu_ticks "$BROKER") u0=$(user_ticks "$BROKER"); sleep "$idle_secs"
c1=$(cpu_ticks "$BROKER") u1=$(user_ticks "$BROKER")
hz=$(getconf CLK_TCK)
idle_cpu=$(echo "100 * ($c1 - $c0) / $hz / $idle_secs" | bc -l)
idle_user=$(echo "100 * ($u1 - $u0) / $hz / $idle_secs" | bc -l)

# probe NAME RATE SOURCE_ADDRS: 1 publisher -> PROBE_SUBS subscribers for PROBE_SECS, its
# results in $OUT/NAME.{json,hlog,txt}.
probe() {
  say "$1: 1 publisher -> $PROBE_SUBS subscribers, $2 msg/s, ${PROBE_SECS} s"
  "$BIN/ringmq-swarm" fanout --target "tcp://127.0.0.1:$MQTT_PORT" -n "$PROBE_SUBS" -p 1 \
    --rate "$2" --qos 0 --payload 64 --duration "$PROBE_SECS" --warmup 5 --drain 10 \
    --source-addrs "$3" --client-id-prefix "million-$1" -q \
    --json "$OUT/$1.json" --hist "$OUT/$1.hlog" >"$OUT/$1.txt" 2>&1 || true
}
probe probe "$PROBE_RATE" 127.0.12.1-127.0.12.4

rest=$((HOLD - idle_secs - PROBE_SECS))
if ((PROBE2_RATE > 0 && rest >= PROBE_SECS + 20)); then
  p2_start=$(date +%s)
  probe probe2 "$PROBE2_RATE" 127.0.12.5-127.0.12.8
  rest=$((rest - ($(date +%s) - p2_start)))
fi
((rest > 0)) && { say "holding ${rest} s more"; sleep "$rest"; }

# Everything measured at the end of the hold, with every connection still open.
open_end=$(metric connections_current)
timeouts=$(metric disconnected_timeout)
rss_end=$(rss_kb "$BROKER")
mem_end=$(meminfo MemAvailable) slab_end=$(meminfo Slab) sunreclaim_end=$(meminfo SUnreclaim)
tcp_slab_end=$(slab_kb)
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" >"$OUT/metrics.txt"

say "waiting for the swarms to end their hold and disconnect"
for _ in $(seq 1 600); do
  kill -0 "$tcp_swarm" 2>/dev/null || kill -0 "$ws_swarm" 2>/dev/null || break
  sleep 1
done
say "stopping the broker"
kill -TERM "$BROKER"; wait "$BROKER" 2>/dev/null || true; BROKER=

python3 - "$OUT" "$N" "$want" "$open_end" "$timeouts" "$ramp_s" "$idle_cpu" "$rss_before" \
  "$rss_end" "$mem_before" "$mem_end" "$slab_before" "$slab_end" "$sunreclaim_before" \
  "$sunreclaim_end" "$tcp_slab_before" "$tcp_slab_end" "$SHARDS" "$HOLD" "$idle_user" \
  "$KEEPALIVE" <<'PY' | tee "$OUT/summary.txt"
import json, os, sys
(out, n, want, open_end, timeouts, ramp_s, idle_cpu, rss0, rss1, mem0, mem1, slab0, slab1,
 sun0, sun1, tslab0, tslab1, shards, hold, idle_user, keepalive) = sys.argv[1:]
n, want, open_end, timeouts = int(n), int(want), int(open_end or 0), int(timeouts or 0)
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception:
        return None
conns = int(want) + 1001
kb = lambda a, b: (int(b) - int(a)) * 1024
print(f"ringmq, {n:,} connections ({want:,} idle: TCP + WebSocket; 1,001 probe), {shards} shards, hold {hold} s")
print(f"ramp          {float(ramp_s):.1f} s to {want:,} idle connections = {want / float(ramp_s):,.0f} connections/s")
print(f"held          {open_end:,} open at the end of the hold (want >= {want:,}); closed by a broker timeout (handshake, CONNECT or keepalive): {timeouts}")
for name in ("idle-tcp.json", "idle-ws.json"):
    d = load(name)
    if d:
        c = d["connect"]
        print(f"  {name[:-5]:9} {d['connections']:,} clients, reconnects {c['reconnects']}, disconnects {c['disconnects']}, "
              f"connect failures {c['connect_failures']}, timeouts {c['timeouts']}")
def print_probe(label, name):
    r = load(name + ".json")
    if r and r.get("latency_us"):
        l, m = r["latency_us"], r["messages"]
        print(f"{label:13} {m.get('published', 0):,} published to {r['connections']} subscribers: "
              f"p50 {l['p50']} µs, p99 {l['p99']} µs, p99.9 {l['p999']} µs, max {l['max']} µs; "
              f"lost {m.get('lost', 0)}, duplicated {m.get('duplicates', 0)}")
    elif os.path.exists(os.path.join(out, name + ".txt")):
        print(f"{label:13} no result (see {name}.txt)")
    return r
p = print_probe("probe", "probe")
print_probe("light probe", "probe2")
pings = want / int(keepalive)
print(f"broker CPU    {float(idle_cpu):.1f}% of one core during the keepalive-only hold "
      f"(user {float(idle_user):.1f}%, kernel {float(idle_cpu) - float(idle_user):.1f}%): "
      f"{float(idle_cpu) * 1e4 / pings:.1f} µs per PINGREQ at {pings:,.0f}/s, "
      f"{float(idle_user) * 1e4 / pings:.1f} µs of it in user space")
print(f"broker RSS    {int(rss0) // 1024} MiB before, {int(rss1) // 1024} MiB held: "
      f"{kb(rss0, rss1) / conns:,.0f} B per connection")
print(f"kernel slab   +{(int(slab1) - int(slab0)) // 1024} MiB (unreclaimable +{(int(sun1) - int(sun0)) // 1024} MiB): "
      f"{kb(slab0, slab1) / conns:,.0f} B per connection; TCP-related caches {kb(tslab0, tslab1) / conns:,.0f} B")
print(f"machine       {(int(mem0) - int(mem1)) // 1024} MiB more in use (MemAvailable), "
      f"{kb(mem1, mem0) / conns:,.0f} B per connection (broker + kernel + swarm)")
probe_ok = bool(p and p.get("messages", {}).get("lost", 1) == 0
                and p.get("latency_us") and p["latency_us"]["p99"] <= 10_000)
ok = open_end >= want and timeouts == 0 and probe_ok
print("result        " + ("OK" if ok else "FAILED"))
sys.exit(0 if ok else 1)
PY
