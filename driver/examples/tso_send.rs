//! Sends a TCP byte stream as TSO super-frames: each frame carries up to 64 KiB of
//! payload and asks for segments of `MSS` bytes through `Offloads::prepare`, so the NIC
//! cuts it where the port can (e1000 TSE, virtio-net HOST_TSO4) and zcnic does in
//! software where it cannot. Used by the QEMU suite (`qemu_tso.rs`), which checks the
//! segments on the wire and what the receiving Linux made of them.
//!
//! ```text
//! tso_send <PCI> <DST-MAC> <SRC-IP> <DST-IP> <PAYLOAD-PER-FRAME> <MSS> <FRAMES>
//! ```
//!
//! Stream byte `k` is `k % 251`; sequence numbers start at 1000; source port 40000,
//! destination port 9. Prints `tso_send: F frames, B bytes, MSS M, handed H (nic
//! segments: yes|no)`.

use std::net::Ipv4Addr;
use std::num::NonZeroU16;
use std::process::ExitCode;
use zcnic::TxOffload;

/// The start of the stream's sequence numbers.
const SEQ: u32 = 1000;

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let b: Vec<u8> = s
        .split(':')
        .filter_map(|x| u8::from_str_radix(x, 16).ok())
        .collect();
    <[u8; 6]>::try_from(b).ok()
}

/// One Ethernet/IPv4/TCP super-frame of `payload` stream bytes from offset `at`, its
/// checksums left to `prepare`.
fn frame(
    src: [u8; 6],
    dst: [u8; 6],
    ips: (Ipv4Addr, Ipv4Addr),
    at: usize,
    payload: usize,
) -> Vec<u8> {
    let mut f = vec![0u8; 54 + payload];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    f[18..20].copy_from_slice(&((at / 1024) as u16).to_be_bytes());
    f[20] = 0x40; // DF
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&ips.0.octets());
    f[30..34].copy_from_slice(&ips.1.octets());
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..42].copy_from_slice(&SEQ.wrapping_add(at as u32).to_be_bytes());
    f[42..46].copy_from_slice(&1u32.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x18; // ACK, PSH
    f[48..50].copy_from_slice(&502u16.to_be_bytes());
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = ((at + i) % 251) as u8;
    }
    f
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = || {
        eprintln!(
            "usage: tso_send <PCI> <DST-MAC> <SRC-IP> <DST-IP> <PAYLOAD-PER-FRAME> <MSS> <FRAMES>"
        );
        ExitCode::from(2)
    };
    if args.len() != 8 {
        return usage();
    }
    let (Some(dst), Ok(sip), Ok(dip), Ok(payload), Some(mss), Ok(frames)) = (
        parse_mac(&args[2]),
        args[3].parse::<Ipv4Addr>(),
        args[4].parse::<Ipv4Addr>(),
        args[5].parse::<usize>(),
        args[6].parse::<u16>().ok().and_then(NonZeroU16::new),
        args[7].parse::<usize>(),
    ) else {
        return usage();
    };
    if payload > 65535 - 40 {
        eprintln!("tso_send: at most 65495 payload bytes fit one IPv4 packet");
        return ExitCode::from(2);
    }
    let mut nic = match zcnic::open(&args[1]) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("tso_send: error: {e}");
            return ExitCode::from(1);
        }
    };
    let caps = nic.offloads();
    let pool = nic.pool().clone();
    let req = TxOffload::tcp_segments(14, 20, mss);
    let (mut handed, mut out) = (0, Vec::new());
    for i in 0..frames {
        let f = frame(nic.mac(), dst, (sip, dip), i * payload, payload);
        let Some(pkt) = pool.alloc_copy(&f) else {
            eprintln!("tso_send: error: pool empty");
            return ExitCode::from(1);
        };
        match caps.prepare(pkt, req, &pool, &mut out) {
            Ok(n) => handed += n,
            Err(e) => {
                eprintln!("tso_send: error: frame {i}: {e}");
                return ExitCode::from(1);
            }
        }
        while !out.is_empty() {
            nic.tx_batch(&mut out);
        }
    }
    if !nic.flush() {
        eprintln!("tso_send: error: the NIC did not send every frame");
        return ExitCode::from(1);
    }
    let yes = if caps.tx_tso4 { "yes" } else { "no" };
    println!(
        "tso_send: {frames} frames, {} bytes, MSS {mss}, handed {handed} (nic segments: {yes}), tx_errors {}",
        frames * payload,
        nic.stats().tx_errors
    );
    ExitCode::SUCCESS
}
