//! Per-packet offload metadata: what a frame asks the NIC to do on transmit
//! ([`TxOffload`]) and what the NIC found on receive ([`RxOffload`], read through
//! [`Packet::rx_checksum`] and [`Packet::vlan`]).
//!
//! Both live in the buffer's slot beside its length, never in the frame. A transmit request
//! sets a bit of the slot's `extras`, so a frame without one still passes a driver's
//! one-test fast path ([`Packet::is_single`]) and only frames that ask go the cold way (a
//! context descriptor before the data). The drivers and the software fallback are in
//! `zcnic::offload`.
//!
//! ```
//! use zcnic_hugepages::{Checksum, FakeDma, L4Csum, Mempool, RxOffload, TxOffload};
//! let pool = Mempool::new(&FakeDma::new(), 4).unwrap();
//! let mut pkt = pool.alloc().unwrap();
//! assert!(pkt.is_single());
//! let req = TxOffload { ip_csum: true, l4: Some(L4Csum::Udp), ..TxOffload::ipv4(14, 20) };
//! pkt.set_tx_offload(req);
//! assert!(!pkt.is_single());
//! assert_eq!(pkt.tx_offload(), Some(req));
//! pkt.clear_tx_offload();
//! assert!(pkt.is_single());
//! // Receive results: nothing on a fresh buffer.
//! assert_eq!(pkt.rx_checksum(), Checksum::Unknown);
//! pkt.set_rx_offload(RxOffload::new().with_vlan(100).with_l4(Checksum::Good));
//! assert_eq!(pkt.vlan(), Some(100));
//! assert_eq!(pkt.rx_checksum(), Checksum::Good);
//! ```

use crate::pool::{Packet, OFFLOAD, RX_META};
use std::num::NonZeroU16;

/// The transport checksum a frame asks the NIC to fill in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Csum {
    /// TCP: the checksum field 16 bytes into the TCP header.
    Tcp,
    /// UDP: the checksum field 6 bytes into the UDP header.
    Udp,
}

impl L4Csum {
    /// Where the checksum field lies in the transport header.
    pub const fn field_offset(self) -> usize {
        match self {
            L4Csum::Tcp => 16,
            L4Csum::Udp => 6,
        }
    }
}

/// What the NIC is asked to do to one frame on its way out.
///
/// The frame is given as it will be on the wire apart from what is asked: the IPv4 header
/// checksum field zero when `ip_csum` is set, the transport checksum field holding the
/// pseudo-header sum when `l4` is set (what the hardware adds the rest to:
/// `zcnic::offload::request` prepares both), and no 802.1Q tag when `vlan` is set (the NIC
/// inserts it after the MAC addresses). Headers must lie in the first buffer of a chain.
///
/// With [`tso`](Self::tso) the frame is a TCP/IPv4 "super-frame" whose payload is cut into
/// segments of at most that many bytes, each sent with a copy of the headers: its own IPv4
/// total length, identification (one more per segment), header checksum and TCP checksum,
/// and sequence number; FIN and PSH on the last segment only, CWR on the first only (as
/// Linux's segmentation does). `zcnic::offload::Offloads::prepare` asks the port for it
/// where the port can, and segments in software where it cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxOffload {
    /// Bytes before the IP header (14 for Ethernet without a tag in the frame).
    pub l2_len: u8,
    /// Bytes of the IP header (IPv4: IHL × 4; IPv6: 40 plus extension headers).
    pub l3_len: u8,
    /// The IP header is IPv4 (false: IPv6, which has no header checksum).
    pub ipv4: bool,
    /// Fill in the IPv4 header checksum.
    pub ip_csum: bool,
    /// Fill in the TCP or UDP checksum.
    pub l4: Option<L4Csum>,
    /// Insert an 802.1Q tag with this TCI (priority, DEI and the 12-bit VLAN ID) after the
    /// MAC addresses.
    pub vlan: Option<u16>,
    /// TCP segmentation (TSO): the largest TCP payload of one segment (the MSS).
    pub tso: Option<NonZeroU16>,
}

impl TxOffload {
    /// An IPv4 frame with `l2_len` bytes before its `l3_len`-byte IP header, nothing asked.
    pub const fn ipv4(l2_len: u8, l3_len: u8) -> Self {
        Self {
            l2_len,
            l3_len,
            ipv4: true,
            ip_csum: false,
            l4: None,
            vlan: None,
            tso: None,
        }
    }

    /// A TCP/IPv4 frame with `l2_len` bytes before its `l3_len`-byte IP header, to be cut
    /// into segments of at most `mss` payload bytes, each with its checksums.
    pub const fn tcp_segments(l2_len: u8, l3_len: u8, mss: NonZeroU16) -> Self {
        Self {
            ip_csum: true,
            l4: Some(L4Csum::Tcp),
            tso: Some(mss),
            ..Self::ipv4(l2_len, l3_len)
        }
    }

    /// Whether anything is asked of the checksum engines.
    pub const fn wants_checksum(&self) -> bool {
        self.ip_csum || self.l4.is_some()
    }
}

/// What a receive check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checksum {
    /// Checked and correct.
    Good,
    /// Checked and wrong: the frame is corrupt (or was built wrong).
    Bad,
    /// Not checked (the NIC could not, or said to ignore its result, as QEMU's e1000 does
    /// with IXSM): check in software (`zcnic::offload::verify_checksums`) if it matters.
    #[default]
    Unknown,
}

/// The receive results of one frame, as a driver records them: an 802.1Q tag the NIC
/// stripped, and the IP and transport checksum verdicts. One word; laid out as the e1000's
/// legacy descriptor reports them (status, errors, special), so that driver stores it as
/// it comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxOffload(u32);

// Bits of the word: the e1000 receive descriptor's status (bits 0-7), errors (8-15) and
// special (16-31) (8254x SDM §3.2.3).
const IXSM: u32 = 1 << 2;
const VP: u32 = 1 << 3;
const UDPCS: u32 = 1 << 4;
const TCPCS: u32 = 1 << 5;
const IPCS: u32 = 1 << 6;
const TCPE: u32 = 1 << 13;
const IPE: u32 = 1 << 14;

impl RxOffload {
    /// Nothing known: no tag, no checksum checked.
    pub const fn new() -> Self {
        Self(0)
    }

    /// From the second dword of a written-back e1000 legacy receive descriptor's second
    /// word: status, errors and special (8254x SDM §3.2.3). Any value is valid.
    #[inline(always)]
    pub const fn from_e1000(word: u32) -> Self {
        Self(word)
    }

    /// The stripped tag's TCI, when the NIC stripped one.
    pub const fn with_vlan(self, tci: u16) -> Self {
        Self((self.0 & 0xffff) | VP | (tci as u32) << 16)
    }

    /// The IP header checksum's verdict.
    pub const fn with_ip(self, c: Checksum) -> Self {
        match c {
            Checksum::Good => Self((self.0 | IPCS) & !(IPE | IXSM)),
            Checksum::Bad => Self((self.0 | IPCS | IPE) & !IXSM),
            Checksum::Unknown => Self(self.0 & !(IPCS | IPE)),
        }
    }

    /// The TCP/UDP checksum's verdict.
    pub const fn with_l4(self, c: Checksum) -> Self {
        match c {
            Checksum::Good => Self((self.0 | TCPCS) & !(TCPE | IXSM)),
            Checksum::Bad => Self((self.0 | TCPCS | TCPE) & !IXSM),
            Checksum::Unknown => Self(self.0 & !(TCPCS | UDPCS | TCPE)),
        }
    }

    /// The stripped 802.1Q tag's TCI (`& 0x0fff` is the VLAN ID), if the NIC stripped one.
    #[inline]
    pub const fn vlan(self) -> Option<u16> {
        if self.0 & VP != 0 {
            Some((self.0 >> 16) as u16)
        } else {
            None
        }
    }

    /// The IPv4 header checksum's verdict.
    #[inline]
    pub const fn ip(self) -> Checksum {
        Self::verdict(self.0, IPCS, IPE)
    }

    /// The TCP/UDP checksum's verdict.
    #[inline]
    pub const fn l4(self) -> Checksum {
        Self::verdict(self.0, TCPCS | UDPCS, TCPE)
    }

    /// One verdict for the frame: `Bad` if either check failed, `Good` if the transport
    /// checksum (which covers the addresses too) was checked good and the IP one not found
    /// bad, `Unknown` otherwise.
    #[inline]
    pub const fn checksum(self) -> Checksum {
        match (self.ip(), self.l4()) {
            (Checksum::Bad, _) | (_, Checksum::Bad) => Checksum::Bad,
            (_, Checksum::Good) => Checksum::Good,
            _ => Checksum::Unknown,
        }
    }

    const fn verdict(w: u32, checked: u32, error: u32) -> Checksum {
        if w & IXSM != 0 || w & checked == 0 {
            Checksum::Unknown
        } else if w & error != 0 {
            Checksum::Bad
        } else {
            Checksum::Good
        }
    }
}

impl Packet {
    /// Asks the NIC to do `req` to this frame when it is sent (see [`TxOffload`]); the frame
    /// leaves the drivers' one-buffer fast path. A port does only what its capabilities
    /// (`Nic::offloads`) say: `zcnic::offload::request` asks when it can and does the rest
    /// in software.
    #[inline]
    pub fn set_tx_offload(&mut self, req: TxOffload) {
        let s = self.s_mut();
        s.tx = req;
        s.extras |= OFFLOAD;
    }

    /// What this frame asks of the NIC on transmit, if anything.
    #[inline]
    pub fn tx_offload(&self) -> Option<TxOffload> {
        let s = self.s();
        (s.extras & OFFLOAD != 0).then_some(s.tx)
    }

    /// Withdraws the transmit request.
    #[inline]
    pub fn clear_tx_offload(&mut self) {
        self.s_mut().extras &= !OFFLOAD;
    }

    /// What the NIC reported with this received frame; nothing on a buffer fresh from the
    /// pool or [`reset`](Self::reset).
    #[inline]
    pub fn rx_offload(&self) -> RxOffload {
        let s = self.s();
        if s.rss_type & RX_META != 0 {
            RxOffload((s.rx_meta >> 32) as u32)
        } else {
            RxOffload::new()
        }
    }

    /// Records what the NIC reported with this frame: what a driver does on receive.
    #[inline(always)]
    pub fn set_rx_offload(&mut self, r: RxOffload) {
        let s = self.s_mut();
        s.rx_meta = u64::from(r.0) << 32;
        s.rss_type |= RX_META;
    }

    /// Resets the frame to `len` bytes at the default headroom, no RSS hash, and the
    /// receive results in the upper half of `word` (an e1000 legacy receive descriptor's
    /// second word: status, errors, special; see [`RxOffload::from_e1000`]): the e1000's
    /// receive path in three stores.
    #[inline(always)]
    pub fn reset_len_rx(&mut self, len: u16, word: u64) {
        let s = self.s_mut();
        s.head = crate::HEADROOM as u16;
        s.len = len.min(crate::DATA_ROOM as u16);
        s.rss_type = RX_META;
        s.rx_meta = word;
    }

    /// Records the receive hash `(hash, HashType number)` (as [`set_rss`](Self::set_rss))
    /// and the receive results `word` (as [`RxOffload::from_e1000`] reads it) together.
    #[inline(always)]
    pub fn set_rss_rx(&mut self, (hash, kind): (u32, u8), word: u32) {
        let s = self.s_mut();
        s.rss_hash = hash;
        s.rss_type = u16::from(kind) | RX_META;
        s.rx_meta = u64::from(word) << 32;
    }

    /// The NIC's checksum verdict on this received frame (see [`RxOffload::checksum`]).
    #[inline]
    pub fn rx_checksum(&self) -> Checksum {
        self.rx_offload().checksum()
    }

    /// The TCI of the 802.1Q tag the NIC stripped from this received frame (`& 0x0fff` is
    /// the VLAN ID), if it stripped one.
    #[inline]
    pub fn vlan(&self) -> Option<u16> {
        self.rx_offload().vlan()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FakeDma, Mempool};

    #[test]
    fn e1000_words_decode() {
        // DD, EOP, IXSM (QEMU's word): nothing checked.
        assert_eq!(RxOffload::from_e1000(0x07).checksum(), Checksum::Unknown);
        // DD, EOP, TCPCS, IPCS, no error.
        let good = RxOffload::from_e1000(0x63);
        assert_eq!((good.ip(), good.l4()), (Checksum::Good, Checksum::Good));
        // TCPE.
        assert_eq!(RxOffload::from_e1000(0x2063).checksum(), Checksum::Bad);
        assert_eq!(RxOffload::from_e1000(0x2063).ip(), Checksum::Good);
        // IPE alone.
        assert_eq!(RxOffload::from_e1000(0x4043).checksum(), Checksum::Bad);
        // VP with a tag of priority 3, VID 100.
        let tagged = RxOffload::from_e1000(0x0b | (0x6064 << 16));
        assert_eq!(tagged.vlan(), Some(0x6064));
        assert_eq!(RxOffload::from_e1000(0x6064 << 16).vlan(), None);
    }

    #[test]
    fn a_segmentation_request_asks_every_checksum_and_rides_with_the_buffer() {
        let mss = NonZeroU16::new(1448).unwrap();
        let r = TxOffload::tcp_segments(14, 20, mss);
        assert!(r.ipv4 && r.ip_csum && r.l4 == Some(L4Csum::Tcp) && r.tso == Some(mss));
        let pool = Mempool::new(&FakeDma::new(), 1).unwrap();
        let mut p = pool.alloc().unwrap();
        p.set_tx_offload(r);
        assert_eq!(p.tx_offload().and_then(|r| r.tso), Some(mss));
    }

    #[test]
    fn builders_round_trip() {
        for c in [Checksum::Good, Checksum::Bad, Checksum::Unknown] {
            assert_eq!(RxOffload::new().with_ip(c).ip(), c);
            assert_eq!(RxOffload::new().with_l4(c).l4(), c);
            assert_eq!(RxOffload::new().with_l4(c).with_vlan(7).l4(), c);
        }
        assert_eq!(RxOffload::new().vlan(), None);
    }

    #[test]
    fn metadata_is_per_buffer_life() {
        let pool = Mempool::new(&FakeDma::new(), 1).unwrap();
        let mut p = pool.alloc().unwrap();
        p.reset_len_rx(60, 0x000b << 32 | 5 << 48);
        assert_eq!(p.vlan(), Some(5));
        assert_eq!(p.rss(), None);
        p.set_tx_offload(TxOffload::ipv4(14, 20));
        drop(p);
        // The same buffer again: nothing carried over.
        let mut p = pool.alloc().unwrap();
        assert_eq!(p.vlan(), None);
        assert_eq!(p.tx_offload(), None);
        assert!(p.is_single());
        p.reset_len_rx(60, 0x000b << 32 | 5 << 48);
        p.reset();
        assert_eq!(p.vlan(), None);
        // An offload request with a chain: dropping the tail keeps the request.
        let pool = Mempool::new(&FakeDma::new(), 2).unwrap();
        let mut a = pool.alloc().unwrap();
        a.set_tx_offload(TxOffload::ipv4(14, 20));
        a.link(pool.alloc().unwrap());
        drop(a.take_next());
        assert!(!a.is_single());
        assert!(a.tx_offload().is_some());
        drop(a);
        assert_eq!(pool.free_count(), 2);
    }
}
