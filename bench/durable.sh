#!/usr/bin/env bash
# durable.sh: the durability benchmarks, one after another in one run, on this machine.
#
#   bench/durable.sh [--out DIR] [--clients N] [--duration S] [--skip-mosquitto]
#
# 1. QoS 1 pairs to persistent sessions (clean session off), open loop, against ringmq with
#    --durability none, write and fsync, and against mosquitto with `persistence true`
#    and `autosave_on_changes true` (autosave_interval 1: the setting that loses nothing).
# 2. The same load against ringmq fsync at half of its open-loop delivery rate: the
#    swarm's publish→PUBACK percentiles.
# 3. QoS 1 pairs with clean sessions, open loop, ringmq fsync (the default) and none:
#    broker CPU per delivered message (clean sessions never touch the disk).
#
# Each broker starts fresh (a new data directory on the disk under --out, default
# /tmp/ringmq-durable/TIME) on free loopback ports and is stopped before the next; every
# run's swarm summary (NAME.txt), JSON (NAME.json) and broker log stay in --out. The
# swarm and ringmq are target/release's (build them first: `cargo build --release -p
# ringmq -p ringmq-bench`), or RINGMQ_BIN / SWARM_BIN.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=peers/lib.sh
source "$here/peers/lib.sh"

out=/tmp/ringmq-durable/$(date +%Y%m%d-%H%M%S) clients=1000 duration=10 mosquitto=1
while (($#)); do
  case $1 in
    --out) out=${2:?}; shift ;;
    --clients) clients=${2:?}; shift ;;
    --duration) duration=${2:?}; shift ;;
    --skip-mosquitto) mosquitto=0 ;;
    -h | --help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "durable.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
ringmq_bin=${RINGMQ_BIN:-$root/target/release/ringmq}
swarm_bin=${SWARM_BIN:-$root/target/release/ringmq-swarm}
mkdir -p "$out"
raise_nofile
src=127.88.0.1-127.88.0.16
pairs=(pairs -n "$clients" --qos 1 --duration "$duration" --warmup 2 --drain 30
  --source-addrs "$src" --inflight 64)

# run NAME BROKER SWARM-ARGS...: BROKER is "ringmq MODE" or "mosquitto".
run() {
  local name=$1 broker=$2
  shift 2
  local dir=$out/$name tcp ws metrics
  mkdir -p "$dir"
  free_port tcp && free_port ws && free_port metrics || return 1
  case $broker in
    ringmq\ *)
      start_ringmq "$dir" "$ringmq_bin" "$tcp" "$ws" "$metrics" --durability "${broker#ringmq }" || return 1
      ;;
    mosquitto)
      start_mosquitto_persistent "$dir" "$tcp" "$ws" || return 1
      ;;
  esac
  "$swarm_bin" "$@" --target "tcp://127.0.0.1:$tcp" --broker-pid "$BROKER_PID" \
    --client-id-prefix "$name" --json "$out/$name.json" -q >"$out/$name.txt" 2>"$out/$name.log"
  local status=$?
  if [[ $broker == ringmq* ]]; then
    curl -s "http://127.0.0.1:$metrics/metrics" >"$out/$name.metrics" || true
  fi
  stop_broker "$dir" "${broker%% *}"
  du -sk "$dir" | awk '{print $1 * 1024}' >"$out/$name.disk"
  rm -rf "$dir/ringmq-data" "$dir/mosquitto.db"
  echo "== $name ($broker): $*" >>"$out/summary.txt"
  grep -E 'delivered|published|latency|ack µs|broker CPU|integrity' "$out/$name.txt" >>"$out/summary.txt"
  return $status
}

# mosquitto with the persistence that loses nothing on a crash: every change saved.
start_mosquitto_persistent() {
  local dir=$1 tcp=$2 ws=$3
  PEERS_TLS= start_mosquitto "$dir" "$tcp" "$ws" "persistence true
persistence_location $dir/
autosave_on_changes true
autosave_interval 1"
}

delivered_rate() { grep -o '"delivery_rate": *[0-9.]*' "$1" | head -1 | grep -o '[0-9.]*$'; }

# The disk's own fdatasync latency (4 KiB appends), before and after: what an
# acknowledgement in fsync mode waits for at least.
fsync_probe() {
  python3 - "$out" <<'PY'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
lat = []
for _ in range(300):
    os.write(fd, b"x" * 4096)
    t = time.perf_counter()
    os.fdatasync(fd)
    lat.append((time.perf_counter() - t) * 1e3)
os.close(fd)
os.unlink(path)
lat.sort()
print("fdatasync of a 4 KiB append, ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f"
      % (lat[150], lat[270], lat[297], lat[-1]))
PY
}

: >"$out/summary.txt"
{ echo "== disk before"; fsync_probe; uptime; } >>"$out/summary.txt"
run persistent-none "ringmq none" "${pairs[@]}" --rate 0 --persistent
run persistent-write "ringmq write" "${pairs[@]}" --rate 0 --persistent
run persistent-fsync "ringmq fsync" "${pairs[@]}" --rate 0 --persistent
if ((mosquitto)); then
  run persistent-mosquitto mosquitto "${pairs[@]}" --rate 0 --persistent
fi
peak=$(delivered_rate "$out/persistent-fsync.json")
half=$(awk -v p="${peak:-0}" 'BEGIN { printf "%d", p / 2 }')
run persistent-fsync-half "ringmq fsync" "${pairs[@]}" --rate "$half" --persistent
run clean-fsync "ringmq fsync" "${pairs[@]}" --rate 0
run clean-none "ringmq none" "${pairs[@]}" --rate 0
{ echo "== disk after"; fsync_probe; uptime; } >>"$out/summary.txt"
cat "$out/summary.txt"
echo "runs in $out"
