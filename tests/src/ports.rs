//! Ports for servers that a test starts as child processes (the broker binary, tansu,
//! mosquitto): they must be told a port before they bind it.
//!
//! A port picked by binding port 0 and closing it again comes from the kernel's ephemeral range,
//! where any outgoing connection of the machine (a Kafka client, a test's MQTT clients) may take
//! it before the child binds it. [`free_port`] instead hands out ports below that range, which
//! the kernel never picks on its own, each at most once per test process.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const LOWEST: u32 = 10_000;

/// The lower bound of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A loopback port that nothing listens on, below the kernel's ephemeral range, never handed
/// out before by this process. Test processes running side by side start at different places
/// (by process id), and a port something already holds is skipped.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let high = ephemeral_low();
    assert!(
        high > LOWEST + 1_000,
        "the ephemeral port range starts at {high}: no room below it for test servers"
    );
    let span = high - LOWEST;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + (start + offset) % span;
        let port = u16::try_from(port).expect("below the ephemeral range, so below 65536");
        // std's listeners set SO_REUSEADDR, as the servers' own do: a port in TIME_WAIT counts
        // as free for them too.
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOWEST} and {high}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_free_and_never_repeated() {
        let high = ephemeral_low();
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for port in ports {
            assert!((LOWEST..high).contains(&u32::from(port)), "{port}");
            TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
    }
}
