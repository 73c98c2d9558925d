/* SPDX-License-Identifier: MIT */
// wait_first — asyncio.wait(..., return_when=FIRST_COMPLETED): ask three
// mirrors the same question, keep the first answer, cancel the slower ones.
//
//   async def query(mirror, delay):
//       await asyncio.sleep(delay)
//       return f"answer from {mirror}"
//
//   tasks = [asyncio.create_task(query(m, d), name=m)
//            for m, d in [("mirror-a", 0.6), ("mirror-b", 0.2), ("mirror-c", 0.4)]]
//   done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
//   for t in done: print(f"{t.get_name()}: {t.result()}")
//   for t in pending: t.cancel()
//
// br_wait(futures, n, BR_WAIT_FIRST, deadline) returns the index of a
// completed future (BR_WAIT_ALL and BR_WAIT_FIRST_ERROR are ALL_COMPLETED and
// FIRST_EXCEPTION); it cancels nothing itself. Each slower task is then
// cancelled and joined: its sleep returns BR_ECANCELED and it ends.
//
// expect: ^mirror-b: answer from mirror-b$
// expect: ^mirror-a: cancelled \(ECANCELED\)$
// expect: ^mirror-c: cancelled \(ECANCELED\)$
// expect: ^first answer after 0\.[2-5][0-9] s; 2 slower queries cancelled$
// expect-time: 0.15..1.2
#include <braid.h>

#include <stdio.h>
#include <stdlib.h>

typedef struct query_args {
  const char *mirror;
  int delay_ms;
} query_args;

static void *query(void *arg) {
  const query_args *a = arg;
  int rc = br_sleep_ms(a->delay_ms);
  if (rc != 0) return br_fail(rc, "%s: no answer", a->mirror);
  return br_strdupf("answer from %s", a->mirror);
}

static void *amain(void *arg) {
  (void)arg;
  query_args args[] = {{"mirror-a", 600}, {"mirror-b", 200}, {"mirror-c", 400}};
  enum { N = sizeof args / sizeof args[0] };
  br_task *tasks[N];
  br_future *futures[N];
  int64_t start = br_now();
  for (size_t i = 0; i < N; i++) {
    int rc = br_spawn(&tasks[i], query, &args[i], &(br_spawn_opts){.name = args[i].mirror});
    if (rc != 0) {
      while (i-- > 0) br_task_close(tasks[i]);
      return br_fail(rc, "spawn: %s", br_strerror(rc));
    }
    futures[i] = br_task_future(tasks[i]); // borrowed: lives as long as the handle
  }

  int first = br_wait(futures, N, BR_WAIT_FIRST, BR_NEVER);
  if (first < 0) { // the wait itself failed (cancelled): close every task
    for (size_t i = 0; i < N; i++) br_task_close(tasks[i]);
    return br_fail(first, "wait: %s", br_strerror(first));
  }
  double elapsed = (double)(br_now() - start) / 1e9;

  void *answer;
  int rc = br_join(tasks[first], &answer); // done: joining does not wait
  if (rc == 0) {
    printf("%s: %s\n", args[first].mirror, (char *)answer);
    free(answer);
  } else {
    printf("%s: failed (%s)\n", args[first].mirror, br_errname(rc));
  }

  int cancelled = 0;
  for (size_t i = 0; i < N; i++) { // the pending ones
    if ((int)i == first) continue;
    br_cancel(tasks[i]);
    void *value;
    int trc = br_join(tasks[i], &value);
    if (trc == 0) { // it finished before the cancel reached it
      printf("%s: %s (too late)\n", args[i].mirror, (char *)value);
      free(value);
    } else {
      printf("%s: cancelled (%s)\n", args[i].mirror, br_errname(trc));
      cancelled += trc == BR_ECANCELED;
    }
  }
  printf("first answer after %.2f s; %d slower queries cancelled\n", elapsed, cancelled);
  return rc ? br_fail(rc, "the first answer was an error") : NULL;
}

int main(void) { return br_run(NULL, amain, NULL) == 0 ? 0 : 1; }
