//! igb control path: reset, MAC address, PHY and link, queue setup (82576 datasheet §4.5
//! "Software Initialization", §4.6 "Receive/Transmit Initialization").

use super::port::{IgbPort, IgbQueues};
use super::regs;
use super::rx::{IgbRxQueue, RxRing};
use super::tx::{IgbTxQueue, TxRing};
use crate::e1000::counters::Counters;
use crate::intel::filter::IntelFilter;
use crate::intel::LinkWatch;
use crate::mmio::Bar;
use crate::pci::PciAddr;
use crate::port::{Port, QueueCounters, Teardown};
use crate::{wait_until, Config, Error};
use std::sync::Arc;
use std::time::Duration;
use zcnic_hugepages::{DmaAllocator, Mempool};

/// Buffers per queue beyond its receive ring that a multi-queue pool must have: a burst
/// in flight in the application, and then some.
const RX_MARGIN: usize = 64;

/// How long a queue may take to confirm RXDCTL/TXDCTL.ENABLE (§4.6.5: "poll until set").
const QUEUE_ENABLE_TIMEOUT: Duration = Duration::from_millis(100);

impl<B: Bar> IgbPort<B> {
    /// Brings the device up on `bar` with DMA memory from `dma`: reset, MAC, `cfg.queues`
    /// queue pairs with RSS over them, link. Returns the port and each queue's handles.
    pub fn new(
        bar: B,
        dma: &dyn DmaAllocator,
        addr: PciAddr,
        cfg: &Config,
    ) -> Result<(Self, IgbQueues), Error> {
        let rx_idx = crate::intel::ring_index(&addr, "igb", cfg.rx_ring, 8)?;
        let tx_idx = crate::intel::ring_index(&addr, "igb", cfg.tx_ring, 32)?;
        // Receive takes one 2 KiB buffer per frame here (no multi-buffer receive yet).
        Error::check_mtu(
            addr,
            cfg.mtu,
            1500,
            "igb (jumbo receive is not implemented)",
        )?;
        let n = cfg.queues;
        if n == 0 || n > super::MAX_QUEUES {
            return Err(Error::Io(format!(
                "{addr}: igb queues {n} must be in 1..={}",
                super::MAX_QUEUES
            )));
        }
        // Every receive slot always holds a buffer: the rings alone take n × rx_ring, and
        // with nothing over, a ring that hands a frame out has nothing to refill with.
        let rings = usize::from(n) * rx_idx.size() as usize;
        if n > 1 && cfg.pool < rings + usize::from(n) * RX_MARGIN {
            return Err(Error::Io(format!(
                "{addr}: a pool of {} buffers cannot feed {n} receive rings of {} (at least {} needed): raise Config::pool or lower rx_ring",
                cfg.pool,
                rx_idx.size(),
                rings + usize::from(n) * RX_MARGIN
            )));
        }
        let dma_err = |source| Error::Dma { addr, source };

        reset(&bar, &addr, cfg.reset_timeout)?;
        let mac = read_mac(&bar, &addr)?;
        let filter = IntelFilter::new(&bar, regs::MTA, regs::RA_LEN, regs::ra);

        // Nothing is handed to the device before the queues are enabled below: on an
        // error here the memory is freed with the device reset and idle.
        let pool = Mempool::new(dma, cfg.pool).map_err(dma_err)?;
        let teardown = Arc::new(Teardown::default());
        let mut queues = Vec::with_capacity(n as usize);
        for q in 0..n {
            let rx = IgbRxQueue {
                ring: Some(RxRing::new(dma, &pool, rx_idx, cfg.vlan_strip).map_err(dma_err)?),
                tail: bar.doorbell(regs::rdt(q.into())),
                pool: Arc::clone(&pool),
                counters: Arc::default(),
                teardown: Arc::clone(&teardown),
                queue: q,
                irq: None,
            };
            let tx = IgbTxQueue {
                ring: Some(TxRing::new(dma, tx_idx, cfg.vlan_strip).map_err(dma_err)?),
                tail: bar.doorbell(regs::tdt(q.into())),
                pool: Arc::clone(&pool),
                counters: Arc::default(),
                teardown: Arc::clone(&teardown),
                queue: q,
                ceiling: None,
            };
            if rx.tail.is_dead() || tx.tail.is_dead() {
                return Err(Error::Io(format!(
                    "{addr}: queue {q}'s tail registers lie outside BAR 0: not an 82576's register window"
                )));
            }
            queues.push((rx, tx));
        }
        let counters = |f: fn(&(IgbRxQueue, IgbTxQueue)) -> &Arc<QueueCounters>| {
            queues.iter().map(|p| Arc::clone(f(p))).collect()
        };
        let link = LinkWatch::start(&bar, regs::ICR, regs::STATUS);
        let mut port = Self {
            bar,
            addr,
            mac,
            pool,
            hw: Counters::of(&regs::STATS),
            promisc: cfg.promisc,
            vlan_strip: cfg.vlan_strip,
            filter,
            rss: cfg.rss.clone(),
            rx_counters: counters(|p| &p.0.counters),
            tx_counters: counters(|p| &p.1.counters),
            teardown,
            link,
            msix: false,
            line: None,
            link_irq: None,
            device: None,
        };
        port.start_tx(&queues)?;
        port.start_rss(n)?;
        if cfg.vlan_strip {
            // VLAN mode: tags stripped into the write-back's VLAN field with VP (§7.4).
            let ctrl = port.bar.read32(regs::CTRL) | regs::CTRL_VME;
            port.bar.write32(regs::CTRL, ctrl);
        }
        port.start_rx(&queues)?;
        // Counters of an earlier user of the device are not ours: read (and so clear) them.
        port.hw.read(&port.bar);
        port.hw.zero();
        start_link(&port.bar, &addr)?;
        if !wait_until(cfg.link_timeout, || port.link().up) {
            log::warn!(
                "{addr}: link still down after {} ms; frames wait until it comes up",
                cfg.link_timeout.as_millis()
            );
        }
        // Link events count from here: the link coming up during bring-up is not one.
        port.link = LinkWatch::start(&port.bar, regs::ICR, regs::STATUS);
        Ok((port, queues))
    }

    /// Receive queues (§4.6.7): each ring with advanced one-buffer descriptors of 2 KiB
    /// and drop enable (a queue out of buffers drops its own frames instead of holding up
    /// the others), its enable confirmed; then receive goes on and the tails hand the
    /// buffers over.
    fn start_rx(&mut self, queues: &IgbQueues) -> Result<(), Error> {
        let b = &self.bar;
        b.write32(regs::RCTL, 0);
        for (rx, _) in queues {
            let (Some(ring), q) = (rx.ring.as_ref(), u32::from(rx.queue)) else {
                continue;
            };
            // Disabled, with the reset default thresholds (WTHRESH 1).
            b.write32(regs::rxdctl(q), regs::RXDCTL_WTHRESH_1);
            let iova = ring.ring.iova();
            b.write32(regs::rdbal(q), iova as u32);
            b.write32(regs::rdbah(q), (iova >> 32) as u32);
            b.write32(regs::rdlen(q), ring.ring.bytes() as u32);
            b.write32(
                regs::srrctl(q),
                regs::SRRCTL_BSIZEPKT_2K | regs::SRRCTL_DESCTYPE_ADV_ONEBUF | regs::SRRCTL_DROP_EN,
            );
            b.write32(regs::rdh(q), 0);
            b.write32(regs::rdt(q), 0);
            enable_queue(
                b,
                &self.addr,
                regs::rxdctl(q),
                "RXDCTL.ENABLE of a receive queue",
            )?;
        }
        b.write32(regs::RCTL, self.rctl());
        // Descriptors were written before the queues were enabled; the tails hand them over.
        for (rx, _) in queues {
            if let Some(ring) = rx.ring.as_ref() {
                rx.tail.write(ring.initial_tail());
            }
        }
        Ok(())
    }

    /// Transmit queues (§4.6.8).
    fn start_tx(&mut self, queues: &IgbQueues) -> Result<(), Error> {
        let b = &self.bar;
        b.write32(regs::TCTL, 0);
        for (_, tx) in queues {
            let (Some(ring), q) = (tx.ring.as_ref(), u32::from(tx.queue)) else {
                continue;
            };
            b.write32(regs::txdctl(q), 0);
            let iova = ring.ring.iova();
            b.write32(regs::tdbal(q), iova as u32);
            b.write32(regs::tdbah(q), (iova >> 32) as u32);
            b.write32(regs::tdlen(q), ring.ring.bytes() as u32);
            b.write32(regs::tdh(q), 0);
            b.write32(regs::tdt(q), 0);
            enable_queue(
                b,
                &self.addr,
                regs::txdctl(q),
                "TXDCTL.ENABLE of a transmit queue",
            )?;
        }
        let tctl = regs::TCTL_EN | regs::TCTL_PSP | regs::TCTL_CT | regs::TCTL_COLD;
        b.write32(regs::TCTL, tctl);
        Ok(())
    }

    pub(crate) fn rctl(&self) -> u32 {
        // RCTL.MO stays 00: the MTA hashes destination bits 47:36, as on the e1000.
        let mut r = regs::RCTL_EN | regs::RCTL_BAM | regs::RCTL_SECRC;
        if self.promisc {
            r |= regs::RCTL_UPE | regs::RCTL_MPE;
        }
        if self.filter.rx.allmulti {
            r |= regs::RCTL_MPE;
        }
        r
    }

    /// Stops receive and transmit DMA and resets the device; used on drop. True when the
    /// reset is confirmed, so the device no longer owns any memory.
    pub(crate) fn quiesce(&mut self) -> bool {
        self.bar.write32(regs::RCTL, 0);
        self.bar.write32(regs::TCTL, 0);
        for q in 0..u32::from(self.queues()) {
            self.bar.write32(regs::rxdctl(q), 0);
            self.bar.write32(regs::txdctl(q), 0);
        }
        match reset(&self.bar, &self.addr, Duration::from_millis(100)) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("{e}");
                false
            }
        }
    }
}

/// Sets a queue's ENABLE bit and waits until the device reads it back set.
fn enable_queue(bar: &impl Bar, addr: &PciAddr, reg: u32, what: &'static str) -> Result<(), Error> {
    bar.write32(reg, bar.read32(reg) | regs::QUEUE_ENABLE);
    if wait_until(QUEUE_ENABLE_TIMEOUT, || {
        bar.read32(reg) & regs::QUEUE_ENABLE != 0
    }) {
        Ok(())
    } else {
        Err(Error::Timeout {
            addr: *addr,
            what,
            ms: QUEUE_ENABLE_TIMEOUT.as_millis() as u64,
        })
    }
}

/// Global reset with interrupts masked (§4.5.1, §4.3.1.2): stop DMA, CTRL.RST, wait for
/// it to clear, then for the NVM auto-read.
pub(crate) fn reset(bar: &impl Bar, addr: &PciAddr, timeout: Duration) -> Result<(), Error> {
    bar.write32(regs::IMC, u32::MAX);
    bar.write32(regs::EIMC, u32::MAX);
    // Stop DMA of whoever had the device before (a killed zcnic leaves queues enabled).
    bar.write32(regs::RCTL, 0);
    bar.write32(regs::TCTL, 0);
    bar.write32(regs::CTRL, bar.read32(regs::CTRL) | regs::CTRL_RST);
    if !wait_until(timeout, || bar.read32(regs::CTRL) & regs::CTRL_RST == 0) {
        return Err(Error::Timeout {
            addr: *addr,
            what: "CTRL.RST to clear after a device reset",
            ms: timeout.as_millis() as u64,
        });
    }
    // The datasheet waits for the NVM auto-read (EECD.AUTO_RD) before using the device;
    // QEMU's model never sets it, so its absence after 10 ms is only noted.
    if !wait_until(Duration::from_millis(10), || {
        bar.read32(regs::EECD) & regs::EECD_AUTO_RD != 0
    }) {
        log::debug!("{addr}: EECD.AUTO_RD not set 10 ms after reset; going on");
    }
    bar.write32(regs::IMC, u32::MAX);
    bar.write32(regs::EIMC, u32::MAX);
    let _ = bar.read32(regs::ICR);
    let ctrl = (bar.read32(regs::CTRL) | regs::CTRL_SLU) & !(regs::CTRL_LRST | regs::CTRL_VME);
    bar.write32(regs::CTRL, ctrl);
    Ok(())
}

/// Restarts auto-negotiation through the PHY's control register (§8.2.4 MDIC), which
/// brings the link up once it completes.
fn start_link(bar: &impl Bar, addr: &PciAddr) -> Result<(), Error> {
    let cmd = u32::from(regs::BMCR_AUTONEG_RESTART)
        | regs::PHY_BMCR << regs::MDIC_REG_SHIFT
        | regs::PHY_ADDR << regs::MDIC_PHY_SHIFT
        | regs::MDIC_OP_WRITE;
    bar.write32(regs::MDIC, cmd);
    let mut mdic = 0;
    // About 100 ms, as Linux's igb polls MDIC (1920 x 50 us): a PHY answers in tens of
    // microseconds, but a busy host's fake device (or emulator) can take milliseconds.
    if !wait_until(Duration::from_millis(100), || {
        mdic = bar.read32(regs::MDIC);
        mdic & regs::MDIC_READY != 0
    }) {
        return Err(Error::Timeout {
            addr: *addr,
            what: "MDIC.READY after writing the PHY control register",
            ms: 100,
        });
    }
    if mdic & regs::MDIC_ERROR != 0 {
        return Err(Error::Io(format!(
            "{addr}: the PHY refused the auto-negotiation restart (MDIC {mdic:#x})"
        )));
    }
    Ok(())
}

/// The MAC from receive-address entry 0, which the 82576 loads from its NVM at reset.
fn read_mac(bar: &impl Bar, addr: &PciAddr) -> Result<[u8; 6], Error> {
    let rah = bar.read32(regs::RAH0);
    if rah & regs::RAH_AV == 0 {
        return Err(Error::Io(format!(
            "{addr}: receive address 0 is not valid after reset (RAH0 {rah:#x}): the NVM holds no MAC"
        )));
    }
    let ral = bar.read32(regs::RAL0).to_le_bytes();
    let rah = rah.to_le_bytes();
    Ok([ral[0], ral[1], ral[2], ral[3], rah[0], rah[1]])
}
