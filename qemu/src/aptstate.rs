//! A private apt state for one more Debian suite (trixie-backports, whose kernel is the
//! newest Debian builds for amd64): its own sources file and package lists under the
//! harness cache, used through `-o Dir::…` options. The host's apt configuration, and so
//! what `apt-get install` picks on the machine, is left alone.
//!
//! The sources entry is the host's own Debian entry (its `URIs:` and `Signed-By:`) with
//! the suite changed, as for bookworm-backports ([`crate::backports::host_entry`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::backports::host_entry;
use crate::deps::{apt, output};
use crate::Error;

/// apt with its sources and lists in `dir`, for `suite` only.
#[derive(Debug, Clone)]
pub(crate) struct AptState {
    dir: PathBuf,
    suite: &'static str,
}

impl AptState {
    /// The state of `suite` under `cache/apt-<suite>/`.
    pub fn new(cache: &Path, suite: &'static str) -> Self {
        Self {
            dir: cache.join(format!("apt-{suite}")),
            suite,
        }
    }

    /// The `-o` options that point apt at this state.
    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            "-o".into(),
            "Dir::Etc::SourceList=/dev/null".into(),
            "-o".into(),
            format!("Dir::Etc::SourceParts={d}/sources.list.d"),
            "-o".into(),
            format!("Dir::State::Lists={d}/lists"),
            "-o".into(),
            format!("Dir::Cache={d}/cache"),
        ]
    }

    /// `program` (`apt-get`, `apt-cache`) on this state.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = apt(program);
        cmd.args(self.options());
        cmd
    }

    /// Writes the suite's sources entry and runs `apt-get update` on this state.
    pub fn update(&self) -> Result<(), Error> {
        let entry = host_entry(self.suite).ok_or_else(|| Error::Missing {
            what: format!("a Debian apt entry to copy for {}", self.suite),
            fix: "a Debian machine with its mirror in /etc/apt".into(),
        })?;
        let parts = self.dir.join("sources.list.d");
        for d in [
            parts.clone(),
            self.dir.join("lists/partial"),
            self.dir.join("cache/archives/partial"),
        ] {
            fs::create_dir_all(&d).map_err(Error::io(format!("creating {}", d.display())))?;
        }
        let file = parts.join(format!("{}.sources", self.suite));
        fs::write(&file, entry).map_err(Error::io(format!("writing {}", file.display())))?;
        output(
            self.command("apt-get").arg("update"),
            "check that Debian's package mirror is reachable",
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_lives_under_the_cache_and_apt_is_told_so() {
        let s = AptState::new(Path::new("/c"), "trixie-backports");
        let o = s.options().join(" ");
        assert!(o.contains("Dir::Etc::SourceList=/dev/null"), "{o}");
        assert!(
            o.contains("Dir::Etc::SourceParts=/c/apt-trixie-backports/sources.list.d"),
            "{o}"
        );
        assert!(
            o.contains("Dir::State::Lists=/c/apt-trixie-backports/lists"),
            "{o}"
        );
    }
}
