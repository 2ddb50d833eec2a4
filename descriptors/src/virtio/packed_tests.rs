//! Packed virtqueue against the device model: random runs, adversarial used descriptors,
//! and event suppression (virtio 1.1 §2.7).

use std::collections::HashMap;

use proptest::prelude::*;

use super::harness::{self, ops};
use super::model::{Device, PackedDevice};
use super::{
    Buf, Full, PackedLayout, PackedQueue, QueueMemory, Used, UsedError, VecMemory, Virtqueue,
    RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, VIRTQ_DESC_F_AVAIL,
    VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE,
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

fn setup(size: u16) -> (PackedLayout, VecMemory) {
    let layout = PackedLayout::new(size).unwrap();
    (layout, VecMemory::new(layout.total_bytes()))
}

proptest! {
    #![proptest_config(crate::proptest_config())]
    /// Random add/publish/fetch/complete (in and out of order)/pop sequences on rings of
    /// any size (not only powers of two): the device sees each chain exactly as added,
    /// with correct AVAIL/USED bits on every descriptor of every lap, only after publish;
    /// every id pops exactly once with the device's len in completion order;
    /// free()/in_flight() match the model after every step; kicks follow
    /// ENABLE/DISABLE/DESC; used notifications stay disabled.
    #[test]
    fn state_machine(
        size in 1u16..=17,
        event_idx in any::<bool>(),
        ops in ops(if cfg!(miri) { 24 } else { 600 }, false),
    ) {
        let (layout, mem) = setup(size);
        let mut q = PackedQueue::new(&mem, layout, event_idx);
        let mut dev = PackedDevice::new(&mem, layout, event_idx);
        harness::run(&mut q, &mut dev, &ops)?;
    }

    /// Whatever the device writes into the descriptor ring and its event area, nothing
    /// panics, each Ok names a published chain exactly once with a len that fits, and the
    /// accounting stays in range.
    #[test]
    fn garbage_ring_never_yields_a_bogus_completion(
        size in 1u16..=9,
        event_idx in any::<bool>(),
        steps in prop::collection::vec((0u8..4, any::<u16>(), any::<u32>()), 1..if cfg!(miri) { 30 } else { 300 }),
    ) {
        let (layout, mem) = setup(size);
        let mut q = PackedQueue::new(&mem, layout, event_idx);
        let mut held: HashMap<u16, u32> = HashMap::new();
        let mut added: Vec<(u16, u32)> = Vec::new();
        // The device may write the whole ring and its own event area, not the driver's.
        let ring = layout.driver_event_offset();
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
                    let off = (usize::from(a) % ring) & !1;
                    mem.write_u16(off, b as u16);
                    mem.write_u16(layout.device_event_offset() + 2 * usize::from(a % 2), (b >> 16) as u16);
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
            prop_assert_eq!(usize::from(q.in_flight()), held.len());
        }
    }
}

/// Publishes one chain per entry and lets the device fetch them; returns the ids.
fn publish_all(
    q: &mut PackedQueue<&VecMemory>,
    dev: &mut PackedDevice<'_>,
    chains: &[&[Buf]],
) -> Vec<u16> {
    let ids: Vec<u16> = chains.iter().map(|c| q.add(c).unwrap()).collect();
    q.publish();
    assert_eq!(dev.fetch().len(), chains.len());
    ids
}

#[test]
fn wrap_counters_flip_many_times() {
    let (layout, mem) = setup(3);
    let mut q = PackedQueue::new(&mem, layout, true);
    let mut dev = PackedDevice::new(&mem, layout, true);
    let mut flips = 0;
    let mut wrap = q.next_avail().1;
    // A twentieth under Miri, which interprets each round thousands of times slower:
    // still some fifty flips.
    let rounds: u32 = if cfg!(miri) { 150 } else { 3000 };
    for i in 0..rounds {
        // Chains of 1 and 2 descriptors so heads land on every position of every lap.
        let chain: &[Buf] = if i % 3 == 0 {
            &[tx(1, 1), rx(2, 8)]
        } else {
            &[rx(3, 8)]
        };
        let id = q.add(chain).unwrap();
        q.publish();
        let got = dev.fetch();
        assert_eq!(got.len(), 1);
        dev.complete(id, i % 9);
        assert_eq!(q.pop_used(), Some(Ok(Used { id, len: i % 9 })));
        flips += u32::from(q.next_avail().1 != wrap);
        wrap = q.next_avail().1;
    }
    assert!(flips > rounds / 3, "only {flips} flips in {rounds} rounds");
    assert_eq!((q.free(), q.in_flight()), (3, 0));
}

#[test]
fn used_id_out_of_range_is_refused() {
    let (layout, mem) = setup(4);
    let mut q = PackedQueue::new(&mem, layout, false);
    let mut dev = PackedDevice::new(&mem, layout, false);
    let ids = publish_all(&mut q, &mut dev, &[&[rx(1, 100)], &[rx(2, 100)]]);
    dev.complete_raw(4, 0, false, 1);
    dev.complete_raw(u16::MAX, 0, false, 1);
    assert_eq!(q.pop_used(), Some(Err(UsedError::IdOutOfRange { id: 4 })));
    assert_eq!(
        q.pop_used(),
        Some(Err(UsedError::IdOutOfRange { id: u16::MAX }))
    );
    assert_eq!(q.pop_used(), None, "both published positions consumed");
    // Nothing was freed: both chains are still the device's.
    assert_eq!((q.free(), q.in_flight()), (2, 2));
    // New chains still flow.
    let more = publish_all(&mut q, &mut dev, &[&[rx(3, 50)]]);
    dev.complete(more[0], 50);
    assert_eq!(
        q.pop_used(),
        Some(Ok(Used {
            id: more[0],
            len: 50
        }))
    );
    assert!(!ids.contains(&more[0]));
}

#[test]
fn used_id_not_in_flight_is_refused() {
    let (layout, mem) = setup(8);
    let mut q = PackedQueue::new(&mem, layout, false);
    let mut dev = PackedDevice::new(&mem, layout, false);
    // Positions 0+1 (a), then 2, 3, 4.
    let chains: [&[Buf]; 4] = [
        &[tx(1, 10), rx(2, 100)],
        &[rx(3, 1)],
        &[rx(4, 1)],
        &[rx(5, 1)],
    ];
    let ids = publish_all(&mut q, &mut dev, &chains);
    let hidden = q.add(&[rx(6, 100)]).unwrap(); // position 5, not published
    let never = (0..8).find(|i| !ids.contains(i) && *i != hidden).unwrap();
    dev.complete(ids[0], 50); // used at position 0, skips 2
    dev.complete_raw(ids[0], 0, false, 1); // again: already returned
    dev.complete_raw(hidden, 0, false, 1);
    dev.complete_raw(never, 0, false, 1);
    assert_eq!(
        q.pop_used(),
        Some(Ok(Used {
            id: ids[0],
            len: 50
        }))
    );
    for id in [ids[0], hidden, never] {
        assert_eq!(q.pop_used(), Some(Err(UsedError::NotInFlight { id })));
    }
    assert_eq!(q.pop_used(), None, "all published positions stepped over");
    assert_eq!((q.free(), q.in_flight()), (4, 3));
    // The hidden chain, once published, goes round normally.
    q.publish();
    assert_eq!(dev.fetch().len(), 1);
    dev.complete(hidden, 100);
    assert_eq!(
        q.pop_used(),
        Some(Ok(Used {
            id: hidden,
            len: 100
        }))
    );
    assert_eq!((q.free(), q.in_flight()), (5, 3));
}

#[test]
fn used_len_is_checked_only_when_the_device_wrote() {
    let (layout, mem) = setup(8);
    let mut q = PackedQueue::new(&mem, layout, false);
    let mut dev = PackedDevice::new(&mem, layout, false);
    let ids = publish_all(
        &mut q,
        &mut dev,
        &[&[tx(1, 10), rx(2, 100)], &[tx(3, 60)], &[rx(4, 9)]],
    );
    dev.complete_raw(ids[0], 101, true, 2);
    // Without VIRTQ_DESC_F_WRITE the length is reserved and ignored (§2.7.4).
    dev.complete_raw(ids[1], 0xFFFF_FFFF, false, 1);
    dev.complete_raw(ids[2], 9, true, 1);
    assert_eq!(
        q.pop_used(),
        Some(Err(UsedError::LenTooLong {
            id: ids[0],
            len: 101,
            max: 100
        }))
    );
    assert_eq!(q.pop_used(), Some(Ok(Used { id: ids[1], len: 0 })));
    assert_eq!(q.pop_used(), Some(Ok(Used { id: ids[2], len: 9 })));
    // The quarantined chain keeps its two descriptors and its id.
    assert_eq!((q.free(), q.in_flight()), (6, 0));
    let more = publish_all(&mut q, &mut dev, &[&[rx(5, 64)], &[rx(6, 64)]]);
    assert!(!more.contains(&ids[0]));
    dev.complete(more[1], 64);
    dev.complete(more[0], 1);
    assert_eq!(
        q.pop_used(),
        Some(Ok(Used {
            id: more[1],
            len: 64
        }))
    );
    assert_eq!(
        q.pop_used(),
        Some(Ok(Used {
            id: more[0],
            len: 1
        }))
    );
}

#[test]
fn stale_used_flags_are_ignored_when_nothing_is_outstanding() {
    let (layout, mem) = setup(4);
    let mut q = PackedQueue::new(&mem, layout, false);
    // A descriptor that looks used in lap 1 before anything was published.
    mem.write_u16(layout.desc(0) + 14, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED);
    assert_eq!(q.pop_used(), None);
    // An available-looking descriptor (our own, just published) is not used either.
    let mut dev = PackedDevice::new(&mem, layout, false);
    let id = q.add(&[rx(1, 8)]).unwrap();
    q.publish();
    assert_eq!(q.pop_used(), None);
    dev.fetch();
    dev.complete(id, 8);
    assert_eq!(q.pop_used(), Some(Ok(Used { id, len: 8 })));
    assert_eq!(
        mem.read_u16(layout.desc(0) + 14) & VIRTQ_DESC_F_WRITE,
        VIRTQ_DESC_F_WRITE
    );
}

#[test]
fn device_event_flags_decide_the_kick() {
    let (layout, mem) = setup(8);
    for event_idx in [false, true] {
        let mut q = PackedQueue::new(&mem, layout, event_idx);
        let mut kick_with = |flags: u16| {
            mem.write_u16(layout.device_event_flags(), flags);
            q.add(&[tx(1, 1)]).unwrap();
            q.publish()
        };
        assert!(kick_with(RING_EVENT_FLAGS_ENABLE));
        assert!(!kick_with(RING_EVENT_FLAGS_DISABLE));
        // Reserved value 3: kicking is the safe answer.
        assert!(kick_with(3));
        // High reserved bits do not change the meaning.
        assert!(!kick_with(0xFFFC | RING_EVENT_FLAGS_DISABLE));
        // DESC at offset 0 of lap 1: already passed, so only a driver without EVENT_IDX
        // (for which DESC is invalid) kicks.
        mem.write_u16(layout.device_event_off_wrap(), 1 << 15);
        assert_eq!(kick_with(RING_EVENT_FLAGS_DESC), !event_idx);
        assert!(!q.publish(), "nothing new");
    }
}

#[test]
fn a_full_ring_refuses_chains_and_ids_stay_unique() {
    let (layout, mem) = setup(5);
    let mut q = PackedQueue::new(&mem, layout, false);
    let a = q.add(&[tx(1, 1), tx(2, 2), rx(3, 3)]).unwrap();
    assert_eq!(q.add(&[rx(4, 4), rx(5, 5), rx(6, 6)]), Err(Full));
    let b = q.add(&[rx(4, 4), rx(5, 5)]).unwrap();
    assert_ne!(a, b);
    assert_eq!(q.add(&[rx(7, 7)]), Err(Full));
    assert_eq!(q.add(&[]), Err(Full));
    assert_eq!((q.free(), q.in_flight()), (0, 0));
    assert!(q.publish());
    assert_eq!(q.in_flight(), 2);
}
