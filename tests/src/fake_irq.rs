//! The interrupt of the fake e1000: the device's mask (IMS, set by writes to IMS, cleared by
//! writes to IMC) and an eventfd it signals whenever an enabled cause is raised, as the
//! 8254x raises its line while ICR and IMS share a bit (8254x SDM §13.4.17–§13.4.21).
//!
//! Registers of [`zcnic::FakeBar`] are plain memory, so nothing would see the driver's
//! IMS and IMC writes as events: the driver is given an [`IrqBar`], the fake's BAR seen
//! through the interrupt logic, which acts in the driver's own register access as a
//! register decoder does. The device thread raises causes with [`FakeIrq::raise`]. Both
//! sides update their half first and then look at the other's (all `SeqCst`), so a cause
//! and an arm that cross are seen by at least one of them: an interrupt is never lost.
//!
//! A test can also run code in the driver's next ICR read ([`FakeIrq::on_icr_read`]): how
//! a frame is made to land at one exact point of the driver's arm sequence.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use zcnic::e1000::regs;
use zcnic::irq::EventFd;
use zcnic::mmio::Doorbell;
use zcnic::{Bar, FakeBar};

/// Something to run once, in the driver's next read of ICR, right after the read.
type Hook = Box<dyn FnOnce() + Send>;

/// The device side of the interrupt.
pub struct FakeIrq {
    mask: AtomicU32,
    event: EventFd,
    /// Times the device signalled the eventfd.
    pub signals: AtomicU64,
    hook: Mutex<Option<Hook>>,
}

impl std::fmt::Debug for FakeIrq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIrq")
            .field("mask", &self.mask)
            .field("signals", &self.signals)
            .finish_non_exhaustive()
    }
}

impl FakeIrq {
    /// A device with every cause masked (IMS 0, as after reset).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            mask: AtomicU32::new(0),
            event: EventFd::new().expect("an eventfd"),
            signals: AtomicU64::new(0),
            hook: Mutex::new(None),
        })
    }

    /// The driver's end of the eventfd, for `E1000::attach_interrupt`.
    pub fn driver_end(&self) -> EventFd {
        self.event.try_clone().expect("dup of the eventfd")
    }

    /// The device latches `cause` in ICR, and interrupts when IMS allows it.
    pub fn raise(&self, bar: &FakeBar, cause: u32) {
        bar.raise(regs::ICR, cause);
        self.update(bar);
    }

    /// The enabled causes now (IMS as the device keeps it).
    pub fn mask(&self) -> u32 {
        self.mask.load(Ordering::SeqCst)
    }

    /// Runs `f` in the driver's next ICR read, just after the read cleared the register.
    pub fn on_icr_read(&self, f: impl FnOnce() + Send + 'static) {
        *self.hook.lock().unwrap() = Some(Box::new(f));
    }

    /// Signals when ICR and IMS share a bit. The line is level-triggered: it stays up until
    /// ICR is read, which here means one signal per look that finds it up; the driver
    /// drains the eventfd before every sleep, so extra signals only wake it once more.
    fn update(&self, bar: &FakeBar) {
        if bar.peek32(regs::ICR) & self.mask.load(Ordering::SeqCst) != 0 {
            self.signals.fetch_add(1, Ordering::SeqCst);
            self.event.signal().expect("signalling the eventfd");
        }
    }
}

/// The fake's registers as the driver reaches them: IMS and IMC writes move the device's
/// mask (and IMS may raise the interrupt at once, for a cause latched before), ICR reads
/// run the test's hook.
#[derive(Debug, Clone)]
pub struct IrqBar {
    bar: FakeBar,
    irq: Arc<FakeIrq>,
}

impl IrqBar {
    /// `bar` with `irq`'s logic on its interrupt registers.
    pub fn new(bar: FakeBar, irq: Arc<FakeIrq>) -> Self {
        Self { bar, irq }
    }
}

impl Bar for IrqBar {
    fn read32(&self, off: u32) -> u32 {
        let v = self.bar.read32(off);
        if off == regs::ICR {
            let hook = self.irq.hook.lock().unwrap().take();
            if let Some(f) = hook {
                f();
            }
        }
        v
    }

    fn write32(&self, off: u32, val: u32) {
        match off {
            regs::IMS => {
                self.irq.mask.fetch_or(val, Ordering::SeqCst);
                self.irq.update(&self.bar);
            }
            regs::IMC => {
                self.irq.mask.fetch_and(!val, Ordering::SeqCst);
            }
            _ => self.bar.write32(off, val),
        }
    }

    fn read16(&self, off: u32) -> u16 {
        self.bar.read16(off)
    }

    fn write16(&self, off: u32, val: u16) {
        self.bar.write16(off, val)
    }

    fn read8(&self, off: u32) -> u8 {
        self.bar.read8(off)
    }

    fn write8(&self, off: u32, val: u8) {
        self.bar.write8(off, val)
    }

    fn size(&self) -> Option<usize> {
        self.bar.size()
    }

    fn doorbell(&self, off: u32) -> Doorbell {
        self.bar.doorbell(off)
    }

    fn doorbell16(&self, off: u32) -> Doorbell {
        self.bar.doorbell16(off)
    }
}
