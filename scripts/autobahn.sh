#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client against the ws_echo example (ringmq's
# runtime and WebSocket framer) and fails unless every case outside sections 12 and 13
# (compression, which ringmq does not offer) ends OK, NON-STRICT or INFORMATIONAL.
#
# Needs Python 2.7 (the machine's pyenv has 2.7.18); installs autobahntestsuite from
# PyPI into target/autobahn/venv on first use. Usage: scripts/autobahn.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
port=${1:-9001}
work=target/autobahn
mkdir -p "$work"
py27=${PY27:-$HOME/.pyenv/versions/2.7.18/bin/python}
if [[ ! -x $work/venv/bin/wstest ]]; then
  "$py27" -m pip install -q virtualenv >/dev/null 2>&1 || true
  "$py27" -m virtualenv -q "$work/venv" >/dev/null
  "$work/venv/bin/pip" install -q autobahntestsuite >/dev/null 2>&1
fi
cargo build --release --example ws_echo
"${CARGO_TARGET_DIR:-target}"/release/examples/ws_echo "127.0.0.1:$port" >"$work/echo.log" 2>&1 &
echo_pid=$!
trap 'kill $echo_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
cat >"$work/fuzzingclient.json" <<JSON
{
  "outdir": "./reports",
  "servers": [{"agent": "ringmq", "url": "ws://127.0.0.1:$port"}],
  "cases": ["*"],
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
JSON
(cd "$work" && rm -rf reports && venv/bin/wstest -m fuzzingclient -s fuzzingclient.json >wstest.log 2>&1)
python3 - "$work/reports/index.json" <<'PY'
import collections, json, sys
cases = json.load(open(sys.argv[1]))["ringmq"]
good = {"OK", "NON-STRICT", "INFORMATIONAL"}
counts = collections.Counter(c["behavior"] for c in cases.values())
bad = [(k, c["behavior"], c["behaviorClose"]) for k, c in sorted(cases.items())
       if c["behavior"] not in good or c["behaviorClose"] not in good]
print("autobahn:", len(cases), "cases:", dict(counts))
for b in bad:
    print("  FAILED", *b)
sys.exit(1 if bad else 0)
PY
