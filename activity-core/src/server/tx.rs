//! Writing into the driver's transmit buffer: deliveries and SUBACK frames.

use crate::QoS;
use crate::codec::{Context, EncodeError, Packet, Properties, Publish, Version};

use super::outbound::Additions;
use super::{Counter, Delivered, Delivery, DeliveryError, Output};

/// Encodes a delivery at the lower of its QoS and the subscription's, with the router's packet
/// id or the next of the engine's own (1 to 65535, cycling), and for an MQTT 5 client the
/// engine's `additions` (see [`Additions`]): their property block goes into the tail of `tx`,
/// below the packet. A packet larger than `max_packet_size` (the client's) is dropped.
pub(super) fn encode_delivery(
    next_pkid: &mut u16,
    delivery: Delivery<'_>,
    additions: &Additions,
    max_packet_size: u32,
    tx: &mut Tx<'_>,
) -> Result<Delivered, DeliveryError> {
    let qos = delivery.qos.min(delivery.subscription_qos);
    let v5 = tx.version.is_v5();
    let rewrite = v5 && additions.rewrites(&delivery.properties);
    let scratch = if rewrite {
        additions
            .rewritten_len(&delivery.properties)
            .map_err(|_| DeliveryError::Unencodable)?
    } else {
        0
    };
    let topic = match additions.alias {
        Some((_, true)) if v5 => "",
        _ => delivery.topic,
    };
    let room = tx.room();
    let Some(packet_room) = room.checked_sub(scratch) else {
        return Err(DeliveryError::NoRoom {
            needed: scratch
                .saturating_mul(2)
                .saturating_add(delivery.topic.len() + delivery.payload.len() + 16),
        });
    };
    let start = tx.len;
    let (head, tail) = tx
        .buf
        .get_mut(start..)
        .unwrap_or_default()
        .split_at_mut(packet_room);
    let properties = if rewrite {
        let n = additions
            .rewrite(&delivery.properties, tail)
            .map_err(|_| DeliveryError::Unencodable)?;
        Properties::parse(tail.get(..n).unwrap_or_default(), Context::Publish)
            .map_err(|_| DeliveryError::Unencodable)?
    } else {
        delivery.properties
    };
    // The packet id is taken before encoding (its 2 bytes count in the length) and given back
    // when the delivery is not written.
    let before = *next_pkid;
    let pkid = (qos != QoS::AtMostOnce).then(|| {
        delivery.pkid.unwrap_or_else(|| {
            *next_pkid = next_pkid.checked_add(1).unwrap_or(1);
            *next_pkid
        })
    });
    let publish = Publish {
        dup: pkid.is_some() && delivery.dup,
        qos,
        retain: delivery.retain,
        topic,
        pkid,
        payload: delivery.payload,
        properties,
    };
    // Encoded once: the encoder computes the length, checks the room and writes; a packet
    // over the client's maximum is left unused in the free room (`tx.len` does not move).
    let encoded = Packet::Publish(publish).encode_with(head, tx.version);
    let too_large = |n: usize| u32::try_from(n).map_or(true, |n| n > max_packet_size);
    let written = match encoded {
        Ok(written) if !too_large(written) => Ok(written),
        Ok(_) => Err(DeliveryError::Dropped(Counter::DeliveryTooLarge)),
        Err(EncodeError::BufferTooSmall { needed }) if too_large(needed) => {
            Err(DeliveryError::Dropped(Counter::DeliveryTooLarge))
        }
        Err(EncodeError::BufferTooSmall { needed }) => Err(DeliveryError::NoRoom {
            needed: needed + scratch,
        }),
        Err(_) => Err(DeliveryError::Unencodable),
    }
    .inspect_err(|_| *next_pkid = before)?;
    tx.len += written;
    tx.packets += 1;
    Ok(Delivered {
        written,
        qos,
        pkid,
        forgotten: false,
        subscription_ids_cut: additions.ids_cut,
    })
}

/// The driver's transmit buffer and how much of it the engine has filled.
pub(super) struct Tx<'t> {
    buf: &'t mut [u8],
    pub(super) len: usize,
    /// The version packets are encoded for.
    pub(super) version: Version,
    /// The packets written.
    packets: usize,
}

impl<'t> Tx<'t> {
    pub(super) fn new(buf: &'t mut [u8], version: Version) -> Self {
        Tx {
            buf,
            len: 0,
            version,
            packets: 0,
        }
    }

    /// Counts the packets written ([`Counter::PacketOut`]) and returns the bytes written.
    pub(super) fn finish(self, out: &mut impl Output) -> usize {
        for _ in 0..self.packets {
            out.count(Counter::PacketOut);
        }
        self.len
    }

    /// The free bytes.
    pub(super) fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Encodes `packet` after what is there; the bytes written (0 without room, which the
    /// callers rule out by checking [`Connection::answer_room`](super::Connection::answer_room) or [`Tx::room`] first).
    /// The engine sends no SUBSCRIBE, UNSUBSCRIBE or AUTH and writes SUBACKs with
    /// [`Tx::codes_frame`], so only the codec's encoder of the other types is linked.
    pub(super) fn put(&mut self, packet: &Packet<'_>) -> usize {
        let written = self
            .buf
            .get_mut(self.len..)
            .and_then(|rest| packet.encode_not_sub_auth(rest, self.version).ok())
            .unwrap_or(0);
        self.len += written;
        self.packets += usize::from(written > 0);
        written
    }

    /// Writes the fixed header, packet id and (MQTT 5) empty properties of a SUBACK (`first`
    /// 0x90) or an MQTT 5 UNSUBACK (0xB0) with `count` codes, and leaves room for the codes;
    /// returns where the codes start, or `None` without room.
    pub(super) fn codes_frame(&mut self, first: u8, pkid: u16, count: usize) -> Option<usize> {
        let v5 = self.version.is_v5();
        let total = codes_len(count, v5);
        let frame = self.buf.get_mut(self.len..self.len.checked_add(total)?)?;
        let mut remaining = 2 + usize::from(v5) + count;
        let mut at = 0;
        frame[at] = first;
        at += 1;
        loop {
            let mut byte = u8::try_from(remaining % 128).unwrap_or(0);
            remaining /= 128;
            if remaining > 0 {
                byte |= 0x80;
            }
            frame[at] = byte;
            at += 1;
            if remaining == 0 {
                break;
            }
        }
        frame[at..at + 2].copy_from_slice(&pkid.to_be_bytes());
        at += 2;
        if v5 {
            // An empty property block.
            frame[at] = 0;
            at += 1;
        }
        let start = self.len + at;
        self.len += total;
        self.packets += 1;
        Some(start)
    }

    /// Sets byte `at` (inside what was written).
    pub(super) fn set(&mut self, at: usize, byte: u8) {
        if let Some(slot) = self.buf.get_mut(..self.len).and_then(|b| b.get_mut(at)) {
            *slot = byte;
        }
    }

    /// Byte `at` (inside what was written).
    pub(super) fn get(&self, at: usize) -> Option<u8> {
        self.buf.get(..self.len)?.get(at).copied()
    }
}

/// The length of a SUBACK (or MQTT 5 UNSUBACK) with `count` codes and, when `v5`, an empty
/// property block (section 3.9; MQTT 5.0 sections 3.9, 3.11).
pub(super) const fn codes_len(count: usize, v5: bool) -> usize {
    let remaining = 2 + v5 as usize + count;
    let varint = if remaining < 128 {
        1
    } else if remaining < 16_384 {
        2
    } else if remaining < 2_097_152 {
        3
    } else {
        4
    };
    1 + varint + remaining
}
