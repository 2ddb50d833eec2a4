//! The virtio-net port: its queue pairs set up, the control queue, receive filters, the
//! number of queue pairs in use and RSS ([`VirtioPort`]). The one-queue [`Nic`](crate::Nic) made of a
//! port and its queue pair 0 is [`VirtioNet`](super::VirtioNet), in `nic.rs`.

use super::ctrl::{self, cmd, Ctrl};
use super::filter::VirtioFilter;
use super::irq::Vectors;
use super::net::{check_mtu, feature, give_up, prev_power_of_two, stop};
use super::queue::QueueKind;
use super::rxtx::{pair, PairParts, VirtioRxQueue};
use super::transport::Transport;
use super::tx::VirtioTxQueue;
use crate::filter::Kind;
use crate::irq::{EventFd, RxIrq};
use crate::nic::{Link, Stats};
use crate::pci::PciAddr;
use crate::platform::PciDevice;
use crate::port::{Port, QueueCounters, QueuePair, Rss, Teardown};
use crate::{Config, Error};
use std::sync::Arc;
use zcnic_descriptors::rss::{HashTypes, Reta};
use zcnic_hugepages::{DmaAllocator, Mempool};

/// Fields of the net device configuration (virtio 1.2 §5.1.4).
mod config {
    pub const STATUS: u32 = 6;
    pub const MAX_VIRTQUEUE_PAIRS: u32 = 8;
    pub const RSS_MAX_KEY_SIZE: u32 = 17;
    pub const RSS_MAX_INDIRECTION_TABLE_LENGTH: u32 = 18;
    pub const SUPPORTED_HASH_TYPES: u32 = 20;
    /// `status`: the link is up.
    pub const S_LINK_UP: u8 = 1;
}

/// Buffers per queue beyond its receive ring that a multi-queue pool must have (as the
/// igb asks): a burst in the application's hands and the transmit rings' share.
const RX_MARGIN: usize = 64;
/// The longest redirection table zcnic programs (QEMU's limit too).
const RETA_MAX: usize = 128;

/// The control plane of one virtio-net device: its transport, control queue, filters and
/// RSS. Its queue pairs run elsewhere.
pub struct VirtioPort<Q: QueueKind> {
    pub(super) addr: PciAddr,
    transport: Box<dyn Transport>,
    pub(super) mac: [u8; 6],
    pub(super) features: u64,
    pub(super) pool: Arc<Mempool>,
    pub(super) ctrl: Option<Ctrl<Q>>,
    /// Promiscuity, all-multicast and the MAC table (`filter.rs`).
    pub(super) filter: VirtioFilter,
    rss: Rss,
    /// The redirection table's length with VIRTIO_NET_F_RSS in use, else 0.
    reta_len: usize,
    queues: u16,
    pub(super) mtu: usize,
    /// The link state [`Port::link_event`] last reported.
    link_seen: Link,
    rx_counters: Vec<Arc<QueueCounters>>,
    tx_counters: Vec<Arc<QueueCounters>>,
    teardown: Arc<Teardown>,
    /// The configuration-change vector (MSI-X entry 0): readable after a link change.
    config_irq: Option<EventFd>,
    /// MSI-X is on at the platform: turned off at close, after the reset.
    msix: bool,
    /// INTx is routed at the platform (`legacy.rs`): let go of at close, after the reset.
    intx: bool,
    /// Keeps the device open; declared last so it closes after the rest.
    device: Option<Arc<dyn PciDevice>>,
}

/// A virtio-net port's queue pairs, pair `k` at index `k`.
pub type VirtioQueues<Q> = Vec<(VirtioRxQueue<Q>, VirtioTxQueue<Q>)>;

impl<Q: QueueKind> std::fmt::Debug for VirtioPort<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioPort")
            .field("addr", &self.addr)
            .field("features", &format_args!("{:#x}", self.features))
            .field("queues", &self.rx_counters.len())
            .finish_non_exhaustive()
    }
}

impl<Q: QueueKind> VirtioPort<Q> {
    /// Brings the port up on a negotiated transport with `cfg.queues` queue pairs: queues,
    /// control queue, pool, DRIVER_OK, then receive filter, queue pairs and RSS over the
    /// control queue, and the receive rings filled.
    pub fn new(
        mut transport: Box<dyn Transport>,
        features: u64,
        dma: &dyn DmaAllocator,
        addr: PciAddr,
        cfg: &Config,
    ) -> Result<(Self, VirtioQueues<Q>), Error> {
        let n = cfg.queues.max(1);
        let has = |f: u64| features & f == f;
        // max_virtqueue_pairs exists with either feature, and with either the control
        // queue follows the device's last pair (virtio 1.2 §5.1.4, §5.1.2).
        let mq = has(feature::CTRL_VQ) && (has(feature::MQ) || has(feature::RSS));
        let max_pairs = if mq {
            transport.config16(config::MAX_VIRTQUEUE_PAIRS)
        } else {
            1
        };
        // The control queue's index, 2 × max_virtqueue_pairs, must be a queue index
        // (virtio 1.2 §5.1.4 allows up to 0x8000 pairs; a u16 index takes 0x7fff).
        if max_pairs > 0x7fff {
            stop(transport.as_ref());
            return Err(Error::Io(format!(
                "{addr}: the virtio device says it has {max_pairs} queue pairs; zcnic drives at most 32767"
            )));
        }
        if n > max_pairs {
            stop(transport.as_ref());
            let why = if mq {
                format!("the device has {max_pairs}")
            } else {
                "the device offers no multiqueue (VIRTIO_NET_F_MQ with a control queue): on QEMU give virtio-net-pci `mq=on` and its netdev `tap,queues=N`".into()
            };
            return Err(Error::Io(format!("{addr}: {n} queue pairs asked; {why}")));
        }
        let mtu = check_mtu(transport.as_ref(), features, addr, cfg).inspect_err(|_| {
            stop(transport.as_ref());
        })?;
        let legacy = transport.legacy();
        let event_idx = has(feature::EVENT_IDX);
        let dma_err = |source| Error::Dma { addr, source };
        // Queue pair k is receiveq k+1 (index 2k) and transmitq k+1 (2k + 1); the control
        // queue follows the last pair the device has (virtio 1.1 §5.1.2).
        let ctrl_at = has(feature::CTRL_VQ).then_some(if mq { 2 * max_pairs } else { 2 });
        let mut wanted: Vec<(u16, u32)> = (0..n)
            .flat_map(|k| [(2 * k, cfg.rx_ring), (2 * k + 1, cfg.tx_ring)])
            .collect();
        wanted.extend(ctrl_at.map(|q| (q, 64)));
        let mut made: Vec<Q> = Vec::with_capacity(wanted.len());
        let mut vectors = Vectors::take(transport.as_mut());
        let mut rx_irqs: Vec<Option<RxIrq>> = Vec::with_capacity(n.into());
        for &(q, want) in &wanted {
            // Once the device has a queue's addresses, an error path resets it before the
            // queue's memory is freed (and leaks the memory if the reset is not confirmed).
            let max = transport.queue_max(q);
            let size = if legacy {
                max
            } else {
                prev_power_of_two(max.min(want.min(32768) as u16))
            };
            let queue = match (max, Q::create(dma, size, legacy, event_idx)) {
                (0, _) => Err(Error::Io(format!("{addr}: the device has no queue {q}"))),
                (_, Err(e)) => Err(dma_err(e)),
                (_, Ok((queue, areas))) => {
                    let irq = vectors.route_queue(transport.as_ref(), q, n);
                    if q.is_multiple_of(2) && q / 2 < n {
                        rx_irqs.push(irq.map(RxIrq::plain));
                    }
                    let r = transport.queue_setup(q, size, areas.desc, areas.driver, areas.device);
                    made.push(queue);
                    r.map_err(|e| Error::Io(format!("{addr}: {e}")))
                }
            };
            if let Err(e) = queue {
                give_up(transport.as_ref(), addr, made);
                return Err(e);
            }
        }
        let rings: usize = made
            .iter()
            .step_by(2)
            .take(n.into())
            .map(|q| usize::from(q.size()))
            .sum();
        let pool = match Mempool::new(dma, cfg.pool) {
            Ok(_) if n > 1 && cfg.pool < rings + usize::from(n) * RX_MARGIN => {
                give_up(transport.as_ref(), addr, made);
                return Err(Error::Io(format!(
                    "{addr}: a pool of {} buffers cannot feed {n} receive rings of {} buffers in all (at least {} needed): raise Config::pool or lower rx_ring",
                    cfg.pool,
                    rings,
                    rings + usize::from(n) * RX_MARGIN
                )));
            }
            Ok(pool) => pool,
            Err(e) => {
                give_up(transport.as_ref(), addr, made);
                return Err(dma_err(e));
            }
        };
        let mac = if has(feature::MAC) {
            std::array::from_fn(|i| transport.config8(i as u32))
        } else {
            log::warn!("{addr}: the device has no MAC address; using 02:00:00:00:00:01");
            [2, 0, 0, 0, 0, 1]
        };
        // num_buffers makes the legacy header 12 bytes (virtio 1.1 §5.1.6.1).
        let hdr_len = match (legacy, has(feature::HASH_REPORT)) {
            (true, _) if has(feature::MRG_RXBUF) => 12,
            (true, _) => 10,
            (false, false) => 12,
            (false, true) => 20,
        };
        let kicks: Vec<_> = wanted.iter().map(|&(q, _)| transport.notifier(q)).collect();
        let config_irq = vectors.route_config(transport.as_ref());
        let msix = vectors.any();
        // Without MSI-X a one-pair port sleeps on INTx; a multi-queue one polls (`legacy.rs`).
        let mut isr = None;
        let intx = match (msix, n) {
            (false, 1) => transport.take_intx().map(|line| {
                let (irq, read) = line.split();
                isr = Some(read);
                rx_irqs[0] = Some(irq);
            }),
            (false, _) => {
                log::debug!("{addr}: no MSI-X; INTx serves one queue pair only, the {n} poll");
                None
            }
            (true, _) => None,
        }
        .is_some();
        let s = super::status::ACKNOWLEDGE | super::status::DRIVER | super::status::DRIVER_OK;
        let s = if legacy {
            s
        } else {
            s | super::status::FEATURES_OK
        };
        transport.set_status(s);
        let mut kicks = kicks.into_iter();
        let mut made = made.into_iter();
        let mut parts = Vec::with_capacity(n.into());
        let mut rx_irqs = rx_irqs.into_iter();
        for queue in 0..n {
            let (Some(rx), Some(rx_kick), Some(tx), Some(tx_kick)) =
                (made.next(), kicks.next(), made.next(), kicks.next())
            else {
                unreachable!("two queues made per pair");
            };
            parts.push((queue, rx, rx_kick, tx, tx_kick, rx_irqs.next().flatten()));
        }
        let teardown = Arc::new(Teardown::default());
        let ctrl = match (made.next(), kicks.next()) {
            (Some(vq), Some(kick)) => Some(Ctrl::new(vq, kick, Arc::clone(&pool), addr)),
            _ => None,
        };
        let reta_len = if has(feature::RSS) && n > 1 {
            let max = usize::from(transport.config16(config::RSS_MAX_INDIRECTION_TABLE_LENGTH));
            prev_power_of_two(max.min(RETA_MAX) as u16).into()
        } else {
            0
        };
        let mut port = Self {
            addr,
            transport,
            mac,
            features,
            pool: Arc::clone(&pool),
            ctrl,
            filter: VirtioFilter::new(cfg.promisc, has(feature::CTRL_RX)),
            rss: cfg.rss.clone(),
            reta_len,
            queues: n,
            mtu,
            link_seen: Link::DOWN,
            rx_counters: Vec::new(),
            tx_counters: Vec::new(),
            teardown: Arc::clone(&teardown),
            config_irq,
            msix,
            intx,
            device: None,
        };
        // The queue handles exist before the first command: from here on an error drops
        // them first (each parks its ring and buffers with the teardown), then the port,
        // which stops the device and only then frees that memory, or leaks it.
        let queues: VirtioQueues<Q> = parts
            .into_iter()
            .map(|(queue, rx, rx_kick, tx, tx_kick, irq)| {
                pair(PairParts {
                    queue,
                    addr,
                    rx,
                    rx_kick,
                    tx,
                    tx_kick,
                    hdr_len,
                    hdr_apart: super::header_apart(features),
                    hash_report: has(feature::HASH_REPORT),
                    merge: has(feature::MRG_RXBUF),
                    max_frame: cfg.max_frame(),
                    offloads: super::offload::offloads(features),
                    pool: Arc::clone(&pool),
                    teardown: Arc::clone(&teardown),
                    irq,
                    isr: isr.take(),
                })
            })
            .collect();
        port.rx_counters = queues.iter().map(|p| Arc::clone(&p.0.counters)).collect();
        port.tx_counters = queues.iter().map(|p| Arc::clone(&p.1.counters)).collect();
        port.link_seen = port.link().normalized();
        port.apply_promisc()?;
        if n > 1 {
            if reta_len > 0 {
                let reta = match cfg.rss.reta.clone() {
                    Some(r) => r,
                    None => Reta::spread(n, reta_len).map_err(|e| port.bad(e))?,
                };
                port.program_rss(&reta)?;
            } else {
                port.command(cmd::MQ, cmd::MQ_VQ_PAIRS_SET, &n.to_le_bytes())?;
            }
        }
        Ok((port, queues))
    }

    /// Links this port to the device handle that keeps it open.
    pub(crate) fn attach(&mut self, dev: Arc<dyn PciDevice>) {
        self.device = Some(dev);
    }

    /// The configuration-change interrupt (MSI-X entry 0, `msix_config`): readable once
    /// the device changed its configuration, a link going up or down; drain it with
    /// [`EventFd::drain`] and read [`Port::link_event`]. `None` without MSI-X (on INTx
    /// too: see `legacy.rs`).
    pub fn link_interrupt(&self) -> Option<&EventFd> {
        self.config_irq.as_ref()
    }

    /// The driver's name for this port.
    pub(crate) fn name(&self) -> &'static str {
        match (self.transport.legacy(), Q::PACKED) {
            (true, _) if super::header_apart(self.features) => "virtio-net legacy, header apart",
            (true, _) => "virtio-net legacy",
            (false, true) => "virtio-net packed",
            (false, false) => "virtio-net split",
        }
    }

    fn bad(&self, what: impl std::fmt::Display) -> Error {
        Error::Io(format!("{}: virtio-net RSS: {what}", self.addr))
    }

    fn command(&mut self, class: u8, command: u8, data: &[u8]) -> Result<(), Error> {
        ctrl::send(self.ctrl.as_mut(), self.addr, class, command, &[data])
    }

    /// Sends the whole RSS configuration (`virtio_net_rss_config`, virtio 1.2
    /// §5.1.6.5.7.1) with `reta`: the hash types, the table, the queue for frames of no
    /// hashed type (queue 0), the transmit queues in use (all), and the key.
    fn program_rss(&mut self, reta: &Reta) -> Result<(), Error> {
        let queues = usize::from(self.queues);
        if reta.len() != self.reta_len {
            return Err(self.bad(format!(
                "a redirection table of {} entries (this device takes {})",
                reta.len(),
                self.reta_len
            )));
        }
        if reta.queues() > queues {
            return Err(self.bad(format!(
                "a redirection table naming queue {} on a port of {queues} queues",
                reta.queues() - 1
            )));
        }
        let supported = self.transport.config32(config::SUPPORTED_HASH_TYPES);
        let types = self.rss.types.bits() & supported;
        let key_max = usize::from(self.transport.config8(config::RSS_MAX_KEY_SIZE));
        if key_max < self.rss.key.len() {
            return Err(self.bad(format!(
                "a key of {} bytes (the device takes up to {key_max})",
                self.rss.key.len()
            )));
        }
        let mut data = Vec::with_capacity(4 + 2 + 2 + 2 * reta.len() + 2 + 1 + 40);
        data.extend_from_slice(&types.to_le_bytes());
        data.extend_from_slice(&((reta.len() - 1) as u16).to_le_bytes());
        data.extend_from_slice(&0u16.to_le_bytes());
        for &q in reta.entries() {
            data.extend_from_slice(&q.to_le_bytes());
        }
        data.extend_from_slice(&(queues as u16).to_le_bytes());
        data.push(self.rss.key.len() as u8);
        data.extend_from_slice(&self.rss.key);
        self.command(cmd::MQ, cmd::MQ_RSS_CONFIG, &data)?;
        self.rss.reta = Some(reta.clone());
        // What the device hashes: the types asked for that it supports.
        self.rss.types = HashTypes::from_bits_truncate(types);
        Ok(())
    }
}

impl<Q: QueueKind> VirtioPort<Q> {
    /// [`VirtioPort::new`], the queues boxed for [`crate::open_port`].
    pub(crate) fn boxed(
        (port, queues): (Self, VirtioQueues<Q>),
    ) -> (Box<dyn Port>, Vec<QueuePair>) {
        let pairs = queues
            .into_iter()
            .map(|(rx, tx)| QueuePair {
                rx: Box::new(rx),
                tx: Box::new(tx),
            })
            .collect();
        (Box::new(port), pairs)
    }
}

impl<Q: QueueKind> Port for VirtioPort<Q> {
    fn addr(&self) -> PciAddr {
        self.addr
    }

    fn driver(&self) -> &'static str {
        self.name()
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn link(&self) -> Link {
        let up = self.features & feature::STATUS == 0
            || self.transport.config8(config::STATUS) & config::S_LINK_UP != 0;
        Link {
            up,
            speed_mbps: 0,
            full_duplex: true,
        }
    }

    /// The config `status` byte against the state last reported. Not the ISR's config bit
    /// (or config_generation): reading either costs the same one access, and the ISR is
    /// read-to-clear, its queue bit an interrupt mode's. Without VIRTIO_NET_F_STATUS the
    /// link is always up and nothing is read.
    fn link_event(&mut self) -> Option<Link> {
        let now = self.link().normalized();
        let changed = now != std::mem::replace(&mut self.link_seen, now);
        changed.then_some(now)
    }

    fn queues(&self) -> u16 {
        self.queues
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    /// The transport checksums both ways where the device offered them (QEMU does with a
    /// tap backend); no IPv4 header checksum or VLAN insertion: virtio-net has neither.
    fn offloads(&self) -> crate::Offloads {
        crate::Offloads {
            rx_rss_hash: self.features & feature::HASH_REPORT != 0,
            ..super::offload::offloads(self.features)
        }
    }

    fn rss(&self) -> Result<Rss, Error> {
        Ok(self.rss.clone())
    }

    fn set_reta(&mut self, reta: &Reta) -> Result<(), Error> {
        if self.reta_len == 0 {
            return Err(self.bad(
                "no redirection table: the device lacks VIRTIO_NET_F_RSS (QEMU: `rss=on`), or the port has one queue",
            ));
        }
        self.program_rss(reta)
    }

    fn stats(&mut self) -> Stats {
        self.queue_stats()
            .iter()
            .fold(Stats::default(), |mut t, s| {
                t.rx_packets += s.rx_packets;
                t.rx_bytes += s.rx_bytes;
                t.rx_errors += s.rx_errors;
                t.rx_no_buf += s.rx_no_buf;
                t.tx_packets += s.tx_packets;
                t.tx_bytes += s.tx_bytes;
                t.tx_errors += s.tx_errors;
                t
            })
    }

    fn queue_stats(&self) -> Vec<Stats> {
        crate::port::queue_stats(&self.rx_counters, &self.tx_counters)
    }

    fn set_promisc(&mut self, on: bool) {
        // On an error the device keeps the mode it had, and so does the port.
        if let Err(e) = self.promisc_to(on) {
            log::warn!("{e}");
        }
    }

    /// VIRTIO_NET_CTRL_RX_ALLMULTI; without VIRTIO_NET_F_CTRL_RX the device receives every
    /// frame already, and this succeeds with nothing sent.
    fn set_allmulti(&mut self, on: bool) -> Result<(), Error> {
        self.allmulti_to(on)
    }

    /// The MAC table's multicast half (VIRTIO_NET_CTRL_MAC_TABLE_SET), sent whole.
    fn add_multicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        self.filter_change(Kind::Multicast, mac, true)
    }

    fn remove_multicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        self.filter_change(Kind::Multicast, mac, false)
    }

    /// The MAC table's unicast half.
    fn add_unicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        self.filter_change(Kind::Unicast, mac, true)
    }

    fn remove_unicast(&mut self, mac: [u8; 6]) -> Result<(), Error> {
        self.filter_change(Kind::Unicast, mac, false)
    }
}

impl<Q: QueueKind> Drop for VirtioPort<Q> {
    /// Resets the device (which stops its DMA) and turns bus mastering off, then frees what
    /// dropped queues left; queues still held elsewhere free theirs when dropped. When
    /// neither can be confirmed the device may still reach that memory: it is leaked on
    /// purpose, never freed under it.
    fn drop(&mut self) {
        let teardown = Arc::clone(&self.teardown);
        let stopped = teardown.stop(|| {
            let reset = stop(self.transport.as_ref());
            let master_off = self
                .device
                .as_deref()
                .is_some_and(crate::platform::stop_bus_master);
            // The vectors off while the rings still exist: nothing signals a queue whose
            // memory is gone, and the kernel logs no interrupt nobody handles.
            if let (true, Some(dev)) = (self.msix, self.device.as_deref()) {
                dev.irq_release(crate::irq::MSIX);
            }
            if let (true, Some(dev)) = (self.intx, self.device.as_deref()) {
                dev.irq_release(crate::irq::INTX);
            }
            reset || master_off
        });
        if !stopped {
            log::error!(
                "{}: the device did not stop; leaking its queues and buffers so it cannot write freed memory",
                self.addr
            );
            self.pool.leak();
            if let Some(c) = self.ctrl.take() {
                c.leak();
            }
        }
        // Queue handles still held elsewhere must not kick this device once it is closed.
        self.transport.revoke_notifiers();
    }
}
