//! Advanced receive and transmit descriptors of the 82575/82576/I350 (igb) family.
//!
//! Layouts follow the Intel 82576 GbE Controller Datasheet: §7.1.5 (advanced receive
//! descriptors), §7.2.2.2 (advanced transmit context descriptor) and §7.2.2.3 (advanced
//! transmit data descriptor). Each is 16 bytes,
//! little-endian, handled as two 64-bit words. Unlike the 8254x legacy descriptors, the
//! format the driver writes (read format) and the one the device writes back (write-back
//! format) overlap: on receive the write-back replaces the buffer address with the RSS
//! hash and packet type, so the driver keeps each slot's buffer itself and never reads an
//! address back from the ring.

/// Receive write-back: status bits (low 20 bits of `status_error`, §7.1.5.2).
pub mod rx_status {
    /// Descriptor Done.
    pub const DD: u32 = 1 << 0;
    /// End Of Packet: the last descriptor of a frame.
    pub const EOP: u32 = 1 << 1;
    /// The frame carried a VLAN tag (stripped into `vlan` when VLAN stripping is on).
    pub const VP: u32 = 1 << 3;
}

/// Receive write-back: extended error bits (high bits of `status_error`, §7.1.5.2).
pub mod rx_error {
    /// CRC or alignment error.
    pub const CE: u32 = 1 << 24;
    /// Symbol error.
    pub const SE: u32 = 1 << 25;
    /// Sequence error.
    pub const SEQ: u32 = 1 << 26;
    /// Carrier extension error.
    pub const CXE: u32 = 1 << 28;
    /// TCP/UDP checksum error.
    pub const TCPE: u32 = 1 << 29;
    /// IPv4 header checksum error.
    pub const IPE: u32 = 1 << 30;
    /// Receive data error.
    pub const RXE: u32 = 1 << 31;
    /// The errors that make a frame unusable (checksum errors do not: they are reported).
    pub const FRAME: u32 = CE | SE | SEQ | CXE | RXE;
}

/// A receive descriptor as the driver posts it (read format): the buffer's IOVA and no
/// header buffer. Word 1 is zero, so its DD bit (bit 0 of the write-back status) is
/// clear until the device writes back.
#[inline(always)]
pub fn rx_ready(buf: u64) -> [u64; 2] {
    [buf, 0]
}

/// A receive descriptor as the device wrote it back (§7.1.5.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxWriteBack {
    /// RSS type (bits 3:0) and packet type (bits 16:4) of the frame.
    pub pkt_info: u32,
    /// The RSS hash of the frame (when RSS is on).
    pub rss_hash: u32,
    /// [`rx_status`] and [`rx_error`] bits.
    pub status_error: u32,
    /// Bytes written into the packet buffer (CRC stripped with RCTL.SECRC).
    pub length: u16,
    /// The stripped VLAN tag.
    pub vlan: u16,
}

impl RxWriteBack {
    #[inline(always)]
    pub fn from_words(w: [u64; 2]) -> Self {
        Self {
            pkt_info: w[0] as u32,
            rss_hash: (w[0] >> 32) as u32,
            status_error: w[1] as u32,
            length: (w[1] >> 32) as u16,
            vlan: (w[1] >> 48) as u16,
        }
    }

    #[inline(always)]
    pub fn to_words(self) -> [u64; 2] {
        [
            u64::from(self.pkt_info) | u64::from(self.rss_hash) << 32,
            u64::from(self.status_error)
                | u64::from(self.length) << 32
                | u64::from(self.vlan) << 48,
        ]
    }

    #[inline(always)]
    pub fn done(&self) -> bool {
        self.status_error & rx_status::DD != 0
    }

    /// Whether this descriptor ends its frame.
    #[inline(always)]
    pub fn is_eop(&self) -> bool {
        self.status_error & rx_status::EOP != 0
    }

    /// The frame's length if the descriptor holds a whole good frame that fits `room`:
    /// done, end of packet, no frame error, 1..=`room` bytes.
    #[inline(always)]
    pub fn good_len(&self, room: u16) -> Option<u16> {
        let want = rx_status::DD | rx_status::EOP;
        let ok = self.status_error & (want | rx_error::FRAME) == want;
        (ok && self.length != 0 && self.length <= room).then_some(self.length)
    }

    /// The tag and checksum verdicts, in the word the e1000's legacy descriptor has them
    /// (status in bits 7:0: VP, UDPCS, L4I as TCPCS, IPCS at the same places; TCPE and IPE
    /// at 13 and 14; the VLAN tag above): what `RxOffload` reads.
    #[inline(always)]
    pub fn offload_word(&self) -> u32 {
        let se = self.status_error;
        (se & 0x78) | (se >> 16) & 0x6000 | u32::from(self.vlan) << 16
    }

    /// The RSS type the device reported (0: no hash).
    #[inline(always)]
    pub fn rss_type(&self) -> u8 {
        (self.pkt_info & 0xf) as u8
    }

    /// The RSS hash and what it covered, when the device reported one (§7.1.5.2: RSS
    /// type 1 TCP/IPv4, 2 IPv4, 3 TCP/IPv6, 4 IPv6 with extensions, 5 IPv6, 6 TCP/IPv6
    /// with extensions, 7 UDP/IPv4, 8 UDP/IPv6, 9 UDP/IPv6 with extensions), as the
    /// virtio-style report a `Packet` keeps (`HashType` numbers; 0, and the hash field
    /// as it came, for none). A table lookup: it runs for every frame received.
    #[inline(always)]
    pub fn rss_report(&self) -> (u32, u8) {
        (self.rss_hash, RSS_REPORT[usize::from(self.rss_type())])
    }
}

/// The `HashType` number of each igb RSS type (0: no hash; 10–15 are reserved).
const RSS_REPORT: [u8; 16] = {
    use crate::rss::HashType as T;
    let mut m = [0u8; 16];
    m[1] = T::TcpV4 as u8;
    m[2] = T::Ipv4 as u8;
    m[3] = T::TcpV6 as u8;
    m[4] = T::Ipv6 as u8;
    m[5] = T::Ipv6 as u8;
    m[6] = T::TcpV6 as u8;
    m[7] = T::UdpV4 as u8;
    m[8] = T::UdpV6 as u8;
    m[9] = T::UdpV6 as u8;
    m
};

/// Transmit data descriptor command bits (DCMD, bits 31:24 of `cmd_type_len`, §7.2.2.3).
pub mod tx_cmd {
    /// End Of Packet.
    pub const EOP: u32 = 1 << 24;
    /// Insert FCS.
    pub const IFCS: u32 = 1 << 25;
    /// Report Status: write DD back when done.
    pub const RS: u32 = 1 << 27;
    /// Descriptor extension: an advanced descriptor.
    pub const DEXT: u32 = 1 << 29;
    /// VLAN Packet Enable: insert an 802.1Q tag whose TCI the frame's context descriptor
    /// holds.
    pub const VLE: u32 = 1 << 30;
    /// TCP Segmentation Enable: cut the frame at the context's MSS (§7.2.2.3); PAYLEN is
    /// then the TCP payload's length, not the frame's.
    pub const TSE: u32 = 1 << 31;
    /// Descriptor type 0011: advanced data descriptor (DTYP, bits 23:20).
    pub const DTYP_DATA: u32 = 0x3 << 20;
    /// Descriptor type 0010: advanced context descriptor.
    pub const DTYP_CONTEXT: u32 = 0x2 << 20;
    /// The DTYP field.
    pub const DTYP_MASK: u32 = 0xf << 20;
}

/// Data descriptor POPTS (bits 13:8 of `olinfo_status`, §7.2.2.3), read on a frame's first
/// descriptor.
pub mod popts {
    /// Insert the IPv4 header checksum (the context's TUCMD.IPV4 must be set).
    pub const IXSM: u32 = 1 << 8;
    /// Insert the TCP or UDP checksum (the context's TUCMD.L4T says which).
    pub const TXSM: u32 = 1 << 9;
}

/// Context descriptor TUCMD (bits 19:9 of `type_tucmd_mlhl`, §7.2.2.2).
pub mod tucmd {
    /// The IP header is IPv4 (clear: IPv6).
    pub const IPV4: u32 = 1 << 10;
    /// L4T 01b: the transport is TCP (00b: UDP).
    pub const L4T_TCP: u32 = 1 << 11;
}

/// Where IDX (bits 6:4 of `olinfo_status` and of `mss_l4len_idx`) lies: which of the
/// queue's context slots a descriptor writes or uses.
const IDX_SHIFT: u32 = 4;

/// An advanced transmit context descriptor (§7.2.2.2): how the frames after it that ask
/// for offloads are laid out, and the tag to insert. It moves no data, and its DCMD has
/// no RS: the device writes nothing back into it, so a driver never waits for DD there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxContext {
    /// MACLEN (7 bits): bytes before the IP header, 14..=127 when a checksum is asked.
    pub maclen: u8,
    /// IPLEN (9 bits): bytes of the IP header.
    pub iplen: u16,
    /// The 802.1Q TCI inserted into frames that set VLE.
    pub vlan: u16,
    /// [`tucmd`] bits.
    pub tucmd: u32,
    /// IDX: the context slot (0 or 1 on an 82576).
    pub idx: u8,
    /// L4LEN: bytes of the TCP header (segmentation only).
    pub l4len: u8,
    /// MSS: the most TCP payload bytes of one segment (segmentation only).
    pub mss: u16,
}

impl TxContext {
    /// Fewest bytes MACLEN may say when a checksum is asked (§7.2.2.2).
    pub const MIN_MACLEN: u8 = 14;
    /// Most bytes MACLEN can say.
    pub const MAX_MACLEN: u8 = 127;

    #[inline]
    pub fn to_words(self) -> [u64; 2] {
        let vlan_macip_lens = u32::from(self.iplen & 0x1ff)
            | u32::from(self.maclen & 0x7f) << 9
            | u32::from(self.vlan) << 16;
        let type_tucmd_mlhl = (self.tucmd & 0x7ff << 9) | tx_cmd::DTYP_CONTEXT | tx_cmd::DEXT;
        let mss_l4len_idx = u32::from(self.idx & 0x7) << IDX_SHIFT
            | u32::from(self.l4len) << 8
            | u32::from(self.mss) << 16;
        [
            u64::from(vlan_macip_lens),
            u64::from(type_tucmd_mlhl) | u64::from(mss_l4len_idx) << 32,
        ]
    }

    #[inline]
    pub fn from_words(w: [u64; 2]) -> Self {
        let lens = w[0] as u32;
        Self {
            maclen: (lens >> 9 & 0x7f) as u8,
            iplen: (lens & 0x1ff) as u16,
            vlan: (lens >> 16) as u16,
            tucmd: w[1] as u32 & 0x7ff << 9,
            idx: ((w[1] >> 32) as u32 >> IDX_SHIFT & 0x7) as u8,
            l4len: (w[1] >> 40) as u8,
            mss: (w[1] >> 48) as u16,
        }
    }
}

/// Transmit write-back: DD, bit 0 of `olinfo_status` (§7.2.2.3, STA).
pub const TX_DD: u32 = 1 << 0;
/// PAYLEN's position in `olinfo_status`.
const PAYLEN_SHIFT: u32 = 14;

/// An advanced transmit data descriptor (§7.2.2.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxDesc {
    /// Buffer IOVA.
    pub addr: u64,
    /// Length (bits 15:0), DTYP, DCMD.
    pub cmd_type_len: u32,
    /// PAYLEN (bits 31:14: the whole frame's length, on its first descriptor); the device
    /// writes DD into bit 0.
    pub olinfo_status: u32,
}

impl TxDesc {
    /// A data descriptor of `len` bytes at `addr`; `first_of` is the whole frame's length
    /// on a frame's first descriptor (0 on the others), `eop` ends the frame, `rs` asks
    /// for a status write-back.
    #[inline(always)]
    pub fn data(addr: u64, len: u16, first_of: u32, eop: bool, rs: bool) -> Self {
        let mut cmd = tx_cmd::DTYP_DATA | tx_cmd::DEXT | tx_cmd::IFCS | u32::from(len);
        if eop {
            cmd |= tx_cmd::EOP;
        }
        if rs {
            cmd |= tx_cmd::RS;
        }
        Self {
            addr,
            cmd_type_len: cmd,
            olinfo_status: first_of << PAYLEN_SHIFT,
        }
    }

    /// The same data descriptor asking for offloads: `popts` ([`popts`] bits, on a frame's
    /// first descriptor) with the context in slot `idx`, and a tag inserted with `vle`.
    #[inline]
    pub fn offloaded(self, popts: u32, idx: u8, vle: bool) -> Self {
        let vle = if vle { tx_cmd::VLE } else { 0 };
        Self {
            cmd_type_len: self.cmd_type_len | vle,
            olinfo_status: self.olinfo_status | popts | u32::from(idx & 0x7) << IDX_SHIFT,
            ..self
        }
    }

    /// A one-descriptor frame.
    #[inline(always)]
    pub fn frame(addr: u64, len: u16, rs: bool) -> Self {
        Self::data(addr, len, u32::from(len), true, rs)
    }

    #[inline(always)]
    pub fn from_words(w: [u64; 2]) -> Self {
        Self {
            addr: w[0],
            cmd_type_len: w[1] as u32,
            olinfo_status: (w[1] >> 32) as u32,
        }
    }

    #[inline(always)]
    pub fn to_words(self) -> [u64; 2] {
        [
            self.addr,
            u64::from(self.cmd_type_len) | u64::from(self.olinfo_status) << 32,
        ]
    }

    /// The same descriptor asking for a status write-back, with no DD left in it.
    #[inline(always)]
    pub fn reporting(self) -> Self {
        Self {
            cmd_type_len: self.cmd_type_len | tx_cmd::RS,
            olinfo_status: self.olinfo_status & !TX_DD,
            ..self
        }
    }

    #[inline(always)]
    pub fn done(&self) -> bool {
        self.olinfo_status & TX_DD != 0
    }

    /// Whether these words are a context descriptor (DEXT with DTYP 0010).
    #[inline]
    pub fn is_context(&self) -> bool {
        self.cmd_type_len & (tx_cmd::DEXT | tx_cmd::DTYP_MASK)
            == tx_cmd::DEXT | tx_cmd::DTYP_CONTEXT
    }

    #[inline(always)]
    pub fn len(&self) -> u16 {
        self.cmd_type_len as u16
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_rss_type_reports_what_its_hash_covered() {
        use crate::rss::HashType as T;
        let wb = |t: u32| RxWriteBack {
            pkt_info: t | 0x90 << 4,
            rss_hash: 0x51cc_c178,
            ..Default::default()
        };
        let got: Vec<u8> = (0..16).map(|t| wb(t).rss_report().1).collect();
        let want = [
            0,
            T::TcpV4 as u8,
            T::Ipv4 as u8,
            T::TcpV6 as u8,
            T::Ipv6 as u8,
            T::Ipv6 as u8,
            T::TcpV6 as u8,
            T::UdpV4 as u8,
            T::UdpV6 as u8,
            T::UdpV6 as u8,
        ];
        assert_eq!(&got[..10], &want);
        assert!(got[10..].iter().all(|&k| k == 0), "reserved types: no hash");
        assert_eq!(wb(7).rss_report(), (0x51cc_c178, T::UdpV4 as u8));
        assert_eq!(
            wb(0).rss_report().1,
            0,
            "no type, no hash (the field holds the IP ID)"
        );
        for k in 1..=6u8 {
            assert_eq!(T::from_report(k).map(|t| t as u8), Some(k));
        }
        assert_eq!(T::from_report(0), None);
        assert_eq!(T::from_report(7), None);
    }

    #[test]
    fn a_posted_receive_descriptor_is_not_done() {
        let w = rx_ready(0x1234_5000);
        assert_eq!(w[0], 0x1234_5000);
        assert!(!RxWriteBack::from_words(w).done());
    }

    #[test]
    fn the_write_back_replaces_the_address_and_says_what_arrived() {
        let wb = RxWriteBack {
            pkt_info: 0x11,
            rss_hash: 0x323e_8fc2,
            status_error: rx_status::DD | rx_status::EOP,
            length: 60,
            vlan: 0,
        };
        let back = RxWriteBack::from_words(wb.to_words());
        assert_eq!(back, wb);
        assert_eq!(back.good_len(2048), Some(60));
        assert_eq!(back.rss_type(), 1);
        let bad = |status_error, length| {
            RxWriteBack {
                status_error,
                length,
                ..wb
            }
            .good_len(2048)
        };
        assert_eq!(bad(rx_status::DD, 60), None, "no EOP: part of a frame");
        assert_eq!(
            bad(rx_status::DD | rx_status::EOP | rx_error::RXE, 60),
            None
        );
        assert_eq!(bad(rx_status::DD | rx_status::EOP, 0), None);
        assert_eq!(bad(rx_status::DD | rx_status::EOP, 2049), None);
        assert_eq!(bad(rx_status::EOP, 60), None, "not done");
        // Checksum errors do not make a frame unusable (checksum offload reports them).
        assert_eq!(
            bad(rx_status::DD | rx_status::EOP | rx_error::TCPE, 60),
            Some(60)
        );
    }

    #[test]
    fn a_transmit_descriptor_has_the_datasheets_bits() {
        let d = TxDesc::frame(0xabc000, 60, true);
        assert_eq!(
            d.cmd_type_len,
            60 | 0x3 << 20 | 1 << 24 | 1 << 25 | 1 << 27 | 1 << 29
        );
        assert_eq!(d.olinfo_status, 60 << 14);
        assert!(!d.done());
        let first = TxDesc::data(0x1000, 14, 74, false, false);
        assert_eq!(first.cmd_type_len & tx_cmd::EOP, 0);
        assert_eq!(first.olinfo_status >> 14, 74);
    }

    #[test]
    fn a_context_descriptor_has_the_datasheets_bits() {
        let c = TxContext {
            maclen: 14,
            iplen: 20,
            vlan: 0x2064,
            tucmd: tucmd::IPV4 | tucmd::L4T_TCP,
            idx: 0,
            ..TxContext::default()
        };
        let w = c.to_words();
        // VLAN_MACIP_LENS: IPLEN 8:0, MACLEN 15:9, VLAN 31:16.
        assert_eq!(w[0], 20 | 14 << 9 | 0x2064 << 16);
        // TUCMD IPV4 (bit 10) and L4T TCP (bit 11), DTYP 0010, DEXT; no RS.
        assert_eq!(w[1] as u32, 0x400 | 0x800 | 0x2 << 20 | 1 << 29);
        assert_eq!(w[1] >> 32, 0, "IDX 0, no MSS or L4LEN");
        let d = TxDesc::from_words(w);
        assert!(d.is_context());
        assert!(!d.done());
        assert_eq!(TxContext::from_words(w), c);
        assert!(!TxDesc::frame(0x1000, 60, true).is_context());
        let o =
            TxDesc::data(0x1000, 60, 60, true, false).offloaded(popts::IXSM | popts::TXSM, 1, true);
        assert_eq!(o.olinfo_status, 60 << 14 | 0x300 | 1 << 4);
        assert_eq!(o.cmd_type_len & tx_cmd::VLE, tx_cmd::VLE);
        assert!(!o.is_context());
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn context_words_round_trip(maclen in 0u8..128, iplen in 0u16..512, vlan: u16, tcp: bool, ipv4: bool, idx in 0u8..8) {
            let tucmd = if tcp { tucmd::L4T_TCP } else { 0 } | if ipv4 { tucmd::IPV4 } else { 0 };
            let c = TxContext { maclen, iplen, vlan, tucmd, idx, ..TxContext::default() };
            prop_assert_eq!(TxContext::from_words(c.to_words()), c);
            prop_assert!(TxDesc::from_words(c.to_words()).is_context());
        }

        #[test]
        fn words_round_trip(addr: u64, len: u16, payload in 0u32..(1 << 18), eop: bool, rs: bool, dd: bool) {
            let mut d = TxDesc::data(addr, len, payload, eop, rs);
            if dd {
                d.olinfo_status |= TX_DD;
            }
            prop_assert_eq!(TxDesc::from_words(d.to_words()), d);
            prop_assert_eq!(d.done(), dd);
            prop_assert!(!d.reporting().done());
            prop_assert_eq!(d.len(), len);
        }

        #[test]
        fn any_write_back_is_judged_without_panic(w0: u64, w1: u64, room in 1u16..4096) {
            let wb = RxWriteBack::from_words([w0, w1]);
            if let Some(len) = wb.good_len(room) {
                prop_assert!(len >= 1 && len <= room && wb.done());
            }
        }
    }
}
