#!/usr/bin/env bash
# Builds the NUCLEO-F429ZI example firmware (release) and prints its size.
# Installs what the build needs when missing: the Cortex-M target and flip-link (the linker
# wrapper named in .cargo/config.toml). Usage: adapter-embassy/firmware/build.sh [cargo args]
set -euo pipefail
cd "$(dirname "$0")"

if ! rustup target list --installed | grep -qx thumbv7em-none-eabihf; then
    rustup target add thumbv7em-none-eabihf
fi
if ! command -v flip-link >/dev/null 2>&1; then
    cargo install flip-link --locked
fi

cargo build --release "$@"

# The ELF is under CARGO_TARGET_DIR when it is set, else under this crate's own target/.
elf=${CARGO_TARGET_DIR:-target}/thumbv7em-none-eabihf/release/adapter-embassy-firmware
if command -v arm-none-eabi-size >/dev/null 2>&1; then
    arm-none-eabi-size -A "$elf" | grep -E '^(section|\.vector_table|\.text|\.rodata|\.data|\.bss|\.uninit|Total)' || true
    arm-none-eabi-size "$elf"
    # The gateway's resources and the stack's are all zero bits (ConstStaticCell in .bss). A
    # nonzero byte in them moves the whole static to .data: 16 KiB more flash, copied at boot.
    data=$(arm-none-eabi-size -A "$elf" | awk '$1 == ".data" { print $2 }')
    if [ "${data:-0}" -gt 1024 ]; then
        echo "build.sh: .data is $data bytes (at most 1024 expected): a static is no longer all zeros" >&2
        exit 1
    fi
fi
