//! A veth pair across two network namespaces the test creates (and removes): `veth0` in
//! one, where an AF_XDP port opens, `veth1` in the other, where a raw packet socket (or
//! the kernel's own `ping`) plays the far end of the wire. Needs root, as every machine
//! this project runs on gives; without it the test fails at the first `ip` with its
//! error, never skips.

use crate::conformance::ETHERTYPE;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `ip ARGS`, failing the test with ip's own message.
pub fn ip(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair (`veth0` in `port_ns`, `veth1` in `peer_ns`),
/// both ends up, IPv6 off (its neighbour discovery would be frames no test sent).
/// Removed on drop.
#[derive(Debug)]
pub struct VethPair {
    pub port_ns: String,
    pub peer_ns: String,
}

impl VethPair {
    /// One queue each way.
    pub fn new() -> Self {
        Self::with_queues(1)
    }

    /// `queues` receive and transmit queues on each end.
    pub fn with_queues(queues: u32) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = format!("zcxdp{}-{k}", std::process::id());
        let pair = VethPair {
            port_ns: format!("{base}a"),
            peer_ns: format!("{base}b"),
        };
        for ns in [&pair.port_ns, &pair.peer_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&format!("netns add {ns}"));
            for key in ["all", "default"] {
                pair.sysctl(ns, &format!("net.ipv6.conf.{key}.disable_ipv6=1"));
            }
        }
        let (a, b) = (&pair.port_ns, &pair.peer_ns);
        let q = format!("numtxqueues {queues} numrxqueues {queues}");
        ip(&format!(
            "-n {a} link add veth0 {q} type veth peer name veth1 {q} netns {b}"
        ));
        ip(&format!("-n {a} link set veth0 up"));
        ip(&format!("-n {b} link set veth1 up"));
        pair
    }

    fn sysctl(&self, ns: &str, setting: &str) {
        let out = self.exec(ns, &["sysctl", "-qw", setting]);
        assert!(out.status.success(), "sysctl {setting} in {ns}: {out:?}");
    }

    /// Runs a command inside namespace `ns`.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .output()
            .expect("run ip netns exec")
    }

    /// Moves the calling thread into the port's namespace.
    pub fn enter_port(&self) {
        enter(&self.port_ns);
    }

    /// Moves the calling thread into the peer's namespace.
    pub fn enter_peer(&self) {
        enter(&self.peer_ns);
    }

    /// `ip -d link show veth0`, as the port's namespace sees it.
    pub fn port_link(&self) -> String {
        let out = self.exec(&self.port_ns, &["ip", "-d", "link", "show", "veth0"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (up to two seconds) until `veth0` has no XDP program attached; its link as
    /// `ip` shows it on time out. Not an instant check: another test thread's fork for a
    /// command holds a copy of every fd of this process, the port's bpf_link among them,
    /// until its exec, and the kernel detaches only when the last copy closes.
    pub fn wait_detached(&self) -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(2);
        loop {
            let link = self.port_link();
            if !link.contains("prog/xdp") {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(link);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Gives `veth0` 10.77.0.1/24 and `veth1` 10.77.0.2/24, for the kernel's own
    /// traffic across the pair.
    pub fn address(&self) {
        ip(&format!(
            "-n {} addr add 10.77.0.1/24 dev veth0",
            self.port_ns
        ));
        ip(&format!(
            "-n {} addr add 10.77.0.2/24 dev veth1",
            self.peer_ns
        ));
    }

    /// One `ping` from the peer's side to `veth0`'s address: answered or not.
    pub fn ping_port(&self) -> bool {
        let ping = ["busybox", "ping", "-c", "1", "-W", "2", "10.77.0.1"];
        self.exec(&self.peer_ns, &ping).status.success()
    }
}

impl Default for VethPair {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.port_ns, &self.peer_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    // SAFETY: setns on an open namespace fd; affects only the calling thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

/// A raw AF_PACKET socket on `dev` (in the calling thread's namespace, where it stays
/// when the thread moves on) for frames of [`ETHERTYPE`].
#[derive(Debug)]
pub struct PacketSocket(OwnedFd, i32);

impl PacketSocket {
    pub fn open(dev: &str) -> Self {
        let proto = ETHERTYPE.to_be();
        // SAFETY: plain system call.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new fd this test owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(dev).unwrap();
        // SAFETY: NUL-terminated name living across the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "{dev}");
        // SAFETY: sockaddr_ll is plain old data.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto;
        sa.sll_ifindex = ifindex as i32;
        // SAFETY: `sa` is a live sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        // Room for every frame of a run before the test reads one (the default drops).
        let size: libc::c_int = 16 << 20;
        // SAFETY: `size` is a live c_int of the size passed.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
        Self(fd, ifindex as i32)
    }

    /// Sends one frame, all of it, as the EtherType its header names (protocol 0 in
    /// the address makes the kernel read it from the frame, so an IPv4 frame is hashed
    /// by its flow when the kernel picks a transmit queue, not as the socket's own type).
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: sockaddr_ll is plain old data.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = self.1;
        // SAFETY: `frame` and `to` are live for the sizes passed.
        let r = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            r as usize,
            frame.len(),
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// The next frame that arrived (not one this end sent), if one is there now.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 16384];
        loop {
            // SAFETY: sockaddr_ll is plain old data.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: `buf` and `from` are live and writable for the sizes passed.
            let n = unsafe {
                libc::recvfrom(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                return None;
            }
            if from.sll_pkttype != libc::PACKET_OUTGOING {
                buf.truncate(n as usize);
                return Some(buf);
            }
        }
    }

    /// The next frame that arrives before `until`.
    pub fn recv(&self, until: Instant) -> Option<Vec<u8>> {
        while Instant::now() < until {
            if let Some(f) = self.try_recv() {
                return Some(f);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        None
    }
}

/// Up to `n` frames received on `port` within `within` (fewer if they do not come).
pub fn receive_within<N: zcnic::Nic + ?Sized>(
    port: &mut N,
    n: usize,
    within: Duration,
) -> Vec<zcnic::Packet> {
    let mut got = Vec::with_capacity(n);
    let until = Instant::now() + within;
    while got.len() < n && Instant::now() < until {
        let mut b = Vec::with_capacity(64);
        port.rx_batch(&mut b, 64);
        got.extend(b);
    }
    got
}
