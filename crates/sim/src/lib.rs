//! hwbreak-sim (in progress).
#![warn(missing_docs)]
pub mod error;
pub mod hw;
pub mod machine;
pub mod program;
pub mod sim;

pub use error::SimError;
pub use program::{Op, Program};
pub use sim::{BpOpts, InsnOutcome, Performed, Sim, Stats, TaskState, TraceEvent};
