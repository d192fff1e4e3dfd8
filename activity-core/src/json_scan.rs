//! Finding the bytes of a JSON string that need escaping (RFC 8259 section 7), eight at a time.
//!
//! Inside a JSON string the quotation mark, the reverse solidus and the control characters
//! U+0000 to U+001F must be escaped; every other byte, including those of multi-byte UTF-8
//! characters, stands for itself. The encoder looks for them to escape them and the envelope
//! parser to find the end of a run of plain text. Both are on the broker's per-message path, so
//! [`find_special`] tests eight bytes per step in a `u64` instead of one byte at a time, and
//! [`special_mask`] tells exactly which of eight bytes are special, for the encoder's escaping.
//!
//! [`WORDS`] says whether to: on a 32-bit target (a microcontroller) a `u64` is two registers,
//! the word steps are slow there and cost flash (about 600 B with the encoder's escaping, on a
//! Cortex-M), so the byte-by-byte loop runs instead; the results are the same.

/// Whether [`find_special`] and the event encoder's escaping step eight bytes at a time: on
/// 64-bit targets only.
pub(crate) const WORDS: bool = cfg!(target_pointer_width = "64");

/// Whether `byte` must be escaped inside a JSON string: `"`, `\` or a control character.
pub(crate) const fn is_special(byte: u8) -> bool {
    matches!(byte, b'"' | b'\\' | 0x00..=0x1F)
}

/// The index of the first byte of `bytes` that [`is_special`], if any.
pub(crate) fn find_special(bytes: &[u8]) -> Option<usize> {
    if WORDS {
        find_special_words(bytes)
    } else {
        find_special_bytes(bytes)
    }
}

/// [`find_special`] one byte at a time.
pub(crate) fn find_special_bytes(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| is_special(b))
}

/// [`find_special`] eight bytes at a time.
fn find_special_words(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Non-zero when some byte of `x` is below `n` (for `n` at most 0x80): a byte below `n`
    /// borrows in `x - n` and has its high bit clear in `x`. Exact as a yes/no answer, which is
    /// all it is used for; the position is then found byte by byte within the eight.
    const fn has_below(x: u64, n: u8) -> bool {
        x.wrapping_sub(ONES * n as u64) & !x & HIGHS != 0
    }
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word);
        // A byte equal to `c` is a zero byte of `x ^ c..c`, i.e. below 1.
        let maybe = has_below(x ^ (ONES * u64::from(b'"')), 1)
            || has_below(x ^ (ONES * u64::from(b'\\')), 1)
            || has_below(x, 0x20);
        if maybe && let Some(i) = chunk.iter().position(|&b| is_special(b)) {
            return Some(offset + i);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| is_special(b))
        .map(|i| offset + i)
}

/// The bytes of `x` (eight bytes read with `u64::from_le_bytes`, so the first byte is the lowest)
/// that [`is_special`]: `0x80` in each such byte, zero elsewhere.
///
/// Exact for every byte: no step carries from one byte into the next (`(b & 0x7F) + 0x7F` is at
/// most `0xFE`), so the mark of a byte depends on that byte alone.
pub(crate) const fn special_mask(x: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const LOW7: u64 = ONES * 0x7F;
    /// `0x80` in each byte of `x` that is zero.
    const fn zero_bytes(x: u64) -> u64 {
        !(((x & LOW7) + LOW7) | x | LOW7)
    }
    // A byte below 0x20 has its high bit clear, and its low seven bits plus 0x60 stay below
    // 0x80.
    let below_space = !(((x & LOW7) + ONES * 0x60) | x | LOW7);
    zero_bytes(x ^ (ONES * b'"' as u64)) | zero_bytes(x ^ (ONES * b'\\' as u64)) | below_space
}

/// The index of the first marked byte of a non-zero [`special_mask`].
pub(crate) const fn first_marked(mask: u64) -> usize {
    // At most 63 / 8 = 7: the conversion is lossless.
    (mask.trailing_zeros() / 8) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_special_byte_at_every_position() {
        for special in [b'"', b'\\', 0x00, 0x01, 0x08, 0x1F] {
            for len in 0..40 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    // A second one later must not hide the first.
                    if at + 3 < len {
                        bytes[at + 3] = b'"';
                    }
                    for find in [find_special_words, find_special_bytes] {
                        assert_eq!(find(&bytes), Some(at), "{special:#x} at {at} of {len}");
                    }
                }
                assert_eq!(find_special_words(&vec![b'a'; len]), None);
                assert_eq!(find_special_bytes(&vec![b'a'; len]), None);
            }
        }
    }

    #[test]
    fn the_mask_marks_exactly_the_special_bytes() {
        // Every byte value at every position, next to neighbours that would carry or borrow.
        for b in 0..=255u8 {
            for at in 0..8 {
                for fill in [0x00, 0x1F, 0x20, b'"', b'\\', 0x7F, 0x80, 0xFF] {
                    let mut bytes = [fill; 8];
                    bytes[at] = b;
                    let mask = special_mask(u64::from_le_bytes(bytes));
                    for (i, &byte) in bytes.iter().enumerate() {
                        let marked = (mask >> (8 * i)) & 0xFF;
                        assert_eq!(
                            marked,
                            if is_special(byte) { 0x80 } else { 0 },
                            "{bytes:02x?}"
                        );
                    }
                    if let Some(first) = bytes.iter().position(|&b| is_special(b)) {
                        assert_eq!(first_marked(mask), first, "{bytes:02x?}");
                    }
                }
            }
        }
    }

    #[test]
    fn agrees_with_the_byte_test_on_every_byte_value() {
        for b in 0..=255u8 {
            let mut bytes = [b' '; 19];
            bytes[11] = b;
            let expected = is_special(b).then_some(11);
            assert_eq!(find_special_words(&bytes), expected, "byte {b:#x}");
            assert_eq!(find_special_bytes(&bytes), expected, "byte {b:#x}");
            assert_eq!(is_special(b), b == b'"' || b == b'\\' || b < 0x20);
        }
        // Bytes of multi-byte characters are never special.
        assert_eq!(
            find_special("héllo wörld ✓ 😀 and more text".as_bytes()),
            None
        );
    }
}
