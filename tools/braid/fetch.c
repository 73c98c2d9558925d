/* SPDX-License-Identifier: MIT */
/* braid fetch — run: one task per URL on one loop, through one braid-http
 * session; a progress bar on a terminal; JSON lines; the summary. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <braid.h>

#include "commands.h"
#include "fetch.h"
#include "str_hash.h"
#include "utf8.h"

#ifndef BRAID_HAVE_HTTP

int cmd_fetch(int argc, char **argv) {
  fetch_args a;
  int rc = fetch_parse_args(argc, argv, &a);
  fetch_args_free(&a);
  if (rc) return rc == 1 ? BRAID_EXIT_OK : rc;
  fprintf(stderr, "braid fetch: this braid was built without braid-http (libcurl)\n");
  return BRAID_EXIT_FAIL;
}

#else

#include <braid/http.h>

/* Failure reasons and how often each was seen. */
typedef struct reason {
  char name[48];
  size_t count;
} reason;

typedef struct run_state {
  const fetch_args *a;
  br_http_session *s;
  br_sem *admit;       /* bounds the tasks alive at once */
  size_t started, done, ok, failed, in_flight;
  size_t cut_running;  /* transfers Ctrl-C cut short */
  bool interrupted;    /* Ctrl-C: the summary says what was left undone */
  uint64_t bytes;
  int64_t t0;
  reason *reasons;
  size_t nreasons;
  char **names;        /* output file names taken (-o): a hash set, NULL = free slot */
  size_t names_cap, nnames;
  mode_t umask_bits;   /* the process's umask, for the files of -o */
  bool tty, finished;
  int progress_width;  /* characters of the last progress line */
} run_state;

typedef struct item {
  run_state *st;
  size_t index;
} item;

static void count_reason(run_state *st, const char *name) {
  for (size_t i = 0; i < st->nreasons; i++)
    if (strcmp(st->reasons[i].name, name) == 0) {
      st->reasons[i].count++;
      return;
    }
  reason *r = realloc(st->reasons, (st->nreasons + 1) * sizeof *r);
  if (!r) return;
  st->reasons = r;
  snprintf(r[st->nreasons].name, sizeof r[st->nreasons].name, "%s", name);
  r[st->nreasons++].count = 1;
}

/* s as a JSON string. A URL or a message may hold any bytes (a URL given on
 * the command line, curl's words about it); JSON text is UTF-8, so a byte
 * that is not part of a well-formed sequence becomes U+FFFD. */
static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    size_t n = tool_utf8_seq(p);
    if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
    else if (*p == '\n') fputs("\\n", f);
    else if (*p == '\r') fputs("\\r", f);
    else if (*p == '\t') fputs("\\t", f);
    else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
    else if (n == 0) fputs("\\ufffd", f);
    else fwrite(p, 1, n, f);
    p += n ? n : 1;
  }
  fputc('"', f);
}

static void fmt_bytes(char *b, size_t n, double v) {
  const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (v >= 1024 && i < 4) {
    v /= 1024;
    i++;
  }
  if (i == 0) snprintf(b, n, "%.0f %s", v, u[i]);
  else snprintf(b, n, "%.1f %s", v, u[i]);
}

/* The progress line (terminal only): done/total, rate, ETA, in flight. */
static void progress(run_state *st, bool final) {
  if (!st->tty) return;
  size_t total = st->a->nurls;
  double secs = (double)(br_now() - st->t0) / 1e9;
  double rate = secs > 0 ? (double)st->done / secs : 0;
  char eta[32] = "--";
  if (rate > 0 && st->done < total) {
    double left = (double)(total - st->done) / rate;
    if (left < 60) snprintf(eta, sizeof eta, "%.0fs", left);
    else snprintf(eta, sizeof eta, "%.0fm%02.0fs", left / 60, left - 60 * (int)(left / 60));
  } else if (st->done == total) {
    snprintf(eta, sizeof eta, "0s");
  }
  enum { W = 24 };
  char bar[W + 1];
  size_t fill = total ? st->done * W / total : W;
  for (size_t i = 0; i < W; i++) bar[i] = i < fill ? '#' : '.';
  bar[W] = 0;
  /* In flight: transfers running; queued: URLs started but waiting for a
   * slot (per host or in total) or a retry. */
  br_http_stats hs = {0};
  br_http_session_get_stats(st->s, &hs);
  size_t running = (size_t)hs.in_flight;
  size_t queued = st->in_flight > running ? st->in_flight - running : 0;
  char line[200];
  int n = snprintf(line, sizeof line,
                   "\r[%s] %zu/%zu  %.1f/s  ETA %s  in flight %zu  queued %zu  failed %zu", bar,
                   st->done, total, rate, eta, running, queued, st->failed);
  int pad = st->progress_width > n ? st->progress_width - n : 0;
  fprintf(stderr, "%s%*s", line, pad, "");
  st->progress_width = n;
  if (final) {
    /* Clear the line: the summary follows. */
    fprintf(stderr, "\r%*s\r", st->progress_width, "");
    st->progress_width = 0;
  }
  fflush(stderr);
}

/* The taken names: a hash set (open addressing, at most half full), so
 * that naming 100,000 URLs' files costs 100,000 lookups, not 5 billion
 * comparisons. */
static bool name_taken(const run_state *st, const char *name) {
  if (!st->names_cap) return false;
  for (size_t i = (size_t)tool_str_hash(name) & (st->names_cap - 1); st->names[i]; i = (i + 1) & (st->names_cap - 1))
    if (strcmp(st->names[i], name) == 0) return true;
  return false;
}

/* Add name (the set owns it from now on); BR_ENOMEM leaves it the caller's. */
static int name_take(run_state *st, char *name) {
  if (2 * (st->nnames + 1) > st->names_cap) {
    size_t cap = st->names_cap ? 2 * st->names_cap : 64;
    char **a = calloc(cap, sizeof *a);
    if (!a) return BR_ENOMEM;
    for (size_t j = 0; j < st->names_cap; j++) {
      if (!st->names[j]) continue;
      size_t i = (size_t)tool_str_hash(st->names[j]) & (cap - 1);
      while (a[i]) i = (i + 1) & (cap - 1);
      a[i] = st->names[j];
    }
    free(st->names);
    st->names = a;
    st->names_cap = cap;
  }
  size_t i = (size_t)tool_str_hash(name) & (st->names_cap - 1);
  while (st->names[i]) i = (i + 1) & (st->names_cap - 1);
  st->names[i] = name;
  st->nnames++;
  return 0;
}

/* A file name for url in -o DIR: host and path, '/' and odd characters as
 * '_', "index.html" for an empty path, ".1", ".2"... on a clash. */
static char *out_name(run_state *st, const char *url) {
  const char *p = strstr(url, "://");
  p = p ? p + 3 : url;
  char base[256];
  size_t n = 0;
  for (; *p && n + 1 < sizeof base - 16; p++) {
    char c = *p;
    bool okc = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '-';
    base[n++] = okc ? c : '_';
  }
  base[n] = 0;
  while (n > 0 && base[n - 1] == '_') base[--n] = 0;
  if (!strchr(base, '_')) snprintf(base + n, sizeof base - n, "_index.html");
  char *name = NULL;
  for (int k = 0; k < 100000; k++) {
    free(name);
    name = k ? br_strdupf("%s/%s.%d", st->a->outdir, base, k)
             : br_strdupf("%s/%s", st->a->outdir, base);
    if (!name || !name_taken(st, name)) break;
  }
  if (name && name_take(st, name) < 0) {
    free(name);
    return NULL;
  }
  return name;
}

/* The body goes to a temporary file next to `file`, renamed to it once the
 * fetch succeeded: a failed or interrupted fetch leaves a file of that name
 * from an earlier run as it was, and never a partial one. Its name has a
 * '~', which out_name never writes, so it is no other URL's file; and the
 * suffix is short enough for the longest name out_name makes. The
 * temporary file gets the mode open(..., 0666) would give it (mkostemp
 * makes it 0600). Returns the descriptor, or a code. */
static int open_out(run_state *st, const char *file, char **tmp) {
  *tmp = br_strdupf("%s~XXXXXX", file);
  if (!*tmp) return BR_ENOMEM;
  int fd = mkostemp(*tmp, O_CLOEXEC);
  if (fd < 0) {
    int e = -errno;
    free(*tmp);
    *tmp = NULL;
    return e;
  }
  (void)fchmod(fd, 0666 & ~st->umask_bits);
  return fd;
}

/* Close the temporary file: rename it to `file` after a success (rc 0),
 * else remove it. Returns rc, or the rename's error. */
static int close_out(int fd, const char *tmp, const char *file, int rc) {
  if (close(fd) && rc == 0) rc = -errno;
  if (rc == 0 && rename(tmp, file)) rc = -errno;
  if (rc) unlink(tmp);
  return rc;
}

static int drop_body(void *ud, const void *data, size_t n) {
  (void)ud;
  (void)data;
  (void)n;
  return 0;
}

/* The cause of a failure, in words (the summary and JSON's "reason"). */
static const char *cause(int rc) {
  switch (rc) {
  case BR_ENOENT: return "dns";
  case BR_ECONNREFUSED: case -ENETUNREACH: case -EHOSTUNREACH: return "connect";
  case BR_ECONNRESET: return "reset";
  case BR_ETLS: return "tls";
  case BR_ETIMEDOUT: return "timeout";
  case BR_EOVERFLOW: return "too-big";
  case BR_EIO: return "bad-response";
  case BR_ECANCELED: return "interrupted";
  default: return br_errname(rc);
  }
}

static void *fetch_one(void *arg) {
  item *it = arg;
  run_state *st = it->st;
  const fetch_args *a = st->a;
  const char *url = a->urls[it->index];
  br_http_request_opts o = {.flags = BR_HTTP_RAISE};
  if (a->timeout_s > 0) {
    /* At least 1 ms: 0 would mean braid-http's default of five minutes. */
    o.timeout_ms = (int64_t)(a->timeout_s * 1000);
    if (o.timeout_ms < 1) o.timeout_ms = 1;
  }
  if (a->retries >= 0) o.retries = a->retries ? a->retries : BR_HTTP_OFF;
  const char *file = NULL;
  char *tmp = NULL;
  int fd = -1;
  int rc = 0;
  if (a->outdir) {
    file = out_name(st, url);
    fd = file ? open_out(st, file, &tmp) : BR_ENOMEM;
    if (fd < 0) rc = fd;
    o.flags |= BR_HTTP_TO_FD;
    o.body_fd = fd;
  } else {
    o.on_body = drop_body;
  }
  st->in_flight++;
  br_http_response r;
  memset(&r, 0, sizeof r);
  r.url = "";
  if (rc == 0) {
    rc = br_http_get(st->s, &r, url, &o, BR_NEVER);
  } else {
    snprintf(r.error, sizeof r.error, "cannot create %s: %s", file ? file : "a file",
             br_strerror(rc));
  }
  st->in_flight--;
  if (fd >= 0) {
    int orc = rc;
    rc = close_out(fd, tmp, file, rc);
    if (rc && !orc)
      snprintf(r.error, sizeof r.error, "cannot write %s: %s", file, br_strerror(rc));
  }
  free(tmp);
  /* Cancelled (Ctrl-C): neither fetched nor failed; the summary counts it
   * apart, and only --json says so per URL. */
  bool cut = rc == BR_ECANCELED;
  if (cut && r.attempts > 0) st->cut_running++; /* else it waited for a slot */
  if (!cut) st->done++;
  st->bytes += r.body_len;
  char why[48];
  if (cut) {
    snprintf(why, sizeof why, "%s", cause(rc));
  } else if (rc == 0) {
    st->ok++;
  } else {
    st->failed++;
    if (rc == BR_EHTTP) snprintf(why, sizeof why, "HTTP %d", r.status);
    else snprintf(why, sizeof why, "%s", cause(rc));
    count_reason(st, why);
  }
  if (a->json) {
    printf("{\"url\":");
    json_str(stdout, url);
    printf(",\"ok\":%s,\"status\":%d,\"bytes\":%zu,\"ms\":%.1f,\"attempts\":%d",
           rc ? "false" : "true", r.status, r.body_len, (double)r.elapsed_ns / 1e6, r.attempts);
    if (rc) {
      printf(",\"error\":");
      json_str(stdout, rc == BR_EHTTP ? "EHTTP" : br_errname(rc));
      printf(",\"reason\":");
      json_str(stdout, why);
      printf(",\"message\":");
      json_str(stdout, r.error);
    } else {
      printf(",\"error\":null");
    }
    if (file && rc == 0) {
      printf(",\"file\":");
      json_str(stdout, file);
    }
    printf("}\n");
    fflush(stdout);
  } else if (rc && !cut && !a->quiet) {
    if (st->tty && st->progress_width) fprintf(stderr, "\r%*s\r", st->progress_width, "");
    st->progress_width = 0;
    fprintf(stderr, "FAIL %s: %s\n", url, r.error);
  }
  br_http_response_free(&r);
  br_sem_release(st->admit);
  free(it);
  return NULL;
}

static void *ticker(void *arg) {
  run_state *st = arg;
  while (!st->finished) {
    progress(st, false);
    if (br_sleep_ms(100)) break;
  }
  return NULL;
}

static void summary(run_state *st, FILE *out) {
  double secs = (double)(br_now() - st->t0) / 1e9;
  char b[32], rate[32];
  fmt_bytes(b, sizeof b, (double)st->bytes);
  fmt_bytes(rate, sizeof rate, secs > 0 ? (double)st->bytes / secs : 0);
  if (st->interrupted)
    fprintf(out, "interrupted after %.2f s: fetched %zu of %zu URL%s: %zu ok, %zu failed", secs,
            st->done, st->a->nurls, st->a->nurls == 1 ? "" : "s", st->ok, st->failed);
  else
    fprintf(out, "fetched %zu URL%s in %.2f s: %zu ok, %zu failed", st->done, st->done == 1 ? "" : "s",
            secs, st->ok, st->failed);
  if (st->nreasons) {
    fprintf(out, " (");
    for (size_t i = 0; i < st->nreasons; i++)
      fprintf(out, "%s%zu %s", i ? ", " : "", st->reasons[i].count, st->reasons[i].name);
    fprintf(out, ")");
  }
  if (st->interrupted) {
    /* The rest waited for a connection slot or were never given to
     * braid-http. */
    fprintf(out, "; %zu cancelled in flight, %zu not started", st->cut_running,
            st->a->nurls - st->done - st->cut_running);
  }
  fprintf(out, "\n%s received, %.1f URLs/s, %s/s\n", b, secs > 0 ? (double)st->done / secs : 0,
          rate);
  br_http_stats hs;
  if (br_http_session_get_stats(st->s, &hs) == 0)
    fprintf(out, "%llu connection%s, %llu retr%s, at most %d in flight\n",
            (unsigned long long)hs.connections, hs.connections == 1 ? "" : "s",
            (unsigned long long)hs.retries, hs.retries == 1 ? "y" : "ies", hs.max_in_flight);
}

static void *fetch_main(void *arg) {
  run_state *st = arg;
  const fetch_args *a = st->a;
  br_http_opts o = {.max_total = a->concurrency, .max_per_host = a->per_host,
                    .insecure = a->insecure};
  int rc = br_http_session_new(&st->s, &o);
  if (rc) return br_fail(rc, "braid-http session");
  size_t cap = (size_t)a->concurrency * 4;
  if (cap < 256) cap = 256;
  if ((rc = br_sem_new(&st->admit, (unsigned)cap))) {
    br_http_session_free(st->s);
    return br_fail(rc, "semaphore");
  }
  br_group *g;
  if ((rc = br_group_new(&g))) {
    br_http_session_free(st->s);
    br_sem_free(st->admit);
    return br_fail(rc, "task group");
  }
  st->t0 = br_now();
  br_task *tick = NULL;
  if (st->tty && !a->quiet) br_spawn(&tick, ticker, st, NULL);
  else st->tty = false;
  /* One task per URL (compact: a waiting one costs a few hundred bytes),
   * at most `cap` alive at once; the session's limits do the rest. */
  br_spawn_opts so = {.name = "fetch", .flags = BR_SPAWN_COMPACT};
  for (size_t i = 0; i < a->nurls && rc == 0; i++) {
    rc = br_sem_acquire(st->admit);
    if (rc) break;
    item *it = malloc(sizeof *it);
    if (!it) {
      rc = BR_ENOMEM;
      break;
    }
    *it = (item){st, i};
    st->started++;
    rc = br_group_spawn(g, fetch_one, it, &so);
    if (rc) free(it);
  }
  /* Ctrl-C cancels this task (br_run), and with it, here or in the wait,
   * every fetching task: each transfer is removed from curl at once. */
  if (rc == BR_ECANCELED) br_group_cancel(g);
  int wrc = br_group_wait(g);
  if (!rc) rc = wrc;
  st->interrupted = rc == BR_ECANCELED;
  br_group_free(g);
  st->finished = true;
  if (tick) br_task_close(tick);
  progress(st, true);
  /* After Ctrl-C the summary goes to standard error: standard output may be
   * a pipe whose reader the same Ctrl-C has ended. */
  summary(st, a->json || st->interrupted ? stderr : stdout);
  br_http_session_free(st->s);
  br_sem_free(st->admit);
  return rc ? br_fail(rc, "fetch") : NULL;
}

/* mkdir -p: dir and every missing parent (0755 before the umask). Returns 0,
 * or -1 with errno set and the path that could not be made in *failed (dir,
 * or a prefix of it; the caller frees it). */
static int make_dirs(const char *dir, char **failed) {
  char *p = strdup(dir);
  *failed = NULL;
  if (!p) return -1;
  /* Each prefix ending before a '/', then the whole path. */
  for (char *q = p + (*p != 0);; q++) {
    if (*q && *q != '/') continue;
    char c = *q;
    *q = 0;
    if (mkdir(p, 0755) && errno != EEXIST) {
      *failed = p;
      return -1;
    }
    if (!c) break;
    *q = c;
  }
  free(p);
  return 0;
}

int cmd_fetch(int argc, char **argv) {
  fetch_args a;
  int rc = fetch_parse_args(argc, argv, &a);
  if (rc) {
    fetch_args_free(&a);
    return rc == 1 ? BRAID_EXIT_OK : rc;
  }
  if (a.from_stdin && fetch_read_urls(&a, stdin)) {
    fprintf(stderr, "braid fetch: out of memory reading URLs\n");
    fetch_args_free(&a);
    return BRAID_EXIT_FAIL;
  }
  if (a.nurls == 0) {
    fprintf(stderr, "braid fetch: no URL on standard input\n");
    fetch_args_free(&a);
    return BRAID_EXIT_USAGE;
  }
  if (a.outdir) {
    struct stat sb;
    char *failed;
    if (make_dirs(a.outdir, &failed)) {
      fprintf(stderr, "braid fetch: cannot create %s: %s\n", failed ? failed : a.outdir,
              strerror(errno));
      free(failed);
      fetch_args_free(&a);
      return BRAID_EXIT_FAIL;
    }
    if (stat(a.outdir, &sb) || !S_ISDIR(sb.st_mode)) {
      fprintf(stderr, "braid fetch: %s is not a directory\n", a.outdir);
      fetch_args_free(&a);
      return BRAID_EXIT_USAGE;
    }
  }
  run_state st = {.a = &a, .tty = isatty(2) == 1, .umask_bits = umask(022)};
  umask(st.umask_bits); /* (reading it means setting it) */
  br_result res; /* the failure's message is ours to print */
  rc = br_run_result(&res, fetch_main, &st, NULL);
  for (size_t i = 0; i < st.names_cap; i++) free(st.names[i]);
  free(st.names);
  free(st.reasons);
  fetch_args_free(&a);
  if (rc && rc != BR_ECANCELED) {
    if (res.msg) fprintf(stderr, "braid fetch: %s: %s\n", res.msg, br_strerror(rc));
    else fprintf(stderr, "braid fetch: %s\n", br_strerror(rc));
  }
  br_results_free(&res, 1);
  if (rc == BR_ECANCELED) return 130; /* Ctrl-C: the summary is printed */
  if (rc) return BRAID_EXIT_FAIL;
  return st.failed ? BRAID_EXIT_FAIL : BRAID_EXIT_OK;
}

#endif
