//! `cargo xtask shell`: the demo's guest with an interactive busybox shell on its console,
//! for a newcomer to try zcnic without risking the machine's own NICs.
//!
//! The guest is the one every QEMU test boots (zcnic in `PATH`, vfio-pci and uio loaded,
//! 256 hugepages on `/dev/hugepages`); its scenario prints the hugepages and `zcnic list`,
//! then replaces itself with `sh` on the console. QEMU runs with `-nographic`, whose
//! console multiplexer reads QEMU's stdin: with the terminal (or a pipe) there, what is
//! typed reaches the guest's ttyS0 and Ctrl-A X quits QEMU, as in any `-nographic` QEMU.
//! `exit` (or `poweroff -f`) in the shell ends the guest as well.
//!
//! [`Shell::command`] gives QEMU's command without starting it: `cargo xtask shell` hands
//! it the terminal, the test in `tests/tests/qemu_shell.rs` pipes and drives it.

use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::machine::{qemu_args, validate, RunDir};
use crate::{harness_dir, initramfs, prepare, Error, GuestSpec, Nic};

/// The guest's scenario: show the machine, then an interactive shell on the console.
/// `setsid cttyhack` makes ttyS0 the shell's controlling terminal (the console `/init`
/// got is `/dev/console`, which cannot be one), so Ctrl-C stops `zcnic pktgen` and not
/// the shell, and job control works.
pub const SCENARIO: &str = r#"zcnic hugepages
zcnic list
cat <<'EOF'

zcnic shell: a throw-away guest; nothing here touches your machine's NICs.
  zcnic bind 0000:00:02.0                       # hand the first NIC to vfio-pci
  zcnic pktgen 0000:00:02.0 --duration 5        # send 60-byte frames flat out
  zcnic doctor                                  # what zcnic needs, ok or what to run
Ctrl-A X quits QEMU; `exit` or `poweroff -f` ends the guest.
EOF
export PS1='zcnic-guest:\w# '
exec setsid cttyhack sh
"#;

/// The default NICs, as the demo has them: an e1000 and a virtio-net NIC each on a wire
/// of its own, then an e1000 and a virtio-net NIC sharing one wire.
pub const DEFAULT_NICS: &str = "e1000,virtio,e1000+virtio";

/// What `cargo xtask shell` boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shell {
    /// The NICs; NIC `i` is at `0000:00:0(2+i).0` in the guest.
    pub nics: Vec<Nic>,
    /// Give the guest a vIOMMU (VFIO mode); without it zcnic uses uio_pci_generic.
    pub iommu: bool,
    /// Extra QEMU arguments, appended as given.
    pub qemu_args: Vec<String>,
    /// Run directory name under `target/zcnic-qemu/runs/`.
    pub name: String,
}

/// `cargo xtask shell --help`.
pub const USAGE: &str = "usage: cargo xtask shell [--nics LIST] [--no-iommu] [--qemu-arg ARG]...

Boots a QEMU guest with zcnic in PATH, hugepages reserved and emulated NICs, and gives you
its shell on this terminal. Ctrl-A X quits QEMU; `exit` in the shell ends the guest.

  --nics LIST     NICs in PCI order from 0000:00:02.0, comma-separated; NICs joined by
                  `+` share a wire (what one sends the other receives), the others each
                  have a wire of their own that drops what they send.
                  Models: e1000, e1000e, igb (QEMU 8+), virtio (modern virtio-net),
                  virtio-legacy.  Default: e1000,virtio,e1000+virtio (the demo's)
  --no-iommu      no vIOMMU: zcnic bind picks uio_pci_generic (no-IOMMU mode)
  --qemu-arg ARG  pass ARG to QEMU (repeat for each word: --qemu-arg -m --qemu-arg 4096)";

impl Shell {
    /// Parses `cargo xtask shell`'s arguments.
    pub fn parse(args: &[String]) -> Result<Shell, String> {
        let mut nics = DEFAULT_NICS.to_string();
        let mut iommu = true;
        let mut qemu_args = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (a.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or(format!("{flag} needs a value\n{USAGE}"))
            };
            match flag {
                "--nics" => nics = value()?,
                "--qemu-arg" => qemu_args.push(value()?),
                "--no-iommu" => iommu = false,
                other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
            }
        }
        Ok(Shell {
            nics: parse_nics(&nics, iommu)?,
            iommu,
            qemu_args,
            name: "shell".into(),
        })
    }

    /// Prepares the guest and returns QEMU's command, not started, with stdio left for the
    /// caller to choose (the terminal for a person, pipes for a test).
    pub fn command(&self) -> Result<Command, Error> {
        let spec = GuestSpec {
            nics: self.nics.clone(),
            script: SCENARIO.into(),
            iommu: self.iommu,
            cpus: 2,
            // Unused: the shell runs as long as the person at it wants.
            timeout: Duration::ZERO,
            echo: false,
            kernel: crate::GuestKernel::Bookworm,
            name: self.name.clone(),
        };
        validate(&spec)?;
        let prepared = prepare()?;
        let dir = RunDir {
            root: harness_dir().join("runs").join(&spec.name),
        };
        if dir.root.exists() {
            fs::remove_dir_all(&dir.root)
                .map_err(Error::io(format!("emptying {}", dir.root.display())))?;
        }
        fs::create_dir_all(&dir.root)
            .map_err(Error::io(format!("creating {}", dir.root.display())))?;
        initramfs::write_run(&prepared.initramfs_base, &spec.script, &[], &dir.initrd())?;
        // /init leaves /results on this disk when the guest ends; nobody reads it here.
        let disk = fs::File::create(dir.disk()).and_then(|f| f.set_len(64 << 20));
        disk.map_err(Error::io(format!("creating {}", dir.disk().display())))?;
        let accel = std::env::var("ZCNIC_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
        let mut cmd = Command::new(&prepared.qemu);
        cmd.args(qemu_args(&spec, &accel, &prepared.kernel, &dir))
            .args(&self.qemu_args);
        Ok(cmd)
    }
}

/// `e1000,virtio,e1000+virtio` → NICs; each comma-separated group gets a wire (hub) of its
/// own.
pub fn parse_nics(list: &str, iommu: bool) -> Result<Vec<Nic>, String> {
    let mut nics = Vec::new();
    for (hub, group) in list.split(',').enumerate() {
        for name in group.split('+') {
            let model = match name.trim() {
                "e1000" => "e1000",
                "e1000e" => "e1000e",
                "igb" => "igb",
                // Behind a vIOMMU a modern device must translate through it
                // (ACCESS_PLATFORM); without one it must not ask to.
                "virtio" if iommu => "virtio-net-pci,disable-legacy=on,iommu_platform=on",
                "virtio" => "virtio-net-pci,disable-legacy=on",
                "virtio-legacy" => "virtio-net-pci,disable-modern=on",
                other => {
                    return Err(format!(
                        "--nics: unknown NIC `{other}`: use e1000, e1000e, igb, virtio or virtio-legacy"
                    ))
                }
            };
            nics.push(Nic::new(model, hub as u32, false));
        }
    }
    Ok(nics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_are_the_demos_guest() {
        let s = Shell::parse(&[]).unwrap();
        let hubs: Vec<u32> = s.nics.iter().map(|n| n.hub).collect();
        assert_eq!(hubs, [0, 1, 2, 2]);
        assert_eq!(s.nics[0].model, "e1000");
        assert!(s.nics[3].model.contains("iommu_platform=on"));
        assert!(s.iommu && s.qemu_args.is_empty());
    }

    #[test]
    fn flags_choose_nics_iommu_and_extra_qemu_words() {
        let s = Shell::parse(&args(&[
            "--nics=virtio-legacy+igb",
            "--no-iommu",
            "--qemu-arg",
            "-m",
            "--qemu-arg=4096",
        ]))
        .unwrap();
        assert_eq!(
            s.nics,
            vec![
                Nic::new("virtio-net-pci,disable-modern=on", 0, false),
                Nic::new("igb", 0, false)
            ]
        );
        assert!(!s.iommu);
        assert_eq!(s.qemu_args, ["-m", "4096"]);
        assert_eq!(
            parse_nics("virtio", false).unwrap()[0].model,
            "virtio-net-pci,disable-legacy=on"
        );
    }

    #[test]
    fn bad_arguments_say_what_is_accepted() {
        let e = Shell::parse(&args(&["--nics", "rtl8139"])).unwrap_err();
        assert!(
            e.contains("unknown NIC `rtl8139`") && e.contains("virtio-legacy"),
            "{e}"
        );
        assert!(Shell::parse(&args(&["--qemu-arg"]))
            .unwrap_err()
            .contains("needs a value"));
        assert!(Shell::parse(&args(&["--bogus"]))
            .unwrap_err()
            .starts_with("unknown argument `--bogus`"));
    }
}
