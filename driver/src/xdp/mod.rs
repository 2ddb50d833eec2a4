//! AF_XDP: zcnic on any NIC Linux drives. The kernel keeps its driver; an XDP program
//! of zcnic's own redirects each of the interface's queues into an AF_XDP socket, and
//! [`XdpPort`] drives that socket behind the same [`Nic`] trait as zcnic's own drivers.
//!
//! ```no_run
//! let mut nic = zcnic::open("xdp:eth0")?;
//! let mut got = Vec::with_capacity(32);
//! nic.rx_batch(&mut got, 32);
//! # Ok::<(), zcnic::Error>(())
//! ```
//!
//! What this version is, plainly:
//! - The UMEM is the port's own pool (`umem.rs`): its memory is registered with each
//!   socket as unaligned chunks of one pool buffer each, so the kernel receives into
//!   pool buffers and sends from them, and a received frame is a [`Packet`] of that pool
//!   with no copy in zcnic. A packet forwarded to this port from the same pool (another
//!   queue of an [`XdpMultiPort`], say) goes out uncopied; one of another pool (another
//!   port's) is copied into ours first, as the other drivers do for a foreign domain.
//! - Zero copy where the kernel's driver has it (virtio_net from Linux 6.13, igb from
//!   6.14, ice, i40e, mlx5, …): the pool is put in hugepages when the device sees
//!   physical addresses (no IOMMU, or `iommu=pt`; no swiotlb bouncing, as in a
//!   confidential guest), and the socket is bound with
//!   XDP_ZEROCOPY, so the NIC's DMA lands in pool buffers; a driver that refuses
//!   (EOPNOTSUPP, EINVAL) gets the same socket bound in copy mode, where the kernel
//!   copies each frame between its own buffer (skb or driver page) and the pool buffer.
//!   `Config::xdp_copy` (`--xdp-copy`) asks for copy mode outright. The mode is in the
//!   port's driver string, which the tools print: `af_xdp (zero-copy, native XDP)`.
//! - Frames of one buffer: received frames of up to 1920 bytes (the chunk less the
//!   kernel's 256 bytes of headroom; the MTU is the interface's). One queue (0) behind
//!   [`Nic`]; [`XdpMultiPort`] (`zcnic::open_port("xdp:eth0")` with `Config::queues`)
//!   has one socket per queue, each at its queue's key of the map the program redirects
//!   through, all over one pool.
//! - AF_XDP needs a system call to send (`sendto`, when the kernel sets NEED_WAKEUP, which
//!   copy mode always does; a zero-copy driver clears it while its NAPI loop runs), so
//!   unlike zcnic's own drivers the datapath makes up to one per burst.
//! - A zero-copy socket's driver lets go of the UMEM in a work item after the close and
//!   may write it until then, so the buffers it held go back to the pool only once a
//!   probe socket can bind to the queue, which the kernel allows only after the driver
//!   detached the pool (`shared.rs`, `released`); when the probe cannot show that within a
//!   second, they are never given back and the pool's memory stays allocated.

#[cfg(test)]
mod adversary;
mod init;
mod port;
mod queue;
pub mod ring;
mod rss;
mod shared;
mod sys;
mod umem;

pub use port::XdpMultiPort;
pub use queue::{XdpRx, XdpTx};

use crate::nic::{Link, Nic, Stats};
use crate::pci::PciAddr;
use crate::port::{RxQueue, TxQueue};
use crate::{Config, Error};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use umem::Umem;
use zcnic_hugepages::{Mempool, Packet};

/// The mode an AF_XDP port of `iface` would bind in, as `zcnic list` says it: `zero-copy`
/// when its driver has AF_XDP zero copy and its device reaches a hugepage pool as one
/// piece (no IOMMU, or `iommu=pt`), `copy` when not, `None` when the kernel cannot say
/// what the driver has (before 6.3: the bind tries zero copy and finds out).
pub fn mode_hint(iface: &str) -> Option<&'static str> {
    match umem::zero_copy_possible(iface) {
        Ok(true) => Some("zero-copy"),
        Ok(false) => None,
        Err(_) => Some("copy"),
    }
}

/// An AF_XDP socket on queue 0 of a network interface, as a zcnic port.
#[derive(Debug)]
pub struct XdpPort {
    rx: XdpRx,
    tx: XdpTx,
    ctl: Control,
}

/// The control plane of an AF_XDP port, whatever its queues: the interface as sysfs and
/// `ioctl` see it.
#[derive(Debug)]
struct Control {
    iface: String,
    zero_copy: bool,
    generic: bool,
    /// The interface's promiscuous flag before this port first changed it: put back on
    /// drop, so the kernel's interface is left as it was found.
    promisc_before: Option<bool>,
    /// The kernel driver's RSS table before this port first wrote it: put back on drop.
    reta_before: Option<Vec<u32>>,
}

/// Where sysfs describes network interfaces.
const SYSFS_NET: &str = "/sys/class/net";

/// Checks the name a user gave, before any system call sees it.
fn check_name(iface: &str) -> Result<(), Error> {
    if iface.is_empty() || iface.len() > 15 || iface.contains('/') {
        return Err(Error::NoInterface(iface.to_string()));
    }
    Ok(())
}

impl XdpPort {
    /// Opens queue 0 of the interface `iface` (`eth0`). The pool holds `cfg.pool`
    /// buffers and is the socket's UMEM: in hugepages, bound in zero-copy mode where the
    /// driver has it (unless `cfg.xdp_copy`); in copy mode otherwise.
    pub fn open(iface: &str, cfg: &Config) -> Result<Self, Error> {
        check_name(iface)?;
        let ifindex = init::interface(iface)?;
        let umem = Umem::for_port(iface, cfg)?;
        let q = init::Queue::open(iface, ifindex, 0, &umem)?;
        let attach = Arc::new(init::Attach::new(iface, ifindex, &[&q.shared])?);
        Self::with_queue(iface, q, Some(attach), cfg)
    }

    /// The port over an open socket (or, in tests, rings a test plays the kernel on).
    fn with_queue(
        iface: &str,
        q: init::Queue,
        attach: Option<Arc<init::Attach>>,
        cfg: &Config,
    ) -> Result<Self, Error> {
        let zero_copy = q.shared.zero_copy;
        let generic = attach.as_ref().is_none_or(|a| a.generic);
        let fill = init::fill_count(q.shared.umem.pool().capacity(), 1);
        let (rx, tx) = queue::split(0, q, fill, attach.as_ref());
        let mut port = Self {
            rx,
            tx,
            ctl: Control::new(iface, zero_copy, generic),
        };
        if cfg.promisc {
            port.set_promisc(true);
        }
        Ok(port)
    }

    /// The interface's name.
    pub fn iface(&self) -> &str {
        &self.ctl.iface
    }

    /// Where the port's pool lies in this process's memory, registered as the socket's
    /// UMEM: a received packet's bytes are inside it, where the kernel wrote them.
    pub fn umem(&self) -> std::ops::Range<usize> {
        let (base, len) = self.rx.shared.umem.region();
        base..base + len
    }

    /// Whether the socket is bound in zero-copy mode (else copy mode).
    pub fn zero_copy(&self) -> bool {
        self.ctl.zero_copy
    }

    /// Whether the program runs as generic (skb) XDP rather than in the driver.
    pub fn generic(&self) -> bool {
        self.ctl.generic
    }
}

impl Control {
    fn new(iface: &str, zero_copy: bool, generic: bool) -> Self {
        Self {
            iface: iface.to_string(),
            zero_copy,
            generic,
            promisc_before: None,
            reta_before: None,
        }
    }

    fn sysfs(&self, file: &str) -> Option<String> {
        let p = PathBuf::from(SYSFS_NET).join(&self.iface).join(file);
        Some(std::fs::read_to_string(p).ok()?.trim().to_string())
    }

    /// The PCI function behind the interface, or `0000:00:00.0` for one without (veth).
    fn addr(&self) -> PciAddr {
        let dev = std::fs::canonicalize(PathBuf::from(SYSFS_NET).join(&self.iface).join("device"));
        dev.ok()
            .and_then(|d| {
                d.ancestors()
                    .find_map(|a| a.file_name()?.to_str()?.parse().ok())
            })
            .unwrap_or(PciAddr {
                domain: 0,
                bus: 0,
                device: 0,
                function: 0,
            })
    }

    /// `af_xdp`, with the socket's mode and where the program runs, for the tools'
    /// first line: `af_xdp (copy, generic XDP)`.
    fn driver(&self) -> &'static str {
        match (self.zero_copy, self.generic) {
            (true, false) => "af_xdp (zero-copy, native XDP)",
            (true, true) => "af_xdp (zero-copy, generic XDP)",
            (false, false) => "af_xdp (copy, native XDP)",
            (false, true) => "af_xdp (copy, generic XDP)",
        }
    }

    /// Up when the interface is administratively up and has carrier (`ip link`'s UP and
    /// LOWER_UP). Not `operstate`: the kernel moves that to "up" in a delayed work item
    /// up to a second after carrier, so a port opened right after `ip link set up` could
    /// read "down" while frames already flowed (seen on virtio_net in QEMU).
    fn link(&self) -> Link {
        let admin = self
            .sysfs("flags")
            .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
            .is_some_and(|f| f & libc::IFF_UP as u32 != 0);
        let up = admin && self.sysfs("carrier").is_some_and(|c| c == "1");
        let speed = self
            .sysfs("speed")
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|s| *s > 0);
        Link {
            up,
            speed_mbps: speed.map_or(0, |s| s as u32),
            full_duplex: self.sysfs("duplex").is_some_and(|d| d == "full"),
        }
        .normalized()
    }

    fn mac(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        if let Some(s) = self.sysfs("address") {
            for (m, h) in mac.iter_mut().zip(s.split(':')) {
                *m = u8::from_str_radix(h, 16).unwrap_or(0);
            }
        }
        mac
    }

    fn mtu(&self) -> usize {
        self.sysfs("mtu")
            .and_then(|m| m.parse().ok())
            .unwrap_or(1500)
    }

    /// Sets the interface's IFF_PROMISC (as `ip link set IFACE promisc on` does); put
    /// back as found on drop.
    fn set_promisc(&mut self, on: bool) {
        if self.promisc_before.is_none() {
            self.promisc_before = sys::if_flags(&self.iface)
                .ok()
                .map(|f| f & libc::IFF_PROMISC != 0);
        }
        if let Err(e) = sys::set_promisc(&self.iface, on) {
            log::warn!("xdp:{}: promiscuous mode {on}: {e}", self.iface);
        }
    }

    /// The counters of one socket: `bad_kernel_index` (entries the kernel wrote that
    /// failed a check) and the kernel's XDP_STATISTICS, added into `s.hw`.
    fn add_socket_stats(s: &mut Stats, shared: &init::Shared) {
        add_hw(s, "bad_kernel_index", shared.bad.load(Ordering::Relaxed));
        if let Some(Ok(x)) = shared.sock.as_ref().map(sys::statistics) {
            add_hw(s, "rx_dropped", x.rx_dropped);
            add_hw(s, "rx_invalid_descs", x.rx_invalid_descs);
            add_hw(s, "tx_invalid_descs", x.tx_invalid_descs);
            add_hw(s, "rx_ring_full", x.rx_ring_full);
            add_hw(s, "rx_fill_ring_empty_descs", x.rx_fill_ring_empty_descs);
            add_hw(s, "tx_ring_empty_descs", x.tx_ring_empty_descs);
        }
    }
}

/// Adds `v` to the counter `name` of `s.hw`, making it if it is not there.
fn add_hw(s: &mut Stats, name: &'static str, v: u64) {
    match s.hw.iter_mut().find(|(n, _)| *n == name) {
        Some((_, c)) => *c += v,
        None => s.hw.push((name, v)),
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(was) = self.promisc_before {
            let _ = sys::set_promisc(&self.iface, was);
        }
        if let Some(table) = self.reta_before.take() {
            rss::restore(&self.iface, &table);
        }
    }
}

impl Nic for XdpPort {
    /// The PCI function behind the interface, or `0000:00:00.0` for one without (veth).
    fn addr(&self) -> PciAddr {
        self.ctl.addr()
    }

    fn name(&self) -> String {
        format!("xdp:{}", self.ctl.iface)
    }

    fn driver(&self) -> &'static str {
        self.ctl.driver()
    }

    fn pool(&self) -> &Arc<Mempool> {
        self.rx.pool()
    }

    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> usize {
        self.rx.rx_batch(out, max)
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>) -> usize {
        self.tx.tx_batch(pkts)
    }

    fn tx_batch_recycle(&mut self, pkts: &mut Vec<Packet>, done: &mut Vec<Packet>) -> usize {
        self.tx.tx_batch_recycle(pkts, done)
    }

    fn rx_batch_recycle(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        spare: &mut Vec<Packet>,
    ) -> usize {
        self.rx.rx_batch_recycle(out, max, spare)
    }

    fn flush(&mut self) -> bool {
        self.tx.flush()
    }

    fn stats(&mut self) -> Stats {
        let mut s = Stats::default();
        self.rx.counters.add_rx_to(&mut s);
        self.tx.counters.add_tx_to(&mut s);
        Control::add_socket_stats(&mut s, &self.rx.shared);
        s
    }

    fn link(&self) -> Link {
        self.ctl.link()
    }

    /// An epoll instance watching the socket: readable while the socket's RX ring holds
    /// frames (the kernel wakes it as it fills the ring), so `--idle sleep` and `rx_wait`
    /// work as on a device's interrupt, with nothing to acknowledge. Not the socket
    /// itself: a duplicate of that would keep it bound, and its queue busy, after the
    /// port closed.
    fn rx_interrupt_fd(&self) -> Result<BorrowedFd<'_>, Error> {
        match &self.rx.shared.wake {
            Some(ep) => Ok(ep.as_fd()),
            None => Err(Error::no_interrupt(self.addr(), self.driver())),
        }
    }

    /// Nothing to arm (readiness is the ring's state): whether frames already wait.
    fn enable_rx_interrupt(&mut self) -> Result<bool, Error> {
        self.rx_interrupt_fd()?;
        Ok(self.rx.pending())
    }

    fn disable_rx_interrupt(&mut self) -> Result<(), Error> {
        self.rx_interrupt_fd().map(|_| ())
    }

    fn mac(&self) -> [u8; 6] {
        self.ctl.mac()
    }

    fn mtu(&self) -> usize {
        self.ctl.mtu()
    }

    /// Sets the interface's IFF_PROMISC (as `ip link set IFACE promisc on` does); the
    /// port puts back what it found when it closes.
    fn set_promisc(&mut self, on: bool) {
        self.ctl.set_promisc(on);
    }
}
