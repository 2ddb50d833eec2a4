//! Legacy receive and transmit descriptors of the 8254x family.
//!
//! Layouts follow the PCI/PCI-X Family of Gigabit Ethernet Controllers Software Developer's
//! Manual (8254x SDM): §3.2.3 (receive descriptor) and §3.3.3 (legacy transmit descriptor).
//! Both are 16 bytes, little-endian, and the ring base must be 16-byte aligned (the driver
//! uses 128 as the SDM recommends for cache-line use).

use bitflags::bitflags;

/// Receive descriptor (8254x SDM §3.2.3). The device writes `length`, `status` and `errors`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxDesc {
    /// Buffer address the device writes the frame to (IOVA).
    pub addr: u64,
    /// Bytes written into the buffer, CRC included unless RCTL.SECRC strips it.
    pub length: u16,
    /// Packet checksum (unused: checksum offload is off).
    pub csum: u16,
    /// [`RxStatus`] bits.
    pub status: u8,
    /// [`RxErrors`] bits, valid when EOP is set.
    pub errors: u8,
    /// VLAN tag of a frame the device stripped it from (VP).
    pub special: u16,
}

/// Legacy transmit descriptor (8254x SDM §3.3.3).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxDesc {
    /// Buffer address the device reads the frame from (IOVA).
    pub addr: u64,
    /// Bytes to send from this buffer.
    pub length: u16,
    /// Checksum offset (unused).
    pub cso: u8,
    /// [`TxCmd`] bits.
    pub cmd: u8,
    /// [`TxStatus`] bits, written back by the device when RS was set.
    pub status: u8,
    /// Checksum start (unused).
    pub css: u8,
    /// VLAN tag (unused).
    pub special: u16,
}

const _: () = assert!(std::mem::size_of::<RxDesc>() == 16);
const _: () = assert!(std::mem::size_of::<TxDesc>() == 16);

bitflags! {
    /// RDESC.STATUS (8254x SDM §3.2.3.1).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RxStatus: u8 {
        /// Descriptor Done: the device has finished with this descriptor.
        const DD = 1 << 0;
        /// End Of Packet: last descriptor of a frame.
        const EOP = 1 << 1;
        /// Ignore Checksum Indication.
        const IXSM = 1 << 2;
        /// Packet is 802.1Q.
        const VP = 1 << 3;
        /// UDP checksum calculated (82571 and later).
        const UDPCS = 1 << 4;
        /// TCP/UDP checksum calculated.
        const TCPCS = 1 << 5;
        /// IP checksum calculated.
        const IPCS = 1 << 6;
    }

    /// RDESC.ERRORS (8254x SDM §3.2.3.2).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RxErrors: u8 {
        /// CRC or alignment error.
        const CE = 1 << 0;
        /// Symbol error.
        const SE = 1 << 1;
        /// Sequence error.
        const SEQ = 1 << 2;
        /// Carrier extension error.
        const CXE = 1 << 4;
        /// TCP/UDP checksum error.
        const TCPE = 1 << 5;
        /// IP checksum error.
        const IPE = 1 << 6;
        /// RX data error.
        const RXE = 1 << 7;
    }

    /// TDESC.CMD (8254x SDM §3.3.3.1).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TxCmd: u8 {
        /// End Of Packet: last descriptor of a frame.
        const EOP = 1 << 0;
        /// Insert FCS: the device appends the Ethernet CRC.
        const IFCS = 1 << 1;
        /// Insert Checksum.
        const IC = 1 << 2;
        /// Report Status: write DD back when done.
        const RS = 1 << 3;
        /// Extension (0 = legacy descriptor).
        const DEXT = 1 << 5;
        /// VLAN Packet Enable.
        const VLE = 1 << 6;
        /// Interrupt Delay Enable.
        const IDE = 1 << 7;
    }

    /// TDESC.STATUS (8254x SDM §3.3.3.2).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TxStatus: u8 {
        /// Descriptor Done.
        const DD = 1 << 0;
        /// Excess collisions.
        const EC = 1 << 1;
        /// Late collision.
        const LC = 1 << 2;
    }
}

/// Why a completed receive descriptor cannot be handed to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxDescError {
    /// The device reported more bytes than the buffer holds.
    TooLong {
        /// Length the device wrote.
        length: u16,
        /// Bytes the buffer holds.
        capacity: u16,
    },
    /// The frame spans several descriptors: a device fault with long packets off (RCTL.LPE
    /// clear: no frame is longer than a 2 KiB buffer); with them on, see
    /// [`RxDesc::is_part`].
    NotEop,
    /// The device flagged a receive error.
    Errors(u8),
    /// A zero-length frame.
    Empty,
}

impl RxDesc {
    /// The descriptor from the two little-endian words it occupies in the ring.
    #[inline(always)]
    pub const fn from_words(w: [u64; 2]) -> Self {
        Self {
            addr: w[0],
            length: w[1] as u16,
            csum: (w[1] >> 16) as u16,
            status: (w[1] >> 32) as u8,
            errors: (w[1] >> 40) as u8,
            special: (w[1] >> 48) as u16,
        }
    }

    /// The two little-endian words the descriptor occupies in the ring.
    #[inline(always)]
    pub const fn to_words(self) -> [u64; 2] {
        [
            self.addr,
            self.length as u64
                | (self.csum as u64) << 16
                | (self.status as u64) << 32
                | (self.errors as u64) << 40
                | (self.special as u64) << 48,
        ]
    }

    /// A descriptor handing `addr` to the device, with the status cleared.
    pub const fn ready(addr: u64) -> Self {
        Self {
            addr,
            length: 0,
            csum: 0,
            status: 0,
            errors: 0,
            special: 0,
        }
    }

    /// Whether the device is done with this descriptor.
    #[inline(always)]
    pub const fn done(&self) -> bool {
        self.status & RxStatus::DD.bits() != 0
    }

    /// Checks a completed descriptor and returns the frame length it reports.
    #[inline(always)]
    pub fn frame_len(&self, capacity: u16) -> Result<u16, RxDescError> {
        match self.good_len(capacity) {
            Some(len) => Ok(len),
            None => self.why_bad(capacity),
        }
    }

    /// The length of a completed, good frame (DD and EOP set, no error bits, 1..=`capacity`
    /// bytes), in two tests a receive loop runs per frame; `None` for a descriptor not done
    /// or bad. For a done one, [`frame_len`](Self::frame_len) then says what is bad.
    #[inline(always)]
    pub const fn good_len(&self, capacity: u16) -> Option<u16> {
        // Status and errors side by side, as they lie in the descriptor's second word:
        // DD and EOP set, no error bit.
        let good = (RxStatus::DD.bits() | RxStatus::EOP.bits()) as u16;
        let flags = self.status as u16 | (self.errors as u16) << 8;
        // TCPE and IPE are not receive errors: the frame is delivered with its checksum
        // verdict (`RxOffload`), as a bad checksum is the application's to judge.
        let fatal = !(RxErrors::TCPE.bits() | RxErrors::IPE.bits()) as u16;
        if flags & (fatal << 8 | good) == good && self.length.wrapping_sub(1) < capacity {
            Some(self.length)
        } else {
            None
        }
    }

    /// Whether a completed descriptor holds a part of a longer frame, not its end: DD set,
    /// EOP clear, and the whole buffer of `capacity` bytes filled, as the device fills
    /// every buffer of a frame but the last (8254x SDM §3.2.3). Its error bits mean
    /// nothing: the device sets them on the frame's last descriptor (§3.2.3.2).
    #[inline]
    pub const fn is_part(&self, capacity: u16) -> bool {
        let part = self.status & (RxStatus::DD.bits() | RxStatus::EOP.bits());
        part == RxStatus::DD.bits() && self.length == capacity
    }

    #[cold]
    fn why_bad(&self, capacity: u16) -> Result<u16, RxDescError> {
        if self.status & RxStatus::EOP.bits() == 0 {
            return Err(RxDescError::NotEop);
        }
        if self.errors & !(RxErrors::TCPE.bits() | RxErrors::IPE.bits()) != 0 {
            return Err(RxDescError::Errors(self.errors));
        }
        match self.length {
            0 => Err(RxDescError::Empty),
            l if l > capacity => Err(RxDescError::TooLong {
                length: l,
                capacity,
            }),
            l => Ok(l),
        }
    }
}

/// TCP/IP context descriptor (8254x SDM §3.3.6): where the checksums of the frames after it
/// start, end and go. It occupies a transmit slot like a data descriptor; the device keeps
/// its values for every later extended data descriptor until the next context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxContext {
    /// IPCSS: first byte of the IP header.
    pub ipcss: u8,
    /// IPCSO: where the IP header checksum goes.
    pub ipcso: u8,
    /// IPCSE: last byte of the IP header (inclusive).
    pub ipcse: u16,
    /// TUCSS: first byte of the TCP/UDP checksum range (the transport header).
    pub tucss: u8,
    /// TUCSO: where the TCP/UDP checksum goes.
    pub tucso: u8,
    /// TUCSE: last byte of the checksum range; 0 for the end of the frame.
    pub tucse: u16,
    /// TUCMD: [`TxCmd::DEXT`] always, with `TUCMD_IP` / `TUCMD_TCP` (which TSO reads)
    /// and [`TUCMD_TSE`] for a segmentation context.
    pub tucmd: u8,
    /// PAYLEN (20 bits): TCP payload bytes of the whole frame to segment (TSE only).
    pub paylen: u32,
    /// HDRLEN: bytes of headers copied in front of every segment (TSE only).
    pub hdrlen: u8,
    /// MSS: the most payload bytes of one segment (TSE only).
    pub mss: u16,
}

/// TUCMD.TCP: the frame is TCP (UDP when clear); read for TSO (8254x SDM §3.3.6.1).
pub const TUCMD_TCP: u8 = 1 << 0;
/// TUCMD.IP: the frame is IPv4 (IPv6 when clear); read for TSO.
pub const TUCMD_IP: u8 = 1 << 1;
/// TUCMD.TSE: this context is for TCP segmentation (8254x SDM §3.3.6.1).
pub const TUCMD_TSE: u8 = 1 << 2;
/// DCMD.TSE of an extended data descriptor: this descriptor's frame is segmented with
/// the TSE context before it (8254x SDM §3.3.7.1; bit 2, IC in a legacy descriptor).
pub const DCMD_TSE: u8 = 1 << 2;
/// DTYP of an extended data descriptor, in the byte after the 16-bit length (bits 20-23
/// of the second word: `TxDesc::cso`'s high nibble); 0 is a context descriptor.
pub const DTYP_DATA: u8 = 1 << 4;
/// POPTS.IXSM: insert the IP checksum (8254x SDM §3.3.7.1).
pub const POPTS_IXSM: u8 = 1 << 0;
/// POPTS.TXSM: insert the TCP/UDP checksum.
pub const POPTS_TXSM: u8 = 1 << 1;

impl TxContext {
    /// As the [`TxDesc`] fields that share its slot (command and status bytes in the same
    /// places, so cleanup's RS and DD work on it unchanged).
    pub const fn to_desc(self) -> TxDesc {
        TxDesc {
            addr: self.ipcss as u64
                | (self.ipcso as u64) << 8
                | (self.ipcse as u64) << 16
                | (self.tucss as u64) << 32
                | (self.tucso as u64) << 40
                | (self.tucse as u64) << 48,
            length: self.paylen as u16,
            // PAYLEN's top four bits; DTYP 0 above them.
            cso: (self.paylen >> 16) as u8 & 0xf,
            cmd: self.tucmd | TxCmd::DEXT.bits(),
            status: 0,
            css: self.hdrlen,
            special: self.mss,
        }
    }

    /// The context back from a descriptor's two words (what a device model reads).
    pub const fn from_words(w: [u64; 2]) -> Self {
        Self {
            ipcss: w[0] as u8,
            ipcso: (w[0] >> 8) as u8,
            ipcse: (w[0] >> 16) as u16,
            tucss: (w[0] >> 32) as u8,
            tucso: (w[0] >> 40) as u8,
            tucse: (w[0] >> 48) as u16,
            tucmd: (w[1] >> 24) as u8,
            paylen: w[1] as u32 & 0xf_ffff,
            hdrlen: (w[1] >> 40) as u8,
            mss: (w[1] >> 48) as u16,
        }
    }
}

impl TxDesc {
    /// The descriptor from the two little-endian words it occupies in the ring.
    #[inline(always)]
    pub const fn from_words(w: [u64; 2]) -> Self {
        Self {
            addr: w[0],
            length: w[1] as u16,
            cso: (w[1] >> 16) as u8,
            cmd: (w[1] >> 24) as u8,
            status: (w[1] >> 32) as u8,
            css: (w[1] >> 40) as u8,
            special: (w[1] >> 48) as u16,
        }
    }

    /// The two little-endian words the descriptor occupies in the ring.
    #[inline(always)]
    pub const fn to_words(self) -> [u64; 2] {
        [
            self.addr,
            self.length as u64
                | (self.cso as u64) << 16
                | (self.cmd as u64) << 24
                | (self.status as u64) << 32
                | (self.css as u64) << 40
                | (self.special as u64) << 48,
        ]
    }

    /// A single-buffer frame: EOP and IFCS, plus RS when `report` asks the device to write
    /// DD back (zcnic sets it on one descriptor per cleanup batch only).
    #[inline(always)]
    pub const fn frame(addr: u64, length: u16, report: bool) -> Self {
        // RS without a branch: the hot path builds one of these per frame.
        let cmd = TxCmd::EOP.bits() | TxCmd::IFCS.bits() | (report as u8 * TxCmd::RS.bits());
        Self {
            addr,
            length,
            cso: 0,
            cmd,
            status: 0,
            css: 0,
            special: 0,
        }
    }

    /// A descriptor for a frame's leading bytes, more following (no EOP): the first of a
    /// chain (8254x SDM §3.3.3).
    #[inline(always)]
    pub const fn data(addr: u64, length: u16, report: bool) -> Self {
        let mut d = Self::frame(addr, length, report);
        d.cmd &= !TxCmd::EOP.bits();
        d
    }

    /// An extended data descriptor (8254x SDM §3.3.7): `popts` ([`POPTS_IXSM`],
    /// [`POPTS_TXSM`]) asks for the checksums of the context before it, `vlan` for an
    /// 802.1Q tag with that TCI (VLE; honoured only with CTRL.VME set). EOP when `last`.
    #[inline]
    pub const fn extended(
        addr: u64,
        length: u16,
        last: bool,
        popts: u8,
        vlan: Option<u16>,
    ) -> Self {
        let mut cmd = TxCmd::IFCS.bits() | TxCmd::DEXT.bits();
        if last {
            cmd |= TxCmd::EOP.bits();
        }
        let special = match vlan {
            Some(tci) => {
                cmd |= TxCmd::VLE.bits();
                tci
            }
            None => 0,
        };
        Self {
            addr,
            length,
            cso: DTYP_DATA,
            cmd,
            status: 0,
            css: popts,
            special,
        }
    }

    /// Whether this is a context descriptor (DEXT set, DTYP 0).
    pub const fn is_context(&self) -> bool {
        self.cmd & TxCmd::DEXT.bits() != 0 && self.cso & 0xf0 == 0
    }

    /// The same descriptor with RS set: the device writes DD back when done with it.
    #[inline(always)]
    pub const fn reporting(mut self) -> Self {
        self.cmd |= TxCmd::RS.bits();
        self
    }

    /// Whether the device has written DD back.
    #[inline(always)]
    pub const fn done(&self) -> bool {
        self.status & TxStatus::DD.bits() != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words are the descriptor's bytes in memory, little-endian (8254x SDM §3.2.3,
    /// §3.3.3), and convert back unchanged.
    #[test]
    fn words_are_the_descriptor_bytes() {
        let rx = RxDesc {
            addr: 0x1122_3344_5566_7788,
            length: 0x99aa,
            csum: 0xbbcc,
            status: 0xdd,
            errors: 0xee,
            special: 0xf00f,
        };
        let tx = TxDesc {
            addr: 0x0102_0304_0506_0708,
            length: 0x090a,
            cso: 0x0b,
            cmd: 0x0c,
            status: 0x0d,
            css: 0x0e,
            special: 0x0f10,
        };
        let bytes = |w: [u64; 2]| [w[0].to_le_bytes(), w[1].to_le_bytes()].concat();
        let mut want = rx.addr.to_le_bytes().to_vec();
        want.extend(rx.length.to_le_bytes());
        want.extend(rx.csum.to_le_bytes());
        want.extend([rx.status, rx.errors]);
        want.extend(rx.special.to_le_bytes());
        assert_eq!(bytes(rx.to_words()), want);
        let mut want = tx.addr.to_le_bytes().to_vec();
        want.extend(tx.length.to_le_bytes());
        want.extend([tx.cso, tx.cmd, tx.status, tx.css]);
        want.extend(tx.special.to_le_bytes());
        assert_eq!(bytes(tx.to_words()), want);
        assert_eq!(RxDesc::from_words(rx.to_words()), rx);
        assert_eq!(TxDesc::from_words(tx.to_words()), tx);
    }

    /// A TSO context's second word as the 8254x SDM §3.3.6 lays it out: PAYLEN in bits
    /// 0-19, DTYP 0 in 20-23, TUCMD in 24-31, HDRLEN in 40-47, MSS in 48-63.
    #[test]
    fn a_tso_context_lays_out_as_the_sdm_says() {
        let c = TxContext {
            ipcss: 14,
            ipcso: 24,
            ipcse: 33,
            tucss: 34,
            tucso: 50,
            tucse: 0,
            tucmd: TUCMD_TSE | TUCMD_IP | TUCMD_TCP,
            paylen: 0xf_fffe,
            hdrlen: 54,
            mss: 1448,
        };
        let w = c.to_desc().to_words();
        assert_eq!(w[1] & 0xf_ffff, 0xf_fffe);
        assert_eq!((w[1] >> 20) & 0xf, 0, "DTYP: a context");
        assert_eq!((w[1] >> 24) as u8, 0x27, "TSE, IP, TCP and DEXT");
        assert_eq!(((w[1] >> 40) as u8, (w[1] >> 48) as u16), (54, 1448));
        assert!(TxDesc::from_words(w).is_context());
        assert_eq!(TxContext::from_words(w), TxContext { tucmd: 0x27, ..c });
    }

    #[test]
    fn field_offsets_match_the_sdm() {
        assert_eq!(std::mem::offset_of!(RxDesc, length), 8);
        assert_eq!(std::mem::offset_of!(RxDesc, status), 12);
        assert_eq!(std::mem::offset_of!(RxDesc, errors), 13);
        assert_eq!(std::mem::offset_of!(TxDesc, cmd), 11);
        assert_eq!(std::mem::offset_of!(TxDesc, status), 12);
    }

    #[test]
    fn rx_checks() {
        let mut d = RxDesc::ready(0x1000);
        assert!(!d.done());
        d.status = (RxStatus::DD | RxStatus::EOP).bits();
        d.length = 60;
        assert_eq!(d.frame_len(2048), Ok(60));
        d.length = 2049;
        assert_eq!(
            d.frame_len(2048),
            Err(RxDescError::TooLong {
                length: 2049,
                capacity: 2048
            })
        );
        d.length = 0;
        assert_eq!(d.frame_len(2048), Err(RxDescError::Empty));
        d.length = 60;
        d.status = RxStatus::DD.bits();
        assert_eq!(d.frame_len(2048), Err(RxDescError::NotEop));
        d.status = (RxStatus::DD | RxStatus::EOP).bits();
        d.errors = RxErrors::CE.bits();
        assert_eq!(d.frame_len(2048), Err(RxDescError::Errors(1)));
    }

    #[test]
    fn tx_frame_bits() {
        let d = TxDesc::frame(0x2000, 60, false);
        assert_eq!(d.cmd, 0b11);
        let d = TxDesc::frame(0x2000, 60, true);
        assert_eq!(d.cmd, 0b1011);
        assert!(!d.done());
        assert_eq!(TxDesc::data(0x2000, 60, false).cmd, 0b10, "IFCS, no EOP");
        let d = TxDesc::data(0x2000, 60, false).reporting();
        assert_eq!(
            (d.cmd, d.addr, d.length),
            (0b1010, 0x2000, 60),
            "RS added only"
        );
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_config())]
        /// The receive loop's two-test check agrees with the full one on every descriptor:
        /// a length exactly for a done, good frame, and nothing for one not done.
        #[test]
        fn good_len_is_frame_len_of_a_done_descriptor(
            w1 in proptest::prelude::any::<u64>(),
            capacity in 1u16..=4096,
        ) {
            let d = RxDesc::from_words([0, w1]);
            let want = if d.done() { d.frame_len(capacity).ok() } else { None };
            proptest::prop_assert_eq!(d.good_len(capacity), want);
        }

    }
}
