/* Function references that survive exec, and the registry of named functions.
 *
 * Design notes.  A code address means nothing in another image of the same
 * program: PIE programs and shared libraries load at random bases.  What
 * stays the same is the object a function lives in and its offset from that
 * object's load base (dl_iterate_phdr's dlpi_addr).  So a reference is
 * (object, offset), and the object is identified by what cannot lie:
 *
 *  - its GNU build-id (the PT_NOTE of type NT_GNU_BUILD_ID that the linker
 *    writes by default), a hash of the linked contents: the same build-id in
 *    the child means the same code at the same offsets, even when the
 *    program's file was replaced on disk after the parent started (the
 *    child is an exec of /proc/self/exe, the original file);
 *  - without a build-id (linked with --build-id=none), the device and inode
 *    of the file the object is *mapped* from (/proc/self/maps), on both
 *    sides.  Not the file its path names now: a library replaced on disk
 *    after the parent loaded it is a new inode there, and is refused; the
 *    old inode cannot be reused meanwhile, since the parent's mapping keeps
 *    it alive.
 *
 * The program itself is always the first object dl_iterate_phdr reports; a
 * shared library is looked up by build-id among the loaded objects and, when
 * the child has not loaded it (it was dlopen'ed by the parent), dlopen'ed by
 * the path the parent loaded it from and then checked.  The resolved address
 * must fall inside an executable PT_LOAD segment of that object, so a stale
 * or forged reference can fail but never jumps into data.
 *
 * The name registry is a mutex-guarded array that only grows: names live
 * until the process exits, so a looked-up function never goes stale.  A
 * reference carries the name its function is registered under, if any, and
 * the resolving side tries that name first: a backend running another binary
 * (a cluster) can find functions only by name. */
#include "fnref.h"

#include <dlfcn.h>
#include <elf.h>
#include <inttypes.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

/* ---- the name registry --------------------------------------------------- */

struct named {
  char name[MPROC_FUNCTION_NAME_MAX + 1];
  mproc_function fn;
};

static pthread_mutex_t names_lock = PTHREAD_MUTEX_INITIALIZER;
static struct named *names;
static size_t names_len, names_cap;

static struct named *find_name_locked(const char *name) {
  for (size_t i = 0; i < names_len; i++)
    if (strcmp(names[i].name, name) == 0)
      return &names[i];
  return NULL;
}

MPROC_EXTERN int mproc_function_register(const char *name, mproc_function fn) {
  if (name == NULL || name[0] == '\0' || fn == NULL)
    return MPROC_EINVAL;
  if (strlen(name) > MPROC_FUNCTION_NAME_MAX)
    return MPROC_ENAMETOOLONG;
  int r = 0;
  pthread_mutex_lock(&names_lock);
  struct named *old = find_name_locked(name);
  if (old != NULL) {
    r = old->fn == fn ? 0 : MPROC_EEXIST;
  } else {
    struct named *n = mproc__grow(names, &names_cap, names_len, sizeof *n, 16);
    if (n == NULL)
      r = MPROC_ENOMEM;
    else {
      names = n;
      snprintf(names[names_len].name, sizeof names[names_len].name, "%s", name);
      names[names_len++].fn = fn;
    }
  }
  pthread_mutex_unlock(&names_lock);
  return r;
}

MPROC_EXTERN int mproc_function_lookup(const char *name, mproc_function *fn) {
  if (name == NULL || fn == NULL)
    return MPROC_EINVAL;
  pthread_mutex_lock(&names_lock);
  struct named *e = find_name_locked(name);
  if (e != NULL)
    *fn = e->fn;
  pthread_mutex_unlock(&names_lock);
  return e != NULL ? 0 : MPROC_ENOENT;
}

void mproc__function_name_of(mproc_function fn, char *name) {
  name[0] = '\0';
  pthread_mutex_lock(&names_lock);
  for (size_t i = 0; i < names_len; i++)
    if (names[i].fn == fn) {
      memcpy(name, names[i].name, sizeof names[i].name);
      break;
    }
  pthread_mutex_unlock(&names_lock);
}

/* ---- objects ------------------------------------------------------------- */

/* Device and inode of the file mapped at `addr` in this process, from
 * /proc/self/maps ("start-end perms offset major:minor inode path"). */
static int mapped_identity(uintptr_t addr, uint64_t *dev, uint64_t *ino) {
  FILE *f = fopen("/proc/self/maps", "re");
  if (f == NULL)
    return mproc__neg_errno();
  char line[4096 + 128];
  int r = -ENOENT;
  while (r != 0 && fgets(line, sizeof line, f) != NULL) {
    unsigned long lo, hi, maj, min, inode;
    if (sscanf(line, "%lx-%lx %*s %*s %lx:%lx %lu", &lo, &hi, &maj, &min, &inode) == 5 &&
        addr >= lo && addr < hi && inode != 0) {
      *dev = (uint64_t)makedev(maj, min);
      *ino = (uint64_t)inode;
      r = 0;
    }
    /* A line longer than the buffer: skip its rest. */
    while (strchr(line, '\n') == NULL && fgets(line, sizeof line, f) != NULL) {
    }
  }
  fclose(f);
  return r;
}

/* The identity of an object without build-id: its first loadable segment's
 * file. */
static int object_identity(const struct dl_phdr_info *info, uint64_t *dev, uint64_t *ino) {
  for (int i = 0; i < info->dlpi_phnum; i++)
    if (info->dlpi_phdr[i].p_type == PT_LOAD)
      return mapped_identity(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr, dev, ino);
  return -ENOENT;
}

/* ---- making a reference -------------------------------------------------- */

struct make_ctx {
  uintptr_t addr;
  int index; /* objects seen so far; 0 is the program */
  bool found;
  struct mproc__fnref *ref;
};

static int make_cb(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  struct make_ctx *c = arg;
  int index = c->index++;
  if (c->addr < info->dlpi_addr || !mproc__in_code(info, c->addr - info->dlpi_addr))
    return 0;
  struct mproc__fnref *ref = c->ref;
  ref->offset = c->addr - info->dlpi_addr;
  ref->is_main = index == 0;
  ref->build_id_len = mproc__build_id_of(info, ref->build_id);
  if (ref->build_id_len == 0 && object_identity(info, &ref->file_dev, &ref->file_ino) != 0)
    return 1; /* found, but nothing to check it by: unusable */
  if (!ref->is_main) {
    const char *path = info->dlpi_name != NULL ? info->dlpi_name : "";
    if (path[0] == '\0' || strlen(path) >= sizeof ref->path)
      return 1; /* the vDSO, or a name we cannot carry: found but unusable */
    memcpy(ref->path, path, strlen(path) + 1);
  }
  c->found = true;
  return 1;
}

MPROC__SIBLING int mproc__fnref_make(mproc_function fn, struct mproc__fnref *ref) {
  memset(ref, 0, sizeof *ref);
  struct make_ctx c = {.addr = (uintptr_t)fn, .ref = ref};
  dl_iterate_phdr(make_cb, &c);
  if (!c.found)
    return MPROC_ENOFUNC;
  mproc__function_name_of(fn, ref->name);
  return 0;
}

/* ---- resolving a reference ----------------------------------------------- */

struct resolve_ctx {
  const struct mproc__fnref *ref;
  int index;
  bool matched;    /* an object with the reference's identity was found */
  bool bad_offset; /* ...but the offset is not in its code */
  uintptr_t addr;
};

static int resolve_cb(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  struct resolve_ctx *c = arg;
  const struct mproc__fnref *ref = c->ref;
  int index = c->index++;
  if (ref->is_main != (index == 0))
    return 0;
  if (ref->build_id_len > 0) {
    uint8_t id[MPROC__BUILD_ID_MAX];
    if (mproc__build_id_of(info, id) != ref->build_id_len ||
        memcmp(id, ref->build_id, ref->build_id_len) != 0)
      return ref->is_main ? 1 : 0;
  } else if (!ref->is_main &&
             (info->dlpi_name == NULL || strcmp(info->dlpi_name, ref->path) != 0)) {
    return 0;
  } else {
    uint64_t dev, ino;
    if (object_identity(info, &dev, &ino) != 0 || dev != ref->file_dev || ino != ref->file_ino)
      return ref->is_main ? 1 : 0; /* another file at that path: keep looking */
  }
  c->matched = true;
  if (!mproc__in_code(info, ref->offset))
    c->bad_offset = true;
  else
    c->addr = info->dlpi_addr + ref->offset;
  return 1;
}

void mproc__fnref_describe(const struct mproc__fnref *ref, char *buf, size_t len) {
  if (ref->name[0] != '\0')
    snprintf(buf, len, "\"%s\" (%s+0x%" PRIx64 ")", ref->name,
             ref->is_main ? "<program>" : ref->path, ref->offset);
  else
    snprintf(buf, len, "%s+0x%" PRIx64, ref->is_main ? "<program>" : ref->path, ref->offset);
}

static int fail(const struct mproc__fnref *ref, char *err, size_t errlen, const char *why) {
  char what[MPROC__FNREF_PATH + 128];
  mproc__fnref_describe(ref, what, sizeof what);
  snprintf(err, errlen, "function %s: %s", what, why);
  return MPROC_ENOFUNC;
}

MPROC__SIBLING int mproc__fnref_resolve(const struct mproc__fnref *ref, mproc_function *fn,
                                        char *err, size_t errlen) {
  if (ref->name[0] != '\0' && mproc_function_lookup(ref->name, fn) == 0)
    return 0;
  if (ref->build_id_len > MPROC__BUILD_ID_MAX || memchr(ref->path, 0, sizeof ref->path) == NULL)
    return fail(ref, err, errlen, "malformed reference");
  struct resolve_ctx c = {.ref = ref};
  dl_iterate_phdr(resolve_cb, &c);
  if (!c.matched && !ref->is_main) {
    /* Loaded by the parent after this image started (dlopen): load it here
     * too, from the same file, and check it is still the same object.  The
     * handle is kept: the function must stay mapped while it runs. */
    if (dlopen(ref->path, RTLD_NOW | RTLD_LOCAL) == NULL) {
      const char *why = dlerror();
      return fail(ref, err, errlen, why != NULL ? why : "cannot load its library");
    }
    c = (struct resolve_ctx){.ref = ref};
    dl_iterate_phdr(resolve_cb, &c);
  }
  if (!c.matched)
    return fail(ref, err, errlen,
                ref->build_id_len > 0 ? "no loaded object has its build-id (file changed?)"
                                      : "its file changed since the parent loaded it");
  if (c.bad_offset)
    return fail(ref, err, errlen, "offset outside the object's code");
  *fn = (mproc_function)c.addr;
  return 0;
}
