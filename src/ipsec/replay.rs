//! The receiver's anti-replay window (RFC 4303 §3.4.3 and Appendix A).
//!
//! The window remembers which of the last `size` sequence numbers below the highest one
//! seen have arrived. The data plane checks and updates it only after a packet's ICV has
//! verified, so a forged packet can neither probe nor move it.
//!
//! Sequence numbers are held as 64-bit values; with 32-bit sequence numbers the high half
//! is always zero. With extended sequence numbers (ESN) [`ReplayWindow::infer_esn`]
//! reconstructs the untransmitted high half per RFC 4303 Appendix A2.2.

use alloc::vec;
use alloc::vec::Vec;

use super::{IpsecError, ReplayKind};

/// A sliding anti-replay window of a configurable size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    size: u32,
    /// Highest sequence number accepted so far (0: none yet).
    top: u64,
    /// Ring of bits: bit `seq % (64 * bits.len())` is set when `seq` (within the window)
    /// has been received.
    bits: Vec<u64>,
}

impl ReplayWindow {
    /// The default window: 64 packets (RFC 4303 §3.4.3 recommends at least 64).
    pub const DEFAULT_SIZE: u32 = 64;
    /// The largest window accepted.
    pub const MAX_SIZE: u32 = 4096;

    /// A window of `size` packets (1 ..= [`ReplayWindow::MAX_SIZE`]).
    pub fn new(size: u32) -> Result<ReplayWindow, IpsecError> {
        if size == 0 || size > Self::MAX_SIZE {
            return Err(IpsecError::ReplayWindowSize(size));
        }
        let words = size.div_ceil(64) as usize;
        Ok(ReplayWindow {
            size,
            top: 0,
            bits: vec![0; words],
        })
    }

    /// The configured size.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The highest sequence number accepted so far (0 before the first).
    pub fn top(&self) -> u64 {
        self.top
    }

    fn ring_bits(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    fn slot(&self, seq: u64) -> (usize, u64) {
        let pos = seq % self.ring_bits();
        ((pos / 64) as usize, 1u64 << (pos % 64))
    }

    fn is_set(&self, seq: u64) -> bool {
        let (w, m) = self.slot(seq);
        self.bits.get(w).is_some_and(|word| word & m != 0)
    }

    fn set(&mut self, seq: u64, on: bool) {
        let (w, m) = self.slot(seq);
        if let Some(word) = self.bits.get_mut(w) {
            if on {
                *word |= m;
            } else {
                *word &= !m;
            }
        }
    }

    /// Whether `seq` would be accepted. Does not change the window.
    pub fn check(&self, seq: u64) -> Result<(), ReplayKind> {
        if seq == 0 {
            return Err(ReplayKind::Zero);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= u64::from(self.size) {
            return Err(ReplayKind::TooOld);
        }
        if self.is_set(seq) {
            Err(ReplayKind::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Record `seq` as received; call only after [`ReplayWindow::check`] passed and the
    /// packet's integrity verified. Returns the same verdict as `check`.
    pub fn accept(&mut self, seq: u64) -> Result<(), ReplayKind> {
        self.check(seq)?;
        if seq > self.top {
            let advance = seq - self.top;
            if advance >= self.ring_bits() {
                self.bits.iter_mut().for_each(|w| *w = 0);
            } else {
                let mut s = self.top;
                while s < seq {
                    s += 1;
                    self.set(s, false);
                }
            }
            self.top = seq;
        }
        self.set(seq, true);
        Ok(())
    }

    /// The full 64-bit sequence number of a packet that carries the low 32 bits `low`,
    /// inferred from the window (RFC 4303 Appendix A2.2). `None` when the high half would
    /// overflow.
    pub fn infer_esn(&self, low: u32) -> Option<u64> {
        let w = self.size;
        let top_low = self.top as u32;
        let top_high = (self.top >> 32) as u32;
        let high = if top_low >= w - 1 {
            // The window lies within one 2^32 subspace.
            if low >= top_low - (w - 1) {
                Some(top_high)
            } else {
                top_high.checked_add(1)
            }
        } else {
            // The window spans two subspaces.
            if low >= top_low.wrapping_sub(w - 1) {
                Some(top_high.saturating_sub(1))
            } else {
                Some(top_high)
            }
        }?;
        Some((u64::from(high) << 32) | u64::from(low))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_old_and_reordered_packets() {
        let mut w = ReplayWindow::new(64).unwrap();
        assert_eq!(w.check(0), Err(ReplayKind::Zero));
        for s in 1..=100 {
            w.accept(s).unwrap();
        }
        // Duplicate.
        assert_eq!(w.check(100), Err(ReplayKind::Duplicate));
        assert_eq!(w.check(37), Err(ReplayKind::Duplicate));
        // Left of the window: 100 - 36 = 64 >= size.
        assert_eq!(w.check(36), Err(ReplayKind::TooOld));
        // Skip 101..=109, take 110, then the reordered ones arrive within the window.
        w.accept(110).unwrap();
        assert_eq!(w.check(105), Ok(()));
        w.accept(105).unwrap();
        assert_eq!(w.accept(105), Err(ReplayKind::Duplicate));
        assert_eq!(
            w.check(101),
            Ok(()),
            "101 is inside the window and never arrived"
        );
        assert_eq!(
            w.check(47),
            Err(ReplayKind::Duplicate),
            "the window's left edge"
        );
        assert_eq!(w.check(46), Err(ReplayKind::TooOld));
        assert_eq!(w.top(), 110);
    }

    #[test]
    fn big_jumps_clear_the_window_and_sizes_are_bounded() {
        for size in [1, 63, 64, 65, 1024, ReplayWindow::MAX_SIZE] {
            let mut w = ReplayWindow::new(size).unwrap();
            w.accept(5).unwrap();
            w.accept(5 + 10_000).unwrap();
            assert_eq!(w.check(5 + 10_000), Err(ReplayKind::Duplicate));
            let oldest_ok = 5 + 10_000 - u64::from(size) + 1;
            if size > 1 {
                assert_eq!(w.check(oldest_ok), Ok(()), "size {size}");
            }
            assert_eq!(
                w.check(oldest_ok - 1),
                Err(ReplayKind::TooOld),
                "size {size}"
            );
            // Ring slots reused after the jump must read as not received.
            for s in oldest_ok..5 + 10_000 {
                assert_eq!(w.check(s), Ok(()), "size {size} seq {s}");
            }
        }
        assert!(ReplayWindow::new(0).is_err());
        assert!(ReplayWindow::new(ReplayWindow::MAX_SIZE + 1).is_err());
    }

    #[test]
    fn a_1024_packet_window_tracks_every_slot() {
        let mut w = ReplayWindow::new(1024).unwrap();
        for s in (2..=2048).step_by(2) {
            w.accept(s).unwrap();
        }
        for s in 1025..=2048 {
            let expect = if s % 2 == 0 {
                Err(ReplayKind::Duplicate)
            } else {
                Ok(())
            };
            assert_eq!(w.check(s), expect, "seq {s}");
        }
        assert_eq!(w.check(1024), Err(ReplayKind::TooOld));
    }

    #[test]
    fn esn_high_bits_are_inferred_across_the_boundary() {
        let mut w = ReplayWindow::new(64).unwrap();
        // Before anything arrives, a low number is in the first subspace.
        assert_eq!(w.infer_esn(1), Some(1));
        // Top just below 2^32.
        let top = (1u64 << 32) - 2;
        w.accept(top).unwrap();
        assert_eq!(w.infer_esn(0xffff_fff0), Some(0xffff_fff0));
        assert_eq!(w.infer_esn(3), Some((1u64 << 32) + 3), "wrapped forward");
        // Top just above 2^32: the window spans both subspaces.
        w.accept((1u64 << 32) + 5).unwrap();
        assert_eq!(
            w.infer_esn(0xffff_fff0),
            Some(0xffff_fff0),
            "late packet from below"
        );
        assert_eq!(w.infer_esn(7), Some((1u64 << 32) + 7));
        // The very top of the 64-bit space cannot go further.
        let mut w = ReplayWindow::new(64).unwrap();
        w.accept(u64::MAX - 1).unwrap();
        assert_eq!(w.infer_esn(0), None);
    }
}
