//! Shared helpers for the simulator's integration tests.
#![allow(dead_code)]

use hwbreak_core::arch::Pool;
use hwbreak_core::{Access, BpAttr};
use hwbreak_sim::hw::{PowerHw, PowerMode};
use hwbreak_sim::Sim;

/// Which machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    X86,
    Arm64,
    Power9,
    Power10,
}

pub const ALL: [Kind; 4] = [Kind::X86, Kind::Arm64, Kind::Power9, Kind::Power10];

pub fn sim(kind: Kind, cpus: usize, seed: u64) -> Sim {
    match kind {
        Kind::X86 => Sim::x86(cpus, seed),
        Kind::Arm64 => Sim::arm64(cpus, seed),
        Kind::Power9 => Sim::power(cpus, seed),
        Kind::Power10 => Sim::power_with(
            PowerHw {
                mode: PowerMode::Dawr {
                    slots: 2,
                    power10: true,
                },
            },
            cpus,
            seed,
        ),
    }
    .expect("valid machine")
}

/// Data slots per CPU.
pub fn data_slots(sim: &Sim) -> usize {
    sim.hw.hw().slots(Pool::Data)
}

/// A write watch every arch can encode exactly (8 aligned bytes).
pub fn watch(addr: u64) -> BpAttr {
    BpAttr::write(addr, 8)
}

/// The sample count in the layer's event rings (drains them).
pub fn drain_samples(sim: &Sim) -> usize {
    let mut n = 0;
    sim.layer.drain_events(&mut |_, r| {
        if matches!(r, hwbreak_core::events::Record::Sample(_)) {
            n += 1
        }
    });
    n
}

pub const W: Access = Access::Write;
pub const R: Access = Access::Read;
