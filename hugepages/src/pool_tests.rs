//! The pool's tests (kept apart so pool.rs stays one concern of readable length).

use super::*;
use crate::FakeDma;

#[test]
#[cfg_attr(
    miri,
    ignore = "3000 buffers over two 2 MiB pages: too slow to interpret"
)]
fn buffers_never_straddle_a_page_and_are_distinct() {
    let pool = Mempool::new(&FakeDma::new(), 3000).unwrap();
    let mut all = Vec::new();
    assert_eq!(pool.alloc_batch(&mut all, 5000), 3000);
    assert!(pool.alloc().is_none());
    let base = pool.region.iova();
    let mut starts: Vec<u64> = all.iter().map(|p| p.s().iova - base).collect();
    for s in &starts {
        assert_eq!(
            s / HUGEPAGE as u64,
            (s + ENTRY as u64 - 1) / HUGEPAGE as u64
        );
    }
    starts.sort();
    starts.dedup();
    assert_eq!(starts.len(), 3000);
    drop(all);
    assert_eq!(pool.free_count(), 3000);
}

/// Two threads, a million alloc/free cycles each, single and batched: no buffer is
/// handed out twice (an ownership flag per buffer) and none is lost.
#[test]
fn two_threads_never_share_or_lose_a_buffer() {
    use std::sync::atomic::AtomicBool;
    let n = if cfg!(miri) { 64 } else { 512 };
    let pool = Mempool::new(&FakeDma::new(), n).unwrap();
    let owned: Arc<Vec<AtomicBool>> = Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
    // Miri runs this at a size it can interpret, over several seeds (`cargo xtask miri`).
    let cycles = if cfg!(miri) { 300 } else { 1_000_000 };
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let (pool, owned) = (pool.clone(), owned.clone());
            std::thread::spawn(move || {
                let mut held = Vec::with_capacity(64);
                let mut done = 0;
                while done < cycles {
                    let want = 1 + (done + t) % 48;
                    let got = pool.alloc_batch(&mut held, want);
                    for p in &held {
                        assert!(
                            !owned[p.s().idx as usize].swap(true, Ordering::AcqRel),
                            "handed out twice"
                        );
                    }
                    for p in held.drain(..) {
                        owned[p.s().idx as usize].store(false, Ordering::Release);
                    }
                    done += got.max(1);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(pool.free_count(), n);
    assert_eq!(Arc::strong_count(&pool), 1, "loans balanced");
    let mut all = Vec::new();
    assert_eq!(
        pool.alloc_batch(&mut all, 1000),
        n,
        "every buffer is still there"
    );
}

#[test]
fn a_receive_hash_never_outlives_its_frame() {
    use zcnic_descriptors::rss::HashType;
    let dma = FakeDma::new();
    let pool = Mempool::new(&dma, 1).unwrap();
    let mut p = pool.alloc().unwrap();
    assert_eq!(p.rss(), None, "fresh from the pool");
    p.set_rss((0xabcd, HashType::UdpV4 as u8));
    assert_eq!(p.rss(), Some((0xabcd, HashType::UdpV4)));
    p.reset();
    assert_eq!(p.rss(), None, "reset for reuse");
    p.set_rss((0xabcd, HashType::Ipv4 as u8));
    drop(p);
    let p = pool.alloc().unwrap();
    assert_eq!(p.rss(), None, "the same buffer, allocated again");
    let mut q = p;
    q.set_rss((1, 0));
    assert_eq!(q.rss(), None, "type 0: no hash");
}

#[test]
fn packets_move_between_threads() {
    let pool = Mempool::new(&FakeDma::new(), 64).unwrap();
    let mut batch = Vec::new();
    pool.alloc_batch(&mut batch, 64);
    let t = std::thread::spawn(move || drop(batch));
    t.join().unwrap();
    assert_eq!(pool.free_count(), 64);
}

/// Packets keep their pool alive after every handle is gone; the last one frees it.
#[test]
fn the_pool_lives_exactly_as_long_as_its_last_packet() {
    let pool = Mempool::new(&FakeDma::new(), 8).unwrap();
    let weak = Arc::downgrade(&pool);
    let mut out = Vec::new();
    pool.alloc_batch(&mut out, 3);
    let one = pool.alloc().unwrap();
    assert_eq!(Arc::strong_count(&pool), 2, "one handle and one loan");
    drop(pool);
    drop(out);
    assert!(weak.upgrade().is_some(), "a packet is still out");
    assert_eq!(one.pool().free_count(), 7);
    drop(one);
    assert!(weak.upgrade().is_none(), "freed with its last packet");
}

/// `drop_all` returns runs of packets from interleaved pools to the right pools.
#[test]
fn drop_all_returns_each_buffer_to_its_own_pool() {
    let dma = FakeDma::new();
    let (a, b) = (
        Mempool::new(&dma, 16).unwrap(),
        Mempool::new(&dma, 16).unwrap(),
    );
    let mut mixed = Vec::new();
    for i in 0..12 {
        let p = if i % 3 == 0 { &b } else { &a };
        mixed.push(p.alloc().unwrap());
    }
    assert_eq!((a.free_count(), b.free_count()), (8, 12));
    Packet::drop_all(mixed.drain(..));
    assert_eq!((a.free_count(), b.free_count()), (16, 16));
    assert_eq!((Arc::strong_count(&a), Arc::strong_count(&b)), (1, 1));
    let mut all = Vec::new();
    assert_eq!(a.alloc_batch(&mut all, 100), 16, "every link intact");
    let mut idx: Vec<u32> = all.iter().map(|p| p.s().idx).collect();
    idx.sort();
    assert_eq!(idx, (0..16).collect::<Vec<_>>());
}

/// `drop_slots` empties a transmit group of gaps, two pools' runs and a packet with a
/// payload: each buffer to its own pool, the payload released, the links intact.
#[test]
fn drop_slots_empties_every_slot_into_the_right_pool() {
    let dma = FakeDma::new();
    let (a, b) = (
        Mempool::new(&dma, 16).unwrap(),
        Mempool::new(&dma, 16).unwrap(),
    );
    let region = Arc::new(crate::UserRegion::with_data(&[1u8; 32], dma.mapper()).unwrap());
    let mut slots: Vec<Option<Packet>> = (0..14)
        .map(|i| match i {
            0 | 6 => None,
            4 | 5 | 11 => b.alloc(),
            8 => {
                let mut p = a.alloc().unwrap();
                p.attach(crate::Segment::new(&region, 0, 8).unwrap());
                Some(p)
            }
            _ => a.alloc(),
        })
        .collect();
    assert_eq!((a.free_count(), b.free_count()), (7, 13));
    Packet::drop_slots(&mut slots);
    assert!(slots.iter().all(Option::is_none));
    assert_eq!((a.free_count(), b.free_count()), (16, 16));
    assert_eq!(Arc::strong_count(&region), 1, "the payload released");
    assert_eq!((Arc::strong_count(&a), Arc::strong_count(&b)), (1, 1));
    let mut all = Vec::new();
    assert_eq!(a.alloc_batch(&mut all, 100), 16, "every link intact");
    let mut idx: Vec<u32> = all.iter().map(|p| p.s().idx).collect();
    idx.sort();
    assert_eq!(idx, (0..16).collect::<Vec<_>>());
}

#[test]
fn lengths_are_checked() {
    let pool = Mempool::new(&FakeDma::new(), 4).unwrap();
    let mut p = pool.alloc().unwrap();
    assert_eq!(p.room(), DATA_ROOM);
    assert!(p.set_len(DATA_ROOM + 1).is_err());
    p.set_len(60).unwrap();
    p.data_mut().fill(0xab);
    p.prepend(12).unwrap();
    assert_eq!(p.len(), 72);
    assert_eq!(p.data()[12], 0xab);
    assert!(p.prepend(HEADROOM).is_err());
    let iova = p.iova();
    p.trim_front(12).unwrap();
    assert_eq!((p.len(), p.iova(), p.data()[0]), (60, iova + 12, 0xab));
    assert!(p.trim_front(61).is_err(), "more than the frame");
    p.reset();
    assert_eq!((p.len(), p.room()), (0, DATA_ROOM));
    p.prepend(20).unwrap();
    p.reset_len(60);
    assert_eq!((p.len(), p.iova(), p.room()), (60, iova + 12, DATA_ROOM));
    p.reset_len(u16::MAX);
    assert_eq!(p.len(), DATA_ROOM, "cut to the data room");
}

/// Regression (Miri): `put_chain` read the pool's count after its push, when another
/// thread's push could already have filled the pool and freed it. Two threads each
/// drop the last packets of a pool no handle keeps; Miri reported a use after free
/// (a race with `drop_in_place::<Mempool>`) on some seeds.
#[test]
fn the_last_two_packets_dropped_at_once_free_the_pool_once() {
    for _ in 0..if cfg!(miri) { 4 } else { 200 } {
        let pool = Mempool::new(&FakeDma::new(), 4).unwrap();
        let (a, b) = (pool.alloc().unwrap(), pool.alloc().unwrap());
        let weak = Arc::downgrade(&pool);
        drop(pool);
        let t = std::thread::spawn(move || drop(a));
        drop(b);
        t.join().unwrap();
        assert!(weak.upgrade().is_none(), "freed with its last packet");
    }
}

/// An allocator that hands out less than asked.
struct Short(FakeDma);

impl DmaAllocator for Short {
    fn alloc(&self, _len: usize) -> Result<DmaRegion, DmaError> {
        self.0.alloc(4096)
    }
}

/// Regression: `Mempool::new` trusted the allocator's length, so buffers past a short
/// region were written out of bounds (Miri: out-of-bounds write; and devices were given
/// addresses outside the mapping).
#[test]
fn a_short_region_is_refused() {
    let e = Mempool::new(&Short(FakeDma::new()), 64).unwrap_err();
    assert!(e.to_string().contains("needs"), "{e}");
    let ok = Mempool::new(&Short(FakeDma::new()), 1).unwrap();
    ok.alloc().unwrap().room_mut().fill(1);
}

#[test]
fn packets_know_which_devices_reach_them() {
    let (a, b) = (FakeDma::new(), FakeDma::new());
    let pa = Mempool::new(&a, 2).unwrap();
    let pb = Mempool::new(&b, 2).unwrap();
    let p = pa.alloc().unwrap();
    assert!(p.reachable_in(pa.space()));
    assert!(!p.reachable_in(pb.space()));
    assert!(!p.reachable_in(AddressSpace::Physical));
}

#[test]
#[cfg_attr(miri, ignore = "leaks on purpose, which Miri reports")]
fn a_leaked_pool_outlives_its_handles() {
    let pool = Mempool::new(&FakeDma::new(), 2).unwrap();
    let weak = Arc::downgrade(&pool);
    pool.leak();
    drop(pool);
    assert!(weak.upgrade().is_some());
}

/// `alloc_batch` appends after what `out` holds, growing it when it lacks room, and
/// gives each buffer a fresh packet (default headroom, no frame) whatever its last owner
/// left; asking for none or more than are free takes exactly what there is.
#[test]
fn alloc_batch_appends_fresh_packets_after_what_out_holds() {
    let pool = Mempool::new(&FakeDma::new(), 8).unwrap();
    let mut out = Vec::new();
    assert_eq!(pool.alloc_batch(&mut out, 0), 0);
    assert!(out.is_empty());
    assert_eq!(pool.alloc_batch(&mut out, 3), 3);
    for p in &mut out {
        p.set_len(100).unwrap();
        p.prepend(10).unwrap();
    }
    let firsts: Vec<u64> = out.iter().map(|p| p.iova()).collect();
    // Freed with a frame and less headroom: the next owner must not see either.
    let used = out.pop().unwrap();
    drop(used);
    let mut more = Vec::with_capacity(1);
    more.push(out.pop().unwrap());
    assert_eq!(
        pool.alloc_batch(&mut more, 20),
        6,
        "the 5 free and the 1 just freed"
    );
    assert_eq!(more[0].iova(), firsts[1], "what it held stays first");
    assert_eq!(more[0].len(), 110);
    for p in &more[1..] {
        assert_eq!((p.len(), usize::from(p.s().head)), (0, HEADROOM));
    }
    let mut iovas: Vec<u64> = out.iter().chain(&more).map(|p| p.iova()).collect();
    iovas.sort();
    iovas.dedup();
    assert_eq!(iovas.len(), 8, "every buffer out, none twice");
    assert_eq!(pool.free_count(), 0);
    drop((out, more));
    assert_eq!(pool.free_count(), 8);
}

/// Asking for more than the pool holds takes what is free and reserves no more room than
/// the pool could fill (`usize::MAX` would overflow a reservation); a request longer than
/// one pop's burst takes several.
#[test]
fn alloc_batch_of_more_than_the_pool_reserves_only_what_it_could_fill() {
    let pool = Mempool::new(&FakeDma::new(), 200).unwrap();
    let mut out = Vec::new();
    assert_eq!(pool.alloc_batch(&mut out, usize::MAX), 200);
    assert!(out.capacity() < 400, "reserved {}", out.capacity());
    assert_eq!(pool.free_count(), 0);
    drop(out);
    let mut out = Vec::new();
    assert_eq!(pool.alloc_batch(&mut out, 150), 150, "three bursts");
    assert_eq!(pool.free_count(), 50);
}
