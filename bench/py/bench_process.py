"""process_start_join: microseconds to start a multiprocessing.Process (fork
start method) running an empty function and join it; process_start_join_spawn
and process_start_join_forkserver: the same with the spawn and forkserver
contexts."""
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
    quick = benchlib.quick()
    # A spawned interpreter takes tens of milliseconds: fewer rounds.
    for metric, method, n in (("process_start_join", "fork", 5 if quick else 200),
                              ("process_start_join_spawn", "spawn", 1 if quick else 20),
                              ("process_start_join_forkserver", "forkserver",
                               2 if quick else 100)):
        ctx = mp.get_context(method)
        once(ctx, max(1, n // 10))  # also starts the forkserver, untimed
        values = [once(ctx, n) for _ in range(benchlib.REPS)]
        benchlib.report(metric, values, "us")


if __name__ == "__main__":
    main()
