//! The virtio-net driver against a device that lies, on split and packed rings over the
//! modern transport, or a legacy one without VIRTIO_F_ANY_LAYOUT (the header in a
//! descriptor of its own, which the device checks of every chain while in step): a
//! proptest state machine plays the device on the test thread (no device thread, so every
//! case is deterministic and shrinks).
//!
//! The device completes chains properly, or lies in ways that keep it in step with the
//! driver (a used entry under a wrong id, a duplicate, a length beyond the buffer), or in
//! ways that do not (used entries written anywhere, `used.idx` jumps, packed flags with any
//! wrap bits, garbage over descriptors and the available ring); and it sets its
//! notification suppression fields (`used.flags`, `avail_event`, the packed device event
//! area) to anything.
//!
//! Invariants after every step: no panic; every frame handed out is 1..=2048 bytes and not
//! a buffer the application still holds; counters never go back; while the device is in
//! step with the driver, `rx_batch` delivers exactly the good used entries it consumed, in
//! order and with their lengths, and counts every bad one in `rx_errors`. After the port
//! closes, every buffer is back in the pool.
//!
//! Cases: `ZCNIC_LONG=1` (set by `cargo xtask test --long`) runs the long form: over 10^6
//! device actions in long sequences, and 10^6 short cases (a nightly-length run).
//!
//! Also here: every wait of the virtio driver on its device ends.

use proptest::prelude::*;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zcnic::virtio::{feature, negotiate, status, DmaMem, Modern, QueueKind, Transport, VirtioNet};
use zcnic::{
    Bar, Config, Error, FakeBar, FakeDma, Mempool, Nic, Packet, PciAddr, Stats, UserRegion,
    DATA_ROOM,
};
use zcnic_descriptors::virtio::{
    PackedQueue, SplitQueue, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_USED,
    VIRTQ_DESC_F_WRITE,
};
use zcnic_tests::adversary::{counters_grow, run_cases, send, Held};
use zcnic_tests::fake_virtio::{LegacyView, LEGACY_HDR_LEN};

type Split = SplitQueue<DmaMem>;
type Packed = PackedQueue<DmaMem>;

/// `virtio_net_hdr` with VERSION_1 (virtio 1.1 §5.1.6); a legacy device's has 10 bytes.
const HDR: u32 = 12;
const LEGACY_HDR: u32 = LEGACY_HDR_LEN as u32;
/// What a receive chain lets the device write: the header and a 2048-byte frame (the
/// lengths the strategies pick around; the model checks each queue's own).
const RX_WRITABLE: u32 = DATA_ROOM as u32 + HDR;
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xad, 0x0e, 0x02];
const RX: usize = 0;
const TX: usize = 1;
/// Where the windows sit in the one BAR, as QEMU lays them out.
const DEVICE_CFG: u32 = 0x2000;
const NOTIFY: u32 = 0x3000;
const NOTIFY_MULT: u32 = 4;

/// Modern common configuration offsets (virtio 1.1 §4.1.4.3).
mod common {
    pub const DEVICE_FEATURE_SELECT: u32 = 0x00;
    pub const DEVICE_FEATURE: u32 = 0x04;
    pub const DEVICE_STATUS: u32 = 0x14;
    pub const QUEUE_SELECT: u32 = 0x16;
    pub const QUEUE_SIZE: u32 = 0x18;
    pub const QUEUE_ENABLE: u32 = 0x1C;
    pub const QUEUE_NOTIFY_OFF: u32 = 0x1E;
    pub const QUEUE_DESC: u32 = 0x20;
    pub const QUEUE_DRIVER: u32 = 0x28;
    pub const QUEUE_DEVICE: u32 = 0x30;
}
use common as c;

fn addr() -> PciAddr {
    "0000:00:03.0".parse().unwrap()
}

// ---------------------------------------------------------------------------------------
// The device's registers.
// ---------------------------------------------------------------------------------------

/// A queue as the driver programmed it.
#[derive(Debug, Clone, Copy, Default)]
struct Areas {
    size: u16,
    desc: u64,
    driver: u64,
    device: u64,
}

#[derive(Debug, Default)]
struct DevState {
    features: u64,
    queue_max: u16,
    /// The status register ignores writes: a reset never finishes.
    status_sticks: bool,
    queues: [Option<Areas>; 2],
    kicks: [u64; 2],
    misdirected_kicks: u64,
}

/// A modern virtio-net BAR on the test thread: plain registers ([`FakeBar`]) whose
/// select-dependent registers and queue enable act inside the driver's write, as the
/// device's register decoder would.
#[derive(Debug, Clone)]
struct VBar {
    regs: FakeBar,
    st: Arc<Mutex<DevState>>,
}

fn read64(regs: &FakeBar, off: u32) -> u64 {
    u64::from(regs.read32(off)) | u64::from(regs.read32(off + 4)) << 32
}

impl VBar {
    fn new(features: u64, queue_max: u16) -> Self {
        let regs = FakeBar::new(0x4000);
        for (i, b) in (0u32..).zip(MAC) {
            regs.write8(DEVICE_CFG + i, b);
        }
        regs.write16(DEVICE_CFG + 6, 1); // VIRTIO_NET_S_LINK_UP (§5.1.4)
        regs.write16(0x12, 2); // num_queues (§4.1.4.3): a receive and a transmit queue
        let st = DevState {
            features,
            queue_max,
            ..DevState::default()
        };
        Self {
            regs,
            st: Arc::new(Mutex::new(st)),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DevState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, off: u32, width: u32, val: u32) {
        let mut st = self.state();
        if (NOTIFY..NOTIFY + 2 * NOTIFY_MULT).contains(&off) {
            let q = (off - NOTIFY) / NOTIFY_MULT;
            if width == 2 && off.is_multiple_of(NOTIFY_MULT) && val == q {
                st.kicks[q as usize] += 1;
            } else {
                st.misdirected_kicks += 1;
            }
            return;
        }
        if off == c::DEVICE_STATUS && st.status_sticks {
            return;
        }
        match width {
            1 => self.regs.write8(off, val as u8),
            2 => self.regs.write16(off, val as u16),
            _ => self.regs.write32(off, val),
        }
        match off {
            c::DEVICE_FEATURE_SELECT => {
                let half = match val {
                    0 => st.features as u32,
                    1 => (st.features >> 32) as u32,
                    _ => 0,
                };
                self.regs.write32(c::DEVICE_FEATURE, half);
            }
            c::QUEUE_SELECT => {
                let max = if val < 2 { st.queue_max } else { 0 };
                self.regs.write16(c::QUEUE_SIZE, max);
                self.regs.write16(c::QUEUE_NOTIFY_OFF, val as u16);
                self.regs.write16(c::QUEUE_ENABLE, 0);
            }
            c::QUEUE_ENABLE if val == 1 => {
                let q = usize::from(self.regs.read16(c::QUEUE_SELECT));
                if q < 2 {
                    st.queues[q] = Some(Areas {
                        size: self.regs.read16(c::QUEUE_SIZE),
                        desc: read64(&self.regs, c::QUEUE_DESC),
                        driver: read64(&self.regs, c::QUEUE_DRIVER),
                        device: read64(&self.regs, c::QUEUE_DEVICE),
                    });
                }
            }
            _ => {}
        }
    }

    fn transport(&self) -> Modern<VBar> {
        Modern::in_one_bar(self.clone(), 0, DEVICE_CFG, NOTIFY, NOTIFY_MULT)
    }
}

impl Bar for VBar {
    fn doorbell(&self, off: u32) -> zcnic::mmio::Doorbell {
        self.regs.doorbell(off)
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

fn offered(event_idx: bool, packed: bool) -> u64 {
    let mut f = feature::VERSION_1 | feature::ACCESS_PLATFORM | feature::MAC | feature::STATUS;
    if event_idx {
        f |= feature::EVENT_IDX;
    }
    if packed {
        f |= feature::RING_PACKED;
    }
    f
}

/// What a legacy device without VIRTIO_F_ANY_LAYOUT offers (as VirtualBox's): the header
/// in a descriptor of its own. Packed rings too, which no legacy device has, so that the
/// driver's packed path with the header apart meets the lies as well.
fn offered_legacy(event_idx: bool, packed: bool) -> u64 {
    offered(event_idx, packed) & !(feature::VERSION_1 | feature::ACCESS_PLATFORM)
}

fn config(rx_ring: u32, tx_ring: u32, pool: usize) -> Config {
    Config {
        rx_ring,
        tx_ring,
        pool,
        reset_timeout: Duration::from_millis(100),
        ..Config::default()
    }
}

fn open<Q: QueueKind>(bar: &VBar, dma: &FakeDma, cfg: &Config) -> VirtioNet<Q> {
    open_as::<Q>(Box::new(bar.transport()), dma, cfg)
}

fn open_as<Q: QueueKind>(t: Box<dyn Transport>, dma: &FakeDma, cfg: &Config) -> VirtioNet<Q> {
    let features = negotiate(t.as_ref(), &addr(), cfg, Q::PACKED).expect("features negotiated");
    assert_eq!(features & feature::RING_PACKED != 0, Q::PACKED);
    VirtioNet::<Q>::new(t, features, dma, addr(), cfg).expect("driver comes up")
}

// ---------------------------------------------------------------------------------------
// The device side of one queue.
// ---------------------------------------------------------------------------------------

/// Packed descriptor field offsets: `le64 addr; le32 len; le16 id; le16 flags` (§2.7.13).
const P_LEN: u64 = 8;
/// Split descriptor: `le64 addr; le32 len; le16 flags; le16 next` (§2.6.5).
const S_LEN: u64 = 8;
const S_FLAGS: u64 = 12;
const P_ID: u64 = 12;
const P_FLAGS: u64 = 14;

/// AVAIL and USED bits of a used descriptor in the lap with wrap counter `wrap` (§2.7.1).
fn used_bits(wrap: bool) -> u16 {
    if wrap {
        VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED
    } else {
        0
    }
}

/// Whether packed descriptor flags mark it available in the lap with wrap counter `wrap`.
fn is_avail(flags: u16, wrap: bool) -> bool {
    (flags & VIRTQ_DESC_F_AVAIL != 0) == wrap && (flags & VIRTQ_DESC_F_USED != 0) != wrap
}

/// One queue as the device plays it, with the test's model of what the driver will do.
#[derive(Debug)]
struct DevQueue {
    dma: FakeDma,
    a: Areas,
    packed: bool,
    /// The header's length, and whether it must be alone in a chain's first descriptor
    /// (legacy without ANY_LAYOUT).
    hdr: u32,
    apart: bool,
    /// Chains taken in step whose header was not alone in the first descriptor.
    misframed: u64,
    /// Split: next avail index the device reads, next used index it writes.
    last_avail: u16,
    used_idx: u16,
    /// Packed: next ring position (the device completes in order, so it reads and writes
    /// the same position) and its wrap counter.
    pos: u16,
    wrap: bool,
    /// Still in step with the driver: the model below is exact.
    synced: bool,
    /// Ids the driver has handed over and not had back (published and not consumed).
    in_device: HashSet<u16>,
    /// The model's view of what the driver published: split avail index, packed position.
    seen_avail: u16,
    seen_pos: u16,
    seen_wrap: bool,
    /// Used entries written and not yet consumed by the driver: (id, len).
    pending: VecDeque<(u32, u32)>,
    /// The last used entry written, for duplicates.
    last_entry: Option<(u32, u32)>,
}

/// What the device does to a queue.
#[derive(Debug, Clone)]
enum Act {
    /// Complete up to `n` chains properly (receive: `len` bytes after the header).
    Good { n: u8, len: u16 },
    /// Take the next chain and report it under this id.
    BadId(u32),
    /// Take the next chain and report it with this used length.
    Len(u32),
    /// Take the next chain (lost) and report the previous used entry again.
    Dup,
    /// Split: `used.flags` and `avail_event`; packed: device event flags and off/wrap.
    Suppress(u16, u16),
    /// Out of step from here: a used entry written at any slot (packed: any flags).
    Raw {
        slot: u16,
        id: u32,
        len: u32,
        flags: u16,
    },
    /// Out of step: `used.idx` moved by this much (packed: the device skips positions).
    Jump(u16),
    /// Out of step: 16 bytes of garbage over a descriptor (`avail`: split's avail ring).
    Garbage {
        slot: u16,
        avail: bool,
        bytes: [u8; 16],
    },
}

impl Act {
    /// Whether the device stays in step with the driver.
    fn keeps_step(&self) -> bool {
        !matches!(self, Act::Raw { .. } | Act::Jump(_) | Act::Garbage { .. })
    }
}

impl DevQueue {
    fn new(dma: FakeDma, a: Areas, packed: bool, apart: bool) -> Self {
        Self {
            dma,
            a,
            packed,
            hdr: if apart { LEGACY_HDR } else { HDR },
            apart,
            misframed: 0,
            last_avail: 0,
            used_idx: 0,
            pos: 0,
            wrap: true,
            synced: true,
            in_device: HashSet::new(),
            seen_avail: 0,
            seen_pos: 0,
            seen_wrap: true,
            pending: VecDeque::new(),
            last_entry: None,
        }
    }

    fn r16(&self, iova: u64) -> u16 {
        let mut b = [0u8; 2];
        // SAFETY: queue memory, which the driver accesses atomically.
        let ok = unsafe { self.dma.device_read(iova, &mut b) };
        assert!(ok, "queue memory at {iova:#x}");
        u16::from_le_bytes(b)
    }

    fn r32(&self, iova: u64) -> u32 {
        let mut b = [0u8; 4];
        // SAFETY: queue memory, which the driver accesses atomically.
        let ok = unsafe { self.dma.device_read(iova, &mut b) };
        assert!(ok, "queue memory at {iova:#x}");
        u32::from_le_bytes(b)
    }

    /// With the header apart, a chain taken in step must start with a descriptor of
    /// exactly the header and go on (virtio 1.1 §2.6.4.3); `at` is its first descriptor.
    fn check_framing(&mut self, at: u64, descs: u16) {
        if !self.apart || !self.synced {
            return;
        }
        let (len, more) = if self.packed {
            (self.r32(at + P_LEN), descs >= 2)
        } else {
            let more = self.r16(at + S_FLAGS) & VIRTQ_DESC_F_NEXT != 0;
            (self.r32(at + S_LEN), more)
        };
        if len != self.hdr || !more {
            self.misframed += 1;
        }
    }

    /// A packed used entry naming no chain in flight, written over a chain of `descs`
    /// descriptors: the device skips them all (§2.7.5), but the driver, not knowing the
    /// chain, moves on by one, so with chains of several descriptors (the header apart,
    /// a payload attached) the two part ways.
    fn out_of_step_past(&mut self, descs: u16) {
        if self.packed && descs > 1 {
            self.synced = false;
        }
    }

    fn w(&self, iova: u64, data: &[u8]) {
        // SAFETY: queue memory, and buffers the driver made available, never one the
        // application holds.
        let ok = unsafe { self.dma.device_write(iova, data) };
        assert!(ok, "queue memory at {iova:#x}");
    }

    fn size(&self) -> u16 {
        self.a.size
    }

    /// Split: `avail.idx`; offsets per virtio 1.1 §2.6.6 and §2.6.8.
    fn avail_idx(&self) -> u16 {
        self.r16(self.a.driver + 2)
    }

    fn avail_ring(&self, i: u16) -> u16 {
        self.r16(self.a.driver + 4 + 2 * u64::from(i % self.size()))
    }

    fn used_ring(&self, i: u16) -> u64 {
        self.a.device + 4 + 8 * u64::from(i % self.size())
    }

    fn desc(&self, pos: u16) -> u64 {
        self.a.desc + 16 * u64::from(pos % self.size())
    }

    /// Packed: the chain starting at `pos` if it is available in lap `wrap`: its id and
    /// how many descriptors it spans.
    fn packed_chain(&self, pos: u16, wrap: bool) -> Option<(u16, u16)> {
        let flags = self.r16(self.desc(pos) + P_FLAGS);
        if !is_avail(flags, wrap) {
            return None;
        }
        let (mut n, mut p, mut w, mut f) = (1u16, pos, wrap, flags);
        let mut id = self.r16(self.desc(pos) + P_ID);
        while f & VIRTQ_DESC_F_NEXT != 0 && n < self.size() {
            (p, w) = self.step(p, w, 1);
            f = self.r16(self.desc(p) + P_FLAGS);
            id = self.r16(self.desc(p) + P_ID);
            n += 1;
        }
        Some((id, n))
    }

    fn step(&self, pos: u16, wrap: bool, n: u16) -> (u16, bool) {
        let p = u32::from(pos) + u32::from(n);
        let size = u32::from(self.size());
        if p >= size {
            ((p - size) as u16, !wrap)
        } else {
            (p as u16, wrap)
        }
    }

    /// Updates the model with whatever the driver published since the last look.
    fn observe(&mut self) {
        if !self.synced {
            return;
        }
        if self.packed {
            for _ in 0..self.size() {
                let Some((id, n)) = self.packed_chain(self.seen_pos, self.seen_wrap) else {
                    break;
                };
                self.in_device.insert(id);
                (self.seen_pos, self.seen_wrap) = self.step(self.seen_pos, self.seen_wrap, n);
            }
        } else {
            let now = self.avail_idx();
            while self.seen_avail != now {
                self.in_device.insert(self.avail_ring(self.seen_avail));
                self.seen_avail = self.seen_avail.wrapping_add(1);
            }
        }
    }

    /// Takes the next chain the driver made available: its id (split: head index).
    fn take(&mut self) -> Option<(u16, u16)> {
        if self.packed {
            let (id, n) = self.packed_chain(self.pos, self.wrap)?;
            self.check_framing(self.desc(self.pos), n);
            Some((id, n))
        } else {
            if self.last_avail == self.avail_idx() {
                return None;
            }
            let head = self.avail_ring(self.last_avail);
            self.last_avail = self.last_avail.wrapping_add(1);
            self.check_framing(self.desc(head), 1);
            Some((head, 1))
        }
    }

    /// Writes a used entry for the chain just taken (`descs` long), in step.
    fn complete(&mut self, descs: u16, id: u32, len: u32, write_flag: bool) {
        if self.packed {
            let at = self.desc(self.pos);
            self.w(at + P_LEN, &len.to_le_bytes());
            self.w(at + P_ID, &(id as u16).to_le_bytes());
            let mut flags = used_bits(self.wrap);
            if write_flag {
                flags |= VIRTQ_DESC_F_WRITE;
            }
            // The flags last: they make the entry visible (§2.7.22).
            self.w(at + P_FLAGS, &flags.to_le_bytes());
            (self.pos, self.wrap) = self.step(self.pos, self.wrap, descs);
            let len = if write_flag { len } else { 0 };
            self.pending.push_back((u32::from(id as u16), len));
            self.last_entry = Some((u32::from(id as u16), len));
        } else {
            let at = self.used_ring(self.used_idx);
            self.w(at, &id.to_le_bytes());
            self.w(at + 4, &len.to_le_bytes());
            self.used_idx = self.used_idx.wrapping_add(1);
            // used.idx last: it makes the entry visible (§2.6.8.2).
            self.w(self.a.device + 2, &self.used_idx.to_le_bytes());
            self.pending.push_back((id, len));
            self.last_entry = Some((id, len));
        }
    }

    fn act(&mut self, act: &Act, rx: bool) {
        self.observe();
        if !act.keeps_step() {
            self.synced = false;
        }
        match *act {
            Act::Good { n, len } => {
                for _ in 0..n {
                    let Some((id, descs)) = self.take() else {
                        break;
                    };
                    let used = if rx { self.hdr + u32::from(len) } else { 0 };
                    self.complete(descs, id.into(), used, rx);
                }
            }
            Act::BadId(bad) => {
                if let Some((_, descs)) = self.take() {
                    self.out_of_step_past(descs);
                    self.complete(descs, bad, self.hdr + 60, rx);
                }
            }
            Act::Len(len) => {
                if let Some((id, descs)) = self.take() {
                    self.complete(descs, id.into(), len, true);
                }
            }
            Act::Dup => {
                if let Some(((id, len), (_, descs))) = self.last_entry.zip(self.take()) {
                    self.out_of_step_past(descs);
                    self.complete(descs, id, len, rx || len > 0);
                }
            }
            Act::Suppress(flags, event) => {
                let (f, e) = if self.packed {
                    (self.a.device + 2, self.a.device)
                } else {
                    let avail_event = self.a.device + 4 + 8 * u64::from(self.size());
                    (self.a.device, avail_event)
                };
                self.w(f, &flags.to_le_bytes());
                self.w(e, &event.to_le_bytes());
            }
            Act::Raw {
                slot,
                id,
                len,
                flags,
            } => {
                if self.packed {
                    let at = self.desc(slot);
                    self.w(at + P_LEN, &len.to_le_bytes());
                    self.w(at + P_ID, &(id as u16).to_le_bytes());
                    self.w(at + P_FLAGS, &flags.to_le_bytes());
                } else {
                    let at = self.used_ring(slot);
                    self.w(at, &id.to_le_bytes());
                    self.w(at + 4, &len.to_le_bytes());
                }
            }
            Act::Jump(d) => {
                if self.packed {
                    (self.pos, self.wrap) = self.step(self.pos, self.wrap, d % self.size());
                } else {
                    self.used_idx = self.used_idx.wrapping_add(d);
                    self.w(self.a.device + 2, &self.used_idx.to_le_bytes());
                }
            }
            Act::Garbage { slot, avail, bytes } => {
                if avail && !self.packed {
                    self.w(
                        self.a.driver + 4 + 2 * u64::from(slot % self.size()),
                        &bytes[..2],
                    );
                } else {
                    self.w(self.desc(slot), &bytes);
                }
            }
        }
    }

    /// What `rx_batch(max)` must do while in step: frames (their lengths) and errors.
    fn expect_rx(&mut self, max: usize) -> Option<(Vec<usize>, u64)> {
        self.observe();
        if !self.synced {
            return None;
        }
        let (mut frames, mut errors) = (Vec::new(), 0);
        for _ in 0..max.min(self.pending.len()) {
            let (id, len) = self.pending.pop_front().unwrap();
            let known = u16::try_from(id)
                .ok()
                .filter(|i| *i < self.size() && self.in_device.contains(i));
            match known {
                Some(i) if len <= DATA_ROOM as u32 + self.hdr => {
                    self.in_device.remove(&i);
                    match len.saturating_sub(self.hdr) {
                        0 => errors += 1,
                        n => frames.push(n as usize),
                    }
                }
                Some(i) => {
                    // Too long: quarantined, never reused.
                    self.in_device.remove(&i);
                    errors += 1;
                }
                None => errors += 1,
            }
        }
        Some((frames, errors))
    }

    /// Completes every transmit chain the driver published (a device back to honesty).
    fn drain_tx(&mut self) {
        for _ in 0..2 * u32::from(self.size()) {
            let Some((id, descs)) = self.take() else {
                break;
            };
            self.complete(descs, id.into(), 0, false);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The state machine.
// ---------------------------------------------------------------------------------------

/// One step: the application calls the driver, or the device acts on a queue.
#[derive(Debug, Clone)]
enum Step {
    /// `tx_batch` of frames (length, and the length of an attached application payload).
    Tx(Vec<(u16, Option<u16>)>),
    /// `rx_batch` with this `max`.
    Rx(u16),
    /// The application drops one held frame (index modulo the count), or all.
    Release(u16, bool),
    /// The device sends everything, then `flush()`.
    Flush,
    /// `link()`.
    Link,
    /// The device acts on the receive queue.
    DevRx(Act),
    /// The device acts on the transmit queue.
    DevTx(Act),
}

/// Device actions on a queue; `lies`: also those that put the device out of step.
fn act(rx: bool, lies: bool) -> BoxedStrategy<Act> {
    let good = (1u8..=40, 1u16..=DATA_ROOM as u16).prop_map(|(n, len)| Act::Good { n, len });
    let id = prop_oneof![0u32..70, Just(u32::from(u16::MAX)), any::<u32>()];
    let len = prop_oneof![
        0u32..=RX_WRITABLE + 1,
        Just(RX_WRITABLE),
        Just(RX_WRITABLE + 1),
        any::<u32>()
    ];
    let suppress = (any::<u16>(), any::<u16>()).prop_map(|(f, e)| Act::Suppress(f, e));
    if !lies {
        return prop_oneof![6 => good, 1 => suppress].boxed();
    }
    let raw =
        (any::<u16>(), id.clone(), len.clone(), any::<u16>()).prop_map(|(slot, id, len, flags)| {
            Act::Raw {
                slot,
                id,
                len,
                flags,
            }
        });
    let jump = prop_oneof![1u16..4, any::<u16>()].prop_map(Act::Jump);
    let garbage = (any::<u16>(), any::<bool>(), any::<[u8; 16]>())
        .prop_map(|(slot, avail, bytes)| Act::Garbage { slot, avail, bytes });
    let in_step_weight = if rx { 4 } else { 2 };
    prop_oneof![
        12 => good,
        in_step_weight => id.prop_map(Act::BadId),
        in_step_weight => len.prop_map(Act::Len),
        in_step_weight => Just(Act::Dup),
        2 => suppress,
        1 => raw,
        1 => jump,
        1 => garbage,
    ]
    .boxed()
}

fn frame_len() -> impl Strategy<Value = u16> {
    prop_oneof![8 => 60u16..=1514, 1 => Just(0u16), 1 => 1u16..=2048]
}

fn step(tx_lies: bool) -> impl Strategy<Value = Step> {
    let frames = prop::collection::vec(
        (frame_len(), prop::option::weighted(0.15, 1u16..=9000)),
        0..40,
    );
    let flush = if tx_lies { 0 } else { 1 };
    prop_oneof![
        6 => frames.prop_map(Step::Tx),
        6 => (0u16..=70).prop_map(Step::Rx),
        3 => (any::<u16>(), prop::bool::weighted(0.1)).prop_map(|(i, all)| Step::Release(i, all)),
        flush => Just(Step::Flush),
        1 => Just(Step::Link),
        10 => act(true, true).prop_map(Step::DevRx),
        6 => act(false, tx_lies).prop_map(Step::DevTx),
    ]
}

/// A whole case: device options, ring and pool sizes, and the steps.
#[derive(Debug, Clone)]
struct Case {
    event_idx: bool,
    queue_max: u16,
    rx_ring: u32,
    tx_ring: u32,
    /// A pool barely above the receive ring (refills run dry) or a roomy one.
    tight_pool: bool,
    /// A legacy device without ANY_LAYOUT: the header in a descriptor of its own, and
    /// the queue size the device has (rounded up to a power of two for split rings).
    legacy: bool,
    steps: Vec<Step>,
}

fn case(tx_lies: bool, max_steps: usize) -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        prop::sample::select(vec![8u16, 16, 24, 64, 256]),
        prop::sample::select(vec![8u32, 16, 64]),
        prop::sample::select(vec![8u32, 32, 64]),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.3),
        prop::collection::vec(step(tx_lies), 1..max_steps),
    )
        .prop_map(
            |(event_idx, queue_max, rx_ring, tx_ring, tight_pool, legacy, steps)| Case {
                event_idx,
                queue_max,
                rx_ring,
                tx_ring,
                tight_pool,
                legacy,
                steps,
            },
        )
}

/// What the cases did, to show the state machines reach every path.
#[derive(Debug, Default)]
struct Tally {
    cases: AtomicU64,
    /// Cases on a legacy device without ANY_LAYOUT (the header apart).
    legacy: AtomicU64,
    device_actions: AtomicU64,
    delivered: AtomicU64,
    rx_errors: AtomicU64,
    rx_no_buf: AtomicU64,
    tx_sent: AtomicU64,
    tx_errors: AtomicU64,
    checked_rx: AtomicU64,
    slow_closes: AtomicU64,
}

impl Tally {
    fn report(&self, name: &str) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{name}: {} cases ({} with the header apart), {} device actions; {} frames delivered, {} rx_errors, {} rx_no_buf, {} frames sent, \
             {} tx_errors; {} rx_batch calls checked against the model; {} closes waited \
             for a transmit ring the device never drained",
            g(&self.cases),
            g(&self.legacy),
            g(&self.device_actions),
            g(&self.delivered),
            g(&self.rx_errors),
            g(&self.rx_no_buf),
            g(&self.tx_sent),
            g(&self.tx_errors),
            g(&self.checked_rx),
            g(&self.slow_closes),
        )
    }
}

/// The application and the device around one port.
struct Machine<Q: QueueKind> {
    nic: VirtioNet<Q>,
    bar: VBar,
    pool: Arc<Mempool>,
    payload: Arc<UserRegion>,
    queues: [DevQueue; 2],
    tx_lies: bool,
    held: Held,
    last: Stats,
}

impl<Q: QueueKind> Machine<Q> {
    fn open(c: &Case, tx_lies: bool) -> Self {
        let dma = FakeDma::new();
        let bar = if c.legacy {
            VBar::new(
                offered_legacy(c.event_idx, Q::PACKED),
                c.queue_max.next_power_of_two(),
            )
        } else {
            VBar::new(offered(c.event_idx, Q::PACKED), c.queue_max)
        };
        let pool = if c.tight_pool {
            c.rx_ring as usize + 4
        } else {
            (c.rx_ring + c.tx_ring) as usize + 96
        };
        let cfg = config(c.rx_ring, c.tx_ring, pool);
        let mut nic = if c.legacy {
            open_as::<Q>(Box::new(LegacyView(bar.transport())), &dma, &cfg)
        } else {
            open::<Q>(&bar, &dma, &cfg)
        };
        assert_eq!(nic.header_apart(), c.legacy);
        let areas = bar.state().queues;
        let queue = |q: usize| {
            let a = areas[q].expect("queue enabled");
            DevQueue::new(dma.clone(), a, Q::PACKED, c.legacy)
        };
        let payload = Arc::new(UserRegion::with_data(&[0x5a; 9000], dma.mapper()).unwrap());
        let last = nic.stats();
        Self {
            pool: nic.pool().clone(),
            nic,
            queues: [queue(RX), queue(TX)],
            bar,
            payload,
            tx_lies,
            held: Held::default(),
            last,
        }
    }

    fn tx(&mut self, frames: &[(u16, Option<u16>)]) -> Result<(), TestCaseError> {
        let mut batch = self.held.batch(&self.pool, &self.payload, frames)?;
        let n = send(&mut self.nic, &mut batch)?;
        // Empty frames, and frames longer than the MTU allows (a payload makes them so),
        // are refused: counted, never cut.
        let max_frame = Config::default().max_frame();
        let refused = frames[..n]
            .iter()
            .filter(|&&(len, plen)| {
                len == 0 || usize::from(len) + usize::from(plen.unwrap_or(0)) > max_frame
            })
            .count() as u64;
        let s = self.nic.stats();
        prop_assert_eq!(s.tx_packets - self.last.tx_packets, n as u64 - refused);
        let tx_errors = s.tx_errors - self.last.tx_errors;
        if self.tx_lies {
            // Bad used entries on the transmit queue count here too.
            prop_assert!(
                tx_errors >= refused,
                "tx_errors {tx_errors} < {refused} refused"
            );
        } else {
            prop_assert_eq!(tx_errors, refused, "tx_errors");
        }
        Ok(())
    }

    fn rx(&mut self, max: u16, tally: &Tally) -> Result<(), TestCaseError> {
        let expect = self.queues[RX].expect_rx(max.into());
        let mut got = Vec::new();
        let n = self.nic.rx_batch(&mut got, max.into());
        prop_assert_eq!(n, got.len());
        let s = self.nic.stats();
        if let Some((frames, errors)) = expect {
            tally.checked_rx.fetch_add(1, Ordering::Relaxed);
            let lens: Vec<usize> = got.iter().map(Packet::len).collect();
            prop_assert_eq!(
                &lens,
                &frames,
                "frames delivered vs good used entries consumed"
            );
            prop_assert_eq!(s.rx_errors - self.last.rx_errors, errors, "rx_errors");
        }
        prop_assert_eq!(s.rx_packets - self.last.rx_packets, n as u64);
        for p in got {
            prop_assert!(
                (1..=DATA_ROOM).contains(&p.len()),
                "frame of {} bytes",
                p.len()
            );
            self.held.take(p, "rx_batch")?;
        }
        Ok(())
    }

    fn step(&mut self, s: &Step, tally: &Tally) -> Result<(), TestCaseError> {
        match s {
            Step::Tx(frames) => self.tx(frames)?,
            Step::Rx(max) => self.rx(*max, tally)?,
            Step::Release(i, all) => self.held.release(usize::from(*i), *all),
            Step::Flush => {
                self.queues[TX].drain_tx();
                prop_assert!(self.nic.flush(), "flush after the device sent everything");
            }
            Step::Link => prop_assert!(self.nic.link().up),
            Step::DevRx(a) => {
                tally.device_actions.fetch_add(1, Ordering::Relaxed);
                self.queues[RX].act(a, true)
            }
            Step::DevTx(a) => {
                tally.device_actions.fetch_add(1, Ordering::Relaxed);
                self.queues[TX].act(a, false)
            }
        }
        let misframed = self.queues.each_ref().map(|q| q.misframed);
        prop_assert_eq!(
            misframed,
            [0, 0],
            "chains with the header not alone (rx, tx)"
        );
        let now = self.nic.stats();
        counters_grow(&self.last, &now)?;
        self.last = now;
        Ok(())
    }

    /// Closes the port once the device has sent what it can, and checks that every buffer
    /// came back and every kick went where it should.
    fn close(mut self, tally: &Tally) -> Result<(), TestCaseError> {
        let s = &self.last;
        for (c, v) in [
            (&tally.cases, 1),
            (&tally.legacy, u64::from(self.nic.header_apart())),
            (&tally.delivered, s.rx_packets),
            (&tally.rx_errors, s.rx_errors),
            (&tally.rx_no_buf, s.rx_no_buf),
            (&tally.tx_sent, s.tx_packets),
            (&tally.tx_errors, s.tx_errors),
        ] {
            c.fetch_add(v, Ordering::Relaxed);
        }
        self.held.clear();
        self.queues[TX].drain_tx();
        let (pool, bar) = (self.pool.clone(), self.bar.clone());
        let started = Instant::now();
        drop(self);
        if started.elapsed() >= Duration::from_millis(400) {
            tally.slow_closes.fetch_add(1, Ordering::Relaxed);
        }
        prop_assert_eq!(pool.free_count(), pool.capacity(), "buffers lost");
        prop_assert_eq!(bar.state().misdirected_kicks, 0);
        Ok(())
    }
}

fn run<Q: QueueKind>(c: &Case, tx_lies: bool, tally: &Tally) -> Result<(), TestCaseError> {
    let mut m = Machine::<Q>::open(c, tx_lies);
    for s in &c.steps {
        m.step(s, tally)?;
    }
    m.close(tally)
}

/// Runs one state machine and reports what it covered.
fn machine<Q: QueueKind>(name: &str, tx_lies: bool, steps: usize, short: u32, long_cases: u32) {
    let tally = Tally::default();
    let started = Instant::now();
    let covered = |t: &Tally| {
        [
            &t.delivered,
            &t.rx_errors,
            &t.tx_sent,
            &t.checked_rx,
            &t.legacy,
        ]
        .iter()
        .all(|c| c.load(Ordering::Relaxed) > 0)
    };
    // Random cases reach every path nearly always; a run that misses one (about one in
    // thirty) plays more cases, up to three rounds, before the check below calls it.
    for _ in 0..3 {
        run_cases(
            short,
            long_cases,
            || case(tx_lies, steps),
            |c| run::<Q>(&c, tx_lies, &tally),
        );
        if covered(&tally) {
            break;
        }
    }
    eprintln!(
        "{} (in {:.1} s)",
        tally.report(name),
        started.elapsed().as_secs_f64()
    );
    for (what, c) in [
        ("frames delivered", &tally.delivered),
        ("receive errors", &tally.rx_errors),
        ("frames sent", &tally.tx_sent),
        ("a check against the model", &tally.checked_rx),
        ("the header apart", &tally.legacy),
    ] {
        assert!(c.load(Ordering::Relaxed) > 0, "no case reached {what}");
    }
}

/// Lies on the receive queue (the transmit side completes properly, so closing is quick):
/// no panic, no buffer handed out twice or lost, bad entries counted, good ones delivered.
#[test]
fn split_a_lying_receive_side_breaks_nothing() {
    machine::<Split>("split, receive lies", false, 300, 200, 7000);
}

#[test]
fn packed_a_lying_receive_side_breaks_nothing() {
    machine::<Packed>("packed, receive lies", false, 300, 200, 7000);
}

/// Lies on both queues. A transmit ring the device never drains costs the close its half
/// second `flush`, so these run fewer, longer cases.
#[test]
fn split_a_lying_device_breaks_nothing() {
    machine::<Split>("split, lies on both queues", true, 1000, 8, 300);
}

#[test]
fn packed_a_lying_device_breaks_nothing() {
    machine::<Packed>("packed, lies on both queues", true, 1000, 8, 300);
}

// ---------------------------------------------------------------------------------------
// Every wait on the device ends. (The driver does not wait on QUEUE_ENABLE: it never reads
// it back, so there is no queue-enable wait to time out.)
// ---------------------------------------------------------------------------------------

/// Generous bound on a wait that should end after its timeout: the machine is shared.
const HANG: Duration = Duration::from_secs(10);

/// A device whose status never reads 0 after the driver writes 0: negotiation gives up
/// after the reset timeout with an error that says what it waited for.
#[test]
fn reset_that_never_finishes_times_out() {
    for packed in [false, true] {
        let bar = VBar::new(offered(true, packed), 64);
        bar.regs.write8(
            c::DEVICE_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        bar.state().status_sticks = true;
        let cfg = config(64, 64, 256);
        let started = Instant::now();
        match negotiate(&bar.transport(), &addr(), &cfg, packed) {
            Err(e @ Error::Timeout { what, ms, .. }) => {
                assert!(what.contains("reset"), "{e}");
                assert_eq!(ms, 100);
                assert!(e.to_string().contains("0000:00:03.0"), "{e}");
            }
            other => panic!("expected a reset timeout, got {other:?}"),
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(100) && waited < HANG,
            "{waited:?}"
        );
    }
}

/// A device that never completes a transmit chain: `flush` gives up after its half second
/// and says so; closing the port (which flushes again) ends too, with every buffer back.
fn flush_gives_up<Q: QueueKind>() {
    let bar = VBar::new(offered(true, Q::PACKED), 64);
    let dma = FakeDma::new();
    let mut nic = open::<Q>(&bar, &dma, &config(64, 64, 256));
    let pool = nic.pool().clone();
    let mut batch = Vec::new();
    pool.alloc_batch(&mut batch, 10);
    batch.iter_mut().for_each(|p| p.set_len(60).unwrap());
    assert_eq!(nic.tx_batch(&mut batch), 10);
    let started = Instant::now();
    assert!(!nic.flush(), "nothing was sent");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < HANG,
        "{waited:?}"
    );
    let started = Instant::now();
    drop(nic);
    assert!(started.elapsed() < HANG);
    assert_eq!(pool.free_count(), pool.capacity());
}

#[test]
fn split_flush_on_a_device_that_never_sends_gives_up() {
    flush_gives_up::<Split>();
}

#[test]
fn packed_flush_on_a_device_that_never_sends_gives_up() {
    flush_gives_up::<Packed>();
}

/// Closing a port whose device no longer resets still ends (the reset wait on close is
/// bounded), and keeps the receive buffers the device may still write out of the pool:
/// with no bus master to turn off, nothing proves the device stopped.
fn close_without_reset<Q: QueueKind>() {
    let bar = VBar::new(offered(true, Q::PACKED), 64);
    let dma = FakeDma::new();
    let nic = open::<Q>(&bar, &dma, &config(64, 64, 256));
    let pool = nic.pool().clone();
    bar.state().status_sticks = true;
    let started = Instant::now();
    drop(nic);
    assert!(started.elapsed() < HANG);
    assert_eq!(
        pool.free_count(),
        pool.capacity() - 64,
        "the 64 receive buffers stay out of the pool"
    );
    assert_ne!(
        bar.regs.read8(c::DEVICE_STATUS),
        0,
        "the device ignored the reset"
    );
}

#[test]
fn split_close_with_a_reset_that_never_finishes_ends() {
    close_without_reset::<Split>();
}

#[test]
fn packed_close_with_a_reset_that_never_finishes_ends() {
    close_without_reset::<Packed>();
}

/// Breadth over depth: many short receive-side lies, each on a freshly opened port; the
/// long form runs 10^6 cases in all (half per ring format).
#[test]
fn split_many_short_lies_break_nothing() {
    machine::<Split>("split, many short lies", false, 6, 150, 500_000);
}

#[test]
fn packed_many_short_lies_break_nothing() {
    machine::<Packed>("packed, many short lies", false, 6, 150, 500_000);
}
