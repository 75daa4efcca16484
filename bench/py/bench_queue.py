"""Python counterparts of bench/bench-queue.c: multiprocessing Queue and Pipe."""
import multiprocessing as mp

from benchlib import REPS, now, quick, report


def produce(q, n, size):
    msg = bytes(size)
    for _ in range(n):
        q.put(msg)
    q.put(None)


def consume(q):
    while q.get() is not None:
        pass


def spsc(n, size):
    q = mp.Queue()
    t0 = now()
    p = mp.Process(target=produce, args=(q, n, size))
    p.start()
    while q.get() is not None:
        pass
    t = now() - t0
    p.join()
    return n / t


def mpmc(n):
    q = mp.Queue()
    t0 = now()
    cons = [mp.Process(target=consume, args=(q,)) for _ in range(2)]
    prods = [mp.Process(target=produce, args=(q, n // 2, 8)) for _ in range(2)]
    for p in cons + prods:
        p.start()
    for p in prods:
        p.join()
    for p in cons:
        p.join()  # each consumer stops at one of the producers' None
    return n / (now() - t0)


def echo(conn, n):
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())


def pipe_rt(n):
    a, b = mp.Pipe()
    p = mp.Process(target=echo, args=(b, n))
    p.start()
    msg = b"pingpong"
    t0 = now()
    for _ in range(n):
        a.send_bytes(msg)
        a.recv_bytes()
    t = now() - t0
    p.join()
    return t / n * 1e6


def main():
    mp.set_start_method("fork")
    small = 2000 if quick() else 200000
    report("queue_small_msgs", [spsc(small, 8) / 1e6 for _ in range(REPS)], "M/s")
    big = 10 if quick() else 300
    report("queue_1mib_msgs", [spsc(big, 1 << 20) * (1 << 20) / 1e6 for _ in range(REPS)], "MB/s")
    report("queue_mpmc_small_msgs", [mpmc(small) / 1e6 for _ in range(REPS)], "M/s")
    rts = 1000 if quick() else 20000
    report("pipe_roundtrip", [pipe_rt(rts) for _ in range(REPS)], "us")


if __name__ == "__main__":
    main()
