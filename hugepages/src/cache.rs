//! Per-core buffer caches: DPDK's per-lcore mempool cache, owned by a queue.
//!
//! A [`PoolCache`] holds a few dozen free buffers of one [`Mempool`] for the one thread that
//! drives a queue. Allocating takes from it and freeing puts back into it with plain loads
//! and stores; only when it runs dry (or full) does it touch the pool's shared lock-free
//! stack, and then for a whole batch with one compare-and-swap. A forwarder that receives
//! and sends as many frames as it frees and allocates never touches the shared stack at
//! all, and no cache line is written by two cores.
//!
//! The cache is `Send` (a queue and its cache move to their worker thread together) but not
//! `Sync`: its operations take `&mut self` and its contents are one thread's, so two threads
//! cannot share one:
//!
//! ```compile_fail
//! fn shared<T: Sync>() {}
//! shared::<zcnic_hugepages::PoolCache>();
//! ```
//! ```
//! fn send<T: Send>() {}
//! send::<zcnic_hugepages::PoolCache>();
//! ```
//!
//! Buffers a cache holds count as free in [`Mempool::free_count`]: each cache publishes how
//! many it holds (one relaxed store per call, to a word only it writes) and the count adds
//! them to the shared stack's. Dropping a cache gives everything back to the stack.

use crate::pool::{Mempool, Packet};
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A cache's default size: enough for two bursts of 32 each way.
pub const CACHE_SIZE: usize = 64;

/// A chain of buffers linked through the pool's free-stack links, which are the holder's
/// to set while it holds them. Pushing a whole chain onto the shared stack is one CAS,
/// whatever its length; nothing is copied.
#[derive(Debug, Clone, Copy, Default)]
struct Chain {
    /// First index + 1; 0 when empty.
    head: u32,
    /// Last index (the one linked to nothing we own).
    tail: u32,
    len: u32,
}

/// A thread's (a queue's) cache of free buffers of one pool. See the module docs.
///
/// It holds two chains of up to `size` buffers each (Bonwick's magazines): frees go onto
/// the current one, allocations come off it; when it is full the other, if full too, goes
/// to the shared stack in one push, and when it is empty the other is used, or a chain of
/// `size` is popped off the stack in one pop. So at most one shared operation per `size`
/// buffers, and none at all while allocations and frees balance.
///
/// ```
/// use zcnic_hugepages::{FakeDma, Mempool};
/// let pool = Mempool::new(&FakeDma::new(), 256).unwrap();
/// let mut cache = pool.cache(32);
/// let mut burst = Vec::with_capacity(32);
/// assert_eq!(cache.alloc_batch(&mut burst, 32), 32);
/// cache.free_all(burst.drain(..));
/// assert_eq!(cache.len(), 32, "the burst came back into the cache");
/// assert_eq!(pool.free_count(), 256, "what a cache holds is free");
/// drop(cache);
/// assert_eq!(pool.free_count(), 256);
/// ```
pub struct PoolCache {
    pool: Arc<Mempool>,
    held: Held,
    /// Not `Sync`: one thread at a time.
    _one_thread: PhantomData<Cell<()>>,
}

/// What a cache holds, apart from its pool, so a loop can borrow both at once.
struct Held {
    /// Allocations come off and frees go onto this one.
    cur: Chain,
    /// Full, or empty.
    spare: Chain,
    size: u32,
    /// How many it holds, as [`Mempool::free_count`] reads it; written only here.
    published: Arc<AtomicUsize>,
}

impl Held {
    fn len(&self) -> usize {
        (self.cur.len + self.spare.len) as usize
    }

    #[inline(always)]
    fn publish(&self) {
        self.published.store(self.len(), Ordering::Relaxed);
    }

    /// Makes `cur` non-empty: the spare chain, or one popped off the shared stack of
    /// `pool`; false when there is none.
    #[cold]
    #[inline(never)]
    fn reload(&mut self, pool: &Arc<Mempool>) -> bool {
        if self.spare.len > 0 {
            std::mem::swap(&mut self.cur, &mut self.spare);
            return true;
        }
        let (head, tail, len) = pool.pop_chain(self.size);
        self.cur = Chain { head, tail, len };
        len > 0
    }
}

impl std::fmt::Debug for PoolCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolCache")
            .field("len", &self.len())
            .field("size", &self.held.size)
            .finish_non_exhaustive()
    }
}

impl PoolCache {
    /// An empty cache of chains of `size` buffers (at least 1) of `pool`; it holds up to
    /// twice that.
    pub fn new(pool: &Arc<Mempool>, size: usize) -> Self {
        let size = size.clamp(1, pool.capacity()) as u32;
        let published = Arc::new(AtomicUsize::new(0));
        pool.register_cache(published.clone());
        Self {
            pool: pool.clone(),
            held: Held {
                cur: Chain::default(),
                spare: Chain::default(),
                size,
                published,
            },
            _one_thread: PhantomData,
        }
    }

    /// The pool this cache takes from.
    pub fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    /// Buffers held now.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most buffers it holds (two chains of its size).
    pub fn capacity(&self) -> usize {
        2 * self.held.size as usize
    }

    /// One buffer, or `None` when the cache and the pool are both out.
    #[inline]
    pub fn alloc(&mut self) -> Option<Packet> {
        let (pool, held) = (&self.pool, &mut self.held);
        if held.cur.len == 0 && !held.reload(pool) {
            return None;
        }
        let idx = held.cur.head - 1;
        // Within the chain every link is an index + 1 of this pool, set by whoever held
        // the buffer last (or the stack's, for a popped chain).
        held.cur.head = pool.links()[idx as usize].load(Ordering::Relaxed);
        held.cur.len -= 1;
        held.publish();
        // SAFETY: the head of our chain: a buffer this cache owns, now given up.
        Some(unsafe { Mempool::packet(pool.slots(), idx) })
    }

    /// Appends up to `n` buffers to `out`; returns how many. From the cache's chains
    /// first; what they lack comes straight from the shared stack in one operation (a
    /// chain popped into the cache would be walked twice: once to pop it, once to hand
    /// it out). `out` should have the capacity already, so nothing is allocated.
    #[inline]
    pub fn alloc_batch(&mut self, out: &mut Vec<Packet>, n: usize) -> usize {
        let (pool, held) = (&self.pool, &mut self.held);
        let (links, slots) = (pool.links(), pool.slots());
        let mut given = 0;
        while given < n {
            if held.cur.len == 0 {
                if held.spare.len == 0 {
                    given += pool.alloc_batch(out, n - given);
                    break;
                }
                std::mem::swap(&mut held.cur, &mut held.spare);
            }
            let take = held.cur.len.min((n - given) as u32);
            let mut head = held.cur.head;
            // A range's map has an exact length: one capacity check for the run.
            out.extend((0..take).map(|_| {
                let idx = head - 1;
                // Within the chain every link is an index + 1 of this pool, set by whoever
                // held the buffer last (or the stack's, for a popped chain).
                head = links[idx as usize].load(Ordering::Relaxed);
                // SAFETY: the head of our chain: a buffer this cache owns, now given up.
                unsafe { Mempool::packet(slots, idx) }
            }));
            held.cur.head = head;
            held.cur.len -= take;
            given += take as usize;
        }
        held.publish();
        given
    }

    /// Gives `pkt` back: into the cache when it is this pool's, else to its own pool.
    #[inline]
    pub fn free(&mut self, pkt: Packet) {
        self.free_all(std::iter::once(pkt));
    }

    /// Takes every packet out of `slots` and gives it back as [`free_all`](Self::free_all)
    /// does: a transmit ring's completed group. The common packet (this pool's, no
    /// payload, room on the current chain) goes through a loop that calls nothing, so it
    /// keeps the chain in registers; any other leaves the loop for `free_all`.
    #[inline(never)]
    pub fn free_slots(&mut self, slots: &mut [Option<Packet>]) {
        let me = Arc::as_ptr(&self.pool);
        let mut at = 0;
        while at < slots.len() {
            at = self.free_plain(slots, at);
            let Some(Some(p)) = slots.get(at) else {
                at += 1;
                continue;
            };
            if p.is_from_ptr(me) {
                // Ours, with a payload, or the chain is empty or full.
                if let Some(p) = slots[at].take() {
                    self.free_all(std::iter::once(p));
                }
                at += 1;
                continue;
            }
            at = send_home(slots, at, me);
        }
        self.publish();
    }

    /// Frees the packets of `slots` from `at` on while each is a plain one and the current
    /// chain has room (see `free_slots`); returns where it stopped.
    #[inline(always)]
    fn free_plain(&mut self, slots: &mut [Option<Packet>], at: usize) -> usize {
        let (me, links, size) = (Arc::as_ptr(&self.pool), self.pool.links(), self.held.size);
        let Chain {
            mut head,
            tail,
            len,
        } = self.held.cur;
        // An empty chain (no tail yet) takes none here; a non-empty one up to its size.
        // Empty slots count against the room too, which only ends the run early.
        let room = if len == 0 { 0 } else { (size - len) as usize };
        let run = slots.get_mut(at..).unwrap_or_default();
        let run_len = run.len().min(room);
        // Counted: the slots passed, and the empty ones among them (rare: the parts of a
        // chained frame before its last).
        let (mut seen, mut empty) = (0, 0);
        for slot in &mut run[..run_len] {
            match slot {
                None => empty += 1,
                Some(p) if p.is_plain(me) => {
                    let idx = p.index_of_plain();
                    // Ours now, and so is its link: onto the chain's head.
                    if let Some(link) = links.get(idx as usize) {
                        link.store(head, Ordering::Relaxed);
                    }
                    std::mem::forget(slot.take());
                    head = idx + 1;
                }
                Some(_) => break,
            }
            seen += 1;
        }
        self.held.cur = Chain {
            head,
            tail,
            len: len + (seen - empty) as u32,
        };
        at + seen
    }

    /// Gives every packet back: this pool's into the cache (a full chain goes to the
    /// shared stack in one push when the other is full too), another pool's straight to
    /// that pool.
    #[inline]
    pub fn free_all(&mut self, pkts: impl IntoIterator<Item = Packet>) {
        let (pool, held) = (&self.pool, &mut self.held);
        let (spare, size) = (&mut held.spare, held.size);
        let (me, links) = (Arc::as_ptr(pool), pool.links());
        // The current chain in locals, so the loop keeps it in registers: a store to a
        // link could alias `self` as far as the compiler knows.
        let Chain {
            mut head,
            mut tail,
            mut len,
        } = held.cur;
        for p in pkts {
            if !p.is_from_ptr(me) {
                drop(p);
                continue;
            }
            let idx = p.into_index();
            // An empty chain (no tail yet) or a full one: off the hot path, which then
            // only links the buffer in at the head.
            if len.wrapping_sub(1) >= size - 1 {
                Chain { head, tail, len } = begin(pool, spare, Chain { head, tail, len }, idx);
                continue;
            }
            // The buffer is ours now, and so is its link: onto the chain's head.
            if let Some(link) = links.get(idx as usize) {
                link.store(head, Ordering::Relaxed);
            }
            head = idx + 1;
            len += 1;
        }
        held.cur = Chain { head, tail, len };
        held.publish();
    }

    /// Publishes how many it holds (after `free_slots`' plain loop, which does not).
    #[inline(always)]
    fn publish(&self) {
        self.held.publish();
    }
}

/// The run of another pool's packets from `slots[at]` on (frames received on another
/// port) goes home with one push per pool, as `Packet::drop_slots` does; returns where the
/// run ended.
#[cold]
#[inline(never)]
fn send_home(slots: &mut [Option<Packet>], at: usize, me: *const Mempool) -> usize {
    let end = slots[at..]
        .iter()
        .position(|s| s.as_ref().is_some_and(|p| p.is_from_ptr(me)))
        .map_or(slots.len(), |n| at + n);
    Packet::drop_slots(&mut slots[at..end]);
    end
}

/// Starts a new chain with buffer `idx` (ours, of `pool`) in place of `cur`, which is
/// empty or full; a full one is rotated out first (see `rotate`). The first buffer is the
/// chain's tail: its link is set when the chain is pushed.
#[cold]
#[inline(never)]
fn begin(pool: &Arc<Mempool>, spare: &mut Chain, cur: Chain, idx: u32) -> Chain {
    if cur.len > 0 {
        rotate(pool, spare, cur);
    }
    Chain {
        head: idx + 1,
        tail: idx,
        len: 1,
    }
}

/// The current chain `full` is full: it becomes the spare, and the spare, if it holds any,
/// goes to the shared stack of `pool` in one push (a spare is only ever a full chain).
#[cold]
#[inline(never)]
fn rotate(pool: &Arc<Mempool>, spare: &mut Chain, full: Chain) {
    push(pool, std::mem::replace(spare, full));
}

/// Pushes `chain` onto the shared stack of `pool` in one operation.
fn push(pool: &Arc<Mempool>, chain: Chain) {
    if chain.len > 0 {
        pool.push_linked(chain.head - 1, chain.tail, chain.len);
    }
}

impl Drop for PoolCache {
    /// Everything held goes back to the shared stack.
    fn drop(&mut self) {
        push(&self.pool, std::mem::take(&mut self.held.cur));
        push(&self.pool, std::mem::take(&mut self.held.spare));
        self.held.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FakeDma;
    use std::sync::atomic::AtomicBool;

    /// Threads, each with its own cache, alloc and free in bursts of varying size, single
    /// and batched, and hand some packets to the next thread to free there: no buffer is
    /// handed out twice (an ownership flag per buffer), none is lost, the pool is full and
    /// its loan given back at the end.
    fn churn(threads: usize, buffers: usize, ops: usize, size: usize) {
        let pool = Mempool::new(&FakeDma::new(), buffers).unwrap();
        let owned: Arc<Vec<AtomicBool>> =
            Arc::new((0..buffers).map(|_| AtomicBool::new(false)).collect());
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..threads)
            .map(|_| std::sync::mpsc::channel::<Vec<Packet>>())
            .unzip();
        let workers: Vec<_> = rxs
            .into_iter()
            .enumerate()
            .map(|(t, inbox)| {
                let (pool, owned) = (pool.clone(), owned.clone());
                let next = txs[(t + 1) % threads].clone();
                std::thread::spawn(move || {
                    let mut cache = pool.cache(size);
                    let mut held = Vec::with_capacity(64);
                    let mut done = 0;
                    while done < ops {
                        let want = 1 + (done * 7 + t) % 40;
                        let got = if want == 1 {
                            cache.alloc().map(|p| held.push(p)).is_some() as usize
                        } else {
                            cache.alloc_batch(&mut held, want)
                        };
                        for p in &held {
                            let idx = p.index() as usize;
                            assert!(!owned[idx].swap(true, Ordering::AcqRel), "handed out twice");
                        }
                        for p in &held {
                            owned[p.index() as usize].store(false, Ordering::Release);
                        }
                        if done % 5 == 0 && !held.is_empty() {
                            // Freed on another thread, through that thread's cache.
                            let _ = next.send(held.drain(..held.len() / 2).collect());
                        }
                        if let Some(p) = held.pop().filter(|_| done % 3 == 0) {
                            cache.free(p);
                        }
                        cache.free_all(held.drain(..));
                        while let Ok(from_before) = inbox.try_recv() {
                            cache.free_all(from_before);
                        }
                        done += got.max(1);
                    }
                    drop(next);
                    // Drain what the previous thread still sends until it has hung up.
                    for from_before in inbox {
                        cache.free_all(from_before);
                    }
                })
            })
            .collect();
        drop(txs);
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(pool.free_count(), buffers, "nothing lost");
        assert_eq!(
            Arc::strong_count(&pool),
            1,
            "caches dropped, loan given back"
        );
        let mut all = Vec::new();
        assert_eq!(pool.alloc_batch(&mut all, buffers + 1), buffers);
        let mut idx: Vec<u32> = all.iter().map(Packet::index).collect();
        idx.sort();
        idx.dedup();
        assert_eq!(idx.len(), buffers, "every buffer once");
    }

    /// Small enough for Miri, which checks every access of the hand-overs.
    #[test]
    fn two_threads_with_caches_never_share_or_lose_a_buffer() {
        churn(2, 48, if cfg!(miri) { 60 } else { 20_000 }, 8);
    }

    #[test]
    #[cfg_attr(miri, ignore = "10^5+ operations: too slow to interpret")]
    fn four_threads_with_caches_over_a_hundred_thousand_operations() {
        churn(4, 512, 150_000, 32);
    }

    /// The free count includes what caches hold; a batch the cache cannot give whole
    /// comes partly from the stack, without filling the cache; a single allocation from
    /// an empty cache pops a chain of its size; full chains go back; dropping empties it.
    #[test]
    fn counts_refills_and_flushes() {
        let pool = Mempool::new(&FakeDma::new(), 100).unwrap();
        let mut cache = pool.cache(8);
        assert_eq!((cache.len(), cache.capacity()), (0, 16));
        let mut out = Vec::new();
        assert_eq!(cache.alloc_batch(&mut out, 4), 4);
        assert_eq!(
            (cache.len(), pool.free_count()),
            (0, 96),
            "straight from the stack"
        );
        assert_eq!(out[0].index(), 0, "lowest index first, like the pool");
        cache.free_all(out.drain(..));
        assert_eq!((cache.len(), pool.free_count()), (4, 100));
        assert_eq!(
            cache.alloc().unwrap().index(),
            3,
            "the last freed comes back first"
        );
        assert_eq!(cache.alloc_batch(&mut out, 15), 15);
        assert_eq!(
            (cache.len(), pool.free_count()),
            (0, 85),
            "the cache's 3, then 12 from the stack (the one allocated above went back)"
        );
        cache.free_all(out.drain(..));
        assert_eq!((cache.len(), pool.free_count()), (15, 100));
        assert_eq!(cache.alloc_batch(&mut out, 40), 40, "more than it holds");
        assert_eq!((cache.len(), pool.free_count()), (0, 60));
        cache.free_all(out.drain(..));
        assert!((1..=16).contains(&cache.len()), "full chains went back");
        assert_eq!(pool.free_count(), 100);
        drop(cache);
        assert_eq!(pool.free_count(), 100);
        let mut empty = pool.cache(8);
        let one = empty.alloc().unwrap();
        assert_eq!(
            (empty.len(), pool.free_count()),
            (7, 99),
            "one alloc from an empty cache pops a chain of 8"
        );
        drop((one, empty));
        assert_eq!(pool.free_count(), 100);
        assert_eq!(Arc::strong_count(&pool), 1);
    }

    /// A transmit ring's group: empty slots are skipped, plain packets go onto the chain
    /// (rotating full chains out), and a packet with a payload or from another pool takes
    /// the slow path: the payload is dropped, another pool's run of packets goes home in
    /// one push. Every slot ends empty, nothing is lost, and the count is published
    /// whatever the last slot held.
    #[test]
    fn free_slots_takes_every_kind_of_packet() {
        let dma = FakeDma::new();
        let (pool, other) = (
            Mempool::new(&dma, 64).unwrap(),
            Mempool::new(&dma, 16).unwrap(),
        );
        let region = Arc::new(crate::UserRegion::with_data(&[7u8; 64], dma.mapper()).unwrap());
        let mut cache = pool.cache(4);
        let mut slots: Vec<Option<Packet>> = (0..20)
            .map(|i| match i % 5 {
                0 => None,
                4 => {
                    let mut p = pool.alloc().unwrap();
                    p.attach(crate::Segment::new(&region, 0, 16).unwrap());
                    Some(p)
                }
                _ => pool.alloc(),
            })
            .collect();
        // A run of another pool's packets in the middle.
        for s in &mut slots[6..9] {
            *s = other.alloc();
        }
        let before = other.stack_changes();
        assert_eq!(Arc::strong_count(&region), 1 + 4, "four payloads held");
        cache.free_slots(&mut slots);
        assert!(slots.iter().all(Option::is_none), "every slot emptied");
        assert_eq!(Arc::strong_count(&region), 1, "payloads dropped");
        assert_eq!(
            other.stack_changes() - before,
            1,
            "the other pool's run went home in one push"
        );
        assert_eq!((pool.free_count(), other.free_count()), (64, 16));
        assert!(cache.len() <= cache.capacity());
        let mut again = Vec::new();
        assert_eq!(cache.alloc_batch(&mut again, 64), 64);
        let mut idx: Vec<u32> = again.iter().map(Packet::index).collect();
        idx.sort();
        let n = idx.len();
        idx.dedup();
        assert_eq!(idx.len(), n, "each buffer once");
        // Plain packets to the end: the loop's own publish is what counts them.
        // (Three: the first starts a chain, the next two take the plain loop; a fifth would
        // fill the chain and go the slow way, which publishes on its own.)
        let mut plain: Vec<Option<Packet>> = again.drain(..3).map(Some).collect();
        cache.free_slots(&mut plain);
        assert_eq!(pool.free_count(), 3, "the three freed, counted at once");
    }

    /// A chain emptied by allocations keeps a stale tail; `free_slots` must start a new
    /// chain (setting its tail) rather than link onto it, or the next push hands a buffer
    /// out twice.
    #[test]
    fn free_slots_after_the_chains_ran_dry_hands_each_buffer_out_once() {
        let pool = Mempool::new(&FakeDma::new(), 64).unwrap();
        let mut cache = pool.cache(4);
        let mut six = Vec::new();
        assert_eq!(pool.alloc_batch(&mut six, 6), 6);
        cache.free_all(six.drain(..));
        assert_eq!(cache.alloc_batch(&mut six, 6), 6, "both chains empty again");
        let mut slots: Vec<Option<Packet>> = (0..9).map(|_| pool.alloc()).collect();
        cache.free_slots(&mut slots);
        let mut all = Vec::new();
        assert_eq!(cache.alloc_batch(&mut all, 100), 58, "all but the six held");
        all.extend(six);
        let mut idx: Vec<u32> = all.iter().map(Packet::index).collect();
        idx.sort();
        let n = idx.len();
        idx.dedup();
        assert_eq!(idx.len(), n, "no buffer handed out twice");
    }

    /// A packet of another pool goes back to its own pool, never into this cache.
    #[test]
    fn another_pools_packet_goes_home() {
        let dma = FakeDma::new();
        let (a, b) = (
            Mempool::new(&dma, 8).unwrap(),
            Mempool::new(&dma, 8).unwrap(),
        );
        let mut cache = a.cache(4);
        let theirs = b.alloc().unwrap();
        let ours = cache.alloc().unwrap();
        cache.free_all([theirs, ours]);
        assert_eq!((b.free_count(), a.free_count(), cache.len()), (8, 8, 4));
        assert_eq!(Arc::strong_count(&b), 1, "b's loan given back");
    }

    /// A dry pool: the cache hands out what there is and says so.
    #[test]
    fn a_dry_pool_gives_what_it_has() {
        let pool = Mempool::new(&FakeDma::new(), 5).unwrap();
        let mut cache = pool.cache(4);
        let mut out = Vec::new();
        assert_eq!(cache.alloc_batch(&mut out, 8), 5);
        assert!(cache.alloc().is_none());
        cache.free_all(out.drain(..));
        assert_eq!(pool.free_count(), 5);
    }
}
