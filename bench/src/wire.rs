//! A minimal MQTT client on tokio sockets, speaking MQTT 3.1, 3.1.1 or 5.0 (chosen per
//! connection), encoding and decoding with [`activity_core::codec`] (MQTT 3.1.1 chapters 2-3,
//! MQTT 5.0 chapter 3).
//!
//! Only what the load tool needs: connect (3.1, 3.2), subscribe (3.8, 3.9), publish batches
//! (3.3), acknowledgements (3.4) and disconnect (3.14). Every wait is bounded by a timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use activity_core::QoS;
use activity_core::codec::{
    self, ConnAck, Connect, ConnectReturnCode, Packet, ProtocolName, Subscribe, SubscribeFilters,
    Version,
};
use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// The largest packet the tool accepts from a broker.
pub const MAX_PACKET: usize = 1 << 20;

/// How long a CONNACK or SUBACK may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Bytes read from a socket and not yet decoded.
#[derive(Debug)]
pub struct PacketReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    version: Version,
}

impl PacketReader {
    /// An empty reader with a 64 KiB buffer, for a connection speaking `version`.
    pub fn new(version: Version) -> Self {
        PacketReader {
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            version,
        }
    }

    /// The protocol version of the connection.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Reads more bytes from `r`; `Ok(false)` at end of stream.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> anyhow::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                // A packet larger than the buffer: grow up to MAX_PACKET.
                if self.buf.len() >= MAX_PACKET {
                    bail!("packet larger than {MAX_PACKET} bytes");
                }
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let n = r.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// Decodes every complete packet in the buffer, in order, and hands each to `f`.
    pub fn drain(&mut self, mut f: impl FnMut(Packet<'_>)) -> anyhow::Result<()> {
        loop {
            match codec::decode_with(&self.buf[self.start..self.end], MAX_PACKET, self.version) {
                Ok(Some((packet, len))) => {
                    f(packet);
                    self.start += len;
                }
                Ok(None) => return Ok(()),
                Err(e) => bail!("broker sent bytes that are not MQTT: {e}"),
            }
        }
    }

    /// Reads until one packet is complete and returns what `f` makes of it.
    pub async fn next<R, T>(
        &mut self,
        r: &mut R,
        f: impl FnOnce(Packet<'_>) -> T,
    ) -> anyhow::Result<T>
    where
        R: AsyncRead + Unpin,
    {
        loop {
            match codec::decode_with(&self.buf[self.start..self.end], MAX_PACKET, self.version) {
                Ok(Some((packet, len))) => {
                    let out = f(packet);
                    self.start += len;
                    return Ok(out);
                }
                Ok(None) => {
                    if !self.fill(r).await? {
                        bail!("broker closed the connection");
                    }
                }
                Err(e) => bail!("broker sent bytes that are not MQTT: {e}"),
            }
        }
    }
}

/// Encodes `packet` as a connection speaking `version` sends it, at the end of `out`.
pub fn push_packet(out: &mut Vec<u8>, packet: &Packet<'_>, version: Version) -> anyhow::Result<()> {
    let len = packet
        .encoded_len_with(version)
        .map_err(|e| anyhow!("cannot encode: {e}"))?;
    let at = out.len();
    out.resize(at + len, 0);
    packet
        .encode_with(&mut out[at..], version)
        .map_err(|e| anyhow!("cannot encode: {e}"))?;
    Ok(())
}

/// Opens a TCP connection and completes CONNECT / CONNACK with a clean session, speaking
/// `version` (an MQTT 5 CONNECT carries no properties: the broker's defaults apply).
///
/// Returns the stream and a reader holding whatever came after the CONNACK.
pub async fn connect(
    addr: &str,
    client_id: &str,
    keep_alive: u16,
    version: Version,
) -> anyhow::Result<(TcpStream, PacketReader)> {
    connect_from(addr, None, client_id, keep_alive, version).await
}

/// [`connect`] from the local address `source` (port chosen by the system), or the system's
/// choice of address with `None`: several loopback sources (127.0.0.x) give several ranges of
/// ephemeral ports, for more connections to one broker address than one range holds.
pub async fn connect_from(
    addr: &str,
    source: Option<IpAddr>,
    client_id: &str,
    keep_alive: u16,
    version: Version,
) -> anyhow::Result<(TcpStream, PacketReader)> {
    let tcp = async {
        match source {
            None => TcpStream::connect(addr).await,
            Some(source) => {
                let target: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
                let socket = if target.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(source, 0))?;
                socket.connect(target).await
            }
        }
    };
    let mut stream = timeout(HANDSHAKE_TIMEOUT, tcp)
        .await
        .context("TCP connect timed out")?
        .with_context(|| format!("cannot connect to {addr} from {source:?}"))?;
    stream.set_nodelay(true)?;
    let connect = Packet::Connect(Connect {
        protocol_name: match version {
            Version::V3_1 => ProtocolName::MqIsdp,
            _ => ProtocolName::Mqtt,
        },
        properties: activity_core::codec::Properties::EMPTY,
        protocol_level: version.level(),
        client_id,
        clean_session: true,
        keep_alive,
        username: None,
        password: None,
        will: None,
    });
    let mut out = Vec::with_capacity(64);
    push_packet(&mut out, &connect, version)?;
    stream.write_all(&out).await?;
    let mut reader = PacketReader::new(version);
    let answer = timeout(
        HANDSHAKE_TIMEOUT,
        reader.next(&mut stream, |p| match p {
            Packet::ConnAck(ConnAck { code, .. }) => Some(code),
            _ => None,
        }),
    )
    .await
    .context("no CONNACK in time")??;
    match answer {
        Some(code) if code == ConnectReturnCode::Accepted.as_u8() => Ok((stream, reader)),
        Some(code) => bail!("CONNACK refused the connection: {code:?}"),
        None => bail!("the first packet from the broker was not a CONNACK"),
    }
}

/// Subscribes to one filter and waits for its SUBACK; fails when the broker refused it.
pub async fn subscribe(
    stream: &mut TcpStream,
    reader: &mut PacketReader,
    filter: &str,
    qos: QoS,
) -> anyhow::Result<()> {
    let filters = [(filter, qos)];
    let subscribe = Packet::Subscribe(Subscribe {
        properties: activity_core::codec::Properties::EMPTY,
        pkid: 1,
        filters: SubscribeFilters::from_slice(&filters),
    });
    let mut out = Vec::with_capacity(64);
    push_packet(&mut out, &subscribe, reader.version())?;
    stream.write_all(&out).await?;
    let refused = timeout(
        HANDSHAKE_TIMEOUT,
        reader.next(stream, |p| match p {
            Packet::SubAck(suback) => Some(suback.codes.iter().any(|c| {
                matches!(
                    c,
                    codec::SubAckCode::Failure | codec::SubAckCode::Refused(_)
                )
            })),
            _ => None,
        }),
    )
    .await
    .context("no SUBACK in time")??;
    match refused {
        Some(false) => Ok(()),
        Some(true) => bail!("SUBACK refused {filter}"),
        None => bail!("expected a SUBACK for {filter}"),
    }
}

/// The bytes of a DISCONNECT packet (section 3.14): `0xE0 0x00`.
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];
