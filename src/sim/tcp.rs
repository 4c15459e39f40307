//! A small TCP for simulated hosts: real segments on the wire, reliable in-order streams
//! for the actors.
//!
//! What it does: three-way handshake, simultaneous open (SYN crossing SYN), RST for
//! segments nobody expects (a SYN to a port without a listener gets RST+ACK, and the
//! connecting side reports `StreamClosed`), MSS-bounded data segments with cumulative
//! ACKs, reassembly of out-of-order segments, discarding of duplicates, retransmission
//! after a timeout (go-back-N from the oldest unacknowledged byte, exponential backoff),
//! FIN in both directions. What it leaves out: congestion control, window scaling, SACK,
//! delayed ACKs, Nagle, TIME_WAIT, urgent data, options. The window is a fixed byte count.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::prelude::rust_2024::*;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::Rng;

use super::packet::{PacketInfo, TcpFlags, TcpSegment};
use crate::error::SimActorError;
use crate::{Error, Instant, StreamId};

/// Parameters of the simulated hosts' TCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// Largest payload of one segment.
    pub mss: usize,
    /// Bytes in flight without acknowledgment (also the advertised window).
    pub window: u16,
    /// Initial retransmission timeout.
    pub rto: Duration,
    /// Largest retransmission timeout after backoff.
    pub max_rto: Duration,
    /// Retransmissions of a SYN (or SYN-ACK) before the connection fails.
    pub syn_retries: u32,
    /// Retransmissions of data before the connection is reset.
    pub max_retries: u32,
    /// Most open streams per host; a SYN beyond it is dropped, a connect beyond it fails.
    pub max_streams: usize,
    /// Most bytes an actor may have queued on one stream.
    pub max_send_buffer: usize,
    /// Most out-of-order segments held per stream.
    pub max_out_of_order: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            mss: 1400,
            window: 65535,
            rto: Duration::from_secs(1),
            max_rto: Duration::from_secs(60),
            syn_retries: 5,
            max_retries: 8,
            max_streams: 256,
            max_send_buffer: 4 << 20,
            max_out_of_order: 64,
        }
    }
}

/// What the engine tells its host's actor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Notify {
    Accepted {
        id: StreamId,
        local: SocketAddr,
        remote: SocketAddr,
    },
    Connected {
        id: StreamId,
        local: SocketAddr,
    },
    Data {
        id: StreamId,
        data: Vec<u8>,
    },
    Closed {
        id: StreamId,
    },
}

/// A segment the engine wants sent.
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seg: TcpSegment,
    pub payload: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    SynSent,
    SynReceived,
    Established,
}

#[derive(Debug)]
struct Conn {
    id: StreamId,
    local: SocketAddr,
    remote: SocketAddr,
    state: State,
    passive: bool,
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    /// Bytes from `snd_una` on: sent-but-unacknowledged, then unsent.
    buf: VecDeque<u8>,
    fin_queued: bool,
    fin_sent: bool,
    fin_acked: bool,
    rcv_nxt: u32,
    ooo: Vec<(u32, Vec<u8>)>,
    peer_fin_seq: Option<u32>,
    peer_fin: bool,
    rto: Duration,
    deadline: Option<Instant>,
    retries: u32,
    /// The actor closed it: it hears nothing more about this stream.
    actor_closed: bool,
    /// The actor has been told it is closed.
    reported_closed: bool,
}

impl Conn {
    /// A connection whose SYN (active, `passive` false) or SYN-ACK (passive) is about to
    /// go out with sequence number `iss`; its retransmission timer is armed at `deadline`.
    #[allow(clippy::too_many_arguments)]
    fn opening(
        id: StreamId,
        local: SocketAddr,
        remote: SocketAddr,
        passive: bool,
        iss: u32,
        rcv_nxt: u32,
        deadline: Instant,
        rto: Duration,
    ) -> Conn {
        Conn {
            id,
            local,
            remote,
            state: if passive {
                State::SynReceived
            } else {
                State::SynSent
            },
            passive,
            iss,
            snd_una: iss,
            // The SYN takes one sequence number.
            snd_nxt: iss.wrapping_add(1),
            buf: VecDeque::new(),
            fin_queued: false,
            fin_sent: false,
            fin_acked: false,
            rcv_nxt,
            ooo: Vec::new(),
            peer_fin_seq: None,
            peer_fin: false,
            rto,
            deadline: Some(deadline),
            retries: 0,
            actor_closed: false,
            reported_closed: false,
        }
    }
}

fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn seq_le(a: u32, b: u32) -> bool {
    a == b || seq_lt(a, b)
}

const EPHEMERAL_MIN: u16 = 49152;

/// The TCP of one host, or of an inline node that listens on its own addresses.
#[derive(Debug)]
pub(crate) struct Tcp {
    cfg: TcpConfig,
    /// The local address of a connect that names none (a host's one address).
    ip: IpAddr,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    listeners: BTreeSet<u16>,
    next_ephemeral: u16,
    next_inbound: u64,
    rng: ChaCha20Rng,
    /// Segments to put on the network, in order.
    pub out: Vec<Segment>,
    /// Inputs for the actor, in order.
    pub notify: VecDeque<Notify>,
}

impl Tcp {
    pub fn new(cfg: TcpConfig, ip: IpAddr, rng: ChaCha20Rng) -> Tcp {
        Tcp {
            cfg,
            ip,
            conns: BTreeMap::new(),
            next_conn: 0,
            listeners: BTreeSet::new(),
            next_ephemeral: EPHEMERAL_MIN,
            next_inbound: 1,
            rng,
            out: Vec::new(),
            notify: VecDeque::new(),
        }
    }

    pub fn listen(&mut self, port: u16) {
        self.listeners.insert(port);
    }

    pub fn unlisten(&mut self, port: u16) {
        self.listeners.remove(&port);
    }

    /// Whether a TCP segment addressed to this node is this engine's to handle: it
    /// belongs to an open connection or arrives on a listening port. An inline node hands
    /// only these to its TCP; the rest stay raw packets for its actor.
    pub fn claims(&self, p: &PacketInfo<'_>) -> bool {
        match (p.tcp, p.dst_socket(), p.src_socket()) {
            (Some(_), Some(local), Some(remote)) => {
                self.listeners.contains(&local.port()) || self.find_tuple(local, remote).is_some()
            }
            _ => false,
        }
    }

    /// Number of open connections.
    pub fn open_streams(&self) -> usize {
        self.conns.len()
    }

    /// The earliest retransmission deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().filter_map(|c| c.deadline).min()
    }

    fn find_stream(&self, id: StreamId) -> Option<u64> {
        self.conns
            .iter()
            .find(|(_, c)| c.id == id && !c.actor_closed)
            .map(|(k, _)| *k)
    }

    fn find_tuple(&self, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
        self.conns
            .iter()
            .find(|(_, c)| c.local == local && c.remote == remote)
            .map(|(k, _)| *k)
    }

    fn ephemeral(&mut self) -> Option<u16> {
        let span = u32::from(u16::MAX - EPHEMERAL_MIN) + 1;
        for _ in 0..span {
            let p = self.next_ephemeral;
            self.next_ephemeral = if p == u16::MAX { EPHEMERAL_MIN } else { p + 1 };
            let used =
                self.listeners.contains(&p) || self.conns.values().any(|c| c.local.port() == p);
            if !used {
                return Some(p);
            }
        }
        None
    }

    fn insert(&mut self, conn: Conn) {
        self.conns.insert(self.next_conn, conn);
        self.next_conn += 1;
    }

    /// The actor asked to connect. Refusals that the actor must hear about become a
    /// `Closed` notification; the `Err` describes why for the host's error log.
    pub fn connect(
        &mut self,
        now: Instant,
        id: StreamId,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<(), Error> {
        if self.conns.values().any(|c| c.id == id) {
            return Err(Error::Sim(SimActorError::StreamIdInUse(id)));
        }
        let refuse = |tcp: &mut Tcp, why: Error| {
            tcp.notify.push_back(Notify::Closed { id });
            Err(why)
        };
        let ip = if local.ip().is_unspecified() {
            self.ip
        } else {
            local.ip()
        };
        // The family of the address the segments will carry, not of `self.ip`: an inline
        // node with addresses of both families connects from the one that fits.
        if remote.is_ipv4() != ip.is_ipv4() || remote.port() == 0 {
            return refuse(self, Error::Sim(SimActorError::UnusableAddress));
        }
        if self.conns.len() >= self.cfg.max_streams {
            return refuse(
                self,
                Error::CapacityExceeded {
                    what: "simulated host streams",
                    bound: self.cfg.max_streams,
                },
            );
        }
        let port = if local.port() == 0 {
            match self.ephemeral() {
                Some(p) => p,
                None => return refuse(self, Error::Sim(SimActorError::NoEphemeralPort)),
            }
        } else {
            local.port()
        };
        let local = SocketAddr::new(ip, port);
        if self.find_tuple(local, remote).is_some() {
            return refuse(self, Error::Sim(SimActorError::ConnectionExists));
        }
        let iss = self.rng.next_u32();
        let conn = Conn::opening(
            id,
            local,
            remote,
            false,
            iss,
            0,
            now + self.cfg.rto,
            self.cfg.rto,
        );
        self.out.push(syn(&conn, self.cfg.window));
        self.insert(conn);
        Ok(())
    }

    /// The actor wrote to a stream.
    pub fn send(&mut self, now: Instant, id: StreamId, data: &[u8]) -> Result<(), Error> {
        let key = self.find_stream(id).ok_or(Error::UnknownStream(id))?;
        let cfg = self.cfg.clone();
        let Some(c) = self.conns.get_mut(&key) else {
            return Err(Error::UnknownStream(id));
        };
        if c.fin_queued {
            return Err(Error::Sim(SimActorError::SendAfterClose(id)));
        }
        if c.buf.len() + data.len() > cfg.max_send_buffer {
            return Err(Error::CapacityExceeded {
                what: "simulated stream send buffer",
                bound: cfg.max_send_buffer,
            });
        }
        c.buf.extend(data.iter().copied());
        if c.state == State::Established {
            flush(c, &cfg, now, &mut self.out);
        }
        Ok(())
    }

    /// The actor closed a stream. Closing a stream that is already gone (the peer closed
    /// it and both FINs are through, or it was reset) is a no-op.
    pub fn close(&mut self, now: Instant, id: StreamId) -> Result<(), Error> {
        let Some(key) = self.find_stream(id) else {
            return Ok(());
        };
        let cfg = self.cfg.clone();
        let Some(c) = self.conns.get_mut(&key) else {
            return Err(Error::UnknownStream(id));
        };
        c.actor_closed = true;
        c.fin_queued = true;
        match c.state {
            State::Established => {
                flush(c, &cfg, now, &mut self.out);
                if c.fin_acked && c.peer_fin {
                    self.conns.remove(&key);
                }
            }
            _ => {
                // Not open yet: abandon it, telling the peer if it has heard from us.
                if c.state == State::SynReceived {
                    self.out.push(rst(c.local, c.remote, c.snd_nxt));
                }
                self.conns.remove(&key);
            }
        }
        Ok(())
    }

    fn report_closed(&mut self, key: u64) {
        if let Some(c) = self.conns.remove(&key) {
            let known = !(c.passive && c.state == State::SynReceived);
            if known && !c.actor_closed && !c.reported_closed {
                self.notify.push_back(Notify::Closed { id: c.id });
            }
        }
    }

    /// Retransmission timers.
    pub fn on_timeout(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        let cfg = self.cfg.clone();
        for key in due {
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            c.retries += 1;
            c.rto = c.rto.saturating_mul(2).min(cfg.max_rto);
            match c.state {
                State::SynSent | State::SynReceived => {
                    if c.retries > cfg.syn_retries {
                        self.report_closed(key);
                        continue;
                    }
                    let seg = if c.state == State::SynSent {
                        syn(c, cfg.window)
                    } else {
                        syn_ack(c, cfg.window)
                    };
                    self.out.push(seg);
                    c.deadline = Some(now + c.rto);
                }
                State::Established => {
                    if c.snd_una == c.snd_nxt {
                        c.deadline = None;
                        c.retries = 0;
                        continue;
                    }
                    if c.retries > cfg.max_retries {
                        self.out.push(rst(c.local, c.remote, c.snd_nxt));
                        self.report_closed(key);
                        continue;
                    }
                    c.snd_nxt = c.snd_una;
                    c.fin_sent = false;
                    c.deadline = None;
                    flush(c, &cfg, now, &mut self.out);
                    c.deadline = Some(now + c.rto);
                }
            }
        }
    }

    /// A TCP segment addressed to this host. Returns `false` if it was dropped because
    /// the host has no room for another stream.
    pub fn on_segment(&mut self, now: Instant, p: &PacketInfo<'_>) -> bool {
        let (Some(tcp), Some(local), Some(remote)) = (p.tcp, p.dst_socket(), p.src_socket()) else {
            return true;
        };
        let f = tcp.flags;
        let Some(key) = self.find_tuple(local, remote) else {
            if f.rst {
                return true;
            }
            if f.syn && !f.ack && self.listeners.contains(&local.port()) {
                if self.conns.len() >= self.cfg.max_streams {
                    return false;
                }
                let iss = self.rng.next_u32();
                let id = StreamId::inbound(self.next_inbound);
                self.next_inbound += 1;
                let conn = Conn::opening(
                    id,
                    local,
                    remote,
                    true,
                    iss,
                    tcp.seq.wrapping_add(1),
                    now + self.cfg.rto,
                    self.cfg.rto,
                );
                self.out.push(syn_ack(&conn, self.cfg.window));
                self.insert(conn);
                return true;
            }
            // Nobody expects it: reset (RFC 793 "reset generation").
            let seq_len = p.payload.len() as u32 + u32::from(f.syn) + u32::from(f.fin);
            let reply = if f.ack {
                rst(local, remote, tcp.ack)
            } else {
                Segment {
                    src: local,
                    dst: remote,
                    seg: TcpSegment {
                        flags: TcpFlags {
                            rst: true,
                            ack: true,
                            ..TcpFlags::default()
                        },
                        seq: 0,
                        ack: tcp.seq.wrapping_add(seq_len),
                        window: 0,
                    },
                    payload: Vec::new(),
                }
            };
            self.out.push(reply);
            return true;
        };
        let cfg = self.cfg.clone();
        let Some(c) = self.conns.get_mut(&key) else {
            return true;
        };
        if f.rst {
            let acceptable = match c.state {
                State::SynSent => f.ack && tcp.ack == c.snd_nxt,
                _ => {
                    let off = tcp.seq.wrapping_sub(c.rcv_nxt);
                    off < u32::from(cfg.window).max(1)
                }
            };
            if acceptable {
                self.report_closed(key);
            }
            return true;
        }
        match c.state {
            State::SynSent => {
                if f.syn && f.ack {
                    if tcp.ack != c.iss.wrapping_add(1) {
                        self.out.push(rst(local, remote, tcp.ack));
                        return true;
                    }
                    c.rcv_nxt = tcp.seq.wrapping_add(1);
                    c.snd_una = tcp.ack;
                    c.state = State::Established;
                    c.retries = 0;
                    c.rto = cfg.rto;
                    c.deadline = None;
                    self.out.push(ack_only(c, cfg.window));
                    self.notify.push_back(Notify::Connected {
                        id: c.id,
                        local: c.local,
                    });
                    flush(c, &cfg, now, &mut self.out);
                } else if f.syn {
                    // Simultaneous open: both SYNs crossed.
                    c.rcv_nxt = tcp.seq.wrapping_add(1);
                    c.state = State::SynReceived;
                    c.retries = 0;
                    c.deadline = Some(now + c.rto);
                    self.out.push(syn_ack(c, cfg.window));
                }
                return true;
            }
            State::SynReceived => {
                if f.syn && !f.ack {
                    self.out.push(syn_ack(c, cfg.window));
                    return true;
                }
                if !(f.ack && tcp.ack == c.iss.wrapping_add(1)) {
                    return true;
                }
                c.snd_una = tcp.ack;
                c.state = State::Established;
                c.retries = 0;
                c.rto = cfg.rto;
                c.deadline = None;
                if f.syn {
                    self.out.push(ack_only(c, cfg.window));
                }
                let n = if c.passive {
                    Notify::Accepted {
                        id: c.id,
                        local: c.local,
                        remote: c.remote,
                    }
                } else {
                    Notify::Connected {
                        id: c.id,
                        local: c.local,
                    }
                };
                self.notify.push_back(n);
                if f.syn {
                    flush(c, &cfg, now, &mut self.out);
                    return true;
                }
            }
            State::Established => {
                if f.syn {
                    // Our ACK of their SYN-ACK was lost.
                    self.out.push(ack_only(c, cfg.window));
                    return true;
                }
            }
        }
        // Established: acknowledgment, data, FIN.
        if f.ack && seq_lt(c.snd_una, tcp.ack) && seq_le(tcp.ack, c.snd_nxt) {
            let acked = tcp.ack.wrapping_sub(c.snd_una) as usize;
            let data = acked.min(c.buf.len());
            c.buf.drain(..data);
            if acked > data && c.fin_sent {
                c.fin_acked = true;
            }
            c.snd_una = tcp.ack;
            c.retries = 0;
            c.rto = cfg.rto;
            c.deadline = (c.snd_una != c.snd_nxt).then(|| now + c.rto);
        }
        let mut need_ack = false;
        let was_fin = c.peer_fin;
        if !p.payload.is_empty() {
            need_ack = true;
            let off = tcp.seq.wrapping_sub(c.rcv_nxt) as i32;
            if off <= 0 {
                let skip = off.unsigned_abs() as usize;
                if skip < p.payload.len() {
                    let fresh = p.payload[skip..].to_vec();
                    c.rcv_nxt = c.rcv_nxt.wrapping_add(fresh.len() as u32);
                    if !c.actor_closed {
                        self.notify.push_back(Notify::Data {
                            id: c.id,
                            data: fresh,
                        });
                    }
                }
            } else if (off as u32) < u32::from(cfg.window)
                && c.ooo.len() < cfg.max_out_of_order
                && !c.ooo.iter().any(|(s, _)| *s == tcp.seq)
            {
                c.ooo.push((tcp.seq, p.payload.to_vec()));
            }
        }
        if f.fin {
            need_ack = true;
            let fin_seq = tcp.seq.wrapping_add(p.payload.len() as u32);
            if !c.peer_fin {
                c.peer_fin_seq = Some(fin_seq);
            }
        }
        // Pull out-of-order segments that now fit.
        loop {
            let rcv = c.rcv_nxt;
            let Some(i) = c
                .ooo
                .iter()
                .position(|(s, d)| seq_le(*s, rcv) && seq_lt(rcv, s.wrapping_add(d.len() as u32)))
            else {
                c.ooo
                    .retain(|(s, d)| seq_lt(rcv, s.wrapping_add(d.len() as u32)));
                break;
            };
            let (s, d) = c.ooo.swap_remove(i);
            let skip = rcv.wrapping_sub(s) as usize;
            let fresh = d[skip..].to_vec();
            c.rcv_nxt = c.rcv_nxt.wrapping_add(fresh.len() as u32);
            if !c.actor_closed {
                self.notify.push_back(Notify::Data {
                    id: c.id,
                    data: fresh,
                });
            }
        }
        if !c.peer_fin && c.peer_fin_seq == Some(c.rcv_nxt) {
            c.peer_fin = true;
            c.rcv_nxt = c.rcv_nxt.wrapping_add(1);
        }
        if need_ack {
            self.out.push(ack_only(c, cfg.window));
        }
        if c.peer_fin && !was_fin {
            if !c.actor_closed && !c.reported_closed {
                c.reported_closed = true;
                self.notify.push_back(Notify::Closed { id: c.id });
            }
            // The stream is gone for the actor: close our side after what is queued.
            c.fin_queued = true;
        }
        flush(c, &cfg, now, &mut self.out);
        if c.fin_acked && c.peer_fin {
            self.conns.remove(&key);
        }
        true
    }
}

fn segment(c: &Conn, flags: TcpFlags, seq: u32, window: u16, payload: Vec<u8>) -> Segment {
    Segment {
        src: c.local,
        dst: c.remote,
        seg: TcpSegment {
            flags,
            seq,
            ack: c.rcv_nxt,
            window,
        },
        payload,
    }
}

fn syn(c: &Conn, window: u16) -> Segment {
    let flags = TcpFlags {
        syn: true,
        ..TcpFlags::default()
    };
    let mut s = segment(c, flags, c.iss, window, Vec::new());
    s.seg.ack = 0;
    s
}

fn syn_ack(c: &Conn, window: u16) -> Segment {
    let flags = TcpFlags {
        syn: true,
        ack: true,
        ..TcpFlags::default()
    };
    segment(c, flags, c.iss, window, Vec::new())
}

fn ack_only(c: &Conn, window: u16) -> Segment {
    let flags = TcpFlags {
        ack: true,
        ..TcpFlags::default()
    };
    segment(c, flags, c.snd_nxt, window, Vec::new())
}

fn rst(src: SocketAddr, dst: SocketAddr, seq: u32) -> Segment {
    Segment {
        src,
        dst,
        seg: TcpSegment {
            flags: TcpFlags {
                rst: true,
                ..TcpFlags::default()
            },
            seq,
            ack: 0,
            window: 0,
        },
        payload: Vec::new(),
    }
}

/// Send what the window allows, then the FIN if it is due.
fn flush(c: &mut Conn, cfg: &TcpConfig, now: Instant, out: &mut Vec<Segment>) {
    if c.state != State::Established {
        return;
    }
    let window = usize::from(cfg.window).max(1);
    let mss = cfg.mss.max(1);
    let mut sent = false;
    loop {
        if c.fin_sent {
            break;
        }
        let off = c.snd_nxt.wrapping_sub(c.snd_una) as usize;
        if off < c.buf.len() && off < window {
            let n = mss.min(c.buf.len() - off).min(window - off);
            let payload: Vec<u8> = c.buf.range(off..off + n).copied().collect();
            let flags = TcpFlags {
                ack: true,
                psh: true,
                ..TcpFlags::default()
            };
            out.push(segment(c, flags, c.snd_nxt, cfg.window, payload));
            c.snd_nxt = c.snd_nxt.wrapping_add(n as u32);
            sent = true;
        } else if c.fin_queued && off == c.buf.len() {
            let flags = TcpFlags {
                fin: true,
                ack: true,
                ..TcpFlags::default()
            };
            out.push(segment(c, flags, c.snd_nxt, cfg.window, Vec::new()));
            c.snd_nxt = c.snd_nxt.wrapping_add(1);
            c.fin_sent = true;
            sent = true;
        } else {
            break;
        }
    }
    if sent && c.deadline.is_none() {
        c.deadline = Some(now + c.rto);
    }
}
