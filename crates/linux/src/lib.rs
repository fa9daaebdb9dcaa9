//! hwbreak-linux (owner: the linux work).
