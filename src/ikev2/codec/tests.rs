use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::ikev2::codec::ExchangeType;
use crate::ikev2::consts::{cert_encoding, notify, payload as pt, protocol, transform as t};

fn header() -> Header {
    Header::ike_sa_init([1, 2, 3, 4, 5, 6, 7, 8], [0; 8], false)
}

use crate::ipsec::tests::unhex;

/// Byte-exact layout of a small message, written out by hand from RFC 7296 §3.1, §3.3,
/// §3.4, §3.10 and §3.13.
#[test]
fn encodes_the_rfc_layout() {
    let m = Message {
        header: header(),
        payloads: vec![
            Payload::Sa(vec![Proposal {
                num: 1,
                protocol: protocol::IKE,
                spi: vec![],
                transforms: vec![
                    Transform::with_key_len(t::ENCR, t::ENCR_AES_CBC, 128),
                    Transform::new(t::DH, 31),
                ],
            }]),
            Payload::Ke(KePayload {
                group: 31,
                data: vec![0xab; 4],
            }),
            Payload::Notify(Notify::new(notify::NAT_DETECTION_SOURCE_IP, vec![0xcd; 2])),
            Payload::TsI(vec![TrafficSelector::prefix(
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)),
                24,
            )]),
        ],
    };
    let want = unhex(
        "0102030405060708 0000000000000000 21 20 22 08 00000000 0000006a
         22 00 0020
            00 00 001c 01 01 00 02
               03 00 000c 01 00 000c 800e 0080
               00 00 0008 04 00 001f
         29 00 000c 001f 0000 abababab
         2c 00 000a 00 00 4004 cdcd
         00 00 0018 01 000000 07 00 0010 0000 ffff 0a000000 0a0000ff",
    );
    assert_eq!(m.encode().unwrap(), want);
    assert_eq!(Message::decode(&want, &Limits::default()).unwrap(), m);
}

#[test]
fn strict_lengths_and_structure() {
    let m = Message {
        header: header(),
        payloads: vec![Payload::Nonce(vec![7; 16]), Payload::Vendor(vec![1, 2])],
    };
    let good = m.encode().unwrap();
    let l = Limits::default();
    assert!(Message::decode(&good, &l).is_ok());
    // Datagram longer or shorter than the header says.
    let mut long = good.clone();
    long.push(0);
    assert_eq!(
        Message::decode(&long, &l),
        Err(IkeError::BadLength("IKE header"))
    );
    assert_eq!(
        Message::decode(&good[..good.len() - 1], &l),
        Err(IkeError::BadLength("IKE header"))
    );
    assert_eq!(Message::decode(&good[..10], &l), Err(IkeError::Truncated));
    // Major version 3.
    let mut v3 = good.clone();
    v3[17] = 0x30;
    assert_eq!(
        Message::decode(&v3, &l),
        Err(IkeError::UnsupportedVersion(3))
    );
    // A payload length past the end.
    let mut bad = good.clone();
    bad[HEADER_LEN + 3] = 0xff;
    assert_eq!(
        Message::decode(&bad, &l),
        Err(IkeError::BadLength("payload"))
    );
    // A payload length below the generic header.
    let mut bad = good.clone();
    bad[HEADER_LEN + 3] = 3;
    assert_eq!(
        Message::decode(&bad, &l),
        Err(IkeError::BadLength("payload"))
    );
    // Bytes after the last payload (chain ends early).
    let mut bad = good.clone();
    bad[HEADER_LEN] = pt::NONE;
    assert_eq!(Message::decode(&bad, &l), Err(IkeError::TrailingBytes));
    // A nonce too short.
    let short = Message {
        header: header(),
        payloads: vec![Payload::Nonce(vec![7; 15])],
    };
    assert!(short.encode().is_err());
    // Payload count bound.
    let many = Message {
        header: header(),
        payloads: vec![Payload::Vendor(vec![]); 5],
    };
    let bytes = many.encode().unwrap();
    let tight = Limits {
        max_payloads: 4,
        ..Limits::default()
    };
    assert_eq!(
        Message::decode(&bytes, &tight),
        Err(IkeError::TooManyPayloads(4))
    );
    assert!(
        Message::decode(
            &bytes,
            &Limits {
                max_payloads: 5,
                ..tight
            }
        )
        .is_ok()
    );
    // Message size bound.
    let small = Limits {
        max_message_len: bytes.len() - 1,
        ..Limits::default()
    };
    assert!(matches!(
        Message::decode(&bytes, &small),
        Err(IkeError::MessageTooLarge { .. })
    ));
}

#[test]
fn critical_unknown_payloads_are_refused_and_others_kept() {
    let m = Message {
        header: header(),
        payloads: vec![
            Payload::Unknown(UnknownPayload {
                ty: 222,
                data: vec![9; 3],
            }),
            Payload::Nonce(vec![1; 16]),
        ],
    };
    let mut bytes = m.encode().unwrap();
    assert_eq!(Message::decode(&bytes, &Limits::default()).unwrap(), m);
    bytes[HEADER_LEN + 1] = 0x80;
    assert_eq!(
        Message::decode(&bytes, &Limits::default()),
        Err(IkeError::UnsupportedCriticalPayload(222))
    );
    // The critical bit on a known payload is ignored.
    let n = Message {
        header: header(),
        payloads: vec![Payload::Nonce(vec![1; 16])],
    };
    let mut bytes = n.encode().unwrap();
    bytes[HEADER_LEN + 1] = 0x80;
    assert_eq!(Message::decode(&bytes, &Limits::default()).unwrap(), n);
}

#[test]
fn sk_must_be_last() {
    let m = Message {
        header: header(),
        payloads: vec![
            Payload::Encrypted(Encrypted {
                first_inner: pt::NONCE,
                data: vec![0; 32],
            }),
            Payload::Vendor(vec![]),
        ],
    };
    assert!(m.encode().is_err());
    let ok = Message {
        header: header(),
        payloads: vec![
            Payload::Vendor(vec![]),
            Payload::Encrypted(Encrypted {
                first_inner: pt::NONCE,
                data: vec![0; 32],
            }),
        ],
    };
    let mut bytes = ok.encode().unwrap();
    assert_eq!(Message::decode(&bytes, &Limits::default()).unwrap(), ok);
    // Grow the SK body by pretending something follows it.
    bytes.extend_from_slice(&[0, 0, 0, 4]);
    let len = bytes.len() as u32;
    bytes[24..28].copy_from_slice(&len.to_be_bytes());
    let sk_at = HEADER_LEN + 4;
    bytes[sk_at + 2..sk_at + 4].copy_from_slice(&36u16.to_be_bytes());
    assert_eq!(
        Message::decode(&bytes, &Limits::default()),
        Err(IkeError::Malformed("SK payload is not last"))
    );
}

#[test]
fn substructure_flags_and_counts_are_checked() {
    let sa = Payload::Sa(vec![
        Proposal {
            num: 1,
            protocol: protocol::ESP,
            spi: vec![0, 0, 1, 0],
            transforms: vec![Transform::new(t::ESN, 0), Transform::new(t::INTEG, 12)],
        },
        Proposal {
            num: 2,
            protocol: protocol::ESP,
            spi: vec![0, 0, 1, 0],
            transforms: vec![],
        },
    ]);
    let m = Message {
        header: header(),
        payloads: vec![sa],
    };
    let good = m.encode().unwrap();
    assert_eq!(Message::decode(&good, &Limits::default()).unwrap(), m);
    let p0 = HEADER_LEN + 4;
    // First proposal claims to be the last.
    let mut bad = good.clone();
    bad[p0] = 0;
    assert!(Message::decode(&bad, &Limits::default()).is_err());
    // Transform count larger than present.
    let mut bad = good.clone();
    bad[p0 + 7] = 3;
    assert!(Message::decode(&bad, &Limits::default()).is_err());
    // Transform "more" flag wrong on the last transform.
    let mut bad = good.clone();
    bad[p0 + 12 + 8] = 3;
    assert!(Message::decode(&bad, &Limits::default()).is_err());
}

#[test]
fn identities_round_trip_and_id_body() {
    for id in [
        Identity::Ipv4(Ipv4Addr::new(192, 0, 2, 1)),
        Identity::Ipv6(Ipv6Addr::LOCALHOST),
        Identity::Fqdn("vpn.example".into()),
        Identity::Rfc822("a@b.example".into()),
        Identity::KeyId(vec![1, 2, 3]),
        Identity::Other {
            ty: 9,
            data: vec![0x30, 0],
        },
    ] {
        let m = Message {
            header: header(),
            payloads: vec![Payload::IdI(id.clone()), Payload::IdR(id.clone())],
        };
        let bytes = m.encode().unwrap();
        assert_eq!(Message::decode(&bytes, &Limits::default()).unwrap(), m);
        let body = id.payload_body();
        assert_eq!(
            &bytes[HEADER_LEN + 4..HEADER_LEN + 4 + body.len()],
            &body[..]
        );
    }
    // An IPv4 ID of the wrong length.
    let bad = Message {
        header: header(),
        payloads: vec![Payload::IdI(Identity::KeyId(vec![1, 2, 3]))],
    };
    let mut bytes = bad.encode().unwrap();
    bytes[HEADER_LEN + 4] = 1;
    assert!(Message::decode(&bytes, &Limits::default()).is_err());
}

#[test]
fn traffic_selector_algebra() {
    let a = TrafficSelector::prefix(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8);
    let b = TrafficSelector::prefix(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 0)), 24);
    assert_eq!(a.intersect(&b), Some(b));
    assert!(a.covers(&b) && !b.covers(&a));
    let v6 = TrafficSelector::any_v6();
    assert_eq!(a.intersect(&v6), None);
    let mut tcp = TrafficSelector::any_v4();
    tcp.ip_protocol = 6;
    tcp.start_port = 80;
    tcp.end_port = 80;
    let x = a.intersect(&tcp).unwrap();
    assert_eq!((x.ip_protocol, x.start_port, x.end_port), (6, 80, 80));
    let mut udp = tcp;
    udp.ip_protocol = 17;
    assert_eq!(tcp.intersect(&udp), None);
    assert!(x.contains(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)), 6, 80));
    assert!(!x.contains(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)), 6, 81));
    // Narrowing is bounded.
    let many: Vec<TrafficSelector> = (0..40u8)
        .map(|i| TrafficSelector::host(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))))
        .collect();
    assert_eq!(narrow_ts(&many, &[a], 16).len(), 16);
    assert!(narrow_ts(&many, &[v6], 16).is_empty());
    let mixed = TrafficSelector {
        start: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        end: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ..a
    };
    assert!(!mixed.is_valid());
    assert!(
        Message {
            header: header(),
            payloads: vec![Payload::TsI(vec![mixed])]
        }
        .encode()
        .is_err()
    );
}

// ---- property tests ----

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn ip_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(a, b)| (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b)))),
        (any::<u128>(), any::<u128>())
            .prop_map(|(a, b)| (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))),
    ]
}

fn ts() -> impl Strategy<Value = TrafficSelector> {
    (any::<u8>(), any::<u16>(), any::<u16>(), ip_pair()).prop_map(|(p, s, e, (a, b))| {
        TrafficSelector {
            ip_protocol: p,
            start_port: s,
            end_port: e,
            start: a,
            end: b,
        }
    })
}

fn attribute() -> impl Strategy<Value = Attribute> {
    (
        0u16..0x8000,
        prop_oneof![
            any::<u16>().prop_map(AttrValue::Tv),
            bytes(6).prop_map(AttrValue::Tlv)
        ],
    )
        .prop_map(|(ty, value)| Attribute { ty, value })
}

fn transform() -> impl Strategy<Value = Transform> {
    (
        any::<u8>(),
        any::<u16>(),
        proptest::collection::vec(attribute(), 0..3),
    )
        .prop_map(|(ty, id, attributes)| Transform { ty, id, attributes })
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (
        any::<u8>(),
        any::<u8>(),
        bytes(9),
        proptest::collection::vec(transform(), 0..6),
    )
        .prop_map(|(num, protocol, spi, transforms)| Proposal {
            num,
            protocol,
            spi,
            transforms,
        })
}

fn identity() -> impl Strategy<Value = Identity> {
    prop_oneof![
        any::<u32>().prop_map(|a| Identity::Ipv4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| Identity::Ipv6(Ipv6Addr::from(a))),
        "[a-z0-9.-]{0,24}".prop_map(Identity::Fqdn),
        "[a-z]{1,8}@[a-z.]{1,12}".prop_map(Identity::Rfc822),
        bytes(20).prop_map(Identity::KeyId),
        (
            prop_oneof![Just(4u8), Just(9), Just(10), Just(12)],
            bytes(20)
        )
            .prop_map(|(ty, data)| Identity::Other { ty, data }),
    ]
}

fn delete() -> impl Strategy<Value = Delete> {
    (
        any::<u8>(),
        prop_oneof![Just(0u8), Just(4), Just(8)],
        0usize..4,
    )
        .prop_flat_map(|(protocol, spi_size, n)| {
            let n = if spi_size == 0 { 0 } else { n };
            proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), usize::from(spi_size)),
                n,
            )
            .prop_map(move |spis| Delete {
                protocol,
                spi_size,
                spis,
            })
        })
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        proptest::collection::vec(proposal(), 1..3).prop_map(Payload::Sa),
        (any::<u16>(), bytes(40)).prop_map(|(group, data)| Payload::Ke(KePayload { group, data })),
        identity().prop_map(Payload::IdI),
        identity().prop_map(Payload::IdR),
        (any::<u8>(), bytes(40))
            .prop_map(|(method, data)| Payload::Auth(AuthPayload { method, data })),
        proptest::collection::vec(any::<u8>(), 16..64).prop_map(Payload::Nonce),
        (any::<u8>(), bytes(9), any::<u16>(), bytes(30)).prop_map(|(protocol, spi, ty, data)| {
            Payload::Notify(Notify {
                protocol,
                spi,
                ty,
                data,
            })
        }),
        delete().prop_map(Payload::Delete),
        bytes(20).prop_map(Payload::Vendor),
        proptest::collection::vec(ts(), 0..4).prop_map(Payload::TsI),
        proptest::collection::vec(ts(), 0..4).prop_map(Payload::TsR),
        (any::<u8>(), bytes(300))
            .prop_map(|(encoding, data)| Payload::Cert(CertPayload { encoding, data })),
        (0usize..4, any::<bool>(), bytes(80)).prop_map(|(n, x509, mut authorities)| {
            // X.509 requests carry whole 20-octet hashes; other encodings anything.
            let encoding = if x509 {
                cert_encoding::X509_SIGNATURE
            } else {
                7
            };
            if x509 {
                authorities.resize(n * CERTREQ_HASH_LEN, 0xee);
            }
            Payload::CertReq(CertReq {
                encoding,
                authorities,
            })
        }),
        (
            prop_oneof![Just(pt::CP), Just(pt::EAP), Just(pt::SKF)],
            bytes(20)
        )
            .prop_map(|(ty, data)| Payload::Other { ty, data }),
        (prop_oneof![1u8..=32, 49u8..=52, 54u8..=255], bytes(20))
            .prop_map(|(ty, data)| Payload::Unknown(UnknownPayload { ty, data })),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        any::<[u8; 8]>(),
        any::<[u8; 8]>(),
        any::<u8>(),
        any::<(bool, bool, bool)>(),
        any::<u32>(),
        proptest::collection::vec(payload(), 0..8),
        proptest::option::of((any::<u8>(), bytes(64))),
    )
        .prop_map(
            |(spi_i, spi_r, exchange, (i, v, r), message_id, mut payloads, sk)| {
                if let Some((first_inner, data)) = sk {
                    payloads.push(Payload::Encrypted(Encrypted { first_inner, data }));
                }
                Message {
                    header: Header {
                        spi_i,
                        spi_r,
                        exchange: ExchangeType::from(exchange),
                        flags: Flags {
                            initiator: i,
                            version: v,
                            response: r,
                        },
                        message_id,
                    },
                    payloads,
                }
            },
        )
}

/// CERT and CERTREQ (RFC 7296 §3.6, §3.7): the encoding octet, then the data; the
/// bounds on certificate size, certificates per chain and the X.509 hash length.
#[test]
fn cert_and_certreq_layout_and_bounds() {
    let cert = Payload::Cert(CertPayload {
        encoding: cert_encoding::X509_SIGNATURE,
        data: vec![0x30, 0x03, 1, 2, 3],
    });
    let req = Payload::CertReq(CertReq {
        encoding: cert_encoding::X509_SIGNATURE,
        authorities: vec![0xaa; 40],
    });
    let (first, body) = encode_chain(&[cert.clone(), req.clone()]).unwrap();
    assert_eq!(first, pt::CERT);
    assert_eq!(
        &body[..10],
        &[pt::CERTREQ, 0, 0, 10, 4, 0x30, 0x03, 1, 2, 3]
    );
    assert_eq!(&body[10..15], &[0, 0, 0, 45, 4]);
    let mut count = 0;
    let back = decode_chain(first, &body, &Limits::default(), &mut count, false).unwrap();
    assert_eq!(back, vec![cert.clone(), req.clone()]);
    if let Payload::CertReq(r) = &back[1] {
        assert_eq!(r.hashes().count(), 2);
    }

    // A CERTREQ of X.509 hashes must hold whole 20-octet hashes.
    let mut bad = body.clone();
    bad[12..14].copy_from_slice(&44u16.to_be_bytes());
    bad.pop();
    let mut count = 0;
    assert_eq!(
        decode_chain(first, &bad, &Limits::default(), &mut count, false),
        Err(IkeError::BadLength("CERTREQ"))
    );
    // An empty CERT (no encoding octet) is refused.
    let mut count = 0;
    assert_eq!(
        decode_chain(
            pt::CERT,
            &[0, 0, 0, 4],
            &Limits::default(),
            &mut count,
            false
        ),
        Err(IkeError::BadLength("CERT"))
    );

    // Too large a certificate.
    let big = Payload::Cert(CertPayload {
        encoding: 4,
        data: vec![0; MAX_CERT_LEN + 1],
    });
    assert!(encode_chain(core::slice::from_ref(&big)).is_err());
    let mut raw = vec![0, 0];
    raw.extend_from_slice(&((MAX_CERT_LEN + 6) as u16).to_be_bytes());
    raw.push(4);
    raw.extend_from_slice(&[0; MAX_CERT_LEN + 1]);
    let mut count = 0;
    assert_eq!(
        decode_chain(pt::CERT, &raw, &Limits::default(), &mut count, false),
        Err(IkeError::CertificateTooLarge {
            len: MAX_CERT_LEN + 1,
            max: MAX_CERT_LEN
        })
    );

    // MAX_CERTS certificates pass, one more is refused.
    let limits = Limits {
        max_message_len: Limits::DEFAULT_MAX_MESSAGE_LEN,
        max_payloads: 64,
    };
    let (first, body) = encode_chain(&vec![cert.clone(); MAX_CERTS]).unwrap();
    let mut count = 0;
    assert_eq!(
        decode_chain(first, &body, &limits, &mut count, false)
            .unwrap()
            .len(),
        MAX_CERTS
    );
    let (first, body) = encode_chain(&vec![cert; MAX_CERTS + 1]).unwrap();
    let mut count = 0;
    assert_eq!(
        decode_chain(first, &body, &limits, &mut count, false),
        Err(IkeError::TooManyCertificates(MAX_CERTS))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Generated messages encode, decode to the same value, and re-encode to the same bytes.
    #[test]
    fn generated_messages_round_trip(m in message()) {
        let bytes = m.encode().unwrap();
        let back = Message::decode(&bytes, &Limits::default()).unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.encode().unwrap(), bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Arbitrary bytes never panic the decoder; what decodes re-encodes to a message that
    /// decodes to the same value.
    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(600), first in any::<u8>(), raw_first in any::<bool>()) {
        let _ = Message::decode(&data, &Limits::default());
        // Also behind a valid header, so the payload parsers see the bytes.
        let first = if raw_first { first } else { [pt::SA, pt::KE, pt::IDI, pt::AUTH, pt::NONCE,
            pt::NOTIFY, pt::DELETE, pt::TSI, pt::SK, pt::CERT, pt::CERTREQ][usize::from(first) % 11] };
        let mut msg = header().encode(first, (HEADER_LEN + data.len()) as u32).to_vec();
        msg.extend_from_slice(&data);
        if let Ok(m) = Message::decode(&msg, &Limits::default()) {
            let again = m.encode();
            if let Ok(again) = again {
                prop_assert_eq!(Message::decode(&again, &Limits::default()).unwrap(), m);
            }
        }
        let mut count = 0;
        let _ = decode_chain(first, &data, &Limits::default(), &mut count, false);
    }
}
