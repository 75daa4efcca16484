/* Internal declarations of the Process concept (process.c, tree.c, cpu.c). */
#ifndef MPROC_SRC_PROCESS_H
#define MPROC_SRC_PROCESS_H

#include "internal.h"

/* ---- tree.c ------------------------------------------------------------ */

/* Sends `sig` to the process behind `pidfd` (pid `root`, a child of the
 * caller that has not been reaped, so the pid cannot be recycled) and to all
 * its descendants.  The tree is frozen top-down with SIGSTOP, walked by
 * scanning /proc/<pid>/stat for parent pids until a scan run with every
 * member stopped finds nothing new (bounded: 1 s for stragglers to stop,
 * 10 s in all), then every member gets
 * `sig`, then SIGCONT.  Descendants are signalled through pidfds opened while
 * their parent was stopped, so a recycled pid is never hit.  Returns 0 (also
 * when the root had already exited) or -errno. */
int mproc__signal_tree(int pidfd, pid_t root, int sig);

/* ---- cpu.c ------------------------------------------------------------- */

/* The CPU limit of the calling process's cgroup, read below `root` ("" for
 * the live system; a fixture directory in tests): <root>/proc/self/cgroup and
 * <root>/proc/self/mountinfo locate the cgroup v1 "cpu" and v2 hierarchies;
 * cpu.max (v2) and cpu.cfs_quota_us/cpu.cfs_period_us (v1) are read from the
 * process's cgroup directory and each ancestor up to the mount point.
 * Returns 1 and the tightest limit rounded up (>= 1) in *cpus, 0 when no
 * quota applies (or nothing can be read), or MPROC_EINVAL. */
int mproc__cgroup_cpu_limit(const char *root, int *cpus);

/* CPUs in the affinity mask of the calling thread (>= 1). */
int mproc__affinity_cpu_count(void);

#endif /* MPROC_SRC_PROCESS_H */
