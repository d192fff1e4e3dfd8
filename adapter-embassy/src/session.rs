//! The socket side of a client slot, and the refusing socket (MQTT 3.1.1 sections 3.1.2.10,
//! 3.2.2.3 and 4.8).
//!
//! Each slot owns one listening [`TcpSocket`] for the gateway's life (smoltcp has no listen
//! backlog, so N slots are N listening sockets). One more socket, created after the slots,
//! takes a connection only when every slot is busy and answers it with CONNACK 3, *server
//! unavailable*.

use core::fmt::Write;

use activity_core::codec::{DecodeError, decode};
use activity_core::event::DisconnectReason;
use embassy_futures::select::{Either, Either3, select, select3};
use embassy_net::Stack;
use embassy_net::tcp::TcpSocket;
use embassy_time::{Duration, Instant, Timer, with_timeout};

use crate::handler::{Flow, RESPONSE_RESERVE};
use crate::router::Shared;
use crate::stats::bump;
use crate::{Config, SlotBuffers};

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

/// Serves one client slot forever.
pub(crate) async fn run_slot<
    const CLIENTS: usize,
    const RX: usize,
    const TX: usize,
    const SUBS: usize,
    const QUEUE: usize,
>(
    stack: Stack<'_>,
    shared: &Shared<CLIENTS, SUBS, QUEUE>,
    config: &Config<'_>,
    index: usize,
    buffers: &mut SlotBuffers<RX, TX>,
) {
    let SlotBuffers { rx, tx, packet } = buffers;
    let mut socket = TcpSocket::new(stack, rx, tx);
    let ctx = shared.ctx(config);
    loop {
        if socket.accept(config.port).await.is_err() {
            socket.abort();
            Timer::after_millis(100).await;
            continue;
        }
        socket.set_nagle_enabled(false);
        bump(&ctx.counters.connections_accepted);
        shared.core.borrow_mut().clients[index].reset();
        let mut peer = heapless::String::<48>::new();
        if let Some(endpoint) = socket.remote_endpoint() {
            // An IPv4 endpoint is at most 21 characters.
            let _ = write!(peer, "{endpoint}");
        }
        let reason = serve(&mut socket, shared, config, index, packet, &peer).await;
        let now = shared.status.now_ms();
        shared
            .core
            .borrow_mut()
            .close_client(&ctx, index, now, reason);
        // Send what is still queued (a refusing CONNACK, say), then close.
        let _ = with_timeout(LINGER, async {
            loop {
                let drained = socket
                    .write_with(|buf| {
                        let n = shared.core.borrow_mut().clients[index].out.drain_into(buf);
                        (n, n)
                    })
                    .await;
                if !matches!(drained, Ok(n) if n > 0) {
                    break;
                }
            }
        })
        .await;
        shared.core.borrow_mut().clients[index].out.clear();
        close_socket(&mut socket).await;
    }
}

/// Reads, handles and writes for one connection until it ends; returns why.
async fn serve<const CLIENTS: usize, const SUBS: usize, const QUEUE: usize>(
    socket: &mut TcpSocket<'_>,
    shared: &Shared<CLIENTS, SUBS, QUEUE>,
    config: &Config<'_>,
    index: usize,
    packet: &mut [u8],
    peer: &str,
) -> DisconnectReason {
    let ctx = shared.ctx(config);
    let (mut reader, mut writer) = socket.split();
    let mut have = 0usize;
    let mut deadline = Instant::now() + config.connect_timeout;
    let mut keep_alive: Option<Duration> = None;
    loop {
        // Handle every complete packet, as long as an answer fits the queue.
        loop {
            {
                let core = shared.core.borrow();
                let client = &core.clients[index];
                if client.kicked {
                    return DisconnectReason::Takenover;
                }
                if client.out.free() < RESPONSE_RESERVE {
                    break;
                }
            }
            let (flow, used) = match decode(&packet[..have], packet.len()) {
                Ok(Some((p, used))) => {
                    let now = shared.status.now_ms();
                    let peer = (!peer.is_empty()).then_some(peer);
                    let flow = shared
                        .core
                        .borrow_mut()
                        .handle_packet(&ctx, index, p, peer, now);
                    (flow, used)
                }
                Ok(None) => break,
                Err(DecodeError::PacketTooLarge { .. }) => {
                    bump(&ctx.counters.packets_too_large);
                    return DisconnectReason::PacketTooLarge;
                }
                Err(_) => {
                    bump(&ctx.counters.protocol_errors);
                    return DisconnectReason::ProtocolError;
                }
            };
            packet.copy_within(used..have, 0);
            have -= used;
            match flow {
                Flow::Continue => {}
                Flow::Connected(seconds) => {
                    keep_alive = (seconds > 0).then(|| {
                        // 1.5 times the keep-alive (section 3.1.2.10), in ms.
                        Duration::from_millis(u64::from(seconds) * 1500)
                    });
                }
                Flow::Close(reason) => return reason,
            }
            // Any control packet restarts the keep-alive clock.
            if shared.core.borrow().clients[index].is_connected() {
                deadline = keep_alive.map_or(Instant::MAX, |k| Instant::now() + k);
            }
        }
        let room = shared.core.borrow().clients[index].out.free() >= RESPONSE_RESERVE;
        let read = async {
            if room && have < packet.len() {
                reader.read(&mut packet[have..]).await
            } else {
                core::future::pending().await
            }
        };
        let write = async {
            loop {
                {
                    let core = shared.core.borrow();
                    let client = &core.clients[index];
                    if client.kicked {
                        return Ok(0);
                    }
                    if !client.out.is_empty() {
                        break;
                    }
                }
                shared.wake[index].wait().await;
            }
            writer
                .write_with(|buf| {
                    let n = shared.core.borrow_mut().clients[index].out.drain_into(buf);
                    (n, n)
                })
                .await
        };
        match select3(read, write, Timer::at(deadline)).await {
            Either3::First(Ok(0) | Err(_)) | Either3::Second(Err(_)) => {
                return DisconnectReason::TcpClosed;
            }
            Either3::First(Ok(n)) => have += n,
            Either3::Second(Ok(_)) => {}
            Either3::Third(()) => return DisconnectReason::KeepaliveTimeout,
        }
    }
}

/// CONNACK with return code 3, server unavailable (section 3.2.2.3).
const CONNACK_SERVER_UNAVAILABLE: [u8; 4] = [0x20, 0x02, 0x00, 0x03];

/// Answers connections that find every slot busy with CONNACK 3, forever.
pub(crate) async fn run_refuser(
    stack: Stack<'_>,
    config: &Config<'_>,
    counters: &crate::stats::Counters,
    rx: &mut [u8],
    tx: &mut [u8],
) {
    let mut socket = TcpSocket::new(stack, rx, tx);
    let mut scratch = [0u8; 16];
    loop {
        if socket.accept(config.port).await.is_err() {
            socket.abort();
            Timer::after_millis(100).await;
            continue;
        }
        bump(&counters.refused_no_slot);
        warn!("gateway: every client slot is busy, connection refused");
        // Wait for the CONNECT to begin (its content does not matter), then refuse it.
        let _ = select(socket.read(&mut scratch), Timer::after_secs(2)).await;
        if let Either::First(Err(_)) | Either::Second(()) = select(
            socket.write(&CONNACK_SERVER_UNAVAILABLE),
            Timer::after_secs(1),
        )
        .await
        {
            socket.abort();
        }
        close_socket(&mut socket).await;
    }
}
