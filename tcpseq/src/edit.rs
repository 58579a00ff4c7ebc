//! Rewrites of a [`TcpIpPacket`] that keep its checksums right.
//!
//! Local edits update the TCP checksum by RFC 1624 (`HC' = ~(~HC + ~m + m')`) over the
//! 16-bit-aligned words that changed, so a rewrite costs the same for a 64 KiB GSO packet as
//! for a 60-byte ACK. In [`Checksum::Partial`] mode the field holds only the pseudo-header sum:
//! header and payload edits leave it alone and pseudo-header edits (addresses, TCP length)
//! adjust it. The IPv4 header checksum is updated the same way.

use std::net::IpAddr;
use std::ops::Range;

use crate::checksum;
use crate::options::{self, TcpOption, TcpOptions, MAX_LEN, NOP};
use crate::packet::{tcp_checksum_at, Checksum, Family, TcpIpPacket};
use crate::seq::SeqNum;
use crate::seqadj::SeqAdjust;
use crate::tcp::{self, Flags};
use crate::{ipv4, ipv6, Error};

/// Where one option sits in the options area (offsets fit a byte: the area is 40 bytes).
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    kind: u8,
    at: u8,
    len: u8,
}

impl Slot {
    fn at(&self) -> usize {
        usize::from(self.at)
    }
    fn len(&self) -> usize {
        usize::from(self.len)
    }
    fn end(&self) -> usize {
        self.at() + self.len()
    }
}

/// The options of a header, located once (at most 40 one-byte options fit).
#[derive(Debug)]
struct OptionMap {
    slots: [Slot; MAX_LEN],
    count: usize,
    /// End of the meaningful options (before EOL and padding).
    end: usize,
}

impl OptionMap {
    fn find(&self, kind: u8) -> Option<Slot> {
        self.slots[..self.count]
            .iter()
            .copied()
            .find(|s| s.kind == kind)
    }
    fn all(&self, kind: u8) -> impl Iterator<Item = Slot> + '_ {
        self.slots[..self.count]
            .iter()
            .copied()
            .filter(move |s| s.kind == kind)
    }
}

fn write16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn read16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn read32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4 packet",
        Family::V6 => "IPv6 packet",
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpIpPacket<T> {
    fn check_field(&self) -> u16 {
        read16(self.buf.as_ref(), tcp_checksum_at(self.tcp_offset))
    }

    fn set_check_field(&mut self, v: u16) {
        let at = tcp_checksum_at(self.tcp_offset);
        write16(self.buf.as_mut(), at, v);
    }

    /// Replaces TCP header bytes at `rel` (relative to the TCP header; never the checksum
    /// field) and keeps a complete checksum right. The sums run over the enclosing 16-bit
    /// words, as option fields can start at odd offsets.
    fn edit_tcp(&mut self, rel: usize, new: &[u8]) {
        let at = self.tcp_offset + rel;
        let end = at + new.len();
        let (mode, check_at) = (self.mode, tcp_checksum_at(self.tcp_offset));
        let b = self.buf.as_mut();
        if mode == Checksum::Partial {
            b[at..end].copy_from_slice(new);
            return;
        }
        let words = (at - (rel & 1))..(end + ((rel + new.len()) & 1));
        let old = checksum::sum(&b[words.clone()]);
        b[at..end].copy_from_slice(new);
        let new = checksum::sum(&b[words]);
        let c = checksum::update(read16(b, check_at), old, new);
        write16(b, check_at, c);
    }

    /// Accounts for a change of pseudo-header words from sum `old` to `new`, in either mode.
    fn adjust_for_pseudo(&mut self, old: u32, new: u32) {
        let c = match self.mode {
            Checksum::Complete => checksum::update(self.check_field(), old, new),
            Checksum::Partial => checksum::update_partial(self.check_field(), old, new),
        };
        self.set_check_field(c);
    }

    /// Replaces IP header bytes that are also in the pseudo-header (addresses).
    fn edit_ip_pseudo(&mut self, range: Range<usize>, new: &[u8]) {
        let old = checksum::sum(&self.buf.as_ref()[range.clone()]);
        self.buf.as_mut()[range].copy_from_slice(new);
        let new = checksum::sum(new);
        self.adjust_for_pseudo(old, new);
        self.adjust_ipv4_header(old, new);
    }

    fn adjust_ipv4_header(&mut self, old: u32, new: u32) {
        if self.family == Family::V4 {
            let b = self.buf.as_mut();
            let c = checksum::update(read16(b, ipv4::CHECKSUM.start), old, new);
            write16(b, ipv4::CHECKSUM.start, c);
        }
    }

    pub fn set_src_port(&mut self, port: u16) {
        self.edit_tcp(tcp::SRC_PORT.start, &port.to_be_bytes());
    }
    pub fn set_dst_port(&mut self, port: u16) {
        self.edit_tcp(tcp::DST_PORT.start, &port.to_be_bytes());
    }
    pub fn set_seq(&mut self, seq: SeqNum) {
        self.edit_tcp(tcp::SEQ.start, &seq.0.to_be_bytes());
    }
    pub fn set_ack(&mut self, ack: SeqNum) {
        self.edit_tcp(tcp::ACK.start, &ack.0.to_be_bytes());
    }
    /// Sets the raw (unscaled) window field.
    pub fn set_window(&mut self, window: u16) {
        self.edit_tcp(tcp::WINDOW.start, &window.to_be_bytes());
    }
    /// Advertises `bytes` of window for a connection whose window scale shift is `scale`,
    /// rounding down (never offering more than `bytes`) and saturating at the largest field.
    /// Returns the window in bytes actually advertised.
    pub fn set_window_bytes(&mut self, bytes: u32, scale: u8) -> u32 {
        let scale = scale.min(14);
        let field = (bytes >> scale).min(u32::from(u16::MAX)) as u16;
        self.set_window(field);
        u32::from(field) << scale
    }
    /// Sets the flags byte (CWR..FIN).
    pub fn set_flags(&mut self, flags: Flags) {
        let rel = tcp::FLAGS;
        let b = self.buf.as_ref()[self.tcp_offset + rel - 1];
        // The flags share a 16-bit word with the data offset; rewrite the word.
        self.edit_tcp(rel - 1, &[b, flags.0]);
    }

    /// Replaces the source address (of the packet's family), fixing both checksums.
    pub fn set_src_addr(&mut self, addr: IpAddr) -> Result<(), Error> {
        self.set_addr(addr, true)
    }
    /// Replaces the destination address (of the packet's family), fixing both checksums.
    pub fn set_dst_addr(&mut self, addr: IpAddr) -> Result<(), Error> {
        self.set_addr(addr, false)
    }

    fn set_addr(&mut self, addr: IpAddr, src: bool) -> Result<(), Error> {
        match (self.family, addr) {
            (Family::V4, IpAddr::V4(a)) => {
                let r = if src { ipv4::SRC_ADDR } else { ipv4::DST_ADDR };
                self.edit_ip_pseudo(r, &a.octets());
            }
            (Family::V6, IpAddr::V6(a)) => {
                let r = if src { ipv6::SRC_ADDR } else { ipv6::DST_ADDR };
                self.edit_ip_pseudo(r, &a.octets());
            }
            (f, _) => return Err(Error::FamilyMismatch(family_name(f))),
        }
        Ok(())
    }

    /// Translates this packet's sequence number with its direction's map.
    pub fn adjust_seq(&mut self, map: &SeqAdjust) {
        let seq = self.tcp().seq();
        self.set_seq(map.map(seq));
    }

    /// Translates the acknowledgement number (when the ACK flag is set) and every SACK edge
    /// back with the *other* direction's map. Fails without changing anything when the options
    /// are malformed.
    pub fn adjust_ack(&mut self, other_direction: &SeqAdjust) -> Result<(), Error> {
        let opts = self.option_map()?;
        if self.tcp().flags().ack() {
            let ack = self.tcp().ack();
            self.set_ack(other_direction.unmap(ack));
        }
        self.map_sack_in(&opts, |s| other_direction.unmap(s));
        Ok(())
    }

    /// Applies `f` to every SACK block edge; returns how many blocks there were.
    pub fn map_sack(&mut self, f: impl FnMut(SeqNum) -> SeqNum) -> Result<usize, Error> {
        let opts = self.option_map()?;
        Ok(self.map_sack_in(&opts, f))
    }

    fn map_sack_in(&mut self, opts: &OptionMap, mut f: impl FnMut(SeqNum) -> SeqNum) -> usize {
        let mut blocks = 0;
        for slot in opts.all(options::SACK) {
            // All edges of the option in one edit: one checksum update instead of eight.
            let rel = tcp::OPTIONS_START + slot.at() + 2;
            let len = slot.len() - 2;
            let at = self.tcp_offset + rel;
            let mut edges = [0u8; 32];
            for (new, old) in edges[..len]
                .chunks_exact_mut(4)
                .zip(self.buf.as_ref()[at..at + len].chunks_exact(4))
            {
                let old = SeqNum(u32::from_be_bytes([old[0], old[1], old[2], old[3]]));
                new.copy_from_slice(&f(old).0.to_be_bytes());
            }
            self.edit_tcp(rel, &edges[..len]);
            blocks += len / 8;
        }
        blocks
    }

    /// Adds `tsval_delta` to TSval and, when the ACK flag is set (RFC 7323: TSecr is only
    /// meaningful then), `tsecr_delta` to TSecr, both wrapping. Returns whether the packet had
    /// a timestamps option. The inverse is the same call with the deltas' `wrapping_neg()`.
    pub fn translate_timestamps(
        &mut self,
        tsval_delta: u32,
        tsecr_delta: u32,
    ) -> Result<bool, Error> {
        let opts = self.option_map()?;
        let Some(slot) = opts.find(options::TIMESTAMPS) else {
            return Ok(false);
        };
        let rel = tcp::OPTIONS_START + slot.at() + 2;
        let at = self.tcp_offset + rel;
        let b = self.buf.as_ref();
        let tsval = read32(b, at).wrapping_add(tsval_delta);
        let mut tsecr = read32(b, at + 4);
        if self.tcp().flags().ack() {
            tsecr = tsecr.wrapping_add(tsecr_delta);
        }
        let mut new = [0u8; 8];
        new[..4].copy_from_slice(&tsval.to_be_bytes());
        new[4..].copy_from_slice(&tsecr.to_be_bytes());
        self.edit_tcp(rel, &new);
        Ok(true)
    }

    /// Lowers the MSS option to `max` if it is larger; returns whether it changed.
    pub fn clamp_mss(&mut self, max: u16) -> Result<bool, Error> {
        let opts = self.option_map()?;
        let Some(slot) = opts.find(options::MSS) else {
            return Ok(false);
        };
        let rel = tcp::OPTIONS_START + slot.at() + 2;
        let mss = read16(self.buf.as_ref(), self.tcp_offset + rel);
        if mss <= max {
            return Ok(false);
        }
        self.edit_tcp(rel, &max.to_be_bytes());
        Ok(true)
    }

    /// Appends `option` after the existing options (trailing NOP/EOL padding is reused),
    /// zero-pads the header to a multiple of 4 and moves the payload. The buffer must have room
    /// beyond [`len`](TcpIpPacket::len) for the growth (see `insert_option_growing` for a
    /// `Vec`). IP lengths and all checksums are updated.
    pub fn insert_option(&mut self, option: &TcpOption<'_>) -> Result<(), Error> {
        let opts = self.option_map()?;
        let mut area = [0u8; MAX_LEN];
        let tcp = self.tcp();
        let old = tcp.options_bytes();
        // Trailing NOPs are padding: the new option can take their place.
        let keep = opts.slots[..opts.count]
            .iter()
            .rev()
            .find(|s| s.kind != NOP)
            .map_or(0, Slot::end);
        let need = keep + option.wire_len();
        if need > MAX_LEN {
            return Err(Error::OptionSpace { need });
        }
        area[..keep].copy_from_slice(&old[..keep]);
        option.emit(&mut area[keep..])?;
        self.replace_options(&area[..need.next_multiple_of(4)])
    }

    /// Removes the first option of `kind`, packing the rest and shrinking the header when a
    /// multiple of 4 bytes frees up. IP lengths and all checksums are updated.
    pub fn remove_option(&mut self, kind: u8) -> Result<(), Error> {
        let opts = self.option_map()?;
        let slot = opts.find(kind).ok_or(Error::NoOption(kind))?;
        let mut area = [0u8; MAX_LEN];
        let tcp = self.tcp();
        let old = tcp.options_bytes();
        area[..slot.at()].copy_from_slice(&old[..slot.at()]);
        let rest = &old[slot.end()..opts.end];
        area[slot.at()..slot.at() + rest.len()].copy_from_slice(rest);
        let len = opts.end - slot.len();
        self.replace_options(&area[..len.next_multiple_of(4)])
    }

    /// Writes a new options area (a multiple of 4, at most 40 bytes), moving the payload and
    /// updating data offset, IP length and checksums.
    fn replace_options(&mut self, area: &[u8]) -> Result<(), Error> {
        let off = self.tcp_offset;
        let old_hl = self.tcp().header_len();
        let new_hl = tcp::HEADER_LEN + area.len();
        let old_tcp_len = self.tcp_len();
        let new_tcp_len = old_tcp_len + new_hl - old_hl;
        let new_end = off + new_tcp_len;
        let have = self.buf.as_ref().len();
        if new_end > have {
            return Err(Error::BufferTooSmall {
                need: new_end,
                have,
            });
        }
        let new_len_field = match self.family {
            Family::V4 => new_end,
            Family::V6 => new_end - ipv6::HEADER_LEN,
        };
        let new_len_field = u16::try_from(new_len_field).map_err(|_| Error::TooLong {
            len: new_end,
            max: usize::from(u16::MAX),
        })?;
        let header_sum = |b: &[u8], hl: usize| {
            checksum::add(
                checksum::sum(&b[off..off + tcp::CHECKSUM.start]),
                checksum::sum(&b[off + tcp::CHECKSUM.end..off + hl]),
            )
        };
        let old_sum = header_sum(self.buf.as_ref(), old_hl);
        let b = self.buf.as_mut();
        b.copy_within(off + old_hl..self.end, off + new_hl);
        b[off + tcp::OPTIONS_START..off + new_hl].copy_from_slice(area);
        tcp::TcpSegment::new_unchecked(&mut b[off..]).set_header_len(new_hl);
        let new_sum = header_sum(b, new_hl);
        if self.mode == Checksum::Complete {
            let c = checksum::update(self.check_field(), old_sum, new_sum);
            self.set_check_field(c);
        }
        // The TCP length is in the pseudo-header (lengths fit 16 bits: checked above).
        self.adjust_for_pseudo(
            checksum::word(old_tcp_len as u16),
            checksum::word(new_tcp_len as u16),
        );
        let len_at = match self.family {
            Family::V4 => ipv4::TOTAL_LEN.start,
            Family::V6 => ipv6::PAYLOAD_LEN.start,
        };
        let old_len_field = read16(self.buf.as_ref(), len_at);
        write16(self.buf.as_mut(), len_at, new_len_field);
        self.adjust_ipv4_header(checksum::word(old_len_field), checksum::word(new_len_field));
        self.end = new_end;
        Ok(())
    }

    /// Writes a complete TCP checksum computed from scratch and switches to `Complete` mode:
    /// for a packet that arrived `Partial` and must leave with its checksum finished.
    pub fn complete_partial(&mut self) {
        let (src, dst) = (self.src_addr(), self.dst_addr());
        let (off, end) = (self.tcp_offset, self.end);
        tcp::TcpSegment::new_unchecked(&mut self.buf.as_mut()[off..end]).fill_checksum(src, dst);
        self.mode = Checksum::Complete;
    }

    /// Recomputes every checksum from scratch (IPv4 header and complete TCP).
    pub fn fill_checksums(&mut self) {
        if self.family == Family::V4 {
            ipv4::Ipv4Packet::new_unchecked(self.buf.as_mut()).fill_checksum();
        }
        self.complete_partial();
    }

    fn option_map(&self) -> Result<OptionMap, Error> {
        let mut map = OptionMap {
            slots: [Slot::default(); MAX_LEN],
            count: 0,
            end: 0,
        };
        let tcp = self.tcp();
        let mut it = TcpOptions::new(tcp.options_bytes());
        while let Some(item) = it.next_at() {
            let (at, opt) = item?;
            if opt == TcpOption::Eol {
                break;
            }
            let len = opt.wire_len();
            map.slots[map.count] = Slot {
                kind: opt.kind(),
                at: at as u8,
                len: len as u8,
            };
            map.count += 1;
            map.end = at + len;
        }
        Ok(map)
    }
}

impl TcpIpPacket<Vec<u8>> {
    /// [`insert_option`](TcpIpPacket::insert_option) for a packet in a `Vec`, which grows as
    /// needed and is truncated to the packet afterwards.
    pub fn insert_option_growing(&mut self, option: &TcpOption<'_>) -> Result<(), Error> {
        self.buf.resize(self.end + MAX_LEN, 0);
        let r = self.insert_option(option);
        self.buf.truncate(self.end);
        r
    }
}
