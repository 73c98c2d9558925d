/* SPDX-License-Identifier: MIT */
// download_pages — the opening problem of the articles: "our program needs to
// download 100 pages from different sites; done one by one, the total time
// is the sum of all those waits. While one request waits, send the others."
// Each page here waits 100–200 ms (a stand-in for the server); one task per
// page, with a semaphore so that at most 10 requests are in flight at once
// (asyncio.Semaphore: be polite to the servers, bound the memory held).
//
//   sem = asyncio.Semaphore(10)
//   async def download(i):
//       async with sem:
//           await asyncio.sleep(wait_of(i))
//           return f"page-{i}"
//   pages = await asyncio.gather(*(download(i) for i in range(100)))
//
// expect: ^100 pages, first page-0, last page-99$
// expect: ^one by one: 14\.9[0-9] s of waiting$
// expect: ^concurrently: [0-9]\.[0-9][0-9] s, at most 10 requests in flight$
// expect-time: 1.3..5
#include <braid.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum { PAGES = 100, IN_FLIGHT = 10 };

static br_sem *slots;        // at most IN_FLIGHT holders
static int in_flight, peak;  // tasks of one loop: no lock needed

static int wait_of(int i) { return 100 + (i * 37) % 101; } // 100..200 ms

static void *download(void *arg) {
  int i = (int)(intptr_t)arg;
  int rc = br_sem_acquire(slots); // async with sem:
  if (rc != 0) return br_fail(rc, "page-%d: waiting for a slot", i);
  if (++in_flight > peak) peak = in_flight;
  rc = br_sleep_ms(wait_of(i)); // the request
  in_flight--;
  br_sem_release(slots);
  if (rc != 0) return br_fail(rc, "page-%d: %s", i, br_strerror(rc));
  return br_strdupf("page-%d", i);
}

static void *amain(void *arg) {
  (void)arg;
  int rc = br_sem_new(&slots, IN_FLIGHT);
  if (rc != 0) return br_fail(rc, "semaphore: %s", br_strerror(rc));
  static br_task *tasks[PAGES];
  static br_result pages[PAGES];
  int64_t start = br_now();
  for (int i = 0; i < PAGES; i++) {
    rc = br_spawn(&tasks[i], download, (void *)(intptr_t)i, NULL);
    if (rc != 0) {
      while (i-- > 0) br_task_close(tasks[i]);
      br_sem_free(slots);
      return br_fail(rc, "spawn: %s", br_strerror(rc));
    }
  }
  rc = br_gather_tasks(pages, tasks, PAGES);
  double took = (double)(br_now() - start) / 1e9;
  if (rc == 0) {
    printf("%d pages, first %s, last %s\n", PAGES, (char *)pages[0].value,
           (char *)pages[PAGES - 1].value);
    int64_t sum = 0;
    for (int i = 0; i < PAGES; i++) sum += wait_of(i);
    printf("one by one: %.2f s of waiting\n", (double)sum / 1e3);
    printf("concurrently: %.2f s, at most %d requests in flight\n", took, peak);
  }
  for (int i = 0; i < PAGES; i++) free(pages[i].value);
  br_results_free(pages, PAGES);
  br_sem_free(slots);
  return rc ? br_fail(rc, "a download failed") : NULL;
}

int main(void) { return br_run(NULL, amain, NULL) == 0 ? 0 : 1; }
