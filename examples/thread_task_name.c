/* SPDX-License-Identifier: MIT */
// thread_task_name — the articles' threading example with named workers, in C
// with plain threads:
//
//   def task(name):
//       time.sleep(1)
//       print(f"Done: {name}")
//   threads = [threading.Thread(target=task, args=(f"t{i}",)) for i in range(3)]
//   for thread in threads: thread.start()
//   for thread in threads: thread.join()
//
// The braid version is thread_task_name_braid.c.
//
// expect: ^Done: t[0-2]$
// expect: ^Done: t[0-2]$
// expect: ^Done: t[0-2]$
// expect-time: 0.9..1.8
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static void *task(void *arg) {
  const char *name = arg;
  sleep(1);
  printf("Done: %s\n", name);
  fflush(stdout);
  return NULL;
}

int main(void) {
  char names[3][8];
  pthread_t threads[3];
  for (int i = 0; i < 3; i++) {
    snprintf(names[i], sizeof names[i], "t%d", i);
    pthread_create(&threads[i], NULL, task, names[i]);
  }
  for (int i = 0; i < 3; i++) pthread_join(threads[i], NULL);
  return 0;
}
