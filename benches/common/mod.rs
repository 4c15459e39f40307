//! What the benches share: the wall-clock timer and the callgrind runner.
//!
//! Absolute timings on a shared machine are noise, so every bench reports ratios against a
//! baseline measured in the same process; instruction counts from callgrind are the
//! repeatable figure (they do not move with the load of the machine).

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};

use deputy::channel::{ClientConfig, Connection, Psk, ServerConfig};
use deputy::crypto::dh::Group;
use deputy::{Instant, UnixTime};
use rand_chacha::ChaCha20Rng;

/// The wall-clock time at `Instant::ZERO` of every bench's channel.
pub const ANCHOR: UnixTime = UnixTime(1_800_000_000);

/// Median time per iteration of `f` over several batches.
pub fn measure(mut f: impl FnMut()) -> Duration {
    // Warm up and size a batch to ~20 ms.
    let mut batch = 1u32;
    loop {
        let t = WallClock::now();
        for _ in 0..batch {
            f();
        }
        if t.elapsed() > Duration::from_millis(20) || batch > 1 << 20 {
            break;
        }
        batch *= 2;
    }
    let mut samples: Vec<Duration> = (0..9)
        .map(|_| {
            let t = WallClock::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed() / batch
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

/// Whether `valgrind` can be run.
pub fn has_valgrind() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Instructions callgrind counted inside functions matching `toggle` when this bench's own
/// binary runs with `args`: `None` if valgrind failed.
pub fn callgrind_instructions(toggle: &str, args: &[String]) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let out_file = std::env::temp_dir().join(format!(
        "deputy-bench.{}.{}.callgrind",
        std::process::id(),
        args.join("_").replace(['/', ' '], "-")
    ));
    let out = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--collect-atstart=no")
        .arg(format!("--toggle-collect={toggle}"))
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(exe)
        .args(args)
        .output()
        .ok()?;
    // The totals are read from valgrind's summary; the profile itself is not needed.
    let _ = std::fs::remove_file(&out_file);
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|l| l.split("Collected :").nth(1))?
        .trim()
        .parse()
        .ok()
}

/// A UDP/IPv4 packet of `total` bytes (at least 28) from `src` to `dst`, the UDP payload
/// filled with 0x5a, without a UDP checksum (allowed over IPv4).
pub fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, total: usize) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let mut sum = 0u32;
    for c in p.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p.extend_from_slice(&[0x03, 0xe8, 0, 53]);
    p.extend_from_slice(&u16::try_from(total - 20).unwrap().to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.resize(total, 0x5a);
    p
}

/// A PSK channel's two configurations, the client's with `group`.
pub fn psk_configs(group: Group) -> (ClientConfig, ServerConfig) {
    let psk = Psk::new("bench", &[9; 32]).unwrap();
    let mut client = ClientConfig::with_psk(psk.clone(), ANCHOR);
    client.group = group;
    (client, ServerConfig::with_psks([psk], ANCHOR).unwrap())
}

/// Both ends of a channel after a full handshake.
pub fn established(
    client: ClientConfig,
    server: ServerConfig,
    rng: &mut ChaCha20Rng,
) -> (Connection, Connection) {
    let now = Instant::ZERO;
    let mut c = Connection::client(Arc::new(client), now, rng).unwrap();
    let mut s = Connection::server(Arc::new(server), now);
    while !(c.is_established() && s.is_established()) {
        let to_s = c.take_outgoing();
        s.feed(now, &to_s, rng).unwrap();
        let to_c = s.take_outgoing();
        c.feed(now, &to_c, rng).unwrap();
    }
    (c, s)
}
