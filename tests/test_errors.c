/* SPDX-License-Identifier: MIT */
/* test_errors — braid's error table (include/braid/errno.h): every code of
 * BR_ERRNO_MAP has its enum value, br_strerror() text and br_errname() name,
 * and codes outside the table still get a non-NULL answer. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <braid.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "test_util.h"

typedef struct {
  const char *name;
  int value;
  int enum_value;
  const char *msg;
} entry;

static const entry table[] = {
#define ENTRY(name, value, msg) {#name, (value), BR_##name, (msg)},
    BR_ERRNO_MAP(ENTRY)
#undef ENTRY
};
#define NTABLE (sizeof table / sizeof table[0])

static void test_every_code_has_text_and_name(void **state) {
  (void)state;
  assert_true(NTABLE >= 30);
  for (size_t i = 0; i < NTABLE; i++) {
    const entry *e = &table[i];
    assert_int_equal(e->value, e->enum_value);
    assert_true(e->value < 0);
    const char *s = br_strerror(e->value);
    assert_non_null(s);
    assert_string_equal(s, e->msg);
    const char *n = br_errname(e->value);
    assert_non_null(n);
    assert_string_equal(n, e->name);
  }
}

static void test_codes_are_unique(void **state) {
  (void)state;
  for (size_t i = 0; i < NTABLE; i++)
    for (size_t j = i + 1; j < NTABLE; j++) {
      if (table[i].value == table[j].value)
        fail_msg("%s and %s share the value %d", table[i].name, table[j].name, table[i].value);
      if (strcmp(table[i].name, table[j].name) == 0) fail_msg("%s appears twice", table[i].name);
    }
}

/* Negated errno values mirror errno; braid's own codes live below
 * BR__ERR_BASE, out of errno's range. */
static void test_code_ranges(void **state) {
  (void)state;
  assert_int_equal(BR_ETIMEDOUT, -ETIMEDOUT);
  assert_int_equal(BR_ECANCELED, -ECANCELED);
  assert_int_equal(BR_EINVAL, -EINVAL);
  assert_int_equal(BR_EAGAIN, -EAGAIN);
  const int own[] = {BR_ENOTTASK, BR_EHANDLE, BR_ECLOSED, BR_EFAILED, BR_EWORKERDIED,
                     BR_ESHUTDOWN, BR_EFULL,  BR_ENOJOB,  BR_ELIMIT};
  for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
    assert_true(own[i] < BR__ERR_BASE);
    assert_true(own[i] < -4095);
  }
  for (size_t i = 0; i < NTABLE; i++) {
    const entry *e = &table[i];
    bool is_own = e->value < BR__ERR_BASE;
    if (!is_own) assert_true(e->value > -4096);
  }
}

static void test_success(void **state) {
  (void)state;
  assert_non_null(br_strerror(0));
  assert_string_equal(br_strerror(0), "success");
  assert_string_equal(br_errname(0), "OK");
}

/* Codes outside the table: errno values fall back to strerror(), anything
 * else to "unknown error"; the name is "UNKNOWN". Never NULL. */
static void test_unknown_codes(void **state) {
  (void)state;
  const int errno_like[] = {-EXDEV, -ENOTEMPTY, -EMLINK, -ETXTBSY, -ENOEXEC};
  for (size_t i = 0; i < sizeof errno_like / sizeof errno_like[0]; i++) {
    int c = errno_like[i];
    for (size_t k = 0; k < NTABLE; k++) assert_int_not_equal(table[k].value, c);
    const char *s = br_strerror(c);
    assert_non_null(s);
    assert_string_equal(s, strerror(-c));
    assert_string_equal(br_errname(c), "UNKNOWN");
  }
  const int odd[] = {1, 42, INT_MAX, INT_MIN, -30000, -30100, -31000, -29999, -4096, -100000};
  for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
    const char *s = br_strerror(odd[i]);
    const char *n = br_errname(odd[i]);
    assert_non_null(s);
    assert_non_null(n);
    assert_true(s[0] != 0);
    assert_string_equal(n, "UNKNOWN");
    /* Outside errno's range nothing sensible exists: "unknown error". */
    if (odd[i] > 0 || odd[i] <= -4096) assert_string_equal(s, "unknown error");
  }
}

/* The strings are static and the functions thread-safe: hammer them from
 * four threads and compare with the table. */
static void *hammer(void *arg) {
  long bad = 0;
  long rounds = br_test_scaled(20000);
  for (long r = 0; r < rounds; r++)
    for (size_t i = 0; i < NTABLE; i++) {
      if (strcmp(br_strerror(table[i].value), table[i].msg) != 0) bad++;
      if (strcmp(br_errname(table[i].value), table[i].name) != 0) bad++;
      if (!br_strerror(-ENOTDIR - (int)(r % 3))) bad++;
    }
  *(long *)arg = bad;
  return NULL;
}

static void test_thread_safe(void **state) {
  (void)state;
  pthread_t th[4];
  long bad[4] = {0};
  for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, hammer, &bad[i]), 0);
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(bad[i], 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_code_has_text_and_name),
      cmocka_unit_test(test_codes_are_unique),
      cmocka_unit_test(test_code_ranges),
      cmocka_unit_test(test_success),
      cmocka_unit_test(test_unknown_codes),
      cmocka_unit_test(test_thread_safe),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
