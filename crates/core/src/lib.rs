//! # hwbreak-core: the hardware-breakpoint layer
//!
//! A CPU has a few debug registers; debuggers, tracers and profilers all want
//! them. This crate shares them the way Linux's hw-breakpoint layer does: a
//! **request** ([`layer`]) is **booked** ([`slots`], and [`fanout`] for a
//! request on every CPU), then **installed** ([`install`]), then it **fires**
//! ([`dispatch`]), then it is **delivered** (the callback, and a record in
//! [`events`]). [`bp`] holds what every stage shares about one breakpoint:
//! its id, its life state (live, dying, deliveries in flight), [`bp::Hit`]
//! and [`bp::Callback`].
//!
//! **What it owns.** The rules of sharing: which breakpoint may have a slot
//! (the booking rule of `kernel/events/hw_breakpoint.c`), which register
//! holds which breakpoint on which CPU, what a debug exception means and to
//! whom it is delivered, the arch encodings ([`arch`]: x86-64, arm64, POWER),
//! and synchronous unregister (no callback after `unregister` returns).
//!
//! **What it must not do.** Reach past the [`Machine`] trait: no I/O, no OS
//! calls, no threads, no `unsafe` (`no_std` + `alloc`). Allocate or block in
//! dispatch or on the debugger path. Depend on a machine's optional
//! capabilities ([`machine`]: single-step) or on the debugger path (cargo
//! feature `debugger`, on by default) outside the code that asks for them.
//!
//! ## Modules and their imports
//!
//! A module imports exactly what its row lists (through `crate::` paths;
//! a root re-export such as `crate::BpId` counts as its module), and only
//! rows below its own: imports follow the hit's path, request → book →
//! install → fire → deliver, then the vocabulary every stage speaks. The
//! one look-back is fire *reading* the table install wrote (which
//! breakpoint sits in the slot that fired); install never imports dispatch,
//! so there is no cycle. `tests/module_dag.rs` reads this table and fails on
//! an import it does not list, a listed import that is gone, an import of a
//! row above (other than that look-back), a cycle, and a module missing
//! from it.
//!
//! <!-- module-dag -->
//! ```text
//! module    stage       imports
//! layer     request     slots fanout install dispatch events machine error bp arch attr target
//! slots     book        error arch target
//! fanout    book        -
//! install   install     machine bp arch target
//! dispatch  fire        install events machine bp arch target
//! events    deliver     bp target
//! machine   vocabulary  arch ds target
//! ds        vocabulary  target
//! error     vocabulary  bp arch target
//! bp        vocabulary  target
//! arch      vocabulary  attr
//! attr      vocabulary  -
//! target    vocabulary  -
//! ```
//! <!-- /module-dag -->
//!
//! [`ds`] stands beside the path: the debug store (BTS and PEBS buffers) a
//! machine hands out as its optional `debug_store` capability, a leaf that
//! imports only [`target`].
//!
//! Inside [`layer`], one file per job: the API, the scheduling hooks,
//! hotplug, the debugger path and snapshots, all methods of one
//! [`layer::Layer`].
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
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod arch;
pub mod attr;
pub mod bp;
pub mod dispatch;
pub mod ds;
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
pub use machine::{Machine, SingleStep};
pub use target::{CpuId, Target, TaskId};
