//! Intel 8254x (e1000) driver: 82540EM, the NIC QEMU emulates by default, and its siblings
//! that share the legacy descriptor format.
//!
//! - `regs.rs`: register offsets and bits (data only)
//! - `init.rs`: reset, MAC, link and ring setup (control path)
//! - `rxtx.rs`: `rx_batch` / `tx_batch` (datapath)

mod init;
pub mod regs;
mod rxtx;

pub use crate::Config;
pub use rxtx::TX_CLEAN_BATCH;

use crate::mmio::{Bar, MmioBar};
use crate::nic::{Link, Nic, Stats};
use crate::pci::PciAddr;
use crate::platform::{self, IovaMode, PciDevice};
use crate::Error;
use regs::StatKind;
use std::sync::Arc;
use std::time::Duration;
use zcnic_hugepages::{Mempool, Packet};

/// One e1000 port. Generic over its register access so tests can play the device on a
/// [`crate::FakeBar`].
pub struct E1000<B: Bar> {
    bar: B,
    addr: PciAddr,
    mac: [u8; 6],
    rx: rxtx::RxQueue,
    tx: rxtx::TxQueue,
    pool: Arc<Mempool>,
    sw: Stats,
    hw_total: [u64; regs::STATS.len()],
    hw_last: [u32; regs::STATS.len()],
    promisc: bool,
    /// The one frame every transmit descriptor points at in ceiling mode.
    ceiling: Option<Packet>,
    /// Keeps the device open; declared last so it closes after the rings are freed.
    device: Option<Box<dyn PciDevice>>,
}

impl<B: Bar> std::fmt::Debug for E1000<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E1000")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl E1000<MmioBar> {
    /// Opens the e1000 at `addr` through the platform it is bound to (vfio-pci or
    /// uio_pci_generic; see [`crate::platform::open_device`]).
    pub fn open(addr: &PciAddr, cfg: &Config) -> Result<Self, Error> {
        Self::with_device(crate::platform::open_device(addr)?, cfg)
    }

    /// Brings up the e1000 on an opened PCI function.
    pub fn with_device(dev: Box<dyn PciDevice>, cfg: &Config) -> Result<Self, Error> {
        let addr = dev.addr();
        if !dev.reset() {
            log::debug!(
                "{addr}: no function reset from the platform; using the e1000 global reset"
            );
        }
        dev.set_bus_master(true)?;
        let bar = dev.map_bar(0)?;
        // The e1000 always goes through the IOMMU when there is one.
        let dma = dev.dma_allocator(platform::iova_mode(dev.as_ref(), IovaMode::Virtual))?;
        let mut nic = Self::new(bar, dma.as_ref(), addr, cfg)?;
        nic.device = Some(dev);
        Ok(nic)
    }
}

impl<B: Bar> E1000<B> {
    /// Reads the statistics registers and adds them to the totals since open.
    fn read_hw_counters(&mut self) {
        for (i, (_, off, kind)) in regs::STATS.iter().enumerate() {
            let delta = match kind {
                StatKind::Clear32 => u64::from(self.bar.read32(*off)),
                StatKind::Clear64 => {
                    let lo = self.bar.read32(*off);
                    let hi = self.bar.read32(off + 4);
                    u64::from(lo) | u64::from(hi) << 32
                }
                StatKind::Running32 => {
                    let now = self.bar.read32(*off);
                    let last = std::mem::replace(&mut self.hw_last[i], now);
                    // A value below the last one means the register was cleared (silicon
                    // clears on read): count it whole.
                    u64::from(if now >= last { now - last } else { now })
                }
            };
            // A lying device must not make the total wrap (or panic in debug builds).
            self.hw_total[i] = self.hw_total[i].saturating_add(delta);
        }
    }
}

impl<B: Bar> Nic for E1000<B> {
    fn addr(&self) -> PciAddr {
        self.addr
    }

    fn driver(&self) -> &'static str {
        "e1000"
    }

    fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    #[inline]
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

    #[inline]
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
            self.tx.point_all_at(&pkt);
            self.ceiling = Some(pkt);
        }
        let n = self.repost_tx(burst);
        self.sw.tx_bytes += (n * frame.len()) as u64;
        Some(n)
    }

    fn flush(&mut self) -> bool {
        let idle = crate::wait_until(Duration::from_millis(500), || self.tx_idle());
        if idle {
            self.reclaim_idle_tx();
        }
        idle
    }

    fn stats(&mut self) -> Stats {
        self.read_hw_counters();
        let mut s = self.sw.clone();
        s.hw = regs::STATS
            .iter()
            .zip(self.hw_total)
            .map(|((name, _, _), v)| (*name, v))
            .collect();
        s
    }

    fn link(&self) -> Link {
        init::link_of(self.bar.read32(regs::STATUS))
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn set_promisc(&mut self, on: bool) {
        if self.promisc != on {
            self.promisc = on;
            self.bar.write32(regs::RCTL, self.rctl().bits());
        }
    }
}

impl<B: Bar> Drop for E1000<B> {
    /// Sends what is queued, then stops DMA and turns bus mastering off before the rings
    /// and buffers are unmapped and freed (the fields drop after this runs).
    fn drop(&mut self) {
        if !self.flush() {
            log::warn!("{}: transmit ring did not drain before close", self.addr);
        }
        self.quiesce();
        if let Some(dev) = &self.device {
            if let Err(e) = dev.set_bus_master(false) {
                log::warn!("{e}");
            }
        }
    }
}
