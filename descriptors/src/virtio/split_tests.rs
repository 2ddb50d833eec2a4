//! Split virtqueue against the device model: random runs, adversarial used entries, and
//! notification suppression (virtio 1.1 §2.6).

use std::collections::HashSet;

use proptest::prelude::*;

use super::harness::{self, ops};
use super::model::{Device, SplitDevice};
use super::{
    need_event, Buf, QueueMemory, SplitLayout, SplitQueue, Used, UsedError, VecMemory, Virtqueue,
    VIRTQ_USED_F_NO_NOTIFY,
};

fn rx(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        device_writes: true,
    }
}

fn tx(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        device_writes: false,
    }
}

/// A modern layout of `size` entries and memory for it.
fn setup(size: u16) -> (SplitLayout, VecMemory) {
    let layout = SplitLayout::new(size, false).unwrap();
    (layout, VecMemory::new(layout.total_bytes()))
}

fn start_index() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0u16), 65500u16..=65535, any::<u16>()]
}

proptest! {
    #![proptest_config(crate::proptest_config())]
    /// Random add/publish/fetch/complete (in and out of order)/pop sequences: every chain is
    /// seen by the device exactly as added and only after publish, every id pops exactly
    /// once with the device's len in completion order, free()/in_flight() match the model
    /// after every step, kicks follow NO_NOTIFY or avail_event, the device never has cause
    /// to interrupt, and indices started near 65535 wrap.
    #[test]
    fn state_machine(
        log2 in 0u32..=4,
        legacy in any::<bool>(),
        event_idx in any::<bool>(),
        start in start_index(),
        ops in ops(if cfg!(miri) { 24 } else { 400 }, false),
    ) {
        let layout = SplitLayout::new(1 << log2, legacy).unwrap();
        let mem = VecMemory::new(layout.total_bytes());
        let mut q = SplitQueue::with_start_index(&mem, layout, event_idx, start);
        let mut dev = SplitDevice::new(&mem, layout, event_idx);
        harness::run(&mut q, &mut dev, &ops)?;
    }

    /// With VIRTIO_F_EVENT_IDX, publish kicks exactly when `need_event(avail_event, new,
    /// old)` says so, for any avail_event, batch and starting index; used.flags is ignored.
    #[test]
    fn event_idx_kick_follows_need_event(
        start in any::<u16>(),
        batches in prop::collection::vec((0u16..=8, any::<u16>(), any::<bool>()), 1..40),
    ) {
        let (layout, mem) = setup(8);
        let mut q = SplitQueue::with_start_index(&mem, layout, true, start);
        let mut dev = SplitDevice::new(&mem, layout, true);
        let mut published = start;
        for (count, event, no_notify) in batches {
            let count = count.min(q.free());
            for i in 0..count {
                q.add(&[tx(u64::from(i), 64)]).unwrap();
            }
            mem.write_u16(layout.avail_event(), event);
            mem.write_u16(layout.used_flags(), if no_notify { VIRTQ_USED_F_NO_NOTIFY } else { 0 });
            let new = published.wrapping_add(count);
            let expect = count > 0 && need_event(event, new, published);
            prop_assert_eq!(q.publish(), expect);
            published = new;
            // Retire everything so the next batch has room.
            for c in dev.fetch() {
                dev.complete(c.id, 0);
            }
            while let Some(r) = q.pop_used() {
                prop_assert!(r.is_ok());
            }
        }
    }

    /// Whatever the device writes into the used ring (ids, lengths, used.idx, flags,
    /// avail_event), nothing panics, each Ok names a published chain exactly once with a
    /// len that fits, and the accounting never goes out of range.
    #[test]
    fn garbage_used_ring_never_yields_a_bogus_completion(
        event_idx in any::<bool>(),
        steps in prop::collection::vec((0u8..4, any::<u16>(), any::<u32>()), 1..if cfg!(miri) { 30 } else { 300 }),
    ) {
        let (layout, mem) = setup(8);
        let mut q = SplitQueue::new(&mem, layout, event_idx);
        let mut held: std::collections::HashMap<u16, u32> = Default::default();
        let mut added: Vec<(u16, u32)> = Vec::new();
        let used_bytes = layout.total_bytes() - layout.used_offset();
        for (kind, a, b) in steps {
            match kind {
                0 => {
                    let chain = [tx(1, 10), rx(2, b % 5000)];
                    if let Ok(id) = q.add(&chain[usize::from(a % 2)..]) {
                        added.push((id, b % 5000));
                    }
                }
                1 => {
                    q.publish();
                    held.extend(added.drain(..));
                }
                2 => {
                    // The device scribbles a u32 anywhere in the used ring area.
                    let off = layout.used_offset() + usize::from(a) % (used_bytes - 3);
                    mem.write_u32(off, b);
                }
                _ => {
                    for _ in 0..4 {
                        match q.pop_used() {
                            Some(Ok(Used { id, len })) => {
                                let max = held.remove(&id);
                                prop_assert!(max.is_some(), "id {} popped but not held", id);
                                prop_assert!(len <= max.unwrap());
                            }
                            Some(Err(UsedError::LenTooLong { id, .. })) => {
                                prop_assert!(held.remove(&id).is_some());
                            }
                            Some(Err(_)) => {}
                            None => break,
                        }
                    }
                }
            }
            prop_assert!(q.free() <= q.size());
            prop_assert!(usize::from(q.in_flight()) == held.len());
        }
    }
}

/// One published chain per entry of `chains`; returns their ids.
fn publish_all(q: &mut SplitQueue<&VecMemory>, chains: &[&[Buf]]) -> Vec<u16> {
    let ids: Vec<u16> = chains.iter().map(|c| q.add(c).unwrap()).collect();
    q.publish();
    ids
}

// In a split ring every used entry answers one published avail entry, so a bad entry
// spends the answer of some chain: that chain stays in flight (leaked until a device
// reset), and a device writing more entries than were published is an IndexJump.

#[test]
fn used_id_out_of_range_is_refused_and_queue_continues() {
    let (layout, mem) = setup(8);
    let mut q = SplitQueue::new(&mem, layout, false);
    let mut dev = SplitDevice::new(&mem, layout, false);
    let ids = publish_all(&mut q, &[&[rx(1, 100)], &[rx(2, 100)], &[rx(3, 100)]]);
    dev.fetch();
    dev.complete_raw(8, 0);
    dev.complete_raw(0x0001_0003, 0); // does not fit in 16 bits
    dev.complete(ids[1], 7);
    assert_eq!(q.pop_used(), Some(Err(UsedError::IdOutOfRange { id: 8 })));
    assert_eq!(
        q.pop_used(),
        Some(Err(UsedError::IdOutOfRange { id: u16::MAX }))
    );
    assert_eq!(q.pop_used(), Some(Ok(Used { id: ids[1], len: 7 })));
    assert_eq!(q.pop_used(), None);
    // Nothing freed by the bad entries; ids[0] and ids[2] lost their answers.
    assert_eq!((q.free(), q.in_flight()), (6, 2));
    // New chains still go round.
    let more = publish_all(&mut q, &[&[rx(4, 100)], &[tx(5, 60), rx(6, 10)]]);
    dev.fetch();
    dev.complete(more[1], 10);
    dev.complete(more[0], 100);
    assert_eq!(
        q.pop_used(),
        Some(Ok(Used {
            id: more[1],
            len: 10
        }))
    );
    assert_eq!(
        q.pop_used(),
        Some(Ok(Used {
            id: more[0],
            len: 100
        }))
    );
    assert_eq!((q.free(), q.in_flight()), (6, 2));
}

#[test]
fn used_id_not_in_flight_is_refused() {
    let (layout, mem) = setup(8);
    let mut q = SplitQueue::new(&mem, layout, false);
    let mut dev = SplitDevice::new(&mem, layout, false);
    // Descriptors 0+1 (chain a), then b..e in 2..=5.
    let chains: [&[Buf]; 5] = [
        &[tx(1, 10), rx(2, 100)],
        &[rx(3, 100)],
        &[rx(4, 100)],
        &[rx(5, 100)],
        &[rx(6, 100)],
    ];
    let ids = publish_all(&mut q, &chains);
    assert_eq!(ids, [0, 2, 3, 4, 5]);
    let hidden = q.add(&[rx(7, 100)]).unwrap(); // descriptor 6, not published
    dev.fetch();
    dev.complete(ids[0], 50);
    dev.complete_raw(0, 50); // second answer for the same chain
    dev.complete_raw(1, 0); // not a chain head
    dev.complete_raw(u32::from(hidden), 0); // added but not published
    dev.complete_raw(7, 0); // never handed out
    assert_eq!(q.pop_used(), Some(Ok(Used { id: 0, len: 50 })));
    for id in [0, 1, hidden, 7] {
        assert_eq!(q.pop_used(), Some(Err(UsedError::NotInFlight { id })));
    }
    assert_eq!(q.pop_used(), None);
    assert_eq!((q.free(), q.in_flight()), (3, 4));
    q.publish();
    dev.fetch();
    dev.complete(hidden, 100);
    assert_eq!(
        q.pop_used(),
        Some(Ok(Used {
            id: hidden,
            len: 100
        }))
    );
    assert_eq!((q.free(), q.in_flight()), (4, 4));
}

#[test]
fn used_len_beyond_writable_quarantines_the_chain() {
    let (layout, mem) = setup(8);
    let mut q = SplitQueue::new(&mem, layout, false);
    let mut dev = SplitDevice::new(&mem, layout, false);
    let ids = publish_all(
        &mut q,
        &[&[tx(1, 10), rx(2, 100)], &[tx(3, 60)], &[rx(4, 9)]],
    );
    dev.fetch();
    dev.complete(ids[0], 101);
    dev.complete(ids[1], 1); // a transmit chain has nothing to write
    dev.complete(ids[2], 9);
    let too_long = |id, len, max| Some(Err(UsedError::LenTooLong { id, len, max }));
    assert_eq!(q.pop_used(), too_long(ids[0], 101, 100));
    assert_eq!(q.pop_used(), too_long(ids[1], 1, 0));
    assert_eq!(q.pop_used(), Some(Ok(Used { id: ids[2], len: 9 })));
    // Quarantined: no longer in flight, and their 3 descriptors are not reused.
    assert_eq!((q.free(), q.in_flight()), (5, 0));
    let more = publish_all(&mut q, &[&[rx(5, 64)], &[rx(6, 64)]]);
    assert!(!more.contains(&ids[0]) && !more.contains(&ids[1]));
    dev.fetch();
    // A repeat answer for a quarantined chain is refused.
    dev.complete_raw(u32::from(ids[0]), 0);
    dev.complete(more[0], 64);
    assert_eq!(
        q.pop_used(),
        Some(Err(UsedError::NotInFlight { id: ids[0] }))
    );
    assert_eq!(
        q.pop_used(),
        Some(Ok(Used {
            id: more[0],
            len: 64
        }))
    );
    assert_eq!((q.free(), q.in_flight()), (4, 1));
}

#[test]
fn extra_used_entries_are_an_index_jump() {
    let (layout, mem) = setup(8);
    let mut q = SplitQueue::new(&mem, layout, false);
    let mut dev = SplitDevice::new(&mem, layout, false);
    let ids = publish_all(&mut q, &[&[rx(1, 10)]]);
    dev.fetch();
    dev.complete(ids[0], 1);
    dev.complete_raw(u32::from(ids[0]), 1);
    assert_eq!(
        q.pop_used(),
        Some(Err(UsedError::IndexJump { avail: 1, used: 2 }))
    );
    assert_eq!(q.pop_used(), None);
}

#[test]
fn used_idx_jump_is_reported_once_and_consumes_nothing() {
    let (layout, mem) = setup(8);
    let mut q = SplitQueue::with_start_index(&mem, layout, false, 65534);
    let mut dev = SplitDevice::new(&mem, layout, false);
    let ids = publish_all(&mut q, &[&[rx(1, 10)], &[rx(2, 10)]]);
    dev.fetch();
    let base = dev.used_idx();
    dev.set_used_idx(base.wrapping_add(3)); // only 2 were published
    let jump = UsedError::IndexJump { avail: 0, used: 1 };
    assert_eq!(q.pop_used(), Some(Err(jump)));
    assert_eq!(q.pop_used(), None, "reported once, no busy loop");
    assert_eq!(q.pop_used(), None);
    assert_eq!(q.in_flight(), 2);
    // A device that gets back on track is served normally.
    dev.set_used_idx(base);
    dev.complete(ids[1], 3);
    dev.complete(ids[0], 4);
    assert_eq!(q.pop_used(), Some(Ok(Used { id: ids[1], len: 3 })));
    assert_eq!(q.pop_used(), Some(Ok(Used { id: ids[0], len: 4 })));
    assert_eq!(q.pop_used(), None);
    // A jump far ahead (more than 32768) is caught too.
    dev.set_used_idx(base.wrapping_add(40000));
    assert!(matches!(
        q.pop_used(),
        Some(Err(UsedError::IndexJump { .. }))
    ));
}

#[test]
fn no_notify_suppresses_kick_without_event_idx() {
    let (layout, mem) = setup(8);
    let mut q = SplitQueue::new(&mem, layout, false);
    let mut dev = SplitDevice::new(&mem, layout, false);
    q.add(&[tx(1, 1)]).unwrap();
    assert!(q.publish());
    dev.set_notify(false);
    q.add(&[tx(1, 1)]).unwrap();
    assert!(!q.publish());
    assert!(!q.publish(), "nothing new");
    // The device's avail_event is ignored without EVENT_IDX.
    mem.write_u16(layout.avail_event(), 2);
    dev.set_notify(true);
    q.add(&[tx(1, 1)]).unwrap();
    assert!(q.publish());
}

#[test]
fn event_idx_kicks_only_a_caught_up_device() {
    let (layout, mem) = setup(8);
    let mut q = SplitQueue::new(&mem, layout, true);
    let mut dev = SplitDevice::new(&mem, layout, true);
    dev.set_notify(false); // used.flags must be ignored with EVENT_IDX
    q.add(&[tx(1, 1)]).unwrap();
    assert!(q.publish(), "device waits at avail index 0");
    q.add(&[tx(1, 1)]).unwrap();
    assert!(!q.publish(), "device has not read entry 0 yet: it is awake");
    dev.fetch(); // avail_event = 2
    q.add(&[tx(1, 1)]).unwrap();
    q.add(&[tx(1, 1)]).unwrap();
    assert!(q.publish(), "batch 2..4 passes avail_event 2");
    // used_event keeps the device from interrupting: last_used - 1.
    assert_eq!(mem.read_u16(layout.used_event()), u16::MAX);
}

#[test]
fn ids_stay_unique_across_a_full_ring() {
    let (layout, mem) = setup(16);
    let mut q = SplitQueue::new(&mem, layout, false);
    let ids: HashSet<u16> = (0..16).map(|i| q.add(&[rx(i, 1)]).unwrap()).collect();
    assert_eq!(ids.len(), 16);
    assert_eq!(q.add(&[rx(0, 1)]), Err(super::Full));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "70 000 rounds are too slow for Miri; the native run covers the wrap"
)]
fn indices_wrap_past_65535_from_zero() {
    let (layout, mem) = setup(4);
    let mut q = SplitQueue::new(&mem, layout, true);
    let mut dev = SplitDevice::new(&mem, layout, true);
    let mut total = 0u32;
    for i in 0..70_000u32 {
        let ids: Vec<u16> = (0..1 + i % 3)
            .map(|k| q.add(&[rx(u64::from(k), 100)]).unwrap())
            .collect();
        assert!(q.publish(), "the device is always caught up here");
        let got = dev.fetch();
        assert_eq!(got.len(), ids.len());
        total += ids.len() as u32;
        for c in got.iter().rev() {
            dev.complete(c.id, i % 101);
        }
        for &id in ids.iter().rev() {
            assert_eq!(q.pop_used(), Some(Ok(Used { id, len: i % 101 })));
        }
        assert_eq!(q.pop_used(), None);
    }
    assert_eq!((q.free(), q.in_flight(), dev.interrupts()), (4, 0, 0));
    // About 140_000 chains went through: both indices wrapped twice.
    assert!(total > 2 * 65536);
    assert_eq!(mem.read_u16(layout.avail_idx()), (total % 65536) as u16);
    assert_eq!(mem.read_u16(layout.used_idx()), (total % 65536) as u16);
}
