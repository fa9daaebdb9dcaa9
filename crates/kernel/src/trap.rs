//! Per-CPU descriptor tables (GDT, TSS with IST stacks, IDT) and the
//! interrupt entry path.
//!
//! Every vector enters through one assembly stub that saves the general
//! registers and the SSE state (`fxsave`: the precompiled libcore uses SSE,
//! and an interrupted task's XMM registers must survive a handler), then calls
//! [`trap_entry`] with a pointer to the [`TrapFrame`]. #DB, NMI and #DF run on
//! their own IST stacks, so a debug exception on a bad kernel stack still has
//! a stack.

use core::arch::{asm, global_asm};

use crate::percpu::{self, MAX_CPUS};

/// Kernel code selector.
pub const KCODE: u16 = 0x08;
/// Kernel data selector.
pub const KDATA: u16 = 0x10;
/// User data selector (RPL 3).
pub const UDATA: u16 = 0x18 | 3;
/// User 64-bit code selector (RPL 3).
pub const UCODE: u16 = 0x20 | 3;
const TSS_SEL: u16 = 0x28;

/// Vector of the "apply your pending debug-register writes" IPI.
pub const VEC_DR_SYNC: u8 = 0xf0;
/// Vector of the local APIC timer.
pub const VEC_TIMER: u8 = 0x20;
/// Vector of the "stop for the debugger / park" IPI.
pub const VEC_STOP: u8 = 0xf2;
/// Spurious-interrupt vector.
pub const VEC_SPURIOUS: u8 = 0xff;

/// The registers an interrupt saved, lowest address first (as pushed).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
#[allow(missing_docs)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// RFLAGS.TF: single-step.
pub const RFLAGS_TF: u64 = 1 << 8;
/// RFLAGS.IF: interrupts enabled.
pub const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS.RF: resume without an instruction-breakpoint fault.
pub const RFLAGS_RF: u64 = 1 << 16;

global_asm!(
    r#"
    .macro STUB_NOERR n
    .balign 16
stub_\n:
    push 0
    push \n
    jmp trap_common
    .endm
    .macro STUB_ERR n
    .balign 16
stub_\n:
    push \n
    jmp trap_common
    .endm

    .text
    .irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31,32,240,241,242,255
    STUB_NOERR \n
    .endr
    .irp n, 8,10,11,12,13,14,17,21,29,30
    STUB_ERR \n
    .endr

trap_common:
    push rax
    push rcx
    push rdx
    push rbx
    push rbp
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rbx, rsp
    sub rsp, 512
    and rsp, -64
    fxsave64 [rsp]
    mov rdi, rbx
    cld
    call trap_entry
    fxrstor64 [rsp]
    mov rsp, rbx
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rbp
    pop rbx
    pop rdx
    pop rcx
    pop rax
    add rsp, 16
    iretq

    .section .rodata
    .balign 8
    .global trap_stubs
trap_stubs:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,240,241,242,255
    .quad \n
    .quad stub_\n
    .endr
    .global trap_stubs_end
trap_stubs_end:
    .text
"#
);

extern "C" {
    static trap_stubs: [u64; 2];
    static trap_stubs_end: u8;
}

/// One IDT gate (16 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    lo: u64,
    hi: u64,
}

impl Gate {
    const EMPTY: Gate = Gate { lo: 0, hi: 0 };

    /// An interrupt gate (IF cleared on entry) to `handler`, with IST `ist`
    /// and descriptor privilege `dpl`.
    fn new(handler: u64, ist: u8, dpl: u8) -> Gate {
        let lo = (handler & 0xffff)
            | (u64::from(KCODE) << 16)
            | (u64::from(ist & 7) << 32)
            | ((0x8e | u64::from(dpl & 3) << 5) << 40)
            | ((handler >> 16) & 0xffff) << 48;
        Gate {
            lo,
            hi: handler >> 32,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

/// The IDT is shared by every CPU: the IST indices are per-CPU through each
/// CPU's own TSS.
static mut IDT: Idt = Idt([Gate::EMPTY; 256]);

/// The 64-bit TSS: only the kernel stack for ring-3 entries and the IST
/// stacks matter.
#[repr(C, packed(4))]
#[derive(Clone, Copy)]
struct Tss {
    _r0: u32,
    rsp: [u64; 3],
    _r1: u64,
    ist: [u64; 7],
    _r2: u64,
    _r3: u16,
    iomap: u16,
}

const IST_SIZE: usize = 16 * 1024;

/// Per-CPU descriptor state: GDT (with this CPU's TSS descriptor), TSS and
/// the IST stacks (#DB = 1, NMI = 2, #DF = 3).
#[repr(C, align(4096))]
struct CpuTables {
    gdt: [u64; 7],
    tss: Tss,
    ist: [[u8; IST_SIZE]; 3],
}

static mut TABLES: [CpuTables; MAX_CPUS] = [const {
    CpuTables {
        gdt: [0; 7],
        tss: Tss {
            _r0: 0,
            rsp: [0; 3],
            _r1: 0,
            ist: [0; 7],
            _r2: 0,
            _r3: 0,
            iomap: 104,
        },
        ist: [[0; IST_SIZE]; 3],
    }
}; MAX_CPUS];

#[repr(C, packed(2))]
struct DescPtr {
    limit: u16,
    base: u64,
}

/// Fill the shared IDT (once, on the BSP).
pub fn init_idt() {
    // SAFETY: the stub table is an array of (vector, address) pairs laid out
    // by the assembly above, read-only.
    unsafe {
        let start = core::ptr::addr_of!(trap_stubs);
        let end = core::ptr::addr_of!(trap_stubs_end) as *const [u64; 2];
        let n = end.offset_from(start) as usize;
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for i in 0..n {
            let [vec, addr] = *start.add(i);
            let ist = match vec {
                1 => 1,
                2 => 2,
                8 => 3,
                _ => 0,
            };
            // int3 may be raised from ring 3 (a user task's breakpoint).
            let dpl = if vec == 3 { 3 } else { 0 };
            idt.0[vec as usize] = Gate::new(addr, ist, dpl);
        }
    }
}

/// Load this CPU's GDT, TSS and the IDT. `cpu` is the caller's index.
pub fn init_cpu(cpu: usize) {
    // SAFETY: each CPU writes only its own TABLES entry, once, before it
    // takes interrupts; the descriptors built here are valid long-mode
    // descriptors for the segments the rest of the kernel uses.
    unsafe {
        let t = &mut *core::ptr::addr_of_mut!(TABLES[cpu]);
        for i in 0..3 {
            let top = t.ist[i].as_ptr() as u64 + IST_SIZE as u64;
            t.tss.ist[i] = top & !15;
        }
        let base = core::ptr::addr_of!(t.tss) as u64;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        t.gdt = [
            0,
            0x00af9a000000ffff, // 0x08 kernel code
            0x00cf92000000ffff, // 0x10 kernel data
            0x00cff2000000ffff, // 0x18 user data
            0x00affa000000ffff, // 0x20 user code
            (limit & 0xffff)
                | (base & 0xff_ffff) << 16
                | 0x89 << 40
                | ((limit >> 16) & 0xf) << 48
                | ((base >> 24) & 0xff) << 56,
            base >> 32,
        ];
        let gdtp = DescPtr {
            limit: (core::mem::size_of_val(&t.gdt) - 1) as u16,
            base: t.gdt.as_ptr() as u64,
        };
        let idtp = DescPtr {
            limit: (core::mem::size_of::<Idt>() - 1) as u16,
            base: core::ptr::addr_of!(IDT) as u64,
        };
        asm!(
            "lgdt [{g}]",
            "lidt [{i}]",
            "ltr {t:x}",
            g = in(reg) &gdtp,
            i = in(reg) &idtp,
            t = in(reg) TSS_SEL,
        );
    }
}

/// Set the stack ring-3 entries switch to on this CPU (TSS.RSP0).
pub fn set_kernel_stack(cpu: usize, top: u64) {
    // SAFETY: only `cpu` itself calls this for its own TSS; the CPU reads
    // RSP0 only on a ring-3 → ring-0 transition, which cannot be in progress
    // while this CPU runs this code.
    unsafe {
        let t = core::ptr::addr_of_mut!(TABLES[cpu].tss.rsp);
        core::ptr::write_unaligned(t as *mut u64, top);
    }
}

/// The C-ABI entry every stub calls.
#[no_mangle]
extern "C" fn trap_entry(f: &mut TrapFrame) {
    let cpu = percpu::this_cpu();
    match f.vector as u8 {
        1 => crate::dr::on_debug_exception(cpu, f),
        2 => crate::smp::on_nmi(cpu, f),
        3 => crate::on_breakpoint(cpu, f),
        VEC_DR_SYNC => {
            crate::apic::eoi();
            crate::dr::apply_pending(cpu);
        }
        VEC_STOP => {
            crate::apic::eoi();
            crate::smp::on_stop_ipi(cpu, f);
        }
        VEC_TIMER => {
            crate::apic::eoi();
            crate::sched::on_timer(cpu, f);
        }
        crate::smp::VEC_WORK => crate::apic::eoi(),
        VEC_SPURIOUS => {}
        v => crate::fatal_trap(cpu, v, f),
    }
}

/// Interrupts on.
pub fn enable_irqs() {
    // SAFETY: the IDT and this CPU's TSS are loaded before any caller runs.
    unsafe { asm!("sti", options(nomem, nostack)) }
}

/// Interrupts off; returns whether they were on.
pub fn disable_irqs() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS and clears IF; no memory is touched.
    unsafe { asm!("pushfq", "pop {}", "cli", out(reg) flags, options(nomem)) };
    flags & RFLAGS_IF != 0
}

/// Run `f` with interrupts off, restoring the previous state after.
pub fn without_irqs<R>(f: impl FnOnce() -> R) -> R {
    let was = disable_irqs();
    let r = f();
    if was {
        enable_irqs();
    }
    r
}
