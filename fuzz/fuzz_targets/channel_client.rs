#![no_main]
//! A channel client fed arbitrary server bytes, or a real handshake whose server-to-client
//! bytes are corrupted.

use deputy::Instant;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let mut rng = common::rng();
            let (client_cfg, _) = common::configs(mode & 0x80 != 0, &mut rng);
            let now = Instant::from_secs(1);
            if let Ok(mut client) = deputy::channel::Connection::client(client_cfg, now, &mut rng) {
                for chunk in rest.chunks(97) {
                    let _ = client.feed(now, chunk, &mut rng);
                }
            }
        }
        1 => common::corrupted_handshake(false, false, rest),
        _ => common::corrupted_handshake(true, false, rest),
    }
});
