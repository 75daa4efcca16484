/* Error names and messages, generated from MPROC_ERRNO_MAP (mproc/common.h).
 *
 * Design notes: the table is the single source of truth; this file only turns
 * it into two switch statements.  Codes the table does not list fall back to
 * strerror()/strerrorname_np() for -errno values, so any -errno a call returns
 * still gets a meaningful text. */
#include "internal.h"

#include <string.h>

MPROC_EXTERN const char *mproc_strerror(int err) {
  switch (err) {
#define MPROC__ERR_MSG(name, value, msg)                                                           \
  case (value):                                                                                    \
    return msg;
    MPROC_ERRNO_MAP(MPROC__ERR_MSG)
#undef MPROC__ERR_MSG
  case 0:
    return "success";
  default:
    break;
  }
  if (err < 0 && err > -4096) {
    /* strerror() may use a static buffer for unknown values; glibc returns a
     * constant string for every errno it knows, which covers -4095..-1. */
    return strerror(-err);
  }
  return "unknown error";
}

MPROC_EXTERN const char *mproc_err_name(int err) {
  switch (err) {
#define MPROC__ERR_NAME(name, value, msg)                                                          \
  case (value):                                                                                    \
    return "MPROC_" #name;
    MPROC_ERRNO_MAP(MPROC__ERR_NAME)
#undef MPROC__ERR_NAME
  case 0:
    return "MPROC_OK";
  default:
    break;
  }
  if (err < 0 && err > -4096) {
    const char *n = strerrorname_np(-err);
    if (n != NULL)
      return n;
  }
  return "MPROC_EUNKNOWN";
}
