//! The e1000 driver against a device that lies: a proptest state machine plays the device
//! on the test thread (no device thread, so every case is deterministic and shrinks), with
//! arbitrary descriptor status bits, lengths and errors, DD on descriptors never handed
//! over, head registers moved anywhere, garbage over whole descriptors and absurd counter
//! values, interleaved with the application's bursts, releases, flushes and stats reads.
//!
//! Invariants after every step: no panic; every frame handed out is 1..=2048 bytes (with
//! long packets on, at most the MTU's frame over buffers of 1..=2048) and not a buffer the
//! application still holds; the receive path does exactly what the descriptors it consumed
//! say (a good one is a frame of that length, or ends a long frame of the parts before it;
//! a bad one is one `rx_errors`, and drops the long frame under way; DD on the slot at the
//! tail one more); transmit takes frames of several buffers whole or leaves them for
//! later, in order; counters never go back. After the port closes, every buffer is back in
//! the pool.
//!
//! Cases: `ZCNIC_LONG=1` (set by `cargo xtask test --long`) runs the long form: over 10^6
//! device actions in long sequences, and 10^6 short cases (a nightly-length run).
//!
//! Also here: every wait of the e1000 driver on its device ends, with the error or result
//! its caller expects.

use proptest::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zcnic::e1000::regs::{self, stat, Ctrl, Status};
use zcnic::e1000::{Config, E1000};
use zcnic::{Bar, Error, FakeBar, FakeDma, Mempool, Nic, PciAddr, Stats, UserRegion, DATA_ROOM};
use zcnic_descriptors::e1000::RxErrors;
use zcnic_tests::adversary::{counters_grow, run_cases, send, Held};

/// The e1000 cuts frames at this length (8254x SDM §3.3: 16288 bytes with a payload chain).
const MAX_FRAME: usize = 16288;
/// RDESC.STATUS bits (8254x SDM §3.2.3.1).
const DD: u8 = 1 << 0;
const EOP: u8 = 1 << 1;
/// TDESC.CMD.RS (8254x SDM §3.3.3.1).
const RS: u8 = 1 << 3;
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xad, 0x0e, 0x01];
/// The MTU of a case with long packets on, and its longest frame.
const JUMBO_MTU: usize = 9000;
const JUMBO_FRAME: usize = JUMBO_MTU + 18;

fn addr() -> PciAddr {
    "0000:00:02.0".parse().unwrap()
}

/// What one test's cases did, to show the state machine reaches every path (one per test:
/// tests run side by side).
#[derive(Default)]
struct Tally {
    cases: AtomicU64,
    actions: AtomicU64,
    delivered: AtomicU64,
    /// Frames delivered over several buffers (long packets on).
    long: AtomicU64,
    rx_errors: AtomicU64,
    rx_no_buf: AtomicU64,
    tx_sent: AtomicU64,
    tx_refused: AtomicU64,
}

impl Tally {
    fn report(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "e1000 state machine: {} cases, {} device actions; {} frames delivered ({} long), \
             {} rx_errors, {} rx_no_buf, {} frames sent, {} refused",
            g(&self.cases),
            g(&self.actions),
            g(&self.delivered),
            g(&self.long),
            g(&self.rx_errors),
            g(&self.rx_no_buf),
            g(&self.tx_sent),
            g(&self.tx_refused)
        )
    }
}

// ---------------------------------------------------------------------------------------
// The device's register file.
// ---------------------------------------------------------------------------------------

/// How the registers with a side effect behave.
#[derive(Debug, Default)]
struct Quirks {
    /// CTRL.RST stays set: the reset never finishes.
    reset_sticks: AtomicBool,
    /// EERD never reports DONE.
    eeprom_dead: AtomicBool,
}

/// The e1000's BAR on the test thread: plain registers ([`FakeBar`]), except that a reset
/// clears itself inside the driver's write and an EEPROM read completes inside it, as the
/// device's register decoder would do. The test plays everything else through `regs`.
#[derive(Debug, Clone)]
struct DevBar {
    regs: FakeBar,
    quirks: Arc<Quirks>,
}

impl DevBar {
    /// Registers as a freshly powered-up 82540EM has them: link up at 1000 Mbit/s full
    /// duplex; the MAC in RAL0/RAH0 only when `mac_in_ral` (otherwise only in the EEPROM).
    fn new(mac_in_ral: bool) -> Self {
        let regs = FakeBar::new(0x20000);
        if mac_in_ral {
            regs.write32(
                regs::RAL0,
                u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]]),
            );
            regs.write32(
                regs::RAH0,
                u32::from(u16::from_le_bytes([MAC[4], MAC[5]])) | regs::RAH_AV,
            );
        }
        regs.write32(
            regs::STATUS,
            (Status::LU | Status::FD | Status::SPEED1).bits(),
        );
        Self {
            regs,
            quirks: Arc::default(),
        }
    }
}

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
            regs::CTRL if !self.quirks.reset_sticks.load(Ordering::Relaxed) => {
                val & !Ctrl::RST.bits()
            }
            regs::EERD
                if val & regs::EERD_START != 0
                    && !self.quirks.eeprom_dead.load(Ordering::Relaxed) =>
            {
                // Words 0..3 of the EEPROM hold the MAC (8254x SDM §5.6.1).
                let word = (val >> regs::EERD_ADDR_SHIFT) as usize & 0xff;
                let data = match word {
                    0..=2 => u16::from_le_bytes([MAC[2 * word], MAC[2 * word + 1]]),
                    _ => 0xffff,
                };
                val | regs::EERD_DONE | u32::from(data) << regs::EERD_DATA_SHIFT
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

fn config(rx_ring: u32, tx_ring: u32, pool: usize) -> Config {
    Config {
        rx_ring,
        tx_ring,
        pool,
        reset_timeout: Duration::from_millis(100),
        link_timeout: Duration::from_millis(50),
        ..Config::default()
    }
}

fn ring_base(regs: &FakeBar, lo: u32, hi: u32) -> u64 {
    u64::from(regs.read32(hi)) << 32 | u64::from(regs.read32(lo))
}

// ---------------------------------------------------------------------------------------
// Bugs pinned down.
// ---------------------------------------------------------------------------------------

/// 64-bit device counters are added to the totals unchecked: a device whose GORCH/GORCL
/// read all ones makes the second `stats()` overflow `hw_total` (a panic in debug builds,
/// a counter that goes back in release builds).
#[test]
fn regression_absurd_64_bit_counter_overflows_the_total() {
    let dev = DevBar::new(true);
    let dma = FakeDma::new();
    let mut nic = E1000::new(dev.clone(), &dma, addr(), &config(8, 32, 64)).unwrap();
    dev.regs.write32(stat::GORCL, u32::MAX);
    dev.regs.write32(stat::GORCL + 4, u32::MAX);
    let first = nic.stats().hw("GORC").unwrap();
    let second = nic.stats().hw("GORC").unwrap();
    assert!(second >= first, "GORC went back from {first} to {second}");
}

/// After a `flush()` that returns with a number of frames sent that is not a multiple of
/// the cleanup batch, `clean()` looks for DD on a descriptor that never had RS: transmit
/// stops for good once the ring is full, although the device sent everything.
#[test]
fn regression_transmit_goes_on_after_a_flush_mid_batch() {
    let dev = DevBar::new(true);
    let dma = FakeDma::new();
    let mut nic = E1000::new(dev.clone(), &dma, addr(), &config(8, 64, 256)).unwrap();
    let pool = nic.pool().clone();
    let regs = dev.regs.clone();
    let complete = || {
        let base = ring_base(&regs, regs::TDBAL, regs::TDBAH);
        let (mut head, tail) = (regs.read32(regs::TDH), regs.read32(regs::TDT));
        while head != tail {
            let at = base + u64::from(head) * 16;
            let mut cmd = [0u8];
            // SAFETY: descriptors of the transmit ring, which the driver accesses atomically.
            assert!(unsafe { dma.device_read(at + 11, &mut cmd) });
            if cmd[0] & RS != 0 {
                // SAFETY: as above.
                assert!(unsafe { dma.device_write(at + 12, &[DD]) });
            }
            head = (head + 1) % 64;
        }
        regs.write32(regs::TDH, head);
    };
    let send = |nic: &mut E1000<DevBar>, n: usize| {
        let mut b = Vec::new();
        pool.alloc_batch(&mut b, n);
        b.iter_mut().for_each(|p| p.set_len(60).unwrap());
        nic.tx_batch(&mut b)
    };
    assert_eq!(send(&mut nic, 5), 5);
    complete();
    assert!(nic.flush());
    for round in 0..10 {
        assert_eq!(
            send(&mut nic, 16),
            16,
            "round {round}: the ring took nothing"
        );
        complete();
    }
}

// ---------------------------------------------------------------------------------------
// The state machine.
// ---------------------------------------------------------------------------------------

/// A device register the device side moves.
#[derive(Debug, Clone, Copy)]
enum Reg {
    Rdh,
    Tdh,
    Status,
    /// One of the statistics registers (index into [`COUNTERS`]).
    Counter(usize),
}

/// Statistics registers the device may report anything in. The high words of the 64-bit
/// pairs stay small: an all-ones pair overflows the driver's total (see
/// `regression_absurd_64_bit_counter_overflows_the_total`).
const COUNTERS: [(u32, u32); 11] = [
    (stat::GPRC, u32::MAX),
    (stat::GPTC, u32::MAX),
    (stat::GORCL, u32::MAX),
    (stat::GORCL + 4, 0xff),
    (stat::GOTCL, u32::MAX),
    (stat::GOTCL + 4, 0xff),
    (stat::TPR, u32::MAX),
    (stat::TPT, u32::MAX),
    (stat::MPC, u32::MAX),
    (stat::RNBC, u32::MAX),
    (stat::CRCERRS, u32::MAX),
];

/// A frame to send: (length, attached payload length), (buffers chained after the first,
/// each one's length).
type TxFrame = ((u16, Option<u16>), (u8, u16));

/// One step: the application calls the driver, or the device does something.
#[derive(Debug, Clone)]
enum Step {
    /// `tx_batch` of frames: length, the length of an attached application payload, and
    /// buffers chained after the first (count, and each one's length).
    Tx(Vec<TxFrame>),
    /// `rx_batch` with this `max`; with spares, `rx_batch_recycle` handed up to that many
    /// of the frames the application holds.
    Rx(u16, u8),
    /// The application drops one held frame (index modulo the count), or all.
    Release(u16, bool),
    /// `flush()` once the device says it is idle (TDH = TDT, true or not).
    Flush,
    /// `link()`.
    Link,
    /// Device: length, status and errors written on any receive descriptor.
    RxDesc {
        slot: u16,
        len: u16,
        status: u8,
        errors: u8,
    },
    /// Device: up to `n` frames of `len` bytes received properly, from RDH towards RDT.
    RxGood { n: u8, len: u16 },
    /// Device: a long frame received properly: `parts - 1` full 2048-byte descriptors
    /// (DD alone), then one of `last` bytes with EOP, as far as RDT lets it.
    RxLong { parts: u8, last: u16 },
    /// Device: a status byte written on any transmit descriptor.
    TxStatus { slot: u16, status: u8 },
    /// Device: up to `n` descriptors sent properly from TDH towards TDT (DD where RS).
    TxGood { n: u8 },
    /// Device: a register set to anything.
    Reg(Reg, u32),
    /// Device: 16 bytes of garbage over a whole descriptor.
    Garbage {
        tx: bool,
        slot: u16,
        bytes: [u8; 16],
    },
}

fn frame_len() -> impl Strategy<Value = u16> {
    prop_oneof![8 => 60u16..=1514, 1 => Just(0u16), 1 => 1u16..=2048]
}

fn step() -> impl Strategy<Value = Step> {
    let chained = prop_oneof![6 => Just((0u8, 0u16)), 1 => (1u8..=10, 0u16..=2048)];
    let frames = prop::collection::vec(
        (
            (frame_len(), prop::option::weighted(0.15, 1u16..=16500)),
            chained,
        ),
        0..40,
    );
    let reg = prop_oneof![
        Just(Reg::Rdh),
        Just(Reg::Tdh),
        Just(Reg::Status),
        (0..COUNTERS.len()).prop_map(Reg::Counter),
    ];
    let reg_val = prop_oneof![4 => 0u32..80, 1 => any::<u32>()];
    let rx_len = prop_oneof![3 => 0u16..=2048, 1 => 2049u16..=u16::MAX, 1 => Just(0u16)];
    let rx_status = prop_oneof![2 => Just(DD | EOP), 1 => Just(DD), 2 => any::<u8>()];
    let rx_errors = prop_oneof![3 => Just(0u8), 1 => any::<u8>()];
    prop_oneof![
        6 => frames.prop_map(Step::Tx),
        6 => (0u16..=70, prop_oneof![2 => Just(0u8), 1 => any::<u8>()])
            .prop_map(|(max, spares)| Step::Rx(max, spares)),
        3 => (any::<u16>(), prop::bool::weighted(0.1)).prop_map(|(i, all)| Step::Release(i, all)),
        1 => Just(Step::Flush),
        1 => Just(Step::Link),
        6 => (any::<u16>(), rx_len, rx_status, rx_errors).prop_map(|(slot, len, status, errors)| {
            Step::RxDesc { slot, len, status, errors }
        }),
        6 => (1u8..=80, 1u16..=2048).prop_map(|(n, len)| Step::RxGood { n, len }),
        3 => (2u8..=8, 1u16..=2048).prop_map(|(parts, last)| Step::RxLong { parts, last }),
        3 => (any::<u16>(), any::<u8>()).prop_map(|(slot, status)| Step::TxStatus { slot, status }),
        6 => (1u8..=80).prop_map(|n| Step::TxGood { n }),
        3 => (reg, reg_val).prop_map(|(r, v)| Step::Reg(r, v)),
        1 => (any::<bool>(), any::<u16>(), any::<[u8; 16]>())
            .prop_map(|(tx, slot, bytes)| Step::Garbage { tx, slot, bytes }),
    ]
}

/// A whole case: ring sizes, pool size and the steps.
#[derive(Debug, Clone)]
struct Case {
    rx_ring: u32,
    tx_ring: u32,
    /// A pool barely above the receive ring (runs dry) or a roomy one.
    tight_pool: bool,
    /// Long packets on (MTU 9000): frames over several receive descriptors.
    jumbo: bool,
    steps: Vec<Step>,
}

fn case(max_steps: usize) -> impl Strategy<Value = Case> {
    (
        prop::sample::select(vec![8u32, 16, 64]),
        prop::sample::select(vec![32u32, 64]),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.4),
        prop::collection::vec(step(), 1..max_steps),
    )
        .prop_map(|(rx_ring, tx_ring, tight_pool, jumbo, steps)| Case {
            rx_ring,
            tx_ring,
            tight_pool,
            jumbo,
            steps,
        })
}

/// A receive descriptor as the device left it: length, status, errors.
#[derive(Debug, Clone, Copy)]
struct RxSnap {
    len: u16,
    status: u8,
    errors: u8,
}

impl RxSnap {
    /// The length of the frame a good descriptor holds; `None` for a bad one (8254x SDM
    /// §3.2.3: one buffer per frame, so EOP on each; no error bits but the checksum ones,
    /// TCPE and IPE, which go with the frame as its verdict; 1..=2048 bytes).
    fn frame(&self) -> Option<u16> {
        let fatal = self.errors & !(RxErrors::TCPE | RxErrors::IPE).bits();
        (self.status & EOP != 0 && fatal == 0 && (1..=DATA_ROOM as u16).contains(&self.len))
            .then_some(self.len)
    }

    fn done(&self) -> bool {
        self.status & DD != 0
    }

    /// The length of a part of a long frame that is not its last: DD without EOP, the
    /// whole 2048-byte buffer filled, as the device fills all but a frame's last (errors
    /// mean nothing there, §3.2.3.2).
    fn part(&self) -> Option<u16> {
        (self.status & (DD | EOP) == DD && self.len == DATA_ROOM as u16).then_some(self.len)
    }
}

/// What the test knows of the long frame the driver is putting together (long packets
/// on): its bytes so far, or that the rest of a dropped one is being dropped.
#[derive(Debug, Default, Clone, Copy)]
struct Long {
    bytes: Option<usize>,
    dropping: bool,
}

impl Long {
    /// One consumed descriptor `d`: the frame it completes (`Ok(Some(len))`), nothing yet
    /// (`Ok(None)`), or a receive error (`Err(())`), as the datasheet has a device say it
    /// and zcnic promises to answer: one error per frame dropped.
    fn consume(&mut self, d: RxSnap) -> Result<Option<usize>, ()> {
        if let Some(len) = d.frame() {
            let was = *self;
            *self = Long::default();
            if was.dropping {
                return Ok(None); // counted when it was dropped
            }
            return match was.bytes.map(|b| b + usize::from(len)) {
                Some(total) if total > JUMBO_FRAME => Err(()),
                whole => Ok(Some(whole.unwrap_or(len.into()))),
            };
        }
        if let Some(len) = d.part() {
            if self.dropping {
                return Ok(None);
            }
            let b = self.bytes.unwrap_or(0) + usize::from(len);
            if b > JUMBO_FRAME {
                *self = Long {
                    bytes: None,
                    dropping: true,
                };
                return Err(());
            }
            self.bytes = Some(b);
            return Ok(None);
        }
        // A bad descriptor: the frame under way is dropped, and the rest of it unless
        // this one carried EOP.
        *self = Long {
            bytes: None,
            dropping: d.status & EOP == 0,
        };
        Err(())
    }
}

/// The application and the device around one port, and what the test knows of both.
struct Machine {
    nic: E1000<DevBar>,
    regs: FakeBar,
    dma: FakeDma,
    pool: Arc<Mempool>,
    payload: Arc<UserRegion>,
    rx_size: u32,
    tx_size: u32,
    /// Long packets on, and the long frame under way.
    jumbo: bool,
    long: Long,
    /// Receive slots the driver consumed (free-running); it owns the `size - 1` after it.
    rx_consumed: u32,
    /// Frames the application holds, and their buffers' IOVAs.
    held: Held,
    last: Stats,
    /// Device actions this case played.
    actions: u64,
    /// Frames delivered over several buffers.
    long_frames: u64,
}

impl Machine {
    fn open(c: &Case, dma: FakeDma) -> Self {
        let dev = DevBar::new(true);
        let pool = if c.tight_pool {
            c.rx_ring as usize + 8
        } else {
            (c.rx_ring + c.tx_ring) as usize + 96
        };
        let cfg = Config {
            mtu: if c.jumbo { JUMBO_MTU } else { 1500 },
            ..config(c.rx_ring, c.tx_ring, pool)
        };
        let nic = E1000::new(dev.clone(), &dma, addr(), &cfg).expect("driver comes up");
        let payload = Arc::new(UserRegion::with_data(&[0x5a; 16500], dma.mapper()).unwrap());
        let mut m = Self {
            pool: nic.pool().clone(),
            nic,
            regs: dev.regs,
            dma,
            payload,
            rx_size: c.rx_ring,
            tx_size: c.tx_ring,
            jumbo: c.jumbo,
            long: Long::default(),
            rx_consumed: 0,
            held: Held::default(),
            actions: 0,
            long_frames: 0,
            last: Stats::default(),
        };
        m.last = m.nic.stats();
        m
    }

    fn rx_desc_at(&self, slot: u32) -> u64 {
        ring_base(&self.regs, regs::RDBAL, regs::RDBAH) + u64::from(slot % self.rx_size) * 16
    }

    fn tx_desc_at(&self, slot: u32) -> u64 {
        ring_base(&self.regs, regs::TDBAL, regs::TDBAH) + u64::from(slot % self.tx_size) * 16
    }

    fn write(&self, iova: u64, data: &[u8]) {
        // SAFETY: the adversary writes ring descriptors and the buffers the driver handed
        // over in them, never a buffer the application holds.
        let ok = unsafe { self.dma.device_write(iova, data) };
        assert!(ok, "ring at {iova:#x} not mapped");
    }

    fn rx_snapshot(&self) -> Vec<RxSnap> {
        (0..self.rx_size)
            .map(|slot| {
                let mut d = [0u8; 16];
                // SAFETY: a receive descriptor, which the driver accesses atomically.
                assert!(unsafe { self.dma.device_read(self.rx_desc_at(slot), &mut d) });
                RxSnap {
                    len: u16::from_le_bytes([d[8], d[9]]),
                    status: d[12],
                    errors: d[13],
                }
            })
            .collect()
    }

    fn device(&mut self, s: &Step) {
        self.actions += 1;
        match *s {
            Step::RxDesc {
                slot,
                len,
                status,
                errors,
            } => {
                let at = self.rx_desc_at(slot.into());
                self.write(at + 8, &len.to_le_bytes());
                self.write(at + 13, &[errors]);
                self.write(at + 12, &[status]);
            }
            Step::RxGood { n, len } => {
                let (mut head, tail) = (
                    self.regs.read32(regs::RDH) % self.rx_size,
                    self.regs.read32(regs::RDT),
                );
                for _ in 0..n {
                    if head == tail {
                        break;
                    }
                    let at = self.rx_desc_at(head);
                    self.write(at + 8, &len.to_le_bytes());
                    self.write(at + 13, &[0]);
                    self.write(at + 12, &[DD | EOP]);
                    head = (head + 1) % self.rx_size;
                }
                self.regs.write32(regs::RDH, head);
            }
            Step::RxLong { parts, last } => {
                let (mut head, tail) = (
                    self.regs.read32(regs::RDH) % self.rx_size,
                    self.regs.read32(regs::RDT),
                );
                for i in 1..=parts {
                    if head == tail {
                        break;
                    }
                    let (len, status) = if i == parts {
                        (last, DD | EOP)
                    } else {
                        (DATA_ROOM as u16, DD)
                    };
                    let at = self.rx_desc_at(head);
                    self.write(at + 8, &len.to_le_bytes());
                    self.write(at + 13, &[0]);
                    self.write(at + 12, &[status]);
                    head = (head + 1) % self.rx_size;
                }
                self.regs.write32(regs::RDH, head);
            }
            Step::TxStatus { slot, status } => {
                self.write(self.tx_desc_at(slot.into()) + 12, &[status]);
            }
            Step::TxGood { n } => {
                let (mut head, tail) = (
                    self.regs.read32(regs::TDH) % self.tx_size,
                    self.regs.read32(regs::TDT),
                );
                for _ in 0..n {
                    if head == tail {
                        break;
                    }
                    let at = self.tx_desc_at(head);
                    let mut cmd = [0u8];
                    // SAFETY: a transmit descriptor, which the driver accesses atomically.
                    assert!(unsafe { self.dma.device_read(at + 11, &mut cmd) });
                    if cmd[0] & RS != 0 {
                        self.write(at + 12, &[DD]);
                    }
                    head = (head + 1) % self.tx_size;
                }
                self.regs.write32(regs::TDH, head);
            }
            Step::Reg(r, v) => match r {
                Reg::Rdh => self.regs.write32(regs::RDH, v),
                Reg::Tdh => self.regs.write32(regs::TDH, v),
                Reg::Status => self.regs.write32(regs::STATUS, v),
                Reg::Counter(i) => {
                    let (off, max) = COUNTERS[i];
                    self.regs.write32(off, v.min(max));
                }
            },
            Step::Garbage { tx, slot, bytes } => {
                let at = if tx {
                    self.tx_desc_at(slot.into())
                } else {
                    self.rx_desc_at(slot.into())
                };
                self.write(at, &bytes);
            }
            _ => unreachable!("not a device step"),
        }
    }

    fn tx(&mut self, frames: &[TxFrame]) -> Result<(u64, u64), TestCaseError> {
        let heads: Vec<(u16, Option<u16>)> = frames.iter().map(|f| f.0).collect();
        let mut batch = self.held.batch(&self.pool, &self.payload, &heads)?;
        // Buffers chained after each frame's first, as far as the pool goes.
        'frames: for (i, &(_, (extra, len))) in frames.iter().enumerate().take(batch.len()) {
            for _ in 0..extra {
                let Some(mut p) = self.pool.alloc() else {
                    batch.truncate(i);
                    break 'frames;
                };
                prop_assert!(
                    !self.held.holds(p.iova()),
                    "the pool gave out a held buffer"
                );
                p.set_len(len.into()).unwrap();
                batch[i].append(p);
            }
        }
        let before: Vec<Vec<u8>> = batch.iter().map(|p| p.to_vec()).collect();
        let n = send(&mut self.nic, &mut batch)?;
        // What was not taken is the caller's again, in order and whole.
        let left: Vec<Vec<u8>> = batch.iter().map(|p| p.to_vec()).collect();
        prop_assert_eq!(&left[..], &before[n..], "frames left for later");
        // A frame is refused when a part is empty or it is too long for the e1000 or for
        // its ring (one slot stays empty); the rest go.
        let valid = frames[..n]
            .iter()
            .filter(|((len, payload), (extra, elen))| {
                let total = usize::from(*len)
                    + usize::from(payload.unwrap_or(0))
                    + usize::from(*extra) * usize::from(*elen);
                let parts = 1 + usize::from(payload.is_some()) + usize::from(*extra);
                *len > 0
                    && (*extra == 0 || *elen > 0)
                    && total <= MAX_FRAME
                    && parts < self.tx_size as usize
            })
            .count() as u64;
        Ok((valid, n as u64 - valid))
    }

    /// One `rx_batch` (or, with spares, `rx_batch_recycle` handed that many held frames),
    /// checked against the descriptors it consumed.
    fn rx(&mut self, max: u16, spares: u8) -> Result<Stats, TestCaseError> {
        let snap = self.rx_snapshot();
        let mut spare = self.held.give(spares.into());
        let (free_before, spare_before) = (self.pool.free_count(), spare.len());
        let rdt_before = self.regs.read32(regs::RDT);
        let mut got = Vec::new();
        let n = if spares > 0 {
            self.nic.rx_batch_recycle(&mut got, max.into(), &mut spare)
        } else {
            self.nic.rx_batch(&mut got, max.into())
        };
        // What the driver did not take, or gave back unused, is the application's again.
        prop_assert!(spare.len() <= spare_before, "spares grew");
        for p in spare {
            self.held.take(p, "spare left over")?;
        }
        prop_assert_eq!(n, got.len());
        let taken = self.regs.read32(regs::RDT).wrapping_sub(rdt_before) % self.rx_size;
        let size = self.rx_size;
        let slot = |k: u32| (k % size) as usize;
        let (mut want, mut errors) = (Vec::new(), 0u64);
        for k in 0..taken {
            let d = snap[slot(self.rx_consumed.wrapping_add(k))];
            prop_assert!(
                d.done(),
                "slot {} consumed without DD",
                slot(self.rx_consumed + k)
            );
            if self.jumbo {
                match self.long.consume(d) {
                    Ok(Some(len)) => want.push(len),
                    Ok(None) => {}
                    Err(()) => errors += 1,
                }
                continue;
            }
            match d.frame() {
                Some(len) => want.push(len.into()),
                None => errors += 1,
            }
        }
        let gap = snap[slot(self.rx_consumed.wrapping_add(size - 1))];
        if taken > 0 && gap.done() {
            errors += 1;
        }
        let lens: Vec<usize> = got.iter().map(|p| p.total_len()).collect();
        prop_assert_eq!(
            &lens,
            &want,
            "frames delivered vs good descriptors consumed"
        );
        // Why the driver stopped where it did.
        let stop = snap[slot(self.rx_consumed.wrapping_add(taken))];
        let ran_dry = n < usize::from(max) && taken < size - 1 && stop.done();
        if ran_dry && !self.jumbo {
            prop_assert!(
                stop.frame().is_some(),
                "stopped on a bad descriptor: {stop:?}"
            );
            prop_assert_eq!(
                free_before + spare_before,
                n,
                "stopped on a good frame with buffers left"
            );
        }
        if ran_dry && self.jumbo {
            // A part takes its refill from the cache besides the burst's refills, and a
            // dropped frame's parts come back: how many buffers were left is not exact
            // here, only that the driver stopped on a frame or a part of one.
            prop_assert!(
                stop.frame().is_some() || stop.part().is_some(),
                "stopped on a bad descriptor: {stop:?}"
            );
        }
        self.rx_consumed = self.rx_consumed.wrapping_add(taken);
        self.long_frames += got.iter().filter(|p| p.next().is_some()).count() as u64;
        for p in got {
            let longest = if self.jumbo { JUMBO_FRAME } else { DATA_ROOM };
            prop_assert!(
                (1..=longest).contains(&p.total_len())
                    && p.segments().all(|s| (1..=DATA_ROOM).contains(&s.len())),
                "frame of {} bytes",
                p.total_len()
            );
            self.held.take(p, "rx_batch")?;
        }
        let s = self.nic.stats();
        prop_assert_eq!(s.rx_packets - self.last.rx_packets, n as u64);
        prop_assert_eq!(
            s.rx_bytes - self.last.rx_bytes,
            want.iter().map(|&l| l as u64).sum::<u64>()
        );
        prop_assert_eq!(s.rx_errors - self.last.rx_errors, errors, "rx_errors");
        prop_assert_eq!(
            s.rx_no_buf - self.last.rx_no_buf,
            u64::from(ran_dry),
            "rx_no_buf"
        );
        Ok(s)
    }

    /// The device finishes every queued transmit descriptor honestly: DD in every slot
    /// (whatever lies it told of them, or of TDH, before), then TDH = TDT. The driver
    /// reclaims only on DD, so a flush without this would wait out its timeout.
    fn finish_tx(&self) {
        for slot in 0..self.tx_size {
            self.write(self.tx_desc_at(slot) + 12, &[DD]);
        }
        self.regs.write32(regs::TDH, self.regs.read32(regs::TDT));
    }

    fn step(&mut self, s: &Step) -> Result<(), TestCaseError> {
        let mut now = None;
        match s {
            Step::Tx(frames) => {
                let (valid, refused) = self.tx(frames)?;
                let st = self.nic.stats();
                prop_assert_eq!(st.tx_packets - self.last.tx_packets, valid);
                prop_assert_eq!(st.tx_errors - self.last.tx_errors, refused);
                now = Some(st);
            }
            Step::Rx(max, spares) => now = Some(self.rx(*max, *spares)?),
            Step::Release(i, all) => self.held.release(usize::from(*i), *all),
            Step::Flush => {
                self.finish_tx();
                prop_assert!(self.nic.flush(), "flush once the device finished");
            }
            Step::Link => {
                let _ = self.nic.link().to_string();
            }
            dev => self.device(dev),
        }
        let now = now.unwrap_or_else(|| self.nic.stats());
        counters_grow(&self.last, &now)?;
        self.last = now;
        Ok(())
    }

    /// Closes the port (the device idle, so `flush` ends at once) and checks that every
    /// buffer came back.
    fn close(mut self, tally: &Tally) -> Result<(), TestCaseError> {
        let s = &self.last;
        for (c, v) in [
            (&tally.cases, 1),
            (&tally.actions, self.actions),
            (&tally.long, self.long_frames),
            (&tally.delivered, s.rx_packets),
            (&tally.rx_errors, s.rx_errors),
            (&tally.rx_no_buf, s.rx_no_buf),
            (&tally.tx_sent, s.tx_packets),
            (&tally.tx_refused, s.tx_errors),
        ] {
            c.fetch_add(v, Ordering::Relaxed);
        }
        self.held.clear();
        self.finish_tx();
        let pool = self.pool.clone();
        drop(self);
        prop_assert_eq!(pool.free_count(), pool.capacity(), "buffers lost");
        Ok(())
    }
}

fn run(c: &Case, tally: &Tally) -> Result<(), TestCaseError> {
    let mut m = Machine::open(c, FakeDma::new());
    for s in &c.steps {
        m.step(s)?;
    }
    m.close(tally)
}

/// A lying device cannot make the driver panic, hand a buffer out twice, lose one, deliver
/// a bad frame, or hide an error from `stats`.
#[test]
fn a_lying_device_breaks_nothing() {
    let tally = machine("long lies", 200, 12000, 300);
    for (what, c) in [
        ("frames delivered", &tally.delivered),
        ("long frames delivered", &tally.long),
        ("receive errors", &tally.rx_errors),
        ("pool exhaustion", &tally.rx_no_buf),
        ("frames sent", &tally.tx_sent),
        ("frames refused", &tally.tx_refused),
    ] {
        assert!(c.load(Ordering::Relaxed) > 0, "no case reached {what}");
    }
}

// ---------------------------------------------------------------------------------------
// Every wait on the device ends.
// ---------------------------------------------------------------------------------------

/// Generous bound on a wait that should end after its timeout: the machine is shared.
const HANG: Duration = Duration::from_secs(10);

#[test]
fn mac_comes_from_the_eeprom_when_rah0_has_none() {
    let dev = DevBar::new(false);
    let nic = E1000::new(dev, &FakeDma::new(), addr(), &config(8, 32, 64)).unwrap();
    assert_eq!(nic.mac(), MAC);
}

#[test]
fn eeprom_read_that_never_finishes_times_out() {
    let dev = DevBar::new(false);
    dev.quirks.eeprom_dead.store(true, Ordering::Relaxed);
    let started = Instant::now();
    match E1000::new(dev, &FakeDma::new(), addr(), &config(8, 32, 64)) {
        Err(e @ Error::Timeout { what, .. }) => {
            assert!(what.contains("EEPROM"), "{e}");
            assert!(e.to_string().contains("0000:00:02.0"), "{e}");
        }
        other => panic!("expected an EEPROM timeout, got {other:?}"),
    }
    assert!(started.elapsed() < HANG);
}

#[test]
fn reset_that_never_finishes_times_out_without_a_device_thread() {
    let dev = DevBar::new(true);
    dev.quirks.reset_sticks.store(true, Ordering::Relaxed);
    let started = Instant::now();
    match E1000::new(dev, &FakeDma::new(), addr(), &config(8, 32, 64)) {
        Err(Error::Timeout { what, ms, .. }) => {
            assert!(what.contains("CTRL.RST"), "{what}");
            assert_eq!(ms, 100);
        }
        other => panic!("expected a reset timeout, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < HANG,
        "{waited:?}"
    );
}

/// A device that never sends: `flush` gives up after its half second and says so, and
/// closing the port (which flushes again) ends too, with every buffer back.
#[test]
fn flush_on_a_device_that_never_sends_gives_up() {
    let dev = DevBar::new(true);
    let mut nic = E1000::new(dev.clone(), &FakeDma::new(), addr(), &config(8, 32, 64)).unwrap();
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
    assert!(pool.free_count() < pool.capacity(), "frames still queued");
    let started = Instant::now();
    drop(nic);
    assert!(started.elapsed() < HANG);
    // The reset on close completes, so the device is known to have stopped: all returns.
    assert_eq!(pool.free_count(), pool.capacity());
}

/// Closing a port whose device no longer finishes a reset still ends (the quiesce reset is
/// bounded), and keeps what the device may still write out of the pool.
#[test]
fn close_with_a_reset_that_never_finishes_ends() {
    let dev = DevBar::new(true);
    let nic = E1000::new(dev.clone(), &FakeDma::new(), addr(), &config(8, 32, 64)).unwrap();
    let pool = nic.pool().clone();
    dev.quirks.reset_sticks.store(true, Ordering::Relaxed);
    let started = Instant::now();
    drop(nic);
    assert!(started.elapsed() < HANG);
    // Nothing proves the device stopped (no reset, no bus master to turn off): its 8
    // receive buffers and the ring's spare stay out of the pool, which it may still write.
    assert_eq!(pool.free_count(), pool.capacity() - 8 - 1);
}

/// A link that never comes up costs the link timeout at open, then the port works.
#[test]
fn link_that_never_comes_up_costs_the_timeout_only() {
    let dev = DevBar::new(true);
    dev.regs.write32(regs::STATUS, 0);
    let started = Instant::now();
    let nic = E1000::new(dev, &FakeDma::new(), addr(), &config(8, 32, 64)).unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(50) && waited < HANG,
        "{waited:?}"
    );
    assert!(!nic.link().up);
}

/// Breadth over depth: many short lies, each from a freshly opened port. The long form runs
/// 10^6 cases (`cargo xtask test --long`).
#[test]
fn many_short_lies_break_nothing() {
    machine("many short lies", 300, 1_000_000, 6);
}

/// Runs `short` cases of up to `steps` steps (`long_cases` in the long form) and reports
/// what they covered.
fn machine(name: &str, short: u32, long_cases: u32, steps: usize) -> Tally {
    let (started, tally) = (Instant::now(), Tally::default());
    run_cases(short, long_cases, || case(steps), |c| run(&c, &tally));
    eprintln!(
        "{name}: {} in {:.1} s",
        tally.report(),
        started.elapsed().as_secs_f64()
    );
    tally
}
