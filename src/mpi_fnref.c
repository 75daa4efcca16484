/* Function references that mean the same function on every rank.
 *
 * Design notes.  Ranks are separate processes, each with its own address
 * layout (ASLR, PIE), so a code address of rank 0 means nothing elsewhere.
 * A reference names a function in one of two ways:
 *   - by a name registered on every rank with mproc_function_register (the
 *     core's one registry, mproc/function.h): works even when ranks run
 *     different builds of the program;
 *   - by the object it lives in (main program or shared library), identified
 *     by the object's GNU build-id, and its offset from the object's load
 *     base: any function of the program works with no registration, as long
 *     as every rank runs the same binary (the usual SPMD launch).
 * Resolution checks the object is loaded here (same build-id) and that the
 * address falls inside one of its executable segments, so a stale or
 * made-up reference fails the task with a message naming it, never jumps
 * into the void.
 *
 * The core has the same object + offset references for its spawn start
 * method (src/fnref.c), but they are internal to libmproc.so (hidden
 * symbols) and this library links the shared core: the ELF reading both
 * need is shared at the source level (elf_object.h), the registry through
 * the public mproc_function_lookup.  Once the pool's transport seam carries
 * the core's references to a transport, the core should export their
 * make/resolve pair to its sibling libraries and this file shrinks to the
 * wire format. */
#include "mpi_internal.h"
#include "elf_object.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- objects and build-ids ------------------------------------------------ */

_Static_assert(MPROC__MPI_BUILD_ID_MAX == MPROC__BUILD_ID_MAX,
               "a wire build-id holds any build-id");

/* What a dl_iterate_phdr walk looks for, and what it found. */
struct walk {
  uintptr_t addr;         /* find the object holding this address ... */
  const uint8_t *want_id; /* ... or the object with this build-id */
  size_t want_len;
  bool main_only; /* ... or the main program (the first object) */
  /* found: */
  bool found;
  bool in_exec; /* addr (or base + offset) lies in an executable segment */
  uintptr_t base;
  uint64_t offset; /* resolve: the offset to check */
  uint8_t id[MPROC__MPI_BUILD_ID_MAX];
  size_t id_len;
  char file[MPROC__MPI_NAME_MAX];
};

/* Whether an absolute address lies in the object's code. */
static bool in_exec_segment(const struct dl_phdr_info *info, uintptr_t addr) {
  return addr >= info->dlpi_addr && mproc__in_code(info, addr - info->dlpi_addr);
}

static int walk_cb(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  struct walk *w = arg;
  if (w->addr) {
    if (!in_exec_segment(info, w->addr))
      return 0;
    w->in_exec = true;
  }
  uint8_t id[MPROC__BUILD_ID_MAX];
  size_t n = mproc__build_id_of(info, id);
  if (w->want_id && (n != w->want_len || memcmp(id, w->want_id, n) != 0))
    return 0;
  if (w->want_id)
    w->in_exec = in_exec_segment(info, info->dlpi_addr + w->offset);
  w->found = true;
  w->base = info->dlpi_addr;
  memcpy(w->id, id, n);
  w->id_len = n;
  const char *file = info->dlpi_name && *info->dlpi_name ? info->dlpi_name : "(main program)";
  const char *slash = strrchr(file, '/');
  snprintf(w->file, sizeof w->file, "%s", slash ? slash + 1 : file);
  return 1;
}

int mproc__mpi_program_build_id(uint8_t *id, size_t cap) {
  struct walk w = {.main_only = true};
  dl_iterate_phdr(walk_cb, &w); /* the main program is reported first */
  if (!w.found || w.id_len == 0 || w.id_len > cap)
    return MPROC_ENOENT;
  memcpy(id, w.id, w.id_len);
  return (int)w.id_len;
}

int mproc__mpi_fn_named(struct mproc__mpi_fn *out, uint32_t type, const char *name) {
  if (!out || !name || strlen(name) >= MPROC__MPI_NAME_MAX)
    return MPROC_EINVAL;
  mproc_function fn;
  if (mproc_function_lookup(name, &fn) != 0)
    return MPROC_ENOENT; /* not registered here: no rank would know it */
  memset(out, 0, sizeof *out);
  out->kind = MPROC__MPI_FN_NAMED;
  out->type = type;
  snprintf(out->name, sizeof out->name, "%s", name);
  return 0;
}

int mproc__mpi_fn_of(struct mproc__mpi_fn *out, uint32_t type, void (*fn)(void)) {
  if (!out || !fn)
    return MPROC_EINVAL;
  struct walk w = {.addr = (uintptr_t)fn};
  dl_iterate_phdr(walk_cb, &w);
  if (!w.found || w.id_len == 0)
    return MPROC_ENOENT; /* no object, or one without a build-id */
  memset(out, 0, sizeof *out);
  out->kind = MPROC__MPI_FN_OFFSET;
  out->type = type;
  out->offset = (uint64_t)((uintptr_t)fn - w.base);
  out->id_len = (uint32_t)w.id_len;
  memcpy(out->build_id, w.id, w.id_len);
  snprintf(out->name, sizeof out->name, "%s", w.file);
  return 0;
}

static void hex(const uint8_t *id, size_t n, char *buf, size_t cap) {
  size_t k = 0;
  for (size_t i = 0; i < n && k + 3 <= cap; i++, k += 2)
    snprintf(buf + k, cap - k, "%02x", id[i]);
  buf[cap ? (k < cap ? k : cap - 1) : 0] = '\0';
}

void (*mproc__mpi_fn_resolve(const struct mproc__mpi_fn *r, char *why, size_t cap))(void) {
  char name[MPROC__MPI_NAME_MAX];
  snprintf(name, sizeof name, "%.*s", (int)sizeof r->name - 1, r->name);
  const char *what = r->type == MPROC__MPI_FN_MAP ? "map function" : "task function";
  if (r->kind == MPROC__MPI_FN_NAMED) {
    mproc_function fn;
    if (mproc_function_lookup(name, &fn) == 0)
      return fn;
    snprintf(why, cap, "%s '%s' is not registered on this rank", what, name);
    return NULL;
  }
  if (r->kind != MPROC__MPI_FN_OFFSET || r->id_len == 0 || r->id_len > MPROC__MPI_BUILD_ID_MAX) {
    snprintf(why, cap, "malformed function reference (kind %u)", (unsigned)r->kind);
    return NULL;
  }
  struct walk w = {.want_id = r->build_id, .want_len = r->id_len, .offset = r->offset};
  dl_iterate_phdr(walk_cb, &w);
  char idhex[2 * MPROC__MPI_BUILD_ID_MAX + 1];
  hex(r->build_id, r->id_len, idhex, sizeof idhex);
  if (!w.found) {
    snprintf(why, cap, "no object with build-id %.16s... is loaded here (%s at %#llx of %s)", idhex,
             what, (unsigned long long)r->offset, name);
    return NULL;
  }
  if (!w.in_exec) {
    snprintf(why, cap, "%s at %#llx of %s is not in its code (build-id %.16s...)", what,
             (unsigned long long)r->offset, name, idhex);
    return NULL;
  }
  return (void (*)(void))(w.base + (uintptr_t)r->offset);
}
