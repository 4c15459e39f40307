#![no_main]
//! The terminal's TLS 1.3 record layer (`deputy::tls::RecordLayer`), receive side: the
//! input is a program of steps — feed bytes (arbitrary ones, or the next bytes of a
//! genuine peer stream XORed with the input), install a receive key (the right next one
//! or a wrong one), end the stream, take events, send — against small bounds.
//!
//! Invariants beyond "no panic": what the layer holds never exceeds `max_held`; a refused
//! `receive` takes nothing; once failed it stays failed; an error is fatal exactly when it
//! names an alert (or is `Truncated`); and while the genuine stream arrives unchanged with
//! the right keys, no error but a bound's refusal happens and the data delivered is, in
//! order, what the peer sent.

use deputy::tls::{
    CipherSuite, RecordConfig, RecordEvent, RecordLayer, TlsError, TrafficKeys,
};
use libfuzzer_sys::fuzz_target;

fn keys(suite: CipherSuite, b: u8) -> TrafficKeys {
    TrafficKeys::new(suite, &vec![b; suite.key_len()], [b; 12], 0).expect("key length")
}

/// The peer's stream: data, a KeyUpdate asking for ours (next key byte 3), data, a
/// KeyUpdate (byte 4), data, close_notify. Returns the stream and the data in it.
fn genuine(suite: CipherSuite) -> (Vec<u8>, Vec<u8>) {
    let cfg = RecordConfig {
        max_fragment: 100,
        ..RecordConfig::default()
    };
    let mut peer = RecordLayer::new(cfg, keys(suite, 2), keys(suite, 1)).expect("peer");
    let mut wire = Vec::new();
    let mut sent = Vec::new();
    for (i, next) in [(0u8, Some(3u8)), (1, Some(4)), (2, None)] {
        let data: Vec<u8> = (0..250u16).map(|j| (j as u8) ^ i).collect();
        peer.seal_application(&data, &mut wire).expect("seal");
        sent.extend(data);
        if let Some(b) = next {
            peer.update_tx(keys(suite, b), b == 3, &mut wire).expect("update");
        }
    }
    peer.close(&mut wire).expect("close");
    (wire, sent)
}

/// The next `n` bytes of the input (fewer at its end).
fn take(n: usize, input: &mut &[u8]) -> Vec<u8> {
    let n = n.min(input.len());
    let (a, b) = input.split_at(n);
    *input = b;
    a.to_vec()
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, mut input)) = data.split_first() else {
        return;
    };
    let suite = CipherSuite::ALL[usize::from(head % 3)];
    let use_genuine = head & 0x80 != 0;
    let cfg = RecordConfig {
        max_held: deputy::tls::record::MAX_RECORD + 300,
        max_key_updates: 2,
        max_handshake_message: 300,
        max_fragment: 64,
        ..RecordConfig::default()
    };
    let mut t = RecordLayer::new(cfg, keys(suite, 1), keys(suite, 2)).expect("terminal");
    let (stream, sent) = genuine(suite);
    let mut at = 0; // how much of the genuine stream was fed
    let mut next_key = 3u8;
    let mut clean = use_genuine; // the genuine stream unchanged and the right keys so far
    let mut got = Vec::new();
    let mut out = Vec::new();

    while let Some((&op, rest)) = input.split_first() {
        input = rest;
        let arg = take(1, &mut input).first().copied().unwrap_or(0);
        let result = match op % 8 {
            0..=2 => {
                // Feed up to `arg` * 4 bytes.
                let n = usize::from(arg) * 4;
                let bytes = if use_genuine {
                    let n = n.min(stream.len() - at);
                    let mask = take(n, &mut input);
                    let mut bytes = stream[at..at + n].to_vec();
                    for (b, m) in bytes.iter_mut().zip(mask.iter().chain(std::iter::repeat(&0))) {
                        *b ^= m;
                    }
                    if bytes != stream[at..at + n] {
                        clean = false;
                    }
                    bytes
                } else {
                    take(n, &mut input)
                };
                let capacity = t.receive_capacity();
                let r = t.receive(&bytes);
                match &r {
                    Err(TlsError::ReceiveBacklogFull { .. }) => {
                        assert_eq!(t.receive_capacity(), capacity, "a refusal takes nothing");
                    }
                    _ if use_genuine => at += bytes.len(),
                    _ => {}
                }
                r
            }
            3 => {
                // The right next key, or (odd arg) a wrong one.
                let b = if arg % 2 == 1 { 0x55 } else { next_key };
                let r = t.install_rx(keys(suite, b));
                match &r {
                    Err(TlsError::NoKeyUpdatePending) => {}
                    Err(TlsError::Failed) => {}
                    _ if b == next_key => next_key += 1,
                    _ => clean = false,
                }
                r
            }
            4 => t.end_of_stream(),
            5 => match arg % 4 {
                0 => t.seal_application(&[arg; 100], &mut out),
                1 => t.update_tx(keys(suite, 0x70 ^ arg), arg & 0x10 != 0, &mut out),
                2 => t.close(&mut out),
                _ => t.seal_alert(deputy::tls::AlertDescription::from_code(arg), &mut out),
            },
            _ => Ok(()),
        };
        while let Some(event) = t.poll_event() {
            if let RecordEvent::Data(d) = event {
                assert!(!d.is_empty() && d.len() <= 100);
                got.extend(d);
            }
        }
        out.clear();

        if let Err(e) = &result {
            assert_eq!(e.is_fatal(), e.alert().is_some() || *e == TlsError::Truncated);
            if e.is_fatal() {
                assert!(t.is_failed());
            }
            if clean && op % 8 <= 4 {
                assert!(
                    matches!(
                        e,
                        TlsError::ReceiveBacklogFull { .. }
                            | TlsError::Failed
                            | TlsError::Truncated
                            | TlsError::DataAfterCloseNotify(_)
                            | TlsError::NoKeyUpdatePending
                    ),
                    "genuine stream refused: {e:?}"
                );
            }
        }
        if t.is_failed() {
            assert_eq!(t.receive(b""), Err(TlsError::Failed));
            assert_eq!(t.receive_capacity(), 0);
        }
        assert!(t.receive_capacity() <= cfg.max_held);
        if clean {
            assert_eq!(got[..], sent[..got.len()], "genuine data delivered in order");
        }
    }
    let _ = t.end_of_stream();
});
