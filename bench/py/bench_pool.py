"""Python's multiprocessing side of bench/bench-pool.c (same metrics and units)."""
import concurrent.futures as cf
import multiprocessing as mp
import os
import signal
import time

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


def main():
    q = quick()
    reps = 5 if not q else 3

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
