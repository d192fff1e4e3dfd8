#!/usr/bin/env bash
# 100,000 idle connections on one machine (issue 19): activity-broker with both event sinks
# (MQTT and Kafka, tansu in memory) and Mosquitto, the same load on each.
#
#   cargo build --release -p adapter-tokio --bin activity-broker -p bench
#   cargo build -p tests --bin kafka-count
#   scripts/scale-100k.sh            # N=100000 SOURCES=8 HOLD=30 CONCURRENCY=500 by default
#
# The load tool's `idle` scenario opens N raw MQTT 3.1.1 connections from SOURCES loopback
# addresses (127.0.1.1, 127.0.1.2, ...: each its own range of ephemeral ports), each
# subscribing to `all/broadcast`; holds them HOLD seconds; publishes one message on
# `all/broadcast` and counts the clients it reaches; then closes them all. Beside it, a
# `SYSTEM/presence/#` consumer counts the connected and disconnected events, and at the end
# `kafka-count` counts them in Kafka. It prints the load tool's lines (conn/s, broker CPU
# while connecting and holding, RSS) and the counts; exits 1 when an event is missing or a
# client was not reached. Needs an open-file limit above N (it raises it to 1,048,576 where it
# may: root with CAP_SYS_RESOURCE), about 8 GB of
# free memory, and mosquitto and tansu on PATH (or tansu in ~/.cargo/bin). Everything is on
# loopback and every phase has a deadline.
set -euo pipefail

N=${N:-100000}
SOURCES=${SOURCES:-8}
HOLD=${HOLD:-30}
CONCURRENCY=${CONCURRENCY:-500}
B=${B:-target/release}
KAFKA_COUNT=${KAFKA_COUNT:-target/debug/kafka-count}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
TOPIC=all/broadcast

# Each of the broker and the load tool holds N sockets: raise the open-file limit as far as
# this process may (raising the hard limit needs CAP_SYS_RESOURCE; without it, the hard limit
# caps N, see docs/scale.md).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ $((N + 200)) -gt "$(ulimit -n)" ]; then
    echo "the open-file limit is $(ulimit -n) (hard $(ulimit -Hn)): too low for N=$N; set N below it" >&2
    exit 2
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}
TANSU=$(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "== activity-broker: $N idle connections from $SOURCES sources, output in $OUT"
PORT=$(free_port)
KAFKA=$(free_port)
"$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA" --advertised-listener-url \
    "tcp://127.0.0.1:$KAFKA" --storage-engine memory://tansu/ >"$OUT/tansu.log" 2>&1 &
PIDS+=($!)
wait_port "$KAFKA"
cat >"$OUT/broker.toml" <<EOF
listen = "127.0.0.1:$PORT"
max_connections = $((N + 1000))
sinks = ["mqtt", "kafka"]

[kafka]
brokers = ["127.0.0.1:$KAFKA"]
partitions = 1
flush_timeout_ms = 30000
EOF
RUST_LOG=warn "$B/activity-broker" --config "$OUT/broker.toml" >"$OUT/broker.log" 2>&1 &
BROKER=$!
PIDS+=("$BROKER")
wait_port "$PORT"
"$B/activity-bench" idle --addr "127.0.0.1:$PORT" --pid "$BROKER" --clients "$N" \
    --concurrency "$CONCURRENCY" --sources "$SOURCES" --subscribe "$TOPIC" --hold "$HOLD" \
    --broadcast "$TOPIC" --presence --settle 5 --max-seconds 600 --scenario 100k \
    --case activity-broker --header 2>&1 | tee "$OUT/activity-broker.txt"
# Kafka: every idle client, the broadcaster and the presence consumer, connected and gone.
EXPECTED=$((N + 2))
COUNTS=$("$KAFKA_COUNT" "127.0.0.1:$KAFKA" 15 SYSTEM.presence.connected SYSTEM.presence.disconnected)
echo "$COUNTS" | tee -a "$OUT/activity-broker.txt"
echo "Kafka: expected $EXPECTED of each" | tee -a "$OUT/activity-broker.txt"
echo "broker metrics: RSS $(grep VmHWM /proc/$BROKER/status)" | tee -a "$OUT/activity-broker.txt"
kill -TERM "$BROKER"
wait "$BROKER" || true

echo "== mosquitto: the same load (no events)"
MPORT=$(free_port)
cat >"$OUT/mosquitto.conf" <<EOF
listener $MPORT 127.0.0.1
allow_anonymous true
max_connections -1
EOF
mosquitto -c "$OUT/mosquitto.conf" >"$OUT/mosquitto.log" 2>&1 &
MOSQ=$!
PIDS+=("$MOSQ")
wait_port "$MPORT"
"$B/activity-bench" idle --addr "127.0.0.1:$MPORT" --pid "$MOSQ" --clients "$N" \
    --concurrency "$CONCURRENCY" --sources "$SOURCES" --subscribe "$TOPIC" --hold "$HOLD" \
    --broadcast "$TOPIC" --settle 5 --max-seconds 600 --scenario 100k --case mosquitto \
    2>&1 | tee "$OUT/mosquitto.txt"
kill -TERM "$MOSQ"
wait "$MOSQ" || true

# The checks: every client reached, every event counted.
fail=0
for f in "$OUT/activity-broker.txt" "$OUT/mosquitto.txt"; do
    grep -q "broadcast on $TOPIC: $N of $N idle clients" "$f" || { echo "FAIL: not every client got the broadcast ($f)"; fail=1; }
done
# The consumer sees every client's two events; its own `connected` too when the event reached
# the router after the consumer's SUBSCRIBE (events are published asynchronously).
SEEN=$(sed -n 's/.*: \([0-9]*\) presence events of .*/\1/p' "$OUT/activity-broker.txt")
[ "${SEEN:-0}" = $((2 * (N + 1))) ] || [ "${SEEN:-0}" = $((2 * (N + 1) + 1)) ] ||
    { echo "FAIL: SYSTEM/presence/# consumer saw ${SEEN:-none} events, expected $((2 * (N + 1)))"; fail=1; }
echo "$COUNTS" | grep -qx "SYSTEM.presence.connected $EXPECTED" || { echo "FAIL: Kafka connected"; fail=1; }
echo "$COUNTS" | grep -qx "SYSTEM.presence.disconnected $EXPECTED" || { echo "FAIL: Kafka disconnected"; fail=1; }
[ $fail = 0 ] && echo "PASS: every client reached, every connected and disconnected event counted"
exit $fail
