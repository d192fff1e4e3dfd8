//! The uplink: the gateway as an MQTT 3.1.1 client of an upstream broker (sections 3.1-3.3,
//! 3.12-3.13).
//!
//! The gateway connects with its gateway id as client id, the configured username and password
//! if any, a retained last will `offline` on `<prefix>/gateway/<id>/uplink`, and publishes a
//! retained `online` there once connected. A refused CONNECT counts as a failed attempt.
//! Every event and every local message that matches a forward filter is queued as a PUBLISH
//! on `<prefix>/<local topic>` at [`UplinkConfig::qos`](crate::UplinkConfig::qos), in the
//! core's [`Outbox`](activity_core::outbox::Outbox), which makes the protocol's decisions:
//! packet ids, a QoS 1 message kept until its PUBACK and sent again with DUP, in order, after a
//! reconnect, and which message goes when the queue is full (counted). The queue keeps filling
//! while the uplink is down. A broken connection is retried with exponential backoff.

use activity_core::QoS;
use activity_core::codec::{
    ConnectReturnCode, LastWill, PROTOCOL_LEVEL, Packet, PacketType, Publish, fixed_header,
};
use embassy_futures::select::{Either3, select3};
use embassy_net::Stack;
use embassy_net::tcp::{TcpSocket, TcpWriter};
use embassy_time::{Duration, Instant, Timer, with_timeout};
use heapless::String;

use crate::router::{EngineStores, Shared, UPLINK_TOPIC_CAPACITY};
use crate::session::{Fill, close_socket, consume, copy_from};
use crate::stats::{add, bump};
use crate::{Config, UplinkBuffers, UplinkConfig};

/// The retained state message while the uplink is connected.
pub const ONLINE: &[u8] = b"online";
/// The retained state message (the uplink's last will) while it is not.
pub const OFFLINE: &[u8] = b"offline";

/// PINGREQ (section 3.12).
const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// How long connecting and the CONNACK may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps the uplink connected forever; returns at once without an uplink configuration.
pub(crate) async fn run_uplink<
    const CLIENTS: usize,
    const TX: usize,
    const SUBS: usize,
    const QUEUE: usize,
    S: EngineStores,
>(
    stack: Stack<'_>,
    shared: &Shared<CLIENTS, SUBS, QUEUE, S>,
    config: &Config<'_>,
    buffers: &mut UplinkBuffers<TX>,
) {
    let Some(uplink) = &config.uplink else {
        return;
    };
    let UplinkBuffers { rx, tx, packet } = buffers;
    let mut socket = TcpSocket::new(stack, rx, tx);
    let mut state_topic = String::<UPLINK_TOPIC_CAPACITY>::new();
    let composed = state_topic
        .push_str(uplink.prefix)
        .and_then(|()| state_topic.push_str("/gateway/"))
        .and_then(|()| state_topic.push_str(config.gateway_id))
        .and_then(|()| state_topic.push_str("/uplink"));
    if composed.is_err() {
        warn!("uplink: prefix and gateway id too long for the state topic");
        return;
    }
    let mut backoff = uplink.backoff_min;
    loop {
        let was_up = session(&mut socket, shared, config, uplink, &state_topic, packet).await;
        shared.status.uplink_up.set(false);
        let rewound = shared.core().uplink.handle_disconnect();
        let counters = &shared.status.counters;
        if rewound.cut_off {
            bump(&counters.uplink_dropped);
        }
        add(&counters.uplink_resent, rewound.resent);
        close_socket(&mut socket).await;
        if was_up {
            backoff = uplink.backoff_min;
        } else {
            bump(&shared.status.counters.uplink_failures);
        }
        info!("uplink: down, retrying in {} ms", backoff.as_millis());
        Timer::after(backoff).await;
        backoff = (backoff * 2).min(uplink.backoff_max);
    }
}

/// A packet from the upstream broker, as far as the uplink reads it.
enum Incoming {
    /// CONNACK with its return code (section 3.2.2.3).
    ConnAck(u8),
    /// PUBACK with its packet id (section 3.4.2).
    PubAck(u16),
    /// Any other packet (skipped).
    Other,
}

/// Frames one packet at the front of `buf` (at most `max` bytes) with the codec's fixed header
/// and reads the two the uplink uses from their bytes: CONNACK `0x20 0x02 flags code` (section
/// 3.2) and PUBACK `0x40 0x02 id` (section 3.4), both MQTT 3.1.1. The codec's decoders of those
/// types are not linked: the engine decodes with
/// [`decode_from_client`](activity_core::codec::decode_from_client), which has none, and
/// the uplink needs two bytes of each.
///
/// `Ok(None)` until the packet is complete; `Err` for a fixed header that can never be valid,
/// a packet longer than `max`, or a CONNACK or PUBACK that is not 2 bytes long, a CONNACK with
/// reserved flags set, a PUBACK for packet id 0. Other packets are skipped by their length,
/// their bodies unread.
fn next_packet(buf: &[u8], max: usize) -> Result<Option<(Incoming, usize)>, ()> {
    let Some(header) = fixed_header(buf).map_err(drop)? else {
        return Ok(None);
    };
    let size = header.packet_len();
    if size > max {
        return Err(());
    }
    let Some(body) = buf.get(header.header_len()..size) else {
        return Ok(None);
    };
    let incoming = match (header.packet_type(), body) {
        // Section 3.2.2.1: bits 7-1 of the acknowledge flags are reserved.
        (PacketType::ConnAck, &[flags, code]) if flags & 0xFE == 0 => Incoming::ConnAck(code),
        (PacketType::PubAck, &[high, low]) if high | low != 0 => {
            Incoming::PubAck(u16::from_be_bytes([high, low]))
        }
        (PacketType::ConnAck | PacketType::PubAck, _) => return Err(()),
        _ => Incoming::Other,
    };
    Ok(Some((incoming, size)))
}

/// Writes all of `bytes`.
async fn write_all(writer: &mut TcpWriter<'_>, mut bytes: &[u8]) -> Result<(), ()> {
    while !bytes.is_empty() {
        match writer.write_with(&mut copy_from(bytes) as Fill<'_>).await {
            Ok(0) | Err(_) => return Err(()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
        }
    }
    Ok(())
}

/// One uplink connection; returns whether it got as far as CONNACK 0.
async fn session<const CLIENTS: usize, const SUBS: usize, const QUEUE: usize, S: EngineStores>(
    socket: &mut TcpSocket<'_>,
    shared: &Shared<CLIENTS, SUBS, QUEUE, S>,
    config: &Config<'_>,
    uplink: &UplinkConfig<'_>,
    state_topic: &str,
    packet: &mut [u8],
) -> bool {
    if !matches!(
        with_timeout(CONNECT_TIMEOUT, socket.connect(uplink.remote)).await,
        Ok(Ok(()))
    ) {
        return false;
    }
    socket.set_nagle_enabled(false);
    let connect = Packet::Connect(activity_core::codec::Connect {
        protocol_name: activity_core::codec::ProtocolName::Mqtt,
        properties: activity_core::codec::Properties::EMPTY,
        protocol_level: PROTOCOL_LEVEL,
        client_id: config.gateway_id,
        // At QoS 1 the session is kept across connections, so that the messages sent again
        // after a reconnect are re-deliveries of that session (section 4.4).
        clean_session: uplink.qos == QoS::AtMostOnce,
        keep_alive: uplink.keep_alive_secs,
        username: uplink.username,
        // MQTT 3.1.1 allows a password only with a username (section 3.1.2.9).
        password: uplink.password.filter(|_| uplink.username.is_some()),
        will: Some(LastWill {
            properties: activity_core::codec::Properties::EMPTY,
            topic: state_topic,
            message: OFFLINE,
            qos: QoS::AtLeastOnce,
            retain: true,
        }),
    });
    let Ok(len) = connect.encode(packet) else {
        warn!("uplink: the CONNECT does not fit its packet buffer");
        return false;
    };
    if write_all(&mut socket.split().1, packet.get(..len).unwrap_or_default())
        .await
        .is_err()
    {
        return false;
    }
    // Wait for the CONNACK.
    let mut have = 0;
    let accepted = with_timeout(CONNECT_TIMEOUT, async {
        loop {
            match next_packet(packet.get(..have).unwrap_or_default(), packet.len()) {
                Ok(Some((Incoming::ConnAck(code), _))) => {
                    if code != ConnectReturnCode::Accepted.as_u8() {
                        warn!("uplink: refused, CONNACK {}", code);
                    }
                    return code == ConnectReturnCode::Accepted.as_u8();
                }
                Ok(None) => {}
                Ok(Some(_)) | Err(()) => return false,
            }
            match socket
                .read(packet.get_mut(have..).unwrap_or_default())
                .await
            {
                Ok(0) | Err(_) => return false,
                Ok(n) => have += n,
            }
        }
    })
    .await;
    if accepted != Ok(true) {
        return false;
    }
    bump(&shared.status.counters.uplink_connects);
    info!("uplink: connected");
    let online = Packet::Publish(Publish {
        properties: activity_core::codec::Properties::EMPTY,
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: state_topic,
        pkid: None,
        payload: ONLINE,
    });
    let Ok(len) = online.encode(packet) else {
        return true;
    };
    if write_all(&mut socket.split().1, packet.get(..len).unwrap_or_default())
        .await
        .is_err()
    {
        return true;
    }
    shared.status.uplink_up.set(true);
    serve(socket, shared, uplink, packet).await;
    true
}

/// Forwards the queue and keeps the connection alive until it breaks.
async fn serve<const CLIENTS: usize, const SUBS: usize, const QUEUE: usize, S: EngineStores>(
    socket: &mut TcpSocket<'_>,
    shared: &Shared<CLIENTS, SUBS, QUEUE, S>,
    uplink: &UplinkConfig<'_>,
    packet: &mut [u8],
) {
    let interval = Duration::from_secs(u64::from(uplink.keep_alive_secs.max(1)));
    let mut last_rx = Instant::now();
    let mut next_ping = Instant::now() + interval;
    // The PINGREQ is due and waits for the end of the packet in transit.
    let mut ping_due = false;
    let mut have = 0usize;
    let (mut reader, mut writer) = socket.split();
    loop {
        // The upstream broker sends PUBACKs for the QoS 1 messages and PINGRESPs (nothing is
        // subscribed); whatever else arrives is skipped, packet by packet.
        loop {
            match next_packet(packet.get(..have).unwrap_or_default(), packet.len()) {
                Ok(Some((incoming, used))) => {
                    if let Incoming::PubAck(pkid) = incoming {
                        shared.core().uplink.handle_puback(pkid);
                    }
                    have = consume(packet, have, used);
                    last_rx = Instant::now();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if Instant::now() > last_rx + interval * 2 {
            warn!("uplink: no answer from the upstream broker");
            return;
        }
        // A PINGREQ goes between the queue's packets, never into one sent in part (the rest of
        // which waits for room in the transmit buffer): until the write below has finished
        // that one, the PINGREQ waits. Written whole, however the buffer's free space wraps.
        if ping_due && shared.core().uplink.rest_in_transit() == 0 {
            if write_all(&mut writer, &PINGREQ).await.is_err() {
                return;
            }
            ping_due = false;
            next_ping = Instant::now() + interval;
        }
        let read = reader.read(packet.get_mut(have..).unwrap_or_default());
        let write = async {
            loop {
                if shared.core().uplink.has_unsent() {
                    break;
                }
                shared.uplink_wake.wait().await;
            }
            let mut drain = |buf: &mut [u8]| {
                let mut core = shared.core();
                let room = match ping_due {
                    true => core.uplink.rest_in_transit().min(buf.len()),
                    false => buf.len(),
                };
                let n = core
                    .uplink
                    .drain_into(buf.get_mut(..room).unwrap_or_default());
                (n, n)
            };
            writer.write_with(&mut drain as Fill<'_>).await
        };
        // While a PINGREQ is due, the timer is off.
        let ping = Timer::at(if ping_due { Instant::MAX } else { next_ping });
        match select3(read, write, ping).await {
            Either3::First(Ok(0) | Err(_)) | Either3::Second(Err(_)) => return,
            Either3::First(Ok(n)) => have += n,
            Either3::Second(Ok(_)) => {}
            Either3::Third(()) => ping_due = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Option<(u8, u16, usize)>, ()> {
        Ok(
            next_packet(bytes, 64)?.map(|(incoming, used)| match incoming {
                Incoming::ConnAck(code) => (1, u16::from(code), used),
                Incoming::PubAck(pkid) => (2, pkid, used),
                Incoming::Other => (0, 0, used),
            }),
        )
    }

    #[test]
    fn reads_connack_and_puback_and_skips_the_rest() {
        assert_eq!(read(&[0x20, 0x02, 0x01, 0x00, 0xFF]), Ok(Some((1, 0, 4))));
        assert_eq!(read(&[0x20, 0x02, 0x00, 0x05]), Ok(Some((1, 5, 4))));
        assert_eq!(read(&[0x40, 0x02, 0x12, 0x34]), Ok(Some((2, 0x1234, 4))));
        assert_eq!(read(&[0xD0, 0x00]), Ok(Some((0, 0, 2))));
        // A PUBLISH is skipped whole, body unread.
        assert_eq!(
            read(&[0x30, 0x03, 0x00, 0x01, b'a', 0x20]),
            Ok(Some((0, 0, 5)))
        );
        // Incomplete.
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(read(&[0x40, 0x02, 0x12]), Ok(None));
        // Reserved CONNACK flags, wrong lengths, packet id 0, a reserved type, too long.
        assert_eq!(read(&[0x20, 0x02, 0x02, 0x00]), Err(()));
        assert_eq!(read(&[0x20, 0x03, 0x00, 0x00, 0x00]), Err(()));
        assert_eq!(read(&[0x40, 0x03, 0x00, 0x01, 0x00]), Err(()));
        assert_eq!(read(&[0x40, 0x02, 0x00, 0x00]), Err(()));
        assert_eq!(read(&[0x00, 0x00]), Err(()));
        assert_eq!(read(&[0x30, 0x7F]), Err(()));
    }
}
