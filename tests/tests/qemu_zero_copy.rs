//! Zero-copy transmit from application memory in a real guest: `zcnic pktgen --zero-copy`
//! puts only headers and stamp in each pool buffer and attaches the rest of the frame from
//! one registered application region, which the NIC reads in place. The host pcap must show
//! every frame byte for byte — the payload bytes included.

use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{
    assert_pktgen_sequence, boot, figure, guest_slot, nic_mac, read_pcap,
};

const N: usize = 20_000;
const SIZE: usize = 1000;

#[test]
fn zero_copy_payloads_reach_the_wire_intact_on_e1000_and_virtio() {
    let Some(_slot) = guest_slot("zero_copy_payloads_reach_the_wire_intact_on_e1000_and_virtio")
    else {
        return;
    };
    let mut script = String::new();
    for (i, name) in ["e1000", "virtio"].iter().enumerate() {
        let pci = format!("0000:00:{:02x}.0", 2 + i);
        script += &format!(
            "zcnic bind {pci}\nzcnic pktgen {pci} --zero-copy --size {SIZE} --count {N} | tee /results/{name}.txt\n"
        );
    }
    let nics = vec![
        Nic::new("e1000", 0, true),
        Nic::new(
            "virtio-net-pci,disable-legacy=on,iommu_platform=on",
            1,
            true,
        ),
    ];
    let run = boot("zero-copy", nics, &script);
    for (i, name) in ["e1000", "virtio"].iter().enumerate() {
        let out = std::fs::read_to_string(run.results.join(format!("{name}.txt"))).unwrap();
        let summary = out
            .lines()
            .find(|l| l.contains(": sent "))
            .unwrap_or_default();
        assert_eq!(figure(summary, "sent"), Some(N as u64), "{name}: {out}");
        let frames = read_pcap(run.pcaps[i].as_ref().expect("a pcap"));
        assert_pktgen_sequence(&frames, N, SIZE, nic_mac(i as u8));
    }
}
