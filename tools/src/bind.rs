//! `zcnic list`, `bind` and `unbind`: which NICs there are and who drives them.
//!
//! Binding follows the kernel's driver_override mechanism: unbind from the current driver,
//! name the new one in `driver_override`, and ask the PCI core to probe again. The driver
//! the device had is remembered under /run/zcnic so `unbind` can give it back.
//!
//! zcnic binds to one of two drivers, its two modes: vfio-pci when the device has an
//! IOMMU group (the IOMMU confines its DMA to zcnic's memory), uio_pci_generic otherwise
//! (no-IOMMU mode: physical addresses, and the device can reach all of memory).

use crate::inuse::{self, NicUse, Roots};
use crate::{msg, ToolError};
use std::fs;
use std::path::{Path, PathBuf};
use zcnic::platform::Mode;
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

/// The mode a device is in (bound to vfio-pci or uio_pci_generic), or else the one
/// `zcnic bind` would put it in.
pub fn mode(d: &DeviceInfo) -> Mode {
    Mode::bound(d).unwrap_or_else(|| Mode::preferred(d))
}

/// One row of `zcnic list`.
pub fn describe(d: &DeviceInfo) -> String {
    let support = match zcnic::supported(d.vendor, d.device) {
        Some(s) => format!("yes: {} {}", s.driver, s.part),
        None => "no".into(),
    };
    format!(
        "{:<14}{:04x}:{:04x}      {:<16}{:<7}{:<6}{support}",
        d.addr.to_string(),
        d.vendor,
        d.device,
        d.driver.as_deref().unwrap_or("-"),
        d.iommu_group.map_or("-".into(), |g| g.to_string()),
        mode(d).name(),
    )
}

/// `zcnic list`.
pub fn list() -> Result<(), ToolError> {
    let devs = DeviceInfo::list_network()?;
    let roots = Roots::from_env();
    let rows: Vec<(String, NicUse)> = devs
        .iter()
        .map(|d| (describe(d), NicUse::read(&roots, &d.addr)))
        .collect();
    // describe() ends with the ZCNIC column at 58; it is as wide as its longest entry
    // ("yes: virtio-net legacy/transitional"), and IFACE holds any interface name
    // (IFNAMSIZ: 15 characters).
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(63) + 2;
    println!(
        "{:<14}{:<15}{:<16}{:<7}{:<6}{:<zcnic$}{:<16}STATE",
        "PCI",
        "VENDOR:DEVICE",
        "DRIVER",
        "IOMMU",
        "MODE",
        "ZCNIC",
        "IFACE",
        zcnic = width - 58
    );
    for (row, u) in &rows {
        let row = format!("{row:<width$}{:<16}{}", u.iface_column(), u.state_column());
        println!("{}", row.trim_end());
    }
    if devs.is_empty() {
        println!("(no network controllers found in /sys/bus/pci/devices)");
    }
    if devs.iter().any(|d| mode(d) == Mode::Uio) {
        println!("MODE uio: no IOMMU (uio_pci_generic): the device can DMA into all of memory");
    }
    if let Some(line) = xdp_line(&roots, zcnic::xdp::mode_hint) {
        println!("{line}");
    }
    Ok(())
}

/// The interfaces an AF_XDP port can open (`xdp:IFACE`; the kernel keeps the driver),
/// each with its driver, whether it is up and the mode `hint` expects a port to bind in
/// (`zero-copy`, `copy`; nothing where the kernel cannot say): every interface in sysfs
/// but loopback, by name. `None` when there is none. Whether the program runs in the
/// driver shows only once a port is open (pktgen's first line says, with the mode).
pub fn xdp_line(roots: &Roots, hint: impl Fn(&str) -> Option<&'static str>) -> Option<String> {
    let dir = roots.sys.join("class/net");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    let items: Vec<String> = names
        .iter()
        .map(|n| {
            let d = dir.join(n);
            let driver = zcnic::pci::link_name(&d.join("device/driver"))
                .or_else(|| {
                    // Virtual interfaces have no device: veth, bridges, … say what they are.
                    let kind = fs::read_to_string(d.join("uevent")).ok()?;
                    kind.lines()
                        .find_map(|l| l.strip_prefix("DEVTYPE=").map(str::to_string))
                })
                .unwrap_or_else(|| "virtual".into());
            let up = fs::read_to_string(d.join("flags"))
                .ok()
                .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
                .is_some_and(|f| f & 1 != 0);
            let state = if up { "up" } else { "down" };
            match hint(n) {
                Some(mode) => format!("xdp:{n} ({driver}, {state}, {mode})"),
                None => format!("xdp:{n} ({driver}, {state})"),
            }
        })
        .collect();
    (!items.is_empty())
        .then(|| format!("AF_XDP, the kernel keeps the driver: {}", items.join(", ")))
}

/// The mode `zcnic bind` puts the device in: the one `--driver` names, or the preferred
/// one. A driver that is not one of zcnic's, or vfio-pci without an IOMMU group, is
/// refused with the fix.
pub fn choose(info: &DeviceInfo, driver: Option<&str>) -> Result<Mode, ToolError> {
    let addr = info.addr;
    let mode = match driver {
        None => Mode::preferred(info),
        Some(d) => Mode::of_driver(d).ok_or_else(|| {
            msg(format!(
                "{addr}: zcnic binds NICs to vfio-pci (with an IOMMU) or uio_pci_generic (without), not `{d}`; \
                 `zcnic unbind {addr}` gives a NIC back to its kernel driver"
            ))
        })?,
    };
    if mode == Mode::Vfio && info.iommu_group.is_none() {
        return Err(msg(format!(
            "{addr} has no IOMMU group, so vfio-pci cannot take it: use `zcnic bind {addr} --driver uio_pci_generic` \
             (no-IOMMU mode), or boot with an IOMMU (intel_iommu=on or amd_iommu=on)"
        )));
    }
    Ok(mode)
}

/// `zcnic bind ADDR [--driver D] [--force]`: without `--driver`, vfio-pci when the device
/// has an IOMMU group, uio_pci_generic otherwise. A NIC the machine is using
/// ([`inuse`]) is refused unless `force`; the check comes first, so that tests can point
/// [`inuse::SYSROOT_ENV`] at a fixture.
pub fn bind(addr: &PciAddr, driver: Option<&str>, force: bool) -> Result<(), ToolError> {
    if let Some(warning) = inuse::check_bind(&NicUse::read(&Roots::from_env(), addr), addr, force)?
    {
        eprintln!("zcnic: {warning}");
    }
    let info = DeviceInfo::read(addr)?;
    let chosen = driver.is_none();
    let mode = choose(&info, driver)?;
    let driver = mode.driver();
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
    match (mode, now.iommu_group) {
        (Mode::Vfio, Some(g)) => {
            println!("{addr}: bound to {driver} (was {was}), IOMMU group {g}: /dev/vfio/{g}")
        }
        (Mode::Uio, group) => {
            let why = match group {
                None if chosen => "no IOMMU group, so ".to_string(),
                None => String::new(),
                Some(g) => format!("IOMMU group {g} unused (vfio-pci would confine the device), "),
            };
            println!(
                "{addr}: bound to {driver} (was {was}): {why}no-IOMMU mode: the device can DMA into all of memory"
            )
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

#[cfg(test)]
mod tests {

    #[test]
    fn xdp_line_names_every_interface_but_loopback() {
        let root = std::env::temp_dir().join(format!("zcnic-xdp-list-{}", std::process::id()));
        let net = root.join("sys/class/net");
        let drv = root.join("sys/bus/pci/drivers/e1000");
        fs::create_dir_all(&drv).unwrap();
        for (name, flags) in [("lo", "0x9"), ("eth0", "0x1003"), ("veth1", "0x1002")] {
            fs::create_dir_all(net.join(name)).unwrap();
            fs::write(net.join(name).join("flags"), flags).unwrap();
        }
        fs::create_dir_all(net.join("eth0/device")).unwrap();
        std::os::unix::fs::symlink(&drv, net.join("eth0/device/driver")).unwrap();
        fs::write(net.join("veth1/uevent"), "DEVTYPE=veth\nINTERFACE=veth1\n").unwrap();
        let hint = |n: &str| (n == "eth0").then_some("copy");
        let line = xdp_line(&Roots::under(&root), hint);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            line.as_deref(),
            Some(
                "AF_XDP, the kernel keeps the driver: xdp:eth0 (e1000, up, copy), xdp:veth1 (veth, down)"
            )
        );
        assert_eq!(
            xdp_line(&Roots::under(Path::new("/nonexistent")), hint),
            None
        );
    }
    use super::*;

    fn info(group: Option<u32>) -> DeviceInfo {
        DeviceInfo {
            addr: "0000:00:02.0".parse().unwrap(),
            vendor: 0x8086,
            device: 0x100e,
            class: 0x020000,
            driver: None,
            iommu_group: group,
        }
    }

    #[test]
    fn picks_vfio_with_an_iommu_group_and_uio_without() {
        assert_eq!(choose(&info(Some(4)), None).unwrap(), Mode::Vfio);
        assert_eq!(choose(&info(None), None).unwrap(), Mode::Uio);
        assert_eq!(
            choose(&info(Some(4)), Some("uio_pci_generic")).unwrap(),
            Mode::Uio
        );
        assert_eq!(mode(&info(None)), Mode::Uio);
        assert!(describe(&info(Some(4))).contains(" vfio  yes: e1000"));
    }

    #[test]
    fn refuses_vfio_without_an_iommu_group_naming_uio() {
        let e = choose(&info(None), Some("vfio-pci"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        assert!(
            e.contains("zcnic bind 0000:00:02.0 --driver uio_pci_generic"),
            "{e}"
        );
    }

    #[test]
    fn refuses_a_driver_that_is_not_zcnics() {
        let e = choose(&info(Some(4)), Some("foo")).unwrap_err().to_string();
        assert!(e.contains("not `foo`"), "{e}");
        assert!(
            e.contains("vfio-pci") && e.contains("uio_pci_generic"),
            "{e}"
        );
    }
}
