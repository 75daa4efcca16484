/* Helpers shared by the fault-class suites (tests/test-fault-*.c): stopped
 * and traced processes, and the library's keepers. */
#ifndef MPROC_TEST_FAULT_HELPERS_H
#define MPROC_TEST_FAULT_HELPERS_H

#include "harness.h"
#include "internal.h"

/* Sends SIGSTOP through pidfd and returns once the process is stopped. */
void stop_and_wait(int pidfd);

/* Forks a tracer that seizes `pid` and holds it until a byte comes on
 * *release (not its end: children forked meanwhile share that pipe);
 * returns the tracer's pid once it is attached. */
pid_t trace_hold(pid_t pid, int *release);
/* Ends the tracer and reaps it. */
void trace_release(pid_t tracer, int release);

/* Makes the calling process -- a helper forked for the purpose, never the
 * test itself -- user and group 65534 with, when no_processes, a process
 * allowance of 0 (root ignores RLIMIT_NPROC, hence the uid change): its
 * forks then fail with EAGAIN.  False when this cannot be done here. */
bool become_nobody(bool no_processes);
/* Runs fn(NULL) in a forked helper and returns its exit code, waiting at
 * most timeout_ms (scaled) for it. */
int run_in_helper(int (*fn)(void *), int64_t timeout_ms);

/* Keepers (double-forked, in sessions of their own) of the named objects
 * this test made, still alive: neither a child nor in /dev/shm, so the
 * fixture cannot see them.  Found by executable and start time. */
int stray_keepers(void);
/* Waits (bounded by timeout_ms) until stray_keepers() is 0; returns it. */
int wait_no_stray_keepers(int64_t timeout_ms);

/* A process function and a task that let any process trace them (Yama's
 * scope 1) and pause for ever; the task publishes its worker's pid in
 * S->pid (pool-helpers.h). */
int proc_traceable(const void *arg, size_t len);
int task_traceable(const void *arg, size_t len, mproc_task_ctx *ctx);
/* Waits (bounded) until a task published its worker's pid in S->pid. */
void wait_task_started(void);

#endif /* MPROC_TEST_FAULT_HELPERS_H */
