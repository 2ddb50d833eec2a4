//! `zcnic doctor`: what zcnic needs on this machine, one line each, `ok` or what to run.
//!
//! The checks read sysfs, procfs and `/lib/modules` under [`Roots`] (so tests run them on
//! fixture trees) and change nothing. A line is
//! - `ok`: this need is met;
//! - `fix`: zcnic cannot work until the command the line names is run;
//! - `note`: worth knowing, nothing to do for zcnic to work (no IOMMU while uio works, a
//!   NIC the machine is using, QEMU missing on a machine that only runs zcnic).
//!
//! Exit status: 0 when no line is `fix`, 1 otherwise (2, as for every zcnic command, is a
//! usage error).

use crate::inuse::{NicUse, Roots};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Met.
    Ok,
    /// Informational; does not fail the doctor.
    Note,
    /// Must be fixed; the text says how.
    Fix,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// How it came out.
    pub status: Status,
    /// What was checked: `root`, `iommu`, `vfio-pci`, `hugepages`, `nic 0000:00:02.0`, …
    pub name: String,
    /// What was found, and for `fix` the command to run.
    pub text: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.status {
            Status::Ok => "ok",
            Status::Note => "note",
            Status::Fix => "fix",
        };
        write!(f, "{s:<5}{}: {}", self.name, self.text)
    }
}

fn check(status: Status, name: &str, text: impl Into<String>) -> Check {
    Check {
        status,
        name: name.into(),
        text: text.into(),
    }
}

/// Pages below this cannot hold one port's rings and pool (about 8, see `zcnic hugepages`).
const MIN_PAGES: u64 = 8;

/// Every check, in the order a newcomer should fix them.
pub fn checks(roots: &Roots) -> Vec<Check> {
    let mut out = vec![privileges(roots)];
    let groups = count(&roots.sys.join("kernel/iommu_groups"));
    let vfio = module(roots, "vfio-pci", "vfio_pci");
    let uio = module(roots, "uio_pci_generic", "uio_pci_generic");
    out.push(match (groups, uio) {
        (n, _) if n > 0 => check(
            Status::Ok,
            "iommu",
            format!("{n} IOMMU groups: NICs go to vfio-pci (VFIO mode)"),
        ),
        (_, Module::Missing) => check(
            Status::Fix,
            "iommu",
            "no IOMMU and no uio_pci_generic: boot with intel_iommu=on (or amd_iommu=on), \
             or install a kernel with uio_pci_generic for no-IOMMU mode",
        ),
        _ => check(
            Status::Note,
            "iommu",
            "no IOMMU: NICs go to uio_pci_generic (no-IOMMU mode, the NIC can DMA into all \
             of memory); for VFIO boot with intel_iommu=on (or amd_iommu=on)",
        ),
    });
    // The module of the mode in use must be there; the other one is only a note.
    out.push(module_check("vfio-pci", vfio, groups > 0));
    out.push(module_check("uio_pci_generic", uio, groups == 0));
    out.extend(hugepages(roots));
    out.extend(nics(roots));
    out.push(qemu());
    out
}

/// Prints every check and returns the exit status (0: nothing to fix, 1: something to fix).
pub fn main() -> ExitCode {
    let all = checks(&Roots::from_env());
    for c in &all {
        println!("{c}");
    }
    let fixes = all.iter().filter(|c| c.status == Status::Fix).count();
    if fixes == 0 {
        println!("zcnic doctor: all ok");
        ExitCode::SUCCESS
    } else {
        println!("zcnic doctor: {fixes} to fix (the `fix` lines say what to run)");
        ExitCode::from(1)
    }
}

fn privileges(roots: &Roots) -> Check {
    // Uid: real effective saved fs; binding, hugepages and device files want effective 0.
    let status = fs::read_to_string(roots.proc.join("self/status")).unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string));
    match euid.as_deref() {
        Some("0") => check(Status::Ok, "root", "running as root"),
        Some(u) => check(
            Status::Fix,
            "root",
            format!("running as uid {u}: bind, hugepages and ports need root: run `sudo zcnic …`"),
        ),
        None => check(
            Status::Fix,
            "root",
            "cannot read /proc/self/status: mount procfs",
        ),
    }
}

/// Whether a kernel module is loaded, can be loaded, or is not in this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Module {
    Loaded,
    Loadable,
    Missing,
}

fn module(roots: &Roots, name: &str, sys_name: &str) -> Module {
    if roots.sys.join("module").join(sys_name).exists()
        || roots.sys.join("bus/pci/drivers").join(name).exists()
    {
        return Module::Loaded;
    }
    let release = fs::read_to_string(roots.proc.join("sys/kernel/osrelease")).unwrap_or_default();
    let dir = modules_dir(roots).join(release.trim());
    let listed = |file: &str| {
        fs::read_to_string(dir.join(file))
            .unwrap_or_default()
            .lines()
            .any(|l| {
                let path = l.split(':').next().unwrap_or("");
                let stem = path.rsplit('/').next().unwrap_or("");
                let stem = stem.split(".ko").next().unwrap_or("");
                stem.replace('-', "_") == sys_name
            })
    };
    if listed("modules.dep") || listed("modules.builtin") {
        Module::Loadable
    } else {
        Module::Missing
    }
}

/// `/lib/modules` beside the sysfs root (`/lib/modules` on a real machine).
fn modules_dir(roots: &Roots) -> PathBuf {
    roots
        .sys
        .parent()
        .unwrap_or(Path::new("/"))
        .join("lib/modules")
}

fn module_check(name: &str, m: Module, needed: bool) -> Check {
    let status = |ok| match (ok, needed) {
        (true, _) => Status::Ok,
        (false, true) => Status::Fix,
        (false, false) => Status::Note,
    };
    match m {
        Module::Loaded => check(Status::Ok, name, "loaded"),
        Module::Loadable => check(
            status(false),
            name,
            format!("not loaded: run `modprobe {name}`"),
        ),
        Module::Missing => check(
            status(false),
            name,
            "not in this kernel (no module, not built in)",
        ),
    }
}

fn hugepages(roots: &Roots) -> Vec<Check> {
    let dir = roots.sys.join("kernel/mm/hugepages/hugepages-2048kB");
    let read =
        |f: &str| -> Option<u64> { fs::read_to_string(dir.join(f)).ok()?.trim().parse().ok() };
    let pages = match (read("nr_hugepages"), read("free_hugepages")) {
        (Some(0), _) | (None, _) => check(
            Status::Fix,
            "hugepages",
            "no 2 MiB hugepages reserved: run `zcnic hugepages --reserve 256`",
        ),
        (Some(n), Some(free)) if free < MIN_PAGES => check(
            Status::Fix,
            "hugepages",
            format!(
                "{n} reserved but {free} free (a port needs about {MIN_PAGES}): stop what holds \
                 them, or run `zcnic hugepages --reserve {}`",
                n + 256
            ),
        ),
        (Some(n), free) => check(
            Status::Ok,
            "hugepages",
            format!("{n} reserved, {} free", free.unwrap_or(n)),
        ),
    };
    let mounts = fs::read_to_string(roots.proc.join("mounts")).unwrap_or_default();
    let mount = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"hugetlbfs")).then(|| f.get(1).unwrap_or(&"?").to_string())
    });
    let fs_check = match mount {
        Some(m) => check(Status::Ok, "hugetlbfs", format!("mounted at {m}")),
        None => check(
            Status::Fix,
            "hugetlbfs",
            "not mounted: run `zcnic hugepages --mount`",
        ),
    };
    vec![pages, fs_check]
}

/// One line per PCI network controller, and a `fix` when none is ready for zcnic.
fn nics(roots: &Roots) -> Vec<Check> {
    let devices = roots.sys.join("bus/pci/devices");
    let mut out = Vec::new();
    let mut ready = 0;
    let mut names: Vec<String> = fs::read_dir(&devices)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    for name in names {
        let dir = devices.join(&name);
        let hex = |f: &str| {
            let s = fs::read_to_string(dir.join(f)).unwrap_or_default();
            u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
        };
        if hex("class").is_none_or(|c| c >> 16 != 0x02) {
            continue;
        }
        let (vendor, device) = (hex("vendor").unwrap_or(0), hex("device").unwrap_or(0));
        let label = format!("nic {name}");
        let driver = zcnic::pci::link_name(&dir.join("driver"));
        let Some(s) = zcnic::supported(vendor as u16, device as u16) else {
            out.push(check(
                Status::Note,
                &label,
                format!("{vendor:04x}:{device:04x} is not a NIC zcnic drives"),
            ));
            continue;
        };
        let what = format!("{} {}", s.driver, s.part);
        match driver.as_deref() {
            Some(d @ ("vfio-pci" | "uio_pci_generic")) => {
                ready += 1;
                out.push(check(
                    Status::Ok,
                    &label,
                    format!("{what}, bound to {d}: ready"),
                ));
            }
            d => {
                let on = d.map_or("no driver".to_string(), |d| format!("on {d}"));
                let addr = name.parse();
                let text = match addr.map(|a| NicUse::read(roots, &a)) {
                    Ok(u) if u.active_because().is_some() => format!(
                        "{what}, {on}, in use by this machine ({}): leave it, `zcnic bind` refuses it",
                        u.active_because().unwrap_or_default()
                    ),
                    _ => format!("{what}, {on}: run `zcnic bind {name}` to use it"),
                };
                out.push(check(Status::Note, &label, text));
            }
        }
    }
    out.push(if ready > 0 {
        check(Status::Ok, "nics", format!("{ready} bound for zcnic"))
    } else if out.is_empty() {
        check(Status::Fix, "nics", "no PCI network controller found")
    } else {
        check(
            Status::Fix,
            "nics",
            "none bound for zcnic: run `zcnic bind ADDR` for a free NIC above",
        )
    });
    out
}

/// QEMU matters for `cargo xtask shell`, `demo` and `test`; zcnic itself does not need it.
fn qemu() -> Check {
    let out = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let version = text
                .split_whitespace()
                .skip_while(|w| *w != "version")
                .nth(1)
                .unwrap_or("?")
                .to_string();
            let major: u32 = version
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major >= 8 {
                check(Status::Ok, "qemu", format!("QEMU {version}"))
            } else {
                check(
                    Status::Note,
                    "qemu",
                    format!(
                        "QEMU {version}: fine for `cargo xtask`; the igb NIC needs QEMU 8 or later"
                    ),
                )
            }
        }
        _ => check(
            Status::Note,
            "qemu",
            "no qemu-system-x86_64 (only `cargo xtask` needs it, and installs it when run as root)",
        ),
    }
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}
