use std::time::Duration;
use zcnic_qemu::*;
fn spec(name: &str, script: &str, secs: u64, iommu: bool, nics: Vec<Nic>) -> GuestSpec {
    GuestSpec {
        nics,
        script: script.into(),
        iommu,
        timeout: Duration::from_secs(secs),
        echo: false,
        name: name.into(),
    }
}
fn main() {
    println!("avail: {:?}", qemu_available());
    let r = run(&spec(
        "exit3",
        "echo hello; echo data > /results/x; exit 3",
        120,
        false,
        vec![],
    ));
    match r {
        Ok(r) => println!(
            "exit3: code {} boot {:?} total {:?} results {:?} pcaps {:?}",
            r.exit_code,
            r.boot_time,
            r.total_time,
            std::fs::read_dir(&r.results)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect::<Vec<_>>(),
            r.pcaps
        ),
        Err(e) => println!("exit3 ERR {e}"),
    }
    let r = run(&spec("hang", "echo hanging; sleep 1000", 25, false, vec![]));
    match r {
        Ok(r) => println!("hang: unexpected ok {}", r.exit_code),
        Err(e) => println!("hang ERR {e}"),
    }
    let r = run(&spec(
        "panic",
        "echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger",
        120,
        false,
        vec![],
    ));
    match r {
        Ok(r) => println!("panic: unexpected ok {}", r.exit_code),
        Err(e) => println!("panic ERR {e}"),
    }
    let r = run(&spec(
        "badmodel",
        "true",
        60,
        false,
        vec![Nic::new("nosuchnic", 0, false)],
    ));
    match r {
        Ok(r) => println!("badmodel: unexpected ok {}", r.exit_code),
        Err(e) => println!("badmodel ERR {e}"),
    }
    let r = run(&spec("virtio", "modload virtio_net && ls /sys/class/net && cat /sys/bus/pci/devices/0000:00:02.0/device /sys/bus/pci/devices/0000:00:03.0/device", 120, true, vec![Nic::new("virtio-net-pci,disable-legacy=on,iommu_platform=on", 1, true), Nic::new("e1000", 2, false)]));
    match r {
        Ok(r) => println!(
            "virtio: code {} total {:?}\n{}",
            r.exit_code,
            r.total_time,
            r.console
                .lines()
                .skip_while(|l| !l.contains("scenario start"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        Err(e) => println!("virtio ERR {e}"),
    }
}
