//! Opening an AF_XDP port: per queue, a socket with the port's pool registered as its
//! UMEM ([`Umem`]), its rings, bound to that queue in zero-copy mode where the driver
//! and the pool's memory allow it, in copy mode otherwise; per port, an
//! XSKMAP of the sockets by queue and zcnic's own redirect program attached through a
//! bpf_link.
//!
//! The program is six BPF instructions written here rather than an object file from
//! libxdp or a compiler: `bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)`, so
//! frames of a queue with a socket go to it and every other frame goes on to the kernel.
//! It is attached with BPF_LINK_CREATE, which the kernel undoes when the link's last fd
//! closes: on drop, on exit, and on kill -9 alike.

use super::ring::Ring;
#[cfg(test)]
pub use super::shared::Hook;
pub use super::shared::Shared;
use super::sys::{self, UmemReg};
use super::umem::{Table, Umem, CHUNK};
use crate::Error;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Entries of each ring.
pub const RING: u32 = 2048;
/// Most buffers a queue keeps in its fill ring.
pub const FILL: usize = RING as usize / 2;

/// Buffers each of `queues` queues keeps in its fill ring from a pool of `count`: at most
/// a quarter of the pool between them, so sending and the application have the rest.
pub fn fill_count(count: usize, queues: usize) -> usize {
    (count / 4 / queues.max(1)).clamp(1, FILL)
}

/// `struct xdp_md`'s `rx_queue_index` (bpf.h).
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;
/// `BPF_FUNC_redirect_map` (bpf.h, enum bpf_func_id).
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
/// `XDP_PASS` (bpf.h, enum xdp_action): the fallback of `bpf_redirect_map` for a queue
/// without a socket (its flags' low bits, kernel ≥ 5.3).
const XDP_PASS: i32 = 2;

/// One BPF instruction, `struct bpf_insn` packed into a u64 (little-endian x86_64 and
/// arm64: code, dst and src registers in one byte, offset, immediate).
pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    (code as u64)
        | ((dst as u64 | (src as u64) << 4) << 8)
        | ((off as u16 as u64) << 16)
        | ((imm as u32 as u64) << 32)
}

/// The redirect program for the XSKMAP whose fd is `map`.
pub fn program(map: i32) -> [u64; 6] {
    const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
    const LD_DW_IMM: u8 = 0x18; // BPF_LD | BPF_DW | BPF_IMM (two slots)
    const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    const PSEUDO_MAP_FD: u8 = 1; // BPF_PSEUDO_MAP_FD: the immediate is a map fd
    [
        insn(LDX_W, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0), // r2 = ctx->rx_queue_index
        insn(LD_DW_IMM, 1, PSEUDO_MAP_FD, 0, map),   // r1 = &xsks
        insn(0, 0, 0, 0, 0),                         // (upper half of the immediate)
        insn(MOV64_K, 3, 0, 0, XDP_PASS),            // r3 = XDP_PASS
        insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),  // r0 = bpf_redirect_map(r1, r2, r3)
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// The receive half's rings: the fill ring it produces into, the RX ring it consumes,
/// and the packets in the fill ring, by chunk.
#[derive(Debug)]
pub struct RxRings {
    pub fill: Ring,
    pub rx: Ring,
    pub held: Table,
}

/// The transmit half's rings: the TX ring it produces into, the completion ring it
/// consumes, and the packets being sent, by frame address.
#[derive(Debug)]
pub struct TxRings {
    pub tx: Ring,
    pub comp: Ring,
    pub held: Table,
}

/// One queue's socket, bound, with its rings split between a receive and a transmit
/// half. Each half keeps a table of the packets it gave the kernel, so an address the
/// kernel returns on the wrong ring is one the table does not hold.
#[derive(Debug)]
pub struct Queue {
    pub shared: Arc<Shared>,
    pub rx: RxRings,
    pub tx: TxRings,
}

/// The program's attachment, shared by every queue of a port: the link first (the
/// program stops redirecting), then the program and the map.
#[derive(Debug)]
pub struct Attach {
    _link: OwnedFd,
    _prog: OwnedFd,
    _map: OwnedFd,
    /// Attached as generic (skb) XDP rather than in the driver.
    pub generic: bool,
}

/// The error for a failed step of opening `iface`.
pub fn fail(iface: &str, what: &str, e: io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => "run as root (AF_XDP and bpf() need CAP_NET_RAW, CAP_BPF and CAP_NET_ADMIN)",
        Some(libc::EAFNOSUPPORT) => "this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS)",
        Some(libc::EBUSY) => "the interface already has an XDP program or socket on that queue (another zcnic? `ip link show` names it)",
        Some(libc::ENETDOWN) => "the interface is down: `ip link set IFACE up`",
        Some(libc::EOPNOTSUPP | libc::EINVAL) => "the interface or kernel does not support AF_XDP here (or has fewer queues: `ethtool -l IFACE`)",
        _ => "",
    };
    Error::Xdp {
        iface: iface.to_string(),
        msg: if hint.is_empty() {
            format!("{what}: {e}")
        } else {
            format!("{what}: {e}: {}", hint.replace("IFACE", iface))
        },
    }
}

/// Binds `sock` to `queue` of `ifindex`: in zero-copy mode first when `zero_copy` (the
/// pool is in hugepages the driver can map, see `umem.rs`), in copy mode when the kernel
/// refuses that or when not asked. Whether it is zero copy, as the kernel says.
///
/// The kernel's answers to XDP_ZEROCOPY (`xp_assign_dev`): EOPNOTSUPP when the driver does
/// not advertise NETDEV_XDP_ACT_XSK_ZEROCOPY (every driver of 6.1 QEMU guests; virtio_net
/// before 6.13, igb before 6.14), else whatever the driver's XDP_SETUP_XSK_POOL returns
/// (EINVAL for a queue it lacks or a DMA device it cannot use, ENOENT, ENOMEM). A failed
/// bind leaves the socket as it was (rings, UMEM), so copy mode is tried on the same one.
/// EBUSY is neither: the queue is taken, and that is retried as below.
fn bind(sock: &OwnedFd, ifindex: u32, queue: u32, zero_copy: bool) -> io::Result<bool> {
    if zero_copy {
        match bind_retrying(sock, ifindex, queue, sys::XDP_ZEROCOPY) {
            // A kernel without XDP_OPTIONS (< 5.3) has just bound it in zero copy as asked.
            Ok(()) => {
                return Ok(sys::options(sock).map_or(true, |o| o & sys::XDP_OPTIONS_ZEROCOPY != 0))
            }
            Err(e) if refused_zero_copy(&e) => {
                log::info!("xdp: queue {queue}: zero copy refused ({e}), binding in copy mode");
            }
            Err(e) => return Err(e),
        }
    }
    bind_retrying(sock, ifindex, queue, sys::XDP_COPY).map(|()| false)
}

/// An error of a zero-copy bind after which copy mode may still bind.
fn refused_zero_copy(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOENT | libc::ENOMEM)
    )
}

/// One bind with `mode` (XDP_COPY or XDP_ZEROCOPY) and need-wakeup. The kernel lets go of
/// a closed socket's queue in a work item, a moment after the close: EBUSY is retried for
/// up to two seconds, so a port reopened right after the last one closed (or after a
/// killed zcnic) opens.
fn bind_retrying(sock: &OwnedFd, ifindex: u32, queue: u32, mode: u16) -> io::Result<()> {
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        match sys::bind(sock, ifindex, queue, sys::XDP_USE_NEED_WAKEUP | mode) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// The interface index of `iface`, which must exist and be up.
pub fn interface(iface: &str) -> Result<u32, Error> {
    let ifindex = sys::ifindex(iface).ok_or_else(|| Error::NoInterface(iface.to_string()))?;
    let flags = sys::if_flags(iface).map_err(|e| fail(iface, "interface flags", e))?;
    if flags & libc::IFF_UP == 0 {
        return Err(fail(
            iface,
            "opening",
            io::Error::from_raw_os_error(libc::ENETDOWN),
        ));
    }
    Ok(ifindex)
}

impl Queue {
    /// Opens a socket on `queue` of the interface `ifindex` (named `iface`), with `umem`'s
    /// pool as its UMEM, trying zero copy first when the pool is in hugepages.
    pub fn open(iface: &str, ifindex: u32, queue: u32, umem: &Arc<Umem>) -> Result<Self, Error> {
        let e = |what: &'static str| move |err: io::Error| fail(iface, what, err);
        let sock = sys::xsk_socket().map_err(e("AF_XDP socket"))?;
        let (addr, len) = umem.region();
        let reg = UmemReg {
            addr: addr as u64,
            len: len as u64,
            chunk_size: CHUNK as u32,
            flags: sys::XDP_UMEM_UNALIGNED_CHUNK_FLAG,
            ..UmemReg::default()
        };
        sys::umem_reg(&sock, &reg).map_err(e("registering the pool as UMEM"))?;
        for opt in [
            sys::XDP_UMEM_FILL_RING,
            sys::XDP_UMEM_COMPLETION_RING,
            sys::XDP_RX_RING,
            sys::XDP_TX_RING,
        ] {
            sys::ring_size(&sock, opt, RING).map_err(e("sizing the rings"))?;
        }
        let off = sys::mmap_offsets(&sock).map_err(e("ring offsets"))?;
        let ring = |o, entry, pg| Ring::map(&sock, o, RING, entry, pg).map_err(e("mapping a ring"));
        let fill = ring(off.fr, 8, sys::XDP_UMEM_PGOFF_FILL_RING)?;
        let comp = ring(off.cr, 8, sys::XDP_UMEM_PGOFF_COMPLETION_RING)?;
        let rx = ring(off.rx, 16, sys::XDP_PGOFF_RX_RING)?;
        let tx = ring(off.tx, 16, sys::XDP_PGOFF_TX_RING)?;
        let zero_copy =
            bind(&sock, ifindex, queue, umem.huge()).map_err(e("binding to the queue"))?;
        let wake = sys::readiness(&sock).map_err(e("an epoll for the socket"))?;
        let rings = (fill, comp, rx, tx);
        let bound = Some((ifindex, queue));
        Ok(Self::new(
            Some((sock, wake)),
            umem,
            (zero_copy, bound),
            rings,
        ))
    }

    /// The queue over the socket and its epoll (none in tests), bound in zero-copy mode
    /// or not to the interface and queue of `bound`, and its rings: fill, completion, RX,
    /// TX.
    fn new(
        sock: Option<(OwnedFd, OwnedFd)>,
        umem: &Arc<Umem>,
        (zero_copy, bound): (bool, Option<(u32, u32)>),
        (fill, comp, rx, tx): (Ring, Ring, Ring, Ring),
    ) -> Self {
        let count = umem.pool().capacity();
        let (sock, wake) = sock.unzip();
        Self {
            shared: Arc::new(Shared {
                sock,
                wake,
                zero_copy,
                bound,
                bad: AtomicU64::new(0),
                leftover: Mutex::new(Vec::new()),
                map: OnceLock::new(),
                umem: umem.clone(),
                #[cfg(test)]
                before_release: Hook(None),
            }),
            rx: RxRings {
                fill,
                rx,
                held: Table::new(count),
            },
            tx: TxRings {
                tx,
                comp,
                held: Table::new(count),
            },
        }
    }
}

impl Attach {
    /// Puts the socket of `queues[q]` at key `q` of a new XSKMAP and attaches the redirect
    /// program to `ifindex`: in the driver where it has XDP, else the kernel's generic
    /// path. Each queue keeps the map, to take its socket out again when it closes.
    pub fn new(iface: &str, ifindex: u32, queues: &[&Shared]) -> Result<Self, Error> {
        let e = |what: &'static str| move |err: io::Error| fail(iface, what, err);
        let map = sys::xskmap_create(queues.len() as u32).map_err(e("creating the XSKMAP"))?;
        for (q, shared) in queues.iter().enumerate() {
            let adding = e("adding a socket to the XSKMAP");
            let invalid = || adding(io::ErrorKind::InvalidInput.into());
            let sock = shared.sock.as_ref().ok_or_else(invalid)?;
            let dup = map.try_clone().map_err(adding)?;
            shared.map.set((dup, q as u32)).map_err(|_| invalid())?;
            sys::xskmap_set(&map, q as u32, sock).map_err(adding)?;
        }
        let prog = sys::prog_load(
            &program(std::os::fd::AsRawFd::as_raw_fd(&map)),
            "Dual MIT/GPL",
        )
        .map_err(e("loading the XDP program"))?;
        // A driver that refuses native XDP (virtio_net with offloads on, say) gets the
        // generic path. Asked for by name both times (flags 0 would let the kernel pick
        // without saying which).
        let (link, generic) = match sys::link_create(&prog, ifindex, sys::XDP_FLAGS_DRV_MODE) {
            Ok(l) => (l, false),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                return Err(fail(iface, "attaching the XDP program", err))
            }
            Err(_) => (
                sys::link_create(&prog, ifindex, sys::XDP_FLAGS_SKB_MODE)
                    .map_err(e("attaching the XDP program"))?,
                true,
            ),
        };
        log::info!(
            "xdp:{iface}: {} queue(s) bound, program attached {}",
            queues.len(),
            if generic {
                "as generic XDP"
            } else {
                "in the driver"
            }
        );
        Ok(Self {
            _link: link,
            _prog: prog,
            _map: map,
            generic,
        })
    }
}

#[cfg(test)]
impl Queue {
    /// Rings of plain memory with no kernel behind them, over `umem`: a test plays the
    /// kernel on them.
    pub fn fake(umem: &Arc<Umem>) -> Self {
        let rings = (
            Ring::anon(RING, 8),
            Ring::anon(RING, 8),
            Ring::anon(RING, 16),
            Ring::anon(RING, 16),
        );
        Self::new(None, umem, (false, None), rings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_as_the_kernel_lays_them_out() {
        // r2 = *(u32 *)(r1 + 16): code 0x61, dst 2 in the low nibble, src 1 in the high.
        assert_eq!(
            insn(0x61, 2, 1, 16, 0).to_le_bytes(),
            [0x61, 0x12, 16, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            insn(0xb7, 3, 0, 0, 2).to_le_bytes(),
            [0xb7, 3, 0, 0, 2, 0, 0, 0]
        );
        assert_eq!(
            insn(0x85, 0, 0, -1, -2).to_le_bytes(),
            [0x85, 0, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn the_program_loads_the_map_fd_it_is_given() {
        let p = program(7);
        assert_eq!(p[1].to_le_bytes(), [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(p[2], 0);
        assert_eq!(p[4] >> 32, 51);
        assert_eq!(p[5] & 0xff, 0x95);
    }
}
