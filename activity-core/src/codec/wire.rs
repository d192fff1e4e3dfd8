//! Bounds-checked readers and writers for the MQTT 3.1.1 data representations (section 1.5).
//!
//! Every read returns [`DecodeError::Truncated`] instead of running past its slice, and every
//! write returns [`EncodeError::BufferTooSmall`] instead of running past its buffer: nothing
//! here indexes or casts in a way that can panic or truncate.

use super::{DecodeError, EncodeError};
use crate::topic::{MAX_TOPIC_LEN, has_nul};

/// The largest remaining length four bytes can encode (section 2.2.3).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// A cursor over the bytes of one packet body.
#[derive(Clone, Copy, Debug)]
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) const fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(super) const fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next `n` bytes.
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or(DecodeError::Truncated)?;
        self.buf = tail;
        Ok(head)
    }

    /// One byte.
    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&byte, tail) = self.buf.split_first().ok_or(DecodeError::Truncated)?;
        self.buf = tail;
        Ok(byte)
    }

    /// A big-endian two-byte integer (section 1.5.2).
    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<2>()
            .ok_or(DecodeError::Truncated)?;
        self.buf = tail;
        Ok(u16::from_be_bytes(*head))
    }

    /// A big-endian four-byte integer (MQTT 5.0 section 1.5.3).
    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<4>()
            .ok_or(DecodeError::Truncated)?;
        self.buf = tail;
        Ok(u32::from_be_bytes(*head))
    }

    /// A Variable Byte Integer (MQTT 5.0 section 1.5.5): at most four bytes. Non-minimal
    /// encodings are accepted, as for the remaining length.
    pub(super) fn var_int(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for shift in [0u32, 7, 14, 21] {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::MalformedVarInt)
    }

    /// A non-zero packet identifier (section 2.3.1).
    pub(super) fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::ZeroPacketId),
            id => Ok(id),
        }
    }

    /// Binary data with a two-byte length prefix (section 1.5.3 layout, used for the password
    /// and the will message).
    pub(super) fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 encoded string: well-formed, no U+0000 (section 1.5.3).
    pub(super) fn string(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.binary()?;
        let s = core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        if has_nul(s) {
            return Err(DecodeError::InvalidUtf8);
        }
        Ok(s)
    }

    /// All bytes left.
    pub(super) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    /// Checks that every byte was read.
    pub(super) fn finish(self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// `a + b`, or [`EncodeError::PacketTooLarge`] on overflow.
pub(super) fn add(a: usize, b: usize) -> Result<usize, EncodeError> {
    a.checked_add(b).ok_or(EncodeError::PacketTooLarge)
}

/// The encoded length of binary data: 2 + its length, or an error past 65535 bytes.
pub(super) fn binary_len(data: &[u8]) -> Result<usize, EncodeError> {
    if data.len() > MAX_TOPIC_LEN {
        return Err(EncodeError::StringTooLong);
    }
    Ok(2 + data.len())
}

/// The encoded length of a string: 2 + its length, or an error past 65535 bytes or on U+0000.
pub(super) fn string_len(s: &str) -> Result<usize, EncodeError> {
    if has_nul(s) {
        return Err(EncodeError::InvalidString);
    }
    binary_len(s.as_bytes())
}

/// How many bytes the remaining length `len` takes on the wire (section 2.2.3).
pub(super) const fn remaining_length_len(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A cursor writing into a caller's buffer.
#[derive(Debug)]
pub(super) struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(super) fn new(out: &'a mut [u8]) -> Self {
        Writer { out, pos: 0 }
    }

    /// Bytes written so far.
    pub(super) const fn position(&self) -> usize {
        self.pos
    }

    pub(super) fn bytes(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        let end = add(self.pos, data.len())?;
        let dst = self
            .out
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferTooSmall { needed: end })?;
        dst.copy_from_slice(data);
        self.pos = end;
        Ok(())
    }

    pub(super) fn u8(&mut self, byte: u8) -> Result<(), EncodeError> {
        self.bytes(&[byte])
    }

    pub(super) fn u16(&mut self, value: u16) -> Result<(), EncodeError> {
        self.bytes(&value.to_be_bytes())
    }

    /// Binary data with its two-byte length prefix.
    pub(super) fn binary(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(data.len()).map_err(|_| EncodeError::StringTooLong)?;
        self.u16(len)?;
        self.bytes(data)
    }

    /// A string with its two-byte length prefix.
    pub(super) fn string(&mut self, s: &str) -> Result<(), EncodeError> {
        self.binary(s.as_bytes())
    }

    /// A Variable Byte Integer (MQTT 5.0 section 1.5.5).
    pub(super) fn var_int(&mut self, value: u32) -> Result<(), EncodeError> {
        self.remaining_length(usize::try_from(value).map_err(|_| EncodeError::PacketTooLarge)?)
    }

    /// A remaining length in the variable-length encoding (section 2.2.3).
    pub(super) fn remaining_length(&mut self, len: usize) -> Result<(), EncodeError> {
        if len > MAX_REMAINING_LENGTH {
            return Err(EncodeError::PacketTooLarge);
        }
        let mut rest = len;
        loop {
            let digit = u8::try_from(rest % 128).map_err(|_| EncodeError::PacketTooLarge)?;
            rest /= 128;
            if rest == 0 {
                return self.u8(digit);
            }
            self.u8(digit | 0x80)?;
        }
    }
}
