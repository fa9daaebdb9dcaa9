//! x86-64: four debug address registers DR0–DR3, shared by instruction and
//! data breakpoints, controlled by DR7 and reported in DR6.
//!
//! Rules, as the hardware and Linux's `arch/x86/kernel/hw_breakpoint.c`
//! (`arch_build_bp_info`, `hw_breakpoint_arch_parse`) apply them:
//!
//! * **Slots.** Four, in one pool ([`Pool::Data`]) for both kinds
//!   (`CONFIG_HAVE_MIXED_BREAKPOINTS_REGS`); `slots(Pool::Inst)` is 0.
//! * **Access.** Write (RW=01), read-or-write (RW=11), execute (RW=00).
//!   There is no read-only watchpoint: RW=10 means I/O ports, not memory.
//! * **Length.** 1, 2, 4 or 8 bytes, encoded in DR7 LEN as 00, 01, 11, 10,
//!   and the address must be naturally aligned. Execute breakpoints always
//!   use LEN=00. We accept an execute length of 1 (our convention, see
//!   [`BpAttr::exec`]) and of 8, which is `sizeof(long)`, the only length
//!   the kernel's perf ABI takes for `HW_BREAKPOINT_X`; both are normalised
//!   to a 1-byte breakpoint. Any other execute length is refused, as the
//!   kernel refuses it, so nobody mistakes it for an instruction range.
//! * **AMD address mask** (`X86_FEATURE_BPEXT`, family 15h/16h and later):
//!   a data watch of a power-of-two length above 8, aligned to that length,
//!   is programmed as LEN=00 plus a mask of `len - 1` in the slot's
//!   DRn_ADDR_MASK MSR, represented here as `Reg::Ctrl(Pool::Data, n)`. The
//!   MSR holds 32 mask bits, so ranges go up to 4 GiB. Only when
//!   [`X86_64::amd_addr_mask`] is set; the kernel answers `EOPNOTSUPP`
//!   otherwise.
//! * **Address space.** A range must not wrap. A range that is not wholly
//!   in the lower canonical half (below `0x0000_8000_0000_0000`, 4-level
//!   paging) touches the kernel half or a non-canonical hole and needs
//!   [`BpAttr::privileged`].
//! * **Trigger.** Data breakpoints are traps: reported after the access,
//!   RIP at the next instruction. Execute breakpoints are faults: reported
//!   before the instruction runs, and the CPU makes progress by resuming
//!   with RFLAGS.RF set (see [`Arch::resume_flags`]), so x86 never needs
//!   the disable/step/re-enable protocol.
//! * **DR6.** B0–B3 (bits 0–3) say which comparator matched; BS (bit 14)
//!   says a single step completed. The SDM (vol. 3, 17.2.3) warns that Bn
//!   may be set for a breakpoint that is not enabled in DR7, so `decode`
//!   keeps only the bits of enabled slots.
//!
//! [`BpAttr::exec`]: crate::attr::BpAttr::exec
//! [`BpAttr::privileged`]: crate::attr::BpAttr::privileged

use super::{
    Arch, ArchBp, ArchError, DebugRegs, Decoded, Pool, RawStatus, Reg, ResumeFlags, Trigger,
};
use crate::attr::{Access, BpAttr};

const NAME: &str = "x86-64";

/// Number of debug address registers (DR0–DR3).
pub const NUM_SLOTS: usize = 4;

/// DR7 RW field: instruction execution.
pub const RW_EXEC: u64 = 0b00;
/// DR7 RW field: data writes.
pub const RW_WRITE: u64 = 0b01;
/// DR7 RW field: data reads or writes.
pub const RW_READ_WRITE: u64 = 0b11;

/// DR7 LEN field for 1 byte (and for every execute breakpoint).
pub const LEN_1: u64 = 0b00;
/// DR7 LEN field for 2 bytes.
pub const LEN_2: u64 = 0b01;
/// DR7 LEN field for 8 bytes (x86-64 only).
pub const LEN_8: u64 = 0b10;
/// DR7 LEN field for 4 bytes.
pub const LEN_4: u64 = 0b11;

/// DR6 B0: DR0 matched. B1–B3 follow at bits 1–3.
pub const DR6_B0: u64 = 1 << 0;
/// DR6 BS: a single step completed.
pub const DR6_BS: u64 = 1 << 14;

/// First address of the kernel half / non-canonical hole (4-level paging).
pub const USER_TOP: u64 = 0x0000_8000_0000_0000;

/// Largest AMD address-mask range: the mask MSR has 32 bits.
pub const AMD_MASK_MAX_LEN: u64 = 1 << 32;

/// DR7 local-enable bit Ln for slot `slot`.
pub fn dr7_local_enable(slot: usize) -> u64 {
    1 << (2 * slot)
}

/// DR7 global-enable bit Gn for slot `slot`.
pub fn dr7_global_enable(slot: usize) -> u64 {
    1 << (2 * slot + 1)
}

/// Shift of slot `slot`'s 4-bit RW/LEN field in DR7 (RW low, LEN high).
pub fn dr7_field_shift(slot: usize) -> u32 {
    16 + 4 * slot as u32
}

/// Every DR7 bit that belongs to slot `slot`: Ln, Gn, RWn and LENn (the
/// kernel's `dr7_masks[]`).
pub fn dr7_slot_mask(slot: usize) -> u64 {
    dr7_local_enable(slot) | dr7_global_enable(slot) | (0xf << dr7_field_shift(slot))
}

/// The DR7 bits that enable `bp` in slot `slot`: Ln plus its RW/LEN field.
pub fn dr7_bits(slot: usize, bp: &ArchBp) -> u64 {
    dr7_local_enable(slot) | ((bp.ctrl & 0xf) << dr7_field_shift(slot))
}

/// Bytes a DR7 LEN field covers.
pub fn len_field_bytes(len_field: u64) -> u64 {
    match len_field & 0b11 {
        LEN_1 => 1,
        LEN_2 => 2,
        LEN_4 => 4,
        _ => 8,
    }
}

/// The x86-64 backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct X86_64 {
    /// The CPU has AMD's breakpoint address-mask extension (CPUID
    /// 8000_0001h ECX bit 26, `X86_FEATURE_BPEXT`): aligned power-of-two
    /// data ranges longer than 8 bytes. Off by default (Intel CPUs and
    /// older AMD ones do not have it).
    pub amd_addr_mask: bool,
}

impl X86_64 {
    /// A CPU model with the AMD address-mask extension.
    pub fn with_amd_addr_mask() -> Self {
        X86_64 {
            amd_addr_mask: true,
        }
    }

    /// The DR7 LEN field for a data length of 1, 2, 4 or 8 bytes.
    fn len_field(len: u64) -> Option<u64> {
        match len {
            1 => Some(LEN_1),
            2 => Some(LEN_2),
            4 => Some(LEN_4),
            8 => Some(LEN_8),
            _ => None,
        }
    }

    fn check_user(attr: &BpAttr, addr: u64, len: u64) -> Result<(), ArchError> {
        let beyond_user = !matches!(addr.checked_add(len), Some(end) if end <= USER_TOP);
        if !attr.privileged && beyond_user {
            return Err(ArchError::KernelAddress { addr });
        }
        Ok(())
    }
}

impl Arch for X86_64 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn slots(&self, pool: Pool) -> usize {
        match pool {
            Pool::Inst => 0,
            Pool::Data => NUM_SLOTS,
        }
    }

    fn parse(&self, attr: &BpAttr) -> Result<ArchBp, ArchError> {
        let rw = match attr.access {
            Access::Read => {
                return Err(ArchError::BadAccess {
                    arch: NAME,
                    access: Access::Read,
                    hint: "x86 has no read-only watchpoint (DR7 RW=10 means I/O ports); use `rw` (read or write) and ignore the writes",
                })
            }
            Access::Write => RW_WRITE,
            Access::ReadWrite => RW_READ_WRITE,
            Access::Execute => RW_EXEC,
        };

        if attr.access == Access::Execute {
            if attr.len != 1 && attr.len != 8 {
                return Err(ArchError::BadLength {
                    arch: NAME,
                    len: attr.len,
                    rule: "an execute breakpoint covers one instruction start (DR7 LEN=00); give length 1 (or 8, the kernel's sizeof(long) convention); instruction ranges are not supported",
                });
            }
            // Normalised: the comparator matches the first byte of an instruction.
            Self::check_user(attr, attr.addr, 1)?;
            return Ok(ArchBp {
                pool: Pool::Data,
                hw_addr: attr.addr,
                hw_len: 1,
                req_addr: attr.addr,
                req_len: 1,
                access: Access::Execute,
                ctrl: RW_EXEC | (LEN_1 << 2),
                trigger: Trigger::Before,
            });
        }

        // Data watchpoint: length first (an encoding must exist), then the range.
        let len_field = match Self::len_field(attr.len) {
            Some(f) => f,
            None if attr.len > 8 && attr.len.is_power_of_two() && attr.len <= AMD_MASK_MAX_LEN => {
                if !self.amd_addr_mask {
                    return Err(ArchError::BadLength {
                        arch: NAME,
                        len: attr.len,
                        rule: "DR7 encodes 1, 2, 4 or 8 bytes; longer power-of-two ranges need the AMD address-mask extension (BPEXT), which this CPU model lacks; split the range into 8-byte watches",
                    });
                }
                // Address-mask range: LEN=00 with mask = len - 1.
                LEN_1
            }
            None => {
                return Err(ArchError::BadLength {
                    arch: NAME,
                    len: attr.len,
                    rule: if self.amd_addr_mask {
                        "DR7 encodes 1, 2, 4 or 8 bytes, and the AMD address mask a power of two up to 4 GiB; round the length up to one of those"
                    } else {
                        "DR7 encodes 1, 2, 4 or 8 bytes; round the length up to one of those or split the watch"
                    },
                })
            }
        };
        if attr.addr.checked_add(attr.len - 1).is_none() {
            return Err(ArchError::Wraps {
                addr: attr.addr,
                len: attr.len,
            });
        }
        if attr.addr & (attr.len - 1) != 0 {
            return Err(ArchError::Unaligned {
                arch: NAME,
                addr: attr.addr,
                len: attr.len,
                align: attr.len,
            });
        }
        Self::check_user(attr, attr.addr, attr.len)?;
        Ok(ArchBp {
            pool: Pool::Data,
            hw_addr: attr.addr,
            hw_len: attr.len,
            req_addr: attr.addr,
            req_len: attr.len,
            access: attr.access,
            ctrl: rw | (len_field << 2),
            trigger: Trigger::After,
        })
    }

    fn install(&self, regs: &mut dyn DebugRegs, slot: usize, bp: &ArchBp) {
        debug_assert!(slot < NUM_SLOTS, "x86 has DR0-DR3 only");
        regs.write(Reg::Addr(Pool::Data, slot as u8), bp.hw_addr);
        if self.amd_addr_mask {
            // The mask before DR7: the slot is never armed with another slot's shape.
            let mask = if bp.hw_len > 8 { bp.hw_len - 1 } else { 0 };
            regs.write(Reg::Ctrl(Pool::Data, slot as u8), mask);
        }
        let dr7 = regs.read(Reg::Control) & !dr7_slot_mask(slot);
        regs.write(Reg::Control, dr7 | dr7_bits(slot, bp));
    }

    fn uninstall(&self, regs: &mut dyn DebugRegs, pool: Pool, slot: usize) {
        debug_assert_eq!(pool, Pool::Data, "x86 books every breakpoint in Pool::Data");
        debug_assert!(slot < NUM_SLOTS, "x86 has DR0-DR3 only");
        // DR7 first, so the comparator is off before DRn changes under it.
        let dr7 = regs.read(Reg::Control) & !dr7_slot_mask(slot);
        regs.write(Reg::Control, dr7);
        regs.write(Reg::Addr(Pool::Data, slot as u8), 0);
        if self.amd_addr_mask {
            regs.write(Reg::Ctrl(Pool::Data, slot as u8), 0);
        }
    }

    fn decode(
        &self,
        status: &RawStatus,
        regs: &dyn DebugRegs,
        _installed: &dyn Fn(Pool, usize) -> Option<ArchBp>,
    ) -> Decoded {
        let RawStatus::X86 { dr6, ip } = *status else {
            return Decoded::default();
        };
        let dr7 = regs.read(Reg::Control);
        let mut hits = 0u32;
        for slot in 0..NUM_SLOTS {
            let enabled = dr7 & (dr7_local_enable(slot) | dr7_global_enable(slot)) != 0;
            if dr6 & (DR6_B0 << slot) != 0 && enabled {
                hits |= 1 << slot;
            }
        }
        Decoded {
            hits: [0, hits],
            step: dr6 & DR6_BS != 0,
            addr: None,
            len: 0,
            ip,
        }
    }

    fn needs_step_over(&self, _bp: &ArchBp) -> bool {
        // Data hits are reported after the access; execute faults resume with RF.
        false
    }

    fn resume_flags(&self, bp: &ArchBp) -> ResumeFlags {
        ResumeFlags {
            resume_flag: bp.access == Access::Execute,
        }
    }
}
