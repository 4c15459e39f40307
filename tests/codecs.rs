//! Property tests for every decoder of the foundation: what the encoder makes decodes to
//! the same value, and arbitrary bytes never panic (10,000 cases each).

use std::sync::Arc;

use deputy::channel::messages::{
    Alert, AlertCode, AuthMode, CertificateMsg, CertificateRequest, CertificateVerify, ClientHello,
    Finished, Handshake, RecordEnvelope, ServerHello,
};
use deputy::channel::{ClientConfig, Connection, Psk, ServerConfig};
use deputy::crypto::cert::{Certificate, CertificateAuthority, CertificateRequest as CertReq};
use deputy::wire::{self, Deframer, FieldWriter, Limits, Message};
use deputy::{Instant, UnixTime};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const CASES: u32 = 10_000;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(CASES)
}

fn limits() -> Limits {
    Limits::default()
}

fn decode<'a>(bytes: &'a [u8]) -> Message<'a> {
    Message::decode(bytes, &limits()).expect("encoder output decodes")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn wire_messages_round_trip(
        msg_type in any::<u8>(),
        session in any::<u64>(),
        fields in prop::collection::vec((any::<u16>(), prop::collection::vec(any::<u8>(), 0..64)), 0..32),
    ) {
        let mut w = FieldWriter::new();
        for (t, v) in &fields {
            w.push(*t, v);
        }
        let bytes = wire::encode(msg_type, session, w).unwrap();
        let msg = decode(&bytes);
        prop_assert_eq!(msg.msg_type(), msg_type);
        prop_assert_eq!(msg.session(), session);
        let got: Vec<(u16, Vec<u8>)> = msg.fields.iter().map(|f| (f.ty, f.value.to_vec())).collect();
        prop_assert_eq!(got, fields);
    }

    #[test]
    fn wire_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(&bytes, &limits());
        // Also with a valid header in front, so the field walker sees the noise.
        let mut framed = wire::Header { msg_type: 1, body_len: bytes.len() as u32, session: 0 }
            .to_bytes()
            .to_vec();
        framed.extend_from_slice(&bytes);
        if let Ok(msg) = Message::decode(&framed, &limits()) {
            for f in msg.fields.iter() {
                let _ = (msg.fields.u64(f.ty), msg.fields.addr(f.ty), msg.fields.str(f.ty));
            }
        }
    }

    #[test]
    fn deframer_never_panics_and_never_holds_more_than_a_message(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        chunk in 1usize..300,
    ) {
        let l = Limits { max_message_len: 256, ..limits() };
        let mut d = Deframer::new(l);
        for piece in bytes.chunks(chunk) {
            let mut rest = piece;
            while let Ok(n) = d.fill(rest) {
                rest = &rest[n..];
                let mut took = false;
                while let Some(m) = d.take() {
                    prop_assert!(m.len() <= 256);
                    took = true;
                }
                prop_assert!(d.buffered() <= 256);
                if rest.is_empty() || !took { break; }
            }
        }
    }

    #[test]
    fn client_hello_round_trips(
        versions in prop::collection::vec(any::<u16>(), 1..16),
        suites in prop::collection::vec(any::<u16>(), 1..16),
        group in any::<u16>(),
        key_share in prop::collection::vec(any::<u8>(), 0..300),
        random in any::<[u8; 32]>(),
        session_id in any::<u64>(),
        psk in any::<bool>(),
        psk_identity in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        server_name in prop::option::of("[a-z0-9.-]{0,40}"),
    ) {
        let hello = ClientHello {
            versions, suites, group, key_share, random, session_id,
            auth_mode: if psk { AuthMode::Psk } else { AuthMode::Certificate },
            psk_identity, server_name,
        };
        let bytes = hello.encode().unwrap();
        prop_assert_eq!(ClientHello::decode(&decode(&bytes), &limits()).unwrap(), hello);
    }

    #[test]
    fn server_hello_round_trips(
        version in any::<u16>(), suite in any::<u16>(), group in any::<u16>(),
        key_share in prop::collection::vec(any::<u8>(), 0..300),
        random in any::<[u8; 32]>(), session_id in any::<u64>(),
    ) {
        let hello = ServerHello { version, suite, group, key_share, random, session_id };
        let bytes = hello.encode().unwrap();
        prop_assert_eq!(ServerHello::decode(&decode(&bytes), &limits()).unwrap(), hello);
    }

    #[test]
    fn handshake_messages_round_trip(
        kind in 0u8..4,
        session in any::<u64>(),
        cert in prop::option::of(prop::collection::vec(any::<u8>(), 0..400)),
        signature in prop::array::uniform32(any::<u8>()),
        mac in any::<[u8; 32]>(),
    ) {
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&signature);
        sig[32..].copy_from_slice(&mac);
        let msg = match kind {
            0 => Handshake::Certificate(CertificateMsg { certificate: cert }),
            1 => Handshake::CertificateRequest(CertificateRequest),
            2 => Handshake::CertificateVerify(CertificateVerify { signature: sig }),
            _ => Handshake::Finished(Finished { mac }),
        };
        let bytes = msg.encode(session).unwrap();
        let decoded = decode(&bytes);
        prop_assert_eq!(decoded.session(), session);
        prop_assert_eq!(Handshake::decode(&decoded, &limits()).unwrap(), msg);
    }

    #[test]
    fn alerts_and_records_round_trip(
        code in any::<u8>(), session in any::<u64>(), seq in any::<u64>(),
        ciphertext in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let alert = Alert { code: AlertCode::from_code(code) };
        prop_assert_eq!(alert.code.code(), code);
        let bytes = alert.encode(session).unwrap();
        prop_assert_eq!(Alert::decode(&decode(&bytes), &limits()).unwrap(), alert);

        let record = RecordEnvelope { session, seq, ciphertext };
        let bytes = record.encode().unwrap();
        prop_assert_eq!(RecordEnvelope::decode(&decode(&bytes), &limits()).unwrap(), record);
    }

    #[test]
    fn channel_message_decoders_never_panic(
        msg_type in 0u8..16,
        fields in prop::collection::vec((any::<u16>(), prop::collection::vec(any::<u8>(), 0..40)), 0..12),
    ) {
        let mut w = FieldWriter::new();
        for (t, v) in &fields {
            // Bias toward the channel's own (critical) field numbers.
            w.push(0x8000 | (t & 0x1f), v);
        }
        let bytes = wire::encode(msg_type, 0, w).unwrap();
        let msg = decode(&bytes);
        let l = limits();
        let _ = ClientHello::decode(&msg, &l);
        let _ = ServerHello::decode(&msg, &l);
        let _ = Handshake::decode(&msg, &l);
        let _ = Alert::decode(&msg, &l);
        let _ = RecordEnvelope::decode(&msg, &l);
    }

    #[test]
    fn certificate_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = Certificate::decode(&bytes);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn certificates_round_trip(
        seed in any::<u64>(),
        subject in "[a-zA-Z0-9 .-]{1,40}",
        names in prop::collection::vec("[a-z0-9-]{1,20}", 0..8),
        not_before in any::<u64>(),
        lifetime in any::<u64>(),
        is_ca in any::<bool>(),
        key in any::<[u8; 32]>(),
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ca = CertificateAuthority::generate("CA", &mut rng);
        let also: Vec<&str> = names.iter().map(String::as_str).collect();
        let not_after = UnixTime(not_before.saturating_add(lifetime));
        let cert = ca.issue(&CertReq {
            subject: &subject, also_names: &also, public_key: key,
            not_before: UnixTime(not_before), not_after, is_ca,
        }, &mut rng).unwrap();
        let back = Certificate::decode(cert.as_bytes()).unwrap();
        prop_assert_eq!(&back, &cert);
        prop_assert_eq!(back.subject(), subject.as_str());
        prop_assert_eq!(back.also_names(), names.as_slice());
        prop_assert_eq!(back.validity(), (UnixTime(not_before), not_after));
        prop_assert_eq!(back.public_key(), &key);
        prop_assert_eq!(back.is_ca(), is_ca);
    }
}

fn psk() -> Psk {
    Psk::new("fuzz", &[1; 32]).unwrap()
}

proptest! {
    // Connections are costlier per case (a key pair each); still 10,000 cases.
    #![proptest_config(config())]

    #[test]
    fn connections_fed_arbitrary_bytes_never_panic_and_stay_failed(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..6),
        server_side in any::<bool>(),
        prefix_hello in any::<bool>(),
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let now = Instant::from_secs(1);
        let anchor = UnixTime(1_800_000_000);
        let client_cfg = Arc::new(ClientConfig::with_psk(psk(), anchor));
        let mut conn = if server_side {
            Connection::server(Arc::new(ServerConfig::with_psks([psk()], anchor).unwrap()), now)
        } else {
            Connection::client(client_cfg.clone(), now, &mut rng).unwrap()
        };
        if prefix_hello && server_side {
            // Start from a real hello so the noise lands mid-handshake.
            let mut c = Connection::client(client_cfg, now, &mut rng).unwrap();
            let hello = c.take_outgoing();
            prop_assert!(conn.feed(now, &hello, &mut rng).is_ok());
        }
        let mut failed = false;
        for chunk in &chunks {
            let result = conn.feed(now, chunk, &mut rng);
            if failed {
                prop_assert!(result.is_err(), "a failed connection refuses input");
            }
            if result.is_err() {
                failed = true;
                prop_assert!(conn.error().is_some());
                prop_assert!(!conn.is_established());
            }
        }
        let _ = conn.take_outgoing();
        let _ = conn.handle_timeout(Instant::from_secs(3600));
        prop_assert!(!conn.is_handshaking());
    }
}
