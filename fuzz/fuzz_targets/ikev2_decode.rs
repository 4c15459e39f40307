#![no_main]
//! The IKEv2 decoders: whole messages, the bare header, payload chains behind every first
//! payload type, the SK payload (opened with fixed keys for every suite), and proposal
//! selection and traffic selector narrowing on whatever decoded.
//!
//! Invariants beyond "no panic": a decoded message re-encodes to bytes that decode to the
//! same message; a chosen proposal was among those offered; narrowed selectors lie inside
//! both the proposed and the allowed ones, and convert to the data plane's selectors.

use deputy::crypto::dh::Group;
use deputy::ikev2::codec::{
    Header, Limits, Message, Payload, decode_chain, narrow_ts, ts_from_wire,
};
use deputy::ikev2::keys::IkeKeys;
use deputy::ikev2::proposal::{
    accept_esp, accept_ike, accept_ike_rekey, select_esp, select_ike, select_ike_rekey,
};
use deputy::ikev2::sk::SkCipher;
use deputy::ikev2::{Encr, IkeProposal, IkeSuite, Integ, Prf, SecretBytes};
use deputy::ipsec::Suite;
use libfuzzer_sys::fuzz_target;

fn ours() -> Vec<IkeProposal> {
    vec![
        IkeProposal::aes128_sha256(&[Group::X25519, Group::Modp2048]),
        IkeProposal::chacha20poly1305(&[Group::X25519]),
        IkeProposal::aes_gcm16(128, &[Group::X25519]),
        IkeProposal::aes_gcm16(256, &[Group::Modp2048]),
    ]
}

fn keys(encr: Encr) -> IkeKeys {
    let e = encr.key_len() + encr.salt_len();
    let a = if encr.is_aead() { 0 } else { 32 };
    let k = |n: usize, b: u8| SecretBytes::new(vec![b; n]);
    IkeKeys {
        sk_d: k(32, 1),
        sk_ai: k(a, 2),
        sk_ar: k(a, 3),
        sk_ei: k(e, 4),
        sk_er: k(e, 5),
        sk_pi: k(32, 6),
        sk_pr: k(32, 7),
    }
}

fn check_selection(payloads: &[Payload]) {
    let ours = ours();
    for p in payloads {
        match p {
            Payload::Sa(props) => {
                if let Some(c) = select_ike(props, &ours, Some(31)) {
                    assert!(props.iter().any(|p| p.num == c.num));
                }
                if let Some((c, spi)) = select_ike_rekey(props, &ours, Some(14)) {
                    assert!(props.iter().any(|p| p.num == c.num && p.spi == spi));
                    assert_ne!(spi, [0; 8]);
                }
                let _ = accept_ike(props, &ours);
                let _ = accept_ike_rekey(props, &ours);
                if let Some(c) = select_esp(props, &Suite::ALL) {
                    assert!(c.peer_spi > 255, "reserved SPIs are never chosen");
                }
                if let Some((_, spi)) = accept_esp(props, &Suite::ALL) {
                    assert!(spi > 255);
                }
            }
            Payload::TsI(proposed) | Payload::TsR(proposed) => {
                let allowed = [
                    deputy::ikev2::codec::TrafficSelector::prefix("10.0.0.0".parse().unwrap(), 8),
                    deputy::ikev2::codec::TrafficSelector::any_v6(),
                ];
                let narrowed = narrow_ts(proposed, &allowed, 16);
                assert!(narrowed.len() <= 16);
                for n in &narrowed {
                    assert!(proposed.iter().any(|p| p.covers(n)));
                    assert!(allowed.iter().any(|a| a.covers(n)));
                }
                // What narrowing produced is well formed for the data plane.
                assert!(ts_from_wire(&narrowed).is_some());
                let _ = ts_from_wire(proposed);
            }
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let _ = Header::decode(data, &limits);
    if let Ok(m) = Message::decode(data, &limits) {
        if let Ok(bytes) = m.encode() {
            assert_eq!(Message::decode(&bytes, &limits).as_ref(), Ok(&m));
        }
        check_selection(&m.payloads);
    }
    // The same bytes as a payload chain behind every first payload type.
    if let Some((&first, rest)) = data.split_first() {
        let mut count = 0;
        if let Ok(payloads) = decode_chain(first, rest, &limits, &mut count, false) {
            assert!(count <= limits.max_payloads);
            check_selection(&payloads);
        }
    }
    // The SK payload, opened with fixed keys.
    for encr in [Encr::AesCbc128, Encr::AesGcm16_128, Encr::AesGcm16_256, Encr::ChaCha20Poly1305] {
        let suite = IkeSuite {
            encr,
            integ: (!encr.is_aead()).then_some(Integ::HmacSha256_128),
            prf: Prf::HmacSha256,
            group: Group::X25519,
        };
        let sk = SkCipher::new(&suite, &keys(encr), false).expect("fixed keys fit");
        let _ = sk.open(data, &limits);
    }
});
