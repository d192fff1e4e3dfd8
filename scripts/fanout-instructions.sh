#!/usr/bin/env bash
# Instructions per fan-out delivery (1 publisher, 100 subscribers, QoS 0, 100 B), counted by
# callgrind per thread, for machines without hardware counters (docs/scale.md, "Fan-out beside
# rumqttd's own listener").
# Usage: scripts/fanout-instructions.sh LABEL PORT -- BROKER COMMAND...   (from the repository
# root; BENCH (env): the load tool, default target/release/activity-bench; OUT (env): where the
# callgrind files go, default fanout-cg).
# The broker runs under valgrind twice, with 2,000 and with 6,000 messages; the difference of
# the two counts is 400,000 deliveries without the connects and subscribes. Prints one line:
# LABEL, instructions per delivery on the front (every thread but the router's), on the router
# thread (the one that runs Router::run) and in all. Valgrind runs one thread at a time and
# counts user space only (no kernel time for the sockets).
set -u
# Valgrind from Debian when missing (the test command does not run this script).
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; } >/dev/null
label=$1; port=$2; shift 3
BENCH=${BENCH:-target/release/activity-bench}
OUT=${OUT:-fanout-cg}
mkdir -p "$OUT"
declare -A total router delivered
for count in 2000 6000; do
  prefix="$OUT/$label-$count"
  rm -f "$prefix".*
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$prefix.%p" "$@" \
    >"$prefix.log" 2>&1 &
  vpid=$!
  for _ in $(seq 150); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.2; done
  # --backlog 200: the run's tail reaches the subscribers within the load tool's 1 s drain.
  row=$("$BENCH" throughput --addr 127.0.0.1:"$port" --pid $vpid --scenario fanout --case "$label" \
    --publishers 1 --subscribers 100 --qos 0 --payload 100 --count $count --backlog 200 \
    --duration 300 2>"$prefix.bench.log")
  kill $vpid; wait $vpid 2>/dev/null
  delivered[$count]=$(echo "$row" | cut -d, -f5)
  read -r t r < <(python3 - "$prefix.$vpid" <<'PY'
import glob, re, sys
total = router = 0
for f in glob.glob(sys.argv[1] + "-*"):
    text = open(f).read()
    n = int(re.search(r"^totals: (\d+)", text, re.M).group(1))
    total += n
    if "Router::run" in text:
        router += n
print(total, router)
PY
)
  total[$count]=$t; router[$count]=$r
done
if [ "${delivered[2000]}" != 200000 ] || [ "${delivered[6000]}" != 600000 ]; then
  echo "$label: deliveries ${delivered[2000]} / ${delivered[6000]}, not 200000 / 600000: not counted" >&2
  exit 1
fi
python3 - "$label" "${total[2000]}" "${router[2000]}" "${total[6000]}" "${router[6000]}" <<'PY'
import sys
label, t1, r1, t2, r2 = sys.argv[1], *map(int, sys.argv[2:])
d = 400_000
total, router = (t2 - t1) / d, (r2 - r1) / d
print(f"{label}: front {total - router:.0f}, router {router:.0f}, total {total:.0f} instructions per delivery")
PY
