/* A program built against an installed mproc. */
#include <mproc.h>
#include <stdio.h>

int main(void) {
  printf("mproc %s %s\n", mproc_version_string(), mproc_err_name(MPROC_ETIMEDOUT));
  return mproc_version() == MPROC_VERSION_HEX ? 0 : 1;
}
