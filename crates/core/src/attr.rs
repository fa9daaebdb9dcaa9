//! Breakpoint attributes: *what* to watch, independent of any CPU.
//!
//! Lengths are in bytes (1, 2, 4, 8, ...), as in Linux since 2009: the arch
//! backend maps them to its own encodings (x86 DR7 LEN, arm64 BAS, POWER DAWR).

/// The kind of access that triggers a breakpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// Data read. Not every arch can trap reads alone (x86 cannot).
    Read,
    /// Data write.
    Write,
    /// Data read or write.
    ReadWrite,
    /// Instruction fetch (an execute breakpoint).
    Execute,
}

impl Access {
    /// Whether this is an instruction breakpoint rather than a data watchpoint.
    pub fn is_exec(self) -> bool {
        matches!(self, Access::Execute)
    }

    /// Short name as used in SPECs: `r`, `w`, `rw`, `x`.
    pub fn short(self) -> &'static str {
        match self {
            Access::Read => "r",
            Access::Write => "w",
            Access::ReadWrite => "rw",
            Access::Execute => "x",
        }
    }

    /// Whether an actual access of kind `actual` (Read or Write) matches this
    /// watch. `Execute` only matches `Execute`.
    pub fn matches(self, actual: Access) -> bool {
        match self {
            Access::ReadWrite => matches!(actual, Access::Read | Access::Write),
            a => a == actual,
        }
    }
}

/// A breakpoint request, as the consumer states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BpAttr {
    /// First byte watched.
    pub addr: u64,
    /// Bytes watched, starting at `addr`.
    pub len: u64,
    /// What access triggers it.
    pub access: Access,
    /// Registered but not armed. A disabled breakpoint still holds its slot
    /// unless it was registered with "reserve on enable".
    pub disabled: bool,
    /// The address may lie in the kernel half of the address space. Without
    /// this flag such addresses are refused.
    pub privileged: bool,
}

impl BpAttr {
    /// A new enabled, unprivileged attribute.
    pub fn new(addr: u64, len: u64, access: Access) -> Self {
        BpAttr {
            addr,
            len,
            access,
            disabled: false,
            privileged: false,
        }
    }

    /// A write watchpoint of `len` bytes at `addr`.
    pub fn write(addr: u64, len: u64) -> Self {
        Self::new(addr, len, Access::Write)
    }

    /// A read-or-write watchpoint of `len` bytes at `addr`.
    pub fn read_write(addr: u64, len: u64) -> Self {
        Self::new(addr, len, Access::ReadWrite)
    }

    /// An execute breakpoint at `addr`. The length is the arch's instruction
    /// length (`1` is accepted on every arch and normalised by the backend).
    pub fn exec(addr: u64) -> Self {
        Self::new(addr, 1, Access::Execute)
    }

    /// The same attribute, disabled.
    pub fn disabled(mut self) -> Self {
        self.disabled = true;
        self
    }

    /// The same attribute, allowed in the kernel half.
    pub fn privileged(mut self) -> Self {
        self.privileged = true;
        self
    }

    /// One past the last byte, or `None` when the range wraps the address space.
    pub fn end(&self) -> Option<u64> {
        self.addr.checked_add(self.len)
    }

    /// Whether `[addr, addr+len)` of an access overlaps the requested range.
    pub fn overlaps(&self, addr: u64, len: u64) -> bool {
        let a_end = self.addr.saturating_add(self.len);
        let b_end = addr.saturating_add(len.max(1));
        addr < a_end && self.addr < b_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_matches_both_directions_but_not_exec() {
        assert!(Access::ReadWrite.matches(Access::Read));
        assert!(Access::ReadWrite.matches(Access::Write));
        assert!(!Access::ReadWrite.matches(Access::Execute));
        assert!(!Access::Write.matches(Access::Read));
    }

    #[test]
    fn end_is_none_when_range_wraps() {
        assert_eq!(BpAttr::write(u64::MAX, 2).end(), None);
        assert_eq!(BpAttr::write(0x1000, 8).end(), Some(0x1008));
    }

    #[test]
    fn overlap_is_half_open() {
        let a = BpAttr::write(0x1000, 4);
        assert!(a.overlaps(0x1003, 1));
        assert!(!a.overlaps(0x1004, 1));
        assert!(a.overlaps(0x0ffc, 8));
        assert!(!a.overlaps(0x0ffc, 4));
    }
}
