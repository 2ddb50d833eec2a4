//! The UMEM is the port's own [`Mempool`]: its one region is registered with each socket
//! (unaligned chunks, one chunk per pool buffer), so the kernel receives straight into
//! pool buffers and sends straight from them, and a received frame is a [`Packet`] of that
//! pool with no copy.
//!
//! A buffer the kernel holds (posted to the fill ring, or to the TX ring until its
//! completion) is a `Packet` in a [`Table`] of the half that posted it, reachable by no
//! one else: nothing reads or writes its bytes until the kernel gives its address back,
//! which the table checks (an address of a buffer not held, or held by the other ring, is
//! refused). The region outlives every registration: each socket's [`Shared`] holds the
//! [`Umem`] (and so the pool) after its fd, and the pool's memory is not freed while any
//! of its buffers is out.
//!
//! A forked child (issue 22): a process forked (not spawned with `posix_spawn`/vfork,
//! which `std::process::Command` uses where it can) holds the socket, its rings and the
//! program's link until it execs or exits. A port closed on another thread in that
//! window does not release the socket: it stays bound, the program stays attached, and
//! the fill ring still names the buffers the port is about to give back to the pool. So
//! the close does not rely on releasing the socket. In copy mode the kernel writes into
//! a fill ring's buffer only when the program redirects a frame to the socket through
//! the XSKMAP (`xsk_rcv`, `xsk_generic_rcv`: nothing else reaches an XSK socket's
//! receive path), and it does so at once, inside the NAPI poll (or generic XDP) that
//! looked the socket up, an RCU read-side section. So before the close each queue
//! deletes its socket's key from the map (it keeps a duplicate of the map's fd for
//! this) and waits out an RCU grace period (`synchronize_rcu()`, which the kernel runs
//! before an update of an ARRAY_OF_MAPS returns; not `membarrier(MEMBARRIER_CMD_GLOBAL)`,
//! which skips it with one CPU online, no grace period on a preemptible kernel: see
//! `sys::rcu_grace_period`): after that no frame reaches the socket, whoever else holds
//! it, and the buffers go back to the pool. Where either step fails, they are leaked
//! (never reused) with a warning. (The kernel also reads frames queued on the TX ring:
//! on a holder's send or poll, and after it from skbs still in flight, to which copy
//! mode attaches the UMEM's pages on a device without a linear part (virtio_net). A
//! read by the kernel, like a device's, is no undefined behaviour in this process.) A
//! zero-copy socket's buffers are never given back (its driver may DMA into them until
//! a work item after the close). What remains assumed: no holder of the socket puts it
//! into a map again (a forked child runs only what precedes its exec).
//!
//! Asking the kernel whether the socket still exists after the close (NETLINK_SOCK_DIAG
//! for AF_XDP, by inode) cannot replace this. `xsk_release` takes the socket off the
//! list the dump walks before it deletes it from the maps and unbinds it
//! (`synchronize_net`), so a socket missing from the dump may be another process's,
//! still being released with frames arriving; a dump can also stop early at a socket
//! unbound under it (its interface removed), hiding the rest; and the module is
//! optional (CONFIG_XDP_SOCKETS_DIAG, absent from some kernels altogether). Scanning
//! `/proc/*/fd` for the inode misses a socket in flight in an SCM_RIGHTS message, and
//! shares the first race.
//!
//! Zero copy needs more of the memory: a zero-copy driver DMA-maps the UMEM 4 KiB page
//! by page and, for unaligned chunks, refuses (silently, counting it nowhere the socket
//! reports) every fill-ring chunk that crosses into a page whose DMA address does not
//! follow on (`xp_check_dma_contiguity`, `xp_desc_crosses_non_contig_pg`). A 2176-byte
//! chunk crosses a 4 KiB boundary more often than not, so the pool must lie in 2 MiB
//! hugepages (physically contiguous; `Mempool` never lets a buffer straddle one) and the
//! device's DMA addresses must be physical ones: no IOMMU, or an IOMMU in passthrough
//! (`iommu=pt`: the group's type is `identity`), and no bounce buffering (swiotlb copies
//! each 4 KiB mapping on its own: a confidential guest, `swiotlb=force`, see [`bounced`]).
//! [`Umem::for_zero_copy`] checks these.
//!
//! [`Shared`]: super::init::Shared

use super::sys;
use crate::Error;
use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use zcnic_hugepages::{
    DmaAllocator, DmaError, DmaRegion, FakeDma, HugepageAllocator, Mempool, Packet, DATA_ROOM,
    HEADROOM, HUGEPAGE,
};

/// Bytes of one pool buffer (headroom and data room), the UMEM's chunk size: the kernel
/// writes at most this far from a chunk's start (XDP_UMEM_MIN_CHUNK_SIZE is 2048, the
/// most is PAGE_SIZE, and an unaligned chunk need not be a power of two).
pub const CHUNK: u64 = (HEADROOM + DATA_ROOM) as u64;
/// Pool buffers per 2 MiB page: the pool never lets one straddle a page.
const PER_PAGE: u64 = HUGEPAGE as u64 / CHUNK;
/// `XSK_UNALIGNED_BUF_OFFSET_SHIFT` (if_xdp.h): in unaligned mode a descriptor's address
/// carries the offset of the data from the chunk's start in its upper 16 bits.
pub const OFFSET_SHIFT: u32 = 48;

/// The pool whose memory is the UMEM, and where that memory is.
#[derive(Debug)]
pub struct Umem {
    pool: Arc<Mempool>,
    base: usize,
    len: usize,
    /// In 2 MiB hugepages a zero-copy driver maps without a seam inside a buffer.
    huge: bool,
}

/// Passes on the one region a new pool asks for, noting where it is.
struct Record<'a> {
    inner: &'a dyn DmaAllocator,
    seen: Cell<Option<(usize, usize)>>,
    calls: Cell<u32>,
}

impl DmaAllocator for Record<'_> {
    fn alloc(&self, len: usize) -> Result<DmaRegion, DmaError> {
        let r = self.inner.alloc(len)?;
        self.calls.set(self.calls.get() + 1);
        self.seen.set(Some((r.as_ptr() as usize, r.len())));
        Ok(r)
    }
}

impl Umem {
    /// A pool of `count` buffers of ordinary memory (AF_XDP needs no DMA mapping of it)
    /// to register as the UMEM of `iface`'s sockets.
    pub fn new(iface: &str, count: usize) -> Result<Arc<Self>, Error> {
        Self::build(iface, count, &FakeDma::default(), false)
    }

    /// The pool a port asks for: for zero copy unless `cfg.xdp_copy`.
    pub fn for_port(iface: &str, cfg: &crate::Config) -> Result<Arc<Self>, Error> {
        if cfg.xdp_copy {
            log::info!("xdp:{iface}: copy mode, as asked");
            return Self::new(iface, cfg.pool);
        }
        Self::for_zero_copy(iface, cfg.pool)
    }

    /// A pool for a socket to try zero copy with: in hugepages when [`zero_copy_possible`]
    /// (the driver may have it, the device sees physical addresses) and hugetlbfs has the
    /// pages, ordinary memory (and so copy mode) otherwise, saying why in the log.
    pub fn for_zero_copy(iface: &str, count: usize) -> Result<Arc<Self>, Error> {
        if let Err(why) = zero_copy_possible(iface) {
            log::info!("xdp:{iface}: copy mode: {why}");
            return Self::new(iface, count);
        }
        // No device mapping is wanted (the kernel's driver maps the UMEM itself): the fake
        // mapper only gives each buffer an address no real device reaches.
        let huge = HugepageAllocator::new(FakeDma::default().mapper())
            .map_err(|e| Error::Xdp {
                iface: iface.to_string(),
                msg: e.to_string(),
            })
            .and_then(|alloc| Self::build(iface, count, &alloc, true));
        huge.or_else(|e| {
            log::info!("xdp:{iface}: copy mode: no hugepage memory for the pool ({e})");
            Self::new(iface, count)
        })
    }

    /// The pool over the one region `dma` gives, checked against the UMEM layout.
    fn build(
        iface: &str,
        count: usize,
        dma: &dyn DmaAllocator,
        huge: bool,
    ) -> Result<Arc<Self>, Error> {
        let fail = |msg: String| Error::Xdp {
            iface: iface.to_string(),
            msg: format!("packet pool: {msg}"),
        };
        let rec = Record {
            inner: dma,
            seen: Cell::new(None),
            calls: Cell::new(0),
        };
        let pool = Mempool::new(&rec, count).map_err(|e| fail(e.to_string()))?;
        let (base, len) = match (rec.calls.get(), rec.seen.get()) {
            (1, Some(r)) => r,
            _ => return Err(fail("the pool is not one region".into())),
        };
        if huge && !base.is_multiple_of(HUGEPAGE) {
            return Err(fail("the hugepage region is not 2 MiB aligned".into()));
        }
        let umem = Self {
            pool,
            base,
            len,
            huge,
        };
        // Every buffer must be a chunk inside the region, at the place `index_of` expects.
        let mut all = Vec::with_capacity(count);
        umem.pool.alloc_batch(&mut all, count);
        for p in &all {
            let ok = umem.chunk_of(p).is_some_and(|c| {
                index_of(c, count).is_some() && (c % HUGEPAGE as u64).is_multiple_of(CHUNK)
            });
            if !ok {
                return Err(fail("a buffer lies outside the UMEM layout".into()));
            }
        }
        drop(all);
        Ok(Arc::new(umem))
    }

    /// The pool.
    pub fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    /// Whether the pool lies in hugepages (a socket over it may try zero copy).
    pub fn huge(&self) -> bool {
        self.huge
    }

    /// Start and length of the memory to register.
    pub fn region(&self) -> (usize, usize) {
        (self.base, self.len)
    }

    /// The UMEM address of `p`'s frame (where the kernel reads it to send), `None` for a
    /// packet of another pool (or one whose frame is not inside the region).
    pub fn addr_of(&self, p: &Packet) -> Option<u64> {
        if !p.is_from(&self.pool) {
            return None;
        }
        let off = (p.data().as_ptr() as usize).checked_sub(self.base)?;
        (off.checked_add(p.len())? <= self.len).then_some(off as u64)
    }

    /// The UMEM address of `p`'s buffer (the chunk the kernel may write into), `None` for
    /// a packet of another pool.
    pub fn chunk_of(&self, p: &Packet) -> Option<u64> {
        let data = self.addr_of(p)?;
        // `room` runs from the frame's start to the buffer's end.
        let head = (CHUNK as usize).checked_sub(p.room())?;
        let chunk = data.checked_sub(head as u64)?;
        (chunk + CHUNK <= self.len as u64).then_some(chunk)
    }
}

/// Whether a socket of `iface` may bind zero-copy over a hugepage pool: not when its
/// driver says it has no AF_XDP zero copy (`xdp-features`, kernels ≥ 6.3), nor when its
/// device's DMA addresses are not physical ([`dma_contiguous`]) or are bounced
/// ([`bounced`]); why not, then. `Ok(false)` when it may, but the kernel could not say
/// what the driver has.
pub fn zero_copy_possible(iface: &str) -> Result<bool, String> {
    let known = match sys::ifindex(iface).map(sys::xdp_features) {
        Some(Ok(f)) if f & sys::NETDEV_XDP_ACT_XSK_ZEROCOPY == 0 => {
            return Err(format!(
                "the driver has no AF_XDP zero copy (xdp-features {f:#x})"
            ))
        }
        Some(Ok(_)) => true,
        _ => false,
    };
    dma_contiguous(&Path::new("/sys/class/net").join(iface).join("device"))?;
    if let Some(why) = bounced(&read("/proc/cmdline"), &cpu_flags(), confidential_guest()) {
        return Err(why);
    }
    Ok(known)
}

/// Why every DMA of this machine goes through swiotlb's bounce buffers, if it does: a
/// confidential guest (TDX, SEV-SNP: the device cannot reach private memory) or
/// `swiotlb=force` on `cmdline`. Then, IOMMU group or not, the zero-copy driver's 4 KiB
/// mappings are each their own bounce slots: slots taken one after the other are
/// usually contiguous, so the kernel accepts a chunk across two of them, but a sync
/// copies no further than the end of the slot it starts in (`swiotlb_bounce`: "Buffer
/// overflow detected", clamped), and the frame's tail would never reach the pool buffer
/// (nor a sent frame's tail the device). `cpu_flags` is `/proc/cpuinfo`'s first `flags` line;
/// `guest` whether a confidential guest's device (`/dev/tdx_guest`, `/dev/sev-guest`)
/// exists. A SEV or SEV-ES guest without SNP shows neither from user space: not caught.
pub fn bounced(cmdline: &str, cpu_flags: &str, guest: bool) -> Option<String> {
    let forced = cmdline.split_whitespace().any(|arg| {
        arg.strip_prefix("swiotlb=")
            .is_some_and(|v| v.split(',').any(|o| o == "force"))
    });
    let tdx = cpu_flags.split_whitespace().any(|f| f == "tdx_guest");
    let why = if forced {
        "swiotlb=force"
    } else if tdx || guest {
        "a confidential guest"
    } else {
        return None;
    };
    Some(format!(
        "{why}: every DMA is bounced through swiotlb, page by page, which cuts a buffer \
         crossing 4 KiB pages short"
    ))
}

/// A small kernel file's text, empty when it cannot be read.
fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The first `flags` line of `/proc/cpuinfo` (x86; empty elsewhere), read no further.
fn cpu_flags() -> String {
    use std::io::BufRead;
    let Ok(f) = std::fs::File::open("/proc/cpuinfo") else {
        return String::new();
    };
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default()
}

/// Whether a confidential guest's attestation device exists (TDX, SEV-SNP).
fn confidential_guest() -> bool {
    ["/dev/tdx_guest", "/dev/sev-guest"]
        .iter()
        .any(|p| Path::new(p).exists())
}

/// Whether the device behind `sysfs` (an interface's `device` link) reaches memory at its
/// physical address, so that the 4 KiB pages of one hugepage map to consecutive DMA
/// addresses: no IOMMU group up its path, or one in passthrough (`identity`). An IOMMU
/// that translates maps each page on its own, at addresses a zero-copy driver cannot
/// prove contiguous. The reason it does not, otherwise.
pub fn dma_contiguous(sysfs: &Path) -> Result<(), String> {
    let dev = std::fs::canonicalize(sysfs)
        .map_err(|_| "a virtual interface (no device behind it)".to_string())?;
    // virtio_net's interface hangs off the virtio device; the group is its PCI parent's.
    let Some(group) = dev
        .ancestors()
        .map(|a| a.join("iommu_group"))
        .find(|g| g.exists())
    else {
        return Ok(());
    };
    let kind = std::fs::read_to_string(group.join("type")).unwrap_or_default();
    match kind.trim() {
        "identity" => Ok(()),
        other => Err(format!(
            "the IOMMU translates the device's DMA page by page (group type {:?}), so \
             buffers crossing 4 KiB pages are not contiguous to it: boot with iommu=pt",
            if other.is_empty() { "unknown" } else { other }
        )),
    }
}

/// The pool index of the buffer holding UMEM address `addr`, as `Mempool` lays buffers
/// out (whole buffers per 2 MiB page). Only a key: the table compares the address it
/// stored, so a wrong layout costs a refused address, never a wrong buffer.
pub fn index_of(addr: u64, count: usize) -> Option<usize> {
    let (page, within) = (addr / HUGEPAGE as u64, addr % HUGEPAGE as u64);
    let i = within / CHUNK;
    if i >= PER_PAGE {
        return None;
    }
    let idx = usize::try_from(page.checked_mul(PER_PAGE)?.checked_add(i)?).ok()?;
    (idx < count).then_some(idx)
}

/// Sets `p`'s frame to `len` bytes at `off` from its buffer's start (where the kernel
/// put it); false when that is not inside the buffer.
pub fn place(p: &mut Packet, off: usize, len: usize) -> bool {
    p.reset();
    if off >= HEADROOM {
        p.set_len(off - HEADROOM + len).is_ok() && p.trim_front(off - HEADROOM).is_ok()
    } else {
        p.prepend(HEADROOM - off).is_ok() && p.set_len(len).is_ok()
    }
}

/// The packets one half has given the kernel, by buffer, each with the address it was
/// given as (a chunk for the fill ring, a frame for the TX ring).
#[derive(Debug)]
pub struct Table {
    slots: Vec<Option<(u64, Packet)>>,
    held: usize,
}

impl Table {
    /// A table for the buffers of a pool of `count`.
    pub fn new(count: usize) -> Self {
        Self {
            slots: std::iter::repeat_with(|| None).take(count).collect(),
            held: 0,
        }
    }

    /// Holds `p`, given to the kernel as `addr`; gives it back when its buffer's place is
    /// taken or outside the table (never for a pool laid out as `index_of` says).
    pub fn hold(&mut self, addr: u64, p: Packet) -> Result<(), Packet> {
        match index_of(addr, self.slots.len()).map(|i| &mut self.slots[i]) {
            Some(s @ None) => {
                *s = Some((addr, p));
                self.held += 1;
                Ok(())
            }
            _ => Err(p),
        }
    }

    /// The packet given to the kernel as exactly `addr`, if held; it is no longer.
    pub fn take(&mut self, addr: u64) -> Option<Packet> {
        let i = index_of(addr, self.slots.len())?;
        let s = &mut self.slots[i];
        if s.as_ref().is_none_or(|(a, _)| *a != addr) {
            return None;
        }
        self.held -= 1;
        s.take().map(|(_, p)| p)
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.held
    }

    /// Every packet held, now no longer: only once the kernel can no longer reach them
    /// (the socket closed) or into the care of whoever closes it.
    pub fn drain_into(&mut self, out: &mut Vec<Packet>) {
        out.extend(
            self.slots
                .iter_mut()
                .filter_map(|s| s.take().map(|(_, p)| p)),
        );
        self.held = 0;
    }

    /// The packet held for `addr`, for a test playing the kernel (which writes into it).
    #[cfg(test)]
    pub fn get_mut(&mut self, addr: u64) -> Option<&mut Packet> {
        let i = index_of(addr, self.slots.len())?;
        let s = self.slots.get_mut(i)?;
        s.as_mut().filter(|(a, _)| *a == addr).map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_chunks_of_the_region_and_found_by_address() {
        let u = Umem::new("zcfake0", 2000).unwrap();
        let (base, len) = u.region();
        assert_eq!(base % 4096, 0, "the kernel wants the UMEM page-aligned");
        let mut t = Table::new(2000);
        let mut all = Vec::new();
        u.pool().alloc_batch(&mut all, 2000);
        for p in all {
            let c = u.chunk_of(&p).unwrap();
            assert!(c + CHUNK <= len as u64);
            assert_eq!(u.addr_of(&p), Some(c + HEADROOM as u64));
            t.hold(c, p).unwrap();
        }
        assert_eq!((t.len(), u.pool().free_count()), (2000, 0));
        // Chunk 1 of the second page, and an address inside it that is not a chunk.
        let c = HUGEPAGE as u64 + CHUNK;
        assert!(t.take(c + 1).is_none());
        let p = t.take(c).unwrap();
        assert!(t.take(c).is_none(), "taken once");
        assert_eq!(u.chunk_of(&p), Some(c));
        let mut rest = Vec::new();
        t.drain_into(&mut rest);
        assert_eq!((rest.len(), t.len()), (1999, 0));
        drop((p, rest));
        assert_eq!(u.pool().free_count(), 2000);
    }

    #[test]
    fn other_pools_packets_have_no_umem_address() {
        let u = Umem::new("zcfake0", 16).unwrap();
        let other = Mempool::new(&FakeDma::new(), 16).unwrap();
        let p = other.alloc_copy(&[1; 60]).unwrap();
        assert_eq!((u.addr_of(&p), u.chunk_of(&p)), (None, None));
    }

    #[test]
    fn a_frame_is_placed_where_the_kernel_put_it() {
        let u = Umem::new("zcfake0", 4).unwrap();
        let mut p = u.pool().alloc().unwrap();
        let c = u.chunk_of(&p).unwrap();
        assert!(place(&mut p, 256, 1920));
        assert_eq!((u.addr_of(&p), p.len()), (Some(c + 256), 1920));
        assert!(place(&mut p, 0, 60));
        assert_eq!(u.addr_of(&p), Some(c));
        assert!(!place(&mut p, 256, 1921), "past the buffer's end");
        assert!(!place(&mut p, CHUNK as usize, 1));
        assert_eq!(index_of(u64::MAX, 4), None);
        assert_eq!(index_of(PER_PAGE * CHUNK, 4000), None, "the page's slack");
    }

    #[test]
    fn contiguity_follows_the_iommu_group_up_the_device_path() {
        let root = std::env::temp_dir().join(format!("zcnic-umem-iommu-{}", std::process::id()));
        let pci = root.join("devices/pci0000:00/0000:00:03.0");
        let virtio = pci.join("virtio0");
        std::fs::create_dir_all(&virtio).unwrap();
        let link = root.join("device");
        std::os::unix::fs::symlink(&virtio, &link).unwrap();
        assert_eq!(
            dma_contiguous(&link),
            Ok(()),
            "no IOMMU: physical addresses"
        );
        let group = pci.join("iommu_group");
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(group.join("type"), "DMA-FQ\n").unwrap();
        let why = dma_contiguous(&link).unwrap_err();
        assert!(
            why.contains("\"DMA-FQ\"") && why.contains("iommu=pt"),
            "{why}"
        );
        std::fs::write(group.join("type"), "identity\n").unwrap();
        assert_eq!(dma_contiguous(&link), Ok(()), "passthrough");
        let none = dma_contiguous(&root.join("missing")).unwrap_err();
        assert!(none.contains("virtual interface"), "{none}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn bounce_buffering_refuses_zero_copy() {
        let flags = "flags\t\t: fpu vme de pse tsc msr hypervisor";
        assert_eq!(bounced("BOOT_IMAGE=/vmlinuz ro quiet", flags, false), None);
        assert_eq!(bounced("swiotlb=65536 iommu=pt", flags, false), None);
        assert_eq!(bounced("ro swiotlb=noforce", flags, false), None);
        let forced = bounced("ro swiotlb=65536,force quiet", flags, false).unwrap();
        assert!(forced.starts_with("swiotlb=force"), "{forced}");
        assert!(bounced("swiotlb=force", "", false).is_some());
        let tdx = format!("{flags} tdx_guest");
        let why = bounced("ro", &tdx, false).unwrap();
        assert!(why.starts_with("a confidential guest"), "{why}");
        assert!(bounced("ro", "flags : tdx_guest_x", false).is_none());
        assert!(bounced("ro", "", true).is_some(), "SEV-SNP's guest device");
        // This machine: whatever it is, the answer comes without a panic.
        let _ = bounced(&read("/proc/cmdline"), &cpu_flags(), confidential_guest());
    }

    #[test]
    fn a_pool_for_a_port_without_a_device_or_asking_copy_is_ordinary_memory() {
        let cfg = crate::Config {
            pool: 64,
            ..crate::Config::default()
        };
        assert!(!Umem::for_port("zcnosuch0", &cfg).unwrap().huge());
        let copy = crate::Config {
            xdp_copy: true,
            ..cfg
        };
        assert!(!Umem::for_port("lo", &copy).unwrap().huge());
    }
}
