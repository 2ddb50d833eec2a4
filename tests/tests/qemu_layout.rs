//! Message framing on a real device (issue 19 part 5): a legacy virtio-net with
//! `any_layout=off`, so QEMU withholds VIRTIO_F_ANY_LAYOUT as VirtualBox does and zcnic
//! gives each frame's header a descriptor of its own. QEMU would take either layout, so
//! this checks that the two-descriptor chains carry frames byte for byte both ways; the
//! fake device (`virtio_layout.rs`) is what rejects a shared header.

use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{
    assert_ceiling_frames, assert_leg_received, assert_pktgen_sequence, boot, dump_leg, figure,
    guest_slot, nic_mac, read_pcap,
};

const LEGACY: &str = "virtio-net-pci,disable-modern=on,any_layout=off";
const N: usize = 20_000;
const CEILING: usize = 5_000;
const M: usize = 10_000;

#[test]
fn legacy_virtio_without_any_layout_sends_and_receives_byte_exact() {
    let Some(_slot) = guest_slot("legacy_virtio_without_any_layout_sends_and_receives_byte_exact")
    else {
        return;
    };
    let (virtio, e1000) = ("0000:00:02.0", "0000:00:03.0");
    let script = format!(
        "zcnic bind {virtio}\nzcnic bind {e1000}\n\
         zcnic pktgen {virtio} --count {N} | tee /results/tx.txt\n\
         zcnic pktgen {virtio} --ceiling --count {CEILING} | tee /results/ceiling.txt\n{}",
        dump_leg(e1000, virtio, "rx", M, "", "--stream 7")
    );
    let nics = vec![Nic::new(LEGACY, 0, true), Nic::new("e1000", 0, false)];
    let run = boot("virtio-layout", nics, &script);
    let out = std::fs::read_to_string(run.results.join("tx.txt")).unwrap();
    assert!(
        out.contains("virtio-net legacy, header apart"),
        "the header should have its own descriptor:\n{out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains(": sent "))
        .unwrap_or_default();
    assert_eq!(figure(line, "sent"), Some(N as u64), "{line}");
    let out = std::fs::read_to_string(run.results.join("ceiling.txt")).unwrap();
    let line = out
        .lines()
        .find(|l| l.contains(": sent "))
        .unwrap_or_default();
    assert_eq!(figure(line, "sent"), Some(CEILING as u64), "{line}");
    // The virtio NIC's netdev also saw the e1000's frames of the receive leg.
    let frames: Vec<Vec<u8>> = read_pcap(run.pcaps[0].as_ref().expect("a pcap"))
        .into_iter()
        .filter(|f| f.len() >= 12 && f[6..12] == nic_mac(0))
        .collect();
    assert_eq!(frames.len(), N + CEILING, "generated, then re-posted");
    assert_pktgen_sequence(&frames[..N], N, 60, nic_mac(0));
    assert_ceiling_frames(&frames[N..], CEILING, 60, nic_mac(0));
    let received = read_pcap(&run.results.join("rx.pcap"));
    assert_leg_received(received, nic_mac(1), M, 7, "e1000 to legacy virtio");
}
