/* mproc_cpu_count() and its cgroup parser (src/cpu.c), on fixture trees and
 * on the live system. */
#include "harness.h"
#include "process.h"

#include <ftw.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[PATH_MAX];

static void put(const char *rel, const char *content) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s%s", root, rel);
  /* mkdir -p of the parent directories */
  for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
    *p = '\0';
    mkdir(path, 0755);
    *p = '/';
  }
  FILE *f = fopen(path, "we");
  ck_assert_ptr_nonnull(f);
  fputs(content, f);
  fclose(f);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void setup(void) {
  mproc_test_setup();
  snprintf(root, sizeof root, "/tmp/mproc-test-cpu-%d-XXXXXX", (int)getpid());
  ck_assert_ptr_nonnull(mkdtemp(root));
}

static void teardown(void) {
  nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  mproc_test_teardown();
}

static int limit(void) {
  int cpus = -1;
  int r = mproc__cgroup_cpu_limit(root, &cpus);
  ck_assert_int_ge(r, 0);
  return r == 1 ? cpus : 0;
}

#define V2_MOUNT "41 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n"

START_TEST(test_v2) {
  put("/proc/self/cgroup", "0::/a/b\n");
  put("/proc/self/mountinfo", "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n" V2_MOUNT);
  ck_assert_int_eq(limit(), 0); /* no cpu.max anywhere */
  put("/sys/fs/cgroup/a/b/cpu.max", "max 100000\n");
  ck_assert_int_eq(limit(), 0);
  put("/sys/fs/cgroup/a/b/cpu.max", "150000 100000\n");
  ck_assert_int_eq(limit(), 2); /* 1.5 CPUs, rounded up */
  put("/sys/fs/cgroup/a/b/cpu.max", "400000 100000\n");
  ck_assert_int_eq(limit(), 4);
  /* An ancestor's tighter quota applies to its descendants. */
  put("/sys/fs/cgroup/a/cpu.max", "50000 100000\n");
  ck_assert_int_eq(limit(), 1);
  put("/sys/fs/cgroup/a/cpu.max", "garbage\n");
  ck_assert_int_eq(limit(), 4);
}
END_TEST

START_TEST(test_v1) {
  put("/proc/self/cgroup", "5:memory:/x\n4:cpu,cpuacct:/docker/abc\n0::/\n");
  put("/proc/self/mountinfo",
      "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
      "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
  put("/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1\n");
  put("/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
  ck_assert_int_eq(limit(), 0);
  put("/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "250000\n");
  ck_assert_int_eq(limit(), 3);
  /* The memory controller's quota-looking files are not read. */
  put("/sys/fs/cgroup/memory/x/cpu.cfs_quota_us", "100000\n");
  put("/sys/fs/cgroup/memory/x/cpu.cfs_period_us", "100000\n");
  ck_assert_int_eq(limit(), 3);
  /* A quota without a period means nothing. */
  put("/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "\n");
  ck_assert_int_eq(limit(), 0);
}
END_TEST

/* This machine's layout: v1 "cpu" and "cpuacct" mounted apart, v2 at
 * /sys/fs/cgroup/unified; a container sees its own cgroup as the mount
 * root. */
START_TEST(test_split_mounts_and_mount_root) {
  put("/proc/self/cgroup", "2:cpuacct:/\n1:cpu:/ctr\n0::/\n");
  put("/proc/self/mountinfo", "32 31 0:29 /ctr /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
                              "33 31 0:30 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n"
                              "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
  put("/sys/fs/cgroup/cpuacct/cpu.cfs_quota_us", "100000\n");
  put("/sys/fs/cgroup/cpuacct/cpu.cfs_period_us", "100000\n");
  ck_assert_int_eq(limit(), 0);
  put("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "300000\n");
  put("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
  ck_assert_int_eq(limit(), 3);
  /* With both versions limited, the tighter wins. */
  put("/sys/fs/cgroup/unified/cpu.max", "200000 100000\n");
  ck_assert_int_eq(limit(), 2);
  put("/sys/fs/cgroup/unified/cpu.max", "900000 100000\n");
  ck_assert_int_eq(limit(), 3);
}
END_TEST

START_TEST(test_missing_or_malformed) {
  ck_assert_int_eq(limit(), 0); /* empty tree */
  put("/proc/self/cgroup", "nonsense\n");
  put("/proc/self/mountinfo", "also nonsense\n");
  ck_assert_int_eq(limit(), 0);
  put("/proc/self/cgroup", "0::/a\n");
  put("/sys/fs/cgroup/a/cpu.max", "100000 100000\n");
  ck_assert_int_eq(limit(), 0); /* no cgroup2 mount listed */
  int cpus;
  mproc_assert_err(mproc__cgroup_cpu_limit(NULL, &cpus), MPROC_EINVAL);
  mproc_assert_err(mproc__cgroup_cpu_limit(root, NULL), MPROC_EINVAL);
}
END_TEST

START_TEST(test_live) {
  int n = mproc_cpu_count();
  int aff = mproc__affinity_cpu_count();
  int lim = 0;
  int expect = mproc__cgroup_cpu_limit("", &lim) == 1 && lim < aff ? lim : aff;
  ck_assert_int_ge(n, 1);
  ck_assert_int_le(n, (int)sysconf(_SC_NPROCESSORS_CONF));
  ck_assert_int_eq(n, expect);

  /* Narrowing the affinity mask narrows the count. */
  cpu_set_t one;
  CPU_ZERO(&one);
  ck_assert_int_eq(sched_getaffinity(0, sizeof one, &one), 0);
  int first = 0;
  while (!CPU_ISSET(first, &one))
    first++;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  ck_assert_int_eq(sched_setaffinity(0, sizeof one, &one), 0);
  ck_assert_int_eq(mproc_cpu_count(), 1);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cpu");
  TCase *tc = tcase_create("cgroup");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, (double)mproc_test_scaled_ms(30000) / 1000.0);
  suite_add_tcase(s, tc);
  tcase_add_test(tc, test_v2);
  tcase_add_test(tc, test_v1);
  tcase_add_test(tc, test_split_mounts_and_mount_root);
  tcase_add_test(tc, test_missing_or_malformed);
  tc = mproc_test_tcase(s, "live", 30);
  tcase_add_test(tc, test_live);
  return mproc_test_run(s);
}
