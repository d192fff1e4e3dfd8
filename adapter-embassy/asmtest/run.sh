#!/usr/bin/env bash
# Runs the check of the firmware's hand-written memcpy, memmove, memset, 64-bit division and
# shifts (src/main.rs) under qemu-arm (user mode, Debian's qemu-user). Called by ../firmware/build.sh; needs qemu-arm and
# the stable toolchain's thumbv7em-none-eabihf target. Exits non-zero on a failed check or a hang.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --locked --quiet --target thumbv7em-none-eabihf
# Well under a second when it passes; a broken loop end would spin forever.
timeout 60 qemu-arm "${CARGO_TARGET_DIR:-target}/thumbv7em-none-eabihf/release/adapter-embassy-asmtest"
