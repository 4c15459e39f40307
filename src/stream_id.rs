//! [`StreamId`], the name of a stream, in a module of its own at the bottom of the crate:
//! both the contract ([`crate::io`], which re-exports it) and [`crate::Error`] (which names
//! an unknown stream) need it, and `io` depends on `error`.

use core::fmt;

/// A TCP-like stream, named by whoever opened it.
///
/// The top bit says who chose the id: clear for streams the driver accepted on the actor's
/// behalf, set for streams the actor opened with [`Output::Connect`](crate::io::Output::Connect).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(u64);

impl StreamId {
    const OUTBOUND: u64 = 1 << 63;

    /// An id for a stream the driver accepted (the top bit is ignored).
    pub const fn inbound(n: u64) -> Self {
        StreamId(n & !Self::OUTBOUND)
    }

    /// An id for a stream the actor opens (the top bit is set).
    pub const fn outbound(n: u64) -> Self {
        StreamId(n | Self::OUTBOUND)
    }

    /// Whether the actor opened this stream.
    pub const fn is_outbound(self) -> bool {
        self.0 & Self::OUTBOUND != 0
    }

    /// The raw value (including the direction bit).
    pub const fn to_u64(self) -> u64 {
        self.0
    }

    /// The id from its raw value.
    pub const fn from_u64(raw: u64) -> Self {
        StreamId(raw)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = if self.is_outbound() { "out" } else { "in" };
        write!(f, "stream-{dir}-{}", self.0 & !Self::OUTBOUND)
    }
}
