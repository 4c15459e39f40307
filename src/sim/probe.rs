//! Small actors for tests and examples: send on command, record what arrives.
//!
//! Both follow the actor contract like any protocol actor, so they also show how little an
//! actor needs: an [`Outbox`], an input handler, and no timer unless it wants one.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::prelude::rust_2024::*;
use std::time::Duration;

use crate::error::SimActorError;
use crate::{Actor, Error, Event, IfaceId, Input, Instant, Outbox, Output, StreamId, Transmit};

/// A datagram a probe received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Who sent it (as the probe sees it, after any NAT).
    pub from: SocketAddr,
    /// The local address it arrived on.
    pub to: SocketAddr,
    /// The payload.
    pub data: Vec<u8>,
}

/// Sends UDP datagrams on command (or periodically) and records what it receives;
/// optionally echoes every datagram back to its sender.
///
/// It sends from `0.0.0.0:port`; the simulator fills in the host's address.
#[derive(Debug)]
pub struct DatagramProbe {
    port: u16,
    echo: bool,
    outbox: Outbox<Event>,
    received: Vec<Received>,
    max_received: usize,
    every: Option<(SocketAddr, Duration, Vec<u8>)>,
    /// The probe's one timer, read by both `poll_timeout` and `handle_timeout`: the next
    /// periodic send (armed only while `every` is set).
    next_tick: Option<Instant>,
}

impl DatagramProbe {
    /// Most datagrams recorded; later ones are refused with
    /// [`Error::CapacityExceeded`].
    pub const MAX_RECEIVED: usize = 100_000;

    /// A probe sending from `port`.
    pub fn new(port: u16) -> Self {
        DatagramProbe {
            port,
            echo: false,
            outbox: Outbox::default(),
            received: Vec::new(),
            max_received: Self::MAX_RECEIVED,
            every: None,
            next_tick: None,
        }
    }

    /// Echo every datagram back to its sender, from the address it arrived on.
    pub fn echoing(mut self) -> Self {
        self.echo = true;
        self
    }

    /// Also send `data` to `to` every `interval`, the first time as soon as it runs (a
    /// keepalive).
    pub fn every(mut self, to: SocketAddr, interval: Duration, data: impl Into<Vec<u8>>) -> Self {
        // A zero interval would re-arm the timer at `now` forever; one nanosecond keeps the
        // simulated clock moving.
        self.every = Some((to, interval.max(Duration::from_nanos(1)), data.into()));
        // The first send as soon as the probe runs: the earliest instant there is.
        self.next_tick = Some(Instant::ZERO);
        self
    }

    /// Stop the periodic sending.
    pub fn stop_periodic(&mut self) {
        self.every = None;
        self.next_tick = None;
    }

    fn local(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.port)
    }

    /// Send `data` to `to` from the probe's port.
    pub fn send(&mut self, to: SocketAddr, data: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.send_from(self.local(), to, data)
    }

    /// Send `data` to `to` from `from` (any address: spoofing is allowed in the simulator).
    pub fn send_from(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        data: impl Into<Vec<u8>>,
    ) -> Result<(), Error> {
        self.outbox.push(Output::Transmit(Transmit {
            from,
            to,
            data: data.into(),
        }))
    }

    /// Everything received so far.
    pub fn received(&self) -> &[Received] {
        &self.received
    }

    /// Take everything received so far.
    pub fn take_received(&mut self) -> Vec<Received> {
        std::mem::take(&mut self.received)
    }

    fn tick(&mut self, now: Instant) {
        if let Some((to, interval, data)) = self.every.clone()
            && self.next_tick.is_none_or(|t| t <= now)
        {
            // A full outbox only skips one keepalive; the next stays on schedule.
            let _ = self.send(to, data);
            self.next_tick = Some(now + interval);
        }
    }
}

impl Actor for DatagramProbe {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::Datagram { from, to, data } => {
                if self.received.len() >= self.max_received {
                    return Err(Error::CapacityExceeded {
                        what: "probe receive log",
                        bound: self.max_received,
                    });
                }
                self.received.push(Received {
                    at: now,
                    from,
                    to,
                    data: data.to_vec(),
                });
                if self.echo {
                    self.send_from(to, from, data.to_vec())?;
                }
                Ok(())
            }
            _ => Err(Error::Sim(SimActorError::DatagramProbeInput)),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
    }

    fn poll_output(&mut self) -> Option<Output<Event>> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }
}

/// One stream as a [`StreamProbe`] saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamRecord {
    /// Whether the peer opened it (accepted) or the probe did.
    pub accepted: bool,
    /// Local address, once known.
    pub local: Option<SocketAddr>,
    /// Remote address.
    pub remote: Option<SocketAddr>,
    /// When it opened (connected or accepted).
    pub opened_at: Option<Instant>,
    /// Every byte received, in order.
    pub received: Vec<u8>,
    /// When the simulator reported it closed (peer close, reset, or failed connect).
    pub closed_at: Option<Instant>,
}

/// Opens or accepts TCP streams, sends on command, records what arrives; optionally
/// echoes received bytes back on the same stream.
#[derive(Debug, Default)]
pub struct StreamProbe {
    outbox: Outbox<Event>,
    streams: BTreeMap<StreamId, StreamRecord>,
    next_id: u64,
    echo: bool,
}

impl StreamProbe {
    /// Most bytes recorded per stream.
    pub const MAX_RECORDED: usize = 16 << 20;

    /// A probe that opens nothing until told.
    pub fn new() -> Self {
        StreamProbe::default()
    }

    /// Echo received bytes back on their stream.
    pub fn echoing(mut self) -> Self {
        self.echo = true;
        self
    }

    /// Open a stream to `remote` from any local port.
    pub fn connect(&mut self, remote: SocketAddr) -> Result<StreamId, Error> {
        self.connect_from(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            remote,
        )
    }

    /// Open a stream to `remote` from `local` (port 0: any).
    pub fn connect_from(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<StreamId, Error> {
        let id = StreamId::outbound(self.next_id);
        self.next_id += 1;
        self.outbox.push(Output::Connect { id, local, remote })?;
        self.streams.insert(
            id,
            StreamRecord {
                remote: Some(remote),
                ..StreamRecord::default()
            },
        );
        Ok(id)
    }

    /// Write to a stream.
    pub fn send(&mut self, id: StreamId, data: impl Into<Vec<u8>>) -> Result<(), Error> {
        if !self.streams.contains_key(&id) {
            return Err(Error::UnknownStream(id));
        }
        self.outbox.push(Output::StreamSend {
            id,
            data: data.into(),
        })
    }

    /// Close a stream.
    pub fn close(&mut self, id: StreamId) -> Result<(), Error> {
        if !self.streams.contains_key(&id) {
            return Err(Error::UnknownStream(id));
        }
        self.outbox.push(Output::StreamClose { id })
    }

    /// One stream's record.
    pub fn stream(&self, id: StreamId) -> Option<&StreamRecord> {
        self.streams.get(&id)
    }

    /// All streams, by id.
    pub fn streams(&self) -> &BTreeMap<StreamId, StreamRecord> {
        &self.streams
    }

    /// The streams the peer opened, in the order accepted.
    pub fn accepted(&self) -> Vec<StreamId> {
        self.streams
            .iter()
            .filter(|(_, r)| r.accepted)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Bytes received on a stream (empty if unknown).
    pub fn received(&self, id: StreamId) -> &[u8] {
        self.streams.get(&id).map_or(&[], |r| &r.received)
    }

    fn known(&mut self, id: StreamId) -> Result<&mut StreamRecord, Error> {
        self.streams.get_mut(&id).ok_or(Error::UnknownStream(id))
    }
}

impl Actor for StreamProbe {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        match input {
            Input::StreamAccepted { id, local, remote } => {
                self.streams.insert(
                    id,
                    StreamRecord {
                        accepted: true,
                        local: Some(local),
                        remote: Some(remote),
                        opened_at: Some(now),
                        ..StreamRecord::default()
                    },
                );
                Ok(())
            }
            Input::StreamConnected { id, local } => {
                let r = self.known(id)?;
                r.local = Some(local);
                r.opened_at = Some(now);
                Ok(())
            }
            Input::StreamData { id, data } => {
                let echo = self.echo;
                let r = self.known(id)?;
                if r.received.len() + data.len() > Self::MAX_RECORDED {
                    return Err(Error::CapacityExceeded {
                        what: "stream probe record",
                        bound: Self::MAX_RECORDED,
                    });
                }
                r.received.extend_from_slice(data);
                if echo {
                    self.outbox.push(Output::StreamSend {
                        id,
                        data: data.to_vec(),
                    })?;
                }
                Ok(())
            }
            Input::StreamClosed { id } => {
                self.known(id)?.closed_at = Some(now);
                Ok(())
            }
            _ => Err(Error::Sim(SimActorError::StreamProbeInput)),
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_output(&mut self) -> Option<Output<Event>> {
        self.outbox.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// A raw packet a [`PacketProbe`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedPacket {
    /// When it arrived.
    pub at: Instant,
    /// The interface it arrived on.
    pub iface: IfaceId,
    /// The whole IP packet.
    pub data: Vec<u8>,
}

/// An IP-layer probe: emits raw packets on command and records every packet it gets.
/// As a *bridge* ([`PacketProbe::bridge`]) on an inline node with two interfaces it
/// also forwards every packet unchanged to the other interface — a transparent
/// bump in the wire that shows what crossed it. With [`PacketProbe::with_streams`] it
/// also takes the stream events of an inline node that listens
/// ([`Sim::listen_inline`](super::Sim::listen_inline)).
#[derive(Debug, Default)]
pub struct PacketProbe {
    outbox: Outbox<Event>,
    received: Vec<ReceivedPacket>,
    bridge: bool,
    /// Where stream inputs go, and stream outputs come from; without it a stream input is
    /// refused like any other non-packet input.
    streams: Option<StreamProbe>,
}

impl PacketProbe {
    /// Most packets recorded; later ones are still forwarded by a bridge but not kept.
    pub const MAX_RECORDED: usize = 100_000;

    /// A probe that records and emits only on command.
    pub fn new() -> Self {
        PacketProbe::default()
    }

    /// A probe that also forwards interface 0 ↔ interface 1.
    pub fn bridge() -> Self {
        PacketProbe {
            bridge: true,
            ..PacketProbe::default()
        }
    }

    /// Also take stream events, handing them to `streams` (and its outputs out after the
    /// probe's own): one actor that both sees raw packets and serves TCP, as an inline
    /// node with a management address does.
    pub fn with_streams(mut self, streams: StreamProbe) -> Self {
        self.streams = Some(streams);
        self
    }

    /// The stream probe given with [`PacketProbe::with_streams`].
    pub fn stream_probe(&self) -> Option<&StreamProbe> {
        self.streams.as_ref()
    }

    /// The stream probe given with [`PacketProbe::with_streams`], to command it.
    pub fn stream_probe_mut(&mut self) -> Option<&mut StreamProbe> {
        self.streams.as_mut()
    }

    /// Emit a raw packet on `iface` (hosts have only `IfaceId(0)`).
    pub fn emit(&mut self, iface: IfaceId, data: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.outbox.push(Output::Packet {
            iface,
            data: data.into(),
        })
    }

    /// Everything received so far.
    pub fn received(&self) -> &[ReceivedPacket] {
        &self.received
    }

    /// Take everything received so far.
    pub fn take_received(&mut self) -> Vec<ReceivedPacket> {
        std::mem::take(&mut self.received)
    }
}

impl Actor for PacketProbe {
    type Event = Event;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        let Input::Packet { iface, data } = input else {
            return match &mut self.streams {
                Some(streams) => streams.handle_input(now, input),
                None => Err(Error::Sim(SimActorError::PacketProbeInput)),
            };
        };
        if self.received.len() < Self::MAX_RECORDED {
            self.received.push(ReceivedPacket {
                at: now,
                iface,
                data: data.to_vec(),
            });
        }
        if self.bridge {
            let out = match iface.0 {
                0 => IfaceId(1),
                1 => IfaceId(0),
                _ => return Err(Error::Sim(SimActorError::BridgeInterface(iface.0))),
            };
            self.emit(out, data.to_vec())?;
        }
        Ok(())
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(streams) = &mut self.streams {
            streams.handle_timeout(now);
        }
    }

    fn poll_output(&mut self) -> Option<Output<Event>> {
        self.outbox
            .pop()
            .or_else(|| self.streams.as_mut()?.poll_output())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.streams.as_ref()?.poll_timeout()
    }
}
