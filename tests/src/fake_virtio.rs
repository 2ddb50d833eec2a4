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
//!
//! Here the device's handle and its knobs; `behaviour.rs` what a test asks of it;
//! `device.rs` the register decoder and the state the thread steps; `ring.rs` split and
//! packed rings as the device walks them; `irq.rs` notifications, MSI-X and INTx with ISR;
//! `csum.rs`, `mergeable.rs` and `layout.rs` the offloads, mergeable buffers and legacy
//! framing.

mod behaviour;
mod csum;
mod device;
mod irq;
mod layout;
mod mergeable;
mod ring;

pub use behaviour::{Behaviour, Inject, Notify};
pub use csum::{DATA_VALID, NEEDS_CSUM};
pub use irq::{ISR_CFG, NO_VECTOR};
pub use layout::{LegacyView, LEGACY_HDR_LEN};

use crate::fake_filter::{self, VirtioRxFilter};
use device::{Core, QueueRegs};
use ring::{deliver, gather, rss_ok, Chain, Dma, Ring, Taker, Used};
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
