/* SPDX-License-Identifier: MIT */
// readme — the example in README.md, kept here so it is built and tested.
// expect: ^data-0$
// expect: ^data-1$
// expect: ^data-2$
// expect-time: 0.9..1.6
#include <braid.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void *fetch(void *arg) {                       /* async def fetch(i):        */
  int rc = br_sleep_ms(1000);                         /*   await asyncio.sleep(1)   */
  if (rc) return br_fail(rc, "fetch interrupted");
  return br_strdupf("data-%d", (int)(intptr_t)arg);   /*   return f"data-{i}"       */
}

static void *amain(void *arg) {
  (void)arg;
  br_task *t[3];
  for (int i = 0; i < 3; i++) br_spawn(&t[i], fetch, (void *)(intptr_t)i, NULL);
  br_result r[3];
  br_gather_tasks(r, t, 3);                           /* asyncio.gather: ~1 s, not 3 */
  for (int i = 0; i < 3; i++) {
    printf("%s\n", r[i].err ? r[i].msg : (char *)r[i].value);
    free(r[i].value);
  }
  br_results_free(r, 3);
  return NULL;
}

int main(void) { return br_run(NULL, amain, NULL) ? 1 : 0; }  /* asyncio.run(main()) */
