//! A ping, UDP echo and TCP echo responder: smoltcp on a zcnic port.
//!
//! ```text
//! smol_echo <PCI> <IP/PREFIX> [PORT] [SECONDS] [MTU]   e.g. smol_echo 0000:00:02.0 10.0.0.2/24 7
//! ```
//! smoltcp answers ARP and ICMP echo by itself; this adds a UDP socket and a TCP socket on
//! PORT that send back whatever arrives. Received frames are read straight out of the DMA
//! buffers (see `zcnic::smol`). Runs until Ctrl-C or SECONDS (0: forever). MTU (default
//! 1500) opens the port for jumbo frames, and smoltcp's MTU follows it.

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpCidr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use zcnic::smol::SmolDevice;

static STOP: AtomicBool = AtomicBool::new(false);

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("smol_echo: error: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return fail("usage: smol_echo <PCI> <IP/PREFIX> [PORT] [SECONDS] [MTU]");
    }
    let Ok(cidr) = args[2].parse::<IpCidr>() else {
        return fail(format!(
            "`{}` is not an address with a prefix, e.g. 10.0.0.2/24",
            args[2]
        ));
    };
    let Ok(port) = args.get(3).map_or(Ok(7), |p| p.parse::<u16>()) else {
        return fail("PORT must be a number 1..65535");
    };
    let limit = args
        .get(4)
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|&s| s > 0.0)
        .map(Duration::from_secs_f64);
    let Ok(mtu) = args.get(5).map_or(Ok(1500), |m| m.parse::<usize>()) else {
        return fail("MTU must be a number, e.g. 9000");
    };
    let cfg = zcnic::Config {
        mtu,
        ..zcnic::Config::default()
    };
    let nic = match zcnic::open_with(&args[1], &cfg) {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    let _ = ctrlc::set_handler(|| STOP.store(true, Ordering::Relaxed));

    let mac = EthernetAddress(nic.mac());
    let mut dev = SmolDevice::new(nic);
    let mut iface = Interface::new(Config::new(mac.into()), &mut dev, Instant::now());
    iface.update_ip_addrs(|a| {
        let _ = a.push(cidr);
    });
    let udp_buf = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 65536]);
    let mut udp = udp::Socket::new(udp_buf(), udp_buf());
    if let Err(e) = udp.bind(port) {
        return fail(format!("UDP port {port}: {e}"));
    }
    let tcp = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 65536]),
        tcp::SocketBuffer::new(vec![0; 65536]),
    );
    let mut sockets = SocketSet::new(vec![]);
    let (udp_h, tcp_h) = (sockets.add(udp), sockets.add(tcp));
    println!(
        "smol_echo: {} {mac} answering ping, UDP and TCP echo on port {port} at {cidr}, MTU {}",
        args[1],
        dev.nic().mtu()
    );

    let start = std::time::Instant::now();
    let (mut udp_echoed, mut tcp_bytes) = (0u64, 0u64);
    let mut buf = vec![0u8; 65536];
    while !STOP.load(Ordering::Relaxed) && limit.is_none_or(|l| start.elapsed() < l) {
        iface.poll(Instant::now(), &mut dev, &mut sockets);

        let s = sockets.get_mut::<udp::Socket>(udp_h);
        while let Ok((n, meta)) = s.recv_slice(&mut buf) {
            if s.send_slice(&buf[..n], meta).is_ok() {
                udp_echoed += 1;
            }
        }

        let t = sockets.get_mut::<tcp::Socket>(tcp_h);
        if !t.is_open() {
            let _ = t.listen(port);
        }
        while t.can_recv() && t.can_send() {
            // No more than the send buffer takes now: what it refused would be lost.
            let room = (t.send_capacity() - t.send_queue()).min(buf.len());
            match t.recv_slice(&mut buf[..room]) {
                Ok(n) if n > 0 => {
                    tcp_bytes += n as u64;
                    let _ = t.send_slice(&buf[..n]);
                }
                _ => break,
            }
        }
        if t.may_send() && !t.may_recv() {
            t.close(); // the peer is done sending: finish our side too
        }
    }
    let dropped = dev.tx_dropped();
    let (good, bad, unknown) = dev.rx_checksums();
    let s = dev.nic().stats();
    println!(
        "smol_echo: echoed {udp_echoed} UDP datagrams and {tcp_bytes} TCP bytes; port rx {} tx {} frames, rx errors {}, tx dropped {dropped}; nic checksums good {good} bad {bad} unknown {unknown}",
        s.rx_packets, s.tx_packets, s.rx_errors
    );
    ExitCode::SUCCESS
}
