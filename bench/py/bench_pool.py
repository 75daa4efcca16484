"""Python's multiprocessing side of bench/bench-pool.c (same metrics and units)."""
import concurrent.futures as cf
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from multiprocessing import shared_memory

from benchlib import REPS, now, quick, report


def trivial(x):
    return x


def str_len(s):
    return str(len(s))


def square(x):
    return x * x


def square_bytes(b):
    x = int.from_bytes(b, "little")
    return (x * x & 0xFFFFFFFF).to_bytes(4, "little")


def burn(ms):
    t0 = time.perf_counter()
    x = 1.0
    while (time.perf_counter() - t0) * 1000 < ms:
        for _ in range(1000):
            x = x * 1.0000001 + 1e-9
    return x


def busy(q):
    q.put(os.getpid())
    while True:
        burn(1000)


def busy_pid():
    return os.getpid()


# map_shm_tiny: x*x over ints already in a shared block, written in place.
# Python's idiom: a SharedMemory block, a NumPy array view of it in every
# process, and a Pool whose workers each square their slice.  The block holds
# the n inputs then the n results, as bench-pool.c's does.
shm_views = None


def shm_attach(name, n):
    import numpy as np
    global shm_views
    block = shared_memory.SharedMemory(name=name)
    view = np.ndarray((2 * n,), dtype=np.int32, buffer=block.buf)
    shm_views = (block, view[:n], view[n:])


def shm_square_slice(bounds):
    import numpy as np
    _, inp, out = shm_views
    a, b = bounds
    np.multiply(inp[a:b], inp[a:b], out=out[a:b])
    return b - a


def map_shm_tiny(reps, q):
    import numpy as np
    n = 10000 if q else 1000000
    block = shared_memory.SharedMemory(create=True, size=2 * n * 4)
    view = None
    try:
        view = np.ndarray((2 * n,), dtype=np.int32, buffer=block.buf)
        view[:n] = np.arange(n, dtype=np.int32)
        nproc = 2
        slices = [(i * n // nproc, (i + 1) * n // nproc) for i in range(nproc)]
        with mp.Pool(nproc, initializer=shm_attach, initargs=(block.name, n)) as pool:
            pool.map(shm_square_slice, slices, chunksize=1)  # attach and fault in
            v = []
            for _ in range(reps):
                t0 = now()
                done = sum(pool.map(shm_square_slice, slices, chunksize=1))
                v.append(done / (now() - t0))
        if not np.array_equal(view[n:], view[:n] * view[:n]):
            sys.exit("bench_pool: map_shm_tiny: wrong squares in the shared block")
        report("map_shm_tiny", v, "items/s")
    finally:
        view = None  # the block cannot close while a view holds its buffer
        block.close()
        block.unlink()


def run_map_shm_tiny(reps, q):
    """NumPy comes from Debian's python3-numpy: a pyenv python that lacks it
    runs this one row in Debian's python3, which has it (as mpi4py is run)."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        debian = "/usr/bin/python3"
        other = os.path.exists(debian) and os.path.realpath(sys.executable) != \
            os.path.realpath(debian)
        if other and subprocess.run([debian, "-c", "import numpy"],
                                    capture_output=True).returncode == 0:
            print("# python map_shm_tiny: run by %s, whose NumPy python3-numpy provides" % debian,
                  flush=True)
            r = subprocess.run([debian, os.path.abspath(__file__), "--map-shm-tiny"])
            if r.returncode != 0:
                sys.exit(r.returncode)
        else:
            print("# NumPy not installed (python3-numpy): Python's map_shm_tiny skipped",
                  flush=True)
        return
    map_shm_tiny(reps, q)


def main():
    q = quick()
    reps = 5 if not q else 3
    if sys.argv[1:] == ["--map-shm-tiny"]:
        map_shm_tiny(reps, q)
        return

    for method, suffix in (("fork", ""), ("spawn", "_spawn"), ("forkserver", "_forkserver")):
        ctx = mp.get_context(method)
        v = []
        for _ in range(reps):
            t0 = now()
            with ctx.Pool(2) as pool:
                pool.apply(trivial, (1,))
            v.append((now() - t0) * 1000)
        report("pool_startup" + suffix, v, "ms")

    with mp.Pool(2) as pool:
        n = 200 if q else 5000
        v = []
        for _ in range(reps):
            t0 = now()
            for _ in range(n):
                pool.apply_async(trivial, (1,)).get()
            v.append((now() - t0) / n * 1e6)
        report("task_roundtrip", v, "us")

        n = 10000 if q else 1000000

        def map_rate(name, fn, data):
            v = []
            for _ in range(reps):
                t0 = now()
                pool.map(fn, data)
                v.append(n / (now() - t0))
            report(name, v, "items/s")

        map_rate("map_tiny", square, list(range(n)))
        map_rate("map_buf_tiny", square_bytes, [i.to_bytes(4, "little") for i in range(n)])
        map_rate("map_strings", str_len, ["item-%d" % i for i in range(n)])

        n = 2000 if q else 100000
        v = []
        for _ in range(reps):
            t0 = now()
            got = sum(1 for _ in pool.imap_unordered(square, range(n), chunksize=1))
            v.append(got / (now() - t0))
        report("imap_unordered_c1", v, "items/s")

        ntask, ms = (8, 5) if q else (40, 50)
        v = []
        for _ in range(reps):
            t0 = now()
            for _ in range(ntask):
                burn(ms)
            serial = now() - t0
            t0 = now()
            pool.map(burn, [ms] * ntask, chunksize=1)
            v.append(serial / (now() - t0))
        report("cpu_scaling", v, "speedup")

    run_map_shm_tiny(reps, q)

    with cf.ProcessPoolExecutor(2) as ex:
        n = 2000 if q else 20000
        v = []
        for _ in range(reps):
            t0 = now()
            fs = [ex.submit(trivial, 1) for _ in range(n)]
            cf.wait(fs)
            v.append(n / (now() - t0))
        report("submit_throughput", v, "tasks/s")

    # crash_recovery: Python has no recovery.  multiprocessing.Pool's get()
    # hangs forever on a killed worker; ProcessPoolExecutor raises
    # BrokenProcessPool and the whole executor is unusable.  Reported: the
    # time until BrokenProcessPool is raised (a broken pool, not a recovery).
    for method, suffix in (("fork", ""), ("spawn", "_spawn"), ("forkserver", "_forkserver")):
        crash_recovery(reps, mp.get_context(method), suffix)
    print("# python crash_recovery: BrokenProcessPool raised; the executor is broken, "
          "no worker is replaced (multiprocessing.Pool hangs)", flush=True)


def crash_recovery(reps, ctx, suffix):
    v = []
    for _ in range(reps):
        ex = cf.ProcessPoolExecutor(2, mp_context=ctx)
        pid = ex.submit(busy_pid).result()
        f = ex.submit(burn, 60000)
        while not f.running():
            time.sleep(0.0005)
        t0 = now()
        os.kill(pid, signal.SIGKILL)
        try:
            f.result(timeout=30)
        except cf.process.BrokenProcessPool:
            pass
        v.append((now() - t0) * 1000)
        ex.shutdown(wait=True, cancel_futures=True)
    report("crash_recovery" + suffix, v, "ms")


if __name__ == "__main__":
    main()
