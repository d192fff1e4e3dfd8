//! Packets that carry only a packet identifier: PUBACK (section 3.4), PUBREC (3.5), PUBREL
//! (3.6), PUBCOMP (3.7) and UNSUBACK (3.11).
//!
//! Each is a fixed header with remaining length 2 followed by the packet identifier (2.3.1),
//! which must not be 0. PUBREL's fixed-header flags are 0b0010, the others' 0 (section 2.2.2).

use super::{DecodeError, EncodeError, Reader};

/// Decodes the body: exactly one non-zero packet identifier.
pub(super) fn decode(body: &[u8]) -> Result<u16, DecodeError> {
    let mut r = Reader::new(body);
    let id = r.packet_id()?;
    r.finish()?;
    Ok(id)
}

/// The remaining length (2), or an error for packet identifier 0.
pub(super) fn body_len(id: u16) -> Result<usize, EncodeError> {
    if id == 0 {
        return Err(EncodeError::InvalidPacketId);
    }
    Ok(2)
}
