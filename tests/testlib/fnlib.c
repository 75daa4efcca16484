/* A shared library test-startmethod loads at run time (dlopen), after the
 * forkserver started, to send one of its functions to spawned children.  It
 * is built twice: with a build-id, and without one (FNLIB_BASE differs, so
 * the two files differ). */
#include <stddef.h>

#ifndef FNLIB_BASE
#define FNLIB_BASE 40
#endif

int fnlib_work(const void *arg, size_t len);

int fnlib_work(const void *arg, size_t len) {
  (void)arg;
  return FNLIB_BASE + (int)len;
}
