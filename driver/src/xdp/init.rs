//! Opening an AF_XDP port: the UMEM and its rings, the socket bound to queue 0 (zero
//! copy where the driver has it, copy mode otherwise), and zcnic's own redirect program
//! attached through a bpf_link.
//!
//! The program is six BPF instructions written here rather than an object file from
//! libxdp or a compiler: `bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)`, so
//! frames of a queue with a socket go to it and every other frame goes on to the kernel.
//! It is attached with BPF_LINK_CREATE, which the kernel undoes when the link's last fd
//! closes: on drop, on exit, and on kill -9 alike.

use super::ring::{Frames, Ring, FRAME};
use super::sys::{self, Mapping, UmemReg};
use crate::Error;
use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

/// Frames the kernel receives into (fill ring) and frames zcnic sends from.
pub const RX_FRAMES: u32 = 1024;
/// Frames zcnic sends from.
pub const TX_FRAMES: u32 = 1024;
/// Entries of each ring: room for every frame, so posting one never waits.
pub const RING: u32 = 2048;

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

/// Everything an open port holds of the kernel, in the order it is released: the link
/// first (the program stops redirecting), then the program and map, the socket, and the
/// memory the socket had registered last.
#[derive(Debug)]
pub struct Xsk {
    /// The kernel objects: `None` only in the tests that play the kernel on rings of
    /// plain memory (`Xsk::fake`).
    pub kernel: Option<Fds>,
    pub fill: Ring,
    pub comp: Ring,
    pub rx: Ring,
    pub tx: Ring,
    pub umem: Mapping,
    pub frames: Frames,
    /// Bound in zero-copy mode (else copy mode).
    pub zero_copy: bool,
    /// Attached as generic (skb) XDP rather than in the driver.
    pub generic: bool,
}

/// The link, program, map and socket of an open port, closed in that order.
#[derive(Debug)]
pub struct Fds {
    _link: OwnedFd,
    _prog: OwnedFd,
    _map: OwnedFd,
    pub sock: OwnedFd,
}

/// The error for a failed step of opening `iface`.
fn fail(iface: &str, what: &str, e: io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => "run as root (AF_XDP and bpf() need CAP_NET_RAW, CAP_BPF and CAP_NET_ADMIN)",
        Some(libc::EAFNOSUPPORT) => "this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS)",
        Some(libc::EBUSY) => "the interface already has an XDP program or socket on queue 0 (another zcnic? `ip link show` names it)",
        Some(libc::ENETDOWN) => "the interface is down: `ip link set IFACE up`",
        Some(libc::EOPNOTSUPP | libc::EINVAL) => "the interface or kernel does not support AF_XDP here",
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

/// Binds `sock` to queue 0 of `ifindex`: zero copy where the driver has it (true), copy
/// mode otherwise. The kernel lets go of a closed socket's queue in a work item, a moment
/// after the close: EBUSY is retried for up to two seconds, so a port reopened right
/// after the last one closed (or after a killed zcnic) opens.
fn bind(sock: &OwnedFd, ifindex: u32) -> io::Result<bool> {
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        let r = sys::bind(
            sock,
            ifindex,
            0,
            sys::XDP_USE_NEED_WAKEUP | sys::XDP_ZEROCOPY,
        )
        .map(|()| true)
        .or_else(|_| {
            sys::bind(sock, ifindex, 0, sys::XDP_USE_NEED_WAKEUP | sys::XDP_COPY).map(|()| false)
        });
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

impl Xsk {
    /// Opens queue 0 of `iface`.
    pub fn open(iface: &str) -> Result<Self, Error> {
        let ifindex = sys::ifindex(iface).ok_or_else(|| Error::NoInterface(iface.to_string()))?;
        let e = |what: &'static str| move |err: io::Error| fail(iface, what, err);
        let flags = sys::if_flags(iface).map_err(e("interface flags"))?;
        if flags & libc::IFF_UP == 0 {
            return Err(fail(
                iface,
                "opening",
                io::Error::from_raw_os_error(libc::ENETDOWN),
            ));
        }
        let sock = sys::xsk_socket().map_err(e("AF_XDP socket"))?;
        let frames = Frames::new(RX_FRAMES, TX_FRAMES);
        let umem = Mapping::new(None, (u64::from(frames.count()) * FRAME) as usize, 0)
            .map_err(e("UMEM memory"))?;
        let reg = UmemReg {
            addr: umem.as_ptr() as u64,
            len: umem.len() as u64,
            chunk_size: FRAME as u32,
            ..UmemReg::default()
        };
        sys::umem_reg(&sock, &reg).map_err(e("registering the UMEM"))?;
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
        // Every receive frame goes to the kernel before the socket is bound.
        for f in 0..RX_FRAMES {
            fill.set_addr(f, u64::from(f) * FRAME);
        }
        fill.set_producer(RX_FRAMES);
        let zero_copy = bind(&sock, ifindex).map_err(e("binding to queue 0"))?;
        let map = sys::xskmap_create(1).map_err(e("creating the XSKMAP"))?;
        sys::xskmap_set(&map, 0, &sock).map_err(e("adding the socket to the XSKMAP"))?;
        let prog = sys::prog_load(
            &program(std::os::fd::AsRawFd::as_raw_fd(&map)),
            "Dual MIT/GPL",
        )
        .map_err(e("loading the XDP program"))?;
        // In the driver where it has XDP, else the kernel's generic path; a driver that
        // refuses (virtio_net with offloads on, say) gets the generic path too. Asked for
        // by name both times (flags 0 would let the kernel pick without saying which).
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
            "xdp:{iface}: queue 0 bound in {} mode, program attached {}",
            if zero_copy { "zero-copy" } else { "copy" },
            if generic {
                "as generic XDP"
            } else {
                "in the driver"
            }
        );
        Ok(Self {
            kernel: Some(Fds {
                _link: link,
                _prog: prog,
                _map: map,
                sock,
            }),
            fill,
            comp,
            rx,
            tx,
            umem,
            frames,
            zero_copy,
            generic,
        })
    }
}

#[cfg(test)]
impl Xsk {
    /// Rings and a UMEM of plain memory with no kernel behind them, every receive frame
    /// posted to the fill ring as `open` does: a test plays the kernel on them.
    pub fn fake() -> Self {
        let frames = Frames::new(RX_FRAMES, TX_FRAMES);
        let umem = Mapping::new(None, (u64::from(frames.count()) * FRAME) as usize, 0).unwrap();
        let fill = Ring::anon(RING, 8);
        for f in 0..RX_FRAMES {
            fill.set_addr(f, u64::from(f) * FRAME);
        }
        fill.set_producer(RX_FRAMES);
        Self {
            kernel: None,
            fill,
            comp: Ring::anon(RING, 8),
            rx: Ring::anon(RING, 16),
            tx: Ring::anon(RING, 16),
            umem,
            frames,
            zero_copy: false,
            generic: true,
        }
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
