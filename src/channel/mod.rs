//! deputy's secure channel: seed 002's "SSL" rebuilt with modern primitives (DESIGN.md §4).
//!
//! ```text
//! client                                              server
//!   ClientHello  (versions, suites, group, key share,
//!                 random = time ‖ 28 random, session id,
//!                 auth mode, [PSK id], [server name])  ──▶
//!                                                      ◀── ServerHello (version, suite,
//!                                                           key share, random, session id)
//!                               ── keys: PMS → seed ¶0088 master secret → HKDF(transcript) ──
//!                                                      ◀── {Certificate}            cert mode
//!                                                      ◀── {CertificateRequest}     optional
//!                                                      ◀── {CertificateVerify}      cert mode
//!                                                      ◀── {Finished}
//!   {Certificate, CertificateVerify}  if asked        ──▶
//!   {Finished}                                        ──▶
//!   {application data} ◀──────────────────────────────────▶ {application data}
//!   {keepalive request} ──▶ / ◀── {keepalive response}   either side, when idle
//!   {close-notify}                                    ──▶
//! ```
//!
//! `{…}` is an AEAD record under handshake keys (before the Finished messages) or
//! application keys (after). The seed sends its "key-creation information" in separate
//! packets 215/216 after the certificate; deputy carries both shares in the hellos so the
//! handshake takes one round trip, and signs the transcript (CertificateVerify) so the
//! server proves it holds the certificate's key — the seed's optional signature (¶0084)
//! made mandatory. Finished MACs over the whole transcript in both directions stop
//! downgrades and tampering; explicit record sequence numbers stop replay and reordering;
//! close-notify distinguishes a graceful end from truncation.
//!
//! Two layers:
//! - [`Connection`]: one connection over any reliable byte stream, byte-level and sans-IO
//!   (like `rustls::Connection`). Other actors (seed 000's proxy, seed 002's server) embed
//!   it per stream.
//! - [`SecureStream`]: a connection bound to the stream it runs on — writes its bytes,
//!   hands back its messages, ends the stream on failure or close. Every actor that runs
//!   the channel over streams is built on it.
//! - [`ChannelClient`] / [`ChannelServer`]: ready-made [`Actor`](crate::Actor)s that open or
//!   accept streams and run connections on them, for applications that want just a secure
//!   pipe.
//!
//! Security reasoning and the wire layouts are in `docs/channel.md` and `docs/wire.md`.

mod actor;
mod config;
mod conn;
mod keys;
pub mod messages;
mod stream;

use alloc::boxed::Box;
use alloc::vec::Vec;

pub use crate::error::{AlertCode, ChannelError};
pub use actor::{ChannelClient, ChannelServer, ChannelServerConfig};
pub use config::{
    CHANNEL_VERSION, ClientAuthMode, ClientCertPolicy, ClientConfig, Common, Psk, ServerConfig,
};
pub use conn::Connection;
pub use stream::SecureStream;

use crate::crypto::aead::AeadAlg;
use crate::crypto::cert::Certificate;
use crate::io::StreamId;

/// Who the peer proved to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    /// Nothing proven (yet), or a client without a certificate where one was optional.
    Anonymous,
    /// The peer holds the key of this verified certificate.
    Certificate(Box<Certificate>),
    /// The peer knows the pre-shared key with this identity.
    Psk(Vec<u8>),
}

/// What the channel actors tell the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The handshake on `stream` finished.
    Established {
        /// The stream.
        stream: StreamId,
        /// Who the peer is.
        peer: PeerIdentity,
        /// The negotiated suite.
        suite: AeadAlg,
        /// The session id.
        session: u64,
    },
    /// An application message arrived.
    Received {
        /// The stream.
        stream: StreamId,
        /// The message.
        data: Vec<u8>,
    },
    /// The peer closed gracefully (close-notify), and the stream is gone.
    Closed {
        /// The stream.
        stream: StreamId,
    },
    /// The connection failed.
    Failed {
        /// The stream.
        stream: StreamId,
        /// Why.
        error: ChannelError,
    },
}
