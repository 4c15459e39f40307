#![no_main]
//! A channel server fed arbitrary client bytes, or a real handshake whose client-to-server
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
            let (_, server_cfg) = common::configs(mode & 0x80 != 0, &mut rng);
            let now = Instant::from_secs(1);
            let mut server = deputy::channel::Connection::server(server_cfg, now);
            for chunk in rest.chunks(97) {
                let _ = server.feed(now, chunk, &mut rng);
            }
        }
        1 => common::corrupted_handshake(false, true, rest),
        _ => common::corrupted_handshake(true, true, rest),
    }
});
