"""process_start_join: microseconds to start a multiprocessing.Process (fork
start method) running an empty function and join it."""
import multiprocessing as mp

import benchlib


def empty():
    pass


def once(ctx, n):
    t0 = benchlib.now()
    for _ in range(n):
        p = ctx.Process(target=empty)
        p.start()
        p.join()
    return (benchlib.now() - t0) / n * 1e6


def main():
    ctx = mp.get_context("fork")
    n = 5 if benchlib.quick() else 200
    once(ctx, max(1, n // 10))
    values = [once(ctx, n) for _ in range(benchlib.REPS)]
    benchlib.report("process_start_join", values, "us")


if __name__ == "__main__":
    main()
