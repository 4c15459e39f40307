//! Shared set-up for the channel targets: deterministic keys and a way to run a real
//! handshake while the fuzzer corrupts one direction.

use std::sync::Arc;

use deputy::channel::{ClientConfig, Connection, Psk, ServerConfig};
use deputy::crypto::cert::{CertificateAuthority, TrustStore};
use deputy::{Instant, UnixTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub const ANCHOR: UnixTime = UnixTime(1_800_000_000);

pub fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(0xF022)
}

/// Client and server configurations; `psk` picks the mode.
pub fn configs(psk: bool, rng: &mut ChaCha20Rng) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    if psk {
        let key = Psk::new("fuzz", &[7; 32]).expect("valid psk");
        (
            Arc::new(ClientConfig::with_psk(key.clone(), ANCHOR)),
            Arc::new(ServerConfig::with_psks([key], ANCHOR).expect("one psk")),
        )
    } else {
        let ca = CertificateAuthority::generate("fuzz CA", rng);
        let id = ca
            .issue_identity("server", &[], ANCHOR, 86_400, rng)
            .expect("issue");
        (
            Arc::new(ClientConfig::with_ca(
                TrustStore::with(ca.certificate().clone()),
                "server",
                ANCHOR,
            )),
            Arc::new(ServerConfig::with_certificate(id, ANCHOR)),
        )
    }
}

/// One channel target: the mode byte picks raw bytes fed to a fresh connection (its top bit
/// picking PSK or certificate mode), or a corrupted certificate or PSK handshake; the
/// connection under test is the server's when `target_is_server`, else the client's.
pub fn fuzz_one_side(data: &[u8], target_is_server: bool) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => raw_bytes(mode & 0x80 != 0, target_is_server, rest),
        1 => corrupted_handshake(false, target_is_server, rest),
        _ => corrupted_handshake(true, target_is_server, rest),
    }
}

/// Arbitrary bytes, in 97-byte reads (an odd size, so records straddle reads), to a
/// connection that has sent nothing the peer could answer. Errors are the point: the
/// fuzzer looks for panics, not for bytes a connection accepts.
fn raw_bytes(psk: bool, target_is_server: bool, data: &[u8]) {
    let mut rng = rng();
    let (client_cfg, server_cfg) = configs(psk, &mut rng);
    let now = Instant::from_secs(1);
    let mut conn = if target_is_server {
        Connection::server(server_cfg, now)
    } else {
        match Connection::client(client_cfg, now, &mut rng) {
            Ok(c) => c,
            Err(_) => return,
        }
    };
    for chunk in data.chunks(97) {
        let _ = conn.feed(now, chunk, &mut rng);
    }
}

/// Run a handshake; bytes travelling toward the target side are XORed with `noise`
/// (cycled), so the fuzzer explores corrupted but mostly well-framed input.
pub fn corrupted_handshake(psk: bool, target_is_server: bool, noise: &[u8]) {
    let mut rng = rng();
    let (client_cfg, server_cfg) = configs(psk, &mut rng);
    let now = Instant::from_secs(1);
    let Ok(mut client) = Connection::client(client_cfg, now, &mut rng) else {
        return;
    };
    let mut server = Connection::server(server_cfg, now);
    let mut offset = 0usize;
    for _ in 0..8 {
        let mut to_server = client.take_outgoing();
        let mut to_client = server.take_outgoing();
        let target = if target_is_server { &mut to_server } else { &mut to_client };
        if !noise.is_empty() {
            for b in target.iter_mut() {
                *b ^= noise[offset % noise.len()];
                offset += 1;
            }
        }
        let _ = server.feed(now, &to_server, &mut rng);
        let _ = client.feed(now, &to_client, &mut rng);
        if client.is_established() {
            let _ = client.send(b"data");
        }
        if server.is_established() {
            let _ = server.send(b"data");
        }
    }
    let _ = client.handle_timeout(Instant::from_secs(100));
    let _ = server.handle_timeout(Instant::from_secs(100));
    assert!(!client.is_handshaking() && !server.is_handshaking());
}
