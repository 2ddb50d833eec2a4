//! What the guest bench runs, in which order, and the scenario script that runs it.
//!
//! Every tool runs `rounds` times, interleaved (kernel, testpmd, zcnic, ceiling on the
//! e1000; the same on virtio-net; then forwarding each way; and again), so that host drift
//! during the boot spreads over all tools instead of landing on one. Each run saves the
//! tool's own output and exit status under `/results/ID.*`; nothing is parsed in the
//! guest ([`super::report`] reads it all on the host).

use super::stats::{Rule, Window};
use zcnic_qemu::{PMDS, TESTPMD};

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Sending flat out from the e1000 at 0000:00:02.0 into a drop-sink wire.
    E1000,
    /// The same from the modern virtio-net NIC at 0000:00:03.0.
    Virtio,
    /// The same from the igb (82576) at 0000:00:08.0.
    Igb,
    /// The igb again, sending from two transmit queues on the two vCPUs.
    Igb2q,
    /// A virtio-net NIC with two queue pairs on a tap (0000:00:09.0), sending from one.
    VirtioMq,
    /// The same NIC sending from both queue pairs, on the two vCPUs.
    VirtioMq2q,
    /// Forwarding from a virtio-net NIC out of an e1000, fed by a zcnic pktgen source.
    FwdVirtioE1000,
    /// Forwarding from an e1000 out of a virtio-net NIC.
    FwdE1000Virtio,
    /// The virtio-net NIC of [`Target::Virtio`] left to the kernel's virtio_net, sending
    /// through AF_XDP (zcnic's `xdp:` port, DPDK's net_af_xdp).
    VirtioXdp,
}

/// Guest PCI addresses: the senders, and the forwarding wires (source and way in share
/// a wire; the way out has a wire of its own with only the drop sink).
pub const E1000_TX: &str = "0000:00:02.0";
pub const VIRTIO_TX: &str = "0000:00:03.0";
pub const FWD_E1000_A: &str = "0000:00:04.0";
pub const FWD_VIRTIO_A: &str = "0000:00:05.0";
pub const FWD_E1000_OUT: &str = "0000:00:06.0";
pub const FWD_VIRTIO_OUT: &str = "0000:00:07.0";
/// 16 slots clear of any other igb: QEMU puts an 82576's SR-IOV functions there.
pub const IGB_TX: &str = "0000:00:08.0";
/// The virtio-net NIC with two queue pairs, on the tap wire (a hub gives one pair).
pub const VIRTIO_MQ_TX: &str = "0000:00:09.0";

impl Target {
    pub const ALL: [Target; 9] = [
        Target::E1000,
        Target::Virtio,
        Target::Igb,
        Target::Igb2q,
        Target::VirtioMq,
        Target::VirtioMq2q,
        Target::FwdVirtioE1000,
        Target::FwdE1000Virtio,
        Target::VirtioXdp,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Target::E1000 => "e1000",
            Target::Virtio => "virtio",
            Target::Igb => "igb",
            Target::Igb2q => "igb-2q",
            Target::VirtioMq => "virtio-mq",
            Target::VirtioMq2q => "virtio-mq-2q",
            Target::FwdVirtioE1000 => "fwd-virtio-e1000",
            Target::FwdE1000Virtio => "fwd-e1000-virtio",
            Target::VirtioXdp => "virtio-xdp",
        }
    }

    /// The target whose [`key`](Self::key) is `key`.
    pub fn from_key(key: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.key() == key)
    }

    pub fn label(self) -> &'static str {
        match self {
            Target::E1000 => "e1000 transmit",
            Target::Virtio => "virtio-net transmit",
            Target::Igb => "igb transmit",
            Target::Igb2q => "igb transmit, 2 queues on 2 vCPUs",
            Target::VirtioMq => "virtio-net (2 queue pairs, tap) transmit, 1 queue",
            Target::VirtioMq2q => "virtio-net (2 queue pairs, tap) transmit, 2 queues on 2 vCPUs",
            Target::FwdVirtioE1000 => "forwarding virtio-net -> e1000",
            Target::FwdE1000Virtio => "forwarding e1000 -> virtio-net",
            Target::VirtioXdp => "virtio-net transmit over AF_XDP (the kernel's virtio_net)",
        }
    }

    /// The measure: the device's counter where the NIC that sends has one.
    pub fn rule(self) -> Rule {
        match self {
            Target::E1000 | Target::Igb | Target::Igb2q => Rule::DeviceDelta,
            _ => Rule::MedianPerSecond,
        }
    }

    pub fn tools(self) -> &'static [Tool] {
        match self {
            Target::E1000 | Target::Virtio | Target::Igb => {
                &[Tool::Kernel, Tool::Testpmd, Tool::Zcnic, Tool::Ceiling]
            }
            Target::Igb2q | Target::VirtioMq | Target::VirtioMq2q | Target::VirtioXdp => {
                &[Tool::Testpmd, Tool::Zcnic]
            }
            _ => &[Tool::Zcnic, Tool::Hybrid, Tool::Testpmd],
        }
    }

    /// (source, way in, way out) of a forwarding target. The way in has the lower PCI
    /// address, so it is testpmd's port 0 and the way out its port 1.
    pub fn fwd_ports(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Target::FwdVirtioE1000 => Some((FWD_E1000_A, FWD_VIRTIO_A, FWD_E1000_OUT)),
            Target::FwdE1000Virtio => Some((FWD_VIRTIO_A, FWD_E1000_A, FWD_VIRTIO_OUT)),
            _ => None,
        }
    }

    fn sender(self) -> &'static str {
        match self {
            Target::E1000 => E1000_TX,
            Target::Igb | Target::Igb2q => IGB_TX,
            Target::VirtioMq | Target::VirtioMq2q => VIRTIO_MQ_TX,
            _ => VIRTIO_TX,
        }
    }

    /// Sent through AF_XDP on an interface the kernel drives.
    pub fn af_xdp(self) -> bool {
        self == Target::VirtioXdp
    }

    /// On the e1000 and the igb the bench reads the device's GPTC for every tool.
    pub fn device_counted(self) -> bool {
        matches!(self, Target::E1000 | Target::Igb | Target::Igb2q)
    }

    /// Transmit queues the sender uses.
    pub fn queues(self) -> u16 {
        match self {
            Target::Igb2q | Target::VirtioMq2q => 2,
            _ => 1,
        }
    }

    /// The target whose figures this one's are compared with, tool by tool: AF_XDP on the
    /// kernel's virtio_net against zcnic's and DPDK's own drivers and kernel pktgen on the
    /// same NIC.
    pub fn compared_with(self) -> Option<Target> {
        match self {
            Target::VirtioXdp => Some(Target::Virtio),
            _ => None,
        }
    }

    /// The one-queue target of a multi-queue one, which its figures are compared with.
    pub fn one_queue(self) -> Option<Target> {
        match self {
            Target::Igb2q => Some(Target::Igb),
            Target::VirtioMq2q => Some(Target::VirtioMq),
            _ => None,
        }
    }
}

/// Who generates or forwards the frames of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tool {
    Kernel,
    Testpmd,
    /// zcnic pktgen, or zcnic fwd on a forwarding target.
    Zcnic,
    /// zcnic pktgen --ceiling: one prebuilt frame re-posted, what the device model takes.
    Ceiling,
    /// zcnic fwd --idle hybrid on a forwarding target: it polls while frames come and
    /// sleeps on the receive interrupt once quiet (issue 20 asks it to stay within 5% of
    /// polling under load).
    Hybrid,
}

impl Tool {
    pub fn key(self) -> &'static str {
        match self {
            Tool::Kernel => "kernel",
            Tool::Testpmd => "testpmd",
            Tool::Zcnic => "zcnic",
            Tool::Ceiling => "ceiling",
            Tool::Hybrid => "hybrid",
        }
    }

    pub fn label(self, target: Target) -> &'static str {
        match (self, target.fwd_ports().is_some()) {
            (Tool::Kernel, _) => "kernel pktgen",
            (Tool::Testpmd, false) if target.af_xdp() => "DPDK net_af_xdp",
            (Tool::Zcnic, false) if target.af_xdp() => "zcnic AF_XDP",
            (Tool::Testpmd, false) => "DPDK testpmd",
            (Tool::Testpmd, true) => "DPDK testpmd io",
            (Tool::Zcnic, false) => "zcnic pktgen",
            (Tool::Zcnic, true) => "zcnic fwd",
            (Tool::Ceiling, _) => "zcnic ceiling",
            (Tool::Hybrid, _) => "zcnic fwd hybrid",
        }
    }
}

/// One run of one tool on one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub target: Target,
    pub tool: Tool,
    /// 1-based.
    pub round: usize,
}

impl Run {
    /// Its name in `/results` and in the console marks: `zcnic-e1000-1`.
    pub fn id(&self) -> String {
        format!("{}-{}-{}", self.tool.key(), self.target.key(), self.round)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} on {}, run {}",
            self.tool.label(self.target),
            self.target.label(),
            self.round
        )
    }
}

/// How the bench runs: the window, how many rounds, whether DPDK is there, which targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub window: Window,
    /// The targets measured, in [`Target::ALL`]'s order (all of them unless `--only`).
    pub targets: Vec<Target>,
    /// Seconds each tool keeps going after the window, so that its last sample is not cut.
    pub tail: u32,
    pub rounds: usize,
    pub dpdk: bool,
}

impl Plan {
    /// The runs in the order they happen.
    pub fn runs(&self) -> Vec<Run> {
        let mut runs = Vec::new();
        for round in 1..=self.rounds {
            for &target in &self.targets {
                for &tool in target.tools() {
                    if tool != Tool::Testpmd || self.dpdk {
                        runs.push(Run {
                            target,
                            tool,
                            round,
                        });
                    }
                }
            }
        }
        runs
    }

    /// Seconds a tool runs once it has started counting.
    fn secs(&self) -> usize {
        (self.window.warm + self.window.secs + self.tail) as usize
    }

    /// The guest scenario: shell helpers, then one call per run.
    pub fn script(&self) -> String {
        let mut s = format!(
            "set -e\nmodload e1000\nmodload virtio_net\nmodload igb\nmodload pktgen\nsleep 1\nWARM={}\nWIN={}\nTAIL={}\nSECS={}\n{HELPERS}",
            self.window.warm,
            self.window.secs,
            self.tail,
            self.secs()
        );
        if self.dpdk {
            // EAL wants a runtime directory and refuses world-writable plugin path parents.
            s += "mkdir -p /var/run/dpdk\nchmod 755 /\n";
        }
        // The forwarding NICs stay with zcnic/DPDK (vfio-pci) throughout.
        for pci in [FWD_E1000_A, FWD_VIRTIO_A, FWD_E1000_OUT, FWD_VIRTIO_OUT] {
            s += &format!("zcnic bind {pci}\n");
        }
        let mut bound = [false; 4];
        for run in self.runs() {
            s += &format!("echo 'bench-run: {}'\n", run.id());
            let id = run.id();
            if let Some((src, inp, out)) = run.target.fwd_ports() {
                s += &format!("source_start {id} {src}\n");
                s += &match run.tool {
                    Tool::Testpmd => format!(
                        "testpmd_run {id} -l0-1 -a {inp} -a {out}{} -- --forward-mode=io --stats-period=1\n",
                        pmd_args()
                    ),
                    Tool::Hybrid => format!("fwd_run {id} {inp} {out} --idle hybrid\n"),
                    _ => format!("fwd_run {id} {inp} {out}\n"),
                };
                s += &format!("source_stop {id}\n");
                continue;
            }
            let pci = run.target.sender();
            let slot = match run.target {
                Target::E1000 => 0,
                Target::Virtio | Target::VirtioXdp => 1,
                Target::VirtioMq | Target::VirtioMq2q => 3,
                _ => 2,
            };
            let want_kernel = run.tool == Tool::Kernel || run.target.af_xdp();
            if bound[slot] == want_kernel {
                s += &format!(
                    "zcnic {} {pci}\n",
                    if want_kernel { "unbind" } else { "bind" }
                );
                bound[slot] = !want_kernel;
            }
            let counter = if run.target.device_counted() {
                "count_ethtool"
            } else {
                "count_sysfs"
            };
            let q = run.target.queues();
            if run.target.af_xdp() {
                s += &match run.tool {
                    Tool::Testpmd => format!("testpmd_xdp_run {id} {pci}{}\n", af_xdp_args()),
                    _ => format!("zcnic_xdp_run {id} {pci}\n"),
                };
                continue;
            }
            s += &match (run.tool, q) {
                (Tool::Kernel, _) => format!("kernel_run {id} {pci} {counter}\n"),
                (Tool::Testpmd, 1) => format!(
                    "testpmd_run {id} -l0-1 -a {pci}{} -- --forward-mode=txonly --txpkts=60 --stats-period=1\n",
                    pmd_args()
                ),
                // Forwarding lcores 1 and 2 on CPUs 0 and 1; the main lcore (statistics)
                // shares CPU 0, as the samplers do.
                (Tool::Testpmd, _) => format!(
                    "testpmd_run {id} --lcores=0@0,1@0,2@1 -a {pci}{} -- --forward-mode=txonly --txpkts=60 --stats-period=1 --txq={q} --rxq={q} --nb-cores={q}\n",
                    pmd_args()
                ),
                (Tool::Zcnic, 1) => format!("zcnic_run {id} {pci}\n"),
                // The queue threads go where the guest's scheduler puts them (two vCPUs).
                (Tool::Zcnic, _) => format!("zcnic_run_any {id} {pci} --queues {q}\n"),
                (Tool::Ceiling, _) => format!("zcnic_run {id} {pci} --ceiling\n"),
                // Only on forwarding targets (above).
                (Tool::Hybrid, _) => continue,
            };
        }
        s + "echo 'bench-run: done'\n"
    }
}

/// DPDK's drivers testpmd loads (Debian builds them as plugins).
/// (`net_e1000` drives the igb too.)
pub const PMD_LIBS: [&str; 4] = ["bus_pci", "mempool_ring", "net_e1000", "net_virtio"];

fn pmd_args() -> String {
    PMD_LIBS
        .iter()
        .map(|p| format!(" -d {PMDS}/librte_{p}.so.23"))
        .collect()
}

/// DPDK's drivers for its AF_XDP port (`--vdev net_af_xdp0`): the virtual bus, the
/// driver (Debian's librte-net-af-xdp23, which `dpdk` does not pull in) and the pool.
pub const AF_XDP_LIBS: [&str; 3] = ["bus_vdev", "net_af_xdp", "mempool_ring"];

fn af_xdp_args() -> String {
    AF_XDP_LIBS
        .iter()
        .map(|p| format!(" -d {PMDS}/librte_{p}.so.23"))
        .collect()
}

/// Host files testpmd needs in the guest: itself and its drivers.
pub fn testpmd_binaries() -> Vec<String> {
    let mut bins = vec![TESTPMD.to_string()];
    bins.extend(PMD_LIBS.iter().map(|p| format!("{PMDS}/librte_{p}.so.23")));
    bins.extend(
        AF_XDP_LIBS
            .iter()
            .filter(|p| !PMD_LIBS.contains(p))
            .map(|p| format!("{PMDS}/librte_{p}.so.23")),
    );
    bins
}

/// libxdp's XDP programs, which DPDK's net_af_xdp loads from this directory at run
/// time (BPF objects: copied as they are, not through `ldd`). libxdp picks the `_5.3`
/// default program on kernels whose `bpf_redirect_map` takes a fallback action.
pub const LIBXDP_OBJECTS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/bpf/xsk_def_xdp_prog.o",
    "/usr/lib/x86_64-linux-gnu/bpf/xsk_def_xdp_prog_5.3.o",
    "/usr/lib/x86_64-linux-gnu/bpf/xdp-dispatcher.o",
];

/// Shell helpers of the scenario. Every generator runs on CPU 1 (kernel pktgen's thread
/// kpktgend_1, `taskset -c 1` for zcnic, testpmd's forwarding lcore 1) and every sampler
/// and statistics printer on CPU 0, the same for all tools.
const HELPERS: &str = r#"R=/results
# The guest clock in nanoseconds (/proc/timer_list's "now at"), else /proc/uptime's 10 ms.
now() {
  if [ -r /proc/timer_list ]; then sed -n '/^now at/{s/^now at \([0-9]*\) nsecs$/\1/p;q}' /proc/timer_list
  else awk '{printf "%.0f\n", $1 * 1e9}' /proc/uptime; fi
}
ifname() { ls /sys/bus/pci/devices/$1/net/ 2>/dev/null || ls /sys/bus/pci/devices/$1/virtio*/net/; }
# The e1000 driver reads GPTC into this figure whenever ethtool asks.
count_ethtool() { ethtool -S $1 | awk '$1 == "tx_packets:" {print $2}'; }
count_sysfs() { cat /sys/class/net/$1/statistics/tx_packets; }
# Console marks around the window, for the host's QEMU thread profile.
marks() { sleep $WARM; echo "zcnic-mark: begin $1"; sleep $WIN; echo "zcnic-mark: end $1"; }

kernel_run() { # ID PCI COUNTER
  IF=$(ifname $2)
  ip link set $IF up; sleep 2
  echo rem_device_all > /proc/net/pktgen/kpktgend_1
  echo "add_device $IF" > /proc/net/pktgen/kpktgend_1
  P=/proc/net/pktgen/$IF
  # Kernel pktgen at its best: one skb sent over and over, bursts through xmit_more.
  for c in 'count 0' 'pkt_size 60' 'delay 0' 'clone_skb 1000000' 'burst 32' 'dst 10.0.0.2' 'dst_mac ff:ff:ff:ff:ff:ff'; do echo "$c" > $P; done
  $3 $IF > $R/$1.base
  rm -f $R/$1.stop
  ( while [ ! -e $R/$1.stop ]; do echo "$(now) $($3 $IF)"; sleep 1; done ) > $R/$1.samples &
  S=$!
  taskset -p 1 $S > /dev/null
  echo start > /proc/net/pktgen/pgctrl &
  G=$!
  # The sampler's "second" is a little longer (ethtool, the shell): stop once it has
  # enough samples to cover the window.
  sleep 1; marks $1
  n=0
  while [ $(wc -l < $R/$1.samples) -lt $((SECS + 2)) ] && [ $n -lt 30 ]; do sleep 1; n=$((n + 1)); done
  echo stop > /proc/net/pktgen/pgctrl
  rc=0; wait $G || rc=$?
  touch $R/$1.stop; wait $S
  $3 $IF > $R/$1.end
  cat $P > $R/$1.report
  echo $rc > $R/$1.rc
}

zcnic_run() { # ID PCI [FLAGS]
  id=$1; shift
  taskset -c 1 zcnic pktgen "$@" --duration $SECS > $R/$id.out 2>&1 &
  Z=$!
  sleep 1; marks $id
  rc=0; wait $Z || rc=$?
  echo $rc > $R/$id.rc
}

zcnic_run_any() { # ID PCI [FLAGS], on any CPU
  id=$1; shift
  zcnic pktgen "$@" --duration $SECS > $R/$id.out 2>&1 &
  Z=$!
  sleep 1; marks $id
  rc=0; wait $Z || rc=$?
  echo $rc > $R/$id.rc
}

testpmd_run() { # ID LCORES TESTPMD-ARGS...
  id=$1; lc=$2; shift 2
  dpdk-testpmd $lc -n 1 --in-memory --iova-mode=va "$@" > $R/$id.out 2>&1 &
  T=$!
  # EAL's start-up takes a while under TCG, and testpmd prints its statistics one or two
  # seconds apart: it runs until it has printed enough of them to cover the window.
  n=0
  while ! grep -qs Tx-pps $R/$id.out && kill -0 $T 2> /dev/null && [ $n -lt 120 ]; do sleep 1; n=$((n + 1)); done
  marks $id &
  M=$!
  n=0
  while [ $(grep -c 'statistics for port 0' $R/$id.out) -lt $((SECS + 1)) ] && kill -0 $T 2> /dev/null && [ $n -lt 60 ]; do sleep 1; n=$((n + 1)); done
  wait $M
  kill -INT $T 2> /dev/null || true
  rc=0; wait $T || rc=$?
  echo $rc > $R/$id.rc
}

# AF_XDP on the kernel's interface: zcnic's xdp: port, and testpmd's net_af_xdp on it.
zcnic_xdp_run() { # ID PCI
  IF=$(ifname $2)
  ip link set $IF up; sleep 2
  zcnic_run $1 xdp:$IF
}
testpmd_xdp_run() { # ID PCI -d LIBS...
  id=$1; IF=$(ifname $2); shift 2
  ip link set $IF up; sleep 2
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2> /dev/null || true
  testpmd_run $id -l0-1 --no-pci --vdev net_af_xdp0,iface=$IF,start_queue=0,queue_count=1 "$@" -- --forward-mode=txonly --txpkts=60 --stats-period=1
}

fwd_run() { # ID IN OUT [FLAGS]
  id=$1; inp=$2; outp=$3; shift 3
  taskset -c 1 zcnic fwd --port $inp --port $outp --duration $SECS "$@" > $R/$id.out 2>&1 &
  F=$!
  sleep 1; marks $id
  rc=0; wait $F || rc=$?
  echo $rc > $R/$id.rc
}

# The forwarding source: zcnic pktgen flat out on CPU 0 until the forwarder is done.
source_start() { # ID PCI
  taskset -c 0 zcnic pktgen $2 --duration 3600 > $R/$1.source 2>&1 &
  SRC=$!
  sleep 2
}
source_stop() { # ID
  kill -INT $SRC
  rc=0; wait $SRC || rc=$?
  echo $rc > $R/$1.source-rc
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rounds: usize, dpdk: bool) -> Plan {
        Plan {
            window: Window { warm: 2, secs: 6 },
            targets: Target::ALL.to_vec(),
            tail: 2,
            rounds,
            dpdk,
        }
    }

    #[test]
    fn rounds_interleave_every_tool() {
        let runs = plan(2, true).runs();
        assert_eq!(runs.len(), 2 * (4 + 4 + 4 + 2 + 2 + 2 + 3 + 3 + 2));
        let ids: Vec<String> = runs.iter().map(Run::id).collect();
        assert_eq!(ids[0], "kernel-e1000-1");
        assert_eq!(ids[1], "testpmd-e1000-1");
        assert_eq!(ids[12], "testpmd-igb-2q-1");
        assert_eq!(ids[13], "zcnic-igb-2q-1");
        assert_eq!(ids[14], "testpmd-virtio-mq-1");
        assert_eq!(ids[17], "zcnic-virtio-mq-2q-1");
        assert_eq!(ids[18], "zcnic-fwd-virtio-e1000-1");
        assert_eq!(ids[19], "hybrid-fwd-virtio-e1000-1");
        assert_eq!(ids[20], "testpmd-fwd-virtio-e1000-1");
        assert_eq!(ids[24], "testpmd-virtio-xdp-1");
        assert_eq!(ids[25], "zcnic-virtio-xdp-1");
        assert_eq!(
            ids[26], "kernel-e1000-2",
            "round 2 starts after all of round 1"
        );
        assert!(!plan(1, false)
            .runs()
            .iter()
            .any(|r| r.tool == Tool::Testpmd));
    }

    #[test]
    fn the_way_in_is_testpmds_port_0() {
        for t in Target::ALL {
            if let Some((src, inp, out)) = t.fwd_ports() {
                assert!(inp < out, "{t:?}: port order is PCI order");
                assert_ne!(src, inp);
            }
        }
    }

    #[test]
    fn the_script_binds_before_zcnic_and_gives_back_before_the_kernel() {
        let s = plan(2, true).script();
        let at = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle}"));
        assert!(at("kernel_run kernel-e1000-1") < at("zcnic bind 0000:00:02.0"));
        assert!(at("zcnic bind 0000:00:02.0") < at("testpmd_run testpmd-e1000-1"));
        assert!(at("zcnic unbind 0000:00:02.0") < at("kernel_run kernel-e1000-2"));
        assert!(s.contains("kernel_run kernel-e1000-1 0000:00:02.0 count_ethtool"));
        assert!(s.contains("kernel_run kernel-virtio-1 0000:00:03.0 count_sysfs"));
        assert!(s.contains("kernel_run kernel-igb-1 0000:00:08.0 count_ethtool"));
        assert!(at("zcnic unbind 0000:00:08.0") < at("kernel_run kernel-igb-2"));
        assert!(s.starts_with("set -e\n"));
        assert!(s.contains(
            "testpmd_run testpmd-fwd-e1000-virtio-2 -l0-1 -a 0000:00:04.0 -a 0000:00:07.0"
        ));
        assert!(s.contains("zcnic_run_any zcnic-igb-2q-1 0000:00:08.0 --queues 2\n"));
        assert!(s.contains("zcnic_run zcnic-virtio-mq-1 0000:00:09.0\n"));
        assert!(s.contains("zcnic_run_any zcnic-virtio-mq-2q-1 0000:00:09.0 --queues 2\n"));
        assert!(at("zcnic bind 0000:00:09.0") < at("testpmd_run testpmd-virtio-mq-1"));
        // AF_XDP runs on the kernel's driver: the NIC is given back first, and taken
        // again before zcnic's own driver runs on it in the next round.
        let xdp = at("testpmd_xdp_run testpmd-virtio-xdp-1 0000:00:03.0 -d ");
        assert!(at("zcnic unbind 0000:00:03.0") < xdp);
        assert!(at("zcnic_xdp_run zcnic-virtio-xdp-1 0000:00:03.0") > xdp);
        assert!(
            s[xdp..].find("zcnic bind 0000:00:03.0").unwrap()
                < s[xdp..].find("zcnic_run zcnic-virtio-2").unwrap()
        );
        let tp = at("testpmd_run testpmd-igb-2q-1 --lcores=0@0,1@0,2@1 -a 0000:00:08.0");
        assert!(s[tp..]
            .lines()
            .next()
            .unwrap()
            .ends_with("--txq=2 --rxq=2 --nb-cores=2"));
    }
}
