//! A byte stream rebuilt from TCP segments that may arrive late, twice or out of order: what
//! rackd reads of a connection's first bytes when it speaks EDP in a program's place.

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct Reassembly {
    /// The stream from its first byte up to the first gap.
    bytes: Vec<u8>,
    /// Pieces beyond the gap, by offset (the longest one seen at each offset).
    early: BTreeMap<usize, Vec<u8>>,
}

impl Reassembly {
    /// Adds `bytes` found at `offset` of the stream: appended when they continue it, kept aside
    /// when they arrive early, and the early ones joined once they fit.
    pub fn place(&mut self, offset: usize, bytes: &[u8]) {
        if offset > self.bytes.len() {
            let slot = self.early.entry(offset).or_default();
            if bytes.len() > slot.len() {
                *slot = bytes.to_vec();
            }
            return;
        }
        self.append_from(offset, bytes);
        while let Some(entry) = self.early.first_entry() {
            if *entry.key() > self.bytes.len() {
                break;
            }
            let (at, piece) = entry.remove_entry();
            self.append_from(at, &piece);
        }
    }

    /// The part of `bytes` (at `offset`, not beyond the end) that is new.
    fn append_from(&mut self, offset: usize, bytes: &[u8]) {
        let skip = self.bytes.len() - offset;
        if skip < bytes.len() {
            self.bytes.extend_from_slice(&bytes[skip..]);
        }
    }

    /// The stream up to the first gap.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_in_any_order_overlapping_or_repeated_give_the_stream() {
        let stream: Vec<u8> = (0..=99).collect();
        let mut r = Reassembly::default();
        r.place(60, &stream[60..80]);
        r.place(30, &stream[30..50]);
        assert_eq!(r.len(), 0, "nothing before the first gap is filled");
        r.place(0, &stream[0..35]);
        assert_eq!(
            r.bytes(),
            &stream[..50],
            "the early piece joins once it fits"
        );
        r.place(10, &stream[10..20]);
        r.place(45, &stream[45..65]);
        assert_eq!(r.bytes(), &stream[..80]);
        r.place(70, &stream[70..100]);
        r.place(70, &stream[70..75]);
        assert_eq!(r.bytes(), &stream[..]);
    }

    #[test]
    fn a_longer_copy_at_the_same_offset_wins() {
        let mut r = Reassembly::default();
        r.place(5, b"fg");
        r.place(5, b"fghij");
        r.place(5, b"f");
        r.place(0, b"abcde");
        assert_eq!(r.bytes(), b"abcdefghij");
    }
}
