//! virtio-net over VFIO or uio: modern (virtio 1.0+, `1af4:1041`) and legacy/transitional
//! (`1af4:1000`) devices, split or packed rings.
//!
//! - `transport.rs`: the PCI transport trait and the modern one (capabilities and MMIO)
//! - `legacy.rs`: the legacy transport (the I/O BAR), and INTx with its ISR status
//! - `queue.rs`: the rings from `zcnic_descriptors::virtio` placed in DMA memory
//! - `net.rs`: feature negotiation
//! - `ctrl.rs`: the control queue (receive filters, queue pairs, RSS)
//! - `filter.rs`: promiscuity, all-multicast and the MAC table, sent on the control queue
//! - `port.rs`: the port and its queue pairs set up
//! - `nic.rs`: the one-queue `VirtioNet`, a port and its queue pair 0
//! - `rxtx.rs`: a queue pair's two handles made; the receive queue
//! - `tx.rs`: the transmit queue
//! - `irq.rs`: MSI-X vectors per receive queue and the arm / re-check / sleep of one
//! - `mergeable.rs`: receive of frames over several buffers (VIRTIO_NET_F_MRG_RXBUF)
//! - `txchain.rs`: transmit of frames in several parts (chains, attached payloads)
//! - `offload.rs`: the transport checksums, both ways, in the header

mod ctrl;
mod filter;
mod irq;
mod legacy;
mod mergeable;
mod net;
mod nic;
mod offload;
mod port;
mod queue;
mod rxtx;
mod transport;
mod tx;
mod txchain;

pub use legacy::{Intx, Legacy};
pub use net::{feature, header_apart, negotiate, wanted_features};
pub use nic::VirtioNet;
pub use port::{VirtioPort, VirtioQueues};
pub use queue::{Areas, DmaMem, QueueKind};
pub use rxtx::VirtioRxQueue;
pub use transport::{status, Modern, Notifier, Transport};
pub use tx::VirtioTxQueue;

use crate::nic::Nic;
use crate::pci::PciAddr;
use crate::platform::{self, IovaMode, PciDevice};
use crate::port::{Port, QueuePair};
use crate::{Config, Error, RingChoice};
use std::sync::Arc;
use zcnic_descriptors::virtio::{PackedQueue, SplitQueue};
use zcnic_hugepages::DmaAllocator;

/// Opens the virtio-net device at `addr` through the platform it is bound to (vfio-pci
/// or uio_pci_generic; see `platform::open_device`).
pub fn open(addr: &PciAddr, cfg: &Config) -> Result<Box<dyn Nic>, Error> {
    with_device(crate::platform::open_device(addr)?.into(), cfg)
}

/// Opens the virtio-net device at `addr` as a port of `cfg.queues` queue pairs, each pair
/// a receive and a transmit handle for its own thread (see [`crate::open_port`]).
pub fn open_port(addr: &PciAddr, cfg: &Config) -> Result<(Box<dyn Port>, Vec<QueuePair>), Error> {
    let dev: Arc<dyn PciDevice> = crate::platform::open_device(addr)?.into();
    let (transport, features, dma, packed) = bring_up(&dev, cfg)?;
    let addr = *addr;
    if packed {
        let mut p =
            VirtioPort::<PackedQueue<DmaMem>>::new(transport, features, dma.as_ref(), addr, cfg)?;
        p.0.attach(dev);
        Ok(VirtioPort::boxed(p))
    } else {
        let mut p =
            VirtioPort::<SplitQueue<DmaMem>>::new(transport, features, dma.as_ref(), addr, cfg)?;
        p.0.attach(dev);
        Ok(VirtioPort::boxed(p))
    }
}

/// Brings up virtio-net on an opened PCI function.
///
/// The transport is the modern one when the device has virtio capabilities (a transitional
/// device has both), the legacy one otherwise. The IOVA mode follows what was negotiated:
/// with ACCESS_PLATFORM the device goes through the IOMMU; without it (every legacy device)
/// it reads physical addresses, so its memory is mapped at IOVA = PA. Without an IOMMU
/// (uio) every device reads physical addresses.
pub fn with_device(dev: Arc<dyn PciDevice>, cfg: &Config) -> Result<Box<dyn Nic>, Error> {
    let one = Config {
        queues: 1,
        ..cfg.clone()
    };
    let (transport, features, dma, packed) = bring_up(&dev, &one)?;
    let addr = dev.addr();
    if packed {
        let mut nic =
            VirtioNet::<PackedQueue<DmaMem>>::new(transport, features, dma.as_ref(), addr, &one)?;
        nic.attach(dev);
        Ok(Box::new(nic))
    } else {
        let mut nic =
            VirtioNet::<SplitQueue<DmaMem>>::new(transport, features, dma.as_ref(), addr, &one)?;
        nic.attach(dev);
        Ok(Box::new(nic))
    }
}

/// A negotiated transport for `dev` (see [`with_device`]): the transport, the features
/// accepted, the DMA allocator for the IOVA mode they imply, and whether the rings are
/// packed.
#[allow(clippy::type_complexity)]
fn bring_up(
    dev: &Arc<dyn PciDevice>,
    cfg: &Config,
) -> Result<(Box<dyn Transport>, u64, Box<dyn DmaAllocator>, bool), Error> {
    let addr = dev.addr();
    if !dev.reset() {
        log::debug!("{addr}: no function reset from the platform; the virtio reset will do");
    }
    // Reset before bus mastering goes on: a device its last user left running (an unclean
    // exit) would otherwise resume DMA into memory that is no longer that user's.
    dev.set_bus_master(false)?;
    let transport: Box<dyn Transport> = match Modern::open(dev) {
        Ok(m) => Box::new(m.with_vectors(msix(dev.as_ref(), cfg))),
        Err(e) => {
            log::debug!("{addr}: {e}; using the legacy interface");
            Box::new(Legacy::new(dev.clone()))
        }
    };
    transport.set_status(0);
    if !crate::wait_until(cfg.reset_timeout, || transport.status() == 0) {
        return Err(Error::Timeout {
            addr,
            what: "the virtio device to reset (status to read 0) before enabling its DMA",
            ms: cfg.reset_timeout.as_millis() as u64,
        });
    }
    dev.set_bus_master(true)?;
    let packed_ok = cfg.ring != RingChoice::Split;
    let features = negotiate(transport.as_ref(), &addr, cfg, packed_ok)?;
    let packed = features & feature::RING_PACKED != 0;
    if cfg.ring == RingChoice::Packed && !packed {
        transport.set_status(status::FAILED);
        return Err(Error::Io(format!(
            "{addr}: the device does not offer VIRTIO_F_RING_PACKED (bit 34): use `--ring split`, or `packed=on` on QEMU's virtio-net-pci"
        )));
    }
    let mode = if features & feature::ACCESS_PLATFORM != 0 {
        platform::iova_mode(dev.as_ref(), IovaMode::Virtual)
    } else {
        IovaMode::Physical
    };
    let dma = dev.dma_allocator(mode)?;
    Ok((transport, features, dma, packed))
}

/// MSI-X vectors for the port: entry 0 for configuration changes, entry `1 + k` for
/// receive queue `k` (transmit and control queues have none). None when the platform
/// routes no MSI-X (uio, or a device without the capability): the port polls only.
fn msix(dev: &dyn PciDevice, cfg: &Config) -> Vec<crate::irq::EventFd> {
    match dev.vectors(crate::irq::MSIX, 1 + usize::from(cfg.queues.max(1))) {
        Ok(v) => v,
        Err(e) => {
            log::debug!("{e}");
            Vec::new()
        }
    }
}
