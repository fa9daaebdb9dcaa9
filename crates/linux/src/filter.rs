//! Filter hits in the kernel, at the trap, and stop the process at the
//! first match: a BPF program on each breakpoint event.
//!
//! For every hit, the program compiled from a [`cond::Bound`] condition
//! reads the watched value (`bpf_probe_read_user`: x86 traps after the
//! write, so memory holds the new value), takes `old` from the value it
//! kept at the previous hit, counts the hit, evaluates the condition and
//! returns 0 (the kernel drops the sample: no ring record, no wakeup) or 1
//! (the sample is written as usual). With `stop`, the first match claims
//! the stop record with a compare-and-swap, fills it, and sends `SIGSTOP`
//! to the process (`bpf_send_signal`): the writing thread stops on its way
//! back to user space, right after the writing instruction, and every other
//! thread joins the group stop. See docs/ARCHITECTURE.md, "Stopping at the
//! write", for why this design and what it was measured against.
//!
//! ```no_run
//! use hwbreak_linux::cond::{Cond, ValueType};
//! use hwbreak_linux::filter::{FilterWatch, HitFilter};
//! # let addr = 0x601040;
//! let ty = ValueType { len: 8, signed: true };
//! let c = Cond::parse("new == 42")?.bind(ty)?;
//! let f = HitFilter::new(&[FilterWatch { addr, ty, cond: c, initial: 0 }], true, &|_| Ok(vec![]))?;
//! // Open the breakpoint events (disabled), f.attach(&event) each, enable.
//! if let Some(s) = f.stopped()? { println!("tid {} stopped at {:#x}", s.tid, s.ip); }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Values under races: `old` is the value this program saw at the watch's
//! previous hit, and `new` is read at the trap. If two threads write the
//! same variable at the same instant, one may read the other's value. The
//! counts (`hits`, `matched`) are exact: they are atomic adds.

use crate::bpf::{Alu, ArrayMap, Helper, Insn, Jmp, Prog, Reg, FP};
use crate::cond::{self, CmpOp, Node, Operand, ValueType, Var};
use crate::error::{Denied, Error, Result};
use crate::event::Event;
use std::ops::Range;

/// One watch to filter.
#[derive(Debug, Clone)]
pub struct FilterWatch {
    /// The watched address (`new` is read from here).
    pub addr: u64,
    /// The value's type.
    pub ty: ValueType,
    /// The condition, bound to `ty` (use [`cond::Bound::always`] for none).
    pub cond: cond::Bound,
    /// The value before the first hit (`old` at the first hit).
    pub initial: u64,
}

/// Where the writing thread stopped, as the program saw it at the trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRecord {
    /// Index of the watch in the list given to [`HitFilter::new`].
    pub watch: usize,
    /// The writing thread.
    pub tid: u32,
    /// The instruction after the write (x86), where the thread stopped.
    pub ip: u64,
    /// The value before (widened as the watch's type says).
    pub old: u64,
    /// The value the write left (widened).
    pub new: u64,
    /// The hit's number on its watch, from 1.
    pub hits: u64,
    /// `CLOCK_MONOTONIC` ns at the trap.
    pub time_ns: u64,
}

/// Exact counts of one watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FilterCounts {
    /// Every hit the program saw.
    pub hits: u64,
    /// Hits that matched the condition.
    pub matched: u64,
}

/// The map: one entry per watch, then the stop record.
const WORDS: usize = 10;
const W_LAST: i16 = 0;
const W_HITS: i16 = 8;
const W_MATCHED: i16 = 16;
const S_CLAIMED: i16 = 0;
const S_WATCH: i16 = 8;
const S_TID: i16 = 16;
const S_IP: i16 = 24;
const S_OLD: i16 = 32;
const S_NEW: i16 = 40;
const S_HITS: i16 = 48;
const S_TIME: i16 = 56;
const S_SIGNAL_RC: i16 = 64;
const S_READY: i16 = 72;

/// `struct bpf_perf_event_data` on x86-64: `pt_regs` first (`ip` at 128).
const CTX_IP: i16 = 128;

// Stack slots below the frame pointer.
const FP_NEW: i16 = -8;
const FP_KEY: i16 = -16;
const FP_HITS: i16 = -24;
const FP_TID: i16 = -32;
const FP_IP: i16 = -40;

// Registers kept across helper calls.
const CTX: Reg = 6;
const NEW: Reg = 7;
const OLD: Reg = 8;
const ENTRY: Reg = 9;

/// Compiled and loaded filters for a set of watches, with their map.
/// Keep it alive while the events it is attached to run (the kernel keeps
/// the programs alive either way; the map is read through this).
#[derive(Debug)]
pub struct HitFilter {
    map: ArrayMap,
    progs: Vec<Prog>,
    stop: bool,
}

/// Function name → its address ranges in the target, for `func == "name"`.
pub type FuncRanges<'a> = &'a dyn Fn(&str) -> Result<Vec<Range<u64>>>;

impl HitFilter {
    /// Compile and load one program per watch. With `stop`, the first
    /// match stops the process. `funcs` resolves the names the conditions
    /// test `func` against.
    pub fn new(watches: &[FilterWatch], stop: bool, funcs: FuncRanges<'_>) -> Result<HitFilter> {
        let map = ArrayMap::new(watches.len() as u32 + 1, WORDS)
            .map_err(|e| bpf_error("create the filter's BPF map", e))?;
        for (i, w) in watches.iter().enumerate() {
            let mut v = [0u64; WORDS];
            v[0] = w.ty.widen(w.initial);
            map.set(i as u32, &v)
                .map_err(|e| Error::sys("set a watch's initial value in the BPF map", e))?;
        }
        let mut progs = Vec::new();
        for (i, w) in watches.iter().enumerate() {
            let mut ranges = Vec::new();
            for f in w.cond.functions() {
                let r = funcs(&f)?;
                if r.is_empty() {
                    return Err(Error::Invalid(format!(
                        "condition: no function `{f}` in the target; name a function it defines (check with `nm`)"
                    )));
                }
                ranges.push((f, r));
            }
            let insns = compile(i as u32, w, watches.len() as u32, stop, &map, &ranges);
            let prog = Prog::load_perf_event(&format!("hwbreak_if{i}"), &insns).map_err(|e| {
                if matches!(e.err.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
                    bpf_error("load the condition's BPF program", e.err)
                } else {
                    Error::Invalid(format!(
                        "the kernel refused the condition's BPF program ({}): {}",
                        e.err,
                        e.log.lines().rev().take(3).collect::<Vec<_>>().join(" / ")
                    ))
                }
            })?;
            progs.push(prog);
        }
        Ok(HitFilter { map, progs, stop })
    }

    /// Attach watch `idx`'s program to `ev` (`PERF_EVENT_IOC_SET_BPF`).
    /// Do it before enabling `ev`: inherited copies take the program when
    /// they are made.
    pub fn attach(&self, idx: usize, ev: &Event) -> Result<()> {
        ev.set_bpf(self.progs[idx].fd())
            .map_err(|e| Error::sys("attach the condition's BPF program to a breakpoint", e))
    }

    /// The program of watch `idx`, as an fd for `PERF_EVENT_IOC_SET_BPF`.
    pub fn prog_fd(&self, idx: usize) -> std::os::fd::RawFd {
        self.progs[idx].fd()
    }

    /// How many watches this filters.
    pub fn len(&self) -> usize {
        self.progs.len()
    }

    /// Whether it filters no watch.
    pub fn is_empty(&self) -> bool {
        self.progs.is_empty()
    }

    /// Watch `idx`'s exact counts so far.
    pub fn counts(&self, idx: usize) -> Result<FilterCounts> {
        let v = self
            .map
            .get(idx as u32)
            .map_err(|e| Error::sys("read the filter's counts", e))?;
        Ok(FilterCounts {
            hits: v[(W_HITS / 8) as usize],
            matched: v[(W_MATCHED / 8) as usize],
        })
    }

    /// The stop record, once a match stopped the process (always `None`
    /// without `stop`).
    pub fn stopped(&self) -> Result<Option<StopRecord>> {
        if !self.stop {
            return Ok(None);
        }
        let v = self
            .map
            .get(self.progs.len() as u32)
            .map_err(|e| Error::sys("read the stop record", e))?;
        let w = |off: i16| v[(off / 8) as usize];
        if w(S_READY) == 0 {
            return Ok(None);
        }
        let rc = w(S_SIGNAL_RC) as i64;
        if rc != 0 {
            return Err(Error::Invalid(format!(
                "the condition matched (tid {}, ip {:#x}) but the kernel refused to send SIGSTOP from the trap (bpf_send_signal: {})",
                w(S_TID),
                w(S_IP),
                std::io::Error::from_raw_os_error(-rc as i32)
            )));
        }
        Ok(Some(StopRecord {
            watch: w(S_WATCH) as usize,
            tid: w(S_TID) as u32,
            ip: w(S_IP),
            old: w(S_OLD),
            new: w(S_NEW),
            hits: w(S_HITS),
            time_ns: w(S_TIME),
        }))
    }
}

fn bpf_error(what: &str, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(errno @ (libc::EPERM | libc::EACCES)) => {
            crate::procfs::permission_error(what, errno, Denied::Bpf)
        }
        _ => Error::sys(what, e),
    }
}

/// An instruction, a jump to a label, or a label, before offsets are known.
enum Item {
    I(Insn),
    /// `if a op b goto label`, `b` a register or an immediate.
    J(Jmp, Reg, JmpSrc, usize),
    L(usize),
}

enum JmpSrc {
    Reg(Reg),
    Imm(i32),
}

#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    fn i(&mut self, i: Insn) {
        self.items.push(Item::I(i));
    }
    fn i2(&mut self, i: [Insn; 2]) {
        self.i(i[0]);
        self.i(i[1]);
    }
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn place(&mut self, l: usize) {
        self.items.push(Item::L(l));
    }
    fn jmp(&mut self, op: Jmp, a: Reg, b: JmpSrc, l: usize) {
        self.items.push(Item::J(op, a, b, l));
    }
    fn goto(&mut self, l: usize) {
        self.jmp(Jmp::Ja, 0, JmpSrc::Imm(0), l);
    }
    /// Resolve labels into offsets.
    fn finish(self) -> Vec<Insn> {
        let mut at = vec![0usize; self.labels];
        let mut pc = 0;
        for it in &self.items {
            match it {
                Item::L(l) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        let mut out = Vec::with_capacity(pc);
        for it in self.items {
            match it {
                Item::I(i) => out.push(i),
                Item::L(_) => {}
                Item::J(op, a, b, l) => {
                    let off = (at[l] as i64 - out.len() as i64 - 1) as i16;
                    out.push(match b {
                        JmpSrc::Reg(r) => Insn::jmp_reg(op, a, r, off),
                        JmpSrc::Imm(k) => Insn::jmp_imm(op, a, k, off),
                    });
                }
            }
        }
        out
    }

    /// `dst = value of o`.
    fn operand(&mut self, dst: Reg, o: Operand) {
        match o {
            Operand::Lit(n) if n as i64 == i64::from(n as i32) => {
                self.i(Insn::alu_imm(Alu::Mov, dst, n as i32))
            }
            Operand::Lit(n) => self.i2(Insn::ld_imm64(dst, n)),
            Operand::Var(Var::New) => self.i(Insn::alu_reg(Alu::Mov, dst, NEW)),
            Operand::Var(Var::Old) => self.i(Insn::alu_reg(Alu::Mov, dst, OLD)),
            Operand::Var(Var::Hits) => self.i(Insn::ldx_dw(dst, FP, FP_HITS)),
            Operand::Var(Var::Tid) => self.i(Insn::ldx_dw(dst, FP, FP_TID)),
            Operand::Var(Var::Ip) => self.i(Insn::ldx_dw(dst, FP, FP_IP)),
        }
    }

    /// Jumping code: go to `t` when `n` holds, else to `f`.
    fn cond(&mut self, n: &Node, t: usize, f: usize, funcs: &[(String, Vec<Range<u64>>)]) {
        match n {
            Node::And(a, b) => {
                let mid = self.label();
                self.cond(a, mid, f, funcs);
                self.place(mid);
                self.cond(b, t, f, funcs);
            }
            Node::Or(a, b) => {
                let mid = self.label();
                self.cond(a, t, mid, funcs);
                self.place(mid);
                self.cond(b, t, f, funcs);
            }
            Node::Not(a) => self.cond(a, f, t, funcs),
            Node::Cmp {
                op,
                lhs,
                rhs,
                signed,
            } => {
                self.operand(1, *lhs);
                self.operand(2, *rhs);
                let j = match (op, signed) {
                    (CmpOp::Eq, _) => Jmp::Jeq,
                    (CmpOp::Ne, _) => Jmp::Jne,
                    (CmpOp::Lt, false) => Jmp::Jlt,
                    (CmpOp::Le, false) => Jmp::Jle,
                    (CmpOp::Gt, false) => Jmp::Jgt,
                    (CmpOp::Ge, false) => Jmp::Jge,
                    (CmpOp::Lt, true) => Jmp::Jslt,
                    (CmpOp::Le, true) => Jmp::Jsle,
                    (CmpOp::Gt, true) => Jmp::Jsgt,
                    (CmpOp::Ge, true) => Jmp::Jsge,
                };
                self.jmp(j, 1, JmpSrc::Reg(2), t);
                self.goto(f);
            }
            Node::InFunc(name) => {
                // The access is in the function when start < ip <= end:
                // the trap's IP is the instruction after it.
                self.i(Insn::ldx_dw(1, FP, FP_IP));
                let ranges = funcs
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, r)| r.as_slice())
                    .unwrap_or_default();
                for r in ranges {
                    let next = self.label();
                    self.i2(Insn::ld_imm64(2, r.start));
                    self.jmp(Jmp::Jle, 1, JmpSrc::Reg(2), next);
                    self.i2(Insn::ld_imm64(2, r.end));
                    self.jmp(Jmp::Jle, 1, JmpSrc::Reg(2), t);
                    self.place(next);
                }
                self.goto(f);
            }
        }
    }

    /// `r0 = &map[key]`, or go to `null` when the lookup fails.
    fn lookup(&mut self, map: &ArrayMap, key: u32, null: usize) {
        self.i(Insn::st_w(FP, FP_KEY, key as i32));
        self.i2(Insn::ld_map_fd(1, map.fd()));
        self.i(Insn::alu_reg(Alu::Mov, 2, FP));
        self.i(Insn::alu_imm(Alu::Add, 2, i32::from(FP_KEY)));
        self.i(Insn::call(Helper::MapLookupElem));
        self.jmp(Jmp::Jeq, 0, JmpSrc::Imm(0), null);
    }
}

/// The program of watch `idx` (see the module docs for what it does).
fn compile(
    idx: u32,
    w: &FilterWatch,
    n_watches: u32,
    stop: bool,
    map: &ArrayMap,
    funcs: &[(String, Vec<Range<u64>>)],
) -> Vec<Insn> {
    let mut a = Asm::default();
    let (matched, no_match, deliver) = (a.label(), a.label(), a.label());
    a.i(Insn::alu_reg(Alu::Mov, CTX, 1));
    // new = *(type *)addr, widened.
    a.i(Insn::st_dw(FP, FP_NEW, 0));
    a.i(Insn::alu_reg(Alu::Mov, 1, FP));
    a.i(Insn::alu_imm(Alu::Add, 1, i32::from(FP_NEW)));
    a.i(Insn::alu_imm(Alu::Mov, 2, i32::from(w.ty.len.clamp(1, 8))));
    a.i2(Insn::ld_imm64(3, w.addr));
    a.i(Insn::call(Helper::ProbeReadUser));
    a.i(Insn::ldx_dw(NEW, FP, FP_NEW));
    if w.ty.len < 8 {
        let shift = 64 - 8 * i32::from(w.ty.len);
        a.i(Insn::alu_imm(Alu::Lsh, NEW, shift));
        let right = if w.ty.signed { Alu::Arsh } else { Alu::Rsh };
        a.i(Insn::alu_imm(right, NEW, shift));
    }
    // The watch's entry: old = last; last = new; hits += 1.
    a.lookup(map, idx, deliver);
    a.i(Insn::alu_reg(Alu::Mov, ENTRY, 0));
    a.i(Insn::ldx_dw(OLD, ENTRY, W_LAST));
    a.i(Insn::stx_dw(ENTRY, W_LAST, NEW));
    a.i(Insn::alu_imm(Alu::Mov, 1, 1));
    a.i(Insn::atomic_fetch_add(ENTRY, W_HITS, 1));
    a.i(Insn::alu_imm(Alu::Add, 1, 1));
    a.i(Insn::stx_dw(FP, FP_HITS, 1));
    a.i(Insn::call(Helper::GetCurrentPidTgid));
    a.i(Insn::mov32_reg(0, 0));
    a.i(Insn::stx_dw(FP, FP_TID, 0));
    a.i(Insn::ldx_dw(1, CTX, CTX_IP));
    a.i(Insn::stx_dw(FP, FP_IP, 1));
    a.cond(&w.cond.node, matched, no_match, funcs);
    a.place(matched);
    a.i(Insn::alu_imm(Alu::Mov, 1, 1));
    a.i(Insn::atomic_add(ENTRY, W_MATCHED, 1));
    if stop {
        // Claim the stop record (only the first match stops), fill it,
        // mark it ready, then stop the process.
        a.lookup(map, n_watches, deliver);
        a.i(Insn::alu_reg(Alu::Mov, ENTRY, 0));
        a.i(Insn::alu_imm(Alu::Mov, 0, 0));
        a.i(Insn::alu_imm(Alu::Mov, 1, 1));
        a.i(Insn::cmpxchg(ENTRY, S_CLAIMED, 1));
        a.jmp(Jmp::Jne, 0, JmpSrc::Imm(0), deliver);
        a.i(Insn::st_dw(ENTRY, S_WATCH, idx as i32));
        a.i(Insn::ldx_dw(1, FP, FP_TID));
        a.i(Insn::stx_dw(ENTRY, S_TID, 1));
        a.i(Insn::ldx_dw(1, FP, FP_IP));
        a.i(Insn::stx_dw(ENTRY, S_IP, 1));
        a.i(Insn::stx_dw(ENTRY, S_OLD, OLD));
        a.i(Insn::stx_dw(ENTRY, S_NEW, NEW));
        a.i(Insn::ldx_dw(1, FP, FP_HITS));
        a.i(Insn::stx_dw(ENTRY, S_HITS, 1));
        a.i(Insn::call(Helper::KtimeGetNs));
        a.i(Insn::stx_dw(ENTRY, S_TIME, 0));
        a.i(Insn::alu_imm(Alu::Mov, 1, libc::SIGSTOP));
        a.i(Insn::call(Helper::SendSignal));
        a.i(Insn::stx_dw(ENTRY, S_SIGNAL_RC, 0));
        a.i(Insn::st_dw(ENTRY, S_READY, 1));
    }
    a.place(deliver);
    a.i(Insn::alu_imm(Alu::Mov, 0, 1));
    a.i(Insn::exit());
    a.place(no_match);
    a.i(Insn::alu_imm(Alu::Mov, 0, 0));
    a.i(Insn::exit());
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_resolve_to_relative_offsets_over_wide_loads() {
        let mut a = Asm::default();
        let l = a.label();
        a.jmp(Jmp::Jeq, 1, JmpSrc::Imm(0), l);
        a.i2(Insn::ld_imm64(2, 1 << 40));
        a.place(l);
        a.i(Insn::exit());
        let out = a.finish();
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].off, 2, "skips both slots of the 64-bit load");
    }
}
