//! Raw MQTT 3.1.1 over TCP: hand-built packets and a bare socket, for what rumqttc would not
//! send.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use crate::WAIT;

/// Appends an MQTT UTF-8 string (2-byte length, MQTT 3.1.1 section 1.5.3).
fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).expect("test strings are short");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
}

/// A CONNECT packet (section 3.1) with the protocol name `MQTT`, `level`, clean session and
/// no will, username or password. Level 5 adds an empty MQTT 5 properties section.
pub fn connect_packet(client_id: &str, keep_alive: u16, level: u8) -> Vec<u8> {
    let mut body = Vec::new();
    push_str(&mut body, b"MQTT");
    body.push(level);
    body.push(0x02); // connect flags: clean session
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0x00); // MQTT 5 properties: none
    }
    push_str(&mut body, client_id.as_bytes());
    crate::raw5::packet5(0x10, &body)
}

/// A raw TCP connection to the broker.
pub struct RawClient {
    /// The socket.
    pub stream: TcpStream,
}

impl RawClient {
    /// Opens a TCP connection to `addr`.
    pub async fn open(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("TCP connect");
        RawClient { stream }
    }

    /// Opens a connection, sends `connect` and returns the 4 CONNACK bytes.
    pub async fn connect(addr: SocketAddr, connect: &[u8]) -> (RawClient, [u8; 4]) {
        let mut raw = RawClient::open(addr).await;
        raw.stream.write_all(connect).await.expect("write CONNECT");
        let mut connack = [0u8; 4];
        timeout(WAIT, raw.stream.read_exact(&mut connack))
            .await
            .expect("CONNACK within 5 s")
            .expect("CONNACK bytes");
        (raw, connack)
    }

    /// The local address of the socket (what the broker reports as `peer`).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// Waits until the server closes the connection (EOF or reset), discarding any bytes;
    /// `true` if it closed within `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut buf = [0u8; 256];
        let deadline = Instant::now() + within;
        loop {
            match timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }
}
