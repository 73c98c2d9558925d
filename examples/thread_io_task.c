/* SPDX-License-Identifier: MIT */
// thread_io_task — the articles' "threads as a practical concurrency tool",
// in C with plain threads, exactly as the Python version does it:
//
//   def io_task(i: int) -> None:
//       time.sleep(1)
//       print(f"done-{i}")
//   threads = [Thread(target=io_task, args=(i,)) for i in range(3)]
//   for t in threads: t.start()
//   for t in threads: t.join()
//
// Three threads wait at the same time: one second in all, not three. The
// braid version is thread_io_task_braid.c. (Like Python's, the order of
// the lines depends on which thread wakes first.)
//
// expect: ^done-[0-2]$
// expect: ^done-[0-2]$
// expect: ^done-[0-2]$
// expect-time: 0.9..1.8
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

static void *io_task(void *arg) {
  int i = (int)(intptr_t)arg;
  sleep(1); /* a blocking wait, like time.sleep */
  printf("done-%d\n", i);
  fflush(stdout);
  return NULL;
}

int main(void) {
  pthread_t threads[3];
  for (int i = 0; i < 3; i++) pthread_create(&threads[i], NULL, io_task, (void *)(intptr_t)i);
  for (int i = 0; i < 3; i++) pthread_join(threads[i], NULL);
  return 0;
}
