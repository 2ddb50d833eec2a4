//! The VFIO platform: container, group, device, and DMA mapping through the IOMMU.
//!
//! Opening follows the kernel's `Documentation/driver-api/vfio.rst`: open the container,
//! check the API version and the Type1 IOMMU, open the device's group and check it is
//! viable, attach it to the container, pick the IOMMU, then ask the group for the device.
//! Every failure names the device and the fix.

pub(crate) mod sys;

use crate::mmio::MmioBar;
use crate::pci::{link_name, DeviceInfo, PciAddr, COMMAND_INTX_DISABLE, CONFIG_COMMAND};
use crate::platform::{IovaMode, PciDevice};
use crate::Error;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use vfio_bindings::bindings::vfio::{
    VFIO_TYPE1v2_IOMMU, VFIO_API_VERSION, VFIO_DEVICE_FLAGS_RESET, VFIO_GROUP_FLAGS_VIABLE,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_REGION_INFO_FLAG_MMAP, VFIO_TYPE1_IOMMU,
};
use zcnic_hugepages::{
    new_space_id, Access, AddressSpace, DmaAllocator, DmaError, Domain, HugepageAllocator,
    IovaMapper, Iovas, UserRegion, HUGEPAGE,
};

const CONTAINER: &str = "/dev/vfio/vfio";
/// First IOVA handed out: 256 GiB, clear of the x86 MSI window at 0xfee00000 and of the
/// physical addresses used as IOVAs for devices that bypass the IOMMU, and below 2^39, the
/// smallest IOMMU address width seen (QEMU's intel-iommu default).
const IOVA_BASE: u64 = 1 << 38;

/// A VFIO container: one IOMMU address space, shared by every device this process opens,
/// so a buffer mapped once is reachable by all of them (zero-copy forwarding between
/// ports needs that). Maps memory for the devices in it.
#[derive(Debug)]
pub struct Container {
    fd: OwnedFd,
    iommu: u32,
    attached: Mutex<Attached>,
    next_iova: AtomicU64,
}

/// The groups in a container and its IOMMU address space. When the last group leaves,
/// the kernel drops the IOMMU model and every mapping with it: the next group needs
/// VFIO_SET_IOMMU again, and starts a new address space (memory mapped before is no
/// longer reachable through it, so its regions keep the old space's id).
#[derive(Debug)]
struct Attached {
    groups: usize,
    space: u32,
}

/// The process's container while any device holds it.
static SHARED: Mutex<Weak<Container>> = Mutex::new(Weak::new());

impl Container {
    /// The process's container, opened on first use.
    fn shared(addr: &PciAddr) -> Result<Arc<Self>, Error> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = shared.upgrade() {
            return Ok(c);
        }
        let file = open_rw(CONTAINER).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NoVfio(*addr),
            _ => Error::os(addr, format!("opening {CONTAINER}"), e),
        })?;
        let cfd = file.as_fd();
        let version =
            sys::api_version(cfd).map_err(|e| Error::os(addr, "VFIO_GET_API_VERSION", e))?;
        if version != VFIO_API_VERSION as i32 {
            return Err(Error::Io(format!(
                "{addr}: VFIO API version {version}, zcnic speaks {VFIO_API_VERSION}"
            )));
        }
        let iommu = [VFIO_TYPE1v2_IOMMU, VFIO_TYPE1_IOMMU]
            .into_iter()
            .find(|&t| sys::check_extension(cfd, t).unwrap_or(false))
            .ok_or_else(|| {
                Error::Io(format!(
                    "{addr}: the kernel offers no VFIO Type1 IOMMU: load vfio_iommu_type1 (`modprobe vfio_iommu_type1`)"
                ))
            })?;
        let c = Arc::new(Self {
            fd: file.into(),
            iommu,
            attached: Mutex::new(Attached {
                groups: 0,
                space: new_space_id(),
            }),
            next_iova: AtomicU64::new(IOVA_BASE),
        });
        *shared = Arc::downgrade(&c);
        Ok(c)
    }

    /// Puts `group` in this container; the IOMMU model is chosen with the first group
    /// (again after the container was empty).
    fn attach(&self, group: &File, addr: &PciAddr) -> Result<(), Error> {
        let mut at = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        sys::group_set_container(group.as_fd(), self.fd.as_fd())
            .map_err(|e| Error::os(addr, "VFIO_GROUP_SET_CONTAINER", e))?;
        if at.groups == 0 {
            if let Err(e) = sys::set_iommu(self.fd.as_fd(), self.iommu) {
                let _ = sys::group_unset_container(group.as_fd());
                return Err(Error::os(addr, "VFIO_SET_IOMMU", e));
            }
        }
        at.groups += 1;
        Ok(())
    }

    /// Takes `group` out of this container; the last one out ends the address space.
    fn detach(&self, group: &File) {
        let mut at = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = sys::group_unset_container(group.as_fd()) {
            log::debug!("VFIO_GROUP_UNSET_CONTAINER: {e} (closing the group unsets it)");
        }
        at.groups = at.groups.saturating_sub(1);
        if at.groups == 0 {
            at.space = new_space_id();
        }
    }

    fn space_id(&self) -> u32 {
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .space
    }

    fn map_at(&self, va: *mut u8, iova: u64, len: usize, access: Access) -> Result<(), DmaError> {
        let writable = access == Access::ReadWrite;
        let mapped = sys::map_dma(self.fd.as_fd(), va as u64, iova, len as u64, writable);
        mapped.map_err(|e| DmaError::Map {
            len,
            reason: match e.raw_os_error() {
                Some(libc::ENOMEM) => format!(
                    "{e}: the locked-memory limit is too low; run as root or raise `ulimit -l`"
                ),
                _ => format!("VFIO_IOMMU_MAP_DMA at {iova:#x}: {e}"),
            },
        })
    }

    fn unmap_at(&self, iova: u64, len: usize) {
        match sys::unmap_dma(self.fd.as_fd(), iova, len as u64) {
            Ok(()) => {}
            // Memory that outlives its port (packets or a pool the application still
            // holds) is unmapped after the last group left the container, which already
            // dropped every mapping with it: nothing to undo.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                log::debug!(
                    "VFIO_IOMMU_UNMAP_DMA {iova:#x}+{len:#x}: {e} (container already empty)"
                )
            }
            Err(e) => log::warn!("VFIO_IOMMU_UNMAP_DMA {iova:#x}+{len:#x}: {e}"),
        }
    }
}

/// IOVAs zcnic chooses, contiguous per region (DPDK's `--iova-mode=va` idea, but from a
/// counter: user virtual addresses can exceed the IOMMU's address width).
// SAFETY: the IOVAs returned are where VFIO_IOMMU_MAP_DMA mapped the memory, in the
// container's current address space, which `domain`/`space` name.
unsafe impl IovaMapper for Container {
    fn map(&self, va: *mut u8, len: usize, access: Access) -> Result<Iovas, DmaError> {
        let span = len.div_ceil(HUGEPAGE) as u64 * HUGEPAGE as u64;
        let iova = self.next_iova.fetch_add(span, Ordering::Relaxed);
        self.map_at(va, iova, len, access)?;
        Ok(Iovas::Contiguous(iova))
    }

    fn unmap(&self, iovas: &Iovas, len: usize) {
        self.unmap_at(iovas.at(0), len);
    }

    fn domain(&self) -> Domain {
        Domain::iommu(self.space_id())
    }

    fn space(&self) -> AddressSpace {
        AddressSpace::Iommu(self.space_id())
    }
}

/// IOVA = physical address, page by page (DPDK's `--iova-mode=pa`): for a device that
/// bypasses the IOMMU, such as a virtio device without ACCESS_PLATFORM, which reads
/// guest-physical addresses. The IOMMU mapping stays so the memory is pinned.
#[derive(Debug)]
struct PhysMapper(Arc<Container>);

impl PhysMapper {
    /// Maps the 2 MiB page at `va` (`len` bytes of it) at IOVA = its physical address.
    /// The address is read again after the mapping pinned the page: a page the kernel
    /// migrated between the read and the pin would otherwise be mapped at a stale address.
    fn map_page(&self, va: *mut u8, len: usize, access: Access) -> Result<u64, DmaError> {
        for _ in 0..3 {
            let pa = zcnic_hugepages::physical_address(va)?;
            self.0.map_at(va, pa, len, access)?;
            if zcnic_hugepages::physical_address(va)? == pa {
                return Ok(pa);
            }
            self.0.unmap_at(pa, len);
        }
        Err(DmaError::Map {
            len,
            reason: format!("the page at {va:p} kept moving while it was being pinned"),
        })
    }
}

// SAFETY: the IOVAs are the pages' physical addresses, read again after VFIO pinned them,
// and mapped 1:1 in the container too, as `domain` says.
unsafe impl IovaMapper for PhysMapper {
    fn map(&self, va: *mut u8, len: usize, access: Access) -> Result<Iovas, DmaError> {
        let mut pages: Vec<u64> = Vec::with_capacity(len.div_ceil(HUGEPAGE));
        for off in (0..len).step_by(HUGEPAGE) {
            match self.map_page(va.wrapping_add(off), HUGEPAGE.min(len - off), access) {
                Ok(pa) => pages.push(pa),
                Err(e) => {
                    self.unmap(&Iovas::PerPage(pages.into()), off);
                    return Err(e);
                }
            }
        }
        Ok(Iovas::PerPage(pages.into()))
    }

    fn unmap(&self, iovas: &Iovas, len: usize) {
        for off in (0..len).step_by(HUGEPAGE) {
            self.0.unmap_at(iovas.at(off), HUGEPAGE.min(len - off));
        }
    }

    /// Physical addresses, mapped 1:1 in the container's space too.
    fn domain(&self) -> Domain {
        Domain::physical(self.0.space_id())
    }

    /// The device bypasses the IOMMU and reads physical addresses.
    fn space(&self) -> AddressSpace {
        AddressSpace::Physical
    }
}

/// Application memory holding a copy of `data`, mapped for every VFIO device this process
/// has open (they share one IOMMU address space), for zero-copy transmit of
/// [`zcnic_hugepages::Segment`]s. See [`UserRegion`] for memory the application already has.
pub fn register(data: &[u8]) -> Result<UserRegion, Error> {
    let shared = SHARED.lock().unwrap_or_else(|e| e.into_inner()).upgrade();
    let container = shared.ok_or_else(|| {
        Error::Io(
            "open a port before registering memory: the IOMMU address space comes with it".into(),
        )
    })?;
    UserRegion::with_data(data, container)
        .map_err(|e| Error::Io(format!("registering memory: {e}")))
}

/// A group in the container; dropping it takes the group out (after the device, whose
/// open descriptor would make VFIO_GROUP_UNSET_CONTAINER fail with EBUSY).
#[derive(Debug)]
struct Membership {
    file: File,
    container: Arc<Container>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.container.detach(&self.file);
    }
}

/// A PCI function opened through VFIO. Dropping it closes the device, then takes its group
/// out of the container (fields drop in order).
#[derive(Debug)]
pub struct VfioDevice {
    addr: PciAddr,
    device: File,
    group: Membership,
    config_offset: u64,
    /// (offset in the device fd, size) of BAR0..BAR5, where VFIO reports one.
    bars: [Option<(u64, u64)>; 6],
    can_reset: bool,
}

fn open_rw(path: &str) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Devices of `group` bound to a driver other than vfio-pci: what makes it not viable.
fn group_blockers(group: u32) -> Vec<String> {
    let dir = format!("/sys/kernel/iommu_groups/{group}/devices");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let drv = link_name(&e.path().join("driver"))?;
            (drv != "vfio-pci").then(|| format!("{} ({drv})", e.file_name().to_string_lossy()))
        })
        .collect()
}

impl VfioDevice {
    /// Opens `addr`, which must be bound to vfio-pci.
    pub(crate) fn open(addr: &PciAddr) -> Result<Self, Error> {
        let info = DeviceInfo::read(addr)?;
        if info.driver.as_deref() != Some("vfio-pci") {
            return Err(Error::NotBound {
                addr: *addr,
                driver: info.driver,
            });
        }
        let group = info.iommu_group.ok_or(Error::NoIommuGroup(*addr))?;
        let container = Container::shared(addr)?;

        let group_path = format!("/dev/vfio/{group}");
        let group_file = open_rw(&group_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotBound {
                addr: *addr,
                driver: Some("vfio-pci (but the group device is missing)".into()),
            },
            _ => Error::os(addr, format!("opening {group_path}"), e),
        })?;
        let flags = sys::group_status(group_file.as_fd())
            .map_err(|e| Error::os(addr, "VFIO_GROUP_GET_STATUS", e))?;
        if flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(Error::GroupNotViable {
                addr: *addr,
                group,
                others: group_blockers(group),
            });
        }
        container.attach(&group_file, addr)?;
        let group = Membership {
            file: group_file,
            container,
        };
        let device = Self::device_fd(&group.file, addr)?;
        let (dinfo, config) = (
            sys::device_info(device.as_fd()),
            sys::region_info(device.as_fd(), VFIO_PCI_CONFIG_REGION_INDEX),
        );
        let mut bars = [None; 6];
        for (i, bar) in bars.iter_mut().enumerate() {
            *bar = sys::region_info(device.as_fd(), i as u32)
                .ok()
                .filter(|r| r.size > 0)
                .map(|r| (r.offset, r.size));
        }
        let mut dev = Self {
            addr: *addr,
            bars,
            device,
            group,
            config_offset: 0,
            can_reset: false,
        };
        let dinfo = dinfo.map_err(|e| Error::os(addr, "VFIO_DEVICE_GET_INFO", e))?;
        let config =
            config.map_err(|e| Error::os(addr, "VFIO_DEVICE_GET_REGION_INFO(config)", e))?;
        dev.config_offset = config.offset;
        dev.can_reset = dinfo.flags & VFIO_DEVICE_FLAGS_RESET != 0;
        Ok(dev)
    }

    /// A new descriptor for the device `addr` of `group`.
    fn device_fd(group: &File, addr: &PciAddr) -> Result<File, Error> {
        let name = std::ffi::CString::new(addr.to_string())
            .map_err(|_| Error::BadPciAddress(addr.to_string()))?;
        let raw = sys::group_get_device_fd(group.as_fd(), &name)
            .map_err(|e| Error::os(addr, "VFIO_GROUP_GET_DEVICE_FD", e))?;
        // SAFETY: the ioctl returned a new file descriptor that nothing else owns.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(raw) }))
    }
}

impl VfioDevice {
    /// Offset of BAR `index` in the device fd, after checking `off..off+len` is inside it.
    fn bar_window(&self, index: u32, off: u64, len: usize) -> Result<u64, Error> {
        match self.bars.get(index as usize).copied().flatten() {
            Some((base, size)) if off + len as u64 <= size => Ok(base),
            _ => Err(Error::Io(format!(
                "{}: BAR{index} has no {len} bytes at {off:#x}",
                self.addr
            ))),
        }
    }
}

// SAFETY: config space, BARs and reset are the device's own, through its VFIO descriptor;
// DMA memory is mapped through the container the device's group is in, at the IOVAs given.
unsafe impl PciDevice for VfioDevice {
    fn addr(&self) -> PciAddr {
        self.addr
    }

    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.device
            .read_exact_at(buf, self.config_offset + off)
            .map_err(|e| Error::os(&self.addr, format!("reading config space at {off:#x}"), e))
    }

    fn config_write(&self, off: u64, buf: &[u8]) -> Result<(), Error> {
        self.device
            .write_all_at(buf, self.config_offset + off)
            .map_err(|e| Error::os(&self.addr, format!("writing config space at {off:#x}"), e))
    }

    fn bar_read(&self, index: u32, off: u64, buf: &mut [u8]) -> Result<(), Error> {
        let base = self.bar_window(index, off, buf.len())?;
        self.device
            .read_exact_at(buf, base + off)
            .map_err(|e| Error::os(&self.addr, format!("reading BAR{index} at {off:#x}"), e))
    }

    fn bar_write(&self, index: u32, off: u64, buf: &[u8]) -> Result<(), Error> {
        let base = self.bar_window(index, off, buf.len())?;
        self.device
            .write_all_at(buf, base + off)
            .map_err(|e| Error::os(&self.addr, format!("writing BAR{index} at {off:#x}"), e))
    }

    fn map_bar(&self, index: u32) -> Result<MmioBar, Error> {
        let what = format!("BAR{index}");
        let info = sys::region_info(self.device.as_fd(), index).map_err(|e| {
            Error::os(
                &self.addr,
                format!("VFIO_DEVICE_GET_REGION_INFO({what})"),
                e,
            )
        })?;
        if info.size == 0 || info.flags & VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Err(Error::Io(format!(
                "{}: {what} is not a memory BAR VFIO can map (size {:#x}, flags {:#x})",
                self.addr, info.size, info.flags
            )));
        }
        let map = memmap2::MmapOptions::new()
            .offset(info.offset)
            .len(info.size as usize)
            .map_raw(&self.device)
            .map_err(|e| Error::os(&self.addr, format!("mapping {what}"), e))?;
        // SAFETY: a read-write shared mapping of a region VFIO reports as mmap-able, at its
        // offset and of its size, so every byte is the device's BAR.
        unsafe { MmioBar::new(map) }
            .ok_or_else(|| Error::Io(format!("{}: {what} mapped at null", self.addr)))
    }

    fn dma_allocator(&self, mode: IovaMode) -> Result<Box<dyn DmaAllocator>, Error> {
        let mapper: Arc<dyn IovaMapper> = match mode {
            IovaMode::Virtual => self.group.container.clone(),
            IovaMode::Physical => Arc::new(PhysMapper(self.group.container.clone())),
        };
        HugepageAllocator::new(mapper)
            .map(|a| Box::new(a) as Box<dyn DmaAllocator>)
            .map_err(|source| Error::Dma {
                addr: self.addr,
                source,
            })
    }

    fn reset(&self) -> bool {
        self.can_reset && sys::device_reset(self.device.as_fd()).is_ok()
    }

    /// A new eventfd, and VFIO_DEVICE_SET_IRQS routing INTx to it, after
    /// VFIO_DEVICE_GET_IRQ_INFO said the device has an INTx vector. The command register's
    /// INTx Disable bit goes off first: vfio-pci keeps the line masked while its
    /// (virtualised) bit is set.
    fn intx(&self) -> Result<crate::irq::IrqFd, Error> {
        use crate::irq::{EventFd, IrqFd, INTX};
        let dev = self.device.as_fd();
        let info = sys::irq_info(dev, INTX)
            .map_err(|e| Error::os(&self.addr, "VFIO_DEVICE_GET_IRQ_INFO(INTx)", e))?;
        if info.count == 0 {
            return Err(Error::NoInterrupt {
                addr: self.addr,
                why: "VFIO reports no INTx vector (no interrupt pin)".into(),
            });
        }
        let cmd = self.config_read16(CONFIG_COMMAND)?;
        self.config_write16(CONFIG_COMMAND, cmd & !COMMAND_INTX_DISABLE)?;
        let event = EventFd::new().map_err(|e| Error::os(&self.addr, "eventfd", e))?;
        sys::irq_to_eventfd(dev, INTX, event.as_fd())
            .map_err(|e| Error::os(&self.addr, "VFIO_DEVICE_SET_IRQS(INTx)", e))?;
        Ok(IrqFd::event(event))
    }

    /// VFIO_DEVICE_GET_IRQ_INFO for how many vectors `index` has, then one eventfd per
    /// vector and VFIO_DEVICE_SET_IRQS routing them all at once (MSI-X cannot grow once
    /// enabled on older kernels).
    fn vectors(&self, index: u32, max: usize) -> Result<Vec<crate::irq::EventFd>, Error> {
        use crate::irq::EventFd;
        let dev = self.device.as_fd();
        let info = sys::irq_info(dev, index)
            .map_err(|e| Error::os(&self.addr, format!("VFIO_DEVICE_GET_IRQ_INFO({index})"), e))?;
        let n = (info.count as usize).min(max).min(sys::MAX_VECTORS);
        if n == 0 {
            return Err(Error::NoInterrupt {
                addr: self.addr,
                why: format!("VFIO reports no vectors of interrupt {index} (no such capability)"),
            });
        }
        let events = (0..n)
            .map(|_| EventFd::new())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::os(&self.addr, "eventfd", e))?;
        let fds: Vec<_> = events.iter().map(|e| e.as_fd()).collect();
        sys::irq_to_eventfds(dev, index, &fds).map_err(|e| {
            Error::os(
                &self.addr,
                format!("VFIO_DEVICE_SET_IRQS({index}, {n} vectors)"),
                e,
            )
        })?;
        Ok(events)
    }

    /// VFIO_IRQ_SET_ACTION_UNMASK.
    fn irq_unmask(&self, index: u32) -> Result<(), Error> {
        sys::irq_unmask(self.device.as_fd(), index)
            .map_err(|e| Error::os(&self.addr, format!("unmasking interrupt {index}"), e))
    }

    /// DATA_NONE | ACTION_TRIGGER with count 0; INTx Disable back on for INTx.
    fn irq_release(&self, index: u32) {
        if let Err(e) = sys::irq_disable(self.device.as_fd(), index) {
            log::warn!("{}: disabling interrupt {index}: {e}", self.addr);
        }
        if index == crate::irq::INTX {
            let off = self
                .config_read16(CONFIG_COMMAND)
                .and_then(|c| self.config_write16(CONFIG_COMMAND, c | COMMAND_INTX_DISABLE));
            if let Err(e) = off {
                log::warn!("{e}");
            }
        }
    }
}
