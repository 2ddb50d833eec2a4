//! Receive address filters beyond the port's own MAC and broadcast: multicast groups
//! joined, all-multicast, and extra unicast addresses, as [`Nic`](crate::Nic) and
//! [`Port`](crate::Port) set them.
//!
//! A filter says what a port receives *at least*: a device may let more in. The e1000 and
//! igb match multicast groups by a 12-bit hash of the address ([`mta_hash`]), so a group
//! whose hash equals a joined one's arrives too; a virtio-net device whose table
//! overflows, or which has no receive filter at all (no VIRTIO_NET_F_CTRL_RX), receives
//! every multicast frame. Software that must not see other groups checks the destination
//! itself.
//!
//! Joins are counted per address, as Linux's `dev_mc_add` counts them: an address joined
//! twice stays joined until it is removed twice, so two users of one port (an application
//! and its IPv6 stack, say) cannot leave each other's groups.

use crate::nic::format_mac;

/// Why a port refused a receive-filter change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A multicast join or leave named an address without the group bit (bit 0 of its
    /// first byte).
    #[error("{} is not a multicast address (bit 0 of its first byte is clear: e.g. 33:33:ff:00:00:01, 01:00:5e:00:00:fb)", format_mac(*.0))]
    NotMulticast([u8; 6]),
    /// An extra unicast address had the group bit set.
    #[error("{} is a multicast address: join it with add_multicast instead", format_mac(*.0))]
    NotUnicast([u8; 6]),
    /// A remove named an address that was never added (or already removed).
    #[error("{} is not in the port's filter: it was never added, or is already removed", format_mac(*.0))]
    NotAdded([u8; 6]),
    /// The device has no room for another exact address.
    #[error("the device's table of {0} extra unicast addresses is full: remove one, or turn promiscuous mode on")]
    TableFull(usize),
    /// The port (or this handle on it) has no such filter.
    #[error("{0}")]
    Unsupported(String),
}

/// True for a group address (multicast or broadcast): bit 0 of the first byte, the I/G
/// bit of IEEE 802.
pub fn is_multicast(mac: [u8; 6]) -> bool {
    mac[0] & 1 != 0
}

/// The 12-bit hash the e1000 and igb index their Multicast Table Array with, for
/// RCTL.MO = 00 (the reset value, which zcnic keeps): destination address bits 47:36,
/// that is the high nibble of byte 4 and all of byte 5 (8254x SDM §13.5.1, 82576
/// datasheet §8.10.15). The table register is `hash >> 5`, the bit in it `hash & 31`.
///
/// ```
/// use zcnic::filter::mta_hash;
/// assert_eq!(mta_hash([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]), 0x010); // IPv4 all-hosts
/// assert_eq!(mta_hash([0x33, 0x33, 0xff, 0x00, 0x00, 0x02]), 0x020);
/// ```
pub fn mta_hash(mac: [u8; 6]) -> u16 {
    (u16::from(mac[4]) >> 4 | u16::from(mac[5]) << 4) & 0xfff
}

/// The Ethernet group address an IP multicast group is sent to: `01:00:5e` and the low
/// 23 bits of an IPv4 group (RFC 1112 §6.4), `33:33` and the low 32 bits of an IPv6 one
/// (RFC 2464 §7). `None` for an address that is not multicast.
///
/// ```
/// use std::net::{Ipv4Addr, Ipv6Addr};
/// use zcnic::filter::group_mac;
/// let mdns = group_mac(Ipv4Addr::new(224, 0, 0, 251).into());
/// assert_eq!(mdns, Some([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]));
/// let all_nodes = group_mac(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).into());
/// assert_eq!(all_nodes, Some([0x33, 0x33, 0, 0, 0, 1]));
/// ```
pub fn group_mac(group: std::net::IpAddr) -> Option<[u8; 6]> {
    match group {
        std::net::IpAddr::V4(g) if g.is_multicast() => {
            let o = g.octets();
            Some([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
        }
        std::net::IpAddr::V6(g) if g.is_multicast() => {
            let o = g.octets();
            Some([0x33, 0x33, o[12], o[13], o[14], o[15]])
        }
        _ => None,
    }
}

/// The solicited-node multicast group of an IPv6 address, `ff02::1:ffXX:XXXX` with its
/// low 24 bits (RFC 4291 §2.7.1): where neighbour solicitations for it are sent.
///
/// ```
/// use std::net::Ipv6Addr;
/// use zcnic::filter::{group_mac, solicited_node};
/// let a: Ipv6Addr = "fe80::5054:ff:fe12:3411".parse().unwrap();
/// assert_eq!(solicited_node(a), "ff02::1:ff12:3411".parse::<Ipv6Addr>().unwrap());
/// assert_eq!(group_mac(solicited_node(a).into()), Some([0x33, 0x33, 0xff, 0x12, 0x34, 0x11]));
/// ```
pub fn solicited_node(addr: std::net::Ipv6Addr) -> std::net::Ipv6Addr {
    let o = addr.octets();
    let low = u16::from_be_bytes([o[14], o[15]]);
    std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), low)
}

/// Addresses with a count of adds each, in the order first added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AddrList {
    entries: Vec<([u8; 6], u32)>,
}

impl AddrList {
    /// One more add of `mac`; true when it was not in the list before.
    pub(crate) fn add(&mut self, mac: [u8; 6]) -> bool {
        match self.entries.iter_mut().find(|(m, _)| *m == mac) {
            Some((_, n)) => {
                *n = n.saturating_add(1);
                false
            }
            None => {
                self.entries.push((mac, 1));
                true
            }
        }
    }

    /// One remove of `mac`: `Some(true)` when that was its last add (it is gone),
    /// `Some(false)` while adds remain, `None` when it was not in the list.
    pub(crate) fn remove(&mut self, mac: [u8; 6]) -> Option<bool> {
        let i = self.entries.iter().position(|(m, _)| *m == mac)?;
        let n = &mut self.entries[i].1;
        *n -= 1;
        if *n == 0 {
            self.entries.remove(i);
            return Some(true);
        }
        Some(false)
    }

    /// Whether `mac` is in the list.
    #[cfg(test)]
    pub(crate) fn contains(&self, mac: [u8; 6]) -> bool {
        self.entries.iter().any(|(m, _)| *m == mac)
    }

    /// Distinct addresses.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The distinct addresses, in the order first added.
    pub(crate) fn iter(&self) -> impl Iterator<Item = [u8; 6]> + '_ {
        self.entries.iter().map(|(m, _)| *m)
    }
}

/// What a port's filters hold, whatever the device: all-multicast, the groups joined and
/// the extra unicast addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RxFilter {
    pub(crate) allmulti: bool,
    pub(crate) multicast: AddrList,
    pub(crate) unicast: AddrList,
}

/// Which of a port's two address lists a change is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Multicast,
    Unicast,
}

impl RxFilter {
    /// The filter after one add (`add` true) or remove of `mac` from the `kind` list, and
    /// whether the device's tables must change (not for an address added again, or removed
    /// while adds remain); or why the change is refused. `self` is left as it was, for the
    /// caller to replace once the device took the new filter.
    pub(crate) fn change(
        &self,
        kind: Kind,
        mac: [u8; 6],
        add: bool,
    ) -> Result<(Self, bool), FilterError> {
        match kind {
            Kind::Multicast if !is_multicast(mac) => return Err(FilterError::NotMulticast(mac)),
            Kind::Unicast if is_multicast(mac) => return Err(FilterError::NotUnicast(mac)),
            _ => {}
        }
        let mut next = self.clone();
        let list = match kind {
            Kind::Multicast => &mut next.multicast,
            Kind::Unicast => &mut next.unicast,
        };
        let changed = if add {
            list.add(mac)
        } else {
            list.remove(mac).ok_or(FilterError::NotAdded(mac))?
        };
        Ok((next, changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known values: Linux's `e1000_hash_mc_addr` documents 01:AA:00:12:34:56 → 0x563 for
    /// MO = 00, and QEMU's `e1000x_rx_group_filter` computes
    /// `((byte5 << 8 | byte4) >> 4) & 0xfff`, the same bits.
    #[test]
    fn the_mta_hash_takes_address_bits_47_to_36() {
        let qemu = |m: [u8; 6]| ((u16::from(m[5]) << 8 | u16::from(m[4])) >> 4) & 0xfff;
        let cases = [
            ([0x01, 0xaa, 0x00, 0x12, 0x34, 0x56], 0x563),
            ([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01], 0x010),
            ([0x33, 0x33, 0xff, 0x00, 0x00, 0x01], 0x010),
            ([0x33, 0x33, 0xff, 0x00, 0x00, 0x02], 0x020),
            ([0x33, 0x33, 0x00, 0x00, 0x00, 0xfb], 0xfb0),
            ([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb], 0xfb0),
            ([0xff; 6], 0xfff),
        ];
        for (mac, want) in cases {
            assert_eq!(mta_hash(mac), want, "{}", format_mac(mac));
            assert_eq!(qemu(mac), want, "QEMU's form, {}", format_mac(mac));
        }
        // Register and bit: 33:33:ff:00:00:01 is MTA[0] bit 16, :02 is MTA[1] bit 0.
        let h = mta_hash([0x33, 0x33, 0xff, 0x00, 0x00, 0x01]);
        assert_eq!((h >> 5, h & 31), (0, 16));
        let h = mta_hash([0x33, 0x33, 0xff, 0x00, 0x00, 0x02]);
        assert_eq!((h >> 5, h & 31), (1, 0));
    }

    #[test]
    fn ip_groups_map_to_their_ethernet_groups() {
        use std::net::{IpAddr, Ipv4Addr};
        let v4 = |a, b, c, d| group_mac(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
        assert_eq!(v4(224, 0, 0, 1), Some([0x01, 0x00, 0x5e, 0, 0, 1]));
        // Only 23 bits: 239.255.255.250 (SSDP) and 224.127.255.250 share a MAC.
        assert_eq!(
            v4(239, 255, 255, 250),
            Some([0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa])
        );
        assert_eq!(v4(239, 255, 255, 250), v4(224, 127, 255, 250));
        assert_eq!(v4(10, 0, 0, 1), None);
        let v6 = |s: &str| group_mac(s.parse::<IpAddr>().unwrap());
        assert_eq!(v6("ff02::1"), Some([0x33, 0x33, 0, 0, 0, 1]));
        assert_eq!(v6("ff02::1:ff00:1"), Some([0x33, 0x33, 0xff, 0, 0, 1]));
        assert_eq!(v6("ff02::fb"), Some([0x33, 0x33, 0, 0, 0, 0xfb]));
        assert_eq!(v6("fe80::1"), None);
        let sn = solicited_node("2001:db8::1".parse().unwrap());
        assert_eq!(group_mac(sn.into()), Some([0x33, 0x33, 0xff, 0, 0, 1]));
    }

    #[test]
    fn joins_are_counted_per_address() {
        let mut l = AddrList::default();
        let g = [0x33, 0x33, 0, 0, 0, 1];
        assert!(l.add(g));
        assert!(!l.add(g), "a second join changes nothing on the device");
        assert_eq!(l.remove(g), Some(false), "one join left");
        assert!(l.contains(g));
        assert_eq!(l.remove(g), Some(true));
        assert_eq!(l.remove(g), None);
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn a_change_checks_the_address_kind_and_leaves_the_filter_alone() {
        let f = RxFilter::default();
        let uni = [0x52, 0x54, 0, 0, 0, 1];
        let group = [0x01, 0, 0x5e, 0, 0, 1];
        assert_eq!(
            f.change(Kind::Multicast, uni, true),
            Err(FilterError::NotMulticast(uni))
        );
        assert_eq!(
            f.change(Kind::Unicast, group, true),
            Err(FilterError::NotUnicast(group))
        );
        assert_eq!(
            f.change(Kind::Multicast, group, false),
            Err(FilterError::NotAdded(group))
        );
        let (next, changed) = f.change(Kind::Multicast, group, true).unwrap();
        assert!(changed);
        assert!(next.multicast.contains(group));
        assert!(!f.multicast.contains(group), "the original is untouched");
    }
}
