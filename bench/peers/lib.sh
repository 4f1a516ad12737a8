# bench/peers/lib.sh: install, configure, start and stop the brokers that ringmq is compared
# with (mosquitto, nats-server, rumqttd) and ringmq itself, each on loopback on free ports.
# Sourced by bench/compare.sh and bench/peers/{start,stop}.sh; needs bash 4.
#
# Adapted from ../shared/peers/start-peers.sh. What changed, and why:
#   - Free ports instead of 1883/8083/1884/...: comparisons run while other engineers use
#     the well-known ports. Ports are picked below the ephemeral range
#     (net.ipv4.ip_local_port_range), so no client socket of the swarm can take one.
#   - One broker at a time, started fresh for each run (idle memory per connection is
#     measured from an unused process) and stopped by PID (with a start-time check against
#     PID reuse), never by name.
#   - mosquitto: `set_tcp_nodelay true` (without it, small publishes to each subscriber wait
#     on Nagle/delayed ACK and latency measures the kernel's 40 ms timer, not the broker);
#     `max_connections -1` (no cap); `max_queued_messages 1000` and
#     `max_inflight_messages 64` stated explicitly (the first is the default, the second is
#     raised from 20 to the swarm's --inflight default, so QoS 1 is not held back by a
#     smaller window than ringmq's 64). Its listen backlog is fixed at 100 in 2.0.11 (not
#     configurable): the swarm's --max-pending default of 64 stays under it.
#   - nats-server: no NATS client port in use is needed, but the server always opens one:
#     it gets a free port too; no HTTP monitor port. JetStream (which nats needs for MQTT
#     sessions and QoS 1) stores under the run directory, wiped per start.
#     `max_connections: 1000000` (default 64k). MQTT 3.1.1 only, QoS 0/1 only (2.9).
#   - rumqttd: no console or Prometheus listener (ports nobody reads);
#     `next_connection_delay_ms = 0` (the default config sleeps 1 ms after every accept,
#     which caps connects at 1,000/s); `max_connections` raised to 100,010 so the cap
#     is never the router's; payload limit 256 KiB; `dynamic_filters = true` on every
#     listener (without it a publish to a topic nobody subscribes to is an error that
#     drops the publisher's connection). Its WebSocket listener speaks MQTT 3.1.1
#     only (rumqttd 0.20 wires ws to the v4 codec). tokio's listen backlog is 1024.
#
# TLS (compare.sh --tls): `make_tls_certs DIR` writes a CA and a server certificate for
# localhost and 127.0.0.1 (ECDSA P-256, openssl CLI) into DIR/tls; with PEERS_TLS=DIR/tls
# set, start_mosquitto and start_ringmq put both their listeners (MQTT and WebSocket) under
# TLS with that certificate. nats-server and rumqttd are not set up for TLS here.
#
# Every start_* function sets BROKER_PID and writes DIR/NAME.{pid,start,broker.log}.

PEERS_CACHE=${PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ringmq-peers}
RUMQTTD_VERSION=0.20.0
RUMQTTD_BIN=${RUMQTTD_BIN:-$PEERS_CACHE/cargo-root/bin/rumqttd}

peers_say() { echo "compare: $*" >&2; }

mosquitto_bin() {
  command -v mosquitto 2>/dev/null && return 0
  [[ -x /usr/sbin/mosquitto ]] && echo /usr/sbin/mosquitto
}
nats_bin() {
  command -v nats-server 2>/dev/null && return 0
  [[ -x /usr/sbin/nats-server ]] && echo /usr/sbin/nats-server
}
rumqttd_bin() { [[ -x $RUMQTTD_BIN ]] && echo "$RUMQTTD_BIN"; }

# peers_install NAME...: install what is missing (Debian packages with apt-get, rumqttd
# with `cargo install` into $PEERS_CACHE, outside the repository). Returns 1 if any is
# still missing afterwards; says which.
peers_install() {
  local apt_need=() n rc=0 sudo=
  ((EUID == 0)) || sudo=sudo
  for n in "$@"; do
    case $n in
      mosquitto) [[ -n $(mosquitto_bin) ]] || apt_need+=(mosquitto) ;;
      nats) [[ -n $(nats_bin) ]] || apt_need+=(nats-server) ;;
    esac
  done
  if ((${#apt_need[@]})); then
    peers_say "installing ${apt_need[*]} (apt-get)"
    # Debian's policy-rc.d in containers keeps the packaged services from starting; on a
    # full system, the packaged mosquitto/nats services may start on 1883/4222 — harmless
    # here, since every broker of a comparison runs on its own free ports.
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      "${apt_need[@]}"; } >"$PEERS_CACHE/apt.log" 2>&1 ||
      peers_say "apt-get install ${apt_need[*]} failed, see $PEERS_CACHE/apt.log"
  fi
  for n in "$@"; do
    if [[ $n == rumqttd && -z $(rumqttd_bin) ]]; then
      peers_say "building rumqttd $RUMQTTD_VERSION with cargo install (2-4 min on 2 cores)," \
        "log $PEERS_CACHE/rumqttd-build.log"
      # No --locked: its lockfile pins metrics 0.22.1, which fails on rustc >= 1.9x (E0521).
      # CARGO_TARGET_DIR is reset so a caller's setting does not redirect this build.
      (cd "$PEERS_CACHE" && CARGO_TARGET_DIR= cargo install rumqttd --version "$RUMQTTD_VERSION" \
        --root "$PEERS_CACHE/cargo-root" --target-dir "$PEERS_CACHE/cargo-target") \
        >"$PEERS_CACHE/rumqttd-build.log" 2>&1 ||
        peers_say "rumqttd build failed, see $PEERS_CACHE/rumqttd-build.log"
    fi
  done
  for n in "$@"; do
    case $n in
      mosquitto) [[ -n $(mosquitto_bin) ]] || { peers_say "mosquitto is not installed"; rc=1; } ;;
      nats) [[ -n $(nats_bin) ]] || { peers_say "nats-server is not installed"; rc=1; } ;;
      rumqttd) [[ -n $(rumqttd_bin) ]] || { peers_say "rumqttd is not installed"; rc=1; } ;;
    esac
  done
  return $rc
}

# free_port VAR: a TCP port on no socket at all now, below the ephemeral range, and not
# handed out before by this shell; stored in VAR.
declare -A _PEERS_PORTS_TAKEN=()
free_port() {
  local lo p _
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
  ((lo > 12000)) || lo=32768
  for _ in $(seq 1 500); do
    p=$((lo - 12000 + (RANDOM % 12000)))
    [[ -n ${_PEERS_PORTS_TAKEN[$p]:-} ]] && continue
    if [[ -z $(ss -Htan "sport = :$p" 2>/dev/null) ]]; then
      _PEERS_PORTS_TAKEN[$p]=1
      printf -v "$1" %d "$p"
      return 0
    fi
  done
  peers_say "no free port found"
  return 1
}

_start_time() { awk '{sub(/.*\) /, ""); print $20}' "/proc/$1/stat" 2>/dev/null; }

# launch DIR NAME CMD...: start CMD detached (own session, stdin closed, output to
# DIR/NAME.broker.log), write DIR/NAME.pid and DIR/NAME.start; BROKER_PID is the broker's PID.
launch() {
  local dir=$1 name=$2
  shift 2
  setsid "$@" >"$dir/$name.broker.log" 2>&1 </dev/null &
  BROKER_PID=$!
  echo "$BROKER_PID" >"$dir/$name.pid"
  _start_time "$BROKER_PID" >"$dir/$name.start"
}

# wait_listen PID NAME PORT...: wait (up to 30 s) until every PORT has a listening socket;
# fail at once if PID exits.
wait_listen() {
  local pid=$1 name=$2 port
  shift 2
  for port in "$@"; do
    for _ in $(seq 1 300); do
      if ! kill -0 "$pid" 2>/dev/null; then
        peers_say "$name (pid $pid) exited before listening on $port"
        return 1
      fi
      [[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]] && continue 2
      sleep 0.1
    done
    peers_say "$name (pid $pid) not listening on 127.0.0.1:$port after 30 s"
    return 1
  done
}

# stop_broker DIR NAME: SIGTERM the PID in DIR/NAME.pid (if it is still the process that
# was started), SIGKILL after 10 s; remove the PID file.
stop_broker() {
  local dir=$1 name=$2 pid want have
  [[ -f $dir/$name.pid ]] || return 0
  pid=$(cat "$dir/$name.pid")
  want=$(cat "$dir/$name.start" 2>/dev/null || true)
  have=$(_start_time "$pid")
  if [[ -n $have && ( -z $want || $have == "$want" ) ]]; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      peers_say "$name (pid $pid) still running 10 s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  # Reap it if it is our child (it is when launched from this shell).
  wait "$pid" 2>/dev/null || true
  rm -f "$dir/$name.pid" "$dir/$name.start"
}

# Brokers inherit the open-file limit: raise the soft limit to the hard one (15,000 idle
# connections need more than the usual 1,024).
raise_nofile() { ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; }

# make_tls_certs DIR: DIR/tls/{ca.pem,server.pem,server.key}, ECDSA P-256, valid 30 days.
make_tls_certs() {
  local d=$1/tls
  mkdir -p "$d" || return 1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=ringmq bench CA" -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
      -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null &&
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
      "keyUsage=digitalSignature" "extendedKeyUsage=serverAuth" >"$d/ext.cnf" &&
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
      -CAcreateserial -days 30 -extfile "$d/ext.cnf" -out "$d/server.pem" 2>/dev/null &&
    # mosquitto started as root reads its files as the user mosquitto: a throwaway key.
    chmod 644 "$d/server.key" ||
    { peers_say "openssl could not make the TLS certificates in $d"; return 1; }
}

# start_mosquitto DIR TCP_PORT WS_PORT [SETTINGS] (both under TLS when PEERS_TLS is set);
# SETTINGS, configuration lines, replace the default: no persistence, notices logged.
start_mosquitto() {
  local dir=$1 tcp=$2 ws=$3 tls=
  local settings=${4:-"persistence false
log_type notice"}
  if [[ -n ${PEERS_TLS:-} ]]; then
    tls="certfile $PEERS_TLS/server.pem
keyfile $PEERS_TLS/server.key"
  fi
  cat >"$dir/mosquitto.conf" <<CONF
# Debian bookworm's mosquitto 2.0.11 ignores the bind address of websockets listeners
# (eclipse-mosquitto/mosquitto#3045, fixed in 2.0.12): the WS port listens on all addresses.
per_listener_settings false
allow_anonymous true
$settings
log_dest stdout
log_type error
log_type warning
connection_messages false
max_connections -1
set_tcp_nodelay true
max_queued_messages 1000
max_inflight_messages 64
listener $tcp 127.0.0.1
protocol mqtt
$tls
listener $ws 127.0.0.1
protocol websockets
$tls
CONF
  launch "$dir" mosquitto "$(mosquitto_bin)" -c "$dir/mosquitto.conf"
  wait_listen "$BROKER_PID" mosquitto "$tcp" "$ws"
}

# start_nats DIR MQTT_PORT WS_PORT (the NATS client port is picked here)
start_nats() {
  local dir=$1 tcp=$2 ws=$3 natsport
  free_port natsport || return 1
  rm -rf "$dir/nats-js"
  cat >"$dir/nats.conf" <<CONF
server_name: ringmq_compare_nats
listen: 127.0.0.1:$natsport
max_connections: 1000000
jetstream { store_dir: "$dir/nats-js", max_memory_store: 1GB, max_file_store: 4GB }
mqtt { listen: 127.0.0.1:$tcp }
websocket { listen: "127.0.0.1:$ws", no_tls: true, compression: false }
CONF
  launch "$dir" nats "$(nats_bin)" -c "$dir/nats.conf"
  wait_listen "$BROKER_PID" nats "$tcp" "$ws"
}

# start_rumqttd DIR V4_PORT V5_PORT WS_PORT
start_rumqttd() {
  local dir=$1 v4=$2 v5=$3 ws=$4
  cat >"$dir/rumqttd.toml" <<CONF
id = 0
[router]
id = 0
max_connections = 100010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:$v4"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 262144
    max_inflight_count = 100
    dynamic_filters = true
[v5.1]
name = "v5-1"
listen = "127.0.0.1:$v5"
next_connection_delay_ms = 0
    [v5.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 262144
    max_inflight_count = 100
    dynamic_filters = true
[ws.1]
name = "ws-1"
listen = "127.0.0.1:$ws"
next_connection_delay_ms = 0
    [ws.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 262144
    max_inflight_count = 100
    dynamic_filters = true
CONF
  launch "$dir" rumqttd "$(rumqttd_bin)" -q -c "$dir/rumqttd.toml"
  wait_listen "$BROKER_PID" rumqttd "$v4" "$v5" "$ws"
}

# start_ringmq DIR BIN TCP_PORT WS_PORT METRICS_PORT [EXTRA ARGS...] (both under TLS when
# PEERS_TLS is set)
start_ringmq() {
  local dir=$1 bin=$2 tcp=$3 ws=$4 metrics=$5 listen
  shift 5
  listen=(--mqtt "127.0.0.1:$tcp" --ws "127.0.0.1:$ws")
  if [[ -n ${PEERS_TLS:-} ]]; then
    listen=(--mqtt none --ws none --mqtts "127.0.0.1:$tcp" --wss "127.0.0.1:$ws"
      --tls-cert "$PEERS_TLS/server.pem" --tls-key "$PEERS_TLS/server.key")
  fi
  launch "$dir" ringmq "$bin" "${listen[@]}" \
    --metrics "127.0.0.1:$metrics" --data-dir "$dir/ringmq-data" "$@"
  wait_listen "$BROKER_PID" ringmq "$tcp" "$ws" "$metrics"
}

# cpu_idle_pct SECONDS: sets IDLE to the whole machine's idle CPU in percent (0-100) over
# SECONDS. iowait counts as idle: this kernel books an idle CPU as iowait while any task
# waits on the disk, and other people's builds here keep one waiting most of the time.
cpu_idle_pct() {
  local a b total=0 i
  read -r -a a < <(head -1 /proc/stat)
  sleep "$1"
  read -r -a b < <(head -1 /proc/stat)
  # cpu user nice system idle iowait irq softirq steal
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  IDLE=0
  ((total > 0)) && IDLE=$((100 * (b[4] - a[4] + b[5] - a[5]) / total))
  return 0
}

# wait_idle PCT MAX_S: wait (at most MAX_S seconds) until the machine is at least PCT %
# idle over 3 s; IDLE is the last figure. On a machine shared with other people's builds
# this keeps a run from measuring their compiler instead of the broker. No subshell, so
# that a signal to the caller is handled within 3 s.
wait_idle() {
  local want=$1 max=$2 start=$SECONDS
  while :; do
    cpu_idle_pct 3
    ((IDLE >= want || SECONDS - start >= max)) && return 0
  done
}

# cpu_snapshot PID: "MACHINE_BUSY_TICKS PID_TICKS UPTIME_S" (clock ticks; PID's utime + stime).
cpu_snapshot() {
  local a busy=0 i p
  read -r -a a < <(head -1 /proc/stat)
  for i in 1 2 3 6 7 8; do busy=$((busy + a[i])); done   # user nice system irq softirq steal
  p=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0)
  echo "$busy ${p:-0} $(cut -d' ' -f1 /proc/uptime)"
}
