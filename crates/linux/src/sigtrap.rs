//! Synchronous in-process callbacks (TODO: being filled in).
