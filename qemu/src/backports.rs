//! QEMU 8.0 or newer for every guest: the igb model (82576) arrived in 8.0, and Debian
//! bookworm ships 7.2. bookworm-backports has QEMU 10, so as root the harness adds that
//! suite (copied from the machine's own Debian entry: no host name is written here) and
//! installs `qemu-system-x86` from it. The whole suite then runs on one QEMU.

use crate::deps::{apt, apt_update, is_root, output, which, QEMU};
use crate::Error;
use std::path::Path;
use std::process::Command;

/// The oldest QEMU the harness runs: the first with `-device igb`.
pub const MIN_QEMU: (u32, u32) = (8, 0);
/// The apt source file the harness writes.
const SOURCE: &str = "/etc/apt/sources.list.d/zcnic-bookworm-backports.sources";

/// (major, minor) of `QEMU emulator version 7.2.22 (Debian …)`.
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split("version ").nth(1)?.split_whitespace().next()?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The version of the QEMU at `qemu`.
pub fn version(qemu: &Path) -> Option<(u32, u32)> {
    let out = Command::new(qemu).arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

/// The machine's apt entries a suite's entry is copied from.
const HOST_SOURCES: [&str; 2] = [
    "/etc/apt/sources.list.d/debian.sources",
    "/etc/apt/sources.list",
];

/// [`suite_entry`] made from the first of the machine's apt files that has a bookworm
/// entry to copy.
pub fn host_entry(suite: &str) -> Option<String> {
    HOST_SOURCES
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|t| suite_entry(&t, suite))
}

/// A deb822 entry for `suite` (bookworm-backports, trixie-backports) made from `existing`
/// (the machine's Debian `.sources` file): its first stanza whose suites include
/// `bookworm`, with only the suites changed; or, from a one-line `sources.list`, its first
/// `deb … bookworm …` line turned into one stanza. `None` when there is no bookworm entry
/// to copy.
pub fn suite_entry(existing: &str, suite: &str) -> Option<String> {
    for stanza in existing.split("\n\n") {
        let lines: Vec<&str> = stanza
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        let is_bookworm = lines.iter().any(|l| {
            l.strip_prefix("Suites:")
                .is_some_and(|s| s.split_whitespace().any(|s| s == "bookworm"))
        });
        if is_bookworm {
            let mut out: Vec<String> = lines
                .iter()
                .map(|l| {
                    if l.starts_with("Suites:") {
                        format!("Suites: {suite}")
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            out.push(String::new());
            return Some(out.join("\n"));
        }
    }
    let line = existing.lines().find(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.first() == Some(&"deb") && w.contains(&"bookworm")
    })?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "bookworm")?;
    let uri = words[..at].iter().rev().find(|w| w.contains("://"))?;
    let components = words[at + 1..].join(" ");
    Some(format!(
        "Types: deb\nURIs: {uri}\nSuites: {suite}\nComponents: {components}\n"
    ))
}

/// Makes sure `qemu-system-x86_64` is installed and at least [`MIN_QEMU`]: as root,
/// installs it from bookworm-backports (straight from there when it is missing: bookworm's
/// 7.2 cannot be installed beside the newer `qemu-system-common` a removed backports QEMU
/// leaves behind), saying so; otherwise fails with what to run.
pub fn ensure_recent_qemu() -> Result<(), Error> {
    let have = which(QEMU).and_then(|q| version(&q));
    if have.is_some_and(|v| v >= MIN_QEMU) {
        return Ok(());
    }
    let have_text = have.map_or("not installed".into(), |(a, b)| format!("{a}.{b}"));
    let fix = String::from(
        "as root, add a bookworm-backports entry under /etc/apt/sources.list.d/ (a copy of your Debian entry with `Suites: bookworm-backports`), `apt-get update`, `apt-get install -t bookworm-backports qemu-system-x86`; or run this command as root, which does that"
    );
    if !is_root() {
        return Err(Error::Missing {
            what: format!(
                "QEMU >= {}.{} (the igb NIC model; this QEMU is {have_text})",
                MIN_QEMU.0, MIN_QEMU.1
            ),
            fix,
        });
    }
    if !Path::new(SOURCE).exists() {
        let existing = host_entry("bookworm-backports").ok_or_else(|| Error::Missing {
            what: "a Debian bookworm apt entry to copy for bookworm-backports".into(),
            fix: fix.clone(),
        })?;
        eprintln!("zcnic-qemu: QEMU {have_text}, and igb needs 8.0 or newer: adding bookworm-backports ({SOURCE}) for QEMU 10");
        std::fs::write(SOURCE, existing).map_err(Error::io(format!("writing {SOURCE}")))?;
    }
    apt_update()?;
    eprintln!("zcnic-qemu: apt-get install -t bookworm-backports qemu-system-x86");
    let mut cmd = apt("apt-get");
    cmd.args([
        "install",
        "-y",
        "--no-install-recommends",
        "-t",
        "bookworm-backports",
        "qemu-system-x86",
    ]);
    output(&mut cmd, "")?;
    match which(QEMU).and_then(|q| version(&q)) {
        Some(v) if v >= MIN_QEMU => {
            eprintln!("zcnic-qemu: QEMU {}.{} installed", v.0, v.1);
            Ok(())
        }
        _ => Err(Error::Missing {
            what: format!(
                "QEMU >= {}.{} after installing from backports",
                MIN_QEMU.0, MIN_QEMU.1
            ),
            fix,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        let v = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright";
        assert_eq!(parse_version(v), Some((7, 2)));
        assert_eq!(
            parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1~bpo12+1)"),
            Some((10, 0))
        );
        assert_eq!(parse_version("nonsense"), None);
        assert!((10, 0) >= MIN_QEMU && (7, 2) < MIN_QEMU);
    }

    #[test]
    fn the_backports_entry_copies_the_machines_own_debian_entry() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n";
        assert_eq!(
            suite_entry(deb822, "bookworm-backports").unwrap(),
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        );
        let list = "# old style\ndeb http://mirror.example/debian-security bookworm-security main\ndeb [arch=amd64] http://mirror.example/debian bookworm main contrib\n";
        assert_eq!(
            suite_entry(list, "bookworm-backports").unwrap(),
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm-backports\nComponents: main contrib\n"
        );
        assert_eq!(
            suite_entry("Types: deb\nSuites: trixie\n", "bookworm-backports"),
            None
        );
    }
}
