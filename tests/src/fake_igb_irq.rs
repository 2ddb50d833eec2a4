//! MSI-X of the fake igb (82576 datasheet §7.3.1, registers §8.8): in multiple-vector mode
//! (GPIE.Multiple_MSIX), a receive write-back of queue `q` latches EICR's bit of the vector
//! IVAR names for `q`, and the device sends that vector's message while EIMS and EICR share
//! the bit, whichever was set first; EIAC clears the bit as the message goes. Each vector's
//! message is an eventfd the test gave the driver ([`IgbIrq::table`]).
//!
//! The driver reaches EIMS, EIMC and EICR through doorbells, which on a plain
//! [`FakeBar`] would be memory and nothing more: [`IgbIrqBar`] is the fake's BAR with those
//! three decoded as the device does, in the driver's own write. Both sides update their
//! half first and then look at the other's (`SeqCst`), so a write-back and an arm that
//! cross are seen by at least one of them. A test can run code right after the driver's
//! next EICR clear ([`IgbIrq::after_eicr_clear`]): a frame then lands between the clear
//! and the unmask.
//!
//! Legacy mode (GPIE.Multiple_MSIX clear, §7.3.2): a write-back latches ICR.RXDW, and the
//! device raises its one line ([`IgbIrq::line`], MSI or INTx as the platform delivers it)
//! while ICR and IMS share a cause, whichever came first. IMS and IMC are decoded here; ICR
//! stays in the BAR (clear on read). [`IgbIrq::after_icr_read`] runs code right after the
//! driver's next ICR read.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use zcnic::igb::regs;
use zcnic::irq::EventFd;
use zcnic::mmio::Doorbell;
use zcnic::{Bar, FakeBar};

type Hook = Box<dyn FnOnce() + Send>;

/// The device side of the igb's MSI-X.
#[derive(Default)]
pub struct IgbIrq {
    eims: AtomicU32,
    eicr: AtomicU32,
    table: Mutex<Vec<EventFd>>,
    /// Messages sent per vector.
    pub sent: [AtomicU64; 8],
    hook: Mutex<Option<Hook>>,
    /// Legacy mode: IMS as the device keeps it, the line's eventfd, and how often it rose.
    ims: AtomicU32,
    line: Mutex<Option<EventFd>>,
    /// Times the legacy line was raised.
    pub line_sent: AtomicU64,
    icr_hook: Mutex<Option<Hook>>,
}

impl std::fmt::Debug for IgbIrq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IgbIrq")
            .field("eims", &self.eims)
            .field("eicr", &self.eicr)
            .finish_non_exhaustive()
    }
}

impl IgbIrq {
    /// An MSI-X table of `n` vectors; the driver's ends of their eventfds.
    pub fn table(&self, n: usize) -> Vec<EventFd> {
        let driver: Vec<EventFd> = (0..n).map(|_| EventFd::new().expect("eventfd")).collect();
        *self.table.lock().unwrap() = driver.iter().map(|e| e.try_clone().unwrap()).collect();
        driver
    }

    /// The vectors enabled now (EIMS as the device keeps it).
    pub fn mask(&self) -> u32 {
        self.eims.load(Ordering::SeqCst)
    }

    /// Runs `f` right after the driver's next write to EICR.
    pub fn after_eicr_clear(&self, f: impl FnOnce() + Send + 'static) {
        *self.hook.lock().unwrap() = Some(Box::new(f));
    }

    /// The legacy line: the driver's end of its eventfd, for `Igb::attach_line`.
    pub fn line(&self) -> EventFd {
        let driver = EventFd::new().expect("eventfd");
        *self.line.lock().unwrap() = Some(driver.try_clone().unwrap());
        driver
    }

    /// The legacy causes enabled now (IMS as the device keeps it).
    pub fn ims(&self) -> u32 {
        self.ims.load(Ordering::SeqCst)
    }

    /// Runs `f` right after the driver's next read of ICR.
    pub fn after_icr_read(&self, f: impl FnOnce() + Send + 'static) {
        *self.icr_hook.lock().unwrap() = Some(Box::new(f));
    }

    /// An ICR cause was latched (or IMS enabled one): in MSI-X mode, a cause IMS enables
    /// latches the EICR bit of the other-cause vector IVAR_MISC names (§7.3.1.2); in
    /// legacy mode it raises the line.
    pub(crate) fn icr_raised(&self, bar: &FakeBar) {
        if bar.read32(regs::GPIE) & regs::GPIE_MSIX_MODE == 0 {
            return self.update_line(bar);
        }
        if bar.peek32(regs::ICR) & self.ims.load(Ordering::SeqCst) == 0 {
            return;
        }
        let entry = (bar.read32(regs::IVAR_MISC) >> 8) & 0xff;
        if entry & regs::IVAR_VALID != 0 {
            self.eicr.fetch_or(1 << (entry & 0x1f), Ordering::SeqCst);
            self.update(bar);
        }
    }

    /// Legacy mode: raises the line while ICR and IMS share a cause.
    fn update_line(&self, bar: &FakeBar) {
        if bar.peek32(regs::ICR) & self.ims.load(Ordering::SeqCst) != 0 {
            if let Some(e) = self.line.lock().unwrap().as_ref() {
                self.line_sent.fetch_add(1, Ordering::SeqCst);
                e.signal().expect("eventfd write");
            }
        }
    }

    /// A receive write-back on queue `q`: its vector's cause, if GPIE and IVAR give it one;
    /// ICR.RXDW in legacy mode.
    pub(crate) fn rx_written_back(&self, bar: &FakeBar, q: u32) {
        if bar.read32(regs::GPIE) & regs::GPIE_MSIX_MODE == 0 {
            bar.raise(regs::ICR, regs::ICR_RXDW);
            self.update_line(bar);
            return;
        }
        if q >= 8 {
            return;
        }
        let entry = bar.read32(regs::IVAR0 + 4 * q) & 0xff;
        if entry & regs::IVAR_VALID != 0 {
            self.eicr.fetch_or(1 << (entry & 0x1f), Ordering::SeqCst);
            self.update(bar);
        }
    }

    /// Sends every vector whose bit EICR and EIMS share, auto-clearing what EIAC says.
    fn update(&self, bar: &FakeBar) {
        let due = self.eicr.load(Ordering::SeqCst) & self.eims.load(Ordering::SeqCst);
        let eiac = bar.read32(regs::EIAC);
        for v in (0..8).filter(|v| due & (1 << v) != 0) {
            // Only the thread that clears the bit sends: one message per cause.
            if eiac & (1 << v) != 0
                && self.eicr.fetch_and(!(1 << v), Ordering::SeqCst) & (1 << v) == 0
            {
                continue;
            }
            if let Some(e) = self.table.lock().unwrap().get(v) {
                self.sent[v].fetch_add(1, Ordering::SeqCst);
                e.signal().expect("eventfd write");
            }
        }
    }
}

/// The fake's BAR as the driver reaches it: EIMS, EIMC and EICR (write 1s) act on the
/// device's interrupt state, by `write32` or by doorbell.
#[derive(Debug, Clone)]
pub struct IgbIrqBar {
    pub(crate) bar: FakeBar,
    pub(crate) irq: Arc<IgbIrq>,
}

fn decoded(irq: &Arc<IgbIrq>, bar: &FakeBar, off: u32, val: u32) -> bool {
    match off {
        regs::EIMS => {
            irq.eims.fetch_or(val, Ordering::SeqCst);
            irq.update(bar);
        }
        regs::EIMC => {
            irq.eims.fetch_and(!val, Ordering::SeqCst);
        }
        regs::IMS => {
            irq.ims.fetch_or(val, Ordering::SeqCst);
            irq.icr_raised(bar);
        }
        regs::IMC => {
            irq.ims.fetch_and(!val, Ordering::SeqCst);
        }
        regs::EICR => {
            irq.eicr.fetch_and(!val, Ordering::SeqCst);
            let hook = irq.hook.lock().unwrap().take();
            if let Some(f) = hook {
                f();
            }
        }
        _ => return false,
    }
    true
}

impl Bar for IgbIrqBar {
    fn read32(&self, off: u32) -> u32 {
        match off {
            regs::EIMS => self.irq.eims.load(Ordering::SeqCst),
            regs::EICR => self.irq.eicr.swap(0, Ordering::SeqCst),
            regs::IMS => self.irq.ims.load(Ordering::SeqCst),
            regs::ICR => {
                let icr = self.bar.read32(off);
                let hook = self.irq.icr_hook.lock().unwrap().take();
                if let Some(f) = hook {
                    f();
                }
                icr
            }
            _ => self.bar.read32(off),
        }
    }

    fn write32(&self, off: u32, val: u32) {
        if !decoded(&self.irq, &self.bar, off, val) {
            self.bar.write32(off, val);
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
        match off {
            regs::EIMS | regs::EIMC | regs::EICR => {
                let (irq, bar) = (Arc::clone(&self.irq), self.bar.clone());
                Doorbell::hook(move |val| {
                    decoded(&irq, &bar, off, val);
                })
            }
            _ => self.bar.doorbell(off),
        }
    }

    fn doorbell16(&self, off: u32) -> Doorbell {
        self.bar.doorbell16(off)
    }
}
