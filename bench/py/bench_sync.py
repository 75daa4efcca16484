"""Python side of bench/bench-sync.c: multiprocessing Lock, Value and Condition."""
import multiprocessing as mp

import benchlib


def lock_uncontended(n):
    lock = mp.Lock()
    values = []
    for _ in range(benchlib.REPS):
        t0 = benchlib.now()
        for _ in range(n):
            lock.acquire()
            lock.release()
        values.append((benchlib.now() - t0) * 1e9 / n)
    benchlib.report("lock_uncontended", values, "ns")


def _inc(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def value_locked_inc_2proc(n):
    values = []
    for _ in range(benchlib.REPS):
        v = mp.Value("q", 0)
        procs = [mp.Process(target=_inc, args=(v, n)) for _ in range(2)]
        t0 = benchlib.now()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        dt = benchlib.now() - t0
        assert v.value == 2 * n
        values.append(2 * n / dt)
    benchlib.report("value_locked_inc_2proc", values, "inc/s")


def _pong(cond, turn, n):
    with cond:
        for _ in range(n):
            cond.wait_for(lambda: turn.value == 1)
            turn.value = 0
            cond.notify()


def condition_pingpong(n):
    values = []
    for _ in range(benchlib.REPS):
        cond = mp.Condition()
        turn = mp.RawValue("i", 0)
        p = mp.Process(target=_pong, args=(cond, turn, n))
        p.start()
        t0 = benchlib.now()
        with cond:
            for _ in range(n):
                turn.value = 1
                cond.notify()
                cond.wait_for(lambda: turn.value == 0)
        values.append((benchlib.now() - t0) * 1e6 / n)
        p.join()
    benchlib.report("condition_pingpong", values, "us")


if __name__ == "__main__":
    mp.set_start_method("fork")
    q = benchlib.quick()
    lock_uncontended(1000 if q else 1000000)
    value_locked_inc_2proc(1000 if q else 100000)
    condition_pingpong(100 if q else 5000)
