//! The interface applications use, whatever the NIC.

use crate::pci::PciAddr;
use std::fmt;
use std::sync::Arc;
use zcnic_hugepages::{Mempool, Packet, PoolCache};

/// Link state as the device reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Carrier present.
    pub up: bool,
    /// Speed in Mbit/s (0 when unknown).
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
}

impl Link {
    /// The state of a link without carrier, as link events report it: no speed, no
    /// duplex (what a device's speed bits say while the link is down means nothing).
    pub const DOWN: Link = Link {
        up: false,
        speed_mbps: 0,
        full_duplex: false,
    };

    /// This state with the meaningless fields of a down link cleared ([`Link::DOWN`]).
    pub fn normalized(self) -> Link {
        if self.up {
            self
        } else {
            Link::DOWN
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.up {
            return write!(f, "down");
        }
        if self.speed_mbps == 0 {
            return write!(f, "up");
        }
        let duplex = if self.full_duplex { "full" } else { "half" };
        write!(f, "up {} Mbit/s {duplex} duplex", self.speed_mbps)
    }
}

/// Counters of one port: the driver's own, and the device's where it has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed to the application.
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames handed to the device for sending.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Completed receive descriptors that failed a check (length, EOP, device error, DD on a
    /// descriptor the device did not own): dropped, never handed out.
    pub rx_errors: u64,
    /// Frames the application asked to send that were refused (empty, too long).
    pub tx_errors: u64,
    /// Times a completed receive descriptor waited because the pool had no buffer to refill.
    pub rx_no_buf: u64,
    /// The device's own counters by their datasheet names, accumulated since open
    /// (e1000: GPRC, GPTC, GORC, GOTC, MPC, …).
    pub hw: Vec<(&'static str, u64)>,
}

impl Stats {
    /// The driver's own counters, by field name.
    pub fn software(&self) -> [(&'static str, u64); 7] {
        [
            ("rx_packets", self.rx_packets),
            ("rx_bytes", self.rx_bytes),
            ("tx_packets", self.tx_packets),
            ("tx_bytes", self.tx_bytes),
            ("rx_errors", self.rx_errors),
            ("tx_errors", self.tx_errors),
            ("rx_no_buf", self.rx_no_buf),
        ]
    }

    /// A device counter by name.
    pub fn hw(&self, name: &str) -> Option<u64> {
        self.hw.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

/// A NIC driven by zcnic: burst receive and transmit, counters, link, address filters.
///
/// The datapath calls (`rx_batch`, `tx_batch`) allocate nothing, take no lock and make no
/// system call; each touches the device's doorbell at most once.
///
/// A port is `Send`: open it on one thread and drive it on another.
///
/// ```no_run
/// let mut nic = zcnic::open("0000:00:02.0")?;
/// let worker = std::thread::spawn(move || {
///     let mut got = Vec::with_capacity(32);
///     while got.is_empty() {
///         nic.rx_batch(&mut got, 32);
///     }
///     got.len()
/// });
/// println!("{} frames", worker.join().unwrap());
/// # Ok::<(), zcnic::Error>(())
/// ```
///
/// It is not `Sync`: one thread at a time drives a port (every datapath call takes
/// `&mut self`, and the drivers' ports are not `Sync` either, so not even their `&self`
/// calls can touch the device's registers from two threads at once):
///
/// ```
/// fn send<T: Send>() {}
/// send::<zcnic::e1000::E1000<zcnic::FakeBar>>();
/// ```
/// ```compile_fail
/// fn shared<T: Sync>() {}
/// shared::<zcnic::e1000::E1000<zcnic::FakeBar>>();
/// ```
pub trait Nic: Send {
    /// PCI address of the device.
    fn addr(&self) -> PciAddr;
    /// The name a user gives to open this port: its PCI address, or `xdp:eth0` for an
    /// AF_XDP port (whose [`addr`](Nic::addr) is the PCI function behind the interface).
    fn name(&self) -> String {
        self.addr().to_string()
    }
    /// Name of the driver (`e1000`, …).
    fn driver(&self) -> &'static str;
    /// The pool this port receives into; allocate transmit buffers from it.
    fn pool(&self) -> &Arc<Mempool>;
    /// Appends up to `max` received frames to `out`; returns how many. Each `Packet` is the
    /// DMA buffer the device wrote: nothing was copied. Reserve capacity in `out` up front
    /// so the datapath never grows it.
    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> usize;
    /// Queues frames from the front of `pkts` for sending and removes those it took;
    /// returns how many. Frames it could not take (ring full) stay in `pkts`, in order.
    /// Sent frames go back to the pool in batches, not one by one as the device finishes
    /// them: the e1000 32 at a time, virtio-net once the queue runs short of room; all of
    /// them by the end of [`flush`](Nic::flush). A frame whose buffer (or payload) lives in
    /// another address space than this port's (a pool of a port behind another IOMMU, or
    /// of a no-IOMMU port) is copied into a buffer of this port's pool first, since its
    /// address means nothing to this device; frames of ports sharing the address space
    /// (every VFIO port of a process) go as they are.
    fn tx_batch(&mut self, pkts: &mut Vec<Packet>) -> usize;
    /// Waits (bounded) until the device has reported every queued frame done (a
    /// descriptor status it wrote, never a head register, which tracks descriptor fetch);
    /// true if it has.
    fn flush(&mut self) -> bool;
    /// Current counters (reads and accumulates the device's clear-on-read registers).
    fn stats(&mut self) -> Stats;
    /// Link state, read from the device now.
    fn link(&self) -> Link;
    /// A change of link state since the last call (or since the port was opened): `Some`
    /// with the new state once per change, `None` when nothing changed. Cheap enough for a
    /// tool's tick (every 10–50 ms; not every burst): in the common case one register read
    /// of an event flag the device latches (e1000/igb: ICR.LSC; virtio-net: the config
    /// `status` byte with VIRTIO_NET_F_STATUS), and STATUS only once that flag says the link
    /// changed. A link that went down and came back between two calls looks unchanged and
    /// is not reported. A down link is reported as `Link { up: false, speed_mbps: 0,
    /// full_duplex: false }`.
    ///
    /// A handle without a device of its own (a queue of a multi-queue port, whose port
    /// reports the events) answers `None`.
    ///
    /// ```no_run
    /// use zcnic::Nic;
    ///
    /// let mut nic = zcnic::open("0000:00:02.0")?;
    /// let mut next = std::time::Instant::now();
    /// loop {
    ///     // ... bursts ...
    ///     if std::time::Instant::now() >= next {
    ///         next += std::time::Duration::from_millis(20);
    ///         if let Some(link) = nic.link_event() {
    ///             println!("{}: link {link}", nic.addr());
    ///         }
    ///     }
    /// #   break;
    /// }
    /// # Ok::<(), zcnic::Error>(())
    /// ```
    fn link_event(&mut self) -> Option<Link> {
        None
    }
    /// The descriptor that becomes readable when the receive interrupt fires (an eventfd,
    /// or `/dev/uioN` under uio_pci_generic; see [`zcnic::irq`](crate::irq)): register it with epoll, mio or tokio's `AsyncFd`,
    /// or let [`rx_wait`](Nic::rx_wait) sleep on it. It stays the same for the port's
    /// life. A port without a receive interrupt answers
    /// [`Error::NoInterrupt`](crate::Error::NoInterrupt).
    fn rx_interrupt_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, crate::Error> {
        Err(crate::Error::no_interrupt(self.addr(), self.driver()))
    }
    /// Arms the receive interrupt, then looks at the ring again: `Ok(true)` when a frame
    /// already waits (the interrupt is disarmed again; poll, do not sleep), `Ok(false)` when
    /// the ring is empty and any frame from now on makes
    /// [`rx_interrupt_fd`](Nic::rx_interrupt_fd) readable. This order (arm, re-check,
    /// sleep) is what keeps a frame that lands just before the sleep from being slept
    /// through. Call [`disable_rx_interrupt`](Nic::disable_rx_interrupt) once awake,
    /// before polling again.
    fn enable_rx_interrupt(&mut self) -> Result<bool, crate::Error> {
        Err(crate::Error::no_interrupt(self.addr(), self.driver()))
    }
    /// Disarms the receive interrupt and acknowledges it at the device: polling costs no
    /// interrupt from here on. No system call (the next arm does what the platform needs).
    fn disable_rx_interrupt(&mut self) -> Result<(), crate::Error> {
        Err(crate::Error::no_interrupt(self.addr(), self.driver()))
    }
    /// Sleeps until a frame arrives or `timeout` passes: arms the interrupt, re-checks the
    /// ring, sleeps on the descriptor, disarms. `Ok(true)` when frames may wait (a frame
    /// was already there, or the interrupt fired), `Ok(false)` on timeout (or a signal).
    /// Poll with [`rx_batch`](Nic::rx_batch) after either.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use zcnic::Nic;
    ///
    /// let mut nic = zcnic::open("0000:00:02.0")?;
    /// let mut batch = Vec::with_capacity(32);
    /// loop {
    ///     if nic.rx_batch(&mut batch, 32) == 0 {
    ///         nic.rx_wait(Duration::from_millis(100))?;
    ///         continue;
    ///     }
    ///     println!("{} frames", batch.len());
    ///     batch.clear();
    /// #   break;
    /// }
    /// # Ok::<(), zcnic::Error>(())
    /// ```
    fn rx_wait(&mut self, timeout: std::time::Duration) -> Result<bool, crate::Error> {
        if self.enable_rx_interrupt()? {
            return Ok(true);
        }
        let woke = crate::irq::wait_readable(self.rx_interrupt_fd()?, timeout);
        self.disable_rx_interrupt()?;
        woke.map_err(|e| crate::Error::os(&self.addr(), "waiting for the receive interrupt", e))
    }
    /// What this port does in hardware: checksums and VLAN tags on transmit (asked per
    /// frame through [`Offloads::request`](crate::offload::Offloads::request), which does
    /// the rest in software), and what it reports with received frames.
    fn offloads(&self) -> crate::Offloads {
        crate::Offloads::NONE
    }
    /// The port's MAC address.
    fn mac(&self) -> [u8; 6];
    /// The MTU the port was opened with ([`Config::mtu`](crate::Config::mtu)): frames of
    /// up to `mtu + 18` bytes go both ways, in a [`Packet`] chain beyond one buffer.
    fn mtu(&self) -> usize {
        1500
    }
    /// [`tx_batch`](Nic::tx_batch), except that the frames the device has finished with
    /// come back in `done`, exactly as they were handed in (frame, length, payload), instead
    /// of going back to the pool. A sender that re-sends similar frames then rewrites only
    /// what changes per frame, and no buffer goes through the pool. The device only reads
    /// transmit buffers, so their contents are what was sent. They come back in the
    /// batches [`tx_batch`](Nic::tx_batch) describes, so a caller keeps sending new frames
    /// until some return. A driver without it returns nothing in `done`, which is always
    /// correct.
    fn tx_batch_recycle(&mut self, pkts: &mut Vec<Packet>, done: &mut Vec<Packet>) -> usize {
        let _ = done;
        self.tx_batch(pkts)
    }
    /// [`rx_batch`](Nic::rx_batch), except that the buffers the device receives into
    /// next come from the back of `spare` before the pool: packets the application is done
    /// with (frames it has read, or those [`tx_batch_recycle`](Nic::tx_batch_recycle)
    /// handed back), reset to an empty buffer. A forwarder that passes the one back to the
    /// other moves no buffer through the pool at all. The driver takes, from the back, only
    /// as many as it refills and stops at the first packet of another pool than its own
    /// ([`pool`](Nic::pool)): a port's receive buffers are its own pool's, whose size and
    /// counts assume so. What it does not take stays in `spare`, untouched, for the caller
    /// to keep or drop; what it took but did not need (bad descriptors leave refills over)
    /// comes back reset. A driver without it takes none, which is always correct.
    fn rx_batch_recycle(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        spare: &mut Vec<Packet>,
    ) -> usize {
        let _ = spare;
        self.rx_batch(out, max)
    }
    /// Receive every frame (promiscuous) or only those addressed to this port and broadcast
    /// (and what the filter calls below add).
    fn set_promisc(&mut self, on: bool);
    /// Receive every multicast frame (on), or only the groups joined with
    /// [`add_multicast`](Nic::add_multicast) (off, the default). Broadcast always arrives.
    /// A port without receive filters answers [`Error::Filter`](crate::Error::Filter).
    fn set_allmulti(&mut self, on: bool) -> Result<(), crate::Error> {
        let _ = on;
        Err(crate::Error::no_filter(
            self.addr(),
            self.driver(),
            "all-multicast",
        ))
    }
    /// Joins the multicast group `mac` (the group bit set: `33:33:ff:00:00:01`): its
    /// frames arrive with promiscuous mode off. Joins are counted: a group joined twice
    /// stays joined until removed twice. The device may let other groups in too (see
    /// [`zcnic::filter`](crate::filter)). A unicast address is refused.
    fn add_multicast(&mut self, mac: [u8; 6]) -> Result<(), crate::Error> {
        let _ = mac;
        Err(crate::Error::no_filter(
            self.addr(),
            self.driver(),
            "multicast",
        ))
    }
    /// Undoes one [`add_multicast`](Nic::add_multicast) of `mac`; an address not joined is
    /// refused.
    fn remove_multicast(&mut self, mac: [u8; 6]) -> Result<(), crate::Error> {
        let _ = mac;
        Err(crate::Error::no_filter(
            self.addr(),
            self.driver(),
            "multicast",
        ))
    }
    /// Receives frames for the unicast address `mac` too, besides the port's own, with
    /// promiscuous mode off (counted like joins). The e1000 has 15 such slots, the igb 23;
    /// a full table is an error, never a silent switch to promiscuous mode.
    fn add_unicast(&mut self, mac: [u8; 6]) -> Result<(), crate::Error> {
        let _ = mac;
        Err(crate::Error::no_filter(
            self.addr(),
            self.driver(),
            "unicast address",
        ))
    }
    /// Undoes one [`add_unicast`](Nic::add_unicast) of `mac`.
    fn remove_unicast(&mut self, mac: [u8; 6]) -> Result<(), crate::Error> {
        let _ = mac;
        Err(crate::Error::no_filter(
            self.addr(),
            self.driver(),
            "unicast address",
        ))
    }
    /// Ceiling mode (`zcnic pktgen --ceiling`), which measures the device instead of the
    /// driver: the first call copies `frame` into one buffer and points every transmit
    /// descriptor at it; each call then hands up to `burst` of those descriptors back to
    /// the device as it completes them, with no allocation and no frame built per send.
    /// Returns the frames posted, or `None` when the driver has no such mode. A frame
    /// longer than one buffer ([`DATA_ROOM`](zcnic_hugepages::DATA_ROOM)) is never
    /// posted (0 each call).
    fn repost(&mut self, frame: &[u8], burst: usize) -> Option<usize> {
        let _ = (frame, burst);
        None
    }
}

/// Ceiling mode's one frame: the transmit ring drained first, then `frame` copied into a
/// fresh buffer. `None` while the ring is still busy or the pool is dry; the caller posts
/// nothing yet (and must not answer `None`, which claims there is no ceiling mode).
pub(crate) fn ceiling_frame(nic: &mut impl Nic, frame: &[u8]) -> Option<Packet> {
    if !nic.flush() {
        return None;
    }
    ceiling_copy(nic.pool(), frame)
}

/// Ceiling mode's frame in one buffer of `pool`; `None` for one longer than a buffer
/// (every descriptor points at that one buffer, so a chain would go out cut) or when the
/// pool is dry: nothing is posted then.
pub(crate) fn ceiling_copy(pool: &Arc<Mempool>, frame: &[u8]) -> Option<Packet> {
    if frame.len() > zcnic_hugepages::DATA_ROOM {
        return None;
    }
    pool.alloc_copy(frame)
}

/// How many of `pkts`, from the front, fit in `free` descriptors: one per buffer and one
/// per attached payload ([`descriptors`]). With room for two per frame and every frame
/// single there is nothing more to count.
#[inline(always)]
pub(crate) fn frames_that_fit(pkts: &[Packet], free: usize) -> usize {
    chains_that_fit(pkts, free, 1)
}

/// [`frames_that_fit`] for frames whose head takes `head` descriptors (virtio's header in
/// a descriptor of its own: 2).
#[inline(always)]
pub(crate) fn chains_that_fit(pkts: &[Packet], mut free: usize, head: usize) -> usize {
    if free >= (head + 1) * pkts.len() && pkts.iter().all(Packet::is_single) {
        return pkts.len();
    }
    let mut n = 0;
    for p in pkts {
        let need = head - 1 + descriptors(p);
        if need > free {
            break;
        }
        free -= need;
        n += 1;
    }
    n
}

/// The parts a transmit descriptor chain covers, in the frame's order: each buffer of the
/// chain, then its attached payload, as (IOVA, length).
pub(crate) fn tx_parts(pkt: &Packet) -> impl Iterator<Item = (u64, usize)> + '_ {
    pkt.segments().flat_map(|s| {
        let payload = s.payload().map(|p| (p.iova(), p.len()));
        std::iter::once((s.iova(), s.len())).chain(payload)
    })
}

/// Descriptors a frame takes, one per part: each buffer of the chain and each attached
/// payload, and one more for an offload request (the Intel NICs' context descriptor).
#[inline(always)]
pub(crate) fn descriptors(p: &Packet) -> usize {
    if p.is_single() {
        1
    } else {
        p.segments()
            .map(|s| 1 + usize::from(s.payload().is_some()))
            .sum::<usize>()
            + usize::from(p.tx_offload().is_some())
    }
}

/// The cache a queue allocates and frees through ([`PoolCache`]): chains of up to 64
/// buffers, smaller for a small pool, so two queues' caches never hold more than a few
/// percent of it.
pub(crate) fn queue_cache(pool: &Arc<Mempool>) -> PoolCache {
    pool.cache((pool.capacity() / 64).clamp(1, 64))
}

/// Moves up to `want` packets from the back of `spare` to `fresh`, as receive refills:
/// each reset to the default headroom, so the device writes where `reset_len` expects the
/// frame (virtio's header just before it). Stops at a packet from another pool than
/// `pool`, which stays with the caller, with everything before it. Returns how many it
/// moved.
#[inline(always)]
pub(crate) fn take_spares(
    fresh: &mut Vec<Packet>,
    spare: &mut Vec<Packet>,
    want: usize,
    pool: &Arc<Mempool>,
) -> usize {
    if spare.is_empty() {
        // The plain receive calls: nothing to look at.
        return 0;
    }
    let from = spare.len() - want.min(spare.len());
    let mut ours = 0;
    for p in spare[from..].iter_mut().rev() {
        if !p.is_from(pool) {
            break;
        }
        p.reset();
        ours += 1;
    }
    fresh.extend(spare.drain(spare.len() - ours..));
    ours
}

/// `pkt` as a frame the port of `pool` can send: itself when each of its buffers (and
/// attached payloads) is reachable in the addresses the port's device reads, else a copy
/// into buffers of `pool` (a chain when it is longer than one). A packet from a port in
/// another address space (an IOMMU port's buffer handed to a no-IOMMU port, say) holds an
/// address that means nothing, or something else, to this device.
pub(crate) fn into_space(pkt: Packet, pool: &Arc<Mempool>) -> Option<Packet> {
    let space = pool.space();
    let reachable = pkt
        .segments()
        .all(|s| s.reachable_in(space) && s.payload().is_none_or(|p| p.reachable_in(space)));
    if reachable {
        return Some(pkt);
    }
    pkt.copy_into(pool)
}

/// Formats a MAC address as `52:54:00:12:34:56`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
