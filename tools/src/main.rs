//! `zcnic`: list, bind and drive NICs from userspace.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use zcnic::{Config, HugepageStatus};
use zcnic_tools::checks::{check_burst, check_count, parse_pci, seconds, MAX_BURST};
use zcnic_tools::cli::{Cli, Cmd, FwdCmd, FwdMode};
use zcnic_tools::pktgen_cli::pktgen_cmd;
use zcnic_tools::{bind, dump, fwd, groups, msg, multiqueue, stats, ToolError};

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

fn fwd_cmd(cmd: FwdCmd) -> Result<(), ToolError> {
    let FwdCmd {
        ports,
        mode,
        burst,
        drop_every,
        duration,
        queues,
        idle,
        port,
    } = cmd;
    if queues == 0 {
        return Err(msg("--queues 0: give at least 1"));
    }
    if ports.len() > 2 {
        return Err(msg("fwd takes one or two --port"));
    }
    check_burst("burst", burst, MAX_BURST)?;
    if drop_every == Some(0) {
        return Err(msg("--drop-every 0: give N >= 1 (drops every Nth frame)"));
    }
    // Ports by name: `xdp:IFACE` (AF_XDP) or a PCI address spelled in full,
    // so two spellings of one device compare equal.
    let names = ports
        .iter()
        .map(|p| match p.starts_with("xdp:") {
            true => Ok(p.clone()),
            false => parse_pci(p).map(|a| a.to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if names.len() == 2 && names[0] == names[1] {
        return Err(msg("the two --port are the same device: give it once"));
    }
    let args = fwd::Args {
        mode: match mode {
            FwdMode::Io => fwd::Mode::Io,
            FwdMode::Macswap => fwd::Mode::Macswap,
        },
        burst,
        drop_every,
        duration: seconds("duration", duration)?,
        quiet: false,
        yield_idle: false,
        queue: None,
        idle,
    };
    let cfg = Config {
        promisc: true,
        queues,
        ..port.config()
    };
    if queues > 1 {
        return multiqueue::fwd_cmd(&names, &cfg, &args);
    }
    let mut nics = names
        .iter()
        .map(|a| zcnic::open_with(a, &cfg))
        .collect::<Result<Vec<_>, _>>()?;
    for n in &nics {
        println!(
            "fwd: {} {} {}, link {}",
            n.name(),
            n.driver(),
            zcnic::format_mac(n.mac()),
            n.link()
        );
    }
    println!("fwd: {:?} mode, burst {burst}; Ctrl-C stops", args.mode);
    let totals = fwd::run(&mut nics, &args)?;
    for (from, to, s) in totals {
        println!(
            "fwd {} -> {}: received {}, forwarded {}, dropped on purpose {}",
            nics[from].name(),
            nics[to].name(),
            s.rx,
            s.tx,
            s.dropped
        );
    }
    let addrs: Vec<String> = nics.iter().map(|n| n.name()).collect();
    let pools: Vec<_> = nics.iter().map(|n| n.pool().clone()).collect();
    drop(nics); // stops DMA; every buffer a ring held goes back to its pool
    zcnic_tools::fwd::print_pools(&addrs, &pools);
    Ok(())
}

fn run(cmd: Cmd) -> Result<(), ToolError> {
    match cmd {
        Cmd::List => bind::list(),
        Cmd::Bind { pci, driver, force } => bind::bind(&parse_pci(&pci)?, driver.as_deref(), force),
        Cmd::Doctor => unreachable!("run by main: doctor has its own exit status"),
        Cmd::Unbind { pci } => bind::unbind(&parse_pci(&pci)?),
        Cmd::Hugepages { reserve, mount } => hugepages(reserve, mount),
        Cmd::Pktgen(c) => pktgen_cmd(*c),
        Cmd::Replay(c) => zcnic_tools::replay::cmd(c),
        Cmd::Fwd(f) => fwd_cmd(f),
        Cmd::Stats {
            pci,
            duration,
            json,
            queues,
            reta,
            idle,
            port,
        } => stats::run(&pci, duration, json, queues, &reta, idle, port),
        Cmd::Dump {
            pci,
            out,
            count,
            duration,
            ether_type,
            udp_port,
            no_promisc,
            join,
            allmulti,
            queues,
            idle,
            port,
        } => {
            // `xdp:eth0` (AF_XDP) by name; a PCI address checked and spelled in full.
            let addr = if pci.starts_with("xdp:") {
                pci.clone()
            } else {
                parse_pci(&pci)?.to_string()
            };
            check_count(count)?;
            let groups = groups::Groups::parse(&join, allmulti, !no_promisc)?;
            if queues == 0 {
                return Err(msg("--queues 0: give at least 1"));
            }
            let ether_type = ether_type
                .map(|t| {
                    u16::from_str_radix(t.trim_start_matches("0x"), 16).map_err(|_| {
                        msg(format!("--ether-type `{t}`: give 16-bit hex like 0x0800"))
                    })
                })
                .transpose()?;
            let args = dump::Args {
                count,
                idle,
                duration: seconds("duration", duration)?,
                filter: dump::Filter {
                    ether_type,
                    udp_port,
                },
            };
            let writer = dump::create(&out)?;
            // A deep ring rides out the moments the capture loop is busy writing the file.
            let cfg = Config {
                // Several queues share the pool: shallower rings, the same buffers.
                rx_ring: if queues > 1 { 1024 } else { 4096 },
                pool: 8192.max(2048 * usize::from(queues)),
                promisc: !no_promisc,
                queues,
                ..port.config()
            };
            let promisc = if no_promisc { "" } else { " (promiscuous)" };
            let promisc = format!("{promisc}{}", groups.describe());
            let s = if queues == 1 {
                let mut nic = zcnic::open_with(&addr, &cfg)?;
                groups.apply_nic(nic.as_mut())?;
                eprintln!(
                    "dump {addr}: listening{promisc} on {} {}, link {}, writing {}",
                    nic.driver(),
                    zcnic::format_mac(nic.mac()),
                    nic.link(),
                    out.display()
                );
                dump::run(nic.as_mut(), writer, &args)?
            } else {
                let (mut port, qs) = zcnic::open_port(&addr, &cfg)?;
                groups.apply_port(port.as_mut())?;
                eprintln!(
                    "dump {addr}: listening{promisc} on {} {} with {queues} queues (RSS), link {}, writing {}",
                    port.driver(),
                    zcnic::format_mac(port.mac()),
                    port.link(),
                    out.display()
                );
                let s = dump::run_queues(port.as_mut(), qs, writer, &args)?;
                for (q, (n, (hashed, wrong))) in s.per_queue.iter().zip(&s.hashes).enumerate() {
                    println!(
                        "dump {addr}: queue {q}: {n} frames, {hashed} with an RSS hash, {wrong} disagreeing with the software Toeplitz"
                    );
                }
                s
            };
            let dev: Vec<String> = s
                .device_counters
                .iter()
                .map(|(n, v)| format!("{n} {v}"))
                .collect();
            let dev = if dev.is_empty() {
                String::new()
            } else {
                format!("; device {}", dev.join(", "))
            };
            println!(
                "dump {addr}: wrote {} frames ({} bytes) to {}, {} filtered out{dev}",
                s.frames,
                s.bytes,
                out.display(),
                s.filtered,
            );
            println!("dump {addr}: {}", s.offloads.line());
            println!("dump {addr}: {}", s.idle);
            Ok(())
        }
    }
}

/// clap's multi-line usage error as one line: the message with what it lists (the missing
/// `<PCI>`), clap's suggestion, and the help of the subcommand the user typed in `args`.
fn usage_error(text: &str, args: impl IntoIterator<Item = String>) -> String {
    use clap::CommandFactory;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut out = lines
        .next()
        .unwrap_or("bad usage")
        .trim_start_matches("error: ")
        .to_string();
    for l in lines {
        if l.starts_with("Usage: ") || l.starts_with("For more information") {
            break;
        }
        match l.strip_prefix("tip: ") {
            // "to pass '--cnt' as a value, use '-- --cnt'" misleads more than it helps.
            Some(tip) if tip.starts_with("to pass") => {}
            Some(tip) => out = format!("{out} ({tip})"),
            None => out = format!("{out} {l}"),
        }
    }
    let cmd = Cli::command();
    let help = match args
        .into_iter()
        .skip(1)
        .find(|a| cmd.find_subcommand(a).is_some())
    {
        Some(sub) => format!("zcnic {sub} --help"),
        None => "zcnic --help".into(),
    };
    format!("{out}; see `{help}`")
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("zcnic: internal error: {info} (please report this)");
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                // No command given: show what there is, but as the usage error it is.
                let _ = e.print();
                return ExitCode::from(2);
            }
            eprintln!("zcnic: {}", usage_error(&e.to_string(), std::env::args()));
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
    if let Cmd::Doctor = cli.cmd {
        return zcnic_tools::doctor::main();
    }
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zcnic: error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(args: &str) -> String {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        let e = Cli::try_parse_from(&args).expect_err("bad usage");
        usage_error(&e.to_string(), args)
    }

    #[test]
    fn usage_errors_are_one_line_naming_the_subcommand_help() {
        let missing = usage("zcnic pktgen");
        assert!(missing.contains("not provided: <PCI>"), "{missing}");
        assert!(missing.ends_with("see `zcnic pktgen --help`"), "{missing}");
        let unknown = usage("zcnic pktgen 0000:00:02.0 --bogus");
        assert!(
            unknown.contains("'--bogus'") && !unknown.contains("to pass"),
            "{unknown}"
        );
        let value = usage("zcnic dump 0000:00:02.0 --out x --ring round");
        assert!(value.ends_with("see `zcnic dump --help`"), "{value}");
        assert_eq!(
            usage("zcnic frobnicate"),
            "unrecognized subcommand 'frobnicate'; see `zcnic --help`"
        );
        for u in [missing, unknown, value] {
            assert_eq!(u.lines().count(), 1, "{u}");
        }
    }

    #[test]
    fn negative_numbers_reach_the_checks() {
        let cli = Cli::try_parse_from([
            "zcnic",
            "pktgen",
            "0000:00:02.0",
            "--rate",
            "-5",
            "--duration",
            "-1",
        ])
        .expect("parsed");
        let Cmd::Pktgen(c) = cli.cmd else {
            panic!("pktgen")
        };
        assert_eq!(c.rate.as_deref(), Some("-5"));
        assert!(seconds("duration", c.duration).is_err());
    }
}
