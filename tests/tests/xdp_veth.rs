//! AF_XDP on the host: a veth pair in a network namespace this test creates (and
//! removes), an [`XdpPort`] on one end, a raw packet socket on the other. Frames sent
//! through the port arrive on the peer byte for byte and in order, frames sent from the
//! peer arrive through the port the same way, and once the port is dropped no XDP
//! program is left on the interface. Needs root (the machines this project runs on are).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};
use zcnic::xdp::XdpPort;
use zcnic::{Config, Nic};

/// An EtherType for local experiments (IEEE 802 "Local Experimental Ethertype 1"):
/// nothing else in the namespace sends it.
const ETHERTYPE: u16 = 0x88b5;

fn ip(args: &str) {
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

/// A namespace with `veth0` and `veth1` up in it, removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("zcxdp{}-{k}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&format!("netns add {name}"));
        let ns = Netns(name);
        let n = &ns.0;
        ip(&format!("-n {n} link add veth0 type veth peer name veth1"));
        for dev in ["veth0", "veth1"] {
            ip(&format!("-n {n} link set {dev} up"));
        }
        ns
    }

    /// Moves the calling thread into the namespace.
    fn enter(&self) {
        let f = std::fs::File::open(format!("/var/run/netns/{}", self.0)).expect("netns file");
        // SAFETY: setns on an open namespace fd; affects only the calling thread.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
    }

    fn link_show(&self, dev: &str) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.0, "-d", "link", "show", dev])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A raw AF_PACKET socket on `dev` (in the calling thread's namespace) for ETHERTYPE.
fn packet_socket(dev: &str) -> OwnedFd {
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
    // Room for every frame of a run before the test reads one (the default would drop).
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
    fd
}

/// Frame `i`: broadcast, ETHERTYPE, the index, then a pattern; 60 to 1514 bytes.
fn frame(i: usize) -> Vec<u8> {
    let len = 60 + (i * 97) % (1514 - 60);
    let mut f = vec![0xffu8; 6];
    f.extend([0x02, 0, 0, 0, 0, 1]);
    f.extend(ETHERTYPE.to_be_bytes());
    f.extend((i as u32).to_be_bytes());
    f.extend((f.len()..len).map(|k| (k * 7 + i) as u8));
    f
}

fn recv(fd: &OwnedFd, until: Instant) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 2048];
    while Instant::now() < until {
        // SAFETY: `buf` is a live writable buffer of the length passed.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n > 0 {
            buf.truncate(n as usize);
            return Some(buf);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    None
}

#[test]
fn frames_cross_a_veth_pair_both_ways_byte_exact() {
    let ns = Netns::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter();
            let cfg = Config {
                promisc: true,
                ..Config::default()
            };
            let mut port = XdpPort::open("veth0", &cfg).expect("open xdp:veth0");
            assert!(
                ns.link_show("veth0").contains("PROMISC"),
                "promiscuous while open"
            );
            assert!(
                ns.link_show("veth0").contains("xdp"),
                "program attached: {}",
                ns.link_show("veth0")
            );
            assert_eq!(port.name(), "xdp:veth0");
            // veth has XDP in its driver; AF_XDP zero copy it has not.
            assert_eq!(port.driver(), "af_xdp (copy, native XDP)");
            let peer = packet_socket("veth1");
            // Port -> peer.
            const N: usize = 300;
            let mut sent = 0;
            while sent < N {
                let mut batch: Vec<_> = (sent..N.min(sent + 32))
                    .map(|i| port.pool().alloc_copy(&frame(i)).expect("pool"))
                    .collect();
                let want = batch.len();
                let took = port.tx_batch(&mut batch);
                sent += took;
                assert!(took == want || port.flush(), "ring stuck");
            }
            assert!(port.flush(), "every frame completed");
            let until = Instant::now() + Duration::from_secs(5);
            for i in 0..N {
                let got =
                    recv(&peer, until).unwrap_or_else(|| panic!("frame {i} never reached veth1"));
                assert_eq!(got, frame(i), "frame {i} as the peer saw it");
            }
            let st = port.stats();
            assert_eq!((st.tx_packets, st.tx_errors), (N as u64, 0));
            // Peer -> port.
            for i in 0..N {
                let f = frame(1000 + i);
                // SAFETY: `f` is a live buffer of the length passed.
                let r = unsafe { libc::send(peer.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
                assert_eq!(
                    r as usize,
                    f.len(),
                    "send: {}",
                    std::io::Error::last_os_error()
                );
            }
            let mut got = Vec::with_capacity(N);
            let until = Instant::now() + Duration::from_secs(5);
            while got.len() < N && Instant::now() < until {
                let mut b = Vec::with_capacity(64);
                port.rx_batch(&mut b, 64);
                // The kernel's own frames (IPv6 neighbour discovery) are not ours.
                got.extend(
                    b.into_iter()
                        .filter(|p| p.data()[12..14] == ETHERTYPE.to_be_bytes()),
                );
            }
            assert_eq!(got.len(), N, "frames received through AF_XDP");
            for (i, p) in got.iter().enumerate() {
                assert_eq!(
                    p.data(),
                    &frame(1000 + i)[..],
                    "frame {i} as the port saw it"
                );
            }
            let st = port.stats();
            assert_eq!((st.rx_errors, st.hw("bad_kernel_index")), (0, Some(0)));
            drop(got);
            drop(port);
            let after = ns.link_show("veth0");
            assert!(!after.contains("prog/xdp"), "program left behind: {after}");
            assert!(
                !after.contains("PROMISC"),
                "promiscuous mode left on: {after}"
            );
            // A second open works: nothing stale blocks it.
            let again = XdpPort::open("veth0", &Config::default()).expect("open again");
            drop(again);
        });
    });
}

#[test]
fn bad_interfaces_are_one_line_errors() {
    let e = zcnic::open("xdp:zcnosuch0")
        .err()
        .expect("no such interface");
    let text = e.to_string();
    assert!(
        text.contains("zcnosuch0") && text.contains("ip link"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1);
    let e = zcnic::open("xdp:").err().expect("empty name").to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn a_down_interface_is_a_one_line_error() {
    let ns = Netns::new();
    ip(&format!("-n {} link set veth0 down", ns.0));
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter();
            let e = zcnic::open("xdp:veth0").err().expect("down").to_string();
            assert!(
                e.contains("down") && e.contains("ip link set veth0 up"),
                "{e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
        });
    });
}
