//! Channel cost, as ratios against baselines measured in the same process (absolute
//! timings on shared machines are noise; ratios are what to compare across runs).
//!
//! Run: `cargo bench --bench channel`
//!
//! - record path: a channel record (frame, seal, deframe, open) against the bare AEAD
//!   seal+open of the same payload — the framing and bookkeeping overhead.
//! - handshakes: certificate mode and MODP-2048 against a PSK/X25519 handshake — what a
//!   weak device pays for each choice.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};

use deputy::channel::{ClientConfig, Connection, Psk, ServerConfig};
use deputy::crypto::aead::{AeadAlg, AeadKey};
use deputy::crypto::cert::{CertificateAuthority, TrustStore};
use deputy::crypto::dh::Group;
use deputy::{Instant, UnixTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const ANCHOR: UnixTime = UnixTime(1_800_000_000);

/// Median time per iteration of `f` over several batches.
fn measure(mut f: impl FnMut()) -> Duration {
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

fn report(name: &str, baseline_name: &str, baseline: Duration, value: Duration) {
    println!(
        "{name:<44} {:>10.2?}  = {:>6.2}x {baseline_name} ({:.2?})",
        value,
        value.as_secs_f64() / baseline.as_secs_f64(),
        baseline
    );
}

fn established(
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

fn psk_configs(group: Group) -> (ClientConfig, ServerConfig) {
    let psk = Psk::new("bench", &[9; 32]).unwrap();
    (
        ClientConfig::with_psk(psk.clone(), ANCHOR).with_group(group),
        ServerConfig::with_psks([psk], ANCHOR).unwrap(),
    )
}

fn main() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);

    println!("record path (payload → peer plaintext)");
    for size in [64usize, 1024, 16 * 1024] {
        let payload = vec![0xab; size];
        let key = AeadKey::new(AeadAlg::ChaCha20Poly1305, &[7; 32]).unwrap();
        let baseline = measure(|| {
            let sealed = key.seal(&[0; 12], b"aad", black_box(&payload));
            black_box(key.open(&[0; 12], b"aad", &sealed).unwrap());
        });
        let (client, server) = psk_configs(Group::X25519);
        let (mut c, mut s) = established(client, server, &mut rng);
        let mut r = ChaCha20Rng::seed_from_u64(2);
        let record = measure(|| {
            c.send(black_box(&payload)).unwrap();
            let bytes = c.take_outgoing();
            s.feed(Instant::ZERO, &bytes, &mut r).unwrap();
            black_box(s.take_received().unwrap());
        });
        report(
            &format!("channel record, {size} B"),
            "bare AEAD",
            baseline,
            record,
        );
    }

    println!("\nhandshakes (both sides, full exchange)");
    let psk_x25519 = measure(|| {
        let (client, server) = psk_configs(Group::X25519);
        black_box(established(client, server, &mut rng));
    });
    println!("{:<44} {:>10.2?}  (baseline)", "PSK + X25519", psk_x25519);

    let ca = CertificateAuthority::generate("bench CA", &mut rng);
    let cert_x25519 = measure(|| {
        let id = ca
            .issue_identity("server", &[], ANCHOR, 3600, &mut rng)
            .unwrap();
        let client =
            ClientConfig::with_ca(TrustStore::with(ca.certificate().clone()), "server", ANCHOR);
        black_box(established(
            client,
            ServerConfig::with_certificate(id, ANCHOR),
            &mut rng,
        ));
    });
    report(
        "certificate + X25519 (incl. issuing)",
        "PSK+X25519",
        psk_x25519,
        cert_x25519,
    );

    let psk_modp = measure(|| {
        let (client, server) = psk_configs(Group::Modp2048);
        black_box(established(client, server, &mut rng));
    });
    report("PSK + MODP-2048", "PSK+X25519", psk_x25519, psk_modp);
}
