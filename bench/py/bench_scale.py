"""Python's points on the scaling curves of bench/bench-scale.c (same charts,
units and "CURVE chart impl x y" lines), and its memory figures.

Python is capped lower than mproc where a point would take minutes: map at
10^7 items, 16 MiB per item-size point, task arguments at 256 MiB, 8 producers/consumers; the report
says so."""
import multiprocessing as mp
import os
import statistics

from benchlib import now, quick


SIZES = [8, 64, 512, 4096, 32768, 262144, 1 << 20]


def curve(chart, x, values):
    print(f"CURVE {chart} python {x:.6g} {statistics.median(values):.6g}", flush=True)


def mem(metric, kib):
    print(f"BENCH {metric} python {kib:.6g} KiB", flush=True)


def rss_pss(pid):
    rss = pss = 0.0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = float(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = float(line.split()[1])
    except OSError:
        pass
    return rss, pss


def square(x):
    return x * x


def ident(x):
    return x


def whoami(_):
    return os.getpid()


def map_items(q):
    top = 10**4 if q else 10**7
    with mp.Pool(2) as pool:
        n = 100
        while n <= top:
            data = list(range(n))
            reps = 3 if n >= 10**6 else 5
            v = []
            for _ in range(reps):
                t0 = now()
                pool.map(square, data)
                v.append(n / (now() - t0))
            curve("map_items", n, v)
            n *= 10


def map_item_sizes(q):
    total = (1 << 20) if q else (16 << 20)
    with mp.Pool(2) as pool:
        for sz in [s for s in SIZES if s <= total // 4]:
            items = [bytes(sz)] * (total // sz)
            v = []
            for _ in range(3):
                t0 = now()
                pool.map(ident, items)
                v.append(total / (now() - t0) / 1e6)
            curve("map_item_size", sz, v)


def task_sizes(q):
    top = (1 << 16) if q else (256 << 20)
    sizes = [8, 200, 201, 1024, 4096, 16 << 10, 64 << 10, (64 << 10) + 1, 256 << 10, 1 << 20,
             16 << 20, 256 << 20]
    with mp.Pool(1) as pool:
        for sz in sizes:
            if sz > top:
                break
            arg = bytes(sz)
            inner = 50 if sz <= (64 << 10) + 1 else 1
            v = []
            for _ in range(3 if sz >= (16 << 20) else 5):
                t0 = now()
                for _ in range(inner):
                    pool.apply(ident, (arg,))
                v.append((now() - t0) * 1e6 / inner)
            curve("task_size", sz, v)


def pool_sizes(q):
    top = 4 if q else 256
    w = 1
    while w <= top:
        v, pss = [], []
        for r in range(3 if w < 64 else 1):
            t0 = now()
            pool = mp.Pool(w)
            pool.apply(whoami, (0,))
            v.append((now() - t0) * 1000)
            mems = [rss_pss(p.pid) for p in pool._pool]
            pss.append(sum(m[1] for m in mems) / len(mems))
            if r == 0 and w in (2, 16):
                prss, ppss = rss_pss(os.getpid())
                mem(f"mem_idle{w}_parent_rss", prss)
                mem(f"mem_idle{w}_parent_pss", ppss)
                mem(f"mem_idle{w}_worker_rss", sum(m[0] for m in mems) / len(mems))
                mem(f"mem_idle{w}_worker_pss", pss[-1])
            pool.terminate()
            pool.join()
        curve("pool_start", w, v)
        curve("pool_pss", w, pss)
        w *= 2


def imap_memory(q):
    n = 100000 if q else 10000000
    try:  # peak RSS of this run only (Linux >= 4.0); it runs first anyway
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    with mp.Pool(2) as pool:
        got = 0
        for _ in pool.imap(square, range(n), chunksize=1000):
            got += 1
        mems = [rss_pss(p.pid) for p in pool._pool]
        with open("/proc/self/status") as f:
            hwm = next((float(l.split()[1]) for l in f if l.startswith("VmHWM:")), 0.0)
        mem("mem_imap10m_parent_peak_rss", hwm)
        mem("mem_imap10m_parent_pss", rss_pss(os.getpid())[1])
        mem("mem_imap10m_worker_rss", sum(m[0] for m in mems) / len(mems))
        mem("mem_imap10m_worker_pss", sum(m[1] for m in mems) / len(mems))


def produce(qu, n, size):
    msg = bytes(size)
    for _ in range(n):
        qu.put(msg)


def consume(qu, n):
    for _ in range(n):
        qu.get()


def queue_rate(k, n, size):
    qu = mp.Queue()
    per = n // k
    t0 = now()
    ps = [mp.Process(target=consume, args=(qu, per)) for _ in range(k)]
    ps += [mp.Process(target=produce, args=(qu, per, size)) for _ in range(k)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    return per * k / (now() - t0)


def queues(q):
    total = (4 << 20) if q else (64 << 20)
    for sz in SIZES:
        n = min(total // sz, 2000 if q else 20000)
        curve("queue_msg_size", sz, [queue_rate(1, n, sz) * sz / 1e6 for _ in range(3)])
    k = 1
    while k <= (2 if q else 8):
        curve("queue_procs", k, [queue_rate(k, 2000 if q else 20000, 8) / 1e6 for _ in range(3)])
        k *= 2


def main():
    mp.set_start_method("fork")
    q = quick()
    imap_memory(q)
    map_item_sizes(q)
    map_items(q)
    task_sizes(q)
    pool_sizes(q)
    queues(q)


if __name__ == "__main__":
    main()
