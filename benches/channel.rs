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
use std::time::Duration;

use deputy::Instant;
use deputy::channel::{ClientConfig, ServerConfig};
use deputy::crypto::aead::{AeadAlg, AeadKey};
use deputy::crypto::cert::{CertificateAuthority, TrustStore};
use deputy::crypto::dh::Group;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

mod common;
use common::{ANCHOR, established, measure, psk_configs};

fn report(name: &str, baseline_name: &str, baseline: Duration, value: Duration) {
    println!(
        "{name:<44} {:>10.2?}  = {:>6.2}x {baseline_name} ({:.2?})",
        value,
        value.as_secs_f64() / baseline.as_secs_f64(),
        baseline
    );
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
