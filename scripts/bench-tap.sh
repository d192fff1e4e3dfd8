#!/usr/bin/env bash
# Tap mode benchmark (issue 8): the same load clients talking to Debian's mosquitto directly
# and through activity-broker --upstream (the tap) in front of that mosquitto, in one run on this
# machine, loopback only. Writes bench/results/tap/ (raw.csv, summary.csv, table.md,
# throughput.svg, machine.txt). Every step is bounded by `timeout`.
#
#   ./scripts/bench-tap.sh
#
# Environment (defaults in brackets): BENCH_DURATION [5] seconds per throughput run,
# BENCH_REPEATS [3] runs per case (the median is reported), BENCH_OUT [bench/results/tap].
#
# Cases: (1) mosquitto 2.x directly (`mosquitto -p PORT`); (2) the tap with every event kind
# off, a pure MQTT-parsing relay; (3) the tap with every event on (published to the same
# mosquitto by the tap's `broker` connection). In cases 2 and 3 a fresh mosquitto is started on
# a second port for every run, and the load tool measures the tap's process (CPU, RSS), not
# mosquitto's. The "ratio to case 1" column is the tap's throughput relative to direct.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${BENCH_OUT:-bench/results/tap}
DURATION=${BENCH_DURATION:-5}
REPEATS=${BENCH_REPEATS:-3}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release
mkdir -p "$OUT"
RAW=$OUT/raw.csv
LOG=$OUT/brokers.log
: >"$LOG"
started=$(date +%s)

echo "== building (release)"
timeout 1800 cargo build --release -p bench -p adapter-tokio --bins

MOSQUITTO=$(command -v mosquitto || true)
[ -z "$MOSQUITTO" ] && [ -x /usr/sbin/mosquitto ] && MOSQUITTO=/usr/sbin/mosquitto
if [ -z "$MOSQUITTO" ]; then
    echo "mosquitto is not installed (apt-get install mosquitto)" >&2
    exit 1
fi

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "kernel: $(uname -r)"
    echo "rustc: $(rustc --version)"
    echo "mosquitto: $({ $MOSQUITTO -h 2>/dev/null || true; } | head -1)"
    echo "duration: ${DURATION}s x $REPEATS runs per case"
    echo "loadavg at start: $(cat /proc/loadavg)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt"

CASES=("1 mosquitto direct" "2 tap, events off" "3 tap, events on")

UPSTREAM_PID=
cleanup() { [ -n "$UPSTREAM_PID" ] && kill "$UPSTREAM_PID" 2>/dev/null || true; }
trap cleanup EXIT

# broker_cmd CASE PORT UPSTREAM_PORT: the command line the load tool starts and measures.
broker_cmd() {
    local addr=127.0.0.1:$2 upstream=127.0.0.1:$3
    case "$1" in
        1*) echo "$MOSQUITTO -p $2" ;;
        2*) echo "$BIN/activity-broker --config bench/configs/events-off.toml --listen $addr --upstream $upstream" ;;
        3*) echo "$BIN/activity-broker --config bench/configs/events-on.toml --listen $addr --upstream $upstream" ;;
    esac
}

# wait_port PORT: until something accepts on 127.0.0.1:PORT (at most 10 s).
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

export RUST_LOG=warn
header=--header
# Below the kernel's ephemeral range (32768-60999 here), where client sockets cannot collide.
port=26000
# run SCENARIO CASE RUN [TOOL ARGS...]: one throughput run against a fresh broker (and, for
# the tap, a fresh upstream mosquitto).
run() {
    local scenario=$1 case=$2 runno=$3
    shift 3
    port=$((port + 2))
    local upstream=$((port + 1))
    case "$case" in
        1*) ;;
        *)
            "$MOSQUITTO" -p "$upstream" >>"$LOG" 2>&1 &
            UPSTREAM_PID=$!
            wait_port "$upstream"
            ;;
    esac
    # shellcheck disable=SC2046
    if timeout 150 "$BIN/activity-bench" throughput --addr "127.0.0.1:$port" \
        --scenario "$scenario" --case "$case" --run "$runno" $header --broker-log "$LOG" "$@" \
        -- $(broker_cmd "$case" "$port" "$upstream") >>"$RAW.tmp"; then
        header=
    else
        echo "   (run failed: $scenario / $case / $runno)" | tee -a "$OUT/machine.txt"
    fi
    cleanup
    [ -n "$UPSTREAM_PID" ] && wait "$UPSTREAM_PID" 2>/dev/null || true
    UPSTREAM_PID=
}

: >"$RAW.tmp"
echo "== throughput: $REPEATS x ${DURATION}s per case"
for runno in $(seq 1 "$REPEATS"); do
    for c in "${CASES[@]}"; do
        run "1 pub/1 sub QoS 1 100 B" "$c" "$runno" \
            --publishers 1 --subscribers 1 --qos 1 --payload 100 --duration "$DURATION"
        run "10 pubs/10 subs QoS 0 100 B" "$c" "$runno" \
            --publishers 10 --subscribers 10 --qos 0 --payload 100 --duration "$DURATION"
        run "fan-out 1 pub/100 subs QoS 0 100 B" "$c" "$runno" \
            --publishers 1 --subscribers 100 --qos 0 --payload 100 --duration "$DURATION"
    done
done
mv "$RAW.tmp" "$RAW"
echo "loadavg at end: $(cat /proc/loadavg)" >>"$OUT/machine.txt"

"$BIN/activity-bench" report --input "$RAW" --summary "$OUT/summary.csv" \
    --markdown "$OUT/table.md" --svg "$OUT/throughput.svg" \
    --title "Delivered messages per second, mosquitto direct vs through the tap (median of runs)"

cat "$OUT/table.md"
echo "== done in $(($(date +%s) - started)) s; results in $OUT"
