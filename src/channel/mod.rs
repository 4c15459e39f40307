//! The secure channel (placeholder while it is being written).

use crate::io::StreamId;
use alloc::vec::Vec;

/// Why a channel failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// Placeholder.
    #[error("closed")]
    Closed,
}

/// Channel events.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// Data arrived.
    Received {
        /// Stream.
        stream: StreamId,
        /// Data.
        data: Vec<u8>,
    },
}
