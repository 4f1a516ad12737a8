#!/usr/bin/env bash
# compare.sh: run the same ringmq-swarm scenario against ringmq, mosquitto, nats-server and
# rumqttd, one broker after another, and print one table of the results.
#
#   bench/compare.sh [OPTIONS] SCENARIO [SWARM ARGS...]
#
# Each broker is started fresh on free loopback ports (MQTT over TCP and over WebSocket),
# the swarm runs `SCENARIO SWARM ARGS` against it with --broker-pid (broker CPU and RSS)
# and --json, and the broker is stopped again before the next one starts. Missing peers
# are installed first (apt-get: mosquitto, nats-server; cargo install: rumqttd 0.20 into
# $PEERS_CACHE, default ~/.cache/ringmq-peers). ringmq and the swarm are built with
# `cargo build --release` (into $CARGO_TARGET_DIR, default the repository's target/).
#
# Options (before SCENARIO; everything after it goes to the swarm unchanged):
#   --ws                 every broker's MQTT-over-WebSocket listener instead of MQTT over TCP
#   --tls                both listeners under TLS (mqtts://, or wss:// with --ws), with a CA
#                        and an ECDSA P-256 server certificate made by openssl for the run
#                        (OUT/tls); ringmq and mosquitto only (nats and rumqttd are skipped)
#   --brokers LIST       which, in order (comma or space separated; default
#                        "ringmq,mosquitto,nats,rumqttd")
#   --out DIR            keep each run's files here (default /tmp/ringmq-compare/TIME-SCENARIO):
#                        NAME.txt (the swarm's summary), NAME.json, NAME.hlog, NAME.log
#                        (stderr), NAME.broker.log, ringmq.metrics, ringmq.histograms.hlog
#   --ringmq-args ARGS   extra ringmq flags, one word list (e.g. "--shards 2")
#   --perf NAME          `perf record -e cpu-clock -g` broker NAME (repeatable) during its
#                        run: NAME.perf.data, and the top of `perf report --no-children`
#                        (self time per symbol) in NAME.perf.txt
#   --pause S            seconds to wait between brokers (default 2), so sockets of the last
#                        run (TIME_WAIT, closing) do not weigh on the next
#   --wait-idle PCT[:S]  before each broker's run, wait (at most S seconds, default 600)
#                        until the machine is at least PCT % idle over 3 s (for a machine
#                        shared with others' builds); the idle figure is in the table either
#                        way, with the CPU other processes took during the run
#   --no-build           use the binaries as they are (RINGMQ_BIN and SWARM_BIN, or target/)
#   --no-install         do not install missing peers (they are reported as not started)
#   -h, --help
#
# Environment: CARGO_TARGET_DIR, RINGMQ_BIN, SWARM_BIN (use these binaries, no build),
# PEERS_CACHE, RUMQTTD_BIN.
#
# What each peer can do (a broker that cannot run a scenario is skipped, with the reason in
# the table): nats-server 2.9 speaks MQTT 3.1.1 only with QoS 0 and 1; rumqttd has
# separate MQTT 3.1.1 and 5 TCP listeners (the right one is used), and its WebSocket
# listener is MQTT 3.1.1 only. WebSocket paths: ringmq /mqtt (configured), nats /mqtt
# (required), mosquitto and rumqttd accept any path (given /mqtt).
#
# Exit status: 0 if every broker asked for ran (or was skipped as unable), 1 if one could
# not be started, died during its run, or its swarm run failed; 2 for bad usage. The table
# is printed either way.
set -uo pipefail

orig_args=("$@")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=peers/lib.sh
source "$here/peers/lib.sh"

usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die_usage() { echo "compare.sh: $*" >&2; echo "see bench/compare.sh --help" >&2; exit 2; }

ws=0 tls=0 build=1 install=1 pause=2 wait_idle_pct=0 out= ringmq_args=() brokers="ringmq,mosquitto,nats,rumqttd"
declare -A perf_for=()
while (($#)); do
  case $1 in
    --ws) ws=1 ;;
    --tls) tls=1 ;;
    --brokers) brokers=${2:?}; shift ;;
    --out) out=${2:?}; shift ;;
    --ringmq-args) read -r -a ringmq_args <<<"${2:?}"; shift ;;
    --perf) perf_for[${2:?}]=1; shift ;;
    --pause) pause=${2:?}; shift ;;
    --wait-idle)
      wait_idle_pct=${2:?}
      wait_idle_max=600
      [[ $wait_idle_pct == *:* ]] && wait_idle_max=${wait_idle_pct#*:}
      shift
      ;;
    --no-build) build=0 ;;
    --no-install) install=0 ;;
    -h | --help) usage; exit 0 ;;
    -*) die_usage "unknown option $1 (options go before SCENARIO)" ;;
    *) break ;;
  esac
  shift
done
(($#)) || die_usage "no SCENARIO (fanout, fanin, pairs, connect, idle)"
scenario=$1
shift
case $scenario in fanout | fanin | pairs | connect | idle) ;; *) die_usage "unknown scenario $scenario" ;; esac
swarm_args=("$@")

# What the swarm arguments ask for (compare.sh sets --target, --broker-pid, --json, --hist).
qos=0 version=3
for ((i = 0; i < ${#swarm_args[@]}; i++)); do
  a=${swarm_args[i]} v=${swarm_args[i + 1]:-}
  case $a in
    --qos) qos=$v ;; --qos=*) qos=${a#*=} ;;
    --mqtt-version) version=$v ;; --mqtt-version=*) version=${a#*=} ;;
    --target | --target=* | --broker-pid | --broker-pid=* | --json | --json=* | --hist | --hist=* | \
      --tls-ca | --tls-ca=*)
      die_usage "$a is set by compare.sh for each broker" ;;
  esac
done
case $version in 5 | 5.0) version=5 ;; *) version=3 ;; esac

read -r -a broker_list <<<"${brokers//,/ }"
for b in "${broker_list[@]}"; do
  case $b in ringmq | mosquitto | nats | rumqttd) ;; *) die_usage "unknown broker $b" ;; esac
done

stamp=$(date +%Y%m%d-%H%M%S)
out=${out:-/tmp/ringmq-compare/$stamp-$scenario$( ((ws)) && echo -ws)$( ((tls)) && echo -tls)}
mkdir -p "$out" "$PEERS_CACHE" || exit 1
out=$(cd "$out" && pwd)
rm -f "$out"/*.status "$out"/*.json "$out"/*.txt
tls_args=()
if ((tls)); then
  make_tls_certs "$out" || exit 1
  export PEERS_TLS=$out/tls
  tls_args=(--tls-ca "$PEERS_TLS/ca.pem")
fi

# Binaries: ringmq and the swarm from this workspace.
target_dir=${CARGO_TARGET_DIR:-$root/target}
ringmq_bin=${RINGMQ_BIN:-$target_dir/release/ringmq}
swarm_bin=${SWARM_BIN:-$target_dir/release/ringmq-swarm}
if ((build)) && [[ -z ${RINGMQ_BIN:-} && -z ${SWARM_BIN:-} ]]; then
  peers_say "cargo build --release -p ringmq -p ringmq-bench (target $target_dir)"
  (cd "$root" && cargo build --release -q -p ringmq -p ringmq-bench) || {
    echo "compare.sh: build failed" >&2
    exit 1
  }
fi
[[ -x $swarm_bin ]] || { echo "compare.sh: no swarm binary at $swarm_bin" >&2; exit 1; }

peers=()
for b in "${broker_list[@]}"; do [[ $b == ringmq ]] || peers+=("$b"); done
if ((install && ${#peers[@]})); then peers_install "${peers[@]}" || true; fi

raise_nofile
started=()
cleanup() {
  local n
  for n in "${started[@]}"; do stop_broker "$out" "$n"; done
  started=()
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# Metadata for the table.
{
  echo "date=$(date '+%Y-%m-%d %H:%M:%S %Z')"
  echo "host=$(uname -n) $(uname -r), $(nproc) cores"
  echo "command=bench/compare.sh ${orig_args[*]}"
  if [[ -n ${RINGMQ_BIN:-} ]]; then
    echo "ringmq_commit=RINGMQ_BIN=$RINGMQ_BIN"
  else
    echo "ringmq_commit=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
  fi
  echo "out=$out"
} >"$out/meta"

status() { echo "$2" >"$out/$1.status"; }   # status NAME TEXT
failed=0

for b in "${broker_list[@]}"; do
  # Can it run this scenario?
  skip=
  case $b in
    nats | rumqttd) ((tls)) && skip="TLS is not set up for $b here" ;;
  esac
  [[ -z $skip ]] && case $b in
    nats)
      ((version == 5)) && skip="nats-server 2.9 speaks MQTT 3.1.1 only"
      ((qos == 2)) && skip="nats-server 2.9 supports QoS 0 and 1 only"
      [[ -z $(nats_bin) ]] && skip="not installed"
      ;;
    rumqttd)
      ((ws && version == 5)) && skip="rumqttd's WebSocket listener speaks MQTT 3.1.1 only"
      [[ -z $(rumqttd_bin) ]] && skip="not installed"
      ;;
    mosquitto) [[ -z $(mosquitto_bin) ]] && skip="not installed" ;;
    ringmq) [[ -x $ringmq_bin ]] || skip="not built ($ringmq_bin missing)" ;;
  esac
  if [[ -n $skip ]]; then
    if [[ $skip == not* ]]; then
      status "$b" "FAILED: $skip"
      failed=1
    else
      status "$b" "skipped: $skip"
    fi
    peers_say "$b: ${skip}"
    continue
  fi

  # Start it.
  free_port tcp && free_port wsport || exit 1
  ok=1
  case $b in
    ringmq)
      free_port metrics || exit 1
      start_ringmq "$out" "$ringmq_bin" "$tcp" "$wsport" "$metrics" "${ringmq_args[@]}" || ok=0
      ;;
    mosquitto) start_mosquitto "$out" "$tcp" "$wsport" || ok=0 ;;
    nats) start_nats "$out" "$tcp" "$wsport" || ok=0 ;;
    rumqttd)
      free_port v5 || exit 1
      start_rumqttd "$out" "$tcp" "$v5" "$wsport" || ok=0
      ((version == 5)) && tcp=$v5
      ;;
  esac
  started+=("$b")
  if ((!ok)); then
    status "$b" "FAILED: could not be started (see $b.broker.log)"
    failed=1
    cleanup
    continue
  fi
  pid=$BROKER_PID
  if ((ws)); then target=ws://127.0.0.1:$wsport/mqtt; else target=tcp://127.0.0.1:$tcp; fi
  ((tls)) && target=${target/#ws:/wss:} && target=${target/#tcp:/mqtts:}
  sleep 0.5   # let it settle (nats sets up its JetStream MQTT streams after listening)

  if ((${wait_idle_pct%%:*} > 0)); then
    peers_say "$b: waiting for the machine to be ${wait_idle_pct%%:*} % idle"
    wait_idle "${wait_idle_pct%%:*}" "$wait_idle_max"
  else
    cpu_idle_pct 1
  fi
  idle=$IDLE
  read -r l1 l5 l15 _ </proc/loadavg
  echo "load=$l1 $l5 $l15" >"$out/$b.load"
  echo "$idle" >"$out/$b.idle"
  peers_say "$b (pid $pid) at $target, load average $l1 $l5 $l15, machine ${idle} % idle"
  perf_pid=
  if [[ -n ${perf_for[$b]:-} ]]; then
    # cpu-clock: works in VMs without hardware counters (as here).
    perf record -e cpu-clock -g -o "$out/$b.perf.data" -p "$pid" >"$out/$b.perf.log" 2>&1 &
    perf_pid=$!
  fi
  snap0=$(cpu_snapshot "$pid")
  "$swarm_bin" "$scenario" "${swarm_args[@]}" "${tls_args[@]}" --target "$target" --broker-pid "$pid" \
    --json "$out/$b.json" --hist "$out/$b.hlog" >"$out/$b.txt" 2>"$out/$b.log"
  rc=$?
  # Machine busy ticks, broker ticks, uptime: before and after the whole swarm run, so the
  # table can show how much CPU other processes took meanwhile.
  echo "$snap0 $(cpu_snapshot "$pid") $(getconf CLK_TCK)" >"$out/$b.cpu"
  if [[ -n $perf_pid ]]; then
    kill -INT "$perf_pid" 2>/dev/null
    wait "$perf_pid" 2>/dev/null
    perf report -i "$out/$b.perf.data" --no-children --stdio -g none --percent-limit 0.3 \
      2>/dev/null | grep -v '^$' | head -80 >"$out/$b.perf.txt"
  fi
  cat "$out/$b.txt"
  alive=1
  kill -0 "$pid" 2>/dev/null || alive=0
  if [[ $b == ringmq ]] && ((alive)); then
    curl -s --max-time 5 "http://127.0.0.1:$metrics/metrics" >"$out/ringmq.metrics" || true
    curl -s --max-time 5 "http://127.0.0.1:$metrics/debug/histograms" \
      >"$out/ringmq.histograms.hlog" || true
  fi
  if ((!alive)); then
    status "$b" "FAILED: the broker exited during the run (see $b.broker.log)"
    failed=1
  elif ((rc != 0)); then
    status "$b" "FAILED: the swarm exited with status $rc (see $b.log)"
    failed=1
  else
    status "$b" "ok"
  fi
  cleanup
  [[ $b == "${broker_list[-1]}" ]] || sleep "$pause"
done

python3 "$here/peers/table.py" "$out" "${broker_list[@]}" | tee "$out/table.md"
exit $failed
