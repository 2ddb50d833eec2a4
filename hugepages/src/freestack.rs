//! The pool's free list: a lock-free stack of buffer indices.
//!
//! The head is one 64-bit word: a 43-bit tag bumped by every change and the top index + 1
//! (21 bits), updated by one compare-and-swap. The tag is what defeats ABA: a thread that
//! read a head, was stalled, and then tries its CAS fails if anything changed meanwhile,
//! even if the same index is on top again. The tag wraps only after 2^43 (8.8 × 10^12)
//! changes: at 100 million CAS a second on one pool, more than one cache line shared by
//! cores sustains, that is a day of uninterrupted churn while one popper stays stalled
//! between its load and its CAS (a paused VM or SIGSTOP pauses every thread of it, so
//! they do not count). This stack's first form packed the free count beside the index and
//! left 22 tag bits, which wrap in milliseconds of churn.
//!
//! A 128-bit head (DPDK's lock-free stack uses cmpxchg16b) was tried first; under QEMU's
//! TCG, where zcnic's demo and bench run, the guest's virtio-net rate fell several-fold
//! with it (docs/performance.md, "The pool's ABA tag"). So the free count lives in a
//! counter of its own, updated with one atomic read-modify-write right after the head's
//! CAS: the order of those updates says exactly when the pool became full or stopped being
//! full, which is all the pool's loan needs.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Bits of the stack head for the top index + 1.
const TOP_BITS: u32 = 21;
const TOP: u64 = (1 << TOP_BITS) - 1;
/// Most buffers one pool holds: what the head's 21-bit index counts (about 4.5 GB).
pub const MAX_BUFFERS: usize = TOP as usize - 1;

/// The stack head: a 43-bit tag bumped by every change, and the top index + 1 (0 =
/// empty), in one word that one CAS updates.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Head(u64);

impl Head {
    #[inline(always)]
    fn top(self) -> u32 {
        (self.0 & TOP) as u32
    }

    /// The next head: tag + 1 (wrapping after 2^43 changes) and the given top.
    #[inline(always)]
    fn then(self, top: u32) -> Self {
        let tag = (self.0 >> TOP_BITS).wrapping_add(1);
        Self((tag << TOP_BITS) | u64::from(top))
    }

    #[cfg(test)]
    fn tag(self) -> u64 {
        self.0 >> TOP_BITS
    }
}

/// A lock-free stack of buffer indices (a Treiber stack) with a tagged head (see the module
/// docs). Every link is an atomic, so a stale read is a wasted try, never undefined
/// behaviour. Pushes take a whole chain at once: one CAS for a burst of freed buffers.
#[derive(Debug)]
pub struct FreeStack {
    head: AtomicU64,
    /// Entries on the stack, updated right after each successful CAS.
    free: AtomicU32,
    next: Box<[AtomicU32]>,
}

impl FreeStack {
    /// A stack holding `0..n`, with 0 on top. `n` is at most [`MAX_BUFFERS`].
    pub fn full(n: u32) -> Self {
        assert!(n as usize <= MAX_BUFFERS, "{n} buffers in one stack");
        let next = (0..n)
            .map(|i| AtomicU32::new(if i + 1 < n { i + 2 } else { 0 }))
            .collect();
        Self {
            head: AtomicU64::new(Head(0).then(u32::from(n > 0)).0),
            free: AtomicU32::new(n),
            next,
        }
    }

    /// The links, for [`link_in`](Self::link_in).
    #[inline(always)]
    pub(crate) fn links(&self) -> &[AtomicU32] {
        &self.next
    }

    /// Links `idx` to `next` in `links` (this stack's [`links`](Self::links)) ahead of a
    /// [`push_chain`](Self::push_chain); both are off the stack, held by the caller.
    #[inline(always)]
    pub(crate) fn link_in(links: &[AtomicU32], idx: u32, next: u32) {
        if let Some(l) = links.get(idx as usize) {
            l.store(next + 1, Ordering::Relaxed);
        }
    }

    /// Pushes the chain `first → … → last` of `n` indices (linked with `link_in`, none on the
    /// stack); returns the free count after, as this push's own counter update left it.
    /// Nothing of the stack is touched after that update.
    #[inline]
    pub(crate) fn push_chain(&self, first: u32, last: u32, n: u32) -> u32 {
        let Some(tail) = self.next.get(last as usize) else {
            return self.len() as u32;
        };
        let mut h = Head(self.head.load(Ordering::Acquire));
        loop {
            tail.store(h.top(), Ordering::Relaxed);
            // Release: the links written above are visible to whoever pops these entries.
            match self.head.compare_exchange_weak(
                h.0,
                h.then(first + 1).0,
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => h = Head(now),
            }
        }
        // AcqRel: the counter's read-modify-writes form one order; whoever's update makes
        // the pool full sees every earlier user's, and what those users did before.
        self.free.fetch_add(n, Ordering::AcqRel) + n
    }

    /// Pushes index `idx` (which must not be on the stack); returns the free count after.
    #[inline]
    pub fn push(&self, idx: u32) -> u32 {
        self.push_chain(idx, idx, 1)
    }

    /// Pops as many indices as `got` holds into it with one successful CAS; returns how
    /// many, and the free count before, as this pop's own counter update saw it.
    #[inline]
    pub fn pop_batch(&self, got: &mut [u32]) -> (usize, u32) {
        let links = &self.next[..];
        let mut h = Head(self.head.load(Ordering::Acquire));
        loop {
            // Walk up to got.len() entries from the top; links may be stale if another thread
            // changed the stack meanwhile, in which case the CAS below fails.
            let (mut top, mut taken) = (h.top(), 0usize);
            for slot in got.iter_mut() {
                if top == 0 {
                    break;
                }
                *slot = top - 1;
                // Every link and top is an index + 1 of this stack (or 0), so in bounds:
                // `link_in` stores no other value. Indexing states that invariant.
                top = links[top as usize - 1].load(Ordering::Relaxed);
                taken += 1;
            }
            if taken == 0 {
                return (0, self.len() as u32);
            }
            // Acquire: the links (and the buffers' last contents) of what we take are
            // visible before we hand the buffers out.
            match self.head.compare_exchange_weak(
                h.0,
                h.then(top).0,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let before = self.free.fetch_sub(taken as u32, Ordering::AcqRel);
                    return (taken, before);
                }
                Err(now) => h = Head(now),
            }
        }
    }

    /// Entries on the stack (exact when no other thread is pushing or popping).
    pub fn len(&self) -> usize {
        self.free.load(Ordering::Relaxed) as usize
    }

    /// True when no entry is on the stack.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ABA case the tag exists for, replayed by hand: a popper reads the head, then
    /// (while it is stalled) the top is popped, popped past and pushed back, so the same
    /// index is on top again with a different link below it. Its CAS must fail.
    #[test]
    fn a_stale_head_with_the_same_top_fails_its_cas() {
        let s = FreeStack::full(4);
        let stale = Head(s.head.load(Ordering::Acquire));
        let mut two = [0; 2];
        assert_eq!(s.pop_batch(&mut two), (2, 4), "0 and 1 taken");
        s.push(0); // 0 is on top again, now linked to 2, not 1
        assert_eq!(Head(s.head.load(Ordering::Acquire)).top(), stale.top());
        let would = stale.then(2); // what the stalled popper computed: 1 on top
        assert!(s
            .head
            .compare_exchange(stale.0, would.0, Ordering::Acquire, Ordering::Acquire)
            .is_err());
        assert_eq!(s.len(), 3);
    }

    /// The tag has 43 bits: it does not come back to 0 after 2^22 changes, the point where
    /// the old 22-bit tag wrapped, and the index survives its own wrap.
    #[test]
    fn the_tag_does_not_wrap_at_22_bits() {
        let at_old_limit = Head(((1u64 << 22) - 1) << TOP_BITS).then(1);
        assert_eq!(at_old_limit.tag(), 1 << 22);
        let near_end = Head(!TOP).then(5);
        assert_eq!((near_end.tag(), near_end.top()), (0, 5));
        assert_eq!(64 - TOP_BITS, 43);
    }
}
