//! TLS 1.3 for weak devices: the terminal's record layer.
//!
//! In seed 004 over TLS (`docs/keyx.md`) a substitution server runs the TLS 1.3 handshake
//! on the terminal's behalf and hands it, per direction, a traffic key, an IV and the
//! next record sequence number. The terminal then runs only the record layer
//! ([`RecordLayer`], RFC 8446 §5): it seals and opens application data itself, and for a
//! KeyUpdate asks the server for the next key again.
//!
//! **Built:** the record layer ([`record`]). **Not built yet:** the seed 004 TLS actors.
//!
//! # Example
//!
//! Two layers with mirrored keys (what one sends with, the other receives with):
//!
//! ```
//! use deputy::tls::{CipherSuite, RecordConfig, RecordEvent, RecordLayer, TrafficKeys};
//!
//! let suite = CipherSuite::Chacha20Poly1305Sha256;
//! let keys = |b: u8| TrafficKeys::new(suite, &[b; 32], [b; 12], 0).unwrap();
//! let (c2s, s2c) = (keys(1), keys(2));
//!
//! let mut terminal = RecordLayer::new(RecordConfig::default(), c2s.clone(), s2c.clone())?;
//! let mut peer = RecordLayer::new(RecordConfig::default(), s2c, c2s)?;
//!
//! let mut wire = Vec::new();
//! terminal.seal_application(b"GET / HTTP/1.1\r\n\r\n", &mut wire)?;
//! assert_eq!(&wire[..3], &[23, 3, 3]); // application_data, legacy version 0x0303
//!
//! // The peer takes the bytes in any segmentation.
//! let (a, b) = wire.split_at(7);
//! peer.receive(a)?;
//! assert_eq!(peer.poll_event(), None);
//! peer.receive(b)?;
//! assert_eq!(
//!     peer.poll_event(),
//!     Some(RecordEvent::Data(b"GET / HTTP/1.1\r\n\r\n".to_vec()))
//! );
//! assert_eq!((terminal.tx_seq(), peer.rx_seq()), (1, 1));
//! # Ok::<(), deputy::tls::TlsError>(())
//! ```

pub mod record;

pub use crate::error::TlsError;
pub use record::{
    AlertDescription, CipherSuite, ContentType, RecordConfig, RecordEvent, RecordLayer,
    TrafficKeys, complete_records,
};
