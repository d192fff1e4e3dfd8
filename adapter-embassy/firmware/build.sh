#!/usr/bin/env bash
# Builds the NUCLEO-F429ZI example firmware (release) and prints its size.
# Installs what the build needs when missing: the Cortex-M target and flip-link (the linker
# wrapper named in .cargo/config.toml). Usage: adapter-embassy/firmware/build.sh [cargo args]
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v flip-link >/dev/null 2>&1; then
    cargo install flip-link --locked
fi

# The firmware builds with a pinned nightly: `-Zbuild-std` compiles `core` and
# `compiler_builtins` with the firmware's profile (opt-level z, fat LTO) and the
# `immediate-abort` panic strategy, so a panic is one `udf` instruction (a HardFault, as
# before) instead of core's panic plumbing: about 5 KB of flash (docs/gateway.md, "Memory
# sizing"). The machine's `nightly` is used when it is this one, else the dated one is
# installed. `STABLE=1 build.sh` builds with the stable toolchain and no `-Z` flags (larger).
NIGHTLY_DATE=2026-05-19
if [ "${STABLE:-0}" = 1 ]; then
    toolchain=stable
    if ! rustup target list --installed | grep -qx thumbv7em-none-eabihf; then
        rustup target add thumbv7em-none-eabihf
    fi
    zflags=()
else
    toolchain=nightly
    if ! rustc +nightly -V 2>/dev/null | grep -q "$NIGHTLY_DATE)"; then
        toolchain=nightly-$NIGHTLY_DATE
        rustup toolchain install "$toolchain" --profile minimal
    fi
    if ! rustup component list --toolchain "$toolchain" --installed | grep -q '^rust-src'; then
        rustup component add rust-src --toolchain "$toolchain"
    fi
    zflags=(-Zbuild-std=core -Zbuild-std-features=optimize_for_size)
    # MIR optimisations at level 1 instead of 2, with rustc's MIR inliner on (every crate,
    # `core` too): LLVM still runs at opt-level z; level 2's MIR passes left 220 B more code
    # after it, and inlining small functions before LLVM sees them saves 436 B more
    # (docs/gateway.md). Three of LLVM's heuristics: tail merging from two shared instructions
    # on (default three), no shrink-wrapping of prologues (84 B together), and the register
    # allocator's live-range splitting in its size mode (144 B). The array is added to
    # .cargo/config.toml's rustflags.
    zflags+=(--config 'target.thumbv7em-none-eabihf.rustflags=["-Zmir-opt-level=1", "-Zinline-mir=yes", "-Cllvm-args=-tail-merge-size=2", "-Cllvm-args=-enable-shrink-wrap=false", "-Cllvm-args=-split-spill-mode=size"]')
    # `panic-message` prints the message through panic-probe, which immediate-abort bypasses.
    if [[ " $* " != *panic-message* ]]; then
        zflags+=(-Zpanic-immediate-abort --config 'profile.release.panic="immediate-abort"')
    fi
fi

# Issue 20's budget for the 4-slot example: 64 KiB of flash, 32 KiB of static RAM.
FLASH_BUDGET=65536
RAM_BUDGET=32768
# The firmware fits the flash budget (issue 20): a default build past it fails (see below).
ENFORCE_FLASH=1

cargo "+$toolchain" build --release "${zflags[@]}" "$@"

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
    # Issue 20's budget for this example (4 client slots): flash = text + data, static RAM =
    # data + bss (bss includes .uninit, the defmt RTT buffer). Checked on the default build
    # only (`--features one-more-slot` has a fifth slot, `panic-message` the panic strings).
    read -r text data bss _ < <(arm-none-eabi-size "$elf" | awk 'NR == 2')
    flash=$((text + data)) ram=$((data + bss))
    echo "budget: flash $flash of $FLASH_BUDGET B, static RAM $ram of $RAM_BUDGET B"
    if [[ " $* " != *" --features "* && " $* " != *" -F "* ]]; then
        if [ "$ram" -gt "$RAM_BUDGET" ]; then
            echo "build.sh: static RAM is $ram bytes, over the budget of $RAM_BUDGET" >&2
            exit 1
        fi
        # Enforced since the firmware fits (issue 20; docs/gateway.md, "Memory sizing"):
        # growing past the budget fails. Not for `STABLE=1`, the larger build that the budget
        # was never meant for: it only prints how far over it is.
        if [ "$flash" -gt "$FLASH_BUDGET" ]; then
            if [ "$ENFORCE_FLASH" = 1 ] && [ "${STABLE:-0}" != 1 ]; then
                echo "build.sh: flash is $flash bytes, over the budget of $FLASH_BUDGET" >&2
                exit 1
            fi
            echo "build.sh: flash is $flash bytes, $((flash - FLASH_BUDGET)) over the budget (not enforced for this build)"
        fi
    fi
fi

# The firmware's memcpy/memmove/memset and 64-bit division and shifts are hand-written
# Thumb-2 (src/mem.rs, src/int64.rs): check them under qemu-arm (Debian's qemu-user), in
# ../asmtest.
if command -v qemu-arm >/dev/null 2>&1; then
    ../asmtest/run.sh
else
    echo "build.sh: no qemu-arm (Debian's qemu-user): src/mem.rs and src/int64.rs were not checked (../asmtest)" >&2
fi
