// clone3 that runs a function on a stack of its own in the child: what
// vfork-style starts (CLONE_VM | CLONE_VFORK) need, since the child must not
// return through the caller's frames, which the parent still owns. glibc has
// no public clone3 wrapper, so this is a few lines of assembly per
// architecture; elsewhere the call fails with ENOSYS (callers check
// sys::kHaveClone3Fn and clone fork-style).
#include "util/syscalls.h"

#include <cerrno>

#if defined(__x86_64__)
// long berth_clone3_fn(struct clone_args* args, size_t size, int (*fn)(void*), void* arg)
// rdi, rsi stay as the syscall's arguments; fn and arg go to callee-saved
// registers, which the child inherits. The kernel starts the child on
// args->stack + args->stack_size, 16-byte aligned by the caller.
asm(R"(
  .pushsection .text
  .globl berth_clone3_fn
  .hidden berth_clone3_fn
  .type berth_clone3_fn, @function
berth_clone3_fn:
  .cfi_startproc
  push %r12
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r12, 0
  push %r13
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r13, 0
  mov %rdx, %r12
  mov %rcx, %r13
  mov $435, %eax
  syscall
  test %rax, %rax
  jnz 1f
  .cfi_remember_state
  .cfi_undefined rip
  xor %ebp, %ebp
  mov %r13, %rdi
  call *%r12
  mov %eax, %edi
  mov $60, %eax
  syscall
  hlt
1:
  .cfi_restore_state
  pop %r13
  .cfi_adjust_cfa_offset -8
  .cfi_restore %r13
  pop %r12
  .cfi_adjust_cfa_offset -8
  .cfi_restore %r12
  ret
  .cfi_endproc
  .size berth_clone3_fn, .-berth_clone3_fn
  .popsection
)");
extern "C" long berth_clone3_fn(struct clone_args* args, size_t size, int (*fn)(void*), void* arg);
#endif

namespace berth::sys {

long clone3_fn(struct clone_args* args, int (*fn)(void*), void* arg) {
#if defined(__x86_64__)
  long r = berth_clone3_fn(args, sizeof(*args), fn, arg);
  if (r < 0 && r > -4096) {
    errno = static_cast<int>(-r);
    return -1;
  }
  return r;
#else
  (void)args, (void)fn, (void)arg;
  errno = ENOSYS;
  return -1;
#endif
}

}  // namespace berth::sys
