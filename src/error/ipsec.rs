//! Why the ESP data plane ([`crate::ipsec`]) refused a packet, an SA or a command.

/// Why the data plane refused a packet, an SA or a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpsecError {
    /// The packet does not parse (truncated, bad lengths, not IP …).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// No inbound SA has this SPI.
    #[error("unknown SPI {0:#010x}")]
    UnknownSpi(u32),
    /// The ICV did not verify: forged, corrupted, or the wrong key.
    #[error("integrity check failed on SA {spi:#010x}")]
    IntegrityFailed {
        /// Inbound SPI.
        spi: u32,
    },
    /// The packet verified but its padding is not 1, 2, 3, … or does not fit.
    #[error("bad padding on SA {spi:#010x}")]
    BadPadding {
        /// Inbound SPI.
        spi: u32,
    },
    /// The anti-replay window refused the (verified) packet.
    #[error("replayed packet ({kind:?}, sequence {seq}) on SA {spi:#010x}")]
    Replay {
        /// Inbound SPI.
        spi: u32,
        /// Its sequence number.
        seq: u64,
        /// Duplicate, too old, or zero.
        kind: ReplayKind,
    },
    /// The SA reached a hard lifetime and was removed.
    #[error("SA {spi:#010x} has expired")]
    SaExpired {
        /// Inbound SPI.
        spi: u32,
    },
    /// The outbound SA has used its last sequence number; it needs a rekey.
    #[error("sequence numbers of SA {spi:#010x} are exhausted; rekey")]
    SequenceExhausted {
        /// Outbound SPI.
        spi: u32,
    },
    /// A decrypted packet lies outside the SA's traffic selectors.
    #[error("inner packet outside the traffic selectors of SA {spi:#010x}")]
    SelectorMismatch {
        /// Inbound SPI.
        spi: u32,
    },
    /// A decrypted packet carries a next header its mode cannot deliver.
    #[error("unexpected next header {next_header} on SA {spi:#010x}")]
    UnexpectedNextHeader {
        /// Inbound SPI.
        spi: u32,
        /// The next header.
        next_header: u8,
    },
    /// A packet arrived in clear although policy requires protection.
    #[error("unprotected packet where policy requires ESP")]
    Unprotected,
    /// The protected packet would exceed the IP length limit.
    #[error("packet too large")]
    TooLarge,
    /// Something this data plane does not do (see `docs/ipsec.md`).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The SA description is inconsistent.
    #[error("invalid SA: {0}")]
    InvalidSa(&'static str),
    /// A selector is malformed.
    #[error("invalid selector: {0}")]
    InvalidSelector(&'static str),
    /// Key material of the wrong length.
    #[error("bad key length {got} (want {want})")]
    BadKeyLength {
        /// Bytes given.
        got: usize,
        /// Bytes required.
        want: usize,
    },
    /// An SA with this inbound SPI is already installed.
    #[error("SPI {0:#010x} is already installed")]
    DuplicateSpi(u32),
    /// A configured bound was reached.
    #[error("{what} is full (bound {bound})")]
    CapacityExceeded {
        /// Which table or queue.
        what: &'static str,
        /// Its bound.
        bound: usize,
    },
}

/// Why the window refused a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplayKind {
    /// Already received.
    Duplicate,
    /// Left of the window: too old to tell.
    TooOld,
    /// Sequence number zero is never sent (RFC 4303 §3.3.3: the first packet is 1).
    Zero,
}
