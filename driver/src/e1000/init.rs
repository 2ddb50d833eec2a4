//! e1000 control path: reset, MAC address, link, ring setup (8254x SDM §14, "General
//! Initialization and Reset Operation").

use super::counters::Counters;
use super::regs::{self, Ctrl, Rctl, Status, Tctl};
use super::rx::RxQueue;
use super::tx::TxQueue;
use super::E1000;
use crate::intel::filter::IntelFilter;
use crate::intel::LinkWatch;
use crate::mmio::Bar;
use crate::nic::{Nic, Stats};
use crate::pci::PciAddr;
use crate::{wait_until, Config, Error};
use std::time::Duration;
use zcnic_hugepages::{DmaAllocator, Mempool};

impl<B: Bar> E1000<B> {
    /// Brings the device up on `bar` with DMA memory from `dma`: reset, MAC, rings, link.
    pub fn new(bar: B, dma: &dyn DmaAllocator, addr: PciAddr, cfg: &Config) -> Result<Self, Error> {
        let rx_idx = crate::intel::ring_index(&addr, "e1000", cfg.rx_ring, 8)?;
        let tx_idx = crate::intel::ring_index(&addr, "e1000", cfg.tx_ring, 32)?;
        let dma_err = |source| Error::Dma { addr, source };
        Error::check_mtu(addr, cfg.mtu, super::rx::MAX_MTU, "e1000")?;

        reset(&bar, &addr, cfg.reset_timeout)?;
        let mac = read_mac(&bar, &addr)?;
        let filter = IntelFilter::new(&bar, regs::MTA, regs::RA_LEN, regs::ra);

        // Nothing is handed to the device before RCTL.EN and TDT below: on an error here
        // the memory is freed with the device reset and idle.
        let pool = Mempool::new(dma, cfg.pool).map_err(dma_err)?;
        let rx = RxQueue::new(dma, &pool, rx_idx, cfg.max_frame()).map_err(dma_err)?;
        let tx = TxQueue::new(dma, tx_idx).map_err(dma_err)?;

        let link = LinkWatch::start(&bar, regs::ICR, regs::STATUS);
        let mut nic = Self {
            bar,
            addr,
            mac,
            rx,
            tx,
            space: pool.space(),
            pool,
            sw: Stats::default(),
            hw: Counters::new(),
            promisc: cfg.promisc,
            mtu: cfg.mtu,
            vlan_strip: cfg.vlan_strip,
            filter,
            ceiling: None,
            link,
            irq: Err(
                "no platform device behind this port (a test's fake gets one with \
                      `E1000::attach_interrupt`)"
                    .into(),
            ),
            device: None,
        };
        nic.start_rx();
        nic.start_tx();
        // Counters of an earlier user of the device are not ours: read (and so clear) them.
        nic.hw.read(&nic.bar);
        nic.hw.zero();
        if !wait_until(cfg.link_timeout, || nic.link().up) {
            log::warn!(
                "{addr}: link still down after {} ms; frames wait until it comes up",
                cfg.link_timeout.as_millis()
            );
        }
        // Link events count from here: the link coming up during bring-up is not one.
        nic.link = LinkWatch::start(&nic.bar, regs::ICR, regs::STATUS);
        Ok(nic)
    }

    fn start_rx(&mut self) {
        let b = &self.bar;
        // VLAN mode: 802.1Q tags (VET) stripped on receive into the descriptor's special
        // field with VP, and inserted on transmit where VLE asks (8254x SDM §3.3.7.1). Off,
        // frames pass as they are on the wire and VLE is ignored.
        b.write32(regs::VET, regs::VET_8021Q);
        let ctrl = Ctrl::from_bits_retain(b.read32(regs::CTRL));
        let ctrl = if self.vlan_strip {
            ctrl | Ctrl::VME
        } else {
            ctrl - Ctrl::VME
        };
        b.write32(regs::CTRL, ctrl.bits());
        // Checksum verdicts in the receive descriptors (IPCS/TCPCS, IPE/TCPE).
        b.write32(regs::RXCSUM, regs::RXCSUM_IPOFL | regs::RXCSUM_TUOFL);
        let iova = self.rx.ring.iova();
        b.write32(regs::RDBAL, iova as u32);
        b.write32(regs::RDBAH, (iova >> 32) as u32);
        b.write32(regs::RDLEN, self.rx.ring.bytes() as u32);
        b.write32(regs::RDH, 0);
        b.write32(regs::RDT, 0);
        // Every cause stays masked (IMS 0) until a waiter arms the receive ones; ITR then
        // spaces the interrupts of a port that sleeps between frames.
        b.write32(regs::ITR, super::ITR_INTERVAL);
        b.write32(regs::RCTL, self.rctl().bits());
        // Descriptors were written before RCTL.EN; the tail write hands them over.
        b.write32(regs::RDT, self.rx.initial_tail());
    }

    fn start_tx(&mut self) {
        let b = &self.bar;
        let iova = self.tx.ring.iova();
        b.write32(regs::TDBAL, iova as u32);
        b.write32(regs::TDBAH, (iova >> 32) as u32);
        b.write32(regs::TDLEN, self.tx.ring.bytes() as u32);
        b.write32(regs::TDH, 0);
        b.write32(regs::TDT, 0);
        b.write32(regs::TIPG, regs::TIPG_COPPER);
        let tctl = Tctl::EN | Tctl::PSP | Tctl::CT_DEFAULT | Tctl::COLD_FULL_DUPLEX;
        b.write32(regs::TCTL, tctl.bits());
    }

    pub(crate) fn rctl(&self) -> Rctl {
        let mut r = Rctl::EN | Rctl::BAM | Rctl::BSIZE_2048 | Rctl::SECRC | Rctl::MO_47_36;
        if self.promisc {
            r |= Rctl::UPE | Rctl::MPE;
        }
        if self.filter.rx.allmulti {
            r |= Rctl::MPE;
        }
        // Long packets: frames beyond 1522 bytes, over several 2 KiB descriptors.
        if self.mtu + crate::config::FRAME_OVERHEAD > super::rx::STANDARD_FRAME {
            r |= Rctl::LPE;
        }
        r
    }

    /// Stops receive and transmit DMA and resets the device; used on drop. True when the
    /// reset is confirmed (CTRL.RST cleared), so the device no longer owns any memory.
    pub(crate) fn quiesce(&mut self) -> bool {
        self.bar.write32(regs::RCTL, 0);
        self.bar.write32(regs::TCTL, 0);
        self.bar.write32(regs::IMC, u32::MAX);
        match reset(&self.bar, &self.addr, Duration::from_millis(100)) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("{e}");
                false
            }
        }
    }
}

/// Global reset with interrupts masked (8254x SDM §14.3, ixy's `reset_and_init`).
pub(crate) fn reset(bar: &impl Bar, addr: &PciAddr, timeout: Duration) -> Result<(), Error> {
    bar.write32(regs::IMC, u32::MAX);
    // Stop DMA of whoever had the device before (a killed zcnic leaves rings enabled).
    bar.write32(regs::RCTL, 0);
    bar.write32(regs::TCTL, 0);
    bar.write32(regs::CTRL, bar.read32(regs::CTRL) | Ctrl::RST.bits());
    if !wait_until(timeout, || bar.read32(regs::CTRL) & Ctrl::RST.bits() == 0) {
        return Err(Error::Timeout {
            addr: *addr,
            what: "CTRL.RST to clear after a device reset",
            ms: timeout.as_millis() as u64,
        });
    }
    // The SDM asks for 1 ms before touching the device again after RST.
    std::thread::sleep(Duration::from_millis(1));
    bar.write32(regs::IMC, u32::MAX);
    let _ = bar.read32(regs::ICR);
    let ctrl = Ctrl::from_bits_retain(bar.read32(regs::CTRL));
    let ctrl = (ctrl | Ctrl::SLU | Ctrl::ASDE)
        - (Ctrl::LRST | Ctrl::PHY_RST | Ctrl::ILOS | Ctrl::VME | Ctrl::FRCSPD | Ctrl::FRCDPLX);
    bar.write32(regs::CTRL, ctrl.bits());
    Ok(())
}

/// The MAC from receive-address entry 0 (set from the EEPROM at power-up), falling back to
/// reading EEPROM words 0..3 through EERD.
fn read_mac(bar: &impl Bar, addr: &PciAddr) -> Result<[u8; 6], Error> {
    let rah = bar.read32(regs::RAH0);
    if rah & regs::RAH_AV != 0 {
        let ral = bar.read32(regs::RAL0).to_le_bytes();
        let rah = rah.to_le_bytes();
        return Ok([ral[0], ral[1], ral[2], ral[3], rah[0], rah[1]]);
    }
    let mut mac = [0u8; 6];
    for word in 0..3u32 {
        bar.write32(
            regs::EERD,
            regs::EERD_START | (word << regs::EERD_ADDR_SHIFT),
        );
        let mut val = 0;
        let done = wait_until(Duration::from_millis(10), || {
            val = bar.read32(regs::EERD);
            val & regs::EERD_DONE != 0
        });
        if !done {
            return Err(Error::Timeout {
                addr: *addr,
                what: "an EEPROM read of the MAC address (RAH0 had no valid address)",
                ms: 10,
            });
        }
        let w = ((val >> regs::EERD_DATA_SHIFT) as u16).to_le_bytes();
        mac[2 * word as usize..2 * word as usize + 2].copy_from_slice(&w);
    }
    Ok(mac)
}

/// Decodes STATUS into a link state.
pub(crate) fn link_of(status: u32) -> crate::Link {
    let s = Status::from_bits_retain(status);
    let speed_mbps = match (s.contains(Status::SPEED1), s.contains(Status::SPEED0)) {
        (true, _) => 1000,
        (false, true) => 100,
        (false, false) => 10,
    };
    crate::Link {
        up: s.contains(Status::LU),
        speed_mbps,
        full_duplex: s.contains(Status::FD),
    }
}
