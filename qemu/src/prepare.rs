//! Getting everything a guest needs onto the host, once per process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::deps::{self, output, which, BUSYBOX, QEMU};
use crate::{harness_dir, initramfs, kernel, workspace_root, Error, GuestKernel};

/// The Rust target of the guest build; `+crt-static` links it statically.
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Overrides the guest build with a prebuilt static zcnic binary.
const GUEST_BIN_ENV: &str = "ZCNIC_GUEST_BIN";

/// The host-side pieces of a guest, as [`prepare`] left them.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The Debian kernel package the guest kernel came from.
    pub kernel_package: String,
    /// The guest kernel (`boot/vmlinuz-*` of that package).
    pub kernel: PathBuf,
    /// The static zcnic binary copied into the guest as `/bin/zcnic`.
    pub zcnic: PathBuf,
    /// The zcnic crate's examples (`smol_echo`, `l2_filter`, `udp_probe`, `irq_cycles`,
    /// `tso_send`, `async_echo`),
    /// static, copied into the guest's `/bin`; empty when `ZCNIC_GUEST_BIN` replaces the
    /// build.
    pub examples: Vec<PathBuf>,
    /// The initramfs without `/scenario.sh`; each run appends its script to a copy.
    pub initramfs_base: PathBuf,
}

/// What the first successful [`prepare_for`] of each kernel in this process produced.
static PREPARED: Mutex<Vec<(GuestKernel, Prepared)>> = Mutex::new(Vec::new());

/// Makes guests runnable: installs QEMU and busybox-static when missing (as root),
/// fetches and unpacks the Debian guest kernel (cached in `target/zcnic-qemu/cache/`),
/// builds zcnic statically for the guest, and writes the base initramfs.
///
/// The work is done once per process; later calls return the same [`Prepared`].
/// Concurrent callers wait for the first. [`run`](crate::run) calls it.
///
/// The guest build is `cargo build --release -p zcnic-tools --target
/// x86_64-unknown-linux-gnu` into `target/guest/` with `RUSTFLAGS=-C
/// target-feature=+crt-static` (using `$CARGO` when set). Set `ZCNIC_GUEST_BIN` to a
/// static binary to use it instead.
///
/// ```no_run
/// let prepared = zcnic_qemu::prepare()?;
/// println!("guest kernel {}", prepared.kernel.display());
/// # Ok::<(), zcnic_qemu::Error>(())
/// ```
pub fn prepare() -> Result<Prepared, Error> {
    prepare_for(GuestKernel::Bookworm)
}

/// [`prepare`] for a guest booting `which` kernel: its own kernel package and initramfs
/// base (the modules differ), the same QEMU and zcnic.
pub fn prepare_for(kind: GuestKernel) -> Result<Prepared, Error> {
    let mut cached = PREPARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, prepared)) = cached.iter().find(|(k, _)| *k == kind) {
        return Ok(prepared.clone());
    }
    let prepared = prepare_uncached(kind)?;
    cached.push((kind, prepared.clone()));
    Ok(prepared)
}

fn prepare_uncached(kind: GuestKernel) -> Result<Prepared, Error> {
    // igb needs QEMU >= 8: bookworm-backports' QEMU 10 runs every guest.
    crate::backports::ensure_recent_qemu()?;
    deps::ensure_host_packages()?;
    let qemu = which(QEMU).ok_or_else(|| Error::Missing {
        what: QEMU.into(),
        fix: deps::install_command(),
    })?;
    let cache = harness_dir().join("cache");
    let started = Instant::now();
    let kernel = kernel::fetch(&cache, kind)?;
    note(started, &format!("guest kernel {}", kernel.package));
    let started = Instant::now();
    let zcnic = guest_zcnic()?;
    let examples = if std::env::var_os(GUEST_BIN_ENV).is_some() {
        Vec::new()
    } else {
        guest_examples()?
    };
    note(started, &format!("guest zcnic {}", zcnic.display()));
    let initramfs_base = cache.join(match kind {
        GuestKernel::Bookworm => "initramfs-base.cpio",
        GuestKernel::Backports => "initramfs-base-backports.cpio",
        GuestKernel::TrixieBackports => "initramfs-base-trixie-backports.cpio",
    });
    let mut bins = vec![zcnic.clone()];
    bins.extend(examples.iter().cloned());
    initramfs::write_base(&initramfs_base, Path::new(BUSYBOX), &bins, &kernel.modules)?;
    Ok(Prepared {
        qemu,
        kernel_package: kernel.package,
        kernel: kernel.vmlinuz,
        zcnic,
        examples,
        initramfs_base,
    })
}

/// Reports a step that took long enough for someone to wonder.
fn note(started: Instant, what: &str) {
    let took = started.elapsed();
    if took.as_secs() >= 5 {
        eprintln!("zcnic-qemu: {what} ready after {:.0} s", took.as_secs_f64());
    }
}

/// Names of the zcnic crate's examples the guest gets.
const EXAMPLES: [&str; 6] = [
    "smol_echo",
    "l2_filter",
    "udp_probe",
    "irq_cycles",
    "tso_send",
    "async_echo",
];

/// `cargo build` for the guest target: static, in `target/guest`.
fn guest_build(args: &[&str]) -> Result<PathBuf, Error> {
    let target_dir = workspace_root().join("target").join("guest");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--release", "--target", GUEST_TARGET])
        .args(args)
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags given to an outer cargo would override RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    output(
        &mut cmd,
        &format!("fix the build, or set {GUEST_BIN_ENV} to a static zcnic binary"),
    )?;
    Ok(target_dir.join(GUEST_TARGET).join("release"))
}

/// The examples, built statically for the guest.
fn guest_examples() -> Result<Vec<PathBuf>, Error> {
    let dir = guest_build(&["-p", "zcnic", "--features", "smoltcp", "--examples"])?;
    EXAMPLES
        .iter()
        .map(|name| {
            let bin = dir.join("examples").join(name);
            if bin.is_file() {
                Ok(bin)
            } else {
                Err(Error::Image(format!(
                    "the guest build left no {}",
                    bin.display()
                )))
            }
        })
        .collect()
}

/// The static zcnic for the guest: `$ZCNIC_GUEST_BIN`, or a fresh (incremental) build.
fn guest_zcnic() -> Result<PathBuf, Error> {
    if let Some(bin) = std::env::var_os(GUEST_BIN_ENV) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            return Err(Error::Image(format!(
                "{GUEST_BIN_ENV}={} is not a file: point it at a static zcnic, or unset it to build one",
                bin.display()
            )));
        }
        return Ok(bin);
    }
    let dir = guest_build(&["-p", "zcnic-tools"])?;
    let bin = dir.join("zcnic");
    if !bin.is_file() {
        return Err(Error::Image(format!(
            "the guest build left no {}",
            bin.display()
        )));
    }
    Ok(bin)
}
