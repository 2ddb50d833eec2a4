//! The tap wire: NICs whose QEMU netdev is a (multi-queue) tap, all joined by a Linux
//! bridge inside a network namespace the harness creates for one guest run and removes
//! after it. A hub wire gives virtio-net one queue pair whatever the device says; a tap
//! with `queues=N` gives it N, and QEMU then steers received frames by its own RSS.
//!
//! Nothing outside the namespace is touched: the taps and the bridge live and die in it,
//! and it has no address and no route (IPv6 is off and the bridge does no multicast
//! snooping, so the kernel sends nothing of its own onto the wire). QEMU runs inside it (`ip netns exec`), as opening a tap by name
//! must happen where the tap is.

use crate::deps::output;
use crate::Error;
use std::process::Command;

/// A network namespace with a bridge and one tap per tap-wired NIC; removed on drop.
pub(crate) struct TapWire {
    ns: String,
    /// Where the taps' and bridge's counters go when the wire is taken down.
    stats: std::path::PathBuf,
}

/// The tap device of NIC `i` in the namespace.
pub(crate) fn tap_name(i: usize) -> String {
    format!("zt{i}")
}

/// `ip`, found in /usr/sbin when PATH lacks it.
fn ip_cmd() -> Command {
    Command::new(crate::deps::find_program("ip").unwrap_or_else(|| "ip".into()))
}

fn ip(args: &[&str]) -> Result<(), Error> {
    let mut cmd = ip_cmd();
    cmd.args(args);
    output(
        &mut cmd,
        "the tap wire needs root and iproute2 (`apt-get install iproute2`)",
    )
    .map(|_| ())
}

/// Removes namespaces runs killed before their clean-up left behind: `zcnic-…-PID` of a
/// process that is gone, and `ns` itself (a killed earlier run of this process id).
fn sweep_stale(ns: &str) {
    let Ok(out) = ip_cmd().args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let pid = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        let gone = pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists());
        if name.starts_with("zcnic-") && (gone || name == ns) {
            let _ = ip_cmd().args(["netns", "del", name]).output();
        }
    }
}

impl TapWire {
    /// Creates namespace `zcnic-<run>-<pid>` with bridge `br0` and a tap `zt<i>` for each
    /// `(i, queues)`: multi-queue when `queues > 1`, as QEMU's `queues=N` requires.
    /// On removal, the links' counters (`ip -s link`, drops included) are written to
    /// `stats`.
    pub(crate) fn create(
        run: &str,
        taps: &[(usize, u16)],
        stats: std::path::PathBuf,
    ) -> Result<Self, Error> {
        let ns = format!("zcnic-{run}-{}", std::process::id());
        sweep_stale(&ns);
        ip(&["netns", "add", &ns])?;
        let wire = Self { ns, stats };
        let ns = wire.ns.as_str();
        let mut sysctl = ip_cmd();
        sysctl.args(["netns", "exec", ns, "sysctl", "-q", "-w"]);
        sysctl.args([
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        output(&mut sysctl, "turning IPv6 off in the tap wire's namespace")?;
        ip(&[
            "-n",
            ns,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
        ])?;
        ip(&[
            "-n",
            ns,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        for &(i, queues) in taps {
            let name = tap_name(i);
            let mut add = vec!["-n", ns, "tuntap", "add", "dev", &name, "mode", "tap"];
            if queues > 1 {
                add.push("multi_queue");
            }
            ip(&add)?;
            ip(&["-n", ns, "link", "set", &name, "master", "br0", "up"])?;
        }
        // Nor IGMP of the bridge's own IPv4 stack: no multicast on it.
        ip(&["-n", ns, "link", "set", "br0", "multicast", "off", "up"])?;
        Ok(wire)
    }

    /// `cmd` run inside the namespace: `ip netns exec NS cmd…` (which execs, so the
    /// process id is the command's).
    pub(crate) fn wrap(&self, cmd: &Command) -> Command {
        let mut w = ip_cmd();
        w.args(["netns", "exec", &self.ns]).arg(cmd.get_program());
        w.args(cmd.get_args());
        w
    }
}

impl Drop for TapWire {
    fn drop(&mut self) {
        if let Ok(o) = ip_cmd()
            .args(["-n", &self.ns, "-s", "link", "show"])
            .output()
        {
            let _ = std::fs::write(&self.stats, o.stdout);
        }
        let out = ip_cmd().args(["netns", "del", &self.ns]).output();
        if !out.is_ok_and(|o| o.status.success()) {
            eprintln!(
                "zcnic-qemu: could not remove network namespace {} (`ip netns del {}`)",
                self.ns, self.ns
            );
        }
    }
}
