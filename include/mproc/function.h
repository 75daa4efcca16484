/* mproc — functions that can be found again in another process image.
 *
 * Under the spawn and forkserver start methods (see process.h) a child is a
 * fresh exec of the program, so a code address of the parent means nothing
 * there (address-space randomisation).  The library sends a function as a
 * reference instead: the object that holds it (the program or a shared
 * library) identified by its GNU build-id, and the function's offset in it.
 * Any function of the program or of a shared library it has loaded, dlopen'ed
 * ones included, is found that way with no registration.
 *
 * A name registered here travels with the reference as well.  A child
 * resolves a named reference by that name first when the name is registered
 * in the child too (a backend that runs a different binary can only find
 * functions that way), and by object and offset otherwise.
 *
 *   static int work(const void *arg, size_t len) { ... }
 *   mproc_function_register("work", MPROC_FUNCTION(work));
 *
 * Registration is thread-safe; a name stays registered until the process
 * exits. */
#ifndef MPROC_FUNCTION_H
#define MPROC_FUNCTION_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Any function, as stored by the registry.  Convert with MPROC_FUNCTION()
 * and back to the function's own type before calling it. */
typedef void (*mproc_function)(void);
#define MPROC_FUNCTION(fn) ((mproc_function)(fn))

/* Longest registered name, in bytes, without the terminating NUL. */
#define MPROC_FUNCTION_NAME_MAX 63

/* Registers `fn` under `name` (copied).  Registering the same pair again
 * succeeds.  Errors: MPROC_EINVAL (NULL or empty name, NULL fn),
 * MPROC_ENAMETOOLONG (name longer than MPROC_FUNCTION_NAME_MAX),
 * MPROC_EEXIST (name taken by another function), MPROC_ENOMEM.  Does not
 * block. */
MPROC_EXTERN int mproc_function_register(const char *name, mproc_function fn);

/* Stores the function registered under `name` in *fn.  Errors: MPROC_EINVAL
 * (NULL argument), MPROC_ENOENT (no such name).  Does not block. */
MPROC_EXTERN int mproc_function_lookup(const char *name, mproc_function *fn);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_FUNCTION_H */
