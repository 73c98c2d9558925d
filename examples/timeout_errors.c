/* SPDX-License-Identifier: MIT */
// timeout_errors — the articles' "add safety": a timeout and error handling per
// task. Three fetches run concurrently, each inside its own 500 ms deadline
// (trio's fail_after, a braid cancel scope). One answers, one is too slow and
// one fails; gather hands back every result *and* every error, like
// asyncio.gather(..., return_exceptions=True), so one failure loses nothing.
//
//   async def fetch(name, delay, error=None):
//       async with asyncio.timeout(0.5):
//           await asyncio.sleep(delay)
//       if error: raise error
//       return f"{name} done"
//
//   results = await asyncio.gather(fetch("A", 0.1), fetch("B", 2),
//       fetch("C", 0.2, ConnectionRefusedError()), return_exceptions=True)
//
// expect: ^A: ok, A done$
// expect: ^B: ETIMEDOUT \(timed out\): B gave no answer within 500 ms$
// expect: ^C: ECONNREFUSED \(connection refused\): C refused the connection$
// expect: ^1 of 3 fetches succeeded$
// expect-time: 0.4..1.2
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <braid.h>

enum { TIMEOUT_MS = 500 };

typedef struct fetch_args {
  const char *name;
  int delay_ms;
  bool refuse; // simulate a server that refuses the connection
} fetch_args;

static void *fetch(void *arg) {
  const fetch_args *a = arg;
  br_scope deadline;
  br_scope_enter(&deadline, br_deadline_ms(TIMEOUT_MS), false);
  int rc = br_sleep_ms(a->delay_ms); // BR_ETIMEDOUT once the scope's deadline passes
  int scope_rc = br_scope_exit(&deadline);
  if (rc == BR_ETIMEDOUT || scope_rc == BR_ETIMEDOUT)
    return br_fail(BR_ETIMEDOUT, "%s gave no answer within %d ms", a->name, TIMEOUT_MS);
  if (rc != 0) return br_fail(rc, "%s: %s", a->name, br_strerror(rc));
  if (a->refuse) return br_fail(BR_ECONNREFUSED, "%s refused the connection", a->name);
  return br_strdupf("%s done", a->name);
}

static void *amain(void *arg) {
  (void)arg;
  fetch_args args[] = {{"A", 100, false}, {"B", 2000, false}, {"C", 200, true}};
  enum { N = sizeof args / sizeof args[0] };
  br_task *tasks[N];
  for (size_t i = 0; i < N; i++) {
    br_spawn_opts opts = {.name = args[i].name};
    int rc = br_spawn(&tasks[i], fetch, &args[i], &opts);
    if (rc != 0) {
      while (i-- > 0) br_task_close(tasks[i]);
      return br_fail(rc, "spawn: %s", br_strerror(rc));
    }
  }

  br_result results[N];
  br_gather_tasks(results, tasks, N); // returns the first error; we look at each
  int ok = 0;
  for (size_t i = 0; i < N; i++) {
    if (results[i].err == 0) {
      printf("%s: ok, %s\n", args[i].name, (char *)results[i].value);
      free(results[i].value);
      ok++;
    } else {
      printf("%s: %s (%s): %s\n", args[i].name, br_errname(results[i].err),
             br_strerror(results[i].err), results[i].msg);
    }
  }
  br_results_free(results, N);
  printf("%d of %d fetches succeeded\n", ok, (int)N);
  return NULL;
}

int main(void) { return br_run(NULL, amain, NULL) == 0 ? 0 : 1; }
