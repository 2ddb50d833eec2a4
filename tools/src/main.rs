//! `zcnic`: list, bind and drive NICs from userspace.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use zcnic::{Config, HugepageStatus, PciAddr, RingChoice};
use zcnic_tools::{bind, dump, frame, msg, pktgen, units, ToolError};

/// zcnic — a poll-mode, zero-copy userspace NIC driver.
///
/// Typical session (as root, in a VM with an IOMMU):
///   zcnic list                              # find the NIC
///   zcnic hugepages --reserve 256 --mount   # DMA memory
///   zcnic bind 0000:00:02.0                 # hand it to vfio-pci
///   zcnic pktgen 0000:00:02.0 --duration 10 # send
///   zcnic unbind 0000:00:02.0               # give it back to the kernel
#[derive(Parser, Debug)]
#[command(name = "zcnic", version, verbatim_doc_comment)]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List PCI network controllers: vendor:device, driver, IOMMU group, zcnic support.
    List,
    /// Hand a NIC to vfio-pci so zcnic can drive it (remembers the driver it had).
    Bind {
        /// PCI address, e.g. 0000:00:02.0 (see `zcnic list`).
        pci: String,
        /// Driver to bind to.
        #[arg(long, default_value = "vfio-pci")]
        driver: String,
    },
    /// Give a NIC back to the kernel driver it had before `zcnic bind`.
    Unbind {
        /// PCI address, e.g. 0000:00:02.0.
        pci: String,
    },
    /// Show, reserve or mount 2 MiB hugepages (zcnic's DMA memory).
    Hugepages {
        /// Set the number of reserved 2 MiB pages (a NIC port needs about 8).
        #[arg(long, value_name = "PAGES")]
        reserve: Option<usize>,
        /// Mount hugetlbfs if no mount exists.
        #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "/dev/hugepages")]
        mount: Option<PathBuf>,
    },
    /// Send numbered UDP frames; prints the rate every second and a summary.
    ///
    /// Each payload carries a sequence number (from 0), a timestamp and a stream id, so a
    /// receiver (`zcnic dump`, a pcap) can check order and loss.
    Pktgen {
        /// PCI address of a NIC bound to vfio-pci.
        pci: String,
        /// Frame size in bytes without FCS, 60..=1514.
        #[arg(long, default_value_t = 60)]
        size: usize,
        /// Stop after this many frames.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds (default: run until Ctrl-C or --count).
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Packets per second (e.g. 20000, 10k, 1.5M); default: as fast as the NIC takes them.
        #[arg(long, value_name = "PPS")]
        rate: Option<String>,
        /// Frames per burst (one doorbell per burst).
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Destination MAC.
        #[arg(long, default_value = "ff:ff:ff:ff:ff:ff")]
        dst_mac: String,
        /// Stream id written into every payload.
        #[arg(long, default_value_t = 0)]
        stream: u16,
        /// virtio ring format: packed when the device offers it (auto), or forced.
        #[arg(long, value_enum, default_value_t = Ring::Auto)]
        ring: Ring,
    },
    /// Receive frames into a pcap file (tcpdump/tshark read it).
    Dump {
        /// PCI address of a NIC bound to vfio-pci.
        pci: String,
        /// pcap file to write.
        #[arg(short = 'w', long)]
        out: PathBuf,
        /// Stop after this many frames.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Only frames for this port's MAC and broadcast (default: everything).
        #[arg(long)]
        no_promisc: bool,
        /// virtio ring format: packed when the device offers it (auto), or forced.
        #[arg(long, value_enum, default_value_t = Ring::Auto)]
        ring: Ring,
    },
}

/// `--ring` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Ring {
    Auto,
    Split,
    Packed,
}

impl From<Ring> for RingChoice {
    fn from(r: Ring) -> Self {
        match r {
            Ring::Auto => RingChoice::Auto,
            Ring::Split => RingChoice::Split,
            Ring::Packed => RingChoice::Packed,
        }
    }
}

fn parse_pci(s: &str) -> Result<PciAddr, ToolError> {
    Ok(s.parse::<PciAddr>()?)
}

fn seconds(flag: &str, v: Option<f64>) -> Result<Option<Duration>, ToolError> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(msg(format!(
            "--{flag} {s}: give a number of seconds above 0"
        ))),
    }
}

fn check_count(c: Option<u64>) -> Result<(), ToolError> {
    match c {
        Some(0) => Err(msg("--count 0 would do nothing: give at least 1")),
        _ => Ok(()),
    }
}

fn hugepages(reserve: Option<usize>, mount: Option<PathBuf>) -> Result<(), ToolError> {
    if let Some(dir) = mount {
        if let Some(m) = zcnic_hugepages::hugetlbfs_mount() {
            println!("hugetlbfs already mounted at {}", m.display());
        } else {
            zcnic_hugepages::mount_hugetlbfs(&dir)?;
            println!("mounted hugetlbfs at {}", dir.display());
        }
    }
    let st = match reserve {
        Some(n) => {
            let st = HugepageStatus::reserve(n)?;
            if st.total < n {
                return Err(msg(format!(
                    "asked for {n} hugepages, the kernel reserved {} (memory too fragmented or too small)",
                    st.total
                )));
            }
            st
        }
        None => HugepageStatus::read()?,
    };
    let mount = st
        .mount
        .map_or("not mounted (run `zcnic hugepages --mount`)".into(), |m| {
            m.display().to_string()
        });
    println!(
        "2 MiB hugepages: {} reserved, {} free; hugetlbfs: {mount}",
        st.total, st.free
    );
    Ok(())
}

fn run(cmd: Cmd) -> Result<(), ToolError> {
    match cmd {
        Cmd::List => bind::list(),
        Cmd::Bind { pci, driver } => bind::bind(&parse_pci(&pci)?, &driver),
        Cmd::Unbind { pci } => bind::unbind(&parse_pci(&pci)?),
        Cmd::Hugepages { reserve, mount } => hugepages(reserve, mount),
        Cmd::Pktgen {
            pci,
            size,
            count,
            duration,
            rate,
            batch,
            dst_mac,
            stream,
            ring,
        } => {
            let addr = parse_pci(&pci)?;
            if !(frame::MIN_FRAME..=frame::MAX_FRAME).contains(&size) {
                return Err(msg(format!(
                    "--size {size}: frames are {}..={} bytes (without FCS)",
                    frame::MIN_FRAME,
                    frame::MAX_FRAME
                )));
            }
            check_count(count)?;
            let args = pktgen::Args {
                size,
                count,
                duration: seconds("duration", duration)?,
                batch,
                rate: rate
                    .map(|r| units::parse_rate(&r).map_err(|e| msg(format!("--rate: {e}"))))
                    .transpose()?,
                dst_mac: units::parse_mac(&dst_mac).map_err(|e| msg(format!("--dst-mac: {e}")))?,
                stream,
            };
            let cfg = Config {
                ring: ring.into(),
                ..Config::default()
            };
            let mut nic = zcnic::open_with(&addr.to_string(), &cfg)?;
            println!(
                "pktgen {addr}: {} {}, link {}, {size}-byte frames{}",
                nic.driver(),
                zcnic::format_mac(nic.mac()),
                nic.link(),
                args.rate
                    .map_or(String::new(), |r| format!(" at {r:.0} pps"))
            );
            let s = pktgen::run(nic.as_mut(), &args)?;
            println!("{}", pktgen::summary_line(&addr, size, &s));
            Ok(())
        }
        Cmd::Dump {
            pci,
            out,
            count,
            duration,
            no_promisc,
            ring,
        } => {
            let addr = parse_pci(&pci)?;
            check_count(count)?;
            let args = dump::Args {
                count,
                duration: seconds("duration", duration)?,
            };
            let writer = dump::create(&out)?;
            // A deep ring rides out the moments the capture loop is busy writing the file.
            let cfg = Config {
                rx_ring: 4096,
                pool: 8192,
                promisc: !no_promisc,
                ring: ring.into(),
                ..Config::default()
            };
            let mut nic = zcnic::open_with(&addr.to_string(), &cfg)?;
            eprintln!(
                "dump {addr}: listening{} on {} {}, link {}, writing {}",
                if no_promisc { "" } else { " (promiscuous)" },
                nic.driver(),
                zcnic::format_mac(nic.mac()),
                nic.link(),
                out.display()
            );
            let s = dump::run(nic.as_mut(), writer, &args)?;
            let dev: Vec<String> = s
                .device_counters
                .iter()
                .map(|(n, v)| format!("{n} {v}"))
                .collect();
            println!(
                "dump {addr}: wrote {} frames ({} bytes) to {}; device {}",
                s.frames,
                s.bytes,
                out.display(),
                dev.join(", ")
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("zcnic: internal error: {info} (please report this)");
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad usage");
            eprintln!(
                "zcnic: {}; see `zcnic --help`",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    if let Err(e) =
        ctrlc::set_handler(|| zcnic_tools::STOP.store(true, std::sync::atomic::Ordering::Relaxed))
    {
        log::warn!("cannot catch Ctrl-C: {e}");
    }
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zcnic: error: {e}");
            ExitCode::from(2)
        }
    }
}
