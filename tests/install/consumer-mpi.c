/* A program built against an installed mproc with its MPI backend; run
 * without mpiexec it has no worker ranks and says so. */
#include <mproc.h>
#include <mproc/mpi.h>
#include <stdio.h>

int main(int argc, char **argv) {
  if (mproc_mpi_init(&argc, &argv, NULL) != 0)
    return 1;
  printf("mproc-mpi %d worker ranks\n", mproc_mpi_worker_ranks());
  return mproc_mpi_finalize(1000);
}
