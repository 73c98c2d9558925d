/* SPDX-License-Identifier: MIT */
// wait_for_timeout — asyncio.wait_for: give a slow task at most 1 s. When the
// time is up the task is cancelled (its sleep returns BR_ECANCELED), waited
// for, and wait_for returns BR_ETIMEDOUT: the program ends after 1 s, not 3.
//
//   async def slow():
//       await asyncio.sleep(3)
//       return "done"
//
//   async def main():
//       try:
//           result = await asyncio.wait_for(slow(), timeout=1)
//           print(result)
//       except asyncio.TimeoutError:
//           print("Task timed out")
//
//   asyncio.run(main())
//
// expect: ^Task timed out$
// expect-time: 0.9..1.6
#include <stdio.h>

#include <braid.h>

static void *slow(void *arg) {
  (void)arg;
  int rc = br_sleep_ms(3000);
  if (rc != 0) return br_fail(rc, "slow: %s", br_strerror(rc)); // cancelled
  return "done";
}

static void *amain(void *arg) {
  (void)arg;
  br_task *t;
  int rc = br_spawn(&t, slow, NULL, NULL);
  if (rc != 0) return br_fail(rc, "spawn: %s", br_strerror(rc));

  void *result;
  rc = br_wait_for(t, &result, 1000); // gives the handle back in every case
  if (rc == 0)
    printf("%s\n", (const char *)result);
  else if (rc == BR_ETIMEDOUT)
    printf("Task timed out\n");
  else
    printf("Task failed: %s\n", br_strerror(rc));
  return NULL;
}

int main(void) { return br_run(NULL, amain, NULL) == 0 ? 0 : 1; }
