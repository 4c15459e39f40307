#![no_main]
//! The ESP open path of the data plane: arbitrary bytes as a raw IP packet
//! (`unprotect`), as the payload of a UDP datagram on the NAT-T port
//! (`unprotect_datagram`), and as an ESP packet for each suite's transform
//! (`EspTransform::open`); and genuine ESP packets of every suite with the fuzzer's bytes
//! XORed in.
//!
//! Invariants beyond "no panic": nothing that was tampered with opens; what opens is an
//! inner packet inside the SA's selectors; the per-SA counters add up.

use deputy::Instant;
use deputy::ipsec::{
    Action, ChildSa, DataPlane, DataPlaneConfig, Direction, EspTransform, Inbound, IpsecError,
    Mode, Outbound, Policy, Protected, SaKeys, Selector, Suite, TrafficSelector, UdpEncap,
};
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const LOCAL: &str = "192.0.2.1";
const REMOTE: &str = "198.51.100.1";

fn keys(suite: Suite, b: u8) -> SaKeys {
    let n = suite.encryption_key_len() + suite.integrity_key_len();
    SaKeys::from_keymat(suite, &vec![b; n]).expect("exact length")
}

/// A data plane holding one SA pair per suite (inbound SPIs 0x1000 + i, the peer's
/// 0x2000 + i); odd suites use UDP encapsulation.
fn plane(seed: u64, mirrored: bool) -> DataPlane {
    let mut dp = DataPlane::new(DataPlaneConfig::default(), Box::new(ChaCha20Rng::seed_from_u64(seed)))
        .expect("valid config");
    let (l, r, lnet, rnet) = if mirrored {
        (REMOTE, LOCAL, "10.2.0.0/16", "10.1.0.0/16")
    } else {
        (LOCAL, REMOTE, "10.1.0.0/16", "10.2.0.0/16")
    };
    dp.add_policy(Policy::new(Selector::parse(lnet, rnet).unwrap(), Direction::Both, Action::Protect))
        .unwrap();
    for (i, suite) in Suite::ALL.into_iter().enumerate() {
        let i = i as u32;
        let (spi_in, spi_out) = if mirrored { (0x2000 + i, 0x1000 + i) } else { (0x1000 + i, 0x2000 + i) };
        let (k_in, k_out) = if mirrored { (keys(suite, 2), keys(suite, 1)) } else { (keys(suite, 1), keys(suite, 2)) };
        let mode = Mode::Tunnel { local: l.parse().unwrap(), remote: r.parse().unwrap() };
        // Each suite covers its own /24 so the outbound SA is unambiguous.
        let lts = vec![TrafficSelector::prefix(format!("{}.{i}.0", &lnet[..4]).parse().unwrap(), 24)];
        let rts = vec![TrafficSelector::prefix(format!("{}.{i}.0", &rnet[..4]).parse().unwrap(), 24)];
        let mut sa = ChildSa::new(spi_in, spi_out, suite, k_in, k_out, mode, lts, rts);
        if i % 2 == 1 {
            sa.encap = Some(UdpEncap {
                local: format!("{l}:4500").parse().unwrap(),
                remote: format!("{r}:4500").parse().unwrap(),
            });
        }
        dp.install(Instant::ZERO, sa).expect("valid SA");
    }
    dp
}

fn udp(src: [u8; 4], dst: [u8; 4], body: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ipv4(src, dst, 64).udp(1000, 2000);
    let mut out = Vec::with_capacity(b.size(body.len()));
    b.write(&mut out, body).expect("small packet");
    out
}

fn check(got: &Result<Inbound, IpsecError>) {
    if let Ok(Inbound::Packet { packet, .. }) = got {
        // Only the peer's networks, toward ours, get through.
        let info = deputy::ipsec::parse_packet(packet).expect("delivered packets parse");
        assert!(info.src.to_string().starts_with("10.2."), "{info:?}");
        assert!(info.dst.to_string().starts_with("10.1."), "{info:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let now = Instant::from_secs(1);
    let mut dp = plane(1, false);
    match mode % 3 {
        0 => {
            check(&dp.unprotect(now, rest));
            let from = format!("{REMOTE}:4500").parse().unwrap();
            let to = format!("{LOCAL}:4500").parse().unwrap();
            check(&dp.unprotect_datagram(now, from, to, rest));
        }
        1 => {
            for (i, suite) in Suite::ALL.into_iter().enumerate() {
                let t = EspTransform::new(suite, &keys(suite, 2)).expect("key lengths");
                let seq = u64::from(u32::from_be_bytes([0, 0, 0, mode]));
                let _ = t.open(rest, seq, i % 2 == 0);
            }
        }
        _ => {
            // Genuine packets from the peer, every suite, with the input XORed in.
            let mut peer = plane(2, true);
            for (i, suite) in Suite::ALL.into_iter().enumerate() {
                let i = i as u8;
                let inner = udp([10, 2, i, 7], [10, 1, i, 9], rest);
                let out = peer.protect(now, &inner).expect("protected");
                let noise = rest.get(usize::from(i)..).unwrap_or_default();
                let flip = |bytes: &mut [u8]| {
                    let mut changed = false;
                    for (b, n) in bytes.iter_mut().zip(noise.iter().cycle()) {
                        changed |= *n != 0;
                        *b ^= n;
                    }
                    changed
                };
                let got = match out {
                    Outbound::Protected(Protected::Ip(mut p)) => {
                        let changed = flip(&mut p);
                        (changed, dp.unprotect(now, &p))
                    }
                    Outbound::Protected(Protected::Udp(mut d)) => {
                        // Every byte of an ESP-in-UDP payload is authenticated.
                        let changed = flip(&mut d.payload);
                        let got = dp.unprotect_datagram(now, d.from, d.to, &d.payload);
                        assert!(!(changed && matches!(got, Ok(Inbound::Packet { .. }))), "{suite}: forged ESP opened");
                        (changed, got)
                    }
                    other => panic!("{suite}: {other:?}"),
                };
                check(&got.1);
                if !got.0 {
                    assert_eq!(got.1, Ok(Inbound::Packet { spi: 0x1000 + u32::from(i), packet: inner }), "{suite}");
                } else if let Ok(Inbound::Packet { packet, .. }) = &got.1 {
                    // Only bytes outside what ESP authenticates (the outer IP/UDP
                    // header) may have changed; the inner packet is the original.
                    assert_eq!(packet, &inner, "{suite}: tampered ESP opened to something else");
                }
            }
            let accepted: u64 = dp.spis().filter_map(|s| dp.sa_stats(s)).map(|s| s.inbound.packets).sum();
            assert!(accepted <= Suite::ALL.len() as u64);
        }
    }
});
