//! Host prerequisites: finding tools, installing Debian packages when we are root, and
//! running host commands with errors that say what failed.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{tail_lines, Error};

/// The emulator binary.
pub(crate) const QEMU: &str = "qemu-system-x86_64";
/// busybox-static's binary, copied into the guest as its whole userland.
pub(crate) const BUSYBOX: &str = "/bin/busybox";
/// The Debian packages providing [`QEMU`] and [`BUSYBOX`].
const PACKAGES: [&str; 2] = ["qemu-system-x86", "busybox-static"];

/// The command that installs the host packages, for error messages.
pub(crate) fn install_command() -> String {
    format!(
        "apt-get install -y --no-install-recommends {}",
        PACKAGES.join(" ")
    )
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
    match missing_packages() {
        None => Ok(()),
        Some(_) if is_root() => Ok(()),
        Some(what) => Err(format!(
            "{what} not found: run `{}` as root",
            install_command()
        )),
    }
}

/// Names the first missing host tool, if any.
fn missing_packages() -> Option<&'static str> {
    if which(QEMU).is_none() {
        Some(QEMU)
    } else if !Path::new(BUSYBOX).is_file() {
        Some("/bin/busybox (busybox-static)")
    } else {
        None
    }
}

/// Installs QEMU and busybox-static with apt-get when either is missing (root only).
pub(crate) fn ensure_host_packages() -> Result<(), Error> {
    let Some(what) = missing_packages() else {
        return Ok(());
    };
    if !is_root() {
        return Err(Error::Missing {
            what: what.to_string(),
            fix: install_command(),
        });
    }
    let install = || {
        let mut cmd = apt("apt-get");
        cmd.args(["install", "-y", "--no-install-recommends"])
            .args(PACKAGES);
        output(&mut cmd, "")
    };
    if install().is_err() {
        // A fresh machine has empty or stale package lists.
        apt_update()?;
        install()?;
    }
    match missing_packages() {
        None => Ok(()),
        Some(what) => Err(Error::Missing {
            what: what.to_string(),
            fix: install_command(),
        }),
    }
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
    fn install_command_names_both_packages() {
        assert_eq!(
            install_command(),
            "apt-get install -y --no-install-recommends qemu-system-x86 busybox-static"
        );
    }
}
