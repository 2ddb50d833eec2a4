//! Host prerequisites: finding tools, installing Debian packages when we are root, and
//! running host commands with errors that say what failed.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use zcnic_hugepages::{mount_hugetlbfs, HugepageStatus};

use crate::{tail_lines, Error};

/// The emulator binary.
pub(crate) const QEMU: &str = "qemu-system-x86_64";
/// busybox-static's binary, copied into the guest as its whole userland.
pub(crate) const BUSYBOX: &str = "/bin/busybox";

/// DPDK's test application, which the bench runs in the guest.
pub const TESTPMD: &str = "/usr/bin/dpdk-testpmd";
/// Where Debian's DPDK keeps its drivers (the `-d` plugins testpmd loads).
pub const PMDS: &str = "/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0";

/// A host program some `cargo xtask` command runs, and the Debian package that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostTool {
    /// `qemu-system-x86_64`: every guest.
    Qemu,
    /// `/bin/busybox` (busybox-static): the guest's userland.
    Busybox,
    /// `tshark`: tests decode `zcnic dump`'s pcaps with it.
    Tshark,
    /// `valgrind`: `cargo xtask bench --host` counts instructions with callgrind.
    Valgrind,
    /// `ethtool`: the bench reads the e1000's own transmit counter (GPTC) through the
    /// kernel driver with `ethtool -S` while kernel pktgen sends.
    Ethtool,
    /// DPDK's `dpdk-testpmd` and its e1000 and virtio drivers: the bench's peer.
    Testpmd,
    /// `ip` (iproute2): the tap wire's network namespace, bridge and taps.
    Iproute2,
}

/// What booting a guest needs; [`prepare`](crate::prepare) installs these.
pub const GUEST_TOOLS: [HostTool; 2] = [HostTool::Qemu, HostTool::Busybox];

impl HostTool {
    /// The Debian package that provides it.
    pub fn package(self) -> &'static str {
        match self {
            HostTool::Qemu => "qemu-system-x86",
            HostTool::Busybox => "busybox-static",
            HostTool::Tshark => "tshark",
            HostTool::Valgrind => "valgrind",
            HostTool::Ethtool => "ethtool",
            // testpmd is in dpdk-dev; the drivers (librte-net-*) come with dpdk, all but
            // AF_XDP's, which also brings libxdp's programs (libxdp1).
            HostTool::Testpmd => "dpdk dpdk-dev librte-net-af-xdp23",
            HostTool::Iproute2 => "iproute2",
        }
    }

    /// How it is named in messages.
    fn name(self) -> &'static str {
        match self {
            HostTool::Qemu => QEMU,
            HostTool::Busybox => "/bin/busybox (busybox-static)",
            HostTool::Tshark => "tshark",
            HostTool::Valgrind => "valgrind",
            HostTool::Ethtool => "ethtool",
            HostTool::Testpmd => "DPDK's dpdk-testpmd",
            HostTool::Iproute2 => "ip (iproute2)",
        }
    }

    fn present(self) -> bool {
        match self {
            // Only the static busybox works in the guest, and it lives at this path.
            HostTool::Busybox => Path::new(BUSYBOX).is_file(),
            HostTool::Qemu => which(QEMU).is_some(),
            HostTool::Tshark => which("tshark").is_some(),
            HostTool::Valgrind => which("valgrind").is_some(),
            HostTool::Ethtool => find_program("ethtool").is_some(),
            HostTool::Iproute2 => find_program("ip").is_some(),
            HostTool::Testpmd => {
                Path::new(TESTPMD).is_file()
                    && Path::new(&format!("{PMDS}/librte_net_e1000.so.23")).exists()
                    && Path::new(&format!("{PMDS}/librte_net_af_xdp.so.23")).exists()
            }
        }
    }
}

/// The one command that installs `tools`' packages.
fn install_command_for(tools: &[HostTool]) -> String {
    let packages: Vec<&str> = tools
        .iter()
        .flat_map(|t| t.package().split_whitespace())
        .collect();
    format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

/// The command that installs the guest's host packages, for error messages.
pub(crate) fn install_command() -> String {
    install_command_for(&GUEST_TOOLS)
}

/// `Ok` when guests can run here: QEMU and busybox are installed, or are missing but we
/// are root and [`prepare`](crate::prepare) will install them with apt-get.
///
/// `Err` holds the reason and the command to run, for tests to print when they skip.
///
/// ```
/// match zcnic_qemu::qemu_available() {
///     Ok(()) => println!("QEMU guests can run"),
///     Err(why) => println!("skipping: {why}"),
/// }
/// ```
pub fn qemu_available() -> Result<(), String> {
    match missing(&GUEST_TOOLS).first() {
        None => Ok(()),
        Some(_) if is_root() => Ok(()),
        Some(what) => Err(format!(
            "{} not found: run `{}` as root",
            what.name(),
            install_command()
        )),
    }
}

/// Those of `tools` not installed here.
fn missing(tools: &[HostTool]) -> Vec<HostTool> {
    tools.iter().copied().filter(|t| !t.present()).collect()
}

/// Installs QEMU and busybox-static with apt-get when either is missing (root only).
pub(crate) fn ensure_host_packages() -> Result<(), Error> {
    ensure_host_tools(&GUEST_TOOLS)
}

/// Makes sure every one of `tools` is installed: as root, installs the missing ones'
/// packages with apt-get (updating the package lists first if that fails); otherwise
/// fails at once with the one command to run.
///
/// ```no_run
/// use zcnic_qemu::HostTool;
/// zcnic_qemu::ensure_host_tools(&[HostTool::Tshark])?;
/// # Ok::<(), zcnic_qemu::Error>(())
/// ```
pub fn ensure_host_tools(tools: &[HostTool]) -> Result<(), Error> {
    let absent = missing(tools);
    let Some(first) = absent.first() else {
        return Ok(());
    };
    let fix = install_command_for(&absent);
    if !is_root() {
        return Err(Error::Missing {
            what: first.name().to_string(),
            fix,
        });
    }
    let install = || {
        let mut cmd = apt("apt-get");
        cmd.args(["install", "-y", "--no-install-recommends"])
            .args(absent.iter().flat_map(|t| t.package().split_whitespace()));
        output(&mut cmd, "")
    };
    if install().is_err() {
        // A fresh machine has empty or stale package lists.
        apt_update()?;
        install()?;
    }
    match missing(tools).first() {
        None => Ok(()),
        Some(what) => Err(Error::Missing {
            what: what.name().to_string(),
            fix,
        }),
    }
}

/// 2 MiB hugepages the host tests take at most at once (a port's pool and rings take ~8).
pub const HOST_HUGEPAGES: usize = 16;
/// Where [`ensure_host_hugepages`] mounts hugetlbfs when nothing is mounted (systemd's place).
const HUGETLBFS_DIR: &str = "/dev/hugepages";

/// Makes sure at least `free` 2 MiB hugepages are free and a hugetlbfs is mounted, so the
/// host tests that need real DMA memory run instead of failing: as root, reserves more
/// (`/proc/sys/vm/nr_hugepages`) and mounts hugetlbfs on `/dev/hugepages`; otherwise the
/// error says what to run as root.
pub fn ensure_host_hugepages(free: usize) -> Result<(), String> {
    let status = HugepageStatus::read().map_err(|e| format!("2 MiB hugepages: {e}"))?;
    if status.free >= free && status.mount.is_some() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "host tests need {free} free 2 MiB hugepages and a hugetlbfs mount (have {} free, \
             mount {:?}): as root, run `echo {} > /proc/sys/vm/nr_hugepages; mkdir -p {HUGETLBFS_DIR}; \
             mount -t hugetlbfs -o pagesize=2M none {HUGETLBFS_DIR}`, or run this command as root",
            status.free,
            status.mount,
            status.total + free.saturating_sub(status.free),
        ));
    }
    if status.free < free {
        let want = status.total + (free - status.free);
        let now = HugepageStatus::reserve(want).map_err(|e| format!("reserving hugepages: {e}"))?;
        if now.free < free {
            return Err(format!(
                "asked the kernel for {want} 2 MiB hugepages, got {} ({} free): memory is \
                 fragmented; reserve them early after boot",
                now.total, now.free
            ));
        }
    }
    if status.mount.is_none() {
        mount_hugetlbfs(Path::new(HUGETLBFS_DIR))
            .map_err(|e| format!("mounting hugetlbfs on {HUGETLBFS_DIR}: {e}"))?;
    }
    Ok(())
}

/// `apt-get update`, as root only.
pub(crate) fn apt_update() -> Result<(), Error> {
    if !is_root() {
        return Err(Error::Missing {
            what: "Debian package lists".into(),
            fix: "apt-get update".into(),
        });
    }
    output(apt("apt-get").arg("update"), "").map(drop)
}

/// An apt command that never asks questions.
pub(crate) fn apt(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// Whether this process runs as root (owner of `/proc/self` is the effective uid).
pub(crate) fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Finds `program` on `PATH`.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// `program` on `PATH`, or in the sbin directories a non-root `PATH` lacks.
pub fn find_program(program: &str) -> Option<PathBuf> {
    which(program).or_else(|| {
        ["/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(program))
            .find(|p| is_executable(p))
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The command line of `cmd`, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(shell_word));
    words.join(" ")
}

fn shell_word(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` to completion with captured output; a failure becomes [`Error::Command`]
/// carrying `hint` (what to try) and the tail of its stderr and stdout.
pub(crate) fn output(cmd: &mut Command, hint: &str) -> Result<Output, Error> {
    cmd.stdin(Stdio::null());
    let hint = if hint.is_empty() {
        String::new()
    } else {
        format!(": {hint}")
    };
    let out = cmd.output().map_err(|e| Error::Command {
        command: describe(cmd),
        status: format!("cannot start: {e}"),
        hint: hint.clone(),
        output: String::new(),
    })?;
    if out.status.success() {
        return Ok(out);
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Err(Error::Command {
        command: describe(cmd),
        status: out.status.to_string(),
        hint,
        output: tail_lines(&text, 30),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_finds_sh_and_not_nonsense() {
        assert!(which("sh").is_some());
        assert!(which("no-such-program-zcnic").is_none());
    }

    #[test]
    fn describe_quotes_only_when_needed() {
        let mut cmd = Command::new("echo");
        cmd.args(["plain", "two words", "it's", "a=b,c"]);
        assert_eq!(describe(&cmd), r"echo plain 'two words' 'it'\''s' a=b,c");
    }

    #[test]
    fn failing_command_reports_status_and_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo oops >&2; exit 3"]);
        let err = output(&mut cmd, "try harder").unwrap_err().to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains(": try harder"), "{err}");
        assert!(err.contains("oops"), "{err}");
    }

    #[test]
    fn install_command_names_only_what_is_asked_for() {
        assert_eq!(
            install_command_for(&[HostTool::Tshark, HostTool::Valgrind]),
            "apt-get install -y --no-install-recommends tshark valgrind"
        );
    }

    #[test]
    fn install_command_names_both_packages() {
        assert_eq!(
            install_command(),
            "apt-get install -y --no-install-recommends qemu-system-x86 busybox-static"
        );
    }
}
