//! The bad-input matrix: every way a user can get zcnic's input or environment wrong ends in
//! exit code 2 and one line on stderr that names the fix — never a panic, a backtrace or
//! a silent success. One guest boot runs every case; `docs/troubleshooting.md` lists them.
//!
//! Where a case breaks the guest on purpose (no hugepages, hugetlbfs unmounted,
//! `/dev/vfio/vfio` gone), the script then applies the fix the message names and runs the
//! command again, which must now succeed: the message is not only clear but right.
//!
//! One case cannot be built in the guest and is checked on the message alone below: an
//! IOMMU group that is not viable (every NIC the harness plugs sits alone in its group).

use std::path::Path;
use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{boot, guest_slot};

/// e1000, left on the kernel's e1000 driver.
const KERNEL: &str = "0000:00:02.0";
/// e1000 bound to vfio-pci: the device every case that gets past parsing aims at.
const GOOD: &str = "0000:00:03.0";
/// e1000e (8086:10d3) bound to vfio-pci: a NIC zcnic does not drive.
const E1000E: &str = "0000:00:04.0";
/// A free PCI slot.
const ABSENT: &str = "0000:00:09.0";

/// A case: its name (the files `/results/<name>.{out,err,rc}`), the command after `zcnic`,
/// and a text its message must contain (the fix).
struct Case {
    name: &'static str,
    args: String,
    fix: &'static str,
}

fn case(name: &'static str, args: impl Into<String>, fix: &'static str) -> Case {
    Case {
        name,
        args: args.into(),
        fix,
    }
}

/// Cases that need nothing but the command line: the device is fine, the input is not.
fn input_cases() -> Vec<Case> {
    let g = GOOD;
    vec![
        case(
            "malformed_pci",
            "pktgen 0000:00:2.0 --count 10",
            "use the form 0000:00:02.0",
        ),
        case(
            "unbind_malformed",
            "unbind 00:03",
            "use the form 0000:00:02.0",
        ),
        case(
            "no_such_device",
            format!("pktgen {ABSENT} --count 10"),
            "zcnic list",
        ),
        case(
            "bind_no_such_device",
            format!("bind {ABSENT}"),
            "zcnic list",
        ),
        case(
            "kernel_driver",
            format!("pktgen {KERNEL} --count 10"),
            "run `zcnic bind 0000:00:02.0` first",
        ),
        case(
            "unsupported",
            format!("pktgen {E1000E} --count 10"),
            "zcnic list",
        ),
        case(
            "bind_unknown_driver",
            format!("bind {g} --driver nosuchdrv"),
            "uio_pci_generic",
        ),
        case("rate_zero", format!("pktgen {g} --rate 0"), "above 0"),
        case("rate_negative", format!("pktgen {g} --rate -5"), "above 0"),
        case("rate_absurd", format!("pktgen {g} --rate 1e12"), "100 Mpps"),
        case(
            "rate_not_a_number",
            format!("pktgen {g} --rate fast"),
            "10k",
        ),
        case(
            "size_too_small",
            format!("pktgen {g} --size 59"),
            "60..=16124",
        ),
        case(
            "size_too_large",
            format!("pktgen {g} --size 1515"),
            "give --mtu 1501",
        ),
        case(
            "size_beyond_any_mtu",
            format!("pktgen {g} --size 16125 --mtu 9000"),
            "60..=16124",
        ),
        case(
            "mtu_too_large",
            format!("pktgen {g} --mtu 20000 --count 1"),
            "use an MTU of 68..=16110",
        ),
        case(
            "unknown_flag",
            format!("pktgen {g} --bogus"),
            "zcnic pktgen --help",
        ),
        case("missing_pci", "pktgen", "<PCI>"),
        case("count_zero", format!("pktgen {g} --count 0"), "at least 1"),
        case("flows_zero", format!("pktgen {g} --flows 0"), "at least 1"),
        case("batch_zero", format!("pktgen {g} --batch 0"), "1..=256"),
        case("burst_zero", format!("fwd --port {g} --burst 0"), "1..=512"),
        case(
            "dst_mac",
            format!("pktgen {g} --dst-mac 52:54:00:zz"),
            "52:54:00:12:34:56",
        ),
        case(
            "duration_zero",
            format!("pktgen {g} --duration 0"),
            "above 0",
        ),
        case(
            "duration_negative",
            format!("pktgen {g} --duration -1"),
            "above 0",
        ),
        case(
            "fwd_same_port",
            format!("fwd --port {g} --port {g}"),
            "give it once",
        ),
        case(
            "fwd_three_ports",
            format!("fwd --port {g} --port {KERNEL} --port {E1000E}"),
            "one or two --port",
        ),
        case(
            "pcap_not_writable",
            format!("dump {g} --out /proc/nope.pcap --count 1"),
            "writable path with --out",
        ),
        case(
            "pcap_no_such_dir",
            format!("dump {g} --out /nonexistent/rx.pcap --count 1"),
            "writable path with --out",
        ),
        case(
            "ether_type",
            format!("dump {g} --out /tmp/x.pcap --ether-type ipv4"),
            "0x0800",
        ),
    ]
}

/// Cases that break the guest first; each is followed by its fix and an `_after_fix` run
/// that must exit 0. (name, fix text, shell script: break, try, repair, try again).
fn environment_cases() -> Vec<(&'static str, &'static str, String)> {
    let g = GOOD;
    let pktgen = format!("zcnic pktgen {g} --count 10");
    vec![
        (
            "vfio_missing",
            "modprobe vfio-pci",
            format!(
                "mv /dev/vfio/vfio /dev/vfio/vfio.away\n\
                 try_case vfio_missing {pktgen}\n\
                 mv /dev/vfio/vfio.away /dev/vfio/vfio\n\
                 try_case vfio_missing_after_fix {pktgen}\n"
            ),
        ),
        (
            "no_hugepages",
            "zcnic hugepages --reserve",
            format!(
                "echo 0 > /proc/sys/vm/nr_hugepages\n\
                 try_case no_hugepages {pktgen}\n\
                 zcnic hugepages --reserve 256\n\
                 try_case no_hugepages_after_fix {pktgen}\n"
            ),
        ),
        (
            "too_few_hugepages",
            "zcnic hugepages --reserve",
            format!(
                "echo 3 > /proc/sys/vm/nr_hugepages\n\
                 try_case too_few_hugepages {pktgen}\n\
                 zcnic hugepages --reserve 256\n\
                 try_case too_few_hugepages_after_fix {pktgen}\n"
            ),
        ),
        (
            "hugetlbfs_unmounted",
            "zcnic hugepages --mount",
            format!(
                "umount /dev/hugepages\n\
                 try_case hugetlbfs_unmounted {pktgen}\n\
                 zcnic hugepages --mount\n\
                 try_case hugetlbfs_unmounted_after_fix {pktgen}\n"
            ),
        ),
        (
            "not_root",
            "run as root",
            format!("try_case not_root as_nobody {pktgen}\n"),
        ),
        (
            "not_root_bind",
            "run as root",
            format!("try_case not_root_bind as_nobody zcnic bind {KERNEL}\n"),
        ),
        (
            "not_root_hugepages",
            "root",
            "try_case not_root_hugepages as_nobody zcnic hugepages --reserve 100\n".into(),
        ),
        (
            "busy",
            "is busy: another process has it open",
            format!(
                "zcnic pktgen {g} --duration 120 > /results/busy_first.out 2> /results/busy_first.err &\n\
                 first=$!\n\
                 n=0; until grep -q ' s  tx' /results/busy_first.out; do\n\
                   sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/busy_first.*; exit 3; }}\n\
                 done\n\
                 try_case busy {pktgen}\n\
                 kill -INT $first\n\
                 rc=0; wait $first || rc=$?; echo $rc > /results/busy_first.rc\n\
                 try_case busy_after_fix {pktgen}\n"
            ),
        ),
    ]
}

fn script() -> String {
    let mut s = format!(
        "try_case() {{ name=$1; shift; set +e; \"$@\" > /results/$name.out 2> /results/$name.err; \
            echo $? > /results/$name.rc; set -e; }}\n\
         echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> /etc/passwd\n\
         echo 'nogroup:x:65534:' >> /etc/group\n\
         as_nobody() {{ su nobody -s /bin/sh -c \"$*\"; }}\n\
         zcnic bind {GOOD}\n\
         zcnic bind {E1000E}\n\
         # Loaded after the binds, the kernel driver takes only the NIC left unbound.\n\
         modload e1000\n\
         readlink /sys/bus/pci/devices/{KERNEL}/driver\n"
    );
    for c in input_cases() {
        s += &format!("try_case {} zcnic {}\n", c.name, c.args);
    }
    for (_, _, block) in environment_cases() {
        s += &block;
    }
    s
}

fn read(dir: &Path, name: &str, ext: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.{ext}")))
        .unwrap_or_else(|e| panic!("{name}.{ext}: {e}"))
}

/// What is wrong with case `name`'s result, if anything.
fn check_error(dir: &Path, name: &str, fix: &str) -> Option<String> {
    let (rc, out, err) = (
        read(dir, name, "rc"),
        read(dir, name, "out"),
        read(dir, name, "err"),
    );
    let mut wrong = Vec::new();
    if rc.trim() != "2" {
        wrong.push(format!("exit code {}", rc.trim()));
    }
    if err.lines().count() != 1 || !err.starts_with("zcnic: ") {
        wrong.push("not one `zcnic: ` line on stderr".into());
    }
    if !err.contains(fix) {
        wrong.push(format!("does not name the fix `{fix}`"));
    }
    if ["panicked", "backtrace", "internal error", "RUST_BACKTRACE"]
        .iter()
        .any(|p| err.contains(p))
    {
        wrong.push("a panic".into());
    }
    if !out.is_empty() {
        wrong.push(format!("stdout not empty: {out:?}"));
    }
    (!wrong.is_empty()).then(|| format!("{name}: {}; stderr: {err:?}", wrong.join(", ")))
}

#[test]
fn every_bad_input_exits_2_with_one_line_naming_the_fix() {
    let Some(_slot) = guest_slot("every_bad_input_exits_2_with_one_line_naming_the_fix") else {
        return;
    };
    let nics = vec![
        Nic::new("e1000", 0, false),
        Nic::new("e1000", 0, false),
        Nic::new("e1000e", 0, false),
    ];
    let run = boot("matrix-bad-input", nics, &script());
    let dir = &run.results;

    // A case ran when the guest left its exit status; every case of both lists must have.
    let names: Vec<&str> = input_cases()
        .iter()
        .map(|c| c.name)
        .chain(environment_cases().iter().map(|c| c.0))
        .collect();
    let ran: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| dir.join(format!("{name}.rc")).is_file())
        .collect();
    assert_eq!(
        ran.len(),
        names.len(),
        "cases that never ran: {:?}",
        names
            .iter()
            .filter(|n| !ran.contains(n))
            .collect::<Vec<_>>()
    );
    let checked = ran.len();

    let mut failures = Vec::new();
    for c in input_cases() {
        failures.extend(check_error(dir, c.name, c.fix));
    }
    for (name, fix, block) in environment_cases() {
        failures.extend(check_error(dir, name, fix));
        let after = format!("{name}_after_fix");
        if block.contains(&after) {
            let rc = read(dir, &after, "rc");
            if rc.trim() != "0" {
                failures.push(format!(
                    "{after}: exit code {}, the named fix did not work; stderr: {}",
                    rc.trim(),
                    read(dir, &after, "err")
                ));
            }
        }
    }
    let first = read(dir, "busy_first", "rc");
    if first.trim() != "0" {
        failures.push(format!(
            "busy: the first pktgen exited {}: {}",
            first.trim(),
            read(dir, "busy_first", "err")
        ));
    }
    for c in &names {
        eprintln!("{c:<24} {}", read(dir, c, "err").trim_end());
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cases wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A group with another device on a kernel driver cannot be built in the guest: the
/// harness puts each NIC alone in its IOMMU group. The message is checked as text.
#[test]
fn group_not_viable_names_the_devices_to_bind() {
    let addr: zcnic::PciAddr = "0000:00:03.0".parse().unwrap();
    let e = zcnic::Error::GroupNotViable {
        addr,
        group: 7,
        others: vec!["0000:00:03.1 (snd_hda_intel)".into()],
    };
    let text = e.to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("0000:00:03.1 (snd_hda_intel)"), "{text}");
    assert!(text.contains("zcnic bind"), "{text}");
}
