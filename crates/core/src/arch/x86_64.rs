//! TODO: filled by the arch work.
