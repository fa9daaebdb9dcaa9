//! From QEMU's 32-bit PVH entry (and the APs' 16-bit SIPI entry) to 64-bit
//! Rust.
//!
//! QEMU's `-kernel` loads this ELF and, finding the `XEN_ELFNOTE_PHYS32_ENTRY`
//! note, enters `pvh_start32` in 32-bit protected mode with paging off and
//! `ebx` = the physical address of the `hvm_start_info` block. We build
//! identity page tables for the low 4 GiB (2 MiB pages; the local APIC sits at
//! 0xFEE0_0000), enable PAE, long mode and paging, load a 64-bit GDT and jump
//! to 64-bit code. The pages carry the user bit so ring-3 tasks can run in the
//! same address space (no SMEP/SMAP: this kernel isolates nothing).
//!
//! An application processor starts in real mode at the trampoline the BSP
//! copied to [`TRAMPOLINE`]; it reuses the same page tables and GDT.

use core::arch::global_asm;

/// Physical address the AP trampoline is copied to (SIPI vector 0x08).
pub const TRAMPOLINE: usize = 0x8000;

global_asm!(
    r#"
    .section .note.pvh, "a"
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .long pvh_start32

    .section .bss
    .balign 4096
    .global boot_pml4
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4096 * 4
    .balign 16
boot_stack: .skip 65536
    .global boot_stack_top
boot_stack_top:

    .section .data
    .global pvh_start_info
pvh_start_info: .quad 0
    /* Per-AP entry: the stack top the BSP set before the SIPI. */
    .global ap_stack_top
ap_stack_top: .quad 0

    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit kernel code */
    .quad 0x00cf92000000ffff    /* 0x10: kernel data */
boot_gdt_end:
    .global boot_gdt_ptr
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    mov dword ptr [pvh_start_info], ebx
    /* pml4[0] -> pdpt, pdpt[0..4] -> pd[0..4]; every entry present|write|user. */
    lea eax, [boot_pdpt]
    or eax, 7
    mov dword ptr [boot_pml4], eax
    lea eax, [boot_pd]
    or eax, 7
    xor ecx, ecx
1:
    mov dword ptr [boot_pdpt + ecx * 8], eax
    add eax, 4096
    inc ecx
    cmp ecx, 4
    jb 1b
    /* 2048 2 MiB pages: identity map of 0..4 GiB (present|write|user|PS). */
    xor ecx, ecx
2:
    mov eax, ecx
    shl eax, 21
    or eax, 0x87
    mov dword ptr [boot_pd + ecx * 8], eax
    mov dword ptr [boot_pd + ecx * 8 + 4], 0
    inc ecx
    cmp ecx, 2048
    jb 2b
    .global long_mode_enter32
long_mode_enter32:
    lea eax, [boot_pml4]
    mov cr3, eax
    mov eax, cr4
    or eax, (1 << 5) | (1 << 9) | (1 << 10)    /* PAE, OSFXSR, OSXMMEXCPT */
    mov cr4, eax
    mov ecx, 0xc0000080                          /* EFER */
    rdmsr
    or eax, (1 << 8)                             /* LME */
    wrmsr
    mov eax, cr0
    and eax, ~(1 << 2)                           /* no x87 emulation */
    or eax, (1 << 31) | (1 << 1) | 1             /* PG, MP, PE */
    mov cr0, eax
    lgdt [boot_gdt_ptr]
    push 0x08
    lea eax, [start64]
    push eax
    retf

    .code64
start64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    /* An AP has its stack top in ap_stack_top; the BSP has 0 there. */
    mov rsp, qword ptr [ap_stack_top]
    test rsp, rsp
    jnz 3f
    lea rsp, [boot_stack_top]
    xor ebp, ebp
    call kernel_bsp_main
    ud2
3:
    mov qword ptr [ap_stack_top], 0
    xor ebp, ebp
    call kernel_ap_main
    ud2

    /* The AP trampoline: copied to 0x8000, entered in real mode by SIPI. */
    .code16
    .global ap_tramp_start
ap_tramp_start:
    cli
    xor ax, ax
    mov ds, ax
    /* lgdt [disp16]: the trampoline runs at 0x8000, not where it was linked. */
    .byte 0x0f, 0x01, 0x16
    .word 0x8000 + tramp_gdt_ptr - ap_tramp_start
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    /* ljmp 0x08:tramp32 (32-bit offset) */
    .byte 0x66, 0xea
    .long 0x8000 + tramp32 - ap_tramp_start
    .word 0x08
    .code32
tramp32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, 0x7ff0                 /* scratch stack below the trampoline for the far return */
    lea eax, [long_mode_enter32]
    jmp eax
    .balign 8
tramp_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: 32-bit flat code */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
tramp_gdt_ptr:
    .word 23
    .long 0x8000 + tramp_gdt - ap_tramp_start
    .global ap_tramp_end
ap_tramp_end:
    .code64
    .text
"#
);

extern "C" {
    static pvh_start_info: u64;
    static mut ap_stack_top: u64;
    static ap_tramp_start: u8;
    static ap_tramp_end: u8;
}

/// The physical address of the `hvm_start_info` block QEMU handed us.
pub fn start_info() -> u64 {
    // SAFETY: written once by the 32-bit entry before any Rust code runs.
    unsafe { core::ptr::addr_of!(pvh_start_info).read_volatile() }
}

/// Copy the AP trampoline to [`TRAMPOLINE`] and set the stack the next AP
/// starts on. Only one AP may be starting at a time.
pub fn prepare_ap(stack_top: u64) {
    // SAFETY: the trampoline bytes are in our image; 0x8000.. is free low
    // memory below the image (identity-mapped); APs start one at a time so
    // nobody reads ap_stack_top concurrently.
    unsafe {
        let start = core::ptr::addr_of!(ap_tramp_start);
        let len = core::ptr::addr_of!(ap_tramp_end) as usize - start as usize;
        core::ptr::copy_nonoverlapping(start, TRAMPOLINE as *mut u8, len);
        core::ptr::addr_of_mut!(ap_stack_top).write_volatile(stack_top);
    }
}

/// Whether the last AP started has taken its stack (the entry zeroes it).
pub fn ap_took_stack() -> bool {
    // SAFETY: a plain volatile read of a word the AP entry clears.
    unsafe { core::ptr::addr_of!(ap_stack_top).read_volatile() == 0 }
}
