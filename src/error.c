/* Error names and messages, generated from MPROC_ERRNO_MAP (mproc/common.h).
 *
 * Design notes: the table is the single source of truth; this file only turns
 * it into one lookup table, read by both calls (tests/test-error.c checks
 * that the codes are distinct and that every one maps back to its own name
 * and message).  Codes the table does
 * not list fall back to strerror()/strerrorname_np() for -errno values, so
 * any -errno a call returns still gets a meaningful text. */
#include "internal.h"

#include <string.h>

struct entry {
  int code;
  const char *name; /* "MPROC_<NAME>" */
  const char *msg;
};

static const struct entry table[] = {{0, "MPROC_OK", "success"},
#define MPROC__ERR_ROW(name, value, msg) {(value), "MPROC_" #name, msg},
                                     MPROC_ERRNO_MAP(MPROC__ERR_ROW)
#undef MPROC__ERR_ROW
};

static const struct entry *find(int err) {
  for (size_t i = 0; i < MPROC__ARRAY_SIZE(table); i++)
    if (table[i].code == err)
      return &table[i];
  return NULL;
}

MPROC_EXTERN const char *mproc_strerror(int err) {
  const struct entry *e = find(err);
  if (e != NULL)
    return e->msg;
  if (err < 0 && err > -4096) {
    /* strerror() may use a static buffer for unknown values; glibc returns a
     * constant string for every errno it knows, which covers -4095..-1. */
    return strerror(-err);
  }
  /* Error codes are never positive; a positive value passed here is most
   * often a task's own failure code (mproc_task_error.task_code after
   * `return 1;`) or a count, so say so rather than "unknown error". */
  if (err > 0)
    return "not an error code: a count, or a task's own positive code";
  return "unknown error";
}

MPROC_EXTERN const char *mproc_err_name(int err) {
  const struct entry *e = find(err);
  if (e != NULL)
    return e->name;
  if (err < 0 && err > -4096) {
    const char *n = strerrorname_np(-err);
    if (n != NULL)
      return n;
  }
  return "MPROC_EUNKNOWN";
}
