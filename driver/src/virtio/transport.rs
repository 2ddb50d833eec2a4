//! virtio over PCI: the modern transport (virtio 1.1 §4.1.4, registers found through vendor
//! capabilities in config space) and the legacy one (§4.1.4.8, an I/O-port BAR, in
//! `legacy.rs`), behind one [`Transport`] trait so the net driver is written once.

use super::legacy::Intx;
use crate::irq::EventFd;
use crate::mmio::{Bar, Doorbell, MmioBar};
use crate::platform::PciDevice;
use crate::Error;
use std::sync::{Arc, Weak};

/// Device status bits (virtio 1.1 §2.1).
pub mod status {
    /// The guest has noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 128;
}

/// What the net driver needs from a virtio PCI transport. `Send`, so the port holding it
/// can move to the thread that drives it.
pub trait Transport: Send {
    /// Whether this is the legacy interface (32 feature bits, fixed queue layout).
    fn legacy(&self) -> bool;
    /// Device status register.
    fn status(&self) -> u8;
    /// Writes the device status register (0 resets the device).
    fn set_status(&self, s: u8);
    /// Features the device offers.
    fn device_features(&self) -> u64;
    /// Features the driver accepts.
    fn set_driver_features(&self, f: u64);
    /// Largest size of queue `q` (0: no such queue).
    fn queue_max(&self, q: u16) -> u16;
    /// Programs queue `q`: its size and the IOVAs of its descriptor, driver and device
    /// areas; enables it. Legacy takes only the size the device has and one page-aligned
    /// base with the areas at their fixed offsets.
    fn queue_setup(
        &mut self,
        q: u16,
        size: u16,
        desc: u64,
        driver: u64,
        device: u64,
    ) -> Result<(), String>;
    /// What kicks queue `q` (tells the device it has new buffers) from the thread that
    /// owns it, without the transport; call it once the queue is set up.
    fn notifier(&self, q: u16) -> Notifier;
    /// Byte `off` of the device-specific configuration.
    fn config8(&self, off: u32) -> u8;
    /// The little-endian 16-bit field at `off` of the device-specific configuration.
    fn config16(&self, off: u32) -> u16 {
        u16::from_le_bytes([self.config8(off), self.config8(off + 1)])
    }
    /// The little-endian 32-bit field at `off` of the device-specific configuration.
    fn config32(&self, off: u32) -> u32 {
        u32::from_le_bytes(std::array::from_fn(|i| self.config8(off + i as u32)))
    }
    /// Cuts every [`Notifier`] off the device (see [`Bar::revoke_doorbells`]): what a port
    /// does once its device is stopped, so a queue that outlives it kicks nothing.
    fn revoke_notifiers(&self) {}
    /// The MSI-X vectors routed for this device, an eventfd per table entry, handed over
    /// once (empty: none; the legacy transport never has them, see `legacy.rs`).
    fn take_vectors(&mut self) -> Vec<EventFd> {
        Vec::new()
    }
    /// Sends queue `q`'s used buffer notifications to MSI-X entry `vector` (`NO_VECTOR`,
    /// 0xffff: nowhere); before [`queue_setup`](Transport::queue_setup) enables the queue. True when
    /// the device kept it: it reads back NO_VECTOR when it cannot (virtio 1.1 §4.1.5.1.2).
    fn set_queue_vector(&self, q: u16, vector: u16) -> bool {
        let _ = (q, vector);
        false
    }
    /// Sends configuration change notifications (link changes) to MSI-X entry `vector`.
    fn set_config_vector(&self, vector: u16) -> bool {
        let _ = vector;
        false
    }
    /// The device's INTx and its ISR status, handed over once: for a port without MSI-X
    /// (see `legacy.rs`). None when the transport cannot give it.
    fn take_intx(&mut self) -> Option<Intx> {
        None
    }
}

/// What kicks one queue: a doorbell on its notify address (modern), or the legacy
/// QUEUE_NOTIFY register through the platform (a system call, and nothing once the
/// device is closed). `Send`, owned by the queue's thread.
pub struct Notifier {
    q: u16,
    how: How,
}

enum How {
    Bell(Doorbell),
    Io(Weak<dyn PciDevice>),
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.how {
            How::Bell(d) => write!(f, "Notifier({}, {d:?})", self.q),
            How::Io(_) => write!(f, "Notifier({}, legacy)", self.q),
        }
    }
}

impl Notifier {
    /// Queue `q`'s kick through the legacy QUEUE_NOTIFY register of `dev`, while it is open.
    pub(super) fn io(q: u16, dev: Weak<dyn PciDevice>) -> Self {
        Self {
            q,
            how: How::Io(dev),
        }
    }

    /// Kicks the queue: writes its index to its notify address (virtio 1.1 §4.1.4.4,
    /// §4.1.4.8).
    #[inline]
    pub fn kick(&self) {
        match &self.how {
            How::Bell(d) => d.write(self.q.into()),
            How::Io(dev) => {
                if let Some(dev) = dev.upgrade() {
                    let q = self.q.to_le_bytes();
                    if let Err(e) = dev.bar_write(0, super::legacy::reg::QUEUE_NOTIFY, &q) {
                        log::warn!("{e}");
                    }
                }
            }
        }
    }
}

/// Modern common configuration offsets (virtio 1.1 §4.1.4.3).
mod common {
    pub const DEVICE_FEATURE_SELECT: u32 = 0x00;
    pub const DEVICE_FEATURE: u32 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u32 = 0x08;
    pub const DRIVER_FEATURE: u32 = 0x0C;
    pub const MSIX_CONFIG: u32 = 0x10;
    pub const NUM_QUEUES: u32 = 0x12;
    pub const DEVICE_STATUS: u32 = 0x14;
    pub const QUEUE_SELECT: u32 = 0x16;
    pub const QUEUE_SIZE: u32 = 0x18;
    pub const QUEUE_MSIX_VECTOR: u32 = 0x1A;
    pub const QUEUE_ENABLE: u32 = 0x1C;
    pub const QUEUE_NOTIFY_OFF: u32 = 0x1E;
    pub const QUEUE_DESC: u32 = 0x20;
    pub const QUEUE_DRIVER: u32 = 0x28;
    pub const QUEUE_DEVICE: u32 = 0x30;
}

/// PCI capability layout for virtio (virtio 1.1 §4.1.4).
const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
/// VIRTIO_PCI_CAP_ISR_CFG: the ISR status byte (§4.1.4.5), INTx's acknowledgement.
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
/// PCI status register bit: a capability list exists (PCI Local Bus Spec §6.2.3).
const STATUS_CAP_LIST: u16 = 1 << 4;
const CAP_POINTER: u64 = 0x34;

/// A register window: a BAR, an offset into it and a length, all as the device's
/// capability said (checked against the BAR when it is mapped).
#[derive(Debug, Clone, Copy)]
struct Window {
    bar: usize,
    off: u32,
    len: u32,
}

impl Window {
    /// The BAR offset of register `off` of this window, if it lies inside it.
    #[inline(always)]
    fn at(self, off: u32, width: u32) -> Option<u32> {
        (off.checked_add(width)? <= self.len).then_some(self.off.checked_add(off)?)
    }
}

/// Smallest common configuration (virtio 1.1 §4.1.4.3, up to queue_device) and net device
/// configuration (mac and status, §5.1.4) zcnic reads.
const COMMON_LEN: u32 = 0x38;
const DEVICE_LEN: u32 = 8;

/// The modern transport: common, notify and device windows in memory BARs.
pub struct Modern<B: Bar> {
    bars: Vec<Option<B>>,
    common: Window,
    notify: Window,
    notify_mult: u32,
    device: Window,
    /// Notify offset of each queue set up, by queue index.
    queue_notify: Vec<u32>,
    /// MSI-X vectors routed by the platform, until the port takes them.
    vectors: Vec<EventFd>,
    /// The ISR status window (its first byte), when the device has one inside a mapped
    /// BAR: what a port without MSI-X reads to acknowledge INTx (`legacy.rs`).
    isr: Option<Window>,
    /// The device, for its INTx at the platform (none for a test's fake).
    dev: Option<Weak<dyn PciDevice>>,
    /// INTx a test's fake device plays, until the port takes it: whole ([`Intx::fake`]),
    /// or its line alone, acknowledged through `isr` ([`Modern::with_isr_intx`]).
    intx: Option<Intx>,
    line: Option<EventFd>,
}

impl<B: Bar> std::fmt::Debug for Modern<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Modern").finish_non_exhaustive()
    }
}

/// Capabilities found in config space.
#[derive(Debug, Default)]
struct Caps {
    common: Option<Window>,
    notify: Option<(Window, u32)>,
    device: Option<Window>,
    isr: Option<Window>,
}

fn find_caps(dev: &dyn PciDevice) -> Result<Caps, Error> {
    let mut caps = Caps::default();
    if dev.config_read16(0x06)? & STATUS_CAP_LIST == 0 {
        return Ok(caps);
    }
    let mut b = [0u8; 1];
    dev.config_read(CAP_POINTER, &mut b)?;
    let mut ptr = u64::from(b[0] & !3);
    // A malformed list could loop: config space has room for at most 48 capabilities.
    for _ in 0..48 {
        if ptr < 0x40 {
            break;
        }
        let mut cap = [0u8; 20];
        dev.config_read(ptr, &mut cap)?;
        if cap[0] == CAP_VENDOR && cap[4] < 6 {
            let w = Window {
                bar: cap[4].into(),
                off: u32::from_le_bytes([cap[8], cap[9], cap[10], cap[11]]),
                len: u32::from_le_bytes([cap[12], cap[13], cap[14], cap[15]]),
            };
            match cap[3] {
                CFG_COMMON if caps.common.is_none() => caps.common = Some(w),
                CFG_NOTIFY if caps.notify.is_none() => {
                    caps.notify =
                        Some((w, u32::from_le_bytes([cap[16], cap[17], cap[18], cap[19]])))
                }
                CFG_DEVICE if caps.device.is_none() => caps.device = Some(w),
                CFG_ISR if caps.isr.is_none() => caps.isr = Some(w),
                _ => {}
            }
        }
        ptr = u64::from(cap[1] & !3);
    }
    Ok(caps)
}

impl Modern<MmioBar> {
    /// Finds the virtio capabilities of `dev` and maps the BARs they point into.
    pub fn open(dev: &Arc<dyn PciDevice>) -> Result<Self, Error> {
        let addr = dev.addr();
        let caps = find_caps(dev.as_ref())?;
        let missing = |what| {
            Error::Io(format!(
                "{addr}: no virtio {what} capability: not a modern virtio device"
            ))
        };
        let common = caps.common.ok_or_else(|| missing("common configuration"))?;
        let (notify, notify_mult) = caps.notify.ok_or_else(|| missing("notification"))?;
        let device = caps.device.ok_or_else(|| missing("device configuration"))?;
        let mut bars: Vec<Option<MmioBar>> = (0..6).map(|_| None).collect();
        for (w, what, min) in [
            (common, "common configuration", COMMON_LEN),
            (notify, "notification", 2),
            (device, "device configuration", DEVICE_LEN),
        ] {
            if bars[w.bar].is_none() {
                bars[w.bar] = Some(dev.map_bar(w.bar as u32)?);
            }
            let bar_len = bars[w.bar].as_ref().map_or(0, MmioBar::len) as u64;
            if w.len < min || u64::from(w.off) + u64::from(w.len) > bar_len {
                return Err(Error::Io(format!(
                    "{addr}: the virtio {what} capability says {:#x}+{:#x} of BAR{} ({bar_len:#x} bytes): not a device zcnic can drive",
                    w.off, w.len, w.bar
                )));
            }
        }
        let isr = caps
            .isr
            .and_then(|w| isr_window(dev.as_ref(), &mut bars, w));
        let mut m = Self::new(bars, common, notify, notify_mult, device);
        m.isr = isr;
        m.dev = Some(Arc::downgrade(dev));
        Ok(m)
    }
}

/// The ISR capability's window `w`, its BAR mapped into `bars`; none (the port then polls
/// without MSI-X) when the BAR cannot be mapped or the window lies outside it. The
/// capability is mandatory, but a device without it still works through MSI-X or polling.
fn isr_window(dev: &dyn PciDevice, bars: &mut [Option<MmioBar>], w: Window) -> Option<Window> {
    let addr = dev.addr();
    if bars[w.bar].is_none() {
        match dev.map_bar(w.bar as u32) {
            Ok(b) => bars[w.bar] = Some(b),
            Err(e) => {
                log::debug!("{addr}: the virtio ISR capability's BAR: {e}; no INTx");
                return None;
            }
        }
    }
    let bar_len = bars[w.bar].as_ref().map_or(0, MmioBar::len) as u64;
    if w.len == 0 || u64::from(w.off) >= bar_len {
        log::debug!(
            "{addr}: the virtio ISR capability says {:#x}+{:#x} of BAR{} ({bar_len:#x} bytes); no INTx",
            w.off,
            w.len,
            w.bar
        );
        return None;
    }
    Some(w)
}

impl<B: Bar> Modern<B> {
    /// A modern transport whose windows all sit in `bar` at the given offsets, with notify
    /// addresses `notify + queue_notify_off * notify_mult`: for a test device on a
    /// [`crate::FakeBar`] (QEMU puts common at 0x0, device at 0x2000, notify at 0x3000,
    /// multiplier 4).
    pub fn in_one_bar(bar: B, common: u32, device: u32, notify: u32, notify_mult: u32) -> Self {
        // Each window runs to the end of the bar (or without limit when its size is not
        // known; the bar still refuses accesses beyond itself).
        let end = bar
            .size()
            .map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX));
        let w = |off: u32| Window {
            bar: 0,
            off,
            len: end.saturating_sub(off),
        };
        Self::new(
            vec![Some(bar)],
            w(common),
            w(notify),
            notify_mult,
            w(device),
        )
    }

    fn new(
        bars: Vec<Option<B>>,
        common: Window,
        notify: Window,
        notify_mult: u32,
        device: Window,
    ) -> Self {
        Self {
            bars,
            common,
            notify,
            notify_mult,
            device,
            queue_notify: Vec::new(),
            vectors: Vec::new(),
            isr: None,
            dev: None,
            intx: None,
            line: None,
        }
    }

    /// MSI-X vectors the platform routed (or a test's fake signals), entry `i` at `i`.
    pub fn with_vectors(mut self, vectors: Vec<EventFd>) -> Self {
        self.vectors = vectors;
        self
    }

    /// INTx a test's fake device plays ([`Intx::fake`]), for a port given no vectors.
    pub fn with_intx(mut self, intx: Intx) -> Self {
        self.intx = Some(intx);
        self
    }

    /// INTx a test's fake device signals on `event`, acknowledged by reading ISR status at
    /// `isr` of the BAR, as the ISR capability of a real modern device points to it.
    pub fn with_isr_intx(mut self, event: EventFd, isr: u32) -> Self {
        self.isr = Some(Window {
            bar: 0,
            off: isr,
            len: 1,
        });
        self.line = Some(event);
        self
    }

    #[inline(always)]
    fn bar(&self, w: Window) -> Option<&B> {
        self.bars.get(w.bar).and_then(Option::as_ref)
    }

    /// The bar of window `w` and the BAR offset of its register `off`, when both exist.
    #[inline(always)]
    fn reg(&self, w: Window, off: u32, width: u32) -> Option<(&B, u32)> {
        Some((self.bar(w)?, w.at(off, width)?))
    }

    fn c_read32(&self, off: u32) -> u32 {
        self.reg(self.common, off, 4)
            .map_or(u32::MAX, |(b, at)| b.read32(at))
    }

    fn c_write32(&self, off: u32, v: u32) {
        if let Some((b, at)) = self.reg(self.common, off, 4) {
            b.write32(at, v)
        }
    }

    fn c_read16(&self, off: u32) -> u16 {
        self.reg(self.common, off, 2)
            .map_or(u16::MAX, |(b, at)| b.read16(at))
    }

    fn c_write16(&self, off: u32, v: u16) {
        if let Some((b, at)) = self.reg(self.common, off, 2) {
            b.write16(at, v)
        }
    }

    fn c_write64(&self, off: u32, v: u64) {
        self.c_write32(off, v as u32);
        self.c_write32(off + 4, (v >> 32) as u32);
    }
}

impl<B: Bar> Transport for Modern<B> {
    fn legacy(&self) -> bool {
        false
    }

    fn status(&self) -> u8 {
        self.reg(self.common, common::DEVICE_STATUS, 1)
            .map_or(u8::MAX, |(b, at)| b.read8(at))
    }

    fn set_status(&self, s: u8) {
        if let Some((b, at)) = self.reg(self.common, common::DEVICE_STATUS, 1) {
            b.write8(at, s)
        }
    }

    fn device_features(&self) -> u64 {
        self.c_write32(common::DEVICE_FEATURE_SELECT, 0);
        let lo = self.c_read32(common::DEVICE_FEATURE);
        self.c_write32(common::DEVICE_FEATURE_SELECT, 1);
        let hi = self.c_read32(common::DEVICE_FEATURE);
        u64::from(lo) | u64::from(hi) << 32
    }

    fn set_driver_features(&self, f: u64) {
        self.c_write32(common::DRIVER_FEATURE_SELECT, 0);
        self.c_write32(common::DRIVER_FEATURE, f as u32);
        self.c_write32(common::DRIVER_FEATURE_SELECT, 1);
        self.c_write32(common::DRIVER_FEATURE, (f >> 32) as u32);
    }

    fn queue_max(&self, q: u16) -> u16 {
        self.c_write16(common::QUEUE_SELECT, q);
        self.c_read16(common::QUEUE_SIZE)
    }

    fn queue_setup(
        &mut self,
        q: u16,
        size: u16,
        desc: u64,
        driver: u64,
        device: u64,
    ) -> Result<(), String> {
        let queues = self.c_read16(common::NUM_QUEUES);
        if q >= queues {
            return Err(format!("queue {q} is beyond the device's {queues}"));
        }
        self.c_write16(common::QUEUE_SELECT, q);
        self.c_write16(common::QUEUE_SIZE, size);
        self.c_write64(common::QUEUE_DESC, desc);
        self.c_write64(common::QUEUE_DRIVER, driver);
        self.c_write64(common::QUEUE_DEVICE, device);
        // The queue's doorbell: queue_notify_off × multiplier into the notify window
        // (§4.1.4.4), which it must lie inside: both numbers come from the device.
        let notify_off = self.c_read16(common::QUEUE_NOTIFY_OFF);
        let at = u32::from(notify_off)
            .checked_mul(self.notify_mult)
            .and_then(|off| self.notify.at(off, 2))
            .ok_or_else(|| {
                format!(
                    "queue {q}'s notify offset {notify_off} × {} lies outside the {:#x}-byte notification window",
                    self.notify_mult, self.notify.len
                )
            })?;
        let q = usize::from(q);
        if self.queue_notify.len() <= q {
            self.queue_notify.resize(q + 1, u32::MAX);
        }
        self.queue_notify[q] = at;
        self.c_write16(common::QUEUE_ENABLE, 1);
        Ok(())
    }

    fn notifier(&self, q: u16) -> Notifier {
        let bell = match (self.bar(self.notify), self.queue_notify.get(usize::from(q))) {
            (Some(b), Some(&off)) => b.doorbell16(off),
            _ => Doorbell::dead(),
        };
        Notifier {
            q,
            how: How::Bell(bell),
        }
    }

    fn config8(&self, off: u32) -> u8 {
        self.reg(self.device, off, 1)
            .map_or(u8::MAX, |(b, at)| b.read8(at))
    }

    /// One 16-bit access, as virtio 1.2 §4.1.3.1 asks for a 16-bit field.
    fn config16(&self, off: u32) -> u16 {
        self.reg(self.device, off, 2)
            .map_or(u16::MAX, |(b, at)| b.read16(at))
    }

    /// One 32-bit access, as virtio 1.2 §4.1.3.1 asks for a 32-bit field.
    fn config32(&self, off: u32) -> u32 {
        self.reg(self.device, off, 4)
            .map_or(u32::MAX, |(b, at)| b.read32(at))
    }

    /// The notify BAR's doorbells and the ISR BAR's reader (the same BAR on QEMU): a
    /// queue that outlives the port must neither kick the device nor clear its ISR.
    fn revoke_notifiers(&self) {
        if let Some(b) = self.bar(self.notify) {
            b.revoke_doorbells();
        }
        if let Some(w) = self.isr.filter(|w| w.bar != self.notify.bar) {
            if let Some(b) = self.bar(w) {
                b.revoke_doorbells();
            }
        }
    }

    fn take_vectors(&mut self) -> Vec<EventFd> {
        std::mem::take(&mut self.vectors)
    }

    /// A test's INTx as given, or the device's own through its platform (VFIO, or
    /// uio_pci_generic's /dev/uioN) acknowledged through the ISR capability; none without
    /// that capability or a line from the platform.
    fn take_intx(&mut self) -> Option<Intx> {
        if let Some(intx) = self.intx.take() {
            return Some(intx);
        }
        let (bar, at) = self.reg(self.isr?, 0, 1)?;
        let reg = bar.reader8(at);
        if let Some(event) = self.line.take() {
            return Some(Intx::fake_mmio(event, reg));
        }
        let dev = self.dev.as_ref()?.upgrade()?;
        Intx::mmio(&dev, reg)
            .map_err(|e| log::debug!("{e}; the port polls"))
            .ok()
    }

    fn set_queue_vector(&self, q: u16, vector: u16) -> bool {
        self.c_write16(common::QUEUE_SELECT, q);
        self.c_write16(common::QUEUE_MSIX_VECTOR, vector);
        self.c_read16(common::QUEUE_MSIX_VECTOR) == vector
    }

    fn set_config_vector(&self, vector: u16) -> bool {
        self.c_write16(common::MSIX_CONFIG, vector);
        self.c_read16(common::MSIX_CONFIG) == vector
    }
}
