//! Checks the firmware's hand-written Thumb-2 runtime functions: `memcpy`, `memmove` and
//! `memset` with their `__aeabi_*` forms (`adapter-embassy/firmware/src/mem.rs`), and the
//! 64-bit division and shifts (`firmware/src/int64.rs`). The same assembler text is linked
//! into a bare `thumbv7em-none-eabihf` program that `qemu-arm` (user mode) runs, talking to
//! Linux through `svc` for its output and exit status. Run by
//! `adapter-embassy/firmware/build.sh` (through `run.sh`).
//!
//! - Copies and fills: every offset pair and length up to 40 bytes is compared, byte by byte
//!   over the whole buffer, with a reference written as volatile byte loops (which LLVM cannot
//!   turn back into calls of the functions under test); `memmove` with overlap both ways.
//! - Division: `__aeabi_uldivmod` is called as the compiler calls it (from `asm!`, since it
//!   returns the remainder in r3:r2), and each quotient and remainder checked against the
//!   definition: `q * d + r == n` without overflow and `r < d` (the
//!   product taken from 32-bit halves, no division involved), for edge values and a few
//!   hundred thousand pseudo-random pairs of every magnitude.
//! - Shifts: `__aeabi_llsl` and `__aeabi_llsr` (what `<<` and `>>` of a `u64` by an unknown
//!   amount call), each amount 0 to 63 checked against shifting by one bit that many
//!   times (a constant shift, inline).
#![no_std]
#![no_main]

use core::hint::black_box;
use core::ptr::{read_volatile, write_volatile};

#[path = "../../firmware/src/int64.rs"]
mod int64;
#[path = "../../firmware/src/mem.rs"]
mod mem;

unsafe extern "C" {
    fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8;
    fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8;
    fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8;
    fn __aeabi_memcpy(dest: *mut u8, src: *const u8, n: usize);
    fn __aeabi_memcpy4(dest: *mut u8, src: *const u8, n: usize);
    fn __aeabi_memcpy8(dest: *mut u8, src: *const u8, n: usize);
    fn __aeabi_memmove(dest: *mut u8, src: *const u8, n: usize);
    fn __aeabi_memmove4(dest: *mut u8, src: *const u8, n: usize);
    fn __aeabi_memmove8(dest: *mut u8, src: *const u8, n: usize);
    fn __aeabi_memset(dest: *mut u8, n: usize, c: i32);
    fn __aeabi_memset4(dest: *mut u8, n: usize, c: i32);
    fn __aeabi_memset8(dest: *mut u8, n: usize, c: i32);
    fn __aeabi_memclr(dest: *mut u8, n: usize);
    fn __aeabi_memclr4(dest: *mut u8, n: usize);
    fn __aeabi_memclr8(dest: *mut u8, n: usize);
    fn __aeabi_llsl(value: u64, amount: u32) -> u64;
    fn __aeabi_llsr(value: u64, amount: u32) -> u64;
}

/// Bytes per buffer: offsets up to 16, lengths up to 40, and a margin that must stay as it was.
const LEN: usize = 64;
const MAX_OFF: usize = 16;
const MAX_N: usize = 40;

#[repr(align(8))]
struct Buf([u8; LEN]);

// Linux system calls (ARM EABI: the number in r7, `svc 0`). r7 is the frame pointer, which
// inline `asm!` may not name, so one small function: `linux_syscall(number, a, b, c)`.
core::arch::global_asm!(
    ".pushsection .text.linux_syscall,\"ax\",%progbits",
    ".global linux_syscall",
    ".type linux_syscall, %function",
    ".thumb_func",
    "linux_syscall:",
    "    push {{r7, lr}}",
    "    mov r7, r0",
    "    mov r0, r1",
    "    mov r1, r2",
    "    mov r2, r3",
    "    svc 0",
    "    pop {{r7, pc}}",
    ".size linux_syscall, . - linux_syscall",
    ".popsection",
);

unsafe extern "C" {
    fn linux_syscall(number: u32, a: usize, b: usize, c: usize) -> isize;
}

fn write_stderr(text: &[u8]) {
    // SAFETY: write(2, text, len) reads `text` only.
    unsafe { linux_syscall(4, 2, text.as_ptr() as usize, text.len()) };
}

fn exit(code: u32) -> ! {
    // SAFETY: exit_group ends the process and does not return.
    unsafe { linux_syscall(248, code as usize, 0, 0) };
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    write_stderr(b"asmtest: panic\n");
    exit(101)
}

fn fill(buf: &mut Buf, seed: u8) {
    for i in 0..LEN {
        // SAFETY: in bounds.
        unsafe { write_volatile(buf.0.as_mut_ptr().add(i), seed.wrapping_add((i as u8) * 7)) };
    }
}

fn get(buf: &Buf, i: usize) -> u8 {
    // SAFETY: in bounds.
    unsafe { read_volatile(buf.0.as_ptr().add(i)) }
}

fn put(buf: &mut Buf, i: usize, byte: u8) {
    // SAFETY: in bounds.
    unsafe { write_volatile(buf.0.as_mut_ptr().add(i), byte) }
}

fn same(a: &Buf, b: &Buf) -> bool {
    (0..LEN).all(|i| get(a, i) == get(b, i))
}

/// The failures counted so far, and a message for each of the first few.
struct Check {
    cases: u32,
    failures: u32,
}

impl Check {
    fn expect(&mut self, ok: bool, what: &[u8], dst: usize, src: usize, n: usize) {
        self.cases += 1;
        if !ok {
            self.failures += 1;
            if self.failures <= 10 {
                write_stderr(b"asmtest: FAILED ");
                write_stderr(what);
                let mut line = *b" dst=00 src=00 n=00\n";
                for (at, value) in [(5, dst), (12, src), (17, n)] {
                    line[at] = b'0' + (value / 10) as u8;
                    line[at + 1] = b'0' + (value % 10) as u8;
                }
                write_stderr(&line);
            }
        }
    }
}

// Every function is called through a pointer that `black_box` hides, so that LLVM cannot
// recognise a `memset` call and lower it to a call of `__aeabi_memset` (or inline it).
type Copy = unsafe extern "C" fn(*mut u8, *const u8, usize);
type CopyRet = unsafe extern "C" fn(*mut u8, *const u8, usize) -> *mut u8;
type SetRet = unsafe extern "C" fn(*mut u8, i32, usize) -> *mut u8;

/// `__aeabi_memcpy*`/`__aeabi_memmove*` through one signature, `memcpy`/`memmove` as themselves
/// (they also return the destination).
fn copies(check: &mut Check) {
    let forms: [(&[u8], Copy, usize, bool); 6] = [
        (b"__aeabi_memcpy", __aeabi_memcpy, 1, false),
        (b"__aeabi_memcpy4", __aeabi_memcpy4, 4, false),
        (b"__aeabi_memcpy8", __aeabi_memcpy8, 8, false),
        (b"__aeabi_memmove", __aeabi_memmove, 1, true),
        (b"__aeabi_memmove4", __aeabi_memmove4, 4, true),
        (b"__aeabi_memmove8", __aeabi_memmove8, 8, true),
    ];
    let (mut src, mut dst, mut want, mut want_src) =
        (Buf([0; LEN]), Buf([0; LEN]), Buf([0; LEN]), Buf([0; LEN]));
    for d in 0..MAX_OFF {
        for s in 0..MAX_OFF {
            for n in 0..=MAX_N {
                // Two buffers: memcpy and every form of memmove without overlap.
                fill(&mut src, 1);
                fill(&mut dst, 101);
                fill(&mut want, 101);
                for i in 0..n {
                    put(&mut want, d + i, get(&src, s + i));
                }
                let (dp, sp) = (
                    dst.0.as_mut_ptr().wrapping_add(d),
                    src.0.as_ptr().wrapping_add(s),
                );
                // SAFETY: both ranges lie in their buffers and do not overlap.
                let ret = unsafe { black_box(memcpy as CopyRet)(dp, sp, n) };
                check.expect(ret == dp && same(&dst, &want), b"memcpy", d, s, n);
                fill(&mut dst, 101);
                // SAFETY: as above.
                let ret = unsafe { black_box(memmove as CopyRet)(dp, sp, n) };
                check.expect(ret == dp && same(&dst, &want), b"memmove", d, s, n);
                for (name, f, align, _) in forms {
                    if d % align == 0 && s % align == 0 {
                        fill(&mut dst, 101);
                        // SAFETY: as above, aligned as the form requires (Buf is 8-aligned).
                        unsafe { black_box(f)(dp, sp, n) };
                        check.expect(same(&dst, &want), name, d, s, n);
                    }
                }
                // One buffer, overlapping both ways (d < s, d == s, d > s): the memmove forms.
                fill(&mut want_src, 1);
                fill(&mut want, 1);
                for i in 0..n {
                    put(&mut want, d + i, get(&want_src, s + i));
                }
                fill(&mut src, 1);
                let (dp, sp) = (
                    src.0.as_mut_ptr().wrapping_add(d),
                    src.0.as_ptr().wrapping_add(s),
                );
                // SAFETY: both ranges lie in the buffer; memmove allows overlap.
                let ret = unsafe { black_box(memmove as CopyRet)(dp, sp, n) };
                check.expect(
                    ret == dp && same(&src, &want),
                    b"memmove overlapping",
                    d,
                    s,
                    n,
                );
                for (name, f, align, overlap) in forms {
                    if overlap && d % align == 0 && s % align == 0 {
                        fill(&mut src, 1);
                        // SAFETY: as above.
                        unsafe { black_box(f)(dp, sp, n) };
                        check.expect(same(&src, &want), name, d, s, n);
                    }
                }
            }
        }
    }
}

type Set = unsafe extern "C" fn(*mut u8, usize, i32);

fn sets(check: &mut Check) {
    let forms: [(&[u8], Set, usize); 3] = [
        (b"__aeabi_memset", __aeabi_memset, 1),
        (b"__aeabi_memset4", __aeabi_memset4, 4),
        (b"__aeabi_memset8", __aeabi_memset8, 8),
    ];
    let clears: [(&[u8], unsafe extern "C" fn(*mut u8, usize), usize); 3] = [
        (b"__aeabi_memclr", __aeabi_memclr, 1),
        (b"__aeabi_memclr4", __aeabi_memclr4, 4),
        (b"__aeabi_memclr8", __aeabi_memclr8, 8),
    ];
    let (mut buf, mut want) = (Buf([0; LEN]), Buf([0; LEN]));
    for d in 0..MAX_OFF {
        for n in 0..=MAX_N {
            // 0x1A5: only its low byte, 0xA5, is written.
            fill(&mut want, 3);
            for i in 0..n {
                put(&mut want, d + i, 0xA5);
            }
            let dp = buf.0.as_mut_ptr().wrapping_add(d);
            fill(&mut buf, 3);
            // SAFETY: the range lies in the buffer.
            let ret = unsafe { black_box(memset as SetRet)(dp, 0x1A5, n) };
            check.expect(ret == dp && same(&buf, &want), b"memset", d, 0, n);
            for (name, f, align) in forms {
                if d % align == 0 {
                    fill(&mut buf, 3);
                    // SAFETY: as above, aligned as the form requires.
                    unsafe { black_box(f)(dp, n, 0x1A5) };
                    check.expect(same(&buf, &want), name, d, 0, n);
                }
            }
            fill(&mut want, 3);
            for i in 0..n {
                put(&mut want, d + i, 0);
            }
            for (name, f, align) in clears {
                if d % align == 0 {
                    fill(&mut buf, 3);
                    // SAFETY: as above.
                    unsafe { black_box(f)(dp, n) };
                    check.expect(same(&buf, &want), name, d, 0, n);
                }
            }
        }
    }
}

/// `a * b` as (high, low) 64-bit halves, from 32-bit pieces (no 64-bit multiply helper, no
/// division).
fn mul_wide(a: u64, b: u64) -> (u64, u64) {
    let (a1, a0) = (a >> 32, a & 0xFFFF_FFFF);
    let (b1, b0) = (b >> 32, b & 0xFFFF_FFFF);
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    // Each partial product is below 2^64; the middle sum needs at most 2^33 + 2^32.
    let middle = (p00 >> 32) + (p01 & 0xFFFF_FFFF) + (p10 & 0xFFFF_FFFF);
    let low = (middle << 32) | (p00 & 0xFFFF_FFFF);
    let high = p11 + (p01 >> 32) + (p10 >> 32) + (middle >> 32);
    (high, low)
}

/// `__aeabi_uldivmod(n, d)`, called as the compiler calls it: the quotient and the remainder.
fn uldivmod(n: u64, d: u64) -> (u64, u64) {
    let (mut q_low, mut q_high) = (n as u32, (n >> 32) as u32);
    let (mut r_low, mut r_high) = (d as u32, (d >> 32) as u32);
    // SAFETY: the RTABI call: n in r1:r0, d in r3:r2, quotient back in r1:r0, remainder in
    // r3:r2; r12, lr and the flags are clobbered, r4 and up kept.
    unsafe {
        core::arch::asm!(
            "bl __aeabi_uldivmod",
            inout("r0") q_low,
            inout("r1") q_high,
            inout("r2") r_low,
            inout("r3") r_high,
            out("r12") _,
            out("lr") _,
        );
    }
    (
        (u64::from(q_high) << 32) | u64::from(q_low),
        (u64::from(r_high) << 32) | u64::from(r_low),
    )
}

fn check_division(check: &mut Check, n: u64, d: u64) {
    if d == 0 {
        return;
    }
    let (q, r) = uldivmod(n, d);
    let (high, low) = mul_wide(q, d);
    let ok = high == 0 && low.checked_add(r) == Some(n) && r < d;
    check.expect(ok, b"__aeabi_uldivmod", 0, 0, 0);
}

/// xorshift64: pseudo-random, the same every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn divisions(check: &mut Check) {
    let edges = [
        0,
        1,
        2,
        3,
        7,
        10,
        1000,
        0x7FFF_FFFF,
        0x8000_0000,
        0xFFFF_FFFF,
        0x1_0000_0000,
        0x1_0000_0001,
        0xFFFF_FFFF_FFFF,
        0x7FFF_FFFF_FFFF_FFFF,
        0x8000_0000_0000_0000,
        0x8000_0000_0000_0001,
        0xFFFF_FFFF_0000_0000,
        0xFFFF_FFFF_FFFF_FFFE,
        u64::MAX,
    ];
    for n in edges {
        for d in edges {
            check_division(check, n, d);
        }
    }
    let mut state = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..200_000 {
        // Random magnitudes: each operand keeps a random number of its low bits.
        let (a, b, c) = (next(&mut state), next(&mut state), next(&mut state));
        let n = a >> (c & 63);
        let d = b >> ((c >> 8) & 63);
        check_division(check, n, d);
    }
}

/// A 64-bit shift: the value in r1:r0, the amount in r2, the result in r1:r0 (AAPCS).
type Shift = unsafe extern "C" fn(u64, u32) -> u64;

fn shifts(check: &mut Check) {
    let values = [
        1,
        0x8000_0000_0000_0001,
        0x0123_4567_89AB_CDEF,
        u64::MAX,
        0xFFFF_FFFF,
    ];
    for x in values {
        let (mut left, mut right) = (x, x);
        for n in 0..64usize {
            let amount = u32::try_from(n).unwrap_or(0);
            // SAFETY: any value and an amount below 64 are valid.
            let (l, r) = unsafe {
                (
                    black_box(__aeabi_llsl as Shift)(x, amount),
                    black_box(__aeabi_llsr as Shift)(x, amount),
                )
            };
            check.expect(l == left, b"__aeabi_llsl", 0, 0, n);
            check.expect(r == right, b"__aeabi_llsr", 0, 0, n);
            left <<= 1;
            right >>= 1;
        }
    }
}

/// The entry point qemu-arm jumps to (the linker's default entry symbol).
#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    let mut check = Check {
        cases: 0,
        failures: 0,
    };
    copies(&mut check);
    sets(&mut check);
    divisions(&mut check);
    shifts(&mut check);
    if check.failures > 0 {
        write_stderr(b"asmtest: failures\n");
        exit(1);
    }
    // A few thousand cases ran (not printed as a number: no core::fmt here).
    if check.cases < 10_000 {
        write_stderr(b"asmtest: too few cases ran\n");
        exit(2);
    }
    write_stderr(b"asmtest: ok\n");
    exit(0)
}
