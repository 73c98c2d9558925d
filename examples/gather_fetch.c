/* SPDX-License-Identifier: MIT */
// gather_fetch — asyncio.gather in C: three fetches that each wait 1 s run
// concurrently on one loop, so the whole program takes about 1 s, not 3.
//
//   async def fetch_data(i: int) -> str:
//       await asyncio.sleep(1)
//       return f"data-{i}"
//
//   async def main():
//       tasks = [fetch_data(i) for i in range(3)]
//       results = await asyncio.gather(*tasks)
//       print(results)
//
//   asyncio.run(main())
//
// expect: ^\['data-0', 'data-1', 'data-2'\]$
// expect-time: 0.9..1.6
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <braid.h>

enum { N = 3 };

static void *fetch_data(void *arg) {
  int i = (int)(intptr_t)arg;
  int rc = br_sleep_ms(1000); // only this task waits; the loop runs the others
  if (rc != 0) return br_fail(rc, "fetch_data(%d): %s", i, br_strerror(rc));
  return br_strdupf("data-%d", i); // the result: a string the gatherer frees
}

static void *amain(void *arg) {
  (void)arg;
  br_task *tasks[N];
  for (int i = 0; i < N; i++) {
    int rc = br_spawn(&tasks[i], fetch_data, (void *)(intptr_t)i, NULL);
    if (rc != 0) {
      while (i-- > 0) br_task_close(tasks[i]); // cancel and reap those started
      return br_fail(rc, "spawn: %s", br_strerror(rc));
    }
  }

  br_result results[N];
  int rc = br_gather_tasks(results, tasks, N); // every result and every error
  if (rc == 0) {
    printf("[");
    for (int i = 0; i < N; i++) printf("%s'%s'", i ? ", " : "", (char *)results[i].value);
    printf("]\n");
  } else {
    fprintf(stderr, "gather: %s\n", br_strerror(rc));
  }
  for (int i = 0; i < N; i++) free(results[i].value);
  br_results_free(results, N);
  return rc ? br_fail(rc, "gather failed") : NULL;
}

int main(void) { return br_run(NULL, amain, NULL) == 0 ? 0 : 1; }
