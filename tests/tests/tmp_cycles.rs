use zcnic_qemu::Nic;
use zcnic_tests::idle_lines::result;
use zcnic_tests::qemu_suite::{guest_slot, spec, tail};

#[test]
fn cycles() {
    let Some(_slot) = guest_slot("tmp") else {
        return;
    };
    let cpus: u32 = std::env::var("CPUS").unwrap().parse().unwrap();
    let n: u32 = std::env::var("N").unwrap().parse().unwrap();
    let s = format!(
        "for d in 0000:00:02.0 0000:00:03.0 0000:00:04.0; do zcnic bind $d; done\n\
         for d in 0000:00:03.0 0000:00:02.0 0000:00:04.0; do\n\
           date +%s >> /results/t.txt\n\
           irq_cycles $d {n} >> /results/t.txt 2>&1 || echo FAIL >> /results/t.txt\n\
         done\n\
         date +%s >> /results/t.txt\n\
         dmesg > /results/dmesg.txt\n"
    );
    let nics = vec![
        Nic::new("e1000", 0, false),
        Nic::new(
            "virtio-net-pci,disable-legacy=on,iommu_platform=on",
            0,
            false,
        ),
        Nic::new("igb", 1, false),
    ];
    let mut sp = spec("tmpcyc", nics, &s);
    sp.cpus = cpus;
    sp.timeout = std::time::Duration::from_secs(1500);
    let run = zcnic_qemu::run(&sp);
    match run {
        Ok(run) => {
            eprintln!("exit {} {}", run.exit_code, tail(&run.console, 30));
            eprintln!("{}", result(&run, "t.txt"));
        }
        Err(e) => eprintln!("ERR {e}"),
    }
}
