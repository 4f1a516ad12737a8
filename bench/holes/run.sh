#!/bin/bash
# Runs one of the scripts beside this one against a freshly started ringmq (2 shards, MQTT
# over TCP on a free port, nothing else), then stops it.
#
#   bench/holes/run.sh RINGMQ_BINARY SCRIPT [ARGS...]
#   bench/holes/run.sh target/release/ringmq retained_flood.py 300000
#   bench/holes/run.sh target/release/ringmq shared_groups.py 1
set -uo pipefail
bin=${1:?RINGMQ_BINARY}
script=${2:?SCRIPT}
shift 2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
"$bin" --mqtt "127.0.0.1:$port" --ws none --http none --data-dir "$dir/data" --shards 2 \
  >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$dir/out" && break; sleep 0.1; done
timeout 600 python3 "$here/$script" 127.0.0.1 "$port" "$@"
status=$?
kill "$pid"
wait "$pid" 2>/dev/null
rm -rf "$dir"
exit $status
