//! Shared pieces of zcnic's integration tests: a thread that plays an e1000 against
//! [`zcnic::FakeBar`] + [`zcnic::FakeDma`], and helpers for the QEMU suite.

pub mod adversary;
pub mod datapath;
pub mod fake_e1000;
pub mod fake_virtio;
pub mod qemu_suite;
