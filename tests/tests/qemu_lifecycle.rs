//! Lifecycle: a zcnic stopped by Ctrl-C, killed by `kill -9`, or handed back to the kernel
//! leaves the NIC ready for the next user — zcnic again, or the kernel's own driver.
//!
//! One guest boot runs every phase; the tests below each check their part of it.
//!
//! ```text
//!  e1000 02.0 ── hub 0 (pcap)   pktgen flat out, kill -9, then pktgen --count 100000
//!  e1000 03.0 ── hub 1 ── e1000 04.0   Ctrl-C of pktgen and fwd (03.0), of dump (04.0)
//!  e1000 05.0 ── hub 2 (pcap)   kernel e1000 → zcnic bind, pktgen → zcnic unbind → kernel sends
//!  igb   06.0 ── hub 3 (pcap)   kernel igb → zcnic bind, pktgen kill -9, pktgen --count 1000
//!                               → zcnic unbind → kernel igb brings the link up and sends
//! ```

use std::collections::VecDeque;
use std::path::Path;
use std::sync::OnceLock;
use zcnic_qemu::{GuestRun, Nic};
use zcnic_tests::qemu_suite::{
    assert_pktgen_sequence, boot, figure, guest_slot, nic_mac, read_pcap,
};

const KILLED: &str = "0000:00:02.0";
const SENDER: &str = "0000:00:03.0";
const DUMPER: &str = "0000:00:04.0";
const KERNEL: &str = "0000:00:05.0";
const IGB: &str = "0000:00:06.0";
/// Frames of the run after `kill -9`.
const AFTER_KILL: usize = 100_000;
/// Frames pktgen sends while dump listens, before dump gets Ctrl-C.
const DUMPED: u64 = 1000;

/// Shell helpers: `try_case NAME CMD…` records CMD's stdout, stderr and exit code in
/// /results/NAME.{out,err,rc}; `wait_for FILE TEXT` waits (up to a minute) for TEXT in FILE;
/// `stop NAME SIGNAL` sends SIGNAL to the background zcnic NAME once its first live line
/// is out, and records its exit code.
const HELPERS: &str = r#"
try_case() { name=$1; shift; set +e; "$@" > /results/$name.out 2> /results/$name.err; echo $? > /results/$name.rc; set -e; }
wait_for() {
    n=0
    until grep -q "$2" "$1"; do
        sleep 0.2; n=$((n+1))
        [ $n -lt 300 ] || { echo "no '$2' in $1:"; cat "$1"; return 1; }
    done
}
stop() {
    wait_for /results/$1.$3 "$4"
    kill -$2 $pid
    rc=0; wait $pid || rc=$?; echo $rc > /results/$1.rc
}
"#;

fn scenario() -> String {
    let mut s = String::from(HELPERS);
    s += &format!(
        "for d in {KILLED} {SENDER} {DUMPER}; do zcnic bind $d; done\n\
         # Loaded after the binds, the kernel driver takes only {KERNEL}.\n\
         modload e1000\n"
    );
    // Ctrl-C of each long-running command once it is live, then at once a run that must
    // open the same device and work.
    s += &format!(
        "zcnic pktgen {SENDER} > /results/int_pktgen.out 2> /results/int_pktgen.err &\n\
         pid=$!; stop int_pktgen INT out ' s  tx'\n\
         try_case int_pktgen_next zcnic pktgen {SENDER} --count 1000\n\
         zcnic fwd --port {SENDER} > /results/int_fwd.out 2> /results/int_fwd.err &\n\
         pid=$!; stop int_fwd INT out ' s  rx'\n\
         try_case int_fwd_next zcnic pktgen {SENDER} --count 1000\n\
         zcnic dump {DUMPER} --out /results/int_dump.pcap > /results/int_dump.out 2> /results/int_dump.err &\n\
         pid=$!\n\
         wait_for /results/int_dump.err ' s  0 frames'\n\
         # QEMU's e1000 holds received frames back for 1 s after RCTL is written.\n\
         sleep 1\n\
         zcnic pktgen {SENDER} --count {DUMPED} --rate 10k --stream 5\n\
         sleep 1\n\
         stop int_dump INT err 'frames'\n\
         try_case int_dump_next zcnic pktgen {DUMPER} --count 1000\n"
    );
    // kill -9 of pktgen sending flat out; the next run must reset the NIC and send exactly
    // its own frames.
    s += &format!(
        "zcnic pktgen {KILLED} > /results/kill9.out 2> /results/kill9.err &\n\
         pid=$!; stop kill9 9 out ' s  tx'\n\
         try_case kill9_next zcnic pktgen {KILLED} --count {AFTER_KILL}\n"
    );
    // From the kernel's e1000 to zcnic and back; the kernel's interface must work again.
    let dev = format!("/sys/bus/pci/devices/{KERNEL}");
    s += &format!(
        "basename $(readlink {dev}/driver) > /results/kernel_driver_before\n\
         try_case kernel_bind zcnic bind {KERNEL}\n\
         try_case kernel_pktgen zcnic pktgen {KERNEL} --count 1000\n\
         try_case kernel_unbind zcnic unbind {KERNEL}\n\
         basename $(readlink {dev}/driver) > /results/kernel_driver_after\n\
         ifname=$(ls {dev}/net/)\n\
         echo $ifname > /results/kernel_ifname\n\
         ip link set dev $ifname up\n\
         ip addr add 10.9.0.1/24 dev $ifname\n\
         n=0; until [ \"$(cat /sys/class/net/$ifname/carrier)\" = 1 ] || [ $n -ge 150 ]; do\n\
           sleep 0.2; n=$((n+1)); done\n\
         cat /sys/class/net/$ifname/carrier > /results/kernel_carrier\n\
         cat /sys/class/net/$ifname/operstate > /results/kernel_operstate\n\
         arping -c 3 -w 5 -I $ifname 10.9.0.2 > /results/kernel_arping.txt 2>&1 || true\n\
         cat /sys/class/net/$ifname/statistics/tx_packets > /results/kernel_tx_packets\n\
         ip link show dev $ifname\n"
    );
    // The igb from the kernel's driver to zcnic, killed, run again, and back.
    let igb = format!("/sys/bus/pci/devices/{IGB}");
    s += &format!(
        "modload igb\n\
         n=0; until [ -e {igb}/driver ] || [ $n -ge 50 ]; do sleep 0.2; n=$((n+1)); done\n\
         basename $(readlink {igb}/driver) > /results/igb_driver_before\n\
         try_case igb_bind zcnic bind {IGB}\n\
         zcnic pktgen {IGB} > /results/igb_kill9.out 2> /results/igb_kill9.err &\n\
         pid=$!; stop igb_kill9 9 out ' s  tx'\n\
         try_case igb_next zcnic pktgen {IGB} --count 1000\n\
         try_case igb_unbind zcnic unbind {IGB}\n\
         basename $(readlink {igb}/driver) > /results/igb_driver_after\n\
         ifname=$(ls {igb}/net/)\n\
         ip link set dev $ifname up\n\
         ip addr add 10.9.1.1/24 dev $ifname\n\
         n=0; until [ \"$(cat /sys/class/net/$ifname/carrier)\" = 1 ] || [ $n -ge 150 ]; do\n\
           sleep 0.2; n=$((n+1)); done\n\
         cat /sys/class/net/$ifname/carrier > /results/igb_carrier\n\
         arping -c 3 -w 5 -I $ifname 10.9.1.2 > /results/igb_arping.txt 2>&1 || true\n"
    );
    s
}

/// The one boot all tests here share.
fn guest() -> Option<&'static GuestRun> {
    static RUN: OnceLock<GuestRun> = OnceLock::new();
    let _slot = guest_slot("qemu_lifecycle")?;
    Some(RUN.get_or_init(|| {
        let nics = vec![
            Nic::new("e1000", 0, true),
            Nic::new("e1000", 1, false),
            Nic::new("e1000", 1, false),
            Nic::new("e1000", 2, true),
            Nic::new("igb", 3, true),
        ];
        boot("life-cycle", nics, &scenario())
    }))
}

fn result(run: &GuestRun, file: &str) -> String {
    std::fs::read_to_string(run.results.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Checks the run recorded as `name` exited `rc`, and returns its stdout.
fn exited(run: &GuestRun, name: &str, rc: i32) -> String {
    let got = result(run, &format!("{name}.rc"));
    let (out, err) = (
        result(run, &format!("{name}.out")),
        result(run, &format!("{name}.err")),
    );
    assert_eq!(
        got.trim(),
        rc.to_string(),
        "{name}: exit code; stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{name}: {err}"
    );
    out
}

/// The first line of `text` that contains `has`.
fn line<'a>(text: &'a str, has: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(has))
        .unwrap_or_else(|| panic!("no line with `{has}` in:\n{text}"))
}

/// A follow-up `pktgen --count 1000` worked: all 1000 frames sent, and the NIC says so.
fn assert_next_run_works(run: &GuestRun, name: &str) {
    let out = exited(run, name, 0);
    let last = line(&out, "frames (");
    assert_eq!(figure(last, "sent"), Some(1000), "{name}: {last}");
    assert_eq!(figure(last, "GPTC"), Some(1000), "{name}: {last}");
}

#[test]
fn ctrl_c_stops_pktgen_with_its_summary_and_frees_the_nic() {
    let Some(run) = guest() else { return };
    let out = exited(run, "int_pktgen", 0);
    let summary = line(&out, "frames (");
    let sent = figure(summary, "sent").expect("a frame count");
    assert!(sent > 0, "{summary}");
    // Everything pktgen counts as sent left the NIC before the port closed.
    assert_eq!(figure(summary, "GPTC"), Some(sent), "{summary}");
    assert_next_run_works(run, "int_pktgen_next");
}

#[test]
fn ctrl_c_stops_fwd_with_its_totals_and_frees_the_nic() {
    let Some(run) = guest() else { return };
    let out = exited(run, "int_fwd", 0);
    line(&out, "received 0, forwarded 0, dropped on purpose 0");
    assert_next_run_works(run, "int_fwd_next");
}

#[test]
fn ctrl_c_stops_dump_with_a_complete_pcap_and_frees_the_nic() {
    let Some(run) = guest() else { return };
    let out = exited(run, "int_dump", 0);
    let summary = line(&out, "wrote");
    assert_eq!(figure(summary, "wrote"), Some(DUMPED), "{summary}");
    let frames = read_pcap(&run.results.join("int_dump.pcap"));
    let ours: Vec<Vec<u8>> = frames
        .into_iter()
        .filter(|f| zcnic_tools::frame::parse_meta(f).is_ok_and(|m| m.stream == 5))
        .collect();
    assert_eq!(ours.len() as u64, DUMPED, "pktgen frames in the pcap");
    assert_next_run_works(run, "int_dump_next");
}

/// Every frame of a pcap, keeping only the last `keep` (the killed run may have sent
/// millions), and the total count.
fn pcap_tail(path: &Path, keep: usize) -> (Vec<Vec<u8>>, usize) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = pcap_file::pcap::PcapReader::new(f).expect("a pcap header");
    let mut tail = VecDeque::with_capacity(keep + 1);
    let mut total = 0;
    while let Some(p) = r.next_packet() {
        tail.push_back(p.expect("a well-formed pcap record").data.into_owned());
        if tail.len() > keep {
            tail.pop_front();
        }
        total += 1;
    }
    (tail.into(), total)
}

#[test]
fn after_kill_9_the_next_run_resets_the_nic_and_sends_exactly_its_frames() {
    let Some(run) = guest() else { return };
    let killed = result(run, "kill9.rc");
    assert_eq!(killed.trim(), "137", "pktgen died of SIGKILL");
    let out = exited(run, "kill9_next", 0);
    let last = line(&out, "frames (");
    assert_eq!(figure(last, "sent"), Some(AFTER_KILL as u64), "{last}");
    assert_eq!(figure(last, "GPTC"), Some(AFTER_KILL as u64), "{last}");

    let (tail, total) = pcap_tail(run.pcaps[0].as_ref().expect("NIC 0's pcap"), AFTER_KILL);
    assert!(
        total > AFTER_KILL,
        "the killed run put frames on the wire first ({total} in all)"
    );
    eprintln!(
        "kill -9: {} frames of the killed run, then {AFTER_KILL}",
        total - AFTER_KILL
    );
    assert_pktgen_sequence(&tail, AFTER_KILL, 60, nic_mac(0));
}

#[test]
fn unbind_gives_the_nic_back_to_the_kernel_driver_which_sends_again() {
    let Some(run) = guest() else { return };
    assert_eq!(result(run, "kernel_driver_before").trim(), "e1000");
    let bound = exited(run, "kernel_bind", 0);
    assert!(bound.contains("bound to vfio-pci (was e1000)"), "{bound}");
    let sent = exited(run, "kernel_pktgen", 0);
    assert_eq!(
        figure(line(&sent, "frames ("), "sent"),
        Some(1000),
        "{sent}"
    );
    let unbound = exited(run, "kernel_unbind", 0);
    assert!(unbound.contains("given back to e1000"), "{unbound}");
    assert_eq!(result(run, "kernel_driver_after").trim(), "e1000");
    let ifname = result(run, "kernel_ifname");
    assert!(!ifname.trim().is_empty(), "the kernel made an interface");
    assert_eq!(result(run, "kernel_carrier").trim(), "1", "carrier");
    assert_eq!(result(run, "kernel_operstate").trim(), "up", "operstate");

    // On the wire: zcnic's 1000 frames, then the kernel's ARP requests from the same MAC.
    let wire = read_pcap(run.pcaps[3].as_ref().expect("NIC 3's pcap"));
    let mac = nic_mac(3);
    let zcnic_frames: Vec<(usize, &Vec<u8>)> = wire
        .iter()
        .enumerate()
        .filter(|(_, f)| zcnic_tools::frame::parse_meta(f).is_ok())
        .collect();
    let seq: Vec<Vec<u8>> = zcnic_frames.iter().map(|(_, f)| f.to_vec()).collect();
    assert_pktgen_sequence(&seq, 1000, 60, mac);
    let last_zcnic = zcnic_frames.last().map_or(0, |(i, _)| *i);
    let arp_target = [10, 9, 0, 2];
    let arps: Vec<usize> = wire
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            f.len() >= 42 && f[6..12] == mac && f[12..14] == [0x08, 0x06] && f[38..42] == arp_target
        })
        .map(|(i, _)| i)
        .collect();
    assert!(
        !arps.is_empty(),
        "no ARP request for 10.9.0.2 from the kernel's e1000 in {} frames; arping said:\n{}",
        wire.len(),
        result(run, "kernel_arping.txt")
    );
    assert!(
        arps[0] > last_zcnic,
        "the kernel's frames come after zcnic's"
    );
}

/// An ARP request for `target` from `mac`.
fn is_arp_request(f: &[u8], mac: [u8; 6], target: [u8; 4]) -> bool {
    f.len() >= 42 && f[6..12] == mac && f[12..14] == [0x08, 0x06] && f[38..42] == target
}

#[test]
fn igb_after_kill_9_runs_again_and_goes_back_to_the_kernel_which_sends() {
    let Some(run) = guest() else { return };
    assert_eq!(result(run, "igb_driver_before").trim(), "igb");
    let bound = exited(run, "igb_bind", 0);
    assert!(bound.contains("bound to vfio-pci (was igb)"), "{bound}");
    assert_eq!(
        result(run, "igb_kill9.rc").trim(),
        "137",
        "pktgen died of SIGKILL"
    );
    assert_next_run_works(run, "igb_next");
    let unbound = exited(run, "igb_unbind", 0);
    assert!(unbound.contains("given back to igb"), "{unbound}");
    assert_eq!(result(run, "igb_driver_after").trim(), "igb");
    assert_eq!(
        result(run, "igb_carrier").trim(),
        "1",
        "the kernel brought the link up"
    );

    // On the wire: the killed run's frames, then exactly the next run's 1000, then the
    // kernel's ARP requests from the same MAC.
    let (tail, total) = pcap_tail(run.pcaps[4].as_ref().expect("NIC 4's pcap"), 3000);
    let mac = nic_mac(4);
    let ours: Vec<usize> = (0..tail.len())
        .filter(|&i| zcnic_tools::frame::parse_meta(&tail[i]).is_ok())
        .collect();
    assert!(
        total > 1000 && ours.len() >= 1000,
        "{total} frames on the wire"
    );
    let next: Vec<Vec<u8>> = ours[ours.len() - 1000..]
        .iter()
        .map(|&i| tail[i].clone())
        .collect();
    assert_pktgen_sequence(&next, 1000, 60, mac);
    let last = *ours.last().unwrap();
    let arp = tail
        .iter()
        .position(|f| is_arp_request(f, mac, [10, 9, 1, 2]));
    assert!(
        arp.is_some_and(|a| a > last),
        "no ARP request from the kernel's igb after zcnic's frames; arping said:\n{}",
        result(run, "igb_arping.txt")
    );
}
