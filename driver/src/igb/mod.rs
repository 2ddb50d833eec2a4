//! Intel 82576 (igb) driver: the server NIC family of 82575/82576/I350, whose advanced
//! descriptors and register layout the 82599 (ixgbe) inherited. QEMU 8.0+ emulates the
//! 82576 (`-device igb`, 8086:10c9). One receive and one transmit queue for now.
//!
//! - `regs.rs`: register offsets and bits (data only)
//! - `init.rs`: reset, MAC, PHY and link, queue setup (control path)
//! - `rxtx.rs`: `rx_batch` / `tx_batch` (datapath)
//!
//! Shared with the e1000 and no more: the statistics registers' offsets and the code that
//! learns whether each clears on read, the link decode of STATUS, and the clean-up batch.

mod init;
pub mod regs;
mod rxtx;

pub use crate::Config;

use crate::e1000::counters::Counters;
use crate::mmio::{Bar, MmioBar};
use crate::nic::{Link, Nic, Stats};
use crate::pci::PciAddr;
use crate::platform::PciDevice;
use crate::Error;
use std::sync::Arc;
use std::time::Duration;
use zcnic_hugepages::{Mempool, Packet};

/// One igb port. Generic over its register access so tests can play the device on a
/// [`crate::FakeBar`].
pub struct Igb<B: Bar> {
    bar: B,
    addr: PciAddr,
    mac: [u8; 6],
    rx: rxtx::RxQueue,
    tx: rxtx::TxQueue,
    pool: Arc<Mempool>,
    sw: Stats,
    hw: Counters,
    promisc: bool,
    /// The one frame every transmit descriptor points at in ceiling mode.
    ceiling: Option<Packet>,
    /// Keeps the device open; declared last so it closes after the rings are freed.
    device: Option<Box<dyn PciDevice>>,
}

impl<B: Bar> std::fmt::Debug for Igb<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Igb")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Igb<MmioBar> {
    /// Opens the igb at `addr` through the platform it is bound to.
    pub fn open(addr: &PciAddr, cfg: &Config) -> Result<Self, Error> {
        Self::with_device(crate::platform::open_device(addr)?, cfg)
    }

    /// Brings up the igb on an opened PCI function, reset before bus mastering goes on
    /// (`intel::bring_up`).
    pub fn with_device(dev: Box<dyn PciDevice>, cfg: &Config) -> Result<Self, Error> {
        let (mut nic, dev) = crate::intel::bring_up(
            dev,
            "igb",
            cfg.reset_timeout,
            init::reset,
            |bar, dma, addr| Self::new(bar, dma, addr, cfg),
        )?;
        nic.device = Some(dev);
        Ok(nic)
    }
}

impl<B: Bar> Nic for Igb<B> {
    fn addr(&self) -> PciAddr {
        self.addr
    }

    fn driver(&self) -> &'static str {
        "igb"
    }

    fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> usize {
        self.rx(out, max, &mut Vec::new())
    }

    fn rx_batch_recycle(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        spare: &mut Vec<Packet>,
    ) -> usize {
        self.rx(out, max, spare)
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>) -> usize {
        self.tx::<false>(pkts, &mut Vec::new())
    }

    fn tx_batch_recycle(&mut self, pkts: &mut Vec<Packet>, done: &mut Vec<Packet>) -> usize {
        self.tx::<true>(pkts, done)
    }

    fn repost(&mut self, frame: &[u8], burst: usize) -> Option<usize> {
        if self.ceiling.is_none() {
            let Some(pkt) = crate::nic::ceiling_frame(self, frame) else {
                return Some(0);
            };
            self.ceiling = Some(pkt);
        }
        let (iova, len) = self.ceiling.as_ref().map(|p| (p.iova(), p.len() as u16))?;
        Some(self.repost_tx(iova, len, burst))
    }

    /// Waits for DD on the last descriptor queued (every burst asks for it), never for
    /// TDH alone.
    fn flush(&mut self) -> bool {
        let done = crate::wait_until(Duration::from_millis(500), || self.tx.all_done());
        if done {
            self.tx.reclaim_done::<false>(&mut Vec::new());
        }
        done
    }

    fn stats(&mut self) -> Stats {
        self.hw.read(&self.bar);
        let mut s = self.sw.clone();
        s.hw = self.hw.named();
        s
    }

    fn link(&self) -> Link {
        crate::e1000::link_of(self.bar.read32(regs::STATUS))
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn set_promisc(&mut self, on: bool) {
        if self.promisc != on {
            self.promisc = on;
            self.bar.write32(regs::RCTL, self.rctl());
        }
    }
}

impl<B: Bar> Drop for Igb<B> {
    /// Sends what is queued, then stops DMA and turns bus mastering off before the rings
    /// and buffers are freed. When neither the reset nor bus mastering off can be
    /// confirmed, the memory the device could reach is leaked, never freed under it.
    fn drop(&mut self) {
        if !self.flush() {
            log::warn!("{}: transmit ring did not drain before close", self.addr);
        }
        let reset = self.quiesce();
        let master_off = self
            .device
            .as_deref()
            .is_some_and(crate::platform::stop_bus_master);
        if !reset && !master_off {
            log::error!(
                "{}: the device did not stop; leaking its rings and buffers so it cannot write freed memory",
                self.addr
            );
            self.rx.ring.leak();
            self.tx.ring.leak();
            self.pool.leak();
            std::mem::forget(std::mem::take(&mut self.rx.bufs));
            std::mem::forget(std::mem::take(&mut self.tx.bufs));
            std::mem::forget(self.ceiling.take());
        }
    }
}
