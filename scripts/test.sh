#!/usr/bin/env bash
# The test command: installs on a fresh machine everything the tests need, then runs them all.
# Usage: ./scripts/test.sh            (CI calls exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "free disk space (a fresh build of everything below needs about 6 GB)"
df -h . | tail -n 1
avail_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "${avail_kb:-0}" -lt $((6 * 1024 * 1024)) ]; then
  echo "test.sh: less than 6 GB free here; the build below may fail with 'No space left on device'" >&2
fi

step "system packages (Debian): mosquitto, mosquitto-clients, binutils-arm-none-eabi, qemu-user, iproute2, python3, chromium, chromium-driver, nodejs, npm, redis-server, postgresql, curl"
need_apt=()
command -v mosquitto >/dev/null || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null || need_apt+=(mosquitto-clients)
command -v arm-none-eabi-size >/dev/null || need_apt+=(binutils-arm-none-eabi)
# `qemu-arm` runs the firmware's hand-written memcpy, memmove, memset, 64-bit division and
# shifts (adapter-embassy/asmtest, from the firmware's build.sh).
command -v qemu-arm >/dev/null || need_apt+=(qemu-user)
# `ip` sets up the TAP device of the embassy gateway's network-namespace tests.
command -v ip >/dev/null || need_apt+=(iproute2)
# `python3` runs scripts/check-imports.py (standard library only).
command -v python3 >/dev/null || need_apt+=(python3)
# pip installs paho-mqtt below (when python3 comes from Debian, so does its pip).
{ command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; } || need_apt+=(python3-pip)
# Headless Chromium runs MQTT.js over the WebSocket listener (tests/tests/browser.rs); npm
# installs MQTT.js below.
command -v chromium >/dev/null || need_apt+=(chromium)
# chromedriver drives Chromium over WebDriver for the live page's test (tests/tests/live_page.rs).
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
# The aedes cluster of tests/tests/cluster.rs shares one redis (tests/src/cluster.rs starts it).
command -v redis-server >/dev/null || need_apt+=(redis-server)
# The presence example's tests (tests/tests/postgres_presence.rs) start their own PostgreSQL
# server from /usr/lib/postgresql/VERSION/bin (not on PATH; the package also creates the
# `postgres` user the server runs as when the tests run as root).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
# curl is the HTTP client of the HTTP API's tests (tests/tests/http_*.rs).
command -v curl >/dev/null || need_apt+=(curl)
if ((${#need_apt[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

step "Python packages (PyPI): paho-mqtt 2.x, the MQTT 5 / 3.1.1 / 3.1 client of tests/v5_clients.rs"
python3 -c 'import paho.mqtt, sys; sys.exit(not paho.mqtt.__version__.startswith("2."))' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --break-system-packages 'paho-mqtt>=2.1,<3'

step "Python packages (PyPI): the presence example's (examples/presence-postgres/requirements.txt)"
# confluent-kafka and psycopg[binary]: wheels that bundle librdkafka and libpq.
python3 -c 'import confluent_kafka, psycopg' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --break-system-packages -r examples/presence-postgres/requirements.txt

step "npm packages: MQTT.js for the headless Chromium test (tests/browser, from its package-lock.json)"
# Again only when package-lock.json changed since the last install (npm's hidden lockfile).
[ tests/browser/node_modules/.package-lock.json -nt tests/browser/package-lock.json ] ||
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

step "npm packages: aedes, mqemitter-redis, aedes-persistence-redis for the broker cluster test (tests/cluster)"
[ tests/cluster/node_modules/.package-lock.json -nt tests/cluster/package-lock.json ] ||
  (cd tests/cluster && npm ci --no-audit --no-fund --loglevel=error)

step "rust toolchain components and targets"
# rust-toolchain.toml pins the stable toolchain; make sure its parts are present.
rustup component add rustfmt clippy >/dev/null
rustup target add thumbv7em-none-eabihf >/dev/null

step "tansu 0.6.0, the Kafka-compatible broker of the Kafka sink's tests (once per machine)"
# About 15-18 minutes on 2 cores the first time; in-memory storage needs the dynostore feature.
command -v tansu >/dev/null || cargo install --locked tansu --version 0.6.0 --features dynostore

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# No import cycles between the top-level modules of any crate (issue 15).
for src in activity-core/src adapter-tokio/src adapter-embassy/src tests/src bench/src; do
  python3 scripts/check-imports.py "$src"
done

step "activity-core builds for Cortex-M (no_std, no allocator), with and without defmt"
cargo build --locked -p activity-core --target thumbv7em-none-eabihf
cargo build --locked -p activity-core --target thumbv7em-none-eabihf --features defmt
cargo clippy --locked -p activity-core --target thumbv7em-none-eabihf --features defmt -- -D warnings

step "the embassy gateway builds for Cortex-M, and the nucleo-f429zi firmware example links"
cargo build --locked -p adapter-embassy --target thumbv7em-none-eabihf
cargo build --locked -p adapter-embassy --target thumbv7em-none-eabihf --features defmt
./adapter-embassy/firmware/build.sh --locked

step "docs build without warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps >/dev/null

step "tests (unit, property, scenario, doc and end-to-end)"
# REQUIRE_NETNS=1: the embassy gateway's TAP tests (tests/tests/embassy_tap.rs) must run, as
# root in private network namespaces, instead of skipping.
# --no-fail-fast: one failing test binary does not hide the results of the ones after it.
REQUIRE_NETNS=1 cargo test --workspace --locked --no-fail-fast

step "fuzz smoke: every cargo-fuzz target for 30 s on a copy of the committed corpus"
./scripts/fuzz-smoke.sh 30
