//! The igb driver against a device that lies: a proptest state machine plays the 82576 on
//! the test thread (no device thread, so every case is deterministic and shrinks), with
//! the device side in `zcnic_tests::igb_adversary`. The device writes DD on descriptors it
//! was never given (the slot at the tail among them), write-backs of impossible lengths,
//! frame-error and checksum-error bits, frames spread over descriptors without EOP, the
//! read format back unchanged with DD (the buffer address where the hash goes), garbage
//! over whole descriptors, transmit DD without RS or ahead of the tail, transmit
//! write-backs that zero or scramble the address word, head registers anywhere and absurd
//! counters, interleaved with the application's bursts, releases, flushes and stats reads.
//! On ports of 2 to 4 queue pairs every step lands on any queue: lies on one queue's ring
//! while the application polls another, hashes whose queue is not the one the frame came
//! on, and the port closed before or after its queues.
//!
//! Invariants after every step: no panic; every frame handed out is 1..=2048 bytes, the
//! buffer the driver posted in that slot, and not one the application still holds; the
//! receive path does exactly what the descriptors it consumed say (a good one is a frame
//! of that length, a bad one one `rx_errors`, a descriptor without EOP and the rest of its
//! frame one each, DD on the slot at the tail one more), and every descriptor it hands
//! back is the read format with a buffer of its own; the transmit path writes descriptors
//! the datasheet's way, releases a frame only after the device wrote DD at or after its
//! last descriptor, and takes all that fits into an empty ring; no buffer is lost on the
//! way; counters never go back; each frame carries the hash and type of its own
//! write-back (none for the read format); a queue's counters move only in its own calls
//! and the port's totals are their sum. After the port and its queues close, in either
//! order, every buffer is back in the pool.
//!
//! Cases: `ZCNIC_LONG=1` (set by `cargo xtask test --long`) runs the long form: over 10^6
//! device actions in long sequences, and 10^6 short cases.

use proptest::prelude::*;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zcnic::igb::{Config, Igb, IgbPort, IgbRxQueue, IgbTxQueue};
use zcnic::{Bar, Mempool, Nic, PciAddr, Port, RxQueue, Stats, TxQueue, UserRegion, DATA_ROOM};
use zcnic_tests::adversary::{counters_grow, run_cases, send_with, Held};
use zcnic_tests::igb_adversary::{
    case, rx, tx, AddrWord, Case, DevBar, Device, RxPlan, RxSnap, Step, GROUPS, MAC,
};

/// The igb driver's longest frame without TSO (82576 datasheet §7.2.1).
const MAX_FRAME: usize = 9728;

fn addr() -> PciAddr {
    "0000:00:03.0".parse().unwrap()
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

/// What one test's cases did, to show the state machine reaches every path.
#[derive(Default)]
struct Tally {
    cases: AtomicU64,
    actions: AtomicU64,
    delivered: AtomicU64,
    rx_errors: AtomicU64,
    rx_no_buf: AtomicU64,
    tx_sent: AtomicU64,
    tx_refused: AtomicU64,
}

impl Tally {
    fn report(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "igb state machine: {} cases, {} device actions; {} frames delivered, {} rx_errors, \
             {} rx_no_buf, {} frames sent, {} refused",
            g(&self.cases),
            g(&self.actions),
            g(&self.delivered),
            g(&self.rx_errors),
            g(&self.rx_no_buf),
            g(&self.tx_sent),
            g(&self.tx_refused)
        )
    }
}

/// One queue pair, its device side, and what the test knows of both.
struct Lane {
    rx: IgbRxQueue,
    tx: IgbTxQueue,
    dev: Device,
    /// Receive slots the driver consumed (free-running); it owns the `size - 1` after it.
    rx_consumed: u32,
    /// The last descriptor consumed had no EOP: the rest of its frame is dropped.
    discarding: bool,
    /// The buffer the driver posted in each receive slot.
    posted: Vec<u64>,
    /// Transmit descriptors queued (free-running; the tail).
    tx_produced: u32,
    /// The first and last descriptor of each frame the driver still holds for the device,
    /// oldest first.
    parked: VecDeque<(u32, u32)>,
    /// The status word of each transmit descriptor as the driver wrote it.
    tx_written: Vec<u64>,
    /// This queue pair's counters after the last step.
    last: Stats,
}

impl Lane {
    fn rx_slot(&self, k: u32) -> usize {
        (k % self.dev.rx_size) as usize
    }
}

/// The application and the device around one port of one or more queue pairs, and what
/// the test knows of them. The application's held frames are one set across the queues,
/// so a buffer handed out on two queues at once is caught.
struct Machine {
    port: IgbPort<DevBar>,
    lanes: Vec<Lane>,
    pool: Arc<Mempool>,
    payload: Arc<UserRegion>,
    held: Held,
    /// The port's totals after the last step.
    last: Stats,
    actions: u64,
    port_first: bool,
}

impl Machine {
    fn open(c: &Case) -> Self {
        let bar = DevBar::new();
        let dma = zcnic::FakeDma::new();
        let n = usize::from(c.queues);
        let pool = if c.tight_pool {
            n * (c.rx_ring as usize + if n > 1 { 64 } else { 8 })
        } else {
            n * (c.rx_ring + c.tx_ring + 64) as usize + 96
        };
        let cfg = Config {
            queues: c.queues,
            ..config(c.rx_ring, c.tx_ring, pool)
        };
        let (port, queues) =
            IgbPort::new(bar.clone(), &dma, addr(), &cfg).expect("driver comes up");
        let payload = Arc::new(UserRegion::with_data(&[0x5a; 16500], dma.mapper()).unwrap());
        let pool = queues[0].0.pool().clone();
        let lanes = queues
            .into_iter()
            .zip(0..)
            .map(|((rx, tx), queue)| {
                let dev = Device {
                    regs: bar.regs.clone(),
                    dma: dma.clone(),
                    queue,
                    rx_size: c.rx_ring,
                    tx_size: c.tx_ring,
                };
                let posted = (0..c.rx_ring).map(|s| dev.words(dev.rx_at(s))[0]).collect();
                Lane {
                    rx,
                    tx,
                    dev,
                    rx_consumed: 0,
                    discarding: false,
                    posted,
                    tx_produced: 0,
                    parked: VecDeque::new(),
                    tx_written: vec![0; c.tx_ring as usize],
                    last: Stats::default(),
                }
            })
            .collect();
        let mut m = Self {
            pool,
            port,
            lanes,
            payload,
            held: Held::default(),
            last: Stats::default(),
            actions: 0,
            port_first: c.port_first,
        };
        m.last = m.port.stats();
        m
    }

    /// Transmit frames the driver holds on all queues, by the pool's count: every buffer is
    /// in the pool, in a receive ring (one per slot), with the application, or parked for
    /// transmit.
    fn parked_now(&self) -> Result<usize, TestCaseError> {
        let out = self.pool.capacity() - self.pool.free_count();
        let rings: usize = self.lanes.iter().map(|l| l.dev.rx_size as usize).sum();
        let parked = out.checked_sub(rings + self.held.len());
        prop_assert!(
            parked.is_some(),
            "{out} buffers out of the pool, fewer than the rings and the application hold"
        );
        Ok(parked.unwrap())
    }

    fn parked_known(&self) -> usize {
        self.lanes.iter().map(|l| l.parked.len()).sum()
    }

    /// Queue `q`'s counters, checked to grow from the last step's.
    fn queue_stats(&mut self, q: usize) -> Result<Stats, TestCaseError> {
        let now = self.port.queue_stats().swap_remove(q);
        counters_grow(&self.lanes[q].last, &now)?;
        Ok(now)
    }

    /// One `rx_batch` on queue `q`, checked against the descriptors it consumed.
    fn rx(&mut self, q: usize, max: u16) -> Result<Stats, TestCaseError> {
        let free = self.pool.free_count();
        let l = &mut self.lanes[q];
        let size = l.dev.rx_size;
        let snap: Vec<RxSnap> = (0..size)
            .map(|s| RxSnap::of(l.dev.words(l.dev.rx_at(s))))
            .collect();
        let plan = RxPlan::of(&snap, l.rx_consumed, l.discarding, free, max);
        let rdt_reg = l.dev.heads_tails()[1];
        let rdt_before = l.dev.regs.read32(rdt_reg);
        let mut got = Vec::new();
        let n = l.rx.rx_batch(&mut got, max.into());
        prop_assert_eq!(n, got.len());
        let lens: Vec<u16> = got.iter().map(|p| p.len() as u16).collect();
        let want: Vec<u16> = plan.frames.iter().map(|f| f.1).collect();
        prop_assert_eq!(
            &lens,
            &want,
            "frames delivered vs good descriptors consumed"
        );
        for (p, &(slot, _)) in got.iter().zip(&plan.frames) {
            prop_assert_eq!(
                p.iova(),
                l.posted[slot],
                "slot {}: not the buffer the driver posted there",
                slot
            );
            prop_assert_eq!(
                p.rss(),
                snap[slot].rss(),
                "slot {}: the hash and type its write-back gave",
                slot
            );
        }
        let c = l.rx_consumed;
        let rdt = l.dev.regs.read32(rdt_reg);
        let want_rdt = if plan.taken > 0 {
            l.rx_slot(c.wrapping_add(plan.taken + size - 1)) as u32
        } else {
            rdt_before
        };
        prop_assert_eq!(rdt, want_rdt, "RDT after consuming {}", plan.taken);
        for p in got {
            prop_assert!(
                (1..=DATA_ROOM).contains(&p.len()),
                "frame of {} bytes",
                p.len()
            );
            self.held.take(p, "rx_batch")?;
        }
        // Every descriptor the driver handed back (those consumed, and the old tail's) is
        // the read format with a buffer of its own: a new one where a frame went out.
        let delivered: HashSet<usize> = plan.frames.iter().map(|f| f.0).collect();
        let rearmed = (0..plan.taken).chain((plan.taken > 0).then_some(size - 1));
        for k in rearmed {
            let slot = l.rx_slot(c.wrapping_add(k));
            let [buf, w1] = l.dev.words(l.dev.rx_at(slot as u32));
            prop_assert_eq!(w1, 0, "slot {} handed back with status {:#x}", slot, w1);
            if delivered.contains(&slot) {
                prop_assert!(
                    !self.held.holds(buf),
                    "slot {slot} re-armed with a held buffer"
                );
                l.posted[slot] = buf;
            }
            prop_assert_eq!(
                buf,
                l.posted[slot],
                "slot {} re-armed with another buffer",
                slot
            );
        }
        l.rx_consumed = c.wrapping_add(plan.taken);
        l.discarding = plan.discarding;
        let all = self.lanes.iter().flat_map(|l| &l.posted);
        let distinct: HashSet<u64> = all.clone().copied().collect();
        prop_assert_eq!(
            distinct.len(),
            all.count(),
            "one buffer in two receive slots"
        );
        let s = self.queue_stats(q)?;
        let last = &self.lanes[q].last;
        prop_assert_eq!(s.rx_packets - last.rx_packets, n as u64);
        let bytes: u64 = want.iter().map(|&l| u64::from(l)).sum();
        prop_assert_eq!(s.rx_bytes - last.rx_bytes, bytes);
        prop_assert_eq!(s.rx_errors - last.rx_errors, plan.errors, "rx_errors");
        prop_assert_eq!(
            s.rx_no_buf - last.rx_no_buf,
            u64::from(plan.ran_dry),
            "rx_no_buf"
        );
        Ok(s)
    }

    /// The descriptors of one frame queued at counter `at`: the datasheet's advanced data
    /// descriptors (§7.2.2.3), the buffer's address and length, EOP on the last, the
    /// frame's length as PAYLEN on the first, no DD. Returns how many it used.
    fn check_queued(
        l: &mut Lane,
        at: u32,
        head: (u64, u16),
        seg: Option<(u64, u16)>,
    ) -> Result<u32, TestCaseError> {
        let total = u32::from(head.1) + seg.map_or(0, |s| u32::from(s.1));
        let parts = [Some(head), seg];
        let parts: Vec<_> = parts.iter().flatten().collect();
        for (i, &&(iova, len)) in parts.iter().enumerate() {
            let slot = at.wrapping_add(i as u32);
            let [a, w1] = l.dev.words(l.dev.tx_at(slot));
            l.tx_written[(slot % l.dev.tx_size) as usize] = w1;
            let (cmd, olinfo) = (w1 as u32, (w1 >> 32) as u32);
            let last = i + 1 == parts.len();
            let want = tx::DTYP_DATA
                | tx::DEXT
                | tx::IFCS
                | if last { tx::EOP } else { 0 }
                | u32::from(len);
            prop_assert_eq!(a, iova, "descriptor {}: address", slot);
            prop_assert_eq!(
                cmd & !tx::RS,
                want,
                "descriptor {}: command, type, length",
                slot
            );
            prop_assert_eq!(olinfo & tx::DD, 0, "descriptor {} queued with DD", slot);
            let paylen = if i == 0 { total } else { 0 };
            prop_assert_eq!(
                olinfo >> tx::PAYLEN_SHIFT,
                paylen,
                "descriptor {}: PAYLEN",
                slot
            );
        }
        Ok(parts.len() as u32)
    }

    /// One `tx_batch` on queue `q`, checked descriptor by descriptor, with the frames it
    /// released.
    fn tx(&mut self, q: usize, frames: &[(u16, Option<u16>)]) -> Result<Stats, TestCaseError> {
        let parked_all = self.parked_known();
        let l = &mut self.lanes[q];
        let size = l.dev.tx_size;
        let status: Vec<u64> = (0..size).map(|s| l.dev.words(l.dev.tx_at(s))[1]).collect();
        let dd = |k: u32| (status[(k % size) as usize] >> 32) as u32 & tx::DD != 0;
        let (start, parked_before) = (l.tx_produced, l.parked.len());
        // The device finished every descriptor that asked for a report (and left the others
        // as the driver wrote them): then nothing stays held.
        let finished = l.parked.front().is_some_and(|&(first, _)| {
            (0..start.wrapping_sub(first)).all(|k| {
                let slot = (first.wrapping_add(k) % size) as usize;
                let intact = status[slot] == l.tx_written[slot];
                dd(first.wrapping_add(k)) || intact && l.tx_written[slot] as u32 & tx::RS == 0
            })
        });
        let mut batch = self.held.batch(&self.pool, &self.payload, frames)?;
        let bufs: Vec<_> = batch
            .iter()
            .map(|p| (p.iova(), p.payload().map(|s| (s.iova(), s.len() as u16))))
            .collect();
        // How many frames an empty ring takes: `min(len, free)`, each one descriptor, two
        // with a payload, none when refused; one that does not fit ends the burst, and
        // once one of two is queued the frames at the end that no longer have a
        // descriptor each wait for the next call.
        let free = size as usize - 1;
        let (mut room, mut end, mut fits) = (free, batch.len().min(free), 0);
        for (i, &(len, plen)) in frames.iter().enumerate().take(batch.len()) {
            if i >= end {
                break;
            }
            let total = usize::from(len) + usize::from(plen.unwrap_or(0));
            fits += 1;
            if len == 0 || total > MAX_FRAME {
                continue;
            }
            let need = 1 + usize::from(plen.is_some());
            if need > room {
                fits -= 1;
                break;
            }
            room -= need;
            end = end.min(i + 1 + room);
        }
        let n = send_with(&mut batch, |b| l.tx.tx_batch(b))?;
        drop(batch);
        if parked_before == 0 || finished {
            prop_assert_eq!(n, fits, "a finished ring takes what fits");
        }
        let mut at = start;
        let mut valid = 0;
        for (&(len, plen), &(iova, seg)) in frames.iter().zip(&bufs).take(n) {
            let total = usize::from(len) + usize::from(plen.unwrap_or(0));
            if len == 0 || total > MAX_FRAME {
                continue;
            }
            let used = Self::check_queued(l, at, (iova, len), seg)?;
            l.parked.push_back((at, at.wrapping_add(used - 1)));
            at = at.wrapping_add(used);
            valid += 1;
        }
        if at != start {
            let [_, w1] = l.dev.words(l.dev.tx_at(at.wrapping_sub(1)));
            prop_assert!(
                w1 as u32 & tx::RS != 0,
                "the burst's last descriptor has no RS"
            );
        }
        l.tx_produced = at;
        let tdt = l.dev.regs.read32(l.dev.heads_tails()[3]);
        prop_assert_eq!(tdt, at % size, "TDT");
        // Frames released must have been reported done: DD at or after their last
        // descriptor, among those queued before this burst. Only this queue releases.
        let queued = parked_all + l.parked.len() - parked_before;
        let released = queued.checked_sub(self.parked_now()?);
        prop_assert!(released.is_some(), "more transmit buffers out than queued");
        let released = released.unwrap();
        let l = &mut self.lanes[q];
        prop_assert!(
            released <= parked_before,
            "released {released} of {parked_before} queued before"
        );
        if finished {
            prop_assert_eq!(
                released,
                parked_before,
                "the device finished; frames still held"
            );
        }
        if released > 0 {
            let last = l.parked[released - 1].1;
            let reported = (0..start.wrapping_sub(last)).any(|k| dd(last.wrapping_add(k)));
            prop_assert!(
                reported,
                "released the frame ending at {last} with no DD from it to {start}"
            );
        }
        l.parked.drain(..released);
        let s = self.queue_stats(q)?;
        let last = &self.lanes[q].last;
        prop_assert_eq!(s.tx_packets - last.tx_packets, valid);
        prop_assert_eq!(s.tx_errors - last.tx_errors, n as u64 - valid);
        Ok(s)
    }

    /// One step on queue pair `q` (the port's, for link and promiscuity).
    fn step(&mut self, q: usize, s: &Step) -> Result<(), TestCaseError> {
        let mut queue = None;
        match s {
            Step::Tx(frames) => queue = Some(self.tx(q, frames)?),
            Step::Rx(max) => queue = Some(self.rx(q, *max)?),
            Step::Release(i, all) => self.held.release(usize::from(*i), *all),
            Step::Flush => {
                let l = &mut self.lanes[q];
                l.dev.finish_tx();
                prop_assert!(l.tx.flush(), "flush once the device finished");
                l.parked.clear();
            }
            Step::Link => prop_assert!(self.port.link().to_string().len() < 100),
            Step::Promisc(on) => self.port.set_promisc(*on),
            Step::Group(n, join) => {
                let g = GROUPS[usize::from(*n) % GROUPS.len()];
                // A join always succeeds; a leave only fails for a group not joined.
                let r = if *join {
                    self.port.add_multicast(g)
                } else {
                    self.port.remove_multicast(g)
                };
                let not_joined = matches!(
                    r,
                    Err(zcnic::Error::Filter {
                        source: zcnic::FilterError::NotAdded(_),
                        ..
                    })
                );
                prop_assert!(r.is_ok() || (!*join && not_joined), "{:?}", r);
            }
            dev => {
                self.actions += 1;
                self.lanes[q].dev.act(dev);
            }
        }
        prop_assert_eq!(
            self.parked_now()?,
            self.parked_known(),
            "transmit buffers the driver holds"
        );
        if let Some(s) = queue {
            self.lanes[q].last = s;
        }
        // The port's totals grow and are the sum of its queues'.
        let now = self.port.stats();
        counters_grow(&self.last, &now)?;
        let mut sum = [0u64; 7];
        for (i, s) in self.port.queue_stats().into_iter().enumerate() {
            counters_grow(&self.lanes[i].last, &s)?;
            prop_assert_eq!(
                s.software(),
                self.lanes[i].last.software(),
                "queue {} counted outside its own calls",
                i
            );
            for (t, (_, v)) in sum.iter_mut().zip(s.software()) {
                *t += v;
            }
        }
        let totals = now.software().map(|(_, v)| v);
        prop_assert_eq!(totals, sum, "totals vs the sum of the queues");
        self.last = now;
        Ok(())
    }

    /// Closes the port and its queues in the case's order (the device finished, so
    /// `flush` ends at once) and checks that every buffer came back.
    fn close(mut self, tally: &Tally) -> Result<(), TestCaseError> {
        let s = &self.last;
        for (c, v) in [
            (&tally.cases, 1),
            (&tally.actions, self.actions),
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
        let Machine {
            port,
            lanes,
            pool,
            port_first,
            ..
        } = self;
        if port_first {
            drop(port);
            drop(lanes);
        } else {
            drop(lanes);
            drop(port);
        }
        prop_assert_eq!(pool.free_count(), pool.capacity(), "buffers lost");
        Ok(())
    }

    /// The device finishes every transmit descriptor of every queue.
    fn finish_tx(&self) {
        for l in &self.lanes {
            l.dev.finish_tx();
        }
    }
}

fn run(c: &Case, tally: &Tally) -> Result<(), TestCaseError> {
    let mut m = Machine::open(c);
    for (q, s) in &c.steps {
        if let Err(e) = m.step(usize::from(*q), s) {
            // Closing flushes: without this, each failing case (and each shrink) waits out
            // the flush timeout.
            m.finish_tx();
            return Err(e);
        }
    }
    m.close(tally)
}

/// Runs `short` cases of up to `steps` steps (`long_cases` in the long form) and reports
/// what they covered.
fn machine(name: &str, short: u32, long_cases: u32, steps: usize, queues: &[u16]) -> Tally {
    let (started, tally) = (Instant::now(), Tally::default());
    let strategy = || case(steps, queues.to_vec());
    run_cases(short, long_cases, strategy, |c| run(&c, &tally));
    eprintln!(
        "{name}: {} in {:.1} s",
        tally.report(),
        started.elapsed().as_secs_f64()
    );
    tally
}

/// A lying device cannot make the driver panic, hand a buffer out twice, lose one, deliver
/// a bad frame, hide an error from `stats`, or release a frame the device still reads.
#[test]
fn a_lying_igb_breaks_nothing() {
    let tally = machine("long lies", 200, 12000, 300, &[1]);
    for (what, c) in [
        ("frames delivered", &tally.delivered),
        ("receive errors", &tally.rx_errors),
        ("pool exhaustion", &tally.rx_no_buf),
        ("frames sent", &tally.tx_sent),
        ("frames refused", &tally.tx_refused),
    ] {
        assert!(c.load(Ordering::Relaxed) > 0, "no case reached {what}");
    }
}

/// Breadth over depth: many short lies, each from a freshly opened port. The long form runs
/// 10^6 cases (`cargo xtask test --long`).
#[test]
fn many_short_lies_on_an_igb_break_nothing() {
    machine("many short lies", 300, 1_000_000, 6, &[1]);
}

/// The same lies told on a port of 2 to 4 queue pairs, each step on any of them (the
/// application's calls too): a frame on a queue its hash does not choose, DD on one
/// queue's ring while the application polls another, one queue's registers moved under
/// the rest. No buffer is handed out on two queues, each queue's counters move only in
/// its own calls and add up to the port's, and the port and its queues close in either
/// order with every buffer back in the pool.
#[test]
fn lies_across_queues_break_nothing() {
    let tally = machine("lies across queues", 150, 20000, 200, &[2, 3, 4]);
    for (what, c) in [
        ("frames delivered", &tally.delivered),
        ("receive errors", &tally.rx_errors),
        ("pool exhaustion", &tally.rx_no_buf),
        ("frames sent", &tally.tx_sent),
    ] {
        assert!(c.load(Ordering::Relaxed) > 0, "no case reached {what}");
    }
}

/// Runs `steps` on an 8-slot receive ring and a 32-slot transmit ring with a roomy pool,
/// every invariant checked; returns the counters before close.
fn pinned(steps: Vec<Step>) -> Stats {
    let c = Case {
        queues: 1,
        rx_ring: 8,
        tx_ring: 32,
        tight_pool: false,
        steps: steps.into_iter().map(|s| (0, s)).collect(),
        port_first: false,
    };
    let mut m = Machine::open(&c);
    for (q, s) in &c.steps {
        m.step(usize::from(*q), s).unwrap_or_else(|e| panic!("{e}"));
    }
    let stats = m.last.clone();
    m.close(&Tally::default()).unwrap_or_else(|e| panic!("{e}"));
    stats
}

/// The slot at the tail is not the device's, but the driver handed it over as it found
/// it: a write-back the device put there early then passed for a received frame (in a
/// buffer the device, owning the slot now, may still write), uncounted.
#[test]
fn regression_dd_on_the_slot_at_the_tail_is_counted_and_rearmed() {
    let early = Step::RxWb {
        slot: 7,
        len: 60,
        status: rx::DD | rx::EOP,
        hash: 0,
        kind: 0,
    };
    let good = Step::RxGood {
        n: 1,
        len: 60,
        csum: 0,
    };
    let s = pinned(vec![early, good, Step::Rx(8), Step::Rx(8)]);
    assert_eq!((s.rx_packets, s.rx_errors), (1, 1));
}

/// On a 32-slot ring the driver released frames only a whole group of 32 at a time, and
/// the ring holds 31: once full, it never took another frame, although the device had
/// sent them all (only a `flush` got it going again).
#[test]
fn regression_a_full_32_slot_ring_frees_once_the_device_is_done() {
    let frames = |n| Step::Tx(vec![(60, None); n]);
    let done = Step::TxGood {
        n: 80,
        addr: AddrWord::Zero,
    };
    let s = pinned(vec![frames(40), done.clone(), frames(40), done, frames(5)]);
    assert_eq!(s.tx_packets, 31 + 31 + 5);
}

/// TCPE and IPE report a bad checksum (offload); the frame is delivered all the same.
#[test]
fn checksum_errors_do_not_drop_a_frame() {
    let good = Step::RxGood {
        n: 2,
        len: 100,
        csum: rx::TCPE,
    };
    let ipe = Step::RxWb {
        slot: 2,
        len: 70,
        status: rx::DD | rx::EOP | rx::IPE,
        hash: 1,
        kind: 2,
    };
    let s = pinned(vec![good, ipe, Step::Rx(8)]);
    assert_eq!((s.rx_packets, s.rx_bytes, s.rx_errors), (3, 270, 0));
}

/// A frame over three descriptors (EOP on the last) is dropped whole, one error each;
/// the frame after it arrives.
#[test]
fn a_frame_without_eop_is_dropped_whole() {
    let split = Step::RxSplit {
        parts: 3,
        len: 100,
        eop: true,
    };
    let next = Step::RxGood {
        n: 1,
        len: 60,
        csum: 0,
    };
    let s = pinned(vec![split, next, Step::Rx(8)]);
    assert_eq!((s.rx_packets, s.rx_bytes, s.rx_errors), (1, 60, 3));
}

/// The read format written back with DD: the frame is the slot's own buffer, whatever
/// the address word holds, and the slot goes back with that buffer's address.
#[test]
fn a_read_format_written_back_is_never_taken_for_an_address() {
    let back = |slot, status| Step::RxReadBack {
        slot,
        status,
        len: 64,
    };
    let s = pinned(vec![
        back(0, rx::DD | rx::EOP),
        back(1, rx::DD),
        Step::Rx(8),
    ]);
    assert_eq!((s.rx_packets, s.rx_errors), (1, 1));
}

#[test]
fn the_adversarys_igb_comes_up() {
    let dma = zcnic::FakeDma::new();
    let nic = Igb::new(DevBar::new(), &dma, addr(), &config(8, 32, 64)).unwrap();
    assert_eq!(nic.mac(), MAC);
    assert!(nic.link().up);
}
