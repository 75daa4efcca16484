/* The version of the library actually loaded, which may differ from the
 * MPROC_VERSION_* macros a program was compiled with. */
#include "internal.h"

MPROC_EXTERN const char *mproc_version_string(void) { return MPROC_VERSION_STRING; }

MPROC_EXTERN unsigned mproc_version(void) { return MPROC_VERSION_HEX; }
