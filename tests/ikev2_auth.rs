//! `deputy::ikev2::auth` on its own: `prove` then `verify` for each credential and each
//! rule of the certificate path, with certificates issued here (tests/common/certs.rs)
//! and RSA fixtures made by openssl (tests/fixtures/rsa/make.sh).

use deputy::UnixTime;
use deputy::ikev2::Identity;
use deputy::ikev2::auth::{
    AuthFailure, AuthKeyDb, Credential, PeerAuth, Proof, Signer, prove, signed_octets, spki_sha1,
    verify,
};
use deputy::ikev2::codec::{AuthPayload, CertPayload};
use deputy::ikev2::consts::{auth_method, cert_encoding, id_type};
use deputy::ikev2::{IkeError, SecretBytes};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};

mod common;
use common::certs::{self, Alg, DAY, Issued, NOW, Spec};

const MESSAGE: &[u8] = &[0x5a; 64];
const NONCE: &[u8] = &[0xa5; 32];
const SK_P: &[u8] = &[0x11; 32];

fn fqdn(s: &str) -> Identity {
    Identity::Fqdn(s.into())
}

fn signer(leaf: &Issued, chain: &[&Issued]) -> Credential {
    let mut ders = vec![leaf.der.clone()];
    ders.extend(chain.iter().map(|c| c.der.clone()));
    Credential::Signature(Signer::new(leaf.key.clone(), ders).unwrap())
}

fn proof(cred: &Credential, id: &Identity) -> Proof {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    prove(cred, SK_P, MESSAGE, NONCE, id, &mut rng).unwrap()
}

fn db_with(anchors: &[&Issued]) -> AuthKeyDb {
    let mut db = AuthKeyDb::new();
    for a in anchors {
        db.add_trust_anchor(&a.der).unwrap();
    }
    db
}

fn check_at(
    db: &AuthKeyDb,
    id: &Identity,
    p: &Proof,
    now: u64,
) -> Result<deputy::ikev2::auth::VerifiedPeer, AuthFailure> {
    verify(
        db,
        SK_P,
        MESSAGE,
        NONCE,
        id,
        &p.auth,
        &p.certs,
        UnixTime(now),
    )
}

fn check(db: &AuthKeyDb, id: &Identity, p: &Proof) -> Result<PeerAuth, AuthFailure> {
    check_at(db, id, p, NOW).map(|v| v.via)
}

#[test]
fn ecdsa_and_ed25519_certificates_prove_and_verify() {
    for (ca_alg, leaf_alg) in [
        (Alg::P256, Alg::P256),
        (Alg::Ed25519, Alg::Ed25519),
        (Alg::P256, Alg::Ed25519),
        (Alg::Ed25519, Alg::P256),
    ] {
        let ca = certs::root(ca_alg, 1, "Root");
        let leaf = certs::leaf(leaf_alg, 2, "peer.example", &ca);
        let id = fqdn("peer.example");
        let p = proof(&signer(&leaf, &[]), &id);
        assert_eq!(p.auth.method, auth_method::DIGITAL_SIGNATURE);
        assert_eq!(p.certs.len(), 1);
        assert_eq!(p.certs[0].encoding, cert_encoding::X509_SIGNATURE);
        assert_eq!(p.certs[0].data, leaf.der);
        let v = check_at(&db_with(&[&ca]), &id, &p, NOW).unwrap();
        assert_eq!(v.method, auth_method::DIGITAL_SIGNATURE);
        assert_eq!(
            v.via,
            PeerAuth::Certificate {
                subject: leaf.subject_der(),
                anchor: ca.subject_der()
            }
        );
    }
}

#[test]
fn auth_data_carries_the_rfc_7427_algorithm_identifier() {
    let ca = certs::root(Alg::P256, 1, "Root");
    let leaf = certs::leaf(Alg::P256, 2, "peer.example", &ca);
    let p = proof(&signer(&leaf, &[]), &fqdn("peer.example"));
    // RFC 7427 A.3.1: length 12, ecdsa-with-SHA256 without parameters, then a DER
    // Ecdsa-Sig-Value.
    assert_eq!(
        &p.auth.data[..13],
        &[
            12, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02
        ]
    );
    assert_eq!(p.auth.data[13], 0x30);
    let ed_leaf = certs::leaf(Alg::Ed25519, 3, "peer.example", &ca);
    let p = proof(&signer(&ed_leaf, &[]), &fqdn("peer.example"));
    // RFC 8420 §2: id-Ed25519, then the 64-octet signature.
    assert_eq!(
        &p.auth.data[..8],
        &[7, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70]
    );
    assert_eq!(p.auth.data.len(), 8 + 64);
}

#[test]
fn intermediates_are_followed_in_any_order_up_to_the_bound() {
    let ca = certs::root(Alg::P256, 1, "Root");
    let inter = certs::issue(
        &Spec::ca("Intermediate"),
        certs::key(Alg::Ed25519, 4),
        Some(&ca),
        4,
    );
    let leaf = certs::leaf(Alg::P256, 2, "peer.example", &inter);
    let id = fqdn("peer.example");
    let db = db_with(&[&ca]);
    let p = proof(&signer(&leaf, &[&inter]), &id);
    assert_eq!(p.certs.len(), 2);
    assert!(matches!(
        check(&db, &id, &p),
        Ok(PeerAuth::Certificate { .. })
    ));
    // The anchor itself sent along, and an unrelated certificate, change nothing.
    let other = certs::root(Alg::P256, 9, "Other");
    let p = proof(&signer(&leaf, &[&other, &ca, &inter]), &id);
    assert!(check(&db, &id, &p).is_ok());
    // Without the intermediate the path does not reach the anchor.
    let p = proof(&signer(&leaf, &[]), &id);
    assert_eq!(check(&db, &id, &p), Err(AuthFailure::UnknownCa));
    // Leaf + intermediate = 2 certificates; a bound of 1 refuses.
    let mut tight = db.clone();
    tight.set_max_chain_len(1).unwrap();
    let p = proof(&signer(&leaf, &[&inter]), &id);
    assert_eq!(check(&tight, &id, &p), Err(AuthFailure::ChainTooLong));
    assert!(tight.set_max_chain_len(0).is_err());
    assert!(tight.set_max_chain_len(9).is_err());
}

#[test]
fn each_path_rule_has_its_failure() {
    let ca = certs::root(Alg::P256, 1, "Root");
    let id = fqdn("peer.example");
    let db = db_with(&[&ca]);
    let run = |leaf: &Issued, chain: &[&Issued]| check(&db, &id, &proof(&signer(leaf, chain), &id));

    // Another CA of the same name: the signature does not verify.
    let impostor = certs::root(Alg::P256, 8, "Root");
    let leaf = certs::leaf(Alg::P256, 2, "peer.example", &impostor);
    assert_eq!(run(&leaf, &[]), Err(AuthFailure::BadCertificateSignature));
    // A CA of another name: unknown.
    let stranger = certs::root(Alg::P256, 8, "Stranger");
    let leaf = certs::leaf(Alg::P256, 2, "peer.example", &stranger);
    assert_eq!(run(&leaf, &[]), Err(AuthFailure::UnknownCa));

    // Validity of the leaf, an intermediate and the anchor.
    let mut spec = Spec::leaf("peer.example");
    spec.not_after = NOW - 1;
    let leaf = certs::issue(&spec, certs::key(Alg::P256, 2), Some(&ca), 2);
    assert_eq!(run(&leaf, &[]), Err(AuthFailure::Expired));
    spec = Spec::leaf("peer.example");
    spec.not_before = NOW + 1;
    let leaf = certs::issue(&spec, certs::key(Alg::P256, 2), Some(&ca), 2);
    assert_eq!(run(&leaf, &[]), Err(AuthFailure::NotYetValid));
    let mut ispec = Spec::ca("Intermediate");
    ispec.not_after = NOW - DAY;
    let inter = certs::issue(&ispec, certs::key(Alg::P256, 4), Some(&ca), 4);
    let leaf = certs::leaf(Alg::P256, 2, "peer.example", &inter);
    assert_eq!(run(&leaf, &[&inter]), Err(AuthFailure::Expired));
    let leaf = certs::leaf(Alg::P256, 2, "peer.example", &ca);
    let p = proof(&signer(&leaf, &[]), &id);
    assert_eq!(
        check_at(&db, &id, &p, NOW + 400 * DAY),
        Err(AuthFailure::Expired),
        "past the leaf and the anchor"
    );

    // An issuer that is not a CA, or whose keyUsage lacks keyCertSign.
    let not_ca = certs::leaf(Alg::P256, 5, "issuer.example", &ca);
    let leaf = certs::leaf(Alg::P256, 2, "peer.example", &not_ca);
    assert_eq!(run(&leaf, &[&not_ca]), Err(AuthFailure::NotACa));
    let mut ispec = Spec::ca("Intermediate");
    ispec.key_usage = Some(KeyUsage(KeyUsages::CRLSign.into()));
    let inter = certs::issue(&ispec, certs::key(Alg::P256, 4), Some(&ca), 4);
    let leaf = certs::leaf(Alg::P256, 2, "peer.example", &inter);
    assert_eq!(run(&leaf, &[&inter]), Err(AuthFailure::NotACa));

    // pathLenConstraint 0 on the anchor forbids an intermediate below it.
    let mut rspec = Spec::ca("Strict root");
    rspec.ca = Some(Some(0));
    let strict = certs::issue(&rspec, certs::key(Alg::P256, 6), None, 6);
    let inter = certs::issue(
        &Spec::ca("Intermediate"),
        certs::key(Alg::P256, 4),
        Some(&strict),
        4,
    );
    let leaf = certs::leaf(Alg::P256, 2, "peer.example", &inter);
    let sdb = db_with(&[&strict]);
    let p = proof(&signer(&leaf, &[&inter]), &id);
    assert_eq!(check(&sdb, &id, &p), Err(AuthFailure::PathLenExceeded));
    let leaf = certs::leaf(Alg::P256, 2, "peer.example", &strict);
    let p = proof(&signer(&leaf, &[]), &id);
    assert!(
        check(&sdb, &id, &p).is_ok(),
        "a leaf right below it is fine"
    );

    // The leaf's keyUsage must allow signing.
    let mut spec = Spec::leaf("peer.example");
    spec.key_usage = Some(KeyUsage(KeyUsages::KeyEncipherment.into()));
    let leaf = certs::issue(&spec, certs::key(Alg::P256, 2), Some(&ca), 2);
    assert_eq!(run(&leaf, &[]), Err(AuthFailure::KeyUsage));

    // An unknown critical extension.
    let mut spec = Spec::leaf("peer.example");
    spec.unknown_critical = true;
    let leaf = certs::issue(&spec, certs::key(Alg::P256, 2), Some(&ca), 2);
    assert_eq!(
        run(&leaf, &[]),
        Err(AuthFailure::UnsupportedCriticalExtension)
    );
}

#[test]
fn identities_are_checked_against_the_certificate() {
    let ca = certs::root(Alg::Ed25519, 1, "Root");
    let mut spec = Spec::leaf("peer.example");
    spec.email = vec!["peer@example.org".into()];
    spec.ips = vec!["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()];
    let leaf = certs::issue(&spec, certs::key(Alg::P256, 2), Some(&ca), 2);
    let db = db_with(&[&ca]);
    let cred = signer(&leaf, &[]);
    let ok = [
        fqdn("peer.example"),
        fqdn("PEER.Example"),
        Identity::Rfc822("peer@example.org".into()),
        Identity::Ipv4("192.0.2.7".parse().unwrap()),
        Identity::Ipv6("2001:db8::7".parse().unwrap()),
        Identity::Other {
            ty: id_type::DER_ASN1_DN,
            data: leaf.subject_der(),
        },
    ];
    for id in ok {
        assert!(check(&db, &id, &proof(&cred, &id)).is_ok(), "{id}");
    }
    let wrong = [
        fqdn("other.example"),
        Identity::Rfc822("other@example.org".into()),
        Identity::Ipv4("192.0.2.8".parse().unwrap()),
        Identity::KeyId(vec![1, 2, 3]),
        Identity::Other {
            ty: id_type::DER_ASN1_DN,
            data: ca.subject_der(),
        },
    ];
    for id in wrong {
        assert_eq!(
            check(&db, &id, &proof(&cred, &id)),
            Err(AuthFailure::IdentityMismatch),
            "{id}"
        );
    }
}

#[test]
fn tampering_and_malformed_input_are_refused() {
    let ca = certs::root(Alg::P256, 1, "Root");
    let id = fqdn("peer.example");
    let db = db_with(&[&ca]);
    for alg in [Alg::P256, Alg::Ed25519] {
        let leaf = certs::leaf(alg, 2, "peer.example", &ca);
        let good = proof(&signer(&leaf, &[]), &id);
        // Any bit of the signature, or the signed message.
        let mut p = good.clone();
        let last = p.auth.data.len() - 3;
        p.auth.data[last] ^= 0x04;
        assert_eq!(check(&db, &id, &p), Err(AuthFailure::BadAuth));
        let r = verify(
            &db,
            SK_P,
            &[0x5b; 64],
            NONCE,
            &id,
            &good.auth,
            &good.certs,
            UnixTime(NOW),
        );
        assert_eq!(r, Err(AuthFailure::BadAuth));
        // A truncated AlgorithmIdentifier; a length past the end; no signature.
        let mut p = good.clone();
        p.auth.data[0] = 200;
        assert_eq!(check(&db, &id, &p), Err(AuthFailure::MalformedAuth));
        p.auth.data = good.auth.data[..1 + usize::from(good.auth.data[0])].to_vec();
        assert_eq!(check(&db, &id, &p), Err(AuthFailure::MalformedAuth));
        p.auth.data = vec![];
        assert_eq!(check(&db, &id, &p), Err(AuthFailure::MalformedAuth));
        // The certificate's signature.
        let mut p = good.clone();
        let n = p.certs[0].data.len();
        p.certs[0].data[n - 5] ^= 0x01;
        assert_eq!(
            check(&db, &id, &p),
            Err(AuthFailure::BadCertificateSignature)
        );
        // A certificate that does not decode.
        let mut p = good.clone();
        p.certs[0].data.truncate(40);
        assert_eq!(check(&db, &id, &p), Err(AuthFailure::BadCertificate));
        // No certificate at all.
        let mut p = good.clone();
        p.certs.clear();
        assert_eq!(check(&db, &id, &p), Err(AuthFailure::MissingCertificate));
        // An AUTH method outside the supported set.
        let mut p = good.clone();
        p.auth.method = 3;
        assert_eq!(check(&db, &id, &p), Err(AuthFailure::UnsupportedMethod));
    }
    // A signature algorithm the AUTH names but the key cannot make.
    let leaf = certs::leaf(Alg::Ed25519, 2, "peer.example", &ca);
    let mut p = proof(&signer(&leaf, &[]), &id);
    let ecdsa_alg = [
        12, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
    ];
    let sig = p.auth.data[8..].to_vec();
    p.auth.data = [&ecdsa_alg[..], &sig].concat();
    assert_eq!(check(&db, &id, &p), Err(AuthFailure::UnsupportedAlgorithm));
}

#[test]
fn pinned_keys_need_no_certificate() {
    let key = certs::key(Alg::Ed25519, 3);
    let id = fqdn("pinned.example");
    let mut db = AuthKeyDb::new();
    db.pin_public_key(id.clone(), &key.public_key_der().unwrap())
        .unwrap();
    let raw = Credential::Signature(Signer::new(key.clone(), vec![]).unwrap());
    let p = proof(&raw, &id);
    assert!(p.certs.is_empty());
    assert_eq!(check(&db, &id, &p), Ok(PeerAuth::PinnedKey));
    // The pin is for that identity only.
    let other = fqdn("other.example");
    assert_eq!(
        check(&db, &other, &proof(&raw, &other)),
        Err(AuthFailure::MissingCertificate)
    );
    // A certificate of another key under the pinned identity.
    let ca = certs::root(Alg::P256, 1, "Root");
    let leaf = certs::leaf(Alg::P256, 2, "pinned.example", &ca);
    db.add_trust_anchor(&ca.der).unwrap();
    assert_eq!(
        check(&db, &id, &proof(&signer(&leaf, &[]), &id)),
        Err(AuthFailure::PinnedKeyMismatch)
    );
    // A certificate of the pinned key is accepted without its path being checked.
    let mut spec = Spec::leaf("pinned.example");
    spec.not_after = NOW - DAY;
    let own = certs::issue(&spec, key.clone(), Some(&certs::root(Alg::P256, 9, "X")), 3);
    assert_eq!(
        check(&db, &id, &proof(&signer(&own, &[]), &id)),
        Ok(PeerAuth::PinnedKey)
    );
    // Raw public key CERT (RFC 7670) of the pinned key, or of another.
    let mut p = proof(&raw, &id);
    p.certs.push(CertPayload {
        encoding: cert_encoding::RAW_PUBLIC_KEY,
        data: key.public_key_der().unwrap(),
    });
    assert_eq!(check(&db, &id, &p), Ok(PeerAuth::PinnedKey));
    p.certs[0].data = certs::key(Alg::Ed25519, 4).public_key_der().unwrap();
    assert_eq!(check(&db, &id, &p), Err(AuthFailure::PinnedKeyMismatch));
    assert_eq!(
        check(&db, &other, &p),
        Err(AuthFailure::UnknownCa),
        "an unpinned raw key"
    );
    assert!(db.pin_public_key(other, b"not a key").is_err());
}

#[test]
fn shared_keys_per_peer_and_for_any_peer() {
    let alice = fqdn("alice.example");
    let bob = fqdn("bob.example");
    let mut db = AuthKeyDb::new();
    db.add_peer_psk(alice.clone(), b"alice's key").unwrap();
    let cred = |k: &[u8]| Credential::Psk(SecretBytes::from_slice(k));
    let p = proof(&cred(b"alice's key"), &alice);
    assert_eq!(p.auth.method, auth_method::SHARED_KEY_MIC);
    assert!(p.certs.is_empty());
    assert_eq!(check(&db, &alice, &p), Ok(PeerAuth::SharedKey));
    assert_eq!(check(&db, &bob, &p), Err(AuthFailure::NoSharedKey));
    db.set_any_peer_psk(Some(b"everyone"));
    assert_eq!(check(&db, &bob, &p), Err(AuthFailure::BadAuth));
    let p = proof(&cred(b"everyone"), &bob);
    assert_eq!(check(&db, &bob, &p), Ok(PeerAuth::SharedKey));
    assert_eq!(
        check(&db, &alice, &proof(&cred(b"everyone"), &alice)),
        Err(AuthFailure::BadAuth),
        "alice's own key takes precedence"
    );
    // The MIC is the one keys::psk_auth computes.
    let mic = deputy::ikev2::keys::psk_auth(b"everyone", MESSAGE, NONCE, SK_P, &bob.payload_body());
    assert_eq!(p.auth.data, mic.to_vec());
}

#[test]
fn rsa_signatures_and_certificates_verify() {
    let ca = include_bytes!("fixtures/rsa/ca.der");
    let leaf = include_bytes!("fixtures/rsa/leaf.der");
    let signed = include_bytes!("fixtures/rsa/signed.bin");
    let id = fqdn("rsa.example");
    assert_eq!(signed_octets(MESSAGE, NONCE, SK_P, &id), signed.to_vec());
    // One day into the leaf's validity.
    let now = {
        use der::Decode;
        let c = x509_cert::Certificate::from_der(leaf).unwrap();
        c.tbs_certificate()
            .validity()
            .not_before
            .to_unix_duration()
            .as_secs()
            + DAY
    };
    let mut db = AuthKeyDb::new();
    db.add_trust_anchor(ca).unwrap();
    let certs = vec![CertPayload {
        encoding: cert_encoding::X509_SIGNATURE,
        data: leaf.to_vec(),
    }];
    let sha256_rsa: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
    ];
    // RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32 (RFC 7427 A.4.3 shape).
    let pss: &[u8] = &[
        0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30, 0x34,
        0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
        0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x20,
    ];
    let ds = |alg: &[u8], sig: &[u8]| AuthPayload {
        method: auth_method::DIGITAL_SIGNATURE,
        data: [&[alg.len() as u8][..], alg, sig].concat(),
    };
    let run = |auth: &AuthPayload| {
        verify(&db, SK_P, MESSAGE, NONCE, &id, auth, &certs, UnixTime(now)).map(|v| v.method)
    };
    let pkcs1 = include_bytes!("fixtures/rsa/pkcs1.sig");
    let pss_sig = include_bytes!("fixtures/rsa/pss.sig");
    assert_eq!(
        run(&ds(sha256_rsa, pkcs1)),
        Ok(auth_method::DIGITAL_SIGNATURE)
    );
    assert_eq!(run(&ds(pss, pss_sig)), Ok(auth_method::DIGITAL_SIGNATURE));
    // AUTH method 1: PKCS#1 v1.5 with SHA-1, no AlgorithmIdentifier.
    let method1 = AuthPayload {
        method: auth_method::RSA_DIGITAL_SIGNATURE,
        data: include_bytes!("fixtures/rsa/sha1.sig").to_vec(),
    };
    assert_eq!(run(&method1), Ok(auth_method::RSA_DIGITAL_SIGNATURE));
    // Crossed or damaged signatures.
    assert_eq!(run(&ds(sha256_rsa, pss_sig)), Err(AuthFailure::BadAuth));
    assert_eq!(run(&ds(pss, pkcs1)), Err(AuthFailure::BadAuth));
    let mut bad = pkcs1.to_vec();
    bad[100] ^= 1;
    assert_eq!(run(&ds(sha256_rsa, &bad)), Err(AuthFailure::BadAuth));
    // The leaf was signed with RSA-PSS by the RSA CA: the path itself verified above.
    assert_eq!(
        verify(
            &db,
            SK_P,
            MESSAGE,
            NONCE,
            &fqdn("x.example"),
            &ds(sha256_rsa, pkcs1),
            &certs,
            UnixTime(now)
        ),
        Err(AuthFailure::IdentityMismatch)
    );
}

#[test]
fn certreq_names_the_anchors() {
    let a = certs::root(Alg::P256, 1, "A");
    let b = certs::root(Alg::Ed25519, 2, "B");
    let mut db = AuthKeyDb::new();
    assert_eq!(db.certreq(), None);
    db.add_trust_anchor(&a.der).unwrap();
    db.add_trust_anchor(&b.der).unwrap();
    db.add_trust_anchor(&a.der).unwrap();
    let req = db.certreq().unwrap();
    assert_eq!(req.encoding, cert_encoding::X509_SIGNATURE);
    let hashes: Vec<&[u8]> = req.hashes().collect();
    assert_eq!(
        hashes,
        vec![
            &spki_sha1(&a.key.public_key_der().unwrap())[..],
            &spki_sha1(&b.key.public_key_der().unwrap())[..]
        ]
    );
    assert!(db.requested_by(&[&req]));
    assert!(!AuthKeyDb::new().requested_by(&[&req]));
}

#[test]
fn configuration_rules_have_their_errors() {
    let ca = certs::root(Alg::P256, 1, "Root");
    let leaf = certs::leaf(Alg::P256, 2, "peer.example", &ca);
    // The leaf must carry the private key's public key.
    assert_eq!(
        Signer::new(certs::key(Alg::P256, 3), vec![leaf.der.clone()]),
        Err(IkeError::CertificateKeyMismatch)
    );
    assert_eq!(
        Signer::new(leaf.key.clone(), vec![vec![0x30, 0x00]]),
        Err(IkeError::BadConfiguredCertificate)
    );
    assert_eq!(
        Signer::new(leaf.key.clone(), vec![leaf.der.clone(); 9]),
        Err(IkeError::TooManyCertificates(8))
    );
    assert_eq!(
        deputy::ikev2::auth::SigningKey::from_pkcs8_der(b"junk"),
        Err(IkeError::BadPrivateKey)
    );
    assert_eq!(
        deputy::ikev2::auth::SigningKey::ecdsa_p256_from_bytes(&[0; 32]),
        Err(IkeError::BadPrivateKey)
    );
    let mut db = AuthKeyDb::new();
    assert!(db.add_trust_anchor(b"junk").is_err());
    for i in 0..AuthKeyDb::MAX_TRUST_ANCHORS {
        let c = certs::root(Alg::Ed25519, 1, &format!("CA {i}"));
        db.add_trust_anchor(&c.der).unwrap();
    }
    let extra = certs::root(Alg::Ed25519, 1, "one too many");
    assert!(matches!(
        db.add_trust_anchor(&extra.der),
        Err(deputy::Error::CapacityExceeded {
            what: "trust anchors",
            ..
        })
    ));
    let mut db = AuthKeyDb::new();
    for i in 0..AuthKeyDb::MAX_PEER_PSKS {
        db.add_peer_psk(fqdn(&format!("p{i}.example")), b"k")
            .unwrap();
    }
    db.add_peer_psk(fqdn("p0.example"), b"replaced").unwrap();
    assert!(db.add_peer_psk(fqdn("extra.example"), b"k").is_err());
    let key = certs::key(Alg::Ed25519, 5).public_key_der().unwrap();
    for i in 0..AuthKeyDb::MAX_PINNED_KEYS {
        db.pin_public_key(fqdn(&format!("p{i}.example")), &key)
            .unwrap();
    }
    assert!(db.pin_public_key(fqdn("extra.example"), &key).is_err());
    // PKCS#8 round trip of both key types.
    use p256::pkcs8::EncodePrivateKey;
    let p = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
    let der = p.to_pkcs8_der().unwrap();
    assert!(matches!(
        deputy::ikev2::auth::SigningKey::from_pkcs8_der(der.as_bytes()),
        Ok(deputy::ikev2::auth::SigningKey::EcdsaP256(_))
    ));
    let e = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let der = e.to_pkcs8_der().unwrap();
    assert!(matches!(
        deputy::ikev2::auth::SigningKey::from_pkcs8_der(der.as_bytes()),
        Ok(deputy::ikev2::auth::SigningKey::Ed25519(_))
    ));
    assert_eq!(AuthFailure::UnknownCa.code(), 2);
    assert_eq!(AuthFailure::NotYetValid.code(), 3);
    assert_eq!(AuthFailure::ChainTooLong.code(), 18);
}

/// A genuine certificate proof (P-256 leaf under an Ed25519 intermediate under a P-256
/// root, and an Ed25519 leaf straight under the root) and its database, made once.
fn genuine() -> &'static (AuthKeyDb, Vec<Proof>) {
    static CELL: std::sync::OnceLock<(AuthKeyDb, Vec<Proof>)> = std::sync::OnceLock::new();
    CELL.get_or_init(|| {
        let ca = certs::root(Alg::P256, 1, "Root");
        let inter = certs::issue(
            &Spec::ca("Intermediate"),
            certs::key(Alg::Ed25519, 4),
            Some(&ca),
            4,
        );
        let a = certs::leaf(Alg::P256, 2, "peer.example", &inter);
        let b = certs::leaf(Alg::Ed25519, 3, "peer.example", &ca);
        let id = fqdn("peer.example");
        let proofs = vec![
            proof(&signer(&a, &[&inter]), &id),
            proof(&signer(&b, &[]), &id),
        ];
        (db_with(&[&ca]), proofs)
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// Any change to a genuine proof — a byte of a certificate or of the AUTH data
    /// altered, either truncated — is refused, and nothing panics.
    #[test]
    fn altered_proofs_are_refused_and_never_panic(
        which in 0usize..2,
        target in 0usize..3,
        at in proptest::prelude::any::<proptest::sample::Index>(),
        xor in 1u8..=255,
        truncate in proptest::prelude::any::<bool>(),
    ) {
        let (db, proofs) = genuine();
        let id = fqdn("peer.example");
        let mut p = proofs[which].clone();
        proptest::prop_assert!(check(db, &id, &p).is_ok());
        let bytes = match target {
            0 => &mut p.auth.data,
            1 => &mut p.certs[0].data,
            _ => &mut p.certs.last_mut().unwrap().data,
        };
        let i = at.index(bytes.len());
        if truncate {
            bytes.truncate(i);
        } else {
            bytes[i] ^= xor;
        }
        proptest::prop_assert!(check(db, &id, &p).is_err());
    }

    /// Arbitrary CERT and AUTH bytes never panic the verifier.
    #[test]
    fn arbitrary_cert_and_auth_bytes_never_panic(
        method in proptest::prelude::any::<u8>(),
        auth in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        certs in proptest::collection::vec(
            (proptest::prelude::any::<u8>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)),
            0..4,
        ),
    ) {
        let (db, _) = genuine();
        let certs: Vec<CertPayload> = certs
            .into_iter()
            .map(|(e, data)| CertPayload { encoding: if e % 2 == 0 { 4 } else { e }, data })
            .collect();
        let auth = AuthPayload { method, data: auth };
        let r = verify(db, SK_P, MESSAGE, NONCE, &fqdn("peer.example"), &auth, &certs, UnixTime(NOW));
        proptest::prop_assert!(r.is_err());
    }
}
