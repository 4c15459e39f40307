//! ESP cost as installed SAs grow, as ratios against one installed SA pair measured in the
//! same process (absolute timings on shared machines are noise; ratios are what to compare
//! across runs).
//!
//! Run: `cargo bench --bench esp_scaling`
//!
//! Each size installs N host-to-host SA pairs (AES-GCM-128, tunnel mode, soft and hard time
//! lifetimes armed) into a sender and a receiver data plane, then times one protect on the
//! sender plus one unprotect on the receiver of a 64-byte UDP packet through the SA pair in
//! the middle of the table. The target is a flat line: the pair costs the same with
//! 100,000 SA pairs as with one.
//!
//! When `valgrind` is on the path the bench also re-runs itself under callgrind for 1 and
//! 100,000 SA pairs and prints instructions per pair (only the pairs are counted, not the
//! installation). `ESP_SCALING_NO_CALLGRIND=1` skips that; `ESP_SCALING_MAX=<n>` leaves
//! out the sizes above n.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant as WallClock};

use deputy::Instant;
use deputy::ipsec::{
    Action, ChildSa, DataPlane, DataPlaneConfig, Direction, Inbound, Lifetime, Mode, Outbound,
    Policy, Protected, SaKeys, Selector, Suite, TrafficSelector,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const SIZES: [usize; 5] = [1, 16, 256, 4_096, 100_000];
const CALLGRIND_SIZES: [usize; 2] = [1, 100_000];
const CALLGRIND_PAIRS: u32 = 2_000;
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const FIRST_REMOTE: u32 = 0x0a80_0000; // 10.128.0.0

mod common;
use common::{measure, udp_packet};

fn remote(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(FIRST_REMOTE + u32::try_from(i).unwrap())
}

fn host(a: Ipv4Addr) -> Vec<TrafficSelector> {
    vec![TrafficSelector::host(IpAddr::V4(a))]
}

/// A sender and a receiver with `n` SA pairs each (the receiver's inbound SPIs are the
/// sender's outbound ones).
fn planes(n: usize) -> (DataPlane, DataPlane) {
    let config = DataPlaneConfig {
        max_sas: n,
        ..DataPlaneConfig::default()
    };
    let rng = |seed| Box::new(ChaCha20Rng::seed_from_u64(seed));
    let mut tx = DataPlane::new(config, rng(1)).unwrap();
    let mut rx = DataPlane::new(config, rng(2)).unwrap();
    tx.add_policy(Policy::new(
        Selector::parse("10.0.0.0/8", "10.0.0.0/8").unwrap(),
        Direction::Both,
        Action::Protect,
    ))
    .unwrap();
    let suite = Suite::AesGcm128;
    let lifetime = Lifetime {
        soft_time: Some(Duration::from_secs(3_600)),
        hard_time: Some(Duration::from_secs(4_000)),
        ..Lifetime::default()
    };
    let gw_a: IpAddr = "192.0.2.1".parse().unwrap();
    let gw_b: IpAddr = "198.51.100.1".parse().unwrap();
    for i in 0..n {
        let spi_a = 0x1000_0000 + u32::try_from(i).unwrap();
        let spi_b = 0x2000_0000 + u32::try_from(i).unwrap();
        let mut key = [0u8; 20];
        key[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let k1 = SaKeys::from_keymat(suite, &key).unwrap();
        key[19] = 1;
        let k2 = SaKeys::from_keymat(suite, &key).unwrap();
        let mut a = ChildSa::new(
            spi_a,
            spi_b,
            suite,
            k1.clone(),
            k2.clone(),
            Mode::Tunnel {
                local: gw_a,
                remote: gw_b,
            },
            host(LOCAL),
            host(remote(i)),
        );
        a.lifetime = lifetime;
        let mut b = ChildSa::new(
            spi_b,
            spi_a,
            suite,
            k2,
            k1,
            Mode::Tunnel {
                local: gw_b,
                remote: gw_a,
            },
            host(remote(i)),
            host(LOCAL),
        );
        b.lifetime = lifetime;
        tx.install(Instant::ZERO, a).unwrap();
        rx.install(Instant::ZERO, b).unwrap();
    }
    (tx, rx)
}

/// One protect on the sender, one unprotect on the receiver.
fn pair(tx: &mut DataPlane, rx: &mut DataPlane, packet: &[u8], now: Instant) {
    let Ok(Outbound::Protected(Protected::Ip(esp))) = tx.protect(now, black_box(packet)) else {
        panic!("not protected");
    };
    let Ok(Inbound::Packet { packet: inner, .. }) = rx.unprotect(now, &esp) else {
        panic!("not opened");
    };
    black_box(inner);
}

/// The only code callgrind counts (`--toggle-collect`).
#[inline(never)]
fn esp_scaling_counted_pairs(
    tx: &mut DataPlane,
    rx: &mut DataPlane,
    packet: &[u8],
    now: Instant,
    pairs: u32,
) {
    for _ in 0..pairs {
        pair(tx, rx, packet, now);
    }
}

fn callgrind_child(n: usize, pairs: u32) {
    let (mut tx, mut rx) = planes(n);
    let packet = udp_packet(LOCAL, remote(n / 2), 20 + 8 + 64);
    let now = Instant::from_secs(1);
    // One pair outside the count: first-use costs (allocator growth) are not per pair.
    pair(&mut tx, &mut rx, &packet, now);
    esp_scaling_counted_pairs(&mut tx, &mut rx, &packet, now, pairs);
}

/// Instructions per pair with `n` SA pairs, from a callgrind run of this binary.
fn callgrind(n: usize) -> Option<f64> {
    let args = [
        "--callgrind-child".to_string(),
        n.to_string(),
        CALLGRIND_PAIRS.to_string(),
    ];
    let collected = common::callgrind_instructions("*esp_scaling_counted_pairs*", &args)?;
    Some(collected as f64 / f64::from(CALLGRIND_PAIRS))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--callgrind-child") {
        let n = args[i + 1].parse().unwrap();
        let pairs = args[i + 2].parse().unwrap();
        callgrind_child(n, pairs);
        return;
    }
    let max = std::env::var("ESP_SCALING_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);

    println!("ESP protect + unprotect pair, 64 B, AES-GCM-128, tunnel, vs 1 installed SA pair");
    let now = Instant::from_secs(1);
    let mut baseline = None;
    for n in SIZES.into_iter().filter(|&n| n <= max) {
        let setup = WallClock::now();
        let (mut tx, mut rx) = planes(n);
        let setup = setup.elapsed();
        let packet = udp_packet(LOCAL, remote(n / 2), 20 + 8 + 64);
        let t = measure(|| pair(&mut tx, &mut rx, &packet, now));
        let base = *baseline.get_or_insert(t);
        println!(
            "{:<44} {:>10.2?}  = {:>6.2}x 1 SA pair ({:.2?})   [install: {:.2?}]",
            format!("{n} SA pairs installed"),
            t,
            t.as_secs_f64() / base.as_secs_f64(),
            base,
            setup
        );
    }

    let has_valgrind = common::has_valgrind();
    if std::env::var_os("ESP_SCALING_NO_CALLGRIND").is_some() || !has_valgrind {
        println!("\n(callgrind skipped)");
        return;
    }
    println!("\ncallgrind: instructions per protect + unprotect pair ({CALLGRIND_PAIRS} pairs)");
    let mut base = None;
    for n in CALLGRIND_SIZES.into_iter().filter(|&n| n <= max) {
        match callgrind(n) {
            Some(ir) => {
                let b = *base.get_or_insert(ir);
                println!(
                    "{:<44} {:>10.0} Ir  = {:>6.2}x 1 SA pair",
                    format!("{n} SA pairs installed"),
                    ir,
                    ir / b
                );
            }
            None => println!("{n} SA pairs installed: callgrind run failed"),
        }
    }
}
