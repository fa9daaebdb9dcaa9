//! # hwbreak-core: the hardware-breakpoint layer
//!
//! A CPU has a few debug registers; debuggers, tracers and profilers all want
//! them. This crate shares them the way Linux's hw-breakpoint layer does:
//! breakpoints are **booked** ([`slots`]), then **installed** ([`install`]),
//! then they **fire** ([`dispatch`]), then they are **delivered** ([`events`],
//! callbacks). [`layer`] is the public API over those four steps.
//!
//! It is `no_std` + `alloc`: no I/O, no OS calls, no threads. Everything it
//! needs from the world comes through the [`Machine`] trait.
//!
//! ```
//! use hwbreak_core::{attr::BpAttr, arch::x86_64::X86_64, arch::Arch};
//! // Can an x86-64 CPU watch 4 bytes at 0x1002? No: DR7 needs natural alignment.
//! assert!(X86_64::default().parse(&BpAttr::write(0x1002, 4)).is_err());
//! ```
//!
//! Register a wide write watch on a two-CPU machine, then let CPU 1's
//! hardware report a hit (x86 DR6.B0) and see it delivered:
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use hwbreak_core::arch::{x86_64::X86_64, DebugRegs, RawStatus, Reg};
//! use hwbreak_core::layer::{Layer, Request};
//! use hwbreak_core::{BpAttr, CpuId, Machine, TaskId, Target};
//!
//! /// One register file per CPU; every CPU online; no tasks.
//! struct Tiny(Vec<Regs>);
//! #[derive(Default)]
//! struct Regs(BTreeMap<Reg, u64>);
//! impl DebugRegs for Regs {
//!     fn read(&self, r: Reg) -> u64 { self.0.get(&r).copied().unwrap_or(0) }
//!     fn write(&mut self, r: Reg, v: u64) { self.0.insert(r, v); }
//! }
//! impl Machine for Tiny {
//!     fn possible_cpus(&self) -> usize { self.0.len() }
//!     fn is_online(&self, _: CpuId) -> bool { true }
//!     fn regs(&mut self, cpu: CpuId) -> &mut dyn DebugRegs { &mut self.0[cpu.idx()] }
//!     fn current(&self, _: CpuId) -> Option<TaskId> { None }
//!     fn set_single_step(&mut self, _: CpuId, _: bool) {}
//!     fn now(&self) -> u64 { 0 }
//! }
//!
//! let mut m = Tiny(vec![Regs::default(), Regs::default()]);
//! let layer = Layer::new(Box::new(X86_64::default()), 2, 64);
//! let hits = Arc::new(AtomicU64::new(0));
//! let h = hits.clone();
//! let req = Request::new(BpAttr::write(0x7000, 8), Target::AllCpus)
//!     .cookie(42)
//!     .callback(move |hit| { assert_eq!(hit.cookie, 42); h.fetch_add(1, Ordering::SeqCst); });
//! let id = layer.register(&mut m, req)?;
//! // Both CPUs got DR0 = 0x7000 and DR7.L0.
//! assert_eq!(m.0[1].read(Reg::Addr(hwbreak_core::arch::Pool::Data, 0)), 0x7000);
//! assert_eq!(m.0[1].read(Reg::Control) & 1, 1);
//!
//! let d = layer.handle_exception(&mut m, CpuId(1), &RawStatus::X86 { dr6: 0b1, ip: 0x40_1234 });
//! assert_eq!(d.delivered, 1);
//! assert_eq!(hits.load(Ordering::SeqCst), 1);
//! assert_eq!(layer.hits(id)?, 1);
//!
//! layer.unregister(&mut m, id)?; // synchronous: no callback after this
//! assert_eq!(m.0[1].read(Reg::Control) & 1, 0);
//! # Ok::<(), hwbreak_core::Error>(())
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod arch;
pub mod attr;
pub mod bp;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod fanout;
pub mod install;
pub mod layer;
pub mod machine;
pub mod slots;
pub mod target;

pub use attr::{Access, BpAttr};
pub use bp::BpId;
pub use error::Error;
pub use machine::Machine;
pub use target::{CpuId, Target, TaskId};
