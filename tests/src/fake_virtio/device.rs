//! The fake device's core: its register decoder ([`VirtioBar`]'s side effects, applied in
//! the driver's write), the per-queue registers, and the state the device thread steps
//! (feature negotiation, reset, queue enable, the transmit, receive and control datapaths).

use super::*;

impl VirtioBar {
    pub(super) fn write(&self, off: u32, width: u32, val: u32) {
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

pub(super) fn store(bar: &FakeBar, off: u32, width: u32, val: u32) {
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
pub(super) struct QueueRegs {
    pub(super) size: u16,
    /// queue_msix_vector.
    pub(super) vector: u16,
    pub(super) enable: u16,
    pub(super) desc: u64,
    pub(super) driver: u64,
    pub(super) device: u64,
}

#[derive(Debug)]
pub(super) struct Core {
    pub(super) b: Behaviour,
    pub(super) regs: FakeBar,
    pub(super) dma: FakeDma,
    pub(super) driver_features: [u32; 2],
    /// device_status as last accepted.
    pub(super) status: u8,
    pub(super) queues: [QueueRegs; MAX_QUEUES],
    pub(super) rings: [Option<Ring>; MAX_QUEUES],
    pub(super) event_idx: bool,
    /// The header's length as negotiated (12, or 20 with the hash report; 10 legacy).
    pub(super) hdr_len: usize,
    /// The header must have a descriptor of its own (legacy without ANY_LAYOUT).
    pub(super) strict: bool,
    /// Receive filter: promiscuity, all-multicast and the MAC table, as QEMU's.
    pub(super) rx_filter: VirtioRxFilter,
    /// The control queue is not looked at (a device slow to answer).
    pub(super) ctrl_held: bool,
    pub(super) tx_paused: bool,
    pub(super) bad_tx_len: u32,
    /// Per pair.
    pub(super) inject: [VecDeque<Inject>; MAX_PAIRS as usize],
    /// Receive chains taken from each pair's ring but not yet used.
    pub(super) held: [VecDeque<Chain>; MAX_PAIRS as usize],
    /// MRG_RXBUF was accepted.
    pub(super) merge: bool,
    /// Used entries [`Inject::Partial`] held back, per pair.
    pub(super) stalled: [Vec<Used>; MAX_PAIRS as usize],
    /// Per queue, with [`Behaviour::only_when_notified`]: the device was kicked and has not
    /// yet found the ring empty since; and the kicks counted when it last looked.
    pub(super) awake: [bool; MAX_QUEUES],
    pub(super) kicks_seen: [u64; MAX_QUEUES],
    /// The MSI-X table, when the test gave the driver vectors (`irq.rs`).
    pub(super) msix: irq::Msix,
}

/// Width of the register starting at `off` (0: none starts there).
pub(super) fn natural_width(off: u32) -> u32 {
    match off {
        c::DEVICE_FEATURE_SELECT | c::DEVICE_FEATURE => 4,
        c::DRIVER_FEATURE_SELECT | c::DRIVER_FEATURE => 4,
        c::DEVICE_STATUS | c::CONFIG_GENERATION => 1,
        o if o < c::QUEUE_DESC => 2,
        o if o.is_multiple_of(4) => 4,
        _ => 0,
    }
}

pub(super) fn write64(bar: &FakeBar, off: u32, v: u64) {
    bar.write32(off, v as u32);
    bar.write32(off + 4, (v >> 32) as u32);
}

pub(super) fn read64(bar: &FakeBar, off: u32) -> u64 {
    u64::from(bar.read32(off)) | u64::from(bar.read32(off + 4)) << 32
}

impl Core {
    pub(super) fn accepted(&self) -> u64 {
        u64::from(self.driver_features[0]) | u64::from(self.driver_features[1]) << 32
    }

    pub(super) fn dma<'a>(&'a self, counts: &'a Counters) -> Dma<'a> {
        Dma {
            dma: &self.dma,
            faults: &counts.faults,
        }
    }

    /// Side effects of the driver's write of `width` bytes at `off` (already stored).
    pub(super) fn common_written(&mut self, off: u32, width: u32, counts: &Counters) {
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

    pub(super) fn refresh_read_only(&self) {
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
    pub(super) fn load_queue(&self) {
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

    pub(super) fn save_queue(&mut self) {
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
    pub(super) fn reset(&mut self) {
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

    pub(super) fn status_written(&mut self, counts: &Counters) {
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
    pub(super) fn start(&mut self, counts: &Counters) {
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
    pub(super) fn take_kicks(&mut self, counts: &Counters) {
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
    pub(super) fn step(&mut self, s: &Shared) -> bool {
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
    pub(super) fn control(&mut self, s: &Shared) -> bool {
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

    pub(super) fn transmit(&mut self, pair: usize, s: &Shared) -> bool {
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

    pub(super) fn receive(&mut self, pair: usize, counts: &Counters) -> bool {
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
