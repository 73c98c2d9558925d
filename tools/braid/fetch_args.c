/* SPDX-License-Identifier: MIT */
/* braid fetch — command line. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "fetch.h"

void cmd_fetch_help(FILE *out) {
  fprintf(out,
          "usage: braid fetch [options] URL... | -\n"
          "\n"
          "Download the URLs concurrently (braid-http: one loop, curl's multi-socket\n"
          "interface, keep-alive, HTTP/2, gzip), politely: at most --per-host requests\n"
          "in flight per host, retries with backoff on connection errors, 408, 429 and\n"
          "5xx (honouring Retry-After). '-' reads the URLs from standard input, one per\n"
          "line ('#' starts a comment line).\n"
          "\n"
          "options:\n"
          "  -c N           requests in flight in total (default 100)\n"
          "  --per-host N   requests in flight per host (default 6)\n"
          "  --timeout S    seconds per URL, retries included (default 300)\n"
          "  --retries K    retries per URL (default 2; 0: none)\n"
          "  -o DIR         save each body in DIR (named after its URL); otherwise\n"
          "                 bodies are counted and dropped\n"
          "  --json         one JSON object per URL on standard output (the summary\n"
          "                 goes to standard error)\n"
          "  -k, --insecure do not verify TLS certificates\n"
          "  -q, --quiet    no progress bar, no line per failure\n"
          "  -h, --help     this text\n"
          "\n"
          "A progress bar (done/total, rate, ETA, in flight) is drawn on standard error\n"
          "when it is a terminal. A URL fails on an error (DNS, connect, TLS, timeout, ...)\n"
          "or a final status >= 400. Exit status: 0 if every URL was fetched, 1 if any\n"
          "failed, 2 for bad usage, 130 when interrupted (Ctrl-C cancels the transfers at\n"
          "once; the summary, on standard error, counts what was cut short).\n");
}

/* One line on stderr, exit status 2. */
__attribute__((format(printf, 1, 2))) static int bad(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "braid fetch: %s (see 'braid fetch --help')\n", msg);
  return BRAID_EXIT_USAGE;
}

static int int_arg(const char *opt, const char *v, int min, int *out) {
  char *end;
  errno = 0;
  long n = v ? strtol(v, &end, 10) : 0;
  if (!v || !*v || *end || errno || n < min || n > 1000000)
    return bad("%s needs a %s integer (got '%s')", opt, min > 0 ? "positive" : "non-negative",
               v ? v : "");
  *out = (int)n;
  return 0;
}

static int add_url(fetch_args *a, const char *u) {
  char **n = realloc(a->urls, (a->nurls + 1) * sizeof *n);
  if (!n) return -ENOMEM;
  a->urls = n;
  a->urls[a->nurls] = strdup(u);
  if (!a->urls[a->nurls]) return -ENOMEM;
  a->nurls++;
  return 0;
}

int fetch_parse_args(int argc, char **argv, fetch_args *a) {
  memset(a, 0, sizeof *a);
  a->concurrency = 100;
  a->per_host = 6;
  a->retries = -1;
  bool opts_done = false;
  for (int i = 1; i < argc; i++) {
    const char *s = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    int rc = 0;
    if (opts_done || s[0] != '-' || strcmp(s, "-") == 0) {
      if (strcmp(s, "-") == 0 && !opts_done) {
        if (a->from_stdin) return bad("'-' given twice");
        a->from_stdin = true;
      } else if (add_url(a, s)) {
        fprintf(stderr, "braid fetch: out of memory\n");
        return BRAID_EXIT_FAIL;
      }
      continue;
    }
    if (strcmp(s, "--") == 0) {
      opts_done = true;
    } else if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
      cmd_fetch_help(stdout);
      return 1;
    } else if (strcmp(s, "-c") == 0) {
      rc = int_arg("-c", v, 1, &a->concurrency);
      i++;
    } else if (strcmp(s, "--per-host") == 0) {
      rc = int_arg("--per-host", v, 1, &a->per_host);
      i++;
    } else if (strcmp(s, "--retries") == 0) {
      rc = int_arg("--retries", v, 0, &a->retries);
      i++;
    } else if (strcmp(s, "--timeout") == 0) {
      char *end = NULL;
      double t = v ? strtod(v, &end) : NAN;
      if (!v || !*v || *end || !(t > 0) || t > 1e7)
        return bad("--timeout needs a positive number of seconds (got '%s')", v ? v : "");
      a->timeout_s = t;
      i++;
    } else if (strcmp(s, "-o") == 0) {
      if (!v || !*v) return bad("-o needs a directory");
      a->outdir = v;
      i++;
    } else if (strcmp(s, "--json") == 0) {
      a->json = true;
    } else if (strcmp(s, "-q") == 0 || strcmp(s, "--quiet") == 0) {
      a->quiet = true;
    } else if (strcmp(s, "-k") == 0 || strcmp(s, "--insecure") == 0) {
      a->insecure = true;
    } else {
      return bad("unknown option '%s'", s);
    }
    if (rc) return rc;
  }
  if (a->nurls == 0 && !a->from_stdin) return bad("no URL given (URLs, or '-' for stdin)");
  if (a->nurls > 0 && a->from_stdin) return bad("give URLs or '-', not both");
  return 0;
}

int fetch_read_urls(fetch_args *a, void *fp) {
  FILE *f = fp;
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, f)) >= 0) {
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                     line[n - 1] == '\t'))
      line[--n] = 0;
    char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (!*p || *p == '#') continue;
    if (add_url(a, p)) {
      free(line);
      return -ENOMEM;
    }
  }
  free(line);
  return 0;
}

void fetch_args_free(fetch_args *a) {
  for (size_t i = 0; i < a->nurls; i++) free(a->urls[i]);
  free(a->urls);
  a->urls = NULL;
  a->nurls = 0;
}
