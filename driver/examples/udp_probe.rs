//! A test client through the *kernel's* network stack: sends UDP datagrams to an echo
//! server and checks each comes back intact. Used by the QEMU suite against `smol_echo`,
//! because busybox's nc speaks only TCP.
//!
//! ```text
//! udp_probe <IP:PORT> [COUNT]      prints "udp_probe: N of N echoed intact"
//! ```

use std::net::UdpSocket;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(target) = args.get(1) else {
        eprintln!("usage: udp_probe <IP:PORT> [COUNT]");
        return ExitCode::from(2);
    };
    let count: u32 = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(10);
    let sock = match UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.connect(target)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp_probe: error: {target}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut ok = 0;
    let mut buf = [0u8; 2048];
    for i in 0..count {
        let msg = format!("zcnic probe {i}: {}", "x".repeat(i as usize * 37 % 900));
        if sock.send(msg.as_bytes()).is_err() {
            continue;
        }
        match sock.recv(&mut buf) {
            Ok(n) if &buf[..n] == msg.as_bytes() => ok += 1,
            Ok(n) => eprintln!("udp_probe: datagram {i} came back changed ({n} bytes)"),
            Err(e) => eprintln!("udp_probe: datagram {i}: {e}"),
        }
    }
    println!("udp_probe: {ok} of {count} echoed intact");
    if ok == count {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
