//! The socket side of a client slot, and the refusing socket (MQTT 3.1.1 sections 3.1.2.10,
//! 3.2.2.3 and 4.8).
//!
//! Each slot owns one listening [`TcpSocket`] for the gateway's life (smoltcp has no listen
//! backlog, so N slots are N listening sockets). One more socket, created after the slots,
//! takes a connection only when every slot is busy and answers it with CONNACK 3, *server
//! unavailable*.

use activity_core::server::{CloseCause, PEER_CAPACITY};
use embassy_futures::select::{Either, Either3, select, select3};
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpAddress, IpEndpoint};
use embassy_time::{Duration, Instant, Timer, with_timeout};
use heapless::String;

use crate::Config;
use crate::router::{Ctx, EngineStores, Shared, server_config};
use crate::stats::{Counters, bump};

/// How long a closing connection may take to send what is queued.
const LINGER: Duration = Duration::from_secs(2);

/// Closes a socket so that it can listen again: FIN after the queued data, then a reset for a
/// peer that does not answer.
pub(crate) async fn close_socket(socket: &mut TcpSocket<'_>) {
    socket.close();
    let _ = with_timeout(LINGER, socket.flush()).await;
    socket.abort();
    let _ = with_timeout(Duration::from_millis(100), socket.flush()).await;
}

/// Serves one client slot forever; with `index` = `CLIENTS`, the refusing socket.
///
/// The refusing socket runs as this same future (the caller creates the socket, so the type is
/// the same), so the accept and close code is in the firmware once: a connection that it
/// accepts gets CONNACK 3 ([`refuse`]) instead of an engine.
pub(crate) async fn run_slot<
    const CLIENTS: usize,
    const SUBS: usize,
    const QUEUE: usize,
    S: EngineStores,
>(
    shared: &Shared<CLIENTS, SUBS, QUEUE, S>,
    config: &Config<'_>,
    index: usize,
    mut socket: TcpSocket<'_>,
    packet: &mut [u8],
) {
    let ctx = shared.ctx(config);
    loop {
        if socket.accept(config.port).await.is_err() {
            socket.abort();
            Timer::after_millis(100).await;
            continue;
        }
        if index >= CLIENTS {
            refuse(&mut socket, ctx.counters, packet).await;
            close_socket(&mut socket).await;
            continue;
        }
        socket.set_nagle_enabled(false);
        bump(&ctx.counters.connections_accepted);
        {
            // Not kept across an await: the engine copies what it needs.
            let peer = socket.remote_endpoint().map(peer_text).unwrap_or_default();
            // Unique among the gateway's connections: the slot and the connection serial.
            let nonce = (u64::try_from(index).unwrap_or(0) << 32)
                | u64::from(ctx.counters.connections_accepted.get());
            let now = shared.status.now_ms();
            let server = server_config(config, packet.len());
            shared.core().open(index, server, &peer, now, nonce);
        }
        serve(&mut socket, shared, &ctx, index, packet).await;
        shared.core().clear_queue(index);
        close_socket(&mut socket).await;
    }
}

/// The peer's address for the `connected` event, as `Display` writes it (`a.b.c.d:port`).
///
/// Written by hand: `core::fmt`'s integer and padding code would cost about 1 KB of flash for
/// this one use.
fn peer_text(endpoint: IpEndpoint) -> String<PEER_CAPACITY> {
    let mut text = String::new();
    // An IPv4 endpoint is at most 21 characters: every push fits.
    match endpoint.addr {
        IpAddress::Ipv4(addr) => {
            for (i, octet) in addr.octets().into_iter().enumerate() {
                if i > 0 {
                    let _ = text.push('.');
                }
                push_decimal(&mut text, u16::from(octet));
            }
        }
        // Only with embassy-net's `proto-ipv6`, which the gateway does not enable.
        #[allow(unreachable_patterns)]
        _ => {
            use core::fmt::Write;
            let _ = write!(text, "{endpoint}");
            return text;
        }
    }
    let _ = text.push(':');
    push_decimal(&mut text, endpoint.port);
    text
}

/// Appends `n` in decimal.
fn push_decimal(text: &mut String<PEER_CAPACITY>, n: u16) {
    if n >= 10 {
        push_decimal(text, n / 10);
    }
    let _ = text.push(char::from(b'0' + u8::try_from(n % 10).unwrap_or(0)));
}

/// Drops the first `n` of the `have` bytes at the front of `buf`; returns how many are left.
pub(crate) fn consume(buf: &mut [u8], have: usize, n: usize) -> usize {
    match buf.get_mut(..have) {
        Some(held) if n <= held.len() => {
            held.copy_within(n.., 0);
            have - n
        }
        // Cannot happen: nobody consumes more than it was given.
        _ => 0,
    }
}

/// Moves bytes between the socket and the slot's engine until the connection ends, ends the
/// engine's connection (when the transport, not the engine, ended it) and sends what is still
/// queued (a refusing CONNACK, say).
async fn serve<const CLIENTS: usize, const SUBS: usize, const QUEUE: usize, S: EngineStores>(
    socket: &mut TcpSocket<'_>,
    shared: &Shared<CLIENTS, SUBS, QUEUE, S>,
    ctx: &Ctx<'_>,
    index: usize,
    packet: &mut [u8],
) {
    let (mut reader, mut writer) = socket.split();
    let mut have = 0usize;
    let cause = 'serve: loop {
        // Hand the engine every byte not consumed yet.
        loop {
            let now = shared.status.now_ms();
            let input = packet.get(..have).unwrap_or_default();
            let consumed = shared.core().handle_input(ctx, index, input, now);
            have = consume(packet, have, consumed);
            if shared.core().is_closed(index) {
                // The engine closed it and reported why (or another connection took the
                // client id over); the cause is not used.
                break 'serve CloseCause::ProtocolError;
            }
            if consumed == 0 {
                break;
            }
        }
        let (readable, deadline) = {
            let core = shared.core();
            let deadline = core.poll_timeout(index).map_or(Instant::MAX, |unix_ms| {
                let offset = shared.status.epoch_offset_ms.get();
                Instant::from_millis(unix_ms.saturating_sub(offset))
            });
            (!core.is_blocked(index) && have < packet.len(), deadline)
        };
        let read = async {
            if readable {
                reader
                    .read(packet.get_mut(have..).unwrap_or_default())
                    .await
            } else {
                core::future::pending().await
            }
        };
        let write = async {
            loop {
                {
                    let core = shared.core();
                    if core.is_closed(index) {
                        // Taken over: back to the loop above, which returns.
                        return Ok(0);
                    }
                    if core.has_queued(index) {
                        break;
                    }
                }
                match shared.slot_wake(index) {
                    Some(wake) => wake.wait().await,
                    None => core::future::pending().await,
                }
            }
            writer
                .write_with(&mut drain_queue(shared, index) as Fill<'_>)
                .await
        };
        match select3(read, write, Timer::at(deadline)).await {
            Either3::First(Ok(0) | Err(_)) | Either3::Second(Err(_)) => {
                break 'serve CloseCause::TransportClosed;
            }
            Either3::First(Ok(n)) => have += n,
            Either3::Second(Ok(_)) => {}
            Either3::Third(()) => {
                let now = shared.status.now_ms();
                shared.core().handle_timeout(ctx, index, now);
            }
        }
    };
    let now = shared.status.now_ms();
    // Nothing happens if the engine closed the connection itself.
    shared.core().close_client(ctx, index, now, cause);
    let _ = with_timeout(LINGER, async {
        while matches!(
            writer.write_with(&mut drain_queue(shared, index) as Fill<'_>).await,
            Ok(n) if n > 0
        ) {}
    })
    .await;
}

/// What fills a socket's transmit buffer in `write_with` (returning the bytes written, twice):
/// one type for the slots and the uplink, so that the firmware has one copy of embassy-net's
/// write future.
pub(crate) type Fill<'a> = &'a mut dyn FnMut(&mut [u8]) -> (usize, usize);

/// What moves slot `index`'s queue into the socket's transmit buffer, for `write_with` (as a
/// [`Fill`]), while the connection is served and while it closes.
fn drain_queue<const CLIENTS: usize, const SUBS: usize, const QUEUE: usize, S: EngineStores>(
    shared: &Shared<CLIENTS, SUBS, QUEUE, S>,
    index: usize,
) -> impl FnMut(&mut [u8]) -> (usize, usize) + '_ {
    move |buf| {
        let n = shared.core().drain_into(index, buf);
        (n, n)
    }
}

/// What copies what fits of `bytes` into a socket's transmit buffer, for `write_with` (as a
/// [`Fill`]): the gateway writes fixed bytes this way too, so that embassy-net's `write`
/// future is not linked besides its `write_with`.
pub(crate) fn copy_from(bytes: &[u8]) -> impl FnMut(&mut [u8]) -> (usize, usize) + '_ {
    move |buf| {
        let n = buf.len().min(bytes.len());
        if let (Some(to), Some(from)) = (buf.get_mut(..n), bytes.get(..n)) {
            to.copy_from_slice(from);
        }
        (n, n)
    }
}

/// CONNACK with return code 3, server unavailable (section 3.2.2.3).
const CONNACK_SERVER_UNAVAILABLE: [u8; 4] = [0x20, 0x02, 0x00, 0x03];

/// Answers a connection that found every slot busy with CONNACK 3, reading its first bytes
/// into `scratch` (a few bytes are enough).
async fn refuse(socket: &mut TcpSocket<'_>, counters: &Counters, scratch: &mut [u8]) {
    bump(&counters.refused_no_slot);
    warn!("gateway: every client slot is busy, connection refused");
    // Wait for the CONNECT to begin (its content does not matter), then refuse it.
    let _ = select(socket.read(scratch), Timer::after_secs(2)).await;
    if let Either::First(Err(_)) | Either::Second(()) = select(
        socket
            .split()
            .1
            .write_with(&mut copy_from(&CONNACK_SERVER_UNAVAILABLE) as Fill<'_>),
        Timer::after_secs(1),
    )
    .await
    {
        socket.abort();
    }
}

#[cfg(test)]
mod tests {
    use core::fmt::Write;

    use embassy_net::Ipv4Address;

    use super::*;

    #[test]
    fn peer_text_is_what_display_writes() {
        for (octets, port) in [
            ([192, 0, 2, 1], 1883),
            ([0, 0, 0, 0], 0),
            ([10, 9, 100, 255], 9),
            ([255, 255, 255, 255], 65535),
        ] {
            let [a, b, c, d] = octets;
            let endpoint = IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(a, b, c, d)), port);
            let mut expected = String::<PEER_CAPACITY>::new();
            write!(expected, "{endpoint}").unwrap();
            assert_eq!(peer_text(endpoint), expected);
        }
    }
}
