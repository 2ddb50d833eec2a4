//! 82576 (igb) registers: offsets and bits, named after the Intel 82576 GbE Controller
//! Datasheet, chapter 8 ("Programming Interface"). Data only.

use crate::e1000::regs::StatKind;

/// CTRL — Device Control (§8.2.1).
pub const CTRL: u32 = 0x0000;
/// STATUS — Device Status (§8.2.2); the link bits decode as on the 8254x.
pub const STATUS: u32 = 0x0008;
/// EECD — EEPROM/Flash Control (§8.2.3).
pub const EECD: u32 = 0x0010;
/// MDIC — MDI Control: PHY register access (§8.2.4).
pub const MDIC: u32 = 0x0020;
/// ICR — Interrupt Cause Read (§8.8.1).
pub const ICR: u32 = 0x00C0;
/// ICR.LSC — Link Status Change, the 8254x's bit (§8.8.1).
pub const ICR_LSC: u32 = 1 << 2;
/// ICR.RXDMT0 — Receive Descriptor Minimum Threshold hit (§8.8.1).
pub const ICR_RXDMT0: u32 = 1 << 4;
/// ICR.RXO — Receiver Overrun (§8.8.1).
pub const ICR_RXO: u32 = 1 << 6;
/// ICR.RXDW — Receiver Descriptor Write Back, of any queue (§8.8.1).
pub const ICR_RXDW: u32 = 1 << 7;
/// IMS — Interrupt Mask Set/Read (§8.8.8).
pub const IMS: u32 = 0x00D0;
/// IMC — Interrupt Mask Clear (§8.8.9).
pub const IMC: u32 = 0x00D8;
/// EIMC — Extended Interrupt Mask Clear (§8.8.6).
pub const EIMC: u32 = 0x1528;
/// EIMS — Extended Interrupt Mask Set/Read (§8.8.5): writing 1s enables those vectors.
pub const EIMS: u32 = 0x1524;
/// EIAC — Extended Interrupt Auto Clear (§8.8.7): EICR bits cleared once their MSI-X
/// message is sent.
pub const EIAC: u32 = 0x152C;
/// EICR — Extended Interrupt Cause Read (§8.8.3); write 1s to clear.
pub const EICR: u32 = 0x1580;
/// GPIE — General Purpose Interrupt Enable (§8.8.11).
pub const GPIE: u32 = 0x1514;
/// GPIE.NSICR — Non Selective Interrupt Clear on Read.
pub const GPIE_NSICR: u32 = 1 << 0;
/// GPIE.Multiple_MSIX — one MSI-X vector per cause as IVAR says, EICR bit = vector.
pub const GPIE_MSIX_MODE: u32 = 1 << 4;
/// GPIE.PBA_support — the MSI-X pending bit array, as MSI-X asks.
pub const GPIE_PBA_SUPPORT: u32 = 1 << 31;
/// IVAR — Interrupt Vector Allocation, 8 registers (§8.8.15): register `q` byte 0 maps
/// receive queue `q`, byte 1 transmit queue `q` (bytes 2 and 3 queues `q + 8`).
pub const IVAR0: u32 = 0x1700;
/// IVAR_MISC — Interrupt Vector Allocation for other causes (§8.8.16): byte 0 the TCP
/// timer, byte 1 every ICR cause (link, and the rest) in MSI-X mode.
pub const IVAR_MISC: u32 = 0x1740;
/// IVAR entry valid bit.
pub const IVAR_VALID: u32 = 0x80;
/// EITR — Extended Interrupt Throttle of vector `v` (§8.8.13): interval in bits 14:2.
pub const fn eitr(v: u32) -> u32 {
    0x1680 + 4 * v
}
/// RCTL — Receive Control (§8.10.1).
pub const RCTL: u32 = 0x0100;
/// TCTL — Transmit Control (§8.12.1).
pub const TCTL: u32 = 0x0400;
/// RXCSUM — Receive Checksum Control (§8.10.17).
pub const RXCSUM: u32 = 0x5000;
/// RXCSUM.PCSD — Packet Checksum Disable: the write-back carries the RSS hash in place of
/// the fragment checksum (§8.10.17).
pub const RXCSUM_PCSD: u32 = 1 << 13;
/// MRQC — Multiple Receive Queues Command (§8.10.19): 0 = one queue, no RSS.
pub const MRQC: u32 = 0x5818;
/// MRQC.MRQE = 010b: RSS only, up to 8 queues, no VMDq.
pub const MRQC_RSS: u32 = 0b010;
/// MRQC hash-field enables (bits 31:16). The IPv6 types come twice, with and without
/// extension headers (`_EX`); the hash is the same for a frame without them.
pub const MRQC_TCP_IPV4: u32 = 1 << 16;
pub const MRQC_IPV4: u32 = 1 << 17;
pub const MRQC_TCP_IPV6_EX: u32 = 1 << 18;
pub const MRQC_IPV6_EX: u32 = 1 << 19;
pub const MRQC_IPV6: u32 = 1 << 20;
pub const MRQC_TCP_IPV6: u32 = 1 << 21;
pub const MRQC_UDP_IPV4: u32 = 1 << 22;
pub const MRQC_UDP_IPV6: u32 = 1 << 23;
pub const MRQC_UDP_IPV6_EX: u32 = 1 << 24;
/// RETA — Redirection Table, 32 registers of four one-byte entries (§8.10.20).
pub const RETA: u32 = 0x5C00;
/// Entries in the redirection table, indexed by the hash's 7 low bits.
pub const RETA_LEN: usize = 128;
/// RSSRK — RSS Random Key, 10 registers, key byte 0 in the low byte of the first (§8.10.21).
pub const RSSRK: u32 = 0x5C80;
/// MTA — Multicast Table Array, 128 registers (§8.10.15).
pub const MTA: u32 = 0x5200;
/// Number of MTA registers.
pub const MTA_LEN: u32 = 128;
/// RAL0 — Receive Address Low, entry 0 (§8.10.13).
pub const RAL0: u32 = 0x5400;
/// RAH0 — Receive Address High, entry 0 (§8.10.14).
pub const RAH0: u32 = 0x5404;
/// RAH.AV — Address Valid.
pub const RAH_AV: u32 = 1 << 31;
/// Receive address entries: 16 at RAL0 and 8 more at RAL(16) = 0x54E0 (§8.10.13); entry
/// 0 holds the port's MAC.
pub const RA_LEN: u32 = 24;

/// RAL and RAH of receive address entry `n` (< [`RA_LEN`]), 8 bytes apart in each bank.
pub const fn ra(n: u32) -> (u32, u32) {
    let ral = if n < 16 {
        RAL0 + 8 * n
    } else {
        0x54E0 + 8 * (n - 16)
    };
    (ral, ral + 4)
}

/// Per-queue register `base` of queue `q` (§8.10, §8.12): queues 0–3 at 0x100 steps from
/// their legacy offsets, 4–15 at 0x40 steps from `high`.
const fn queue(base: u32, high: u32, q: u32) -> u32 {
    if q < 4 {
        base + 0x100 * q
    } else {
        high + 0x40 * (q - 4)
    }
}

/// RDBAL — Receive Descriptor Base Address Low.
pub const fn rdbal(q: u32) -> u32 {
    queue(0x2800, 0xC100, q)
}
/// RDBAH — Receive Descriptor Base Address High.
pub const fn rdbah(q: u32) -> u32 {
    queue(0x2804, 0xC104, q)
}
/// RDLEN — Receive Descriptor Ring Length (bytes).
pub const fn rdlen(q: u32) -> u32 {
    queue(0x2808, 0xC108, q)
}
/// SRRCTL — Split and Replication Receive Control (§8.10.7).
pub const fn srrctl(q: u32) -> u32 {
    queue(0x280C, 0xC10C, q)
}
/// RDH — Receive Descriptor Head.
pub const fn rdh(q: u32) -> u32 {
    queue(0x2810, 0xC110, q)
}
/// RDT — Receive Descriptor Tail.
pub const fn rdt(q: u32) -> u32 {
    queue(0x2818, 0xC118, q)
}
/// RXDCTL — Receive Descriptor Control (§8.10.10).
pub const fn rxdctl(q: u32) -> u32 {
    queue(0x2828, 0xC128, q)
}
/// RQDPC — Receive Queue Drop Packet Count (§8.19.69).
pub const fn rqdpc(q: u32) -> u32 {
    queue(0x2830, 0xC130, q)
}
/// TDBAL — Transmit Descriptor Base Address Low.
pub const fn tdbal(q: u32) -> u32 {
    queue(0x3800, 0xE100, q)
}
/// TDBAH — Transmit Descriptor Base Address High.
pub const fn tdbah(q: u32) -> u32 {
    queue(0x3804, 0xE104, q)
}
/// TDLEN — Transmit Descriptor Ring Length (bytes).
pub const fn tdlen(q: u32) -> u32 {
    queue(0x3808, 0xE108, q)
}
/// TDH — Transmit Descriptor Head.
pub const fn tdh(q: u32) -> u32 {
    queue(0x3810, 0xE110, q)
}
/// TDT — Transmit Descriptor Tail.
pub const fn tdt(q: u32) -> u32 {
    queue(0x3818, 0xE118, q)
}
/// TXDCTL — Transmit Descriptor Control (§8.12.13).
pub const fn txdctl(q: u32) -> u32 {
    queue(0x3828, 0xE128, q)
}

/// CTRL.LRST — Link Reset (set at power-up; cleared to let the link come up).
pub const CTRL_LRST: u32 = 1 << 3;
/// CTRL.SLU — Set Link Up.
pub const CTRL_SLU: u32 = 1 << 6;
/// CTRL.RST — Device Reset (self-clearing).
pub const CTRL_RST: u32 = 1 << 26;
/// CTRL.VME — VLAN Mode Enable.
pub const CTRL_VME: u32 = 1 << 30;
/// EECD.AUTO_RD — the NVM auto-read after reset is done (§8.2.3).
pub const EECD_AUTO_RD: u32 = 1 << 9;

/// MDIC fields (§8.2.4): data 15:0, register 20:16, PHY address 25:21, opcode 27:26.
pub const MDIC_REG_SHIFT: u32 = 16;
pub const MDIC_PHY_SHIFT: u32 = 21;
pub const MDIC_OP_WRITE: u32 = 1 << 26;
pub const MDIC_READY: u32 = 1 << 28;
pub const MDIC_ERROR: u32 = 1 << 30;
/// The 82576's internal PHY answers at MDIO address 1.
pub const PHY_ADDR: u32 = 1;
/// PHY Control register (IEEE 802.3 clause 22 register 0).
pub const PHY_BMCR: u32 = 0;
/// BMCR: 1000 Mbit/s, full duplex, auto-negotiation on and restarted.
pub const BMCR_AUTONEG_RESTART: u16 = 0x0040 | 0x0100 | 0x1000 | 0x0200;

/// RCTL bits (§8.10.1).
pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_UPE: u32 = 1 << 3;
pub const RCTL_MPE: u32 = 1 << 4;
pub const RCTL_BAM: u32 = 1 << 15;
pub const RCTL_SECRC: u32 = 1 << 26;

/// SRRCTL: packet buffer size in KiB (bits 6:0).
pub const SRRCTL_BSIZEPKT_2K: u32 = 2;
/// SRRCTL.DESCTYPE = 001b, advanced descriptors, one buffer (bits 27:25).
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 1 << 25;
/// SRRCTL.DROP_EN: drop a frame for this queue when it has no descriptor, rather than
/// holding up the receive packet buffer for every queue.
pub const SRRCTL_DROP_EN: u32 = 1 << 31;

/// RXDCTL.WTHRESH = 1, its reset default: write back each descriptor as it completes.
pub const RXDCTL_WTHRESH_1: u32 = 1 << 16;

/// RXDCTL/TXDCTL.ENABLE (bit 25): the queue runs; the device confirms by reading back 1.
pub const QUEUE_ENABLE: u32 = 1 << 25;

/// TCTL bits (§8.12.1): enable, pad short packets, collision threshold 15, collision
/// distance 0x40 (full duplex).
pub const TCTL_EN: u32 = 1 << 1;
pub const TCTL_PSP: u32 = 1 << 3;
pub const TCTL_CT: u32 = 0x0F << 4;
pub const TCTL_COLD: u32 = 0x40 << 12;

/// Statistics registers (§8.19): the same offsets as the 8254x for these, all clear on
/// read on silicon.
pub mod stat {
    pub const CRCERRS: u32 = 0x4000;
    pub const MPC: u32 = 0x4010;
    pub const GPRC: u32 = 0x4074;
    pub const GPTC: u32 = 0x4080;
    pub const GORCL: u32 = 0x4088;
    pub const GOTCL: u32 = 0x4090;
    pub const RNBC: u32 = 0x40A0;
    pub const TPR: u32 = 0x40D0;
    pub const TPT: u32 = 0x40D4;
}

/// The statistics the driver keeps, by datasheet name. QEMU's model follows the datasheet
/// for most; the shared counter code learns which of the others keep running. RQDPC counts
/// the frames a queue dropped for want of descriptors (SRRCTL.DROP_EN), one per queue
/// zcnic may use (QEMU's model never counts them).
pub const STATS: [(&str, u32, StatKind); 17] = [
    ("GPRC", stat::GPRC, StatKind::ClearOrRunning32),
    ("GPTC", stat::GPTC, StatKind::ClearOrRunning32),
    ("GORC", stat::GORCL, StatKind::Clear64),
    ("GOTC", stat::GOTCL, StatKind::Clear64),
    ("TPR", stat::TPR, StatKind::ClearOrRunning32),
    ("TPT", stat::TPT, StatKind::ClearOrRunning32),
    ("MPC", stat::MPC, StatKind::ClearOrRunning32),
    ("RNBC", stat::RNBC, StatKind::ClearOrRunning32),
    ("CRCERRS", stat::CRCERRS, StatKind::ClearOrRunning32),
    ("RQDPC0", rqdpc(0), StatKind::ClearOrRunning32),
    ("RQDPC1", rqdpc(1), StatKind::ClearOrRunning32),
    ("RQDPC2", rqdpc(2), StatKind::ClearOrRunning32),
    ("RQDPC3", rqdpc(3), StatKind::ClearOrRunning32),
    ("RQDPC4", rqdpc(4), StatKind::ClearOrRunning32),
    ("RQDPC5", rqdpc(5), StatKind::ClearOrRunning32),
    ("RQDPC6", rqdpc(6), StatKind::ClearOrRunning32),
    ("RQDPC7", rqdpc(7), StatKind::ClearOrRunning32),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_registers_follow_the_datasheets_two_banks() {
        assert_eq!(rdbal(0), 0x2800);
        assert_eq!(rdt(1), 0x2918);
        assert_eq!(tdt(3), 0x3B18);
        assert_eq!(rdbal(4), 0xC100);
        assert_eq!(rxdctl(15), 0xC128 + 0x40 * 11);
        assert_eq!(txdctl(4), 0xE128);
        assert_eq!(rqdpc(0), 0x2830);
    }
}
