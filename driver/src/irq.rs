//! Receive interrupts: how a port sleeps while nothing arrives and wakes on the first frame
//! (DPDK's `rte_eth_dev_rx_intr_enable`, the l3fwd-power pattern).
//!
//! An interrupt reaches userspace on a descriptor that becomes readable when it fires: an
//! [`EventFd`] VFIO signals when the device raises its vector (`VFIO_DEVICE_SET_IRQS`) or a
//! test's fake device signals itself, or uio's `/dev/uioN`. The port hands the descriptor
//! out ([`Nic::rx_interrupt_fd`](crate::Nic::rx_interrupt_fd)), so epoll, mio
//! or tokio's `AsyncFd` can wait on it without zcnic depending on any of them.
//!
//! The race every driver must get right: a frame that lands after the ring was found empty
//! but before the waiter sleeps must wake it. zcnic's order is *arm, re-check, sleep*:
//! [`Nic::enable_rx_interrupt`](crate::Nic::enable_rx_interrupt) first lets the device
//! interrupt, then looks at the ring once more and answers `true` when a frame is already
//! there (the caller polls instead of sleeping). A frame completed after that look raises
//! the interrupt, which the eventfd keeps until it is read, so the sleep that follows
//! returns at once.
//!
//! Nothing here is on the datapath: `rx_batch` and `tx_batch` never touch an interrupt
//! register or make a system call; an interrupt costs only while it is armed.

use crate::pci::PciAddr;
use crate::platform::PciDevice;
use crate::vfio::sys;
use crate::Error;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

/// A Linux eventfd: a counter the kernel (or a fake device) adds to, readable while it is
/// not zero. Non-blocking and close-on-exec.
///
/// ```
/// use std::time::Duration;
/// let ev = zcnic::irq::EventFd::new()?;
/// assert!(!ev.wait(Duration::ZERO)?);
/// ev.signal()?;
/// assert!(ev.wait(Duration::from_secs(1))?);
/// assert_eq!(ev.drain()?, 1);
/// assert!(!ev.wait(Duration::ZERO)?);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct EventFd(File);

impl EventFd {
    /// A new eventfd with a count of 0.
    pub fn new() -> io::Result<Self> {
        Ok(Self(File::from(sys::eventfd()?)))
    }

    /// A second descriptor for the same counter (a `dup`): one side signals, the other
    /// waits.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self(self.0.try_clone()?))
    }

    /// Adds 1 to the counter, waking whoever waits on it.
    pub fn signal(&self) -> io::Result<()> {
        (&self.0).write_all(&1u64.to_ne_bytes())
    }

    /// Reads and resets the counter without blocking: how many signals came since the last
    /// drain (0 when none).
    pub fn drain(&self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        match (&self.0).read(&mut buf) {
            Ok(8) => Ok(u64::from_ne_bytes(buf)),
            Ok(n) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("eventfd read gave {n} bytes"),
            )),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `timeout` for the counter to be non-zero, without resetting it; true if
    /// it is. A signal delivered to the thread may end the wait early (false).
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        wait_readable(self.as_fd(), timeout)
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Waits up to `timeout` for `fd` to become readable (poll(2)); true if it did. For a
/// port's [`rx_interrupt_fd`](crate::Nic::rx_interrupt_fd) between
/// [`enable_rx_interrupt`](crate::Nic::enable_rx_interrupt) and
/// [`disable_rx_interrupt`](crate::Nic::disable_rx_interrupt).
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    sys::poll_readable(&[fd], timeout)
}

/// [`wait_readable`] for several descriptors (the ports of a forwarder): true when any of
/// them became readable.
pub fn wait_any(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<bool> {
    sys::poll_readable(fds, timeout)
}

/// Where a device's interrupt is read from, as its platform hands it out
/// ([`PciDevice::intx`]): an eventfd VFIO routes the vector to, or uio's `/dev/uioN`, whose
/// read returns a 4-byte count of interrupts so far. Either is readable once it fired.
#[derive(Debug)]
pub struct IrqFd(Source);

#[derive(Debug)]
enum Source {
    Event(EventFd),
    Uio(File),
}

impl IrqFd {
    /// An eventfd the interrupt signals.
    pub fn event(event: EventFd) -> Self {
        Self(Source::Event(event))
    }

    /// A uio device node (`/dev/uioN`, or a descriptor of it).
    pub fn uio(node: File) -> Self {
        Self(Source::Uio(node))
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match &self.0 {
            Source::Event(e) => e.as_fd(),
            Source::Uio(f) => f.as_fd(),
        }
    }

    /// Forgets the interrupts seen so far, without blocking.
    fn drain(&self) -> io::Result<()> {
        match &self.0 {
            Source::Event(e) => e.drain().map(drop),
            // A uio node is readable while its count moved since this file last read it;
            // the read (which would block otherwise) takes the count.
            Source::Uio(f) => {
                if wait_readable(f.as_fd(), Duration::ZERO)? {
                    let mut count = [0u8; 4];
                    (&*f).read_exact(&mut count)?;
                }
                Ok(())
            }
        }
    }
}

/// How the line behind a port's interrupt is let fire again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// The device's INTx, through its platform ([`PciDevice::irq_unmask`]): level-triggered,
    /// masked by the kernel each time it fires (VFIO through its mask, uio_pci_generic
    /// through the command register's INTx Disable bit), so unmasked before every arm.
    Intx,
    /// An eventfd signalled by something else (a test's fake device): nothing to unmask.
    Plain,
}

/// A port's receive interrupt: the descriptor it arrives on and the line behind it. The
/// device's own mask (e1000 IMS/IMC) is the driver's business; this is the platform's part.
#[derive(Debug)]
pub(crate) struct RxIrq {
    source: IrqFd,
    line: Line,
}

impl RxIrq {
    /// INTx of `dev` (the only interrupt of a device without MSI, such as QEMU's 82540EM).
    pub(crate) fn intx(dev: &dyn PciDevice) -> Result<Self, Error> {
        Ok(Self {
            source: dev.intx()?,
            line: Line::Intx,
        })
    }

    /// An interrupt that arrives on `event`, signalled by whoever holds its other end.
    pub(crate) fn plain(event: EventFd) -> Self {
        Self {
            source: IrqFd::event(event),
            line: Line::Plain,
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.source.fd()
    }

    /// Before arming: forgets signals of earlier rounds (an interrupt that fired while the
    /// port was disarming would otherwise wake the next sleep for nothing) and lets the
    /// line fire again.
    pub(crate) fn rearm(&self, addr: PciAddr, dev: Option<&dyn PciDevice>) -> Result<(), Error> {
        self.source
            .drain()
            .map_err(|e| Error::os(&addr, "reading the interrupt descriptor", e))?;
        match (self.line, dev) {
            (Line::Intx, Some(dev)) => dev.irq_unmask(INTX),
            _ => Ok(()),
        }
    }

    /// Routes the line away from the descriptor (the kernel lets go of it); before the
    /// device closes.
    pub(crate) fn release(&self, dev: Option<&dyn PciDevice>) {
        if let (Line::Intx, Some(dev)) = (self.line, dev) {
            dev.irq_release(INTX);
        }
    }
}

/// VFIO's index of INTx (`VFIO_PCI_INTX_IRQ_INDEX`), the numbering [`PciDevice`]'s
/// interrupt calls use.
pub const INTX: u32 = vfio_bindings::bindings::vfio::VFIO_PCI_INTX_IRQ_INDEX;
/// VFIO's index of MSI (`VFIO_PCI_MSI_IRQ_INDEX`).
pub const MSI: u32 = vfio_bindings::bindings::vfio::VFIO_PCI_MSI_IRQ_INDEX;
/// VFIO's index of MSI-X (`VFIO_PCI_MSIX_IRQ_INDEX`).
pub const MSIX: u32 = vfio_bindings::bindings::vfio::VFIO_PCI_MSIX_IRQ_INDEX;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    /// A uio node reads as a 4-byte count once the line fired; here a socket stands in for
    /// it. Draining takes the count and leaves it unreadable; draining with nothing there
    /// does not block.
    #[test]
    fn a_uio_count_is_drained_without_blocking() {
        let (mut kernel, node) = UnixStream::pair().unwrap();
        let irq = IrqFd::uio(File::from(OwnedFd::from(node)));
        irq.drain().unwrap();
        kernel.write_all(&7u32.to_ne_bytes()).unwrap();
        assert!(wait_readable(irq.fd(), Duration::from_secs(5)).unwrap());
        irq.drain().unwrap();
        assert!(!wait_readable(irq.fd(), Duration::ZERO).unwrap());
    }

    #[test]
    fn wait_any_sees_the_second_descriptor() {
        let (a, b) = (EventFd::new().unwrap(), EventFd::new().unwrap());
        assert!(!wait_any(&[a.as_fd(), b.as_fd()], Duration::ZERO).unwrap());
        b.signal().unwrap();
        assert!(wait_any(&[a.as_fd(), b.as_fd()], Duration::from_secs(5)).unwrap());
    }
}
