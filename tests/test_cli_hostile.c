/* SPDX-License-Identifier: MIT */
/* The `braid` command used the way a hostile (or unlucky) user does: Ctrl-C
 * and kill during `braid profile`, output into a full disk, a trace read
 * from a FIFO, a command that cannot run next to an existing trace file.
 * Each test runs the built binary (build/tools/braid/braid). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

static char braid_cli[PATH_MAX + 32], tmpdir[PATH_MAX];

typedef struct run {
  int status; /* exit code, or -N if signal N killed braid */
  char out[16384];
  char err[8192];
} run;

static void read_all(int fd, char *buf, size_t size) {
  size_t n = strlen(buf);
  ssize_t r;
  while (n + 1 < size && (r = read(fd, buf + n, size - 1 - n)) != 0) {
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    n += (size_t)r;
  }
  buf[n] = '\0';
}

/* Start braid with args; its stdout and stderr are pipes (*out, *err), or
 * stdout is the file stdout_path. alarm_s > 0: SIGALRM (kept across exec)
 * kills braid if it hangs, so a hang fails the test instead of stalling it. */
static pid_t start_braid(const char *const *args, const char *stdout_path, unsigned alarm_s,
                         int *out, int *err) {
  char *argv[24];
  int n = 0;
  argv[n++] = braid_cli;
  for (; *args && n < 23; args++) argv[n++] = (char *)*args;
  argv[n] = NULL;
  int o[2], e[2];
  assert_int_equal(pipe(o), 0);
  assert_int_equal(pipe(e), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* A test runner may have started us with these ignored (a shell's
     * background job): braid must see them as a user's shell gives them. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    dup2(o[1], 1);
    if (stdout_path) {
      int fd = open(stdout_path, O_WRONLY);
      if (fd < 0) _exit(121);
      dup2(fd, 1);
    }
    dup2(e[1], 2);
    close(o[0]);
    close(e[0]);
    if (alarm_s) alarm(alarm_s);
    execv(braid_cli, argv);
    _exit(120);
  }
  close(o[1]);
  close(e[1]);
  *out = o[0];
  *err = e[0];
  return pid;
}

static void finish_braid(run *r, pid_t pid, int out, int err) {
  read_all(out, r->out, sizeof r->out);
  read_all(err, r->err, sizeof r->err);
  close(out);
  close(err);
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

static void run_braid(run *r, const char *const *args, const char *stdout_path) {
  memset(r, 0, sizeof *r);
  int out, err;
  pid_t pid = start_braid(args, stdout_path, 60, &out, &err);
  finish_braid(r, pid, out, err);
}

/* ------------------------------------------------------------------------ */

/* A signal sent to `braid profile` (kill, or a supervisor stopping it) used
 * to kill the profiler with no report and leave the command running,
 * orphaned. It is passed on to the command; the profile ends as the command
 * does: the report, and exit status 128 + N. */
static void profile_passes_signals_on(int sig) {
  run r;
  memset(&r, 0, sizeof r);
  int out, err;
  const char *args[] = {"profile", "--json", "--", "sh", "-c", "echo $$; exec sleep 60", NULL};
  pid_t pid = start_braid(args, NULL, 120, &out, &err);
  /* The command's first line is its pid: it is running, so braid has set
   * up everything it does before starting it. */
  size_t n = 0;
  while (n + 1 < sizeof r.out && !memchr(r.out, '\n', n)) {
    ssize_t got = read(out, r.out + n, sizeof r.out - 1 - n);
    if (got < 0 && errno == EINTR) continue;
    assert_true(got > 0);
    n += (size_t)got;
  }
  r.out[n] = '\0';
  pid_t cmd = (pid_t)atoi(r.out);
  assert_true(cmd > 1);
  assert_int_equal(kill(pid, sig), 0);
  finish_braid(&r, pid, out, err);
  bool cmd_alive = kill(cmd, 0) == 0;
  if (cmd_alive) (void)kill(cmd, SIGKILL); /* no orphan left behind by a failing run */
  if (r.status != 128 + sig)
    fprintf(stderr, "braid profile after signal %d: status %d\nstdout: %s\nstderr: %s\n", sig,
            r.status, r.out, r.err);
  assert_int_equal(r.status, 128 + sig);
  assert_false(cmd_alive);
  char want[64];
  snprintf(want, sizeof want, "\"exit_status\":%d,\"signal\":%d", 128 + sig, sig);
  assert_non_null(strstr(r.out, want));
  assert_non_null(strstr(r.out, "\"verdict\":"));
}

static void profile_sigint_reports(void **state) {
  (void)state;
  profile_passes_signals_on(SIGINT);
}

static void profile_sigterm_reports(void **state) {
  (void)state;
  profile_passes_signals_on(SIGTERM);
}

/* Help and version into a full disk (or a closed stdout) used to exit 0 with
 * nothing written. */
static void help_and_version_into_full_disk_fail(void **state) {
  (void)state;
  if (access("/dev/full", W_OK) != 0) skip();
  static const char *const cases[][4] = {
      {"--version", NULL},        {"version", NULL},         {"--help", NULL},
      {"help", NULL},             {"help", "compare", NULL}, {"compare", "--help", NULL},
      {"profile", "--help", NULL}, {"trace", "--help", NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    run r;
    run_braid(&r, cases[i], "/dev/full");
    if (r.status != 1) fprintf(stderr, "braid %s %s: status %d\n", cases[i][0],
                               cases[i][1] ? cases[i][1] : "", r.status);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "No space left on device"));
    assert_null(strchr(strchr(r.err, '\n') + 1, '\n')); /* one line */
  }
  /* The same commands to a working stdout still succeed. */
  run r;
  const char *v[] = {"--version", NULL};
  run_braid(&r, v, NULL);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "braid "));
}

/* A trace file that cannot be written in full (a full disk) used to be lost
 * in silence, exit 0: the report still comes, the loss is said in one line,
 * and braid fails unless the command's own status already does. */
static void profile_trace_write_failure_said(void **state) {
  (void)state;
  if (access("/dev/full", W_OK) != 0) skip();
  run r;
  const char *ok[] = {"profile", "--json", "--trace", "/dev/full", "--", "true", NULL};
  run_braid(&r, ok, NULL);
  assert_int_equal(r.status, 1);
  assert_non_null(strstr(r.out, "\"verdict\""));
  assert_non_null(strstr(r.err, "writing the trace file '/dev/full' failed"));
  const char *three[] = {"profile", "--json", "--trace", "/dev/full", "--", "sh", "-c", "exit 3", NULL};
  run_braid(&r, three, NULL);
  assert_int_equal(r.status, 3);
  assert_non_null(strstr(r.err, "writing the trace file"));
  /* A trace that can be written: no message, the command's status. */
  char path[PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/ok-trace.json", tmpdir);
  const char *fine[] = {"profile", "--json", "--trace", path, "--", "true", NULL};
  run_braid(&r, fine, NULL);
  assert_int_equal(r.status, 0);
  assert_null(strstr(r.err, "trace file"));
  unlink(path);
}

/* A trace with no task slices (what `braid profile --trace` writes) is read
 * again for its threads; from a FIFO or a pipe (`braid trace show
 * <(zcat t.gz)`) the second open waited for a writer for ever. */
static void trace_show_reads_a_fifo_once(void **state) {
  (void)state;
  char fifo[PATH_MAX + 16];
  snprintf(fifo, sizeof fifo, "%s/trace.fifo", tmpdir);
  assert_int_equal(mkfifo(fifo, 0600), 0);
  static const char trace[] =
      "{\"traceEvents\":[\n"
      "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":7,\"tid\":7,\"args\":{\"name\":\"worker\"}},\n"
      "{\"name\":\"cpu\",\"cat\":\"braid.profile\",\"ph\":\"X\",\"ts\":0,\"dur\":5000,\"pid\":7,"
      "\"tid\":7}\n]}\n";
  pid_t writer = fork();
  assert_true(writer >= 0);
  if (writer == 0) {
    alarm(60);
    int fd = open(fifo, O_WRONLY);
    if (fd < 0) _exit(1);
    ssize_t w = write(fd, trace, sizeof trace - 1);
    _exit(w == (ssize_t)(sizeof trace - 1) ? 0 : 1);
  }
  run r;
  const char *args[] = {"trace", "show", fifo, "--width", "40", NULL};
  run_braid(&r, args, NULL);
  int st;
  assert_int_equal(waitpid(writer, &st, 0), writer);
  unlink(fifo);
  if (r.status != 0) fprintf(stderr, "braid trace show FIFO: status %d\n%s\n", r.status, r.err);
  assert_int_equal(r.status, 0); /* not -SIGALRM: it did not hang */
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  assert_non_null(strstr(r.out, "worker"));
}

/* `braid profile --trace T -- typo` used to replace T, the trace of an
 * earlier run, with an empty trace, and to leave a new T behind. */
static void profile_trace_kept_when_command_cannot_run(void **state) {
  (void)state;
  char keep[PATH_MAX + 16], fresh[PATH_MAX + 16];
  snprintf(keep, sizeof keep, "%s/keep.json", tmpdir);
  snprintf(fresh, sizeof fresh, "%s/fresh.json", tmpdir);
  static const char old[] = "{\"traceEvents\":[]}\n";
  FILE *f = fopen(keep, "w");
  assert_non_null(f);
  fputs(old, f);
  assert_int_equal(fclose(f), 0);

  run r;
  const char *a1[] = {"profile", "--trace", keep, "--", "/nonexistent/braid-cmd", NULL};
  run_braid(&r, a1, NULL);
  assert_int_equal(r.status, 127);
  char buf[256] = {0};
  f = fopen(keep, "r");
  assert_non_null(f);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  assert_string_equal(buf, old);

  const char *a2[] = {"profile", "--trace", fresh, "--", "/nonexistent/braid-cmd", NULL};
  run_braid(&r, a2, NULL);
  assert_int_equal(r.status, 127);
  struct stat sb;
  assert_int_equal(stat(fresh, &sb), -1);
  assert_int_equal(errno, ENOENT);

  /* A command that runs still gets its trace. */
  const char *a3[] = {"profile", "--trace", keep, "--", "true", NULL};
  run_braid(&r, a3, NULL);
  assert_int_equal(r.status, 0);
  f = fopen(keep, "r");
  assert_non_null(f);
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  assert_non_null(strstr(buf, "displayTimeUnit"));
  unlink(keep);
}

int main(void) {
  if (br_test_emulated()) br_test_skip("runs the braid binary and its children natively");
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) br_test_skip("no /proc/self/exe");
  self[n] = '\0';
  char *slash = strrchr(self, '/');
  if (slash) *slash = '\0';
  snprintf(braid_cli, sizeof braid_cli, "%s/../tools/braid/braid", self);
  if (access(braid_cli, X_OK) != 0) br_test_skip("the braid tool is not built");
  snprintf(tmpdir, sizeof tmpdir, "/tmp/braid-cli-hostile-XXXXXX");
  if (!mkdtemp(tmpdir)) br_test_skip("no temporary directory");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(profile_sigint_reports),
      cmocka_unit_test(profile_sigterm_reports),
      cmocka_unit_test(help_and_version_into_full_disk_fail),
      cmocka_unit_test(profile_trace_write_failure_said),
      cmocka_unit_test(trace_show_reads_a_fifo_once),
      cmocka_unit_test(profile_trace_kept_when_command_cannot_run),
  };
  int failed = cmocka_run_group_tests_name("braid, used hostilely", tests, NULL, NULL);
  rmdir(tmpdir);
  return failed ? 1 : 0;
}
