/* SPDX-License-Identifier: MIT */
/* braid trace — draw a trace braid recorded (BRAID_TRACE=FILE, br_trace_write,
 * braid compare --trace): `show` in the terminal, `svg` as an SVG file. */
#include <errno.h>
#include <langinfo.h>
#include <locale.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "commands.h"
#include "trace_model.h"

void cmd_trace_help(FILE *out) {
  fprintf(out,
          "usage: braid trace show FILE [--threads] [--ascii] [--width N] [--rows N]\n"
          "       braid trace svg FILE [-o OUT.svg] [--threads] [--title TEXT]\n"
          "\n"
          "Draw a trace recorded with BRAID_TRACE=FILE (or br_trace_write, or\n"
          "braid compare --trace FILE): one row per task, or per thread with --threads.\n"
          "\n"
          "  show      the terminal timeline: \xe2\x96\x88 running, \xe2\x96\x91 waiting, - idle, fitted to\n"
          "            the terminal's width (--width N to choose); --ascii draws # ~ -\n"
          "            (also when the locale is not UTF-8). Rows of the same name are\n"
          "            grouped (name xN) beyond --rows N (default 40).\n"
          "  svg       a self-contained SVG: running, each kind of wait in its colour with a\n"
          "            legend, idle left blank, a time axis in real units; written to\n"
          "            OUT.svg (default: FILE with .svg for its extension; '-' for stdout).\n"
          "            Beyond 200 rows, rows of one name are grouped into a density row.\n"
          "\n"
          "Open FILE itself at https://ui.perfetto.dev or chrome://tracing.\n");
}

static int terminal_width(void) {
  struct winsize ws;
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  const char *c = getenv("COLUMNS");
  if (c && atoi(c) > 0) return atoi(c);
  return 80;
}

static bool utf8_locale(void) {
  setlocale(LC_CTYPE, "");
  const char *cs = nl_langinfo(CODESET);
  return cs && (!strcmp(cs, "UTF-8") || !strcmp(cs, "utf8"));
}

static int parse_count(const char *opt, const char *v, int lo, int hi, int *out) {
  char *end;
  long n = v ? strtol(v, &end, 10) : 0;
  if (!v || *end || n < lo || n > hi) {
    fprintf(stderr, "braid trace: %s wants a number from %d to %d, not '%s'\n", opt, lo, hi, v ? v : "");
    return -1;
  }
  *out = (int)n;
  return 0;
}

int cmd_trace(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    cmd_trace_help(argc < 2 ? stderr : stdout);
    return argc < 2 ? BRAID_EXIT_USAGE : BRAID_EXIT_OK;
  }
  const char *sub = argv[1];
  bool show = !strcmp(sub, "show"), svg = !strcmp(sub, "svg");
  if (!show && !svg) {
    fprintf(stderr, "braid trace: unknown subcommand '%s' (show or svg; see 'braid trace --help')\n", sub);
    return BRAID_EXIT_USAGE;
  }
  const char *file = NULL, *outp = NULL, *title = NULL;
  bool threads = false, ascii = false;
  int width = 0, rows = 40;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      cmd_trace_help(stdout);
      return BRAID_EXIT_OK;
    }
    if (!strcmp(a, "--threads")) threads = true;
    else if (show && !strcmp(a, "--ascii")) ascii = true;
    else if (show && !strcmp(a, "--width")) {
      if (parse_count(a, i + 1 < argc ? argv[++i] : NULL, 20, 10000, &width)) return BRAID_EXIT_USAGE;
    } else if (show && !strcmp(a, "--rows")) {
      if (parse_count(a, i + 1 < argc ? argv[++i] : NULL, 3, 1000000, &rows)) return BRAID_EXIT_USAGE;
    } else if (svg && !strcmp(a, "-o")) {
      if (i + 1 >= argc) {
        fprintf(stderr, "braid trace svg: -o wants a file name\n");
        return BRAID_EXIT_USAGE;
      }
      outp = argv[++i];
    } else if (svg && !strcmp(a, "--title")) {
      if (i + 1 >= argc) {
        fprintf(stderr, "braid trace svg: --title wants a text\n");
        return BRAID_EXIT_USAGE;
      }
      title = argv[++i];
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "braid trace %s: unknown option '%s' (see 'braid trace --help')\n", sub, a);
      return BRAID_EXIT_USAGE;
    } else if (!file) {
      file = a;
    } else {
      fprintf(stderr, "braid trace %s: one trace file at a time ('%s' and '%s')\n", sub, file, a);
      return BRAID_EXIT_USAGE;
    }
  }
  if (!file) {
    fprintf(stderr, "braid trace %s: which trace file? (see 'braid trace --help')\n", sub);
    return BRAID_EXIT_USAGE;
  }
  tr_model m;
  bool asked_threads = threads;
  int got = threads ? tr_read(&m, file, true) : tr_read_any(&m, file, &threads);
  if (got == TR_EMPTY)
    fprintf(stderr, "braid trace: %s: no task slices and no thread activity in this trace\n", file);
  if (got != 0) return BRAID_EXIT_FAIL;
  if (threads && !asked_threads)
    fprintf(stderr, "braid trace %s: %s has no task slices: drawing its threads\n", sub, file);
  int rc = 0;
  if (show) {
    if (!ascii && !utf8_locale()) ascii = true;
    tr_group(&m, (size_t)rows);
    rc = tr_show(stdout, &m, width ? width : terminal_width(), ascii, (size_t)rows);
    /* A timeline that could not be written (a full disk, a closed pipe
     * behind `> file`) is a failure, not a silent success. */
    if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
      fprintf(stderr, "braid trace show: writing the timeline failed: %s\n", strerror(errno ? errno : EIO));
      rc = -1;
    }
  } else {
    char defpath[4096];
    if (!outp) {
      const char *dot = strrchr(file, '.'), *slash = strrchr(file, '/');
      size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - file) : strlen(file);
      snprintf(defpath, sizeof defpath, "%.*s.svg", (int)stem, file);
      outp = defpath;
    }
    tr_group(&m, 200);
    FILE *f = strcmp(outp, "-") ? fopen(outp, "w") : stdout;
    if (!f) {
      fprintf(stderr, "braid trace svg: cannot write %s: %m\n", outp);
      tr_free(&m);
      return BRAID_EXIT_FAIL;
    }
    rc = tr_svg(f, &m, title ? title : file);
    /* stdout is flushed here too: "-o -" into a full disk must fail as a
     * file does. */
    if (f != stdout ? fclose(f) != 0 : fflush(stdout) != 0 || ferror(stdout)) rc = -1;
    if (rc) fprintf(stderr, "braid trace svg: writing %s failed\n", outp);
    else if (f != stdout) fprintf(stderr, "braid trace svg: wrote %s (%zu rows)\n", outp, m.n);
  }
  tr_free(&m);
  return rc ? BRAID_EXIT_FAIL : BRAID_EXIT_OK;
}
