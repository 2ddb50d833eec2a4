//! zcnic's QEMU guest harness.
//!
//! Boots a throw-away x86_64 guest under QEMU (TCG by default) with emulated NICs on
//! QEMU hub "wires" (or a bridged tap wire), runs a busybox `sh` script in it as `/scenario.sh`, and hands
//! back the console, the files the script left in `/results`, and per-NIC pcaps
//! recorded on the host by QEMU's `filter-dump`.
//!
//! Everything the guest needs comes from Debian packages (the kernel from
//! `linux-image-amd64`'s dependency, `busybox-static`) plus a static build of the
//! workspace's `zcnic` binary; [`prepare`] fetches and builds it once and caches it
//! under `target/zcnic-qemu/cache/`.
//!
//! In the guest:
//! - NIC `i` of [`GuestSpec::nics`] is the PCI function `0000:00:0(2+i).0` (in hex),
//!   with MAC `52:54:00:12:34:(10+i)`.
//! - vfio-pci, vfio_iommu_type1, uio_pci_generic and virtio-blk are loaded at boot;
//!   kernel NIC drivers are not, so the NICs start unbound. Scenarios load them with
//!   `modload e1000`, `modload virtio_net` or `modload pktgen` (dependencies first).
//! - 256 huge pages of 2 MiB are reserved; hugetlbfs is mounted on `/dev/hugepages`.
//! - Whatever the script writes to `/results` comes back in [`GuestRun::results`].
//!
//! ```no_run
//! use std::time::Duration;
//! use zcnic_qemu::{GuestSpec, Nic};
//!
//! let spec = GuestSpec {
//!     nics: vec![Nic::new("e1000", 0, true)],
//!     script: "cat /sys/bus/pci/devices/0000:00:02.0/device > /results/id".into(),
//!     iommu: true,
//!     cpus: 2,
//!     timeout: Duration::from_secs(120),
//!     echo: false,
//!     kernel: zcnic_qemu::GuestKernel::Bookworm,
//!     name: "doc-example".into(),
//! };
//! let run = zcnic_qemu::run(&spec)?;
//! assert_eq!(run.exit_code, 0);
//! let id = std::fs::read_to_string(run.results.join("id")).unwrap();
//! assert_eq!(id.trim(), "0x100e");
//! # Ok::<(), zcnic_qemu::Error>(())
//! ```

mod aptstate;
pub mod backports;
pub mod cores;
mod deps;
mod initramfs;
mod kernel;
mod machine;
pub mod monitor;
mod prepare;
pub mod shell;
mod tapwire;
pub mod threads;

use std::path::PathBuf;
use std::time::Duration;

pub use deps::{
    ensure_host_hugepages, ensure_host_tools, find_program, qemu_available, HostTool, GUEST_TOOLS,
    HOST_HUGEPAGES, PMDS, TESTPMD,
};
pub use kernel::GuestKernel;
pub use machine::{run, run_watched, run_with_files};
pub use monitor::{netdev_id, Monitor};
pub use prepare::{prepare, prepare_for, Prepared};

/// One emulated NIC of a guest and the wire it is plugged into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// QEMU device model with optional properties, as given to `-device`, e.g. `"e1000"` or
    /// `"virtio-net-pci,disable-legacy=on,iommu_platform=on"`. The harness appends
    /// `netdev`, `addr`, `mac` and `romfile`.
    pub model: String,
    /// QEMU hub the NIC's port joins. NICs on the same hub see each other's frames; every
    /// hub also gets a port without a device, which drops frames (the "drop sink").
    pub hub: u32,
    /// Record every frame of this NIC's port to a pcap on the host (`filter-dump`).
    pub pcap: bool,
    /// On the tap wire instead of a hub when non-zero: a tap of this many queues (QEMU's
    /// `-netdev tap,queues=N`), bridged with every other tap-wired NIC of the guest in a
    /// network namespace of the run's own (root only). What gives virtio-net several
    /// queue pairs (with `mq=on` on its device).
    pub tap_queues: u16,
}

impl Nic {
    /// A NIC of `model` on hub `hub`, recording a pcap when `pcap` is set.
    pub fn new(model: &str, hub: u32, pcap: bool) -> Self {
        Nic {
            model: model.to_string(),
            hub,
            pcap,
            tap_queues: 0,
        }
    }

    /// A NIC of `model` on the tap wire with a tap of `queues` queues.
    pub fn tap(model: &str, queues: u16, pcap: bool) -> Self {
        Nic {
            tap_queues: queues.max(1),
            ..Nic::new(model, u32::MAX, pcap)
        }
    }
}

/// What to boot and what to run in it.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// The NICs; NIC `i` sits at guest PCI address `0000:00:0(2+i).0` (hex slot `2+i`).
    pub nics: Vec<Nic>,
    /// busybox `sh` script run in the guest as `/scenario.sh`; its stdout and stderr go
    /// to the console, its exit status becomes [`GuestRun::exit_code`].
    pub script: String,
    /// Give the guest an Intel vIOMMU (`intel-iommu,caching-mode=on`, guest cmdline
    /// `intel_iommu=on iommu=pt`), which VFIO needs. Without it use uio_pci_generic.
    pub iommu: bool,
    /// Virtual CPUs (`-smp`): 2 for every suite; 1 where a test needs no second vCPU and
    /// a second one only adds TCG races (long runs of VFIO open/close behind the vIOMMU).
    pub cpus: u32,
    /// Hard limit for the scenario, counted from the moment the guest starts it (boot
    /// time does not count: booting has its own generous limit of 300 s); past it QEMU is
    /// killed and [`run`] returns [`Error::Timeout`] with the console's tail.
    pub timeout: Duration,
    /// Print guest console lines on the host's stdout as they arrive.
    pub echo: bool,
    /// The Debian kernel it boots: bookworm's 6.1 for every suite; bookworm-backports'
    /// 6.12 where a test needs what 6.1 lacks.
    pub kernel: GuestKernel,
    /// Short name, unique among concurrent runs; artifacts go to
    /// `target/zcnic-qemu/runs/<name>/`, which is emptied at the start of the run.
    pub name: String,
}

/// What a finished guest left behind.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// The whole serial console, `\r` removed, one `\n` per line.
    pub console: String,
    /// Host directory holding the files the scenario left in the guest's `/results`
    /// (plus `exit_code` and `dmesg.txt`, written by the guest's init); they travel as a
    /// tar archive on a 64 MiB disk, so keep them well below that.
    pub results: PathBuf,
    /// Per NIC of [`GuestSpec::nics`]: the host pcap when [`Nic::pcap`] was set.
    pub pcaps: Vec<Option<PathBuf>>,
    /// Exit status of `/scenario.sh`.
    pub exit_code: i32,
    /// Time from starting QEMU to the guest starting `/scenario.sh`.
    pub boot_time: Duration,
    /// Time from starting QEMU to QEMU's exit.
    pub total_time: Duration,
    /// Marks the scenario printed ([`threads::mark`]), with their time since QEMU started.
    pub marks: Vec<(Duration, String)>,
    /// QEMU's threads' CPU time, sampled through the run.
    pub threads: Vec<threads::Sample>,
}

impl GuestRun {
    /// How busy each QEMU thread was between marks `from` and `to` (busiest first), or
    /// `None` when the scenario did not print both.
    pub fn load(&self, from: &str, to: &str) -> Option<Vec<threads::ThreadLoad>> {
        let at = |name: &str| self.marks.iter().find(|m| m.1 == name).map(|m| m.0);
        Some(threads::load(&self.threads, at(from)?, at(to)?))
    }

    /// The host's median core-to-core round trip between marks `from` and `to`
    /// ([`cores`]), or `None` when it was not measured then.
    pub fn trip(&self, from: &str, to: &str) -> Option<Duration> {
        let at = |name: &str| self.marks.iter().find(|m| m.1 == name).map(|m| m.0);
        threads::trip(&self.threads, at(from)?, at(to)?)
    }
}

/// Everything that can keep a guest from running; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host tool or package is missing and we cannot install it ourselves.
    #[error("{what} not found: run `{fix}`")]
    Missing {
        /// What is missing.
        what: String,
        /// The command that installs it.
        fix: String,
    },
    /// A host command failed.
    #[error("`{command}` failed ({status}){hint}\n{output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status, or why it could not start.
        status: String,
        /// What to try, starting with `: ` (may be empty).
        hint: String,
        /// The tail of what it printed.
        output: String,
    },
    /// A host file operation failed.
    #[error("{context}: {err}")]
    Io {
        /// What we were doing, with the path.
        context: String,
        /// The underlying error.
        err: std::io::Error,
    },
    /// The guest image cannot be assembled (kernel package layout, module set).
    #[error("guest image: {0}")]
    Image(String),
    /// The [`GuestSpec`] cannot be run as given.
    #[error("invalid guest spec `{name}`: {reason}")]
    Spec {
        /// [`GuestSpec::name`].
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The guest did not reach its scenario within the boot limit, or did not finish it
    /// within [`GuestSpec::timeout`]; QEMU was killed.
    #[error("guest `{name}` timed out after {secs} s (raise GuestSpec::timeout or fix the hang); last console lines:\n{tail}")]
    Timeout {
        /// [`GuestSpec::name`].
        name: String,
        /// The timeout in seconds.
        secs: u64,
        /// The last console lines.
        tail: String,
    },
    /// QEMU ended before the guest reported the scenario's exit status.
    #[error("guest `{name}` ended ({status}) without reporting the scenario's exit status; last console lines:\n{tail}")]
    NoExit {
        /// [`GuestSpec::name`].
        name: String,
        /// QEMU's exit status and stderr.
        status: String,
        /// The last console lines.
        tail: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |err| Error::Io { context, err }
    }
}

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    root.canonicalize().unwrap_or(root)
}

/// `target/zcnic-qemu/` under the workspace root: `cache/` and `runs/` live here.
pub fn harness_dir() -> PathBuf {
    workspace_root().join("target").join("zcnic-qemu")
}

/// The last `n` lines of `text`, joined by `\n`.
pub(crate) fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
        assert_eq!(tail_lines("", 5), "");
    }

    #[test]
    fn missing_error_says_what_to_run() {
        let e = Error::Missing {
            what: "qemu-system-x86_64".into(),
            fix: "apt-get install x".into(),
        };
        assert_eq!(
            e.to_string(),
            "qemu-system-x86_64 not found: run `apt-get install x`"
        );
    }

    #[test]
    fn harness_dir_is_under_workspace_target() {
        assert!(harness_dir().ends_with("target/zcnic-qemu"));
        assert!(workspace_root().join("Cargo.toml").exists());
    }
}
