/* What mproc_pool_new writes to stderr for a transport nobody registered:
 * the names that are registered, and how to get the one asked for. */
#include "harness.h"
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* mproc_pool_new with `opts` while stderr goes to a memory file; the
 * returned code and what was written (NUL-terminated) into out[cap]. */
static int pool_new_stderr(const struct mproc_pool_options *opts, char *out, size_t cap) {
  int mem = memfd_create("stderr", MFD_CLOEXEC);
  ck_assert_int_ge(mem, 0);
  fflush(stderr);
  int saved = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0);
  ck_assert_int_ge(saved, 0);
  ck_assert_int_eq(dup2(mem, STDERR_FILENO), STDERR_FILENO);
  mproc_pool *p = NULL;
  int r = mproc_pool_new(&p, opts);
  fflush(stderr);
  ck_assert_int_eq(dup2(saved, STDERR_FILENO), STDERR_FILENO);
  close(saved);
  if (r == 0)
    mproc_pool_free(p);
  ssize_t n = pread(mem, out, cap - 1, 0);
  out[n > 0 ? n : 0] = '\0';
  close(mem);
  return r;
}

START_TEST(test_unknown_transport_names_the_way_out) {
  char msg[1024];
  /* "mpi" without libmproc_mpi linked (these tests link only libmproc):
   * the message names the library to link. */
  int r = pool_new_stderr(&(struct mproc_pool_options){.workers = 1, .transport = "mpi"}, msg,
                          sizeof msg);
  mproc_assert_err(r, MPROC_EINVAL);
  ck_assert_msg(strstr(msg, "no transport named \"mpi\" (from the pool option)") != NULL, "%s",
                msg);
  ck_assert_msg(strstr(msg, "registered: shm") != NULL, "%s", msg);
  ck_assert_msg(strstr(msg, "libmproc_mpi") != NULL && strstr(msg, "mproc-mpi") != NULL, "%s", msg);
  /* Any other name: the registered ones and how a transport comes to be. */
  ck_assert_int_eq(setenv("MPROC_TRANSPORT", "nosuch", 1), 0);
  r = pool_new_stderr(&(struct mproc_pool_options){.workers = 1}, msg, sizeof msg);
  ck_assert_int_eq(unsetenv("MPROC_TRANSPORT"), 0);
  mproc_assert_err(r, MPROC_EINVAL);
  ck_assert_msg(strstr(msg, "no transport named \"nosuch\" (from MPROC_TRANSPORT)") != NULL, "%s",
                msg);
  ck_assert_msg(strstr(msg, "registers itself when the library that has it is loaded") != NULL,
                "%s", msg);
  ck_assert_msg(strstr(msg, "libmproc_mpi") == NULL, "%s", msg);
}
END_TEST

int main(void) {
  Suite *s = suite_create("transport-hint");
  TCase *tc = mproc_test_tcase(s, "transport-hint", 30);
  tcase_add_test(tc, test_unknown_transport_names_the_way_out);
  return mproc_test_run(s);
}
