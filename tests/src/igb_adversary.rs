//! The device side of the adversarial igb test (`tests/adversarial_igb.rs`): an 82576
//! register file that completes resets and PHY writes inside the driver's write, as the
//! register decoder would, and a device that lies through the rings and registers, played
//! step by step on the test thread. Nothing here trusts the driver's crate for a bit
//! position: the descriptor bits are spelled out from the 82576 datasheet (§7.1.5,
//! §7.2.2.3) so that the test checks the driver against the datasheet, not against itself.

use proptest::prelude::*;
use zcnic::igb::regs::{self, stat};
use zcnic::rss::HashType;
use zcnic::{Bar, FakeBar, FakeDma, DATA_ROOM};

/// MAC in RAL0/RAH0.
pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xad, 0x76, 0x01];

/// Receive write-back status and error bits (§7.1.5.2; Linux `E1000_RXD_STAT_*`,
/// `E1000_RXDEXT_STATERR_*`).
pub mod rx {
    pub const DD: u32 = 1 << 0;
    pub const EOP: u32 = 1 << 1;
    pub const CE: u32 = 1 << 24;
    pub const SE: u32 = 1 << 25;
    pub const SEQ: u32 = 1 << 26;
    pub const CXE: u32 = 1 << 28;
    pub const TCPE: u32 = 1 << 29;
    pub const IPE: u32 = 1 << 30;
    pub const RXE: u32 = 1 << 31;
    /// The errors that make a frame unusable; TCPE and IPE only report a bad checksum.
    pub const FRAME_ERRORS: u32 = CE | SE | SEQ | CXE | RXE;
}

/// Advanced transmit data descriptor bits (§7.2.2.3).
pub mod tx {
    /// DCMD in `cmd_type_len`.
    pub const EOP: u32 = 1 << 24;
    pub const IFCS: u32 = 1 << 25;
    pub const RS: u32 = 1 << 27;
    pub const DEXT: u32 = 1 << 29;
    /// DTYP 0011b: data descriptor.
    pub const DTYP_DATA: u32 = 0x3 << 20;
    /// STA.DD in `olinfo_status`.
    pub const DD: u32 = 1 << 0;
    /// PAYLEN's position in `olinfo_status`.
    pub const PAYLEN_SHIFT: u32 = 14;
}

/// The 82576's BAR on the test thread: plain registers, except that CTRL.RST clears
/// itself and an MDIC write completes (a BMCR auto-negotiation restart bringing the link
/// up) inside the driver's write. Open and close then cost no wait at all.
#[derive(Debug, Clone)]
pub struct DevBar {
    pub regs: FakeBar,
}

impl DevBar {
    /// Registers after power-up: MAC valid in entry 0, the NVM auto-read done, link down
    /// until the driver restarts auto-negotiation.
    pub fn new() -> Self {
        let regs = FakeBar::new(0x20000);
        regs.write32(
            regs::RAL0,
            u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]]),
        );
        regs.write32(
            regs::RAH0,
            u32::from(u16::from_le_bytes([MAC[4], MAC[5]])) | regs::RAH_AV,
        );
        regs.write32(regs::EECD, regs::EECD_AUTO_RD);
        Self { regs }
    }
}

impl Default for DevBar {
    fn default() -> Self {
        Self::new()
    }
}

/// STATUS with the link up at 1000 Mbit/s, full duplex (§8.2.2: FD, LU, SPEED = 10b).
const STATUS_UP_1000_FD: u32 = 1 | 1 << 1 | 1 << 7;

impl Bar for DevBar {
    fn doorbell(&self, off: u32) -> zcnic::mmio::Doorbell {
        self.regs.doorbell(off)
    }

    fn doorbell16(&self, off: u32) -> zcnic::mmio::Doorbell {
        self.regs.doorbell16(off)
    }

    fn read32(&self, off: u32) -> u32 {
        self.regs.read32(off)
    }

    fn write32(&self, off: u32, val: u32) {
        let val = match off {
            regs::CTRL => val & !regs::CTRL_RST,
            regs::MDIC => {
                let bmcr = (val >> regs::MDIC_REG_SHIFT) & 0x1f == regs::PHY_BMCR;
                if val & regs::MDIC_OP_WRITE != 0 && bmcr && val & 0x0200 != 0 {
                    self.regs.write32(regs::STATUS, STATUS_UP_1000_FD);
                }
                val | regs::MDIC_READY
            }
            _ => val,
        };
        self.regs.write32(off, val)
    }

    fn read16(&self, off: u32) -> u16 {
        self.regs.read16(off)
    }

    fn write16(&self, off: u32, val: u16) {
        self.regs.write16(off, val)
    }

    fn read8(&self, off: u32) -> u8 {
        self.regs.read8(off)
    }

    fn write8(&self, off: u32, val: u8) {
        self.regs.write8(off, val)
    }
}

/// Statistics registers the device may report anything in, both halves of the 64-bit
/// pairs included (the driver's totals saturate).
pub const COUNTERS: [u32; 12] = [
    stat::GPRC,
    stat::GPTC,
    stat::GORCL,
    stat::GORCL + 4,
    stat::GOTCL,
    stat::GOTCL + 4,
    stat::TPR,
    stat::TPT,
    stat::MPC,
    stat::RNBC,
    stat::CRCERRS,
    regs::rqdpc(0),
];

/// A register the device side moves.
#[derive(Debug, Clone, Copy)]
pub enum Reg {
    Rdh,
    Tdh,
    Status,
    /// One of [`COUNTERS`].
    Counter(usize),
}

/// What a transmit write-back leaves in the address word, which is the device's to
/// overwrite once it wrote DD.
#[derive(Debug, Clone, Copy)]
pub enum AddrWord {
    Keep,
    Zero,
    Scramble(u64),
}

/// One step: the application calls the driver, or the device does something.
#[derive(Debug, Clone)]
pub enum Step {
    /// `tx_batch` of frames (length, and the length of an attached application payload).
    Tx(Vec<(u16, Option<u16>)>),
    /// `rx_batch` with this `max`.
    Rx(u16),
    /// The application drops one held frame (index modulo the count), or all.
    Release(u16, bool),
    /// `flush()` once the device has finished every transmit descriptor.
    Flush,
    /// `link()`.
    Link,
    /// `set_promisc`.
    Promisc(bool),
    /// `add_multicast` (true) or `remove_multicast` of group `n % 4` of [`GROUPS`], two of
    /// which share an MTA hash bit.
    Group(u8, bool),
    /// Device: a receive write-back of any length and status on any slot, with an RSS
    /// hash and type (any of the 16, the reserved ones included).
    RxWb {
        slot: u16,
        len: u16,
        status: u32,
        hash: u32,
        kind: u8,
    },
    /// Device: up to `n` frames of `len` bytes from RDH towards RDT, as silicon writes
    /// them back, with `csum` (checksum-error bits, which do not drop a frame) set.
    RxGood { n: u8, len: u16, csum: u32 },
    /// Device: one frame over `parts` descriptors from RDH towards RDT, EOP only on the
    /// last one, or on none (`eop` false: the frame is cut off).
    RxSplit { parts: u8, len: u16, eop: bool },
    /// Device: the read format written back unchanged but for `status` and `len`: the
    /// buffer address is left where the write-back has its packet type and hash.
    RxReadBack { slot: u16, status: u32, len: u16 },
    /// Device: transmit status `status` on any slot, the address word as `addr`.
    TxWb {
        slot: u16,
        status: u32,
        addr: AddrWord,
    },
    /// Device: up to `n` descriptors sent from TDH towards TDT, DD where RS asks.
    TxGood { n: u8, addr: AddrWord },
    /// Device: a register set to anything.
    Reg(Reg, u32),
    /// Device: 16 bytes of garbage over a whole descriptor.
    Garbage {
        tx: bool,
        slot: u16,
        bytes: [u8; 16],
    },
}

impl Step {
    /// Whether the device, not the application, takes this step.
    pub fn is_device(&self) -> bool {
        !matches!(
            self,
            Step::Tx(_)
                | Step::Rx(_)
                | Step::Release(..)
                | Step::Flush
                | Step::Link
                | Step::Promisc(_)
                | Step::Group(..)
        )
    }
}

/// The multicast groups [`Step::Group`] joins and leaves: 33:33:ff:00:00:01 and
/// 01:00:5e:00:00:01 share MTA hash 0x010.
pub const GROUPS: [[u8; 6]; 4] = [
    [0x33, 0x33, 0xff, 0x00, 0x00, 0x01],
    [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01],
    [0x33, 0x33, 0xff, 0x00, 0x00, 0x02],
    [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb],
];

fn frame_len() -> impl Strategy<Value = u16> {
    prop_oneof![8 => 60u16..=1514, 1 => Just(0u16), 1 => 1u16..=2048]
}

fn rx_len() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => 1u16..=2048,
        1 => Just(0u16),
        1 => 2049u16..=u16::MAX,
        1 => Just(u16::MAX),
    ]
}

/// Write-back status words: good, EOP-less, one frame error, a checksum error, anything.
fn rx_status() -> impl Strategy<Value = u32> {
    use rx::*;
    let frame_error = prop::sample::select(vec![CE, SE, SEQ, CXE, RXE]);
    let csum = prop::sample::select(vec![TCPE, IPE, TCPE | IPE]);
    prop_oneof![
        3 => Just(DD | EOP),
        1 => Just(DD),
        2 => frame_error.prop_map(|e| DD | EOP | e),
        2 => csum.prop_map(|e| DD | EOP | e),
        2 => any::<u32>(),
    ]
}

fn addr_word() -> impl Strategy<Value = AddrWord> {
    prop_oneof![
        1 => Just(AddrWord::Keep),
        2 => Just(AddrWord::Zero),
        2 => any::<u64>().prop_map(AddrWord::Scramble),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let frames = prop::collection::vec(
        (frame_len(), prop::option::weighted(0.15, 1u16..=16500)),
        0..40,
    );
    let reg = prop_oneof![
        Just(Reg::Rdh),
        Just(Reg::Tdh),
        Just(Reg::Status),
        (0..COUNTERS.len()).prop_map(Reg::Counter),
    ];
    let reg_val = prop_oneof![4 => 0u32..80, 1 => any::<u32>()];
    let csum = prop_oneof![3 => Just(0u32), 1 => Just(rx::TCPE), 1 => Just(rx::IPE)];
    let tx_status = prop_oneof![2 => Just(tx::DD), 1 => any::<u32>()];
    prop_oneof![
        6 => frames.prop_map(Step::Tx),
        6 => (0u16..=70).prop_map(Step::Rx),
        3 => (any::<u16>(), prop::bool::weighted(0.1)).prop_map(|(i, all)| Step::Release(i, all)),
        1 => Just(Step::Flush),
        1 => Just(Step::Link),
        1 => any::<bool>().prop_map(Step::Promisc),
        1 => (0u8..4, any::<bool>()).prop_map(|(n, join)| Step::Group(n, join)),
        5 => (any::<u16>(), rx_len(), rx_status(), any::<u32>(), 0u8..16)
            .prop_map(|(slot, len, status, hash, kind)| Step::RxWb { slot, len, status, hash, kind }),
        6 => (1u8..=80, 1u16..=2048, csum).prop_map(|(n, len, csum)| Step::RxGood { n, len, csum }),
        2 => (2u8..=5, 1u16..=2048, prop::bool::weighted(0.8))
            .prop_map(|(parts, len, eop)| Step::RxSplit { parts, len, eop }),
        2 => (any::<u16>(), rx_status(), any::<u16>())
            .prop_map(|(slot, status, len)| Step::RxReadBack { slot, status, len }),
        3 => (any::<u16>(), tx_status, addr_word())
            .prop_map(|(slot, status, addr)| Step::TxWb { slot, status, addr }),
        6 => (1u8..=80, addr_word()).prop_map(|(n, addr)| Step::TxGood { n, addr }),
        3 => (reg, reg_val).prop_map(|(r, v)| Step::Reg(r, v)),
        1 => (any::<bool>(), any::<u16>(), any::<[u8; 16]>())
            .prop_map(|(tx, slot, bytes)| Step::Garbage { tx, slot, bytes }),
    ]
}

/// A whole case: queue pairs, ring sizes, pool size, the steps (each on one queue pair,
/// its number taken modulo `queues`) and the order of teardown.
#[derive(Debug, Clone)]
pub struct Case {
    pub queues: u16,
    pub rx_ring: u32,
    pub tx_ring: u32,
    /// A pool barely above what the receive rings need (runs dry) or a roomy one.
    pub tight_pool: bool,
    pub steps: Vec<(u16, Step)>,
    /// At close, the port is dropped before its queues (else after them).
    pub port_first: bool,
}

/// Cases of up to `max_steps` steps on rings the igb accepts (RX from 8, TX from 32), on
/// a port of one of `queues` queue pairs.
pub fn case(max_steps: usize, queues: Vec<u16>) -> impl Strategy<Value = Case> {
    (
        prop::sample::select(queues),
        prop::sample::select(vec![8u32, 16, 64]),
        prop::sample::select(vec![32u32, 64]),
        prop::bool::weighted(0.3),
        prop::collection::vec((0u16..8, step()), 1..max_steps),
        any::<bool>(),
    )
        .prop_map(
            |(queues, rx_ring, tx_ring, tight_pool, steps, port_first)| Case {
                queues,
                rx_ring,
                tx_ring,
                tight_pool,
                steps: steps.into_iter().map(|(q, s)| (q % queues, s)).collect(),
                port_first,
            },
        )
}

/// A receive descriptor as the device left it, judged by the datasheet (§7.1.5.2).
#[derive(Debug, Clone, Copy)]
pub struct RxSnap {
    pub status: u32,
    pub len: u16,
    /// RSS type (bits 3:0 of the first word) and hash (its upper half).
    pub kind: u8,
    pub hash: u32,
}

impl RxSnap {
    pub fn of(w: [u64; 2]) -> Self {
        Self {
            status: w[1] as u32,
            len: (w[1] >> 32) as u16,
            kind: (w[0] & 0xf) as u8,
            hash: (w[0] >> 32) as u32,
        }
    }

    /// The hash a frame of this descriptor must carry: RSS types 1–9 of §7.1.5.2 (those
    /// with IPv6 extension headers as their plain IPv6 kind), none for 0 and the reserved
    /// 10–15.
    pub fn rss(&self) -> Option<(u32, HashType)> {
        let kind = match self.kind {
            1 => HashType::TcpV4,
            2 => HashType::Ipv4,
            3 | 6 => HashType::TcpV6,
            4 | 5 => HashType::Ipv6,
            7 => HashType::UdpV4,
            8 | 9 => HashType::UdpV6,
            _ => return None,
        };
        Some((self.hash, kind))
    }

    pub fn done(&self) -> bool {
        self.status & rx::DD != 0
    }

    pub fn eop(&self) -> bool {
        self.status & rx::EOP != 0
    }

    /// The length of the frame a good descriptor holds: the end of its frame, no frame
    /// error (a checksum error does not count), 1..=2048 bytes (one 2 KiB buffer).
    pub fn frame(&self) -> Option<u16> {
        let good = self.eop() && self.status & rx::FRAME_ERRORS == 0;
        (good && (1..=DATA_ROOM as u16).contains(&self.len)).then_some(self.len)
    }
}

/// What one `rx_batch` must do, worked out from the descriptors before the call.
#[derive(Debug, Default)]
pub struct RxPlan {
    /// Slot and length of each frame to deliver, in order.
    pub frames: Vec<(usize, u16)>,
    /// Descriptors consumed.
    pub taken: u32,
    pub errors: u64,
    /// Stopped at a good frame for want of a refill (one `rx_no_buf`).
    pub ran_dry: bool,
    /// The last descriptor consumed had no EOP: the next ones until an EOP are dropped.
    pub discarding: bool,
}

impl RxPlan {
    /// What the driver must do on `rx_batch(max)` with receive ring `snap`, `consumed`
    /// slots consumed so far and `free` buffers in the pool: consume done descriptors in
    /// order until `max` frames or one not done, each good and whole one a frame (while
    /// the pool has a refill for it), each other one an error; DD on the slot at the old
    /// tail, which was never the device's, one more error.
    pub fn of(snap: &[RxSnap], consumed: u32, discarding: bool, free: usize, max: u16) -> Self {
        let size = snap.len() as u32;
        let slot = |k: u32| (consumed.wrapping_add(k) % size) as usize;
        let mut p = RxPlan {
            discarding,
            ..RxPlan::default()
        };
        let limit = (size - 1).min(max.into()) as usize;
        if limit == 0 || !snap[slot(0)].done() {
            return p;
        }
        let refills = free.min(limit);
        while p.frames.len() < usize::from(max) && p.taken < size - 1 {
            let d = snap[slot(p.taken)];
            if !d.done() {
                break;
            }
            let whole = !std::mem::replace(&mut p.discarding, !d.eop());
            match d.frame().filter(|_| whole) {
                Some(_) if p.frames.len() == refills => {
                    p.ran_dry = true;
                    p.discarding = false;
                    break;
                }
                Some(len) => p.frames.push((slot(p.taken), len)),
                None => p.errors += 1,
            }
            p.taken += 1;
        }
        if p.taken > 0 && snap[slot(size - 1)].done() {
            p.errors += 1;
        }
        p
    }
}

/// The device's view of the two rings of one queue pair, through its registers and DMA.
#[derive(Debug)]
pub struct Device {
    pub regs: FakeBar,
    pub dma: FakeDma,
    pub queue: u16,
    pub rx_size: u32,
    pub tx_size: u32,
}

fn ring_base(regs: &FakeBar, lo: u32, hi: u32) -> u64 {
    u64::from(regs.read32(hi)) << 32 | u64::from(regs.read32(lo))
}

impl Device {
    pub fn rx_at(&self, slot: u32) -> u64 {
        let q = self.queue.into();
        ring_base(&self.regs, regs::rdbal(q), regs::rdbah(q)) + u64::from(slot % self.rx_size) * 16
    }

    pub fn tx_at(&self, slot: u32) -> u64 {
        let q = self.queue.into();
        ring_base(&self.regs, regs::tdbal(q), regs::tdbah(q)) + u64::from(slot % self.tx_size) * 16
    }

    /// This queue pair's head and tail registers: RDH, RDT, TDH, TDT.
    pub fn heads_tails(&self) -> [u32; 4] {
        let q = self.queue.into();
        [regs::rdh(q), regs::rdt(q), regs::tdh(q), regs::tdt(q)]
    }

    /// The two words of the descriptor at `at`.
    pub fn words(&self, at: u64) -> [u64; 2] {
        let mut w = [[0u8; 8]; 2];
        for (i, w) in w.iter_mut().enumerate() {
            // SAFETY: a ring descriptor, which the driver accesses only atomically; the
            // device reads nothing else.
            let ok = unsafe { self.dma.device_read(at + 8 * i as u64, w) };
            assert!(ok, "ring at {at:#x} not mapped");
        }
        [u64::from_le_bytes(w[0]), u64::from_le_bytes(w[1])]
    }

    /// Writes a descriptor as silicon does, word 0 first and the status word last.
    pub fn put(&self, at: u64, w: [u64; 2]) {
        for (i, w) in w.iter().enumerate() {
            // SAFETY: a ring descriptor, as in `words`; the adversary writes no buffer.
            let ok = unsafe { self.dma.device_write(at + 8 * i as u64, &w.to_le_bytes()) };
            assert!(ok, "ring at {at:#x} not mapped");
        }
    }

    /// A receive write-back (§7.1.5.2): RSS type and hash, then status and length.
    fn rx_wb(&self, slot: u32, status: u32, len: u16, hash: u32, kind: u8) {
        let w1 = u64::from(status) | u64::from(len) << 32;
        self.put(
            self.rx_at(slot),
            [u64::from(hash) << 32 | u64::from(kind), w1],
        );
    }

    /// Transmit write-back of the descriptor at `slot`: `status` ORed into its status
    /// word, and its address word as `addr` says.
    fn tx_wb(&self, slot: u32, status: u32, addr: AddrWord) {
        let at = self.tx_at(slot);
        let [a, w1] = self.words(at);
        let a = match addr {
            AddrWord::Keep => a,
            AddrWord::Zero => 0,
            AddrWord::Scramble(x) => x,
        };
        self.put(at, [a, w1 | u64::from(status) << 32]);
    }

    /// The device finishes every transmit descriptor honestly: DD in every slot (whatever
    /// lies it told before), then TDH = TDT.
    pub fn finish_tx(&self) {
        for slot in 0..self.tx_size {
            self.tx_wb(slot, tx::DD, AddrWord::Keep);
        }
        let [.., tdh, tdt] = self.heads_tails();
        self.regs.write32(tdh, self.regs.read32(tdt));
    }

    /// Plays one device step.
    pub fn act(&self, s: &Step) {
        let [rdh, rdt, tdh, tdt] = self.heads_tails();
        match *s {
            Step::RxWb {
                slot,
                len,
                status,
                hash,
                kind,
            } => self.rx_wb(slot.into(), status, len, hash, kind),
            Step::RxGood { n, len, csum } => {
                let (mut head, tail) =
                    (self.regs.read32(rdh) % self.rx_size, self.regs.read32(rdt));
                for _ in 0..n {
                    if head == tail {
                        break;
                    }
                    self.rx_wb(head, rx::DD | rx::EOP | csum, len, 0x51cc_c178 ^ head, 7);
                    head = (head + 1) % self.rx_size;
                }
                self.regs.write32(rdh, head);
            }
            Step::RxSplit { parts, len, eop } => {
                let (mut head, tail) =
                    (self.regs.read32(rdh) % self.rx_size, self.regs.read32(rdt));
                for i in 0..parts {
                    if head == tail {
                        break;
                    }
                    let last = i + 1 == parts && eop;
                    let status = if last { rx::DD | rx::EOP } else { rx::DD };
                    self.rx_wb(head, status, if last { len } else { 2048 }, 0, 0);
                    head = (head + 1) % self.rx_size;
                }
                self.regs.write32(rdh, head);
            }
            Step::RxReadBack { slot, status, len } => {
                let at = self.rx_at(slot.into());
                let [addr, _] = self.words(at);
                self.put(at, [addr, u64::from(status) | u64::from(len) << 32]);
            }
            Step::TxWb { slot, status, addr } => self.tx_wb(slot.into(), status, addr),
            Step::TxGood { n, addr } => {
                let (mut head, tail) =
                    (self.regs.read32(tdh) % self.tx_size, self.regs.read32(tdt));
                for _ in 0..n {
                    if head == tail {
                        break;
                    }
                    let [_, w1] = self.words(self.tx_at(head));
                    if w1 as u32 & tx::RS != 0 {
                        self.tx_wb(head, tx::DD, addr);
                    }
                    head = (head + 1) % self.tx_size;
                }
                self.regs.write32(tdh, head);
            }
            Step::Reg(r, v) => {
                let off = match r {
                    Reg::Rdh => rdh,
                    Reg::Tdh => tdh,
                    Reg::Status => regs::STATUS,
                    Reg::Counter(i) => COUNTERS[i],
                };
                self.regs.write32(off, v);
            }
            Step::Garbage { tx, slot, bytes } => {
                let at = if tx {
                    self.tx_at(slot.into())
                } else {
                    self.rx_at(slot.into())
                };
                let w = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap());
                self.put(at, [w(0), w(1)]);
            }
            _ => unreachable!("not a device step: {s:?}"),
        }
    }
}
