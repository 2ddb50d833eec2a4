//! The guest's initramfs: an uncompressed newc cpio archive, written here.
//!
//! Layout of the base archive, built once per [`prepare`](crate::prepare):
//!
//! | path | what |
//! |---|---|
//! | `/init` | `guest/init.sh`: mounts, loads boot modules, runs the scenario, powers off |
//! | `/bin/busybox` | the host's busybox-static; `/init` installs its applet links |
//! | `/bin/zcnic` | the static guest build of zcnic-tools |
//! | `/bin/smol_echo`, `/bin/l2_filter`, `/bin/udp_probe`, `/bin/tso_send` | the zcnic crate's examples |
//! | `/bin/modload` | `guest/modload.sh`: `modload e1000` loads a module after its deps |
//! | `/modules/NAME.ko` | kernel modules, flat |
//! | `/modules/deps` | `NAME DEP...` per module, for modload |
//! | `/modules/boot` | the modules `/init` loads, in order |
//! | `/dev/console` | char 5:1, so the kernel can give init a console before devtmpfs |
//!
//! Each run appends a second archive holding `/scenario.sh`; the kernel unpacks
//! concatenated archives in order.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::kernel::Module;
use crate::Error;

const INIT: &str = include_str!("../guest/init.sh");
const MODLOAD: &str = include_str!("../guest/modload.sh");

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// Writer of a newc ("070701") cpio archive, as the kernel's initramfs unpacker reads it.
#[derive(Debug)]
pub(crate) struct Cpio {
    buf: Vec<u8>,
    next_ino: u32,
}

impl Cpio {
    /// An empty archive whose inode numbers start at `first_ino` (archives that will be
    /// concatenated should use disjoint ranges).
    pub(crate) fn new(first_ino: u32) -> Self {
        Cpio {
            buf: Vec::new(),
            next_ino: first_ino,
        }
    }

    /// A directory; parents must come first.
    pub(crate) fn dir(&mut self, path: &str) {
        self.entry(path, S_IFDIR | 0o755, &[], (0, 0));
    }

    /// A regular file with permission bits `perm`.
    pub(crate) fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, S_IFREG | perm, data, (0, 0));
    }

    /// A character device node.
    pub(crate) fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | perm, &[], (major, minor));
    }

    /// Appends the trailer and returns the archive.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.next_ino = 0;
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.buf
    }

    fn entry(&mut self, path: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        let name = path.trim_start_matches('/');
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).expect("initramfs member over 4 GiB"),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("name length"),
            0, // check: only for the "070702" crc format
        ];
        self.buf.extend_from_slice(b"070701");
        for field in fields {
            self.buf
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    /// Header + name, and the data, each end on a 4-byte boundary.
    fn pad(&mut self) {
        let padded = self.buf.len().next_multiple_of(4);
        self.buf.resize(padded, 0);
    }
}

/// Writes the base archive to `out` (atomically: concurrent test processes share it).
pub(crate) fn write_base(
    out: &Path,
    busybox: &Path,
    bins: &[PathBuf],
    modules: &[Module],
) -> Result<(), Error> {
    let read = |p: &Path| fs::read(p).map_err(Error::io(format!("reading {}", p.display())));
    let mut cpio = Cpio::new(1);
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "root",
    ] {
        cpio.dir(dir);
    }
    for dir in ["etc", "results", "modules"] {
        cpio.dir(dir);
    }
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.file("init", 0o755, INIT.as_bytes());
    cpio.file("bin/modload", 0o755, MODLOAD.as_bytes());
    cpio.file("bin/busybox", 0o755, &read(busybox)?);
    for bin in bins {
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        cpio.file(&format!("bin/{name}"), 0o755, &read(bin)?);
    }
    for m in modules {
        cpio.file(&format!("modules/{}.ko", m.name), 0o644, &read(&m.file)?);
    }
    cpio.file("modules/deps", 0o644, deps_file(modules).as_bytes());
    cpio.file("modules/boot", 0o644, boot_file(modules).as_bytes());
    write_atomic(out, &cpio.finish())
}

/// `/modules/deps`: one line per module, its name then its dependencies.
fn deps_file(modules: &[Module]) -> String {
    modules
        .iter()
        .map(|m| format!("{} {}\n", m.name, m.deps.join(" ")))
        .collect()
}

/// `/modules/boot`: the boot modules in load order, space-separated.
fn boot_file(modules: &[Module]) -> String {
    let names: Vec<&str> = modules
        .iter()
        .filter(|m| m.boot)
        .map(|m| m.name.as_str())
        .collect();
    names.join(" ") + "\n"
}

/// Writes a run's initramfs: the base archive followed by one holding `/scenario.sh`.
pub(crate) fn write_run(
    base: &Path,
    script: &str,
    files: &[(PathBuf, String)],
    out: &Path,
) -> Result<(), Error> {
    let mut image = fs::read(base).map_err(Error::io(format!("reading {}", base.display())))?;
    let mut cpio = Cpio::new(1 << 24);
    cpio.file("scenario.sh", 0o755, script.as_bytes());
    let mut dirs: Vec<String> = Vec::new();
    for (host, guest) in files {
        let guest = guest.trim_start_matches('/');
        // Parent directories first (the kernel creates none implicitly).
        let parts: Vec<&str> = guest.split('/').collect();
        for i in 1..parts.len() {
            let d = parts[..i].join("/");
            if !dirs.contains(&d) {
                cpio.dir(&d);
                dirs.push(d);
            }
        }
        let data = fs::read(host).map_err(Error::io(format!("reading {}", host.display())))?;
        cpio.file(guest, 0o755, &data);
    }
    image.extend_from_slice(&cpio.finish());
    fs::write(out, image).map_err(Error::io(format!("writing {}", out.display())))
}

fn write_atomic(out: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, out)
    };
    write().map_err(Error::io(format!("writing {}", out.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed member: (name, mode, rdev major, rdev minor, data).
    type Member = (String, u32, u32, u32, Vec<u8>);

    /// Reads a newc archive back, checking alignment; stops at the trailer.
    fn parse(mut buf: &[u8]) -> Vec<Member> {
        let start = buf.len();
        let mut out = Vec::new();
        loop {
            assert_eq!((start - buf.len()) % 4, 0, "member not 4-byte aligned");
            assert_eq!(&buf[..6], b"070701");
            let field = |i: usize| {
                let hex = std::str::from_utf8(&buf[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(hex, 16).unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let (major, minor) = (field(9), field(10));
            let name = String::from_utf8(buf[110..110 + namesize - 1].to_vec()).unwrap();
            assert_eq!(buf[110 + namesize - 1], 0);
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = buf[data_at..data_at + size].to_vec();
            buf = &buf[(data_at + size).next_multiple_of(4)..];
            if name == "TRAILER!!!" {
                assert!(buf.is_empty(), "bytes after the trailer");
                return out;
            }
            out.push((name, mode, major, minor, data));
        }
    }

    #[test]
    fn archive_round_trips() {
        let mut cpio = Cpio::new(1);
        cpio.dir("/bin");
        cpio.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n");
        cpio.file("odd", 0o644, b"12345");
        cpio.char_dev("dev/console", 0o600, 5, 1);
        let members = parse(&cpio.finish());
        let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(names, ["bin", "bin/hello", "odd", "dev/console"]);
        assert_eq!(members[0].1, S_IFDIR | 0o755);
        assert_eq!(members[1].1, S_IFREG | 0o755);
        assert_eq!(members[1].4, b"#!/bin/sh\necho hi\n");
        assert_eq!(members[2].4, b"12345");
        assert_eq!(
            (members[3].1, members[3].2, members[3].3),
            (S_IFCHR | 0o600, 5, 1)
        );
    }

    #[test]
    fn header_is_110_bytes_and_fields_are_hex() {
        let bytes = Cpio::new(0x1234).finish();
        // The trailer alone: 110-byte header + "TRAILER!!!\0" (11) padded to 124.
        assert_eq!(bytes.len(), 124);
        assert!(bytes[6..110].iter().all(u8::is_ascii_hexdigit));
    }

    #[test]
    fn module_lists_for_the_guest() {
        let m = |name: &str, deps: &[&str], boot| Module {
            name: name.into(),
            file: Default::default(),
            deps: deps.iter().map(|d| d.to_string()).collect(),
            boot,
        };
        let mods = [
            m("uio", &[], true),
            m("uio_pci_generic", &["uio"], true),
            m("e1000", &[], false),
        ];
        assert_eq!(deps_file(&mods), "uio \nuio_pci_generic uio\ne1000 \n");
        assert_eq!(boot_file(&mods), "uio uio_pci_generic\n");
    }

    #[test]
    fn run_image_appends_scenario_archive() {
        let dir = std::env::temp_dir().join(format!("zcnic-cpio-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut base = Cpio::new(1);
        base.file("init", 0o755, b"x");
        let base_bytes = base.finish();
        fs::write(dir.join("base"), &base_bytes).unwrap();
        write_run(&dir.join("base"), "echo hi\n", &[], &dir.join("run")).unwrap();
        let run = fs::read(dir.join("run")).unwrap();
        assert_eq!(&run[..base_bytes.len()], &base_bytes[..]);
        let second = parse(&run[base_bytes.len()..]);
        assert_eq!(second[0].0, "scenario.sh");
        assert_eq!(second[0].4, b"echo hi\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
