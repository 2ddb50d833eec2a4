//! Closing an AF_XDP queue: what its two halves share ([`Shared`]), and the rule for
//! giving back the pool buffers the kernel held when the last half goes. In copy mode
//! they go back once the socket is out of the XSKMAP and an RCU grace period has passed
//! (no frame reaches it after, even while a forked child still holds it: see `umem.rs`);
//! in zero-copy mode once a probe bind shows the driver let go of the queue. Otherwise
//! they are leaked, never reused.

use super::sys::{self, UmemReg};
use super::umem::{Table, Umem};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use zcnic_hugepages::Packet;

/// What both halves of one queue share: the socket, and the UMEM it registered. Each
/// half hands the packets it still has in the kernel's rings to `leftover` when it drops
/// (after which its rings are unmapped); the last half to go drops this, which takes the
/// socket out of the XSKMAP (no frame reaches it after, even if a forked child still
/// holds it: see `umem.rs`), closes it, and only then gives those packets back to the
/// pool.
#[derive(Debug)]
pub struct Shared {
    /// The socket: `None` only in the tests that play the kernel on rings of plain
    /// memory (`Queue::fake`).
    pub sock: Option<OwnedFd>,
    /// An epoll instance watching `sock`, handed out as the interrupt fd: a duplicate of
    /// it, unlike one of the socket, cannot keep the socket (and the pool buffers in its
    /// rings) the kernel's after the port closed.
    pub wake: Option<OwnedFd>,
    /// Bound in zero-copy mode (else copy mode).
    pub zero_copy: bool,
    /// The interface index and queue the socket is bound to (`None` in the tests that
    /// play the kernel), for the probe of a zero-copy close ([`released`]).
    pub bound: Option<(u32, u32)>,
    /// Indices or addresses the kernel wrote that failed a check, on either half.
    pub bad: AtomicU64,
    /// Packets the kernel may still hold when a half dropped; touched only on drop.
    pub leftover: Mutex<Vec<Packet>>,
    /// The XSKMAP the socket is put in (a duplicate of its fd) and the socket's key
    /// there, set before the socket goes in: the drop takes it out again.
    pub map: OnceLock<(OwnedFd, u32)>,
    /// The pool whose memory is the UMEM (after `sock`: it outlives the registration).
    pub umem: Arc<Umem>,
    /// Run in the drop just before the held packets go back to the pool, so that a test
    /// can see the socket is closed by then.
    #[cfg(test)]
    pub before_release: Hook,
}

/// A test's probe of [`Shared`]'s drop.
#[cfg(test)]
pub struct Hook(pub Option<Box<dyn FnOnce() + Send + Sync>>);

#[cfg(test)]
impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

impl Shared {
    /// One more entry the kernel wrote that failed a check (either half may count).
    pub fn bad(&self) {
        self.bad.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the packets a half still has in the kernel's rings, for after the close.
    pub fn leave(&self, held: &mut Table) {
        let mut left = self.leftover.lock().unwrap_or_else(|e| e.into_inner());
        held.drain_into(&mut left);
    }
}

impl Shared {
    /// Takes the socket out of its XSKMAP and waits out every receive path that found it
    /// there: true when, after this, the kernel writes into none of the buffers in its
    /// fill ring, whoever else still holds the socket (see `umem.rs`).
    fn unreachable(&self) -> bool {
        let Some((map, key)) = self.map.get() else {
            // Never put in a map: no frame was ever redirected to it.
            return true;
        };
        match sys::xskmap_clear(map, *key).and_then(|()| sys::rcu_grace_period()) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("xdp: taking queue {key}'s socket out of the XSKMAP: {e}");
                false
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // In copy mode the kernel writes a frame into a fill ring's buffer only when the
        // program redirects it to the socket through the XSKMAP; once the socket is out
        // of the map and the receive paths that looked it up before are done, nothing
        // writes the buffers, even while another process (a forked child) keeps the
        // socket bound after the close below.
        let unreachable = self.unreachable();
        // Off the epoll first, so that the close is the last reference in the usual
        // case and the queue is free again at once: an `epoll_wait` on a duplicate of
        // the interrupt fd holds a reference to the socket while it polls it (Linux 6.10
        // on), and the socket would be released in that thread instead.
        if let (Some(ep), Some(sock)) = (&self.wake, &self.sock) {
            if let Err(e) = sys::unwatch(ep, sock) {
                log::warn!("xdp: taking the socket off its epoll: {e}");
            }
        }
        drop(self.sock.take());
        let left = std::mem::take(self.leftover.get_mut().unwrap_or_else(|e| e.into_inner()));
        #[cfg(test)]
        if let Some(probe) = self.before_release.0.take() {
            probe();
        }
        // A zero-copy driver lets go of the UMEM in a work item after the close and may
        // write its buffers until then (the XSKMAP does not stand between the device and
        // the fill ring): they go back only once a probe shows it has, which also waits
        // out a forked child holding the socket, and are never given back when it cannot.
        let page = self.umem.region().0;
        let safe = if self.zero_copy {
            self.bound.is_some_and(|(i, q)| released(i, q, page))
        } else {
            unreachable
        };
        if safe {
            Packet::drop_all(left);
        } else {
            // The kernel may still write them: leaked, never reused.
            log::warn!(
                "xdp: {} pool buffers left to the kernel ({})",
                left.len(),
                if self.zero_copy {
                    "the zero-copy driver did not let go of its queue"
                } else {
                    "the socket could not be taken out of its XSKMAP"
                }
            );
            left.into_iter().for_each(std::mem::forget);
        }
    }
}

/// Whether the driver has let go of the UMEM of a closed zero-copy socket on `queue` of
/// `ifindex`. The kernel releases the socket's pool in a work item (`xp_release_deferred`)
/// that has the driver detach it from the queue first (XDP_SETUP_XSK_POOL with no pool:
/// the driver stops the queue's use of it and drops its DMA mappings, `xp_clear_dev`) and
/// only then clears the queue's pool (`xsk_clear_pool_at_qid`), which a bind checks
/// (EBUSY while set). A probe socket that binds to the queue therefore proves the driver
/// is done with the buffers. Tried for up to a second; a queue another socket took in
/// the meantime, or any other answer, counts as not released.
fn released(ifindex: u32, queue: u32, page: usize) -> bool {
    let start = Instant::now();
    loop {
        match probe(ifindex, queue, page) {
            Ok(()) => {
                log::debug!("xdp: queue {queue} released after {:?}", start.elapsed());
                return true;
            }
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && start.elapsed() < Duration::from_secs(1) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                log::warn!("xdp: queue {queue}: probing whether the driver let go: {e}");
                return false;
            }
        }
    }
}

/// Binds a socket of its own to `queue` in copy mode and closes it again. Its UMEM is
/// the page at `page` (the pool's first, still allocated): with nothing in its fill ring
/// and not in the XSKMAP, the probe receives nothing and so writes nothing there.
fn probe(ifindex: u32, queue: u32, page: usize) -> io::Result<()> {
    const SMALLEST: u32 = 2; // ring entries: any power of two
    let sock = sys::xsk_socket()?;
    let reg = UmemReg {
        addr: page as u64,
        len: 4096,
        chunk_size: 2048,
        ..UmemReg::default()
    };
    sys::umem_reg(&sock, &reg)?;
    for opt in [
        sys::XDP_UMEM_FILL_RING,
        sys::XDP_UMEM_COMPLETION_RING,
        sys::XDP_RX_RING,
    ] {
        sys::ring_size(&sock, opt, SMALLEST)?;
    }
    sys::bind(&sock, ifindex, queue, sys::XDP_COPY)
}

#[cfg(test)]
mod tests {
    use super::super::init::Queue;
    use super::super::sys;
    use super::*;

    /// A queue of `count` buffers over fake rings whose map is `map`, holding one buffer
    /// in its fill ring at the close; the pool's free count after the drop.
    fn free_after_close(map: Option<(OwnedFd, u32)>) -> usize {
        let umem = Umem::new("zcfake0", 64).unwrap();
        let mut q = Queue::fake(&umem);
        if let Some(m) = map {
            q.shared.map.set(m).unwrap();
        }
        let p = umem.pool().alloc().unwrap();
        q.rx.held.hold(umem.chunk_of(&p).unwrap(), p).unwrap();
        q.shared.leave(&mut q.rx.held);
        drop(q);
        umem.pool().free_count()
    }

    #[test]
    fn buffers_go_back_once_the_socket_is_out_of_its_map() {
        // Needs root (CAP_BPF), as every AF_XDP test here does.
        let map = sys::xskmap_create(2).expect("an XSKMAP");
        assert_eq!(free_after_close(Some((map, 1))), 64);
        assert_eq!(free_after_close(None), 64, "never in a map");
        sys::rcu_grace_period().expect("an RCU grace period");
    }

    /// Installs, on the calling thread only, a seccomp filter under which `membarrier`
    /// fails with EINVAL without running, as `MEMBARRIER_CMD_GLOBAL` does on a kernel
    /// booted with nohz_full. (Returning 0 unrun instead would be what the command
    /// does with one CPU online, grace period or not.)
    fn membarrier_refused_on_this_thread() {
        const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
        const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
        const RET_K: u16 = 0x06; // BPF_RET | BPF_K
        const RET_ERRNO: u32 = 0x0005_0000; // SECCOMP_RET_ERRNO
        const RET_ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
        let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        let mut filter = [
            insn(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
            insn(JEQ_K, 0, 1, libc::SYS_membarrier as u32),
            insn(RET_K, 0, 0, RET_ERRNO | libc::EINVAL as u32),
            insn(RET_K, 0, 0, RET_ALLOW),
        ];
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_mut_ptr(),
        };
        // The kernel copies the program; without SECCOMP_FILTER_FLAG_TSYNC the filter and
        // no_new_privs bind this thread alone, which the caller spawned for the test.
        // SAFETY: prctl with integer arguments, then with a pointer to `prog`, a live
        // sock_fprog whose `filter` points at `filter`, both outliving the call.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            assert_eq!(
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog
                ),
                0,
                "seccomp: {}",
                io::Error::last_os_error()
            );
        }
    }

    #[test]
    fn regression_buffers_go_back_where_membarrier_global_waits_for_nothing() {
        // membarrier(MEMBARRIER_CMD_GLOBAL) is no grace period one can count on: EINVAL
        // under nohz_full, and with one CPU online it returns at once, which on a
        // preemptible kernel (PREEMPT_RT, or preempt=full with a receive path not
        // in softirq) leaves a preempted reader that already found the socket. The close
        // must wait out a grace period by other means; here, with membarrier refused,
        // it still does, and gives the buffers back.
        std::thread::spawn(|| {
            membarrier_refused_on_this_thread();
            // SAFETY: plain system call; the filter answers it without running it.
            let r = unsafe { libc::syscall(libc::SYS_membarrier, 1, 0, 0) };
            assert_eq!(r, -1, "membarrier refused on this thread");
            let map = sys::xskmap_create(2).expect("an XSKMAP");
            assert_eq!(free_after_close(Some((map, 1))), 64);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn buffers_stay_out_of_the_pool_when_the_socket_may_still_be_in_a_map() {
        // A key past the map's end, and an fd that is no map: the deletion fails, so the
        // kernel might still redirect frames into them.
        let map = sys::xskmap_create(1).expect("an XSKMAP");
        assert_eq!(free_after_close(Some((map, 1))), 63);
        let not_a_map = std::fs::File::open("/dev/null").unwrap().into();
        assert_eq!(free_after_close(Some((not_a_map, 0))), 63);
    }
}
