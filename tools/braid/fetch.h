/* SPDX-License-Identifier: MIT */
/* braid — `braid fetch`: download many URLs concurrently with braid-http.
 * fetch_args.c parses the command line, fetch.c runs and reports. */
#ifndef BRAID_TOOL_FETCH_H
#define BRAID_TOOL_FETCH_H

#include <stdbool.h>
#include <stddef.h>

typedef struct fetch_args {
  int concurrency;    /* -c: requests in flight in total */
  int per_host;       /* --per-host */
  double timeout_s;   /* --timeout: per URL, retries included (0: library default) */
  int retries;        /* --retries (-1: library default; 0: none) */
  const char *outdir; /* -o: save bodies here (NULL: count and drop them) */
  bool json;          /* --json: one JSON line per URL on stdout */
  bool quiet;         /* -q: no progress bar, no per-URL failure lines */
  bool insecure;      /* -k: do not verify TLS certificates */
  char **urls;        /* from the arguments, or from stdin with "-" */
  size_t nurls;
  bool from_stdin;
} fetch_args;

/* Parse argv (argv[0] is "fetch"). Returns 0, 1 when help was printed, or
 * BRAID_EXIT_USAGE (2) after printing a one-line error on stderr. */
int fetch_parse_args(int argc, char **argv, fetch_args *out);

/* Read URLs from f (one per line; blank lines and lines starting with '#'
 * are skipped) and append them to a->urls. 0 or -ENOMEM. */
int fetch_read_urls(fetch_args *a, void *f);

void fetch_args_free(fetch_args *a);

#endif
