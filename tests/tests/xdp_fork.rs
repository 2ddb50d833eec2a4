//! AF_XDP across a fork (zcnic issue 22): a child forked before the port closes holds the
//! XDP socket, its rings and the program's link until it execs or exits, so the socket
//! stays bound after the port's close, with pool buffers in its fill ring. The port takes
//! the socket out of its XSKMAP before it gives those buffers back to the pool: frames
//! the peer sends then reach none of them, although the child still holds the socket.
//! Needs root, like `xdp_veth.rs`, on a veth pair in a namespace this test makes.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use zcnic::xdp::XdpPort;
use zcnic::{Config, Nic, Packet};
use zcnic_tests::conformance::ETHERTYPE;
use zcnic_tests::veth::{receive_within, PacketSocket, VethPair};

/// What each buffer is filled with once it is back in the pool.
const MARK: u8 = 0x5a;

/// Frame `i`: broadcast, ETHERTYPE, the index, then bytes none of which is `MARK`.
fn frame(i: usize) -> Vec<u8> {
    let mut f = vec![0xffu8; 6];
    f.extend([0x02, 0, 0, 0, 0, 1]);
    f.extend(ETHERTYPE.to_be_bytes());
    f.extend((i as u32).to_be_bytes());
    f.resize(1000, 0xa5);
    f
}

/// A child process that holds every fd of this one (the socket among them) until
/// `release` is dropped, then exits.
struct Child {
    pid: libc::pid_t,
    release: Option<OwnedFd>,
}

impl Child {
    fn fork() -> Self {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a live array of two ints the kernel writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both are new descriptors this process owns from here.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child calls only async-signal-safe functions (close, read, _exit)
        // before it exits, as a child of a many-threaded process must.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let mut b = 0u8;
            // SAFETY: async-signal-safe system calls on fds this process holds; `b` is
            // a live byte. read returns 0 when the parent's end closes.
            unsafe {
                libc::close(write.as_raw_fd());
                libc::read(read.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        drop(read);
        Self {
            pid,
            release: Some(write),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        drop(self.release.take());
        let mut status = 0;
        // SAFETY: `status` is a live int; the pid is this process's own child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

/// Every buffer of `port`'s pool, each filled with MARK from its first byte to its last.
fn marked(pool: &std::sync::Arc<zcnic::Mempool>) -> Vec<Packet> {
    let mut all = Vec::new();
    pool.alloc_batch(&mut all, pool.capacity());
    assert_eq!(all.len(), pool.capacity(), "the whole pool is free");
    for p in &mut all {
        p.prepend(zcnic::HEADROOM).expect("the whole buffer");
        let room = p.room();
        p.set_len(room).expect("the whole buffer");
        p.data_mut().fill(MARK);
    }
    all
}

/// Frames received on `port` within 5 s, up to `n`.
fn receive(port: &mut XdpPort, n: usize) -> usize {
    receive_within(port, n, Duration::from_secs(5)).len()
}

#[test]
fn regression_a_forked_child_holding_the_socket_gets_no_frame_into_reused_buffers() {
    let ns = VethPair::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter_peer();
            let peer = PacketSocket::open("veth1");
            ns.enter_port();
            let cfg = Config {
                pool: 512,
                ..Config::default()
            };
            let mut port = XdpPort::open("veth0", &cfg).expect("open xdp:veth0");
            let pool = port.pool().clone();
            // The socket works before the fork: it has buffers in its fill ring.
            peer.send(&frame(0));
            assert_eq!(receive(&mut port, 1), 1, "a frame before the fork");
            let child = Child::fork();
            drop(port);
            // Back in the pool, and written with MARK: were the socket (still bound, the
            // child holds it) reachable from the program the child also keeps attached,
            // the kernel would copy the frames below into the buffers of its fill ring.
            let all = marked(&pool);
            for i in 1..=200 {
                peer.send(&frame(i));
            }
            std::thread::sleep(Duration::from_millis(300));
            let written = all
                .iter()
                .filter(|p| p.data().iter().any(|&b| b != MARK))
                .count();
            assert_eq!(written, 0, "buffers the kernel wrote after the close");
            drop(child);
            drop(all);
            assert_eq!(pool.free_count(), pool.capacity());
            // The child gone, the queue is free: a new port opens and receives.
            let mut again = XdpPort::open("veth0", &cfg).expect("open after the child");
            for i in 0..10 {
                peer.send(&frame(1000 + i));
            }
            assert_eq!(receive(&mut again, 10), 10, "frames on the new port");
            let pool = again.pool().clone();
            drop(again);
            assert_eq!(pool.free_count(), pool.capacity(), "every buffer back");
        });
    });
}
