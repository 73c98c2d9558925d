/* SPDX-License-Identifier: MIT */
// task_logging — the articles' "add observability": every task has a name, every
// log line says which task wrote it and when, and a timeout is logged as an
// event, not lost. Three named workers must report within 500 ms; the slow
// one is cancelled when its time is up, and its cleanup logs too.
//
//   async def worker(ms):
//       log.info("working for %d ms", ms)
//       try: await asyncio.sleep(ms / 1000)
//       except asyncio.CancelledError: log.info("cancelled, cleaning up"); raise
//
//   tasks = [asyncio.create_task(worker(ms), name=f"worker-{i}") ...]
//   for t in tasks:
//       try: await asyncio.wait_for(t, timeout=remaining)
//       except TimeoutError: log.warning("%s timed out", t.get_name())
//
// expect: ^\[ *[0-9]+ ms\] main: started 3 workers, deadline 500 ms$
// expect: ^\[ *[0-9]+ ms\] worker-1: working for 100 ms$
// expect: ^\[ *[0-9]+ ms\] worker-3: working for 900 ms$
// expect: ^\[ *(9[0-9]|1[0-9][0-9]) ms\] worker-1: done$
// expect: ^\[ *[0-9]+ ms\] main: worker-1 returned report-1$
// expect: ^\[ *[0-9]+ ms\] main: worker-2 returned report-2$
// expect: ^\[ *[0-9]+ ms\] worker-3: cancelled \(operation canceled\), cleaning up$
// expect: ^\[ *(4[89][0-9]|5[0-9][0-9]) ms\] main: worker-3 timed out after 500 ms$
// expect-time: 0.4..1.2
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <braid.h>

enum { N = 3, DEADLINE_MS = 500 };

static int64_t t_start;

// One log line: elapsed time, the calling task's name, the message.
static void log_event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_event(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("[%4lld ms] %s: ", (long long)((br_now() - t_start) / 1000000), br_task_name(NULL));
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
}

static void *worker(void *arg) {
  int ms = (int)(intptr_t)arg;
  log_event("working for %d ms", ms);
  int rc = br_sleep_ms(ms);
  if (rc != 0) {
    log_event("cancelled (%s), cleaning up", br_strerror(rc));
    return br_fail(rc, "%s interrupted", br_task_name(NULL));
  }
  log_event("done");
  return br_strdupf("report-%s", br_task_name(NULL) + 7); // "worker-N" -> "report-N"
}

static void *amain(void *arg) {
  (void)arg;
  static const int work_ms[N] = {100, 300, 900};
  br_task *tasks[N];
  char names[N][16];
  for (int i = 0; i < N; i++) {
    snprintf(names[i], sizeof names[i], "worker-%d", i + 1);
    br_spawn_opts opts = {.name = names[i]}; // copied by br_spawn
    int rc = br_spawn(&tasks[i], worker, (void *)(intptr_t)work_ms[i], &opts);
    if (rc != 0) {
      while (i-- > 0) br_task_close(tasks[i]);
      return br_fail(rc, "spawn: %s", br_strerror(rc));
    }
  }
  log_event("started %d workers, deadline %d ms", N, DEADLINE_MS);

  int64_t deadline = br_deadline_ms(DEADLINE_MS);
  for (int i = 0; i < N; i++) {
    int64_t left_ms = (deadline - br_now()) / 1000000;
    void *report = NULL;
    int rc = br_wait_for(tasks[i], &report, left_ms > 0 ? left_ms : 0);
    if (rc == 0)
      log_event("%s returned %s", names[i], (char *)report);
    else if (rc == BR_ETIMEDOUT)
      log_event("%s timed out after %d ms", names[i], DEADLINE_MS);
    else
      log_event("%s failed: %s", names[i], br_strerror(rc));
    free(report);
  }
  return NULL;
}

int main(void) {
  t_start = br_now();
  return br_run(NULL, amain, NULL) == 0 ? 0 : 1;
}
