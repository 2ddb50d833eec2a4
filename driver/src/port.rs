//! Ports with several queue pairs, for one worker thread per queue: the port keeps the
//! control plane (link, MAC, filters, RSS, counters) and hands out a receive and a transmit
//! handle per queue, each `Send` and owned by one thread, with the same burst calls as
//! [`Nic`](crate::Nic) and nothing shared written on the datapath.
//!
//! ```no_run
//! let mut cfg = zcnic::Config::default();
//! cfg.queues = 2;
//! let (mut port, queues) = zcnic::open_port("0000:00:08.0", &cfg)?;
//! let workers: Vec<_> = queues
//!     .into_iter()
//!     .map(|mut q| {
//!         std::thread::spawn(move || {
//!             // Echo what this queue's flows bring, on the same queue's transmit side.
//!             let mut batch = Vec::with_capacity(32);
//!             for _ in 0..1_000_000 {
//!                 q.rx.rx_batch(&mut batch, 32);
//!                 q.tx.tx_batch(&mut batch);
//!                 batch.clear();
//!             }
//!         })
//!     })
//!     .collect();
//! for w in workers {
//!     w.join().unwrap();
//! }
//! println!("{:?}", port.stats());
//! # Ok::<(), zcnic::Error>(())
//! ```
//!
//! The port and its queues tear down safely in any order: a queue dropped while the port
//! runs hands its rings and buffers to the port, which frees them only after the device is
//! stopped; a queue dropped after the port frees them at once (the device is stopped) or
//! leaks them (it could not be stopped).

use crate::nic::{Link, Stats};
use crate::pci::PciAddr;
use crate::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use zcnic_descriptors::rss::{HashTypes, Reta, DEFAULT_KEY, KEY_LEN};
use zcnic_hugepages::{Mempool, Packet, PoolCache};

/// The receive side of one queue: burst receive, as [`Nic::rx_batch`](crate::Nic::rx_batch).
///
/// `Send`, not `Sync`: one thread drives it, and the type system keeps a second one off.
///
/// ```
/// fn send<T: Send>() {}
/// send::<zcnic::igb::IgbRxQueue>();
/// send::<zcnic::igb::IgbTxQueue>();
/// send::<zcnic::igb::IgbPort<zcnic::FakeBar>>();
/// ```
/// ```compile_fail
/// fn shared<T: Sync>() {}
/// shared::<zcnic::igb::IgbRxQueue>();
/// ```
/// ```compile_fail
/// fn shared<T: Sync>() {}
/// shared::<zcnic::igb::IgbTxQueue>();
/// ```
///
/// The same for virtio-net's queues, on either ring format:
/// ```
/// type Q = zcnic_descriptors::virtio::SplitQueue<zcnic::virtio::DmaMem>;
/// fn send<T: Send>() {}
/// send::<zcnic::virtio::VirtioRxQueue<Q>>();
/// send::<zcnic::virtio::VirtioTxQueue<Q>>();
/// send::<zcnic::virtio::VirtioPort<Q>>();
/// ```
/// ```compile_fail
/// type Q = zcnic_descriptors::virtio::PackedQueue<zcnic::virtio::DmaMem>;
/// fn shared<T: Sync>() {}
/// shared::<zcnic::virtio::VirtioRxQueue<Q>>();
/// ```
/// ```compile_fail
/// type Q = zcnic_descriptors::virtio::SplitQueue<zcnic::virtio::DmaMem>;
/// fn shared<T: Sync>() {}
/// shared::<zcnic::virtio::VirtioTxQueue<Q>>();
/// ```
pub trait RxQueue: Send {
    /// The queue's index on its port.
    fn queue(&self) -> u16;
    /// The pool this queue receives into (shared by the port's queues).
    fn pool(&self) -> &Arc<Mempool>;
    /// As [`Nic::rx_batch`](crate::Nic::rx_batch).
    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> usize;
    /// As [`Nic::rx_batch_recycle`](crate::Nic::rx_batch_recycle).
    fn rx_batch_recycle(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        spare: &mut Vec<Packet>,
    ) -> usize;
    /// As [`rx_batch`](Self::rx_batch), with the refills taken from `cache`: the calling
    /// thread's cache of this queue's pool (DPDK's per-lcore mempool cache), which the
    /// thread's transmit calls and its own allocations and frees share, so buffers go
    /// round without touching the pool's shared stack. A cache of another pool (another
    /// port's) is not used: its buffers may hold addresses that mean nothing, or something
    /// else, to this device. A driver without a cached path takes its refills from the
    /// pool as `rx_batch` does.
    fn rx_batch_cached(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        cache: &mut PoolCache,
    ) -> usize {
        let _ = cache;
        self.rx_batch(out, max)
    }
    /// As [`Nic::rx_interrupt_fd`](crate::Nic::rx_interrupt_fd), for this queue: its own
    /// vector where the NIC has one per queue (MSI-X), so each worker sleeps on its own.
    /// A queue without one says so (the default).
    fn rx_interrupt_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, Error> {
        Err(no_queue_interrupt(self.queue()))
    }
    /// As [`Nic::enable_rx_interrupt`](crate::Nic::enable_rx_interrupt): arm, re-check,
    /// `true` when a frame already waits.
    fn enable_rx_interrupt(&mut self) -> Result<bool, Error> {
        Err(no_queue_interrupt(self.queue()))
    }
    /// As [`Nic::disable_rx_interrupt`](crate::Nic::disable_rx_interrupt).
    fn disable_rx_interrupt(&mut self) -> Result<(), Error> {
        Err(no_queue_interrupt(self.queue()))
    }
    /// As [`Nic::rx_wait`](crate::Nic::rx_wait): arm, re-check, sleep up to `timeout`,
    /// disarm.
    fn rx_wait(&mut self, timeout: std::time::Duration) -> Result<bool, Error> {
        if self.enable_rx_interrupt()? {
            return Ok(true);
        }
        let woke = crate::irq::wait_readable(self.rx_interrupt_fd()?, timeout);
        self.disable_rx_interrupt()?;
        woke.map_err(|e| Error::Io(format!("waiting for the receive interrupt: {e}")))
    }
}

/// The answer of a queue handle whose driver gives it no interrupt of its own.
fn no_queue_interrupt(queue: u16) -> Error {
    Error::Io(format!(
        "queue {queue}: no receive interrupt of its own in this driver; poll instead"
    ))
}

/// The transmit side of one queue: burst transmit, as [`Nic::tx_batch`](crate::Nic::tx_batch).
pub trait TxQueue: Send {
    /// The queue's index on its port.
    fn queue(&self) -> u16;
    /// The pool to allocate transmit buffers from.
    fn pool(&self) -> &Arc<Mempool>;
    /// As [`Nic::tx_batch`](crate::Nic::tx_batch).
    fn tx_batch(&mut self, pkts: &mut Vec<Packet>) -> usize;
    /// As [`Nic::tx_batch_recycle`](crate::Nic::tx_batch_recycle).
    fn tx_batch_recycle(&mut self, pkts: &mut Vec<Packet>, done: &mut Vec<Packet>) -> usize;
    /// As [`tx_batch`](Self::tx_batch), with the completed frames' buffers going into
    /// `cache` (see [`RxQueue::rx_batch_cached`]). A driver without a cached path returns
    /// them to the pool as `tx_batch` does.
    fn tx_batch_cached(&mut self, pkts: &mut Vec<Packet>, cache: &mut PoolCache) -> usize {
        let _ = cache;
        self.tx_batch(pkts)
    }
    /// As [`Nic::flush`](crate::Nic::flush), for this queue.
    fn flush(&mut self) -> bool;
}

/// One queue's two handles, for the thread that drives them.
pub struct QueuePair {
    /// Receive side.
    pub rx: Box<dyn RxQueue>,
    /// Transmit side.
    pub tx: Box<dyn TxQueue>,
}

impl std::fmt::Debug for QueuePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueuePair({})", self.rx.queue())
    }
}

/// Receive-side scaling settings (DPDK's `rss_conf` and `reta`): the Toeplitz key, the
/// packet types hashed, and the redirection table from hash to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rss {
    /// The 40-byte Toeplitz key.
    pub key: [u8; KEY_LEN],
    /// Which headers are hashed; a frame of another type goes to queue 0.
    pub types: HashTypes,
    /// The redirection table; `None` spreads the port's queues round-robin over the
    /// device's table.
    pub reta: Option<Reta>,
}

impl Default for Rss {
    /// Microsoft's verification key, and every IPv4 and IPv6 type with TCP and UDP ports.
    fn default() -> Self {
        Self {
            key: DEFAULT_KEY,
            types: HashTypes::all(),
            reta: None,
        }
    }
}

/// The control plane of a multi-queue port.
pub trait Port: Send {
    /// PCI address of the device.
    fn addr(&self) -> PciAddr;
    /// The port's name in tools' lines, as [`Nic::name`](crate::Nic::name): its PCI
    /// address, or `xdp:IFACE` for an AF_XDP port.
    fn name(&self) -> String {
        self.addr().to_string()
    }
    /// Name of the driver.
    fn driver(&self) -> &'static str;
    /// The port's MAC address.
    fn mac(&self) -> [u8; 6];
    /// Link state, read from the device now.
    fn link(&self) -> Link;
    /// A change of link state since the last call (or since the port was opened), as
    /// [`Nic::link_event`](crate::Nic::link_event): `Some` once per change, `None` when
    /// nothing changed; cheap enough for a tool's 10–50 ms tick, not meant for every burst.
    /// Call it from the thread that holds the port: the queues' threads never see it.
    fn link_event(&mut self) -> Option<Link> {
        None
    }
    /// What this port does in hardware (see [`Nic::offloads`](crate::Nic::offloads)).
    fn offloads(&self) -> crate::Offloads {
        crate::Offloads::NONE
    }
    /// The MTU the port was opened with ([`Config::mtu`](crate::Config::mtu)).
    fn mtu(&self) -> usize {
        1500
    }
    /// Queue pairs in use.
    fn queues(&self) -> u16;
    /// The RSS settings in force (key, types, the whole table as programmed); an error
    /// when the device has no RSS zcnic can read (an AF_XDP port on veth, say), as
    /// DPDK's `rte_eth_dev_rss_hash_conf_get` answers `-ENOTSUP`.
    fn rss(&self) -> Result<Rss, Error>;
    /// Replaces the redirection table; its entries must name queues this port has, and its
    /// length must be the device's.
    fn set_reta(&mut self, reta: &Reta) -> Result<(), Error>;
    /// Totals over every queue, and the device's own counters.
    fn stats(&mut self) -> Stats;
    /// Each queue's software counters, by queue (no device counters).
    fn queue_stats(&self) -> Vec<Stats>;
    /// Receive every frame, or only those for this port and broadcast (and what the filter
    /// calls below add).
    fn set_promisc(&mut self, on: bool);
    /// Receive every multicast frame (on), or only the groups joined with
    /// [`add_multicast`](Port::add_multicast) (off, the default). Broadcast always arrives.
    /// A port without receive filters answers [`Error::Filter`].
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
    /// Undoes one [`add_multicast`](Port::add_multicast) of `mac`; an address not joined is
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
    /// promiscuous mode off (counted like joins). The igb has 23 such slots; a full table
    /// is an error, never a silent switch to promiscuous mode.
    fn add_unicast(&mut self, mac: [u8; 6]) -> Result<(), crate::Error> {
        let _ = mac;
        Err(crate::Error::no_filter(
            self.addr(),
            self.driver(),
            "unicast address",
        ))
    }
    /// Undoes one [`add_unicast`](Port::add_unicast) of `mac`.
    fn remove_unicast(&mut self, mac: [u8; 6]) -> Result<(), crate::Error> {
        let _ = mac;
        Err(crate::Error::no_filter(
            self.addr(),
            self.driver(),
            "unicast address",
        ))
    }
}

/// Counters of one queue handle, written by its thread alone (a load and a store, no
/// read-modify-write and no lock) and read by the port.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct QueueCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    no_buf: AtomicU64,
}

impl QueueCounters {
    /// Adds a burst's figures. Only the owning handle writes, so a plain load and store
    /// suffice and cost what a field update does.
    #[inline(always)]
    pub(crate) fn add(&self, packets: u64, bytes: u64, errors: u64) {
        bump(&self.packets, packets);
        bump(&self.bytes, bytes);
        if errors != 0 {
            bump(&self.errors, errors);
        }
    }

    /// One more refill the pool could not give.
    pub(crate) fn no_buf(&self) {
        bump(&self.no_buf, 1);
    }

    /// These counters as a receive queue's.
    pub(crate) fn add_rx_to(&self, s: &mut Stats) {
        s.rx_packets += self.packets.load(Ordering::Relaxed);
        s.rx_bytes += self.bytes.load(Ordering::Relaxed);
        s.rx_errors += self.errors.load(Ordering::Relaxed);
        s.rx_no_buf += self.no_buf.load(Ordering::Relaxed);
    }

    /// These counters as a transmit queue's.
    pub(crate) fn add_tx_to(&self, s: &mut Stats) {
        s.tx_packets += self.packets.load(Ordering::Relaxed);
        s.tx_bytes += self.bytes.load(Ordering::Relaxed);
        s.tx_errors += self.errors.load(Ordering::Relaxed);
    }
}

/// Each queue's counters as [`Port::queue_stats`] gives them, from the receive and
/// transmit counters of each queue pair.
pub(crate) fn queue_stats(rx: &[Arc<QueueCounters>], tx: &[Arc<QueueCounters>]) -> Vec<Stats> {
    rx.iter()
        .zip(tx)
        .map(|(rx, tx)| {
            let mut s = Stats::default();
            rx.add_rx_to(&mut s);
            tx.add_tx_to(&mut s);
            s
        })
        .collect()
}

#[inline(always)]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// What a port and its queues agree on to tear down in any order: memory the device may
/// still reach is freed only once the device is stopped, and never when it could not be.
#[derive(Debug, Default)]
pub(crate) struct Teardown {
    state: Mutex<State>,
}

impl Drop for Teardown {
    /// Parked memory without a confirmed stop (a panic inside `stop`, or a port that
    /// failed before it existed) is leaked: the device may still reach it.
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let State::Parked(v) = std::mem::take(st) {
            std::mem::forget(v);
        }
    }
}

#[derive(Default)]
enum State {
    /// The device runs; dropped queues' rings and buffers wait here.
    #[default]
    Running,
    Parked(Vec<Box<dyn Send>>),
    /// The device is stopped: memory goes at once.
    Stopped,
    /// The device could not be stopped: memory is leaked.
    Unstoppable,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Running => write!(f, "Running"),
            State::Parked(v) => write!(f, "Parked({})", v.len()),
            State::Stopped => write!(f, "Stopped"),
            State::Unstoppable => write!(f, "Unstoppable"),
        }
    }
}

impl Teardown {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a valid state: no invariant spans it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A dropped queue's memory: kept until the device stops, freed now if it has,
    /// leaked if it cannot.
    pub(crate) fn park(&self, memory: Box<dyn Send>) {
        let mut st = self.state();
        match &mut *st {
            State::Running => *st = State::Parked(vec![memory]),
            State::Parked(v) => v.push(memory),
            State::Stopped => drop(memory),
            State::Unstoppable => std::mem::forget(memory),
        }
    }

    /// Stops the device with `quiesce` (true when confirmed), then frees what queues
    /// parked, or leaks it. A queue dropped later sees the outcome. A panic in `quiesce`
    /// leaves the memory parked, and so leaked when the last holder goes.
    pub(crate) fn stop(&self, quiesce: impl FnOnce() -> bool) -> bool {
        let mut st = self.state();
        let stopped = quiesce();
        let next = if stopped {
            State::Stopped
        } else {
            State::Unstoppable
        };
        if let State::Parked(v) = std::mem::replace(&mut *st, next) {
            if stopped {
                drop(v);
            } else {
                std::mem::forget(v);
            }
        }
        stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tally(Arc<AtomicU64>);
    impl Drop for Tally {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn parked_memory_goes_only_after_a_confirmed_stop() {
        let freed = Arc::new(AtomicU64::new(0));
        let t = Teardown::default();
        t.park(Box::new(Tally(freed.clone())));
        t.park(Box::new(Tally(freed.clone())));
        assert_eq!(
            freed.load(Ordering::SeqCst),
            0,
            "kept while the device runs"
        );
        assert!(t.stop(|| true));
        assert_eq!(freed.load(Ordering::SeqCst), 2);
        t.park(Box::new(Tally(freed.clone())));
        assert_eq!(freed.load(Ordering::SeqCst), 3, "after the stop, at once");
    }

    #[test]
    fn a_device_that_would_not_stop_keeps_its_memory_forever() {
        let freed = Arc::new(AtomicU64::new(0));
        let t = Teardown::default();
        t.park(Box::new(Tally(freed.clone())));
        assert!(!t.stop(|| false));
        t.park(Box::new(Tally(freed.clone())));
        drop(t);
        assert_eq!(freed.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn parked_memory_without_a_stop_is_leaked_not_freed() {
        let freed = Arc::new(AtomicU64::new(0));
        let t = Teardown::default();
        t.park(Box::new(Tally(freed.clone())));
        drop(t);
        assert_eq!(freed.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn counters_add_up_per_direction() {
        let c = QueueCounters::default();
        c.add(3, 180, 1);
        c.no_buf();
        let mut s = Stats::default();
        c.add_rx_to(&mut s);
        c.add_tx_to(&mut s);
        assert_eq!(
            (s.rx_packets, s.rx_bytes, s.rx_errors, s.rx_no_buf),
            (3, 180, 1, 1)
        );
        assert_eq!((s.tx_packets, s.tx_bytes, s.tx_errors), (3, 180, 1));
    }
}
