//! The little of BPF that [`crate::filter`] needs: encode instructions,
//! create an array map, load a `BPF_PROG_TYPE_PERF_EVENT` program, with
//! the `bpf(2)` system call.
//!
//! Hand-written rather than from a crate: `aya` and `libbpf` load ELF
//! objects compiled ahead of time by clang or bpf-linker, while a filter
//! is a few dozen instructions generated at run time from the user's
//! `--if` expression. Encoding them takes the dozen opcodes below, and
//! needs no toolchain on the user's machine.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// `dst_reg` in the low nibble, `src_reg` in the high one.
    pub regs: u8,
    /// Signed offset (memory, jumps).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

/// Register numbers: R0 return value, R1-R5 arguments, R6-R9 kept across
/// calls, R10 the frame pointer (read only).
pub type Reg = u8;
/// The frame pointer.
pub const FP: Reg = 10;

// Instruction classes and fields (include/uapi/linux/bpf.h, bpf_common.h).
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const ALU64: u8 = 0x07;
const IMM: u8 = 0x00;
const MEM: u8 = 0x60;
const ATOMIC: u8 = 0xc0;
const DW: u8 = 0x18;
const W: u8 = 0x00;
const K: u8 = 0x00;
const X: u8 = 0x08;
/// `BPF_PSEUDO_MAP_FD`: a 64-bit load whose immediate is a map fd.
const PSEUDO_MAP_FD: u8 = 1;
/// Atomic operations (in `imm`).
const ATOMIC_ADD: i32 = 0x00;
const ATOMIC_FETCH: i32 = 0x01;
const ATOMIC_CMPXCHG: i32 = 0xf0 | ATOMIC_FETCH;

/// ALU operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Alu {
    /// `+=`
    Add = 0x00,
    /// `&=`
    And = 0x50,
    /// `<<=`
    Lsh = 0x60,
    /// `>>=` (logical)
    Rsh = 0x70,
    /// `>>=` (arithmetic)
    Arsh = 0xc0,
    /// `=`
    Mov = 0xb0,
}

/// Jump conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Jmp {
    /// Always.
    Ja = 0x00,
    /// `==`
    Jeq = 0x10,
    /// `>` unsigned
    Jgt = 0x20,
    /// `>=` unsigned
    Jge = 0x30,
    /// `!=`
    Jne = 0x50,
    /// `>` signed
    Jsgt = 0x60,
    /// `>=` signed
    Jsge = 0x70,
    /// `<` unsigned
    Jlt = 0xa0,
    /// `<=` unsigned
    Jle = 0xb0,
    /// `<` signed
    Jslt = 0xc0,
    /// `<=` signed
    Jsle = 0xd0,
}

/// Kernel helper functions (`enum bpf_func_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Helper {
    /// `void *bpf_map_lookup_elem(map, key)`
    MapLookupElem = 1,
    /// `u64 bpf_ktime_get_ns(void)` (`CLOCK_MONOTONIC`)
    KtimeGetNs = 5,
    /// `u64 bpf_get_current_pid_tgid(void)`: tgid << 32 | pid
    GetCurrentPidTgid = 14,
    /// `long bpf_send_signal(u32 sig)`: to the current process (Linux 5.3)
    SendSignal = 109,
    /// `long bpf_probe_read_user(dst, size, user_src)` (Linux 5.5)
    ProbeReadUser = 112,
}

fn insn(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0xf),
        off,
        imm,
    }
}

impl Insn {
    /// `dst op= imm` (64-bit).
    pub fn alu_imm(op: Alu, dst: Reg, imm: i32) -> Insn {
        insn(ALU64 | op as u8 | K, dst, 0, 0, imm)
    }
    /// `dst op= src` (64-bit).
    pub fn alu_reg(op: Alu, dst: Reg, src: Reg) -> Insn {
        insn(ALU64 | op as u8 | X, dst, src, 0, 0)
    }
    /// `dst = (u32)src`: the low 32 bits, zero-extended.
    pub fn mov32_reg(dst: Reg, src: Reg) -> Insn {
        insn(ALU | Alu::Mov as u8 | X, dst, src, 0, 0)
    }
    /// `dst = imm64` (two instruction slots).
    pub fn ld_imm64(dst: Reg, imm: u64) -> [Insn; 2] {
        [
            insn(LD | IMM | DW, dst, 0, 0, imm as u32 as i32),
            insn(0, 0, 0, 0, (imm >> 32) as u32 as i32),
        ]
    }
    /// `dst = &map` (two instruction slots).
    pub fn ld_map_fd(dst: Reg, fd: RawFd) -> [Insn; 2] {
        [
            insn(LD | IMM | DW, dst, PSEUDO_MAP_FD, 0, fd),
            insn(0, 0, 0, 0, 0),
        ]
    }
    /// `dst = *(u64 *)(src + off)`
    pub fn ldx_dw(dst: Reg, src: Reg, off: i16) -> Insn {
        insn(LDX | MEM | DW, dst, src, off, 0)
    }
    /// `*(u64 *)(dst + off) = src`
    pub fn stx_dw(dst: Reg, off: i16, src: Reg) -> Insn {
        insn(STX | MEM | DW, dst, src, off, 0)
    }
    /// `*(u64 *)(dst + off) = imm`
    pub fn st_dw(dst: Reg, off: i16, imm: i32) -> Insn {
        insn(ST | MEM | DW, dst, 0, off, imm)
    }
    /// `*(u32 *)(dst + off) = imm`
    pub fn st_w(dst: Reg, off: i16, imm: i32) -> Insn {
        insn(ST | MEM | W, dst, 0, off, imm)
    }
    /// `lock *(u64 *)(dst + off) += src`
    pub fn atomic_add(dst: Reg, off: i16, src: Reg) -> Insn {
        insn(STX | ATOMIC | DW, dst, src, off, ATOMIC_ADD)
    }
    /// `src = atomic_fetch_add((u64 *)(dst + off), src)`
    pub fn atomic_fetch_add(dst: Reg, off: i16, src: Reg) -> Insn {
        insn(STX | ATOMIC | DW, dst, src, off, ATOMIC_ADD | ATOMIC_FETCH)
    }
    /// `r0 = cmpxchg((u64 *)(dst + off), r0, src)`: store `src` if the
    /// memory holds R0; R0 gets the old memory value either way.
    pub fn cmpxchg(dst: Reg, off: i16, src: Reg) -> Insn {
        insn(STX | ATOMIC | DW, dst, src, off, ATOMIC_CMPXCHG)
    }
    /// `if dst op src goto +off`
    pub fn jmp_reg(op: Jmp, dst: Reg, src: Reg, off: i16) -> Insn {
        insn(JMP | op as u8 | X, dst, src, off, 0)
    }
    /// `if dst op imm goto +off`
    pub fn jmp_imm(op: Jmp, dst: Reg, imm: i32, off: i16) -> Insn {
        insn(JMP | op as u8 | K, dst, 0, off, imm)
    }
    /// `call helper`
    pub fn call(h: Helper) -> Insn {
        insn(JMP | 0x80, 0, 0, 0, h as i32)
    }
    /// `exit` (returns R0)
    pub fn exit() -> Insn {
        insn(JMP | 0x90, 0, 0, 0, 0)
    }
}

const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_PROG_LOAD: i32 = 5;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_PROG_TYPE_PERF_EVENT: u32 = 7;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

fn sys_bpf<T>(cmd: i32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, initialised bpf_attr prefix of the size we
    // pass; the kernel copies it (and writes only within it, or to buffers
    // whose pointers and sizes it holds, which the caller keeps alive).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A BPF array map of `u32` keys to fixed-size values of `u64` words.
/// Drop closes it (the kernel frees it when no program uses it).
#[derive(Debug)]
pub struct ArrayMap {
    fd: OwnedFd,
    words: usize,
}

impl ArrayMap {
    /// An array of `entries` values of `words` u64 each, all zero.
    pub fn new(entries: u32, words: usize) -> io::Result<ArrayMap> {
        let mut a = MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: (words * 8) as u32,
            max_entries: entries,
            map_flags: 0,
        };
        let fd = sys_bpf(BPF_MAP_CREATE, &mut a)?;
        // SAFETY: the kernel just returned this fd; we are its only owner.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(ArrayMap { fd, words })
    }

    /// The map's fd, for [`Insn::ld_map_fd`].
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Entry `key`.
    pub fn get(&self, key: u32) -> io::Result<Vec<u64>> {
        let mut v = vec![0u64; self.words];
        let mut a = MapElemAttr {
            map_fd: self.fd() as u32,
            key: &key as *const u32 as u64,
            value: v.as_mut_ptr() as u64,
            ..Default::default()
        };
        sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut a)?;
        Ok(v)
    }

    /// Replace entry `key` (`value` has the map's word count).
    pub fn set(&self, key: u32, value: &[u64]) -> io::Result<()> {
        assert_eq!(
            value.len(),
            self.words,
            "a map value has {} words",
            self.words
        );
        let mut a = MapElemAttr {
            map_fd: self.fd() as u32,
            key: &key as *const u32 as u64,
            value: value.as_ptr() as u64,
            ..Default::default()
        };
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
    }
}

/// A loaded program. Drop closes our fd; the kernel keeps the program as
/// long as a perf event holds it.
#[derive(Debug)]
pub struct Prog {
    fd: OwnedFd,
}

/// Why a program was refused: the errno, and the verifier's log.
#[derive(Debug)]
pub struct LoadError {
    /// The system call's error.
    pub err: io::Error,
    /// The verifier's explanation (empty when it gave none).
    pub log: String,
}

impl Prog {
    /// Load `insns` as a `BPF_PROG_TYPE_PERF_EVENT` program. The license
    /// is "GPL" because `bpf_probe_read_user` and `bpf_send_signal` are
    /// GPL-only helpers; the program is generated here at run time.
    pub fn load_perf_event(name: &str, insns: &[Insn]) -> Result<Prog, LoadError> {
        let license = c"GPL";
        let mut log = vec![0u8; 64 * 1024];
        let mut prog_name = [0u8; 16];
        for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
            *d = if s.is_ascii_alphanumeric() { s } else { b'_' };
        }
        let mut a = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_PERF_EVENT,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 1,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            prog_name,
            ..Default::default()
        };
        match sys_bpf(BPF_PROG_LOAD, &mut a) {
            Ok(fd) => {
                // SAFETY: the kernel just returned this fd; we are its only owner.
                let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
                Ok(Prog { fd })
            }
            Err(err) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                Err(LoadError {
                    err,
                    log: String::from_utf8_lossy(&log[..end]).trim().to_string(),
                })
            }
        }
    }

    /// The program's fd, for `PERF_EVENT_IOC_SET_BPF`.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_kernel_headers() {
        // Values as `llvm-objdump -d` shows them for the same instructions.
        let i = Insn::alu_reg(Alu::Mov, 6, 1); // r6 = r1
        assert_eq!((i.code, i.regs), (0xbf, 0x16));
        let i = Insn::ldx_dw(1, 6, 128); // r1 = *(u64 *)(r6 + 128)
        assert_eq!((i.code, i.regs, i.off), (0x79, 0x61, 128));
        let i = Insn::jmp_imm(Jmp::Jeq, 0, 0, 3); // if r0 == 0 goto +3
        assert_eq!((i.code, i.off), (0x15, 3));
        let i = Insn::atomic_fetch_add(9, 8, 1);
        assert_eq!((i.code, i.imm), (0xdb, 1));
        let [a, b] = Insn::ld_imm64(2, 0x1122_3344_5566_7788);
        assert_eq!(
            (a.code, a.imm as u32, b.imm as u32),
            (0x18, 0x5566_7788, 0x1122_3344)
        );
        assert_eq!(Insn::call(Helper::SendSignal).code, 0x85);
        assert_eq!(Insn::exit().code, 0x95);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }
}
