/* S27: a process joined with a deadline, then terminated: join(timeout), is_alive, terminate */
#include <mproc.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

/* Python:
 *   p = Process(target=stuck); p.start()
 *   p.join(timeout=0.2)          # returns quietly after 0.2 s
 *   if p.is_alive(): p.terminate(); p.join()
 *   print(p.exitcode)            # -15: ended by SIGTERM
 * mproc's join says that the deadline passed (MPROC_ETIMEDOUT) rather
 * than leaving the caller to ask is_alive. */

/* Set by each child once it is in place (made before the children, so
 * they share it): the parent acts on a running child, never on one still
 * starting, however loaded the machine. */
static mproc_event *ready;

/* A child that never finishes on its own: it waits for a signal forever
 * (pause returns only after a signal handler ran, and it installs none). */
static int stuck(const void *arg, size_t len) {
  (void)arg, (void)len;
  mproc_event_set(ready);
  while (pause() == -1) {
  }
  return 0;
}

/* A child that ignores SIGTERM, as a busy program may: terminate does not
 * end it, kill (SIGKILL) does. */
static int stubborn(const void *arg, size_t len) {
  (void)arg, (void)len;
  signal(SIGTERM, SIG_IGN);
  mproc_event_set(ready);
  while (pause() == -1) {
  }
  return 0;
}

/* Start fn, join it with a 200 ms deadline, terminate it and join again
 * (for at most `then_ms`), then kill it if it is still running.  Returns 0
 * when every step behaved as Python's would. */
static int run(const char *label, mproc_process_fn fn, int64_t then_ms) {
  mproc_process *p;
  mproc_event_clear(ready);
  int r = mproc_process_new(&p, fn, NULL, 0, &(mproc_process_options){.name = label});
  if (r == 0)
    r = mproc_process_start(p);
  if (r == 0)
    r = mproc_event_wait(ready, 60000);
  if (r != 0) {
    printf("%s: cannot start: %s\n", label, mproc_strerror(r));
    mproc_process_free(p);
    return 1;
  }
  int first = mproc_process_join(p, 200);
  printf("%s: join(200 ms) -> %s; is_alive -> %d\n", label, mproc_err_name(first),
         mproc_process_is_alive(p));
  mproc_process_terminate(p, 0); /* SIGTERM, through the pidfd */
  int second = mproc_process_join(p, then_ms);
  int code = 0;
  if (second == 0 && mproc_process_exitcode(p, &code) == 0)
    printf("%s: terminate, join -> MPROC_OK, exitcode %d (%s)\n", label, code,
           code < 0 ? "killed by a signal" : "exited");
  else
    printf("%s: terminate, join -> %s: still running\n", label, mproc_err_name(second));
  int ok = first == MPROC_ETIMEDOUT;
  if (second == MPROC_ETIMEDOUT) {
    /* Python's p.kill(): SIGKILL cannot be ignored. */
    mproc_process_kill(p, 0);
    second = mproc_process_join(p, 60000);
    if (second == 0 && mproc_process_exitcode(p, &code) == 0)
      printf("%s: kill, join -> MPROC_OK, exitcode %d (killed by a signal)\n", label, code);
  }
  mproc_process_free(p);
  return ok && second == 0 ? 0 : 1;
}

int main(void) {
  int r = mproc_event_new(&ready);
  if (r != 0) {
    printf("event: %s\n", mproc_strerror(r));
    return 1;
  }
  /* The first child obeys SIGTERM: the join after terminate may wait long,
   * it returns as soon as the child is gone.  The second ignores it: that
   * join is expected to time out, so it waits only 300 ms. */
  int bad = run("stuck", stuck, 60000);
  bad |= run("stubborn", stubborn, 300);
  mproc_event_free(ready);
  return bad;
}
