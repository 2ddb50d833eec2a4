//! The pool's free list: a lock-free stack of buffer indices.
//!
//! The head is one 128-bit word: a 64-bit tag bumped by every change, the free count, and
//! the top index + 1, updated by one 128-bit compare-and-swap (cmpxchg16b on x86_64, as
//! DPDK's lock-free stack does). The tag is what defeats ABA: a thread that read a head,
//! was stalled, and then tries its CAS fails if anything changed meanwhile, even if the
//! same index is on top again. A 22-bit tag (this stack's first form) repeats after 2^22
//! changes, which a thread preempted for a few milliseconds under churn can live through;
//! 2^64 changes take centuries at any rate a CPU can CAS, so this tag cannot wrap.

use portable_atomic::AtomicU128;
use std::sync::atomic::{AtomicU32, Ordering};

/// Most buffers one pool holds (the links are `u32` index + 1; also about 8.8 TB).
pub const MAX_BUFFERS: usize = u32::MAX as usize - 1;

/// The stack head: tag (bits 64..128), free count (32..64), top index + 1 (0..32; 0 =
/// empty).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Head(u128);

impl Head {
    #[inline(always)]
    fn top(self) -> u32 {
        self.0 as u32
    }

    #[inline(always)]
    fn len(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The next head: tag + 1 (wrapping, after 2^64 changes), the given top and length.
    #[inline(always)]
    fn then(self, top: u32, len: u32) -> Self {
        let tag = ((self.0 >> 64) as u64).wrapping_add(1);
        Self(u128::from(tag) << 64 | u128::from(len) << 32 | u128::from(top))
    }
}

/// A lock-free stack of buffer indices (a Treiber stack) with a 128-bit tagged head (see
/// the module docs). Every link is an atomic, so a stale read is a wasted try, never
/// undefined behaviour. Pushes take a whole chain at once: one CAS for a burst of freed
/// buffers.
#[derive(Debug)]
pub struct FreeStack {
    head: AtomicU128,
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
            head: AtomicU128::new(Head(0).then(u32::from(n > 0), n).0),
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
    /// stack); returns the free count after.
    #[inline]
    pub(crate) fn push_chain(&self, first: u32, last: u32, n: u32) -> u32 {
        let Some(tail) = self.next.get(last as usize) else {
            return self.len() as u32;
        };
        let mut h = Head(self.head.load(Ordering::Acquire));
        loop {
            tail.store(h.top(), Ordering::Relaxed);
            let new = h.then(first + 1, h.len() + n);
            // Release: the links written above are visible to whoever pops these entries.
            match self
                .head
                .compare_exchange_weak(h.0, new.0, Ordering::Release, Ordering::Acquire)
            {
                Ok(_) => return new.len(),
                Err(now) => h = Head(now),
            }
        }
    }

    /// Pushes index `idx` (which must not be on the stack); returns the free count after.
    #[inline]
    pub fn push(&self, idx: u32) -> u32 {
        self.push_chain(idx, idx, 1)
    }

    /// Pops as many indices as `got` holds into it with one successful CAS; returns how
    /// many, and the free count before.
    #[inline]
    pub fn pop_batch(&self, got: &mut [u32]) -> (usize, u32) {
        let max = got.len();
        self.pop_walk(max, |i, idx| got[i] = idx)
    }

    /// Pops up to `max` indices with one successful CAS, telling `seen(i, idx)` each one
    /// as the walk from the top finds it; returns how many, and the free count before.
    /// A try whose CAS fails walked entries it did not take, and the next try tells its
    /// own from `i` = 0 again: what `seen` learnt is the caller's only for the first `n`
    /// of the last try, `n` being what this returns. (So `seen` must only note where
    /// they are: until the CAS succeeds, another thread may own them.)
    #[inline(always)]
    pub(crate) fn pop_walk(&self, max: usize, mut seen: impl FnMut(usize, u32)) -> (usize, u32) {
        let links = &self.next[..];
        let mut h = Head(self.head.load(Ordering::Acquire));
        loop {
            // Walk up to `max` entries from the top; links may be stale if another thread
            // changed the stack meanwhile, in which case the CAS below fails.
            let (mut top, mut taken) = (h.top(), 0usize);
            while taken < max {
                // Every link and top is an index + 1 of this stack, or 0 at the bottom:
                // `link_in` stores no other value. So one test finds both the bottom
                // (0 - 1 wraps to u32::MAX, past any stack) and an index out of bounds,
                // which a stale link from another thread's changes cannot be either; and
                // it tells the compiler `idx` is below `links.len()` when `seen` indexes.
                let idx = top.wrapping_sub(1);
                let Some(link) = links.get(idx as usize) else {
                    break;
                };
                seen(taken, idx);
                top = link.load(Ordering::Relaxed);
                taken += 1;
            }
            // A walk ends at the bottom or at `max`; anything else is a link outside the
            // stack, which `link_in` cannot store.
            debug_assert!(taken == max || top == 0 || top as usize > links.len());
            if taken == 0 {
                return (0, h.len());
            }
            // Acquire: the links (and the buffers' last contents) of what we take are
            // visible before we hand the buffers out.
            match self.head.compare_exchange_weak(
                h.0,
                h.then(top, h.len().saturating_sub(taken as u32)).0,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return (taken, h.len()),
                Err(now) => h = Head(now),
            }
        }
    }

    /// Pops up to `max` entries with one successful CAS and leaves them linked as they were:
    /// returns the first one's index + 1 (0 for none), the last one's index, how many, and
    /// the free count before. The caller owns them and follows the links (from
    /// [`links`](Self::links)) for exactly that many; the last one's link is stale.
    #[inline]
    pub(crate) fn pop_chain(&self, max: u32) -> (u32, u32, u32, u32) {
        let links = &self.next[..];
        let mut h = Head(self.head.load(Ordering::Acquire));
        loop {
            // As in `pop_batch`: a walk over stale links only makes the CAS fail.
            let (mut top, mut last, mut taken) = (h.top(), 0, 0u32);
            while taken < max && top != 0 {
                last = top - 1;
                // In bounds: every link is an index + 1 of this stack, or 0.
                top = links[last as usize].load(Ordering::Relaxed);
                taken += 1;
            }
            if taken == 0 {
                return (0, 0, 0, h.len());
            }
            // Acquire: the links (and the buffers' last contents) of what we take are
            // visible before we hand the buffers out.
            match self.head.compare_exchange_weak(
                h.0,
                h.then(top, h.len().saturating_sub(taken)).0,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return (h.top(), last, taken, h.len()),
                Err(now) => h = Head(now),
            }
        }
    }

    /// How many times the stack has changed: its tag, bumped by every push and pop.
    pub fn changes(&self) -> u64 {
        (self.head.load(Ordering::Relaxed) >> 64) as u64
    }

    /// Entries on the stack (exact when no other thread is pushing or popping).
    pub fn len(&self) -> usize {
        Head(self.head.load(Ordering::Relaxed)).len() as usize
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
        let would = stale.then(2, 3); // what the stalled popper computed: 1 on top
        assert!(s
            .head
            .compare_exchange(stale.0, would.0, Ordering::Acquire, Ordering::Acquire)
            .is_err());
    }

    /// The tag has 64 bits: it does not come back to 0 after 2^22 changes, the point where
    /// the old 22-bit tag wrapped, and the fields survive its own wrap after 2^64.
    #[test]
    fn the_tag_does_not_wrap_at_22_bits() {
        let tag = |h: Head| (h.0 >> 64) as u64;
        let at_old_limit = Head(u128::from((1u64 << 22) - 1) << 64).then(1, 4);
        assert_eq!(tag(at_old_limit), 1 << 22);
        let near_end = Head(u128::from(u64::MAX) << 64).then(5, 6);
        assert_eq!((tag(near_end), near_end.top(), near_end.len()), (0, 5, 6));
    }
}
