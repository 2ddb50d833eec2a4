//! The `zcnic` command line: every subcommand and flag, with the help text users read.

use crate::idle::Idle;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use zcnic::{Config, RingChoice};

/// zcnic — a poll-mode, zero-copy userspace NIC driver.
///
/// Typical session (as root, in a VM with an IOMMU):
///   zcnic doctor                            # what is missing here, and what to run
///   zcnic list                              # find a NIC the machine is not using
///   zcnic hugepages --reserve 256 --mount   # DMA memory
///   zcnic bind 0000:00:02.0                 # hand it to vfio-pci
///   zcnic pktgen 0000:00:02.0 --duration 10 # send
///   zcnic unbind 0000:00:02.0               # give it back to the kernel
#[derive(Parser, Debug)]
#[command(name = "zcnic", version, verbatim_doc_comment)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// `zcnic replay`'s options.
#[derive(clap::Args, Debug)]
pub struct ReplayCmd {
    /// The capture: pcap or pcapng of Ethernet frames (tcpdump -w, tshark -w, zcnic dump).
    pub file: PathBuf,
    /// PCI address of the NIC to send on (bound with `zcnic bind`).
    pub pci: String,
    /// Play the capture's own timing this many times faster (2 halves every gap; 0.5
    /// doubles them).
    #[arg(long, conflicts_with = "rate")]
    pub speed: Option<f64>,
    /// A fixed rate instead of the capture's timing: packets per second (20k, 1.5M,
    /// 20kpps) or bits per second on the wire (100Mbit, 1Gbit, 100Mbps; each frame
    /// counts its bytes plus FCS, preamble and inter-frame gap, 24 bytes).
    #[arg(long)]
    pub rate: Option<String>,
    /// Passes over the capture; 0 replays it until Ctrl-C.
    #[arg(long = "loop", value_name = "N", default_value_t = 1)]
    pub loops: u64,
    /// Copy every frame into pool buffers instead of sending from the capture's memory
    /// (what a port without an IOMMU does anyway).
    #[arg(long)]
    pub copy: bool,
    #[command(flatten)]
    pub port: PortOpts,
}

/// Options every command that opens a port shares.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct PortOpts {
    /// virtio ring format: packed when the device offers it (auto), or forced.
    #[arg(long, value_enum, default_value_t = Ring::Auto)]
    pub ring: Ring,
    /// Largest IP packet in bytes (jumbo frames above 1500: frames of MTU + 14 bytes span
    /// several buffers). e1000 up to 16110; igb 1500 for now; virtio-net up to the
    /// device's own MTU when it has one (QEMU: host_mtu=).
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u16).range(68..))]
    pub mtu: u16,
    /// Strip 802.1Q tags from received frames (e1000, igb: CTRL.VME), reporting each with
    /// its frame; on the e1000 also what lets the NIC insert tags on transmit.
    #[arg(long)]
    pub vlan_strip: bool,
    /// xdp:IFACE: bind the AF_XDP socket in copy mode even where the driver has zero copy
    /// (which is otherwise tried first, with the pool in hugepages).
    #[arg(long)]
    pub xdp_copy: bool,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List PCI network controllers: vendor:device, driver, IOMMU group, mode, zcnic
    /// support, the kernel interface and whether the machine is using it.
    ///
    /// STATE `active: 10.0.0.5, default route` means the NIC carries this machine's
    /// traffic (an address on an up interface, a route, a bridge or bond): `zcnic bind`
    /// refuses it without --force.
    List,
    /// Hand a NIC to vfio-pci (or uio_pci_generic without an IOMMU) so zcnic can drive it
    /// (remembers the driver it had).
    Bind {
        /// PCI address, e.g. 0000:00:02.0 (see `zcnic list`).
        pci: String,
        /// vfio-pci or uio_pci_generic [default: vfio-pci when the device has an IOMMU
        /// group, uio_pci_generic (no-IOMMU mode) otherwise].
        #[arg(long)]
        driver: Option<String>,
        /// Bind even when the machine is using the NIC (`zcnic list` says `active`): its
        /// interface, addresses and routes go away, and an SSH session over it with them.
        #[arg(long)]
        force: bool,
    },
    /// Give a NIC back to the kernel driver it had before `zcnic bind`.
    Unbind {
        /// PCI address, e.g. 0000:00:02.0.
        pci: String,
    },
    /// Check what zcnic needs on this machine and say what to run for what is missing.
    ///
    /// One line per check: `ok`, `fix` with the command to run, or `note` (worth knowing,
    /// nothing to do). Checks root, the IOMMU (or uio for no-IOMMU mode), the vfio-pci and
    /// uio_pci_generic modules, hugepages and hugetlbfs, each NIC's binding and whether
    /// the machine uses it, and QEMU's version (for `cargo xtask`). Changes nothing.
    /// Exit status: 0 when no line says `fix`, 1 otherwise.
    Doctor,
    /// Show, reserve or mount 2 MiB hugepages (zcnic's DMA memory).
    Hugepages {
        /// Set the number of reserved 2 MiB pages (a NIC port needs about 8).
        #[arg(long, value_name = "PAGES")]
        reserve: Option<usize>,
        /// Mount hugetlbfs if no mount exists.
        #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "/dev/hugepages")]
        mount: Option<PathBuf>,
    },
    /// Send numbered frames (UDP, TCP or ICMP over IPv4 or IPv6), optionally receive them
    /// back; live rates and a summary.
    ///
    /// Each payload carries a sequence number (from 0), a timestamp and a stream id. With
    /// --rx, frames arriving on that port (or on the sending port with --rx same) are
    /// counted: lost, duplicated, reordered, and their latency.
    ///
    /// Examples:
    ///   zcnic pktgen 0000:00:02.0 --duration 10                 # 60-byte UDP flat out
    ///   zcnic pktgen 0000:00:02.0 --count 1000000 --rate 100k --rx 0000:00:03.0   # loss, latency
    ///   zcnic pktgen 0000:00:02.0 --size 64-1514 --flows 16     # sizes cycled, 16 flows
    ///   zcnic pktgen 0000:00:02.0 --proto tcp --tcp-flags SYN --ipv6 --count 1000
    ///   zcnic pktgen 0000:00:02.0 --proto icmp --vlan 100 --csum-offload
    ///   zcnic pktgen 0000:00:02.0 --dst-ip 10.0.0.1-10.0.3.255 --src-port 1000-2000:10
    ///   zcnic pktgen 0000:00:02.0 --dst-ip 10.0.0.1-10.0.0.9 --order random --seed 7
    ///   zcnic pktgen 0000:00:02.0 --rate 500Mbit --pacing poisson --duration 10
    ///   zcnic pktgen 0000:00:02.0 --rate 10% --size 1514 --duration 10   # of the link
    ///   zcnic pktgen 0000:00:02.0 --mtu 9000 --size 9014 --zero-copy --count 1000
    ///   zcnic pktgen 0000:00:02.0 --rx 0000:00:03.0 --duration 5 \
    ///       --stream size=64,rate=1k,id=1 --stream imix,rate=3k,id=9 \
    ///       --json --csv run.csv --plot run.svg   # two streams, per-stream loss, a picture
    #[command(verbatim_doc_comment)]
    Pktgen(Box<PktgenCmd>),
    /// Send a capture's frames (pcap or pcapng, Ethernet) byte for byte: with their
    /// original timing, faster or slower (--speed), or at a fixed rate (--rate), once or
    /// over and over (--loop).
    ///
    /// The capture is read once into memory the NIC reads directly (registered with the
    /// IOMMU): each frame goes out as a small head buffer and the rest from the capture,
    /// without a copy. Frames longer than the port's MTU allows are counted and skipped,
    /// never cut (--mtu 9000 for jumbo captures).
    ///
    /// Examples:
    ///   zcnic replay trace.pcap 0000:00:02.0                    # as captured
    ///   zcnic replay trace.pcapng 0000:00:02.0 --speed 2        # twice as fast
    ///   zcnic replay trace.pcap 0000:00:02.0 --rate 100k --loop 0   # 100 kpps until Ctrl-C
    ///   zcnic replay trace.pcap 0000:00:02.0 --rate 500Mbit --mtu 9000
    ///   zcnic replay trace.pcap 0000:00:02.0 --copy             # copy each frame instead
    #[command(verbatim_doc_comment)]
    Replay(ReplayCmd),
    /// Forward frames between two ports (io or macswap), without copying them.
    Fwd(FwdCmd),
    /// Receive frames into a pcap file (tcpdump/tshark read it).
    Dump {
        /// PCI address of a NIC bound to vfio-pci, or `xdp:IFACE` for a NIC the kernel
        /// drives, through AF_XDP (queue 0; queues 0..N with --queues N).
        pci: String,
        /// pcap file to write.
        #[arg(short = 'w', long)]
        out: PathBuf,
        /// Stop after this many frames.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
        duration: Option<f64>,
        /// Keep only frames of this EtherType (e.g. 0x0800).
        #[arg(long, value_name = "HEX")]
        ether_type: Option<String>,
        /// Keep only UDP frames from or to this port.
        #[arg(long)]
        udp_port: Option<u16>,
        /// Only frames for this port's MAC and broadcast (default: everything), and the
        /// groups of --join and --allmulti.
        #[arg(long)]
        no_promisc: bool,
        /// With --no-promisc, join this multicast group too (e.g. 33:33:ff:00:00:01, the
        /// IPv6 solicited-node group of ::1); repeat for more. The NIC may let other groups
        /// in (the e1000 and igb match a 12-bit hash of the address).
        #[arg(long, value_name = "MAC")]
        join: Vec<String>,
        /// With --no-promisc, receive every multicast frame (all-multicast).
        #[arg(long)]
        allmulti: bool,
        /// Receive on this many queues, one thread each, with RSS spreading flows over
        /// them (igb: up to 8); the summary counts frames per queue.
        #[arg(long, default_value_t = 1)]
        queues: u16,
        /// When a poll finds nothing: `poll` spins (a whole core, lowest latency), `sleep`
        /// arms the receive interrupt after every empty poll and sleeps until a frame comes
        /// (least CPU, a wake-up per quiet spell), `hybrid[=T|=N]` polls while frames come and
        /// sleeps once the port was quiet for T (default 1ms, stretched up to 256x while sleeps
        /// turn out to be hiccups; `hybrid=500us`) or after N empty polls in a row
        /// (`hybrid=1000`). A port without a receive interrupt (a multi-queue port without
        /// MSI-X, as under uio) polls; with --queues > 1 each queue's thread sleeps on
        /// its own vector (igb, virtio-net MSI-X).
        #[arg(long, value_name = "MODE", default_value = "hybrid")]
        idle: Idle,
        #[command(flatten)]
        port: PortOpts,
    },
    /// Open a port, receive for a while (dropping what arrives), print its counters.
    Stats {
        /// PCI address of a NIC bound to vfio-pci, or `xdp:IFACE` for a NIC the kernel
        /// drives, through AF_XDP.
        pci: String,
        /// Seconds to receive before printing.
        #[arg(
            long,
            value_name = "SECS",
            default_value_t = 1.0,
            allow_negative_numbers = true
        )]
        duration: f64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Open the port with this many queue pairs (RSS) and print each queue's counters
        /// too (igb, virtio-net with multiqueue, xdp:IFACE), and the RSS key, hashed types
        /// and redirection table the port reads from the device (on xdp:IFACE, the kernel
        /// driver's, as `ethtool -x` shows them), or why it has none.
        #[arg(long, default_value_t = 1)]
        queues: u16,
        /// With --queues N: first set the RSS redirection table to these queues, repeated
        /// over the device's table (`--reta 1` sends every flow to queue 1, `--reta 0,1`
        /// alternates), as testpmd's `port config 0 rss reta` does. On xdp:IFACE it is the
        /// kernel driver's table (`ethtool -X`), put back as found when zcnic exits.
        #[arg(long, value_name = "Q[,Q...]", value_delimiter = ',')]
        reta: Vec<u16>,
        /// When a poll finds nothing: `poll` spins (a whole core, lowest latency), `sleep`
        /// arms the receive interrupt after every empty poll and sleeps until a frame comes
        /// (least CPU, a wake-up per quiet spell), `hybrid[=T|=N]` polls while frames come and
        /// sleeps once the port was quiet for T (default 1ms, stretched up to 256x while sleeps
        /// turn out to be hiccups; `hybrid=500us`) or after N empty polls in a row
        /// (`hybrid=1000`). A port without a receive interrupt (a multi-queue port without
        /// MSI-X, as under uio) polls; with --queues > 1 each queue's thread sleeps on
        /// its own vector (igb, virtio-net MSI-X).
        #[arg(long, value_name = "MODE", default_value = "hybrid")]
        idle: Idle,
        #[command(flatten)]
        port: PortOpts,
    },
}

/// `zcnic fwd`'s options.
#[derive(clap::Args, Debug)]
pub struct FwdCmd {
    /// Ports: one (frames go back out of it) or two (A→B and B→A); each a PCI address
    /// or `xdp:IFACE` for a NIC the kernel drives, through AF_XDP.
    #[arg(long = "port", required = true, num_args = 1, value_name = "PCI")]
    pub ports: Vec<String>,
    /// What to do to each frame.
    #[arg(long, value_enum, default_value_t = FwdMode::Io)]
    pub mode: FwdMode,
    /// Frames per receive burst.
    #[arg(long, default_value_t = 32)]
    pub burst: usize,
    /// Debugging aid: drop every Nth frame on each direction (N, 2N, …).
    #[arg(long, value_name = "N")]
    pub drop_every: Option<u64>,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// Forward on this many queue pairs, one thread each (igb: up to 8; xdp:IFACE: up
    /// to the interface's queues, `ethtool -l`), RSS spreading flows over them: queue k
    /// of one port forwards to queue k of the other (or of itself).
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// When a poll finds nothing: `poll` spins (a whole core, lowest latency), `sleep`
    /// arms the receive interrupt after every empty poll and sleeps until a frame comes
    /// (least CPU, a wake-up per quiet spell), `hybrid[=T|=N]` polls while frames come and
    /// sleeps once the port was quiet for T (default 1ms, stretched up to 256x while sleeps
    /// turn out to be hiccups; `hybrid=500us`) or after N empty polls in a row
    /// (`hybrid=1000`). A port without a receive interrupt (a multi-queue port without
    /// MSI-X, as under uio) polls; with --queues > 1 each queue's thread sleeps on
    /// its own vector (igb, virtio-net MSI-X).
    #[arg(long, value_name = "MODE", default_value = "poll")]
    pub idle: Idle,
    #[command(flatten)]
    pub port: PortOpts,
}

#[derive(clap::Args, Debug)]
pub struct PktgenCmd {
    /// PCI address of the sending NIC (bound to vfio-pci), or `xdp:IFACE` for a NIC the
    /// kernel drives, through AF_XDP (queue 0, or 0..N with --queues N; e.g. xdp:eth0).
    pub pci: String,
    /// Frame size in bytes without FCS: N or MIN-MAX (cycled), from 60 up to the MTU + 14
    /// (1514; --mtu 9000 allows 9014).
    #[arg(long, default_value = "60", conflicts_with = "imix")]
    pub size: String,
    /// Simple IMIX: 7:4:1 frames of 60, 590 and 1514 bytes.
    #[arg(long)]
    pub imix: bool,
    /// Stop after this many frames.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds (default: run until Ctrl-C or --count).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// Rate: packets per second (20000, 10k, 1.5M, 20kpps), bits per second on the wire
    /// (100Mbit, 1Gbit, 1Gbit/s, 500Mbps: each frame counts its bytes plus FCS, preamble
    /// and inter-frame gap, 24 bytes; over the mean of --size), or a share of the link
    /// speed (50%). Default: as fast as the NIC takes them.
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    pub rate: Option<String>,
    /// How paced frames spread in time: burst (whatever is due goes together, up to
    /// --batch), smooth (one frame at a time, evenly spaced), poisson (exponential gaps
    /// from --seed, as traffic of many independent sources).
    #[arg(long, value_name = "burst|smooth|poisson", default_value = "burst")]
    pub pacing: String,
    /// With --rate: after every FRAMES frames' time at the rate, send nothing for MS
    /// milliseconds, then go on (e.g. 1000:100). Bursts with silences between, what wakes
    /// a receiver that sleeps when idle (`--idle`) again and again.
    #[arg(long, value_name = "FRAMES:MS", requires = "rate")]
    pub gap: Option<String>,
    /// Frames per burst (one doorbell per burst).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Flows: source IP and UDP port step through this many values together (frame k is
    /// flow k % N: 10.0.0.1 + k, port 9000 + k).
    #[arg(long, default_value_t = 1)]
    pub flows: u16,
    /// Transport: udp, tcp (flags from --tcp-flags, default ACK) or icmp (echo requests,
    /// identifier 23107). Every shape carries pktgen's numbered payload, so --rx counts it.
    #[arg(long, default_value = "udp")]
    pub proto: String,
    /// TCP flags, comma-separated: SYN,ACK,FIN,RST,PSH,URG,ECE,CWR (e.g. SYN or PSH,ACK).
    #[arg(long, value_name = "LIST")]
    pub tcp_flags: Option<String>,
    /// IPv6 instead of IPv4 (addresses fd00::1 -> fd00::2 unless given).
    #[arg(long)]
    pub ipv6: bool,
    /// Source MAC, or a range FIRST-LAST or FIRST-LAST/STEP (default: the port's own).
    #[arg(long, value_name = "MAC[-MAC]")]
    pub src_mac: Option<String>,
    /// Destination MAC, or a range FIRST-LAST or FIRST-LAST/STEP.
    #[arg(long, value_name = "MAC[-MAC]", default_value = "ff:ff:ff:ff:ff:ff")]
    pub dst_mac: String,
    /// Source IP, or a range FIRST-LAST or FIRST-LAST:STEP (IPv6: /STEP), e.g. 10.0.0.1-10.0.0.254
    /// [default: 10.0.0.1, or fd00::1 with --ipv6].
    #[arg(long, value_name = "IP[-IP]")]
    pub src_ip: Option<String>,
    /// Destination IP, or a range, e.g. 10.0.0.1-10.0.3.255 or fd00::1-fd00::ff/2
    /// [default: 10.0.0.2, or fd00::2 with --ipv6].
    #[arg(long, value_name = "IP[-IP]")]
    pub dst_ip: Option<String>,
    /// UDP/TCP source port, or a range FIRST-LAST or FIRST-LAST:STEP, e.g. 1000-2000:10 [default: 9000].
    #[arg(long, value_name = "PORT[-PORT]")]
    pub src_port: Option<String>,
    /// UDP/TCP destination port or range [default: 23107, which --rx and dump count as
    /// pktgen's: frames to another port are sent but not counted on receive].
    #[arg(long, value_name = "PORT[-PORT]")]
    pub dst_port: Option<String>,
    /// How ranges combine: seq walks every combination like an odometer (the last of
    /// src-mac, dst-mac, src-ip, dst-ip, src-port, dst-port given varies fastest); random
    /// sends each round of combinations in a fresh pseudo-random order (--seed).
    ///
    /// Example: --dst-ip 10.0.0.1-10.0.0.3 --src-port 1000-1001 sends (10.0.0.1, 1000),
    /// (10.0.0.1, 1001), (10.0.0.2, 1000), ... and starts over after six frames.
    #[arg(long, value_name = "seq|random", default_value = "seq")]
    pub order: String,
    /// Seed of --order random and --pacing poisson: the same seed, the same order and
    /// gaps.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A stream id written into every payload (a number), or one stream of several sent
    /// at once, each with its own id, sizes, rate and count and its own counters, loss and
    /// latency (give --stream once per stream): comma-separated size=N|A-B, imix, rate=R
    /// (as --rate: 1M, 200Mbit, 10%), id=N (default: the stream's place, from 0),
    /// count=N; what a stream leaves out comes from --size, --rate and --count.
    ///
    /// Example: --stream size=64,rate=10k --stream imix,rate=50Mbit,id=9
    #[arg(long, value_name = "ID|SPEC", default_value = "0")]
    pub stream: Vec<String>,
    /// Write every second's rates per stream to this CSV file: second, stream, tx_pps,
    /// tx_mbps, rx_pps, lost, p50_us, p99_us.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Draw the run to this SVG file: frames per second sent and received per stream over
    /// time, and latency p50/p99 per stream (with --rx).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Send from this many transmit queues, one thread each (igb: up to 8): queue k sends
    /// stream --stream + k, its share of --count and of --rate.
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// Receive the frames back on this port (`same`: on the sending port).
    #[arg(long, value_name = "PCI|same")]
    pub rx: Option<String>,
    /// After sending, how long to wait for stragglers, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub rx_wait: f64,
    /// Print the summary as one JSON object (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Zero copy from application memory: each buffer holds only headers and stamp; the
    /// payload is attached from one registered region the NIC reads in place.
    #[arg(long)]
    pub zero_copy: bool,
    /// Ceiling mode: every descriptor points at one prebuilt frame and is only handed
    /// back to the NIC, with no allocation and no frame writes (virtio-net rewrites the
    /// descriptor and avail entry it must). Measures what the
    /// device (or QEMU's model of it) can take; compare the normal rate with it.
    #[arg(long)]
    pub ceiling: bool,
    /// Leave the IPv4 and UDP checksums to the NIC where it can fill them in (context
    /// descriptors on the e1000), computing the rest in software: the frames on the wire
    /// are the same either way.
    #[arg(long)]
    pub csum_offload: bool,
    /// Send every frame with an 802.1Q tag of this VLAN ID (1-4094), inserted by the NIC
    /// where it can (the port is opened with --vlan-strip for that), in software
    /// otherwise.
    #[arg(long, value_name = "ID", value_parser = clap::value_parser!(u16).range(1..=4094))]
    pub vlan: Option<u16>,
    /// Send every frame with a wrong UDP checksum (for testing what a receiver does with
    /// one); not with --csum-offload, where the NIC would put it right.
    #[arg(long, conflicts_with = "csum_offload")]
    pub bad_csum: bool,
    #[command(flatten)]
    pub port: PortOpts,
}

/// `--ring` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Ring {
    Auto,
    Split,
    Packed,
}

/// `--mode` values of fwd.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum FwdMode {
    Io,
    Macswap,
}

impl PortOpts {
    /// The port settings these options ask for.
    pub fn config(self) -> Config {
        Config {
            ring: match self.ring {
                Ring::Auto => RingChoice::Auto,
                Ring::Split => RingChoice::Split,
                Ring::Packed => RingChoice::Packed,
            },
            mtu: usize::from(self.mtu),
            vlan_strip: self.vlan_strip,
            xdp_copy: self.xdp_copy,
            ..Config::default()
        }
    }
}
