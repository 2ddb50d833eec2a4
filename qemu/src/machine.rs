//! Booting one guest: QEMU's command line, the console, the hard timeout, and the
//! results disk.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::deps::output;
use crate::monitor::Monitor;
use crate::threads::{parse_mark, spawn_sampler, Sample};
use crate::{harness_dir, initramfs, tail_lines, Error, GuestRun, GuestSpec};

/// Printed by the guest's `/init` just before `/scenario.sh` starts.
const START_MARKER: &str = "zcnic-guest: scenario start";
/// Printed by `/init` after `/scenario.sh`, followed by its exit status.
const EXIT_MARKER: &str = "zcnic-guest: scenario exit ";
/// PCI slot of the results disk; NICs take slots 0x02 up to just below it.
const DISK_SLOT: u32 = 0x1e;
const FIRST_NIC_SLOT: u32 = 0x02;
const DISK_BYTES: u64 = 64 << 20;
/// Console lines quoted in errors.
const TAIL: usize = 40;
/// How long a guest may take to reach its scenario, on top of which [`GuestSpec::timeout`]
/// counts: TCG boots in ~13 s, but a loaded 2-core host has kept one in SeaBIOS past 20 s,
/// and no test should depend on how fast a guest boots.
pub(crate) const BOOT_LIMIT: Duration = Duration::from_secs(300);
/// Overrides the accelerator (`kvm` where nested KVM works).
const ACCEL_ENV: &str = "ZCNIC_QEMU_ACCEL";

/// One guest at a time per process: with TCG on two host cores, concurrent guests would
/// slow each other towards their hard timeouts and skew every rate they measure.
static ONE_GUEST: Mutex<()> = Mutex::new(());

/// Files of one run, under `target/zcnic-qemu/runs/<name>/`.
pub(crate) struct RunDir {
    pub(crate) root: PathBuf,
}

impl RunDir {
    pub(crate) fn initrd(&self) -> PathBuf {
        self.root.join("initramfs.cpio")
    }
    pub(crate) fn disk(&self) -> PathBuf {
        self.root.join("results.img")
    }
    fn results(&self) -> PathBuf {
        self.root.join("results")
    }
    fn pcap(&self, nic: usize) -> PathBuf {
        self.root.join(format!("nic{nic}.pcap"))
    }
}

/// Boots a guest as `spec` says, runs its script, and collects what it left.
///
/// Calls [`prepare_for`](crate::prepare_for) (the spec's kernel) first. Runs in one process are serialized. `Ok` means the guest
/// ran the script to its end, whatever its exit status ([`GuestRun::exit_code`]); a hang
/// past [`GuestSpec::timeout`] is [`Error::Timeout`], a guest that died first (panic,
/// QEMU error) is [`Error::NoExit`]; both quote the console's last lines.
pub fn run(spec: &GuestSpec) -> Result<GuestRun, Error> {
    run_with_files(spec, &[])
}

/// [`run`], with extra host files copied into the guest: `(host path, guest path)` pairs,
/// e.g. a peer tool and its shared libraries for `cargo xtask bench`.
pub fn run_with_files(spec: &GuestSpec, files: &[(PathBuf, String)]) -> Result<GuestRun, Error> {
    run_inner(spec, files, None)
}

/// [`run`], with `watch` called on every console line as it arrives, holding the
/// machine's [`Monitor`] (QMP on a socket of this run): a test acts on the machine in step
/// with what the guest prints, e.g. `set_link` once a tool is running. `watch` runs on the
/// thread reading the console, so it should return promptly (a QMP command takes
/// milliseconds).
pub fn run_watched(
    spec: &GuestSpec,
    mut watch: impl FnMut(&str, &mut Monitor),
) -> Result<GuestRun, Error> {
    // Under the temporary directory, not the run's: a socket path has at most 107 bytes.
    let path = std::env::temp_dir().join(format!(
        "zcnic-qmp-{}-{}.sock",
        std::process::id(),
        spec.name
    ));
    let _ = fs::remove_file(&path);
    let mut monitor = Monitor::new(&path);
    let mut each = |line: &str| watch(line, &mut monitor);
    let run = run_inner(spec, &[], Some((&path, &mut each)));
    let _ = fs::remove_file(&path);
    run
}

/// A console watcher and the QMP socket QEMU listens on for it.
type Watch<'a> = (&'a Path, &'a mut dyn FnMut(&str));

fn run_inner(
    spec: &GuestSpec,
    files: &[(PathBuf, String)],
    watch: Option<Watch<'_>>,
) -> Result<GuestRun, Error> {
    validate(spec)?;
    let prepared = crate::prepare_for(spec.kernel)?;
    let _one = ONE_GUEST.lock().unwrap_or_else(PoisonError::into_inner);
    if watch.is_some() {
        return run_once(spec, files, &prepared, watch).map_err(Attempt::into_error);
    }
    match run_once(spec, files, &prepared, None) {
        Err(Attempt::QemuCrashed(e)) => {
            // QEMU's own bug, not the guest's: CI saw `iotlb_to_section: Assertion
            // section_index < d->map.sections_nb failed` while SeaBIOS ran. Said loudly,
            // and tried once more; a second crash fails the run.
            eprintln!(
                "zcnic-qemu: QEMU crashed before guest `{}` reached its scenario; booting it once more:\n{e}",
                spec.name
            );
            run_once(spec, files, &prepared, None).map_err(Attempt::into_error)
        }
        other => other.map_err(Attempt::into_error),
    }
}

/// How one boot failed.
enum Attempt {
    /// QEMU died of a signal before the guest printed its scenario's start marker.
    QemuCrashed(Error),
    Failed(Error),
}

impl Attempt {
    fn into_error(self) -> Error {
        match self {
            Attempt::QemuCrashed(e) | Attempt::Failed(e) => e,
        }
    }
}

impl From<Error> for Attempt {
    fn from(e: Error) -> Self {
        Attempt::Failed(e)
    }
}

/// QEMU died of a signal (`status` as [`Console`] words it) before the guest printed its
/// scenario's start marker (`boot_time`): nothing of the scenario ran.
fn crashed_before_scenario(boot_time: Option<Duration>, status: &str) -> bool {
    boot_time.is_none() && status.starts_with("QEMU signal:")
}

fn run_once(
    spec: &GuestSpec,
    files: &[(PathBuf, String)],
    prepared: &crate::prepare::Prepared,
    watch: Option<Watch<'_>>,
) -> Result<GuestRun, Attempt> {
    let dir = RunDir {
        root: harness_dir().join("runs").join(&spec.name),
    };
    if dir.root.exists() {
        fs::remove_dir_all(&dir.root)
            .map_err(Error::io(format!("emptying {}", dir.root.display())))?;
    }
    fs::create_dir_all(dir.results())
        .map_err(Error::io(format!("creating {}", dir.root.display())))?;
    initramfs::write_run(&prepared.initramfs_base, &spec.script, files, &dir.initrd())?;
    let disk = fs::File::create(dir.disk()).and_then(|f| f.set_len(DISK_BYTES));
    disk.map_err(Error::io(format!("creating {}", dir.disk().display())))?;

    let accel = std::env::var(ACCEL_ENV).unwrap_or_else(|_| "tcg".into());
    let mut cmd = Command::new(&prepared.qemu);
    cmd.args(qemu_args(spec, &accel, &prepared.kernel, &dir));
    if let Some((path, _)) = &watch {
        let qmp = format!("unix:{},server=on,wait=off", path.display());
        cmd.args(["-qmp", &qmp]);
    }
    // Taps, bridge and namespace live until QEMU is gone (the end of this function).
    let taps: Vec<(usize, u16)> = spec
        .nics
        .iter()
        .enumerate()
        .filter(|(_, n)| n.tap_queues > 0)
        .map(|(i, n)| (i, n.tap_queues))
        .collect();
    let _wire = if taps.is_empty() {
        None
    } else {
        let wire =
            crate::tapwire::TapWire::create(&spec.name, &taps, dir.root.join("tap-links.txt"))?;
        cmd = wire.wrap(&cmd);
        Some(wire)
    };
    fs::write(dir.root.join("qemu-cmdline"), crate::deps::describe(&cmd))
        .map_err(Error::io("writing qemu-cmdline"))?;
    let console = Console::run(cmd, spec, watch.map(|(_, w)| w))?;
    fs::write(dir.root.join("console.log"), &console.text)
        .map_err(Error::io("writing console.log"))?;

    let tail = || match tail_lines(&console.text, TAIL) {
        t if t.trim().is_empty() => "(none)".to_string(),
        t => t,
    };
    if console.timed_out {
        let limit = match console.boot_time {
            Some(_) => spec.timeout,
            None => BOOT_LIMIT,
        };
        return Err(Attempt::Failed(Error::Timeout {
            name: spec.name.clone(),
            secs: limit.as_secs(),
            tail: tail(),
        }));
    }
    let Some(exit_code) = console.exit_code else {
        let status = console.qemu_status.clone();
        let crashed = crashed_before_scenario(console.boot_time, &status);
        let e = Error::NoExit {
            name: spec.name.clone(),
            status,
            tail: tail(),
        };
        return Err(if crashed {
            Attempt::QemuCrashed(e)
        } else {
            Attempt::Failed(e)
        });
    };
    let mut tar = Command::new("tar");
    tar.arg("-xf").arg(dir.disk()).arg("-C").arg(dir.results());
    output(
        &mut tar,
        "the guest did not leave a tar archive on its results disk",
    )?;
    let pcaps = spec
        .nics
        .iter()
        .enumerate()
        .map(|(i, n)| n.pcap.then(|| dir.pcap(i)))
        .collect();
    Ok(GuestRun {
        console: console.text,
        results: dir.results(),
        pcaps,
        exit_code,
        boot_time: console.boot_time.unwrap_or_default(),
        total_time: console.total_time,
        marks: console.marks,
        threads: console.threads,
    })
}

pub(crate) fn validate(spec: &GuestSpec) -> Result<(), Error> {
    let bad = |reason: String| {
        Err(Error::Spec {
            name: spec.name.clone(),
            reason,
        })
    };
    let name_ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if spec.name.is_empty() || spec.name.starts_with('.') || !spec.name.chars().all(name_ok) {
        return bad("name must be non-empty, of [A-Za-z0-9._-], not starting with '.'".into());
    }
    let max = (DISK_SLOT - FIRST_NIC_SLOT) as usize;
    if spec.nics.len() > max {
        return bad(format!("{} NICs, at most {max} fit", spec.nics.len()));
    }
    if let Some(n) = spec
        .nics
        .iter()
        .find(|n| n.model.is_empty() || n.model.starts_with(','))
    {
        return bad(format!(
            "NIC model {:?} must start with a QEMU device name",
            n.model
        ));
    }
    Ok(())
}

/// QEMU's arguments for `spec` (everything after the program name).
pub(crate) fn qemu_args(spec: &GuestSpec, accel: &str, kernel: &Path, dir: &RunDir) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let cpus = spec.cpus.max(1).to_string();
    let mut add = |words: &[&str]| args.extend(words.iter().map(|w| w.to_string()));
    add(&[
        "-accel", accel, "-machine", "q35", "-cpu", "max", "-m", "2048", "-smp", &cpus,
    ]);
    // -nic none: no default NIC beside ours; -no-reboot: a guest panic ends QEMU.
    add(&["-nographic", "-vga", "none", "-no-reboot", "-nic", "none"]);
    // Thread names ("CPU 0/TCG") for anyone profiling QEMU while a guest runs.
    add(&["-name", "zcnic,debug-threads=on"]);
    let mut cmdline = String::from("console=ttyS0 quiet panic=-1");
    if spec.iommu {
        // The vIOMMU must be created before the devices it translates for.
        add(&["-device", "intel-iommu,caching-mode=on"]);
        cmdline.push_str(" intel_iommu=on iommu=pt");
    }
    let (kernel, initrd) = (
        kernel.display().to_string(),
        dir.initrd().display().to_string(),
    );
    add(&["-kernel", &kernel, "-initrd", &initrd, "-append", &cmdline]);
    let mut hubs: Vec<u32> = Vec::new();
    for (i, nic) in spec.nics.iter().enumerate() {
        let slot = FIRST_NIC_SLOT + i as u32;
        let mac = format!("52:54:00:12:34:{:02x}", i + 0x10);
        let netdev = match nic.tap_queues {
            0 => format!("hubport,id=n{i},hubid={}", nic.hub),
            q => format!(
                "tap,id=n{i},ifname={},queues={q},vhost=off,script=no,downscript=no",
                crate::tapwire::tap_name(i)
            ),
        };
        add(&["-netdev", &netdev]);
        let device = format!(
            "{},netdev=n{i},addr=0x{slot:02x},mac={mac},romfile=",
            nic.model
        );
        add(&["-device", &device]);
        if nic.pcap {
            let pcap = dir.pcap(i).display().to_string();
            add(&[
                "-object",
                &format!("filter-dump,id=f{i},netdev=n{i},file={pcap}"),
            ]);
        }
        if nic.tap_queues == 0 && !hubs.contains(&nic.hub) {
            hubs.push(nic.hub);
        }
    }
    // A port without a device drops what reaches it; a hub whose only port is a NIC's
    // stalls virtio-net's TX after one ring.
    for hub in hubs {
        add(&["-netdev", &format!("hubport,id=sink{hub},hubid={hub}")]);
    }
    let drive = format!(
        "file={},format=raw,if=none,id=results",
        dir.disk().display()
    );
    let disk = format!("virtio-blk-pci,drive=results,addr=0x{DISK_SLOT:02x}");
    add(&["-drive", &drive, "-device", &disk]);
    args
}

/// What the serial console showed, and how QEMU ended.
struct Console {
    text: String,
    exit_code: Option<i32>,
    boot_time: Option<Duration>,
    total_time: Duration,
    qemu_status: String,
    /// QEMU was killed at the spec's timeout.
    timed_out: bool,
    marks: Vec<(Duration, String)>,
    threads: Vec<Sample>,
}

impl Console {
    /// Runs QEMU to its end or until a timeout kills it, reading the console as it comes:
    /// [`BOOT_LIMIT`] until the scenario starts, then the spec's timeout from that moment.
    /// `watch` sees each line first.
    fn run(
        mut cmd: Command,
        spec: &GuestSpec,
        mut watch: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Console, Error> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut deadline = started + BOOT_LIMIT;
        let mut child = cmd
            .spawn()
            .map_err(Error::io(format!("starting {}", crate::deps::QEMU)))?;
        let lines = spawn_line_reader(child.stdout.take().expect("piped stdout"));
        let stop_sampling = Arc::new(AtomicBool::new(false));
        let sampler = spawn_sampler(child.id(), started, stop_sampling.clone());
        let stderr = spawn_reader(child.stderr.take().expect("piped stderr"));
        let mut console = Console {
            text: String::new(),
            exit_code: None,
            boot_time: None,
            total_time: Duration::ZERO,
            qemu_status: String::new(),
            timed_out: false,
            marks: Vec::new(),
            threads: Vec::new(),
        };
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(w) = watch.as_mut() {
                        w(&line);
                    }
                    let booting = console.boot_time.is_none();
                    console.take_line(line, started, spec.echo);
                    if let (true, Some(booted)) = (booting, console.boot_time) {
                        deadline = started + booted + spec.timeout;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    stop_sampling.store(true, Ordering::Relaxed);
                    console.threads = sampler.join().unwrap_or_default();
                    console.timed_out = true;
                    console.total_time = started.elapsed();
                    return Ok(console);
                }
            }
        }
        let status = wait_until(&mut child, deadline);
        console.total_time = started.elapsed();
        stop_sampling.store(true, Ordering::Relaxed);
        console.threads = sampler.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        console.qemu_status = match status {
            Some(s) => format!("QEMU {s}"),
            None => "QEMU closed its console but did not exit; killed".into(),
        };
        if !stderr.trim().is_empty() {
            console
                .qemu_status
                .push_str(&format!(", stderr: {}", tail_lines(&stderr, 10)));
        }
        Ok(console)
    }

    fn take_line(&mut self, line: String, started: Instant, echo: bool) {
        if echo {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        if line.contains(START_MARKER) && self.boot_time.is_none() {
            self.boot_time = Some(started.elapsed());
        }
        if let Some(mark) = parse_mark(&line) {
            self.marks.push((started.elapsed(), mark.to_string()));
        }
        if let Some(code) = parse_exit(&line) {
            self.exit_code = Some(code);
        }
        self.text.push_str(&line);
        self.text.push('\n');
    }
}

/// The scenario's exit status from an exit-marker line.
fn parse_exit(line: &str) -> Option<i32> {
    let at = line.find(EXIT_MARKER)?;
    line[at + EXIT_MARKER.len()..].trim().parse().ok()
}

/// Waits for QEMU to exit, killing it at `deadline`; `None` if it had to be killed.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Sends each line of `pipe` as it arrives (lossy UTF-8, see [`strip_controls`]).
fn spawn_line_reader(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = strip_controls(&String::from_utf8_lossy(&buf));
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Removes terminal escape sequences (SeaBIOS resets and clears the screen) and other
/// control characters but tabs, so that echoing the console leaves the terminal alone.
fn strip_controls(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            // CSI: ESC [ parameters... final byte in '@'..='~'; else ESC + one character.
            '\x1b' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                _ => continue,
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Collects all of `pipe`.
fn spawn_reader(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_qemu_killed_by_a_signal_before_the_scenario_is_booted_again() {
        let abort = "QEMU signal: 6 (SIGABRT), stderr: qemu-system-x86_64: system/physmem.c:2678: \
                     iotlb_to_section: Assertion `section_index < d->map.sections_nb' failed.";
        assert!(crashed_before_scenario(None, abort));
        // Once the scenario began, a crash is the run's result.
        assert!(!crashed_before_scenario(
            Some(Duration::from_secs(9)),
            abort
        ));
        // QEMU exiting by itself (a bad option, a guest poweroff) is not a crash.
        assert!(!crashed_before_scenario(
            None,
            "QEMU exit status: 1, stderr: signal"
        ));
        assert!(!crashed_before_scenario(
            None,
            "QEMU closed its console but did not exit; killed"
        ));
    }
    use crate::Nic;

    fn spec(nics: Vec<Nic>, iommu: bool) -> GuestSpec {
        GuestSpec {
            nics,
            script: String::new(),
            iommu,
            cpus: 2,
            timeout: Duration::from_secs(1),
            echo: false,
            kernel: crate::GuestKernel::Bookworm,
            name: "unit".into(),
        }
    }

    fn args_of(spec: &GuestSpec) -> String {
        let dir = RunDir {
            root: PathBuf::from("/r"),
        };
        qemu_args(spec, "tcg", Path::new("/k"), &dir).join(" ")
    }

    #[test]
    fn nics_get_slots_macs_hubs_and_one_sink_per_hub() {
        let s = spec(
            vec![
                Nic::new("e1000", 0, true),
                Nic::new("virtio-net-pci,disable-legacy=on", 0, false),
                Nic::new("e1000", 3, false),
            ],
            false,
        );
        let a = args_of(&s);
        assert!(a.contains("-netdev hubport,id=n0,hubid=0 -device e1000,netdev=n0,addr=0x02,mac=52:54:00:12:34:10,romfile="), "{a}");
        assert!(a.contains("-device virtio-net-pci,disable-legacy=on,netdev=n1,addr=0x03,mac=52:54:00:12:34:11,romfile="), "{a}");
        assert!(
            a.contains("-object filter-dump,id=f0,netdev=n0,file=/r/nic0.pcap"),
            "{a}"
        );
        assert!(!a.contains("id=f1"), "{a}");
        assert_eq!(a.matches("hubport,id=sink0,hubid=0").count(), 1, "{a}");
        assert_eq!(a.matches("hubport,id=sink3,hubid=3").count(), 1, "{a}");
        assert!(a.contains("virtio-blk-pci,drive=results,addr=0x1e"), "{a}");
        assert!(!a.contains("intel-iommu"), "{a}");
    }

    #[test]
    fn tap_wired_nics_get_a_tap_of_their_queues_and_no_hub() {
        let s = spec(
            vec![
                Nic::tap("e1000", 1, true),
                Nic::tap("virtio-net-pci,mq=on", 4, false),
            ],
            false,
        );
        let a = args_of(&s);
        assert!(a.contains("-netdev tap,id=n0,ifname=zt0,queues=1,vhost=off,script=no,downscript=no -device e1000,netdev=n0"), "{a}");
        assert!(a.contains("-netdev tap,id=n1,ifname=zt1,queues=4,vhost=off,script=no,downscript=no -device virtio-net-pci,mq=on,netdev=n1"), "{a}");
        assert!(a.contains("filter-dump,id=f0,netdev=n0"), "{a}");
        assert!(!a.contains("hubport"), "{a}");
    }

    #[test]
    fn iommu_comes_before_every_device() {
        let a = args_of(&spec(vec![Nic::new("e1000", 0, false)], true));
        let iommu = a
            .find("-device intel-iommu,caching-mode=on")
            .expect("vIOMMU");
        assert!(iommu < a.find("-device e1000").unwrap());
        assert!(
            a.contains("console=ttyS0 quiet panic=-1 intel_iommu=on iommu=pt"),
            "{a}"
        );
        assert!(a.contains("-no-reboot"));
    }

    #[test]
    fn console_lines_lose_escapes_and_controls() {
        let raw = "\x1bc\x1b[?7l\x1b[2Jzcnic-guest: kernel\r\n";
        assert_eq!(strip_controls(raw), "zcnic-guest: kernel");
        assert_eq!(strip_controls("a\tb\x07c"), "a\tbc");
        assert_eq!(strip_controls("\x1b[0mSeaBIOS"), "SeaBIOS");
    }

    #[test]
    fn exit_marker_parses_anywhere_in_a_line() {
        assert_eq!(parse_exit("zcnic-guest: scenario exit 0"), Some(0));
        assert_eq!(
            parse_exit("partial outputzcnic-guest: scenario exit 127"),
            Some(127)
        );
        assert_eq!(parse_exit("zcnic-guest: scenario start"), None);
    }

    #[test]
    fn specs_are_validated() {
        let mut s = spec(vec![], false);
        s.name = "../escape".into();
        assert!(validate(&s).is_err());
        s.name = "ok-name_1.2".into();
        assert!(validate(&s).is_ok());
        s.nics = (0..29).map(|_| Nic::new("e1000", 0, false)).collect();
        assert!(validate(&s).unwrap_err().to_string().contains("at most 28"));
    }
}
