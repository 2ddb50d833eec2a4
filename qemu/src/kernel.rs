//! The guest kernel and its modules, taken from Debian's `linux-image-amd64` dependency:
//! bookworm's (6.1) for every suite, or bookworm-backports' (6.12) for a guest that asks
//! for it ([`GuestKernel::Backports`]), or trixie-backports' newest
//! ([`GuestKernel::TrixieBackports`]). The newer kernels build the virtio core in and ship
//! their modules as `.ko.xz`: the virtio core modules are optional, and a compressed
//! module is decompressed (`xz -dc`) beside the original, once.
//!
//! The package is downloaded with `apt-get download` and unpacked with `dpkg-deb -x` into
//! `target/zcnic-qemu/cache/<package>/`, once. Module dependencies are read from each
//! `.ko`'s `.modinfo` (`depends=`), since the package ships no `modules.dep`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::aptstate::AptState;
use crate::deps::{apt, apt_update, is_root, output};
use crate::Error;

/// The metapackage whose dependency is the current kernel package.
const META: &str = "linux-image-amd64";

/// Which Debian kernel a guest boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum GuestKernel {
    /// bookworm's `linux-image-amd64` (6.1): every suite's.
    #[default]
    Bookworm,
    /// bookworm-backports' `linux-image-amd64` (6.12), for what 6.1 lacks.
    Backports,
    /// trixie-backports' `linux-image-amd64` (the newest Debian builds: 7.3 when this
    /// was written), through a private apt state (`aptstate.rs`): for what 6.12 lacks too,
    /// such as AF_XDP zero copy in virtio_net (6.13) and igb (6.14).
    TrixieBackports,
}

impl GuestKernel {
    /// `program` (`apt-get`, `apt-cache`) as it must run for this kernel's packages,
    /// with the options that pick its release.
    fn apt(self, cache: &Path, program: &str) -> Command {
        match self {
            GuestKernel::Bookworm => apt(program),
            GuestKernel::Backports => {
                let mut cmd = apt(program);
                cmd.args(["-t", "bookworm-backports"]);
                cmd
            }
            GuestKernel::TrixieBackports => trixie(cache).command(program),
        }
    }

    /// Brings this kernel's package lists up to date (root only).
    fn update(self, cache: &Path) -> Result<(), Error> {
        match self {
            GuestKernel::TrixieBackports => trixie(cache).update(),
            _ => apt_update(),
        }
    }

    /// Whether an unpacked kernel package's name is of this kind.
    fn owns(self, package: &str) -> bool {
        match self {
            GuestKernel::Bookworm => package.starts_with("linux-image-6.1."),
            GuestKernel::Backports => package.contains("+deb12"),
            GuestKernel::TrixieBackports => package.contains("+deb13"),
        }
    }
}

/// The private apt state trixie-backports' kernel comes through.
fn trixie(cache: &Path) -> AptState {
    AptState::new(cache, "trixie-backports")
}

/// A module the guest carries, by path under `lib/modules/<version>/kernel/`, no `.ko`.
struct Wanted {
    path: &'static str,
    /// Loaded by `/init`; otherwise scenarios load it with `modload`.
    boot: bool,
    /// Absent from some kernels (vfio_virqfd was folded into vfio in 6.2).
    optional: bool,
}

const fn want(path: &'static str, boot: bool, optional: bool) -> Wanted {
    Wanted {
        path,
        boot,
        optional,
    }
}

/// The guest's modules in load order (dependencies before their users).
const WANTED: &[Wanted] = &[
    want("virt/lib/irqbypass", true, false),
    want("drivers/vfio/vfio", true, false),
    want("drivers/vfio/vfio_virqfd", true, true),
    want("drivers/vfio/vfio_iommu_type1", true, false),
    want("drivers/vfio/pci/vfio-pci-core", true, false),
    want("drivers/vfio/pci/vfio-pci", true, false),
    want("drivers/uio/uio", true, false),
    want("drivers/uio/uio_pci_generic", true, false),
    // The virtio core is built in from 6.12 on (and trixie's packages list no
    // modules.builtin to tell built in from missing).
    want("drivers/virtio/virtio_ring", true, true),
    want("drivers/virtio/virtio", true, true),
    want("drivers/virtio/virtio_pci_modern_dev", true, true),
    want("drivers/virtio/virtio_pci_legacy_dev", true, true),
    want("drivers/virtio/virtio_pci", true, true),
    want("drivers/block/virtio_blk", true, false),
    want("net/core/failover", false, false),
    want("drivers/net/net_failover", false, false),
    want("drivers/net/virtio_net", false, false),
    want("drivers/net/ethernet/intel/e1000/e1000", false, false),
    // The kernel's igb driver, for bench and for giving an 82576 back to the kernel.
    want("drivers/dca/dca", false, false),
    want("drivers/i2c/algos/i2c-algo-bit", false, false),
    want("drivers/net/ethernet/intel/igb/igb", false, false),
    want("net/core/pktgen", false, false),
    // Linux's 802.1Q VLAN interfaces (`ip link add … type vlan`), a peer for VLAN tests:
    // 8021q needs mrp and garp, garp needs stp and llc, stp needs llc.
    want("net/llc/llc", false, false),
    want("net/802/stp", false, false),
    want("net/802/garp", false, false),
    want("net/802/mrp", false, false),
    want("net/8021q/8021q", false, false),
];

/// One kernel module for the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Module {
    /// File stem, e.g. `vfio-pci`; the guest has it as `/modules/<name>.ko`.
    pub name: String,
    /// The `.ko` on the host.
    pub file: PathBuf,
    /// Names (file stems) of the modules it needs loaded first.
    pub deps: Vec<String>,
    /// Loaded by `/init`.
    pub boot: bool,
}

/// The unpacked guest kernel.
#[derive(Debug, Clone)]
pub(crate) struct Kernel {
    /// The Debian package it came from.
    pub package: String,
    /// `boot/vmlinuz-*` (or `usr/lib/modules/*/vmlinuz`).
    pub vmlinuz: PathBuf,
    /// The modules of [`WANTED`] that exist, in load order.
    pub modules: Vec<Module>,
}

/// Downloads and unpacks the kernel package unless it is already in `cache`.
pub(crate) fn fetch(cache: &Path, which: GuestKernel) -> Result<Kernel, Error> {
    fs::create_dir_all(cache).map_err(Error::io(format!("creating {}", cache.display())))?;
    let package = match kernel_package(cache, which) {
        Ok(p) => p,
        // Offline or without package lists: any kernel of that kind unpacked before will do.
        Err(e) => newest_cached(cache, which).ok_or(e)?,
    };
    let root = cache.join(&package);
    if !root.join(".unpacked").exists() {
        unpack(cache, &package, which)?;
    }
    load(&package, &root)
}

/// The `linux-image-6.1.0-N-amd64` (or backports' `linux-image-6.12.N+deb12-amd64`) that
/// `linux-image-amd64` of `which` release depends on.
fn kernel_package(cache: &Path, which: GuestKernel) -> Result<String, Error> {
    let query = || -> Result<Option<String>, Error> {
        let out = output(which.apt(cache, "apt-cache").args(["depends", META]), "")?;
        Ok(parse_depends(&String::from_utf8_lossy(&out.stdout)))
    };
    if let Ok(Some(p)) = query() {
        return Ok(p);
    }
    if is_root() {
        which.update(cache)?;
        if let Some(p) = query()? {
            return Ok(p);
        }
    }
    Err(Error::Missing {
        what: format!("the kernel package {META} depends on"),
        fix: "apt-get update".into(),
    })
}

/// Picks the kernel package out of `apt-cache depends` output.
fn parse_depends(text: &str) -> Option<String> {
    depends(text).find(|p| p.starts_with("linux-image-"))
}

/// The packages an `apt-cache depends` output names after `Depends:` (not virtual ones).
fn depends(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .filter(|p| !p.starts_with('<'))
        .map(str::to_string)
}

/// The packages that make up kernel `package`: itself and, from trixie on, where the
/// image package is only a shell, its `linux-binary-*` (vmlinuz) and `linux-modules-*`.
fn parts(cache: &Path, package: &str, which: GuestKernel) -> Result<Vec<String>, Error> {
    let out = output(which.apt(cache, "apt-cache").args(["depends", package]), "")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut all = vec![package.to_string()];
    all.extend(
        depends(&text)
            .filter(|p| p.starts_with("linux-binary-") || p.starts_with("linux-modules-")),
    );
    Ok(all)
}

fn newest_cached(cache: &Path, which: GuestKernel) -> Option<String> {
    let mut found: Vec<(std::time::SystemTime, String)> = fs::read_dir(cache)
        .ok()?
        .flatten()
        .filter(|e| e.path().join(".unpacked").exists())
        .filter(|e| which.owns(&e.file_name().to_string_lossy()))
        .filter_map(|e| {
            Some((
                e.metadata().ok()?.modified().ok()?,
                e.file_name().into_string().ok()?,
            ))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, name)| name)
}

/// `apt-get download` + `dpkg-deb -x` of the kernel's packages into `cache/<package>`,
/// atomically.
fn unpack(cache: &Path, package: &str, which: GuestKernel) -> Result<(), Error> {
    let staging = cache.join(format!("{package}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(Error::io(format!("creating {}", staging.display())))?;
    output(
        which
            .apt(cache, "apt-get")
            .arg("download")
            .args(parts(cache, package, which)?)
            .current_dir(&staging),
        "check that Debian's package mirror is reachable (or run `apt-get update`)",
    )?;
    let debs: Vec<PathBuf> = fs::read_dir(&staging)
        .map_err(Error::io(format!("listing {}", staging.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    if debs.is_empty() {
        return Err(Error::Image(format!(
            "apt-get download {package} left no .deb"
        )));
    }
    let tree = staging.join("tree");
    for deb in &debs {
        output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree), "")?;
    }
    fs::write(tree.join(".unpacked"), package).map_err(Error::io("marking the kernel unpacked"))?;
    let root = cache.join(package);
    // Another process may have finished first; its tree is as good as ours.
    if !root.join(".unpacked").exists() {
        let _ = fs::remove_dir_all(&root);
        fs::rename(&tree, &root).map_err(Error::io(format!(
            "moving {} to {}",
            tree.display(),
            root.display()
        )))?;
    }
    let _ = fs::remove_dir_all(&staging);
    Ok(())
}

/// Finds vmlinuz and the wanted modules in an unpacked package.
fn load(package: &str, root: &Path) -> Result<Kernel, Error> {
    // Trixie's packages put the modules (and vmlinuz beside them) under /usr.
    let usr = root.join("usr/lib/modules");
    let version_dir = if usr.is_dir() {
        only_entry(&usr, "")?
    } else {
        only_entry(&root.join("lib/modules"), "")?
    };
    let vmlinuz = match only_entry(&root.join("boot"), "vmlinuz-") {
        Ok(v) => v,
        Err(e) => Some(version_dir.join("vmlinuz"))
            .filter(|v| v.is_file())
            .ok_or(e)?,
    };
    let kernel_dir = version_dir.join("kernel");
    let mut modules = Vec::new();
    for w in WANTED {
        let file = kernel_dir.join(format!("{}.ko", w.path));
        let packed = kernel_dir.join(format!("{}.ko.xz", w.path));
        if !file.exists() && packed.exists() {
            decompress(&packed)?;
        }
        if !file.exists() {
            if w.optional {
                continue;
            }
            return Err(Error::Image(format!(
                "{} has no {}",
                package,
                file.display()
            )));
        }
        let bytes = fs::read(&file).map_err(Error::io(format!("reading {}", file.display())))?;
        let name = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let deps = modinfo_depends(&bytes);
        modules.push(Module {
            name,
            file,
            deps,
            boot: w.boot,
        });
    }
    resolve_deps(&mut modules)?;
    Ok(Kernel {
        package: package.to_string(),
        vmlinuz,
        modules,
    })
}

/// `xz -dk`: the `.ko` beside its `.ko.xz`, written to a temporary name first so that a
/// process reading the cache never sees half a module.
fn decompress(packed: &Path) -> Result<(), Error> {
    let ko = packed.with_extension("");
    let part = packed.with_extension(format!("part-{}", std::process::id()));
    let file =
        fs::File::create(&part).map_err(Error::io(format!("creating {}", part.display())))?;
    let status = Command::new("xz")
        .args(["-dc", "--"])
        .arg(packed)
        .stdout(file)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        let _ = fs::remove_file(&part);
        return Err(Error::Missing {
            what: format!("a decompressed {}", packed.display()),
            fix: "apt-get install xz-utils".into(),
        });
    }
    fs::rename(&part, &ko).map_err(Error::io(format!(
        "moving {} to {}",
        part.display(),
        ko.display()
    )))
}

/// The single entry of `dir` whose name starts with `prefix`.
fn only_entry(dir: &Path, prefix: &str) -> Result<PathBuf, Error> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(Error::io(format!("listing {}", dir.display())))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| Error::Image(format!("nothing named {prefix}* in {}", dir.display())))
}

/// The `depends=` list of a module's `.modinfo` section (NUL-separated `key=value`).
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &ko[at + KEY.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// Module names compare with `-` and `_` alike, as the kernel does.
fn same_module(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || (x == b'-' || x == b'_') && (y == b'-' || y == b'_'))
}

/// Checks that every dependency comes earlier in the list (and that boot modules need
/// only boot modules), and rewrites dependencies to the names of the files providing them.
fn resolve_deps(modules: &mut [Module]) -> Result<(), Error> {
    for i in 0..modules.len() {
        let (before, rest) = modules.split_at_mut(i);
        let m = &mut rest[0];
        for dep in &mut m.deps {
            let Some(d) = before.iter().find(|d| same_module(&d.name, dep)) else {
                return Err(Error::Image(format!(
                    "module {} needs {dep}, which is not listed before it in kernel.rs WANTED",
                    m.name
                )));
            };
            if m.boot && !d.boot {
                return Err(Error::Image(format!(
                    "boot module {} needs non-boot module {dep}",
                    m.name
                )));
            }
            dep.clone_from(&d.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, deps: &[&str], boot: bool) -> Module {
        let deps = deps.iter().map(|d| d.to_string()).collect();
        Module {
            name: name.into(),
            file: PathBuf::new(),
            deps,
            boot,
        }
    }

    #[test]
    fn parses_apt_cache_depends() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_depends(text).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(parse_depends("E: No packages found\n"), None);
        let split = "linux-image-7.3.4+deb13-amd64\n  PreDepends: linux-base\n  Depends: <linux-initramfs-tool>\n  Depends: linux-binary-7.3.4+deb13-amd64\n  Depends: linux-modules-7.3.4+deb13-amd64\n";
        assert_eq!(
            depends(split).collect::<Vec<_>>(),
            [
                "linux-binary-7.3.4+deb13-amd64",
                "linux-modules-7.3.4+deb13-amd64"
            ]
        );
    }

    #[test]
    fn reads_depends_from_modinfo() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=vfio-pci-core,vfio\0retpoline=Y\0";
        assert_eq!(modinfo_depends(ko), ["vfio-pci-core", "vfio"]);
        assert!(modinfo_depends(b"\0depends=\0name=e1000\0").is_empty());
        assert!(modinfo_depends(b"no modinfo").is_empty());
    }

    #[test]
    fn each_kind_knows_its_packages() {
        let (b, bp, t) = (
            GuestKernel::Bookworm,
            GuestKernel::Backports,
            GuestKernel::TrixieBackports,
        );
        assert!(b.owns("linux-image-6.1.0-57-amd64"));
        assert!(!bp.owns("linux-image-6.1.0-57-amd64"));
        assert!(bp.owns("linux-image-6.12.95+deb12-amd64"));
        assert!(!b.owns("linux-image-6.12.95+deb12-amd64"));
        assert!(!t.owns("linux-image-6.12.95+deb12-amd64"));
        assert!(t.owns("linux-image-7.3.4+deb13-amd64"));
    }

    #[test]
    fn dash_and_underscore_are_the_same_module() {
        assert!(same_module("vfio-pci-core", "vfio_pci_core"));
        assert!(!same_module("vfio-pci", "vfio_pci_core"));
    }

    #[test]
    fn dependency_order_is_checked_and_names_resolved() {
        let mut good = [
            module("vfio-pci-core", &[], true),
            module("vfio-pci", &["vfio_pci_core"], true),
        ];
        assert!(resolve_deps(&mut good).is_ok());
        assert_eq!(good[1].deps, ["vfio-pci-core"]);
        let mut reversed = [
            module("virtio", &["virtio_ring"], true),
            module("virtio_ring", &[], true),
        ];
        assert!(resolve_deps(&mut reversed).is_err());
        let mut boot_needs_lazy = [
            module("failover", &[], false),
            module("net_failover", &["failover"], true),
        ];
        assert!(resolve_deps(&mut boot_needs_lazy).is_err());
    }
}
