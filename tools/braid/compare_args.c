/* SPDX-License-Identifier: MIT */
/* braid compare — options and their validation. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "compare.h"

static const char *const kind_names[CMP_NKINDS] = {"io", "cpu", "mixed"};
static const char *const model_names[CMP_NMODELS] = {"sequential", "threads", "coroutines",
                                                     "processes", "auto"};

const char *cmp_kind_name(cmp_kind k) { return (unsigned)k < CMP_NKINDS ? kind_names[k] : "?"; }
const char *cmp_model_name(cmp_model m) {
  return (unsigned)m < CMP_NMODELS ? model_names[m] : "?";
}

void cmp_defaults(cmp_opts *o) {
  *o = (cmp_opts){.tasks = 5,
                  .wait_ms = 1000,
                  .compute_ms = 500,
                  .kinds = 1u << CMP_IO,
                  .models = 0,
                  .repeat = 1,
                  .width = 60,
                  .rows = 10};
  for (int m = 0; m < CMP_NMODELS; m++)
    if (cmp_model_available((cmp_model)m)) o->models |= 1u << m;
}

void cmd_compare_help(FILE *out) {
  fprintf(out,
          "usage: braid compare [options]\n"
          "\n"
          "Run N tasks that each wait W ms (I/O-bound), compute C ms (CPU-bound), or\n"
          "wait W ms and then compute C ms (mixed: fetch, then parse) five ways: one\n"
          "after another; on threads (one per task, or the CPU pool for computing\n"
          "work); as coroutines on one braid loop; in a process pool; and through the\n"
          "auto executor, which measures each task and picks. Print wall time, CPU\n"
          "time, cores used and speed-up over sequential, a timeline of every task\n"
          "(\xe2\x96\x88 running, \xe2\x96\x91 waiting, - idle), and the verdict `braid profile` gives\n"
          "the workload.\n"
          "\n"
          "options:\n"
          "  -n, --tasks N        number of tasks, 1..%d (default 5)\n"
          "  -w, --wait MS        each task waits MS ms (io, mixed), 0..%d (default 1000)\n"
          "  -c, --compute MS     each task computes MS ms (cpu, mixed), 0..%d (default 500)\n"
          "      --workload KIND  io, cpu, mixed or all (default io)\n"
          "  -m, --models LIST    comma-separated: sequential,threads,coroutines,processes,\n"
          "                       auto (short: seq,thr,coro,proc; default: all)\n"
          "  -r, --repeat R       run every model R times, show the median and the spread,\n"
          "                       1..%d (default 1)\n"
          "      --json           print every figure as JSON instead of the table\n"
          "      --width COLS     timeline width of the longest run, %d..%d (default 60)\n"
          "      --rows N         most timeline rows per model, %d..%d (default 10)\n"
          "      --no-timeline    print the table only\n"
          "      --ascii          draw with '#', '-' and '>' only\n"
          "      --trace FILE     record the runs with braid's tracer into FILE\n"
          "                       (trace-event JSON: braid trace show FILE, ui.perfetto.dev)\n"
          "      --svg FILE       draw the recorded runs as an SVG timeline into FILE\n"
          "  -h, --help           show this text\n"
          "\n"
          "Exit status: 0 if every model ran, 1 if one failed (the report says why,\n"
          "e.g. too many threads for the kernel), 2 on bad usage. See docs/compare.md.\n",
          CMP_MAX_TASKS, CMP_MAX_MS, CMP_MAX_MS, CMP_MAX_REPEAT, CMP_MIN_WIDTH, CMP_MAX_WIDTH,
          CMP_MIN_ROWS, CMP_MAX_ROWS);
}

/* Parse a whole decimal number in [lo, hi]. */
static int parse_long(const char *s, long lo, long hi, long *out) {
  if (!s || !*s) return -1;
  const char *p = s;
  if (*p == '+') p++;
  if (*p < '0' || *p > '9') return -1;
  errno = 0;
  char *end;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int bad_number(FILE *err, const char *opt, const char *arg, long lo, long hi,
                      const char *unit) {
  fprintf(err, "braid compare: %s expects a whole number of %s from %ld to %ld, got '%s'\n", opt,
          unit, lo, hi, arg);
  return -1;
}

static int parse_models(const char *list, unsigned *out, FILE *err) {
  static const struct {
    const char *name;
    cmp_model m;
  } names[] = {{"sequential", CMP_SEQ}, {"seq", CMP_SEQ},        {"threads", CMP_THREADS},
               {"thr", CMP_THREADS},    {"coroutines", CMP_CORO}, {"coro", CMP_CORO},
               {"processes", CMP_PROCS}, {"proc", CMP_PROCS},     {"auto", CMP_AUTO}};
  unsigned set = 0;
  const char *p = list;
  for (;;) {
    size_t len = strcspn(p, ",");
    bool found = false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
      if (strlen(names[i].name) == len && strncmp(names[i].name, p, len) == 0) {
        if (!cmp_model_available(names[i].m)) {
          fprintf(err, "braid compare: model '%s' is not available in this build\n",
                  cmp_model_name(names[i].m));
          return -1;
        }
        set |= 1u << names[i].m;
        found = true;
      }
    }
    if (!found) {
      fprintf(err,
              "braid compare: unknown model '%.*s' in --models '%s' "
              "(use sequential, threads, coroutines, processes, auto)\n",
              (int)len, p, list);
      return -1;
    }
    if (!p[len]) break;
    p += len + 1;
  }
  *out = set;
  return 0;
}

int cmp_parse_args(int argc, char **argv, cmp_opts *o, FILE *err) {
  enum { OPT_WORKLOAD = 256, OPT_JSON, OPT_WIDTH, OPT_ROWS, OPT_ASCII, OPT_NO_TIMELINE, OPT_TRACE,
         OPT_SVG };
  static const struct option longopts[] = {
      {"tasks", required_argument, NULL, 'n'},
      {"wait", required_argument, NULL, 'w'},
      {"compute", required_argument, NULL, 'c'},
      {"models", required_argument, NULL, 'm'},
      {"workload", required_argument, NULL, OPT_WORKLOAD},
      {"json", no_argument, NULL, OPT_JSON},
      {"width", required_argument, NULL, OPT_WIDTH},
      {"rows", required_argument, NULL, OPT_ROWS},
      {"ascii", no_argument, NULL, OPT_ASCII},
      {"no-timeline", no_argument, NULL, OPT_NO_TIMELINE},
      {"trace", required_argument, NULL, OPT_TRACE},
      {"svg", required_argument, NULL, OPT_SVG},
      {"repeat", required_argument, NULL, 'r'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  cmp_defaults(o);
  opterr = 0;
  optind = 0; /* GNU: full re-initialisation, so parsing can run twice */
  long v;
  int c;
  while ((c = getopt_long(argc, argv, ":n:w:c:m:r:h", longopts, NULL)) != -1) {
    const char *arg = optarg;
    switch (c) {
    case 'n':
      if (parse_long(arg, 1, CMP_MAX_TASKS, &v))
        return bad_number(err, "--tasks", arg, 1, CMP_MAX_TASKS, "tasks");
      o->tasks = v;
      break;
    case 'w':
      if (parse_long(arg, 0, CMP_MAX_MS, &v))
        return bad_number(err, "--wait", arg, 0, CMP_MAX_MS, "milliseconds");
      o->wait_ms = v;
      break;
    case 'c':
      if (parse_long(arg, 0, CMP_MAX_MS, &v))
        return bad_number(err, "--compute", arg, 0, CMP_MAX_MS, "milliseconds");
      o->compute_ms = v;
      break;
    case 'r':
      if (parse_long(arg, 1, CMP_MAX_REPEAT, &v))
        return bad_number(err, "--repeat", arg, 1, CMP_MAX_REPEAT, "runs");
      o->repeat = (int)v;
      break;
    case 'm':
      if (parse_models(arg, &o->models, err)) return -1;
      break;
    case OPT_WORKLOAD:
      if (strcmp(arg, "io") == 0)
        o->kinds = 1u << CMP_IO;
      else if (strcmp(arg, "cpu") == 0)
        o->kinds = 1u << CMP_CPU;
      else if (strcmp(arg, "mixed") == 0)
        o->kinds = 1u << CMP_MIXED;
      else if (strcmp(arg, "all") == 0)
        o->kinds = (1u << CMP_IO) | (1u << CMP_CPU) | (1u << CMP_MIXED);
      else {
        fprintf(err, "braid compare: --workload must be io, cpu, mixed or all, got '%s'\n",
                arg);
        return -1;
      }
      break;
    case OPT_JSON:
      o->json = true;
      break;
    case OPT_WIDTH:
      if (parse_long(arg, CMP_MIN_WIDTH, CMP_MAX_WIDTH, &v))
        return bad_number(err, "--width", arg, CMP_MIN_WIDTH, CMP_MAX_WIDTH, "columns");
      o->width = (int)v;
      break;
    case OPT_ROWS:
      if (parse_long(arg, CMP_MIN_ROWS, CMP_MAX_ROWS, &v))
        return bad_number(err, "--rows", arg, CMP_MIN_ROWS, CMP_MAX_ROWS, "rows");
      o->rows = (int)v;
      break;
    case OPT_ASCII:
      o->ascii = true;
      break;
    case OPT_NO_TIMELINE:
      o->no_timeline = true;
      break;
    case OPT_TRACE:
    case OPT_SVG:
      if (!*arg) {
        fprintf(err, "braid compare: %s wants a file name\n", c == OPT_TRACE ? "--trace" : "--svg");
        return -1;
      }
      if (c == OPT_TRACE) o->trace_path = arg; else o->svg_path = arg;
      break;
    case 'h':
      cmd_compare_help(stdout);
      return 1;
    case ':':
      fprintf(err, "braid compare: option '%s' needs a value (see 'braid compare --help')\n",
              argv[optind - 1]);
      return -1;
    default:
      /* (A long option given a value it does not take sets optopt to its
       * code, OPT_*, not to a letter: name it as written. Within a cluster
       * such as "-tx", optind has not moved past it: only optopt says
       * which letter.) */
      if (optopt > 0 && optopt < 128)
        fprintf(err, "braid compare: unknown option '-%c' (see 'braid compare --help')\n",
                optopt);
      else if (optopt && strchr(argv[optind - 1], '='))
        fprintf(err, "braid compare: option '%.*s' takes no value (see 'braid compare --help')\n",
                (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
      else
        fprintf(err, "braid compare: unknown option '%s' (see 'braid compare --help')\n",
                argv[optind - 1]);
      return -1;
    }
  }
  if (optind < argc) {
    fprintf(err, "braid compare: unexpected argument '%s' (see 'braid compare --help')\n",
            argv[optind]);
    return -1;
  }
  return 0;
}
