/* SPDX-License-Identifier: MIT */
// thread_task_name_braid — thread_task_name.c with braid tasks. The name
// is the task's own (br_spawn_opts.name), so the task reads it back with
// br_task_name(NULL) — and the watchdog, the profiler and failure reports
// use the same name. The tasks sleep on one thread, together: one second.
//
// expect: ^Done: t0$
// expect: ^Done: t1$
// expect: ^Done: t2$
// expect-time: 0.9..1.8
#include <braid.h>

#include <stdio.h>

static void *task(void *arg) {
  (void)arg;
  br_sleep_ms(1000);
  printf("Done: %s\n", br_task_name(NULL));
  return NULL;
}

static void *main_task(void *arg) {
  (void)arg;
  br_task *t[3];
  for (int i = 0; i < 3; i++) {
    char name[8];
    snprintf(name, sizeof name, "t%d", i);
    br_spawn(&t[i], task, NULL, &(br_spawn_opts){.name = name});
  }
  for (int i = 0; i < 3; i++) br_join(t[i], NULL);
  return NULL;
}

int main(void) { return br_run(NULL, main_task, NULL) == 0 ? 0 : 1; }
