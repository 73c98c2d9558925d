/* SPDX-License-Identifier: MIT */
/* braid — `braid profile`: run a command, say what it waits on and which model fits. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <braid.h>
#include <braid/profile.h>

#include "commands.h"

void cmd_profile_help(FILE *out) {
  fprintf(out,
          "usage: braid profile [--json] [--interval MS] [--trace FILE] -- CMD [ARGS...]\n"
          "\n"
          "Runs CMD and watches every thread of every process it starts (also orphaned\n"
          "and daemonised ones) until all of them have exited, then prints\n"
          "  - the verdict: cpu-bound, io-bound or mixed, with parallel, serialized\n"
          "    (threads taking turns on one core: a lock or interpreter lock), starved\n"
          "    (waiting for a CPU) or too-short where it applies;\n"
          "  - where the time went: on CPU, waiting for a CPU, network, pipe, disk,\n"
          "    sleep, lock, child, idle, as fractions of the threads' time;\n"
          "  - the evidence, and what to use, in braid's terms and in Python's.\n"
          "It exits with CMD's exit status (128+N if a signal N killed it).\n"
          "\n"
          "  --json          one JSON object instead of text\n"
          "  --interval MS   sampling interval once warmed up (default 100)\n"
          "  --trace FILE    also write the samples as Chrome/Perfetto trace JSON\n");
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "braid profile: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (see 'braid help profile')\n");
  return BRAID_EXIT_USAGE;
}

int cmd_profile(int argc, char **argv) {
  bool json = false;
  br_profile_opts opts = {0};
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--")) {
      i++;
      break;
    } else if (!strcmp(a, "--json")) {
      json = true;
    } else if (!strcmp(a, "--interval") || !strcmp(a, "--trace")) {
      if (i + 1 >= argc) return usage_error("%s needs a value", a);
      const char *v = argv[++i];
      if (!strcmp(a, "--trace")) {
        /* "--trace -- CMD" forgot the file: "--" is not meant as its name. */
        if (!*v || !strcmp(v, "--")) return usage_error("%s", "--trace needs a file name");
        opts.trace_path = v;
        continue;
      }
      char *end;
      errno = 0;
      long ms = strtol(v, &end, 10);
      if (errno || *end || end == v || ms < 1 || ms > 60000)
        return usage_error("--interval wants milliseconds from 1 to 60000, not '%s'", v);
      opts.interval_ms = (int)ms;
    } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      cmd_profile_help(stdout);
      return BRAID_EXIT_OK;
    } else if (a[0] == '-') {
      return usage_error("unknown option '%s'", a);
    } else {
      break; /* the command, without a "--" */
    }
  }
  if (i >= argc) return usage_error("%s", "no command to run: braid profile -- CMD [ARGS...]");
  /* Checked before the command runs: the profiler's own "cannot open" would
   * read as the command's, and the command would have run for nothing. */
  /* A file this check creates is removed again if the command cannot run:
   * a typo in the command leaves nothing behind. */
  bool created = false;
  if (opts.trace_path) {
    int fd = open(opts.trace_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) created = true;
    else if (errno == EEXIST) fd = open(opts.trace_path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) {
      fprintf(stderr, "braid profile: cannot write the trace file '%s': %s\n", opts.trace_path,
              br_strerror(-errno));
      return BRAID_EXIT_USAGE;
    }
    close(fd);
  }

  br_profile_report r;
  int rc = br_profile_command(&r, &argv[i], &opts);
  if (rc) {
    if (created) (void)unlink(opts.trace_path);
    fprintf(stderr, "braid profile: cannot run '%s': %s\n", argv[i], br_strerror(rc));
    return rc == BR_ENOENT ? 127 : 126;
  }
  if (json) br_profile_print_json(stdout, &r);
  else br_profile_print(stderr, &r); /* stdout stays the command's */
  int status = WIFEXITED(r.exit_status)     ? WEXITSTATUS(r.exit_status)
               : WIFSIGNALED(r.exit_status) ? 128 + WTERMSIG(r.exit_status)
                                            : BRAID_EXIT_FAIL;
  if (r.trace_error) {
    fprintf(stderr, "braid profile: writing the trace file '%s' failed: %s\n", opts.trace_path,
            br_strerror(r.trace_error));
    if (!status) status = BRAID_EXIT_FAIL;
  }
  /* A JSON report lost to a full disk or a closed stdout must not look like
   * a clean run: say so, and fail unless the command's own status already
   * does. */
  if (json && (fflush(stdout) != 0 || ferror(stdout))) {
    fprintf(stderr, "braid profile: writing the report failed: %s\n",
            br_strerror(-(errno ? errno : EIO)));
    return status ? status : BRAID_EXIT_FAIL;
  }
  fflush(stdout);
  return status;
}
