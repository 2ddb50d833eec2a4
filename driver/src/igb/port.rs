//! The igb port: its control plane ([`IgbPort`]: link, MAC, filters, RSS, counters), and
//! [`Igb`], the one-queue [`Nic`] built from a port and its queue 0.

use super::regs;
use super::rx::IgbRxQueue;
use super::tx::IgbTxQueue;
use crate::e1000::counters::Counters;
use crate::filter::Kind;
use crate::intel::filter::IntelFilter;
use crate::intel::LinkWatch;
use crate::mmio::{Bar, MmioBar};
use crate::nic::{Link, Nic, Stats};
use crate::pci::PciAddr;
use crate::platform::PciDevice;
use crate::port::{Port, QueueCounters, QueuePair, Rss, Teardown, TxQueue};
use crate::{Config, Error};
use std::sync::Arc;
use zcnic_descriptors::rss::Reta;

use zcnic_hugepages::{Mempool, Packet, PoolCache};

/// The control plane of one igb: registers, counters, RSS. Its queues run elsewhere.
pub struct IgbPort<B: Bar> {
    pub(crate) bar: B,
    pub(crate) addr: PciAddr,
    pub(crate) mac: [u8; 6],
    pub(crate) pool: Arc<Mempool>,
    pub(crate) hw: Counters,
    pub(crate) promisc: bool,
    /// `Config::vlan_strip`: CTRL.VME is set.
    pub(crate) vlan_strip: bool,
    /// Multicast groups, all-multicast and extra unicast addresses.
    pub(crate) filter: IntelFilter,
    pub(crate) rss: Rss,
    pub(crate) rx_counters: Vec<Arc<QueueCounters>>,
    pub(crate) tx_counters: Vec<Arc<QueueCounters>>,
    pub(crate) teardown: Arc<Teardown>,
    /// Link events: ICR.LSC, then STATUS.
    pub(crate) link: LinkWatch,
    /// MSI-X is on at the platform (`irq.rs`): turned off at close, after the reset.
    pub(crate) msix: bool,
    /// The other-cause (link) MSI-X vector, when the platform gave one (`irq.rs`).
    pub(crate) link_irq: Option<crate::irq::EventFd>,
    /// Without MSI-X, a one-queue port's MSI or INTx (`irq.rs`): let go of at close.
    pub(crate) line: Option<super::irq::Line>,
    /// Keeps the device open; declared last so it closes after the rest.
    pub(crate) device: Option<Box<dyn PciDevice>>,
}

impl<B: Bar> std::fmt::Debug for IgbPort<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IgbPort")
            .field("addr", &self.addr)
            .field("queues", &self.rx_counters.len())
            .finish_non_exhaustive()
    }
}

/// One queue pair of an igb: its two handles.
pub type IgbQueues = Vec<(IgbRxQueue, IgbTxQueue)>;

impl IgbPort<MmioBar> {
    /// Brings up the igb on an opened PCI function with `cfg.queues` queue pairs, reset
    /// before bus mastering goes on (`intel::bring_up`).
    pub fn with_device(dev: Box<dyn PciDevice>, cfg: &Config) -> Result<(Self, IgbQueues), Error> {
        let ((port, queues), dev) = crate::intel::bring_up(
            dev,
            "igb",
            cfg.reset_timeout,
            super::init::reset,
            |bar, dma, addr| Self::new(bar, dma, addr, cfg),
        )?;
        let mut port = port;
        let (mut rx, tx): (Vec<IgbRxQueue>, Vec<_>) = queues.into_iter().unzip();
        // A vector per receive queue, and one for link changes when the device has it.
        match dev.vectors(crate::irq::MSIX, rx.len() + 1) {
            Ok(events) => {
                port.link_irq = super::irq::route(&port.bar, port.addr, rx.iter_mut(), events);
                port.msix = true;
            }
            // One line cannot tell queues apart: only a one-queue port takes it (`irq.rs`).
            Err(e) if rx.len() == 1 => {
                log::debug!("{e}; trying MSI, then INTx");
                port.line = super::irq::Line::route(dev.as_ref());
                if port.line.is_some() {
                    port.legacy_mode();
                }
            }
            Err(e) => log::debug!("{e}; the queues poll only"),
        }
        port.device = Some(dev);
        Ok((port, rx.into_iter().zip(tx).collect()))
    }

    /// [`with_device`](Self::with_device), the queues boxed for [`crate::open_port`].
    pub(crate) fn open_boxed(
        dev: Box<dyn PciDevice>,
        cfg: &Config,
    ) -> Result<(Box<dyn Port>, Vec<QueuePair>), Error> {
        let (port, queues) = Self::with_device(dev, cfg)?;
        let pairs = queues
            .into_iter()
            .map(|(rx, tx)| QueuePair {
                rx: Box::new(rx),
                tx: Box::new(tx),
            })
            .collect();
        Ok((Box::new(port), pairs))
    }
}

impl<B: Bar> Port for IgbPort<B> {
    fn addr(&self) -> PciAddr {
        self.addr
    }

    fn driver(&self) -> &'static str {
        "igb"
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn link(&self) -> Link {
        crate::e1000::link_of(self.bar.read32(regs::STATUS))
    }

    /// ICR.LSC, then STATUS when it is set (see `intel::LinkWatch`).
    fn link_event(&mut self) -> Option<Link> {
        self.link.poll(&self.bar)
    }

    /// Receive verdicts and tags (CTRL.VME) are recorded with `Config::vlan_strip` (the
    /// one switch for receive results, which the one-buffer path pays for otherwise).
    /// Transmit checksums and TCP segmentation always, through advanced context
    /// descriptors; tag insertion in VLAN mode (CTRL.VME, which `Config::vlan_strip`
    /// sets), as the e1000, where VLE is honoured only then.
    fn offloads(&self) -> crate::Offloads {
        crate::Offloads {
            tx_ipv4_csum: true,
            tx_tcp_csum: true,
            tx_udp_csum: true,
            tx_vlan_insert: self.vlan_strip,
            rx_checksum: self.vlan_strip,
            rx_vlan_strip: self.vlan_strip,
            rx_rss_hash: Port::queues(self) > 1,
            tx_tso4: true,
        }
    }

    fn queues(&self) -> u16 {
        self.rx_counters.len() as u16
    }

    fn rss(&self) -> Result<Rss, Error> {
        Ok(self.rss.clone())
    }

    fn set_reta(&mut self, reta: &Reta) -> Result<(), Error> {
        self.program_reta(reta)
    }

    fn stats(&mut self) -> Stats {
        self.hw.read(&self.bar);
        let mut s = Stats::default();
        for c in &self.rx_counters {
            c.add_rx_to(&mut s);
        }
        for c in &self.tx_counters {
            c.add_tx_to(&mut s);
        }
        s.hw = self.hw.named();
        s
    }

    fn queue_stats(&self) -> Vec<Stats> {
        crate::port::queue_stats(&self.rx_counters, &self.tx_counters)
    }

    fn set_promisc(&mut self, on: bool) {
        if self.promisc != on {
            self.promisc = on;
            self.bar.write32(regs::RCTL, self.rctl());
        }
    }

    /// RCTL.MPE.
    fn set_allmulti(&mut self, on: bool) -> Result<(), Error> {
        if self.filter.rx.allmulti != on {
            self.filter.rx.allmulti = on;
            self.bar.write32(regs::RCTL, self.rctl());
        }
        Ok(())
    }

    /// The group's bit in the Multicast Table Array (`zcnic::filter::mta_hash`).
    fn add_multicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        self.filter_change(Kind::Multicast, mac, true)
    }

    fn remove_multicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        self.filter_change(Kind::Multicast, mac, false)
    }

    /// A receive address entry of 1–23.
    fn add_unicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        self.filter_change(Kind::Unicast, mac, true)
    }

    fn remove_unicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        self.filter_change(Kind::Unicast, mac, false)
    }
}

impl<B: Bar> IgbPort<B> {
    fn filter_change(&mut self, kind: Kind, mac: [u8; 6], add: bool) -> Result<(), Error> {
        self.filter.change(&self.bar, self.addr, kind, mac, add)
    }
}

impl<B: Bar> Drop for IgbPort<B> {
    /// Stops DMA and turns bus mastering off, then frees what dropped queues left; queues
    /// still held elsewhere free theirs when dropped. When neither the reset nor bus
    /// mastering off can be confirmed, the memory the device could reach is leaked, never
    /// freed under it.
    fn drop(&mut self) {
        let teardown = Arc::clone(&self.teardown);
        let stopped = teardown.stop(|| {
            let reset = self.quiesce();
            let master_off = self
                .device
                .as_deref()
                .is_some_and(crate::platform::stop_bus_master);
            // The vectors off while the rings still exist (see virtio's port).
            if let (true, Some(dev)) = (self.msix, self.device.as_deref()) {
                dev.irq_release(crate::irq::MSIX);
            }
            if let (Some(line), Some(dev)) = (&self.line, self.device.as_deref()) {
                line.release(dev);
            }
            reset || master_off
        });
        if !stopped {
            log::error!(
                "{}: the device did not stop; leaking its rings and buffers so it cannot write freed memory",
                self.addr
            );
            self.pool.leak();
        }
        // Queue handles still held elsewhere must not ring this device once it is closed
        // (it may be opened again, by this process or another).
        self.bar.revoke_doorbells();
    }
}

/// One igb port behind the one-queue [`Nic`] trait: the port and its queue 0. Generic over
/// its register access so tests can play the device on a [`crate::FakeBar`].
pub struct Igb<B: Bar> {
    // Dropped in this order: the queues hand their memory to the port, which stops the
    // device and then frees it.
    pub(super) rx: IgbRxQueue,
    tx: IgbTxQueue,
    /// Refills come from and completed frames go to this cache: one thread drives both
    /// sides here, so a forwarder's buffers go round without the pool's shared stack.
    cache: PoolCache,
    pub(super) port: IgbPort<B>,
}

impl<B: Bar> std::fmt::Debug for Igb<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Igb")
            .field("addr", &self.port.addr)
            .finish_non_exhaustive()
    }
}

impl Igb<MmioBar> {
    /// Opens the igb at `addr` through the platform it is bound to.
    pub fn open(addr: &PciAddr, cfg: &Config) -> Result<Self, Error> {
        Self::with_device(crate::platform::open_device(addr)?, cfg)
    }

    /// Brings up the igb on an opened PCI function with one queue pair.
    pub fn with_device(dev: Box<dyn PciDevice>, cfg: &Config) -> Result<Self, Error> {
        let one = Config {
            queues: 1,
            ..cfg.clone()
        };
        Self::of(IgbPort::with_device(dev, &one)?)
    }
}

impl<B: Bar> Igb<B> {
    /// Brings the device up on `bar` with DMA memory from `dma`, with one queue pair.
    pub fn new(
        bar: B,
        dma: &dyn zcnic_hugepages::DmaAllocator,
        addr: PciAddr,
        cfg: &Config,
    ) -> Result<Self, Error> {
        let one = Config {
            queues: 1,
            ..cfg.clone()
        };
        Self::of(IgbPort::new(bar, dma, addr, &one)?)
    }

    fn of((port, mut queues): (IgbPort<B>, IgbQueues)) -> Result<Self, Error> {
        let (rx, tx) = queues
            .pop()
            .ok_or_else(|| Error::Io(format!("{}: the igb came up without a queue", port.addr)))?;
        let cache = crate::nic::queue_cache(&port.pool);
        Ok(Self {
            rx,
            tx,
            cache,
            port,
        })
    }
}

impl<B: Bar> Nic for Igb<B> {
    fn addr(&self) -> PciAddr {
        self.port.addr
    }

    fn driver(&self) -> &'static str {
        "igb"
    }

    fn pool(&self) -> &Arc<Mempool> {
        &self.port.pool
    }

    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> usize {
        self.rx.rx(out, max, &mut Vec::new(), Some(&mut self.cache))
    }

    fn rx_batch_recycle(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        spare: &mut Vec<Packet>,
    ) -> usize {
        self.rx.rx(out, max, spare, Some(&mut self.cache))
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>) -> usize {
        self.tx
            .tx::<false>(pkts, &mut Vec::new(), Some(&mut self.cache))
    }

    fn tx_batch_recycle(&mut self, pkts: &mut Vec<Packet>, done: &mut Vec<Packet>) -> usize {
        self.tx.tx::<true>(pkts, done, None)
    }

    fn repost(&mut self, frame: &[u8], burst: usize) -> Option<usize> {
        Some(self.tx.repost(frame, burst))
    }

    fn flush(&mut self) -> bool {
        self.tx.flush()
    }

    fn stats(&mut self) -> Stats {
        self.port.stats()
    }

    fn link(&self) -> Link {
        self.port.link()
    }

    fn link_event(&mut self) -> Option<Link> {
        self.port.link_event()
    }

    /// Queue 0's MSI-X vector (`irq.rs`), or the port's one line without MSI-X
    /// (`irq.rs`).
    fn rx_interrupt_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, Error> {
        match self.line_fd() {
            Some(fd) => Ok(fd),
            None => self.rx.irq_fd(),
        }
    }

    fn enable_rx_interrupt(&mut self) -> Result<bool, Error> {
        match self.port.line {
            Some(_) => self.arm_line(),
            None => self.rx.arm(),
        }
    }

    fn disable_rx_interrupt(&mut self) -> Result<(), Error> {
        match self.port.line {
            Some(_) => {
                self.disarm_line();
                Ok(())
            }
            None => self.rx.disarm(),
        }
    }

    fn offloads(&self) -> crate::Offloads {
        Port::offloads(&self.port)
    }

    fn mac(&self) -> [u8; 6] {
        self.port.mac
    }

    fn set_promisc(&mut self, on: bool) {
        self.port.set_promisc(on)
    }

    fn set_allmulti(&mut self, on: bool) -> Result<(), Error> {
        self.port.set_allmulti(on)
    }

    fn add_multicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        self.port.add_multicast(mac)
    }

    fn remove_multicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        self.port.remove_multicast(mac)
    }

    fn add_unicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        self.port.add_unicast(mac)
    }

    fn remove_unicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        self.port.remove_unicast(mac)
    }
}
