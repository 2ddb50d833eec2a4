//! DMA addresses without an IOMMU: the device is given physical addresses, read from
//! `/proc/self/pagemap`, one per 2 MiB hugepage (DPDK's `--iova-mode=pa`).
//!
//! Only hugetlbfs memory is accepted. A hugepage is physically contiguous and 2 MiB
//! aligned, so a buffer that does not cross a 2 MiB boundary is contiguous for the device
//! too; and hugetlbfs pages are never swapped out or moved by reclaim or compaction.
//! Ordinary (or transparent-huge) pages are: the kernel may move them while the device
//! still writes to the old address. [`PhysicalMapper::map`] therefore refuses any region
//! whose memory is not hugetlbfs.
//!
//! Nothing *pins* the pages here: without an IOMMU driver userspace has no pin (VFIO's
//! MAP_DMA is what pins in VFIO mode; `mlock` stops swapping, not migration). A hugetlbfs
//! page can still be migrated by memory hot-unplug or an explicit `move_pages`/NUMA
//! migration of this process, after which the device would write to the old frame. DPDK's
//! uio mode rests on the same assumption. Prefer VFIO wherever there is an IOMMU.

use std::ops::Range;
use zcnic_hugepages::{
    physical_address, Access, AddressSpace, DmaError, Domain, IovaMapper, Iovas, HUGEPAGE,
};

const SMAPS: &str = "/proc/self/smaps";

/// IOVA = physical address. There is nothing to map or unmap: without an IOMMU the
/// device reaches all of memory already.
#[derive(Debug, Default)]
pub struct PhysicalMapper;

// SAFETY: the IOVAs are physical addresses from pagemap of hugetlbfs pages only (which
// reclaim and compaction do not move; see the module docs for what can).
unsafe impl IovaMapper for PhysicalMapper {
    /// Without an IOMMU nothing can make memory read-only for the device: `_access` is
    /// what the device is meant to do, not what it can.
    fn map(&self, va: *mut u8, len: usize, _access: Access) -> Result<Iovas, DmaError> {
        let start = va as usize;
        let refuse = |why: String| {
            DmaError::Map {
            len,
            reason: format!(
                "{why}: in no-IOMMU mode the device is given physical addresses, which only \
                 hugetlbfs memory keeps fixed (use zcnic's hugepage allocator; `zcnic hugepages` shows the pool)"
            ),
        }
        };
        if len == 0 || !start.is_multiple_of(HUGEPAGE) || !len.is_multiple_of(HUGEPAGE) {
            return Err(refuse(format!(
                "{len:#x} bytes at {start:#x} are not whole 2 MiB pages"
            )));
        }
        let smaps = std::fs::read_to_string(SMAPS).map_err(|source| DmaError::Io {
            what: "cannot read",
            path: SMAPS.into(),
            source,
        })?;
        if let Err(at) = check_hugetlb(&smaps, start..start + len) {
            return Err(refuse(format!("memory at {at:#x} is not hugepage-backed")));
        }
        let mut pages = Vec::with_capacity(len / HUGEPAGE);
        for off in (0..len).step_by(HUGEPAGE) {
            let pa = physical_address(va.wrapping_add(off))?;
            if !(pa as usize).is_multiple_of(HUGEPAGE) {
                return Err(refuse(format!(
                    "the page at {:#x} is at physical {pa:#x}, not a 2 MiB page",
                    start + off
                )));
            }
            pages.push(pa);
        }
        Ok(Iovas::PerPage(pages.into()))
    }

    /// Nothing was mapped. The driver has stopped the device's DMA before a region goes.
    fn unmap(&self, _iovas: &Iovas, _len: usize) {}

    fn domain(&self) -> Domain {
        Domain::physical(0)
    }

    fn space(&self) -> AddressSpace {
        AddressSpace::Physical
    }
}

/// One mapping of `/proc/self/smaps`: its address range and the page size backing it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vma {
    range: Range<usize>,
    page_kib: u64,
}

/// The mappings listed in smaps text (kernel `Documentation/filesystems/proc.rst`): a
/// header line `start-end perms offset dev inode [path]`, then `Key: value` lines, among
/// them `KernelPageSize: 2048 kB` for a hugetlbfs mapping of 2 MiB pages.
fn parse_smaps(text: &str) -> Vec<Vma> {
    let mut out: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                out.push(Vma {
                    range: a..b,
                    page_kib: 0,
                });
                continue;
            }
        }
        if let (Some(rest), Some(vma)) = (line.strip_prefix("KernelPageSize:"), out.last_mut()) {
            let kib = rest.trim().trim_end_matches("kB").trim();
            vma.page_kib = kib.parse().unwrap_or(0);
        }
    }
    out
}

/// Checks every byte of `range` lies in mappings backed by pages of 2 MiB or more; on
/// failure, the first address that does not.
fn check_hugetlb(smaps: &str, range: Range<usize>) -> Result<(), usize> {
    let vmas = parse_smaps(smaps);
    let mut at = range.start;
    while at < range.end {
        let vma = vmas
            .iter()
            .find(|v| v.range.contains(&at))
            .filter(|v| v.page_kib * 1024 >= HUGEPAGE as u64)
            .ok_or(at)?;
        at = vma.range.end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use zcnic_hugepages::{DmaAllocator, HugepageAllocator};

    const SMAPS_SAMPLE: &str = "\
55d0c0000000-55d0c0021000 r--p 00000000 08:01 1234     /usr/bin/zcnic
Size:                132 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
VmFlags: rd mr mw me dw sd
7f0000000000-7f0000400000 rw-s 00000000 00:2e 99       /dev/hugepages/zcnic-7-0 (deleted)
Size:               4096 kB
KernelPageSize:     2048 kB
MMUPageSize:        2048 kB
VmFlags: rd wr sh mr mw me ms de ht sd
7f0000400000-7f0000600000 rw-s 00000000 00:2e 100      /dev/hugepages/zcnic-7-1 (deleted)
KernelPageSize:     2048 kB
7f0000600000-7f0000800000 rw-p 00000000 00:00 0
KernelPageSize:        4 kB
";

    #[test]
    fn reads_mappings_and_page_sizes_from_smaps() {
        let vmas = parse_smaps(SMAPS_SAMPLE);
        assert_eq!(vmas.len(), 4);
        assert_eq!(vmas[1].range, 0x7f00_0000_0000..0x7f00_0040_0000);
        assert_eq!(vmas[1].page_kib, 2048);
        assert_eq!(vmas[3].page_kib, 4);
    }

    #[test]
    fn accepts_hugetlb_ranges_across_mappings_and_refuses_the_rest() {
        let base = 0x7f00_0000_0000;
        assert_eq!(check_hugetlb(SMAPS_SAMPLE, base..base + 0x60_0000), Ok(()));
        assert_eq!(
            check_hugetlb(SMAPS_SAMPLE, base + 0x40_0000..base + 0x80_0000),
            Err(base + 0x60_0000),
            "anonymous 4 KiB pages"
        );
        assert_eq!(
            check_hugetlb(SMAPS_SAMPLE, 0x1000_0000..0x1020_0000),
            Err(0x1000_0000),
            "not mapped at all"
        );
    }

    #[test]
    fn refuses_memory_that_is_not_hugepage_backed() {
        // Heap memory with a 2 MiB-aligned 2 MiB window: it passes the alignment check,
        // so the refusal must come from smaps.
        let mut heap = vec![1u8; 3 * HUGEPAGE];
        let aligned = heap
            .as_mut_ptr()
            .wrapping_add((HUGEPAGE - heap.as_ptr() as usize % HUGEPAGE) % HUGEPAGE);
        let e = PhysicalMapper
            .map(aligned, HUGEPAGE, Access::ReadWrite)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not hugepage-backed"), "{e}");
        assert!(e.contains("hugetlbfs"), "says what to use: {e}");
        let e = PhysicalMapper
            .map(heap.as_mut_ptr(), 4096, Access::ReadWrite)
            .unwrap_err();
        assert!(e.to_string().contains("not whole 2 MiB pages"), "{e}");
    }

    /// The no-IOMMU DMA path on real hugepages: every page's IOVA is the physical address
    /// pagemap gives, 2 MiB aligned. Needs root and free hugepages (`cargo xtask test`
    /// reserves them): without them it skips, saying why, on a developer's box, and fails
    /// under CI (`CI`) or `cargo xtask test` (`ZCNIC_QEMU_REQUIRED`), where it must run.
    #[test]
    fn hugepage_region_gets_physical_addresses() {
        let cannot_run = |e: &dyn std::fmt::Display| {
            let required = std::env::var_os("ZCNIC_QEMU_REQUIRED").is_some()
                || std::env::var_os("CI").is_some();
            assert!(
                !required,
                "the hugepage physical-address check must run here but cannot (run as root \
                 with free 2 MiB hugepages and hugetlbfs mounted, as `cargo xtask test` does): {e}"
            );
            eprintln!("skipping the hugepage physical-address check: {e}");
        };
        let alloc = match HugepageAllocator::new(Arc::new(PhysicalMapper)) {
            Ok(a) => a,
            Err(e) => return cannot_run(&e),
        };
        let region = match alloc.alloc(2 * HUGEPAGE) {
            Ok(r) => r,
            Err(e) => return cannot_run(&e),
        };
        for off in [0, 4096, HUGEPAGE - 64, HUGEPAGE, 2 * HUGEPAGE - 1] {
            let pa = physical_address(region.as_ptr().wrapping_add(off)).unwrap();
            assert_eq!(region.iova_at(off), pa, "offset {off:#x}");
        }
        assert_eq!(region.iova() % HUGEPAGE as u64, 0);
        assert!(region.is_contiguous(0, HUGEPAGE));
    }
}
