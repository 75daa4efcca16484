/* Error model, version and deadline helpers. */
#include "harness.h"
#include "internal.h"

#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

struct code {
  int value;
  const char *name;
  const char *msg;
};

static const struct code codes[] = {
#define ENTRY(name, value, msg) {value, "MPROC_" #name, msg},
    MPROC_ERRNO_MAP(ENTRY)
#undef ENTRY
};

START_TEST(test_codes_distinct) {
  size_t n = MPROC__ARRAY_SIZE(codes);
  ck_assert_uint_gt(n, 30);
  for (size_t i = 0; i < n; i++) {
    ck_assert_int_lt(codes[i].value, 0);
    ck_assert_str_eq(mproc_err_name(codes[i].value), codes[i].name);
    ck_assert_str_eq(mproc_strerror(codes[i].value), codes[i].msg);
    for (size_t j = i + 1; j < n; j++) {
      ck_assert_msg(codes[i].value != codes[j].value, "%s and %s share a value", codes[i].name,
                    codes[j].name);
      ck_assert_str_ne(codes[i].name, codes[j].name);
      ck_assert_str_ne(codes[i].msg, codes[j].msg);
    }
  }
}
END_TEST

START_TEST(test_library_range) {
  /* Library codes sit in the reserved range, below every errno value. */
  for (size_t i = 0; i < MPROC__ARRAY_SIZE(codes); i++) {
    int v = codes[i].value;
    ck_assert_msg(v > -4096 || (v <= MPROC_ERR_FIRST && v >= MPROC_ERR_LAST),
                  "%s = %d outside both ranges", codes[i].name, v);
  }
  /* Codes that mean what an errno means are that errno. */
  ck_assert_int_eq(MPROC_ETIMEDOUT, -ETIMEDOUT);
  ck_assert_int_eq(MPROC_ECANCELED, -ECANCELED);
  ck_assert_int_eq(MPROC_ENOMEM, -ENOMEM);
  ck_assert_int_eq(MPROC_EINVAL, -EINVAL);
  ck_assert_str_eq(mproc_err_name(-ETIMEDOUT), "MPROC_ETIMEDOUT");
  /* The two codes they replaced stay retired: never reused. */
  ck_assert_str_eq(mproc_err_name(MPROC_ERR_FIRST), "MPROC_EUNKNOWN");
  ck_assert_str_eq(mproc_err_name(MPROC_ERR_FIRST - 1), "MPROC_EUNKNOWN");
  ck_assert_int_eq(MPROC_ECLOSED, MPROC_ERR_FIRST - 2);
}
END_TEST

START_TEST(test_unknown_codes) {
  ck_assert_str_eq(mproc_err_name(0), "MPROC_OK");
  ck_assert_str_eq(mproc_strerror(0), "success");
  /* A -errno the table does not list still gets its system name and text. */
  ck_assert_str_eq(mproc_err_name(-EXDEV), "EXDEV");
  ck_assert_str_eq(mproc_strerror(-EXDEV), strerror(EXDEV));
  ck_assert_str_eq(mproc_err_name(MPROC_ERR_LAST - 1), "MPROC_EUNKNOWN");
  ck_assert_str_eq(mproc_strerror(MPROC_ERR_LAST - 1), "unknown error");
  ck_assert_str_eq(mproc_err_name(12345), "MPROC_EUNKNOWN");
  /* A positive value is a task's own code or a count, never a library
   * error: the text says so instead of "unknown error". */
  ck_assert_str_eq(mproc_strerror(5), "not an error code: a count, or a task's own positive code");
  ck_assert_str_eq(mproc_strerror(12345), mproc_strerror(1));
  ck_assert_ptr_nonnull(mproc_strerror(-100000));
}
END_TEST

START_TEST(test_version) {
  ck_assert_str_eq(mproc_version_string(), MPROC_VERSION_STRING);
  ck_assert_uint_eq(mproc_version(), MPROC_VERSION_HEX);
  ck_assert_int_eq(MPROC_VERSION_MAJOR, 0);
}
END_TEST

START_TEST(test_deadlines) {
  ck_assert_int_eq(mproc_deadline_after(-1), -1);
  ck_assert_int_eq(mproc_timeout_until(-1), -1);
  int64_t now = mproc_now_ms();
  int64_t d = mproc_deadline_after(1000);
  ck_assert_int_ge(d, now + 1000);
  ck_assert_int_le(mproc_timeout_until(d), 1000);
  ck_assert_int_eq(mproc_timeout_until(now - 5), 0);
  ck_assert_int_eq(mproc_deadline_after(INT64_MAX), INT64_MAX);
  ck_assert_int_eq(mproc__check_timeout(-2), MPROC_EINVAL);
  ck_assert_int_eq(mproc__check_timeout(-1), 0);
  ck_assert_int_eq(mproc__check_timeout(0), 0);
}
END_TEST

START_TEST(test_poll1_deadline) {
  int fds[2];
  ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
  int64_t t0 = mproc_now_ms();
  mproc_assert_err(mproc__poll1(fds[0], POLLIN, mproc__deadline(50)), MPROC_ETIMEDOUT);
  ck_assert_int_ge(mproc_now_ms() - t0, 50);
  mproc_assert_err(mproc__poll1(fds[0], POLLIN, mproc__deadline(0)), MPROC_ETIMEDOUT);
  ck_assert_int_eq(write(fds[1], "x", 1), 1);
  ck_assert_int_gt(mproc__poll1(fds[0], POLLIN, mproc__deadline(-1)), 0);
  close(fds[0]);
  close(fds[1]);
}
END_TEST

int main(void) {
  Suite *s = suite_create("error");
  TCase *tc = mproc_test_tcase(s, "error", 30);
  tcase_add_test(tc, test_codes_distinct);
  tcase_add_test(tc, test_library_range);
  tcase_add_test(tc, test_unknown_codes);
  tcase_add_test(tc, test_version);
  tcase_add_test(tc, test_deadlines);
  tcase_add_test(tc, test_poll1_deadline);
  return mproc_test_run(s);
}
