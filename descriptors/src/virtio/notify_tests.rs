//! Used buffer notifications against the device models: arm, re-check, sleep (virtio 1.1
//! §2.6.7, §2.7.10), with the device completing a chain at each point of the driver's
//! `enable_notify`, through a memory that hands control to the device exactly when the
//! driver's arm store lands (or just before it).
//!
//! The property every case checks is the waiter's: after `enable_notify`, either it said
//! a used entry waits (the caller polls), or the device sent a notification for the chain
//! (the caller's sleep ends). Never neither.

use std::cell::RefCell;

use super::model::{Device, PackedDevice, SplitDevice};
use super::Virtqueue;
use super::{Buf, PackedLayout, PackedQueue, QueueMemory, SplitLayout, SplitQueue, VecMemory};

/// Where the device steps in relative to the driver's arm store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    /// Just before the store lands: the device sees notifications off.
    BeforeArm,
    /// Just after it: between the arm and the re-check.
    AfterArm,
}

/// A [`VecMemory`] that runs `hook` once, around the first 16-bit store to `at`.
struct Hooked<'m, F: FnMut()> {
    mem: &'m VecMemory,
    at: usize,
    when: When,
    hook: RefCell<Option<F>>,
}

impl<F: FnMut()> Hooked<'_, F> {
    fn fire(&self, now: When, off: usize) {
        if off == self.at && now == self.when {
            if let Some(mut f) = self.hook.borrow_mut().take() {
                f();
            }
        }
    }
}

impl<F: FnMut()> QueueMemory for Hooked<'_, F> {
    fn read_u16(&self, off: usize) -> u16 {
        self.mem.read_u16(off)
    }
    fn write_u16(&self, off: usize, v: u16) {
        self.fire(When::BeforeArm, off);
        self.mem.write_u16(off, v);
        self.fire(When::AfterArm, off);
    }
    fn read_u32(&self, off: usize) -> u32 {
        self.mem.read_u32(off)
    }
    fn write_u32(&self, off: usize, v: u32) {
        self.mem.write_u32(off, v)
    }
    fn read_u64(&self, off: usize) -> u64 {
        self.mem.read_u64(off)
    }
    fn write_u64(&self, off: usize, v: u64) {
        self.mem.write_u64(off, v)
    }
}

fn rx(i: u64) -> [Buf; 1] {
    [Buf {
        addr: 0x1000 * (i + 1),
        len: 2048,
        device_writes: true,
    }]
}

/// Posts four receive buffers, lets the device fetch them and the driver find nothing:
/// the state of a port about to sleep.
fn idle<Q: Virtqueue>(q: &mut Q, dev: &RefCell<impl Device>) {
    for i in 0..4 {
        q.add(&rx(i)).unwrap();
    }
    q.publish();
    assert_eq!(dev.borrow_mut().fetch().len(), 4);
    assert!(q.pop_used().is_none());
}

/// Completes the oldest fetched chain (ids are handed out in order by both formats' fresh
/// queues: the first chain has the lowest id the queue gave).
fn complete_one(dev: &RefCell<impl Device>, id: u16) {
    dev.borrow_mut().complete(id, 60);
}

/// The waiter's property, for one ring format and one moment of the device.
fn race<Q: Virtqueue, D: Device>(q: &mut Q, dev: &RefCell<D>) -> (bool, u32) {
    let pending = q.enable_notify();
    let irqs = dev.borrow().interrupts();
    (pending, irqs)
}

fn split_case(event_idx: bool, when: When) {
    let layout = SplitLayout::new(8, false).unwrap();
    let mem = VecMemory::new(layout.total_bytes());
    let dev = RefCell::new(SplitDevice::new(&mem, layout, event_idx));
    let at = if event_idx {
        layout.used_event()
    } else {
        layout.avail_flags()
    };
    let hooked = Hooked {
        mem: &mem,
        at,
        when,
        hook: RefCell::new(None),
    };
    let mut q = SplitQueue::new(&hooked, layout, event_idx);
    idle(&mut q, &dev);
    // Publishing rewrote used_event (EVENT_IDX): the hook is set only now, for the arm.
    *hooked.hook.borrow_mut() = Some(|| complete_one(&dev, 0));
    let (pending, irqs) = race(&mut q, &dev);
    assert!(
        pending || irqs == 1,
        "split, event_idx {event_idx}, device {when:?}: neither a pending entry nor an interrupt"
    );
    if when == When::BeforeArm {
        assert!(
            pending,
            "only the re-check can see a chain completed before the arm"
        );
        assert_eq!(irqs, 0, "the device completed it with notifications off");
    }
    q.disable_notify();
    assert!(matches!(q.pop_used(), Some(Ok(u)) if u.id == 0));
    // Disarmed: the next completion interrupts nobody.
    complete_one(&dev, 1);
    assert_eq!(dev.borrow().interrupts(), irqs);
    // Armed with the ring empty: the next completion interrupts.
    assert!(matches!(q.pop_used(), Some(Ok(u)) if u.id == 1));
    assert!(!q.enable_notify());
    complete_one(&dev, 2);
    assert_eq!(dev.borrow().interrupts(), irqs + 1);
    q.disable_notify();
}

fn packed_case(event_idx: bool, when: When) {
    let layout = PackedLayout::new(8).unwrap();
    let mem = VecMemory::new(layout.total_bytes());
    let hooked = Hooked {
        mem: &mem,
        at: layout.driver_event_flags(),
        when,
        hook: RefCell::new(None),
    };
    let mut q = PackedQueue::new(&hooked, layout, event_idx);
    let dev = RefCell::new(PackedDevice::new(&mem, layout, event_idx));
    idle(&mut q, &dev);
    // Fresh packed ids come off a stack: the first chain took the lowest.
    *hooked.hook.borrow_mut() = Some(|| complete_one(&dev, 0));
    let (pending, irqs) = race(&mut q, &dev);
    assert!(
        pending || irqs == 1,
        "packed, device {when:?}: neither a pending entry nor an interrupt"
    );
    if when == When::BeforeArm {
        assert!(
            pending,
            "only the re-check can see a chain completed before the arm"
        );
        assert_eq!(irqs, 0, "the device completed it with notifications off");
    }
    q.disable_notify();
    assert!(matches!(q.pop_used(), Some(Ok(u)) if u.id == 0));
    complete_one(&dev, 1);
    assert_eq!(dev.borrow().interrupts(), irqs);
    assert!(matches!(q.pop_used(), Some(Ok(u)) if u.id == 1));
    assert!(!q.enable_notify());
    complete_one(&dev, 2);
    assert_eq!(dev.borrow().interrupts(), irqs + 1);
    q.disable_notify();
}

#[test]
fn split_flags_completion_just_before_the_arm_is_seen_by_the_recheck() {
    split_case(false, When::BeforeArm);
}

#[test]
fn split_flags_completion_between_arm_and_recheck() {
    split_case(false, When::AfterArm);
}

#[test]
fn split_event_idx_completion_just_before_the_arm_is_seen_by_the_recheck() {
    split_case(true, When::BeforeArm);
}

#[test]
fn split_event_idx_completion_between_arm_and_recheck() {
    split_case(true, When::AfterArm);
}

#[test]
fn packed_completion_just_before_the_arm_is_seen_by_the_recheck() {
    packed_case(false, When::BeforeArm);
    packed_case(true, When::BeforeArm);
}

#[test]
fn packed_completion_between_arm_and_recheck() {
    packed_case(false, When::AfterArm);
    packed_case(true, When::AfterArm);
}

/// An entry consumed from a burst's cached `used.idx` but not yet popped counts as
/// pending: the re-check does not trust a fresh read alone.
#[test]
fn split_entries_seen_but_not_popped_are_pending() {
    let layout = SplitLayout::new(8, false).unwrap();
    let mem = VecMemory::new(layout.total_bytes());
    let dev = RefCell::new(SplitDevice::new(&mem, layout, true));
    let mut q = SplitQueue::new(&mem, layout, true);
    idle(&mut q, &dev);
    complete_one(&dev, 0);
    complete_one(&dev, 1);
    assert!(q.pop_used().is_some());
    assert!(q.enable_notify(), "one entry left of the burst");
    q.disable_notify();
}
