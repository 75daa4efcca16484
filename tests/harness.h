/* The test harness shared by every test executable.
 *
 * Each executable is one concept (test-process, test-pool...) built on Check.
 * Every test runs in its own forked process (CK_FORK) with a timeout, and is
 * wrapped by a checked fixture that takes a snapshot of the process before the
 * test and asserts after it that nothing leaked:
 *   - open file descriptors (with the leaked ones' targets in the message);
 *   - threads of the test process;
 *   - child processes, live or zombie (the library must reap what it forks);
 *   - /dev/shm entries whose name contains the test process's pid delimited
 *     by non-digits: the library embeds the creator's pid in every name it
 *     makes up, and tests name their own objects with mproc_test_shm_name(),
 *     so entries made by tests running in parallel are never blamed;
 *   - shared mappings (every object the library maps is MAP_SHARED): a
 *     mapping never unmapped fails the test, with its range and file named.
 *
 * Usage:
 *   START_TEST(test_x) { ... } END_TEST
 *   int main(void) {
 *     Suite *s = suite_create("process");
 *     TCase *tc = mproc_test_tcase(s, "basics", 60);
 *     tcase_add_test(tc, test_x);
 *     return mproc_test_run(s);
 *   }
 */
#ifndef MPROC_TEST_HARNESS_H
#define MPROC_TEST_HARNESS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <mproc.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A TCase added to `s` with the leak-check fixture and a per-test timeout
 * in seconds (scaled by the environment variable MPROC_TEST_TIMEOUT_SCALE,
 * e.g. 3 under sanitizers). */
TCase *mproc_test_tcase(Suite *s, const char *name, double timeout_s);
/* A bound in milliseconds for "this must happen", stretched (never shortened)
 * by MPROC_TEST_TIMEOUT_SCALE: a hang is detected, a slow machine is not
 * blamed. */
int64_t mproc_test_scaled_ms(int64_t ms);
/* Runs the suite with every test forked, prints the summary, returns the
 * process exit status (0 when every test passed). */
int mproc_test_run(Suite *s);

/* The fixture, for suites that build TCases by hand. */
void mproc_test_setup(void);
void mproc_test_teardown(void);

/* Counters the fixture compares; usable directly in tests. */
int mproc_test_count_fds(void);
int mproc_test_count_threads(void);
/* Shared mappings of the process (every object the library maps is
 * MAP_SHARED, while sanitizer runtimes grow private mappings of their own). */
int mproc_test_count_shared_maps(void);
/* Children of the calling process, live or zombie. */
int mproc_test_count_children(void);
/* Whether a process exists at all (including as a zombie). */
int mproc_test_pid_exists(pid_t pid);
/* Sets environment variable `name` to `len` copies of `fill` (an
 * environment an exec refuses, for instance: one string over 128 KiB). */
void mproc_test_setenv_filled(const char *name, size_t len, char fill);
/* Reads a pid written to pipe end `fd` (within 30 s) and returns a pidfd on
 * it, asserting both steps. */
int mproc_test_read_pidfd(int fd, pid_t *pid);
/* SIGKILLs the program behind prog_fd, reaps it (asserting -SIGKILL), then
 * asserts that the process behind helper_fd ends within 30 s -- killing it
 * if not, so nothing is left behind -- and closes both pidfds. */
void mproc_test_kill_expect_follow(int prog_fd, int helper_fd);

/* Fills buf with "/mproc-test-<pid>-<tag>-<n>", unique within the process. */
const char *mproc_test_shm_name(char *buf, size_t len, const char *tag);

/* Assert a call returned `expected` (0 for success), printing both codes'
 * names on failure. */
#define mproc_assert_err(call, expected)                                                           \
  do {                                                                                             \
    int mproc__r_ = (call);                                                                        \
    int mproc__e_ = (expected);                                                                    \
    ck_assert_msg(mproc__r_ == mproc__e_, "%s returned %d (%s), expected %d (%s)", #call,          \
                  mproc__r_, mproc_err_name(mproc__r_), mproc__e_, mproc_err_name(mproc__e_));     \
  } while (0)
#define mproc_assert_ok(call) mproc_assert_err(call, 0)

#endif /* MPROC_TEST_HARNESS_H */
