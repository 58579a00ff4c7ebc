//! Per-direction sequence offsets that can change at a point, like the kernel's
//! `nf_conntrack_seqadj`.
//!
//! A proxy that inserts or removes bytes in one direction must move every later sequence
//! number of that direction, and move the other direction's acknowledgements (and SACK blocks)
//! back. [`SeqAdjust`] holds one direction's offsets: `before` applies to sequence numbers
//! before the correction point, `after` from the point on.

use crate::seq::SeqNum;

/// One direction's sequence offset map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqAdjust {
    /// First original sequence number that `after` applies to.
    pub correction_pos: SeqNum,
    /// Offset for sequence numbers before `correction_pos`.
    pub before: i32,
    /// Offset for sequence numbers from `correction_pos` on.
    pub after: i32,
}

impl SeqAdjust {
    /// A constant offset (for example between an old and a new initial sequence number).
    pub fn constant(offset: i32) -> Self {
        SeqAdjust {
            correction_pos: SeqNum(0),
            before: offset,
            after: offset,
        }
    }

    /// The difference between two initial sequence numbers: maps `from` onto `to`.
    pub fn between(from: SeqNum, to: SeqNum) -> Self {
        Self::constant(to - from)
    }

    /// Whether this map changes anything.
    pub fn is_identity(&self) -> bool {
        self.before == 0 && self.after == 0
    }

    /// Records that from original sequence `pos` on, `delta` more bytes are inserted (negative:
    /// removed), and returns whether it was recorded. As in the kernel, only a point after the
    /// current one moves the map (unless the map is constant): a retransmission of a segment
    /// that was already resized must not count twice.
    pub fn shift_from(&mut self, pos: SeqNum, delta: i32) -> bool {
        if self.before != self.after && pos <= self.correction_pos {
            return false;
        }
        self.correction_pos = pos;
        self.before = self.after;
        self.after = self.after.wrapping_add(delta);
        true
    }

    /// The offset that applies to original sequence number `seq`.
    pub fn offset_for(&self, seq: SeqNum) -> i32 {
        if seq < self.correction_pos {
            self.before
        } else {
            self.after
        }
    }

    /// Translates a sequence number of this direction (original to rewritten).
    pub fn map(&self, seq: SeqNum) -> SeqNum {
        seq.offset(self.offset_for(seq))
    }

    /// Translates an acknowledgement or SACK edge of the other direction, which refers to
    /// rewritten numbers of this direction, back to original numbers.
    ///
    /// Where inserted bytes leave a gap in the rewritten space, an ack inside the inserted
    /// bytes maps to the correction point (the original data before it is all acknowledged).
    /// Where removed bytes make rewritten numbers ambiguous, the earlier original number is
    /// chosen, as the kernel does: acknowledging less is safe, more is not.
    pub fn unmap(&self, ack: SeqNum) -> SeqNum {
        let early = ack.offset(self.before.wrapping_neg());
        if early < self.correction_pos {
            return early;
        }
        let late = ack.offset(self.after.wrapping_neg());
        if late < self.correction_pos {
            self.correction_pos
        } else {
            late
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_offset_maps_and_unmaps_across_the_wrap() {
        let a = SeqAdjust::between(SeqNum(u32::MAX - 5), SeqNum(10));
        assert_eq!(a.map(SeqNum(u32::MAX - 5)), SeqNum(10));
        assert_eq!(a.map(SeqNum(u32::MAX)), SeqNum(15));
        assert_eq!(a.unmap(SeqNum(16)), SeqNum(0));
        assert!(!a.is_identity());
        assert!(SeqAdjust::default().is_identity());
    }

    #[test]
    fn insertion_shifts_later_data_and_clamps_acks_in_the_gap() {
        let mut a = SeqAdjust::constant(100);
        assert!(a.shift_from(SeqNum(1000), 8));
        assert_eq!(a.map(SeqNum(999)), SeqNum(1099));
        assert_eq!(a.map(SeqNum(1000)), SeqNum(1108));
        assert_eq!(a.unmap(SeqNum(1100)), SeqNum(1000));
        assert_eq!(
            a.unmap(SeqNum(1104)),
            SeqNum(1000),
            "ack inside inserted bytes"
        );
        assert_eq!(a.unmap(SeqNum(1108)), SeqNum(1000));
        assert_eq!(a.unmap(SeqNum(1109)), SeqNum(1001));
        // A retransmission at the same or an older point does not count again.
        assert!(!a.shift_from(SeqNum(1000), 8));
        assert!(!a.shift_from(SeqNum(500), 2));
        assert_eq!(
            (a.correction_pos, a.before, a.after),
            (SeqNum(1000), 100, 108)
        );
        assert!(a.shift_from(SeqNum(2000), -10));
        assert_eq!(
            (a.correction_pos, a.before, a.after),
            (SeqNum(2000), 108, 98)
        );
    }

    #[test]
    fn removal_resolves_ambiguous_acks_to_the_earlier_number() {
        let mut a = SeqAdjust::default();
        assert!(a.shift_from(SeqNum(1000), -4));
        assert_eq!(a.map(SeqNum(1000)), SeqNum(996));
        assert_eq!(a.unmap(SeqNum(996)), SeqNum(996));
        assert_eq!(a.unmap(SeqNum(1000)), SeqNum(1004));
        assert_eq!(a.unmap(SeqNum(1001)), SeqNum(1005));
    }
}
