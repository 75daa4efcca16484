/* S24: Python's Pipe example: a connection made before the process, used in it */
/* Python:
 *     def f(conn):
 *         conn.send([42, None, 'hello'])
 *         conn.close()
 *     parent_conn, child_conn = Pipe()
 *     p = Process(target=f, args=(child_conn,))
 *     p.start(); print(parent_conn.recv()); p.join()
 * C has no pickle, so the message is bytes; the connection handle itself is
 * passed in the process's argument bytes (the child is a fork: the handle and
 * its socket are the child's own copies). */
#include <mproc.h>
#include <stdio.h>
#include <string.h>

static int f(const void *arg, size_t len) {
  (void)len;
  mproc_conn *conn = *(mproc_conn *const *)arg; /* args=(child_conn,) */
  const char msg[] = "[42, None, 'hello']";
  int r = mproc_conn_send(conn, msg, sizeof msg - 1, 10000);
  mproc_conn_free(conn);
  return r == 0 ? 0 : 1;
}

int main(void) {
  mproc_conn *parent_conn = NULL, *child_conn = NULL;
  mproc_process *p = NULL;
  char buf[64];
  size_t n = 0;
  int code = -1;
  int r = mproc_pipe(&parent_conn, &child_conn, NULL);
  if (r == 0)
    r = mproc_process_new(&p, f, &child_conn, sizeof child_conn, NULL);
  if (r == 0)
    r = mproc_process_start(p);
  if (r == 0)
    r = mproc_conn_recv(parent_conn, buf, sizeof buf, &n, 10000);
  if (r == 0)
    printf("parent received: %.*s\n", (int)n, buf);
  if (r == 0)
    r = mproc_process_join(p, 10000);
  if (r == 0)
    r = mproc_process_exitcode(p, &code);
  if (r == 0)
    printf("child exited with code %d\n", code);
  else
    fprintf(stderr, "s24: %s\n", mproc_strerror(r));
  mproc_process_free(p);
  mproc_conn_free(child_conn);
  mproc_conn_free(parent_conn);
  return r == 0 && code == 0 ? 0 : 1;
}
