#!/usr/bin/env bash
# Benchmarks of issue 7: activity-broker side by side with rumqttd's own listener and Mosquitto,
# in one run on this machine, loopback only. Writes bench/results/ (raw.csv, summary.csv,
# table.md, throughput.svg, machine.txt, criterion.txt). Every step is bounded by `timeout`.
#
#   ./scripts/bench.sh
#
# Environment (defaults in brackets): BENCH_DURATION [5] seconds per throughput run,
# BENCH_REPEATS [3] runs per throughput case (the median is reported), BENCH_CLIENTS [10000]
# clients of the connect storm and of the idle test, BENCH_OUT [bench/results],
# BENCH_SKIP_CRITERION [unset] skips the core's criterion benchmarks, BENCH_ONLY_KAFKA [unset]
# runs only the Kafka sink measurement (kafka.md) and stops, BENCH_PROTOCOLS ["4 5"] the MQTT
# protocol levels the load clients speak in the throughput scenarios and the storm (each level
# its own scenarios; level 5 labelled "MQTT 5", and case 1 then uses rumqttd's v5 listener;
# the idle test speaks 3.1.1), BENCH_CASES [all] the case numbers to run (e.g. "1 3 6"),
# BENCH_ONLY_THROUGHPUT [unset] runs the throughput scenarios only (no storm, idle, Kafka or
# criterion). CARGO_TARGET_DIR, when set, is
# where the release binaries are built and run from.
#
# Cases: (1) rumqttd 0.20's own listener (bench/src/bin/rumqttd_baseline.rs);
# (2) activity-broker, every event off; (3) every event on, no SYSTEM/# consumer; (4) every
# event on with a SYSTEM/# consumer; (5) Kafka sink into tansu (only when `tansu` is
# installed); (6) Debian's mosquitto with its defaults (`mosquitto -p PORT`).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${BENCH_OUT:-bench/results}
DURATION=${BENCH_DURATION:-5}
REPEATS=${BENCH_REPEATS:-3}
CLIENTS=${BENCH_CLIENTS:-10000}
PROTOCOLS=${BENCH_PROTOCOLS:-4 5}
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT"
RAW=$OUT/raw.csv
LOG=$OUT/brokers.log
: >"$LOG"
started=$(date +%s)

echo "== building (release)"
timeout 900 cargo build --release -p bench -p adapter-tokio --bins

MOSQUITTO=$(command -v mosquitto || true)
[ -z "$MOSQUITTO" ] && [ -x /usr/sbin/mosquitto ] && MOSQUITTO=/usr/sbin/mosquitto

# The connect storm and the idle test need one descriptor per client in the tool and in the
# broker (separate processes), plus some room.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt $((CLIENTS + 200)) ]; then
    echo "== the hard open-file limit is $hard: $CLIENTS clients do not fit, using $((hard - 200))"
    CLIENTS=$((hard - 200))
fi

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "memory: $(grep MemTotal /proc/meminfo | awk '{printf "%.1f GiB", $2/1048576}')"
    echo "kernel: $(uname -r)"
    echo "rustc: $(rustc --version)"
    echo "mosquitto: $({ $MOSQUITTO -h 2>/dev/null || true; } | head -1)"
    echo "open-file hard limit: $hard; clients for storm and idle: $CLIENTS"
    echo "loadavg at start: $(cat /proc/loadavg)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt"

# tansu for case 5, only when installed (installing it takes 15+ minutes).
TANSU_PORT=19092
TANSU_PID=
KAFKA_NOTE=
if [ -z "${BENCH_ONLY_THROUGHPUT:-}" ] && command -v tansu >/dev/null; then
    tansu broker --listener-url tcp://127.0.0.1:$TANSU_PORT \
        --advertised-listener-url tcp://127.0.0.1:$TANSU_PORT \
        --storage-engine memory://tansu/ >>"$LOG" 2>&1 &
    TANSU_PID=$!
    trap '[ -n "$TANSU_PID" ] && kill $TANSU_PID 2>/dev/null || true' EXIT
    sleep 1
elif [ -n "${BENCH_ONLY_THROUGHPUT:-}" ]; then
    KAFKA_NOTE="case 5 (Kafka sink into tansu) skipped: BENCH_ONLY_THROUGHPUT"
else
    KAFKA_NOTE="case 5 (Kafka sink into tansu) skipped: tansu is not installed"
    echo "== $KAFKA_NOTE"
fi
echo "${KAFKA_NOTE:-case 5 ran against tansu}" >>"$OUT/machine.txt"

CASES=("1 rumqttd own listener" "2 events off" "3 events on" "4 events on + SYSTEM/# consumer")
[ -n "$TANSU_PID" ] && CASES+=("5 events on, Kafka sink (tansu)")
[ -n "$MOSQUITTO" ] && CASES+=("6 mosquitto")
[ -n "${BENCH_ONLY_KAFKA:-}" ] && CASES=()
if [ -n "${BENCH_CASES:-}" ]; then
    picked=()
    for c in "${CASES[@]}"; do
        for n in $BENCH_CASES; do [ "${c%% *}" = "$n" ] && picked+=("$c"); done
    done
    CASES=("${picked[@]}")
fi

# broker_cmd CASE PORT PROTOCOL: the broker command line of a case.
broker_cmd() {
    local addr=127.0.0.1:$2
    case "$1" in
        1*) if [ "$3" = 5 ]; then echo "$BIN/rumqttd-baseline $addr v5"; else echo "$BIN/rumqttd-baseline $addr v4"; fi ;;
        2*) echo "$BIN/activity-broker --config bench/configs/events-off.toml --listen $addr" ;;
        3* | 4*) echo "$BIN/activity-broker --config bench/configs/events-on.toml --listen $addr" ;;
        5*) echo "$BIN/activity-broker --config bench/configs/events-on.toml --listen $addr --kafka-brokers 127.0.0.1:$TANSU_PORT" ;;
        6*) echo "$MOSQUITTO -p $2" ;;
    esac
}

export RUST_LOG=warn
header=--header
# Below the kernel's ephemeral range (32768-60999 here): the storm's 10,000 client sockets,
# lingering in TIME_WAIT, would otherwise collide with the next broker's port.
port=22000
# run MODE SCENARIO CASE RUN [TOOL ARGS...]: one tool run against a fresh broker, speaking
# MQTT level $proto (3.1.1 unless set).
proto=4
run() {
    local mode=$1 scenario=$2 case=$3 runno=$4
    shift 4
    port=$((port + 1))
    [ "$proto" = 5 ] && scenario="$scenario, MQTT 5"
    local extra=()
    case "$case" in 4* | 5*) [ "$mode" = throughput ] && extra+=(--system-consumer) ;; esac
    case "$case" in 4* | 5*) [ "$mode" = storm ] && extra+=(--presence) ;; esac
    # shellcheck disable=SC2046
    if timeout 150 "$BIN/activity-bench" "$mode" --addr "127.0.0.1:$port" --scenario "$scenario" \
        --case "$case" --run "$runno" $header --broker-log "$LOG" --protocol "$proto" "$@" \
        "${extra[@]}" -- $(broker_cmd "$case" "$port" "$proto") >>"$RAW.tmp"; then
        header=
    else
        echo "   (run failed: $mode / $scenario / $case / $runno)" | tee -a "$OUT/machine.txt"
    fi
}

: >"$RAW.tmp"
echo "== throughput: $REPEATS x ${DURATION}s per case, MQTT levels $PROTOCOLS"
for runno in $(seq 1 "$REPEATS"); do
    for c in "${CASES[@]}"; do
        for proto in $PROTOCOLS; do
            run throughput "1 pub/1 sub QoS 1 100 B" "$c" "$runno" \
                --publishers 1 --subscribers 1 --qos 1 --payload 100 --duration "$DURATION"
            run throughput "10 pubs/10 subs QoS 0 100 B" "$c" "$runno" \
                --publishers 10 --subscribers 10 --qos 0 --payload 100 --duration "$DURATION"
            run throughput "fan-out 1 pub/100 subs QoS 0 100 B" "$c" "$runno" \
                --publishers 1 --subscribers 100 --qos 0 --payload 100 --duration "$DURATION"
        done
    done
done
[ -n "${BENCH_ONLY_THROUGHPUT:-}" ] && CASES_LOAD=() || CASES_LOAD=("${CASES[@]}")
echo "== connect storm: $CLIENTS clients, MQTT levels $PROTOCOLS"
for c in "${CASES_LOAD[@]}"; do
    for proto in $PROTOCOLS; do
        run storm "connect storm $CLIENTS clients" "$c" 1 --clients "$CLIENTS" --concurrency 200
    done
done
proto=4
echo "== idle: $CLIENTS connections"
for c in "${CASES_LOAD[@]}"; do
    run idle "idle $CLIENTS connections" "$c" 1 --clients "$CLIENTS" --concurrency 200
done

# metric PORT NAME: the sum of the samples of metric NAME (any labels) at 127.0.0.1:PORT.
metric() {
    curl -s --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d", s }'
}

# kafka_run LABEL [FLAGS...]: the heaviest event load (10 publishers, 10 subscribers, QoS 0;
# one message event per publish) on activity-broker with every event on, FLAGS added; the
# broker's metrics count events emitted, handed to Kafka, acknowledged by it, dropped, failed.
kafka_run() {
    local label=$1
    shift
    port=$((port + 1))
    local mport=$((port + 1000))
    "$BIN/activity-broker" --config bench/configs/events-on.toml --listen "127.0.0.1:$port" \
        --metrics-listen "127.0.0.1:$mport" "$@" >>"$LOG" 2>&1 &
    local pid=$! i
    for i in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$mport/metrics" && break; sleep 0.1; done
    # With the Kafka sink, the load starts once the sink can send (its topics exist): events
    # from before would only measure how long topic creation takes.
    if [ $# -gt 0 ]; then
        for i in $(seq 100); do [ "$(metric $mport activity_kafka_ready)" = 1 ] && break; sleep 0.1; done
    fi
    local t0 t1 t2 e0 e1 d1 d2
    e0=$(metric $mport activity_events_emitted_total)
    t0=$(date +%s.%N)
    timeout 150 "$BIN/activity-bench" throughput --addr "127.0.0.1:$port" --pid "$pid" \
        --scenario "kafka sink" --case "$label" --publishers 10 --subscribers 10 --qos 0 \
        --payload 100 --duration "$DURATION" >>"$OUT/kafka.csv" ||
        echo "   (run failed: kafka / $label)" | tee -a "$OUT/machine.txt"
    t1=$(date +%s.%N)
    e1=$(metric $mport activity_events_emitted_total)
    d1=$(metric $mport activity_kafka_delivered_total)
    # Then Kafka may take up to 120 s more to acknowledge what is still waiting.
    for i in $(seq 1200); do
        [ "$(metric $mport activity_kafka_buffered)" = 0 ] && break
        sleep 0.1
    done
    t2=$(date +%s.%N)
    d2=$(metric $mport activity_kafka_delivered_total)
    printf '| %s | %d | %.0f | %d | %d | %.0f | %.1f | %d | %d | %d |\n' "$label" \
        $((e1 - e0)) "$(echo "($e1 - $e0) / ($t1 - $t0)" | bc -l)" \
        "$(metric $mport 'activity_events_sunk_total{sink="kafka"}')" "$d2" \
        "$(echo "$d1 / ($t1 - $t0)" | bc -l)" "$(echo "$t2 - $t1" | bc -l)" \
        "$(metric $mport activity_kafka_dropped_total)" "$(metric $mport activity_kafka_failed_total)" \
        "$(metric $mport activity_kafka_buffered)" >>"$OUT/kafka.md"
    kill "$pid" && wait "$pid" || true
}

if [ -n "$TANSU_PID" ]; then
    echo "== Kafka sink: 10 pubs/10 subs QoS 0 100 B, ${DURATION}s, with and without the sink"
    : >"$OUT/kafka.csv"
    {
        echo "| sinks | events emitted | emitted/s | handed to Kafka | delivered to Kafka | delivered/s during the run | s to deliver the rest | dropped | failed | left |"
        echo "|---|---|---|---|---|---|---|---|---|---|"
    } >"$OUT/kafka.md"
    # Each run gets a fresh tansu: its in-memory storage slows down as it fills (delivery
    # latency about doubled by the third run of 1.3 million events into one instance), which
    # would measure tansu, not the sink.
    kafka_port=$((TANSU_PORT + 1))
    for runno in $(seq 1 "$REPEATS"); do
        kafka_run "mqtt (run $runno)"
        kafka_port=$((kafka_port + 1))
        tansu broker --listener-url "tcp://127.0.0.1:$kafka_port" \
            --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
            --storage-engine memory://tansu/ >>"$LOG" 2>&1 &
        kafka_tansu=$!
        sleep 1
        kafka_run "mqtt + kafka (run $runno)" --kafka-brokers "127.0.0.1:$kafka_port"
        kill "$kafka_tansu" && wait "$kafka_tansu" || true
    done
    cat "$OUT/kafka.md"
fi
if [ -n "${BENCH_ONLY_KAFKA:-}" ]; then
    rm -f "$RAW.tmp"
    exit 0
fi

mv "$RAW.tmp" "$RAW"
echo "loadavg at end of broker runs: $(cat /proc/loadavg)" >>"$OUT/machine.txt"

"$BIN/activity-bench" report --input "$RAW" --summary "$OUT/summary.csv" \
    --markdown "$OUT/table.md" --svg "$OUT/throughput.svg"

if [ -z "${BENCH_SKIP_CRITERION:-}" ] && [ -z "${BENCH_ONLY_THROUGHPUT:-}" ]; then
    echo "== criterion: activity-core hot paths"
    timeout 600 cargo bench -p activity-core --bench hot_paths 2>&1 |
        grep -E '^[A-Za-z_0-9+]+/|time:' >"$OUT/criterion.txt" || true
    cat "$OUT/criterion.txt"
    echo "loadavg after criterion: $(cat /proc/loadavg)" >>"$OUT/machine.txt"
fi

cat "$OUT/table.md"
echo "== done in $(($(date +%s) - started)) s; results in $OUT"
