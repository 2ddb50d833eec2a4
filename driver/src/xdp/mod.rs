//! AF_XDP: zcnic on any NIC Linux drives. The kernel keeps its driver; an XDP program
//! of zcnic's own redirects the interface's queue 0 into an AF_XDP socket, and
//! [`XdpPort`] drives that socket behind the same [`Nic`] trait as zcnic's own drivers.
//!
//! ```no_run
//! let mut nic = zcnic::open("xdp:eth0")?;
//! let mut got = Vec::with_capacity(32);
//! nic.rx_batch(&mut got, 32);
//! # Ok::<(), zcnic::Error>(())
//! ```
//!
//! What this first version is, plainly:
//! - The UMEM is memory of the port's own (anonymous, 2 KiB frames), not the pool's: a
//!   frame is copied once between a UMEM frame and a [`Packet`] of the port's pool on
//!   receive and on send. `Packet` is the same type as with every other port.
//! - One queue (0), frames of one buffer (up to 2048 bytes on send; the MTU is the
//!   interface's).
//! - AF_XDP needs a system call to send (`sendto`, when the kernel sets NEED_WAKEUP, which
//!   copy mode always does), so unlike zcnic's own drivers the datapath makes one per
//!   burst.

#[cfg(test)]
mod adversary;
mod init;
pub mod ring;
mod sys;

use crate::nic::{Link, Nic, Stats};
use crate::pci::PciAddr;
use crate::{Config, Error};
use ring::{check_rx, frame_of, ready, room, Bad, FRAME};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use zcnic_hugepages::{FakeDma, Mempool, Packet};

/// An AF_XDP socket on queue 0 of a network interface, as a zcnic port.
#[derive(Debug)]
pub struct XdpPort {
    iface: String,
    xsk: init::Xsk,
    pool: Arc<Mempool>,
    /// Our producer index of the fill ring, and the kernel's consumer when last read.
    fill_prod: u32,
    fill_seen: u32,
    /// Our producer index of the TX ring, and the kernel's consumer when last read.
    tx_prod: u32,
    tx_seen: u32,
    rx_cons: u32,
    comp_cons: u32,
    /// Frames read from the RX ring, going back to the fill ring.
    refill: Vec<u32>,
    stats: Stats,
    /// Indices or addresses the kernel wrote that failed a check.
    bad: u64,
    /// The interface's promiscuous flag before this port first changed it: put back on
    /// drop, so the kernel's interface is left as it was found.
    promisc_before: Option<bool>,
}

/// Where sysfs describes network interfaces.
const SYSFS_NET: &str = "/sys/class/net";

impl XdpPort {
    /// Opens queue 0 of the interface `iface` (`eth0`). The pool holds `cfg.pool`
    /// buffers of ordinary memory (AF_XDP needs no DMA mapping of it).
    pub fn open(iface: &str, cfg: &Config) -> Result<Self, Error> {
        if iface.is_empty() || iface.len() > 15 || iface.contains('/') {
            return Err(Error::NoInterface(iface.to_string()));
        }
        Self::with_xsk(iface, init::Xsk::open(iface)?, cfg)
    }

    /// The port over an open socket (or, in tests, rings a test plays the kernel on).
    fn with_xsk(iface: &str, xsk: init::Xsk, cfg: &Config) -> Result<Self, Error> {
        let pool = Mempool::new(&FakeDma::default(), cfg.pool).map_err(|e| Error::Xdp {
            iface: iface.to_string(),
            msg: format!("packet pool: {e}"),
        })?;
        let refill = Vec::with_capacity(init::RING as usize);
        let mut port = Self {
            iface: iface.to_string(),
            xsk,
            pool,
            fill_prod: init::RX_FRAMES,
            fill_seen: 0,
            tx_prod: 0,
            tx_seen: 0,
            rx_cons: 0,
            comp_cons: 0,
            refill,
            stats: Stats::default(),
            bad: 0,
            promisc_before: None,
        };
        if cfg.promisc {
            port.set_promisc(true);
        }
        Ok(port)
    }

    /// The interface's name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Whether the socket is bound in zero-copy mode (else copy mode).
    pub fn zero_copy(&self) -> bool {
        self.xsk.zero_copy
    }

    /// Whether the program runs as generic (skb) XDP rather than in the driver.
    pub fn generic(&self) -> bool {
        self.xsk.generic
    }

    fn sysfs(&self, file: &str) -> Option<String> {
        let p = PathBuf::from(SYSFS_NET).join(&self.iface).join(file);
        Some(std::fs::read_to_string(p).ok()?.trim().to_string())
    }

    fn bad(&mut self, _what: Bad) {
        self.bad += 1;
    }

    /// Takes the sent frames back from the completion ring.
    fn reclaim(&mut self) {
        let n = match ready(self.xsk.comp.producer(), self.comp_cons, self.xsk.comp.size) {
            Ok(n) => n,
            Err(b) => return self.bad(b),
        };
        for i in 0..n {
            let addr = self.xsk.comp.addr(self.comp_cons.wrapping_add(i));
            let count = self.xsk.frames.count();
            if let Err(b) = frame_of(addr, count).and_then(|f| self.xsk.frames.complete(f)) {
                self.bad(b);
            }
        }
        self.comp_cons = self.comp_cons.wrapping_add(n);
        self.xsk.comp.set_consumer(self.comp_cons);
    }

    /// Gives the frames read from the RX ring back to the fill ring.
    fn refill(&mut self) {
        if self.refill.is_empty() {
            return;
        }
        let cons = self.xsk.fill.consumer();
        let free = match room(self.fill_prod, self.fill_seen, cons, self.xsk.fill.size) {
            Ok(r) => r,
            Err(b) => return self.bad(b),
        };
        self.fill_seen = cons;
        let n = self.refill.len().min(free as usize);
        for (i, f) in self.refill.drain(..n).enumerate() {
            self.xsk
                .fill
                .set_addr(self.fill_prod.wrapping_add(i as u32), u64::from(f) * FRAME);
            self.xsk.frames.refill(f);
        }
        self.fill_prod = self.fill_prod.wrapping_add(n as u32);
        self.xsk.fill.set_producer(self.fill_prod);
    }

    /// Tells the kernel about queued frames when it asked to be told.
    fn kick(&mut self) {
        let Some(k) = &self.xsk.kernel else { return };
        if self.xsk.tx.needs_wakeup() {
            if let Err(e) = sys::kick(&k.sock) {
                log::debug!("xdp:{}: sendto: {e}", self.iface);
            }
        }
    }
}

impl Nic for XdpPort {
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

    fn name(&self) -> String {
        format!("xdp:{}", self.iface)
    }

    /// `af_xdp`, with the socket's mode and where the program runs, for the tools'
    /// first line: `af_xdp (copy, generic XDP)`.
    fn driver(&self) -> &'static str {
        match (self.xsk.zero_copy, self.xsk.generic) {
            (true, false) => "af_xdp (zero-copy, native XDP)",
            (true, true) => "af_xdp (zero-copy, generic XDP)",
            (false, false) => "af_xdp (copy, native XDP)",
            (false, true) => "af_xdp (copy, generic XDP)",
        }
    }

    fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> usize {
        if let Some(k) = self
            .xsk
            .kernel
            .as_ref()
            .filter(|_| self.xsk.fill.needs_wakeup())
        {
            sys::wake_rx(&k.sock);
        }
        let avail = match ready(self.xsk.rx.producer(), self.rx_cons, self.xsk.rx.size) {
            Ok(n) => n,
            Err(b) => {
                self.bad(b);
                0
            }
        };
        let mut got = 0;
        let mut used = 0;
        while used < avail && got < max {
            let (addr, len) = self.xsk.rx.desc(self.rx_cons.wrapping_add(used));
            let count = self.xsk.frames.count();
            let (frame, off) = match check_rx(addr, len, count) {
                Ok(v) => v,
                Err(b) => {
                    // An address we cannot trust names no frame to give back.
                    used += 1;
                    self.stats.rx_errors += 1;
                    if b == Bad::Len && self.xsk.frames.received((addr / FRAME) as u32).is_ok() {
                        self.refill.push((addr / FRAME) as u32);
                    }
                    self.bad(b);
                    continue;
                }
            };
            if let Err(b) = self.xsk.frames.received(frame) {
                used += 1;
                self.stats.rx_errors += 1;
                self.bad(b);
                continue;
            }
            let Some(mut p) = self.pool.alloc() else {
                // Leave it in the ring until the pool has a buffer again.
                self.xsk.frames.refill(frame);
                self.stats.rx_no_buf += 1;
                break;
            };
            used += 1;
            let start = frame as usize * FRAME as usize + off;
            let ok = p.set_len(len as usize).is_ok() && self.xsk.umem.read(start, p.data_mut());
            self.refill.push(frame);
            if !ok {
                self.stats.rx_errors += 1;
                continue;
            }
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += u64::from(len);
            out.push(p);
            got += 1;
        }
        self.rx_cons = self.rx_cons.wrapping_add(used);
        self.xsk.rx.set_consumer(self.rx_cons);
        self.refill();
        got
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>) -> usize {
        self.reclaim();
        let cons = self.xsk.tx.consumer();
        let free = match room(self.tx_prod, self.tx_seen, cons, self.xsk.tx.size) {
            Ok(r) => {
                // Only a consumer that passed the check is the base of the next one.
                self.tx_seen = cons;
                r
            }
            Err(b) => {
                self.bad(b);
                0
            }
        };
        let n = pkts.len().min(free as usize).min(self.xsk.frames.free());
        let mut posted = 0u32;
        for p in pkts.drain(..n) {
            let len = p.len();
            if len == 0 || len > FRAME as usize || !p.is_single() {
                self.stats.tx_errors += 1;
                continue;
            }
            let Some(f) = self.xsk.frames.take_tx() else {
                break;
            };
            let addr = u64::from(f) * FRAME;
            self.xsk.umem.write(addr as usize, p.data());
            self.xsk
                .tx
                .set_desc(self.tx_prod.wrapping_add(posted), addr, len as u32);
            posted += 1;
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += len as u64;
        }
        if posted > 0 {
            self.tx_prod = self.tx_prod.wrapping_add(posted);
            self.xsk.tx.set_producer(self.tx_prod);
        }
        self.kick();
        n
    }

    fn flush(&mut self) -> bool {
        crate::wait_until(Duration::from_secs(2), || {
            self.reclaim();
            if self.xsk.frames.in_flight() == 0 {
                return true;
            }
            self.kick();
            false
        })
    }

    fn stats(&mut self) -> Stats {
        let mut s = self.stats.clone();
        s.hw.push(("bad_kernel_index", self.bad));
        if let Some(Ok(x)) = self.xsk.kernel.as_ref().map(|k| sys::statistics(&k.sock)) {
            s.hw.extend([
                ("rx_dropped", x.rx_dropped),
                ("rx_invalid_descs", x.rx_invalid_descs),
                ("tx_invalid_descs", x.tx_invalid_descs),
                ("rx_ring_full", x.rx_ring_full),
                ("rx_fill_ring_empty_descs", x.rx_fill_ring_empty_descs),
                ("tx_ring_empty_descs", x.tx_ring_empty_descs),
            ]);
        }
        s
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

    /// Sets the interface's IFF_PROMISC (as `ip link set IFACE promisc on` does); the
    /// port puts back what it found when it closes.
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
}

impl Drop for XdpPort {
    fn drop(&mut self) {
        // Frames still queued are the kernel's until it completes them; give it a bounded
        // moment, then close: the link goes first, the UMEM last (see `init::Xsk`).
        if self.xsk.frames.in_flight() > 0 {
            self.flush();
        }
        if let Some(was) = self.promisc_before {
            let _ = sys::set_promisc(&self.iface, was);
        }
    }
}
