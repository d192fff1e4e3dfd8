#!/usr/bin/env bash
# Issue 15's firmware criterion, like for like: the example firmware on the gateway's own
# session code (the last commit before the gateway moved onto the engine) against the same
# firmware on today's engine with only the features the old code had. Both are built with
# today's firmware build (adapter-embassy/firmware/build.sh: the pinned nightly, -Zbuild-std,
# the same flags) and today's board code, in throwaway worktrees under target/; the sizes and
# their difference are printed. Not part of the test command (two firmware builds, about 5
# minutes on 2 cores). docs/gateway.md, "The engine's own cost, like for like", has the figures.
#
#   the old code: OLD (851f143) with this checkout's firmware build.sh, .cargo/config.toml,
#     Cargo.toml, src/mem.rs, src/int64.rs, src/main.rs (less SlotStores, which the old API
#     lacks; its resources in a StaticCell, since they are not all zero bits) and asmtest/, and
#     embassy-net's defmt off in adapter-embassy's `defmt` feature, as today;
#   the engine: this checkout's HEAD with scripts/engine-flash-cost.patch applied, which takes
#     out, as compile-time constants the compiler folds, what came after the engine: MQTT 5
#     (`Version::is_v5` false, levels 3 and 5 refused, every property list empty, as it always
#     is without MQTT 5), MQTT 3.1, retained messages, the QoS 1 uplink, the `refused`,
#     `denied` and `dropped` events and the event fields added since (transport,
#     session_expiry, user_properties, session_seq, reason_code, the subscription options,
#     share_group, event_seq).
#
# Usage: scripts/engine-flash-cost.sh (from anywhere in the checkout). The patch is written for
# the commit named in docs/gateway.md; on a later HEAD it may need its context updated, and
# the script stops where `git apply` fails.
set -euo pipefail
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
OLD=${OLD:-851f143}
work=$root/target/engine-flash-cost
fw=adapter-embassy/firmware

cleanup() {
    git worktree remove --force "$work/old" 2>/dev/null || true
    git worktree remove --force "$work/new" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
mkdir -p "$work"
git worktree add --quiet --detach "$work/old" "$OLD"
git worktree add --quiet --detach "$work/new" HEAD

# The old code with today's firmware build and board code.
for f in build.sh .cargo/config.toml Cargo.toml src/mem.rs src/int64.rs src/main.rs; do
    cp "$fw/$f" "$work/old/$fw/$f"
done
rm -rf "$work/old/adapter-embassy/asmtest"
cp -r adapter-embassy/asmtest "$work/old/adapter-embassy/asmtest"
python3 - "$work/old" <<'EOF'
import re, sys
root = sys.argv[1]

def edit(path, pairs):
    text = open(f"{root}/{path}").read()
    for old, new in pairs:
        if not re.search(old, text, flags=re.S):
            sys.exit(f"engine-flash-cost.sh: {path} no longer has {old!r}; update the script")
        text = re.sub(old, new, text, count=1, flags=re.S)
    open(f"{root}/{path}", "w").write(text)

edit("adapter-embassy/firmware/src/main.rs", [
    (r"GatewayRunner, SlotStores, UplinkConfig", "GatewayRunner, UplinkConfig"),
    (r"/// What each client keeps.*?type Stores = SlotStores<[^>]*>;\n", ""),
    (r"(GatewayRunner<'static, CLIENTS, RX, TX, SUBS, QUEUE), Stores>", r"\1>"),
    (r"static GATEWAY: ConstStaticCell<GatewayResources<CLIENTS, RX, TX, SUBS, QUEUE, Stores>> =\s*"
     r"ConstStaticCell::new\(GatewayResources::new\(\)\);",
     "static GATEWAY: static_cell::StaticCell<GatewayResources<CLIENTS, RX, TX, SUBS, QUEUE>> =\n"
     "        static_cell::StaticCell::new();"),
    (r"GATEWAY\.take\(\)", "GATEWAY.init(GatewayResources::new())"),
])
edit("adapter-embassy/Cargo.toml", [
    (r'"activity-core/defmt", "embassy-net/defmt"\]', '"activity-core/defmt"]'),
])
EOF

# The engine with only what the old code had.
git -C "$work/new" apply "$root/scripts/engine-flash-cost.patch"

size_of() {
    local tree=$1 target=$2
    echo "==> building $tree" >&2
    (cd "$work/$tree" && CARGO_TARGET_DIR="$work/$target" ./$fw/build.sh --locked >"$work/$tree.log" 2>&1) || {
        tail -20 "$work/$tree.log" >&2
        echo "engine-flash-cost.sh: the $tree build failed (log: $work/$tree.log)" >&2
        exit 1
    }
    arm-none-eabi-size "$work/$target/thumbv7em-none-eabihf/release/adapter-embassy-firmware" |
        awk 'NR == 2 { print $1, $2, $3 }'
}
read -r old_text old_data old_bss < <(size_of old target-old)
read -r new_text new_data new_bss < <(size_of new target-new)
printf '%-40s %8s %6s %8s\n' "" text data bss
printf '%-40s %8d %6d %8d\n' "the gateway's own session code ($OLD)" "$old_text" "$old_data" "$old_bss"
printf '%-40s %8d %6d %8d\n' "the engine, the same features ($(git rev-parse --short HEAD))" "$new_text" "$new_data" "$new_bss"
printf 'flash (text + data): %+d B; static RAM (data + bss): %+d B\n' \
    $((new_text + new_data - old_text - old_data)) $((new_data + new_bss - old_data - old_bss))
