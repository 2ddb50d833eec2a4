//! [`VirtioNet`]: a virtio-net port behind the one-queue [`Nic`] trait, made of a
//! [`VirtioPort`] and its queue pair 0.

use super::port::VirtioPort;
use super::queue::QueueKind;
use super::rxtx::VirtioRxQueue;
use super::transport::Transport;
use super::tx::VirtioTxQueue;
use crate::nic::{Link, Nic, Stats};
use crate::pci::PciAddr;
use crate::platform::PciDevice;
use crate::port::{Port, RxQueue, TxQueue};
use crate::{Config, Error};
use std::sync::Arc;
use zcnic_hugepages::{DmaAllocator, Mempool, Packet};

/// A virtio-net port behind the one-queue [`Nic`] trait: the port and its queue pair 0.
pub struct VirtioNet<Q: QueueKind> {
    // Dropped in this order: the queues hand their memory to the port (the transmit side
    // drains first), which stops the device and then frees it.
    rx: VirtioRxQueue<Q>,
    tx: VirtioTxQueue<Q>,
    port: VirtioPort<Q>,
}

impl<Q: QueueKind> std::fmt::Debug for VirtioNet<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioNet")
            .field("addr", &self.port.addr)
            .field("features", &format_args!("{:#x}", self.port.features))
            .finish_non_exhaustive()
    }
}

impl<Q: QueueKind> VirtioNet<Q> {
    /// Brings the port up on a negotiated transport with one queue pair.
    pub fn new(
        transport: Box<dyn Transport>,
        features: u64,
        dma: &dyn DmaAllocator,
        addr: PciAddr,
        cfg: &Config,
    ) -> Result<Self, Error> {
        let one = Config {
            queues: 1,
            ..cfg.clone()
        };
        let (port, mut queues) = VirtioPort::new(transport, features, dma, addr, &one)?;
        let (rx, tx) = queues
            .pop()
            .ok_or_else(|| Error::Io(format!("{addr}: virtio-net came up without a queue")))?;
        Ok(Self { rx, tx, port })
    }

    /// Links this port to the device handle that keeps it open.
    pub(crate) fn attach(&mut self, dev: Arc<dyn PciDevice>) {
        self.port.attach(dev);
    }

    /// Gives queue 0 its interrupt on `event`, which the device side signals: for a port
    /// not opened through a platform (a test's fake). One with an MSI-X vector keeps it.
    pub fn attach_interrupt(&mut self, event: crate::irq::EventFd) {
        self.rx.attach_interrupt(event);
    }

    /// The configuration-change interrupt (see [`VirtioPort::link_interrupt`]).
    pub fn link_interrupt(&self) -> Option<&crate::irq::EventFd> {
        self.port.link_interrupt()
    }

    /// The port's features as negotiated.
    pub fn features(&self) -> u64 {
        self.port.features
    }

    /// Whether each frame's header has a descriptor of its own (a legacy device without
    /// VIRTIO_F_ANY_LAYOUT; see [`super::header_apart`]).
    pub fn header_apart(&self) -> bool {
        super::header_apart(self.port.features)
    }
}

impl<Q: QueueKind> Nic for VirtioNet<Q> {
    fn addr(&self) -> PciAddr {
        self.port.addr
    }

    fn driver(&self) -> &'static str {
        self.port.name()
    }

    fn pool(&self) -> &Arc<Mempool> {
        &self.port.pool
    }

    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> usize {
        self.rx.rx_batch(out, max)
    }

    fn rx_batch_recycle(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        spare: &mut Vec<Packet>,
    ) -> usize {
        self.rx.rx_batch_recycle(out, max, spare)
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>) -> usize {
        self.tx.tx_batch(pkts)
    }

    fn tx_batch_recycle(&mut self, pkts: &mut Vec<Packet>, done: &mut Vec<Packet>) -> usize {
        self.tx.tx_batch_recycle(pkts, done)
    }

    fn repost(&mut self, frame: &[u8], burst: usize) -> Option<usize> {
        self.tx.repost(frame, burst)
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

    /// Queue 0's MSI-X vector (`irq.rs`), or the eventfd given to
    /// [`attach_interrupt`](VirtioNet::attach_interrupt).
    fn rx_interrupt_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, Error> {
        self.rx.rx_interrupt_fd()
    }

    /// Used buffer notifications on, then the ring again (`irq.rs`).
    fn enable_rx_interrupt(&mut self) -> Result<bool, Error> {
        self.rx.enable_rx_interrupt()
    }

    fn disable_rx_interrupt(&mut self) -> Result<(), Error> {
        self.rx.disable_rx_interrupt()
    }

    fn mtu(&self) -> usize {
        self.port.mtu
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
