//! Several queues over AF_XDP: one socket per queue of the interface, each at its
//! queue's key of the XSKMAP the program redirects through (`rx_queue_index`), handed
//! out as [`QueuePair`]s like the igb's and virtio-net's. The kernel's driver spreads
//! frames over its queues by its own RSS, which [`Port::rss`] reads and
//! [`Port::set_reta`] changes through SIOCETHTOOL.

use super::init::{self, Attach, Shared};
use super::queue;
use super::umem::Umem;
use super::{check_name, Control};
use crate::nic::{Link, Stats};
use crate::pci::PciAddr;
use crate::port::{queue_stats, Port, QueueCounters, QueuePair, Rss};
use crate::rss::Reta;
use crate::{Config, Error};
use std::sync::Arc;

/// The control plane of an AF_XDP port of several queues.
#[derive(Debug)]
pub struct XdpMultiPort {
    ctl: Control,
    sockets: Vec<Arc<Shared>>,
    rx: Vec<Arc<QueueCounters>>,
    tx: Vec<Arc<QueueCounters>>,
    /// Keeps the program attached while the port lives (each queue holds it too).
    _attach: Arc<Attach>,
}

impl XdpMultiPort {
    /// Opens queues `0..cfg.queues` of `iface`, one socket each, and attaches the
    /// program once for all of them. The interface must have that many receive queues
    /// (`ethtool -l`); a queue it lacks fails the bind, with a line that says so.
    pub fn open(iface: &str, cfg: &Config) -> Result<(Self, Vec<QueuePair>), Error> {
        check_name(iface)?;
        let n = cfg.queues.max(1);
        let ifindex = init::interface(iface)?;
        if let Some(have) = rx_queues(iface).filter(|&have| n > have) {
            return Err(Error::Xdp {
                iface: iface.to_string(),
                msg: format!(
                    "{n} queues asked; the interface has {have} receive queue{} \
                     (`ethtool -l {iface}`; `ethtool -L {iface} combined {n}` where the driver allows)",
                    if have == 1 { "" } else { "s" }
                ),
            });
        }
        // One pool for every queue, registered as each socket's UMEM: a packet received
        // on one queue is sent on any other without a copy.
        let umem = Umem::for_port(iface, cfg)?;
        let mut queues = Vec::with_capacity(usize::from(n));
        for q in 0..n {
            queues.push(init::Queue::open(iface, ifindex, u32::from(q), &umem)?);
        }
        let shared: Vec<&Shared> = queues.iter().map(|q| &*q.shared).collect();
        let attach = Arc::new(Attach::new(iface, ifindex, &shared)?);
        let fill = init::fill_count(cfg.pool, usize::from(n));
        let zero_copy = queues.iter().all(|q| q.shared.zero_copy);
        let mut ctl = Control::new(iface, zero_copy, attach.generic);
        if cfg.promisc {
            ctl.set_promisc(true);
        }
        let (mut sockets, mut rxc, mut txc, mut pairs) = (vec![], vec![], vec![], vec![]);
        for (i, q) in queues.into_iter().enumerate() {
            sockets.push(q.shared.clone());
            let (rx, tx) = queue::split(i as u16, q, fill, Some(&attach));
            rxc.push(rx.counters.clone());
            txc.push(tx.counters.clone());
            pairs.push(QueuePair {
                rx: Box::new(rx),
                tx: Box::new(tx),
            });
        }
        let port = Self {
            ctl,
            sockets,
            rx: rxc,
            tx: txc,
            _attach: attach,
        };
        Ok((port, pairs))
    }

    /// The interface's name.
    pub fn iface(&self) -> &str {
        &self.ctl.iface
    }
}

/// The receive queues the kernel has in use on `iface` (`queues/rx-N` in sysfs: the
/// driver's `ethtool -l` combined or rx count); `None` when sysfs does not say.
fn rx_queues(iface: &str) -> Option<u16> {
    let dir = std::path::Path::new(super::SYSFS_NET)
        .join(iface)
        .join("queues");
    let n = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u16::try_from(n).ok().filter(|&n| n > 0)
}

impl Port for XdpMultiPort {
    fn addr(&self) -> PciAddr {
        self.ctl.addr()
    }

    fn name(&self) -> String {
        format!("xdp:{}", self.ctl.iface)
    }

    fn driver(&self) -> &'static str {
        self.ctl.driver()
    }

    fn mac(&self) -> [u8; 6] {
        self.ctl.mac()
    }

    fn link(&self) -> Link {
        self.ctl.link()
    }

    fn mtu(&self) -> usize {
        self.ctl.mtu()
    }

    fn queues(&self) -> u16 {
        self.sockets.len() as u16
    }

    /// The kernel driver's RSS, read now through SIOCETHTOOL (what `ethtool -x` shows):
    /// its key, its table (which may name queues beyond the port's: their frames go to
    /// the kernel) and the flow types whose addresses and ports it hashes. A driver
    /// without RSS (veth, e1000) is an error.
    fn rss(&self) -> Result<Rss, Error> {
        super::rss::read(&self.ctl.iface)
    }

    /// Writes the kernel driver's table, as `ethtool -X IFACE weight …` would: entries
    /// must name the port's queues, its length must be the driver's (`ethtool -x`). The
    /// table the port found is put back when it closes, as its promiscuous flag is.
    fn set_reta(&mut self, reta: &Reta) -> Result<(), Error> {
        let was = super::rss::set_reta(&self.ctl.iface, reta, self.queues())?;
        self.ctl.reta_before.get_or_insert(was);
        Ok(())
    }

    fn stats(&mut self) -> Stats {
        let mut s = Stats::default();
        for (rx, tx) in self.rx.iter().zip(&self.tx) {
            rx.add_rx_to(&mut s);
            tx.add_tx_to(&mut s);
        }
        for sock in &self.sockets {
            Control::add_socket_stats(&mut s, sock);
        }
        s
    }

    fn queue_stats(&self) -> Vec<Stats> {
        queue_stats(&self.rx, &self.tx)
    }

    fn set_promisc(&mut self, on: bool) {
        self.ctl.set_promisc(on);
    }
}
