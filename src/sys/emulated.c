/* SPDX-License-Identifier: MIT */
/* braid — user-mode emulator detection; see emulated.h. */
#include "sys/emulated.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

static bool detect(void) {
#if defined(__x86_64__)
  static const char me[] = "x86_64";
#elif defined(__aarch64__)
  static const char me[] = "aarch64";
#elif defined(__riscv) && __riscv_xlen == 64
  static const char me[] = "riscv64";
#else
  static const char me[] = "";
#endif
  if (!me[0]) return false;
  char buf[32] = {0};
  int fd = open("/proc/sys/kernel/arch", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return false;
  buf[strcspn(buf, "\n")] = 0;
  return strcmp(buf, me) != 0;
}

bool br__emulated(void) {
  static atomic_int cached = -1; /* racing first calls compute the same */
  int v = atomic_load_explicit(&cached, memory_order_relaxed);
  if (v < 0) {
    v = detect();
    atomic_store_explicit(&cached, v, memory_order_relaxed);
  }
  return v;
}
