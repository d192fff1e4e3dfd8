//! Raw MQTT 5 over TCP: hand-built CONNECTs with properties and a will, whole server packets
//! read back, for what `mosquitto_pub` / `mosquitto_sub` cannot show (session present, the
//! CONNACK's properties, a server DISCONNECT and its reason string).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::WAIT;

/// Appends an MQTT variable byte integer (MQTT 5.0 section 1.5.5).
fn push_var_int(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = u8::try_from(value % 128).expect("below 128");
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return;
        }
    }
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("test strings are short");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A packet: `first` byte, remaining length, `body`.
pub fn packet5(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    push_var_int(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// A property block: its length, then `properties` (already encoded).
fn block(properties: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_var_int(&mut out, properties.len());
    out.extend_from_slice(properties);
    out
}

/// Session Expiry Interval (0x11) of `seconds`, encoded.
pub fn session_expiry(seconds: u32) -> Vec<u8> {
    let mut out = vec![0x11];
    out.extend_from_slice(&seconds.to_be_bytes());
    out
}

/// Will Delay Interval (0x18) of `seconds`, encoded.
pub fn will_delay(seconds: u32) -> Vec<u8> {
    let mut out = vec![0x18];
    out.extend_from_slice(&seconds.to_be_bytes());
    out
}

/// A last will for [`connect5`]: topic, message, encoded will properties (QoS 0, no retain).
pub struct Will<'a> {
    /// The will topic.
    pub topic: &'a str,
    /// The will message.
    pub message: &'a [u8],
    /// The will properties, encoded (see [`will_delay`]).
    pub properties: Vec<u8>,
}

/// An MQTT 5 CONNECT (5.0 section 3.1) of `client_id` with `clean_start`, `keep_alive`,
/// encoded `properties` and an optional will.
pub fn connect5(
    client_id: &str,
    clean_start: bool,
    keep_alive: u16,
    properties: &[u8],
    will: Option<&Will<'_>>,
) -> Vec<u8> {
    let mut body = Vec::new();
    push_bytes(&mut body, b"MQTT");
    body.push(5);
    let mut flags = 0u8;
    if clean_start {
        flags |= 0x02;
    }
    if will.is_some() {
        flags |= 0x04;
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend_from_slice(&block(properties));
    push_bytes(&mut body, client_id.as_bytes());
    if let Some(will) = will {
        body.extend_from_slice(&block(&will.properties));
        push_bytes(&mut body, will.topic.as_bytes());
        push_bytes(&mut body, will.message);
    }
    packet5(0x10, &body)
}

/// An MQTT 5 SUBSCRIBE of `filter` at `qos`, packet id `pkid`.
pub fn subscribe5(pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.push(0);
    push_bytes(&mut body, filter.as_bytes());
    body.push(qos);
    packet5(0x82, &body)
}

/// An MQTT 5 SUBSCRIBE of `filter` with the options byte `options` (QoS in bits 0-1, No
/// Local 0x04, Retain As Published 0x08, Retain Handling in bits 4-5) and Subscription
/// Identifier (0x0B) `id`, packet id `pkid`.
pub fn subscribe5_with(pkid: u16, id: u32, filter: &str, options: u8) -> Vec<u8> {
    let mut properties = vec![0x0B];
    push_var_int(
        &mut properties,
        usize::try_from(id).expect("u32 fits usize"),
    );
    let mut body = pkid.to_be_bytes().to_vec();
    body.extend_from_slice(&block(&properties));
    push_bytes(&mut body, filter.as_bytes());
    body.push(options);
    packet5(0x82, &body)
}

/// An MQTT 5 PUBLISH of `payload` on `topic` at `qos` (packet id `pkid` for QoS 1 and 2),
/// without properties.
pub fn publish5(topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    push_bytes(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.push(0);
    body.extend_from_slice(payload);
    packet5(0x30 | (qos << 1), &body)
}

/// An MQTT 5 DISCONNECT with `reason` and encoded `properties`.
pub fn disconnect5(reason: u8, properties: &[u8]) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend_from_slice(&block(properties));
    packet5(0xE0, &body)
}

/// One packet from the server: its first byte and its body (after the remaining length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet5 {
    /// The first byte (type and flags).
    pub first: u8,
    /// The rest of the packet.
    pub body: Vec<u8>,
}

impl Packet5 {
    /// The CONNACK's session present flag.
    pub fn session_present(&self) -> bool {
        assert_eq!(self.first, 0x20, "not a CONNACK: {self:?}");
        self.body[0] & 1 == 1
    }

    /// The reason code of a CONNACK (its second byte) or a DISCONNECT (its first).
    pub fn reason(&self) -> u8 {
        match self.first {
            0x20 => self.body[1],
            0xE0 => self.body.first().copied().unwrap_or(0),
            _ => panic!("no reason code in {self:?}"),
        }
    }

    /// The property bytes (without their length) of a CONNACK or a DISCONNECT.
    pub fn properties(&self) -> &[u8] {
        let at = match self.first {
            0x20 => 2,
            0xE0 if self.body.len() > 1 => 1,
            _ => return &[],
        };
        let (len, used) = var_int(&self.body[at..]);
        &self.body[at + used..at + used + len]
    }

    /// A PUBLISH's topic, property bytes (without their length) and payload.
    pub fn publish(&self) -> (String, &[u8], &[u8]) {
        assert_eq!(self.first >> 4, 3, "not a PUBLISH: {self:?}");
        let len = usize::from(u16::from_be_bytes([self.body[0], self.body[1]]));
        let topic = String::from_utf8_lossy(&self.body[2..2 + len]).into_owned();
        // QoS 1 and 2 carry a packet id after the topic.
        let at = 2 + len + if self.first & 0x06 != 0 { 2 } else { 0 };
        let (properties, used) = var_int(&self.body[at..]);
        let start = at + used;
        (
            topic,
            &self.body[start..start + properties],
            &self.body[start + properties..],
        )
    }

    /// Whether the properties contain `property` (its identifier and value, encoded).
    pub fn has_property(&self, property: &[u8]) -> bool {
        self.properties()
            .windows(property.len())
            .any(|w| w == property)
    }

    /// The Reason String (0x1F), if one is there (found by its identifier byte: the test
    /// packets carry no other property whose bytes could hold 0x1F first).
    pub fn reason_string(&self) -> Option<String> {
        let properties = self.properties();
        let at = properties.iter().position(|b| *b == 0x1F)?;
        let len = usize::from(u16::from_be_bytes([properties[at + 1], properties[at + 2]]));
        Some(String::from_utf8_lossy(&properties[at + 3..at + 3 + len]).into_owned())
    }
}

/// A variable byte integer at the front of `bytes`: its value and its length.
fn var_int(bytes: &[u8]) -> (usize, usize) {
    let mut value = 0;
    for (i, byte) in bytes.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("bad variable byte integer in {bytes:02x?}")
}

/// A raw MQTT 5 connection that reads whole packets.
pub struct Raw5 {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw5 {
    /// Connects to `addr`, sends `connect` and returns the CONNACK.
    pub async fn connect(addr: SocketAddr, connect: &[u8]) -> (Raw5, Packet5) {
        let stream = TcpStream::connect(addr).await.expect("TCP connect");
        let mut raw = Raw5 {
            stream,
            buf: Vec::new(),
        };
        raw.send(connect).await;
        let connack = raw.next(WAIT).await.expect("a CONNACK within 5 s");
        assert_eq!(connack.first, 0x20, "CONNACK first: {connack:?}");
        (raw, connack)
    }

    /// Writes `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet within `within`; `None` when the connection closed or nothing came.
    pub async fn next(&mut self, within: Duration) -> Option<Packet5> {
        let deadline = Instant::now() + within;
        loop {
            if self.buf.len() >= 2 {
                let (len, used) = var_int(&self.buf[1..]);
                let total = 1 + used + len;
                if self.buf.len() >= total {
                    let packet = Packet5 {
                        first: self.buf[0],
                        body: self.buf[1 + used..total].to_vec(),
                    };
                    self.buf.drain(..total);
                    return Some(packet);
                }
            }
            let mut chunk = [0u8; 4096];
            match timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next packet whose first byte is `first`, skipping others, within [`WAIT`].
    pub async fn expect(&mut self, first: u8) -> Packet5 {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(packet) if packet.first == first => return packet,
                Some(_) => {}
                None => panic!("no packet {first:#04x} within {WAIT:?}"),
            }
        }
    }

    /// Reads until the server closes the connection, within [`WAIT`]; the packets it sent.
    pub async fn until_closed(&mut self) -> Vec<Packet5> {
        let deadline = Instant::now() + WAIT;
        let mut packets = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the server did not close within {WAIT:?}");
            match self.next(left).await {
                Some(packet) => packets.push(packet),
                None => return packets,
            }
        }
    }
}
