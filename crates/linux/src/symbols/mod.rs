//! Names in, names out: resolve variables to addresses and IPs to frames (owner: the symbols work).
