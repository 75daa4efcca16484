"""Shared helpers of the Python side of `make bench` (same output format as bench/bench.h)."""
import statistics
import sys
import time

REPS = 7


def report(metric, values, unit, impl="python"):
    print(f"BENCH {metric} {impl} {statistics.median(values):.6g} {unit}", flush=True)


def now():
    return time.perf_counter()


def quick():
    """MPROC_BENCH_QUICK=1 shrinks sizes so a smoke run of every benchmark is fast."""
    import os
    return os.environ.get("MPROC_BENCH_QUICK") == "1"


if __name__ == "__main__":
    sys.exit("library module, not a benchmark")
