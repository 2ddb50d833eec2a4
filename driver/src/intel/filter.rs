//! The e1000's and igb's receive address filters, which the two families share register
//! for register: the Multicast Table Array, 128 × 32 bits indexed by a 12-bit hash of the
//! destination (8254x SDM §13.5.1, 82576 datasheet §8.10.15), and the receive address
//! entries after entry 0 for extra exact unicast addresses (§13.5.2, §8.10.13).
//! All-multicast is RCTL.MPE, which each driver sets from [`RxFilter::allmulti`] when it
//! writes RCTL. Control path only.
//!
//! The MTA keeps one bit per hash, so two joined groups may share a bit: the driver keeps
//! the list of groups (with a count of joins each) and rebuilds each register from what
//! is left in it, never clearing a bit another group still needs.

use crate::filter::{mta_hash, Kind, RxFilter};
use crate::mmio::Bar;
use crate::pci::PciAddr;
use crate::Error;

/// Registers of the MTA.
const MTA_LEN: usize = 128;

/// One port's filter state, and the registers as last written.
#[derive(Debug)]
pub(crate) struct IntelFilter {
    pub(crate) rx: RxFilter,
    mta: [u32; MTA_LEN],
    mta_base: u32,
    /// RAL/RAH offsets of entry n.
    ra: fn(u32) -> (u32, u32),
    /// Entries past entry 0 (the port's MAC) that extra unicast addresses may take.
    extra: usize,
}

/// The MTA that admits `groups`: bit `hash & 31` of register `hash >> 5` for each.
pub(crate) fn mta_image(groups: impl Iterator<Item = [u8; 6]>) -> [u32; MTA_LEN] {
    let mut mta = [0u32; MTA_LEN];
    for g in groups {
        let h = usize::from(mta_hash(g));
        mta[h >> 5] |= 1 << (h & 31);
    }
    mta
}

impl IntelFilter {
    /// Empties the device's MTA and extra receive addresses (neither is cleared by a
    /// reset: the SDM leaves them undefined at power-up) and returns the empty filter.
    /// `ra_len` entries in all, entry 0 being the port's own.
    pub(crate) fn new(
        bar: &impl Bar,
        mta_base: u32,
        ra_len: u32,
        ra: fn(u32) -> (u32, u32),
    ) -> Self {
        for i in 0..MTA_LEN as u32 {
            bar.write32(mta_base + 4 * i, 0);
        }
        let me = Self {
            rx: RxFilter::default(),
            mta: [0; MTA_LEN],
            mta_base,
            ra,
            extra: ra_len.saturating_sub(1) as usize,
        };
        me.write_ra(bar, &RxFilter::default());
        me
    }

    /// Adds (`add` true) or removes `mac` in the `kind` list and writes the registers that
    /// change; a refused change leaves filter and device as they were.
    pub(crate) fn change(
        &mut self,
        bar: &impl Bar,
        addr: PciAddr,
        kind: Kind,
        mac: [u8; 6],
        add: bool,
    ) -> Result<(), Error> {
        let (next, changed) = self
            .rx
            .change(kind, mac, add)
            .map_err(|e| Error::filter(addr, e))?;
        if next.unicast.len() > self.extra {
            let full = crate::filter::FilterError::TableFull(self.extra);
            return Err(Error::filter(addr, full));
        }
        if changed {
            match kind {
                Kind::Multicast => self.write_mta(bar, &next),
                Kind::Unicast => self.write_ra(bar, &next),
            }
        }
        self.rx = next;
        Ok(())
    }

    /// Writes the MTA registers whose value changes for `next`'s groups.
    fn write_mta(&mut self, bar: &impl Bar, next: &RxFilter) {
        let image = mta_image(next.multicast.iter());
        for (i, (now, want)) in self.mta.iter_mut().zip(image).enumerate() {
            if *now != want {
                bar.write32(self.mta_base + 4 * i as u32, want);
                *now = want;
            }
        }
    }

    /// Writes entries 1.. with `next`'s unicast addresses, in order, the rest invalid.
    /// Each entry is invalidated before its low half changes, so the device never matches
    /// half of one address and half of another (the SDM asks RAL before RAH).
    fn write_ra(&self, bar: &impl Bar, next: &RxFilter) {
        let mut macs = next.unicast.iter();
        for n in 1..=self.extra as u32 {
            let (ral, rah) = (self.ra)(n);
            bar.write32(rah, 0);
            match macs.next() {
                Some(m) => {
                    bar.write32(ral, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
                    let high = u32::from(u16::from_le_bytes([m[4], m[5]]));
                    bar.write32(rah, high | crate::e1000::regs::RAH_AV);
                }
                None => bar.write32(ral, 0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e1000::regs;
    use crate::FakeBar;

    fn filter(bar: &FakeBar) -> IntelFilter {
        IntelFilter::new(bar, regs::MTA, regs::RA_LEN, regs::ra)
    }

    fn addr() -> PciAddr {
        "0000:00:02.0".parse().unwrap()
    }

    fn mta(bar: &FakeBar, reg: u32) -> u32 {
        bar.read32(regs::MTA + 4 * reg)
    }

    #[test]
    fn a_group_sets_its_hash_bit_and_a_shared_bit_stays_while_one_group_needs_it() {
        let bar = FakeBar::new(0x20000);
        for i in 0..128 {
            bar.write32(regs::MTA + 4 * i, u32::MAX); // a previous user's table
        }
        let mut f = filter(&bar);
        assert!((0..128).all(|i| mta(&bar, i) == 0), "emptied at open");
        let (a, b) = ([0x33, 0x33, 0xff, 0, 0, 1], [0x01, 0, 0x5e, 0, 0, 1]);
        assert_eq!(mta_hash(a), mta_hash(b), "the two share hash 0x010");
        f.change(&bar, addr(), Kind::Multicast, a, true).unwrap();
        f.change(&bar, addr(), Kind::Multicast, b, true).unwrap();
        assert_eq!(mta(&bar, 0), 1 << 16);
        f.change(&bar, addr(), Kind::Multicast, a, false).unwrap();
        assert_eq!(mta(&bar, 0), 1 << 16, "b still needs the bit");
        f.change(&bar, addr(), Kind::Multicast, b, false).unwrap();
        assert_eq!(mta(&bar, 0), 0);
    }

    #[test]
    fn extra_unicast_addresses_fill_entries_one_on_and_a_full_table_is_an_error() {
        let bar = FakeBar::new(0x20000);
        let mut f = filter(&bar);
        for n in 1..16u8 {
            f.change(&bar, addr(), Kind::Unicast, [2, 0, 0, 0, 0, n], true)
                .unwrap();
        }
        let (ral, rah) = regs::ra(15);
        assert_eq!(bar.read32(ral), 2);
        assert_eq!(bar.read32(rah), 15 << 8 | regs::RAH_AV);
        let err = f
            .change(&bar, addr(), Kind::Unicast, [2, 0, 0, 0, 0, 99], true)
            .unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        f.change(&bar, addr(), Kind::Unicast, [2, 0, 0, 0, 0, 1], false)
            .unwrap();
        assert_eq!(bar.read32(regs::ra(15).1), 0, "the list moved up one");
        assert_eq!(bar.read32(regs::ra(1).0), 2);
        assert_eq!(bar.read32(regs::ra(1).1), 2 << 8 | regs::RAH_AV);
    }
}
