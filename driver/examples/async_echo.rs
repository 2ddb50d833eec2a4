//! UDP echo from a tokio task: the port's interrupt descriptor in an `AsyncFd` is all an
//! async runtime needs (zcnic depends on none). Poll while frames come; on an empty poll arm
//! (which re-checks the ring), await, disarm. Answers ARP; each reply is the received buffer
//! turned around in place (swapped addresses keep checksums valid). Used by the QEMU suite:
//! `async_echo <PCI> <IP> <UDP-PORT> [COUNT]` prints "async_echo: echoed N UDP datagrams".

use std::net::Ipv4Addr;
use tokio::io::{unix::AsyncFd, Interest};
use zcnic::Nic;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, pci, ip, port, ..] = &args[..] else {
        return Err("usage: async_echo <PCI> <IP> <UDP-PORT> [COUNT]".into());
    };
    let (ip, port): (Ipv4Addr, u16) = (ip.parse()?, port.parse()?);
    let count: u64 = args.get(4).map_or(Ok(u64::MAX), |c| c.parse())?;
    let mut nic = zcnic::open(pci)?;
    // A second descriptor of the interrupt's, so the port stays free for `&mut` calls.
    let fd = nic.rx_interrupt_fd()?.try_clone_to_owned()?;
    // SAFETY: an OwnedFd is open, the AsyncFd owns it until dropped, and its as_raw_fd
    // never changes.
    let irq = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let task = tokio::spawn(async move { echo(&mut *nic, &irq, ip.octets(), port, count).await });
    println!("async_echo: echoed {} UDP datagrams", task.await??);
    Ok(())
}

async fn echo(
    nic: &mut dyn Nic,
    irq: &AsyncFd<std::os::fd::OwnedFd>,
    ip: [u8; 4],
    port: u16,
    count: u64,
) -> Res<u64> {
    let (mac, mut echoed) = (nic.mac(), 0);
    let (mut rx, mut tx) = (Vec::with_capacity(32), Vec::with_capacity(32));
    println!("async_echo: answering on {}:{port}", Ipv4Addr::from(ip));
    while echoed < count {
        if nic.rx_batch(&mut rx, 32) == 0 {
            // Arm, re-check (true: a frame already waits), then sleep until the vector.
            if !nic.enable_rx_interrupt()? {
                irq.readable().await?.clear_ready();
            }
            nic.disable_rx_interrupt()?;
            continue;
        }
        for mut pkt in rx.drain(..) {
            if let Some(udp) = answer(pkt.data_mut(), mac, ip, port) {
                echoed += u64::from(udp);
                tx.push(pkt);
            }
        }
        nic.tx_batch(&mut tx);
        tx.clear(); // what the ring did not take goes back to the pool
    }
    nic.flush();
    Ok(echoed)
}

/// An ARP request for `ip` or UDP to `ip:port` made its answer in place: Some(is UDP).
fn answer(f: &mut [u8], mac: [u8; 6], ip: [u8; 4], port: u16) -> Option<bool> {
    if f.len() < 42 {
        return None;
    }
    let peer: [u8; 6] = f[6..12].try_into().ok()?;
    let udp = match u16::from_be_bytes([f[12], f[13]]) {
        // ARP (RFC 826) who-has: the sender becomes the target, we the sender.
        0x0806 if f[21] == 1 && f[38..42] == ip => {
            f[21] = 2;
            f.copy_within(22..32, 32);
            f[22..28].copy_from_slice(&mac);
            f[28..32].copy_from_slice(&ip);
            false
        }
        0x0800 if f[23] == 17 && f[30..34] == ip => {
            let l4 = 14 + usize::from(f[14] & 0xf) * 4;
            if f.len() < l4 + 8 || u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]) != port {
                return None;
            }
            swap(f, 26, 30, 4); // IPv4 source and destination
            swap(f, l4, l4 + 2, 2); // UDP ports
            true
        }
        _ => return None,
    };
    f[0..6].copy_from_slice(&peer);
    f[6..12].copy_from_slice(&mac);
    Some(udp)
}

fn swap(f: &mut [u8], a: usize, b: usize, len: usize) {
    let (head, tail) = f.split_at_mut(b);
    head[a..a + len].swap_with_slice(&mut tail[..len]);
}
