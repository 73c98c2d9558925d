/* SPDX-License-Identifier: MIT */
/* braid — context switch for x86-64 (System V psABI, section 3.2).
 *
 * br__ctx_switch(br__ctx *from [rdi], br__ctx *to [rsi])
 *
 * Saves the callee-saved registers (rbx, rbp, r12-r15), the SSE control word
 * (MXCSR) and the x87 control word on the current stack, stores rsp in
 * from->sp, loads to->sp and restores the same frame from there. Everything
 * else is caller-saved, so the C caller has already spilled it.
 *
 * Frame at a saved sp (low to high addresses):
 *   sp+0   mxcsr (4 bytes) | x87 control word (2 bytes) | pad
 *   sp+8   r15
 *   sp+16  r14
 *   sp+24  r13      (new context: fn)
 *   sp+32  r12      (new context: arg)
 *   sp+40  rbx
 *   sp+48  rbp      (new context: 0, ends frame-pointer backtraces)
 *   sp+56  return address (new context: br__ctx_start)
 */
        .text
        .globl  br__ctx_switch
        .type   br__ctx_switch, @function
        .p2align 4
br__ctx_switch:
        .cfi_startproc
        pushq   %rbp
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        subq    $8, %rsp
        stmxcsr (%rsp)
        fnstcw  4(%rsp)
        movl    (%rsp), %ecx        /* our MXCSR, to compare below */
        movzwl  4(%rsp), %edx       /* our x87 control word */
        movq    %rsp, (%rdi)
        movq    (%rsi), %rsp
        /* Loading MXCSR and the x87 control word is microcoded and slow;
         * they rarely differ between contexts, so load them only on change. */
        cmpl    (%rsp), %ecx
        je      1f
        ldmxcsr (%rsp)
1:      cmpw    4(%rsp), %dx
        je      2f
        fldcw   4(%rsp)
2:      addq    $8, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
        /* `ret`, not `pop; jmp`: braid switches from a handful of call sites
         * shared by every task, so the return-stack predictor is right; with
         * an indirect jump the unbalanced call would make the *next* return
         * mispredict instead (measured: yield ping-pong 11 ns with ret,
         * 17+ ns with jmp; bench/ctx_switch.c shows both cases). */
        ret
        .cfi_endproc
        .size   br__ctx_switch, .-br__ctx_switch

/* First code a new context runs: call fn(arg); fn never returns. */
        .globl  br__ctx_start
        .type   br__ctx_start, @function
        .p2align 4
br__ctx_start:
        .cfi_startproc
        .cfi_undefined rip
        movq    %r12, %rdi
        callq   *%r13
        callq   br__ctx_fell_off
        ud2
        .cfi_endproc
        .size   br__ctx_start, .-br__ctx_start

        .section .note.GNU-stack,"",@progbits
