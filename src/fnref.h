/* Internal: function references that survive exec (fnref.c). */
#ifndef MPROC_SRC_FNREF_H
#define MPROC_SRC_FNREF_H

#include "internal.h" /* first: defines _GNU_SOURCE, which <link.h> needs */

#include "elf_object.h"

#define MPROC__FNREF_PATH 512

/* Exported from libmproc.so, yet not API (no public header declares it):
 * for the sibling libraries built from this tree, which link the shared core
 * -- libmproc_mpi sends these references to other ranks.  The build hides
 * every other internal symbol. */
#define MPROC__SIBLING MPROC_EXTERN

/* Where a function lives, in terms another image of the same program can
 * check: plain bytes, no pointer, sent as is to a spawned child. */
struct mproc__fnref {
  uint64_t offset;                        /* from the object's load base (dlpi_addr) */
  uint64_t file_dev;                      /* identity of the object's file, checked when */
  uint64_t file_ino;                      /*   it has no build-id: device, inode, */
  uint64_t file_size;                     /*   size and */
  int64_t file_mtime_ns;                  /*   modification time */
  uint32_t build_id_len;                  /* 0: the object has no build-id */
  uint32_t is_main;                       /* the program itself (not a shared library) */
  uint8_t build_id[MPROC__BUILD_ID_MAX];  /* NT_GNU_BUILD_ID descriptor */
  char path[MPROC__FNREF_PATH];           /* the object's file as loaded; "" for the program */
  char name[MPROC_FUNCTION_NAME_MAX + 1]; /* registered name, or "" */
};

/* Describes the function at `fn` (of this process).  Returns 0, or
 * MPROC_ENOFUNC when the address is not in the code of any loaded object
 * (a JIT-compiled function, a data address) or its object's file cannot be
 * named (path too long). */
MPROC__SIBLING int mproc__fnref_make(mproc_function fn, struct mproc__fnref *ref);

/* Finds the function a reference describes in this process: by registered
 * name first, then by object and offset, loading the object with dlopen when
 * it is a shared library not loaded yet.  Returns 0, or MPROC_ENOFUNC with
 * a one-line reason naming the function in err[0..errlen). */
MPROC__SIBLING int mproc__fnref_resolve(const struct mproc__fnref *ref, mproc_function *fn,
                                        char *err, size_t errlen);

/* "name" or "path+0xoffset" (the program's path shown as "<program>"). */
void mproc__fnref_describe(const struct mproc__fnref *ref, char *buf, size_t len);

/* The name `fn` is registered under, copied to name[0..MPROC_FUNCTION_NAME_MAX],
 * or "" when it has none. */
void mproc__function_name_of(mproc_function fn, char *name);

#endif /* MPROC_SRC_FNREF_H */
