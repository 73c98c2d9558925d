/* SPDX-License-Identifier: MIT */
/* braid — CPUs this process may use (sys layer); the public br_cpu_count
 * (core/util.c) returns this. */
#ifndef BRAID_SYS_CPU_H
#define BRAID_SYS_CPU_H

/* The CPUs this process may really use: its affinity mask, capped by the
 * cgroup (v1 and v2) CPU quota of its own and every parent cgroup, rounded
 * up; at least 1. Reads /proc and /sys on every call. */
int br__cpu_count(void);

#endif
