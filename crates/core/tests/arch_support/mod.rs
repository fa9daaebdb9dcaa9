//! Test doubles shared by the arch backend tests.

use hwbreak_core::arch::{DebugRegs, Reg};
use std::collections::BTreeMap;

/// A debug register file that behaves like plain storage and logs every write
/// in order, so a test can check both the final values and the write order.
#[derive(Debug, Default, Clone)]
pub struct RecordingRegs {
    values: BTreeMap<Reg, u64>,
    /// Every write, oldest first.
    pub log: Vec<(Reg, u64)>,
}

impl RecordingRegs {
    /// An empty register file (every register reads as zero).
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the write log, keep the values.
    #[allow(dead_code)]
    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    /// The registers written, in order, without values.
    #[allow(dead_code)]
    pub fn written(&self) -> Vec<Reg> {
        self.log.iter().map(|(r, _)| *r).collect()
    }
}

impl DebugRegs for RecordingRegs {
    fn read(&self, r: Reg) -> u64 {
        self.values.get(&r).copied().unwrap_or(0)
    }

    fn write(&mut self, r: Reg, v: u64) {
        self.values.insert(r, v);
        self.log.push((r, v));
    }
}
