//! Intel 8254x (e1000) driver: 82540EM, the NIC QEMU emulates by default, and its siblings
//! that share the legacy descriptor format.
//!
//! - `regs.rs`: register offsets and bits (data only)
//! - `init.rs`: reset, MAC, link and ring setup (control path)
//! - `rx.rs`: `rx_batch` (datapath: receive, long frames as chains)
//! - `tx.rs`: `tx_batch` (datapath: transmit and clean-up)
//! - `irq.rs`: the receive interrupt a waiter arms (control path)

pub(crate) mod counters;
mod init;
mod irq;
pub mod regs;
mod rx;
mod tx;

pub use crate::Config;
pub(crate) use init::link_of;
pub use irq::ITR_INTERVAL;
pub use rx::{MAX_MTU, STANDARD_FRAME};
pub use tx::{MAX_FRAME, TX_CLEAN_BATCH};

use crate::filter::Kind;
use crate::intel::filter::IntelFilter;
use crate::intel::LinkWatch;
use crate::mmio::{Bar, MmioBar};
use crate::nic::{Link, Nic, Stats};
use crate::pci::PciAddr;
use crate::platform::PciDevice;
use crate::Error;
use counters::Counters;
use std::sync::Arc;
use std::time::Duration;
use zcnic_hugepages::{AddressSpace, Mempool, Packet};

/// One e1000 port. Generic over its register access so tests can play the device on a
/// [`crate::FakeBar`].
pub struct E1000<B: Bar> {
    bar: B,
    addr: PciAddr,
    mac: [u8; 6],
    rx: rx::RxQueue,
    tx: tx::TxQueue,
    pool: Arc<Mempool>,
    /// The addresses the device reads (the pool's): what `tx` checks packets against.
    space: AddressSpace,
    sw: Stats,
    hw: Counters,
    promisc: bool,
    /// `Config::mtu`: above 1500, long packets are on.
    mtu: usize,
    /// `Config::vlan_strip`: CTRL.VME is set (which tag insertion needs too).
    vlan_strip: bool,
    /// Multicast groups, all-multicast and extra unicast addresses.
    filter: IntelFilter,
    /// The one frame every transmit descriptor points at in ceiling mode.
    ceiling: Option<Packet>,
    /// Link events: ICR.LSC, then STATUS; every ICR read goes through it.
    link: LinkWatch,
    /// The receive interrupt, or why there is none (`irq.rs`).
    irq: Result<crate::irq::RxIrq, String>,
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
    /// uio_pci_generic; see `platform::open_device`).
    pub fn open(addr: &PciAddr, cfg: &Config) -> Result<Self, Error> {
        Self::with_device(crate::platform::open_device(addr)?, cfg)
    }

    /// Brings up the e1000 on an opened PCI function. The device is stopped and reset
    /// before bus mastering goes on: after an unclean exit of its last user, a NIC whose
    /// rings are still enabled would otherwise resume DMA into memory that is no longer
    /// that user's.
    pub fn with_device(dev: Box<dyn PciDevice>, cfg: &Config) -> Result<Self, Error> {
        let (mut nic, dev) = crate::intel::bring_up(
            dev,
            "e1000",
            cfg.reset_timeout,
            init::reset,
            |bar, dma, addr| Self::new(bar, dma, addr, cfg),
        )?;
        // INTx routed to an eventfd now, masked at the device (IMS 0) until a waiter arms
        // it: the descriptor stays the same for the port's life. Without it the port still
        // polls; a waiter is told why.
        nic.irq = crate::irq::RxIrq::intx(dev.as_ref()).map_err(|e| {
            log::debug!("{e}");
            e.to_string()
        });
        nic.device = Some(dev);
        Ok(nic)
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
            self.ceiling = Some(pkt);
        }
        if !self.tx.ceiling_posted {
            // First time, or `tx_batch` wrote other frames' descriptors since: once those
            // are done, point every descriptor at the frame again (re-posting one would
            // send whatever its stale address now holds).
            if !self.flush() {
                return Some(0);
            }
            let pkt = self.ceiling.take()?;
            self.tx.point_all_at(&pkt);
            self.ceiling = Some(pkt);
        }
        let n = self.repost_tx(burst);
        self.sw.tx_bytes += (n * frame.len()) as u64;
        Some(n)
    }

    /// Waits for DD on the last descriptor queued (every burst asks for it), never for
    /// TDH alone: TDH tracks descriptor fetch, and the NIC may read the data after.
    fn flush(&mut self) -> bool {
        let done = crate::wait_until(Duration::from_millis(500), || self.tx.all_done());
        if done {
            self.reclaim_done_tx();
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
        init::link_of(self.bar.read32(regs::STATUS))
    }

    /// ICR.LSC, then STATUS when it is set (see `intel::LinkWatch`).
    fn link_event(&mut self) -> Option<Link> {
        self.link.poll(&self.bar)
    }

    /// Where INTx arrives (an eventfd under VFIO, `/dev/uioN` under uio), or the eventfd
    /// given to [`attach_interrupt`](E1000::attach_interrupt).
    fn rx_interrupt_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, Error> {
        self.irq_fd()
    }

    /// IMS with RXT0, RXDMT0 and RXO, then the ring again (see `e1000/irq.rs`).
    fn enable_rx_interrupt(&mut self) -> Result<bool, Error> {
        self.arm_rx()
    }

    /// IMC, then ICR read, which drops the line.
    fn disable_rx_interrupt(&mut self) -> Result<(), Error> {
        self.irq()?;
        self.disarm_rx();
        Ok(())
    }

    /// Checksums and TCP segmentation on transmit (context descriptors); tags inserted only with
    /// `Config::vlan_strip`, as VLE is honoured only with CTRL.VME set (8254x SDM §3.3.7.1).
    /// Receive verdicts as RXCSUM asks; QEMU's model says "ignore checksum" (IXSM) on every
    /// frame, so there they are all `Unknown`.
    fn offloads(&self) -> crate::Offloads {
        crate::Offloads {
            tx_ipv4_csum: true,
            tx_tcp_csum: true,
            tx_udp_csum: true,
            tx_vlan_insert: self.vlan_strip,
            rx_checksum: true,
            rx_vlan_strip: self.vlan_strip,
            rx_rss_hash: false,
            tx_tso4: true,
        }
    }

    fn mtu(&self) -> usize {
        self.mtu
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

    /// RCTL.MPE.
    fn set_allmulti(&mut self, on: bool) -> Result<(), Error> {
        if self.filter.rx.allmulti != on {
            self.filter.rx.allmulti = on;
            self.bar.write32(regs::RCTL, self.rctl().bits());
        }
        Ok(())
    }

    /// The group's bit in the Multicast Table Array (`zcnic::filter::mta_hash`).
    fn add_multicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        let (bar, addr) = (&self.bar, self.addr);
        self.filter.change(bar, addr, Kind::Multicast, mac, true)
    }

    fn remove_multicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        let (bar, addr) = (&self.bar, self.addr);
        self.filter.change(bar, addr, Kind::Multicast, mac, false)
    }

    /// A receive address entry of 1–15.
    fn add_unicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        let (bar, addr) = (&self.bar, self.addr);
        self.filter.change(bar, addr, Kind::Unicast, mac, true)
    }

    fn remove_unicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        let (bar, addr) = (&self.bar, self.addr);
        self.filter.change(bar, addr, Kind::Unicast, mac, false)
    }
}

impl<B: Bar> Drop for E1000<B> {
    /// Sends what is queued, then stops DMA and turns bus mastering off before the rings
    /// and buffers are unmapped and freed (the fields drop after this runs). When neither
    /// the reset nor bus mastering off can be confirmed, the device may still write the
    /// rings and buffers: they are leaked on purpose, never freed under it.
    fn drop(&mut self) {
        if !self.flush() {
            log::warn!("{}: transmit ring did not drain before close", self.addr);
        }
        let reset = self.quiesce();
        self.release_irq();
        let master_off = self
            .device
            .as_deref()
            .is_some_and(crate::platform::stop_bus_master);
        if !reset && !master_off {
            log::error!(
                "{}: the device did not stop; leaking its rings and buffers so it cannot write freed memory",
                self.addr
            );
            self.leak_dma();
        }
    }
}

impl<B: Bar> E1000<B> {
    /// Keeps every piece of memory the device could reach for the rest of the process.
    fn leak_dma(&mut self) {
        self.rx.ring.leak();
        self.tx.ring.leak();
        self.pool.leak();
        // Receive buffers must not go back to the (leaked) pool's free list, where they
        // would be handed out while the device may still write them; transmit packets may
        // hold application segments the device may still read.
        std::mem::forget(std::mem::take(&mut self.rx.bufs));
        std::mem::forget(self.rx.sink.take());
        std::mem::forget(std::mem::take(&mut self.tx.bufs));
        std::mem::forget(self.ceiling.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::{COMMAND_BUS_MASTER, CONFIG_COMMAND};
    use crate::platform::IovaMode;
    use std::sync::Mutex;
    use zcnic_hugepages::{DmaAllocator, FakeDma};

    /// A PCI function whose BAR is plain memory (so a reset never completes) and whose
    /// command register remembers every value written.
    #[derive(Debug, Default)]
    struct Recorder {
        commands: Arc<Mutex<Vec<u16>>>,
    }

    // SAFETY: no device stands behind it: its "BAR" is anonymous memory and its DMA memory
    // the fake's, which nothing but this test touches.
    unsafe impl PciDevice for Recorder {
        fn addr(&self) -> PciAddr {
            "0000:00:02.0".parse().unwrap()
        }
        fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<(), Error> {
            let last = self.commands.lock().unwrap().last().copied().unwrap_or(0);
            buf.fill(0);
            if off == CONFIG_COMMAND && buf.len() == 2 {
                buf.copy_from_slice(&last.to_le_bytes());
            }
            Ok(())
        }
        fn config_write(&self, off: u64, buf: &[u8]) -> Result<(), Error> {
            if off == CONFIG_COMMAND && buf.len() == 2 {
                self.commands
                    .lock()
                    .unwrap()
                    .push(u16::from_le_bytes([buf[0], buf[1]]));
            }
            Ok(())
        }
        fn map_bar(&self, _index: u32) -> Result<MmioBar, Error> {
            let map = memmap2::MmapOptions::new()
                .len(0x20000)
                .map_anon()
                .map_err(|e| Error::Io(e.to_string()))?;
            // SAFETY: a private anonymous read-write mapping, whole: every byte accessible
            // for its life, and accessing it touches nothing else.
            let bar = unsafe { MmioBar::new(memmap2::MmapRaw::from(map)) };
            bar.ok_or_else(|| Error::Io("null".into()))
        }
        fn dma_allocator(&self, _mode: IovaMode) -> Result<Box<dyn DmaAllocator>, Error> {
            Ok(Box::new(FakeDma::new()))
        }
        fn bar_read(&self, _: u32, _: u64, _: &mut [u8]) -> Result<(), Error> {
            Ok(())
        }
        fn bar_write(&self, _: u32, _: u64, _: &[u8]) -> Result<(), Error> {
            Ok(())
        }
        fn reset(&self) -> bool {
            false
        }
    }

    /// Regression: bus mastering went on before the device was reset, so a NIC left
    /// running by an unclean exit resumed DMA into memory no longer its user's. Here the
    /// reset never completes: opening fails, and bus mastering was never on meanwhile.
    #[test]
    fn bus_mastering_waits_for_the_reset() {
        let dev = Recorder::default();
        let commands = dev.commands.clone();
        let cfg = Config {
            reset_timeout: Duration::from_millis(5),
            ..Config::default()
        };
        let err = E1000::with_device(Box::new(dev), &cfg).unwrap_err();
        assert!(err.to_string().contains("CTRL.RST"), "{err}");
        let written = commands.lock().unwrap();
        assert!(
            !written.is_empty(),
            "memory decoding was turned on to reach the BAR"
        );
        assert!(
            written.iter().all(|c| c & COMMAND_BUS_MASTER == 0),
            "bus mastering turned on before the reset completed: {written:x?}"
        );
    }
}
