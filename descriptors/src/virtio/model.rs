//! Test-only device models: they play the device side of a split or packed virtqueue on
//! the same [`VecMemory`] the driver's queue uses, following virtio 1.1 §2.6 and §2.7 as a
//! device would, and assert the driver kept its side of the protocol.

use std::collections::HashMap;

use super::{
    need_event, Buf, PackedLayout, QueueMemory, SplitLayout, VecMemory, RING_EVENT_FLAGS_DESC,
    RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, RING_EVENT_WRAP, VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE,
    VIRTQ_USED_F_NO_NOTIFY,
};

/// A chain as the device read it from the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Chain {
    pub id: u16,
    pub bufs: Vec<Buf>,
}

/// What the generic state-machine harness needs from a device.
pub(super) trait Device {
    /// Reads every chain made available since the last call, in ring order.
    fn fetch(&mut self) -> Vec<Chain>;
    /// Returns a fetched chain with `len` bytes written.
    fn complete(&mut self, id: u16, len: u32);
    /// Asks for (`true`) or suppresses available buffer notifications.
    fn set_notify(&mut self, on: bool);
    /// Whether a publish of new chains must kick, given whether the device had fetched
    /// everything published before it.
    fn expect_kick(&self, caught_up: bool) -> bool;
    /// Used buffer notifications the device would have sent (the driver polls: always 0).
    fn interrupts(&self) -> u32;
}

/// Reads one split descriptor `(addr, len, flags, next)` at `off` (§2.6.5).
fn read_split_desc(mem: &VecMemory, off: usize) -> (u64, u32, u16, u16) {
    let (addr, len) = (mem.read_u64(off), mem.read_u32(off + 8));
    (addr, len, mem.read_u16(off + 12), mem.read_u16(off + 14))
}

/// Reads one packed descriptor `(addr, len, flags, id)` at `off` (§2.7.13).
fn read_packed_desc(mem: &VecMemory, off: usize) -> (u64, u32, u16, u16) {
    let (addr, len) = (mem.read_u64(off), mem.read_u32(off + 8));
    (addr, len, mem.read_u16(off + 14), mem.read_u16(off + 12))
}

/// The device side of a split virtqueue (§2.6).
pub(super) struct SplitDevice<'m> {
    pub mem: &'m VecMemory,
    pub layout: SplitLayout,
    event_idx: bool,
    last_avail: u16,
    used_idx: u16,
    notify: bool,
    interrupts: u32,
}

impl<'m> SplitDevice<'m> {
    /// Attaches to a queue the driver has just created (reads its starting indices).
    pub fn new(mem: &'m VecMemory, layout: SplitLayout, event_idx: bool) -> Self {
        let last_avail = mem.read_u16(layout.avail_idx());
        let used_idx = mem.read_u16(layout.used_idx());
        let mut dev = Self {
            mem,
            layout,
            event_idx,
            last_avail,
            used_idx,
            notify: true,
            interrupts: 0,
        };
        dev.publish_avail_event();
        dev
    }

    fn publish_avail_event(&mut self) {
        if self.event_idx {
            // Kick me when the driver writes the entry I will read next (§2.6.10).
            self.mem
                .write_u16(self.layout.avail_event(), self.last_avail);
        }
    }

    /// Writes a used entry without any check and bumps `used.idx` by one.
    pub fn complete_raw(&mut self, id: u32, len: u32) {
        let slot = self.used_idx & (self.layout.size() - 1);
        let off = self.layout.used_ring(slot);
        self.mem.write_u32(off, id);
        self.mem.write_u32(off + 4, len);
        let old = self.used_idx;
        self.used_idx = self.used_idx.wrapping_add(1);
        self.mem.write_u16(self.layout.used_idx(), self.used_idx);
        // Would the device interrupt the driver here? (§2.6.7.2)
        let wants = if self.event_idx {
            let used_event = self.mem.read_u16(self.layout.used_event());
            need_event(used_event, self.used_idx, old)
        } else {
            self.mem.read_u16(self.layout.avail_flags()) & VIRTQ_AVAIL_F_NO_INTERRUPT == 0
        };
        self.interrupts += u32::from(wants);
    }

    /// Overwrites `used.idx` (and the device's own copy) with `v`.
    pub fn set_used_idx(&mut self, v: u16) {
        self.used_idx = v;
        self.mem.write_u16(self.layout.used_idx(), v);
    }

    /// The device's used index.
    pub fn used_idx(&self) -> u16 {
        self.used_idx
    }
}

impl Device for SplitDevice<'_> {
    fn fetch(&mut self) -> Vec<Chain> {
        let n = self.layout.size();
        let avail_idx = self.mem.read_u16(self.layout.avail_idx());
        assert!(
            avail_idx.wrapping_sub(self.last_avail) <= n,
            "driver exposed more than a ring of chains"
        );
        let mut out = Vec::new();
        while self.last_avail != avail_idx {
            let head = self
                .mem
                .read_u16(self.layout.avail_ring(self.last_avail & (n - 1)));
            assert!(head < n, "avail ring names descriptor {head}");
            let mut bufs = Vec::new();
            let mut d = head;
            loop {
                let (addr, len, flags, next) = read_split_desc(self.mem, self.layout.desc(d));
                bufs.push(Buf {
                    addr,
                    len,
                    device_writes: flags & VIRTQ_DESC_F_WRITE != 0,
                });
                assert!(bufs.len() <= usize::from(n), "descriptor loop");
                if flags & VIRTQ_DESC_F_NEXT == 0 {
                    break;
                }
                assert!(next < n, "next {next} out of range");
                d = next;
            }
            out.push(Chain { id: head, bufs });
            self.last_avail = self.last_avail.wrapping_add(1);
        }
        self.publish_avail_event();
        out
    }

    fn complete(&mut self, id: u16, len: u32) {
        self.complete_raw(u32::from(id), len);
    }

    fn set_notify(&mut self, on: bool) {
        self.notify = on;
        // With EVENT_IDX the driver must ignore this flag (§2.6.10.1); write it anyway.
        let flags = if on { 0 } else { VIRTQ_USED_F_NO_NOTIFY };
        self.mem.write_u16(self.layout.used_flags(), flags);
    }

    fn expect_kick(&self, caught_up: bool) -> bool {
        if self.event_idx {
            caught_up
        } else {
            self.notify
        }
    }

    fn interrupts(&self) -> u32 {
        self.interrupts
    }
}

/// The device side of a packed virtqueue (§2.7). It completes chains in any order, writing
/// each used descriptor at its own used position and skipping the chain's length (§2.7.6).
pub(super) struct PackedDevice<'m> {
    pub mem: &'m VecMemory,
    pub layout: PackedLayout,
    event_idx: bool,
    avail_pos: u16,
    avail_wrap: bool,
    used_pos: u16,
    used_wrap: bool,
    notify: bool,
    /// Chain length of each fetched, not yet completed id.
    lens: HashMap<u16, u16>,
    interrupts: u32,
}

impl<'m> PackedDevice<'m> {
    pub fn new(mem: &'m VecMemory, layout: PackedLayout, event_idx: bool) -> Self {
        let mut dev = Self {
            mem,
            layout,
            event_idx,
            avail_pos: 0,
            avail_wrap: true,
            used_pos: 0,
            used_wrap: true,
            notify: true,
            lens: HashMap::new(),
            interrupts: 0,
        };
        dev.write_event();
        dev
    }

    fn step(&self, pos: &mut u16, wrap: &mut bool, by: u16) {
        *pos += by;
        while *pos >= self.layout.size() {
            *pos -= self.layout.size();
            *wrap = !*wrap;
        }
    }

    /// Device event suppression: DESC at the next position to read (with EVENT_IDX),
    /// ENABLE, or DISABLE (§2.7.10).
    fn write_event(&mut self) {
        let flags = match (self.notify, self.event_idx) {
            (false, _) => RING_EVENT_FLAGS_DISABLE,
            (true, false) => RING_EVENT_FLAGS_ENABLE,
            (true, true) => {
                let wrap = if self.avail_wrap { RING_EVENT_WRAP } else { 0 };
                self.mem
                    .write_u16(self.layout.device_event_off_wrap(), self.avail_pos | wrap);
                RING_EVENT_FLAGS_DESC
            }
        };
        self.mem.write_u16(self.layout.device_event_flags(), flags);
    }

    /// Writes a used descriptor at the device's used position without any check, then
    /// skips `skip` positions.
    pub fn complete_raw(&mut self, id: u16, len: u32, write_flag: bool, skip: u16) {
        self.lens.remove(&id);
        let off = self.layout.desc(self.used_pos);
        self.mem.write_u16(off + 12, id);
        self.mem.write_u32(off + 8, len);
        let mut flags = if self.used_wrap {
            VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED
        } else {
            0
        };
        if write_flag {
            flags |= VIRTQ_DESC_F_WRITE;
        }
        // The flags go last: they hand the descriptor back (§2.7.1).
        self.mem.write_u16(off + 14, flags);
        let (mut pos, mut wrap) = (self.used_pos, self.used_wrap);
        self.step(&mut pos, &mut wrap, skip);
        (self.used_pos, self.used_wrap) = (pos, wrap);
        // Would the device interrupt the driver here? (§2.7.10)
        let driver = self.mem.read_u16(self.layout.driver_event_flags());
        assert_ne!(
            driver, RING_EVENT_FLAGS_DESC,
            "the driver never asks for DESC events"
        );
        self.interrupts += u32::from(driver == RING_EVENT_FLAGS_ENABLE);
    }
}

impl Device for PackedDevice<'_> {
    fn fetch(&mut self) -> Vec<Chain> {
        let n = self.layout.size();
        let mut out = Vec::new();
        loop {
            let flags = self.mem.read_u16(self.layout.desc(self.avail_pos) + 14);
            let avail = flags & VIRTQ_DESC_F_AVAIL != 0;
            let used = flags & VIRTQ_DESC_F_USED != 0;
            if avail != self.avail_wrap || used == self.avail_wrap {
                break;
            }
            let (mut pos, mut wrap) = (self.avail_pos, self.avail_wrap);
            let mut bufs = Vec::new();
            let id = loop {
                let (addr, len, flags, id) = read_packed_desc(self.mem, self.layout.desc(pos));
                // Every descriptor of a chain carries the flags of its own lap (§2.7.6).
                assert_eq!(flags & VIRTQ_DESC_F_AVAIL != 0, wrap, "AVAIL bit at {pos}");
                assert_eq!(flags & VIRTQ_DESC_F_USED != 0, !wrap, "USED bit at {pos}");
                bufs.push(Buf {
                    addr,
                    len,
                    device_writes: flags & VIRTQ_DESC_F_WRITE != 0,
                });
                assert!(bufs.len() <= usize::from(n), "chain longer than the ring");
                self.step(&mut pos, &mut wrap, 1);
                if flags & VIRTQ_DESC_F_NEXT == 0 {
                    // The buffer id is in the last descriptor (§2.7.6).
                    break id;
                }
            };
            let descs = bufs.len() as u16;
            assert!(
                self.lens.insert(id, descs).is_none(),
                "id {id} made available twice"
            );
            (self.avail_pos, self.avail_wrap) = (pos, wrap);
            out.push(Chain { id, bufs });
        }
        self.write_event();
        out
    }

    fn complete(&mut self, id: u16, len: u32) {
        let descs = self
            .lens
            .remove(&id)
            .expect("completing a chain not fetched");
        self.complete_raw(id, len, len > 0, descs);
    }

    fn set_notify(&mut self, on: bool) {
        self.notify = on;
        self.write_event();
    }

    fn expect_kick(&self, caught_up: bool) -> bool {
        match (self.notify, self.event_idx) {
            (false, _) => false,
            (true, false) => true,
            (true, true) => caught_up,
        }
    }

    fn interrupts(&self) -> u32 {
        self.interrupts
    }
}
