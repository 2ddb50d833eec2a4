//! 8254x registers: offsets and bits, named after the PCI/PCI-X Family of Gigabit Ethernet
//! Controllers Software Developer's Manual (8254x SDM), section 13. Data only.

use bitflags::bitflags;

/// CTRL — Device Control (8254x SDM §13.4.1).
pub const CTRL: u32 = 0x0000;
/// VET — VLAN Ether Type (8254x SDM §13.4.13): the type CTRL.VME strips and VLE inserts.
pub const VET: u32 = 0x0038;
/// The 802.1Q tag protocol identifier, VET's value.
pub const VET_8021Q: u32 = 0x8100;
/// RXCSUM — Receive Checksum Control (8254x SDM §13.4.24).
pub const RXCSUM: u32 = 0x5000;
/// RXCSUM.IPOFL: check IPv4 header checksums on receive (IPCS/IPE in the descriptor).
pub const RXCSUM_IPOFL: u32 = 1 << 8;
/// RXCSUM.TUOFL: check TCP/UDP checksums on receive (TCPCS/TCPE).
pub const RXCSUM_TUOFL: u32 = 1 << 9;
/// STATUS — Device Status (8254x SDM §13.4.2).
pub const STATUS: u32 = 0x0008;
/// EERD — EEPROM Read (8254x SDM §13.4.4).
pub const EERD: u32 = 0x0014;
/// ICR — Interrupt Cause Read (8254x SDM §13.4.17).
pub const ICR: u32 = 0x00C0;
/// ICR.LSC — Link Status Change: the link went up or down (8254x SDM §13.4.17).
pub const ICR_LSC: u32 = 1 << 2;
/// ICR.TXDW — Transmit Descriptor Written Back (8254x SDM §13.4.17).
pub const ICR_TXDW: u32 = 1 << 0;
/// ICR.RXDMT0 — Receive Descriptor Minimum Threshold reached: the ring runs short of free
/// descriptors (8254x SDM §13.4.17).
pub const ICR_RXDMT0: u32 = 1 << 4;
/// ICR.RXO — Receiver Overrun: a frame was lost for lack of room (8254x SDM §13.4.17).
pub const ICR_RXO: u32 = 1 << 6;
/// ICR.RXT0 — Receiver Timer Interrupt: a frame was stored and its descriptor written back
/// (after RDTR, 0 here: at once) (8254x SDM §13.4.17).
pub const ICR_RXT0: u32 = 1 << 7;
/// ITR — Interrupt Throttling (8254x SDM §13.4.18): the least interval between two
/// interrupts, in 256 ns units.
pub const ITR: u32 = 0x00C4;
/// ICS — Interrupt Cause Set (8254x SDM §13.4.19).
pub const ICS: u32 = 0x00C8;
/// IMS — Interrupt Mask Set/Read (8254x SDM §13.4.20): writing 1s enables those causes.
pub const IMS: u32 = 0x00D0;
/// IMC — Interrupt Mask Clear (8254x SDM §13.4.21).
pub const IMC: u32 = 0x00D8;
/// RCTL — Receive Control (8254x SDM §13.4.22).
pub const RCTL: u32 = 0x0100;
/// TCTL — Transmit Control (8254x SDM §13.4.33).
pub const TCTL: u32 = 0x0400;
/// TIPG — Transmit Inter-Packet Gap (8254x SDM §13.4.34).
pub const TIPG: u32 = 0x0410;
/// RDBAL — Receive Descriptor Base Address Low (8254x SDM §13.4.26).
pub const RDBAL: u32 = 0x2800;
/// RDBAH — Receive Descriptor Base Address High (8254x SDM §13.4.27).
pub const RDBAH: u32 = 0x2804;
/// RDLEN — Receive Descriptor Length (8254x SDM §13.4.28).
pub const RDLEN: u32 = 0x2808;
/// RDH — Receive Descriptor Head (8254x SDM §13.4.29).
pub const RDH: u32 = 0x2810;
/// RDT — Receive Descriptor Tail (8254x SDM §13.4.30).
pub const RDT: u32 = 0x2818;
/// TDBAL — Transmit Descriptor Base Address Low (8254x SDM §13.4.36).
pub const TDBAL: u32 = 0x3800;
/// TDBAH — Transmit Descriptor Base Address High (8254x SDM §13.4.37).
pub const TDBAH: u32 = 0x3804;
/// TDLEN — Transmit Descriptor Length (8254x SDM §13.4.38).
pub const TDLEN: u32 = 0x3808;
/// TDH — Transmit Descriptor Head (8254x SDM §13.4.39).
pub const TDH: u32 = 0x3810;
/// TDT — Transmit Descriptor Tail (8254x SDM §13.4.40).
pub const TDT: u32 = 0x3818;
/// MTA — Multicast Table Array, 128 registers (8254x SDM §13.5.1).
pub const MTA: u32 = 0x5200;
/// Number of MTA registers.
pub const MTA_LEN: u32 = 128;
/// RAL0 — Receive Address Low, entry 0 (8254x SDM §13.5.2).
pub const RAL0: u32 = 0x5400;
/// RAH0 — Receive Address High, entry 0 (8254x SDM §13.5.3).
pub const RAH0: u32 = 0x5404;
/// RAH.AV — Address Valid.
pub const RAH_AV: u32 = 1 << 31;
/// Receive address entries (RAL/RAH pairs): entry 0 holds the port's MAC, 1–15 extra
/// exact addresses (8254x SDM §13.5.2).
pub const RA_LEN: u32 = 16;

/// RAL and RAH of receive address entry `n` (< [`RA_LEN`]), 8 bytes apart.
pub const fn ra(n: u32) -> (u32, u32) {
    (RAL0 + 8 * n, RAH0 + 8 * n)
}

/// Statistics registers (8254x SDM §13.7). The SDM has them all clear on read; QEMU's
/// model clears only some (see [`StatKind::ClearOrRunning32`]).
pub mod stat {
    /// CRCERRS — CRC Error Count (§13.7.1).
    pub const CRCERRS: u32 = 0x4000;
    /// MPC — Missed Packets Count: dropped for lack of receive descriptors (§13.7.5).
    pub const MPC: u32 = 0x4010;
    /// GPRC — Good Packets Received Count (§13.7.23).
    pub const GPRC: u32 = 0x4074;
    /// GPTC — Good Packets Transmitted Count (§13.7.27).
    pub const GPTC: u32 = 0x4080;
    /// GORCL — Good Octets Received Count, low; GORCH at +4 (§13.7.28).
    pub const GORCL: u32 = 0x4088;
    /// GOTCL — Good Octets Transmitted Count, low; GOTCH at +4 (§13.7.30).
    pub const GOTCL: u32 = 0x4090;
    /// RNBC — Receive No Buffers Count (§13.7.32).
    pub const RNBC: u32 = 0x40A0;
    /// TPR — Total Packets Received (§13.7.41).
    pub const TPR: u32 = 0x40D0;
    /// TPT — Total Packets Transmitted (§13.7.42).
    pub const TPT: u32 = 0x40D4;
}

/// How a statistics register behaves when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    /// 32-bit, cleared by the read (as the SDM specifies).
    Clear32,
    /// 64-bit pair, low then high; reading high clears both.
    Clear64,
    /// 32-bit, clear on read per the SDM (§13.7: "all statistics registers ... are
    /// cleared on read"), but never cleared by QEMU's model, whose readops use a plain read
    /// for CRCERRS..MPC and RNBC. The driver learns which one it has from the registers
    /// themselves (`e1000::Counters`) and counts correctly on both.
    ClearOrRunning32,
}

/// The counters `Nic::stats` reports, by datasheet name.
pub const STATS: [(&str, u32, StatKind); 9] = [
    ("GPRC", stat::GPRC, StatKind::Clear32),
    ("GPTC", stat::GPTC, StatKind::Clear32),
    ("GORC", stat::GORCL, StatKind::Clear64),
    ("GOTC", stat::GOTCL, StatKind::Clear64),
    ("TPR", stat::TPR, StatKind::Clear32),
    ("TPT", stat::TPT, StatKind::Clear32),
    ("MPC", stat::MPC, StatKind::ClearOrRunning32),
    ("RNBC", stat::RNBC, StatKind::ClearOrRunning32),
    ("CRCERRS", stat::CRCERRS, StatKind::ClearOrRunning32),
];

bitflags! {
    /// CTRL bits (8254x SDM §13.4.1).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Ctrl: u32 {
        /// Full Duplex.
        const FD = 1 << 0;
        /// Link Reset.
        const LRST = 1 << 3;
        /// Auto-Speed Detection Enable.
        const ASDE = 1 << 5;
        /// Set Link Up.
        const SLU = 1 << 6;
        /// Invert Loss-of-Signal.
        const ILOS = 1 << 7;
        /// Force Speed.
        const FRCSPD = 1 << 11;
        /// Force Duplex.
        const FRCDPLX = 1 << 12;
        /// Device Reset (self-clearing).
        const RST = 1 << 26;
        /// VLAN Mode Enable.
        const VME = 1 << 30;
        /// PHY Reset.
        const PHY_RST = 1 << 31;
    }

    /// STATUS bits (8254x SDM §13.4.2).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Status: u32 {
        /// Full Duplex.
        const FD = 1 << 0;
        /// Link Up.
        const LU = 1 << 1;
        /// Speed bit 0 (bits 7:6: 00 = 10, 01 = 100, 1x = 1000 Mbit/s).
        const SPEED0 = 1 << 6;
        /// Speed bit 1.
        const SPEED1 = 1 << 7;
    }

    /// RCTL bits (8254x SDM §13.4.22).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Rctl: u32 {
        /// Receiver Enable.
        const EN = 1 << 1;
        /// Store Bad Packets.
        const SBP = 1 << 2;
        /// Unicast Promiscuous Enable.
        const UPE = 1 << 3;
        /// Multicast Promiscuous Enable.
        const MPE = 1 << 4;
        /// Multicast Offset bits 13:12, which address bits hash into the MTA: zcnic keeps
        /// 00, bits 47:36 (`zcnic::filter::mta_hash`).
        const MO_47_36 = 0;
        /// Long Packet Enable.
        const LPE = 1 << 5;
        /// Broadcast Accept Mode.
        const BAM = 1 << 15;
        /// Buffer size bits 17:16 (00 = 2048 bytes with BSEX clear).
        const BSIZE_2048 = 0;
        /// Strip Ethernet CRC.
        const SECRC = 1 << 26;
    }

    /// TCTL bits (8254x SDM §13.4.33).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Tctl: u32 {
        /// Transmit Enable.
        const EN = 1 << 1;
        /// Pad Short Packets (to 64 bytes with the FCS).
        const PSP = 1 << 3;
        /// Collision Threshold = 0x0F, the SDM's recommendation (bits 11:4).
        const CT_DEFAULT = 0x0F << 4;
        /// Collision Distance = 0x40 for full duplex (bits 21:12).
        const COLD_FULL_DUPLEX = 0x40 << 12;
    }
}

/// TIPG for the 82540EM copper parts: IPGT 10, IPGR1 8, IPGR2 6 (8254x SDM §13.4.34).
pub const TIPG_COPPER: u32 = 10 | (8 << 10) | (6 << 20);

/// EERD.START — begin a read (8254x SDM §13.4.4, 82540/82545 layout).
pub const EERD_START: u32 = 1 << 0;
/// EERD.DONE — read finished.
pub const EERD_DONE: u32 = 1 << 4;
/// EERD address field shift.
pub const EERD_ADDR_SHIFT: u32 = 8;
/// EERD data field shift.
pub const EERD_DATA_SHIFT: u32 = 16;
