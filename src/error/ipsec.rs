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
    /// Transport mode cannot protect an IP fragment (RFC 4301 §4.1: fragments go through
    /// tunnel mode, or are reassembled first).
    #[error("transport mode cannot protect a fragment")]
    TransportFragment,
    /// A fragmented ESP packet: this data plane does not reassemble.
    #[error("fragmented ESP: reassemble before unprotect")]
    FragmentedEsp,
    /// An SA uses an SPI of 0..=255 (reserved, RFC 4303 §2.1).
    #[error("SPIs 0..=255 are reserved")]
    ReservedSpi,
    /// An SA has no traffic selector on a side, or more than the data plane holds.
    #[error("bad traffic selector count")]
    TrafficSelectorCount,
    /// A tunnel's, encapsulation's or header's two addresses are of different families.
    #[error("address families differ")]
    AddressFamilyMismatch,
    /// A UDP encapsulation endpoint has port 0.
    #[error("UDP encapsulation endpoint without a port")]
    EncapPortZero,
    /// The SA's soft lifetime lies beyond its hard lifetime.
    #[error("soft lifetime beyond hard lifetime")]
    SoftLifetimeBeyondHard,
    /// A replay window of 0 or more than [`MAX_SIZE`] packets.
    ///
    /// [`MAX_SIZE`]: crate::ipsec::ReplayWindow::MAX_SIZE
    #[error("replay window size {0}")]
    ReplayWindowSize(u32),
    /// A data plane bound is zero.
    #[error("data plane bounds must be at least 1")]
    ZeroBound,
    /// An address range whose ends differ in family or whose start lies after its end.
    #[error("bad address range")]
    AddressRange,
    /// A prefix longer than its family's address.
    #[error("prefix length {0} too long")]
    PrefixLength(u8),
    /// A selector string that does not parse as an address, prefix or range.
    #[error("bad address syntax")]
    AddressSyntax,
    /// A port range whose start lies after its end.
    #[error("bad port range")]
    PortRange,
    /// A packet on an interface the node does not serve.
    #[error("packet on an unknown interface")]
    UnknownInterface,
    /// The IPsec node takes packets and datagrams only.
    #[error("the IPsec node takes packets and datagrams only")]
    UnsupportedInput,
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
