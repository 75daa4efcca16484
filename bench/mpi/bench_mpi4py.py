"""mpi4py.futures side of bench/mpi/bench-mpi.c (same metrics and units).

Run as `mpiexec -n 3 /usr/bin/python3 -m mpi4py.futures bench_mpi4py.py`
(Debian's python3 with python3-mpi4py): rank 0 runs this file, the other
ranks serve MPIPoolExecutor tasks."""
import os
import sys
import time

from mpi4py import MPI
from mpi4py.futures import MPIPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "py"))
from benchlib import REPS, now, quick, report  # noqa: E402


def square(x):
    return x * x


def main():
    q = quick()
    with MPIPoolExecutor() as ex:
        ex.submit(square, 1).result()  # workers up
        n = 200 if q else 5000
        v = []
        for _ in range(REPS):
            t0 = now()
            for i in range(n):
                ex.submit(square, i).result()
            v.append((now() - t0) / n * 1e6)
        report("mpi_roundtrip", v, "us")

        n = 1000 if q else 20000
        v = []
        for _ in range(REPS):
            t0 = now()
            fs = [ex.submit(square, i) for i in range(n)]
            for f in fs:
                f.result()
            v.append(n / (now() - t0))
        report("mpi_tasks", v, "tasks/s")

        n = 20000 if q else 2000000
        workers = max(1, MPI.COMM_WORLD.Get_size() - 1)  # num_workers is mpi4py >= 4
        v = []
        for _ in range(REPS):
            t0 = now()
            for _ in ex.map(square, range(n), chunksize=max(1, n // (4 * workers))):
                pass
            v.append(n / (now() - t0))
        report("mpi_map", v, "items/s")


if __name__ == "__main__":
    main()
