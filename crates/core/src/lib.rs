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
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod arch;
pub mod attr;
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
pub use error::Error;
pub use machine::Machine;
pub use target::{CpuId, Target, TaskId};

/// A registered breakpoint's identity. Never reused within one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BpId(pub u32);
