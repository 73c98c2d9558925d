/* SPDX-License-Identifier: MIT */
// gather_abc — gather with arguments: fetch(name, delay) for A, B and C. The
// results come back in the order the tasks were given, whatever order they
// finish in.
//
//   async def fetch(name, delay):
//       await asyncio.sleep(delay)
//       return f"{name} done"
//
//   async def main():
//       results = await asyncio.gather(
//           fetch("A", 1), fetch("B", 1), fetch("C", 1))
//       print(results)
//
//   asyncio.run(main())
//
// expect: ^\['A done', 'B done', 'C done'\]$
// expect-time: 0.9..1.6
#include <stdio.h>
#include <stdlib.h>

#include <braid.h>

typedef struct fetch_args {
  const char *name;
  int delay_ms;
} fetch_args;

static void *fetch(void *arg) {
  const fetch_args *a = arg;
  int rc = br_sleep_ms(a->delay_ms);
  if (rc != 0) return br_fail(rc, "fetch %s: %s", a->name, br_strerror(rc));
  return br_strdupf("%s done", a->name);
}

static void *amain(void *arg) {
  (void)arg;
  // The arguments live in amain's frame, which outlives the tasks (gather
  // waits for all of them).
  fetch_args args[] = {{"A", 1000}, {"B", 1000}, {"C", 1000}};
  enum { N = sizeof args / sizeof args[0] };
  br_task *tasks[N];
  for (size_t i = 0; i < N; i++) {
    br_spawn_opts opts = {.name = args[i].name}; // tasks have names, like asyncio's
    int rc = br_spawn(&tasks[i], fetch, &args[i], &opts);
    if (rc != 0) {
      while (i-- > 0) br_task_close(tasks[i]);
      return br_fail(rc, "spawn: %s", br_strerror(rc));
    }
  }

  br_result results[N];
  int rc = br_gather_tasks(results, tasks, N);
  printf("[");
  for (size_t i = 0; i < N; i++) {
    if (results[i].err == 0)
      printf("%s'%s'", i ? ", " : "", (char *)results[i].value);
    else // return_exceptions=True: an error takes the place of its result
      printf("%s<%s: %s>", i ? ", " : "", br_errname(results[i].err), results[i].msg);
    free(results[i].value);
  }
  printf("]\n");
  br_results_free(results, N);
  return rc ? br_fail(rc, "a fetch failed") : NULL;
}

int main(void) { return br_run(NULL, amain, NULL) == 0 ? 0 : 1; }
