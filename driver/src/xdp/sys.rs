//! The system calls behind AF_XDP: the `bpf()` commands that create the XSKMAP, load the
//! redirect program and attach it with a bpf_link; the XSK socket's options, its rings
//! mapped into this process, and the UMEM; the interface's own ioctls (flags, RSS) are in
//! `sys/iface.rs`, what its driver can do with XDP (generic netlink) in `sys/netdev.rs`.
//! Every `unsafe` block of `zcnic::xdp` outside its tests lives here. Layouts follow the
//! kernel's uapi headers (`linux/if_xdp.h`, `linux/bpf.h`, `linux/if_link.h`), checked by
//! size below.

mod iface;
mod netdev;
pub use iface::*;
pub use netdev::{xdp_features, NETDEV_XDP_ACT_XSK_ZEROCOPY};

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// `AF_XDP` (linux/socket.h).
pub const AF_XDP: i32 = 44;
/// `SOL_XDP` (linux/socket.h).
pub const SOL_XDP: i32 = 283;
/// Socket options of `SOL_XDP` (if_xdp.h).
pub const XDP_MMAP_OFFSETS: i32 = 1;
/// The RX ring's size.
pub const XDP_RX_RING: i32 = 2;
/// The TX ring's size.
pub const XDP_TX_RING: i32 = 3;
/// Registers the UMEM.
pub const XDP_UMEM_REG: i32 = 4;
/// The fill ring's size.
pub const XDP_UMEM_FILL_RING: i32 = 5;
/// The completion ring's size.
pub const XDP_UMEM_COMPLETION_RING: i32 = 6;
/// The socket's drop counters.
pub const XDP_STATISTICS: i32 = 7;
/// The socket's options (`struct xdp_options`, kernel ≥ 5.3).
pub const XDP_OPTIONS: i32 = 8;
/// `xdp_options.flags`: the socket is bound in zero-copy mode.
pub const XDP_OPTIONS_ZEROCOPY: u32 = 1 << 0;
/// `xdp_umem_reg.flags`: chunks may start anywhere (not only at multiples of the chunk
/// size), and descriptors carry the data's offset in the chunk in their upper 16 bits.
pub const XDP_UMEM_UNALIGNED_CHUNK_FLAG: u32 = 1 << 0;
/// `sxdp_flags`: copy mode.
pub const XDP_COPY: u16 = 1 << 1;
/// `sxdp_flags`: zero-copy mode, or fail (EOPNOTSUPP where the driver has none).
pub const XDP_ZEROCOPY: u16 = 1 << 2;
/// `sxdp_flags`: the kernel says in each ring's flags when it needs a system call.
pub const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;
/// A ring's flags word: a system call is needed for the kernel to make progress.
pub const XDP_RING_NEED_WAKEUP: u32 = 1 << 0;
/// mmap offsets of the four rings (if_xdp.h).
pub const XDP_PGOFF_RX_RING: i64 = 0;
/// The TX ring.
pub const XDP_PGOFF_TX_RING: i64 = 0x8000_0000;
/// The fill ring.
pub const XDP_UMEM_PGOFF_FILL_RING: i64 = 0x1_0000_0000;
/// The completion ring.
pub const XDP_UMEM_PGOFF_COMPLETION_RING: i64 = 0x1_8000_0000;

/// `bpf()` commands (bpf.h, enum bpf_cmd).
const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_MAP_DELETE_ELEM: i32 = 3;
const BPF_PROG_LOAD: i32 = 5;
const BPF_LINK_CREATE: i32 = 28;
/// enum bpf_map_type: BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_XSKMAP.
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// enum bpf_prog_type: BPF_PROG_TYPE_XDP.
const BPF_PROG_TYPE_XDP: u32 = 6;
/// enum bpf_attach_type: BPF_XDP (a bpf_link on a network device, kernel ≥ 5.9).
const BPF_XDP: u32 = 37;
/// if_link.h: XDP in the driver (native), where the driver has it.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// if_link.h: generic (skb) XDP, which every driver has.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `union bpf_attr` is 144 bytes in 6.1; the kernel accepts a shorter one whose tail it
/// would have read as zero, so this covers every field zcnic sets.
const ATTR_LEN: usize = 128;

/// `struct xdp_umem_reg`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UmemReg {
    /// Start of the UMEM.
    pub addr: u64,
    /// Its length.
    pub len: u64,
    /// Bytes per frame.
    pub chunk_size: u32,
    /// Bytes the kernel leaves free before each frame.
    pub headroom: u32,
    /// `XDP_UMEM_UNALIGNED_CHUNK_FLAG` or 0.
    pub flags: u32,
    /// `tx_metadata_len` in later kernels; 0.
    pub pad: u32,
}
const _: () = assert!(std::mem::size_of::<UmemReg>() == 32);

/// `struct sockaddr_xdp`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct SockaddrXdp {
    family: u16,
    flags: u16,
    ifindex: u32,
    queue_id: u32,
    shared_umem_fd: u32,
}
const _: () = assert!(std::mem::size_of::<SockaddrXdp>() == 16);

/// `struct xdp_ring_offset`: where a ring's words sit in its mapping.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RingOffset {
    /// The producer index.
    pub producer: u64,
    /// The consumer index.
    pub consumer: u64,
    /// The first descriptor.
    pub desc: u64,
    /// The flags word (XDP_RING_NEED_WAKEUP).
    pub flags: u64,
}

/// `struct xdp_mmap_offsets`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MmapOffsets {
    /// RX ring.
    pub rx: RingOffset,
    /// TX ring.
    pub tx: RingOffset,
    /// Fill ring.
    pub fr: RingOffset,
    /// Completion ring.
    pub cr: RingOffset,
}
const _: () = assert!(std::mem::size_of::<MmapOffsets>() == 128);

/// `struct xdp_statistics`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct XdpStatistics {
    /// Dropped for other reasons.
    pub rx_dropped: u64,
    /// Dropped: invalid descriptor.
    pub rx_invalid_descs: u64,
    /// TX descriptors the kernel refused.
    pub tx_invalid_descs: u64,
    /// Dropped: RX ring full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty.
    pub tx_ring_empty_descs: u64,
}
const _: () = assert!(std::mem::size_of::<XdpStatistics>() == 48);

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// One `bpf()` command on an attribute block; the new fd for commands that make one.
fn bpf(cmd: i32, attr: &mut [u8; ATTR_LEN]) -> io::Result<i64> {
    // SAFETY: `attr` is a live, writable buffer of ATTR_LEN bytes, the size passed; every
    // pointer inside it (set by the callers below) points at memory that outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_LEN as u32) };
    if r < 0 {
        Err(last_error())
    } else {
        Ok(r)
    }
}

fn put(attr: &mut [u8; ATTR_LEN], off: usize, bytes: &[u8]) {
    attr[off..off + bytes.len()].copy_from_slice(bytes);
}

fn own(fd: i64) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel as a new descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// BPF_MAP_CREATE: an XSKMAP of `entries` u32 keys (queue indices) to XSK sockets.
pub fn xskmap_create(entries: u32) -> io::Result<OwnedFd> {
    let mut a = [0u8; ATTR_LEN];
    put(&mut a, 0, &BPF_MAP_TYPE_XSKMAP.to_ne_bytes());
    put(&mut a, 4, &4u32.to_ne_bytes()); // key_size
    put(&mut a, 8, &4u32.to_ne_bytes()); // value_size: a socket fd
    put(&mut a, 12, &entries.to_ne_bytes()); // max_entries
    put(&mut a, 28, b"zcnic_xsks"); // map_name (offset 28, 16 bytes)
    bpf(BPF_MAP_CREATE, &mut a).map(own)
}

/// BPF_MAP_UPDATE_ELEM: `map[key] = sock`.
pub fn xskmap_set(map: &OwnedFd, key: u32, sock: &OwnedFd) -> io::Result<()> {
    map_set_fd(map, key, sock)
}

/// BPF_MAP_UPDATE_ELEM of a map whose values are fds (an XSKMAP's sockets, an
/// ARRAY_OF_MAPS's maps): `map[key] = fd`.
fn map_set_fd(map: &OwnedFd, key: u32, fd: &OwnedFd) -> io::Result<()> {
    let k = key;
    let v = fd.as_raw_fd() as u32;
    let mut a = [0u8; ATTR_LEN];
    put(&mut a, 0, &(map.as_raw_fd() as u32).to_ne_bytes());
    put(&mut a, 8, &(&k as *const u32 as u64).to_ne_bytes());
    put(&mut a, 16, &(&v as *const u32 as u64).to_ne_bytes());
    bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
}

/// BPF_MAP_DELETE_ELEM: `map[key]` empty. No redirect looks the socket up through it
/// after this returns; one that already did finishes within an RCU grace period.
pub fn xskmap_clear(map: &OwnedFd, key: u32) -> io::Result<()> {
    let k = key;
    let mut a = [0u8; ATTR_LEN];
    put(&mut a, 0, &(map.as_raw_fd() as u32).to_ne_bytes());
    put(&mut a, 8, &(&k as *const u32 as u64).to_ne_bytes());
    bpf(BPF_MAP_DELETE_ELEM, &mut a).map(|_| ())
}

/// Waits out an RCU grace period (`synchronize_rcu()`), which every XDP receive path
/// that looked the socket up before the map deletion is inside of, from the program's
/// lookup to the copy into the fill ring's buffer: a driver's NAPI poll (bottom halves
/// off, which RCU counts as a read-side section, and which PREEMPT_RT turns into one
/// outright), generic XDP (under `rcu_read_lock`, from `netif_receive_skb` or tun).
///
/// How: an update of an ARRAY_OF_MAPS from user space returns only after
/// `synchronize_rcu()` (`maybe_wait_bpf_programs` in kernel/bpf/syscall.c, long before
/// the 5.9 zcnic needs: the kernel's promise that no program still sees the old value;
/// the BPF selftests' btf_map_in_map uses it the same way), so this makes a one-entry
/// ARRAY_OF_MAPS and sets its entry. Not `membarrier(MEMBARRIER_CMD_GLOBAL)`
/// (libbpf's selftests' `kern_sync_rcu`): that skips `synchronize_rcu()` whenever one
/// CPU is online, which is no grace period on a preemptible kernel, where a reader can
/// be preempted (PREEMPT_RT, whose bottom-half sections are preemptible too, or
/// preempt=full with generic XDP outside softirq) between its lookup and its copy; and
/// it is EINVAL under nohz_full. `synchronize_rcu()` itself skips the wait with one CPU
/// only on a kernel without preemption, where that is sound.
pub fn rcu_grace_period() -> io::Result<()> {
    let inner = map_create(BPF_MAP_TYPE_ARRAY, 1, None, b"zcnic_rcu")?;
    let outer = map_create(
        BPF_MAP_TYPE_ARRAY_OF_MAPS,
        1,
        Some(&inner),
        b"zcnic_rcu_sync",
    )?;
    map_set_fd(&outer, 0, &inner)
}

/// BPF_MAP_CREATE of `entries` u32 keys to u32 values (or, with `inner`, to maps like
/// it), named `name` (at most 15 bytes).
fn map_create(
    kind: u32,
    entries: u32,
    inner: Option<&OwnedFd>,
    name: &[u8],
) -> io::Result<OwnedFd> {
    let mut a = [0u8; ATTR_LEN];
    put(&mut a, 0, &kind.to_ne_bytes());
    put(&mut a, 4, &4u32.to_ne_bytes()); // key_size
    put(&mut a, 8, &4u32.to_ne_bytes()); // value_size
    put(&mut a, 12, &entries.to_ne_bytes()); // max_entries
    if let Some(m) = inner {
        put(&mut a, 20, &(m.as_raw_fd() as u32).to_ne_bytes()); // inner_map_fd
    }
    put(&mut a, 28, &name[..name.len().min(15)]); // map_name (offset 28, 16 bytes)
    bpf(BPF_MAP_CREATE, &mut a).map(own)
}

/// BPF_PROG_LOAD of an XDP program; on a verifier refusal the error carries its log.
pub fn prog_load(insns: &[u64], license: &str) -> io::Result<OwnedFd> {
    let lic = CString::new(license).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut log = vec![0u8; 4096];
    let mut a = [0u8; ATTR_LEN];
    put(&mut a, 0, &BPF_PROG_TYPE_XDP.to_ne_bytes());
    put(&mut a, 4, &(insns.len() as u32).to_ne_bytes());
    put(&mut a, 8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(&mut a, 16, &(lic.as_ptr() as u64).to_ne_bytes());
    put(&mut a, 24, &1u32.to_ne_bytes()); // log_level
    put(&mut a, 28, &(log.len() as u32).to_ne_bytes());
    put(&mut a, 32, &(log.as_mut_ptr() as u64).to_ne_bytes());
    put(&mut a, 48, b"zcnic_xsk"); // prog_name
    put(&mut a, 68, &BPF_XDP.to_ne_bytes()); // expected_attach_type
    bpf(BPF_PROG_LOAD, &mut a).map(own).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]);
        match text.trim() {
            "" => e,
            t => io::Error::new(e.kind(), format!("{e}; verifier: {t}")),
        }
    })
}

/// BPF_LINK_CREATE: attaches `prog` to the interface `ifindex` as its XDP program. The
/// kernel detaches it when the last fd of the link closes, so a killed process leaves
/// nothing behind; an interface that already has a program refuses (EBUSY).
pub fn link_create(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut a = [0u8; ATTR_LEN];
    put(&mut a, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
    put(&mut a, 4, &ifindex.to_ne_bytes());
    put(&mut a, 8, &BPF_XDP.to_ne_bytes());
    put(&mut a, 12, &flags.to_ne_bytes());
    bpf(BPF_LINK_CREATE, &mut a).map(own)
}

/// The interface index of `name`; `None` when there is no such interface.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a NUL-terminated string that lives across the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// A new AF_XDP socket.
pub fn xsk_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain system call, no pointers.
    let fd = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_error());
    }
    Ok(own(fd.into()))
}

/// `setsockopt(SOL_XDP, opt)` with a plain-old-data value.
fn set_opt<T: Copy>(fd: &OwnedFd, opt: i32, v: &T) -> io::Result<()> {
    // SAFETY: `v` points at a live `T` of the size passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(last_error())
    } else {
        Ok(())
    }
}

/// Registers `reg` as the socket's UMEM.
pub fn umem_reg(fd: &OwnedFd, reg: &UmemReg) -> io::Result<()> {
    set_opt(fd, XDP_UMEM_REG, reg)
}

/// Sets the size of the ring `opt` (a power of two).
pub fn ring_size(fd: &OwnedFd, opt: i32, size: u32) -> io::Result<()> {
    set_opt(fd, opt, &size)
}

/// `getsockopt(SOL_XDP, opt)` into a zeroed `T` (only the plain-old-data types above);
/// an answer shorter than `T` is an error.
fn get_opt<T: Copy + Default>(fd: &OwnedFd, opt: i32) -> io::Result<T> {
    let mut v = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a live, writable `T` of `len` bytes; the kernel writes at most `len`
    // bytes and every bit pattern is a valid value of the integer-only types used here.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            opt,
            (&mut v as *mut T).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(last_error());
    }
    if len as usize != std::mem::size_of::<T>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "getsockopt({opt}) answered {len} bytes, not {}",
                std::mem::size_of::<T>()
            ),
        ));
    }
    Ok(v)
}

/// Where the four rings' words sit in their mappings.
pub fn mmap_offsets(fd: &OwnedFd) -> io::Result<MmapOffsets> {
    get_opt(fd, XDP_MMAP_OFFSETS)
}

/// The socket's drop counters.
pub fn statistics(fd: &OwnedFd) -> io::Result<XdpStatistics> {
    get_opt(fd, XDP_STATISTICS)
}

/// The socket's `xdp_options.flags` (XDP_OPTIONS_ZEROCOPY once bound in zero-copy mode).
pub fn options(fd: &OwnedFd) -> io::Result<u32> {
    get_opt(fd, XDP_OPTIONS)
}

/// Binds the socket to `ifindex`, queue `queue`, with `flags` (XDP_COPY, …).
pub fn bind(fd: &OwnedFd, ifindex: u32, queue: u32, flags: u16) -> io::Result<()> {
    let sa = SockaddrXdp {
        family: AF_XDP as u16,
        flags,
        ifindex,
        queue_id: queue,
        shared_umem_fd: 0,
    };
    // SAFETY: `sa` is a live sockaddr_xdp of the size passed; the kernel only reads it.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const SockaddrXdp).cast(),
            std::mem::size_of::<SockaddrXdp>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(last_error())
    } else {
        Ok(())
    }
}

/// An epoll instance watching `sock` for input: readable exactly while the socket is.
/// Unlike a duplicate of the socket, it does not keep the socket open (epoll holds no
/// reference to what it watches; the watch goes when the socket's last reference does).
pub fn readiness(sock: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: plain system call, no pointers.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(last_error());
    }
    let ep = own(ep.into());
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: `ev` is a live epoll_event the kernel only reads; both fds are open.
    let r = unsafe {
        libc::epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            sock.as_raw_fd(),
            &mut ev,
        )
    };
    if r < 0 {
        return Err(last_error());
    }
    Ok(ep)
}

/// Takes `sock` off the epoll `ep` made by [`readiness`]: no `epoll_wait` on it (or on a
/// duplicate of it) polls the socket after this returns, so none holds a reference to it.
pub fn unwatch(ep: &OwnedFd, sock: &OwnedFd) -> io::Result<()> {
    // SAFETY: plain system call; EPOLL_CTL_DEL ignores the event pointer, which is null.
    let r = unsafe {
        libc::epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            sock.as_raw_fd(),
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        return Err(last_error());
    }
    Ok(())
}

/// Tells the kernel there is work on the TX ring (or, for RX, the fill ring):
/// `sendto(fd, NULL, 0, MSG_DONTWAIT)`. EAGAIN, EBUSY and ENOBUFS mean the device is busy
/// and the frames stay queued; they are not errors.
pub fn kick(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: a zero-length send from a null buffer; the kernel reads nothing.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if r < 0 {
        let e = last_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => Ok(()),
            _ => Err(e),
        };
    }
    Ok(())
}

/// Lets the kernel refill from the fill ring when it asked to (`recvfrom`, non-blocking).
pub fn wake_rx(fd: &OwnedFd) {
    // SAFETY: a zero-length receive into a null buffer; the kernel writes nothing.
    let _ = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
}

/// A shared mapping this process owns: unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; what is shared with the kernel
// is only ever accessed through atomics or raw copies, never behind references.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` at page offset `pgoff` (a ring), or anonymous zeroed
    /// memory when `fd` is `None` (tests' rings).
    pub fn new(fd: Option<&OwnedFd>, len: usize, pgoff: i64) -> io::Result<Self> {
        let (flags, raw) = match fd {
            Some(f) => (libc::MAP_SHARED | libc::MAP_POPULATE, f.as_raw_fd()),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
            ),
        };
        // SAFETY: a new mapping at an address the kernel picks; nothing existing is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw,
                pgoff,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(Self { ptr, len })
    }

    /// The u32 at `off` as an atomic, `None` outside the mapping or misaligned.
    pub fn u32_at(&self, off: usize) -> Option<&AtomicU32> {
        if !off.is_multiple_of(4) || off.checked_add(4)? > self.len {
            return None;
        }
        // The kernel's side accesses these words atomically too (READ_ONCE,
        // smp_store_release), so an atomic is the right view of them.
        // SAFETY: in bounds and 4-aligned (the mapping is page-aligned), as just checked;
        // the mapping lives as long as `self`, which the reference borrows.
        Some(unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(off).cast()) })
    }

    /// The u64 at `off` as an atomic, `None` outside the mapping or misaligned.
    pub fn u64_at(&self, off: usize) -> Option<&AtomicU64> {
        if !off.is_multiple_of(8) || off.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: as `u32_at`, for 8 bytes at an 8-aligned offset.
        Some(unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(off).cast()) })
    }

    /// Loads the u32 at `off` with `order`; 0 when out of range (never happens for the
    /// offsets `Ring` checked at open).
    pub fn load(&self, off: usize, order: Ordering) -> u32 {
        self.u32_at(off).map_or(0, |a| a.load(order))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is the mapping this value made and owns; nothing refers
        // into it past this point (atomics borrowed from it borrow `self`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
