//! Cutting a byte stream into whole messages, holding at most one message in memory.

use alloc::vec::Vec;

use super::{HEADER_LEN, Header, Limits, WireError};

/// Splits a reliable byte stream into deputy messages.
///
/// It buffers at most one message: [`Deframer::fill`] takes only the bytes the current
/// message still needs and reports how many it took, and [`Deframer::take`] hands out the
/// message once it is whole. A header with bad magic, an unknown version or a length over
/// [`Limits::max_message_len`] is reported as soon as its first bytes arrive; after an
/// error the stream is unusable and should be closed.
///
/// ```
/// use deputy::wire::{Deframer, FieldWriter, Limits, encode};
///
/// let one = encode(1, 0, FieldWriter::new().u8(1, 1)).unwrap();
/// let two = encode(2, 0, FieldWriter::new().u8(1, 2)).unwrap();
/// let stream = [one.clone(), two.clone()].concat();
///
/// let mut deframer = Deframer::new(Limits::default());
/// let mut got = Vec::new();
/// let mut rest = &stream[..];
/// while !rest.is_empty() {
///     let used = deframer.fill(rest).unwrap();
///     rest = &rest[used..];
///     while let Some(message) = deframer.take() {
///         got.push(message);
///     }
/// }
/// assert_eq!(got, [one, two]);
/// ```
#[derive(Debug)]
pub struct Deframer {
    limits: Limits,
    buf: Vec<u8>,
    /// Length of the message being assembled, once its header is known.
    want: Option<usize>,
    failed: Option<WireError>,
}

impl Deframer {
    /// A deframer that enforces `limits` on every message.
    pub fn new(limits: Limits) -> Self {
        Deframer {
            limits,
            buf: Vec::new(),
            want: None,
            failed: None,
        }
    }

    /// Take as many bytes of `data` as the current message needs; returns how many were
    /// taken. Takes nothing while a whole message waits in [`Deframer::take`].
    pub fn fill(&mut self, data: &[u8]) -> Result<usize, WireError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.buf.is_empty() && self.want.is_none() {
            // A whole message at the start of `data`, as a large read brings them: one copy
            // into a buffer of its exact length, and the header parsed once. Anything else
            // (a partial message, or a bad header, whose error the loop below reports)
            // goes the general way, which ends in the same state.
            if let Ok(h) = Header::parse(data, &self.limits) {
                let len = h.message_len();
                if let Some(whole) = data.get(..len) {
                    self.buf.reserve_exact(len);
                    self.buf.extend_from_slice(whole);
                    self.want = Some(len);
                    return Ok(len);
                }
            }
        }
        let mut used = 0;
        loop {
            let target = self.want.unwrap_or(HEADER_LEN);
            if self.buf.len() >= target {
                if self.want.is_some() {
                    return Ok(used);
                }
                // The header is complete: learn the message length.
                match Header::parse(&self.buf, &self.limits) {
                    Ok(h) => {
                        let len = h.message_len();
                        self.buf.reserve_exact(len - self.buf.len());
                        self.want = Some(len);
                    }
                    Err(e) => return Err(*self.failed.insert(e)),
                }
                continue;
            }
            // Check magic and version as soon as they arrive, before waiting for more (once
            // the whole header has parsed, they are known to be good).
            if self.want.is_none()
                && let Err(e @ (WireError::BadMagic | WireError::UnsupportedVersion(_))) =
                    Header::parse(&self.buf, &self.limits)
            {
                return Err(*self.failed.insert(e));
            }
            let rest = &data[used..];
            if rest.is_empty() {
                return Ok(used);
            }
            if self.buf.capacity() == 0 {
                // A new message: one allocation of its whole length when its header is
                // all here (the length is within the limits once the header parses).
                let len = Header::parse(rest, &self.limits).map_or(HEADER_LEN, |h| h.message_len());
                self.buf.reserve_exact(len);
            }
            let n = (target - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            used += n;
        }
    }

    /// The next whole message, if one is ready.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        match self.want {
            Some(len) if self.buf.len() == len => {
                self.want = None;
                Some(core::mem::take(&mut self.buf))
            }
            _ => None,
        }
    }

    /// Bytes of a partial message held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FieldWriter, encode};
    use super::*;

    fn frames(deframer: &mut Deframer, data: &[u8]) -> Result<Vec<Vec<u8>>, WireError> {
        let mut out = Vec::new();
        let mut rest = data;
        loop {
            let used = deframer.fill(rest)?;
            rest = &rest[used..];
            let mut progressed = used > 0;
            while let Some(m) = deframer.take() {
                out.push(m);
                progressed = true;
            }
            if rest.is_empty() || !progressed {
                return Ok(out);
            }
        }
    }

    #[test]
    fn byte_at_a_time_and_all_at_once_agree() {
        let msgs: Vec<Vec<u8>> = (0..5u8)
            .map(|i| encode(i, u64::from(i), FieldWriter::new().bytes(1, &[i; 40])).unwrap())
            .collect();
        let stream = msgs.concat();
        let mut d = Deframer::new(Limits::default());
        assert_eq!(frames(&mut d, &stream).unwrap(), msgs);
        let mut d = Deframer::new(Limits::default());
        let mut got = Vec::new();
        for b in &stream {
            got.extend(frames(&mut d, core::slice::from_ref(b)).unwrap());
            assert!(d.buffered() <= msgs[0].len());
        }
        assert_eq!(got, msgs);
    }

    #[test]
    fn garbage_and_oversize_are_refused_early_and_stick() {
        let mut d = Deframer::new(Limits::default());
        assert_eq!(d.fill(b"GET / HTTP/1.1"), Err(WireError::BadMagic));
        assert_eq!(d.fill(b"DP"), Err(WireError::BadMagic));

        let mut d = Deframer::new(Limits {
            max_message_len: 64,
            ..Limits::default()
        });
        let big = encode(1, 0, FieldWriter::new().bytes(1, &[0; 100])).unwrap();
        assert!(matches!(
            d.fill(&big),
            Err(WireError::MessageTooLarge { len: 120, max: 64 })
        ));
        assert!(d.buffered() <= HEADER_LEN);
    }
}
