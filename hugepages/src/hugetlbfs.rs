//! hugetlbfs-backed DMA memory: 2 MiB pages that never move or swap, so a device may keep
//! their addresses for as long as the mapping lives.

use crate::region::Backing;
use crate::{Access, DmaAllocator, DmaError, DmaRegion, IovaMapper};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Size of the hugepages zcnic uses.
pub const HUGEPAGE: usize = 2 << 20;

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
const SYSFS_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

/// The 2 MiB hugepage pool of the system and where hugetlbfs is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugepageStatus {
    /// Pages reserved.
    pub total: usize,
    /// Pages not yet in use.
    pub free: usize,
    /// A hugetlbfs mount point, if any.
    pub mount: Option<PathBuf>,
}

fn read_count(path: &str) -> Result<usize, DmaError> {
    let io = |source| DmaError::Io {
        what: "cannot read",
        path: path.into(),
        source,
    };
    let s = fs::read_to_string(path).map_err(io)?;
    s.trim().parse().map_err(|_| DmaError::Io {
        what: "unexpected contents in",
        path: path.into(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidData),
    })
}

impl HugepageStatus {
    /// Reads the current state from sysfs and `/proc/mounts`.
    pub fn read() -> Result<Self, DmaError> {
        Ok(Self {
            total: read_count(&format!("{SYSFS_2M}/nr_hugepages"))?,
            free: read_count(&format!("{SYSFS_2M}/free_hugepages"))?,
            mount: hugetlbfs_mount(),
        })
    }

    /// Sets the number of reserved 2 MiB pages (needs root) and returns the new state; the
    /// kernel may grant fewer than asked when memory is fragmented.
    pub fn reserve(pages: usize) -> Result<Self, DmaError> {
        fs::write(NR_HUGEPAGES, format!("{pages}\n")).map_err(|source| DmaError::Io {
            what: "cannot write",
            path: NR_HUGEPAGES.into(),
            source,
        })?;
        Self::read()
    }
}

/// The first hugetlbfs mount with 2 MiB pages listed in `/proc/mounts`.
pub fn hugetlbfs_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    parse_mounts(&mounts)
}

fn parse_mounts(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_src, dir, fstype, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
        let two_mib = !opts.contains("pagesize=") || opts.contains("pagesize=2M");
        (fstype == "hugetlbfs" && two_mib).then(|| PathBuf::from(dir))
    })
}

/// Mounts hugetlbfs at `dir` (created if missing). Needs root.
pub fn mount_hugetlbfs(dir: &Path) -> Result<(), DmaError> {
    let io = |what, source| DmaError::Io {
        what,
        path: dir.into(),
        source,
    };
    fs::create_dir_all(dir).map_err(|e| io("cannot create", e))?;
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| DmaError::Invalid(format!("path {} has a NUL byte", dir.display())))?;
    let fstype = c"hugetlbfs";
    let options = c"pagesize=2M";
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io(
            "cannot mount hugetlbfs on",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Allocates DMA memory from hugetlbfs in whole 2 MiB pages and maps it for the device.
pub struct HugepageAllocator {
    dir: PathBuf,
    mapper: Arc<dyn IovaMapper>,
    seq: AtomicU32,
}

impl std::fmt::Debug for HugepageAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugepageAllocator")
            .field("dir", &self.dir)
            .finish()
    }
}

impl HugepageAllocator {
    /// An allocator on the first 2 MiB hugetlbfs mount, mapping through `mapper`.
    pub fn new(mapper: Arc<dyn IovaMapper>) -> Result<Self, DmaError> {
        let dir = hugetlbfs_mount().ok_or(DmaError::NotMounted)?;
        Ok(Self {
            dir,
            mapper,
            seq: AtomicU32::new(0),
        })
    }

    fn check_free(pages: usize) -> Result<(), DmaError> {
        let st = HugepageStatus::read()?;
        if st.free < pages {
            return Err(DmaError::TooFewHugepages {
                needed: pages,
                free: st.free,
                suggest: st.total + (pages - st.free).max(64),
            });
        }
        Ok(())
    }
}

impl DmaAllocator for HugepageAllocator {
    fn alloc(&self, len: usize) -> Result<DmaRegion, DmaError> {
        if len == 0 {
            return Err(DmaError::Invalid("zero-length region".into()));
        }
        let pages = len.div_ceil(HUGEPAGE);
        let size = pages * HUGEPAGE;
        Self::check_free(pages)?;
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("zcnic-{}-{n}", std::process::id()));
        let io = |what, source| DmaError::Io {
            what,
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io("cannot create", e))?;
        // The file only names the pages; once mapped they live as long as the mapping, so
        // remove it at once and leave nothing behind if the process dies.
        let _ = fs::remove_file(&path);
        file.set_len(size as u64)
            .map_err(|e| io("cannot size", e))?;
        let map = memmap2::MmapOptions::new()
            .len(size)
            .populate()
            .map_raw(&file)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOMEM) => DmaError::TooFewHugepages {
                    needed: pages,
                    free: 0,
                    suggest: pages + 64,
                },
                _ => io("cannot map", e),
            })?;
        let ptr =
            NonNull::new(map.as_mut_ptr()).ok_or_else(|| DmaError::Invalid("null map".into()))?;
        let iovas = self.mapper.map(ptr.as_ptr(), size, Access::ReadWrite)?;
        Ok(DmaRegion::new(
            ptr,
            size,
            iovas,
            self.mapper.clone(),
            Backing::Map(map),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_2m_hugetlbfs_mount() {
        let m = "sysfs /sys sysfs rw 0 0\n\
                 hugetlbfs /mnt/huge1g hugetlbfs rw,relatime,pagesize=1024M 0 0\n\
                 hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n";
        assert_eq!(parse_mounts(m), Some(PathBuf::from("/dev/hugepages")));
        assert_eq!(
            parse_mounts("none /x hugetlbfs rw 0 0"),
            Some(PathBuf::from("/x"))
        );
        assert_eq!(parse_mounts("proc /proc proc rw 0 0"), None);
    }

    #[test]
    fn too_few_pages_names_the_command() {
        let e = DmaError::TooFewHugepages {
            needed: 8,
            free: 0,
            suggest: 64,
        };
        assert!(e.to_string().contains("zcnic hugepages --reserve 64"));
    }
}
