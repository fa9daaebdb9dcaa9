//! # hwbreak-sim: a deterministic SMP machine for the hardware-breakpoint layer
//!
//! **What it owns.** A machine of 1–4096 CPUs ([`machine::SimMachine`], which
//! implements [`hwbreak_core::Machine`]) whose debug register files behave like
//! the hardware ([`hw`]: x86-64 DR0–3/DR6/DR7, arm64 BVR/BCR/WVR/WCR, POWER
//! DAWR/DAWRX and DABR), tasks running tiny [`Program`]s, a scheduler seeded
//! with ChaCha8 (same seed, same run), memory accesses and instruction
//! fetches, and CPU hotplug. [`Sim`] drives a [`hwbreak_core::layer::Layer`]
//! exactly as a kernel would: context switches call `switch_task`, exits call
//! `task_exit`, hotplug calls `cpu_online`/`cpu_offline`, and every debug
//! exception the hardware raises goes to `handle_exception`. The machine
//! offers hardware single-step as its optional [`hwbreak_core::SingleStep`]
//! capability; a test may withdraw it
//! ([`SimMachine::set_has_single_step`]) to see how the layer treats a
//! machine without one.
//!
//! **What it must not do.** Reuse the core's arch backends to decide what the
//! hardware does: the register models are written from the manuals, so a test
//! of a backend on the simulator catches encoding bugs instead of repeating them.
//! Reach into the layer past its public API, use `unsafe`, read the wall
//! clock or spawn threads: the same seed gives the same run.
//!
//! **Trap before, trap after.** An instruction runs in [`Sim::access`] /
//! [`Sim::exec`] as the hardware would: faults before it (x86 execute
//! breakpoints unless RF; every arm64 and POWER hit) enter the layer and the
//! instruction is retried, so the access only happens once the layer's
//! step-over has disabled the slot and armed single-step; traps after it
//! (x86 data hits, single-step completions) enter the layer once it is done.
//! A layer that never lets the instruction complete gets
//! [`SimError::NoProgress`], never a hang.
//!
//! ```
//! use hwbreak_core::{Access, BpAttr, CpuId, Target};
//! use hwbreak_sim::Sim;
//!
//! // 4 arm64 CPUs; a write watch on every CPU ("wide").
//! let mut sim = Sim::arm64(4, 1).unwrap();
//! let id = sim.register(BpAttr::write(0x1000, 4), Target::AllCpus).unwrap();
//! // The store traps before it happens; the layer steps over it and reports after.
//! let out = sim.access(CpuId(2), 0x1000, 4, Access::Write).unwrap();
//! assert_eq!((out.traps, out.step_traps, out.delivered), (2, 1, 1));
//! assert_eq!(sim.performed().len(), 1);
//! assert_eq!(sim.hits()[0].bp, id);
//! ```
//!
//! The README's main job is `cargo run --release --example wide -p hwbreak-sim`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod hw;
pub mod machine;
pub mod program;
pub mod sim;
pub mod trace;

pub use error::SimError;
pub use machine::{CpuFault, SimMachine, MAX_CPUS};
pub use program::{Op, Program};
pub use sim::{BpOpts, InsnOutcome, Performed, Sim, Stats, TaskState, TraceEvent};
