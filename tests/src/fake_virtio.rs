//! A modern virtio-net device (virtio 1.1 §4.1 PCI transport, §5.1 network device), or a
//! legacy one that may withhold VIRTIO_F_ANY_LAYOUT (`fake_virtio/layout.rs`), played
//! well enough for the driver: feature negotiation, a receive and a transmit queue in split
//! or packed format, transmit (every frame the device sees is recorded), receive of frames
//! the test injects, both notification-suppression styles, and the used entries a broken
//! device might write. Like `fake_e1000` it reaches rings and buffers only through
//! [`FakeDma`], so a bad address from the driver shows up as a fault count, not a crash.
//!
//! Registers are not polled. [`FakeBar`] is plain memory, and the driver reads a
//! select-dependent register (`device_feature` after `device_feature_select`, `queue_size`
//! after `queue_select`) in its very next access, so a thread polling the BAR cannot update
//! it in between without a race. [`VirtioBar`] is a [`Bar`] over a `FakeBar` that applies
//! each register's side effect inside the driver's write, as the device's register decoder
//! would: a reset quiesces the datapath before the write returns, and every notification is
//! counted (none missed, none merged). Only the datapath runs on the device thread.

mod csum;
mod irq;
mod layout;
mod mergeable;

pub use csum::{DATA_VALID, NEEDS_CSUM};
pub use irq::{ISR_CFG, NO_VECTOR};
pub use layout::{LegacyView, LEGACY_HDR_LEN};

use crate::fake_filter::{self, VirtioRxFilter};
use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use zcnic::virtio::{feature, status, Modern, Transport};
use zcnic::{Bar, FakeBar, FakeDma};
use zcnic_descriptors::virtio::{
    RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, RING_EVENT_WRAP,
    VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE,
    VIRTQ_USED_F_NO_NOTIFY,
};

/// MAC the fake device reports.
pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xfa, 0xce, 0x02];
/// `virtio_net_hdr` with VERSION_1 (virtio 1.1 §5.1.6): every frame carries one in front.
pub const HDR_LEN: usize = 12;
/// Size of the BAR holding every window, as QEMU lays them out.
pub const BAR_LEN: usize = 0x4000;
/// Device configuration window (virtio 1.1 §4.1.4.6).
pub const DEVICE_CFG: u32 = 0x2000;
/// Notification window (virtio 1.1 §4.1.4.4); queue `q` has `queue_notify_off = q`.
pub const NOTIFY: u32 = 0x3000;
/// `notify_off_multiplier`.
pub const NOTIFY_MULT: u32 = 4;
/// Receive queue index (virtio 1.1 §5.1.2).
pub const RX: usize = 0;
/// Transmit queue index.
pub const TX: usize = 1;
/// Queues the fake can have: four pairs and the control queue.
const MAX_QUEUES: usize = 9;
/// The most queue pairs the fake offers.
pub const MAX_PAIRS: u16 = 4;
/// `virtio_net_hdr_v1_hash` (virtio 1.2 §5.1.6): the header with VIRTIO_NET_F_HASH_REPORT.
pub const HASH_HDR_LEN: usize = 20;
/// Every hash type of virtio 1.2 §5.1.6.4.3.1, as QEMU offers them.
pub const HASH_TYPES: u32 = 0x1ff;

/// Common configuration (virtio 1.1 §4.1.4.3), at offset 0 of the BAR.
pub mod common {
    /// device_feature_select, le32.
    pub const DEVICE_FEATURE_SELECT: u32 = 0x00;
    /// device_feature, le32, read-only: the half chosen by the select.
    pub const DEVICE_FEATURE: u32 = 0x04;
    /// driver_feature_select, le32.
    pub const DRIVER_FEATURE_SELECT: u32 = 0x08;
    /// driver_feature, le32.
    pub const DRIVER_FEATURE: u32 = 0x0C;
    /// config_msix_vector, le16.
    pub const MSIX_CONFIG: u32 = 0x10;
    /// num_queues, le16, read-only.
    pub const NUM_QUEUES: u32 = 0x12;
    /// device_status, u8 (0 resets the device).
    pub const DEVICE_STATUS: u32 = 0x14;
    /// config_generation, u8, read-only.
    pub const CONFIG_GENERATION: u32 = 0x15;
    /// queue_select, le16.
    pub const QUEUE_SELECT: u32 = 0x16;
    /// queue_size, le16: the maximum until the driver writes a smaller size.
    pub const QUEUE_SIZE: u32 = 0x18;
    /// queue_msix_vector, le16.
    pub const QUEUE_MSIX_VECTOR: u32 = 0x1A;
    /// queue_enable, le16.
    pub const QUEUE_ENABLE: u32 = 0x1C;
    /// queue_notify_off, le16, read-only.
    pub const QUEUE_NOTIFY_OFF: u32 = 0x1E;
    /// queue_desc, le64 (Descriptor Area).
    pub const QUEUE_DESC: u32 = 0x20;
    /// queue_driver, le64 (Driver Area).
    pub const QUEUE_DRIVER: u32 = 0x28;
    /// queue_device, le64 (Device Area).
    pub const QUEUE_DEVICE: u32 = 0x30;
    /// Bytes in the structure.
    pub const LEN: u32 = 0x38;
}
use common as c;

/// virtio-net configuration `status` (le16 at byte 6) bit VIRTIO_NET_S_LINK_UP (§5.1.4).
const NET_S_LINK_UP: u16 = 1;
const CFG_STATUS: u32 = 6;
/// A transmit descriptor longer than this is a driver bug; the device reads no more of it.
const MAX_TX_DESC: usize = 1 << 16;

/// Which notifications the device asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    /// Every one: `used.flags` 0 / packed ENABLE; with EVENT_IDX, split `avail_event` and the
    /// packed DESC event follow what the device consumed ("kick me once you add past that").
    Wanted,
    /// None, the device polls: split VIRTQ_USED_F_NO_NOTIFY (with EVENT_IDX, an
    /// `avail_event` already passed), packed RING_EVENT_FLAGS_DISABLE.
    Suppressed,
}

/// Options for the fake.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Maximum size of each queue.
    pub queue_max: u16,
    /// Offer VIRTIO_F_EVENT_IDX (bit 29).
    pub event_idx: bool,
    /// Offer VIRTIO_F_RING_PACKED (bit 34).
    pub packed: bool,
    /// Report VIRTIO_NET_S_LINK_UP.
    pub link_up: bool,
    /// Notification policy on both queues.
    pub notify: Notify,
    /// Offer a control queue with receive filters (VIRTIO_NET_F_CTRL_VQ, CTRL_RX).
    pub ctrl: bool,
    /// Queue pairs (1 to [`MAX_PAIRS`]); more than one offers VIRTIO_NET_F_MQ (with
    /// `ctrl`).
    pub pairs: u16,
    /// Offer RSS and the hash report (VIRTIO_NET_F_RSS, HASH_REPORT).
    pub rss: bool,
    /// Clear FEATURES_OK whatever the driver accepts.
    pub refuse_features: bool,
    /// A legacy device: no VERSION_1 (nor ACCESS_PLATFORM) offered, DRIVER_OK without
    /// FEATURES_OK, the 10-byte header; the driver reaches it through
    /// [`FakeVirtio::any_transport`] (a [`LegacyView`]).
    pub legacy: bool,
    /// Offer VIRTIO_F_ANY_LAYOUT (bit 27). A legacy device that did not negotiate it
    /// counts every chain whose header shares a descriptor with frame bytes as
    /// `misframed` (`layout.rs`).
    pub any_layout: bool,
    /// Act on a queue only once the driver has notified it, as a device that sleeps until
    /// kicked does, instead of polling the rings. Woken, the device takes chains until the
    /// ring is empty; then it asks for the next kick where it stopped (`used.flags` 0, and
    /// with EVENT_IDX `avail_event` / the packed DESC event at its position: the driver
    /// kicks only when it makes that entry available, so the device must keep it current),
    /// looks once more, since the driver may have published before it could see the
    /// request (virtio 1.1 §2.6.7.1, §2.7.10), and sleeps. A driver that publishes without
    /// the kick the device asked for stalls here. Use with [`Notify::Wanted`].
    pub only_when_notified: bool,
    /// Offer VIRTIO_NET_F_MRG_RXBUF (bit 15): accepted, a frame spreads over as many
    /// receive buffers as it needs (`fake_virtio/mergeable.rs`).
    pub mrg_rxbuf: bool,
    /// Offer VIRTIO_NET_F_MTU (bit 3) with this `mtu` in the configuration.
    pub mtu: Option<u16>,
    /// Offer the checksum offloads (VIRTIO_NET_F_CSUM, GUEST_CSUM): with CSUM negotiated
    /// a transmitted NEEDS_CSUM frame has its checksum completed before it is recorded
    /// (`fake_virtio/csum.rs`).
    pub csum: bool,
    /// Offer VIRTIO_NET_F_HOST_TSO4 (with `csum`): a GSO_TCPV4 frame is cut into the
    /// segments that are recorded, as the host's Linux cuts it (`fake_virtio/csum.rs`).
    pub tso: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            queue_max: 64,
            event_idx: true,
            packed: false,
            link_up: true,
            notify: Notify::Wanted,
            ctrl: false,
            pairs: 1,
            rss: false,
            refuse_features: false,
            legacy: false,
            any_layout: false,
            only_when_notified: false,
            mrg_rxbuf: false,
            mtu: None,
            csum: false,
            tso: false,
        }
    }
}

impl Behaviour {
    /// The features the device offers.
    pub fn offered(&self) -> u64 {
        let mut f = feature::VERSION_1 | feature::ACCESS_PLATFORM | feature::MAC | feature::STATUS;
        if self.event_idx {
            f |= feature::EVENT_IDX;
        }
        if self.packed {
            f |= feature::RING_PACKED;
        }
        if self.ctrl {
            f |= feature::CTRL_VQ | feature::CTRL_RX;
        }
        if self.ctrl && self.pairs > 1 {
            f |= feature::MQ;
        }
        if self.rss {
            f |= feature::RSS | feature::HASH_REPORT;
        }
        if self.any_layout {
            f |= feature::ANY_LAYOUT;
        }
        if self.mrg_rxbuf {
            f |= feature::MRG_RXBUF;
        }
        if self.mtu.is_some() {
            f |= feature::MTU;
        }
        if self.csum {
            f |= feature::CSUM | feature::GUEST_CSUM;
        }
        if self.tso {
            f |= feature::HOST_TSO4;
        }
        if self.legacy {
            f &= !(feature::VERSION_1 | feature::ACCESS_PLATFORM);
        }
        f
    }

    /// The device's queues: its pairs, and the control queue after them.
    pub fn queues(&self) -> usize {
        2 * usize::from(self.pairs.clamp(1, MAX_PAIRS)) + usize::from(self.ctrl)
    }
}

/// What the device does next on its receive queue, in order.
#[derive(Debug, Clone)]
pub enum Inject {
    /// Receive this frame: 12 zero header bytes and the frame, used len = 12 + frame.
    Frame(Vec<u8>),
    /// Take the next buffer and report it under this id (packed ids are 16 bits: the low
    /// half is written). The buffer is lost to the driver.
    BadId(u32),
    /// Receive this frame, and report the same buffer again in place of the next one (which
    /// is lost), both made visible by one index or flag store.
    Duplicate(Vec<u8>),
    /// Take the next buffer and report this used length, writing no data.
    Length(u32),
    /// Split only: move `used.idx` a queue size plus one past what was used, until the next
    /// injection is written (which puts it back).
    IndexJump,
    /// Receive this frame with this RSS hash and report type in its header (with
    /// HASH_REPORT negotiated; otherwise as [`Inject::Frame`]).
    Hashed(Vec<u8>, u32, u16),
    /// With MRG_RXBUF: receive this frame over the buffers it needs, but write this
    /// `num_buffers` in its header.
    NumBuffers(Vec<u8>, u16),
    /// With MRG_RXBUF: receive this frame, but publish only the used entries of its first
    /// this many buffers; the rest wait for [`Inject::Rest`].
    Partial(Vec<u8>, usize),
    /// Publish the used entries a [`Inject::Partial`] held back.
    Rest,
    /// Receive this frame with this header `flags` ([`NEEDS_CSUM`], [`DATA_VALID`]) and
    /// `csum_start` and `csum_offset`.
    Csum(Vec<u8>, u8, u16, u16),
}

/// A control command the device answered (virtio 1.1 §5.1.6.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub class: u8,
    pub cmd: u8,
    pub data: Vec<u8>,
    /// What the device answered: 0 OK, 1 error.
    pub ack: u8,
}

/// What the device counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Notifications of queues 0 and 1 (a 16-bit write of the queue index at its notify
    /// address); [`FakeVirtio::kicks`] has every queue's.
    pub kicks: [u64; 2],
    /// Notify writes with a wrong width, address or value.
    pub misdirected_kicks: u64,
    /// Register writes with a width other than the register's, or to a read-only one.
    pub bad_accesses: u64,
    /// DMA accesses the fake IOMMU refused.
    pub faults: u64,
    /// Transmitted chains whose header was neither all zero nor a NEEDS_CSUM request the
    /// device can carry out (CSUM negotiated, offsets within the frame).
    pub bad_headers: u64,
    /// Transmitted frames whose checksum the device completed (NEEDS_CSUM).
    pub csum_completed: u64,
    /// Chains a legacy device without ANY_LAYOUT could not frame: a header sharing its
    /// descriptor with frame bytes, transmit or receive.
    pub misframed: u64,
    /// Device resets (status written 0).
    pub resets: u64,
    /// Frames transmitted.
    pub sent: u64,
    /// Used entries written on the receive queues.
    pub rx_used: u64,
    /// Frames the receive filter turned away (promiscuous mode off).
    pub filtered: u64,
}

/// The rings the device runs after DRIVER_OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// Packed format (RING_PACKED was accepted).
    pub packed: bool,
    /// EVENT_IDX was accepted.
    pub event_idx: bool,
    /// Size of each enabled queue of pair 0.
    pub sizes: [Option<u16>; 2],
}

/// The device side of a fake virtio-net.
#[derive(Debug)]
pub struct FakeVirtio {
    /// Registers, shared with the driver.
    pub bar: VirtioBar,
    /// DMA memory, shared with the driver.
    pub dma: FakeDma,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The device's BAR: a [`FakeBar`] whose common-configuration and notify registers act on
/// the device in the driver's write (see the module docs).
#[derive(Clone)]
pub struct VirtioBar {
    regs: FakeBar,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for VirtioBar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VirtioBar({:?})", self.regs)
    }
}

#[derive(Debug, Default)]
struct Counters {
    kicks: [AtomicU64; MAX_QUEUES],
    misdirected_kicks: AtomicU64,
    bad_accesses: AtomicU64,
    faults: AtomicU64,
    bad_headers: AtomicU64,
    csum_completed: AtomicU64,
    misframed: AtomicU64,
    resets: AtomicU64,
    sent: AtomicU64,
    rx_used: AtomicU64,
    filtered: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::SeqCst);
}

#[derive(Debug)]
struct Shared {
    core: Mutex<Core>,
    /// A control-path caller (register write, test knob) waits for `core`: the device
    /// thread stands back until it has it, so the caller is never starved.
    control: AtomicBool,
    stop: AtomicBool,
    counts: Counters,
    sent: Mutex<Vec<Vec<u8>>>,
    /// The pair each frame of `sent` went out on, in the same order.
    sent_pairs: Mutex<Vec<u16>>,
    commands: Mutex<Vec<Command>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn control<R>(&self, f: impl FnOnce(&mut Core, &Counters) -> R) -> R {
        self.control.store(true, Ordering::SeqCst);
        let mut core = lock(&self.core);
        self.control.store(false, Ordering::SeqCst);
        f(&mut core, &self.counts)
    }
}

impl FakeVirtio {
    /// Starts the device thread.
    pub fn start(b: Behaviour) -> Self {
        let regs = FakeBar::new(BAR_LEN);
        for (i, byte) in (0u32..).zip(MAC) {
            regs.write8(DEVICE_CFG + i, byte);
        }
        let link = if b.link_up { NET_S_LINK_UP } else { 0 };
        regs.write16(DEVICE_CFG + CFG_STATUS, link);
        let dma = FakeDma::new();
        let mut core = Core {
            b,
            regs: regs.clone(),
            dma: dma.clone(),
            driver_features: [0; 2],
            status: 0,
            queues: [QueueRegs::default(); MAX_QUEUES],
            rings: Default::default(),
            event_idx: false,
            hdr_len: HDR_LEN,
            strict: false,
            rx_filter: VirtioRxFilter::default(),
            ctrl_held: false,
            tx_paused: false,
            bad_tx_len: 0,
            inject: Default::default(),
            held: Default::default(),
            merge: false,
            stalled: Default::default(),
            awake: [false; MAX_QUEUES],
            kicks_seen: [0; MAX_QUEUES],
            msix: irq::Msix::new(regs.clone()),
        };
        let pairs = b.pairs.clamp(1, MAX_PAIRS);
        regs.write16(DEVICE_CFG + 8, pairs);
        regs.write16(DEVICE_CFG + 10, b.mtu.unwrap_or(0));
        regs.write8(DEVICE_CFG + 17, 40);
        regs.write16(DEVICE_CFG + 18, 128);
        regs.write32(DEVICE_CFG + 20, HASH_TYPES);
        core.reset();
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            control: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            counts: Counters::default(),
            sent: Mutex::new(Vec::new()),
            sent_pairs: Mutex::new(Vec::new()),
            commands: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                while s.control.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                if !lock(&s.core).step(&s) {
                    std::thread::yield_now();
                }
            }
        });
        Self {
            bar: VirtioBar {
                regs,
                shared: shared.clone(),
            },
            dma,
            shared,
            thread: Some(thread),
        }
    }

    /// Takes the link down or brings it back: the config `status` field's
    /// VIRTIO_NET_S_LINK_UP, and config_generation moved on, as a device changing its
    /// configuration does (virtio 1.1 §4.1.4.3.1).
    pub fn set_link(&self, up: bool) {
        self.shared.control(|core, _| {
            let link = if up { NET_S_LINK_UP } else { 0 };
            core.regs.write16(DEVICE_CFG + CFG_STATUS, link);
            let generation = core.regs.read8(c::CONFIG_GENERATION);
            core.regs
                .write8(c::CONFIG_GENERATION, generation.wrapping_add(1));
            core.msix
                .raise(core.regs.read16(c::MSIX_CONFIG), irq::ISR_CONFIG);
        });
    }

    /// The modern transport over this device's BAR, windows where QEMU puts them.
    pub fn transport(&self) -> Modern<VirtioBar> {
        Modern::in_one_bar(self.bar.clone(), 0, DEVICE_CFG, NOTIFY, NOTIFY_MULT)
    }

    /// The transport the driver sees: [`FakeVirtio::transport`], or with
    /// [`Behaviour::legacy`] that under a [`LegacyView`].
    pub fn any_transport(&self) -> Box<dyn Transport> {
        let legacy = self.shared.control(|core, _| core.b.legacy);
        if legacy {
            Box::new(LegacyView(self.transport()))
        } else {
            Box::new(self.transport())
        }
    }

    /// Queues something for the receive side of pair 0.
    pub fn inject(&self, what: Inject) {
        self.inject_on(0, what);
    }

    /// Queues something for the receive side of pair `pair`.
    pub fn inject_on(&self, pair: u16, what: Inject) {
        self.shared
            .control(|core, _| core.inject[usize::from(pair)].push_back(what));
    }

    /// Notifications of queue `q` so far.
    pub fn kicks(&self, q: usize) -> u64 {
        self.shared.counts.kicks[q].load(Ordering::SeqCst)
    }

    /// The pair each transmitted frame went out on, in the order of [`FakeVirtio::sent`].
    pub fn sent_pairs(&self) -> Vec<u16> {
        lock(&self.shared.sent_pairs).clone()
    }

    /// Control commands answered so far, in order.
    pub fn commands(&self) -> Vec<Command> {
        lock(&self.shared.commands).clone()
    }

    /// Stops (or resumes) answering control commands; resumed, the device answers what
    /// waits in order.
    pub fn hold_ctrl(&self, held: bool) {
        self.shared.control(|core, _| core.ctrl_held = held);
    }

    /// Whether the device is promiscuous (its state after reset, as QEMU's: yes).
    pub fn promisc(&self) -> bool {
        self.shared.control(|core, _| core.rx_filter.promisc)
    }

    /// The receive filter as the driver's commands left it (`fake_filter`).
    pub fn rx_filter(&self) -> VirtioRxFilter {
        self.shared.control(|core, _| core.rx_filter.clone())
    }

    /// Stops (or resumes) consuming the transmit queue. Once this returns the device is
    /// between two passes, so nothing published afterwards is taken while paused.
    pub fn pause_tx(&self, paused: bool) {
        self.shared.control(|core, _| core.tx_paused = paused);
    }

    /// Completes the next `n` transmit chains with a used length of 100, though a transmit
    /// buffer has nothing for the device to write (packed: with VIRTQ_DESC_F_WRITE set).
    pub fn bad_tx_len(&self, n: u32) {
        self.shared.control(|core, _| core.bad_tx_len += n);
    }

    /// Frames transmitted so far, header stripped, in order.
    pub fn sent(&self) -> Vec<Vec<u8>> {
        lock(&self.shared.sent).clone()
    }

    /// Number of frames transmitted so far. Everything the device wrote to the rings for
    /// them (used entries, event indices) is visible once this counts them.
    pub fn sent_count(&self) -> u64 {
        self.shared.counts.sent.load(Ordering::SeqCst)
    }

    /// Counters so far.
    pub fn counts(&self) -> Counts {
        let c = &self.shared.counts;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Counts {
            kicks: [get(&c.kicks[0]), get(&c.kicks[1])],
            misdirected_kicks: get(&c.misdirected_kicks),
            bad_accesses: get(&c.bad_accesses),
            faults: get(&c.faults),
            bad_headers: get(&c.bad_headers),
            csum_completed: get(&c.csum_completed),
            misframed: get(&c.misframed),
            resets: get(&c.resets),
            sent: get(&c.sent),
            rx_used: get(&c.rx_used),
            filtered: get(&c.filtered),
        }
    }

    /// Features the driver wrote (both halves), as the device saw them.
    pub fn driver_features(&self) -> u64 {
        self.shared.control(|core, _| core.accepted())
    }

    /// The rings running since DRIVER_OK; `None` before, and after a reset.
    pub fn started(&self) -> Option<Started> {
        self.shared.control(|core, _| {
            let running = core.rings.iter().any(Option::is_some);
            running.then(|| Started {
                packed: core.accepted() & feature::RING_PACKED != 0,
                event_idx: core.event_idx,
                sizes: [0, 1].map(|q| core.rings[q].as_ref().map(Ring::size)),
            })
        })
    }
}

impl Drop for FakeVirtio {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() && !std::thread::panicking() {
                panic!("the fake virtio device thread panicked");
            }
        }
    }
}

impl VirtioBar {
    fn write(&self, off: u32, width: u32, val: u32) {
        let counts = &self.shared.counts;
        if off < c::LEN {
            store(&self.regs, off, width, val);
            self.shared
                .control(|core, counts| core.common_written(off, width, counts));
        } else if (NOTIFY..NOTIFY + NOTIFY_MULT * MAX_QUEUES as u32).contains(&off) {
            // Queue q's doorbell is NOTIFY + q * NOTIFY_MULT and takes q (§4.1.4.4.1).
            let q = (off - NOTIFY) / NOTIFY_MULT;
            if width == 2 && off.is_multiple_of(NOTIFY_MULT) && val == q {
                bump(&counts.kicks[q as usize], 1);
            } else {
                bump(&counts.misdirected_kicks, 1);
            }
        } else {
            // The virtio-net configuration is read-only for the driver (§5.1.4).
            bump(&counts.bad_accesses, 1);
        }
    }
}

fn store(bar: &FakeBar, off: u32, width: u32, val: u32) {
    match width {
        1 => bar.write8(off, val as u8),
        2 => bar.write16(off, val as u16),
        _ => bar.write32(off, val),
    }
}

impl Bar for VirtioBar {
    fn doorbell(&self, off: u32) -> zcnic::mmio::Doorbell {
        self.regs.doorbell(off)
    }

    /// ISR status ([`ISR_CFG`]) clears when read through it, as through `read8`.
    fn reader8(&self, off: u32) -> zcnic::mmio::Reader8 {
        self.regs.reader8(off)
    }

    /// The notify address as the device decodes it: each write is a kick, counted.
    fn doorbell16(&self, off: u32) -> zcnic::mmio::Doorbell {
        let bar = self.clone();
        zcnic::mmio::Doorbell::hook(move |v| bar.write(off, 2, v & 0xffff))
    }

    fn read32(&self, off: u32) -> u32 {
        self.regs.read32(off)
    }
    fn write32(&self, off: u32, val: u32) {
        self.write(off, 4, val)
    }
    fn read16(&self, off: u32) -> u16 {
        self.regs.read16(off)
    }
    fn write16(&self, off: u32, val: u16) {
        self.write(off, 2, val.into())
    }
    fn read8(&self, off: u32) -> u8 {
        self.regs.read8(off)
    }
    fn write8(&self, off: u32, val: u8) {
        self.write(off, 1, val.into())
    }
}

/// The writable per-queue registers, remembered for each queue (§4.1.4.3).
#[derive(Debug, Clone, Copy, Default)]
struct QueueRegs {
    size: u16,
    /// queue_msix_vector.
    vector: u16,
    enable: u16,
    desc: u64,
    driver: u64,
    device: u64,
}

#[derive(Debug)]
struct Core {
    b: Behaviour,
    regs: FakeBar,
    dma: FakeDma,
    driver_features: [u32; 2],
    /// device_status as last accepted.
    status: u8,
    queues: [QueueRegs; MAX_QUEUES],
    rings: [Option<Ring>; MAX_QUEUES],
    event_idx: bool,
    /// The header's length as negotiated (12, or 20 with the hash report; 10 legacy).
    hdr_len: usize,
    /// The header must have a descriptor of its own (legacy without ANY_LAYOUT).
    strict: bool,
    /// Receive filter: promiscuity, all-multicast and the MAC table, as QEMU's.
    rx_filter: VirtioRxFilter,
    /// The control queue is not looked at (a device slow to answer).
    ctrl_held: bool,
    tx_paused: bool,
    bad_tx_len: u32,
    /// Per pair.
    inject: [VecDeque<Inject>; MAX_PAIRS as usize],
    /// Receive chains taken from each pair's ring but not yet used.
    held: [VecDeque<Chain>; MAX_PAIRS as usize],
    /// MRG_RXBUF was accepted.
    merge: bool,
    /// Used entries [`Inject::Partial`] held back, per pair.
    stalled: [Vec<Used>; MAX_PAIRS as usize],
    /// Per queue, with [`Behaviour::only_when_notified`]: the device was kicked and has not
    /// yet found the ring empty since; and the kicks counted when it last looked.
    awake: [bool; MAX_QUEUES],
    kicks_seen: [u64; MAX_QUEUES],
    /// The MSI-X table, when the test gave the driver vectors (`irq.rs`).
    msix: irq::Msix,
}

/// Width of the register starting at `off` (0: none starts there).
fn natural_width(off: u32) -> u32 {
    match off {
        c::DEVICE_FEATURE_SELECT | c::DEVICE_FEATURE => 4,
        c::DRIVER_FEATURE_SELECT | c::DRIVER_FEATURE => 4,
        c::DEVICE_STATUS | c::CONFIG_GENERATION => 1,
        o if o < c::QUEUE_DESC => 2,
        o if o.is_multiple_of(4) => 4,
        _ => 0,
    }
}

fn write64(bar: &FakeBar, off: u32, v: u64) {
    bar.write32(off, v as u32);
    bar.write32(off + 4, (v >> 32) as u32);
}

fn read64(bar: &FakeBar, off: u32) -> u64 {
    u64::from(bar.read32(off)) | u64::from(bar.read32(off + 4)) << 32
}

impl Core {
    fn accepted(&self) -> u64 {
        u64::from(self.driver_features[0]) | u64::from(self.driver_features[1]) << 32
    }

    fn dma<'a>(&'a self, counts: &'a Counters) -> Dma<'a> {
        Dma {
            dma: &self.dma,
            faults: &counts.faults,
        }
    }

    /// Side effects of the driver's write of `width` bytes at `off` (already stored).
    fn common_written(&mut self, off: u32, width: u32, counts: &Counters) {
        let read_only = matches!(
            off,
            c::DEVICE_FEATURE | c::NUM_QUEUES | c::CONFIG_GENERATION | c::QUEUE_NOTIFY_OFF
        );
        if width != natural_width(off) || read_only {
            bump(&counts.bad_accesses, 1);
        }
        let sel = self.regs.read32(c::DRIVER_FEATURE_SELECT) as usize;
        match off {
            c::DRIVER_FEATURE_SELECT => {
                let half = self.driver_features.get(sel).copied().unwrap_or(0);
                self.regs.write32(c::DRIVER_FEATURE, half);
            }
            c::DRIVER_FEATURE => {
                if let Some(half) = self.driver_features.get_mut(sel) {
                    *half = self.regs.read32(c::DRIVER_FEATURE);
                }
            }
            c::DEVICE_STATUS => self.status_written(counts),
            c::QUEUE_SELECT => self.load_queue(),
            o if o >= c::QUEUE_SIZE => self.save_queue(),
            _ => {}
        }
        self.refresh_read_only();
    }

    fn refresh_read_only(&self) {
        let half = match self.regs.read32(c::DEVICE_FEATURE_SELECT) {
            0 => self.b.offered() as u32,
            1 => (self.b.offered() >> 32) as u32,
            _ => 0,
        };
        self.regs.write32(c::DEVICE_FEATURE, half);
        let queues = self.b.queues();
        self.regs.write16(c::NUM_QUEUES, queues as u16);
        self.regs.write8(c::CONFIG_GENERATION, 0);
        let q = self.regs.read16(c::QUEUE_SELECT);
        let notify_off = if usize::from(q) < queues { q } else { 0 };
        self.regs.write16(c::QUEUE_NOTIFY_OFF, notify_off);
    }

    /// Shows the selected queue's registers (all zero for a queue that does not exist).
    fn load_queue(&self) {
        let sel = usize::from(self.regs.read16(c::QUEUE_SELECT));
        let q = self.queues[..self.b.queues()]
            .get(sel)
            .copied()
            .unwrap_or_default();
        self.regs.write16(c::QUEUE_SIZE, q.size);
        self.regs.write16(c::QUEUE_MSIX_VECTOR, q.vector);
        self.regs.write16(c::QUEUE_ENABLE, q.enable);
        write64(&self.regs, c::QUEUE_DESC, q.desc);
        write64(&self.regs, c::QUEUE_DRIVER, q.driver);
        write64(&self.regs, c::QUEUE_DEVICE, q.device);
    }

    fn save_queue(&mut self) {
        let sel = usize::from(self.regs.read16(c::QUEUE_SELECT));
        let n = self.b.queues();
        if let Some(q) = self.queues[..n].get_mut(sel) {
            *q = QueueRegs {
                size: self.regs.read16(c::QUEUE_SIZE),
                vector: self.regs.read16(c::QUEUE_MSIX_VECTOR),
                enable: self.regs.read16(c::QUEUE_ENABLE),
                desc: read64(&self.regs, c::QUEUE_DESC),
                driver: read64(&self.regs, c::QUEUE_DRIVER),
                device: read64(&self.regs, c::QUEUE_DEVICE),
            };
        }
    }

    /// Device reset (§2.1, §4.1.4.3.1): the datapath stops (the caller holds the core, so
    /// no pass is under way) and every register returns to its initial value.
    fn reset(&mut self) {
        self.driver_features = [0; 2];
        self.status = 0;
        self.rings = Default::default();
        self.held = Default::default();
        self.rx_filter = VirtioRxFilter::default();
        let initial = QueueRegs {
            size: self.b.queue_max,
            vector: NO_VECTOR,
            ..QueueRegs::default()
        };
        self.queues = [initial; MAX_QUEUES];
        for off in (0..c::LEN).step_by(4) {
            self.regs.write32(off, 0);
        }
        self.regs.write16(c::MSIX_CONFIG, NO_VECTOR);
        self.load_queue();
        self.refresh_read_only();
    }

    fn status_written(&mut self, counts: &Counters) {
        let mut s = self.regs.read8(c::DEVICE_STATUS);
        if s == 0 {
            self.reset();
            bump(&counts.resets, 1);
            return;
        }
        let newly = |bit: u8| s & bit != 0 && self.status & bit == 0;
        if newly(status::FEATURES_OK) {
            // FEATURES_OK stays set only for a subset of what was offered (§3.1.1 step 6).
            let extra = self.accepted() & !self.b.offered();
            if self.b.refuse_features || extra != 0 {
                s &= !status::FEATURES_OK;
                self.regs.write8(c::DEVICE_STATUS, s);
            }
        }
        // A legacy device has no FEATURES_OK (virtio 1.1 §3.1.2).
        let ok = s & status::FEATURES_OK != 0 || self.b.legacy;
        if ok && s & status::DRIVER_OK != 0 && self.status & status::DRIVER_OK == 0 {
            self.start(counts);
        }
        self.status = s;
    }

    /// DRIVER_OK: the enabled queues go live in the negotiated format.
    fn start(&mut self, counts: &Counters) {
        let packed = self.accepted() & feature::RING_PACKED != 0;
        self.event_idx = self.accepted() & feature::EVENT_IDX != 0;
        self.merge = self.accepted() & feature::MRG_RXBUF != 0;
        self.stalled = Default::default();
        // num_buffers makes the legacy header 12 bytes (virtio 1.1 §5.1.6.1).
        self.hdr_len = if self.accepted() & feature::HASH_REPORT != 0 {
            HASH_HDR_LEN
        } else if self.accepted() & (feature::VERSION_1 | feature::MRG_RXBUF) == 0 {
            LEGACY_HDR_LEN
        } else {
            HDR_LEN
        };
        self.strict = layout::strict(self.accepted());
        let rings = self
            .queues
            .map(|q| (q.enable == 1 && q.size > 0).then(|| Ring::new(packed, q)));
        let m = self.dma(counts);
        for ring in rings.iter().flatten() {
            ring.suppress(&m, self.b.notify, self.event_idx);
        }
        self.rings = rings;
        // Asleep until the first kick after DRIVER_OK.
        self.awake = [false; MAX_QUEUES];
        self.kicks_seen = std::array::from_fn(|q| counts.kicks[q].load(Ordering::SeqCst));
    }

    /// Wakes the queues kicked since the last look (only-when-notified mode).
    fn take_kicks(&mut self, counts: &Counters) {
        for q in 0..MAX_QUEUES {
            // SeqCst, as the doorbell's count: the driver published before it kicked, so
            // everything it published is visible once the kick is.
            let kicks = counts.kicks[q].load(Ordering::SeqCst);
            if kicks != self.kicks_seen[q] {
                self.kicks_seen[q] = kicks;
                self.awake[q] = true;
            }
        }
    }

    /// One pass of the control queue and every pair's datapath; true if it did anything.
    fn step(&mut self, s: &Shared) -> bool {
        if self.b.only_when_notified {
            self.take_kicks(&s.counts);
        }
        let mut did = self.control(s);
        for pair in 0..usize::from(self.b.pairs.clamp(1, MAX_PAIRS)) {
            if !self.tx_paused {
                did |= self.transmit(pair, s);
            }
            did |= self.receive(pair, &s.counts);
        }
        did
    }

    /// Answers the commands on the control queue (the last queue): receive filters as QEMU
    /// parses them (`fake_filter`), queue pairs and RSS taken as sent (all recorded for the
    /// test); anything else is refused.
    fn control(&mut self, s: &Shared) -> bool {
        if !self.b.ctrl || self.ctrl_held {
            return false;
        }
        let m = Dma {
            dma: &self.dma,
            faults: &s.counts.faults,
        };
        let q = self.b.queues() - 1;
        let Some(ring) = self.rings[q].as_mut() else {
            return false;
        };
        let mut done = Vec::new();
        while let Some(chain) = ring.take(&m) {
            let bytes = gather(&m, &chain);
            let (class, cmd) = (bytes.first().copied(), bytes.get(1).copied());
            let data = bytes.get(2..).unwrap_or_default().to_vec();
            let ok = match (class, cmd, data.as_slice()) {
                (Some(c @ (0 | 1)), Some(m), d) => self.rx_filter.command(c, m, d) == Some(true),
                (Some(4), Some(0), &[a, b]) => {
                    (1..=self.b.pairs).contains(&u16::from_le_bytes([a, b]))
                }
                (Some(4), Some(1), d) => rss_ok(d, self.b.pairs),
                _ => false,
            };
            let ack = u8::from(!ok);
            let answered = chain
                .descs
                .iter()
                .find(|d| d.flags & VIRTQ_DESC_F_WRITE != 0);
            if let Some(d) = answered {
                m.write(d.addr, &[ack]);
            }
            lock(&s.commands).push(Command {
                class: class.unwrap_or(0xff),
                cmd: cmd.unwrap_or(0xff),
                data,
                ack,
            });
            done.push(chain.used(chain.id.into(), u32::from(answered.is_some())));
        }
        if done.is_empty() {
            return false;
        }
        ring.complete(&m, &done);
        ring.suppress(&m, self.b.notify, self.event_idx);
        true
    }

    fn transmit(&mut self, pair: usize, s: &Shared) -> bool {
        let counts = &s.counts;
        let m = Dma {
            dma: &self.dma,
            faults: &counts.faults,
        };
        let q = 2 * pair + TX;
        let csum = self.accepted() & feature::CSUM != 0;
        let tso = csum && self.accepted() & feature::HOST_TSO4 != 0;
        let Some(ring) = self.rings[q].as_mut() else {
            return false;
        };
        let awake = self.b.only_when_notified.then_some(&mut self.awake[q]);
        let mut next = Taker {
            awake,
            event_idx: self.event_idx,
        };
        let hdr = self.hdr_len;
        let (mut frames, mut done) = (Vec::new(), Vec::new());
        for _ in 0..ring.size() {
            let Some(chain) = next.take(ring, &m) else {
                break;
            };
            let (head, frame) = if self.strict {
                let (head, frame, misframed) = layout::split_tx(&m, &chain, hdr);
                if misframed {
                    bump(&counts.misframed, 1);
                }
                (head, frame)
            } else {
                let mut bytes = gather(&m, &chain);
                let frame = bytes.split_off(hdr.min(bytes.len()));
                (bytes, frame)
            };
            let mut frame = frame;
            match head
                .get(..hdr)
                .map(|h| csum::transmit(h, &mut frame, csum, tso))
            {
                Some(Ok(None)) => frames.push(frame),
                Some(Ok(Some(segs))) => {
                    bump(&counts.csum_completed, 1);
                    frames.extend(segs);
                }
                Some(Err(())) | None => {
                    bump(&counts.bad_headers, 1);
                    frames.push(frame);
                }
            }
            let len = if self.bad_tx_len > 0 {
                self.bad_tx_len -= 1;
                100
            } else {
                0
            };
            done.push(chain.used(chain.id.into(), len));
        }
        if done.is_empty() {
            return false;
        }
        // The frames are recorded before the driver can see them completed, and under the
        // lock until the ring writes are done: a driver that has seen its frames sent finds
        // them in `sent`, and a test that sees them in `sent` (or counted) sees every ring
        // write for them.
        let n = frames.len() as u64;
        let mut sent = lock(&s.sent);
        lock(&s.sent_pairs).extend(std::iter::repeat_n(pair as u16, frames.len()));
        sent.extend(frames);
        ring.complete(&m, &done);
        ring.suppress(&m, self.b.notify, self.event_idx);
        bump(&counts.sent, n);
        drop(sent);
        true
    }

    fn receive(&mut self, pair: usize, counts: &Counters) -> bool {
        let m = Dma {
            dma: &self.dma,
            faults: &counts.faults,
        };
        let q = 2 * pair + RX;
        let mut did = false;
        let Some(ring) = self.rings[q].as_mut() else {
            return did;
        };
        let awake = self.b.only_when_notified.then_some(&mut self.awake[q]);
        let mut taker = Taker {
            awake,
            event_idx: self.event_idx,
        };
        let hdr = self.hdr_len;
        let strict = self.strict;
        let put = |m: &Dma, chain: &Chain, h: &[u8], f: &[u8]| {
            if !strict {
                return deliver(m, chain, h, f);
            }
            let (len, misframed) = layout::deliver_apart(m, chain, h, f);
            if misframed {
                bump(&counts.misframed, 1);
            }
            len
        };
        let (mut done, mut used) = (Vec::new(), 0u64);
        let used_before = ring.used_idx();
        while let Some(front) = self.inject[pair].front() {
            // Frames the filter turns away take no buffer.
            if let Inject::Frame(f) | Inject::Hashed(f, ..) = front {
                let admitted = match fake_filter::dst(f) {
                    Some(d) => self.rx_filter.admits(MAC, d),
                    None => self.rx_filter.promisc,
                };
                if !admitted {
                    self.inject[pair].pop_front();
                    bump(&counts.filtered, 1);
                    did = true;
                    continue;
                }
            }
            if self.merge {
                let (held, stalled) = (&mut self.held[pair], &mut self.stalled[pair]);
                let take = || taker.take(ring, &m);
                match mergeable::receive(front, hdr, held, take, &m, &mut done, stalled) {
                    Some(false) => break, // too few buffers yet: wait for the refill
                    Some(true) => {
                        self.inject[pair].pop_front();
                        did = true;
                        continue;
                    }
                    None => {}
                }
            }
            let need = match front {
                Inject::Duplicate(_) => 2,
                Inject::IndexJump | Inject::Rest => 0,
                _ => 1,
            };
            let held = &mut self.held[pair];
            while held.len() < need {
                let Some(chain) = taker.take(ring, &m) else {
                    break;
                };
                held.push_back(chain);
                did = true;
            }
            if held.len() < need {
                break; // no buffer posted: wait for the driver's refill
            }
            let Some(what) = self.inject[pair].pop_front() else {
                break;
            };
            let mut next = || held.pop_front().expect("taken above");
            match what {
                Inject::Frame(f) => {
                    let a = next();
                    done.push(a.used(a.id.into(), put(&m, &a, &vec![0; hdr], &f)));
                }
                Inject::Hashed(f, hash, report) => {
                    let mut h = vec![0; hdr];
                    if hdr == HASH_HDR_LEN {
                        h[12..16].copy_from_slice(&hash.to_le_bytes());
                        h[16..18].copy_from_slice(&report.to_le_bytes());
                    }
                    let a = next();
                    done.push(a.used(a.id.into(), put(&m, &a, &h, &f)));
                }
                Inject::BadId(id) => {
                    let a = next();
                    done.push(a.used(id, (hdr + 60) as u32));
                }
                Inject::Duplicate(f) => {
                    let (a, b) = (next(), next());
                    let len = put(&m, &a, &vec![0; hdr], &f);
                    done.push(a.used(a.id.into(), len));
                    done.push(b.used(a.id.into(), len));
                }
                Inject::Length(len) => {
                    let a = next();
                    done.push(a.used(a.id.into(), len));
                }
                // Without MRG_RXBUF, a device has no num_buffers to write.
                Inject::NumBuffers(f, _) | Inject::Partial(f, _) => {
                    let a = next();
                    done.push(a.used(a.id.into(), put(&m, &a, &vec![0; hdr], &f)));
                }
                Inject::Csum(f, flags, start, offset) => {
                    let a = next();
                    let h = csum::header(hdr, flags, start, offset);
                    done.push(a.used(a.id.into(), put(&m, &a, &h, &f)));
                }
                Inject::Rest => {}
                Inject::IndexJump => {
                    ring.complete(&m, &done);
                    used += done.len() as u64;
                    done.clear();
                    ring.jump(&m);
                }
            }
            did = true;
        }
        if !done.is_empty() {
            ring.complete(&m, &done);
            used += done.len() as u64;
        }
        if did {
            ring.suppress(&m, self.b.notify, self.event_idx);
        }
        if used > 0 {
            let wants = ring.wants_interrupt(&m, used_before, self.event_idx);
            self.msix.notify(q, self.queues[q].vector, wants);
        }
        bump(&counts.rx_used, used);
        did
    }
}

/// How the device takes chains off a ring: whenever there are any (polling), or with
/// [`Behaviour::only_when_notified`] only while awake (see there).
struct Taker<'a> {
    /// The queue's awake flag in only-when-notified mode.
    awake: Option<&'a mut bool>,
    event_idx: bool,
}

impl Taker<'_> {
    fn take(&mut self, ring: &mut Ring, m: &Dma) -> Option<Chain> {
        let Some(awake) = self.awake.as_deref_mut() else {
            return ring.take(m);
        };
        if !*awake {
            return None;
        }
        if let Some(chain) = ring.take(m) {
            return Some(chain);
        }
        // Empty: ask for a kick at the next entry, then look again. SeqCst pairs with the
        // driver's full barrier between its publish and its read of our request: either
        // it sees the request and kicks, or we see what it published.
        ring.suppress(m, Notify::Wanted, self.event_idx);
        fence(Ordering::SeqCst);
        let again = ring.take(m);
        *awake = again.is_some();
        again
    }
}

/// The device's view of DMA memory: every access through the fake IOMMU; a refused access
/// counts a fault and reads as zero.
struct Dma<'a> {
    dma: &'a FakeDma,
    faults: &'a AtomicU64,
}

impl Dma<'_> {
    fn read(&self, iova: u64, buf: &mut [u8]) {
        // SAFETY: the fake device reads only its queues and the buffers the driver made
        // available to it, as a virtio device does; the driver holds no reference to them.
        if !unsafe { self.dma.device_read(iova, buf) } {
            buf.fill(0);
            bump(self.faults, 1);
        }
    }
    fn write(&self, iova: u64, data: &[u8]) {
        // SAFETY: as in `read`: only queue memory and buffers the driver made available.
        if !unsafe { self.dma.device_write(iova, data) } {
            bump(self.faults, 1);
        }
    }
    fn r<const N: usize>(&self, iova: u64) -> [u8; N] {
        let mut b = [0; N];
        self.read(iova, &mut b);
        b
    }
    fn r16(&self, iova: u64) -> u16 {
        u16::from_le_bytes(self.r(iova))
    }
    fn r32(&self, iova: u64) -> u32 {
        u32::from_le_bytes(self.r(iova))
    }
    fn r64(&self, iova: u64) -> u64 {
        u64::from_le_bytes(self.r(iova))
    }
    fn w16(&self, iova: u64, v: u16) {
        self.write(iova, &v.to_le_bytes())
    }
    fn w32(&self, iova: u64, v: u32) {
        self.write(iova, &v.to_le_bytes())
    }
}

/// One descriptor as the device read it.
#[derive(Debug, Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
}

/// A chain the device took: split id = head index; packed id from the last descriptor,
/// `pos`/`wrap` = the head's ring position and wrap counter.
#[derive(Debug)]
struct Chain {
    id: u16,
    pos: u16,
    wrap: bool,
    descs: Vec<Desc>,
}

/// A used entry to write in place of a chain (it may name another id).
#[derive(Debug, Clone, Copy)]
struct Used {
    pos: u16,
    wrap: bool,
    id: u32,
    len: u32,
}

impl Chain {
    fn used(&self, id: u32, len: u32) -> Used {
        Used {
            pos: self.pos,
            wrap: self.wrap,
            id,
            len,
        }
    }
}

/// Whether an RSS configuration (virtio 1.2 §5.1.6.5.7.1) is one QEMU takes: whole, a
/// table of a power of two up to 128 entries, queues the device has, a key of at most 40
/// bytes.
fn rss_ok(d: &[u8], pairs: u16) -> bool {
    let u16_at = |i: usize| d.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let (Some(mask), Some(unclassified)) = (u16_at(4), u16_at(6)) else {
        return false;
    };
    let len = usize::from(mask) + 1;
    let at = 8 + 2 * len;
    let (Some(max_tx), Some(&key_len)) = (u16_at(at), d.get(at + 2)) else {
        return false;
    };
    len.is_power_of_two()
        && len <= 128
        && unclassified < pairs
        && (1..=pairs).contains(&max_tx)
        && key_len <= 40
        && d.len() == at + 3 + usize::from(key_len)
}

/// The device-readable bytes of a chain.
fn gather(m: &Dma, chain: &Chain) -> Vec<u8> {
    let mut out = Vec::new();
    for d in chain
        .descs
        .iter()
        .filter(|d| d.flags & VIRTQ_DESC_F_WRITE == 0)
    {
        let mut b = vec![0; (d.len as usize).min(MAX_TX_DESC)];
        m.read(d.addr, &mut b);
        out.extend_from_slice(&b);
    }
    out
}

/// Writes the header `hdr` and `frame` across the chain's device-writable buffers; returns
/// the bytes written.
fn deliver(m: &Dma, chain: &Chain, hdr: &[u8], frame: &[u8]) -> u32 {
    let mut data = hdr.to_vec();
    data.extend_from_slice(frame);
    let mut at = 0;
    for d in chain
        .descs
        .iter()
        .filter(|d| d.flags & VIRTQ_DESC_F_WRITE != 0)
    {
        let n = (d.len as usize).min(data.len() - at);
        m.write(d.addr, &data[at..at + n]);
        at += n;
    }
    at as u32
}

#[derive(Debug)]
enum Ring {
    Split(SplitRing),
    Packed(PackedRing),
}

impl Ring {
    fn new(packed: bool, q: QueueRegs) -> Self {
        if packed {
            Ring::Packed(PackedRing {
                size: q.size,
                desc: q.desc,
                driver_event: q.driver,
                device_event: q.device,
                pos: 0,
                wrap: true,
            })
        } else {
            Ring::Split(SplitRing {
                size: q.size,
                desc: q.desc,
                avail: q.driver,
                used: q.device,
                last_avail: 0,
                used_idx: 0,
            })
        }
    }

    fn size(&self) -> u16 {
        match self {
            Ring::Split(r) => r.size,
            Ring::Packed(r) => r.size,
        }
    }

    fn take(&mut self, m: &Dma) -> Option<Chain> {
        match self {
            Ring::Split(r) => r.take(m),
            Ring::Packed(r) => r.take(m),
        }
    }

    fn complete(&mut self, m: &Dma, done: &[Used]) {
        match self {
            Ring::Split(r) => r.complete(m, done),
            Ring::Packed(r) => r.complete(m, done),
        }
    }

    fn suppress(&self, m: &Dma, notify: Notify, event_idx: bool) {
        match self {
            Ring::Split(r) => r.suppress(m, notify, event_idx),
            Ring::Packed(r) => r.suppress(m, notify, event_idx),
        }
    }

    /// The split ring's `used.idx` as the device last wrote it (0 for packed).
    fn used_idx(&self) -> u16 {
        match self {
            Ring::Split(r) => r.used_idx,
            Ring::Packed(_) => 0,
        }
    }

    /// Whether the driver asked for a notification of the entries written since `used.idx`
    /// was `before` (`irq.rs`).
    fn wants_interrupt(&self, m: &Dma, before: u16, event_idx: bool) -> bool {
        match self {
            Ring::Split(r) => {
                irq::split_wants(|a| m.r16(a), r.avail, r.size, event_idx, before, r.used_idx)
            }
            Ring::Packed(r) => irq::packed_wants(|a| m.r16(a), r.driver_event),
        }
    }

    /// `used.idx` beyond anything made available (split only).
    fn jump(&self, m: &Dma) {
        if let Ring::Split(r) = self {
            let idx = r.used_idx.wrapping_add(r.size).wrapping_add(1);
            m.w16(r.used + USED_IDX, idx);
        }
    }
}

/// Split ring fields (virtio 1.1 §2.6.5, §2.6.6, §2.6.8): `virtq_desc` is 16 bytes
/// (addr le64, len le32, flags le16, next le16); `avail` = flags, idx, ring[n] of le16,
/// used_event; `used` = flags, idx, ring[n] of {id le32, len le32}, avail_event.
const SPLIT_DESC: u64 = 16;
const AVAIL_IDX: u64 = 2;
const AVAIL_RING: u64 = 4;
const USED_FLAGS: u64 = 0;
const USED_IDX: u64 = 2;
const USED_RING: u64 = 4;
const USED_ELEM: u64 = 8;

#[derive(Debug)]
struct SplitRing {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    last_avail: u16,
    used_idx: u16,
}

impl SplitRing {
    fn take(&mut self, m: &Dma) -> Option<Chain> {
        if m.r16(self.avail + AVAIL_IDX) == self.last_avail {
            return None;
        }
        // Acquire: the driver wrote ring entry and descriptors before avail.idx (§2.6.13).
        fence(Ordering::Acquire);
        let slot = u64::from(self.last_avail % self.size);
        let head = m.r16(self.avail + AVAIL_RING + 2 * slot);
        self.last_avail = self.last_avail.wrapping_add(1);
        let (mut descs, mut i) = (Vec::new(), head);
        // A chain longer than the table is a loop: stop there.
        while descs.len() < usize::from(self.size) && i < self.size {
            let at = self.desc + SPLIT_DESC * u64::from(i);
            let d = Desc {
                addr: m.r64(at),
                len: m.r32(at + 8),
                flags: m.r16(at + 12),
            };
            descs.push(d);
            if d.flags & VIRTQ_DESC_F_NEXT == 0 {
                break;
            }
            i = m.r16(at + 14);
        }
        Some(Chain {
            id: head,
            pos: 0,
            wrap: false,
            descs,
        })
    }

    fn complete(&mut self, m: &Dma, done: &[Used]) {
        for u in done {
            let slot = u64::from(self.used_idx % self.size);
            let at = self.used + USED_RING + USED_ELEM * slot;
            m.w32(at, u.id);
            m.w32(at + 4, u.len);
            self.used_idx = self.used_idx.wrapping_add(1);
        }
        // Release: the entries before the used.idx store that exposes them (§2.6.8.2).
        fence(Ordering::Release);
        m.w16(self.used + USED_IDX, self.used_idx);
    }

    fn suppress(&self, m: &Dma, notify: Notify, event_idx: bool) {
        let flags = match notify {
            Notify::Wanted => 0,
            Notify::Suppressed => VIRTQ_USED_F_NO_NOTIFY,
        };
        m.w16(self.used + USED_FLAGS, flags);
        if event_idx {
            // "Kick me when avail.idx moves past this" (§2.6.10): what was consumed, or one
            // behind it, which the driver has already passed.
            let event = match notify {
                Notify::Wanted => self.last_avail,
                Notify::Suppressed => self.last_avail.wrapping_sub(1),
            };
            let at = self.used + USED_RING + USED_ELEM * u64::from(self.size);
            m.w16(at, event);
        }
    }
}

/// Packed descriptor fields (virtio 1.1 §2.7.13: addr le64, len le32, id le16, flags le16)
/// and event suppression fields (§2.7.14: desc le16 = offset | wrap << 15, flags le16).
const PACKED_DESC: u64 = 16;
const PACKED_LEN: u64 = 8;
const PACKED_ID: u64 = 12;
const PACKED_FLAGS: u64 = 14;
const EVENT_OFF_WRAP: u64 = 0;
const EVENT_FLAGS: u64 = 2;

#[derive(Debug)]
struct PackedRing {
    size: u16,
    desc: u64,
    driver_event: u64,
    device_event: u64,
    /// Next position the device reads, and its wrap counter (starts at 1, §2.7.1).
    pos: u16,
    wrap: bool,
}

impl PackedRing {
    fn at(&self, pos: u16) -> u64 {
        self.desc + PACKED_DESC * u64::from(pos)
    }

    fn take(&mut self, m: &Dma) -> Option<Chain> {
        let flags = m.r16(self.at(self.pos) + PACKED_FLAGS);
        // Available: AVAIL equals the device's wrap counter and USED does not (§2.7.1).
        let (avail, used) = (
            flags & VIRTQ_DESC_F_AVAIL != 0,
            flags & VIRTQ_DESC_F_USED != 0,
        );
        if avail != self.wrap || used == self.wrap {
            return None;
        }
        // Acquire: the driver wrote the chain before the head's flags (§2.7.21.1).
        fence(Ordering::Acquire);
        let (pos, wrap, mut id) = (self.pos, self.wrap, 0);
        let mut descs = Vec::new();
        while descs.len() < usize::from(self.size) {
            let at = self.at(self.pos);
            let d = Desc {
                addr: m.r64(at),
                len: m.r32(at + PACKED_LEN),
                flags: m.r16(at + PACKED_FLAGS),
            };
            id = m.r16(at + PACKED_ID); // the last descriptor's id counts (§2.7.6)
            descs.push(d);
            self.pos += 1;
            if self.pos == self.size {
                self.pos = 0;
                self.wrap = !self.wrap;
            }
            if d.flags & VIRTQ_DESC_F_NEXT == 0 {
                break;
            }
        }
        Some(Chain {
            id,
            pos,
            wrap,
            descs,
        })
    }

    /// One used descriptor per chain at the chain head's position: AVAIL and USED equal the
    /// wrap counter there, WRITE when a length is reported (§2.7.4, §2.7.6).
    fn complete(&mut self, m: &Dma, done: &[Used]) {
        for u in done {
            let at = self.at(u.pos);
            m.w32(at + PACKED_LEN, u.len);
            m.w16(at + PACKED_ID, u.id as u16);
        }
        // Release: id and len before the flags that hand each descriptor back. The first of
        // the batch goes last, so the driver sees the whole batch at once.
        fence(Ordering::Release);
        for u in done.iter().rev() {
            let mut flags = if u.wrap {
                VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED
            } else {
                0
            };
            if u.len > 0 {
                flags |= VIRTQ_DESC_F_WRITE;
            }
            m.w16(self.at(u.pos) + PACKED_FLAGS, flags);
        }
    }

    fn suppress(&self, m: &Dma, notify: Notify, event_idx: bool) {
        let flags = match (notify, event_idx) {
            (Notify::Suppressed, _) => RING_EVENT_FLAGS_DISABLE,
            (Notify::Wanted, false) => RING_EVENT_FLAGS_ENABLE,
            (Notify::Wanted, true) => {
                // "Kick me when the descriptor I look at next is made available" (§2.7.10).
                let wrap = if self.wrap { RING_EVENT_WRAP } else { 0 };
                m.w16(self.device_event + EVENT_OFF_WRAP, self.pos | wrap);
                fence(Ordering::Release);
                RING_EVENT_FLAGS_DESC
            }
        };
        m.w16(self.device_event + EVENT_FLAGS, flags);
    }
}
