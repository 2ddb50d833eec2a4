//! Physical addresses from `/proc/self/pagemap`, for devices that bypass the IOMMU (a
//! virtio device that did not negotiate ACCESS_PLATFORM reads guest-physical addresses)
//! and for no-IOMMU mode.
//!
//! Each virtual page has an 8-byte entry at `(va / 4096) * 8`: bit 63 = present, bits 0–54 =
//! page frame number (kernel `Documentation/admin-guide/mm/pagemap.rst`). The kernel shows
//! PFNs only to processes with CAP_SYS_ADMIN; others read zeros.

use crate::DmaError;
use std::fs::File;
use std::os::unix::fs::FileExt;

const PAGEMAP: &str = "/proc/self/pagemap";
const PAGE: u64 = 4096;
const PRESENT: u64 = 1 << 63;
const PFN_MASK: u64 = (1 << 55) - 1;

/// Physical address of the byte at `va`, which must be in memory (hugepages are: they are
/// populated at mmap time and never swapped).
pub fn physical_address(va: *const u8) -> Result<u64, DmaError> {
    let io = |what, source| DmaError::Io {
        what,
        path: PAGEMAP.into(),
        source,
    };
    let f = File::open(PAGEMAP).map_err(|e| io("cannot open", e))?;
    let va = va as u64;
    let mut entry = [0u8; 8];
    f.read_exact_at(&mut entry, (va / PAGE) * 8)
        .map_err(|e| io("cannot read", e))?;
    let entry = u64::from_le_bytes(entry);
    let pfn = entry & PFN_MASK;
    if entry & PRESENT == 0 || pfn == 0 {
        return Err(DmaError::Map {
            len: 0,
            reason: format!(
                "no physical address for {va:#x} in {PAGEMAP}: physical addresses need root (CAP_SYS_ADMIN)"
            ),
        });
    }
    Ok(pfn * PAGE + va % PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(
        miri,
        ignore = "reads /proc/self/pagemap: a system interface Miri isolates"
    )]
    fn translates_a_resident_page_when_root() {
        let buf = vec![1u8; 8192];
        match physical_address(buf.as_ptr()) {
            Ok(pa) => assert_eq!(pa % PAGE, buf.as_ptr() as u64 % PAGE),
            Err(e) => {
                // Not root: the kernel hides PFNs. Say so instead of passing silently.
                eprintln!("skipping pagemap check: {e}");
                assert!(e.to_string().contains("root"));
            }
        }
    }
}
