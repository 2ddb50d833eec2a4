//! The VFIO ioctls, as typed wrappers, and the eventfd and poll calls interrupts are
//! delivered through (the only `unsafe` of the VFIO platform).
//!
//! Request numbers are `_IO(VFIO_TYPE, VFIO_BASE + n)` from `linux/vfio.h`; the argument
//! structs come from `vfio-bindings`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;
use vfio_bindings::bindings::vfio::{
    vfio_device_info, vfio_group_status, vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap,
    vfio_irq_info, vfio_irq_set, vfio_region_info, VFIO_BASE, VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE, VFIO_TYPE,
};

const fn io_nr(n: u32) -> libc::c_ulong {
    ((VFIO_TYPE as u32) << 8 | (VFIO_BASE + n)) as libc::c_ulong
}

const GET_API_VERSION: libc::c_ulong = io_nr(0);
const CHECK_EXTENSION: libc::c_ulong = io_nr(1);
const SET_IOMMU: libc::c_ulong = io_nr(2);
const GROUP_GET_STATUS: libc::c_ulong = io_nr(3);
const GROUP_SET_CONTAINER: libc::c_ulong = io_nr(4);
const GROUP_UNSET_CONTAINER: libc::c_ulong = io_nr(5);
const GROUP_GET_DEVICE_FD: libc::c_ulong = io_nr(6);
const DEVICE_GET_INFO: libc::c_ulong = io_nr(7);
const DEVICE_GET_REGION_INFO: libc::c_ulong = io_nr(8);
const DEVICE_GET_IRQ_INFO: libc::c_ulong = io_nr(9);
const DEVICE_SET_IRQS: libc::c_ulong = io_nr(10);
const DEVICE_RESET: libc::c_ulong = io_nr(11);
const IOMMU_MAP_DMA: libc::c_ulong = io_nr(13);
const IOMMU_UNMAP_DMA: libc::c_ulong = io_nr(14);

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn ioctl_val(fd: BorrowedFd<'_>, req: libc::c_ulong, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: these requests take an integer argument (or none) and touch no memory of ours.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) })
}

fn ioctl_mut<T>(fd: BorrowedFd<'_>, req: libc::c_ulong, arg: &mut T) -> io::Result<i32> {
    // SAFETY: `arg` is a valid, exclusively borrowed struct of the type `req` expects, with
    // its `argsz` set to its size by the caller; the kernel writes at most that many bytes.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T) })
}

fn argsz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// VFIO_GET_API_VERSION on the container.
pub fn api_version(container: BorrowedFd<'_>) -> io::Result<i32> {
    ioctl_val(container, GET_API_VERSION, 0)
}

/// VFIO_CHECK_EXTENSION: whether the container supports IOMMU type `ext`.
pub fn check_extension(container: BorrowedFd<'_>, ext: u32) -> io::Result<bool> {
    Ok(ioctl_val(container, CHECK_EXTENSION, ext.into())? > 0)
}

/// VFIO_SET_IOMMU.
pub fn set_iommu(container: BorrowedFd<'_>, kind: u32) -> io::Result<()> {
    ioctl_val(container, SET_IOMMU, kind.into()).map(drop)
}

/// VFIO_GROUP_GET_STATUS: the group's flags.
pub fn group_status(group: BorrowedFd<'_>) -> io::Result<u32> {
    let mut st = vfio_group_status {
        argsz: argsz::<vfio_group_status>(),
        flags: 0,
    };
    ioctl_mut(group, GROUP_GET_STATUS, &mut st)?;
    Ok(st.flags)
}

/// VFIO_GROUP_SET_CONTAINER.
pub fn group_set_container(group: BorrowedFd<'_>, container: BorrowedFd<'_>) -> io::Result<()> {
    let mut fd: i32 = container.as_raw_fd();
    ioctl_mut(group, GROUP_SET_CONTAINER, &mut fd).map(drop)
}

/// VFIO_GROUP_UNSET_CONTAINER.
pub fn group_unset_container(group: BorrowedFd<'_>) -> io::Result<()> {
    ioctl_val(group, GROUP_UNSET_CONTAINER, 0).map(drop)
}

/// VFIO_GROUP_GET_DEVICE_FD: a new fd for the device named `name` (its PCI address).
pub fn group_get_device_fd(group: BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<i32> {
    // SAFETY: the kernel reads the NUL-terminated name and returns a new fd (or -1).
    check(unsafe { libc::ioctl(group.as_raw_fd(), GROUP_GET_DEVICE_FD, name.as_ptr()) })
}

/// VFIO_DEVICE_GET_INFO.
pub fn device_info(device: BorrowedFd<'_>) -> io::Result<vfio_device_info> {
    let mut info = vfio_device_info {
        argsz: argsz::<vfio_device_info>(),
        ..Default::default()
    };
    ioctl_mut(device, DEVICE_GET_INFO, &mut info)?;
    Ok(info)
}

/// VFIO_DEVICE_GET_REGION_INFO for region `index`.
pub fn region_info(device: BorrowedFd<'_>, index: u32) -> io::Result<vfio_region_info> {
    let mut info = vfio_region_info {
        argsz: argsz::<vfio_region_info>(),
        index,
        ..Default::default()
    };
    ioctl_mut(device, DEVICE_GET_REGION_INFO, &mut info)?;
    Ok(info)
}

/// VFIO_DEVICE_RESET.
pub fn device_reset(device: BorrowedFd<'_>) -> io::Result<()> {
    ioctl_val(device, DEVICE_RESET, 0).map(drop)
}

/// VFIO_IOMMU_MAP_DMA: map `size` bytes at `vaddr` to `iova`, readable by the device, and
/// writable when `writable`. The kernel pins the pages.
pub fn map_dma(
    container: BorrowedFd<'_>,
    vaddr: u64,
    iova: u64,
    size: u64,
    writable: bool,
) -> io::Result<()> {
    use vfio_bindings::bindings::vfio::{VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE};
    let write = if writable { VFIO_DMA_MAP_FLAG_WRITE } else { 0 };
    let mut map = vfio_iommu_type1_dma_map {
        argsz: argsz::<vfio_iommu_type1_dma_map>(),
        flags: VFIO_DMA_MAP_FLAG_READ | write,
        vaddr,
        iova,
        size,
    };
    ioctl_mut(container, IOMMU_MAP_DMA, &mut map).map(drop)
}

/// VFIO_IOMMU_UNMAP_DMA.
pub fn unmap_dma(container: BorrowedFd<'_>, iova: u64, size: u64) -> io::Result<()> {
    let mut unmap = vfio_iommu_type1_dma_unmap {
        argsz: argsz::<vfio_iommu_type1_dma_unmap>(),
        flags: 0,
        iova,
        size,
        data: Default::default(),
    };
    ioctl_mut(container, IOMMU_UNMAP_DMA, &mut unmap).map(drop)
}

/// VFIO_DEVICE_GET_IRQ_INFO for interrupt `index` (`VFIO_PCI_INTX_IRQ_INDEX`, …): its flags
/// and how many vectors it has (0: the device has none of that kind).
pub fn irq_info(device: BorrowedFd<'_>, index: u32) -> io::Result<vfio_irq_info> {
    let mut info = vfio_irq_info {
        argsz: argsz::<vfio_irq_info>(),
        index,
        ..Default::default()
    };
    ioctl_mut(device, DEVICE_GET_IRQ_INFO, &mut info)?;
    Ok(info)
}

/// `vfio_irq_set` with one eventfd as its data (the kernel reads `argsz` bytes: the header
/// and the descriptor right after it).
#[repr(C)]
#[derive(Default)]
struct IrqSetOne {
    head: vfio_irq_set,
    fd: i32,
}

// The descriptor must sit right after the 20-byte header, where the kernel reads it.
const _: () = assert!(std::mem::offset_of!(IrqSetOne, fd) == 20);
const _: () = assert!(std::mem::size_of::<IrqSetOne>() == 24);

/// VFIO_DEVICE_SET_IRQS, DATA_EVENTFD | ACTION_TRIGGER: vector 0 of interrupt `index`
/// signals `event` from now on.
pub fn irq_to_eventfd(device: BorrowedFd<'_>, index: u32, event: BorrowedFd<'_>) -> io::Result<()> {
    let mut set = IrqSetOne {
        head: vfio_irq_set {
            argsz: argsz::<IrqSetOne>(),
            flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            index,
            start: 0,
            count: 1,
            ..Default::default()
        },
        fd: event.as_raw_fd(),
    };
    ioctl_mut(device, DEVICE_SET_IRQS, &mut set).map(drop)
}

/// The most vectors zcnic routes at once (an igb has 25 MSI-X vectors, a virtio-net
/// `2 × pairs + 2`).
pub const MAX_VECTORS: usize = 64;

/// `vfio_irq_set` with up to [`MAX_VECTORS`] eventfds; `argsz` says how many the kernel
/// reads.
#[repr(C)]
struct IrqSetMany {
    head: vfio_irq_set,
    fds: [i32; MAX_VECTORS],
}

const _: () = assert!(std::mem::offset_of!(IrqSetMany, fds) == 20);

/// VFIO_DEVICE_SET_IRQS, DATA_EVENTFD | ACTION_TRIGGER: vectors `0..events.len()` of
/// interrupt `index` (MSI or MSI-X) signal `events[i]` from now on. Enabling MSI-X this way
/// turns it on in the function's capability; [`irq_disable`] turns it off.
pub fn irq_to_eventfds(
    device: BorrowedFd<'_>,
    index: u32,
    events: &[BorrowedFd<'_>],
) -> io::Result<()> {
    if events.is_empty() || events.len() > MAX_VECTORS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} vectors (1 to {MAX_VECTORS})", events.len()),
        ));
    }
    let mut set = IrqSetMany {
        head: vfio_irq_set {
            argsz: (std::mem::size_of::<vfio_irq_set>() + 4 * events.len()) as u32,
            flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            index,
            start: 0,
            count: events.len() as u32,
            ..Default::default()
        },
        fds: [-1; MAX_VECTORS],
    };
    for (slot, e) in set.fds.iter_mut().zip(events) {
        *slot = e.as_raw_fd();
    }
    ioctl_mut(device, DEVICE_SET_IRQS, &mut set).map(drop)
}

/// VFIO_DEVICE_SET_IRQS, DATA_NONE | ACTION_UNMASK on vector 0 of `index`: INTx, which the
/// kernel masks when it fires (the line is level-triggered), may fire again.
pub fn irq_unmask(device: BorrowedFd<'_>, index: u32) -> io::Result<()> {
    irq_set_none(device, index, VFIO_IRQ_SET_ACTION_UNMASK, 1)
}

/// VFIO_DEVICE_SET_IRQS, DATA_NONE | ACTION_TRIGGER with count 0: interrupt `index` is
/// disabled and its eventfd released by the kernel.
pub fn irq_disable(device: BorrowedFd<'_>, index: u32) -> io::Result<()> {
    irq_set_none(device, index, VFIO_IRQ_SET_ACTION_TRIGGER, 0)
}

fn irq_set_none(device: BorrowedFd<'_>, index: u32, action: u32, count: u32) -> io::Result<()> {
    let mut set = vfio_irq_set {
        argsz: argsz::<vfio_irq_set>(),
        flags: VFIO_IRQ_SET_DATA_NONE | action,
        index,
        start: 0,
        count,
        ..Default::default()
    };
    ioctl_mut(device, DEVICE_SET_IRQS, &mut set).map(drop)
}

/// A new non-blocking, close-on-exec eventfd with a count of 0.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointer; it returns a new descriptor or -1.
    let raw = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Waits up to `timeout` (rounded up to a millisecond, at most `i32::MAX` ms) for any of
/// `fds` to become readable; true if one is. A signal that interrupts the wait ends it early
/// (false): callers check their rings after every wait anyway.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<bool> {
    let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` is a valid, exclusively borrowed array of `p.len()` pollfds.
    match check(unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) }) {
        Ok(n) => Ok(n > 0 && p.iter().any(|p| p.revents & libc::POLLIN != 0)),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}
