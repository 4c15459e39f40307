#![no_main]
//! IKEv2 peer authentication (`ikev2::auth::verify`): arbitrary CERT payloads and AUTH
//! data, or a genuine RSA proof (tests/fixtures/rsa: a leaf signed with RSA-PSS by an RSA
//! CA, AUTH by RSASSA-PKCS1-v1_5 / SHA-256 in an RFC 7427 Digital Signature) XORed with
//! the input.
//!
//! Invariants beyond "no panic": the genuine proof verifies; any change to it, and any
//! arbitrary input, is refused.

use deputy::UnixTime;
use deputy::ikev2::Identity;
use deputy::ikev2::auth::{AuthKeyDb, verify};
use deputy::ikev2::codec::{AuthPayload, CertPayload};
use libfuzzer_sys::fuzz_target;

const CA: &[u8] = include_bytes!("../../tests/fixtures/rsa/ca.der");
const LEAF: &[u8] = include_bytes!("../../tests/fixtures/rsa/leaf.der");
const SIG: &[u8] = include_bytes!("../../tests/fixtures/rsa/pkcs1.sig");
const MESSAGE: &[u8] = &[0x5a; 64];
const NONCE: &[u8] = &[0xa5; 32];
const SK_P: &[u8] = &[0x11; 32];
/// sha256WithRSAEncryption, NULL parameters.
const ALG: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
/// 2027-12-28: inside the fixtures' ten years (made 2026-12-06).
const NOW: UnixTime = UnixTime(1_830_000_000);

fn db() -> AuthKeyDb {
    let mut db = AuthKeyDb::new();
    db.add_trust_anchor(CA).expect("fixture CA");
    db
}

fn id() -> Identity {
    Identity::Fqdn("rsa.example".into())
}

fn genuine() -> (AuthPayload, Vec<CertPayload>) {
    let mut data = vec![ALG.len() as u8];
    data.extend_from_slice(ALG);
    data.extend_from_slice(SIG);
    (
        AuthPayload { method: 14, data },
        vec![CertPayload {
            encoding: 4,
            data: LEAF.to_vec(),
        }],
    )
}

fuzz_target!(|input: &[u8]| {
    let db = db();
    let Some((&mode, rest)) = input.split_first() else {
        let (auth, certs) = genuine();
        assert!(verify(&db, SK_P, MESSAGE, NONCE, &id(), &auth, &certs, NOW).is_ok());
        return;
    };
    if mode % 2 == 0 {
        // Arbitrary: the first octet the method, then length-prefixed CERT payloads, the
        // rest the AUTH data.
        let mut certs = Vec::new();
        let mut r = rest;
        while let [enc, len, tail @ ..] = r {
            let n = usize::from(*len).min(tail.len());
            if mode & 0x80 == 0 || certs.len() == 3 {
                break;
            }
            certs.push(CertPayload {
                encoding: *enc,
                data: tail[..n].to_vec(),
            });
            r = &tail[n..];
        }
        let auth = AuthPayload {
            method: mode >> 1,
            data: r.to_vec(),
        };
        let out = verify(&db, SK_P, MESSAGE, NONCE, &id(), &auth, &certs, NOW);
        assert!(out.is_err(), "arbitrary input verified: {out:?}");
    } else {
        // The genuine proof XORed with the input: the AUTH data or the certificate.
        let (mut auth, mut certs) = genuine();
        let target = if mode & 2 == 0 {
            &mut auth.data
        } else {
            &mut certs[0].data
        };
        let mut changed = false;
        for (b, x) in target.iter_mut().zip(rest) {
            changed |= *x != 0;
            *b ^= x;
        }
        let out = verify(&db, SK_P, MESSAGE, NONCE, &id(), &auth, &certs, NOW);
        assert_eq!(out.is_ok(), !changed, "{out:?}");
    }
});
