/* The version of the library actually loaded, which may differ from the
 * MPROC_VERSION_* macros a program was compiled with.
 *
 * Design notes: the shared library's soname carries only the major version
 * (libmproc.so.0), so a program may run with another build than the one it
 * was compiled against.  The macros say what the program was compiled
 * against; these two functions, compiled into the library, say what it
 * runs with, so a program can check for a fix it needs at run time.  Both
 * come from include/mproc/version.h, the one place a release changes. */
#include "internal.h"

MPROC_EXTERN const char *mproc_version_string(void) { return MPROC_VERSION_STRING; }

MPROC_EXTERN unsigned mproc_version(void) { return MPROC_VERSION_HEX; }
