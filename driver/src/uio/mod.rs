//! The uio platform: a device bound to `uio_pci_generic`, for machines without an IOMMU.
//!
//! uio_pci_generic only enables the device and hands its interrupt to userspace; zcnic
//! reaches everything else through the device's sysfs directory
//! (kernel `Documentation/PCI/sysfs-pci.rst`):
//! - config space: `config`, read and written with pread/pwrite (bus mastering goes through
//!   the command register there);
//! - memory BARs: `resource<N>`, mapped;
//! - I/O-port BARs (legacy virtio): `resource<N>`, read and written 1, 2 or 4 bytes at a
//!   time, which the kernel turns into `in`/`out` instructions;
//! - DMA: hugepage memory at its physical address (see `phys.rs`);
//! - INTx: `/dev/uioN`, readable once the line fired (a read takes the count); the kernel
//!   masks the line with the command register's INTx Disable bit each time, and zcnic
//!   clears the bit before it sleeps again.
//!
//! **No isolation.** Nothing stands between the device and memory: a device (or a driver
//! bug that gives it a wrong address) can read and write any byte of the machine. Use it
//! where there is no IOMMU; prefer VFIO wherever there is one.
//!
//! Two safety nets: an advisory lock on `config` keeps a second zcnic off the device
//! ([`Error::Busy`]), and `/dev/uioN` stays open while the device is, because
//! uio_pci_generic turns bus mastering off when it is closed, so DMA also stops when
//! zcnic dies without cleaning up.

mod phys;
mod sys;

pub use phys::PhysicalMapper;

use crate::mmio::MmioBar;
use crate::pci::{DeviceInfo, PciAddr, COMMAND_INTX_DISABLE, CONFIG_COMMAND};
use crate::platform::{IovaMode, Mode, PciDevice};
use crate::Error;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zcnic_hugepages::{DmaAllocator, HugepageAllocator};

/// `IORESOURCE_IO`: the resource is I/O-port space (`include/linux/ioport.h`).
const IORESOURCE_IO: u64 = 0x100;
/// `IORESOURCE_MEM`: the resource is memory space.
const IORESOURCE_MEM: u64 = 0x200;

/// A BAR as sysfs `resource` lists it: bus addresses `start..=end` and resource flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resource {
    start: u64,
    end: u64,
    flags: u64,
}

impl Resource {
    fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    fn is_io(&self) -> bool {
        self.flags & IORESOURCE_IO != 0
    }

    fn is_mem(&self) -> bool {
        self.flags & IORESOURCE_MEM != 0
    }
}

/// BAR0..BAR5 from the text of sysfs `resource` (one `0xstart 0xend 0xflags` line per
/// resource; the lines after the sixth are the ROM and bridge windows). An unused BAR, or
/// the upper half of a 64-bit one, is all zeros.
fn parse_resources(text: &str) -> [Option<Resource>; 6] {
    let mut bars = [None; 6];
    for (bar, line) in bars.iter_mut().zip(text.lines()) {
        let mut f = line
            .split_whitespace()
            .map(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok());
        if let (Some(Some(start)), Some(Some(end)), Some(Some(flags))) =
            (f.next(), f.next(), f.next())
        {
            if end > start && flags & (IORESOURCE_IO | IORESOURCE_MEM) != 0 {
                *bar = Some(Resource { start, end, flags });
            }
        }
    }
    bars
}

/// The error for a device that is not bound to uio_pci_generic: what it is bound to, and
/// the command that fixes it.
fn not_bound(addr: &PciAddr, driver: Option<&str>) -> Error {
    let now = match driver {
        Some(d) => format!("bound to {d}"),
        None => "bound to no driver".into(),
    };
    Error::Io(format!(
        "{addr} is {now}, not uio_pci_generic: run `zcnic bind {addr} --driver uio_pci_generic` first"
    ))
}

/// A PCI function bound to uio_pci_generic. Dropping it closes the device, which turns
/// its bus mastering off (uio_pci_generic does that on the last close of `/dev/uioN`).
#[derive(Debug)]
pub struct UioDevice {
    addr: PciAddr,
    dir: PathBuf,
    /// Config space; holds the advisory lock that marks the device as taken.
    config: File,
    bars: [Option<Resource>; 6],
    /// The I/O-port BARs' `resource<N>` files, opened once.
    io: [Option<File>; 6],
    /// `/dev/uioN`, kept open so that its close stops DMA (see the module docs); read for
    /// INTx ([`PciDevice::intx`]).
    uio: Option<File>,
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

impl UioDevice {
    /// Opens `addr`, which must be bound to uio_pci_generic (`zcnic bind <addr> --driver
    /// uio_pci_generic`). Needs root: config space writes and physical addresses do.
    pub(crate) fn open(addr: &PciAddr) -> Result<Self, Error> {
        let info = DeviceInfo::read(addr)?;
        if Mode::bound(&info) != Some(Mode::Uio) {
            return Err(not_bound(addr, info.driver.as_deref()));
        }
        let dir = DeviceInfo::sysfs_dir(addr);
        let config_path = dir.join("config");
        let config = open_rw(&config_path)
            .map_err(|e| Error::os(addr, format!("opening {}", config_path.display()), e))?;
        match sys::try_lock_exclusive(&config) {
            Ok(true) => {}
            Ok(false) => return Err(Error::Busy(*addr)),
            Err(e) => {
                return Err(Error::os(
                    addr,
                    format!("locking {}", config_path.display()),
                    e,
                ))
            }
        }
        let res_path = dir.join("resource");
        let text =
            std::fs::read_to_string(&res_path).map_err(|e| Error::sysfs(addr, &res_path, e))?;
        let bars = parse_resources(&text);
        let mut io: [Option<File>; 6] = Default::default();
        for (i, bar) in bars.iter().enumerate() {
            if bar.is_some_and(|b| b.is_io()) {
                let path = dir.join(format!("resource{i}"));
                io[i] = Some(
                    open_rw(&path)
                        .map_err(|e| Error::os(addr, format!("opening {}", path.display()), e))?,
                );
            }
        }
        Ok(Self {
            addr: *addr,
            uio: open_uio_node(addr, &dir),
            dir,
            config,
            bars,
            io,
        })
    }

    /// BAR `index` as sysfs lists it, if it is of the kind `want` asks.
    fn bar(&self, index: u32, want: fn(&Resource) -> bool, kind: &str) -> Result<Resource, Error> {
        self.bars
            .get(index as usize)
            .copied()
            .flatten()
            .filter(want)
            .ok_or_else(|| Error::Io(format!("{}: BAR{index} is not {kind}", self.addr)))
    }

    /// The open `resource<N>` file of I/O BAR `index`, after checking `off..off+len` is
    /// inside it.
    fn io_window(&self, index: u32, off: u64, len: usize) -> Result<&File, Error> {
        let bar = self.bar(index, Resource::is_io, "an I/O-port BAR")?;
        match self.io.get(index as usize).and_then(Option::as_ref) {
            Some(f) if off + len as u64 <= bar.len() && matches!(len, 1 | 2 | 4) => Ok(f),
            _ => Err(Error::Io(format!(
                "{}: BAR{index} has no {len}-byte register at {off:#x}",
                self.addr
            ))),
        }
    }
}

/// Opens `/dev/uioN` of the device, or says why not (zcnic still runs; only the net that
/// stops DMA when zcnic dies is missing).
fn open_uio_node(addr: &PciAddr, dir: &Path) -> Option<File> {
    let name = std::fs::read_dir(dir.join("uio"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("uio"))?;
    let node = Path::new("/dev").join(&name);
    match open_rw(&node) {
        Ok(f) => Some(f),
        Err(e) => {
            log::warn!(
                "{addr}: cannot open {}: {e}; DMA will not be stopped if zcnic dies",
                node.display()
            );
            None
        }
    }
}

// SAFETY: config space and BARs are the device's own sysfs files; DMA memory is hugetlbfs
// at its physical addresses (`PhysicalMapper`).
unsafe impl PciDevice for UioDevice {
    fn addr(&self) -> PciAddr {
        self.addr
    }

    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.config
            .read_exact_at(buf, off)
            .map_err(|e| Error::os(&self.addr, format!("reading config space at {off:#x}"), e))
    }

    fn config_write(&self, off: u64, buf: &[u8]) -> Result<(), Error> {
        self.config
            .write_all_at(buf, off)
            .map_err(|e| Error::os(&self.addr, format!("writing config space at {off:#x}"), e))
    }

    fn map_bar(&self, index: u32) -> Result<MmioBar, Error> {
        let bar = self.bar(index, Resource::is_mem, "a memory BAR")?;
        let path = self.dir.join(format!("resource{index}"));
        let what = format!("mapping BAR{index} ({})", path.display());
        let file = open_rw(&path).map_err(|e| Error::os(&self.addr, what.clone(), e))?;
        let map = memmap2::MmapOptions::new()
            .len(bar.len() as usize)
            .map_raw(&file)
            .map_err(|e| Error::os(&self.addr, what, e))?;
        // SAFETY: a read-write shared mapping of sysfs `resource<N>` for a memory BAR, of the
        // BAR's length as sysfs lists it, so every byte is the device's register space.
        unsafe { MmioBar::new(map) }
            .ok_or_else(|| Error::Io(format!("{}: BAR{index} mapped at null", self.addr)))
    }

    /// Hugepage memory at physical addresses, whatever `mode` asks: there is no IOMMU to
    /// give the device any other view.
    fn dma_allocator(&self, _mode: IovaMode) -> Result<Box<dyn DmaAllocator>, Error> {
        HugepageAllocator::new(Arc::new(PhysicalMapper))
            .map(|a| Box::new(a) as Box<dyn DmaAllocator>)
            .map_err(|source| Error::Dma {
                addr: self.addr,
                source,
            })
    }

    fn bar_read(&self, index: u32, off: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.io_window(index, off, buf.len())?
            .read_exact_at(buf, off)
            .map_err(|e| Error::os(&self.addr, format!("reading BAR{index} at {off:#x}"), e))
    }

    fn bar_write(&self, index: u32, off: u64, buf: &[u8]) -> Result<(), Error> {
        self.io_window(index, off, buf.len())?
            .write_all_at(buf, off)
            .map_err(|e| Error::os(&self.addr, format!("writing BAR{index} at {off:#x}"), e))
    }

    /// A second descriptor of `/dev/uioN`: uio_pci_generic counts INTx there, masking the
    /// line (INTx Disable) each time it fires.
    fn intx(&self) -> Result<crate::irq::IrqFd, Error> {
        let node = self.uio.as_ref().ok_or_else(|| Error::NoInterrupt {
            addr: self.addr,
            why: "its /dev/uioN could not be opened".into(),
        })?;
        let dup = node
            .try_clone()
            .map_err(|e| Error::os(&self.addr, "duplicating the /dev/uioN descriptor", e))?;
        Ok(crate::irq::IrqFd::uio(dup))
    }

    /// Clears the command register's INTx Disable bit, which uio_pci_generic's handler set
    /// when the line last fired (its documented way of re-enabling the interrupt).
    fn irq_unmask(&self, _index: u32) -> Result<(), Error> {
        let cmd = self.config_read16(CONFIG_COMMAND)?;
        if cmd & COMMAND_INTX_DISABLE != 0 {
            self.config_write16(CONFIG_COMMAND, cmd & !COMMAND_INTX_DISABLE)?;
        }
        Ok(())
    }

    /// INTx Disable back on.
    fn irq_release(&self, _index: u32) {
        let off = self
            .config_read16(CONFIG_COMMAND)
            .and_then(|c| self.config_write16(CONFIG_COMMAND, c | COMMAND_INTX_DISABLE));
        if let Err(e) = off {
            log::warn!("{e}");
        }
    }

    /// uio offers no reset; the drivers reset the device through its own registers.
    fn reset(&self) -> bool {
        false
    }

    fn iommu(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy virtio-net as QEMU presents it: BAR0 I/O ports, BAR1 memory (MSI-X), BAR4
    /// a 64-bit prefetchable memory BAR (so BAR5 is its upper half), then the ROM.
    const RESOURCE: &str = "\
0x000000000000c040 0x000000000000c05f 0x0000000000040101
0x00000000febd1000 0x00000000febd1fff 0x0000000000040200
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000000fe8000000 0x0000000fe8003fff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x00000000feb80000 0x00000000febbffff 0x0000000000046200
";

    #[test]
    fn reads_bars_from_sysfs_resource() {
        let bars = parse_resources(RESOURCE);
        let io = bars[0].unwrap();
        assert!(io.is_io() && !io.is_mem());
        assert_eq!(io.len(), 0x20);
        assert!(bars[1].unwrap().is_mem());
        assert_eq!(bars[4].unwrap().len(), 0x4000);
        assert_eq!(bars[2], None);
        assert_eq!(bars[5], None, "upper half of the 64-bit BAR4");
        assert_eq!(parse_resources(""), [None; 6]);
        assert_eq!(parse_resources("junk\n0x1 zz 0x200\n"), [None; 6]);
    }

    #[test]
    fn not_bound_names_the_driver_and_the_fix() {
        let addr: PciAddr = "0000:00:03.0".parse().unwrap();
        let e = not_bound(&addr, Some("virtio-pci")).to_string();
        assert_eq!(
            e,
            "0000:00:03.0 is bound to virtio-pci, not uio_pci_generic: run \
             `zcnic bind 0000:00:03.0 --driver uio_pci_generic` first"
        );
        assert!(not_bound(&addr, None)
            .to_string()
            .contains("bound to no driver"));
    }

    #[test]
    fn opening_a_missing_device_says_so() {
        let addr: PciAddr = "0000:ff:1f.7".parse().unwrap();
        let e = UioDevice::open(&addr).unwrap_err();
        assert!(matches!(e, Error::NoSuchDevice(_)), "{e}");
    }
}
