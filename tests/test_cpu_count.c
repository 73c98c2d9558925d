/* SPDX-License-Identifier: MIT */
/* test_cpu_count — br_cpu_count: the affinity mask capped by the CFS quota
 * of the process's cgroup and of every ancestor, cgroup v1 and v2.
 *
 * The parsing is tested on fake /proc and /sys trees built in a temporary
 * directory (br__cpu_count_at reads everything under a root prefix); the
 * real function is checked against the affinity mask of this process. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

/* Internal entry points of src/sys/cpu.c. */
int br__cpu_count_at(const char *root, int affinity);
double br__cpu_quota_at(const char *root);

/* Paths here are short; fixed buffers keep the helpers simple. */
static char root[256];

static void mkdirs(const char *rel) { /* rel: at most 500 bytes */
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  for (char *p = path + strlen(root) + 1; *p; p++) {
    if (*p == '/') {
      *p = '\0';
      mkdir(path, 0755);
      *p = '/';
    }
  }
  mkdir(path, 0755);
}

static void put(const char *rel, const char *text) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  char dir[512];
  snprintf(dir, sizeof dir, "%.500s", rel);
  char *slash = strrchr(dir, '/');
  if (slash) {
    *slash = '\0';
    mkdirs(dir);
  }
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static int setup(void **state) {
  (void)state;
  snprintf(root, sizeof root, "/tmp/braid-cpu-XXXXXX");
  if (!mkdtemp(root)) return -1;
  return 0;
}

static int teardown(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  return system(cmd) == 0 ? 0 : -1;
}

#define V2_MOUNT "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"

static void test_no_cgroup_files(void **state) {
  (void)state;
  assert_int_equal(br__cpu_count_at(root, 8), 8);
  assert_true(isinf(br__cpu_quota_at(root)));
  assert_int_equal(br__cpu_count_at(root, 0), 1);
}

static void test_v2_leaf_quota(void **state) {
  (void)state;
  put("proc/self/cgroup", "0::/user.slice/app.scope\n");
  put("proc/self/mountinfo", V2_MOUNT);
  put("sys/fs/cgroup/user.slice/app.scope/cpu.max", "300000 100000\n");
  assert_int_equal(br__cpu_count_at(root, 8), 3);
  /* Fractions round up: 1.5 CPUs -> 2, 0.5 -> 1. */
  put("sys/fs/cgroup/user.slice/app.scope/cpu.max", "150000 100000\n");
  assert_int_equal(br__cpu_count_at(root, 8), 2);
  put("sys/fs/cgroup/user.slice/app.scope/cpu.max", "50000 100000\n");
  assert_int_equal(br__cpu_count_at(root, 8), 1);
  /* The affinity mask is smaller than the quota. */
  put("sys/fs/cgroup/user.slice/app.scope/cpu.max", "1600000 100000\n");
  assert_int_equal(br__cpu_count_at(root, 4), 4);
  put("sys/fs/cgroup/user.slice/app.scope/cpu.max", "max 100000\n");
  assert_int_equal(br__cpu_count_at(root, 8), 8);
}

/* golang/go#81180: the leaf is unlimited, a visible ancestor is not. */
static void test_v2_ancestor_quota(void **state) {
  (void)state;
  put("proc/self/cgroup", "0::/parent/leaf\n");
  put("proc/self/mountinfo", V2_MOUNT);
  put("sys/fs/cgroup/parent/leaf/cpu.max", "max 100000\n");
  put("sys/fs/cgroup/parent/cpu.max", "200000 100000\n");
  put("sys/fs/cgroup/cpu.max", "max 100000\n");
  assert_int_equal(br__cpu_count_at(root, 8), 2);
  /* The tightest level wins wherever it is. */
  put("sys/fs/cgroup/parent/leaf/cpu.max", "500000 100000\n");
  put("sys/fs/cgroup/cpu.max", "100000 100000\n");
  assert_int_equal(br__cpu_count_at(root, 8), 1);
  /* A different period at each level. */
  put("sys/fs/cgroup/parent/leaf/cpu.max", "250000 50000\n");
  put("sys/fs/cgroup/parent/cpu.max", "max 100000\n");
  put("sys/fs/cgroup/cpu.max", "7000000 1000000\n");
  assert_int_equal(br__cpu_count_at(root, 16), 5);
  /* A level with no cpu.max (controller not enabled there) imposes nothing. */
  char p[1024];
  snprintf(p, sizeof p, "%s/sys/fs/cgroup/parent/leaf/cpu.max", root);
  unlink(p);
  assert_int_equal(br__cpu_count_at(root, 16), 7);
}

/* A container whose cgroup mount exposes only its own sub-tree (mount root
 * /kubepods/pod1/c1) while /proc/self/cgroup shows the full path. */
static void test_v2_mount_root_subtree(void **state) {
  (void)state;
  put("proc/self/cgroup", "0::/kubepods/pod1/c1/worker\n");
  put("proc/self/mountinfo",
      "22 1 0:20 / / rw - overlay overlay rw\n"
      "30 22 0:26 /kubepods/pod1/c1 /sys/fs/cgroup ro,nosuid shared:9 - cgroup2 cgroup2 rw\n");
  put("sys/fs/cgroup/worker/cpu.max", "max 100000\n");
  put("sys/fs/cgroup/cpu.max", "250000 100000\n");
  assert_int_equal(br__cpu_count_at(root, 64), 3);
  /* Namespaced: /proc/self/cgroup says "/" but the mount root says
   * otherwise; the mount point is the nearest visible ancestor. */
  put("proc/self/cgroup", "0::/\n");
  assert_int_equal(br__cpu_count_at(root, 64), 3);
  /* A path outside the mount root entirely: also the mount point. */
  put("proc/self/cgroup", "0::/elsewhere/x\n");
  assert_int_equal(br__cpu_count_at(root, 64), 3);
}

static void test_v1_hierarchy(void **state) {
  (void)state;
  put("proc/self/cgroup",
      "12:memory:/a/b\n"
      "4:cpu,cpuacct:/a/b\n"
      "1:name=systemd:/a/b\n");
  put("proc/self/mountinfo",
      "25 1 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
      "33 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
      "34 25 0:29 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n");
  put("sys/fs/cgroup/cpu,cpuacct/a/b/cpu.cfs_quota_us", "-1\n");
  put("sys/fs/cgroup/cpu,cpuacct/a/b/cpu.cfs_period_us", "100000\n");
  put("sys/fs/cgroup/cpu,cpuacct/a/cpu.cfs_quota_us", "350000\n");
  put("sys/fs/cgroup/cpu,cpuacct/a/cpu.cfs_period_us", "100000\n");
  put("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
  put("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  /* A memory hierarchy with a cpu-looking file must be ignored. */
  put("sys/fs/cgroup/memory/a/b/cpu.cfs_quota_us", "100000\n");
  put("sys/fs/cgroup/memory/a/b/cpu.cfs_period_us", "100000\n");
  assert_int_equal(br__cpu_count_at(root, 8), 4);
  put("sys/fs/cgroup/cpu,cpuacct/a/b/cpu.cfs_quota_us", "120000\n");
  assert_int_equal(br__cpu_count_at(root, 8), 2);
}

/* Docker on cgroup v1: the mount root is the container's own group. */
static void test_v1_container_mount_root(void **state) {
  (void)state;
  put("proc/self/cgroup", "5:cpu:/docker/abc123\n");
  put("proc/self/mountinfo",
      "40 30 0:33 /docker/abc123 /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup rw,cpu\n");
  put("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "100000\n");
  put("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
  assert_int_equal(br__cpu_count_at(root, 8), 1);
}

/* Hybrid: v1 cpu controller plus the unified v2 tree: the smallest wins. */
static void test_hybrid(void **state) {
  (void)state;
  put("proc/self/cgroup", "4:cpu:/svc\n0::/svc\n");
  put("proc/self/mountinfo",
      "33 25 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
      "35 25 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
  put("sys/fs/cgroup/cpu/svc/cpu.cfs_quota_us", "600000\n");
  put("sys/fs/cgroup/cpu/svc/cpu.cfs_period_us", "100000\n");
  put("sys/fs/cgroup/unified/svc/cpu.max", "200000 100000\n");
  assert_int_equal(br__cpu_count_at(root, 8), 2);
}

/* Mount points with spaces are octal-escaped in mountinfo. */
static void test_escaped_mount_point(void **state) {
  (void)state;
  put("proc/self/cgroup", "0::/g\n");
  put("proc/self/mountinfo", "30 25 0:26 / /my\\040cgroups rw - cgroup2 cgroup2 rw\n");
  put("my cgroups/g/cpu.max", "100000 100000\n");
  assert_int_equal(br__cpu_count_at(root, 8), 1);
}

/* Garbage in the files imposes no limit. */
static void test_garbage(void **state) {
  (void)state;
  put("proc/self/cgroup", "nonsense\n::\n0::/g\n");
  put("proc/self/mountinfo", "short line\n30 25 0:26 / /cg rw - cgroup2 cgroup2 rw\n");
  put("cg/g/cpu.max", "banana\n");
  assert_int_equal(br__cpu_count_at(root, 3), 3);
  put("cg/g/cpu.max", "-5 100000\n");
  assert_int_equal(br__cpu_count_at(root, 3), 3);
  put("cg/g/cpu.max", "100000 0\n");
  assert_int_equal(br__cpu_count_at(root, 3), 3);
}

static void test_real_machine(void **state) {
  (void)state;
  cpu_set_t set;
  CPU_ZERO(&set);
  assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
  int aff = CPU_COUNT(&set);
  int n = br_cpu_count();
  double q = br__cpu_quota_at("");
  fprintf(stderr, "br_cpu_count() = %d (affinity %d, cgroup quota %g CPUs)\n", n, aff, q);
  assert_true(n >= 1);
  assert_true(n <= aff);
  if (isinf(q)) assert_int_equal(n, aff);
  else assert_int_equal(n, (int)fmin(aff, fmax(1, ceil(q - 1e-9))));
  /* Restricting the affinity mask is seen at once. */
  if (aff >= 2) {
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int i = 0; i < CPU_SETSIZE; i++)
      if (CPU_ISSET(i, &set)) {
        CPU_SET(i, &one);
        break;
      }
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    assert_int_equal(br_cpu_count(), 1);
    assert_int_equal(sched_setaffinity(0, sizeof set, &set), 0);
    assert_int_equal(br_cpu_count(), n);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_no_cgroup_files, setup, teardown),
      cmocka_unit_test_setup_teardown(test_v2_leaf_quota, setup, teardown),
      cmocka_unit_test_setup_teardown(test_v2_ancestor_quota, setup, teardown),
      cmocka_unit_test_setup_teardown(test_v2_mount_root_subtree, setup, teardown),
      cmocka_unit_test_setup_teardown(test_v1_hierarchy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_v1_container_mount_root, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hybrid, setup, teardown),
      cmocka_unit_test_setup_teardown(test_escaped_mount_point, setup, teardown),
      cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
      cmocka_unit_test(test_real_machine),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
