/* Function references that mean the same function on every rank.
 *
 * Design notes.  Ranks are separate processes, each with its own address
 * layout (ASLR, PIE), so a code address of rank 0 means nothing elsewhere.
 * The core already solves this for its spawn start method (src/fnref.c:
 * object identified by build-id, offset from its load base, checked to lie
 * in the object's code, registered name tried first); libmproc exports that
 * make/resolve pair to its sibling libraries under internal names, and this
 * file only wraps it for the wire:
 *   - a reference made from an address (mproc__mpi_fn_of) is the core's
 *     reference as is: any function of the program works with no
 *     registration when every rank runs the same binary (the usual SPMD
 *     launch), and a registered function is found by its name first;
 *   - a reference made from a name (mproc__mpi_fn_named) is resolved by
 *     that name only, so ranks running other builds of the program still
 *     agree on registered functions.
 * A reference also says whether it points at a task or a map element
 * function, so a rank never calls one as the other.  What cannot resolve
 * fails the task with the core's message naming the function; nothing
 * jumps into the void. */
#include "mpi_internal.h"
#include "elf_object.h"

#include <stdio.h>
#include <string.h>

int mproc__mpi_fn_of(struct mproc__mpi_fn *out, uint32_t type, void (*fn)(void)) {
  if (!out || !fn)
    return MPROC_EINVAL;
  memset(out, 0, sizeof *out);
  int rc = mproc__fnref_make(fn, &out->ref);
  if (rc)
    return rc;
  out->type = type;
  return 0;
}

int mproc__mpi_fn_named(struct mproc__mpi_fn *out, uint32_t type, const char *name) {
  if (!out || !name)
    return MPROC_EINVAL;
  if (strlen(name) > MPROC_FUNCTION_NAME_MAX)
    return MPROC_ENAMETOOLONG;
  mproc_function fn;
  if (mproc_function_lookup(name, &fn) != 0)
    return MPROC_ENOENT; /* not registered here: no rank would know it */
  memset(out, 0, sizeof *out);
  out->type = type;
  out->named = 1;
  memcpy(out->ref.name, name, strlen(name) + 1);
  return 0;
}

void (*mproc__mpi_fn_resolve(const struct mproc__mpi_fn *r, char *why, size_t cap))(void) {
  const char *what = r->type == MPROC__MPI_FN_MAP ? "map" : "task";
  if (memchr(r->ref.name, 0, sizeof r->ref.name) == NULL) {
    snprintf(why, cap, "malformed %s function reference", what);
    return NULL;
  }
  mproc_function fn;
  if (r->named) {
    if (mproc_function_lookup(r->ref.name, &fn) == 0)
      return fn;
    snprintf(why, cap, "%s function '%s' is not registered on this rank", what, r->ref.name);
    return NULL;
  }
  char err[160];
  if (mproc__fnref_resolve(&r->ref, &fn, err, sizeof err) == 0)
    return fn;
  snprintf(why, cap, "%s %s", what, err); /* err: "function <where>: <why>" */
  return NULL;
}

struct build_id {
  uint8_t id[MPROC__BUILD_ID_MAX];
  uint32_t len;
};

static int first_object_cb(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  struct build_id *p = arg;
  p->len = mproc__build_id_of(info, p->id);
  return 1; /* the main program is always reported first */
}

int mproc__mpi_program_build_id(uint8_t *id, size_t cap) {
  struct build_id p = {{0}, 0};
  dl_iterate_phdr(first_object_cb, &p);
  if (p.len == 0 || p.len > cap)
    return MPROC_ENOENT;
  memcpy(id, p.id, p.len);
  return (int)p.len;
}
