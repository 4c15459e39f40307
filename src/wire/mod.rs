//! deputy's own framing: a 16-byte versioned header and a body of typed TLV fields.
//!
//! ```text
//!  0       2       3       4               8                               16
//!  +-------+-------+-------+---------------+-------------------------------+
//!  | "DP"  | ver=1 | type  | body length   | session id                    |
//!  +-------+-------+-------+---------------+-------------------------------+
//!  | field: type (u16, bit 15 = critical) | length (u16) | value …         |
//!  | field …                                                               |
//! ```
//!
//! All integers are big-endian. The message type byte belongs to the protocol that owns the
//! message (the registry is in `docs/wire.md`); `wire` only frames. Decoding is strict:
//! the magic, version and every length are checked, the body must be exactly a sequence of
//! whole fields, and [`Limits`] bound the message size and the field count. Fields are
//! read in place, without allocation.
//!
//! Field types with bit 15 set are *critical*: a receiver that does not know one must
//! refuse the message ([`WireError::UnknownCriticalField`]). Unknown non-critical fields are
//! skipped or refused according to [`UnknownFieldPolicy`]. A field that appears twice is
//! refused when read as a single value ([`WireError::DuplicateField`]); lists are read
//! with [`Fields::all`].

mod deframe;

use alloc::string::String;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use deframe::Deframer;

/// The two magic bytes that open every deputy message: `"DP"`.
pub const MAGIC: [u8; 2] = *b"DP";
/// The wire format version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 16;
/// Length of a field's type + length prefix.
pub const FIELD_HEADER_LEN: usize = 4;
/// Bit 15 of a field type: the receiver must understand the field.
pub const CRITICAL: u16 = 0x8000;
/// The largest value one field can carry.
pub const MAX_FIELD_LEN: usize = u16::MAX as usize;

/// Why a message could not be decoded or encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the header or a field announces.
    #[error("truncated")]
    Truncated,
    /// The message does not start with "DP".
    #[error("bad magic")]
    BadMagic,
    /// A version this crate does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// The message is larger than the configured maximum.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Announced or actual length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// More bytes than the header announces.
    #[error("trailing bytes after the message")]
    TrailingBytes,
    /// More fields than the configured maximum.
    #[error("more than {max} fields")]
    TooManyFields {
        /// Configured maximum.
        max: usize,
    },
    /// A required field is absent.
    #[error("missing field {0:#06x}")]
    MissingField(u16),
    /// A single-valued field appears more than once.
    #[error("duplicate field {0:#06x}")]
    DuplicateField(u16),
    /// A critical field this receiver does not understand.
    #[error("unknown critical field {0:#06x}")]
    UnknownCriticalField(u16),
    /// A non-critical field this receiver does not understand, under
    /// [`UnknownFieldPolicy::Reject`].
    #[error("unknown field {0:#06x}")]
    UnknownField(u16),
    /// A field's value has the wrong length for its type.
    #[error("field {field:#06x} has bad length {len}")]
    BadFieldLength {
        /// The field type.
        field: u16,
        /// Its length.
        len: usize,
    },
    /// A field's value is not valid for its type (bad UTF-8, unknown address family …).
    #[error("field {0:#06x} has a bad value")]
    BadValue(u16),
    /// The message type is not one the receiver expects here.
    #[error("unexpected message type {0:#04x}")]
    UnexpectedType(u8),
    /// Encoding: a value longer than a field can carry.
    #[error("value of {0} bytes is too long for a field")]
    FieldTooLong(usize),
}

/// What to do with a non-critical field the receiver does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UnknownFieldPolicy {
    /// Ignore it (the default: lets newer senders add optional fields).
    #[default]
    Skip,
    /// Refuse the message.
    Reject,
}

/// Bounds applied when decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest whole message (header included) accepted.
    pub max_message_len: usize,
    /// The most fields one message (or nested field list) may carry.
    pub max_fields: usize,
    /// Policy for unknown non-critical fields.
    pub unknown_fields: UnknownFieldPolicy,
}

impl Limits {
    /// Default maximum message size: room for a 16 KiB record and its framing.
    pub const DEFAULT_MAX_MESSAGE_LEN: usize = 16 * 1024 + 256;
    /// Default maximum field count.
    pub const DEFAULT_MAX_FIELDS: usize = 64;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_len: Self::DEFAULT_MAX_MESSAGE_LEN,
            max_fields: Self::DEFAULT_MAX_FIELDS,
            unknown_fields: UnknownFieldPolicy::Skip,
        }
    }
}

/// The fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Message type (owned by the protocol; see `docs/wire.md`).
    pub msg_type: u8,
    /// Length of the body in bytes.
    pub body_len: u32,
    /// Session the message belongs to (0 before one is assigned).
    pub session: u64,
}

impl Header {
    /// Parse and check the header at the start of `buf` (more bytes may follow).
    pub fn parse(buf: &[u8], limits: &Limits) -> Result<Header, WireError> {
        if buf.len() >= 2 && buf[..2] != MAGIC {
            return Err(WireError::BadMagic);
        }
        if buf.len() >= 3 && buf[2] != VERSION {
            return Err(WireError::UnsupportedVersion(buf[2]));
        }
        let h: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(WireError::Truncated)?;
        let body_len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let total = HEADER_LEN.saturating_add(body_len as usize);
        if total > limits.max_message_len {
            return Err(WireError::MessageTooLarge {
                len: total,
                max: limits.max_message_len,
            });
        }
        Ok(Header {
            msg_type: h[3],
            body_len,
            session: u64::from_be_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
        })
    }

    /// Length of the whole message.
    pub fn message_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }

    /// The header's 16 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..2].copy_from_slice(&MAGIC);
        out[2] = VERSION;
        out[3] = self.msg_type;
        out[4..8].copy_from_slice(&self.body_len.to_be_bytes());
        out[8..16].copy_from_slice(&self.session.to_be_bytes());
        out
    }
}

/// One TLV field, borrowed from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field type, critical bit included.
    pub ty: u16,
    /// The value.
    pub value: &'a [u8],
}

impl Field<'_> {
    /// Whether the receiver must understand this field.
    pub fn is_critical(&self) -> bool {
        self.ty & CRITICAL != 0
    }
}

/// A checked sequence of TLV fields: a message body, or a nested structure such as a
/// certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields<'a> {
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Check that `bytes` is exactly a sequence of whole fields, at most `max_fields` of them.
    pub fn parse(bytes: &'a [u8], max_fields: usize) -> Result<Fields<'a>, WireError> {
        let mut rest = bytes;
        let mut count = 0usize;
        while !rest.is_empty() {
            if count == max_fields {
                return Err(WireError::TooManyFields { max: max_fields });
            }
            let (_, tail) = split_field(rest)?;
            rest = tail;
            count += 1;
        }
        Ok(Fields { bytes })
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Every field, in order.
    pub fn iter(&self) -> FieldIter<'a> {
        FieldIter { rest: self.bytes }
    }

    /// Every field of type `ty`, in order (for repeated fields).
    pub fn all(&self, ty: u16) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter().filter(move |f| f.ty == ty).map(|f| f.value)
    }

    /// The single field of type `ty`, if present; twice is an error.
    pub fn get(&self, ty: u16) -> Result<Option<&'a [u8]>, WireError> {
        let mut found = self.all(ty);
        let first = found.next();
        if found.next().is_some() {
            return Err(WireError::DuplicateField(ty));
        }
        Ok(first)
    }

    /// The single field of type `ty`; absent or twice is an error.
    pub fn bytes(&self, ty: u16) -> Result<&'a [u8], WireError> {
        self.get(ty)?.ok_or(WireError::MissingField(ty))
    }

    /// A fixed-length field.
    pub fn array<const N: usize>(&self, ty: u16) -> Result<[u8; N], WireError> {
        fixed(ty, self.bytes(ty)?)
    }

    /// A `u8` field.
    pub fn u8(&self, ty: u16) -> Result<u8, WireError> {
        Ok(self.array::<1>(ty)?[0])
    }

    /// A `u16` field.
    pub fn u16(&self, ty: u16) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(ty)?))
    }

    /// A `u32` field.
    pub fn u32(&self, ty: u16) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(ty)?))
    }

    /// A `u64` field.
    pub fn u64(&self, ty: u16) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(ty)?))
    }

    /// An optional `u64` field.
    pub fn opt_u64(&self, ty: u16) -> Result<Option<u64>, WireError> {
        self.get(ty)?
            .map(|v| fixed(ty, v).map(u64::from_be_bytes))
            .transpose()
    }

    /// A UTF-8 string field.
    pub fn str(&self, ty: u16) -> Result<&'a str, WireError> {
        core::str::from_utf8(self.bytes(ty)?).map_err(|_| WireError::BadValue(ty))
    }

    /// A UTF-8 string field, owned.
    pub fn string(&self, ty: u16) -> Result<String, WireError> {
        self.str(ty).map(String::from)
    }

    /// A socket address field (see [`encode_addr`]).
    pub fn addr(&self, ty: u16) -> Result<SocketAddr, WireError> {
        decode_addr(ty, self.bytes(ty)?)
    }

    /// A list of `u16` values packed in one field.
    pub fn u16_list(&self, ty: u16) -> Result<Vec<u16>, WireError> {
        let v = self.bytes(ty)?;
        if v.len() % 2 != 0 {
            return Err(WireError::BadFieldLength {
                field: ty,
                len: v.len(),
            });
        }
        Ok(v.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect())
    }

    /// Nested fields inside a field.
    pub fn nested(&self, ty: u16, max_fields: usize) -> Result<Fields<'a>, WireError> {
        Fields::parse(self.bytes(ty)?, max_fields)
    }

    /// Apply the unknown-field rules: `known` lists the field types the receiver
    /// understands for this message.
    pub fn check_known(&self, known: &[u16], policy: UnknownFieldPolicy) -> Result<(), WireError> {
        for f in self.iter() {
            if known.contains(&f.ty) {
                continue;
            }
            if f.is_critical() {
                return Err(WireError::UnknownCriticalField(f.ty));
            }
            if policy == UnknownFieldPolicy::Reject {
                return Err(WireError::UnknownField(f.ty));
            }
        }
        Ok(())
    }
}

/// Iterator over the fields of a checked [`Fields`].
#[derive(Clone, Debug)]
pub struct FieldIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = Field<'a>;
    fn next(&mut self) -> Option<Field<'a>> {
        // `Fields::parse` already checked the layout; a failure here just ends iteration.
        let (field, rest) = split_field(self.rest).ok()?;
        self.rest = rest;
        Some(field)
    }
}

fn split_field(buf: &[u8]) -> Result<(Field<'_>, &[u8]), WireError> {
    let h = buf.get(..FIELD_HEADER_LEN).ok_or(WireError::Truncated)?;
    let ty = u16::from_be_bytes([h[0], h[1]]);
    let len = u16::from_be_bytes([h[2], h[3]]) as usize;
    let end = FIELD_HEADER_LEN + len;
    let value = buf.get(FIELD_HEADER_LEN..end).ok_or(WireError::Truncated)?;
    Ok((Field { ty, value }, &buf[end..]))
}

fn fixed<const N: usize>(ty: u16, v: &[u8]) -> Result<[u8; N], WireError> {
    v.try_into().map_err(|_| WireError::BadFieldLength {
        field: ty,
        len: v.len(),
    })
}

/// Encode a socket address: family (4 or 6), the address (4 or 16 bytes), the port.
pub fn encode_addr(addr: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(19);
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

/// Decode what [`encode_addr`] made; `ty` names the field in errors.
pub fn decode_addr(ty: u16, v: &[u8]) -> Result<SocketAddr, WireError> {
    let bad_len = WireError::BadFieldLength {
        field: ty,
        len: v.len(),
    };
    let (ip, port) = match v.first() {
        Some(4) if v.len() == 7 => {
            let o: [u8; 4] = v[1..5].try_into().map_err(|_| bad_len)?;
            (IpAddr::V4(Ipv4Addr::from(o)), &v[5..])
        }
        Some(6) if v.len() == 19 => {
            let o: [u8; 16] = v[1..17].try_into().map_err(|_| bad_len)?;
            (IpAddr::V6(Ipv6Addr::from(o)), &v[17..])
        }
        Some(4) | Some(6) => return Err(bad_len),
        _ => return Err(WireError::BadValue(ty)),
    };
    Ok(SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]])))
}

/// Builds a sequence of TLV fields. Errors (a value too long for a field) are remembered
/// and returned by [`FieldWriter::finish`], so building can chain.
#[derive(Clone, Debug, Default)]
pub struct FieldWriter {
    buf: Vec<u8>,
    error: Option<WireError>,
}

impl FieldWriter {
    /// An empty field list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty field list with room for `bytes` of fields.
    pub fn with_capacity(bytes: usize) -> Self {
        FieldWriter {
            buf: Vec::with_capacity(bytes),
            error: None,
        }
    }

    /// The fields so far, or the first error: what [`FieldWriter::finish`] would return,
    /// without giving the writer up.
    pub fn fields(&self) -> Result<&[u8], WireError> {
        match &self.error {
            Some(e) => Err(*e),
            None => Ok(&self.buf),
        }
    }

    /// An empty field list after `room` zero bytes (a header the caller fills in place
    /// once the fields' length is known; [`FieldWriter::finish`] returns them in front),
    /// in a buffer with room for `capacity` bytes in all: a message is then built in one
    /// buffer of the right size instead of a growing one copied into another.
    pub fn with_room(room: usize, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(room));
        buf.resize(room, 0);
        FieldWriter { buf, error: None }
    }

    /// Append a field.
    pub fn bytes(mut self, ty: u16, value: &[u8]) -> Self {
        self.push(ty, value);
        self
    }

    /// Append a field (by reference, for loops).
    pub fn push(&mut self, ty: u16, value: &[u8]) {
        match u16::try_from(value.len()) {
            Ok(len) => {
                self.buf.extend_from_slice(&ty.to_be_bytes());
                self.buf.extend_from_slice(&len.to_be_bytes());
                self.buf.extend_from_slice(value);
            }
            Err(_) => {
                self.error
                    .get_or_insert(WireError::FieldTooLong(value.len()));
            }
        }
    }

    /// Append a `u8` field.
    pub fn u8(self, ty: u16, v: u8) -> Self {
        self.bytes(ty, &[v])
    }

    /// Append a `u16` field.
    pub fn u16(self, ty: u16, v: u16) -> Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    /// Append a `u32` field.
    pub fn u32(self, ty: u16, v: u32) -> Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    /// Append a `u64` field.
    pub fn u64(self, ty: u16, v: u64) -> Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    /// Append a UTF-8 string field.
    pub fn str(self, ty: u16, v: &str) -> Self {
        self.bytes(ty, v.as_bytes())
    }

    /// Append a socket address field.
    pub fn addr(self, ty: u16, v: SocketAddr) -> Self {
        self.bytes(ty, &encode_addr(v))
    }

    /// Append a list of `u16` values as one field.
    pub fn u16_list(self, ty: u16, values: &[u16]) -> Self {
        let packed: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        self.bytes(ty, &packed)
    }

    /// Append an optional field.
    pub fn opt(self, ty: u16, value: Option<&[u8]>) -> Self {
        match value {
            Some(v) => self.bytes(ty, v),
            None => self,
        }
    }

    /// Append a nested field list as one field.
    pub fn nested(self, ty: u16, inner: FieldWriter) -> Self {
        match inner.finish() {
            Ok(v) => self.bytes(ty, &v),
            Err(e) => {
                let mut s = self;
                s.error.get_or_insert(e);
                s
            }
        }
    }

    /// The encoded fields, or the first error.
    pub fn finish(self) -> Result<Vec<u8>, WireError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.buf),
        }
    }
}

/// A decoded message: header plus checked fields, borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The header.
    pub header: Header,
    /// The body's fields.
    pub fields: Fields<'a>,
}

impl<'a> Message<'a> {
    /// Decode exactly one message from `buf`.
    pub fn decode(buf: &'a [u8], limits: &Limits) -> Result<Message<'a>, WireError> {
        if buf.len() > limits.max_message_len {
            return Err(WireError::MessageTooLarge {
                len: buf.len(),
                max: limits.max_message_len,
            });
        }
        let header = Header::parse(buf, limits)?;
        let total = header.message_len();
        if buf.len() < total {
            return Err(WireError::Truncated);
        }
        if buf.len() > total {
            return Err(WireError::TrailingBytes);
        }
        let fields = Fields::parse(&buf[HEADER_LEN..], limits.max_fields)?;
        Ok(Message { header, fields })
    }

    /// The message type.
    pub fn msg_type(&self) -> u8 {
        self.header.msg_type
    }

    /// The session id.
    pub fn session(&self) -> u64 {
        self.header.session
    }
}

/// Encode a whole message from a header's type and session and a finished field list.
pub fn encode(msg_type: u8, session: u64, fields: FieldWriter) -> Result<Vec<u8>, WireError> {
    let body = fields.finish()?;
    let body_len = u32::try_from(body.len()).map_err(|_| WireError::FieldTooLong(body.len()))?;
    let header = Header {
        msg_type,
        body_len,
        session,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let fields = FieldWriter::new()
            .u8(1, 7)
            .u16(2, 0x1234)
            .u32(3 | CRITICAL, 0xdead_beef)
            .u64(4, u64::MAX)
            .str(5, "microwave")
            .addr(6, "192.0.2.1:4500".parse().unwrap())
            .addr(7, "[2001:db8::1]:500".parse().unwrap())
            .u16_list(8, &[1, 2, 3])
            .bytes(9, b"a")
            .bytes(9, b"b");
        encode(0x21, 42, fields).unwrap()
    }

    #[test]
    fn typed_fields_round_trip() {
        let buf = sample();
        let msg = Message::decode(&buf, &Limits::default()).unwrap();
        assert_eq!(msg.msg_type(), 0x21);
        assert_eq!(msg.session(), 42);
        let f = msg.fields;
        assert_eq!(f.u8(1).unwrap(), 7);
        assert_eq!(f.u16(2).unwrap(), 0x1234);
        assert_eq!(f.u32(3 | CRITICAL).unwrap(), 0xdead_beef);
        assert_eq!(f.u64(4).unwrap(), u64::MAX);
        assert_eq!(f.str(5).unwrap(), "microwave");
        assert_eq!(f.addr(6).unwrap(), "192.0.2.1:4500".parse().unwrap());
        assert_eq!(f.addr(7).unwrap(), "[2001:db8::1]:500".parse().unwrap());
        assert_eq!(f.u16_list(8).unwrap(), [1, 2, 3]);
        assert_eq!(f.all(9).collect::<Vec<_>>(), [b"a", b"b"]);
        assert_eq!(f.get(9), Err(WireError::DuplicateField(9)));
        assert_eq!(f.bytes(10), Err(WireError::MissingField(10)));
        assert_eq!(
            f.u32(1),
            Err(WireError::BadFieldLength { field: 1, len: 1 })
        );
        assert_eq!(f.opt_u64(10), Ok(None));
    }

    #[test]
    fn header_checks_are_strict() {
        let good = sample();
        let limits = Limits::default();
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Message::decode(&bad, &limits), Err(WireError::BadMagic));
        let mut bad = good.clone();
        bad[2] = 2;
        assert_eq!(
            Message::decode(&bad, &limits),
            Err(WireError::UnsupportedVersion(2))
        );
        assert_eq!(
            Message::decode(&good[..good.len() - 1], &limits),
            Err(WireError::Truncated)
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            Message::decode(&long, &limits),
            Err(WireError::TrailingBytes)
        );
        assert_eq!(
            Message::decode(&good[..5], &limits),
            Err(WireError::Truncated)
        );
        // A field whose length runs past the body.
        let mut bad = good.clone();
        bad[HEADER_LEN + 3] = 200;
        assert_eq!(Message::decode(&bad, &limits), Err(WireError::Truncated));
    }

    #[test]
    fn limits_bound_size_and_field_count() {
        let good = sample();
        let small = Limits {
            max_message_len: good.len() - 1,
            ..Limits::default()
        };
        assert!(matches!(
            Message::decode(&good, &small),
            Err(WireError::MessageTooLarge { .. })
        ));
        let few = Limits {
            max_fields: 9,
            ..Limits::default()
        };
        assert_eq!(
            Message::decode(&good, &few),
            Err(WireError::TooManyFields { max: 9 })
        );
        let exact = Limits {
            max_fields: 10,
            max_message_len: good.len(),
            ..Limits::default()
        };
        assert!(Message::decode(&good, &exact).is_ok());
    }

    #[test]
    fn unknown_field_policy() {
        let buf = sample();
        let msg = Message::decode(&buf, &Limits::default()).unwrap();
        let all = [1, 2, 3 | CRITICAL, 4, 5, 6, 7, 8, 9];
        assert_eq!(
            msg.fields.check_known(&all, UnknownFieldPolicy::Reject),
            Ok(())
        );
        let without_9 = &all[..8];
        assert_eq!(
            msg.fields.check_known(without_9, UnknownFieldPolicy::Skip),
            Ok(())
        );
        assert_eq!(
            msg.fields
                .check_known(without_9, UnknownFieldPolicy::Reject),
            Err(WireError::UnknownField(9))
        );
        let without_critical = [1, 2, 4, 5, 6, 7, 8, 9];
        assert_eq!(
            msg.fields
                .check_known(&without_critical, UnknownFieldPolicy::Skip),
            Err(WireError::UnknownCriticalField(3 | CRITICAL))
        );
    }

    #[test]
    fn oversize_values_are_an_encoding_error() {
        let big = alloc::vec![0u8; MAX_FIELD_LEN + 1];
        assert_eq!(
            encode(1, 0, FieldWriter::new().u8(1, 1).bytes(2, &big)),
            Err(WireError::FieldTooLong(MAX_FIELD_LEN + 1))
        );
        let nested = FieldWriter::new().bytes(1, &big);
        assert_eq!(
            FieldWriter::new().nested(3, nested).finish(),
            Err(WireError::FieldTooLong(MAX_FIELD_LEN + 1))
        );
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert_eq!(
            decode_addr(6, &[5, 1, 2, 3, 4, 0, 1]),
            Err(WireError::BadValue(6))
        );
        assert_eq!(
            decode_addr(6, &[4, 1, 2, 3, 4, 0]),
            Err(WireError::BadFieldLength { field: 6, len: 6 })
        );
        assert_eq!(decode_addr(6, &[]), Err(WireError::BadValue(6)));
    }
}
