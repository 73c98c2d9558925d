/* SPDX-License-Identifier: MIT */
/* cpu.c — how many CPUs this process may really use (br_cpu_count).
 *
 * Three things cap a process's parallelism on Linux:
 *   1. its CPU affinity mask (taskset, cpuset cgroups, container runtimes);
 *   2. the CFS bandwidth quota of its cgroup (cgroup v1: cpu.cfs_quota_us /
 *      cpu.cfs_period_us; v2: cpu.max "QUOTA PERIOD" or "max PERIOD");
 *   3. the quota of every *ancestor* cgroup: the kernel throttles a group
 *      when any level above it runs out, so an unlimited leaf under a
 *      2-CPU parent gets 2 CPUs. Go's container-aware GOMAXPROCS first read
 *      only the leaf (golang/go#73193, #81180); we walk up to the root of
 *      the cgroup mount and take the smallest limit seen.
 *
 * The cgroup path in /proc/self/cgroup is relative to the hierarchy's root,
 * while the mount in /proc/self/mountinfo may expose only a sub-tree (field 4,
 * "root", e.g. inside a container without a cgroup namespace). The directory
 * for our group is therefore mountpoint + (path minus mount root). If the path
 * is not under the mount root (a cgroup namespace hides it), the mount point
 * itself is our group's nearest visible ancestor.
 *
 * Everything is read relative to a root prefix so tests can build fake /proc
 * and /sys trees (br__cpu_count_at); br_cpu_count() uses "" and the real
 * affinity mask. Any file that is missing or unreadable simply imposes no
 * limit: the answer degrades to the affinity count, never to an error.
 */
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <errno.h>

#include "sys/cpu.h"

/* Exported for tests/test_cpu_count.c only (declared there). */
int br__cpu_count_at(const char *root, int affinity);
double br__cpu_quota_at(const char *root);

/* Read a whole small file into buf (NUL-terminated). false if it cannot. */
static bool read_small(const char *path, char *buf, size_t size) {
  FILE *f = fopen(path, "re");
  if (!f) return false;
  size_t n = fread(buf, 1, size - 1, f);
  bool ok = !ferror(f);
  fclose(f);
  buf[n] = '\0';
  return ok && n > 0;
}

/* Undo mountinfo's octal escapes (\040 space, \011 tab, \012 newline, \134
 * backslash) in place. */
static void unescape_octal(char *s) {
  char *d = s;
  while (*s) {
    if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' &&
        s[3] <= '7') {
      *d++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
      s += 4;
    } else {
      *d++ = *s++;
    }
  }
  *d = '\0';
}

/* Whether the comma-separated list contains exactly the token tok. */
static bool has_token(const char *list, const char *tok) {
  size_t n = strlen(tok);
  const char *p = list;
  while (p && *p) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == n && strncmp(p, tok, n) == 0) return true;
    p = e ? e + 1 : NULL;
  }
  return false;
}

/* The group limit in one directory as a CPU count (quota / period), or
 * INFINITY when unlimited or unreadable. v2 reads cpu.max, v1 the cfs pair. */
static double dir_limit(const char *dir, bool v2) {
  char path[PATH_MAX + 32], buf[128];
  if (v2) {
    if (snprintf(path, sizeof path, "%s/cpu.max", dir) >= (int)sizeof path) return INFINITY;
    if (!read_small(path, buf, sizeof buf)) return INFINITY;
    if (strncmp(buf, "max", 3) == 0) return INFINITY;
    char *end;
    long long quota = strtoll(buf, &end, 10);
    if (end == buf) return INFINITY;
    long long period = strtoll(end, NULL, 10);
    if (quota <= 0 || period <= 0) return INFINITY;
    return (double)quota / (double)period;
  }
  if (snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir) >= (int)sizeof path) return INFINITY;
  if (!read_small(path, buf, sizeof buf)) return INFINITY;
  long long quota = strtoll(buf, NULL, 10);
  if (quota <= 0) return INFINITY; /* -1: unlimited */
  snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
  if (!read_small(path, buf, sizeof buf)) return INFINITY;
  long long period = strtoll(buf, NULL, 10);
  if (period <= 0) return INFINITY;
  return (double)quota / (double)period;
}

/* The smallest limit from our group's directory up to (and including) the
 * mount point. root is the test prefix, mnt the mount point (as listed in
 * mountinfo), mroot the mount's root within the hierarchy, cg our path. */
static double hierarchy_limit(const char *root, const char *mnt, const char *mroot,
                              const char *cg, bool v2) {
  char base[PATH_MAX], dir[PATH_MAX];
  if (snprintf(base, sizeof base, "%s%s", root, mnt) >= (int)sizeof base) return INFINITY;
  size_t rl = strlen(mroot);
  const char *rel = NULL;
  if (strcmp(mroot, "/") == 0) {
    rel = cg;
  } else if (strncmp(cg, mroot, rl) == 0 && (cg[rl] == '/' || cg[rl] == '\0')) {
    rel = cg + rl;
  }
  if (!rel) rel = ""; /* our group is not visible: the mount is the nearest ancestor */
  while (*rel == '/') rel++;
  if (snprintf(dir, sizeof dir, "%s%s%s", base, *rel ? "/" : "", rel) >= (int)sizeof dir)
    return INFINITY;

  size_t blen = strlen(base);
  while (blen > 1 && base[blen - 1] == '/') base[--blen] = '\0';
  double best = INFINITY;
  for (;;) {
    double l = dir_limit(dir, v2);
    if (l < best) best = l;
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dir[--dl] = '\0';
    if (dl <= blen) break; /* reached the mount point */
    char *slash = strrchr(dir, '/');
    if (!slash || (size_t)(slash - dir) < blen) break;
    *slash = '\0';
  }
  return best;
}

/* br__cpu_quota_at: the smallest CPU quota (in CPUs, fractional) that any
 * cgroup level visible under root imposes on this process, or INFINITY. */
double br__cpu_quota_at(const char *root) {
  char path[PATH_MAX];
  /* Our paths: the v2 one ("0::/path") and the v1 hierarchy holding "cpu". */
  char v2path[PATH_MAX] = "", v1path[PATH_MAX] = "";
  bool have_v2 = false, have_v1 = false;
  snprintf(path, sizeof path, "%s/proc/self/cgroup", root);
  FILE *f = fopen(path, "re");
  if (!f) return INFINITY;
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  while ((len = getline(&line, &cap, f)) > 0) {
    if (line[len - 1] == '\n') line[--len] = '\0';
    char *c1 = strchr(line, ':');
    if (!c1) continue;
    char *c2 = strchr(c1 + 1, ':');
    if (!c2) continue;
    *c2 = '\0';
    const char *ctrls = c1 + 1, *cg = c2 + 1;
    if (strlen(cg) >= PATH_MAX) continue;
    if (strncmp(line, "0:", 2) == 0 && *ctrls == '\0') {
      strcpy(v2path, cg);
      have_v2 = true;
    } else if (has_token(ctrls, "cpu")) {
      strcpy(v1path, cg);
      have_v1 = true;
    }
  }
  fclose(f);

  double best = INFINITY;
  snprintf(path, sizeof path, "%s/proc/self/mountinfo", root);
  f = fopen(path, "re");
  if (!f) {
    free(line);
    return INFINITY;
  }
  while ((len = getline(&line, &cap, f)) > 0) {
    if (line[len - 1] == '\n') line[--len] = '\0';
    /* id parent maj:min root mountpoint opts [optional...] - fstype source super */
    char *fields[6];
    char *save = NULL, *p = line;
    int nf = 0;
    for (char *tok; nf < 6 && (tok = strtok_r(p, " ", &save)); p = NULL) fields[nf++] = tok;
    if (nf < 6) continue;
    char *dash = NULL;
    for (char *tok; (tok = strtok_r(NULL, " ", &save));) {
      if (strcmp(tok, "-") == 0) {
        dash = tok;
        break;
      }
    }
    if (!dash) continue;
    char *fstype = strtok_r(NULL, " ", &save);
    char *source = strtok_r(NULL, " ", &save);
    char *super = strtok_r(NULL, " ", &save);
    (void)source;
    if (!fstype) continue;
    char *mroot = fields[3], *mnt = fields[4];
    unescape_octal(mroot);
    unescape_octal(mnt);
    double l = INFINITY;
    if (have_v2 && strcmp(fstype, "cgroup2") == 0) {
      l = hierarchy_limit(root, mnt, mroot, v2path, true);
    } else if (have_v1 && strcmp(fstype, "cgroup") == 0 && super && has_token(super, "cpu")) {
      l = hierarchy_limit(root, mnt, mroot, v1path, false);
    }
    if (l < best) best = l;
  }
  fclose(f);
  free(line);
  return best;
}

int br__cpu_count_at(const char *root, int affinity) {
  if (affinity < 1) affinity = 1;
  double q = br__cpu_quota_at(root);
  if (isfinite(q)) {
    double c = ceil(q - 1e-9); /* 1.5 CPUs -> 2; 2.0000000001 (rounding) -> 2 */
    if (c < 1) c = 1;
    if (c < affinity) return (int)c;
  }
  return affinity;
}

/* The number of CPUs in our affinity mask, sized for machines with more
 * CPUs than a static cpu_set_t holds (1024). */
static int affinity_count(void) {
  for (int n = 1024; n <= (1 << 20); n *= 2) {
    cpu_set_t *set = CPU_ALLOC(n);
    if (!set) break;
    size_t sz = CPU_ALLOC_SIZE(n);
    CPU_ZERO_S(sz, set);
    if (sched_getaffinity(0, sz, set) == 0) {
      int c = CPU_COUNT_S(sz, set);
      CPU_FREE(set);
      return c > 0 ? c : 1;
    }
    CPU_FREE(set);
    if (errno != EINVAL) break;
  }
  long c = sysconf(_SC_NPROCESSORS_ONLN);
  return c > 0 ? (int)(c > INT_MAX ? INT_MAX : c) : 1;
}

int br__cpu_count(void) { return br__cpu_count_at("", affinity_count()); }
