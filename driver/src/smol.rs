//! A [smoltcp](https://docs.rs/smoltcp) network device over any zcnic port (feature
//! `smoltcp`): the TCP/IP stack sends and receives through zcnic's burst API.
//!
//! Receive is zero copy: smoltcp reads each frame straight out of the DMA buffer the NIC
//! wrote. Transmit hands smoltcp a fresh pool buffer to build the frame in, which then goes
//! to the NIC as it is. The MTU is the port's ([`Nic::mtu`]); smoltcp reads and writes a
//! frame as one slice, so a jumbo frame longer than one buffer is copied: gathered into
//! one allocation on receive, built in the device's own buffer and copied into a
//! [`Packet`] chain on transmit. Frames are received in bursts of 32; each transmitted frame is
//! queued at once (smoltcp produces them one at a time, and an echo or ping responder wants
//! no added latency).
//!
//! ```no_run
//! use smoltcp::iface::{Config, Interface, SocketSet};
//! use smoltcp::time::Instant;
//! use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
//!
//! let nic = zcnic::open("0000:00:02.0")?;
//! let mac = EthernetAddress(nic.mac());
//! let mut dev = zcnic::smol::SmolDevice::new(nic);
//! let mut iface = Interface::new(Config::new(mac.into()), &mut dev, Instant::now());
//! iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(10, 0, 0, 2), 24)).unwrap());
//! let mut sockets = SocketSet::new(vec![]);
//! loop {
//!     iface.poll(Instant::now(), &mut dev, &mut sockets); // answers ping already
//! }
//! # Ok::<(), zcnic::Error>(())
//! ```

use crate::nic::Nic;
use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use zcnic_hugepages::Packet;

/// Frames fetched from the NIC per receive burst.
const BURST: usize = 32;

/// A zcnic port as a smoltcp `Device`.
pub struct SmolDevice {
    port: Sender,
    /// Received frames not yet given to smoltcp, newest first (popped from the back).
    rx: Vec<Packet>,
    /// Where a received frame longer than one buffer is gathered for smoltcp: the port's
    /// longest frame, allocated once.
    gather: Vec<u8>,
    /// The NIC's checksum verdicts on received frames: good, bad, unknown.
    verdicts: [u64; 3],
}

/// The port and what transmit needs, apart from the receive side, so a receive token and
/// a transmit token can be out together.
struct Sender {
    nic: Box<dyn Nic>,
    tx: Vec<Packet>,
    /// Where smoltcp writes a frame when the pool is empty (the frame is then dropped), or
    /// one longer than a buffer (then copied into a chain): the port's longest frame.
    scratch: Vec<u8>,
    tx_dropped: u64,
}

impl std::fmt::Debug for SmolDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmolDevice")
            .field("port", &self.port.nic.addr())
            .field("tx_dropped", &self.port.tx_dropped)
            .finish()
    }
}

impl SmolDevice {
    /// Wraps a port.
    pub fn new(nic: Box<dyn Nic>) -> Self {
        let longest = (nic.mtu() + 14).max(crate::DATA_ROOM);
        Self {
            port: Sender {
                nic,
                tx: Vec::with_capacity(1),
                scratch: vec![0; longest],
                tx_dropped: 0,
            },
            rx: Vec::with_capacity(BURST),
            gather: Vec::with_capacity(longest),
            verdicts: [0; 3],
        }
    }

    /// The port underneath, for its counters and link state.
    pub fn nic(&mut self) -> &mut dyn Nic {
        self.port.nic.as_mut()
    }

    /// Frames smoltcp produced that could not be sent (pool empty or ring full).
    pub fn tx_dropped(&self) -> u64 {
        self.port.tx_dropped
    }

    /// How many received frames the NIC found good, bad, and did not check
    /// ([`Packet::rx_checksum`]); smoltcp checks every one again itself.
    pub fn rx_checksums(&self) -> (u64, u64, u64) {
        let [good, bad, unknown] = self.verdicts;
        (good, bad, unknown)
    }

    /// Subscribes the port to the Ethernet group of the IP multicast group `group`
    /// ([`filter::group_mac`](crate::filter::group_mac)), so its frames get past the NIC's
    /// filter with promiscuity off. Call it beside smoltcp's
    /// `Interface::join_multicast_group`: for IPv6, the all-nodes group `ff02::1` and the
    /// solicited-node group of each address
    /// ([`filter::solicited_node`](crate::filter::solicited_node)), without which neighbour
    /// discovery never reaches the stack.
    ///
    /// The device cannot follow smoltcp's joins by itself: smoltcp 0.12 keeps its group
    /// table private (it answers `has_multicast_group` for one address at a time, and
    /// keeps the table only with its `multicast` feature), and the device never sees the
    /// interface. A filter is a lower bound, so joining more than smoltcp needs costs only
    /// frames it drops.
    pub fn join(&mut self, group: std::net::IpAddr) -> Result<(), crate::Error> {
        let mac = self.group(group)?;
        self.port.nic.add_multicast(mac)
    }

    /// Undoes one [`join`](Self::join) of `group`.
    pub fn leave(&mut self, group: std::net::IpAddr) -> Result<(), crate::Error> {
        let mac = self.group(group)?;
        self.port.nic.remove_multicast(mac)
    }

    fn group(&self, group: std::net::IpAddr) -> Result<[u8; 6], crate::Error> {
        crate::filter::group_mac(group).ok_or_else(|| {
            crate::Error::Io(format!(
                "{}: {group} is not an IP multicast group",
                self.port.nic.addr()
            ))
        })
    }
}

/// A received frame, still in its DMA buffer (or, longer than one buffer, gathered into
/// the device's own buffer).
#[derive(Debug)]
pub struct RxToken<'a> {
    pkt: Packet,
    gather: &'a mut Vec<u8>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        if self.pkt.is_single() {
            return f(self.pkt.data());
        }
        // No allocation: `gather` has the port's longest frame's capacity.
        self.gather.resize(self.pkt.total_len(), 0);
        let n = self.pkt.copy_frame(self.gather);
        f(&self.gather[..n])
    }
}

/// Permission to send one frame.
pub struct TxToken<'a> {
    dev: &'a mut Sender,
}

impl std::fmt::Debug for TxToken<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TxToken")
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let dev = self.dev;
        if len > crate::DATA_ROOM {
            return dev.send_long(len, f);
        }
        let pkt = dev
            .nic
            .pool()
            .alloc()
            .and_then(|mut p| p.set_len(len).ok().map(|()| p));
        let Some(mut pkt) = pkt else {
            dev.tx_dropped += 1;
            let n = len.min(dev.scratch.len());
            return f(&mut dev.scratch[..n]);
        };
        let r = f(pkt.data_mut());
        dev.offload(&mut pkt);
        dev.tx.push(pkt);
        if dev.nic.tx_batch(&mut dev.tx) == 0 {
            dev.tx_dropped += dev.tx.len() as u64;
            dev.tx.clear();
        }
        r
    }
}

impl Sender {
    /// Asks the NIC for the checksums smoltcp left to it (the ones `capabilities` said
    /// the port fills in, which smoltcp then writes as zero).
    fn offload(&self, pkt: &mut Packet) {
        let caps = self.nic.offloads();
        if !(caps.tx_ipv4_csum || caps.tx_tcp_csum || caps.tx_udp_csum) {
            return;
        }
        let d = pkt.data();
        if d.len() < 34 || d[12..14] != [0x08, 0x00] || d[14] >> 4 != 4 {
            return;
        }
        let l4 = match d[23] {
            6 => Some(crate::L4Csum::Tcp),
            17 => Some(crate::L4Csum::Udp),
            _ => None,
        }
        .filter(|&k| caps.tx_l4(k));
        let req = crate::TxOffload {
            ip_csum: caps.tx_ipv4_csum,
            l4,
            ..crate::TxOffload::ipv4(14, (d[14] & 0xf) * 4)
        };
        // A frame whose headers do not hold up goes as smoltcp made it.
        let _ = caps.request(pkt, req);
    }

    /// A frame longer than one buffer: built in `scratch`, sent as a chain.
    #[cold]
    fn send_long<R, F: FnOnce(&mut [u8]) -> R>(&mut self, len: usize, f: F) -> R {
        let n = len.min(self.scratch.len());
        let r = f(&mut self.scratch[..n]);
        match self.nic.pool().alloc_copy(&self.scratch[..n]) {
            Some(mut pkt) if n == len => {
                self.offload(&mut pkt);
                self.tx.push(pkt);
                if self.nic.tx_batch(&mut self.tx) == 0 {
                    self.tx_dropped += self.tx.len() as u64;
                    self.tx.clear();
                }
            }
            _ => self.tx_dropped += 1,
        }
        r
    }
}

impl phy::Device for SmolDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        if self.rx.is_empty() {
            self.port.nic.rx_batch(&mut self.rx, BURST);
            self.rx.reverse();
        }
        let pkt = self.rx.pop()?;
        self.verdicts[pkt.rx_checksum() as usize] += 1;
        let rx = RxToken {
            pkt,
            gather: &mut self.gather,
        };
        Some((
            rx,
            TxToken {
                dev: &mut self.port,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            dev: &mut self.port,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // smoltcp's MTU for Ethernet counts the 14-byte header.
        caps.max_transmission_unit = self.port.nic.mtu() + 14;
        caps.max_burst_size = Some(BURST);
        // Checksums the port fills in on transmit are left to it (`offload`); smoltcp
        // still checks every received one (a NIC may say "unknown", as QEMU's e1000 does).
        let offloads = self.port.nic.offloads();
        let tx_by_nic = |nic: bool| if nic { Checksum::Rx } else { Checksum::Both };
        caps.checksum.ipv4 = tx_by_nic(offloads.tx_ipv4_csum);
        caps.checksum.tcp = tx_by_nic(offloads.tx_tcp_csum);
        caps.checksum.udp = tx_by_nic(offloads.tx_udp_csum);
        caps
    }
}
