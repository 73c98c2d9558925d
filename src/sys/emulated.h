/* SPDX-License-Identifier: MIT */
/* braid — whether we run under a user-mode emulator (sys layer). */
#ifndef BRAID_SYS_EMULATED_H
#define BRAID_SYS_EMULATED_H

#include <stdbool.h>

/* br__emulated: true under a user-mode emulator such as qemu-user: the
 * kernel's architecture (/proc/sys/kernel/arch, which qemu does not fake,
 * unlike uname) differs from the one this code was compiled for. Some
 * kernel features are invisible to such an emulator (guard pages installed
 * with madvise, exec of /proc/self/exe without binfmt_misc). Cached. */
bool br__emulated(void);

#endif
