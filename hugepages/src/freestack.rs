//! The pool's free list: a lock-free stack of buffer indices.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Bits of the stack head for the top index + 1, and for the free count.
const FIELD_BITS: u32 = 21;
const FIELD: u64 = (1 << FIELD_BITS) - 1;
/// Most buffers one pool holds: what the head's 21-bit fields count (about 4.5 GB).
pub const MAX_BUFFERS: usize = FIELD as usize - 1;

/// The stack head: a 22-bit tag bumped by every change, the free count, and the top
/// index + 1 (0 = empty), in one word that one CAS updates.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Head(u64);

impl Head {
    #[inline(always)]
    fn top(self) -> u32 {
        (self.0 & FIELD) as u32
    }

    #[inline(always)]
    fn len(self) -> u32 {
        ((self.0 >> FIELD_BITS) & FIELD) as u32
    }

    /// The next head: tag + 1 (wrapping), the given top and length.
    #[inline(always)]
    fn then(self, top: u32, len: u32) -> Self {
        let tag = (self.0 >> (2 * FIELD_BITS)).wrapping_add(1);
        Self((tag << (2 * FIELD_BITS)) | (u64::from(len) << FIELD_BITS) | u64::from(top))
    }
}

/// A lock-free stack of buffer indices (a Treiber stack). The head packs a tag, bumped by
/// every change, with the free count and the top index + 1, so a thread that read a head
/// which then changed under it — even back to the same top (ABA) — fails its CAS and
/// retries. Every link is an atomic, so a stale read is a wasted try, never undefined
/// behaviour. Pushes take a whole chain at once: one CAS for a burst of freed buffers.
#[derive(Debug)]
pub struct FreeStack {
    head: AtomicU64,
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
            head: AtomicU64::new(Head(0).then(u32::from(n > 0), n).0),
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

    /// Entries on the stack (exact when no other thread is pushing or popping).
    pub fn len(&self) -> usize {
        Head(self.head.load(Ordering::Relaxed)).len() as usize
    }

    /// True when no entry is on the stack.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
