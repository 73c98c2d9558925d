/* SPDX-License-Identifier: MIT */
// cancel_cleanup — the articles' "add cancellation paths": a task is cancelled
// while it works; its current wait returns BR_ECANCELED, its cleanup runs
// (like `except asyncio.CancelledError` / `finally`), and whoever joins it
// sees that it was cancelled.
//
//   async def download():
//       f = open_file()
//       try:
//           for chunk in range(1, 11):
//               await asyncio.sleep(0.1); print(f"download: chunk {chunk} of 10")
//       finally:
//           f.close()
//
//   t = asyncio.create_task(download(), name="download")
//   await asyncio.sleep(0.35); t.cancel()
//
// expect: ^download: chunk 1 of 10$
// expect: ^download: chunk 3 of 10$
// expect: ^main: cancelling download$
// expect: ^download: cancelled after 3 chunks, closing the file$
// expect: ^main: download ended: ECANCELED \(operation canceled\)$
// expect-time: 0.3..1.0
#include <stdio.h>
#include <stdlib.h>

#include <braid.h>

enum { CHUNKS = 10, CHUNK_MS = 100 };

static void *download(void *arg) {
  (void)arg;
  char *buffer = malloc(64 * 1024); // a resource that must not leak
  if (!buffer) return br_fail(BR_ENOMEM, "download: no memory");
  int done = 0, rc = 0;
  while (done < CHUNKS && (rc = br_sleep_ms(CHUNK_MS)) == 0) {
    done++;
    printf("download: chunk %d of %d\n", done, CHUNKS);
  }
  if (rc != 0) printf("download: cancelled after %d chunks, closing the file\n", done);
  free(buffer); // the cleanup runs either way
  return rc ? br_fail(rc, "download stopped after %d chunks", done) : NULL;
}

static void *amain(void *arg) {
  (void)arg;
  br_task *t;
  br_spawn_opts opts = {.name = "download"};
  int rc = br_spawn(&t, download, NULL, &opts);
  if (rc != 0) return br_fail(rc, "spawn: %s", br_strerror(rc));

  br_sleep_ms(350);
  printf("main: cancelling %s\n", br_task_name(t));
  br_cancel(t);          // a request: the task decides how to unwind
  rc = br_join(t, NULL); // waits for the cleanup; returns the task's outcome
  printf("main: download ended: %s (%s)\n", rc ? br_errname(rc) : "OK", br_strerror(rc));
  return NULL;
}

int main(void) { return br_run(NULL, amain, NULL) == 0 ? 0 : 1; }
