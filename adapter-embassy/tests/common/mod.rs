//! Two real embassy-net stacks in one process, wired by a frame-copying future, and a raw
//! MQTT 3.1.1 client that speaks through the core's codec.
#![allow(dead_code)]

use std::time::Duration as StdDuration;

use activity_core::QoS;
use activity_core::codec::{self, Connect, LastWill, Packet, Publish, Subscribe, SubscribeFilters};
use adapter_embassy::{EngineStores, GatewayHandle, GatewayResources};
use embassy_futures::join::join4;
use embassy_futures::select::{Either, select};
use embassy_net::driver::HardwareAddress;
use embassy_net::tcp::TcpSocket;
use embassy_net::{
    Config, EthernetAddress, IpEndpoint, Ipv4Address, Ipv4Cidr, Runner, Stack, StackResources,
    StaticConfigV4,
};
use embassy_net_driver_channel as ch;
use embassy_time::{Duration, Timer, with_timeout};

pub const MTU: usize = 1514;
pub type Device = ch::Device<'static, MTU>;

pub const GATEWAY_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
pub const CLIENT_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);

/// The gateway's MQTT endpoint on stack A.
pub const GATEWAY: IpEndpoint = IpEndpoint::new(embassy_net::IpAddress::Ipv4(GATEWAY_IP), 1883);

pub fn leak<T>(value: T) -> &'static mut T {
    Box::leak(Box::new(value))
}

/// One stack: its handle, its runner, and the channel end that carries its frames.
pub fn stack(
    mac: u8,
    ip: Ipv4Address,
) -> (
    Stack<'static>,
    Runner<'static, Device>,
    ch::Runner<'static, MTU>,
) {
    let state = leak(ch::State::<MTU, 8, 8>::new());
    let address = HardwareAddress::Ethernet([0x02, 0, 0, 0, 0, mac]);
    let (channel, device) = ch::new(state, address);
    let config = Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(ip, 24),
        gateway: None,
        dns_servers: Default::default(),
    });
    let resources = leak(StackResources::<16>::new());
    let (stack, runner) = embassy_net::new(device, config, resources, u64::from(mac) * 7919);
    let _ = EthernetAddress::from_bytes(&[0x02, 0, 0, 0, 0, mac]);
    (stack, runner, channel)
}

/// Copies frames between two channel ends forever.
pub async fn wire(a: ch::Runner<'static, MTU>, b: ch::Runner<'static, MTU>) {
    let (state_a, mut rx_a, mut tx_a) = a.split();
    let (state_b, mut rx_b, mut tx_b) = b.split();
    state_a.set_link_state(ch::driver::LinkState::Up);
    state_b.set_link_state(ch::driver::LinkState::Up);
    let a_to_b = async {
        loop {
            let frame = tx_a.tx_buf().await;
            let len = frame.len();
            let dst = rx_b.rx_buf().await;
            dst[..len].copy_from_slice(frame);
            rx_b.rx_done(len);
            tx_a.tx_done();
        }
    };
    let b_to_a = async {
        loop {
            let frame = tx_b.tx_buf().await;
            let len = frame.len();
            let dst = rx_a.rx_buf().await;
            dst[..len].copy_from_slice(frame);
            rx_a.rx_done(len);
            tx_b.tx_done();
        }
    };
    embassy_futures::join::join(a_to_b, b_to_a).await;
}

/// Runs `test` against the infrastructure future (stacks, wire, gateway) on this thread;
/// fails after `limit`.
pub fn run<I, T>(infra: I, test: T)
where
    I: Future,
    T: Future<Output = ()>,
{
    futures::executor::block_on(async {
        let limited = async {
            match with_timeout(Duration::from_secs(30), test).await {
                Ok(()) => {}
                Err(_) => panic!("test timed out"),
            }
        };
        match select(infra, limited).await {
            Either::First(_) => panic!("infrastructure stopped"),
            Either::Second(()) => {}
        }
    });
    let _ = StdDuration::ZERO;
}

/// A packet received by the test client, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    ConnAck {
        session_present: bool,
        code: u8,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        pkid: Option<u16>,
        retain: bool,
    },
    SubAck {
        pkid: u16,
        codes: Vec<u8>,
    },
    UnsubAck(u16),
    PubAck(u16),
    PubRec(u16),
    PubComp(u16),
    PingResp,
    Connect {
        client_id: String,
        keep_alive: u16,
        will: Option<(String, Vec<u8>, bool)>,
        username: Option<String>,
        password: Option<Vec<u8>>,
    },
    Other(String),
}

fn own(packet: Packet<'_>) -> Received {
    match packet {
        Packet::ConnAck(c) => Received::ConnAck {
            session_present: c.session_present,
            code: c.code,
        },
        Packet::Publish(p) => Received::Publish {
            topic: p.topic.to_owned(),
            payload: p.payload.to_vec(),
            qos: p.qos,
            pkid: p.pkid,
            retain: p.retain,
        },
        Packet::SubAck(s) => Received::SubAck {
            pkid: s.pkid,
            codes: s.codes.iter().map(|c| c.as_u8()).collect(),
        },
        Packet::UnsubAck(id) => Received::UnsubAck(id.pkid),
        Packet::PubAck(id) => Received::PubAck(id.pkid),
        Packet::PubRec(id) => Received::PubRec(id.pkid),
        Packet::PubComp(id) => Received::PubComp(id.pkid),
        Packet::PingResp => Received::PingResp,
        Packet::Connect(c) => Received::Connect {
            client_id: c.client_id.to_owned(),
            keep_alive: c.keep_alive,
            will: c
                .will
                .map(|w| (w.topic.to_owned(), w.message.to_vec(), w.retain)),
            username: c.username.map(str::to_owned),
            password: c.password.map(<[u8]>::to_vec),
        },
        other => Received::Other(format!("{other:?}")),
    }
}

/// A raw MQTT client on an embassy-net socket.
pub struct RawClient {
    pub socket: TcpSocket<'static>,
    buf: Vec<u8>,
}

impl RawClient {
    /// Opens a TCP connection to `remote` (no MQTT yet).
    pub async fn open(stack: Stack<'static>, remote: IpEndpoint) -> Self {
        let rx = leak([0u8; 4096]);
        let tx = leak([0u8; 4096]);
        let mut socket = TcpSocket::new(stack, rx, tx);
        socket.connect(remote).await.expect("tcp connect");
        RawClient {
            socket,
            buf: Vec::new(),
        }
    }

    /// Wraps an accepted socket (the test's upstream broker).
    pub fn from_socket(socket: TcpSocket<'static>) -> Self {
        RawClient {
            socket,
            buf: Vec::new(),
        }
    }

    /// Sends one packet.
    pub async fn send(&mut self, packet: Packet<'_>) {
        let mut out = vec![0u8; packet.encoded_len().unwrap()];
        packet.encode(&mut out).unwrap();
        self.send_raw(&out).await;
    }

    /// Sends one packet as an MQTT 5 client does.
    pub async fn send5(&mut self, packet: Packet<'_>) {
        let version = codec::Version::V5;
        let mut out = vec![0u8; packet.encoded_len_with(version).unwrap()];
        packet.encode_with(&mut out, version).unwrap();
        self.send_raw(&out).await;
    }

    /// The bytes of the next packet, read as MQTT 5; panics on EOF or after 5 s.
    pub async fn recv5(&mut self) -> Vec<u8> {
        loop {
            let decoded = codec::decode_with(&self.buf, 1 << 20, codec::Version::V5);
            if let Some((_, used)) = decoded.expect("decode") {
                return self.buf.drain(..used).collect();
            }
            let mut chunk = [0u8; 1024];
            match with_timeout(Duration::from_secs(5), self.socket.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => panic!("no packet within 5 s"),
            }
        }
    }

    /// Sends bytes.
    pub async fn send_raw(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = self.socket.write(bytes).await.expect("write");
            bytes = &bytes[n..];
        }
    }

    /// The next packet, or `None` on EOF or after 5 s.
    pub async fn try_recv(&mut self, within: Duration) -> Option<Received> {
        loop {
            if let Some((packet, used)) = codec::decode(&self.buf, 1 << 20).expect("decode") {
                let owned = own(packet);
                self.buf.drain(..used);
                return Some(owned);
            }
            let mut chunk = [0u8; 1024];
            match with_timeout(within, self.socket.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next packet; panics on EOF or after 5 s.
    pub async fn recv(&mut self) -> Received {
        self.try_recv(Duration::from_secs(5))
            .await
            .expect("a packet")
    }

    /// Asserts that the gateway closes the connection (EOF within 5 s, no packet before),
    /// then closes this side too.
    pub async fn expect_closed(mut self) {
        assert_eq!(self.try_recv(Duration::from_secs(5)).await, None);
        self.close().await;
    }

    /// Sends CONNECT and returns the CONNACK's (session_present, code).
    pub async fn connect_with(&mut self, connect: Connect<'_>) -> (bool, u8) {
        self.send(Packet::Connect(connect)).await;
        match self.recv().await {
            Received::ConnAck {
                session_present,
                code,
            } => (session_present, code),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Opens and connects with `client_id`, clean session, keep-alive 60; asserts CONNACK 0.
    pub async fn connected(stack: Stack<'static>, remote: IpEndpoint, client_id: &str) -> Self {
        let mut client = Self::open(stack, remote).await;
        let ack = client.connect_with(connect(client_id)).await;
        assert_eq!(ack, (false, 0), "CONNACK for {client_id}");
        client
    }

    /// Subscribes to one filter and returns the SUBACK code.
    pub async fn subscribe(&mut self, pkid: u16, filter: &str, qos: QoS) -> u8 {
        let filters = [(filter, qos)];
        self.send(Packet::Subscribe(Subscribe {
            properties: activity_core::codec::Properties::EMPTY,
            pkid,
            filters: SubscribeFilters::from_slice(&filters),
        }))
        .await;
        match self.recv().await {
            Received::SubAck { pkid: got, codes } => {
                assert_eq!(got, pkid);
                assert_eq!(codes.len(), 1);
                codes[0]
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes (no waiting for an acknowledgement).
    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, pkid: Option<u16>) {
        self.send(Packet::Publish(Publish {
            properties: activity_core::codec::Properties::EMPTY,
            dup: false,
            qos,
            retain: false,
            topic,
            pkid,
            payload,
        }))
        .await;
    }

    /// The next event on `<SYSTEM>/<suffix>` as JSON; acknowledges it when QoS 1.
    pub async fn event(&mut self, suffix: &str) -> serde_json::Value {
        match self.recv().await {
            Received::Publish {
                topic,
                payload,
                qos,
                pkid,
                ..
            } => {
                assert_eq!(topic, format!("SYSTEM/{suffix}"), "event topic");
                if qos == QoS::AtLeastOnce {
                    self.send(Packet::PubAck(activity_core::codec::Ack::new(
                        pkid.unwrap(),
                    )))
                    .await;
                }
                serde_json::from_slice(&payload).expect("event JSON")
            }
            other => panic!("expected an event on {suffix}, got {other:?}"),
        }
    }

    /// Closes the connection properly (FIN).
    pub async fn close(mut self) {
        self.socket.close();
        let _ = with_timeout(Duration::from_secs(1), self.socket.flush()).await;
        self.socket.abort();
        let _ = with_timeout(Duration::from_millis(100), self.socket.flush()).await;
    }
}

/// A clean-session CONNECT with keep-alive 60.
pub fn connect(client_id: &str) -> Connect<'_> {
    Connect {
        protocol_name: activity_core::codec::ProtocolName::Mqtt,
        properties: activity_core::codec::Properties::EMPTY,
        protocol_level: 4,
        client_id,
        clean_session: true,
        keep_alive: 60,
        username: None,
        password: None,
        will: None,
    }
}

/// A CONNECT with a will.
pub fn connect_with_will<'a>(
    client_id: &'a str,
    will: LastWill<'a>,
    keep_alive: u16,
) -> Connect<'a> {
    Connect {
        keep_alive,
        will: Some(will),
        ..connect(client_id)
    }
}

/// Waits until `condition` holds (the gateway runs meanwhile), or panics naming `what` after
/// 10 s.
pub async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = embassy_time::Instant::now() + embassy_time::Duration::from_secs(10);
    while !condition() {
        assert!(
            embassy_time::Instant::now() < deadline,
            "{what} did not happen within 10 s"
        );
        Timer::after_millis(5).await;
    }
}

/// Runs `test` with a gateway of `N` slots on stack A; `test` gets stack B and the handle.
pub fn gateway_test<const N: usize, F, Fut>(config: adapter_embassy::Config<'static>, test: F)
where
    F: FnOnce(Stack<'static>, GatewayHandle<'static>) -> Fut,
    Fut: Future<Output = ()>,
{
    let resources = Box::leak(Box::new(GatewayResources::<N, 1024, 1024, 4, 1024>::new()));
    gateway_test_in(resources, config, test);
}

/// Runs `test` with a gateway in `resources` on stack A; `test` gets stack B and the handle.
pub fn gateway_test_in<
    const N: usize,
    const RX: usize,
    const TX: usize,
    const SUBS: usize,
    const QUEUE: usize,
    S: EngineStores,
    F,
    Fut,
>(
    resources: &'static mut GatewayResources<N, RX, TX, SUBS, QUEUE, S>,
    config: adapter_embassy::Config<'static>,
    test: F,
) where
    F: FnOnce(Stack<'static>, GatewayHandle<'static>) -> Fut,
    Fut: Future<Output = ()>,
{
    let (gw_stack, mut gw_net, gw_wire) = stack(1, GATEWAY_IP);
    let (client_stack, mut client_net, client_wire) = stack(2, CLIENT_IP);
    let (handle, mut runner) = adapter_embassy::new(gw_stack, resources, config);
    let infra = async move {
        join4(
            gw_net.run(),
            client_net.run(),
            wire(gw_wire, client_wire),
            runner.run(),
        )
        .await
    };
    run(infra, test(client_stack, handle));
}

/// The event's `ts`, checked to count from boot (no Unix time was set).
pub fn assert_ts(event: &serde_json::Value) -> u64 {
    let ts = event["ts"].as_u64().expect("ts is a number");
    assert!(
        ts < 3_600_000,
        "ts counts from boot without set_unix_time_ms"
    );
    ts
}
