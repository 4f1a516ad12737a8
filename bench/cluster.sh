#!/usr/bin/env bash
# Cross-node fan-out beside same-node fan-out, in one run, on this machine: a nats-server
# (JetStream on) and two ringmq nodes joined through it; the same ringmq-swarm fanout
# twice, subscribers on the publisher's node (same-node) and on the other node
# (cross-node), then the CPU each process used and the bytes NATS carried per message.
#
#   bench/cluster.sh [--out DIR] [--rounds N] [SWARM FANOUT ARGS…]
#
# Defaults: -n 100 -p 1 --rate 1000 --qos 1 --duration 10 --warmup 2.
# Needs nats-server (Debian: apt-get install nats-server) and release builds
# (cargo build --release -p ringmq -p ringmq-bench), or RINGMQ_BIN / SWARM_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=/tmp/ringmq-cluster-bench
ROUNDS=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) break ;;
  esac
done
ARGS=("$@")
if [[ ${#ARGS[@]} -eq 0 ]]; then
  ARGS=(-n 100 -p 1 --rate 1000 --qos 1 --duration 10 --warmup 2)
fi
RINGMQ_BIN=${RINGMQ_BIN:-target/release/ringmq}
SWARM_BIN=${SWARM_BIN:-target/release/ringmq-swarm}
NATS_BIN=${NATS_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
[[ -x $NATS_BIN ]] || { echo "nats-server missing: apt-get install nats-server" >&2; exit 1; }

mkdir -p "$OUT"
rm -rf "$OUT"/js "$OUT"/data-*
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NATS_PORT=$(free_port); NATS_MON=$(free_port)
"$NATS_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" -sd "$OUT/js" >"$OUT/nats.log" 2>&1 &
NATS_PID=$!
PIDS=("$NATS_PID")
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
sleep 0.5

declare -A MQTT HTTP PID
for node in a b; do
  MQTT[$node]=$(free_port); HTTP[$node]=$(free_port)
  "$RINGMQ_BIN" --shards 1 --mqtt "127.0.0.1:${MQTT[$node]}" --ws none \
    --http "127.0.0.1:${HTTP[$node]}" --data-dir "$OUT/data-$node" \
    --cluster "nats://127.0.0.1:$NATS_PORT" --node-id "$node" >"$OUT/$node.log" 2>&1 &
  PID[$node]=$!
  PIDS+=("${PID[$node]}")
done
metric() { curl -s "127.0.0.1:${HTTP[$1]}/metrics" | awk -v m="ringmq_$2" '$1==m {print $2}'; }
for node in a b; do
  for _ in $(seq 100); do [[ "$(metric $node cluster_connected)" == 1 ]] && break; sleep 0.1; done
done
# CPU ticks (user + system) of a process.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
nats_out() { curl -s "127.0.0.1:$NATS_MON/varz" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["out_msgs"], d["out_bytes"], d["in_msgs"], d["in_bytes"])'; }
HZ=$(getconf CLK_TCK)

run() { # name, subscribers' node
  local name=$1 subs=$2
  local before_a before_b before_n before_nats before_out before_bytes
  before_a=$(ticks "${PID[a]}"); before_b=$(ticks "${PID[b]}"); before_n=$(ticks "$NATS_PID")
  read -r before_nats_out_msgs before_nats_out_bytes before_nats_in_msgs before_nats_in_bytes <<<"$(nats_out)"
  before_out=$(metric a cluster_messages_out_total); before_bytes=$(metric a cluster_bytes_out_total)
  "$SWARM_BIN" fanout --target "tcp://127.0.0.1:${MQTT[$subs]}" \
    --publishers-target "tcp://127.0.0.1:${MQTT[a]}" --client-id-prefix "$name" \
    --topic "$name/t" --quiet --json "$OUT/$name.json" "${ARGS[@]}" >"$OUT/$name.txt" 2>&1
  local cpu_a cpu_b cpu_n
  cpu_a=$(( $(ticks "${PID[a]}") - before_a )); cpu_b=$(( $(ticks "${PID[b]}") - before_b ))
  cpu_n=$(( $(ticks "$NATS_PID") - before_n ))
  read -r nats_out_msgs nats_out_bytes nats_in_msgs nats_in_bytes <<<"$(nats_out)"
  local out bytes
  out=$(( $(metric a cluster_messages_out_total) - before_out ))
  bytes=$(( $(metric a cluster_bytes_out_total) - before_bytes ))
  python3 - "$OUT/$name.json" "$name" "$cpu_a" "$cpu_b" "$cpu_n" "$HZ" "$out" "$bytes" \
    "$((nats_in_msgs - before_nats_in_msgs))" "$((nats_in_bytes - before_nats_in_bytes))" \
    "$((nats_out_msgs - before_nats_out_msgs))" "$((nats_out_bytes - before_nats_out_bytes))" <<'EOF'
import json, sys
f, name, ca, cb, cn, hz, out, byts, nim, nib, nom, nob = sys.argv[1:]
r = json.load(open(f))
m, l = r["messages"], r["latency_us"]
hz = float(hz)
cpu_ms = {k: 1000.0 * int(v) / hz for k, v in (("a", ca), ("b", cb), ("nats", cn))}
deliveries = max(m["received"], 1)
total = sum(cpu_ms.values())
print(f"{name}: delivered/s {m['delivery_rate']:.0f}, lost {m['lost']}, dup {m['received'] - m['unique']}, "
      f"p50 {l['p50']} us, p99 {l['p99']} us, p999 {l['p999']} us; "
      f"cpu ms a {cpu_ms['a']:.0f} b {cpu_ms['b']:.0f} nats {cpu_ms['nats']:.0f} "
      f"= {1000.0 * total / deliveries:.2f} us per delivery; "
      f"ringmq→NATS {out} msgs {byts} B ({int(byts) / max(int(out), 1):.1f} B/msg); "
      f"NATS in {nim} msgs {nib} B, out {nom} msgs {nob} B "
      f"({int(nob) / max(int(nom), 1):.1f} B/msg on the wire payload+subject)")
EOF
}

for r in $(seq "$ROUNDS"); do
  run "same$r" a
  run "cross$r" b
done
