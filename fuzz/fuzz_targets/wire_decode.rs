#![no_main]
//! Every decoder of deputy's own framing: messages, the stream deframer, certificates, and
//! the channel's message types.

use deputy::channel::messages::{Alert, ClientHello, Handshake, RecordEnvelope, ServerHello};
use deputy::crypto::cert::Certificate;
use deputy::wire::{Deframer, Limits, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(msg) = Message::decode(data, &limits) {
        let _ = ClientHello::decode(&msg, &limits);
        let _ = ServerHello::decode(&msg, &limits);
        let _ = Handshake::decode(&msg, &limits);
        let _ = Alert::decode(&msg, &limits);
        let _ = RecordEnvelope::decode(&msg, &limits);
        for f in msg.fields.iter() {
            let _ = (msg.fields.addr(f.ty), msg.fields.u16_list(f.ty), msg.fields.str(f.ty));
        }
    }
    let _ = Certificate::decode(data);

    let mut deframer = Deframer::new(Limits { max_message_len: 512, ..limits });
    let mut rest = data;
    while let Ok(n) = deframer.fill(rest) {
        rest = &rest[n..];
        let mut took = false;
        while let Some(m) = deframer.take() {
            assert!(m.len() <= 512);
            took = true;
        }
        if rest.is_empty() || !took {
            break;
        }
    }
});
