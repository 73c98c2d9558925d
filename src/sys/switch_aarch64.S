/* SPDX-License-Identifier: MIT */
/* braid — context switch for aarch64 (AAPCS64, "Procedure Call Standard for
 * the Arm 64-bit Architecture", section 6.1.1: x19-x28, x29 (fp), x30 (lr),
 * sp and the low 64 bits of v8-v15 are callee-saved; FPCR is preserved).
 *
 * br__ctx_switch(br__ctx *from [x0], br__ctx *to [x1])
 *
 * Frame at a saved sp (176 bytes, 16-byte aligned):
 *   sp+0   x19 x20   (new context: x19 = fn, x20 = arg)
 *   sp+16  x21 x22
 *   sp+32  x23 x24
 *   sp+48  x25 x26
 *   sp+64  x27 x28
 *   sp+80  x29 x30   (new context: fp = 0, lr = br__ctx_start)
 *   sp+96  d8  d9
 *   sp+112 d10 d11
 *   sp+128 d12 d13
 *   sp+144 d14 d15
 *   sp+160 fpcr, pad
 */
        .text
        .globl  br__ctx_switch
        .type   br__ctx_switch, %function
        .p2align 4
br__ctx_switch:
        .cfi_startproc
        sub     sp, sp, #176
        stp     x19, x20, [sp, #0]
        stp     x21, x22, [sp, #16]
        stp     x23, x24, [sp, #32]
        stp     x25, x26, [sp, #48]
        stp     x27, x28, [sp, #64]
        stp     x29, x30, [sp, #80]
        stp     d8, d9, [sp, #96]
        stp     d10, d11, [sp, #112]
        stp     d12, d13, [sp, #128]
        stp     d14, d15, [sp, #144]
        mrs     x9, fpcr
        str     x9, [sp, #160]
        mov     x9, sp
        str     x9, [x0]
        ldr     x9, [x1]
        mov     sp, x9
        ldp     x19, x20, [sp, #0]
        ldp     x21, x22, [sp, #16]
        ldp     x23, x24, [sp, #32]
        ldp     x25, x26, [sp, #48]
        ldp     x27, x28, [sp, #64]
        ldp     x29, x30, [sp, #80]
        ldp     d8, d9, [sp, #96]
        ldp     d10, d11, [sp, #112]
        ldp     d12, d13, [sp, #128]
        ldp     d14, d15, [sp, #144]
        ldr     x9, [sp, #160]
        msr     fpcr, x9
        add     sp, sp, #176
        ret
        .cfi_endproc
        .size   br__ctx_switch, .-br__ctx_switch

/* First code a new context runs: fn(arg); fn never returns. */
        .globl  br__ctx_start
        .type   br__ctx_start, %function
        .p2align 4
br__ctx_start:
        .cfi_startproc
        .cfi_undefined x30
        mov     x0, x20
        blr     x19
        bl      br__ctx_fell_off
        brk     #0
        .cfi_endproc
        .size   br__ctx_start, .-br__ctx_start

        .section .note.GNU-stack,"",@progbits
