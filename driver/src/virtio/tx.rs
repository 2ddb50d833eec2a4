//! The virtio-net transmit queue of one queue pair ([`VirtioTxQueue`]), a handle owned by
//! one thread. Each one-buffer frame is one descriptor (two with the header apart), its
//! `virtio_net_hdr` in the packet's headroom; a frame in several parts goes out as one
//! chain (`txchain.rs`). Completed buffers are reclaimed in a batch when the queue runs
//! short of room, and by `flush`; the device is notified only when it asks.

use super::queue::QueueKind;
use super::transport::Notifier;
use super::txchain::Sender;
use crate::pci::PciAddr;
use crate::port::{QueueCounters, Teardown, TxQueue};
use std::sync::Arc;
use std::time::Duration;
use zcnic_descriptors::virtio::{Buf, Full};
use zcnic_hugepages::{AddressSpace, Mempool, Packet, DATA_ROOM};

/// Free descriptors the transmit queue waits for before it adds more frames (at most half
/// the queue, so it waits only while more than half is in flight).
const TX_CHUNK: usize = 128;
/// The transmit queue of one virtio-net queue pair.
pub struct VirtioTxQueue<Q: QueueKind> {
    pub(super) queue: u16,
    pub(super) addr: PciAddr,
    pub(super) st: Option<TxState<Q>>,
    pub(super) pool: Arc<Mempool>,
    /// The addresses the device reads (the pool's): what `send` checks packets against.
    pub(super) space: AddressSpace,
    pub(crate) counters: Arc<QueueCounters>,
    pub(super) teardown: Arc<Teardown>,
}

pub(super) struct TxState<Q> {
    pub(super) vq: Q,
    pub(super) bufs: Vec<Option<Packet>>,
    /// The one frame ceiling mode sends over and over (its chains own no packet).
    pub(super) ceiling: Option<Packet>,
    pub(super) hdr_len: usize,
    /// The header has a descriptor of its own (see [`super::header_apart`]).
    pub(super) hdr_apart: bool,
    /// The longest frame sent (`Config::max_frame`).
    pub(super) max_frame: usize,
    /// What the device does of a frame's offload request (`offload.rs`).
    pub(super) caps: crate::Offloads,
    pub(super) kick: Notifier,
}

impl<Q: QueueKind> std::fmt::Debug for VirtioTxQueue<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VirtioTxQueue({} queue {})", self.addr, self.queue)
    }
}

impl<Q: QueueKind> TxState<Q> {
    /// Whether the transmit queue takes frames now: not while more than half of it is in
    /// flight and fewer than [`TX_CHUNK`] descriptors are free (see `send`).
    #[inline(always)]
    fn room_for_a_chunk(&self) -> bool {
        let chunk = usize::from(self.vq.size() / 2).min(TX_CHUNK);
        usize::from(self.vq.free()) >= chunk
    }

    /// Frees transmit buffers the device is done with, in one pool operation; with `KEEP`
    /// they go into `keep` instead, without their virtio header (`Nic::tx_batch_recycle`).
    /// Returns the bad used entries seen.
    fn reclaim<const KEEP: bool>(&mut self, keep: &mut Vec<Packet>, addr: PciAddr) -> u64 {
        let (vq, bufs) = (&mut self.vq, &mut self.bufs);
        let ceiling = self.ceiling.is_some();
        let (mut budget, mut errors) = (vq.size(), 0);
        let done = std::iter::from_fn(|| {
            while budget > 0 {
                budget -= 1;
                match vq.pop_used()? {
                    Ok(used) => match bufs.get_mut(usize::from(used.id)).and_then(Option::take) {
                        Some(pkt) => return Some(pkt),
                        // Ceiling mode's chains hold no packet of their own.
                        None if ceiling => {}
                        None => errors += 1,
                    },
                    Err(e) => {
                        log::debug!("{addr}: tx used entry: {e}");
                        errors += 1;
                    }
                }
            }
            None
        });
        if KEEP {
            let hdr_len = self.hdr_len;
            // Each was prepended by exactly hdr_len in `send`, so this cannot fail.
            keep.extend(done.map(|mut p| {
                let _ = p.trim_front(hdr_len);
                p
            }));
        } else {
            Packet::drop_all(done);
        }
        errors
    }

    /// What a frame of several parts is sent with (`txchain.rs`).
    fn sender<'a>(&self, space: &'a AddressSpace, pool: &'a Arc<Mempool>) -> Sender<'a> {
        Sender {
            hdr_len: self.hdr_len,
            apart: self.hdr_apart,
            max_frame: self.max_frame,
            caps: self.caps,
            space,
            pool,
        }
    }

    /// [`TxState::add_frames`] of what fits in `free` descriptors of `pkts` with the header
    /// in a descriptor of its own (one more per frame); returns how many were taken too.
    #[cold]
    #[inline(never)]
    fn burst_apart(
        &mut self,
        pkts: &mut Vec<Packet>,
        free: usize,
        space: &AddressSpace,
        pool: &Arc<Mempool>,
    ) -> (usize, (u64, u64, u64)) {
        let n = crate::nic::chains_that_fit(pkts, free, 2);
        (n, self.add_frames::<true>(pkts.drain(..n), space, pool))
    }

    /// Adds `frames` (each checked, copied into the pool's address space when it is not
    /// there, its header prepended and zeroed) as chains; with `APART` the header has a
    /// descriptor of its own. Returns frames and bytes added, and frames refused.
    #[inline(always)]
    fn add_frames<const APART: bool>(
        &mut self,
        frames: impl Iterator<Item = Packet>,
        space: &AddressSpace,
        pool: &Arc<Mempool>,
    ) -> (u64, u64, u64) {
        let (mut sent, mut bytes, mut errors) = (0u64, 0u64, 0u64);
        for pkt in frames {
            // A frame of several parts (a chain, an attached payload) or with an offload
            // request takes its own path.
            if !pkt.is_single() {
                match self.sender(space, pool).add(&mut self.vq, pkt) {
                    Some((id, pkt, total)) => {
                        self.bufs[usize::from(id)] = Some(pkt);
                        sent += 1;
                        bytes += total as u64;
                    }
                    None => errors += 1,
                }
                continue;
            }
            // A buffer of another address space is copied into ours first.
            let pkt = if pkt.reachable_in(*space) {
                Some(pkt)
            } else {
                crate::nic::into_space(pkt, pool)
            };
            let Some(mut pkt) = pkt else {
                errors += 1;
                continue;
            };
            // Longer than the MTU allows: refused, as every frame is, never cut.
            let total = pkt.len();
            if total == 0 || total > self.max_frame || pkt.prepend(self.hdr_len).is_err() {
                errors += 1;
                continue;
            }
            // No offloads: an all-zero header (flags 0, GSO_NONE). Fixed-size fills are
            // plain stores; a variable one is a memset call per frame.
            let hdr = pkt.data_mut();
            hdr[..8].fill(0);
            match self.hdr_len {
                12 => hdr[8..12].fill(0),
                10 => hdr[8..10].fill(0),
                _ => hdr[8..20].fill(0),
            }
            let added = if APART {
                add_apart(&mut self.vq, &pkt, self.hdr_len)
            } else {
                self.vq.add(&[Buf {
                    addr: pkt.iova(),
                    len: pkt.len() as u32,
                    device_writes: false,
                }])
            };
            match added {
                Ok(id) => self.bufs[usize::from(id)] = Some(pkt),
                Err(_) => {
                    errors += 1;
                    continue;
                }
            }
            sent += 1;
            bytes += total as u64;
        }
        (sent, bytes, errors)
    }
}

impl<Q: QueueKind> VirtioTxQueue<Q> {
    /// [`TxState::room_for_a_chunk`], collecting completed frames first (into `keep`
    /// with `KEEP`, else to the pool) only when the room is short.
    #[inline(always)]
    fn make_room<const KEEP: bool>(
        st: &mut TxState<Q>,
        keep: &mut Vec<Packet>,
        addr: PciAddr,
    ) -> (bool, u64) {
        if st.room_for_a_chunk() {
            return (true, 0);
        }
        let errors = st.reclaim::<KEEP>(keep, addr);
        (st.room_for_a_chunk(), errors)
    }

    /// Sends what fits of `pkts`; when the queue is short of room, first reclaims completed
    /// frames (into `done` with `KEEP`, else to the pool).
    fn send<const KEEP: bool>(&mut self, pkts: &mut Vec<Packet>, done: &mut Vec<Packet>) -> usize {
        let Some(st) = self.st.as_mut() else { return 0 };
        // Frames go in by the chunk: with room for fewer than a chunk, the queue is busy
        // (more than half of it in flight) and the caller waits until a chunk completes.
        // Adding a frame or two each time one completed, QEMU's virtio-net ran at one of
        // two rates, about 0.92M or 1.54M pps; by the chunk, about 1.23M or 1.70M. And
        // completions are collected only when the room is short: each look at the used
        // ring pulls the cache lines QEMU's I/O thread is writing over to this CPU, which
        // costs the device most when the host's cores are far apart
        // (docs/performance.md, "virtio's slow mode").
        let (room, mut errors) = Self::make_room::<KEEP>(st, done, self.addr);
        if !room {
            self.counters.add(0, 0, errors);
            return 0;
        }
        let (free, space, pool) = (usize::from(st.vq.free()), &self.space, &self.pool);
        // The layout is chosen once a burst, out of line when the header goes apart, so
        // the one-descriptor loop has no test in it. A frame with an attached payload is
        // a chain of two descriptors.
        let (n, (sent, bytes, bad)) = if st.hdr_apart {
            st.burst_apart(pkts, free, space, pool)
        } else {
            let n = crate::nic::frames_that_fit(pkts, free);
            (n, st.add_frames::<false>(pkts.drain(..n), space, pool))
        };
        errors += bad;
        if sent > 0 && st.vq.publish() {
            st.kick.kick();
        }
        self.counters.add(sent, bytes, errors);
        n
    }

    /// Ceiling mode (`Nic::repost`): `burst` more sends of one frame kept in the ring's
    /// memory, nothing allocated or built per frame.
    pub(crate) fn repost(&mut self, frame: &[u8], burst: usize) -> Option<usize> {
        // One buffer, one descriptor, sent over and over: a longer frame has no such mode.
        if frame.len() > DATA_ROOM {
            log::warn!(
                "{}: ceiling mode sends frames of one buffer ({DATA_ROOM} bytes) at most",
                self.addr
            );
            return None;
        }
        // The first call drains the ring, so no chain with a packet of its own remains.
        if self.st.as_ref()?.ceiling.is_none() && !self.flush() {
            return Some(0);
        }
        let st = self.st.as_mut()?;
        if st.ceiling.is_none() {
            let Some(mut pkt) = self.pool.alloc_copy(frame) else {
                return Some(0);
            };
            if pkt.prepend(st.hdr_len).is_err() {
                return Some(0);
            }
            pkt.data_mut()[..st.hdr_len].fill(0);
            st.ceiling = Some(pkt);
        }
        // Every chain is the same one buffer: reclaiming frees nothing, adding writes one
        // descriptor and one avail entry, and nothing is allocated or built per frame.
        let (room, errors) = Self::make_room::<false>(st, &mut Vec::new(), self.addr);
        if !room {
            self.counters.add(0, 0, errors);
            return Some(0);
        }
        let pkt = st.ceiling.as_ref()?;
        let buf = Buf {
            addr: pkt.iova(),
            len: pkt.len() as u32,
            device_writes: false,
        };
        let mut n = 0;
        while n < burst {
            let added = if st.hdr_apart {
                add_apart(&mut st.vq, pkt, st.hdr_len)
            } else {
                st.vq.add(&[buf])
            };
            if added.is_err() {
                break;
            }
            n += 1;
        }
        if n > 0 && st.vq.publish() {
            st.kick.kick();
        }
        self.counters
            .add(n as u64, (n * frame.len()) as u64, errors);
        Some(n)
    }
}

/// Adds the one-buffer `pkt` (its header prepended) as a chain whose first descriptor is
/// the header alone and the next the frame: the framing a legacy device without
/// VIRTIO_F_ANY_LAYOUT requires (virtio 1.1 §2.6.4.3). The two point into one buffer and
/// do not overlap; the head holds at least one frame byte (`send` refuses empty ones).
#[cold]
fn add_apart<Q: QueueKind>(vq: &mut Q, pkt: &Packet, hdr_len: usize) -> Result<u16, Full> {
    let part = |addr: u64, len: usize| Buf {
        addr,
        len: len as u32,
        device_writes: false,
    };
    let hdr = part(pkt.iova(), hdr_len);
    let frame = part(pkt.iova() + hdr_len as u64, pkt.len() - hdr_len);
    vq.add(&[hdr, frame])
}

impl<Q: QueueKind> TxQueue for VirtioTxQueue<Q> {
    fn queue(&self) -> u16 {
        self.queue
    }

    fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>) -> usize {
        self.send::<false>(pkts, &mut Vec::new())
    }

    fn tx_batch_recycle(&mut self, pkts: &mut Vec<Packet>, done: &mut Vec<Packet>) -> usize {
        self.send::<true>(pkts, done)
    }

    fn flush(&mut self) -> bool {
        let (addr, counters) = (self.addr, &self.counters);
        let Some(st) = self.st.as_mut() else {
            return true;
        };
        crate::wait_until(Duration::from_millis(500), || {
            let errors = st.reclaim::<false>(&mut Vec::new(), addr);
            counters.add(0, 0, errors);
            st.vq.in_flight() == 0
        })
    }
}

impl<Q: QueueKind> Drop for VirtioTxQueue<Q> {
    /// Sends what is queued (bounded), then hands the ring, its frames and the ceiling
    /// frame to the port as the receive side does.
    fn drop(&mut self) {
        if !self.flush() {
            log::warn!(
                "{}: transmit queue {} did not drain before close",
                self.addr,
                self.queue
            );
        }
        if let Some(st) = self.st.take() {
            self.teardown.park(Box::new((st.vq, st.bufs, st.ceiling)));
        }
    }
}
