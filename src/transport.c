/* The registry of pool transports: a name -> ops table, consulted once per
 * pool at creation.
 *
 * Design notes.  A transport is a file of its own (transport.h); the one
 * place that chooses it is a name -- the pool option `transport`, else the
 * environment variable MPROC_TRANSPORT (a whole program switches, as
 * MPROC_START_METHOD switches its start method), else "shm".  The local
 * shared-memory transport is built in; any other one registers itself at
 * run time, before a pool names it: libmproc_mpi from mproc_mpi_init, a
 * test from its own file.  Registering is therefore exported from
 * libmproc.so although it is no API (an mproc__ name declared only in the
 * internal transport.h, which sibling libraries of this source tree
 * include): the ops table is an internal contract that changes with the
 * library.
 *
 * The table is small and fixed (MAX_TRANSPORTS entries, -ENOSPC past them: a
 * pool looks a name up once; there are a handful of transports), guarded by
 * a mutex so that registration may run on any thread.  Registering an ops
 * table already there is a no-op; another table under a taken name is
 * -EEXIST; one missing a required operation is MPROC_EINVAL.  The built-in
 * "shm" cannot be unregistered.  A pool keeps the ops pointer it found and
 * the registry does not count users: the library that registered a
 * transport must unregister it only once no pool uses it (its
 * finalisation), so unregistering never affects a pool already created. */
#include "transport.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TRANSPORTS 8

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static const struct mproc__transport_ops *reg[MAX_TRANSPORTS] = {&mproc__transport_shm};

/* Whether every operation that is not optional is there. */
static bool complete(const struct mproc__transport_ops *o) {
  const struct mproc__arena_ops *a = o->arena;
  return o->init != NULL && o->fini != NULL && o->start_worker != NULL && o->send_task != NULL &&
         o->poll_results != NULL && o->revoke != NULL && o->activity != NULL && o->stop != NULL &&
         o->reset_slot != NULL && o->sleep != NULL &&
         (a == NULL || (a->alloc != NULL && a->free != NULL && a->at != NULL));
}

MPROC_EXTERN int mproc__transport_register(const struct mproc__transport_ops *ops) {
  if (ops == NULL || ops->name == NULL || ops->name[0] == '\0' || !complete(ops))
    return MPROC_EINVAL;
  int r = -ENOSPC;
  pthread_mutex_lock(&reg_mu);
  for (int i = 0; i < MAX_TRANSPORTS; i++)
    if (reg[i] != NULL && strcmp(reg[i]->name, ops->name) == 0) {
      r = reg[i] == ops ? 0 : -EEXIST; /* registering twice is harmless */
      goto out;
    }
  for (int i = 0; i < MAX_TRANSPORTS; i++)
    if (reg[i] == NULL) {
      reg[i] = ops;
      r = 0;
      break;
    }
out:
  pthread_mutex_unlock(&reg_mu);
  return r;
}

MPROC_EXTERN int mproc__transport_unregister(const struct mproc__transport_ops *ops) {
  if (ops == NULL || ops == &mproc__transport_shm)
    return MPROC_EINVAL;
  int r = -ENOENT;
  pthread_mutex_lock(&reg_mu);
  for (int i = 0; i < MAX_TRANSPORTS; i++)
    if (reg[i] == ops) {
      reg[i] = NULL;
      r = 0;
    }
  pthread_mutex_unlock(&reg_mu);
  return r;
}

MPROC_EXTERN int mproc__transport_find(const char *name, const struct mproc__transport_ops **out) {
  const char *from = "the pool option";
  if (name == NULL) {
    name = getenv("MPROC_TRANSPORT");
    from = "MPROC_TRANSPORT";
  }
  if (name == NULL || name[0] == '\0')
    name = mproc__transport_shm.name;
  pthread_mutex_lock(&reg_mu);
  for (int i = 0; i < MAX_TRANSPORTS; i++)
    if (reg[i] != NULL && strcmp(reg[i]->name, name) == 0) {
      *out = reg[i];
      pthread_mutex_unlock(&reg_mu);
      return 0;
    }
  char known[200] = "";
  size_t k = 0;
  for (int i = 0; i < MAX_TRANSPORTS; i++)
    if (reg[i] != NULL && k < sizeof known)
      k += (size_t)snprintf(known + k, sizeof known - k, "%s%s", k > 0 ? ", " : "", reg[i]->name);
  pthread_mutex_unlock(&reg_mu);
  /* A transport other than "shm" registers itself when its library is
   * loaded, so the likely cause is a program not linked with it: say which
   * library brings the one the MPI documentation names. */
  const char *hint = strcmp(name, "mpi") == 0
                         ? "; \"mpi\" comes with libmproc_mpi: link it (pkg-config --libs "
                           "mproc-mpi; by hand, with -Wl,--no-as-needed if the program calls "
                           "none of its functions)"
                         : "; a transport registers itself when the library that has it is "
                           "loaded";
  fprintf(stderr, "mproc: pool: no transport named \"%s\" (from %s); registered: %s%s\n", name,
          from, known, hint);
  return MPROC_EINVAL;
}
