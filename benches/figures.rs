//! The performance issue's figures, each a ratio against a baseline measured in the same
//! process (absolute timings on shared machines are noise; ratios are what to compare across
//! runs). `scripts/bench.sh` runs this and prints one line per figure; docs/performance.md
//! says how to read it.
//!
//! Run: `cargo bench --bench figures` (add `-- --no-callgrind` for wall-clock ratios only,
//! `-- --only PREFIX` for the figures whose name starts with PREFIX).
//!
//! Every workload is one closure run once per iteration. Its measured part goes through
//! [`figures_counted`]: callgrind counts instructions only inside that function
//! (`--toggle-collect`), so set-up and the harness's own moving of bytes are left out, and
//! the wall clock times the same part. A figure is the ratio of two workloads' costs; with
//! valgrind on the path the instruction ratio is the figure recorded and the wall-clock
//! ratio is printed beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant as WallClock};

use deputy::crypto::aead::{AeadAlg, AeadKey};
use deputy::crypto::dh::{Group, KeyPair};
use deputy::ikev2::auth::{AuthKeyDb, Credential};
use deputy::ikev2::{
    Identity, IkeConfig, IkeEvent, IkeProposal, Initiator, InitiatorConfig, Responder,
    ResponderConfig, SecretBytes,
};
use deputy::ipsec::{
    Action, ChildSa, DataPlane, DataPlaneConfig, Direction, Inbound, Mode, Outbound, Policy,
    Protected, SaKeys, Selector, Suite, TrafficSelector,
};
use deputy::rendezvous::messages::Register;
use deputy::rendezvous::{
    DerivedRegistrationKeys, DeviceId, Directory, DirectoryEntry, MemoryDirectory, RendezvousServer,
};
use deputy::{Actor, Input, Instant, Output, Transmit};
use hmac::{Hmac, KeyInit, Mac};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sha2::Sha256;

use deputy::StreamId;
use deputy::channel::{ClientConfig, Connection, Psk, ServerConfig};
use deputy::offload::{
    AccessPolicy, Appliance, ApplianceConfig, ApplianceEvent, ApplianceParams, CryptoProxy,
    Discovery, LinkKey, OffloadEvent, ProxyConfig, RemoteNode, RemoteNodeConfig, ServedAppliance,
    Target,
};
use std::collections::HashMap;
use std::sync::Arc;

mod common;
use common::{ANCHOR, established, psk_configs, udp_packet};

/// Iterations counted under callgrind per workload (fewer for the slow ones).
const CALLGRIND_ITERS: u32 = 400;

// ------------------------------------------------------------------ measuring

thread_local! {
    /// Wall time spent inside `figures_counted` since the last reset.
    static INSIDE: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// The only code callgrind counts, and the only code the wall clock times.
#[inline(never)]
fn figures_counted<R>(f: impl FnOnce() -> R) -> R {
    let t = WallClock::now();
    let r = f();
    let spent = t.elapsed();
    INSIDE.with(|c| c.set(c.get() + spent));
    r
}

/// A workload: set up once, then one iteration per call.
type Workload = Box<dyn FnMut()>;

/// Wall time per iteration of the counted part: the median of several batches.
fn wall(w: &mut Workload) -> Duration {
    let mut batch = 1u32;
    let mut run = |n: u32| {
        INSIDE.with(|c| c.set(Duration::ZERO));
        for _ in 0..n {
            w();
        }
        INSIDE.with(Cell::get)
    };
    // Warm up and size a batch to ~20 ms (of the whole loop, set-up included).
    loop {
        let t = WallClock::now();
        run(batch);
        if t.elapsed() > Duration::from_millis(20) || batch > 1 << 20 {
            break;
        }
        batch *= 2;
    }
    let mut samples: Vec<Duration> = (0..9).map(|_| run(batch) / batch).collect();
    samples.sort();
    samples[samples.len() / 2]
}

// ------------------------------------------------------------------ counting allocator

/// Bytes live on the heap (requested sizes).
static LIVE: AtomicU64 = AtomicU64::new(0);

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter moves.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
            LIVE.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ------------------------------------------------------------------ bare AEAD

/// Seal and open `size` bytes in place with the bare AEAD: the baseline of a record or a
/// packet.
fn bare_aead(alg: AeadAlg, size: usize) -> Workload {
    let key = AeadKey::new(alg, &[7; 32][..alg.key_len()]).unwrap();
    let payload = vec![0xab; size];
    let mut buf = Vec::with_capacity(size + 16);
    Box::new(move || {
        figures_counted(|| {
            buf.clear();
            buf.extend_from_slice(black_box(&payload));
            key.seal_in_place(&[1; 12], b"aad-8byt", &mut buf);
            key.open_in_place(&[1; 12], b"aad-8byt", &mut buf).unwrap();
            black_box(&buf);
        });
    })
}

/// AES-CBC encrypt + HMAC-SHA-256, then HMAC check + decrypt, of `size` bytes (a multiple
/// of 16): the bare work of an AES-CBC/HMAC ESP packet.
fn bare_cbc_hmac(key_len: usize, size: usize) -> Workload {
    use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
    let payload = vec![0xab; size];
    let mut buf = payload.clone();
    let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&[3; 32]).unwrap();
    let key = vec![5u8; key_len];
    Box::new(move || {
        figures_counted(|| {
            buf.copy_from_slice(black_box(&payload));
            let (blocks, _) = aes::cipher::Array::slice_as_chunks_mut(&mut buf[..]);
            if key_len == 16 {
                cbc::Encryptor::<aes::Aes128>::new_from_slices(&key, &[9; 16])
                    .unwrap()
                    .encrypt_blocks(blocks);
            } else {
                cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, &[9; 16])
                    .unwrap()
                    .encrypt_blocks(blocks);
            }
            let mut m = mac.clone();
            m.update(&buf);
            let tag = m.finalize().into_bytes();
            let mut m = mac.clone();
            m.update(&buf);
            m.verify_truncated_left(&tag[..16]).unwrap();
            let (blocks, _) = aes::cipher::Array::slice_as_chunks_mut(&mut buf[..]);
            if key_len == 16 {
                cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, &[9; 16])
                    .unwrap()
                    .decrypt_blocks(blocks);
            } else {
                cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &[9; 16])
                    .unwrap()
                    .decrypt_blocks(blocks);
            }
            black_box(&buf);
        });
    })
}

/// The bare cryptographic work of one ESP packet of `suite` over `size` encrypted bytes.
fn bare_esp(suite: Suite, size: usize) -> Workload {
    match suite {
        Suite::AesGcm128 => bare_aead(AeadAlg::Aes128Gcm, size),
        Suite::AesGcm256 => bare_aead(AeadAlg::Aes256Gcm, size),
        Suite::ChaCha20Poly1305 => bare_aead(AeadAlg::ChaCha20Poly1305, size),
        Suite::AesCbc128HmacSha256 => bare_cbc_hmac(16, size.next_multiple_of(16)),
        Suite::AesCbc256HmacSha256 => bare_cbc_hmac(32, size.next_multiple_of(16)),
    }
}

// ------------------------------------------------------------------ ESP

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);

/// A sender and a receiver with one SA pair of `suite` in `tunnel` or transport mode.
fn esp_planes(suite: Suite, tunnel: bool) -> (DataPlane, DataPlane) {
    let rng = |seed| Box::new(ChaCha20Rng::seed_from_u64(seed));
    let mut tx = DataPlane::new(DataPlaneConfig::default(), rng(1)).unwrap();
    let mut rx = DataPlane::new(DataPlaneConfig::default(), rng(2)).unwrap();
    tx.add_policy(Policy::new(
        Selector::parse("10.0.0.0/8", "10.0.0.0/8").unwrap(),
        Direction::Both,
        Action::Protect,
    ))
    .unwrap();
    let keymat = |fill| {
        let len = suite.encryption_key_len() + suite.integrity_key_len();
        SaKeys::from_keymat(suite, &vec![fill; len]).unwrap()
    };
    let host = |a: Ipv4Addr| vec![TrafficSelector::host(IpAddr::V4(a))];
    let (gw_a, gw_b): (IpAddr, IpAddr) = if tunnel {
        (
            "192.0.2.1".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        )
    } else {
        (LOCAL.into(), REMOTE.into())
    };
    let mode = |local, remote| {
        if tunnel {
            Mode::Tunnel { local, remote }
        } else {
            Mode::Transport
        }
    };
    let a = ChildSa::new(
        0x1000,
        0x2000,
        suite,
        keymat(1),
        keymat(2),
        mode(gw_a, gw_b),
        host(LOCAL),
        host(REMOTE),
    );
    let b = ChildSa::new(
        0x2000,
        0x1000,
        suite,
        keymat(2),
        keymat(1),
        mode(gw_b, gw_a),
        host(REMOTE),
        host(LOCAL),
    );
    tx.install(Instant::ZERO, a).unwrap();
    rx.install(Instant::ZERO, b).unwrap();
    (tx, rx)
}

/// One protect on the sender and one unprotect on the receiver of a `size`-byte packet.
fn esp_pair(suite: Suite, tunnel: bool, size: usize) -> Workload {
    let (mut tx, mut rx) = esp_planes(suite, tunnel);
    let packet = udp_packet(LOCAL, REMOTE, size);
    let now = Instant::from_secs(1);
    Box::new(move || {
        figures_counted(|| {
            let Ok(Outbound::Protected(Protected::Ip(esp))) = tx.protect(now, black_box(&packet))
            else {
                panic!("not protected");
            };
            let Ok(Inbound::Packet { packet: inner, .. }) = rx.unprotect(now, &esp) else {
                panic!("not opened");
            };
            black_box(inner);
        });
    })
}

// ------------------------------------------------------------------ channel

/// One channel record of `size` bytes: the sender's `send` and `take_outgoing`, the
/// receiver's `feed` and `take_received`.
fn channel_record(alg: AeadAlg, size: usize) -> Workload {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (mut client, mut server) = psk_configs(Group::X25519);
    client.common.suites = vec![alg];
    server.common.suites = vec![alg];
    let (mut c, mut s) = established(client, server, &mut rng);
    assert_eq!(c.suite(), Some(alg));
    let payload = vec![0xab; size];
    Box::new(move || {
        figures_counted(|| {
            c.send(black_box(&payload)).unwrap();
            let bytes = c.take_outgoing();
            s.feed(Instant::ZERO, &bytes, &mut rng).unwrap();
            black_box(s.take_received().unwrap());
        });
    })
}

/// The suite a channel settles on when the client states `client` and the server (with
/// the default configuration) offers every suite.
fn chosen_suite(client_order: &[AeadAlg]) -> AeadAlg {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (mut client, server) = psk_configs(Group::X25519);
    client.common.suites = client_order.to_vec();
    let (c, _) = established(client, server, &mut rng);
    c.suite().unwrap()
}

// ------------------------------------------------------------------ DH

/// One key generation and one agreement with a fixed peer share.
fn dh(group: Group) -> Workload {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let peer = KeyPair::generate(group, &mut rng).public().to_vec();
    Box::new(move || {
        figures_counted(|| {
            let kp = KeyPair::generate(group, &mut rng);
            black_box(kp.agree(&peer).unwrap());
        });
    })
}

// ------------------------------------------------------------------ rendezvous

const MASTER: [u8; 32] = [0x42; 32];
const RV_UDP: &str = "130.74.23.6:1300";

fn rv_server(directory: MemoryDirectory) -> RendezvousServer {
    use deputy::crypto::cert::{CertificateAuthority, TrustStore};
    use deputy::rendezvous::{
        RendezvousServerConfig as RvConfig, RendezvousServerParams as RvParams,
    };
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let ca = CertificateAuthority::generate("CA", &mut rng);
    let trust = TrustStore::with(ca.certificate().clone());
    let identity = ca
        .issue_identity("rendezvous.example", &[], ANCHOR, 86_400, &mut rng)
        .unwrap();
    let cfg = RvConfig::new(RvParams {
        udp: RV_UDP.parse().unwrap(),
        issuer_port: 1201,
        device_port: 1300,
        identity: std::sync::Arc::new(identity),
        device_trust: trust,
        keys: Box::new(DerivedRegistrationKeys::new(MASTER)),
        time_anchor: ANCHOR,
    });
    RendezvousServer::new(cfg, directory, Box::new(ChaCha20Rng::seed_from_u64(6))).unwrap()
}

/// A device's source address: one per device, so no source's rate bucket runs dry.
fn device_addr(i: u64) -> SocketAddr {
    let ip = Ipv4Addr::from(0x0b00_0000 + u32::try_from(i % (1 << 24)).unwrap());
    SocketAddr::new(ip.into(), 40_000)
}

fn wall_ms(now: Instant) -> u64 {
    ANCHOR.0 * 1000 + now.as_nanos() / 1_000_000
}

/// Registrations (refreshes, from the same address) against a directory that holds `n`
/// registered devices; each iteration handles one registration datagram and drains its
/// acknowledgement. The messages are encoded outside the counted part.
fn rv_register(n: usize) -> Workload {
    let keys = DerivedRegistrationKeys::new(MASTER);
    let now = Instant::from_secs(100);
    let to: SocketAddr = RV_UDP.parse().unwrap();
    // The first timestamp sits well inside the skew window behind the server's clock;
    // each round through the devices moves it by 1 ms.
    let mut stamp = wall_ms(now) - 50_000;
    // The directory is filled directly (as the server would after one registration from
    // each device), so that a million devices take no million MAC computations to set up.
    let mut directory = MemoryDirectory::new(n);
    for d in 0..n as u64 {
        let entry = DirectoryEntry {
            addr: device_addr(d),
            last_timestamp_ms: stamp,
            expires: now + Duration::from_secs(90),
            blocked_until: None,
        };
        directory.register(DeviceId(d), entry, now).unwrap();
    }
    let mut server = rv_server(directory);
    let encode = move |device: u64, stamp: u64| {
        let key = keys.device_key(DeviceId(device));
        let data = Register {
            device: DeviceId(device),
            timestamp_ms: stamp,
            nonce: [1; 16],
        }
        .encode(key.as_bytes())
        .unwrap();
        (data, device_addr(device))
    };
    // Devices refresh in a pseudo-random order, as they would.
    // (A prime stride visits every device once per round: the sizes are powers of ten.)
    let n64 = n as u64;
    let mut next = 0u64;
    stamp += 1;
    Box::new(move || {
        let device = (next * 7_919) % n64;
        next += 1;
        if next == n64 {
            next = 0;
            stamp += 1;
        }
        let (data, from) = encode(device, stamp);
        figures_counted(|| {
            server
                .handle_input(
                    now,
                    Input::Datagram {
                        from,
                        to,
                        data: &data,
                    },
                )
                .unwrap();
            while let Some(o) = server.poll_output() {
                black_box(o);
            }
        });
    })
}

/// The HMACs a registration needs: the device key from the master, the registration's MAC
/// (`macs` = 1 stops here: the MAC check alone), the acknowledgement's MAC.
fn rv_hmacs(macs: usize) -> Workload {
    // Lengths as the server computes them: label ‖ device ID; context ‖ type ‖ session ‖
    // a registration's fields; the same for the acknowledgement's fields.
    let derive = [0x11u8; 40];
    let register = [0x22u8; 60];
    let ack = [0x33u8; 80];
    Box::new(move || {
        figures_counted(|| {
            let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&MASTER).unwrap();
            m.update(black_box(&derive));
            let key = m.finalize().into_bytes();
            if macs == 1 {
                let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
                m.update(black_box(&register));
                black_box(m.finalize().into_bytes());
                return;
            }
            for body in [&register[..], &ack[..]] {
                let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
                m.update(black_box(body));
                black_box(m.finalize().into_bytes());
            }
        });
    })
}

/// Heap bytes per device of a `MemoryDirectory` holding `n` devices.
fn directory_bytes_per_device(n: usize) -> f64 {
    let before = LIVE.load(Ordering::Relaxed);
    let mut d = MemoryDirectory::new(n);
    let now = Instant::from_secs(1);
    for i in 0..n as u64 {
        let entry = DirectoryEntry {
            addr: device_addr(i),
            last_timestamp_ms: i,
            expires: Instant::from_secs(90 + i % 7),
            blocked_until: None,
        };
        d.register(DeviceId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)), entry, now)
            .unwrap();
    }
    let after = LIVE.load(Ordering::Relaxed);
    black_box(&d);
    (after - before) as f64 / n as f64
}

// ------------------------------------------------------------------ IKEv2

const IKE_PSK: &[u8] = b"bench psk between initiator and responder";

/// deputy's Responder (with its data plane) for IKE SA + Child SA set-ups with `group`,
/// each deleted again by its initiator; only the responder's calls and its data plane's
/// install and remove are counted. One iteration is one IKE SA set up and deleted.
fn ike_responder(group: Group) -> Workload {
    let mut db = AuthKeyDb::new();
    db.set_any_peer_psk(Some(IKE_PSK));
    let mut ike = IkeConfig::with_credential(
        Identity::Fqdn("responder.example".into()),
        Credential::Psk(SecretBytes::from_slice(IKE_PSK)),
        db,
        ANCHOR,
    );
    ike.ike_proposals = vec![IkeProposal::aes128_sha256(&[group])];
    ike.esp_proposals = vec![Suite::AesCbc128HmacSha256];
    let rng = |seed| Box::new(ChaCha20Rng::seed_from_u64(seed));
    let mut responder = Responder::new(ResponderConfig::new(ike), rng(2), Instant::ZERO).unwrap();
    let mut plane = DataPlane::new(DataPlaneConfig::default(), rng(3)).unwrap();
    let local: SocketAddr = "192.0.2.20:500".parse().unwrap();
    let remote: SocketAddr = "192.0.2.10:500".parse().unwrap();
    let mut seed = 100;
    Box::new(move || {
        seed += 1;
        let mut peer_cfg = IkeConfig::new(Identity::Fqdn("initiator.example".into()), IKE_PSK);
        peer_cfg.ike_proposals = vec![IkeProposal::aes128_sha256(&[group])];
        peer_cfg.esp_proposals = vec![Suite::AesCbc128HmacSha256];
        let mut peer = Initiator::new(
            InitiatorConfig {
                ike: peer_cfg,
                local: remote,
                remote: local,
            },
            rng(seed),
        )
        .unwrap();
        let now = Instant::ZERO;
        peer.start(now).unwrap();
        let mut deleted = false;
        let mut established = false;
        loop {
            let mut moved = false;
            let mut to_responder: Vec<Transmit> = Vec::new();
            while let Some(o) = peer.poll_output() {
                moved = true;
                match o {
                    Output::Transmit(t) => to_responder.push(t),
                    Output::Event(IkeEvent::ChildSaEstablished { .. }) => established = true,
                    Output::Event(IkeEvent::IkeSaDeleted { .. }) => deleted = true,
                    Output::Event(IkeEvent::Failed { reason, .. }) => {
                        panic!("initiator failed: {reason:?}")
                    }
                    _ => {}
                }
            }
            for t in to_responder {
                let input = Input::Datagram {
                    from: t.from,
                    to: t.to,
                    data: &t.data,
                };
                figures_counted(|| responder.handle_input(now, input)).unwrap();
            }
            loop {
                let Some(o) = figures_counted(|| responder.poll_output()) else {
                    break;
                };
                moved = true;
                match o {
                    Output::Transmit(t) => peer
                        .handle_input(
                            now,
                            Input::Datagram {
                                from: t.from,
                                to: t.to,
                                data: &t.data,
                            },
                        )
                        .unwrap(),
                    Output::Event(IkeEvent::ChildSaEstablished { child, .. }) => {
                        figures_counted(|| plane.install(now, *child)).unwrap();
                    }
                    Output::Event(IkeEvent::ChildSaDeleted { spi_in, .. }) => {
                        figures_counted(|| plane.remove(spi_in));
                    }
                    Output::Event(IkeEvent::Failed { reason, .. }) => {
                        panic!("responder failed: {reason:?}")
                    }
                    _ => {}
                }
            }
            figures_counted(|| responder.poll_timeout());
            if !moved {
                if established && !deleted && peer.is_established() {
                    peer.delete_ike(now).unwrap();
                    continue;
                }
                break;
            }
        }
        assert!(established && deleted, "IKE SA not set up and deleted");
        assert_eq!(responder.ike_sa_count(), 0, "the responder kept an IKE SA");
        assert_eq!(plane.sa_count(), 0, "the responder's data plane kept an SA");
    })
}

// ------------------------------------------------------------------ seed 000 offload

const OFFLOAD_APPLIANCE: &str = "microwave";
const OFFLOAD_LINK_KEY: &[u8] = b"provisioned link key for the home";

fn offload_addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A datagram as its receiver takes it.
fn offload_datagram(t: &Transmit) -> Input<'_> {
    Input::Datagram {
        from: t.from,
        to: t.to,
        data: &t.data,
    }
}

/// Seed 000 wired without a simulator: one appliance, one crypto proxy and `n` remote
/// nodes, each with a session to the appliance through the proxy (flow A over a PSK
/// channel; the closed-network link keyed or not). Outputs are handed between the actors
/// as a driver would; datagrams for the appliance are held in `to_appliance` so that a
/// workload can count the appliance's handling of them alone.
struct OffloadHome {
    appliance: Appliance,
    proxy: CryptoProxy,
    remotes: Vec<RemoteNode>,
    /// The proxy's stream id of each remote node's stream to it, and back.
    at_proxy: HashMap<(usize, StreamId), StreamId>,
    at_remote: HashMap<StreamId, (usize, StreamId)>,
    to_appliance: Vec<Transmit>,
    delivered: usize,
}

impl OffloadHome {
    fn new(n: usize, keyed: bool) -> OffloadHome {
        let proxy_udp = offload_addr("192.168.0.2:5684");
        let appliance_addr = offload_addr("192.168.0.10:5683");
        let psk = Psk::new("remote", &[0x5a; 32]).unwrap();
        let key = keyed.then(|| LinkKey::new(OFFLOAD_LINK_KEY).unwrap());
        let mut pc = ProxyConfig::new(
            ServerConfig::with_psks([psk.clone()], ANCHOR).unwrap(),
            proxy_udp,
        );
        pc.max_sessions = n;
        pc.max_streams = n;
        let mut served = ServedAppliance::new(appliance_addr, AccessPolicy::AnyAuthenticated);
        served.link_key = key.clone();
        pc.serve(OFFLOAD_APPLIANCE, served).unwrap();
        let rng = |seed| Box::new(ChaCha20Rng::seed_from_u64(seed));
        let proxy = CryptoProxy::new(pc, rng(7));
        let mut ac = ApplianceConfig::new(ApplianceParams {
            name: OFFLOAD_APPLIANCE.into(),
            local: appliance_addr,
            proxy: proxy_udp,
            proxy_public: offload_addr("192.168.0.2:8443"),
        })
        .unwrap();
        ac.link_key = key;
        ac.max_sessions = n;
        let appliance = Appliance::new(ac, rng(8));
        let remotes = (0..n)
            .map(|i| {
                let ip = Ipv4Addr::from(0x0b00_0000 + u32::try_from(i).unwrap());
                let local = SocketAddr::new(ip.into(), 7000);
                let mut cfg =
                    RemoteNodeConfig::new(ClientConfig::with_psk(psk.clone(), ANCHOR), local);
                cfg.psk_scope = vec![OFFLOAD_APPLIANCE.into()];
                cfg.discovery = Discovery::WhenUnknown;
                let mut remote = RemoteNode::new(cfg, rng(100 + i as u64));
                remote
                    .learn_proxy(
                        Instant::ZERO,
                        OFFLOAD_APPLIANCE,
                        offload_addr("192.168.0.2:8443"),
                    )
                    .unwrap();
                remote
            })
            .collect();
        let mut home = OffloadHome {
            appliance,
            proxy,
            remotes,
            at_proxy: HashMap::new(),
            at_remote: HashMap::new(),
            to_appliance: Vec::new(),
            delivered: 0,
        };
        // Each remote node sets its session up with a first message.
        let target = home.target();
        for i in 0..n {
            home.remotes[i]
                .send(Instant::ZERO, &target, b"hello")
                .unwrap();
            home.settle();
        }
        assert_eq!(home.delivered, n, "every session up");
        assert_eq!(home.proxy.session_count(), n);
        home
    }

    fn target(&self) -> Target {
        Target::new(OFFLOAD_APPLIANCE, offload_addr("192.168.0.10:5683"))
    }

    /// Hand every output on until nothing moves, datagrams for the appliance included.
    fn settle(&mut self) {
        loop {
            self.pump();
            if self.to_appliance.is_empty() {
                return;
            }
            for t in std::mem::take(&mut self.to_appliance) {
                self.appliance_takes(&t);
            }
            self.appliance_outputs();
        }
    }

    /// The appliance handles one datagram (its outputs stay in its outbox).
    fn appliance_takes(&mut self, t: &Transmit) {
        let input = offload_datagram(t);
        self.appliance.handle_input(Instant::ZERO, input).unwrap();
    }

    /// Drain the appliance's outputs: datagrams go to the proxy.
    fn appliance_outputs(&mut self) {
        while let Some(o) = self.appliance.poll_output() {
            self.route_appliance_output(o);
        }
    }

    fn route_appliance_output(&mut self, o: Output<OffloadEvent>) {
        match o {
            Output::Transmit(t) => self.proxy_takes(&t),
            Output::Event(OffloadEvent::Appliance(ApplianceEvent::Delivered { .. })) => {
                self.delivered += 1;
            }
            Output::Event(_) => {}
            other => panic!("appliance: {other:?}"),
        }
    }

    fn proxy_takes(&mut self, t: &Transmit) {
        let input = offload_datagram(t);
        self.proxy.handle_input(Instant::ZERO, input).unwrap();
    }

    /// Hand the proxy's and the remote nodes' outputs on until none is left; datagrams
    /// for the appliance are held in `to_appliance`.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(o) = self.proxy.poll_output() {
                moved = true;
                self.route_proxy_output(o);
            }
            for i in 0..self.remotes.len() {
                while let Some(o) = self.remotes[i].poll_output() {
                    moved = true;
                    self.route_remote_output(i, o);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn route_proxy_output(&mut self, o: Output<OffloadEvent>) {
        match o {
            Output::Transmit(t) => self.to_appliance.push(t),
            Output::StreamSend { id, data } => {
                let (i, rid) = self.at_remote[&id];
                let input = Input::StreamData {
                    id: rid,
                    data: &data,
                };
                self.remotes[i].handle_input(Instant::ZERO, input).unwrap();
            }
            Output::Event(_) => {}
            other => panic!("proxy: {other:?}"),
        }
    }

    fn route_remote_output(&mut self, i: usize, o: Output<OffloadEvent>) {
        match o {
            Output::Connect { id, local, remote } => {
                let pid = StreamId::inbound(self.at_proxy.len() as u64 + 1);
                self.at_proxy.insert((i, id), pid);
                self.at_remote.insert(pid, (i, id));
                let local = SocketAddr::new(local.ip(), 40_000);
                let accepted = Input::StreamAccepted {
                    id: pid,
                    local: remote,
                    remote: local,
                };
                self.proxy.handle_input(Instant::ZERO, accepted).unwrap();
                let connected = Input::StreamConnected { id, local };
                self.remotes[i]
                    .handle_input(Instant::ZERO, connected)
                    .unwrap();
            }
            Output::StreamSend { id, data } => {
                let pid = self.at_proxy[&(i, id)];
                let input = Input::StreamData {
                    id: pid,
                    data: &data,
                };
                self.proxy.handle_input(Instant::ZERO, input).unwrap();
            }
            Output::Event(_) => {}
            other => panic!("remote node {i}: {other:?}"),
        }
    }
}

/// The counted part of an offload workload: `feed` hands `actor` its inputs, then its
/// outputs are drained into `out` and its `poll_timeout` asked, as a driver does after
/// every input.
fn offload_counted<A: Actor<Event = OffloadEvent>>(
    actor: &mut A,
    out: &mut Vec<Output<OffloadEvent>>,
    feed: impl FnOnce(&mut A),
) {
    figures_counted(|| {
        feed(actor);
        while let Some(o) = actor.poll_output() {
            out.push(o);
        }
        black_box(actor.poll_timeout());
    });
}

/// The appliance's cost of one S26 of `size` bytes on a keyed (or unkeyed) link: its
/// `handle_input` of the proxy's datagram, the drain of its outputs (the delivery and the
/// link's acknowledgement) and its `poll_timeout`, as a driver calls them. The remote
/// node's send, the proxy's work and the acknowledgement's way back are outside the count.
fn offload_s26(size: usize, keyed: bool) -> Workload {
    let mut home = OffloadHome::new(1, keyed);
    let target = home.target();
    let payload = vec![0xab; size];
    let mut out = Vec::with_capacity(8);
    Box::new(move || {
        home.remotes[0]
            .send(Instant::ZERO, &target, black_box(&payload))
            .unwrap();
        home.pump();
        let before = home.delivered;
        let datagrams = std::mem::take(&mut home.to_appliance);
        assert_eq!(datagrams.len(), 1, "one S26");
        offload_counted(&mut home.appliance, &mut out, |a| {
            for t in &datagrams {
                a.handle_input(Instant::ZERO, offload_datagram(t)).unwrap();
            }
        });
        for o in out.drain(..) {
            home.route_appliance_output(o);
        }
        assert_eq!(home.delivered, before + 1, "delivered");
        home.settle();
    })
}

/// What the appliance would spend without a proxy: the server end of a channel (PSK,
/// X25519: the cheapest handshake the channel offers) through its handshake, then
/// receiving one `size`-byte record. The client end is outside the count.
fn offload_channel_itself(size: usize) -> Workload {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let (client, server) = psk_configs(Group::X25519);
    let (client, server) = (Arc::new(client), Arc::new(server));
    let payload = vec![0xab; size];
    Box::new(move || {
        let now = Instant::ZERO;
        let mut c = Connection::client(client.clone(), now, &mut rng).unwrap();
        let mut s = figures_counted(|| Connection::server(server.clone(), now));
        while !(c.is_established() && s.is_established()) {
            let to_s = c.take_outgoing();
            let to_c = figures_counted(|| {
                s.feed(now, &to_s, &mut rng).unwrap();
                s.take_outgoing()
            });
            c.feed(now, &to_c, &mut rng).unwrap();
        }
        c.send(black_box(&payload)).unwrap();
        let record = c.take_outgoing();
        figures_counted(|| {
            s.feed(now, &record, &mut rng).unwrap();
            black_box(s.take_received().unwrap());
        });
    })
}

/// The receiving end of one channel record of `size` bytes (`feed` + `take_received`) on
/// the suite a default channel settles on; the sender's work is outside the count.
fn offload_channel_record(size: usize) -> Workload {
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let (client, server) = psk_configs(Group::X25519);
    let (mut c, mut s) = established(client, server, &mut rng);
    let payload = vec![0xab; size];
    Box::new(move || {
        c.send(black_box(&payload)).unwrap();
        let record = c.take_outgoing();
        figures_counted(|| {
            s.feed(Instant::ZERO, &record, &mut rng).unwrap();
            black_box(s.take_received().unwrap());
        });
    })
}

/// The proxy's cost per 64-byte message with `n` sessions up (keyed link): the remote
/// nodes send in turn; counted are the proxy's `handle_input` of the record (S25), the
/// drain of its outputs (S26 to the appliance), its `handle_input` of the appliance's
/// acknowledgement and the drain after it, and `poll_timeout` after each input.
fn offload_sessions(n: usize) -> Workload {
    let mut home = OffloadHome::new(n, true);
    let target = home.target();
    let payload = vec![0xab; 64];
    let mut next = 0;
    let mut held = Vec::with_capacity(8);
    Box::new(move || {
        let i = next;
        next = (next + 7_919) % n;
        home.remotes[i]
            .send(Instant::ZERO, &target, black_box(&payload))
            .unwrap();
        let mut records = Vec::new();
        while let Some(o) = home.remotes[i].poll_output() {
            match o {
                Output::StreamSend { id, data } => records.push((home.at_proxy[&(i, id)], data)),
                other => home.route_remote_output(i, other),
            }
        }
        offload_counted(&mut home.proxy, &mut held, |p| {
            for (id, data) in &records {
                let input = Input::StreamData { id: *id, data };
                p.handle_input(Instant::ZERO, input).unwrap();
            }
        });
        for o in held.drain(..) {
            home.route_proxy_output(o);
        }
        let datagrams = std::mem::take(&mut home.to_appliance);
        assert_eq!(datagrams.len(), 1, "one S26");
        for t in &datagrams {
            home.appliance_takes(t);
        }
        let mut acks = Vec::new();
        while let Some(o) = home.appliance.poll_output() {
            match o {
                Output::Transmit(t) => acks.push(t),
                other => home.route_appliance_output(other),
            }
        }
        offload_counted(&mut home.proxy, &mut held, |p| {
            for t in &acks {
                p.handle_input(Instant::ZERO, offload_datagram(t)).unwrap();
            }
        });
        for o in held.drain(..) {
            home.route_proxy_output(o);
        }
        home.settle();
    })
}

/// Rounds of an offload figure's wall-clock measurement, and iterations of each side per
/// round.
const OFFLOAD_WALL_ROUNDS: usize = 5;
const OFFLOAD_WALL_ITERS: usize = 400;

/// The median wall time of one iteration's counted part of `a` and of `b` (seconds), each
/// iteration timed on its own, in interleaved rounds (a's iterations, b's, a's, ...).
///
/// Not the batches of [`wall`]: the two sides of an offload figure differ a hundredfold in
/// length (a handshake against one message), and on a loaded machine a batch of the longer
/// one comes out inflated in whole steps of tens of microseconds far more often than one of
/// the shorter; single iterations are steady to a few per cent from the 10th to the 90th
/// percentile.
fn offload_walls(a: &str, b: &str) -> (f64, f64) {
    let (mut wa, mut wb) = (workload(a), workload(b));
    let time = |w: &mut Workload| {
        INSIDE.with(|c| c.set(Duration::ZERO));
        w();
        INSIDE.with(Cell::get).as_secs_f64()
    };
    time(&mut wa);
    time(&mut wb);
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..OFFLOAD_WALL_ROUNDS {
        ta.extend((0..OFFLOAD_WALL_ITERS).map(|_| time(&mut wa)));
        tb.extend((0..OFFLOAD_WALL_ITERS).map(|_| time(&mut wb)));
    }
    let median = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    (median(ta), median(tb))
}

/// An offload figure by the wall clock ([`offload_walls`]), with the instruction counts
/// beside it: the subject is mostly HMAC-SHA-256, which valgrind runs without the CPU's
/// SHA instructions, so its instruction count overstates it several times. With `factor`
/// the figure is the baseline's cost over the subject's (an offload factor), else the
/// subject's over the baseline's.
fn offload_by_wall(
    costs: &mut Costs,
    name: &str,
    target: &str,
    (subject, baseline): (&str, &str),
    factor: bool,
) {
    let s = costs.instructions(subject);
    let b = costs.instructions(baseline);
    let (ws, wb) = offload_walls(subject, baseline);
    let (value, walls, instructions) = match (s, b) {
        (Some(si), Some(bi)) if factor => (wb / ws, (wb, ws), Some((bi, si, bi / si))),
        (Some(si), Some(bi)) => (ws / wb, (ws, wb), Some((si, bi, si / bi))),
        _ if factor => (wb / ws, (wb, ws), None),
        _ => (ws / wb, (ws, wb), None),
    };
    let walls = format!(
        "wall, median of {} single iterations each, interleaved ({:.2?} vs {:.2?})",
        OFFLOAD_WALL_ROUNDS * OFFLOAD_WALL_ITERS,
        Duration::from_secs_f64(walls.0),
        Duration::from_secs_f64(walls.1)
    );
    let detail = match instructions {
        Some((x, y, r)) => format!("{walls}; instructions {x:.0} vs {y:.0} = {r:.2}"),
        None => walls,
    };
    let value = if factor {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    line(name, &value, target, &detail);
}

/// The seed 000 figures: the offload factor, a keyed S26 against a channel record, and the
/// proxy's cost per message as its sessions grow.
fn offload_figures(costs: &mut Costs, wanted: &dyn Fn(&str) -> bool) {
    for (size, target) in [(64, "target >= 100"), (1200, "target >= 50")] {
        let shown = if size == 64 { "64 B" } else { "1,200 B" };
        let name = format!("seed 000 offload factor, keyed, {shown}");
        if wanted(&name) {
            let itself = format!("offload-itself/{size}");
            let keyed = format!("offload-s26/keyed/{size}");
            offload_by_wall(costs, &name, target, (&keyed, &itself), true);
            let unkeyed = format!("offload-s26/unkeyed/{size}");
            let name = format!("seed 000 offload factor, unkeyed, {shown}");
            offload_by_wall(costs, &name, "for reference", (&unkeyed, &itself), true);
        }
    }
    for (size, shown) in [(64, "64 B"), (1200, "1,200 B")] {
        let name = format!("seed 000 keyed S26 vs channel record, {shown}");
        if wanted(&name) {
            let keyed = format!("offload-s26/keyed/{size}");
            let record = format!("offload-record/{size}");
            offload_by_wall(costs, &name, "target <= 1.0", (&keyed, &record), false);
        }
    }
    let name = "offload cost per message as proxy sessions grow, 1,000 vs 1";
    if wanted(name) {
        cost_ratio(
            costs,
            name,
            "target <= 1.10",
            "offload-sessions/1000",
            "offload-sessions/1",
            false,
        );
        cost_ratio(
            costs,
            "offload cost per message as proxy sessions grow, 100 vs 1",
            "curve",
            "offload-sessions/100",
            "offload-sessions/1",
            false,
        );
    }
}

// ------------------------------------------------------------------ the figures

/// A workload by name (the callgrind child looks them up the same way).
fn workload(name: &str) -> Workload {
    let parts: Vec<&str> = name.split('/').collect();
    let size = |s: &str| s.parse::<usize>().unwrap();
    let suite = |s: &str| Suite::ALL.into_iter().find(|x| x.to_string() == s).unwrap();
    let alg = |s: &str| {
        AeadAlg::ALL
            .into_iter()
            .find(|x| x.to_string() == s)
            .unwrap()
    };
    match parts.as_slice() {
        ["bare-esp", s, n] => bare_esp(suite(s), size(n)),
        ["bare-aead", a, n] => bare_aead(alg(a), size(n)),
        ["esp-tunnel", s, n] => esp_pair(suite(s), true, size(n)),
        ["esp-transport", s, n] => esp_pair(suite(s), false, size(n)),
        ["channel", a, n] => channel_record(alg(a), size(n)),
        ["dh", "x25519"] => dh(Group::X25519),
        ["dh", "modp2048"] => dh(Group::Modp2048),
        ["rv-register", n] => rv_register(size(n)),
        ["rv-hmac", n] => rv_hmacs(size(n)),
        ["ike-responder", "x25519"] => ike_responder(Group::X25519),
        ["ike-responder", "modp2048"] => ike_responder(Group::Modp2048),
        ["offload-s26", k, n] => offload_s26(size(n), *k == "keyed"),
        ["offload-itself", n] => offload_channel_itself(size(n)),
        ["offload-record", n] => offload_channel_record(size(n)),
        ["offload-sessions", n] => offload_sessions(size(n)),
        _ => panic!("no workload {name}"),
    }
}

/// Iterations under callgrind.
fn callgrind_iters(name: &str) -> u32 {
    if name.starts_with("ike-") || name.starts_with("dh/") {
        20
    } else {
        CALLGRIND_ITERS
    }
}

/// The callgrind child: set up, one iteration uncounted (first-use costs), then count.
fn callgrind_child(name: &str, iters: u32) {
    let mut w = workload(name);
    w();
    for _ in 0..iters {
        w();
    }
}

/// Cost of a workload: instructions per iteration (if callgrind runs) and wall time.
struct Cost {
    instructions: Option<f64>,
    wall: Duration,
}

struct Costs {
    callgrind: bool,
    cache: std::collections::HashMap<String, (Option<f64>, Option<Duration>)>,
}

impl Costs {
    fn instructions(&mut self, name: &str) -> Option<f64> {
        if !self.callgrind {
            return None;
        }
        if let Some((Some(ir), _)) = self.cache.get(name) {
            return Some(*ir);
        }
        let iters = callgrind_iters(name);
        // The uncounted first iteration is outside `figures_counted`'s calls only in so far
        // as callgrind counts every call: run 1 and 1 + iters and take the difference.
        let run = |n: u32| {
            common::callgrind_instructions(
                "*figures_counted*",
                &["--callgrind-child".into(), name.into(), n.to_string()],
            )
        };
        let ir = match (run(0), run(iters)) {
            (Some(a), Some(b)) => Some((b - a) as f64 / f64::from(iters)),
            _ => None,
        };
        self.cache.entry(name.into()).or_default().0 = ir;
        ir
    }

    fn wall(&mut self, name: &str) -> Duration {
        if let Some((_, Some(w))) = self.cache.get(name) {
            return *w;
        }
        let mut w = workload(name);
        let t = wall(&mut w);
        self.cache.entry(name.into()).or_default().1 = Some(t);
        t
    }

    fn cost(&mut self, name: &str) -> Cost {
        Cost {
            instructions: self.instructions(name),
            wall: self.wall(name),
        }
    }

    /// Wall-clock ratio `a / b`, measured interleaved (a, b, a, b, ...) so that the load
    /// of a shared machine falls on both alike; the median of five.
    fn wall_ratio(&mut self, a: &str, b: &str) -> f64 {
        let (mut wa, mut wb) = (workload(a), workload(b));
        let mut r: Vec<f64> = (0..5)
            .map(|_| wall(&mut wa).as_secs_f64() / wall(&mut wb).as_secs_f64())
            .collect();
        r.sort_by(f64::total_cmp);
        r[2]
    }
}

/// Print one figure: `name: value (target)`, with the measured detail after it.
fn line(name: &str, value: &str, target: &str, detail: &str) {
    println!("{name}: {value} ({target})    [{detail}]");
}

/// A throughput ratio: the baseline's cost over the subject's (1.0 = as fast as bare).
fn throughput(costs: &mut Costs, name: &str, target: &str, subject: &str, baseline: &str) {
    let s = costs.cost(subject);
    let b = costs.cost(baseline);
    let wall_ratio = 1.0 / costs.wall_ratio(subject, baseline);
    match (s.instructions, b.instructions) {
        (Some(si), Some(bi)) => line(
            name,
            &format!("{:.2}", bi / si),
            target,
            &format!(
                "instructions {si:.0} vs bare {bi:.0} (+{:.0}); wall {wall_ratio:.2} ({:.2?} vs {:.2?})",
                si - bi,
                s.wall,
                b.wall
            ),
        ),
        _ => line(
            name,
            &format!("{wall_ratio:.2}"),
            target,
            &format!("wall only: {:.2?} vs bare {:.2?}", s.wall, b.wall),
        ),
    }
}

/// A cost ratio: the subject's cost over the baseline's.
///
/// With `by_wall` the interleaved wall-clock ratio is the figure even when callgrind ran:
/// for work that hashes (valgrind runs SHA-256 without the CPU's SHA instructions, so the
/// HMACs count several times their real share) and for work whose cost is memory latency
/// (a large table: instruction counts do not see cache misses).
fn cost_ratio(
    costs: &mut Costs,
    name: &str,
    target: &str,
    subject: &str,
    baseline: &str,
    by_wall: bool,
) {
    let s = costs.cost(subject);
    let b = costs.cost(baseline);
    let wall_ratio = costs.wall_ratio(subject, baseline);
    match (s.instructions, b.instructions) {
        (Some(si), Some(bi)) if by_wall => line(
            name,
            &format!("{wall_ratio:.2}"),
            target,
            &format!(
                "wall, interleaved ({:.2?} vs {:.2?}); instructions {si:.0} vs {bi:.0} = {:.2}",
                s.wall,
                b.wall,
                si / bi
            ),
        ),
        (Some(si), Some(bi)) => {
            line(
                name,
                &format!("{:.2}", si / bi),
                target,
                &format!(
                    "instructions {si:.0} vs {bi:.0}; wall {wall_ratio:.2} ({:.2?} vs {:.2?})",
                    s.wall, b.wall
                ),
            );
        }
        _ => line(
            name,
            &format!("{wall_ratio:.2}"),
            target,
            &format!("wall only: {:.2?} vs {:.2?}", s.wall, b.wall),
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--callgrind-child") {
        callgrind_child(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--ike-responder-seconds") {
        // For scripts/bench-strongswan.sh: the seconds deputy's Responder spends on N IKE
        // SA + Child SA set-ups and deletions (after one uncounted), the median of three.
        let n: u32 = args[i + 2].parse().unwrap();
        let mut w = workload(&format!("ike-responder/{}", args[i + 1]));
        w();
        let mut runs: Vec<Duration> = (0..3)
            .map(|_| {
                INSIDE.with(|c| c.set(Duration::ZERO));
                for _ in 0..n {
                    w();
                }
                INSIDE.with(Cell::get)
            })
            .collect();
        runs.sort();
        println!("{:.6}", runs[1].as_secs_f64());
        return;
    }
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args[i + 1].clone());
    let wanted = |name: &str| only.as_deref().is_none_or(|p| name.starts_with(p));
    let callgrind = !args.iter().any(|a| a == "--no-callgrind") && common::has_valgrind();
    let mut costs = Costs {
        callgrind,
        cache: Default::default(),
    };
    println!(
        "figures ({}; ratios against a baseline in the same process)",
        if callgrind {
            "instruction ratios from callgrind, wall-clock ratios beside them"
        } else {
            "wall-clock ratios only: valgrind not found or --no-callgrind"
        }
    );

    // ESP, 1,400 B, tunnel, every suite; the bare work is over what ESP encrypts (the
    // inner packet plus its 2-byte trailer).
    for suite in Suite::ALL {
        let name = format!("esp tunnel 1400 B {suite}");
        if wanted(&name) {
            throughput(
                &mut costs,
                &name,
                "target >= 0.95",
                &format!("esp-tunnel/{suite}/1400"),
                &format!("bare-esp/{suite}/1402"),
            );
        }
    }
    for suite in [Suite::AesGcm128, Suite::ChaCha20Poly1305] {
        let name = format!("esp transport 1400 B {suite}");
        if wanted(&name) {
            throughput(
                &mut costs,
                &name,
                "target >= 0.95",
                &format!("esp-transport/{suite}/1400"),
                &format!("bare-esp/{suite}/1382"),
            );
        }
    }
    for suite in [Suite::AesGcm128, Suite::AesGcm256] {
        let name = format!("esp tunnel 64 B {suite}");
        if wanted(&name) {
            throughput(
                &mut costs,
                &name,
                "target >= 0.75",
                &format!("esp-tunnel/{suite}/64"),
                &format!("bare-esp/{suite}/66"),
            );
        }
    }

    // Channel records: the bare work is the AEAD over the payload plus its type byte.
    for alg in AeadAlg::ALL {
        let name = format!("channel record 1400 B {alg}");
        if wanted(&name) {
            throughput(
                &mut costs,
                &name,
                "target >= 0.95",
                &format!("channel/{alg}/1400"),
                &format!("bare-aead/{alg}/1401"),
            );
        }
    }
    let name = "channel record 64 B aes128-gcm";
    if wanted(name) {
        throughput(
            &mut costs,
            name,
            "target >= 0.75",
            "channel/aes128-gcm/64",
            "bare-aead/aes128-gcm/65",
        );
    }

    // The rendezvous directory: heap per registered device.
    let name = "rendezvous bytes per device";
    if wanted(name) {
        let curve: Vec<(usize, f64)> = [1_000, 100_000, 1_000_000]
            .into_iter()
            .map(|n| (n, directory_bytes_per_device(n)))
            .collect();
        let detail = curve
            .iter()
            .map(|(n, b)| format!("{n}: {b:.1} B"))
            .collect::<Vec<_>>()
            .join(", ");
        line(
            name,
            &format!("{:.1} B", curve.last().unwrap().1),
            "target <= 48 B",
            &format!("heap per device at {detail}"),
        );
    }

    // Rendezvous registrations: the rate, its cost against the HMACs it needs, and the
    // cost as the directory grows.
    let name = "rendezvous registrations per second per core";
    if wanted(name) {
        let w = costs.wall("rv-register/100000");
        line(
            name,
            &format!("{:.0}", 1.0 / w.as_secs_f64()),
            "target >= 1000000",
            &format!(
                "{w:.2?} per registration with 100,000 devices registered (wall clock, this machine)"
            ),
        );
    }
    let name = "rendezvous registration vs its three HMACs";
    if wanted(name) {
        cost_ratio(
            &mut costs,
            name,
            "target <= 1.5",
            "rv-register/100000",
            "rv-hmac/3",
            true,
        );
        cost_ratio(
            &mut costs,
            "rendezvous registration vs the MAC check alone",
            "for reference",
            "rv-register/100000",
            "rv-hmac/1",
            true,
        );
    }
    let name = "rendezvous registration cost, 1,000,000 vs 1,000 devices";
    if wanted(name) {
        cost_ratio(
            &mut costs,
            name,
            "target <= 1.10",
            "rv-register/1000000",
            "rv-register/1000",
            true,
        );
        for n in [10_000, 100_000] {
            cost_ratio(
                &mut costs,
                &format!("rendezvous registration cost, {n} vs 1,000 devices"),
                "curve",
                &format!("rv-register/{n}"),
                "rv-register/1000",
                true,
            );
        }
    }

    // DH.
    let name = "modp2048 DH vs x25519";
    if wanted(name) {
        cost_ratio(
            &mut costs,
            name,
            "target: constant-time, <= 0.5x of 19x",
            "dh/modp2048",
            "dh/x25519",
            false,
        );
    }

    // IKEv2 responder cost (the charon comparison is scripts/bench-strongswan.sh).
    for group in ["x25519", "modp2048"] {
        let name = format!("ike responder per IKE SA + Child SA {group}");
        if wanted(&name) {
            let c = costs.cost(&format!("ike-responder/{group}"));
            line(
                &name,
                &format!("{:.2?}", c.wall),
                "vs charon: scripts/bench-strongswan.sh",
                &match c.instructions {
                    Some(i) => format!("{i:.0} instructions, set up and deleted"),
                    None => "wall only".into(),
                },
            );
        }
    }

    // Channel suite choice.
    let name = "channel suite choice";
    if wanted(name) {
        let aes_first = chosen_suite(&[
            AeadAlg::Aes128Gcm,
            AeadAlg::ChaCha20Poly1305,
            AeadAlg::Aes256Gcm,
        ]);
        let chacha_first = chosen_suite(&[AeadAlg::ChaCha20Poly1305, AeadAlg::Aes128Gcm]);
        let who = if aes_first == AeadAlg::Aes128Gcm && chacha_first == AeadAlg::ChaCha20Poly1305 {
            "client's preference"
        } else {
            "server's order"
        };
        line(
            name,
            who,
            "target: the client's (weak end's) stated preference",
            &format!(
                "client aes128-gcm first -> {aes_first}; client chacha20-poly1305 first -> {chacha_first}"
            ),
        );
    }

    // Seed 000: the offload factor and the proxy's sessions.
    offload_figures(&mut costs, &wanted);
}
