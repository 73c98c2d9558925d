/* SPDX-License-Identifier: MIT */
/* braid — process pool: map, map_fixed, imap and imap_unordered.
 *
 * Who runs this: the caller's thread (a task suspends in br_await, a plain
 * thread blocks); an iterator is used by one consumer at a time. No lock of
 * its own: everything goes through br__pp_submit and the chunk futures.
 *
 * All of them cut the input into chunks, submit each chunk as one request
 * (one hand-off to a worker, one result back) and decode the per-item
 * entries of the chunk's result (procpool_shm.h: pp_entry). A chunk's future
 * owns its result bytes (value_free), never the caller's arrays, so a map
 * whose caller is cancelled can return at once: it cancels the chunks that
 * have not started and the futures free the others' results when they come.
 * Item values handed to the caller (br_result.value) carry value_free, so
 * br_results_free releases them with the messages.
 */
#include <stdlib.h>
#include <string.h>

#include "exec/jobs.h"
#include "exec/procpool_decode.h"
#include "exec/procpool_int.h"

/* Drop a chunk future we no longer want: cancel it if it is pending (its
 * result, if it comes, is freed with the future). */
static void chunk_drop(br_future *f) {
  if (!f) return;
  (void)br_future_cancel(f);
  br_future_unref(f);
}

/* out->value = a copy of data[0..len) that br_results_free releases. */
static int result_put_bytes(br_result *out, const void *data, size_t len) {
  br_bytes *b = calloc(1, sizeof *b);
  if (!b || br_bytes_set(b, data, len) < 0) {
    free(b);
    return BR_ENOMEM;
  }
  out->value = b;
  out->br__private.value_free = br__bytes_free_cb;
  return 0;
}

/* The entries of a chunk result: procpool_decode.c. */
typedef pp_entry_cursor entry_cursor;
#define entry_next br__pp_entry_next

static size_t auto_chunksize(br_procpool *p, size_t n) {
  size_t w = (size_t)br_procpool_size(p) * 4;
  size_t cs = n / w;
  if (n % w) cs++;
  return cs ? cs : 1;
}

/* Fill out[] (generic) or out_fixed[] (fixed) for chunk [first, first+count)
 * from its future's outcome r / value v. Returns the first error. */
typedef struct map_sink {
  br_result *out;    /* generic */
  char *fixed;       /* fixed */
  size_t out_size;
  int *errors;
} map_sink;

static void sink_put(map_sink *k, size_t i, int err, const void *data, size_t len, const char *msg,
                     size_t msglen, int *first) {
  if (!err && k->fixed && len != k->out_size) {
    err = BR_ERANGE;
    msg = "the job's result does not have the size map_fixed expects";
    msglen = strlen(msg);
  }
  if (!err) {
    if (k->fixed) {
      memcpy(k->fixed + i * k->out_size, data, len);
    } else if (result_put_bytes(&k->out[i], data, len) < 0) {
      err = BR_ENOMEM;
      msg = "out of memory";
      msglen = strlen(msg);
    }
  }
  if (err) {
    if (k->out) {
      k->out[i].value = NULL;
      k->out[i].msg = strndup(msg, msglen);
    }
    if (!*first) *first = err;
  }
  if (k->out) k->out[i].err = err;
  if (k->errors) k->errors[i] = err;
}

static void sink_chunk(map_sink *k, size_t first, uint32_t count, int r, br_future *f,
                       int *first_err) {
  if (r < 0) {
    const char *m = br_future_message(f);
    for (uint32_t i = 0; i < count; i++)
      sink_put(k, first + i, r, NULL, 0, m, strlen(m), first_err);
    return;
  }
  br_bytes *v = br_future_value(f);
  entry_cursor c = {v ? v->data : NULL, v ? (const char *)v->data + v->len : NULL};
  for (uint32_t i = 0; i < count; i++) {
    int err;
    const void *d;
    size_t len, ml;
    const char *msg;
    if (!v || !entry_next(&c, &err, &d, &len, &msg, &ml)) {
      static const char bad[] = "malformed chunk result";
      sink_put(k, first + i, BR_EIO, NULL, 0, bad, sizeof bad - 1, first_err);
      continue;
    }
    sink_put(k, first + i, err, d, len, msg, ml, first_err);
  }
}

/* The common engine. items (generic) or in/in_size (fixed). */
static int map_run(br_procpool *p, const char *job, const br_buf *items, const char *in,
                   size_t in_size, size_t n, const br_procpool_map_opts *opts, map_sink *k) {
  int idx = br__pp_job_index(job);
  if (idx < 0) return idx;
  if (n == 0) return 0;
  size_t cs = opts && opts->chunksize ? opts->chunksize : auto_chunksize(p, n);
  if (cs > n) cs = n; /* "all in one" is one chunk of the n items */
  if (cs > UINT32_MAX) cs = UINT32_MAX;
  int64_t timeout = opts ? opts->timeout_ms : 0;
  size_t nch = (n + cs - 1) / cs;
  size_t nsub = nch; /* chunks submitted */
  int shut_err = 0;
  br_future **futs = calloc(nch, sizeof *futs);
  struct iovec *iov = items ? calloc(cs + 2, sizeof *iov) : NULL;
  uint64_t *lens = items ? calloc(cs, sizeof *lens) : NULL;
  int err = 0;
  if (!futs || (items && (!iov || !lens))) {
    err = BR_ENOMEM;
    goto out;
  }
  for (size_t c = 0; c < nch; c++) {
    size_t first = c * cs;
    uint32_t count = (uint32_t)(n - first < cs ? n - first : cs);
    pp_chunk_hdr h = {.count = count};
    size_t total = sizeof h;
    int iovcnt;
    struct iovec fixed_iov[2];
    if (items) {
      iov[0] = (struct iovec){&h, sizeof h};
      iov[1] = (struct iovec){lens, count * sizeof *lens};
      total += count * sizeof *lens;
      for (uint32_t i = 0; i < count; i++) {
        const br_buf *b = &items[first + i];
        if (b->len && !b->data) {
          err = BR_EINVAL;
          goto out;
        }
        lens[i] = b->len;
        iov[2 + i] = (struct iovec){(void *)b->data, b->len};
        total += b->len;
      }
      iovcnt = (int)count + 2;
    } else {
      h.flags = PP_CHUNK_FIXED;
      h.item_size = in_size;
      fixed_iov[0] = (struct iovec){&h, sizeof h};
      fixed_iov[1] = (struct iovec){(void *)(in + first * in_size), count * in_size};
      total += count * in_size;
      iovcnt = 2;
    }
    err = br__pp_submit(p, &futs[c], (uint32_t)idx, items ? iov : fixed_iov, iovcnt, total,
                        PP_F_CHUNK, count, timeout);
    if (err == BR_ESHUTDOWN && c > 0) {
      /* The pool began shutting down while we submitted: what went in
       * completes (or is cancelled) as usual, the rest fails BR_ESHUTDOWN,
       * and every item still gets its outcome. */
      nsub = c;
      err = 0;
      break;
    }
    if (err < 0) goto out;
  }
  int first_err = 0;
  for (size_t c = nsub; c < nch; c++) {
    size_t first = c * cs;
    uint32_t count = (uint32_t)(n - first < cs ? n - first : cs);
    static const char m[] = "not submitted: the pool was shut down while map submitted";
    for (uint32_t i = 0; i < count; i++)
      sink_put(k, first + i, BR_ESHUTDOWN, NULL, 0, m, sizeof m - 1, &shut_err);
  }
  for (size_t c = 0; c < nsub; c++) {
    int r = br_await(futs[c], NULL);
    if (r < 0 && !br_future_done(futs[c])) {
      /* Our own wait was interrupted: drop everything, leave out[] empty. */
      if (k->out) {
        br_results_free(k->out, c * cs);
        if (nsub < nch) br_results_free(k->out + nsub * cs, n - nsub * cs);
      }
      err = r;
      goto out;
    }
    size_t first = c * cs;
    uint32_t count = (uint32_t)(n - first < cs ? n - first : cs);
    sink_chunk(k, first, count, r, futs[c], &first_err);
    br_future_unref(futs[c]);
    futs[c] = NULL;
  }
  /* The first failing item's code, in index order: the unsubmitted items
   * all come after the submitted ones. */
  err = first_err ? first_err : shut_err;
out:
  if (futs)
    for (size_t c = 0; c < nch; c++) chunk_drop(futs[c]);
  free(futs);
  free(iov);
  free(lens);
  return err;
}

int br_procpool_map(br_procpool *p, br_result *out, const char *job, const br_buf *items,
                    size_t n, const br_procpool_map_opts *opts) {
  if (!p || (n && (!items || !out))) return BR_EINVAL;
  if (n) memset(out, 0, n * sizeof *out);
  map_sink k = {.out = out};
  return map_run(p, job, items, NULL, 0, n, opts, &k);
}

int br_procpool_map_fixed(br_procpool *p, void *out, size_t out_size, int *errors,
                          const char *job, const void *in, size_t in_size, size_t n,
                          const br_procpool_map_opts *opts) {
  if (!p || (n && ((in_size && !in) || (out_size && !out)))) return BR_EINVAL;
  map_sink k = {.fixed = out, .out_size = out_size, .errors = errors};
  if (!out) k.fixed = (char *)""; /* out_size 0: nothing to copy */
  return map_run(p, job, NULL, in, in_size, n, opts, &k);
}

/* ------------------------------------------------------------------------ */
/* streaming */

typedef struct ichunk {
  br_future *f;
  size_t first;
  uint32_t count;
} ichunk;

struct br_procpool_iter {
  br_procpool *p;
  uint32_t job;
  br_procpool_item_fn next;
  void *ud;
  size_t chunksize, window;
  int64_t timeout_ms;
  bool ordered;
  size_t pulled;
  bool eof;
  int src_err;
  bool src_reported;
  ichunk *ch;
  br_future **fs; /* room to wait for every chunk at once (unordered) */
  size_t nch;
  size_t outstanding; /* items submitted and not yet handed out */
  /* the chunk being handed out */
  br_bytes *cur;
  entry_cursor cur_c;
  size_t cur_first;
  uint32_t cur_i, cur_n;
  int cur_err; /* the whole chunk failed */
  char *cur_msg;
  br_bytes lens, data;
};

static int imap_new(br_procpool *p, br_procpool_iter **out, const char *job,
                    br_procpool_item_fn next, void *ud, const br_procpool_imap_opts *opts,
                    bool ordered) {
  if (!out) return BR_EINVAL;
  *out = NULL;
  if (!p || !next) return BR_EINVAL;
  int idx = br__pp_job_index(job);
  if (idx < 0) return idx;
  br_procpool_iter *it = calloc(1, sizeof *it);
  if (!it) return BR_ENOMEM;
  it->p = p;
  it->job = (uint32_t)idx;
  it->next = next;
  it->ud = ud;
  it->ordered = ordered;
  it->chunksize = opts && opts->chunksize ? opts->chunksize : 1;
  if (it->chunksize > UINT32_MAX) it->chunksize = UINT32_MAX;
  it->window = opts && opts->window ? opts->window
                                    : 4 * (size_t)br_procpool_size(p) * it->chunksize;
  if (it->window < it->chunksize) it->window = it->chunksize;
  it->timeout_ms = opts ? opts->timeout_ms : 0;
  size_t maxch = it->window / it->chunksize + 1; /* wraps to 0 only for a window of SIZE_MAX */
  if (!maxch) maxch = SIZE_MAX / sizeof *it->ch; /* calloc refuses it: BR_ENOMEM */
  it->ch = calloc(maxch, sizeof *it->ch);
  /* On the heap, never on the caller's stack: the window is the caller's
   * choice, and a task's stack is small. */
  it->fs = ordered ? NULL : calloc(maxch, sizeof *it->fs);
  if (!it->ch || (!ordered && !it->fs)) {
    free(it->ch);
    free(it);
    return BR_ENOMEM;
  }
  *out = it;
  return 0;
}

int br_procpool_imap(br_procpool *p, br_procpool_iter **out, const char *job,
                     br_procpool_item_fn next, void *ud, const br_procpool_imap_opts *opts) {
  return imap_new(p, out, job, next, ud, opts, true);
}

int br_procpool_imap_unordered(br_procpool *p, br_procpool_iter **out, const char *job,
                               br_procpool_item_fn next, void *ud,
                               const br_procpool_imap_opts *opts) {
  return imap_new(p, out, job, next, ud, opts, false);
}

/* Pull and submit chunks while the window has room. */
static void imap_fill(br_procpool_iter *it) {
  while (!it->eof && it->outstanding + it->chunksize <= it->window) {
    it->lens.len = it->data.len = 0;
    uint32_t count = 0;
    size_t first = it->pulled;
    while (count < it->chunksize) {
      br_buf item = {0};
      int r = it->next(it->ud, it->pulled, &item);
      if (r <= 0 || (item.len && !item.data)) {
        it->eof = true;
        it->src_err = r < 0 ? r : item.len && !item.data ? BR_EINVAL : 0;
        break;
      }
      uint64_t l = item.len;
      if (br_bytes_append(&it->lens, &l, sizeof l) < 0 ||
          br_bytes_append(&it->data, item.data, item.len) < 0) {
        it->eof = true;
        it->src_err = BR_ENOMEM;
        break;
      }
      it->pulled++;
      count++;
    }
    if (!count) break;
    pp_chunk_hdr h = {.count = count};
    struct iovec iov[3] = {
        {&h, sizeof h}, {it->lens.data, it->lens.len}, {it->data.data, it->data.len}};
    br_future *f;
    int r = br__pp_submit(it->p, &f, it->job, iov, 3, sizeof h + it->lens.len + it->data.len,
                          PP_F_CHUNK, count, it->timeout_ms);
    if (r < 0) {
      /* Not submitted: report the items as failed, in order. */
      if (br_future_new(&f) < 0) {
        it->eof = true;
        it->src_err = r;
        break;
      }
      br_future_fail(f, r, "could not submit: %s", br_strerror(r));
    }
    it->ch[it->nch++] = (ichunk){f, first, count};
    it->outstanding += count;
  }
}

int br_procpool_iter_next(br_procpool_iter *it, br_result *res, size_t *index) {
  if (!it || !res) return BR_EINVAL;
  memset(res, 0, sizeof *res);
  for (;;) {
    if (it->cur_i < it->cur_n) {
      size_t i = it->cur_i++;
      it->outstanding--;
      if (index) *index = it->cur_first + i;
      if (it->cur_err) {
        res->err = it->cur_err;
        res->msg = strdup(it->cur_msg ? it->cur_msg : br_strerror(it->cur_err));
      } else {
        int err;
        const void *d;
        size_t len, ml;
        const char *msg;
        if (!entry_next(&it->cur_c, &err, &d, &len, &msg, &ml)) {
          err = BR_EIO;
          msg = "malformed chunk result";
          ml = strlen(msg);
        }
        res->err = err;
        if (err) {
          res->msg = strndup(msg, ml);
        } else if (result_put_bytes(res, d, len) < 0) {
          res->err = BR_ENOMEM;
          res->msg = strdup("out of memory");
        }
      }
      if (it->cur_i == it->cur_n) {
        br_bytes_free(it->cur);
        free(it->cur_msg);
        it->cur = NULL;
        it->cur_msg = NULL;
        it->cur_i = it->cur_n = 0;
        it->cur_err = 0;
      }
      return 0;
    }
    imap_fill(it);
    if (!it->nch) {
      if (it->src_err && !it->src_reported) {
        it->src_reported = true;
        if (index) *index = SIZE_MAX;
        return it->src_err;
      }
      return BR_ECLOSED;
    }
    size_t k = 0;
    if (!it->ordered) {
      while (k < it->nch && !br_future_done(it->ch[k].f)) k++;
      if (k == it->nch) {
        for (size_t i = 0; i < it->nch; i++) it->fs[i] = it->ch[i].f;
        int w = br_wait(it->fs, it->nch, BR_WAIT_FIRST, BR_NEVER);
        if (w < 0) return w;
        k = (size_t)w; /* the first one done */
      }
    }
    ichunk c = it->ch[k];
    int r = br_await(c.f, NULL);
    if (r < 0 && !br_future_done(c.f)) return r; /* our wait was interrupted */
    memmove(&it->ch[k], &it->ch[k + 1], (it->nch - k - 1) * sizeof *it->ch);
    it->nch--;
    it->cur_first = c.first;
    it->cur_n = c.count;
    it->cur_i = 0;
    if (r < 0) {
      it->cur_err = r;
      it->cur_msg = strdup(br_future_message(c.f));
    } else {
      it->cur = br_future_take(c.f); /* ours now: freed when handed out */
      it->cur_c = (entry_cursor){it->cur ? it->cur->data : NULL,
                                 it->cur ? (const char *)it->cur->data + it->cur->len : NULL};
    }
    br_future_unref(c.f);
  }
}

void br_procpool_iter_free(br_procpool_iter *it) {
  if (!it) return;
  for (size_t i = 0; i < it->nch; i++) chunk_drop(it->ch[i].f);
  br_bytes_free(it->cur);
  free(it->cur_msg);
  br_bytes_clear(&it->lens);
  br_bytes_clear(&it->data);
  free(it->ch);
  free(it->fs);
  free(it);
}
