//! TCP sequence numbers: 32-bit serial numbers compared across the wrap (RFC 1982, RFC 9293).

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// A sequence (or acknowledgement) number.
///
/// Ordering is serial-number ordering by the sign of the wrapping difference, meaningful for
/// numbers less than 2^31 apart. Raw `u32` comparison is wrong at the wrap; this type is the
/// only way the crate compares sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNum(pub u32);

impl SeqNum {
    /// Signed distance from `other` to `self` (positive when `self` is after `other`).
    pub fn diff(self, other: SeqNum) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// `self` moved by a signed offset.
    pub fn offset(self, by: i32) -> SeqNum {
        SeqNum(self.0.wrapping_add_signed(by))
    }

    /// Whether `self` lies in the half-open window `[start, end)`.
    pub fn in_window(self, start: SeqNum, end: SeqNum) -> bool {
        self.0.wrapping_sub(start.0) < end.0.wrapping_sub(start.0)
    }
}

impl PartialOrd for SeqNum {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SeqNum {
    /// Serial order. Numbers exactly 2^31 apart are incomparable in RFC 1982; here the one
    /// with the larger raw value is "before" (the difference is `i32::MIN`). Note that serial
    /// order is not transitive over the whole space, so do not sort sets spanning more than
    /// 2^31.
    fn cmp(&self, other: &Self) -> Ordering {
        self.diff(*other).cmp(&0)
    }
}

impl Add<u32> for SeqNum {
    type Output = SeqNum;
    fn add(self, n: u32) -> SeqNum {
        SeqNum(self.0.wrapping_add(n))
    }
}

impl AddAssign<u32> for SeqNum {
    fn add_assign(&mut self, n: u32) {
        *self = *self + n;
    }
}

impl Sub<u32> for SeqNum {
    type Output = SeqNum;
    fn sub(self, n: u32) -> SeqNum {
        SeqNum(self.0.wrapping_sub(n))
    }
}

impl Sub<SeqNum> for SeqNum {
    type Output = i32;
    fn sub(self, other: SeqNum) -> i32 {
        self.diff(other)
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_holds_across_the_wrap() {
        let a = SeqNum(u32::MAX - 10);
        let b = a + 20;
        assert_eq!(b, SeqNum(9));
        assert!(a < b);
        assert_eq!(b - a, 20);
        assert_eq!(a - b, -20);
        assert_eq!(b - 20u32, a);
        assert!(SeqNum(5) > SeqNum(u32::MAX));
        assert!(SeqNum(0x7fff_ffff) > SeqNum(0));
        assert!(SeqNum(0x8000_0001) < SeqNum(0));
    }

    #[test]
    fn offsets_and_windows_wrap() {
        assert_eq!(SeqNum(3).offset(-5), SeqNum(u32::MAX - 1));
        assert_eq!(SeqNum(u32::MAX).offset(2), SeqNum(1));
        let start = SeqNum(u32::MAX - 1);
        assert!(SeqNum(0).in_window(start, start + 4));
        assert!(!SeqNum(2).in_window(start, start + 4));
        assert!(!SeqNum(u32::MAX - 2).in_window(start, start + 4));
        let mut s = SeqNum(u32::MAX);
        s += 1;
        assert_eq!(s, SeqNum(0));
    }
}
