//! virtio-net receive filters over the control queue (virtio 1.1 §5.1.6.5.1–2):
//! promiscuous and all-multicast mode (VIRTIO_NET_CTRL_RX), and the MAC address table
//! (VIRTIO_NET_CTRL_MAC_TABLE_SET) with the extra unicast addresses and the multicast
//! groups joined. Control path only.
//!
//! All of them need VIRTIO_NET_F_CTRL_RX. A device without it has no receive filter: it
//! hands the driver every frame (QEMU's model starts promiscuous and stays so), so every
//! filter here is already met, and each call succeeds with nothing to send; the port
//! still keeps its lists, which then only answer remove calls truthfully.
//!
//! The table is exact: the device matches whole addresses. QEMU keeps 64 entries in all;
//! with more it sets an overflow flag and receives every frame of that kind, which the
//! filter contract (at least these groups) allows.

use super::ctrl::{self, cmd};
use super::port::VirtioPort;
use super::queue::QueueKind;
use crate::filter::{Kind, RxFilter};
use crate::pci::PciAddr;
use crate::Error;

/// What sends one control command: class, command, and the data in parts.
pub(crate) trait Sender: FnOnce(u8, u8, &[&[u8]]) -> Result<(), Error> {}
impl<F: FnOnce(u8, u8, &[&[u8]]) -> Result<(), Error>> Sender for F {}

/// A port's receive filter, and whether the device has one.
#[derive(Debug)]
pub(crate) struct VirtioFilter {
    pub(crate) promisc: bool,
    rx: RxFilter,
    /// VIRTIO_NET_F_CTRL_RX was negotiated.
    ctrl_rx: bool,
}

/// `virtio_net_ctrl_mac` (virtio 1.1 §5.1.6.5.2): a le32 count, then that many addresses.
/// A legacy device takes the count in the guest's native byte order (§5.1.6.5.2.2), which
/// on the x86 and arm64 hosts zcnic runs on is little-endian too.
fn table(macs: impl ExactSizeIterator<Item = [u8; 6]>) -> Vec<u8> {
    let mut t = Vec::with_capacity(4 + 6 * macs.len());
    t.extend_from_slice(&(macs.len() as u32).to_le_bytes());
    for m in macs {
        t.extend_from_slice(&m);
    }
    t
}

/// VIRTIO_NET_CTRL_MAC_TABLE_SET's data: the unicast table, then the multicast table,
/// one part (one descriptor) each, as Linux's driver sends them.
pub(crate) fn mac_tables(f: &RxFilter) -> [Vec<u8>; 2] {
    let uni: Vec<_> = f.unicast.iter().collect();
    let multi: Vec<_> = f.multicast.iter().collect();
    [table(uni.into_iter()), table(multi.into_iter())]
}

impl VirtioFilter {
    /// The filter of a device just reset: promiscuous per `promisc` once
    /// [`apply_promisc`](Self::apply_promisc) sent it, no all-multicast, tables empty (a
    /// reset empties the device's, virtio 1.1 §5.1.6.5.2).
    pub(crate) fn new(promisc: bool, ctrl_rx: bool) -> Self {
        Self {
            promisc,
            rx: RxFilter::default(),
            ctrl_rx,
        }
    }

    /// Sets the device's promiscuous mode to the port's through `send(class, cmd, parts)`;
    /// without a receive filter there is nothing to set (the device receives everything).
    pub(crate) fn apply_promisc(&mut self, addr: PciAddr, send: impl Sender) -> Result<(), Error> {
        if !self.ctrl_rx {
            if !self.promisc {
                log::warn!(
                    "{addr}: virtio-net without VIRTIO_NET_F_CTRL_RX cannot filter: the port receives every frame"
                );
            }
            return Ok(());
        }
        send(cmd::RX, cmd::RX_PROMISC, &[&[u8::from(self.promisc)]])
    }

    /// Promiscuous mode on or off; the port keeps its mode when the device refuses.
    pub(crate) fn set_promisc(
        &mut self,
        addr: PciAddr,
        on: bool,
        send: impl Sender,
    ) -> Result<(), Error> {
        let was = std::mem::replace(&mut self.promisc, on);
        if was == on {
            return Ok(());
        }
        let r = self.apply_promisc(addr, send);
        if r.is_err() {
            self.promisc = was;
        }
        r
    }

    /// VIRTIO_NET_CTRL_RX_ALLMULTI.
    pub(crate) fn set_allmulti(&mut self, on: bool, send: impl Sender) -> Result<(), Error> {
        if self.rx.allmulti == on {
            return Ok(());
        }
        if self.ctrl_rx {
            send(cmd::RX, cmd::RX_ALLMULTI, &[&[u8::from(on)]])?;
        }
        self.rx.allmulti = on;
        Ok(())
    }

    /// One add or remove of `mac` in the `kind` list; the whole table goes to the device
    /// when it changes, and the lists change only once the device took it.
    pub(crate) fn change(
        &mut self,
        addr: PciAddr,
        kind: Kind,
        mac: [u8; 6],
        add: bool,
        send: impl Sender,
    ) -> Result<(), Error> {
        let (next, changed) = self
            .rx
            .change(kind, mac, add)
            .map_err(|e| Error::filter(addr, e))?;
        if changed && self.ctrl_rx {
            let [uni, multi] = mac_tables(&next);
            send(cmd::MAC, cmd::MAC_TABLE_SET, &[&uni, &multi])?;
        }
        self.rx = next;
        Ok(())
    }
}

/// The port's side: its filter and control queue, borrowed side by side.
impl<Q: QueueKind> VirtioPort<Q> {
    fn filter_parts(&mut self) -> (&mut VirtioFilter, PciAddr, impl Sender + '_) {
        let (ctrl, addr) = (&mut self.ctrl, self.addr);
        let send = move |c, m, d: &[&[u8]]| ctrl::send(ctrl.as_mut(), addr, c, m, d);
        (&mut self.filter, addr, send)
    }

    /// Sets the device's promiscuous mode to the port's.
    pub(super) fn apply_promisc(&mut self) -> Result<(), Error> {
        let (filter, addr, send) = self.filter_parts();
        filter.apply_promisc(addr, send)
    }

    /// [`VirtioFilter::set_promisc`].
    pub(super) fn promisc_to(&mut self, on: bool) -> Result<(), Error> {
        let (filter, addr, send) = self.filter_parts();
        filter.set_promisc(addr, on, send)
    }

    /// [`VirtioFilter::set_allmulti`].
    pub(super) fn allmulti_to(&mut self, on: bool) -> Result<(), Error> {
        let (filter, _, send) = self.filter_parts();
        filter.set_allmulti(on, send)
    }

    /// One add or remove in the MAC table.
    pub(super) fn filter_change(
        &mut self,
        kind: Kind,
        mac: [u8; 6],
        add: bool,
    ) -> Result<(), Error> {
        let (filter, addr, send) = self.filter_parts();
        filter.change(addr, kind, mac, add, send)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    type Sent = RefCell<Vec<(u8, u8, Vec<Vec<u8>>)>>;

    fn recorder(sent: &Sent) -> impl FnOnce(u8, u8, &[&[u8]]) -> Result<(), Error> + '_ {
        move |c, m, parts| {
            let parts = parts.iter().map(|p| p.to_vec()).collect();
            sent.borrow_mut().push((c, m, parts));
            Ok(())
        }
    }

    fn addr() -> PciAddr {
        "0000:00:03.0".parse().unwrap()
    }

    #[test]
    fn the_table_is_two_counted_lists_unicast_first() {
        let sent = Sent::default();
        let mut f = VirtioFilter::new(false, true);
        let (g1, g2) = ([0x33, 0x33, 0xff, 0, 0, 1], [0x01, 0, 0x5e, 0, 0, 0xfb]);
        let u = [0x02, 0, 0, 0, 0, 7];
        f.change(addr(), Kind::Multicast, g1, true, recorder(&sent))
            .unwrap();
        f.change(addr(), Kind::Unicast, u, true, recorder(&sent))
            .unwrap();
        f.change(addr(), Kind::Multicast, g2, true, recorder(&sent))
            .unwrap();
        let last = sent.borrow().last().cloned().unwrap();
        let mut multi = vec![2, 0, 0, 0];
        multi.extend(g1);
        multi.extend(g2);
        let mut uni = vec![1, 0, 0, 0];
        uni.extend(u);
        assert_eq!(last, (1, 0, vec![uni, multi]));
        // A second join sends nothing; its leave neither; the last leave does.
        f.change(addr(), Kind::Multicast, g1, true, recorder(&sent))
            .unwrap();
        f.change(addr(), Kind::Multicast, g1, false, recorder(&sent))
            .unwrap();
        assert_eq!(sent.borrow().len(), 3);
        f.change(addr(), Kind::Multicast, g1, false, recorder(&sent))
            .unwrap();
        assert_eq!(sent.borrow().len(), 4);
    }

    #[test]
    fn a_refused_table_leaves_the_lists_as_they_were() {
        let mut f = VirtioFilter::new(false, true);
        let g = [0x33, 0x33, 0, 0, 0, 1];
        let refuse = |_, _, _: &[&[u8]]| Err(Error::Io("refused".into()));
        assert!(f.change(addr(), Kind::Multicast, g, true, refuse).is_err());
        let err = f
            .change(addr(), Kind::Multicast, g, false, refuse)
            .unwrap_err();
        assert!(
            err.to_string().contains("not in the port's filter"),
            "{err}"
        );
    }

    #[test]
    fn without_ctrl_rx_nothing_is_sent_and_the_lists_still_count() {
        let sent = Sent::default();
        let mut f = VirtioFilter::new(false, false);
        let g = [0x33, 0x33, 0, 0, 0, 1];
        f.set_allmulti(true, recorder(&sent)).unwrap();
        f.change(addr(), Kind::Multicast, g, true, recorder(&sent))
            .unwrap();
        f.change(addr(), Kind::Multicast, g, false, recorder(&sent))
            .unwrap();
        assert!(f
            .change(addr(), Kind::Multicast, g, false, recorder(&sent))
            .is_err());
        assert!(sent.borrow().is_empty());
    }

    #[test]
    fn allmulti_is_one_byte_of_the_rx_class() {
        let sent = Sent::default();
        let mut f = VirtioFilter::new(false, true);
        f.set_allmulti(true, recorder(&sent)).unwrap();
        f.set_allmulti(true, recorder(&sent)).unwrap();
        f.set_allmulti(false, recorder(&sent)).unwrap();
        let want = vec![(0, 1, vec![vec![1]]), (0, 1, vec![vec![0]])];
        assert_eq!(*sent.borrow(), want);
    }
}
