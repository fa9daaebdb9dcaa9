//! hwbreak-linux: hardware breakpoints on Linux processes (owner: the linux work).

pub mod symbols;
