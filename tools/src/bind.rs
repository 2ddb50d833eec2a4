//! `zcnic list`, `bind` and `unbind`: which NICs there are and who drives them.
//!
//! Binding follows the kernel's driver_override mechanism: unbind from the current driver,
//! name the new one in `driver_override`, and ask the PCI core to probe again. The driver
//! the device had is remembered under /run/zcnic so `unbind` can give it back.

use crate::{msg, ToolError};
use std::fs;
use std::path::{Path, PathBuf};
use zcnic::{DeviceInfo, PciAddr};

const DRIVERS: &str = "/sys/bus/pci/drivers";
const STATE_DIR: &str = "/run/zcnic";

fn write(path: &Path, what: &str) -> Result<(), ToolError> {
    fs::write(path, what).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => " (run as root)",
            _ => "",
        };
        msg(format!(
            "writing `{}` to {}: {e}{hint}",
            what.trim(),
            path.display()
        ))
    })
}

fn state_file(addr: &PciAddr) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{addr}.driver"))
}

/// One row of `zcnic list`.
pub fn describe(d: &DeviceInfo) -> String {
    let support = match zcnic::supported(d.vendor, d.device) {
        Some(s) => format!("yes: {} {}", s.driver, s.part),
        None => "no".into(),
    };
    format!(
        "{:<14}{:04x}:{:04x}      {:<16}{:<7}{support}",
        d.addr.to_string(),
        d.vendor,
        d.device,
        d.driver.as_deref().unwrap_or("-"),
        d.iommu_group.map_or("-".into(), |g| g.to_string()),
    )
}

/// `zcnic list`.
pub fn list() -> Result<(), ToolError> {
    let devs = DeviceInfo::list_network()?;
    println!(
        "{:<14}{:<15}{:<16}{:<7}ZCNIC",
        "PCI", "VENDOR:DEVICE", "DRIVER", "IOMMU"
    );
    for d in &devs {
        println!("{}", describe(d));
    }
    if devs.is_empty() {
        println!("(no network controllers found in /sys/bus/pci/devices)");
    }
    Ok(())
}

/// `zcnic bind ADDR [--driver D]`.
pub fn bind(addr: &PciAddr, driver: &str) -> Result<(), ToolError> {
    let info = DeviceInfo::read(addr)?;
    if info.driver.as_deref() == Some(driver) {
        println!("{addr}: already bound to {driver}");
        return Ok(());
    }
    let drv_dir = Path::new(DRIVERS).join(driver);
    if !drv_dir.exists() {
        return Err(msg(format!(
            "{addr}: driver {driver} is not loaded: run `modprobe {driver}`"
        )));
    }
    if driver == "vfio-pci" && info.iommu_group.is_none() {
        return Err(zcnic::Error::NoIommuGroup(*addr).into());
    }
    let dev_dir = DeviceInfo::sysfs_dir(addr);
    if let Some(cur) = &info.driver {
        // Remember only the first driver: binding twice must not forget the kernel's.
        let state = state_file(addr);
        if !state.exists() {
            let _ = fs::create_dir_all(STATE_DIR);
            let _ = fs::write(&state, cur);
        }
        write(&dev_dir.join("driver/unbind"), &addr.to_string())?;
    }
    write(&dev_dir.join("driver_override"), driver)?;
    write(Path::new("/sys/bus/pci/drivers_probe"), &addr.to_string())?;
    let now = DeviceInfo::read(addr)?;
    if now.driver.as_deref() != Some(driver) {
        return Err(msg(format!(
            "{addr}: {driver} did not take the device (now: {}); see `dmesg | tail`",
            now.driver.as_deref().unwrap_or("no driver")
        )));
    }
    let was = info.driver.as_deref().unwrap_or("no driver");
    match now.iommu_group {
        Some(g) if driver == "vfio-pci" => {
            println!("{addr}: bound to {driver} (was {was}), IOMMU group {g}: /dev/vfio/{g}")
        }
        _ => println!("{addr}: bound to {driver} (was {was})"),
    }
    Ok(())
}

/// `zcnic unbind ADDR`: release the device and give it back to the driver it had.
pub fn unbind(addr: &PciAddr) -> Result<(), ToolError> {
    let info = DeviceInfo::read(addr)?;
    let dev_dir = DeviceInfo::sysfs_dir(addr);
    if info.driver.is_some() {
        write(&dev_dir.join("driver/unbind"), &addr.to_string())?;
    }
    write(&dev_dir.join("driver_override"), "\n")?;
    let state = state_file(addr);
    let original = fs::read_to_string(&state)
        .ok()
        .map(|s| s.trim().to_string());
    let _ = fs::remove_file(&state);
    match original {
        Some(orig) if Path::new(DRIVERS).join(&orig).exists() => {
            write(
                &Path::new(DRIVERS).join(&orig).join("bind"),
                &addr.to_string(),
            )?;
            println!("{addr}: released and given back to {orig}");
        }
        Some(orig) => {
            return Err(msg(format!(
                "{addr}: released; its driver {orig} is not loaded: run `modprobe {orig}`"
            )))
        }
        None => {
            write(Path::new("/sys/bus/pci/drivers_probe"), &addr.to_string())?;
            let now = DeviceInfo::read(addr)?;
            println!(
                "{addr}: released (now: {})",
                now.driver.as_deref().unwrap_or("no driver")
            );
        }
    }
    Ok(())
}
