//! The rings as the device sees them: chains taken off split and packed rings, used entries
//! written back, descriptors read through [`FakeDma`] (a bad address is a fault count,
//! never a crash), and the frame bytes gathered from or delivered into a chain.

use super::*;

/// How the device takes chains off a ring: whenever there are any (polling), or with
/// [`Behaviour::only_when_notified`] only while awake (see there).
pub(super) struct Taker<'a> {
    /// The queue's awake flag in only-when-notified mode.
    pub(super) awake: Option<&'a mut bool>,
    pub(super) event_idx: bool,
}

impl Taker<'_> {
    pub(super) fn take(&mut self, ring: &mut Ring, m: &Dma) -> Option<Chain> {
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
pub(super) struct Dma<'a> {
    pub(super) dma: &'a FakeDma,
    pub(super) faults: &'a AtomicU64,
}

impl Dma<'_> {
    pub(super) fn read(&self, iova: u64, buf: &mut [u8]) {
        // SAFETY: the fake device reads only its queues and the buffers the driver made
        // available to it, as a virtio device does; the driver holds no reference to them.
        if !unsafe { self.dma.device_read(iova, buf) } {
            buf.fill(0);
            bump(self.faults, 1);
        }
    }
    pub(super) fn write(&self, iova: u64, data: &[u8]) {
        // SAFETY: as in `read`: only queue memory and buffers the driver made available.
        if !unsafe { self.dma.device_write(iova, data) } {
            bump(self.faults, 1);
        }
    }
    pub(super) fn r<const N: usize>(&self, iova: u64) -> [u8; N] {
        let mut b = [0; N];
        self.read(iova, &mut b);
        b
    }
    pub(super) fn r16(&self, iova: u64) -> u16 {
        u16::from_le_bytes(self.r(iova))
    }
    pub(super) fn r32(&self, iova: u64) -> u32 {
        u32::from_le_bytes(self.r(iova))
    }
    pub(super) fn r64(&self, iova: u64) -> u64 {
        u64::from_le_bytes(self.r(iova))
    }
    pub(super) fn w16(&self, iova: u64, v: u16) {
        self.write(iova, &v.to_le_bytes())
    }
    pub(super) fn w32(&self, iova: u64, v: u32) {
        self.write(iova, &v.to_le_bytes())
    }
}

/// One descriptor as the device read it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Desc {
    pub(super) addr: u64,
    pub(super) len: u32,
    pub(super) flags: u16,
}

/// A chain the device took: split id = head index; packed id from the last descriptor,
/// `pos`/`wrap` = the head's ring position and wrap counter.
#[derive(Debug)]
pub(super) struct Chain {
    pub(super) id: u16,
    pub(super) pos: u16,
    pub(super) wrap: bool,
    pub(super) descs: Vec<Desc>,
}

/// A used entry to write in place of a chain (it may name another id).
#[derive(Debug, Clone, Copy)]
pub(super) struct Used {
    pub(super) pos: u16,
    pub(super) wrap: bool,
    pub(super) id: u32,
    pub(super) len: u32,
}

impl Chain {
    pub(super) fn used(&self, id: u32, len: u32) -> Used {
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
pub(super) fn rss_ok(d: &[u8], pairs: u16) -> bool {
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
pub(super) fn gather(m: &Dma, chain: &Chain) -> Vec<u8> {
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
pub(super) fn deliver(m: &Dma, chain: &Chain, hdr: &[u8], frame: &[u8]) -> u32 {
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
pub(super) enum Ring {
    Split(SplitRing),
    Packed(PackedRing),
}

impl Ring {
    pub(super) fn new(packed: bool, q: QueueRegs) -> Self {
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

    pub(super) fn size(&self) -> u16 {
        match self {
            Ring::Split(r) => r.size,
            Ring::Packed(r) => r.size,
        }
    }

    pub(super) fn take(&mut self, m: &Dma) -> Option<Chain> {
        match self {
            Ring::Split(r) => r.take(m),
            Ring::Packed(r) => r.take(m),
        }
    }

    pub(super) fn complete(&mut self, m: &Dma, done: &[Used]) {
        match self {
            Ring::Split(r) => r.complete(m, done),
            Ring::Packed(r) => r.complete(m, done),
        }
    }

    pub(super) fn suppress(&self, m: &Dma, notify: Notify, event_idx: bool) {
        match self {
            Ring::Split(r) => r.suppress(m, notify, event_idx),
            Ring::Packed(r) => r.suppress(m, notify, event_idx),
        }
    }

    /// The split ring's `used.idx` as the device last wrote it (0 for packed).
    pub(super) fn used_idx(&self) -> u16 {
        match self {
            Ring::Split(r) => r.used_idx,
            Ring::Packed(_) => 0,
        }
    }

    /// Whether the driver asked for a notification of the entries written since `used.idx`
    /// was `before` (`irq.rs`).
    pub(super) fn wants_interrupt(&self, m: &Dma, before: u16, event_idx: bool) -> bool {
        match self {
            Ring::Split(r) => {
                irq::split_wants(|a| m.r16(a), r.avail, r.size, event_idx, before, r.used_idx)
            }
            Ring::Packed(r) => irq::packed_wants(|a| m.r16(a), r.driver_event),
        }
    }

    /// `used.idx` beyond anything made available (split only).
    pub(super) fn jump(&self, m: &Dma) {
        if let Ring::Split(r) = self {
            let idx = r.used_idx.wrapping_add(r.size).wrapping_add(1);
            m.w16(r.used + USED_IDX, idx);
        }
    }
}

/// Split ring fields (virtio 1.1 §2.6.5, §2.6.6, §2.6.8): `virtq_desc` is 16 bytes
/// (addr le64, len le32, flags le16, next le16); `avail` = flags, idx, ring[n] of le16,
/// used_event; `used` = flags, idx, ring[n] of {id le32, len le32}, avail_event.
pub(super) const SPLIT_DESC: u64 = 16;
pub(super) const AVAIL_IDX: u64 = 2;
pub(super) const AVAIL_RING: u64 = 4;
pub(super) const USED_FLAGS: u64 = 0;
pub(super) const USED_IDX: u64 = 2;
pub(super) const USED_RING: u64 = 4;
pub(super) const USED_ELEM: u64 = 8;

#[derive(Debug)]
pub(super) struct SplitRing {
    pub(super) size: u16,
    pub(super) desc: u64,
    pub(super) avail: u64,
    pub(super) used: u64,
    pub(super) last_avail: u16,
    pub(super) used_idx: u16,
}

impl SplitRing {
    pub(super) fn take(&mut self, m: &Dma) -> Option<Chain> {
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

    pub(super) fn complete(&mut self, m: &Dma, done: &[Used]) {
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

    pub(super) fn suppress(&self, m: &Dma, notify: Notify, event_idx: bool) {
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
pub(super) const PACKED_DESC: u64 = 16;
pub(super) const PACKED_LEN: u64 = 8;
pub(super) const PACKED_ID: u64 = 12;
pub(super) const PACKED_FLAGS: u64 = 14;
pub(super) const EVENT_OFF_WRAP: u64 = 0;
pub(super) const EVENT_FLAGS: u64 = 2;

#[derive(Debug)]
pub(super) struct PackedRing {
    pub(super) size: u16,
    pub(super) desc: u64,
    pub(super) driver_event: u64,
    pub(super) device_event: u64,
    /// Next position the device reads, and its wrap counter (starts at 1, §2.7.1).
    pub(super) pos: u16,
    pub(super) wrap: bool,
}

impl PackedRing {
    pub(super) fn at(&self, pos: u16) -> u64 {
        self.desc + PACKED_DESC * u64::from(pos)
    }

    pub(super) fn take(&mut self, m: &Dma) -> Option<Chain> {
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
    pub(super) fn complete(&mut self, m: &Dma, done: &[Used]) {
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

    pub(super) fn suppress(&self, m: &Dma, notify: Notify, event_idx: bool) {
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
