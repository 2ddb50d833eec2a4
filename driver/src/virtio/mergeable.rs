//! Receive with VIRTIO_NET_F_MRG_RXBUF (virtio 1.1 §5.1.6.3.1, §5.1.6.4): a frame longer
//! than one receive buffer spans several, in the order the device used them; the header
//! in the first says how many (`num_buffers`). [`Merge`] gathers them into one [`Packet`]
//! chain without copying a byte.
//!
//! Every receive buffer is one contiguous area, the header's `hdr_len` bytes of headroom
//! and then the buffer's data room (one descriptor, or two back to back when the header
//! goes apart), and the device fills it from its start. The first buffer of a frame holds
//! the header, then frame bytes; each later one holds frame bytes from its very start, so
//! its packet is grown at the front by `hdr_len` to cover them.
//!
//! A frame whose later buffers the device has not yet used stays here, the head of its
//! chain kept in the queue, and the next burst goes on with it: nothing waits on the
//! device. QEMU makes a frame's buffers visible with one used-index store (one flag store,
//! packed, the head last), so on QEMU this happens only under a device that publishes
//! part of a frame. A frame held at close is dropped with the queue, each buffer back in
//! the pool.
//!
//! What the device says is checked: a `num_buffers` of 0 or beyond the ring is an error
//! and only that buffer is recycled; one beyond what a frame of the port's MTU needs is an
//! error and the whole frame's buffers are recycled as they come; a later buffer that
//! is empty, too long, or missing (a bad used entry in its place) ends the frame the same
//! way. Each is counted once, as a receive error; none is a panic.

use zcnic_descriptors::virtio::Virtqueue;
use zcnic_hugepages::{Packet, DATA_ROOM};

/// Where `num_buffers` (le16) sits in the header (virtio 1.1 §5.1.6).
const NUM_BUFFERS: usize = 10;

/// The mergeable-receive state of one receive queue.
#[derive(Debug)]
pub(super) struct Merge {
    /// The frame gathered so far, and how many buffers it still needs.
    partial: Option<(Packet, u16)>,
    /// Buffers of a refused frame still to come: recycled as they do.
    skip: u16,
    /// The most buffers a frame of the port's MTU takes.
    max_bufs: u16,
    /// Buffers in the ring: no frame spans more.
    ring: u16,
    hdr_len: usize,
}

impl Merge {
    /// The state for a ring of `ring` buffers of a port whose frames are at most
    /// `max_frame` bytes, with headers of `hdr_len`.
    pub(super) fn new(max_frame: usize, hdr_len: usize, ring: u16) -> Self {
        let per_buf = DATA_ROOM + hdr_len;
        let need = (max_frame + hdr_len).div_ceil(per_buf);
        Self {
            partial: None,
            skip: 0,
            max_bufs: u16::try_from(need).unwrap_or(u16::MAX).max(1),
            ring,
            hdr_len,
        }
    }

    /// Whether a frame's later buffers are still awaited (or a refused frame's, to drop).
    pub(super) fn pending(&self) -> bool {
        self.partial.is_some() || self.skip > 0
    }

    /// Takes the used buffer `pkt`, into which the device wrote `written` bytes from its
    /// start (header included), then the rest of its frame's buffers as far as the device
    /// has used them, from `vq` and `bufs` (the packets posted under each id). Returns the
    /// frame once whole; `None` when it is refused or not yet whole. `errors` counts what
    /// was refused.
    pub(super) fn take<Q: Virtqueue>(
        &mut self,
        pkt: Packet,
        written: u32,
        vq: &mut Q,
        bufs: &mut [Option<Packet>],
        errors: &mut u64,
    ) -> Option<Packet> {
        let (mut pkt, mut written) = (pkt, written);
        loop {
            if let Some(frame) = self.one(pkt, written, errors) {
                return Some(frame);
            }
            if !self.pending() {
                return None;
            }
            // The frame's next buffer, if the device has used it yet.
            let used = match vq.pop_used()? {
                Ok(u) => u,
                Err(e) => {
                    log::debug!("rx used entry in the middle of a frame: {e}");
                    self.lost(errors);
                    return None;
                }
            };
            match bufs.get_mut(usize::from(used.id)).and_then(Option::take) {
                Some(p) => (pkt, written) = (p, used.len),
                None => {
                    self.lost(errors);
                    return None;
                }
            }
        }
    }

    /// One buffer: the head of a new frame, or the next of the one under way.
    fn one(&mut self, mut pkt: Packet, written: u32, errors: &mut u64) -> Option<Packet> {
        if self.skip > 0 {
            self.skip -= 1;
            return None; // dropping `pkt` recycles it
        }
        let hdr_len = self.hdr_len;
        let Some((mut head, left)) = self.partial.take() else {
            let n = num_buffers(&mut pkt, hdr_len);
            let len = (written as usize).saturating_sub(hdr_len);
            if n == 0 || n > self.ring {
                *errors += 1;
                return None;
            }
            if n > self.max_bufs || len == 0 || pkt.set_len(len).is_err() {
                *errors += 1;
                self.skip = n - 1;
                return None;
            }
            if n == 1 {
                return Some(pkt);
            }
            self.partial = Some((pkt, n - 1));
            return None;
        };
        // A later buffer: frame bytes from the buffer's start, the header's room included.
        if written == 0 || pkt.prepend(hdr_len).is_err() || pkt.set_len(written as usize).is_err() {
            *errors += 1;
            self.skip = left - 1;
            return None; // dropping `head` recycles the frame so far
        }
        head.append(pkt);
        if left == 1 {
            return Some(head);
        }
        self.partial = Some((head, left - 1));
        None
    }

    /// A bad used entry where the frame's next buffer was due: counted once, and taken
    /// as that buffer, lost; the frame under way (if any) is refused, the buffers left
    /// of it recycled as they come.
    fn lost(&mut self, errors: &mut u64) {
        *errors += 1;
        self.skip = match self.partial.take() {
            Some((_, left)) => left - 1,
            None => self.skip.saturating_sub(1),
        };
    }
}

/// The `num_buffers` field of the header in `pkt`'s headroom.
fn num_buffers(pkt: &mut Packet, hdr_len: usize) -> u16 {
    if pkt.prepend(hdr_len).is_err() {
        return 0;
    }
    let h = pkt.data();
    let n = match h.get(NUM_BUFFERS..NUM_BUFFERS + 2) {
        Some(b) => u16::from_le_bytes([b[0], b[1]]),
        None => 0,
    };
    // Prepended just above, so this cannot fail.
    let _ = pkt.trim_front(hdr_len);
    n
}
