/* mproc version.  The build reads MPROC_VERSION_* from this file, so it is the
 * single place a release changes.  MPROC_VERSION_MAJOR is the ABI major and the
 * shared library's SONAME suffix (libmproc.so.MAJOR). */
#ifndef MPROC_VERSION_H
#define MPROC_VERSION_H

#include "common.h"

#define MPROC_VERSION_MAJOR 0
#define MPROC_VERSION_MINOR 1
#define MPROC_VERSION_PATCH 0

#define MPROC__STR2(x) #x
#define MPROC__STR(x) MPROC__STR2(x)
#define MPROC_VERSION_STRING                                                                       \
  MPROC__STR(MPROC_VERSION_MAJOR)                                                                  \
  "." MPROC__STR(MPROC_VERSION_MINOR) "." MPROC__STR(MPROC_VERSION_PATCH)

/* Encoded as (major << 16) | (minor << 8) | patch, for compile-time checks. */
#define MPROC_VERSION_HEX                                                                          \
  ((MPROC_VERSION_MAJOR << 16) | (MPROC_VERSION_MINOR << 8) | MPROC_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the library actually loaded, "MAJOR.MINOR.PATCH". Static. */
MPROC_EXTERN const char *mproc_version_string(void);
/* MPROC_VERSION_HEX of the library actually loaded. */
MPROC_EXTERN unsigned mproc_version(void);

#ifdef __cplusplus
}
#endif
#endif /* MPROC_VERSION_H */
