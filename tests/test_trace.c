/* SPDX-License-Identifier: MIT */
/* test_trace — the tracer and its exporters: off by default; the JSON of a
 * known program parses and holds the expected run and wait slices (by kind,
 * per task, per thread, pool jobs and blocking calls on their threads); the
 * SVG is well-formed XML and renders to an image that is not blank; the
 * terminal timeline; the flight recorder keeps only the last events and is
 * written on a deadlock and on SIGQUIT; BRAID_TRACE=FILE traces a program
 * that never calls braid/trace.h. The JSON is read back with the braid
 * command's own reader (tools/braid/trace_read.c), which checks the whole
 * document's syntax. */
#include "test_util.h"
#include "core_test.h"

#include <braid/io.h>
#include <braid/pool.h>
#include <braid/trace.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/trace.h"

#include "../tools/braid/trace_model.h"
#include "../tools/braid/trace_read.c"
#include "../tools/braid/trace_show.c"
#include "../tools/braid/trace_svg.c"

#define MS 1000000LL
#define IP(x) ((void *)(intptr_t)(x))

static char dir[256];

static const char *tmp(const char *name) {
  static char buf[4][512];
  static int i;
  char *b = buf[i++ % 4];
  snprintf(b, 512, "%s/%s", dir, name);
  return b;
}

static const tr_row *row_named(const tr_model *m, const char *name) {
  for (size_t i = 0; i < m->n; i++)
    if (!strcmp(m->rows[i].name, name)) return &m->rows[i];
  return NULL;
}

/* Time a row spent in spans of one kind. */
static int64_t time_in(const tr_row *r, uint8_t what) {
  int64_t t = 0;
  for (size_t i = 0; r && i < r->n; i++)
    if (r->spans[i].what == what) t += r->spans[i].t1 - r->spans[i].t0;
  return t;
}

/* The end of a row's last span of one kind (its first instant if none). */
static int64_t end_of_last(const tr_row *r, uint8_t what) {
  int64_t t = r && r->n ? r->spans[0].t0 : 0;
  for (size_t i = 0; r && i < r->n; i++)
    if (r->spans[i].what == what && r->spans[i].t1 > t) t = r->spans[i].t1;
  return t;
}

static size_t count_in(const tr_row *r, uint8_t what) {
  size_t n = 0;
  for (size_t i = 0; r && i < r->n; i++) n += r->spans[i].what == what;
  return n;
}

/* --- a known program -------------------------------------------------------------- */

static br_chan *ch;

static void *napper(void *a) {
  (void)a;
  for (int i = 0; i < 3; i++) br_sleep_ms(5);
  return NULL;
}

static void *producer(void *a) {
  (void)a;
  for (int i = 0; i < 4; i++) {
    br_sleep_ms(3);
    T_OK(br_chan_send(ch, &i));
  }
  return NULL;
}

static void *consumer(void *a) {
  (void)a;
  for (int i = 0; i < 4; i++) {
    int v;
    T_OK(br_chan_recv(ch, &v));
    T_EQ(v, i);
  }
  return NULL;
}

static void *spin(void *a) {
  int64_t end = br_now() + (intptr_t)a * MS;
  while (br_now() < end) {
  }
  return NULL;
}

/* A job that says when it ended, so that main knows how long at least it
 * waited for it: from its own br_await() on (a busy machine can hold main
 * back between submitting and awaiting while the job runs on; the wait only
 * starts when main parks). */
static _Atomic int64_t job_end;
static int64_t pool_wait_min, blocking_wait_min; /* ns main must have waited, at least */

static void *timed_job(void *a) {
  spin(a);
  atomic_store(&job_end, br_now());
  return NULL;
}

static int64_t awaited(br_future *f) {
  int64_t t0 = br_now();
  int rc = br_await(f, NULL);
  br_future_unref(f);
  if (rc) return INT64_MAX; /* (fails the check below) */
  int64_t min = atomic_load(&job_end) - t0 - MS; /* (1 ms: the way into the park) */
  return min > 0 ? min : 0;
}

static void *known_main(void *a) {
  (void)a;
  T_OK(br_chan_new(&ch, sizeof(int), 0));
  br_task *t[3];
  T_OK(br_spawn(&t[0], napper, NULL, &(br_spawn_opts){.name = "napper"}));
  T_OK(br_spawn(&t[1], producer, NULL, &(br_spawn_opts){.name = "producer"}));
  T_OK(br_spawn(&t[2], consumer, NULL, &(br_spawn_opts){.name = "consumer"}));
  for (int i = 0; i < 3; i++) T_OK(br_join(t[i], NULL));
  br_pool *pool;
  T_OK(br_pool_new(&pool, 1, NULL));
  br_future *f;
  T_OK(br_pool_submit(pool, &f, timed_job, IP(10)));
  pool_wait_min = awaited(f);
  T_OK(br_to_thread(&f, timed_job, IP(5)));
  blocking_wait_min = awaited(f);
  br_pool_free(pool);
  spin(IP(3)); /* main itself runs 3 ms in one go */
  br_chan_free(ch);
  return NULL;
}

static void record_known(const char *path) {
  /* Once untraced first: under an emulator (qemu-user) code is translated
   * the first time it runs, milliseconds between br_await() and the park
   * that would be counted against the wait's lower bound. */
  static bool warm;
  if (!warm) run_main(known_main, NULL);
  warm = true;
  assert_int_equal(br_trace_start(path, NULL), 0);
  assert_true(br_trace_enabled());
  run_main(known_main, NULL);
  assert_int_equal(br_trace_stop(), 0);
  assert_false(br_trace_enabled());
}

static void test_off_by_default(void **state) {
  (void)state;
  assert_false(br_trace_enabled());
  assert_int_equal(br_trace_write(tmp("never.json")), BR_ENOENT); /* nothing recorded yet */
  assert_int_equal(br_trace_write(NULL), BR_EINVAL);
  assert_int_equal(br_trace_start(NULL, &(br_trace_opts){.flight = true}), BR_EINVAL);
  assert_int_equal(br_trace_stop(), 0); /* nothing to stop */
}

static void test_json_tasks(void **state) {
  (void)state;
  const char *path = tmp("known.json");
  record_known(path);
  tr_model m;
  assert_int_equal(tr_read(&m, path, false), 0);
  const tr_row *mainr = row_named(&m, "main"), *nap = row_named(&m, "napper"),
               *prod = row_named(&m, "producer"), *cons = row_named(&m, "consumer");
  assert_non_null(mainr);
  assert_non_null(nap);
  assert_non_null(prod);
  assert_non_null(cons);
  /* The napper slept three times 5 ms: three sleep waits, none woken before
   * its deadline, so the last ends 15 ms or more after the napper began
   * (time the machine held the thread between a sleep's deadline and its
   * park is the napper's, not the sleep's: the sleeps alone can be less). */
  assert_int_equal(count_in(nap, BR_WAIT_SLEEP), 3);
  assert_true(time_in(nap, BR_WAIT_SLEEP) > 0);
  assert_true(end_of_last(nap, BR_WAIT_SLEEP) - nap->spans[0].t0 >= 15 * MS - 10000);
  assert_true(count_in(nap, TR_RUN) >= 4);
  /* The consumer waited on the channel, the producer slept. */
  assert_true(count_in(cons, BR_WAIT_CHAN) >= 3);
  assert_true(time_in(cons, BR_WAIT_CHAN) >= 8 * MS);
  assert_true(count_in(prod, BR_WAIT_SLEEP) == 4);
  /* main: joins, then a pool job (10 ms) and a blocking call (5 ms), each
   * one wait lasting at least from main's await to the job's end (on an
   * idle machine nearly all of the job), then 3 ms of its own running. */
  assert_true(count_in(mainr, BR_WAIT_JOIN) >= 1);
  assert_int_equal(count_in(mainr, BR_WAIT_POOL), 1);
  assert_int_equal(count_in(mainr, BR_WAIT_BLOCKING), 1);
  if (time_in(mainr, BR_WAIT_POOL) < pool_wait_min || time_in(mainr, BR_WAIT_BLOCKING) < blocking_wait_min)
    fail_msg("pool wait %lld ns (at least %lld), blocking wait %lld ns (at least %lld)",
             (long long)time_in(mainr, BR_WAIT_POOL), (long long)pool_wait_min,
             (long long)time_in(mainr, BR_WAIT_BLOCKING), (long long)blocking_wait_min);
  assert_true(time_in(mainr, TR_RUN) >= 3 * MS);
  /* Waits and runs of a task never overlap. */
  for (size_t i = 0; i < m.n; i++)
    for (size_t j = 1; j < m.rows[i].n; j++)
      assert_true(m.rows[i].spans[j].t0 >= m.rows[i].spans[j - 1].t1 - 1000);
  tr_free(&m);
}

static void test_json_threads(void **state) {
  (void)state;
  const char *path = tmp("known.json");
  record_known(path);
  tr_model m;
  assert_int_equal(tr_read(&m, path, true), 0);
  const tr_row *loop = NULL, *worker = row_named(&m, "pool worker"), *blocking = row_named(&m, "blocking pool");
  for (size_t i = 0; i < m.n; i++)
    if (!strncmp(m.rows[i].name, "loop ", 5)) loop = &m.rows[i];
  assert_non_null(loop);
  assert_non_null(worker);
  assert_non_null(blocking);
  assert_true(time_in(worker, TR_JOB) >= 9 * MS);
  assert_true(time_in(blocking, TR_JOB) >= 4 * MS);
  assert_true(count_in(loop, TR_RUN) >= 10);
  assert_true(count_in(loop, TR_POLL) >= 1);
  tr_free(&m);
}

/* The file is trace-event JSON as Perfetto reads it: an object with a
 * traceEvents array, complete events with pid/tid/ts/dur, thread names. */
static void test_json_shape(void **state) {
  (void)state;
  const char *path = tmp("known.json");
  record_known(path);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char line[1024];
  int meta = 0, run = 0, wait = 0;
  assert_non_null(fgets(line, sizeof line, f));
  assert_non_null(strstr(line, "\"traceEvents\":["));
  while (fgets(line, sizeof line, f)) {
    if (strstr(line, "\"ph\":\"M\",\"name\":\"thread_name\"")) meta++;
    if (strstr(line, "\"ph\":\"X\",\"cat\":\"run\"")) {
      run++;
      assert_non_null(strstr(line, "\"pid\":"));
      assert_non_null(strstr(line, "\"tid\":"));
      assert_non_null(strstr(line, "\"ts\":"));
      assert_non_null(strstr(line, "\"dur\":"));
    }
    if (strstr(line, "\"cat\":\"wait\",\"name\":\"wait: channel\"")) {
      wait++;
      assert_non_null(strstr(line, "\"kind\":\"channel\""));
    }
  }
  fclose(f);
  assert_true(meta >= 6); /* 3+ threads and 4 tasks */
  assert_true(run >= 10);
  assert_true(wait >= 3);
}

/* --- SVG and the terminal ------------------------------------------------------------------ */

static bool have(const char *prog) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", prog);
  return system(cmd) == 0;
}

static long file_size(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static void test_svg(void **state) {
  (void)state;
  const char *path = tmp("known.json"), *svg = tmp("known.svg"), *png = tmp("known.png");
  record_known(path);
  tr_model m;
  assert_int_equal(tr_read(&m, path, false), 0);
  FILE *f = fopen(svg, "w");
  assert_non_null(f);
  assert_int_equal(tr_svg(f, &m, "known <program> & co"), 0);
  fclose(f);
  tr_free(&m);
  /* Legend entries for what occurred. */
  f = fopen(svg, "r");
  char *text = calloc(1, 1 << 20);
  size_t n = fread(text, 1, (1 << 20) - 1, f);
  fclose(f);
  assert_true(n > 0);
  assert_non_null(strstr(text, "waiting: channel"));
  assert_non_null(strstr(text, "waiting: sleep"));
  assert_non_null(strstr(text, "running"));
  assert_non_null(strstr(text, "known &lt;program&gt; &amp; co"));
  free(text);
  if (!have("xmllint") || !have("rsvg-convert")) {
    fprintf(stderr, "note: xmllint or rsvg-convert missing (tools/install-deps.sh test): SVG only checked as text\n");
    return;
  }
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "xmllint --noout '%s'", svg);
  assert_int_equal(system(cmd), 0);
  snprintf(cmd, sizeof cmd, "rsvg-convert '%s' -o '%s'", svg, png);
  assert_int_equal(system(cmd), 0);
  /* Not blank: a blank page of the same size compresses to far less. */
  const char *blank = tmp("blank.svg"), *blank_png = tmp("blank.png");
  f = fopen(blank, "w");
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1200\" height=\"300\">"
             "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/></svg>\n");
  fclose(f);
  snprintf(cmd, sizeof cmd, "rsvg-convert '%s' -o '%s'", blank, blank_png);
  assert_int_equal(system(cmd), 0);
  assert_true(file_size(png) > 3 * file_size(blank_png));
}

static void test_show(void **state) {
  (void)state;
  const char *path = tmp("known.json");
  record_known(path);
  tr_model m;
  assert_int_equal(tr_read(&m, path, false), 0);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_int_equal(tr_show(f, &m, 100, false, 40), 0);
  fclose(f);
  assert_non_null(strstr(buf, "napper"));
  assert_non_null(strstr(buf, "\xe2\x96\x88")); /* █ */
  assert_non_null(strstr(buf, "\xe2\x96\x91")); /* ░ */
  assert_non_null(strstr(buf, "Time:"));
  /* Each line fits the width (cells are 3 bytes in UTF-8: count code points). */
  for (char *line = buf; *line;) {
    char *nl = strchr(line, '\n');
    size_t cps = 0;
    for (char *c = line; c < (nl ? nl : line + strlen(line)); c++) cps += ((unsigned char)*c & 0xc0) != 0x80;
    assert_true(cps <= 100);
    if (!nl) break;
    line = nl + 1;
  }
  free(buf);
  f = open_memstream(&buf, &len);
  assert_int_equal(tr_show(f, &m, 60, true, 40), 0);
  fclose(f);
  assert_null(strstr(buf, "\xe2"));
  assert_non_null(strstr(buf, "#"));
  assert_non_null(strstr(buf, "~"));
  free(buf);
  tr_free(&m);
}

/* --- many rows: grouped by name --------------------------------------------------------------- */

static void *tiny(void *a) {
  (void)a;
  br_sleep_ms(1);
  return NULL;
}

static void *many_main(void *a) {
  (void)a;
  br_group *g;
  T_OK(br_group_new(&g));
  for (int i = 0; i < 2000; i++) T_OK(br_group_spawn(g, tiny, NULL, &(br_spawn_opts){.name = i % 2 ? "odd" : "even"}));
  T_OK(br_group_wait(g));
  T_OK(br_group_free(g));
  return NULL;
}

static void test_many_rows_grouped(void **state) {
  (void)state;
  const char *path = tmp("many.json");
  assert_int_equal(br_trace_start(path, NULL), 0);
  run_main(many_main, NULL);
  assert_int_equal(br_trace_stop(), 0);
  tr_model m;
  assert_int_equal(tr_read(&m, path, false), 0);
  assert_int_equal(m.n, 2001);
  tr_group(&m, 200);
  assert_int_equal(m.n, 3);
  const tr_row *odd = row_named(&m, "odd");
  assert_non_null(odd);
  assert_int_equal(odd->members, 1000);
  FILE *f = fopen(tmp("many.svg"), "w");
  assert_int_equal(tr_svg(f, &m, "2000 tasks"), 0);
  fclose(f);
  assert_true(file_size(tmp("many.svg")) < 4 << 20);
  tr_free(&m);
}

/* --- the flight recorder ------------------------------------------------------------------------ */

static void *tiny_yield(void *a) {
  (void)a;
  br_yield();
  return NULL;
}

static void *churn(void *a) {
  (void)a;
  for (int i = 0; i < 20000; i++) {
    br_task *t;
    char name[32];
    snprintf(name, sizeof name, "churn-%d", i);
    T_OK(br_spawn(&t, tiny_yield, NULL, &(br_spawn_opts){.name = name}));
    T_OK(br_join(t, NULL));
  }
  return NULL;
}

static void test_flight_keeps_the_last_events(void **state) {
  (void)state;
  const char *path = tmp("flight.json"), *now = tmp("flight-now.json");
  assert_int_equal(br_trace_start(path, &(br_trace_opts){.flight = true, .buffer_mb = 1}), 0);
  run_main(churn, NULL);
  assert_int_equal(br_trace_write(now), 0);
  assert_int_equal(br_trace_stop(), 0); /* flight mode: stop writes nothing */
  assert_true(file_size(path) < 0);
  tr_model m;
  assert_int_equal(tr_read(&m, now, false), 0);
  /* 20000 tasks of ~6 records each do not fit in 1 MiB: the first ones are
   * gone, the last ones are there. */
  assert_null(row_named(&m, "churn-0"));
  assert_non_null(row_named(&m, "churn-19999"));
  assert_true(m.n < 20000);
  tr_free(&m);
  FILE *f = fopen(now, "r");
  char head[256] = {0};
  assert_non_null(fgets(head, sizeof head, f));
  fclose(f);
  assert_null(strstr(head, "\"dropped_chunks\":0,"));
}

/* --- the records themselves ------------------------------------------------------ */

/* The calling thread's current chunk of this session, read back record by
 * record (buffers held). */
typedef struct {
  br__tev ev[64];
  uint32_t slots[64];
  size_t n;
} recs;

static void read_mine(recs *r) {
  r->n = 0;
  assert_true(br__trace_hold(false));
  const br__tchunk *ch[256];
  size_t n = br__trace_snapshot(ch, 256, NULL, NULL);
  const br__tchunk *k = NULL;
  for (size_t i = 0; i < n && i < 256; i++)
    if (ch[i] == br__tcur.chunk) k = ch[i];
  if (k) {
    uint32_t used = atomic_load(&((br__tchunk *)k)->used);
    for (uint32_t j = 0, step; j < used && r->n < 64; j += step ? step : 1) {
      const char *text;
      step = br__trace_decode(k, j, used, &r->ev[r->n], &text);
      if (step) r->slots[r->n++] = step;
    }
  }
  br__trace_unhold();
  assert_non_null(k);
}

/* A record is compact (16 bytes) when it fits, full otherwise; either way
 * it reads back as written: 2^32 ticks and more after the chunk began (a
 * long gap between events), stamped before it began, wide ids, serials and
 * arguments. */
static void test_record_sizes(void **state) {
  (void)state;
  assert_int_equal(br_trace_start(NULL, &(br_trace_opts){.buffer_mb = 1}), 0);
  br__trace_emit(BR__TEV_POLL_END, 0, 1, 1, 0, 0); /* takes a chunk */
  uint64_t base = br__tcur.base;
  const struct {
    uint64_t ts;
    uint32_t loop;
    uint64_t id;
    int64_t arg;
    uint32_t slots;
  } c[] = {
      {base + 5, 1, 7, -3, 1},
      {base + UINT32_MAX, UINT16_MAX, UINT32_MAX, INT32_MIN, 1},
      {base + (1ull << 32), 1, 7, 0, 2}, /* the long gap */
      {base + (1ull << 40), 1, 7, 0, 2},
      {base - 1, 1, 7, 0, 2},
      {base + 9, UINT16_MAX + 1u, 7, 0, 2},
      {base + 9, 1, 1ull << 32, 0, 2},
      {base + 9, 1, 7, (int64_t)INT32_MAX + 1, 2},
      {base + 9, 1, 7, INT64_MIN, 2},
  };
  const size_t nc = sizeof c / sizeof *c;
  for (size_t i = 0; i < nc; i++) br__trace_emit(BR__TEV_POLL_END, 0, c[i].loop, c[i].id, c[i].arg, c[i].ts);
  br__trace_emit_text(BR__TEV_THREAD, 0, 0, 0, 0, "a thread name longer than 31 bytes");
  assert_int_equal(br_trace_stop(), 0);
  recs r;
  read_mine(&r);
  assert_int_equal(r.n, nc + 2);
  for (size_t i = 0; i < nc; i++) {
    const br__tev *e = &r.ev[i + 1];
    assert_int_equal(e->type, BR__TEV_POLL_END);
    assert_true(e->ts == c[i].ts);
    assert_int_equal(e->loop, c[i].loop);
    assert_true(e->id == c[i].id);
    assert_true(e->arg == c[i].arg);
    assert_int_equal(r.slots[i + 1], c[i].slots);
  }
  assert_int_equal(r.ev[nc + 1].type, BR__TEV_THREAD);
  assert_int_equal(r.slots[nc + 1], 4); /* the record and its text */
}

/* A running task's wake-up of a parked task is published with the next
 * record, or replaced by the switch that hands off to the woken task. */
static br_chan *wch[2];
static uint64_t wid[3];

static void *wake_waiter(void *a) {
  int v;
  T_OK(br_chan_recv(wch[(intptr_t)a], &v));
  return NULL;
}

static void *wake_main(void *a) {
  (void)a;
  T_OK(br_chan_new(&wch[0], sizeof(int), 0));
  T_OK(br_chan_new(&wch[1], sizeof(int), 0));
  br_task *t[2];
  for (int i = 0; i < 2; i++) {
    T_OK(br_spawn(&t[i], wake_waiter, IP(i), NULL));
    wid[i + 1] = br_task_id(t[i]);
  }
  wid[0] = br_task_id(NULL);
  T_OK(br_yield()); /* both park on their channel */
  T_OK(br_trace_start(NULL, &(br_trace_opts){.buffer_mb = 1}));
  int v = 1;
  T_OK(br_chan_send(wch[0], &v)); /* wakes waiter 0 */
  T_OK(br_chan_send(wch[1], &v)); /* wakes waiter 1 */
  T_OK(br_yield());               /* hands off to waiter 0: both wake-ups stay */
  br__trace_disable();
  for (int i = 0; i < 2; i++) T_OK(br_join(t[i], NULL));
  br_chan_free(wch[0]);
  br_chan_free(wch[1]);
  return NULL;
}

static void test_wakeup_records(void **state) {
  (void)state;
  run_main(wake_main, NULL);
  br__trace_finish();
  recs r;
  read_mine(&r);
  /* From the send on: ready 1, ready 2, switch main -> 1, switch 1 -> 2
   * (waiter 1 ends), ... */
  size_t i = 0;
  while (i < r.n && !(r.ev[i].type == BR__TEV_READY && r.ev[i].id == wid[1])) i++;
  assert_true(i + 2 < r.n);
  assert_int_equal(r.ev[i].pad, 1); /* not stamped */
  assert_int_equal(r.ev[i + 1].type, BR__TEV_READY);
  assert_true(r.ev[i + 1].id == wid[2]);
  assert_int_equal(r.ev[i + 2].type, BR__TEV_SWITCH);
  assert_true(r.ev[i + 2].id == wid[0]);
  assert_true((uint64_t)r.ev[i + 2].arg == wid[1]);
  assert_int_equal(r.ev[i + 2].pad, BR__TEV_YIELD);
}

/* The hand-off right after a wake-up of the same task replaces it: one
 * record per channel hop, and the exported waits are those of the pair. */
enum { HOPS = 6 };

static void *hop(void *a) {
  br_chan *c = a;
  int v;
  for (int i = 0; i < HOPS; i++) T_OK(br_chan_recv(c, &v));
  return NULL;
}

static void *hop_main(void *a) {
  (void)a;
  br_chan *c;
  T_OK(br_chan_new(&c, sizeof(int), 0));
  br_task *t;
  T_OK(br_spawn(&t, hop, c, NULL));
  wid[1] = br_task_id(t);
  wid[0] = br_task_id(NULL);
  T_OK(br_yield()); /* it parks on the channel */
  T_OK(br_trace_start(NULL, &(br_trace_opts){.buffer_mb = 1}));
  int v = 1;
  /* A send wakes it; the next one parks and hands off to it. */
  for (int i = 0; i < HOPS; i++) T_OK(br_chan_send(c, &v));
  br__trace_disable();
  T_OK(br_join(t, NULL));
  br_chan_free(c);
  return NULL;
}

static void test_wakeup_replaced_by_switch(void **state) {
  (void)state;
  run_main(hop_main, NULL);
  br__trace_finish();
  recs r;
  read_mine(&r);
  size_t switches = 0;
  for (size_t i = 0; i < r.n; i++) {
    if (r.ev[i].type == BR__TEV_READY) assert_true(r.ev[i].id != wid[1]);
    if (r.ev[i].type == BR__TEV_SWITCH && r.ev[i].id == wid[0] && (uint64_t)r.ev[i].arg == wid[1]) {
      assert_int_equal(r.ev[i].pad, BR__TEV_PARK);
      assert_int_equal(r.slots[i], 1);
      switches++;
    }
  }
  assert_true(switches >= 2);
}

static void *recv_forever(void *a) {
  (void)a;
  int v;
  return IP(br_chan_recv(ch, &v));
}

static void *deadlock_main(void *a) {
  (void)a;
  T_OK(br_chan_new(&ch, sizeof(int), 0));
  br_task *t;
  T_OK(br_spawn(&t, recv_forever, NULL, &(br_spawn_opts){.name = "stuck-receiver"}));
  int rc = br_join(t, NULL);
  br_chan_free(ch);
  return IP(rc);
}

static void test_flight_written_on_deadlock(void **state) {
  (void)state;
  const char *path = tmp("deadlock.json");
  unlink(path);
  assert_int_equal(br_trace_start(path, &(br_trace_opts){.flight = true}), 0);
  br_set_log(NULL, NULL);
  assert_int_equal(br_run(NULL, deadlock_main, NULL), BR_EDEADLK);
  br_trace_stop();
  tr_model m;
  assert_int_equal(tr_read(&m, path, false), 0);
  const tr_row *r = row_named(&m, "stuck-receiver");
  assert_non_null(r);
  assert_true(count_in(r, BR_WAIT_CHAN) == 1); /* still open when written */
  tr_free(&m);
}

static const char *self_exe;
extern char **environ;

/* Run this test program again with args (posix_spawn: no fork handlers run
 * in a copy of this multi-threaded process), extra environment variable env
 * (or NULL), stderr into err_path. Its exit status, or -1. */
static int run_self(const char *arg1, const char *arg2, const char *env, const char *err_path) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  /* Under qemu-user this foreign-architecture program cannot be exec'd by
   * itself (no binfmt_misc): the copy starts through the emulator, whose
   * command line the test's environment gives (tests/CMakeLists.txt). */
  char emu[512] = "", *argv[16];
  int a = 0;
  const char *e = br_test_emulated() ? getenv("BRAID_TEST_EMULATOR") : NULL;
  if (e) {
    snprintf(emu, sizeof emu, "%s", e);
    for (char *save = NULL, *w = strtok_r(emu, " ", &save); w && a < 12; w = strtok_r(NULL, " ", &save))
      argv[a++] = w;
  }
  const char *prog = a ? argv[0] : self_exe;
  argv[a++] = (char *)self_exe;
  argv[a++] = (char *)arg1;
  argv[a++] = (char *)arg2;
  argv[a] = NULL;
  size_t n = 0;
  while (environ[n]) n++;
  char **envp = calloc(n + 2, sizeof *envp);
  memcpy(envp, environ, n * sizeof *envp);
  if (env) envp[n++] = (char *)env;
  pid_t pid;
  int rc = posix_spawn(&pid, prog, &fa, NULL, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  free(envp);
  if (rc != 0) return -1;
  int st;
  if (waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return strdup("");
  char *b = calloc(1, 1 << 16);
  size_t n = fread(b, 1, (1 << 16) - 1, f);
  b[n] = 0;
  fclose(f);
  return b;
}

static int quit_child(const char *path) {
  if (br_trace_start(path, &(br_trace_opts){.flight = true}) != 0) _exit(3);
  br_loop *L;
  if (br_loop_new(&L, NULL)) _exit(4);
  br_task *t;
  if (br_loop_spawn(L, &t, napper, NULL, &(br_spawn_opts){.name = "napper"})) _exit(5);
  if (br_loop_run(L)) _exit(6);
  raise(SIGQUIT); /* dump and write; the program goes on */
  br_task_close(t);
  br_loop_free(L);
  return 0;
}

static void test_flight_written_on_sigquit(void **state) {
  (void)state;
  const char *path = tmp("quit.json"), *err = tmp("quit.err");
  unlink(path);
  assert_int_equal(run_self("--quit-child", path, NULL, err), 0);
  char *e = slurp(err);
  assert_non_null(strstr(e, "task dump of pid"));
  assert_non_null(strstr(e, "flight recorder written to"));
  free(e);
  tr_model m;
  assert_int_equal(tr_read(&m, path, false), 0);
  assert_int_equal(count_in(row_named(&m, "napper"), BR_WAIT_SLEEP), 3);
  tr_free(&m);
}

/* A stack overflow: the crash report fires the flight recorder from the
 * signal handler, before the process dies. */
static volatile int stop_depth = -1; /* never reached: deep() recurses until the stack ends */

__attribute__((noinline)) static int deep(volatile char *prev, int depth) {
  volatile char frame[1024];
  frame[0] = (char)depth;
  frame[1023] = prev ? prev[0] : 0;
  if (depth == stop_depth) return 0;
  return deep(frame, depth + 1) + frame[1023];
}

static void *overflows(void *a) {
  (void)a;
  br_sleep_ms(2);
  return IP(deep(NULL, 0));
}

static void *overflow_main(void *a) {
  (void)a;
  br_task *t;
  if (br_spawn(&t, overflows, NULL, &(br_spawn_opts){.name = "too-deep"})) return IP(1);
  return IP(br_join(t, NULL));
}

static int overflow_child(const char *path) {
  if (br_trace_start(path, &(br_trace_opts){.flight = true}) != 0) return 3;
  br_run(NULL, overflow_main, NULL);
  return 4; /* not reached: the overflow kills the process */
}

static void test_flight_written_on_overflow(void **state) {
  (void)state;
#if defined(BRAID_ASAN) || defined(BRAID_TSAN)
  skip(); /* the sanitizers take the fault first (test_overflow covers them) */
#endif
  const char *path = tmp("overflow.json"), *err = tmp("overflow.err");
  unlink(path);
  assert_int_equal(run_self("--overflow-child", path, NULL, err), -1); /* killed by SIGSEGV */
  char *e = slurp(err);
  assert_non_null(strstr(e, "task 'too-deep' overflowed its"));
  assert_non_null(strstr(e, "stack overflow: flight recorder written to"));
  free(e);
  tr_model m;
  assert_int_equal(tr_read(&m, path, false), 0);
  const tr_row *r = row_named(&m, "too-deep");
  assert_non_null(r);
  assert_int_equal(count_in(r, BR_WAIT_SLEEP), 1);
  tr_free(&m);
}

/* --- BRAID_TRACE=FILE: a program that never calls braid/trace.h ------------------------------------- */

static void test_env_trace(void **state) {
  (void)state;
  const char *path = tmp("env.json");
  unlink(path);
  char env[600];
  snprintf(env, sizeof env, "BRAID_TRACE=%s", path);
  assert_int_equal(run_self("--traced-child", NULL, env, tmp("env.err")), 0);
  tr_model m;
  assert_int_equal(tr_read(&m, path, false), 0);
  assert_int_equal(count_in(row_named(&m, "napper"), BR_WAIT_SLEEP), 3);
  tr_free(&m);
}

static void *traced_child_main(void *a) {
  (void)a;
  br_task *t;
  if (br_spawn(&t, napper, NULL, &(br_spawn_opts){.name = "napper"})) return IP(1);
  return IP(br_join(t, NULL));
}

/* Where run_braid sends the command's stdout. */
static const char *braid_stdout = "/dev/null";

/* The braid command itself: exit status 0, 1 (the file) and 2 (usage). */
static int run_braid(const char *a1, const char *a2, const char *a3, const char *a4, const char *err_path) {
  char cli[1024];
  snprintf(cli, sizeof cli, "%s", self_exe);
  char *slash = strrchr(cli, '/');
  if (!slash) return -2;
  snprintf(slash, sizeof cli - (size_t)(slash - cli), "/../tools/braid/braid");
  if (access(cli, X_OK) != 0) return -2;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, braid_stdout, O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  char *argv[] = {cli, "trace", (char *)a1, (char *)a2, (char *)a3, (char *)a4, NULL};
  pid_t pid;
  int rc = posix_spawn(&pid, cli, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc) return -1;
  int st;
  if (waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void **state) {
  (void)state;
  const char *path = tmp("cli.json"), *err = tmp("cli.err"), *svg = tmp("cli.svg");
  record_known(path);
  int rc = run_braid("show", path, "--width", "80", err);
  if (rc == -2) {
    fprintf(stderr, "note: the braid command is not built next to the tests: skipped\n");
    return;
  }
  assert_int_equal(rc, 0);
  assert_int_equal(run_braid("svg", path, "-o", svg, err), 0);
  assert_true(file_size(svg) > 1000);
  assert_int_equal(run_braid("show", path, "--threads", "--ascii", err), 0);
  assert_int_equal(run_braid("show", tmp("missing.json"), NULL, NULL, err), 1);
  char *e = slurp(err);
  assert_non_null(strstr(e, "cannot open"));
  free(e);
  /* An empty trace: said once, with or without --threads. */
  char empty[512];
  snprintf(empty, sizeof empty, "%s/empty.json", dir); /* (tmp()'s buffers are in use) */
  FILE *ef = fopen(empty, "w");
  assert_non_null(ef);
  fputs("{\"traceEvents\":[]}\n", ef);
  fclose(ef);
  for (int k = 0; k < 2; k++) {
    assert_int_equal(run_braid("show", empty, k ? "--threads" : NULL, NULL, err), 1);
    e = slurp(err);
    assert_non_null(strstr(e, "in this trace"));
    assert_true(strchr(e, '\n') && !strchr(e, '\n')[1]); /* one line */
    free(e);
  }
  assert_int_equal(run_braid("show", "/", NULL, NULL, err), 1); /* a directory: not "not a trace" */
  e = slurp(err);
  assert_non_null(strstr(e, "cannot read /:"));
  free(e);
  assert_int_equal(run_braid(NULL, NULL, NULL, NULL, err), 2);
  assert_int_equal(run_braid("draw", path, NULL, NULL, err), 2);
  assert_int_equal(run_braid("show", NULL, NULL, NULL, err), 2);
  assert_int_equal(run_braid("show", path, "--width", "3", err), 2);
  assert_int_equal(run_braid("show", path, "--frob", NULL, err), 2);
  e = slurp(err);
  assert_non_null(strstr(e, "unknown option '--frob'"));
  free(e);
  assert_int_equal(run_braid("show", path, "-h", NULL, err), 0); /* help, wherever it is asked */
  assert_int_equal(run_braid("svg", "--help", NULL, NULL, err), 0);
  assert_int_equal(run_braid("svg", path, "-o", NULL, err), 2);
  /* A timeline that cannot be written (stdout on a full disk) fails, in
   * one line, instead of exiting 0 with nothing drawn. */
  if (access("/dev/full", W_OK) == 0) {
    braid_stdout = "/dev/full";
    assert_int_equal(run_braid("show", path, "--width", "80", err), 1);
    e = slurp(err);
    assert_non_null(strstr(e, "writing the timeline failed"));
    assert_true(strchr(e, '\n') && !strchr(e, '\n')[1]);
    free(e);
    assert_int_equal(run_braid("svg", path, "-o", "-", err), 1);
    e = slurp(err);
    assert_non_null(strstr(e, "writing - failed"));
    free(e);
    braid_stdout = "/dev/null";
  }
}

/* Whether s[0..n) is well-formed UTF-8 without control characters other
 * than newline (what an XML parser and a terminal need). */
static bool drawable(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s, *end = p + n;
  while (p < end) {
    if (*p < 0x80) {
      if (*p < 0x20 && *p != '\n') return false;
      p++;
      continue;
    }
    size_t len = *p >= 0xf0 && *p <= 0xf4 ? 4 : *p >= 0xe0 ? 3 : *p >= 0xc2 && *p <= 0xdf ? 2 : 0;
    if (!len || (size_t)(end - p) < len) return false;
    for (size_t i = 1; i < len; i++)
      if ((p[i] & 0xc0) != 0x80) return false;
    p += len;
  }
  return true;
}

/* Names from a trace written elsewhere: a long name in a script of
 * two-byte characters (cut to the row's 80 bytes inside a character),
 * bytes that are not UTF-8, an escape sequence and a newline. The rows'
 * names, the SVG and the terminal timeline stay well-formed, and the
 * timeline's label column stays one width. */
static void test_names_drawable(void **state) {
  (void)state;
  const char *p = tmp("names.json");
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fputs("{\"traceEvents\":[{\"ph\":\"X\",\"cat\":\"run\",\"name\":\"", f);
  for (int i = 0; i < 50; i++) fputs("\xc3\xa9", f); /* é */
  fputs("\",\"ts\":0,\"dur\":5,\"tid\":1,\"args\":{\"task\":1}},"
        "{\"ph\":\"X\",\"cat\":\"run\",\"name\":\"bad\xff\xfe\\u001b[2Jx\\ny\",\"ts\":2,\"dur\":5,"
        "\"tid\":1,\"args\":{\"task\":2}}]}",
        f);
  fclose(f);
  tr_model m;
  assert_int_equal(tr_read(&m, p, false), 0);
  assert_int_equal(m.n, 2);
  for (size_t i = 0; i < m.n; i++)
    if (!drawable(m.rows[i].name, strlen(m.rows[i].name))) fail_msg("row %zu's name is not drawable", i);
  assert_string_equal(m.rows[1].name, "bad???[2Jx?y");
  char *buf = NULL;
  size_t len = 0;
  f = open_memstream(&buf, &len);
  assert_int_equal(tr_svg(f, &m, "names"), 0);
  fclose(f);
  assert_true(drawable(buf, len));
  free(buf);
  f = open_memstream(&buf, &len);
  assert_int_equal(tr_show(f, &m, 80, false, 40), 0);
  fclose(f);
  assert_true(drawable(buf, len));
  /* Every row's cells, and the time axis, start in the same column. */
  int col = -1;
  for (char *line = buf; *line;) {
    char *nl = strchr(line, '\n');
    /* The first cell: idle, running or the axis (no name here has them). */
    char *cell = NULL;
    static const char *const cells[] = {"-", "\xe2\x96\x88", "\xe2\x96\x91", "\xe2\x86\x92"};
    for (size_t k = 0; k < 4; k++) {
      char *c = strstr(line, cells[k]);
      if (c && c < nl && (!cell || c < cell)) cell = c;
    }
    if (cell && line[0] != ' ') {
      int c = 0;
      for (char *q = line; q < cell; q++) c += ((unsigned char)*q & 0xc0) != 0x80;
      if (col < 0) col = c;
      if (c != col) fail_msg("cells start in column %d, not %d: %.*s", c, col, (int)(nl - line), line);
    }
    line = nl + 1;
  }
  assert_true(col > 0);
  free(buf);
  tr_free(&m);
}

static void test_bad_file(void **state) {
  (void)state;
  tr_model m;
  const char *p = tmp("bad.json");
  FILE *f = fopen(p, "w");
  fputs("{\"traceEvents\":[{\"ph\":\"X\",\"ts\":1,,}]}", f);
  fclose(f);
  assert_int_equal(tr_read(&m, p, false), -1);
  f = fopen(p, "w");
  fputs("{\"other\":[]}", f);
  fclose(f);
  assert_int_equal(tr_read(&m, p, false), -1);
  assert_int_equal(tr_read(&m, tmp("does-not-exist.json"), false), -1);
  /* Times no trace has (they would overflow nanoseconds and the drawers'
   * columns), numbers JSON has not, a negative duration: refused. */
  static const char *const bad[] = {
      ("{\"traceEvents\":[{\"ph\":\"X\",\"cat\":\"run\",\"ts\":0,\"dur\":1,\"args\":{\"task\":1}},"
       "{\"ph\":\"X\",\"cat\":\"run\",\"ts\":1e30,\"dur\":1,\"args\":{\"task\":2}}]}"),
      "{\"traceEvents\":[{\"ph\":\"X\",\"cat\":\"run\",\"ts\":-1e308,\"dur\":1,\"args\":{\"task\":1}}]}",
      "{\"traceEvents\":[{\"ph\":\"X\",\"cat\":\"run\",\"ts\":0,\"dur\":1e300,\"args\":{\"task\":1}}]}",
      "{\"traceEvents\":[{\"ph\":\"X\",\"cat\":\"run\",\"ts\":5,\"dur\":-3,\"args\":{\"task\":1}}]}",
      "{\"traceEvents\":[{\"ph\":\"X\",\"cat\":\"run\",\"ts\":nan,\"dur\":1,\"args\":{\"task\":1}}]}",
      "{\"traceEvents\":[{\"ph\":\"X\",\"cat\":\"run\",\"ts\":inf,\"dur\":1,\"args\":{\"task\":1}}]}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    f = fopen(p, "w");
    fputs(bad[i], f);
    fclose(f);
    assert_int_equal(tr_read(&m, p, false), -1);
  }
}

/* A `braid profile --trace` file: no task in it, one span per thread
 * state. Read as threads, the time on a CPU is the thread's runs and the
 * rest is idle; `braid trace show` falls back to that view by itself. */
static void test_profile_trace(void **state) {
  (void)state;
  const char *p = tmp("profile.json"), *err = tmp("profile.err");
  FILE *f = fopen(p, "w");
  fputs("{\"traceEvents\":[{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":7,\"tid\":7,"
        "\"args\":{\"name\":\"worker\"}},"
        "{\"name\":\"cpu\",\"cat\":\"braid.profile\",\"ph\":\"X\",\"ts\":0,\"dur\":1000,\"pid\":7,\"tid\":7},"
        "{\"name\":\"sleep\",\"cat\":\"braid.profile\",\"ph\":\"X\",\"ts\":1000,\"dur\":5000,\"pid\":7,\"tid\":7},"
        "{\"name\":\"cpu\",\"cat\":\"braid.profile\",\"ph\":\"X\",\"ts\":6000,\"dur\":1000,\"pid\":7,\"tid\":7}]}",
        f);
  fclose(f);
  tr_model m;
  assert_int_equal(tr_read(&m, p, false), -1); /* no task in it */
  bool threads = false;
  assert_int_equal(tr_read_any(&m, p, &threads), 0);
  assert_true(threads);
  assert_int_equal(m.n, 1);
  assert_string_equal(m.rows[0].name, "worker");
  assert_int_equal(m.rows[0].n, 2); /* the two CPU spans; the sleep is idle */
  for (size_t i = 0; i < m.rows[0].n; i++) assert_int_equal(m.rows[0].spans[i].t1 - m.rows[0].spans[i].t0, 1000000);
  tr_free(&m);
  int rc = run_braid("show", p, "--width", "80", err);
  if (rc == -2) return; /* the braid command is not built next to the tests */
  assert_int_equal(rc, 0);
  char *e = slurp(err);
  assert_non_null(strstr(e, "drawing its threads"));
  free(e);
}

/* Many tasks, each on a track of its own, named by the track: every one
 * becomes its own row with its own name, and grouping rows of one name
 * keeps distinct names apart. */
static void test_many_tracks(void **state) {
  (void)state;
  enum { N = 20000 };
  const char *p = tmp("tracks.json");
  FILE *f = fopen(p, "w");
  fputs("{\"traceEvents\":[", f);
  for (int i = 0; i < N; i++)
    fprintf(f,
            "%s{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":1,\"tid\":%d,\"args\":{\"name\":\"task 'w%d' #%d\"}},"
            "{\"ph\":\"X\",\"cat\":\"wait\",\"name\":\"sleep\",\"pid\":1,\"tid\":%d,\"ts\":%d,\"dur\":5,"
            "\"args\":{\"task\":%d,\"kind\":\"timer\"}}",
            i ? "," : "", 100 + i, i % (N / 2), i, 100 + i, i, i + 1);
  fputs("]}", f);
  fclose(f);
  tr_model m;
  assert_int_equal(tr_read(&m, p, false), 0);
  assert_int_equal(m.n, N);
  size_t named = 0;
  for (size_t i = 0; i < m.n; i++) {
    assert_int_equal(m.rows[i].n, 1);
    named += m.rows[i].name[0] == 'w';
  }
  assert_int_equal(named, N);
  /* Two tasks share each name: grouped, N / 2 rows of two members. */
  tr_group(&m, 100);
  assert_int_equal(m.n, N / 2);
  for (size_t i = 0; i < m.n; i++) assert_int_equal(m.rows[i].members, 2);
  tr_free(&m);
}

int main(int argc, char **argv) {
  self_exe = argv[0];
  if (argc > 2 && !strcmp(argv[1], "--quit-child")) return quit_child(argv[2]);
  if (argc > 2 && !strcmp(argv[1], "--overflow-child")) return overflow_child(argv[2]);
  if (argc > 1 && !strcmp(argv[1], "--traced-child")) {
    void *r = NULL;
    int rc = br_run(&r, traced_child_main, NULL);
    return rc || r ? 1 : 0;
  }
  snprintf(dir, sizeof dir, "/tmp/braid-test-trace-XXXXXX");
  if (!mkdtemp(dir)) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_off_by_default),
      cmocka_unit_test(test_json_tasks),
      cmocka_unit_test(test_json_threads),
      cmocka_unit_test(test_json_shape),
      cmocka_unit_test(test_svg),
      cmocka_unit_test(test_show),
      cmocka_unit_test(test_many_rows_grouped),
      cmocka_unit_test(test_flight_keeps_the_last_events),
      cmocka_unit_test(test_record_sizes),
      cmocka_unit_test(test_wakeup_records),
      cmocka_unit_test(test_wakeup_replaced_by_switch),
      cmocka_unit_test(test_flight_written_on_deadlock),
      cmocka_unit_test(test_flight_written_on_sigquit),
      cmocka_unit_test(test_flight_written_on_overflow),
      cmocka_unit_test(test_env_trace),
      cmocka_unit_test(test_bad_file),
      cmocka_unit_test(test_many_tracks),
      cmocka_unit_test(test_profile_trace),
      cmocka_unit_test(test_names_drawable),
      cmocka_unit_test(test_cli),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  br_blocking_shutdown(); /* join the blocking pool's threads (TSan counts an idle-retired one) */
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) rc = rc ? rc : 1;
  return rc;
}
