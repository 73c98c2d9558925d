/* SPDX-License-Identifier: MIT */
// futures_executor — the articles' "simple parallelization without diving in:
// concurrent.futures (ThreadPoolExecutor / ProcessPoolExecutor)", from a
// plain main(), with no event loop at all.
//
//   from concurrent.futures import ThreadPoolExecutor, ProcessPoolExecutor, as_completed
//
//   def download(name, seconds):        # a blocking library call
//       time.sleep(seconds)
//       if name == "broken": raise ConnectionResetError(f"{name}: server hung up")
//       return f"{name}: {int(seconds * 1000)} ms"
//
//   with ThreadPoolExecutor() as ex:
//       futures = [ex.submit(download, n, s) for n, s in
//                  [("big", 0.8), ("small", 0.2), ("broken", 0.4), ("medium", 0.6)]]
//       for f in as_completed(futures):     # in the order they finish
//           try: print(f.result())
//           except OSError as e: print(f"error: {e}")
//
//   with ProcessPoolExecutor() as ex:
//       print(ex.submit(cpu_task, 10**6).result())
//
// br_to_thread is the thread executor (braid's blocking pool, shared by the
// whole program), br_procpool the process one; both hand back a br_future,
// and br_as_completed / br_await take futures of any kind, from a plain
// thread (which blocks) as from a task (which suspends).
//
// expect: ^small: 200 ms$
// expect: ^error: ECONNRESET \(connection reset by peer\): broken: server hung up$
// expect: ^medium: 600 ms$
// expect: ^big: 800 ms$
// expect: ^4 downloads in (0\.[89]|1\.[0-4])[0-9] s, their waits add up to 2\.0 s$
// expect: ^cpu_task\(10\*\*6\) in a worker process: 333332833333500000$
// expect-time: 0.7..3
#include <braid.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct download_args {
  const char *name;
  int ms;
} download_args;

/* A blocking call, as a legacy library makes it: it holds its thread. */
static void *download(void *arg) {
  const download_args *a = arg;
  struct timespec ts = {a->ms / 1000, (long)(a->ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
  if (strcmp(a->name, "broken") == 0)
    return br_fail(BR_ECONNRESET, "%s: server hung up", a->name); // raise
  return br_strdupf("%s: %d ms", a->name, a->ms);
}

/* A process-pool job: bytes in (an int64 n), bytes out (the sum). */
static int cpu_task(const void *in, size_t len, br_bytes *out) {
  int64_t n, sum = 0;
  if (len != sizeof n) {
    br_fail(BR_EINVAL, "want an int64, got %zu bytes", len);
    return BR_EINVAL;
  }
  memcpy(&n, in, sizeof n);
  for (int64_t i = 0; i < n; i++) sum += i * i;
  return br_bytes_set(out, &sum, sizeof sum);
}
BR_JOB(cpu_task, cpu_task);

static int run_downloads(void) {
  static const download_args args[] = {{"big", 800}, {"small", 200}, {"broken", 400}, {"medium", 600}};
  enum { N = sizeof args / sizeof args[0] };
  br_future *futures[N];
  int64_t start = br_now();
  for (size_t i = 0; i < N; i++) {
    int rc = br_to_thread(&futures[i], download, (void *)&args[i]); // ex.submit
    if (rc != 0) {
      fprintf(stderr, "submit %s: %s\n", args[i].name, br_strerror(rc));
      while (i-- > 0) br_future_unref(futures[i]); // a started download runs on
      return 1;
    }
  }

  br_as_completed *it;
  int rc = br_as_completed_new(&it, futures, N);
  if (rc != 0) {
    fprintf(stderr, "as_completed: %s\n", br_strerror(rc));
    for (size_t i = 0; i < N; i++) br_future_unref(futures[i]);
    return 1;
  }
  int i;
  while ((i = br_as_completed_next(it, BR_NEVER)) >= 0) { // the index of the next one done
    br_future *f = futures[i];
    if (br_future_error(f) == 0) {
      char *text = br_future_take(f); // the job's result: ours to free
      printf("%s\n", text);
      free(text);
    } else { // f.result() would raise: the code and the job's message
      printf("error: %s (%s): %s\n", br_errname(br_future_error(f)),
             br_strerror(br_future_error(f)), br_future_message(f));
    }
    fflush(stdout);
  }
  br_as_completed_free(it);
  for (size_t k = 0; k < N; k++) br_future_unref(futures[k]);
  if (i != BR_ECLOSED) { // BR_ECLOSED: every future was handed out
    fprintf(stderr, "as_completed: %s\n", br_strerror(i));
    return 1;
  }

  int64_t sum_ms = 0;
  for (size_t k = 0; k < N; k++) sum_ms += args[k].ms;
  printf("%d downloads in %.2f s, their waits add up to %.1f s\n", N,
         (double)(br_now() - start) / 1e9, (double)sum_ms / 1e3);
  return 0;
}

static int run_process_job(void) {
  br_procpool *procs;
  int rc = br_procpool_new(&procs, BR_CPUS, NULL); // ProcessPoolExecutor()
  if (rc != 0) {
    fprintf(stderr, "process pool: %s\n", br_strerror(rc));
    return 1;
  }
  int64_t n = 1000000;
  br_future *f;
  rc = br_procpool_submit(procs, &f, "cpu_task", &n, sizeof n, NULL); // ex.submit
  if (rc == 0) {
    void *value;
    rc = br_await(f, &value); // .result(): this thread blocks until it is done
    if (rc == 0) {
      br_bytes *b = value; // a br_bytes* the caller owns
      int64_t sum;
      memcpy(&sum, b->data, sizeof sum);
      printf("cpu_task(10**6) in a worker process: %lld\n", (long long)sum);
      br_bytes_free(b);
    } else {
      fprintf(stderr, "cpu_task: %s: %s\n", br_errname(rc), br_future_message(f));
    }
    br_future_unref(f);
  } else {
    fprintf(stderr, "submit cpu_task: %s\n", br_strerror(rc));
  }
  int frc = br_procpool_free(procs); // the with block's end: drain, then stop the workers
  return rc != 0 || frc != 0;
}

int main(void) {
  if (run_downloads() != 0) return 1;
  return run_process_job();
}
