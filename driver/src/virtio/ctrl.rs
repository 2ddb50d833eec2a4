//! The virtio-net control virtqueue (virtio 1.1 §5.1.6.5): commands the port sends one at
//! a time and waits for, each a chain of a two-byte header (class, command), the data,
//! and one byte the device writes back (0 for OK). Receive filters, the number of queue
//! pairs in use, and RSS go through it. Control path only.

use super::queue::QueueKind;
use super::transport::Notifier;
use crate::pci::PciAddr;
use crate::Error;
use std::sync::Arc;
use std::time::Duration;
use zcnic_descriptors::virtio::Buf;
use zcnic_hugepages::{Mempool, Packet};

/// Command classes and commands (virtio 1.1 §5.1.6.5.1, §5.1.6.5.5; 1.2 §5.1.6.5.7).
pub(crate) mod cmd {
    /// Receive filter class.
    pub const RX: u8 = 0;
    /// Promiscuous mode on (1) or off (0).
    pub const RX_PROMISC: u8 = 0;
    /// All-multicast on (1) or off (0).
    pub const RX_ALLMULTI: u8 = 1;
    /// MAC filter class (virtio 1.1 §5.1.6.5.2).
    pub const MAC: u8 = 1;
    /// The unicast and the multicast table, each a le32 count and that many addresses.
    pub const MAC_TABLE_SET: u8 = 0;
    /// Multiqueue class.
    pub const MQ: u8 = 4;
    /// Queue pairs in use, le16.
    pub const MQ_VQ_PAIRS_SET: u8 = 0;
    /// RSS configuration (`virtio_net_rss_config`).
    pub const MQ_RSS_CONFIG: u8 = 1;
}

/// What the device writes back for a command it carried out.
const ACK_OK: u8 = 0;
/// How long a command may take. QEMU answers within the kick.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Sends command `cmd` of class `class` on the port's control queue, if it has one, and
/// waits for the answer; `parts` as in [`Ctrl::command`].
pub(crate) fn send<Q: QueueKind>(
    ctrl: Option<&mut Ctrl<Q>>,
    addr: PciAddr,
    class: u8,
    cmd: u8,
    parts: &[&[u8]],
) -> Result<(), Error> {
    let ctrl = ctrl.ok_or_else(|| {
        Error::Io(format!(
            "{addr}: the virtio device has no control queue (VIRTIO_NET_F_CTRL_VQ)"
        ))
    })?;
    ctrl.command(class, cmd, parts)
}

/// The control queue and what it needs to send a command.
pub(crate) struct Ctrl<Q> {
    vq: Q,
    kick: Notifier,
    pool: Arc<Mempool>,
    addr: PciAddr,
    /// Commands the device did not answer in time, by id, with their buffers: it may
    /// still write them, so each goes when its answer comes, or with the port once the
    /// device is stopped.
    stuck: Vec<(u16, Packet)>,
}

impl<Q: QueueKind> Ctrl<Q> {
    pub(crate) fn new(vq: Q, kick: Notifier, pool: Arc<Mempool>, addr: PciAddr) -> Self {
        Self {
            vq,
            kick,
            pool,
            addr,
            stuck: Vec::new(),
        }
    }

    /// Sends command `cmd` of class `class` with its data in `parts`, each in a descriptor
    /// of its own (MAC_TABLE_SET's two tables are two parts), and waits for the device's
    /// answer.
    pub(crate) fn command(&mut self, class: u8, cmd: u8, parts: &[&[u8]]) -> Result<(), Error> {
        let addr = self.addr;
        let io = |what: String| Error::Io(format!("{addr}: virtio control queue: {what}"));
        let mut pkt = self
            .pool
            .alloc()
            .ok_or_else(|| io("no buffer in the pool for a command".into()))?;
        let n: usize = parts.iter().map(|p| p.len()).sum();
        pkt.set_len(2 + n + 1)
            .map_err(|_| io(format!("a command of {n} bytes does not fit a buffer")))?;
        let b = pkt.data_mut();
        b[0] = class;
        b[1] = cmd;
        let mut at = 2;
        for p in parts {
            b[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        b[2 + n] = !ACK_OK;
        let at = pkt.iova();
        // Header, data and answer in descriptors of their own: the layout a device without
        // VIRTIO_F_ANY_LAYOUT requires (virtio 1.1 §5.1.6.5).
        let part = |off: usize, len: usize, device_writes| Buf {
            addr: at + off as u64,
            len: len as u32,
            device_writes,
        };
        let mut chain = vec![part(0, 2, false)];
        let mut off = 2;
        for p in parts.iter().filter(|p| !p.is_empty()) {
            chain.push(part(off, p.len(), false));
            off += p.len();
        }
        chain.push(part(2 + n, 1, true));
        let added = self.vq.add(&chain);
        let id = added.map_err(|e| io(format!("the queue refused a command: {e}")))?;
        if self.vq.publish() {
            self.kick.kick();
        }
        // Answers to earlier commands that timed out may come first: each frees its
        // buffer, and the wait goes on for this one.
        let (stuck, vq) = (&mut self.stuck, &mut self.vq);
        let mut answer = None;
        crate::wait_until(TIMEOUT, || {
            while let Some(a) = vq.pop_used() {
                match a {
                    Ok(used) if used.id != id => {
                        if let Some(i) = stuck.iter().position(|(s, _)| *s == used.id) {
                            stuck.swap_remove(i);
                            continue;
                        }
                        let what = format!("an answer for command {}, which nobody sent", used.id);
                        answer = Some(Err(what));
                    }
                    Ok(_) => answer = Some(Ok(())),
                    Err(e) => answer = Some(Err(format!("bad used entry: {e}"))),
                }
                return true;
            }
            false
        });
        match answer {
            Some(Ok(())) => match pkt.data()[2 + n] {
                ACK_OK => Ok(()),
                a => Err(io(format!(
                    "the device refused command {class}.{cmd} (answer {a})"
                ))),
            },
            None => {
                self.stuck.push((id, pkt));
                Err(Error::Timeout {
                    addr,
                    what: "the virtio device to answer a control command",
                    ms: TIMEOUT.as_millis() as u64,
                })
            }
            Some(Err(what)) => {
                self.stuck.push((id, pkt));
                Err(io(what))
            }
        }
    }

    /// Never unmap or free what the device may still reach: it did not stop.
    pub(crate) fn leak(self) {
        let mut me = std::mem::ManuallyDrop::new(self);
        me.vq.leak();
        std::mem::forget(std::mem::take(&mut me.stuck));
    }
}
