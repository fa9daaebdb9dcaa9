//! hwbreak-sim (in progress): hardware models first.
#![warn(missing_docs)]
pub mod hw;
pub mod machine;
pub mod program;
