//! A thread that plays an 82576 (igb) well enough for the driver, datasheet first:
//! self-clearing reset, MAC in RAL0/RAH0, link up once the PHY is told to restart
//! auto-negotiation through MDIC, queue enables read back, transmit on TDT of advanced
//! data descriptors with DD written back where RS asks, and receive into advanced
//! descriptors. Transmit offloads as §7.2.2.2–3 lay them out, decoded from the raw bits
//! here (not through the driver's descriptor types) and computed with a checksum of the
//! tests' own ([`crate::fake_csum`]): context descriptors kept per queue and slot (IDX),
//! POPTS.IXSM/TXSM on a frame's first data descriptor filled in at MACLEN and
//! MACLEN + IPLEN, and VLE inserting the context's tag in VLAN mode (CTRL.VME). What the
//! datasheet does not allow (RS on a context descriptor, a checksum with MACLEN outside
//! 14..=127, IXSM of an IPv6 frame, PAYLEN not the frame's length) is counted in
//! [`FakeIgb::misuse`]. Its write-backs overwrite the whole descriptor as the datasheet allows:
//! the receive write-back replaces the buffer address with the RSS hash, and the transmit
//! write-back zeroes the address, so a driver that reads an address back from the ring is
//! caught. Descriptors are written as whole 64-bit words, status word last. With several
//! queues it sends from every enabled one, and receives each frame on the queue RSS picks
//! from the key and table in its registers (IPv4 with TCP/UDP ports, or addresses only).

use crate::fake_filter;
use crate::fake_igb_irq::{IgbIrq, IgbIrqBar};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use zcnic::igb::regs;
use zcnic::rss::Toeplitz;
use zcnic::{Bar, FakeBar, FakeDma};

/// MAC the fake device reports.
pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xfa, 0xce, 0x76];
/// The RSS hash the fake writes back with every frame.
pub const HASH: u32 = 0x51cc_c178;

/// What the test asks the device to receive.
#[derive(Debug, Clone)]
pub enum Inject {
    /// One frame in one descriptor.
    Frame(Vec<u8>),
    /// One frame spread over two descriptors (EOP only on the second), as a device does
    /// with a frame longer than the buffer.
    Split(Vec<u8>),
    /// One frame with the receive-error bit set.
    Bad(Vec<u8>),
    /// A frame off the wire: through the receive filter first (`fake_filter`), which may
    /// turn it away (counted in [`FakeIgb::filtered`]). `Frame` skips the filter.
    Wire(Vec<u8>),
}

/// The device side of a fake igb.
#[derive(Debug)]
pub struct FakeIgb {
    pub bar: FakeBar,
    pub dma: FakeDma,
    /// Frames the device transmitted, in order.
    pub sent: Arc<Mutex<Vec<Vec<u8>>>>,
    /// DMA accesses the fake IOMMU refused.
    pub faults: Arc<AtomicU64>,
    /// Frames sent and received per queue.
    pub per_queue: Arc<Mutex<PerQueue>>,
    /// [`Inject::Wire`] frames the receive filter turned away.
    pub filtered: Arc<AtomicU64>,
    /// Transmit descriptors the datasheet does not allow (see the module's doc).
    pub misuse: Arc<AtomicU64>,
    /// MSI-X (`fake_igb_irq`): raised by receive write-backs once the driver routes it.
    pub irq: Arc<IgbIrq>,
    inject: Sender<Inject>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Frames each queue moved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PerQueue {
    pub tx: [u64; QUEUES as usize],
    pub rx: [u64; QUEUES as usize],
}

/// Queues the fake plays.
pub const QUEUES: u32 = 8;

struct Device {
    bar: FakeBar,
    dma: FakeDma,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    faults: Arc<AtomicU64>,
    per_queue: Arc<Mutex<PerQueue>>,
    filtered: Arc<AtomicU64>,
    misuse: Arc<AtomicU64>,
    irq: Arc<IgbIrq>,
    inject: Receiver<Inject>,
    pending: Vec<(Vec<u8>, u32)>,
    /// Per queue: the frame being gathered, its first data descriptor's command and
    /// `olinfo_status`, and the two context slots (VLAN_MACIP_LENS, TUCMD).
    tx: Vec<TxState>,
}

#[derive(Default)]
struct TxState {
    partial: Vec<u8>,
    first: Option<(u32, u32)>,
    /// VLAN_MACIP_LENS, TUCMD and MSS_L4LEN_IDX of each slot.
    contexts: [(u32, u32, u32); 2],
    /// Data descriptors of the frame under way, and how many said TSE.
    descs: (usize, usize),
}

const DD: u64 = 1;
const EOP: u64 = 2;
const RXE: u64 = 1 << 31;
const TX_RS: u64 = 1 << 27;
const TX_EOP: u64 = 1 << 24;
/// DCMD.VLE, DCMD.DEXT and DTYP (§7.2.2.3).
const TX_VLE: u32 = 1 << 30;
const TX_TSE: u32 = 1 << 31;
const TX_DEXT: u32 = 1 << 29;
const DTYP_SHIFT: u32 = 20;
/// VET — VLAN Ether Type (§8.2.6), 0x8100 after reset.
const VET: u32 = 0x0038;

impl FakeIgb {
    pub fn start() -> Self {
        let bar = FakeBar::new(0x20000);
        // ICR clears on read with IMS 0, which is how the driver runs it (§7.3.2.1.2).
        bar.clear_on_read(regs::ICR);
        let dma = FakeDma::new();
        bar.write32(VET, 0x8100);
        bar.write32(
            regs::RAL0,
            u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]]),
        );
        bar.write32(
            regs::RAH0,
            u32::from(u16::from_le_bytes([MAC[4], MAC[5]])) | regs::RAH_AV,
        );
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(AtomicU64::new(0));
        let per_queue = Arc::default();
        let filtered = Arc::new(AtomicU64::new(0));
        let misuse = Arc::new(AtomicU64::new(0));
        let irq = Arc::new(IgbIrq::default());
        let mut dev = Device {
            irq: Arc::clone(&irq),
            bar: bar.clone(),
            dma: dma.clone(),
            sent: sent.clone(),
            faults: faults.clone(),
            per_queue: Arc::clone(&per_queue),
            filtered: Arc::clone(&filtered),
            misuse: Arc::clone(&misuse),
            inject: rx,
            pending: Vec::new(),
            tx: (0..QUEUES).map(|_| TxState::default()).collect(),
        };
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if !dev.step() {
                    std::thread::yield_now();
                }
            }
        });
        Self {
            bar,
            dma,
            sent,
            faults,
            per_queue,
            filtered,
            misuse,
            irq,
            inject: tx,
            stop,
            thread: Some(thread),
        }
    }

    /// The BAR with the interrupt registers decoded (`fake_igb_irq`), for a driver that
    /// sleeps on its vectors.
    pub fn irq_bar(&self) -> IgbIrqBar {
        IgbIrqBar {
            bar: self.bar.clone(),
            irq: Arc::clone(&self.irq),
        }
    }

    /// A sender of injections, for a thread or a hook of the test's.
    pub fn inject_handle(&self) -> Sender<Inject> {
        self.inject.clone()
    }

    pub fn inject(&self, what: Inject) {
        let _ = self.inject.send(what);
    }

    /// Takes the link down or brings it back (1000 Mbit/s full duplex), latching ICR.LSC
    /// as the device does on every change of STATUS.LU (ICR clears when the driver reads
    /// it: `FakeBar::clear_on_read`).
    pub fn set_link(&self, up: bool) {
        self.bar.write32(regs::STATUS, if up { LINK_UP } else { 0 });
        self.bar.raise(regs::ICR, regs::ICR_LSC);
        self.irq.icr_raised(&self.bar);
    }
}

/// STATUS of a link up at 1000 Mbit/s full duplex: FD, LU and SPEED = 10b (§8.2.2).
const LINK_UP: u32 = 1 | 2 | 1 << 7;

impl Drop for FakeIgb {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Device {
    fn step(&mut self) -> bool {
        let b = &self.bar;
        let ctrl = b.read32(regs::CTRL);
        if ctrl & regs::CTRL_RST != 0 {
            b.write32(regs::CTRL, ctrl & !regs::CTRL_RST);
            b.write32(regs::STATUS, 0);
            b.write32(VET, 0x8100);
            self.tx = (0..QUEUES).map(|_| TxState::default()).collect();
        }
        let mdic = b.read32(regs::MDIC);
        if mdic != 0 && mdic & regs::MDIC_READY == 0 {
            let restart = mdic & regs::MDIC_OP_WRITE != 0
                && (mdic >> regs::MDIC_REG_SHIFT) & 0x1f == regs::PHY_BMCR
                && mdic & 0x0200 != 0;
            if restart {
                // Link up, 1000 Mbit/s full duplex, and the change latched as silicon does.
                b.write32(regs::STATUS, LINK_UP);
                b.raise(regs::ICR, regs::ICR_LSC);
                self.irq.icr_raised(b);
            }
            b.write32(regs::MDIC, mdic | regs::MDIC_READY);
        }
        self.transmit() | self.receive()
    }

    fn read(&self, iova: u64, buf: &mut [u8]) -> bool {
        // The device reads only its rings and the buffers the driver handed over.
        // SAFETY: the driver accesses the rings only atomically and holds no reference
        // to a buffer it handed over in a descriptor.
        let ok = unsafe { self.dma.device_read(iova, buf) };
        if !ok {
            self.faults.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    fn write(&self, iova: u64, data: &[u8]) {
        // SAFETY: as in `read`.
        if !unsafe { self.dma.device_write(iova, data) } {
            self.faults.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn words(&self, at: u64) -> Option<[u64; 2]> {
        let mut d = [0u8; 16];
        self.read(at, &mut d).then(|| {
            [
                u64::from_le_bytes(d[..8].try_into().unwrap()),
                u64::from_le_bytes(d[8..].try_into().unwrap()),
            ]
        })
    }

    fn ring(&self, lo: u32, hi: u32, len: u32) -> (u64, u32) {
        let base = u64::from(self.bar.read32(hi)) << 32 | u64::from(self.bar.read32(lo));
        (base, self.bar.read32(len) / 16)
    }

    fn transmit(&mut self) -> bool {
        (0..QUEUES).fold(false, |any, q| self.transmit_on(q) | any)
    }

    fn transmit_on(&mut self, q: u32) -> bool {
        let b = &self.bar;
        if b.read32(regs::TCTL) & regs::TCTL_EN == 0
            || b.read32(regs::txdctl(q)) & regs::QUEUE_ENABLE == 0
        {
            return false;
        }
        let (base, slots) = self.ring(regs::tdbal(q), regs::tdbah(q), regs::tdlen(q));
        let (mut head, tail) = (b.read32(regs::tdh(q)), b.read32(regs::tdt(q)));
        if slots == 0 || head == tail || tail >= slots {
            return false;
        }
        while head != tail {
            let at = base + u64::from(head) * 16;
            let Some([addr, w1]) = self.words(at) else {
                break;
            };
            let cmd = w1 as u32;
            if cmd & TX_DEXT != 0 && (cmd >> DTYP_SHIFT) & 0xf == 0b0010 {
                // A context descriptor: kept for the frames after it; no data, and no RS
                // in its DCMD, so nothing is written back.
                let idx = (w1 >> 36) as usize & 7;
                match self.tx[q as usize].contexts.get_mut(idx) {
                    Some(c) => *c = (addr as u32, cmd, (w1 >> 32) as u32),
                    None => self.misused(),
                }
                if w1 & TX_RS != 0 {
                    self.misused();
                }
                head = (head + 1) % slots;
                b.write32(regs::tdh(q), head);
                continue;
            }
            let mut bytes = vec![0u8; (w1 & 0xffff) as usize];
            let st = &mut self.tx[q as usize];
            st.first.get_or_insert((cmd, (w1 >> 32) as u32));
            st.descs.0 += 1;
            st.descs.1 += usize::from(cmd & TX_TSE != 0);
            if self.read(addr, &mut bytes) {
                self.tx[q as usize].partial.extend_from_slice(&bytes);
            }
            if w1 & TX_EOP != 0 {
                let st = &mut self.tx[q as usize];
                let mut frame = std::mem::take(&mut st.partial);
                let (first_cmd, olinfo) = st.first.take().unwrap_or_default();
                let (contexts, descs) = (st.contexts, std::mem::take(&mut st.descs));
                if descs.1 > 0 {
                    let segs = self.tso(&frame, olinfo, &contexts, descs);
                    // Each segment is tagged as a frame would be (PAYLEN its length).
                    for mut seg in segs {
                        let each = (seg.len() as u32) << 14 | (olinfo & 0x70);
                        self.offload(&mut seg, first_cmd, each, &contexts);
                        self.sent.lock().unwrap().push(seg);
                    }
                } else {
                    self.offload(&mut frame, first_cmd, olinfo, &contexts);
                    self.sent.lock().unwrap().push(frame);
                }
                self.per_queue.lock().unwrap().tx[q as usize] += 1;
            }
            if w1 & TX_RS != 0 {
                // The write-back: the address word is the device's to overwrite.
                self.write(at, &0u64.to_le_bytes());
                self.write(at + 8, &(w1 | DD << 32).to_le_bytes());
            }
            head = (head + 1) % slots;
            b.write32(regs::tdh(q), head);
        }
        true
    }

    fn misused(&self) {
        self.misuse.fetch_add(1, Ordering::Relaxed);
    }

    /// The segments of a TSE frame (the datasheet's TCP segmentation), cut as `fake_tso` does with the context's MSS
    /// and L4LEN, the TCP checksum field seeded without the length; nothing (and a misuse)
    /// when TSE was not on every data descriptor (`descs`: all, with TSE), PAYLEN is not
    /// the payload's length, or the context does not describe TCP/IPv4. (The 82576's
    /// default DTXTCPFLGH clears CWR on the last segment; the driver never asks TSO of a
    /// frame with CWR, so that is not played.)
    fn tso(
        &self,
        frame: &[u8],
        olinfo: u32,
        contexts: &[(u32, u32, u32); 2],
        descs: (usize, usize),
    ) -> Vec<Vec<u8>> {
        let Some(&(lens, tucmd, mss_l4len)) = contexts.get((olinfo >> 4) as usize & 7) else {
            self.misused();
            return Vec::new();
        };
        let ip = (lens >> 9 & 0x7f) as usize;
        let tcp = ip + (lens & 0x1ff) as usize;
        let hdr = tcp + (mss_l4len >> 8 & 0xff) as usize;
        let tcp_ipv4 = tucmd & 1 << 10 != 0 && tucmd >> 11 & 3 == 1;
        let paylen = (olinfo >> 14) as usize;
        if descs.0 != descs.1 || !tcp_ipv4 || frame.len().checked_sub(hdr) != Some(paylen) {
            self.misused();
            return Vec::new();
        }
        let cut = crate::fake_tso::Cut {
            ip,
            tcp,
            hdr,
            mss: (mss_l4len >> 16) as usize,
            seed: crate::fake_tso::Seed::NoLength,
            cwr_first_only: false,
            ip_csum: olinfo & 1 << 8 != 0,
            tcp_csum: olinfo & 1 << 9 != 0,
        };
        crate::fake_tso::segment(frame, &cut).unwrap_or_else(|| {
            self.misused();
            Vec::new()
        })
    }

    /// What the transmit engine does to a frame whose first data descriptor had `cmd` and
    /// `olinfo` (§7.2.2.3): PAYLEN checked, then the checksums POPTS asks for at the
    /// offsets of the context IDX names, each the complement of the ones'-complement sum
    /// of its range whatever the field held (the driver zeroes the IPv4 field and seeds
    /// the transport one with the pseudo-header's sum), then the tag.
    fn offload(&self, frame: &mut Vec<u8>, cmd: u32, olinfo: u32, contexts: &[(u32, u32, u32); 2]) {
        if (olinfo >> 14) as usize != frame.len() {
            self.misused();
        }
        let (ixsm, txsm) = (olinfo & 1 << 8 != 0, olinfo & 1 << 9 != 0);
        let vle = cmd & TX_VLE != 0;
        if !(ixsm || txsm || vle) {
            return;
        }
        let Some(&(lens, tucmd, _)) = contexts.get((olinfo >> 4) as usize & 7) else {
            self.misused();
            return;
        };
        let (iplen, maclen) = ((lens & 0x1ff) as usize, (lens >> 9 & 0x7f) as usize);
        let (ipv4, l4t) = (tucmd & 1 << 10 != 0, tucmd >> 11 & 3);
        if (ixsm || txsm) && !(14..=127).contains(&maclen) {
            self.misused();
            return;
        }
        let len = frame.len();
        let mut put = |start: usize, end: usize, field: usize| {
            if start > field || field + 2 > end || end > frame.len() {
                self.misused();
                return;
            }
            let sum = !crate::fake_csum(&frame[start..end]);
            frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
        };
        if ixsm {
            if ipv4 {
                put(maclen, maclen + iplen, maclen + 10);
            } else {
                self.misused();
            }
        }
        if txsm {
            let l4 = maclen + iplen;
            match l4t {
                0 => put(l4, len, l4 + 6),
                1 => put(l4, len, l4 + 16),
                _ => self.misused(),
            }
        }
        // Tags only in VLAN mode, as the driver promises them (the 8254x's rule for VLE).
        if vle && self.bar.read32(regs::CTRL) & regs::CTRL_VME != 0 && frame.len() >= 12 {
            let vet = self.bar.read32(VET) as u16;
            let tag = [vet.to_be_bytes(), ((lens >> 16) as u16).to_be_bytes()].concat();
            frame.splice(12..12, tag);
        }
    }

    fn receive(&mut self) -> bool {
        let b = &self.bar;
        if b.read32(regs::RCTL) & regs::RCTL_EN == 0 {
            return false;
        }
        if self.pending.is_empty() {
            match self.inject.try_recv() {
                Ok(Inject::Frame(f)) => self.pending.push((f, 0)),
                Ok(Inject::Bad(f)) => self.pending.push((f, 1)),
                Ok(Inject::Wire(f)) => {
                    let dst = fake_filter::dst(&f).unwrap_or([0; 6]);
                    if !fake_filter::intel_admits(b, fake_filter::Family::Igb, dst) {
                        self.filtered.fetch_add(1, Ordering::Release);
                        return true;
                    }
                    self.pending.push((f, 0));
                }
                Ok(Inject::Split(f)) => {
                    let (a, z) = f.split_at(f.len() / 2);
                    self.pending.push((a.to_vec(), 2));
                    self.pending.push((z.to_vec(), 0));
                }
                Err(_) => return false,
            }
        }
        let (hash, q, rss_type) = self.rss(&self.pending[0].0);
        if b.read32(regs::rxdctl(q)) & regs::QUEUE_ENABLE == 0 {
            return false;
        }
        let (base, slots) = self.ring(regs::rdbal(q), regs::rdbah(q), regs::rdlen(q));
        let (head, tail) = (b.read32(regs::rdh(q)), b.read32(regs::rdt(q)));
        if slots == 0 || head == tail || tail >= slots {
            return false;
        }
        let at = base + u64::from(head) * 16;
        let Some([addr, _]) = self.words(at) else {
            return true;
        };
        let (frame, kind) = self.pending.remove(0);
        self.write(addr, &frame);
        let status = match kind {
            1 => DD | EOP | RXE,
            2 => DD,
            _ => DD | EOP,
        };
        self.write(at, &(u64::from(hash) << 32 | rss_type).to_le_bytes());
        // DD last, as the hardware does: the driver may look at any moment.
        self.write(at + 8, &(status | (frame.len() as u64) << 32).to_le_bytes());
        b.write32(regs::rdh(q), (head + 1) % slots);
        if kind != 2 {
            self.per_queue.lock().unwrap().rx[q as usize] += 1;
        }
        self.irq.rx_written_back(b, q);
        true
    }

    /// The hash, queue and RSS type (§7.1.5.2) RSS gives `frame`, from the registers as
    /// the driver wrote them (datasheet §7.1.2.8): without RSS (MRQC.MRQE not 010b), queue
    /// 0, type 0 and [`HASH`] where the write-back's hash goes (silicon puts the IP ID or
    /// a checksum there).
    fn rss(&self, frame: &[u8]) -> (u32, u32, u64) {
        let b = &self.bar;
        let mrqc = b.read32(regs::MRQC);
        if mrqc & 7 != regs::MRQC_RSS {
            return (HASH, 0, 0);
        }
        let mut key = [0u8; 40];
        for (i, k) in key.chunks_exact_mut(4).enumerate() {
            k.copy_from_slice(&b.read32(regs::RSSRK + 4 * i as u32).to_le_bytes());
        }
        let t = Toeplitz::new(key);
        let Ok(p) = etherparse::SlicedPacket::from_ethernet(frame) else {
            return (0, 0, 0);
        };
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            return (0, 0, 0);
        };
        let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
        let ports = match &p.transport {
            Some(etherparse::TransportSlice::Udp(u)) if mrqc & regs::MRQC_UDP_IPV4 != 0 => {
                Some((u.source_port(), u.destination_port(), 7))
            }
            Some(etherparse::TransportSlice::Tcp(t)) if mrqc & regs::MRQC_TCP_IPV4 != 0 => {
                Some((t.source_port(), t.destination_port(), 1))
            }
            _ => None,
        };
        let (hash, rss_type) = match ports {
            Some((s, d, k)) => (
                t.ipv4_l4(SocketAddrV4::new(src, s), SocketAddrV4::new(dst, d)),
                k,
            ),
            None if mrqc & regs::MRQC_IPV4 != 0 => (t.ipv4(src, dst), 2),
            None => return (0, 0, 0),
        };
        let idx = hash & 0x7f;
        let entry = b.read32(regs::RETA + 4 * (idx / 4)) >> (8 * (idx % 4));
        (hash, entry & 0xf, rss_type)
    }
}
