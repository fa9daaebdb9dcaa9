//! The value an x86-64 write left behind, from the writing instruction and
//! the registers at the trap.
//!
//! An x86 data breakpoint traps *after* the write, with the registers as
//! the instruction left them (`PERF_SAMPLE_REGS_USER`). For the usual
//! stores that is enough to know the bytes written without reading memory:
//! `mov [m], reg|imm` stores the register or immediate; `add`, `sub`,
//! `and`, `or`, `xor` with a register or immediate, and `inc`, `dec`,
//! `neg`, `not` (locked or not) turn the old value into the new one; a
//! `cmpxchg` stores its source when ZF says it succeeded and leaves memory
//! as it was otherwise. So a watch that knows the value before a hit knows
//! it after, hit by hit, however many hits arrive at once (the program
//! keeps running, so reading memory later shows only the latest).
//!
//! `xchg`, `xadd` and `cmpxchg` leave the value *before* the write in a
//! register instead ([`Store::before`]): the caller gets the value after a
//! hit from the next hit of the same watch.
//!
//! Anything else (the new value of `xchg` and `xadd`, whose source register
//! is overwritten,
//! string and vector stores, `adc`, bit tests, partial overlaps of a
//! read-modify-write) is [`Written::Unknown`]: the caller falls back to
//! reading memory, and never guesses.
//!
//! The instruction ends at the trap IP; its start is found by decoding
//! from each of the 15 bytes before it (the longest x86 instruction) and
//! keeping the instruction that ends exactly at the IP and writes memory
//! overlapping the watched range, computed from the registers. Decoding
//! uses `iced-x86`.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// x86-64 `PERF_REG_X86_*` numbers of the general-purpose registers.
fn perf_reg(r: Register) -> Option<u32> {
    let full = r.full_register();
    Some(match full {
        Register::RAX => 0,
        Register::RBX => 1,
        Register::RCX => 2,
        Register::RDX => 3,
        Register::RSI => 4,
        Register::RDI => 5,
        Register::RBP => 6,
        Register::RSP => 7,
        Register::RIP => 8,
        Register::R8 => 16,
        Register::R9 => 17,
        Register::R10 => 18,
        Register::R11 => 19,
        Register::R12 => 20,
        Register::R13 => 21,
        Register::R14 => 22,
        Register::R15 => 23,
        _ => return None,
    })
}

/// `PERF_REG_X86_FLAGS`.
const PERF_REG_FLAGS: u32 = 9;
/// ZF in RFLAGS.
const ZF: u64 = 1 << 6;

/// The user registers of a sample: `regs` in `PERF_REG_X86_*` bit order of `mask`.
#[derive(Debug, Clone, Copy)]
pub struct Regs<'a> {
    /// Register values.
    pub regs: &'a [u64],
    /// Which registers `regs` holds.
    pub mask: u64,
}

impl Regs<'_> {
    fn get(&self, n: u32) -> Option<u64> {
        crate::record::user_reg(self.regs, self.mask, n)
    }

    /// The value of a general-purpose register operand, zero-extended from its size.
    fn operand(&self, r: Register) -> Option<u64> {
        let v = self.get(perf_reg(r)?)?;
        // AH, BH, CH, DH: bits 8-15 of the full register.
        if matches!(r, Register::AH | Register::BH | Register::CH | Register::DH) {
            return Some((v >> 8) & 0xff);
        }
        Some(truncate(v, r.size()))
    }
}

/// Every register an x86-64 store can name: what `PERF_SAMPLE_REGS_USER`
/// must record for `written` to work (the same set as
/// [`crate::watch::X86_64_REGS_USER_MASK`]).
pub const REGS_MASK: u64 = crate::watch::X86_64_REGS_USER_MASK;

fn truncate(v: u64, size: usize) -> u64 {
    if size >= 8 {
        v
    } else {
        v & ((1u64 << (size * 8)) - 1)
    }
}

/// What a write did to the watched bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The watched bytes now hold this value (little-endian, `len` bytes).
    Value(u64),
    /// The instruction or its operands could not be followed.
    Unknown,
}

/// A decoded writing instruction, kept per IP: decoding is the costly part.
#[derive(Debug, Clone)]
pub struct Store {
    insn: Instruction,
}

impl Store {
    /// Find the writing instruction that ends at `ip`. `code` holds the
    /// bytes `[ip - code.len(), ip)`. With `boundary`, `code[0]` is known
    /// to start an instruction (a function's start): decoding runs from
    /// there. Without it, decoding runs from each of the first 16 bytes and
    /// the instruction most of those runs end at `ip` with wins (x86
    /// decoding falls into step with the real instruction boundaries within
    /// a few instructions); give 64 bytes or more. `None` unless that
    /// instruction is one of the writes followed (see the module docs).
    /// The result depends only on the code: cache it per IP.
    pub fn find(code: &[u8], ip: u64, boundary: bool) -> Option<Store> {
        let base = ip.checked_sub(code.len() as u64)?;
        let starts = if boundary { 1 } else { code.len().min(16) };
        // (instruction start, votes)
        let mut votes: Vec<(u64, Instruction, usize)> = Vec::new();
        for start in 0..starts {
            if let Some(insn) = last_before(&code[start..], base + start as u64, ip) {
                match votes.iter_mut().find(|v| v.0 == insn.ip()) {
                    Some(v) => v.2 += 1,
                    None => votes.push((insn.ip(), insn, 1)),
                }
            }
        }
        let best = votes.iter().map(|v| v.2).max()?;
        let mut winners = votes.into_iter().filter(|v| v.2 == best);
        let (_, insn, _) = winners.next()?;
        if winners.next().is_some() || !writes_memory(&insn) {
            return None;
        }
        Some(Store { insn })
    }

    /// The watched bytes `[addr, addr + len)` *before* this store, when the
    /// registers after it still hold them: `xchg` and `xadd` leave the old
    /// memory value in their source register, `cmpxchg` in RAX (whether or
    /// not it succeeded). Only when the store covers the watched bytes.
    pub fn before(&self, regs: Regs<'_>, addr: u64, len: u64) -> Written {
        let i = &self.insn;
        let Some((ea, size)) = effective(i, regs) else {
            return Written::Unknown;
        };
        if len == 0 || len > 8 || ea > addr || ea.saturating_add(size) < addr.saturating_add(len) {
            return Written::Unknown;
        }
        let reg = match i.mnemonic() {
            Mnemonic::Xchg | Mnemonic::Xadd if i.op1_kind() == OpKind::Register => i.op1_register(),
            Mnemonic::Cmpxchg => match size {
                1 => Register::AL,
                2 => Register::AX,
                4 => Register::EAX,
                _ => Register::RAX,
            },
            _ => return Written::Unknown,
        };
        match regs.operand(reg) {
            Some(v) => Written::Value(truncate(v >> ((addr - ea) * 8), len as usize)),
            None => Written::Unknown,
        }
    }

    /// The instruction, as `iced-x86` decoded it.
    pub fn instruction(&self) -> &Instruction {
        &self.insn
    }

    /// The watched bytes `[addr, addr + len)` (len ≤ 8) after this store,
    /// given the registers after it and the watched value before it
    /// (`old`, if known). [`Written::Unknown`] if, under these registers,
    /// the store does not touch the watched bytes (then it is not the
    /// instruction that hit).
    pub fn written(&self, regs: Regs<'_>, addr: u64, len: u64, old: Option<u64>) -> Written {
        written(&self.insn, regs, addr, len, old)
    }
}

/// Decode `code` (at `at`) instruction after instruction; the one that ends
/// exactly at `ip`, if the run lands there.
fn last_before(code: &[u8], at: u64, ip: u64) -> Option<Instruction> {
    let mut d = Decoder::with_ip(64, code, at, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    while d.can_decode() {
        d.decode_out(&mut insn);
        if insn.is_invalid() || insn.next_ip() > ip {
            return None;
        }
        if insn.next_ip() == ip {
            return Some(insn);
        }
    }
    None
}

/// The instructions followed: plain stores and read-modify-writes whose
/// result the registers after the instruction still determine.
fn writes_memory(i: &Instruction) -> bool {
    i.op_count() >= 1
        && i.op0_kind() == OpKind::Memory
        && matches!(
            i.mnemonic(),
            Mnemonic::Mov
                | Mnemonic::Movnti
                | Mnemonic::Add
                | Mnemonic::Sub
                | Mnemonic::And
                | Mnemonic::Or
                | Mnemonic::Xor
                | Mnemonic::Inc
                | Mnemonic::Dec
                | Mnemonic::Neg
                | Mnemonic::Not
                | Mnemonic::Cmpxchg
                | Mnemonic::Xchg
                | Mnemonic::Xadd
        )
}

/// The memory operand's address and size, from the registers after the
/// instruction (none of the followed instructions changes its own base or
/// index, except a failed `cmpxchg` through RAX, which writes nothing new).
fn effective(i: &Instruction, regs: Regs<'_>) -> Option<(u64, u64)> {
    let size = i.memory_size().size() as u64;
    if size == 0
        || size > 8
        || i.segment_prefix() == Register::FS
        || i.segment_prefix() == Register::GS
    {
        return None;
    }
    let mut ea = i.memory_displacement64();
    match i.memory_base() {
        Register::None | Register::RIP | Register::EIP => {}
        b => ea = ea.wrapping_add(regs.get(perf_reg(b)?)?),
    }
    match i.memory_index() {
        Register::None => {}
        x => {
            let v = regs.get(perf_reg(x)?)?;
            ea = ea.wrapping_add(v.wrapping_mul(i.memory_index_scale() as u64));
        }
    }
    Some((ea, size))
}

fn source(i: &Instruction, regs: Regs<'_>) -> Option<u64> {
    if i.op_count() < 2 {
        return None;
    }
    match i.op1_kind() {
        OpKind::Register => regs.operand(i.op1_register()),
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Some(i.immediate(1)),
        _ => None,
    }
}

fn written(i: &Instruction, regs: Regs<'_>, addr: u64, len: u64, old: Option<u64>) -> Written {
    let Some((ea, size)) = effective(i, regs) else {
        return Written::Unknown;
    };
    if len == 0 || len > 8 || ea >= addr.saturating_add(len) || ea.saturating_add(size) <= addr {
        return Written::Unknown;
    }
    // The stored value over [ea, ea + size).
    let stored: Option<u64> = match i.mnemonic() {
        Mnemonic::Mov | Mnemonic::Movnti => source(i, regs),
        Mnemonic::Cmpxchg => {
            let flags = regs.get(PERF_REG_FLAGS);
            match flags {
                Some(f) if f & ZF != 0 => source(i, regs),
                // Failed: memory kept its value (the CPU wrote it back).
                Some(_) => return old.map_or(Written::Unknown, Written::Value),
                None => None,
            }
        }
        m => {
            // Read-modify-write: needs the old bytes of the whole operand.
            let before = old.and_then(|o| bytes_of(o, addr, len, ea, size));
            match (m, before) {
                (_, None) => None,
                (Mnemonic::Inc, Some(b)) => Some(b.wrapping_add(1)),
                (Mnemonic::Dec, Some(b)) => Some(b.wrapping_sub(1)),
                (Mnemonic::Neg, Some(b)) => Some(b.wrapping_neg()),
                (Mnemonic::Not, Some(b)) => Some(!b),
                (Mnemonic::Add, Some(b)) => source(i, regs).map(|s| b.wrapping_add(s)),
                (Mnemonic::Sub, Some(b)) => source(i, regs).map(|s| b.wrapping_sub(s)),
                (Mnemonic::And, Some(b)) => source(i, regs).map(|s| b & s),
                (Mnemonic::Or, Some(b)) => source(i, regs).map(|s| b | s),
                (Mnemonic::Xor, Some(b)) => source(i, regs).map(|s| b ^ s),
                // xchg and xadd overwrite their source register with the old
                // value: what they stored is gone from the registers.
                _ => None,
            }
        }
    };
    let Some(stored) = stored else {
        return Written::Unknown;
    };
    merge(old, addr, len, ea, size, truncate(stored, size as usize))
}

/// The `size` bytes at `ea` within the watched value `v` of `[addr, addr+len)`,
/// when they lie wholly inside it.
fn bytes_of(v: u64, addr: u64, len: u64, ea: u64, size: u64) -> Option<u64> {
    if ea < addr || ea.saturating_add(size) > addr.saturating_add(len) {
        return None;
    }
    Some(truncate(v >> ((ea - addr) * 8), size as usize))
}

/// The watched value after `size` bytes `stored` land at `ea`.
fn merge(old: Option<u64>, addr: u64, len: u64, ea: u64, size: u64, stored: u64) -> Written {
    let covers = ea <= addr && ea.saturating_add(size) >= addr.saturating_add(len);
    let mut out = match (covers, old) {
        (true, _) => 0,
        (false, Some(o)) => o,
        (false, None) => return Written::Unknown,
    };
    for k in 0..len {
        let a = addr + k;
        if a >= ea && a < ea + size {
            let byte = (stored >> ((a - ea) * 8)) & 0xff;
            out = (out & !(0xff << (k * 8))) | (byte << (k * 8));
        }
    }
    Written::Value(truncate(out, len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: u64 = 0x40_1000;
    const VAR: u64 = 0x40_6000;

    /// All 20 perf registers, zero except those given by `PERF_REG_X86_*` number.
    fn regs(set: &[(u32, u64)]) -> Vec<u64> {
        let mut v = vec![0u64; 20];
        for &(n, val) in set {
            let idx = (REGS_MASK & ((1u64 << n) - 1)).count_ones() as usize;
            v[idx] = val;
        }
        v
    }

    fn r(v: &[u64]) -> Regs<'_> {
        Regs {
            regs: v,
            mask: REGS_MASK,
        }
    }

    /// `code` assembled to end at IP, after other instructions, so that
    /// its start has to be found. Checks that the known-boundary decode
    /// finds the same instruction.
    fn find(code: &[u8], regs: &[u64], addr: u64, len: u64) -> Option<Store> {
        // Filler: `mov rax, [rdi+8]`, `add rsp, 0x28`, `nop dword [rax]`, repeated.
        let filler: &[u8] = &[
            0x48, 0x8b, 0x47, 0x08, 0x48, 0x83, 0xc4, 0x28, 0x0f, 0x1f, 0x40, 0x00,
        ];
        let mut bytes: Vec<u8> = filler
            .iter()
            .cycle()
            .take(filler.len() * 6)
            .copied()
            .collect();
        bytes.extend_from_slice(code);
        let voted = Store::find(&bytes, IP, false);
        let exact = Store::find(&bytes, IP, true);
        assert_eq!(
            voted.as_ref().map(|s| s.insn.ip()),
            exact.as_ref().map(|s| s.insn.ip()),
            "voting and a known boundary disagree"
        );
        // Only stores that touch the watched bytes under these registers.
        voted.filter(|s| {
            effective(&s.insn, r(regs)).is_some_and(|(ea, n)| ea < addr + len && ea + n > addr)
        })
    }

    /// rip-relative displacement so that `[rip + disp]` = VAR for an
    /// instruction of `len` bytes ending at IP.
    fn disp(insn_end: u64) -> [u8; 4] {
        ((VAR as i64 - insn_end as i64) as i32).to_le_bytes()
    }

    #[test]
    fn mov_from_a_register_gives_the_register() {
        // mov qword [rip+d], rax   48 89 05 d32
        let mut c = vec![0x48, 0x89, 0x05];
        c.extend(disp(IP));
        let g = regs(&[(0, 0x1122_3344_5566_7788)]);
        let s = find(&c, &g, VAR, 8).expect("found");
        assert_eq!(
            s.written(r(&g), VAR, 8, None),
            Written::Value(0x1122_3344_5566_7788)
        );
    }

    #[test]
    fn mov_of_an_immediate_into_a_base_plus_index_operand() {
        // mov dword [rbx + rcx*4 + 8], 0x2a   c7 44 8b 08 2a 00 00 00
        let c = [0xc7, 0x44, 0x8b, 0x08, 0x2a, 0, 0, 0];
        let g = regs(&[(1, VAR - 8 - 12), (2, 3)]);
        let s = find(&c, &g, VAR, 4).expect("found");
        assert_eq!(s.written(r(&g), VAR, 4, None), Written::Value(42));
        // Watching 8 bytes: the upper half comes from the old value, or is unknown.
        assert_eq!(
            s.written(r(&g), VAR, 8, Some(0xaaaa_bbbb_0000_0000)),
            Written::Value(0xaaaa_bbbb_0000_002a)
        );
        assert_eq!(s.written(r(&g), VAR, 8, None), Written::Unknown);
    }

    #[test]
    fn locked_increment_and_add_follow_the_old_value() {
        // lock inc qword [rip+d]   f0 48 ff 05 d32
        let mut inc = vec![0xf0, 0x48, 0xff, 0x05];
        inc.extend(disp(IP));
        let g = regs(&[]);
        let s = find(&inc, &g, VAR, 8).expect("inc");
        assert_eq!(s.written(r(&g), VAR, 8, Some(41)), Written::Value(42));
        assert_eq!(
            s.written(r(&g), VAR, 8, None),
            Written::Unknown,
            "no old value, no guess"
        );
        // lock add qword [rip+d], rax   f0 48 01 05 d32
        let mut add = vec![0xf0, 0x48, 0x01, 0x05];
        add.extend(disp(IP));
        let g = regs(&[(0, 5)]);
        let s = find(&add, &g, VAR, 8).expect("add");
        assert_eq!(s.written(r(&g), VAR, 8, Some(10)), Written::Value(15));
        // sub dword [rip+d], 1 (sign-extended imm8)   83 2d d32 01
        let mut sub = vec![0x83, 0x2d];
        sub.extend(disp(IP));
        sub.push(1);
        let s = find(&sub, &g, VAR, 4).expect("sub");
        assert_eq!(
            s.written(r(&g), VAR, 4, Some(0)),
            Written::Value(0xffff_ffff)
        );
    }

    #[test]
    fn cmpxchg_stores_its_source_only_when_zf_is_set() {
        // lock cmpxchg qword [rdi], rsi   f0 48 0f b1 37
        let c = [0xf0, 0x48, 0x0f, 0xb1, 0x37];
        let ok = regs(&[(5, VAR), (4, 99), (PERF_REG_FLAGS, ZF)]);
        let s = find(&c, &ok, VAR, 8).expect("cmpxchg");
        assert_eq!(s.written(r(&ok), VAR, 8, Some(7)), Written::Value(99));
        let failed = regs(&[(5, VAR), (4, 99), (PERF_REG_FLAGS, 0)]);
        assert_eq!(s.written(r(&failed), VAR, 8, Some(7)), Written::Value(7));
    }

    #[test]
    fn xchg_and_xadd_are_unknown_their_source_is_overwritten() {
        // xchg qword [rdi], rax   48 87 07 ; lock xadd qword [rdi], rax   f0 48 0f c1 07
        let g = regs(&[(5, VAR), (0, 3)]);
        for c in [&[0x48, 0x87, 0x07][..], &[0xf0, 0x48, 0x0f, 0xc1, 0x07][..]] {
            let s = find(c, &g, VAR, 8).expect("decoded");
            assert_eq!(
                s.written(r(&g), VAR, 8, Some(1)),
                Written::Unknown,
                "{c:x?}"
            );
        }
    }

    #[test]
    fn xchg_xadd_and_cmpxchg_leave_the_old_value_in_a_register() {
        // lock xadd qword [rdi], rax: RAX now holds the value before.
        let g = regs(&[(5, VAR), (0, 41)]);
        let s = find(&[0xf0, 0x48, 0x0f, 0xc1, 0x07], &g, VAR, 8).expect("xadd");
        assert_eq!(s.before(r(&g), VAR, 8), Written::Value(41));
        // Watching the upper half of the 8 bytes: the upper half of RAX.
        let g = regs(&[(5, VAR - 4), (0, 0x0000_0007_0000_0001)]);
        assert_eq!(s.before(r(&g), VAR, 4), Written::Value(7));
        // lock cmpxchg dword [rdi], esi: EAX, failed or not.
        let g = regs(&[(5, VAR), (0, 0xffff_ffff_0000_0009), (4, 3)]);
        let s = find(&[0xf0, 0x0f, 0xb1, 0x37], &g, VAR, 4).expect("cmpxchg");
        assert_eq!(s.before(r(&g), VAR, 4), Written::Value(9));
        // A plain store keeps no trace of the old value.
        let s = find(&[0x48, 0x89, 0x07], &g, VAR, 8).expect("mov");
        assert_eq!(s.before(r(&g), VAR, 8), Written::Unknown);
    }

    #[test]
    fn a_debug_build_fetch_add_after_a_jump_table_is_found_by_voting() {
        // The 64 bytes before the IP in a debug build's
        // `AtomicU64::fetch_add`: stores to the frame, a jump table
        // dispatch (`jmp rax; ud2`), then `lock xadd [rcx], rax`.
        let code: [u8; 64] = [
            0xc0, 0x48, 0x89, 0x7d, 0xc8, 0x88, 0xd0, 0x48, 0x89, 0x7d, 0xe0, 0x48, 0x89, 0x75,
            0xe8, 0x88, 0x45, 0xf7, 0x48, 0x89, 0x7d, 0xf8, 0x0f, 0xb6, 0xc0, 0x48, 0x89, 0x45,
            0xd0, 0x48, 0x8b, 0x4d, 0xd0, 0x48, 0x8d, 0x05, 0x15, 0x4f, 0xfe, 0xff, 0x48, 0x63,
            0x0c, 0x88, 0x48, 0x01, 0xc8, 0xff, 0xe0, 0x0f, 0x0b, 0x48, 0x8b, 0x4d, 0xc8, 0x48,
            0x8b, 0x45, 0xc0, 0xf0, 0x48, 0x0f, 0xc1, 0x01,
        ];
        let s = Store::find(&code, IP, false).expect("voted");
        assert_eq!(s.instruction().mnemonic(), Mnemonic::Xadd);
        assert_eq!(s.instruction().ip(), IP - 5);
    }

    #[test]
    fn high_byte_registers_and_byte_stores_into_a_wider_watch() {
        // mov byte [rdi+1], ah   88 67 01
        let g = regs(&[(5, VAR - 1), (0, 0xbe00)]);
        let s = find(&[0x88, 0x67, 0x01], &g, VAR, 2).expect("found");
        assert_eq!(
            s.written(r(&g), VAR, 2, Some(0x1111)),
            Written::Value(0x11be)
        );
    }

    #[test]
    fn a_read_modify_write_straddling_the_watch_is_unknown() {
        // add dword [rdi], 1 where the watch is the upper 2 bytes: the
        // carry into them depends on bytes we do not know.   83 07 01
        let g = regs(&[(5, VAR - 2)]);
        let s = find(&[0x83, 0x07, 0x01], &g, VAR, 2).expect("found");
        assert_eq!(s.written(r(&g), VAR, 2, Some(5)), Written::Unknown);
    }

    #[test]
    fn no_store_ending_at_the_ip_or_elsewhere_is_not_found() {
        let g = regs(&[(5, VAR)]);
        // mov qword [rdi], rax writes VAR, but the watch is elsewhere.
        assert!(find(&[0x48, 0x89, 0x07], &g, VAR + 64, 8).is_none());
        // A load (mov rax, [rdi]) writes no memory.
        assert!(find(&[0x48, 0x8b, 0x07], &g, VAR, 8).is_none());
        // Nothing decodes to end at the IP.
        assert!(Store::find(&[], IP, false).is_none());
        assert!(Store::find(&[0x48], IP, true).is_none());
        // Found, but under these registers it writes elsewhere: not this hit's.
        let s = Store::find(&[0x48, 0x89, 0x07], IP, true).expect("mov [rdi], rax");
        assert_eq!(s.written(r(&g), VAR + 64, 8, Some(1)), Written::Unknown);
    }

    proptest::proptest! {
        /// Any code bytes and any registers: never a panic (the registers
        /// come from the target and can hold anything).
        #[test]
        fn never_panics_on_arbitrary_code_and_registers(
            code in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            regs in proptest::collection::vec(proptest::prelude::any::<u64>(), 20),
            ip in proptest::prelude::any::<u64>(),
            addr in proptest::prelude::any::<u64>(),
            len in 0u64..10,
            old in proptest::prelude::any::<Option<u64>>(),
            boundary in proptest::prelude::any::<bool>(),
            template in 0usize..8,
        ) {
            // Arbitrary bytes, then one of the followed stores, so that
            // most cases decode to a store.
            const STORES: [&[u8]; 8] = [
                &[0x48, 0x89, 0x07],                   // mov [rdi], rax
                &[0xc7, 0x44, 0x8b, 0x08, 0x2a, 0, 0, 0], // mov dword [rbx+rcx*4+8], 42
                &[0xf0, 0x48, 0xff, 0x05, 1, 2, 3, 4], // lock inc qword [rip+d]
                &[0x83, 0x07, 0x01],                   // add dword [rdi], 1
                &[0xf0, 0x48, 0x0f, 0xb1, 0x37],       // lock cmpxchg [rdi], rsi
                &[0xf0, 0x48, 0x0f, 0xc1, 0x07],       // lock xadd [rdi], rax
                &[0x88, 0x67, 0x01],                   // mov [rdi+1], ah
                &[0x48, 0x87, 0x07],                   // xchg [rdi], rax
            ];
            let mut code = code;
            code.extend_from_slice(STORES[template]);
            if let Some(s) = Store::find(&code, ip, boundary) {
                let _ = s.written(r(&regs), addr, len, old);
                let _ = s.before(r(&regs), addr, len);
            }
        }
    }

    #[test]
    fn fs_relative_stores_are_not_followed() {
        // mov qword fs:[0x10], rax   64 48 89 04 25 10 00 00 00
        let g = regs(&[]);
        assert!(find(&[0x64, 0x48, 0x89, 0x04, 0x25, 0x10, 0, 0, 0], &g, 0x10, 8).is_none());
    }
}
