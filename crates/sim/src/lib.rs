//! hwbreak-sim (owner: the simulator work).
