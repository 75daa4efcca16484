/* The pool's manager thread: completions, worker deaths, replacement,
 * timeouts, callbacks.
 *
 * Design notes.  One manager thread per pool is the only thread that forks
 * workers (their parent-death signal is tied to it), reaps them and runs
 * done-callbacks.  Its loop:
 *
 *   lock -> collect finished tasks -> dispatch/steal -> enforce timeouts
 *   (tasks, initializers) -> retry failed respawns -> watch for stalled
 *   workers -> stop idle workers when closed -> take the callback queue ->
 *   unlock -> run callbacks -> the transport's sleep (poll on eventfd and
 *   pidfds until the next deadline; every 250 ms while tasks are out or
 *   were submitted within the last second) ->
 *   handle dead workers (under the lock) -> loop
 *
 * Slots are not processes.  A slot is `alive` while a worker occupies it;
 * a worker that is a local process has a pid and a pidfd (polled here, and
 * reaped here), one that is not (an MPI rank) has neither and its end is
 * reported by its transport through poll_results (`gone`, with pid-or-0,
 * signal or status, and the transport's message).  Dispatch needs neither:
 * it asks the transport (send_task says -EAGAIN when a slot has no room,
 * which marks it `full` until its results are next collected).  Ending a
 * running task (its timeout, a cancel) and ending a worker are the
 * transport's stop operation: the shm transport kills the worker through
 * its pidfd; another may end only the task, whose failure then comes back
 * as an outcome reported as cancelled or timed out.
 *
 * Scheduling: dispatch fills each worker's ring eagerly (least loaded
 * first), because a deep ring is what makes tiny tasks cheap; stealing (see
 * steal) takes back every not-yet-started task from a busy worker's ring as
 * soon as a worker is idle and the queue is empty, so no task waits behind a
 * long one while a worker idles.
 *
 * Any thread may help by collecting and dispatching (mproc__pool_help) when
 * the mutex is free, which keeps the manager out of the hot path of a waiter
 * that spins; only worker deaths and callbacks need the manager.
 *
 * A dead worker: kill its process group (its own children die with it), reap
 * it through its pidfd (local workers), collect the results it delivered, then empty its
 * ring: the task it died in fails (EWORKERDIED with pid and signal/status, or
 * ECANCELED/ETIMEDOUT when the pool killed it for that), or is re-queued
 * when it has retries left; tasks it had not started go back to the front of
 * the queue.  A worker whose initializer failed breaks the pool: every task
 * fails with EINITFAILED and nothing is respawned (no respawn storm).  Dying
 * before the initializer finished (crash, exit, or killed at the initializer
 * deadline) is such a failure: otherwise a crashing initializer would be
 * replaced, crash again, and fork thousands of times a second.
 *
 * Workers start side by side (start_workers): every empty slot is launched
 * (forked, or exec'd with its request sent) before the manager waits for
 * any to be ready, so an exec'd pool of n pays about one exec and dynamic
 * load rather than n in a row.  A replacement for one dead worker is
 * started alone (launch then ready).
 *
 * Forking can fail (RLIMIT_NPROC, memory): retries back off, and a pool with
 * no live worker for MPROC__NO_WORKER_MS fails its queued tasks rather than
 * leave them pending forever (see respawn_failed).
 *
 * Pool states: RUNNING -> CLOSED (no submits; finish the work, then stop the
 * workers) or TERMINATING (kill everything, cancel every task) or BROKEN.  The
 * thread exits once the pool is not RUNNING, no task is outstanding, no worker
 * is alive and no callback is due. */
#include "pool.h"
#include "list.h"
#include "futex.h"

#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* dying_code of a worker whose exit status the kernel discarded: neither an
 * exit status (>= 0) nor a signal (-signo). */
#define STATUS_LOST INT_MIN

_Atomic int mproc__test_fail_spawn;

/* The first half of starting slot i's worker (see start_worker in
 * transport.h); a launch that succeeded must be followed by ready_worker. */
static int launch_worker(struct mproc_pool *p, int i) {
  int f = atomic_load(&mproc__test_fail_spawn);
  while (f != 0 && !atomic_compare_exchange_weak(&mproc__test_fail_spawn, &f, f > 0 ? f - 1 : f)) {
  }
  if (f != 0)
    return -EAGAIN;
  struct mproc__slot *sl = &p->slots[i];
  sl->started_ms = mproc_now_ms();
  sl->init_timed_out = false;
  sl->pid = 0;
  sl->pidfd = -1;
  return p->tp->start_worker(p, i, MPROC__PHASE_LAUNCH);
}

static int ready_worker(struct mproc_pool *p, int i) {
  int r = p->tp->start_worker(p, i, MPROC__PHASE_READY);
  p->slots[i].alive = r == 0;
  return r;
}

static int start_worker(struct mproc_pool *p, int i) {
  int r = launch_worker(p, i);
  return r == 0 ? ready_worker(p, i) : r;
}

bool mproc__on_manager_thread(const struct mproc_pool *p) {
  return p->mgr_started && p->mgr_tid == (pid_t)syscall(SYS_gettid);
}

static void task_done(struct mproc_pool *p, struct mproc__task *t, struct mproc__outcome *o) {
  p->outstanding--;
  if (o->code == 0)
    p->n_done++;
  else if (o->code == MPROC_ECANCELED)
    p->n_cancelled++;
  else
    p->n_failed++;
  t->complete(p, t, o);
}

/* Finish a task that never produced an outcome of its own. */
static void fail_task(struct mproc_pool *p, struct mproc__task *t, int code, int task_code,
                      const char *msg) {
  struct mproc__outcome o = {
      .code = code, .task_code = task_code, .exit_status = -1, .msg = msg != NULL ? msg : ""};
  if (t->kind != MPROC__K_CALL)
    o.index = t->base_index;
  task_done(p, t, &o);
}

void mproc__task_fail(struct mproc_pool *p, struct mproc__task *t, int code, const char *msg) {
  fail_task(p, t, code, 0, msg);
}

static void push_front_list(struct mproc_pool *p) {
  MPROC__LIST_PREPEND_ALL(p->pend_head, p->pend_tail, p->requeue_head, p->requeue_tail, next);
}

static void requeue(struct mproc_pool *p, struct mproc__task *t) {
  MPROC__LIST_PUSH(p->requeue_head, p->requeue_tail, t, next);
}

/* Fail a task because the pool broke: the initializer's failure, with the
 * worker's pid and the signal or exit status that ended it there. */
static void fail_broken(struct mproc_pool *p, struct mproc__task *t) {
  struct mproc__outcome o = {.code = MPROC_EINITFAILED,
                             .pid = p->init_pid,
                             .signo = p->init_signo,
                             .exit_status = p->init_status,
                             .msg = p->init_msg};
  if (t->kind != MPROC__K_CALL)
    o.index = t->base_index;
  task_done(p, t, &o);
}

/* A task left in a dead worker's ring. */
static void task_left(struct mproc_pool *p, struct mproc__task *t, bool started) {
  int state = atomic_load(&p->state);
  if (state == MPROC__P_BROKEN) {
    fail_broken(p, t);
    return;
  }
  if (state == MPROC__P_TERMINATING || t->cancel_req) {
    mproc__task_fail(p, t, MPROC_ECANCELED, "cancelled");
    return;
  }
  if (!started) {
    requeue(p, t);
    return;
  }
  if (t->timed_out) {
    p->slots[p->dying_slot].n_failed++;
    struct mproc__outcome o = {.code = MPROC_ETIMEDOUT,
                               .pid = p->dying_pid,
                               .signo = SIGKILL,
                               .exit_status = -1,
                               .msg = "task timed out; its worker was killed"};
    o.index = t->base_index + t->progress;
    task_done(p, t, &o);
    return;
  }
  if (t->retries_left > 0) {
    t->retries_left--;
    p->n_retried++;
    requeue(p, t);
    return;
  }
  char msg[96];
  p->slots[p->dying_slot].n_failed++;
  struct mproc__outcome o = {.code = MPROC_EWORKERDIED, .pid = p->dying_pid, .exit_status = -1};
  if (p->dying_code == STATUS_LOST) {
    msg[0] = '\0'; /* dying_msg says it */
  } else if (p->dying_code < 0) {
    o.signo = -p->dying_code;
    snprintf(msg, sizeof msg, "worker %d killed by signal %d (%s)", (int)p->dying_pid, o.signo,
             sigabbrev_np(o.signo) != NULL ? sigabbrev_np(o.signo) : "?");
  } else {
    o.exit_status = p->dying_code;
    snprintf(msg, sizeof msg, "worker %d exited with status %d during the task", (int)p->dying_pid,
             p->dying_code);
  }
  /* A worker that is not a local process is named by its transport. */
  o.msg = p->dying_msg != NULL ? p->dying_msg : msg;
  if (t->kind != MPROC__K_CALL)
    o.index = t->base_index + t->progress; /* the item it died in */
  task_done(p, t, &o);
}

void mproc__kill_worker(struct mproc_pool *p, int i) {
  if (p->slots[i].alive)
    p->tp->stop(p, i, MPROC__STOP_NOW, NULL);
}

void mproc__stop_task(struct mproc_pool *p, struct mproc__task *t) {
  if (t->slot >= 0 && p->slots[t->slot].alive)
    p->tp->stop(p, t->slot, MPROC__STOP_TASK, t);
}

static void break_pool(struct mproc_pool *p, int code, const char *msg) {
  atomic_store(&p->state, MPROC__P_BROKEN);
  p->broken_init = true;
  p->init_code = code;
  p->init_pid = p->dying_pid;
  p->init_signo = p->dying_code < 0 && p->dying_code != STATUS_LOST ? -p->dying_code : 0;
  p->init_status = p->dying_code >= 0 ? p->dying_code : -1;
  snprintf(p->init_msg, sizeof p->init_msg, "%s", msg);
  for (int i = 0; i < p->nworkers; i++)
    mproc__kill_worker(p, i);
  while (p->pend_head != NULL) {
    struct mproc__task *t = p->pend_head;
    p->pend_head = t->next;
    fail_broken(p, t);
  }
  p->pend_tail = NULL;
}

/* A task the worker of slot p->collecting finished -- or, with t NULL, the
 * end of that worker as its transport saw it: noted for the manager, which
 * alone starts workers (handle_death). */
static void task_collected(struct mproc_pool *p, struct mproc__task *t, struct mproc__outcome *o) {
  struct mproc__slot *sl = &p->slots[p->collecting];
  if (t == NULL) {
    if (!sl->gone) {
      sl->gone = true;
      sl->gone_pid = o->pid;
      sl->gone_code = o->signo > 0 ? -o->signo : o->exit_status;
      snprintf(sl->gone_msg, sizeof sl->gone_msg, "%s", o->msg != NULL ? o->msg : "");
      mproc__pool_kick(p);
    }
    return;
  }
  if (o->code != 0 && (t->cancel_req || t->timed_out)) {
    /* The transport ended only the task (stop MPROC__STOP_TASK): it failed
     * because the pool asked, and says so. */
    o->code = t->cancel_req ? MPROC_ECANCELED : MPROC_ETIMEDOUT;
    o->task_code = 0;
    o->msg = t->cancel_req ? "cancelled" : "task timed out; it was stopped";
  }
  if (o->code == 0)
    sl->n_done++;
  else if (o->code != MPROC_ECANCELED)
    sl->n_failed++;
  task_done(p, t, o);
}

/* Collect the finished tasks of slot i (under mu); returns how many.  Room
 * the transport lacked (send_task's -EAGAIN) may be back now. */
static int collect(struct mproc_pool *p, int i) {
  p->collecting = i;
  int n = p->tp->poll_results(p, i, task_collected);
  p->slots[i].live -= (uint32_t)n;
  p->slots[i].full = false;
  return n;
}

/* The worker of slot i is gone: empty the transport's side of the slot
 * (tasks go to task_left) and reset the pool's. */
static void reset_slot(struct mproc_pool *p, int i) {
  struct mproc__slot *sl = &p->slots[i];
  p->tp->reset_slot(p, i, task_left);
  sl->assigned = 0;
  sl->live = 0;
  sl->stopping = false;
  sl->full = false;
}

static bool want_workers(struct mproc_pool *p) {
  int state = atomic_load(&p->state);
  return state == MPROC__P_RUNNING || (state == MPROC__P_CLOSED && p->outstanding > 0);
}

static bool any_alive(struct mproc_pool *p) {
  for (int i = 0; i < p->nworkers; i++)
    if (p->slots[i].alive)
      return true;
  return false;
}

/* Starts the workers of every empty slot side by side: all are launched
 * before any is waited for, so that n exec'd workers cost about one exec
 * and not n in a row.  `first_error`: launch no more once one fails (pool
 * creation, which then fails as a whole).  Returns 0 or the last error;
 * *started counts the workers that started.  Manager thread, under mu. */
static int start_workers(struct mproc_pool *p, bool first_error, int *started) {
  int err = 0;
  /* The poll set's slot map is free here: it is filled and read only
   * around the manager's sleep. */
  int *launched = p->slot_of;
  int n = 0;
  for (int i = 0; i < p->nworkers; i++) {
    if (p->slots[i].alive || !want_workers(p))
      continue;
    int r = launch_worker(p, i);
    if (r == 0) {
      launched[n++] = i;
      continue;
    }
    err = r;
    if (first_error)
      break;
  }
  for (int k = 0; k < n; k++) {
    int r = ready_worker(p, launched[k]);
    if (r != 0)
      err = first_error && err != 0 ? err : r;
    else
      (*started)++;
  }
  return err;
}

/* Forking a worker failed with `err` (under mu).  Retry with a doubling
 * back-off (10 ms to 1 s) rather than a storm of forks; while at least one
 * worker lives the queue keeps moving.  With none alive for
 * MPROC__NO_WORKER_MS every queued task fails with `err`, and so does each
 * task queued later while that lasts; the retries go on, so the pool works
 * again as soon as forking recovers. */
static void respawn_failed(struct mproc_pool *p, int err) {
  int64_t now = mproc_now_ms();
  p->respawn_pending = true;
  p->respawn_delay_ms = p->respawn_delay_ms == 0 ? 10 : p->respawn_delay_ms * 2;
  if (p->respawn_delay_ms > 1000)
    p->respawn_delay_ms = 1000;
  p->respawn_at = now + p->respawn_delay_ms;
  if (any_alive(p)) {
    p->no_worker_since = 0;
    return;
  }
  if (p->no_worker_since == 0)
    p->no_worker_since = now;
  if (now - p->no_worker_since < MPROC__NO_WORKER_MS)
    return;
  char msg[160];
  snprintf(msg, sizeof msg, "could not start a worker: %s", strerror(-err));
  while (p->pend_head != NULL) {
    struct mproc__task *t = p->pend_head;
    p->pend_head = t->next;
    mproc__task_fail(p, t, err, msg);
  }
  p->pend_tail = NULL;
}

/* Retry the failed respawns that are due; returns when to look again (-1:
 * nothing pending).  A worker that starts takes queued work at once: nothing
 * else may wake the manager for it. */
static int64_t retry_respawn(struct mproc_pool *p) {
  if (!p->respawn_pending)
    return -1;
  if (mproc_now_ms() < p->respawn_at)
    return p->respawn_at;
  int started = 0;
  int err = start_workers(p, false, &started);
  if (err != 0) {
    respawn_failed(p, err);
  } else {
    p->respawn_pending = false;
    p->respawn_delay_ms = 0;
    p->no_worker_since = 0;
  }
  if (started > 0)
    mproc__pool_dispatch(p);
  return p->respawn_pending ? p->respawn_at : -1;
}

/* Whether the dead worker of slot i (dying_*) failed in its initializer:
 * the initializer reported failure, or the worker died before it finished
 * (a crash, an exit, or the pool killing it at the initializer deadline).
 * Fills msg and *code. */
static bool init_failed(struct mproc_pool *p, int i, int *code, char *msg, size_t cap) {
  struct mproc__activity a = {0};
  p->tp->activity(p, i, &a);
  if (a.init == MPROC__INIT_FAILED) {
    *code = a.init_code;
    snprintf(msg, cap, "%s", a.init_msg != NULL ? a.init_msg : "");
    return true;
  }
  if (p->opts.initializer == NULL || a.init == MPROC__INIT_READY)
    return false;
  int pid = (int)p->dying_pid;
  *code = MPROC_EINITFAILED;
  if (p->slots[i].init_timed_out)
    snprintf(msg, cap, "initializer of worker %d did not finish within %lld ms; it was killed", pid,
             (long long)p->opts.init_timeout_ms);
  else if (p->dying_msg != NULL)
    snprintf(msg, cap, "%s, in its initializer", p->dying_msg);
  else if (p->dying_code < 0)
    snprintf(msg, cap, "worker %d was killed by signal %d (%s) in its initializer", pid,
             -p->dying_code,
             sigabbrev_np(-p->dying_code) != NULL ? sigabbrev_np(-p->dying_code) : "?");
  else
    snprintf(msg, cap, "worker %d exited with status %d in its initializer", pid, p->dying_code);
  return true;
}

/* Keeps the pidfd of a dead worker that could not be reaped yet; 0, or
 * MPROC_ENOMEM. */
static int linger_add(struct mproc_pool *p, int pidfd) {
  if (p->nlinger == p->linger_cap) {
    int cap = p->linger_cap > 0 ? 2 * p->linger_cap : 4;
    int *v = realloc(p->linger, (size_t)cap * sizeof *v);
    if (v == NULL)
      return MPROC_ENOMEM;
    p->linger = v;
    p->linger_cap = cap;
  }
  p->linger[p->nlinger++] = pidfd;
  return 0;
}

/* Reaps the lingering workers that can be reaped now; under mu.  Returns
 * when to look again (absolute ms), or -1 when none is left. */
static int64_t linger_sweep(struct mproc_pool *p) {
  for (int k = 0; k < p->nlinger;) {
    if (mproc__reap(p->linger[k], NULL, 0) == MPROC_ETIMEDOUT) {
      k++;
      continue;
    }
    mproc__close(p->linger[k]);
    p->linger[k] = p->linger[--p->nlinger];
  }
  return p->nlinger > 0 ? mproc__deadline(MPROC__LINGER_MS) : -1;
}

/* Worker i ended: its pidfd is readable, or its transport said so (gone).
 * Under mu. */
static void handle_death(struct mproc_pool *p, int i) {
  struct mproc__slot *sl = &p->slots[i];
  int code = 0;
  bool lingers = false;
  if (sl->pidfd >= 0) {
    /* A local process: its group goes too, and it is reaped here.  Under
     * the mutex it is not reaped yet, so its pid cannot have been reused.
     * When the program ignores SIGCHLD the kernel may have reaped it
     * already, and its group's guard (spawn.c) ends the group, itself
     * included, as the worker exits: the id may then be another program's.
     * So the group is signalled only while the worker exists. */
    mproc__kill_worker_group(sl->pid, sl->pidfd);
    int r = mproc__reap(sl->pidfd, &code, mproc__deadline(MPROC__REAP_MS));
    if (r == -ECHILD) {
      /* Reaped by the kernel already (the program ignores SIGCHLD): how it
       * ended is lost, and is reported as lost rather than as "status 0". */
      code = STATUS_LOST;
      snprintf(sl->gone_msg, sizeof sl->gone_msg,
               "worker %d ended; its exit status was lost (reaped outside the library: "
               "is SIGCHLD ignored?)",
               (int)sl->pid);
    } else if (r < 0) {
      /* Killed, yet not reapable: a debugger traces it (its zombie is the
       * tracer's to see first), or it is stuck in the kernel.  Closing the
       * pidfd would leave a zombie nobody reaps: it is kept and retried
       * (linger_sweep), and the manager does not leave before.  Only when
       * even that cannot be recorded is it given up. */
      code = STATUS_LOST;
      snprintf(sl->gone_msg, sizeof sl->gone_msg,
               "worker %d was killed; its exit status could not be collected (is it traced?)",
               (int)sl->pid);
      if (linger_add(p, sl->pidfd) != 0)
        mproc__reap_later(sl->pidfd); /* no memory: the process-wide list */
      lingers = true;
    }
  }
  collect(p, i);
  p->dying_pid = sl->pidfd >= 0 ? sl->pid : sl->gone_pid;
  p->dying_slot = i;
  p->dying_code = sl->pidfd >= 0 ? code : sl->gone_code;
  p->dying_msg =
      (sl->pidfd < 0 || code == STATUS_LOST) && sl->gone_msg[0] != '\0' ? sl->gone_msg : NULL;
  char msgbuf[sizeof p->init_msg];
  int icode = 0;
  if (init_failed(p, i, &icode, msgbuf, sizeof msgbuf)) {
    int state = atomic_load(&p->state);
    if (state != MPROC__P_TERMINATING && state != MPROC__P_BROKEN)
      break_pool(p, icode, msgbuf);
  }
  reset_slot(p, i);
  p->dying_msg = NULL;
  push_front_list(p);
  if (!lingers)
    mproc__close(sl->pidfd);
  sl->pidfd = -1;
  sl->pid = 0;
  sl->alive = false;
  sl->gone = false;
  sl->stalled = false;
  sl->wait_since = 0;
  if (want_workers(p)) {
    sl->n_replaced++;
    int r = start_worker(p, i);
    if (r != 0)
      respawn_failed(p, r);
  }
}

/* The worker with room and the fewest tasks in its ring. */
static int pick_slot(struct mproc_pool *p) {
  int best = -1;
  uint32_t best_load = UINT32_MAX;
  uint32_t max = p->opts.max_tasks_per_worker;
  for (int i = 0; i < p->nworkers; i++) {
    struct mproc__slot *sl = &p->slots[i];
    if (!sl->alive || sl->gone || sl->stopping || sl->donor || sl->stalled || sl->full ||
        (max > 0 && sl->assigned >= max))
      continue;
    if (sl->live < best_load) {
      best = i;
      best_load = sl->live;
      if (sl->live == 0)
        break;
    }
  }
  return best;
}

/* A send failed.  When the worker's end of its socket is gone the worker has
 * died and is not reaped yet: the task goes back to the front of the queue
 * (it never reached the worker) and the slot takes nothing more until
 * handle_death resets it.  Any other error fails the task. */
static void push_front(struct mproc_pool *p, struct mproc__task *t) {
  t->slot = -1;
  t->next = p->pend_head;
  p->pend_head = t;
  if (p->pend_tail == NULL)
    p->pend_tail = t;
}

static void send_failed(struct mproc_pool *p, int i, struct mproc__task *t, int r) {
  if (r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN) {
    p->slots[i].stopping = true;
    push_front(p, t);
    return;
  }
  if (r == MPROC_ENOFUNC) {
    /* Failed as a worker fails a function it cannot find: the task's own
     * error, MPROC_ENOFUNC, naming the function. */
    char msg[160];
    snprintf(msg, sizeof msg,
             "function %#llx is not in the code of any loaded object: a worker started by "
             "spawn or forkserver cannot find it",
             (unsigned long long)t->fn.addr);
    fail_task(p, t, MPROC_ETASK, r, msg);
  } else if (r == -ENOSPC)
    mproc__task_fail(p, t, r, "too many distinct task functions for one pool of exec'd workers");
  else
    mproc__task_fail(p, t, r, "could not hand the task to a worker");
}

bool mproc__pool_revoke(struct mproc_pool *p, struct mproc__task *t) {
  int i = t->slot;
  if (i < 0 || p->tp->revoke(p, i, t, NULL) != 1)
    return false;
  p->slots[i].assigned--;
  p->slots[i].live--;
  return true;
}

/* Hand queued tasks to the least loaded workers with room. */
static void dispatch_pending(struct mproc_pool *p) {
  bool sent = false;
  while (p->pend_head != NULL) {
    int i = pick_slot(p);
    if (i < 0)
      break;
    struct mproc__task *t = p->pend_head;
    p->pend_head = t->next;
    if (p->pend_head == NULL)
      p->pend_tail = NULL;
    t->next = NULL;
    int r = p->tp->send_task(p, i, t);
    if (r == 0) {
      p->slots[i].assigned++;
      p->slots[i].live++;
      sent = true;
    } else if (r == -EAGAIN) {
      /* No room there now: back to the front, another slot is picked. */
      p->slots[i].full = true;
      push_front(p, t);
      continue;
    }
    if (r != 0)
      send_failed(p, i, t, r);
    else if (atomic_load_explicit(&p->mgr_untimed, memory_order_relaxed) &&
             atomic_exchange(&p->mgr_untimed, 0)) {
      /* It must watch this task even if its worker stalls.  Only a pool
       * idle for MPROC__IDLE_WATCH_MS gets here (or one whose transport
       * has no idle_watch): a busier one's manager sleeps with a deadline
       * and sees the task when it wakes. */
      p->idle_kicks++;
      mproc__pool_kick(p);
    }
  }
  if (sent && p->tp->flush)
    p->tp->flush(p); /* what the transport held back to send together goes now */
}

/* Whether a worker could start a task right now: alive, initialized,
 * accepting work and with nothing in its ring. */
static bool idle_worker(struct mproc_pool *p, int i) {
  struct mproc__slot *sl = &p->slots[i];
  return sl->alive && !sl->gone && !sl->stopping && !sl->stalled && sl->live == 0 && !sl->full &&
         mproc__worker_ready(p, i);
}

/* Take back every task of slot i that has not started, in order, onto the
 * requeue list.  Returns how many. */
static int take_back(struct mproc_pool *p, int i) {
  int n = p->tp->revoke(p, i, NULL, requeue);
  p->slots[i].assigned -= (uint32_t)n;
  p->slots[i].live -= (uint32_t)n;
  return n;
}

/* Work stealing.  Dispatch fills rings eagerly (a deep ring is what makes
 * tiny tasks cheap), so a task may be queued behind a long one.  Whenever the
 * queue is empty and a worker is idle, every task that has not started in
 * the ring of a worker busy with a task is taken back -- all of them, not
 * one -- and dispatched again to the workers that are not busy.  Completions
 * run this (the manager or a helping waiter collects, then dispatches), and
 * a worker becomes idle only by completing, so a queued task never waits
 * more than one such round while a worker is idle. */
static void steal(struct mproc_pool *p) {
  bool idle = false;
  for (int i = 0; i < p->nworkers && !idle; i++)
    idle = idle_worker(p, i);
  if (!idle)
    return;
  int taken = 0;
  for (int i = 0; i < p->nworkers; i++) {
    struct mproc__slot *sl = &p->slots[i];
    int64_t since;
    if (!sl->alive || sl->live < 2 || mproc__worker_running(p, i, &since) == NULL)
      continue;
    int n = take_back(p, i);
    sl->donor = n > 0;
    taken += n;
  }
  if (taken == 0)
    return;
  push_front_list(p);
  dispatch_pending(p);
  for (int i = 0; i < p->nworkers; i++)
    p->slots[i].donor = false;
}

void mproc__pool_dispatch(struct mproc_pool *p) {
  dispatch_pending(p);
  if (p->pend_head == NULL)
    steal(p);
}

static void fail_cancelled(struct mproc_pool *p, struct mproc__task *t) {
  mproc__task_fail(p, t, MPROC_ECANCELED, "cancelled");
}

void mproc__pool_cancel_pending(struct mproc_pool *p) {
  while (p->pend_head != NULL) {
    struct mproc__task *t = p->pend_head;
    p->pend_head = t->next;
    mproc__task_fail(p, t, MPROC_ECANCELED, "cancelled");
  }
  p->pend_tail = NULL;
  for (int i = 0; i < p->nworkers; i++) {
    int n = p->tp->revoke(p, i, NULL, fail_cancelled);
    p->slots[i].assigned -= (uint32_t)n;
    p->slots[i].live -= (uint32_t)n;
  }
}

int mproc__pool_drain(struct mproc_pool *p) {
  int n = 0;
  /* One wake-up of the epoch's sleepers for the whole batch. */
  mproc__epoch_hold();
  for (int i = 0; i < p->nworkers; i++)
    if (p->slots[i].alive && !p->slots[i].gone)
      n += collect(p, i);
  mproc__epoch_release();
  mproc__pool_dispatch(p);
  return n;
}

/* After a helper collected results (under mu): whether the manager has work
 * only it can do -- callbacks to run, or a closed pool whose work is done
 * and whose workers must now be stopped. */
static bool manager_needed(struct mproc_pool *p, int collected) {
  return p->cbq_head != NULL ||
         (collected > 0 && atomic_load(&p->state) != MPROC__P_RUNNING && p->outstanding == 0);
}

bool mproc__pool_help_locked(struct mproc_pool *p) {
  int n = 0;
  if (atomic_load(&p->state) != MPROC__P_TERMINATING && p->slots != NULL)
    n = mproc__pool_drain(p);
  return manager_needed(p, n);
}

void mproc__pool_help(struct mproc_pool *p) {
  if (mproc__pool_foreign(p) || pthread_mutex_trylock(&p->mu) != 0)
    return;
  bool kick = mproc__pool_help_locked(p);
  pthread_mutex_unlock(&p->mu);
  if (kick)
    mproc__pool_kick(p);
}

void mproc__pool_helping(struct mproc_pool *p, int delta) {
  if (mproc__pool_foreign(p))
    return;
  pthread_mutex_lock(&p->mu);
  int n = 0;
  if (p->tp_state != NULL && p->slots != NULL) {
    if (p->tp->helping != NULL)
      p->tp->helping(p, delta);
    /* Stopping: collect once more under the lock, so a result whose worker
     * skipped waking the manager (it saw us spinning) is never stranded. */
    atomic_thread_fence(memory_order_seq_cst);
    if (delta < 0 && atomic_load(&p->state) != MPROC__P_TERMINATING)
      n = mproc__pool_drain(p);
  }
  bool kick = manager_needed(p, n);
  pthread_mutex_unlock(&p->mu);
  if (kick)
    mproc__pool_kick(p);
}

/* Kill workers whose running task passed its timeout; returns the next
 * deadline (-1 none). */
static int64_t enforce_timeouts(struct mproc_pool *p) {
  int64_t next = -1, now = mproc_now_ms();
  for (int i = 0; i < p->nworkers; i++) {
    struct mproc__slot *sl = &p->slots[i];
    if (p->opts.init_timeout_ms > 0 && p->opts.initializer != NULL && sl->alive &&
        !sl->init_timed_out && !mproc__worker_ready(p, i)) {
      int64_t dl = sl->started_ms + p->opts.init_timeout_ms;
      if (now >= dl) {
        sl->init_timed_out = true;
        mproc__kill_worker(p, i);
      } else if (next < 0 || dl < next) {
        next = dl;
      }
    }
  }
  for (int i = 0; i < p->nworkers; i++) {
    int64_t since;
    struct mproc__task *t = p->slots[i].alive ? mproc__worker_running(p, i, &since) : NULL;
    if (t == NULL || t->timeout_ms <= 0 || t->timed_out)
      continue;
    int64_t dl = since + t->timeout_ms;
    if (now >= dl) {
      t->timed_out = true;
      mproc__stop_task(p, t);
    } else if (next < 0 || dl < next) {
      next = dl;
    }
  }
  return next;
}

/* Whether a worker other than `except` can take work now. */
static bool other_worker_ready(struct mproc_pool *p, int except) {
  for (int i = 0; i < p->nworkers; i++) {
    struct mproc__slot *sl = &p->slots[i];
    if (i != except && sl->alive && !sl->stopping && !sl->stalled && mproc__worker_ready(p, i))
      return true;
  }
  return false;
}

/* Stalled workers (manager only, under mu).  A worker that runs nothing yet
 * leaves the task at its next ring position unstarted is stopped or stuck:
 *  - after MPROC__STALL_MS, when another worker can take them, every task it
 *    has not started is taken back and dispatched elsewhere, and it gets no
 *    new work until it moves again (a worker that was merely slow loses
 *    nothing but its queue);
 *  - when the waiting task has a timeout and has waited that long, the worker
 *    is killed (a kill works on a stopped process): its unstarted tasks go
 *    back to the queue and its replacement runs them.
 * Returns the next deadline (-1 none). */
static int64_t watch_stalls(struct mproc_pool *p) {
  int64_t next = -1, now = mproc_now_ms();
  for (int i = 0; i < p->nworkers; i++) {
    struct mproc__slot *sl = &p->slots[i];
    /* A worker in its initializer is watched by the initializer deadline;
     * without an initializer even one stopped before it said so is watched. */
    struct mproc__activity a = {0};
    if (sl->alive)
      p->tp->activity(p, i, &a);
    if (p->opts.initializer != NULL && a.init != MPROC__INIT_READY)
      a.waiting = NULL, a.pos = 0;
    uint64_t pos = a.pos;
    struct mproc__task *t = a.waiting;
    if (sl->stalled && pos != sl->wait_pos)
      sl->stalled = false; /* it moved again */
    if (t == NULL) {
      if (!sl->stalled)
        sl->wait_since = 0;
      continue;
    }
    if (sl->wait_since == 0 || pos != sl->wait_pos) {
      sl->wait_pos = pos;
      sl->wait_since = now;
    }
    int64_t dl = -1;
    if (t->timeout_ms > 0) {
      if (now - sl->wait_since >= t->timeout_ms) {
        mproc__kill_worker(p, i);
        continue;
      }
      dl = sl->wait_since + t->timeout_ms;
    }
    if (!sl->stalled && now - sl->wait_since >= MPROC__STALL_MS && other_worker_ready(p, i)) {
      sl->stalled = true;
      take_back(p, i);
      push_front_list(p);
      mproc__pool_dispatch(p);
      continue;
    }
    if (!sl->stalled && (dl < 0 || sl->wait_since + MPROC__STALL_MS < dl))
      dl = sl->wait_since + MPROC__STALL_MS;
    if (dl >= 0 && (next < 0 || dl < next))
      next = dl;
  }
  return next;
}

static void *manager_main(void *arg) {
  struct mproc_pool *p = arg;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, NULL); /* process signals go elsewhere */
  pthread_mutex_lock(&p->mu);
  p->mgr_tid = (pid_t)syscall(SYS_gettid);
  int started = 0;
  p->start_err = start_workers(p, true, &started);
  if (p->start_err != 0) {
    for (int i = 0; i < p->nworkers; i++) {
      if (!p->slots[i].alive)
        continue;
      mproc__kill_worker(p, i);
      reset_slot(p, i);
      /* Killed: reaped at once, or later if a debugger holds it. */
      if (p->slots[i].pidfd >= 0)
        mproc__reap_killed(p->slots[i].pidfd, NULL, mproc__deadline(MPROC__KILL_REAP_MS));
      p->slots[i].pid = 0;
      p->slots[i].pidfd = -1;
      p->slots[i].alive = false;
    }
  }
  atomic_store(&p->started, 1);
  mproc__futex_wake((_Atomic uint32_t *)&p->started, INT32_MAX, false);
  if (p->start_err != 0) {
    pthread_mutex_unlock(&p->mu);
    return NULL;
  }
  struct pollfd *pfd = p->pfd;
  int *slot_of = p->slot_of;
  /* The last task id seen, and when the pool was last seen in use. */
  uint64_t watch_id = p->next_id;
  int64_t busy_ms = mproc_now_ms();
  for (;;) {
    if (atomic_load(&p->state) == MPROC__P_TERMINATING)
      for (int i = 0; i < p->nworkers; i++)
        mproc__kill_worker(p, i);
    else
      mproc__pool_drain(p);
    /* Ends its transport reported (the pidfd ones are seen after the poll);
     * a terminating pool still collects them, or it would wait forever. */
    for (int i = 0; i < p->nworkers; i++) {
      if (p->slots[i].alive && !p->slots[i].gone && p->slots[i].pidfd < 0 &&
          atomic_load(&p->state) == MPROC__P_TERMINATING)
        collect(p, i);
      if (p->slots[i].alive && p->slots[i].gone)
        handle_death(p, i);
    }
    int64_t next = enforce_timeouts(p);
    int64_t retry = retry_respawn(p);
    if (retry >= 0 && (next < 0 || retry < next))
      next = retry;
    int64_t linger = p->nlinger > 0 ? linger_sweep(p) : -1;
    if (linger >= 0 && (next < 0 || linger < next))
      next = linger;
    if (atomic_load(&p->state) != MPROC__P_TERMINATING) {
      int64_t stall = watch_stalls(p);
      if (stall >= 0 && (next < 0 || stall < next))
        next = stall;
      /* The watch stays armed while the pool is in use and for
       * MPROC__IDLE_WATCH_MS after: a task submitted meanwhile is watched by
       * the next timed wake-up, and the submitter wakes the manager only
       * after a longer idle spell (dispatch_pending), not per round trip. */
      int64_t now = mproc_now_ms();
      if (p->outstanding > 0 || p->next_id != watch_id) {
        watch_id = p->next_id;
        busy_ms = now;
      }
      if (now - busy_ms < MPROC__IDLE_WATCH_MS && (next < 0 || now + MPROC__WATCH_MS < next))
        next = now + MPROC__WATCH_MS;
    }
    if (atomic_load(&p->state) == MPROC__P_CLOSED && p->outstanding == 0)
      for (int i = 0; i < p->nworkers; i++)
        if (p->slots[i].alive && !p->slots[i].stopping) {
          p->slots[i].stopping = true;
          p->tp->stop(p, i, MPROC__STOP_IDLE, NULL);
        }
    struct mproc_future *cbq = p->cbq_head;
    p->cbq_head = p->cbq_tail = NULL;
    bool finished = atomic_load(&p->state) != MPROC__P_RUNNING && p->outstanding == 0 &&
                    !any_alive(p) && cbq == NULL;
    if (finished)
      /* Workers still unreaped (a debugger holds their zombies) do not keep
       * the pool's free waiting: the process-wide list reaps them once the
       * tracer lets go. */
      while (p->nlinger > 0)
        mproc__reap_later(p->linger[--p->nlinger]);
    /* Untimed: the next task dispatched wakes it (dispatch_pending). */
    atomic_store(&p->mgr_untimed, next < 0 || (!p->tp->idle_watch && p->outstanding == 0));
    pthread_mutex_unlock(&p->mu);
    if (finished)
      break;
    if (cbq != NULL) {
      while (cbq != NULL) {
        struct mproc_future *f = cbq;
        cbq = f->cbq_next;
        mproc__future_run_callbacks(f);
      }
      pthread_mutex_lock(&p->mu);
      continue;
    }
    int n = 0;
    pfd[n++] = (struct pollfd){.fd = p->efd, .events = POLLIN};
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->nworkers; i++)
      if (p->slots[i].alive && p->slots[i].pidfd >= 0) {
        slot_of[n] = i;
        pfd[n++] = (struct pollfd){.fd = p->slots[i].pidfd, .events = POLLIN};
      }
    pthread_mutex_unlock(&p->mu);
    int r = p->tp->sleep(p, pfd, n, next < 0 ? -1 : mproc__poll_timeout(next));
    atomic_store(&p->mgr_untimed, 0);
    if (r > 0 && (pfd[0].revents & POLLIN)) {
      atomic_fetch_add_explicit(&p->efd_wakes, 1, memory_order_relaxed);
      uint64_t v;
      ssize_t rd = read(p->efd, &v, sizeof v);
      (void)rd;
    }
    pthread_mutex_lock(&p->mu);
    for (int k = 1; k < n; k++) {
      int i = slot_of[k];
      if (p->slots[i].alive && p->slots[i].pidfd == pfd[k].fd) {
        if (pfd[k].revents & (POLLIN | POLLHUP | POLLERR))
          handle_death(p, i);
      }
    }
  }
  atomic_store(&p->mgr_exited, 1);
  mproc__futex_wake((_Atomic uint32_t *)&p->mgr_exited, INT32_MAX, false);
  mproc__epoch_bump();
  return NULL;
}

int mproc__manager_start(struct mproc_pool *p) {
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setstacksize(&a, 256 * 1024);
  int r = pthread_create(&p->mgr, &a, manager_main, p);
  pthread_attr_destroy(&a);
  if (r != 0)
    return -r;
  p->mgr_started = true;
  return 0;
}
