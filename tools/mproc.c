/* mproc: the command-line tool.  Its one subcommand, `run`, runs a command
 * over many inputs on every CPU (GNU parallel's everyday features at
 * `xargs -P` cost); see run.h for how it is organised and mproc(1) for its
 * manual. */
#include "run.h"

#include <string.h>

static void usage(FILE *f) {
  fputs("Usage: mproc run [OPTIONS] [COMMAND [ARG...]] [::: ARGS...] [:::: FILES...]\n"
        "       mproc --help | --version\n"
        "Subcommands:\n"
        "  run    run COMMAND once per input, in parallel (mproc run --help)\n",
        f);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return RUN_EXIT_ERROR;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("mproc %s\n", MPROC_VERSION_STRING);
    return 0;
  }
  if (strcmp(argv[1], "run") != 0) {
    fprintf(stderr, "mproc: unknown subcommand '%s' (see mproc --help)\n", argv[1]);
    return RUN_EXIT_ERROR;
  }
  struct run_opts o;
  int r = run_opts_parse(&o, argc - 2, argv + 2);
  int status = r < 0 ? RUN_EXIT_ERROR : r > 0 ? 0 : run_main(&o);
  run_opts_free(&o);
  return status;
}
