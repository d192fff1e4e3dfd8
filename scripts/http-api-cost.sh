#!/usr/bin/env bash
# Events on, without vs with the HTTP API and 10 SSE watchers (curl -N), interleaved rounds.
# Usage: scripts/http-api-cost.sh TARGET_DIR [ROUNDS] [KINDS]   (from the repository root; TARGET_DIR
# holds release builds of activity-broker and activity-bench: cargo build --release -p adapter-tokio
# -p bench). KINDS: the watchers' ?kinds= (e.g. connected,disconnected, what a presence dashboard
# watches); none: every kind. CASES (env): the cases to run, a regular expression (default: all).
# CONF (env): the broker configuration (default bench/configs/events-on.toml).
# BASE (env): a second TARGET_DIR (e.g. a build of main): every case then runs on both brokers in
# each round, BASE's first, labelled "base: CASE" and "new: CASE" (the bench of TARGET_DIR loads
# both); `scripts/http-api-ratios.py FILE` prints the same-round ratios of such a CSV.
# PERF (env): a directory; each broker is then recorded by `perf record -g` during
# the load, into PERF/<round>-<scenario>-<case>.data (`perf report -i FILE --no-children`).
set -u
T=$1; ROUNDS=${2:-3}; KINDS=${3:-}; CASES=${CASES:-.}; BASE=${BASE:-}; PERF=${PERF:-}
QUERY=""; [ -n "$KINDS" ] && QUERY="?kinds=$KINDS"
BENCH=$T/release/activity-bench
CONF=${CONF:-bench/configs/events-on.toml}
PORT=17883; HPORT=17880
builds=("new=$T"); [ -n "$BASE" ] && builds=("base=$BASE" "new=$T")
[ -n "$PERF" ] && mkdir -p "$PERF"
first=1
for round in $(seq 1 "$ROUNDS"); do
  for scenario in "--publishers 1 --subscribers 1 --qos 1" "--publishers 10 --subscribers 10 --qos 0"; do
    for case in "events on" "events on + HTTP API + 10 SSE watchers" "events on + SYSTEM/# consumer" "events on + SYSTEM/# consumer + HTTP API + 10 SSE watchers"; do
      echo "$case" | grep -qE "$CASES" || continue
      for build in "${builds[@]}"; do
      name=${build%%=*}; B=${build#*=}/release/activity-broker
      label="$case${KINDS:+ (kinds=$KINDS)}"; [ -n "$BASE" ] && label="$name: $label"
      extra=(); flags=()
      case "$case" in *"HTTP API"*) extra=(--http-listen 127.0.0.1:$HPORT);; esac
      case "$case" in *"consumer"*) flags=(--system-consumer);; esac
      $B --config $CONF --listen 127.0.0.1:$PORT "${extra[@]}" 2>/dev/null & bpid=$!
      for i in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
      watchers=()
      if ((${#extra[@]})); then
        for w in $(seq 1 10); do curl -sN "http://127.0.0.1:$HPORT/api/v1/events$QUERY" > /dev/null 2>&1 & watchers+=($!); done
        for i in $(seq 1 100); do
          n=$(curl -s http://127.0.0.1:$HPORT/metrics | awk '$1=="activity_http_event_streams"{print $2}')
          [ "$n" = "10" ] && break; sleep 0.1
        done
      fi
      perf_pid=
      if [ -n "$PERF" ]; then
        s=$(echo "$scenario" | tr -d ' -'); c=$(echo "$name-$case" | tr -c 'a-zA-Z0-9\n' '_')
        perf record -g -o "$PERF/$round-$s-$c.data" -p $bpid 2>/dev/null & perf_pid=$!
      fi
      h=(); ((first)) && h=(--header); first=0
      $BENCH throughput --addr 127.0.0.1:$PORT --scenario "$(echo $scenario | sed 's/--//g')" --case "$label" --run $round \
        $scenario --payload 100 --duration 5 "${flags[@]}" --pid $bpid "${h[@]}"
      if [ -n "$perf_pid" ]; then kill -INT $perf_pid; wait $perf_pid 2>/dev/null; fi
      if ((${#extra[@]})); then
        curl -s http://127.0.0.1:$HPORT/metrics | grep -E '^activity_http_event_stream_lagged_total|^activity_events_dropped_total' >&2
      fi
      kill ${watchers[@]} 2>/dev/null; kill $bpid; wait $bpid 2>/dev/null
      wait 2>/dev/null
      done
    done
  done
done
