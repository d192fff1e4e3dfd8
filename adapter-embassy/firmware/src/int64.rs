//! The 64-bit integer helpers the compiler calls on the Cortex-M4, in short Thumb-2:
//! `__aeabi_uldivmod` (`u64` `/` and `%`) and the shifts by a variable amount,
//! `__aeabi_llsl` (`<<`) and `__aeabi_llsr` (`>>` of a `u64`).
//!
//! compiler_builtins' division (its `u64_div_rem`, `__udivmoddi4` and the `__aeabi_uldivmod`
//! wrapper, about 450 B of flash) is fast; this one is small (docs/gateway.md, "Size cuts on
//! the nightly build"): a dividend and divisor that both fit 32 bits take the Cortex-M4's
//! `udiv` (and `mls` for the remainder); any other pair takes 64 rounds of shift and subtract,
//! about 800 cycles (5 µs at 168 MHz). Its shifts are a wrapper each around a Rust function
//! (50 B each); these are 26 B. The symbols are strong, compiler_builtins' are weak, so the
//! linker takes these. None calls anything.
//!
//! The Arm run-time ABI (RTABI): a 64-bit value is passed and returned in r1:r0 (high:low). The
//! division takes the divisor in r3:r2 and returns the quotient in r1:r0 and the remainder in
//! r3:r2; Rust checks for a zero divisor before it divides (a panic), so no caller passes 0
//! (the result would be meaningless). A shift takes its amount, 0 to 63, in r2.

core::arch::global_asm!(
    ".pushsection .text.__aeabi_uldivmod,\"ax\",%progbits",
    ".balign 2",
    ".global __aeabi_uldivmod",
    ".type __aeabi_uldivmod, %function",
    ".thumb_func",
    "__aeabi_uldivmod:",
    // Both high words zero: one 32-bit hardware division.
    "    orrs r12, r1, r3",
    "    bne 1f",
    "    udiv r12, r0, r2",
    "    mls r2, r12, r2, r0",
    "    mov r0, r12",
    "    bx lr",
    // Shift and subtract: the dividend r1:r0 shifts out at the top into the remainder r5:r4
    // while the quotient's bits shift in at the bottom, one a round, 64 rounds.
    "1:  push {{r4, r5, r6, lr}}",
    "    movs r4, #0",
    "    movs r5, #0",
    "    movs r6, #64",
    "2:  adds r0, r0, r0",
    "    adcs r1, r1, r1",
    "    adcs r4, r4, r4",
    // No bit leaves the remainder: before round k it holds at most k - 1 bits of the
    // dividend (less after a subtraction), so at most 64 after the last shift.
    "    adcs r5, r5, r5",
    // remainder >= divisor (64-bit compare: the borrow of the subtraction)?
    "    cmp r4, r2",
    "    sbcs r12, r5, r3",
    "    bcc 4f",
    "    subs r4, r4, r2",
    "    sbcs r5, r5, r3",
    "    adds r0, r0, #1",
    "4:  subs r6, r6, #1",
    "    bne 2b",
    "    mov r2, r4",
    "    mov r3, r5",
    "    pop {{r4, r5, r6, pc}}",
    ".size __aeabi_uldivmod, . - __aeabi_uldivmod",
    ".popsection",
    // Shifts: a shift by a register amount takes the amount's low byte, and 32 to 255 give 0,
    // so no branch is needed. For r1:r0 << n: high = (high << n) | (low << (n - 32)) |
    // (low >> (32 - n)), low = low << n. Below 32, n - 32 is negative (low byte 224 or more:
    // that shift gives 0), and n = 0 shifts `low` right by 32 (0 too); above 32, 32 - n is
    // negative; at 32 both give `low`, and or-ed it stays `low`.
    ".pushsection .text.__aeabi_llsl,\"ax\",%progbits",
    ".balign 2",
    ".global __aeabi_llsl",
    ".type __aeabi_llsl, %function",
    ".thumb_func",
    "__aeabi_llsl:",
    "    lsls r1, r1, r2",
    "    subs r3, r2, #32",
    "    lsl r12, r0, r3",
    "    orr r1, r1, r12",
    "    rsb r3, r2, #32",
    "    lsr r3, r0, r3",
    "    orrs r1, r1, r3",
    "    lsls r0, r0, r2",
    "    bx lr",
    ".size __aeabi_llsl, . - __aeabi_llsl",
    ".popsection",
    // The same mirrored: low = (low >> n) | (high >> (n - 32)) | (high << (32 - n)).
    ".pushsection .text.__aeabi_llsr,\"ax\",%progbits",
    ".balign 2",
    ".global __aeabi_llsr",
    ".type __aeabi_llsr, %function",
    ".thumb_func",
    "__aeabi_llsr:",
    "    lsrs r0, r0, r2",
    "    subs r3, r2, #32",
    "    lsr r12, r1, r3",
    "    orr r0, r0, r12",
    "    rsb r3, r2, #32",
    "    lsl r3, r1, r3",
    "    orrs r0, r0, r3",
    "    lsrs r1, r1, r2",
    "    bx lr",
    ".size __aeabi_llsr, . - __aeabi_llsr",
    ".popsection",
);
