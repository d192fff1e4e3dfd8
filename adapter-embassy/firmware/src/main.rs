//! The mqtt-activity edge gateway on a NUCLEO-F429ZI: embassy-stm32 Ethernet (RMII, LAN8742A
//! PHY), a static IPv4 address, the gateway with its uplink, logging through defmt over RTT.
//!
//! Build: `build.sh` (the pinned nightly with `-Zbuild-std` and `panic = "immediate-abort"`,
//! the build that fits the size budget; docs/gateway.md, "Building the firmware"), or
//! `cargo build --release` in this directory on stable, larger (target and linker come from
//! `.cargo/config.toml`; flip-link must be installed, `build.sh` does that). Flash and watch
//! the log with `cargo run --release` (probe-rs), with the same flags as `build.sh`.
#![no_std]
#![no_main]

// memcpy, memmove and memset as byte loops (about 1.2 KB of flash less than compiler_builtins').
mod mem;
// The 64-bit division and shifts in short assembler (about 480 B less than compiler_builtins').
mod int64;

use adapter_embassy::{Config, GatewayResources, GatewayRunner, SlotStores, UplinkConfig};
use defmt::info;
use embassy_executor::Spawner;
use embassy_net::{
    IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr, Stack, StackResources, StaticConfigV4,
};
use embassy_stm32::eth::{Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::peripherals::{ETH, ETH_SMA, RNG};
use embassy_stm32::rng::Rng;
use embassy_stm32::time::Hertz;
use embassy_stm32::{bind_interrupts, eth, rng};
use embassy_time::Timer;
use static_cell::ConstStaticCell;
// A panic stops at a HardFault (probe-rs prints the backtrace); `--features panic-message`
// also prints the message, at about 12 KB of flash.
use {defmt_rtt as _, panic_probe as _};

/// Client slots (one listening socket each).
#[cfg(not(feature = "one-more-slot"))]
const CLIENTS: usize = 4;
#[cfg(feature = "one-more-slot")]
const CLIENTS: usize = 5;
/// Socket receive buffer and largest packet a client may send.
const RX: usize = 512;
/// Socket transmit buffer.
const TX: usize = 512;
/// Subscriptions per client.
const SUBS: usize = 4;
/// Queued packet bytes per client, event buffer, uplink queue.
const QUEUE: usize = 512;
/// What each client keeps (docs/gateway.md, "Memory sizing"): 2 deliveries remembered for
/// `msgack` with up to 64 bytes of topic, ids and publisher each, topic filters up to 48 bytes,
/// a last will up to 64 bytes of topic and message.
type Stores = SlotStores<2, 64, 48, 64>;

type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;
type Gateway = GatewayRunner<'static, CLIENTS, RX, TX, SUBS, QUEUE, Stores>;

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    HASH_RNG => rng::InterruptHandler<RNG>;
});

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Device>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn gateway_task(mut runner: Gateway) -> ! {
    runner.run().await
}

/// 168 MHz from the 8 MHz ST-LINK clock (HSE bypass); the RTC is not clocked.
fn clocks() -> embassy_stm32::Config {
    use embassy_stm32::rcc::*;
    let mut config = embassy_stm32::Config::default();
    config.rcc.hse = Some(Hse {
        freq: Hertz(8_000_000),
        mode: HseMode::Bypass,
    });
    config.rcc.pll_src = PllSource::HSE;
    config.rcc.pll = Some(Pll {
        prediv: PllPreDiv::DIV4,
        mul: PllMul::MUL168,
        divp: Some(PllPDiv::DIV2),
        divq: Some(PllQDiv::DIV7),
        divr: None,
    });
    config.rcc.ahb_pre = AHBPrescaler::DIV1;
    config.rcc.apb1_pre = APBPrescaler::DIV4;
    config.rcc.apb2_pre = APBPrescaler::DIV2;
    config.rcc.sys = Sysclk::PLL1_P;
    // No LSI and no RTC clock (embassy's default starts the LSI and clocks the RTC from it):
    // the firmware uses neither, and the setup costs 44 B of flash (docs/gateway.md).
    config.rcc.ls = LsConfig::off();
    config
}

#[embassy_executor::main]
async fn main(spawner: Spawner) -> ! {
    let p = embassy_stm32::init(clocks());
    info!("mqtt-activity gateway starting");

    let seed = Rng::new(p.RNG, Irqs).next_u64();

    // Two transmit buffers (a full ring only makes smoltcp wait for the next poll, nothing is
    // lost) and four receive buffers (a full ring drops frames): 1,536 B each, 9 KiB in all.
    static PACKETS: ConstStaticCell<PacketQueue<2, 4>> = ConstStaticCell::new(PacketQueue::new());
    let mac = [0x02, 0x00, 0x4D, 0x51, 0x54, 0x54];
    // NUCLEO-F429ZI RMII pins (UM1974, table 12).
    let device = Ethernet::new(
        PACKETS.take(),
        p.ETH,
        Irqs,
        p.PA1,
        p.PA7,
        p.PC4,
        p.PC5,
        p.PG13,
        p.PB13,
        p.PG11,
        mac,
        p.ETH_SMA,
        p.PA2,
        p.PC1,
    );

    let net_config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(192, 168, 1, 50), 24),
        gateway: Some(Ipv4Address::new(192, 168, 1, 1)),
        dns_servers: Default::default(),
    });
    // The gateway needs CLIENTS + 2 sockets (the refusing one and the uplink).
    static STACK: ConstStaticCell<StackResources<{ CLIENTS + 2 }>> =
        ConstStaticCell::new(StackResources::new());
    let (stack, net_runner) = embassy_net::new(device, net_config, STACK.take(), seed);
    spawner.spawn(net_task(net_runner).unwrap());
    wait_for_link(stack).await;

    // All zero bits: in .bss, nothing to copy at boot.
    static GATEWAY: ConstStaticCell<GatewayResources<CLIENTS, RX, TX, SUBS, QUEUE, Stores>> =
        ConstStaticCell::new(GatewayResources::new());
    let config = Config {
        system_subscribers: &["monitor"],
        uplink: Some(UplinkConfig {
            forward: &["sensors/#"],
            ..UplinkConfig::new(
                IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(192, 168, 1, 10)), 1883),
                "edge",
            )
        }),
        ..Config::new("nucleo-gw")
    };
    let (handle, runner) = adapter_embassy::new(stack, GATEWAY.take(), config);
    spawner.spawn(gateway_task(runner).unwrap());
    info!("gateway listening on 1883");

    loop {
        Timer::after_secs(60).await;
        info!("gateway: {}", handle.stats());
    }
}

async fn wait_for_link(stack: Stack<'static>) {
    stack.wait_config_up().await;
    info!("network up");
}
