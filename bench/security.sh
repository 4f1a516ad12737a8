#!/usr/bin/env bash
# security.sh: what authentication and an ACL cost. Runs fan-out and pairs against ringmq
# without them ("off") and with a password file and an ACL file of 1,000 rules ("on"),
# interleaved (off, on, off, on, … ROUNDS times), with the same binaries, and prints one
# table of every run and the on ÷ off ratios of the medians.
#
#   bench/security.sh [--rounds N] [--out DIR] [--wait-idle PCT[:S]] [--ringmq-args ARGS]
#
# --ringmq-args: flags for both modes (default "--shards 2").
#
# "on": every swarm client logs in as `bench` (its password hashed with argon2id by
# `ringmq passwd`: the first CONNECTs are verified on the pool, the rest come from the
# cache), and the ACL file has 1,000 rules: the bench user's own (its topics, a deny rule
# beside them), 996 rules of 498 other users, and a pattern. Every PUBLISH and SUBSCRIBE is
# checked against them.
#
# Each run is bench/compare.sh --brokers ringmq --no-build, its files under
# OUT/SCENARIO-MODE-ROUND/. Binaries: RINGMQ_BIN and SWARM_BIN, or target/release (built
# here first if missing).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=2 out=/tmp/ringmq-security/$(date +%Y%m%d-%H%M%S) wait_idle=0 extra="--shards 2"
while (($#)); do
  case $1 in
    --rounds) rounds=${2:?}; shift ;;
    --out) out=${2:?}; shift ;;
    --wait-idle) wait_idle=${2:?}; shift ;;
    --ringmq-args) extra=${2:?}; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "security.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

target=${CARGO_TARGET_DIR:-$root/target}
export RINGMQ_BIN=${RINGMQ_BIN:-$target/release/ringmq}
export SWARM_BIN=${SWARM_BIN:-$target/release/ringmq-swarm}
if [[ ! -x $RINGMQ_BIN || ! -x $SWARM_BIN ]]; then
  (cd "$root" && cargo build --release -p ringmq -p ringmq-bench)
fi
mkdir -p "$out"

# The credentials and the rules.
password=bench-password-0123456789
rm -f "$out/passwd"
printf '%s\n' "$password" | "$RINGMQ_BIN" passwd "$out/passwd" bench >/dev/null
{
  echo "user bench"
  echo "topic readwrite swarm/fanout"
  echo "topic readwrite swarm/pairs/#"
  echo "topic deny swarm/pairs/secret"
  echo "pattern read devices/%c/#"
  for i in $(seq 0 497); do
    echo "user user-$i"
    echo "topic readwrite others/$i/#"
    echo "topic read shared/$i/+/status"
  done
} >"$out/acl"
rules=$(grep -cE '^(topic|pattern) ' "$out/acl")
echo "security.sh: $rules rules in $out/acl, runs under $out"

src="--source-addrs 127.88.0.1-127.88.0.16"
declare -A scenario_args=(
  [fanout]="fanout -n 1000 -p 1 --qos 0 --payload 64 --rate 0 --duration 10 $src"
  [pairs]="pairs -n 5000 --qos 1 --rate 0 --duration 10 $src"
)
for r in $(seq 1 "$rounds"); do
  for s in fanout pairs; do
    for mode in off on; do
      args=(${scenario_args[$s]})
      ringmq_args=$extra
      if [[ $mode == on ]]; then
        args+=(--username bench --password "$password")
        ringmq_args+=" --password-file $out/passwd --acl-file $out/acl"
      fi
      wait_opts=()
      [[ $wait_idle != 0 ]] && wait_opts=(--wait-idle "$wait_idle")
      "$here/compare.sh" --no-build --no-install --brokers ringmq "${wait_opts[@]}" \
        --ringmq-args "$ringmq_args" --out "$out/$s-$mode-$r" "${args[@]}" >"$out/$s-$mode-$r.out" 2>&1 ||
        echo "security.sh: $s $mode round $r failed (see $out/$s-$mode-$r.out)" >&2
    done
  done
done

python3 - "$out" "$rounds" <<'EOF'
import json, os, statistics, sys

out, rounds = sys.argv[1], int(sys.argv[2])

def cpu(d):
    # Other processes' CPU during the run, as compare.sh's table computes it.
    try:
        busy0, b0, up0, busy1, b1, up1, hz = map(float, open(os.path.join(d, "ringmq.cpu")).read().split())
        js = json.load(open(os.path.join(d, "ringmq.json")))
        wall = up1 - up0
        return max((busy1 - busy0 - (b1 - b0)) / hz - js.get("cpu_total_s", 0), 0) / wall
    except (OSError, ValueError):
        return None

print("| scenario | mode | round | delivered msg/s | p50 µs | p99 µs | broker µs/msg | lost | others' CPU (cores) |")
print("|---|---|---|---|---|---|---|---|---|")
med = {}
for s in ("fanout", "pairs"):
    for mode in ("off", "on"):
        rates = []
        for r in range(1, rounds + 1):
            d = os.path.join(out, f"{s}-{mode}-{r}")
            try:
                j = json.load(open(os.path.join(d, "ringmq.json")))
            except (OSError, ValueError):
                print(f"| {s} | {mode} | {r} | failed | | | | | |")
                continue
            m, lat = j["messages"], j["latency_us"] or {}
            rates.append(m["delivery_rate"])
            o = cpu(d)
            print(f"| {s} | {mode} | {r} | {m['delivery_rate']:,.0f} | {lat.get('p50', 0):,} | "
                  f"{lat.get('p99', 0):,} | {j['broker']['cpu']['us_per_unit']:.2f} | {m['lost']:,} | "
                  f"{'–' if o is None else f'{o:.2f}'} |")
        med[(s, mode)] = statistics.median(rates) if rates else None
print()
for s in ("fanout", "pairs"):
    off, on = med[(s, "off")], med[(s, "on")]
    if off and on:
        print(f"{s}: median delivered msg/s off {off:,.0f}, on {on:,.0f}: on ÷ off = {on / off:.3f}")
EOF
