//! The receive filters of the fake devices, modelled on the datasheets and on QEMU's
//! models rather than on zcnic's code, so a host test checks the driver against them:
//!
//! - [`intel_admits`]: the 8254x/82576 destination filter (8254x SDM §13.4.22 RCTL,
//!   §13.5; 82576 datasheet §8.10), as QEMU's `e1000x_rx_group_filter` (and, without
//!   VMDq, `igb_receive_filter`) applies it: broadcast with RCTL.BAM, any multicast with
//!   RCTL.MPE, any unicast with RCTL.UPE; then an exact match in a valid receive address
//!   entry; then the MTA bit of the 12-bit hash RCTL.MO picks.
//! - [`VirtioRxFilter`]: virtio-net's receive modes and MAC table (virtio 1.1
//!   §5.1.6.5.1–2), parsed as QEMU's `virtio_net_handle_mac` parses
//!   VIRTIO_NET_CTRL_MAC_TABLE_SET and applied as its `receive_filter` does.

use zcnic::{Bar, FakeBar};

/// RCTL (both families).
const RCTL: u32 = 0x0100;
const RCTL_UPE: u32 = 1 << 3;
const RCTL_MPE: u32 = 1 << 4;
const RCTL_MO_SHIFT: u32 = 12;
const RCTL_BAM: u32 = 1 << 15;
/// MTA, 128 registers.
const MTA: u32 = 0x5200;
/// RAH.AV.
const RAH_AV: u32 = 1 << 31;

/// Which receive address registers a device has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// 8254x: 16 entries at 0x5400.
    E1000,
    /// 82576: those 16, and 8 more at 0x54E0 (RAL(16)).
    Igb,
}

impl Family {
    /// RAL offsets of every entry.
    fn ral(self) -> Vec<u32> {
        let mut v: Vec<u32> = (0..16).map(|n| 0x5400 + 8 * n).collect();
        if self == Family::Igb {
            v.extend((0..8).map(|n| 0x54E0 + 8 * n));
        }
        v
    }
}

/// The hash of `dst` into the MTA for RCTL.MO = `mo`: address bits 47:36, 46:35, 45:34
/// or 43:32 (8254x SDM §13.4.22), QEMU's `mta_shift` of 4, 3, 2 or 0 applied to
/// `byte5 << 8 | byte4`.
pub fn mta_hash(dst: [u8; 6], mo: u32) -> u32 {
    let shift = [4, 3, 2, 0][(mo & 3) as usize];
    ((u32::from(dst[5]) << 8 | u32::from(dst[4])) >> shift) & 0xfff
}

/// Whether a device of `family` whose registers are `bar` accepts a frame to `dst`.
pub fn intel_admits(bar: &FakeBar, family: Family, dst: [u8; 6]) -> bool {
    let rctl = bar.read32(RCTL);
    let group = dst[0] & 1 != 0;
    if dst == [0xff; 6] && rctl & RCTL_BAM != 0
        || group && dst != [0xff; 6] && rctl & RCTL_MPE != 0
        || !group && rctl & RCTL_UPE != 0
    {
        return true;
    }
    for ral in family.ral() {
        let rah = bar.read32(ral + 4);
        if rah & RAH_AV == 0 {
            continue;
        }
        let lo = bar.read32(ral).to_le_bytes();
        let hi = rah.to_le_bytes();
        if dst == [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]] {
            return true;
        }
    }
    let h = mta_hash(dst, rctl >> RCTL_MO_SHIFT);
    bar.read32(MTA + 4 * (h >> 5)) & 1 << (h & 31) != 0
}

/// The destination of a frame, if it has one.
pub fn dst(frame: &[u8]) -> Option<[u8; 6]> {
    frame.get(..6)?.try_into().ok()
}

/// QEMU's table size (`MAC_TABLE_ENTRIES`): more entries overflow into "all of them".
pub const MAC_TABLE_ENTRIES: usize = 64;

/// virtio-net's receive filter state, as QEMU keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioRxFilter {
    /// Every frame (QEMU's state after reset: on).
    pub promisc: bool,
    /// Every multicast frame.
    pub allmulti: bool,
    /// Exact unicast addresses of the table.
    pub unicast: Vec<[u8; 6]>,
    /// Exact multicast addresses of the table.
    pub multicast: Vec<[u8; 6]>,
    /// More unicast entries than the table holds: every unicast frame.
    pub uni_overflow: bool,
    /// More multicast entries than the table holds: every multicast frame.
    pub multi_overflow: bool,
}

impl Default for VirtioRxFilter {
    /// After a reset: promiscuous, table empty.
    fn default() -> Self {
        Self {
            promisc: true,
            allmulti: false,
            unicast: Vec::new(),
            multicast: Vec::new(),
            uni_overflow: false,
            multi_overflow: false,
        }
    }
}

/// One table's addresses, or `None` when it had more than the room left (an overflow).
type Table = Option<Vec<[u8; 6]>>;

/// A le32 count and that many addresses from the front of `d`: the addresses (`None` past
/// the room left) and the bytes after them; `None` when `d` is too short.
fn take_table(d: &[u8], room: usize) -> Option<(Table, &[u8])> {
    let n = u32::from_le_bytes(d.get(..4)?.try_into().ok()?) as usize;
    let body = d.get(4..4 + n.checked_mul(6)?)?;
    let macs = body.chunks_exact(6).map(|c| c.try_into().expect("6 bytes"));
    let rest = &d[4 + 6 * n..];
    Some(((n <= room).then(|| macs.collect()), rest))
}

impl VirtioRxFilter {
    /// A receive-filter command (class 0, RX; class 1, MAC): `Some(ok)` for those, `None`
    /// for other classes. Like QEMU, a table whose counts do not add up to the data's
    /// length exactly is refused and changes nothing.
    pub fn command(&mut self, class: u8, cmd: u8, data: &[u8]) -> Option<bool> {
        let ok = match (class, cmd, data) {
            (0, 0, [on]) => {
                self.promisc = *on != 0;
                true
            }
            (0, 1, [on]) => {
                self.allmulti = *on != 0;
                true
            }
            (0, _, _) => false,
            (1, 0, d) => self.table_set(d),
            (1, _, _) => false,
            _ => return None,
        };
        Some(ok)
    }

    fn table_set(&mut self, d: &[u8]) -> bool {
        let Some((uni, rest)) = take_table(d, MAC_TABLE_ENTRIES) else {
            return false;
        };
        let used = uni.as_ref().map_or(0, Vec::len);
        let Some((multi, rest)) = take_table(rest, MAC_TABLE_ENTRIES - used) else {
            return false;
        };
        if !rest.is_empty() {
            return false;
        }
        self.uni_overflow = uni.is_none();
        self.multi_overflow = multi.is_none();
        self.unicast = uni.unwrap_or_default();
        self.multicast = multi.unwrap_or_default();
        true
    }

    /// Whether a frame to `dst` gets in, on a device whose own address is `mac`.
    pub fn admits(&self, mac: [u8; 6], dst: [u8; 6]) -> bool {
        if self.promisc {
            return true;
        }
        if dst[0] & 1 != 0 {
            dst == [0xff; 6]
                || self.allmulti
                || self.multi_overflow
                || self.multicast.contains(&dst)
        } else {
            self.uni_overflow || dst == mac || self.unicast.contains(&dst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_follows_rctl_mo() {
        let a = [0x01, 0xaa, 0x00, 0x12, 0x34, 0x56];
        // Linux's e1000_hash_mc_addr comments give 0x563, 0xAC6 and 0x634 for MO 0, 1 and 3
        // with 01:AA:00:12:34:56; for MO 2 they say 0x5D8, a digit swap of what its own
        // code (and QEMU's) computes: (0x34 >> 2 | 0x56 << 6) & 0xfff = 0x58D.
        assert_eq!(
            [0, 1, 2, 3].map(|mo| mta_hash(a, mo)),
            [0x563, 0xac6, 0x58d, 0x634]
        );
    }

    #[test]
    fn a_table_must_fill_the_command_exactly() {
        let mut f = VirtioRxFilter::default();
        let mut d = vec![0, 0, 0, 0, 1, 0, 0, 0];
        d.extend([0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(f.command(1, 0, &d), Some(true));
        assert_eq!(f.multicast, vec![[0x33, 0x33, 0, 0, 0, 1]]);
        d.push(0);
        assert_eq!(f.command(1, 0, &d), Some(false), "a byte too many");
        assert_eq!(f.command(1, 0, &d[..d.len() - 2]), Some(false));
        assert_eq!(f.multicast.len(), 1, "a refused table changes nothing");
    }
}
