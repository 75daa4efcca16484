#!/usr/bin/env python3
"""bench/report.py RESULTS PNG MARKDOWN

Turns the "BENCH metric impl median unit" lines of `make bench`
(build-bench/bench/results.txt) into
  - PNG: a chart drawn by gnuplot, two panels: mproc's speed-up over Python
    per metric (log scale), and mproc's speed relative to the raw OS/OpenMP
    baseline; each bar green when the metric meets its target, red when not,
    the target marked by a black dash;
  - the table between the "<!-- bench-table -->" and "<!-- /bench-table -->"
    markers of MARKDOWN (BENCHMARKS.md), rewritten in place;
  - from the "CURVE chart impl x y" lines of bench-scale.c, bench-loop.c and
    their Python counterparts: one chart per curve, scale-<chart>.png beside
    PNG (log-log where the axis spans decades), every implementation on the
    same axes, and the memory table between "<!-- mem-table -->" markers.
"""
import math
import os
import subprocess
import sys
import tempfile

TIME_UNITS = {"ns", "us", "ms", "s"}

# Targets from the issues, in the metric's own unit: ("abs", value) for an
# absolute figure for mproc, ("py", factor) for "at least factor x faster than
# Python", ("base", factor) for "within factor x of the baseline" (the raw
# mechanism of bench-raw.c where the metric has one, else the OS/OpenMP
# figure), ("os", factor) for "within factor x of the OS figure" where both
# exist, ("fork", factor) for "within factor x of mproc's own figure under the
# fork start method" (a metric named <fork metric>_spawn or _forkserver).
TARGETS = {
    "process_start_join": [("os", 1.2), ("py", 20)],
    "value_locked_inc_2proc": [("base", 1 / 0.7)],
    "lock_uncontended": [("os", 2)],
    "condition_pingpong": [("base", 1.5)],
    "queue_small_msgs": [("abs", 10), ("base", 2)],
    "queue_1mib_msgs": [("abs", 5000)],
    "queue_mpmc_small_msgs": [("abs", 5), ("base", 2)],
    "pipe_roundtrip": [("base", 1.2)],
    "task_roundtrip": [("abs", 5)],
    "submit_throughput": [("abs", 1e6)],
    "map_tiny": [("abs", 300e6)],
    # Zero-copy map over a shared block: at least 0.2x OpenMP (issue #16).
    "map_shm_tiny": [("base", 5)],
    "imap_unordered_c1": [("abs", 2e6)],
    "pool_startup": [("abs", 1)],
    "pool_startup_spawn": [("abs", 5)],
    "cpu_scaling": [("abs", 1.97)],
    "crash_recovery": [("abs", 10)],
    "crash_recovery_forkserver": [("fork", 2)],
    "process_start_join_forkserver": [("fork", 2)],
    # mproc run: no slower than xargs -P (the "os" baseline) per job.
    "cli_true": [("base", 1.0)],
    "cli_1ms": [("base", 1.0)],
    # Over MPI (3 ranks): raw MPI in C is the baseline, mpi4py.futures the
    # Python side.
    "mpi_roundtrip": [("base", 2), ("py", 50)],
    "mpi_tasks": [("base", 2)],
    "mpi_map": [("py", 50)],
}


# The scaling charts: title, x label, y label, log x, log y.
CHARTS = {
    "map_items": ("map x*x over n ints (2 workers)", "items", "items/s", True, True),
    "map_item_size": ("map copying each item (2 workers)", "item size (bytes)",
                      "MB/s", True, True),
    "task_size": ("one task round trip, argument and result of the same size",
                  "argument = result size (bytes)", "us per round trip", True, True),
    "pool_start": ("pool start-up: create, first result, free", "workers", "ms", True, True),
    "pool_pss": ("memory per idle worker (PSS)", "workers", "KiB per worker", True, True),
    "queue_msg_size": ("queue throughput, 1 producer and 1 consumer process",
                       "message size (bytes)", "MB/s", True, True),
    "queue_procs": ("queue throughput, 8-byte messages, k producers + k consumers",
                    "k (producer processes = consumer processes)", "M msgs/s", True, True),
    "prefork_conns": ("prefork HTTP server (4 workers) under wrk",
                      "concurrent connections (wrk -c)", "requests/s", True, True),
}
# Legend label per implementation (per chart where it differs).
IMPL_LABEL = {
    "mproc": "mproc",
    "mproc_shm": "mproc map_shm (in place, data in a shared block)",
    "mproc_shm_range": "mproc map_shm_range (in place, one run per worker)",
    "python": "Python multiprocessing",
    "openmp": "OpenMP parallel for (same address space)",
    "raw": "raw mechanism",
    "os": "single-process epoll server",
}
RAW_LABEL = {
    "task_size": "raw: the two memcpy of argument and result",
    "queue_msg_size": "raw: one memcpy into a 16 MiB ring",
    "queue_procs": "raw: ring under one pshared mutex, spin then futex",
}


def load_curves(path):
    curves = {}
    with open(path) as f:
        for line in f:
            w = line.split()
            if len(w) == 5 and w[0] == "CURVE":
                curves.setdefault(w[1], {}).setdefault(w[2], []).append((float(w[3]), float(w[4])))
    return curves


def draw_curves(curves, outdir, title):
    """One PNG per chart; returns the markdown lines linking them."""
    md = []
    for chart, (ctitle, xl, yl, logx, logy) in CHARTS.items():
        impls = curves.get(chart)
        if not impls:
            continue
        png = os.path.join(outdir, "scale-%s.png" % chart)
        with tempfile.TemporaryDirectory() as tmp:
            plots = []
            for impl in ["mproc", "mproc_shm", "mproc_shm_range", "python", "raw", "openmp", "os"]:
                pts = impls.get(impl)
                if not pts:
                    continue
                dat = os.path.join(tmp, impl + ".dat")
                with open(dat, "w") as f:
                    for x, y in sorted(pts):
                        f.write("%g %g\n" % (x, y))
                label = RAW_LABEL.get(chart, IMPL_LABEL[impl]) if impl == "raw" else IMPL_LABEL[impl]
                plots.append('"%s" using 1:2 with linespoints lw 2 pt 7 title "%s"' % (dat, label))
            gp = f"""
set terminal pngcairo size 900,560 font "DejaVu Sans,10"
set output "{png}"
set title "{ctitle}\\n{title}; all figures from this one run" noenhanced
set xlabel "{xl}" noenhanced
set ylabel "{yl}" noenhanced
set grid xtics ytics mxtics mytics
set key outside bottom center horizontal noenhanced
{"set logscale x" if logx else ""}
{"set logscale y" if logy else ""}
set format x "%.0s%c"
plot {", ".join(plots)}
"""
            gpf = os.path.join(tmp, "c.gp")
            with open(gpf, "w") as f:
                f.write(gp)
            subprocess.run(["gnuplot", gpf], check=True)
        md.append("![%s](docs/img/scale-%s.png)" % (ctitle, chart))
        md.append("")
    return md


def mem_table(vals):
    lines = ["| memory (KiB) | mproc | Python |", "|---|---:|---:|"]
    keys = sorted({m for (m, _i) in vals if m.startswith("mem_")})
    for m in keys:
        mp, py = vals.get((m, "mproc")), vals.get((m, "python"))
        lines.append("| `%s` | %s | %s |" % (m, "—" if mp is None else "%.0f" % mp,
                                            "—" if py is None else "%.0f" % py))
    return lines if keys else []


def replace_between(text, a, b, lines, md):
    if a not in text or b not in text:
        sys.exit("%s: markers %s ... %s not found" % (md, a, b))
    head, rest = text.split(a, 1)
    _, tail = rest.split(b, 1)
    return head + a + "\n" + "\n".join(lines) + "\n" + b + tail


def load(path):
    vals, units, order, header, notes = {}, {}, [], "", []
    with open(path) as f:
        for line in f:
            w = line.split()
            if line.startswith("# mproc benchmarks"):
                header = line[2:].strip()
            elif line.startswith("#"):
                notes.append(line[1:].strip())
            elif len(w) == 5 and w[0] == "BENCH" and w[1].startswith("mem_"):
                vals[(w[1], w[2])] = float(w[3])
            elif len(w) == 5 and w[0] == "BENCH":
                metric, impl, median, unit = w[1], w[2], float(w[3]), w[4]
                vals[(metric, impl)] = median
                units[metric] = unit
                if metric not in order:
                    order.append(metric)
    return vals, units, order, header, notes


def fork_metric(metric):
    """The metric a start-method variant compares with: its fork figure."""
    for suffix in ("_spawn", "_forkserver"):
        if metric.endswith(suffix):
            return metric[: -len(suffix)]
    return metric


def speed(metric, a, b, units):
    """How many times faster a is than b (>1: a is faster)."""
    if units[metric] in TIME_UNITS:
        return b / a
    return a / b


def main():
    results, png, md = sys.argv[1], sys.argv[2], sys.argv[3]
    vals, units, order, header, notes = load(results)
    rows, py_panel, base_panel = [], [], []
    for m in order:
        mp = vals.get((m, "mproc"))
        if mp is None:
            continue
        py = vals.get((m, "python"))
        # The baseline is the metric's limit: the raw mechanism when
        # bench-raw.c measures one, else the OS call or OpenMP.
        base_impl = next((i for i in ("raw", "os", "openmp") if (m, i) in vals), None)
        base = vals.get((m, base_impl)) if base_impl else None
        os_v = vals.get((m, "os"))
        fork_v = vals.get((fork_metric(m), "mproc"))
        # The speed-up over Python that each target implies (for the dash on
        # panel 1) and the ratio to the baseline (panel 2).
        py_target = base_target = None
        met, met_py, met_base = [], [], []
        for kind, t in TARGETS.get(m, []):
            if kind == "abs":
                ok = mp <= t if units[m] in TIME_UNITS else mp >= t
                met.append(ok)
                met_py.append(ok)
                if py:
                    py_target = speed(m, t, py, units)
            elif kind == "py" and py:
                met.append(speed(m, mp, py, units) >= t)
                met_py.append(met[-1])
                py_target = t
            elif kind == "base" and base:
                met.append(speed(m, mp, base, units) >= 1 / t)
                met_base.append(met[-1])
                base_target = 1 / t
            elif kind == "os" and os_v:
                met.append(speed(m, mp, os_v, units) >= 1 / t)
                if base_impl == "os":
                    met_base.append(met[-1])
                    base_target = 1 / t
            elif kind == "fork" and fork_v:
                met.append(speed(m, mp, fork_v, units) >= 1 / t)
        status = "n/a" if not met else "yes" if all(met) else "no"
        # Bar colour per panel: that panel's targets only (0 missed, 1 met,
        # 0.5 no target).
        def colour(oks):
            return 0.5 if not oks else 1 if all(oks) else 0
        if py:
            py_panel.append((m, speed(m, mp, py, units), py_target, colour(met_py)))
        if base:
            base_panel.append((m, speed(m, mp, base, units), base_target, colour(met_base), base_impl))
        tdesc = []
        for kind, t in TARGETS.get(m, []):
            if kind == "abs":
                tdesc.append(("≤ " if units[m] in TIME_UNITS else "≥ ") + "%g %s" % (t, units[m]))
            elif kind == "py":
                tdesc.append("≥ %g× Python" % t)
            elif kind == "os":
                tdesc.append("within %g× of os" % t)
            elif kind == "fork":
                tdesc.append("within %g× of fork (%s)" % (t, "%.4g" % fork_v if fork_v else "not measured"))
            else:
                tdesc.append("%s %.3g× %s" % ("≥" if units[m] not in TIME_UNITS else "within",
                                               1 / t if units[m] not in TIME_UNITS else t, base_impl))
        rows.append((m, units[m], mp, py, base, base_impl, os_v, "; ".join(tdesc) or "—", status))

    # ---- the chart -------------------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        d1, d2 = os.path.join(tmp, "py.dat"), os.path.join(tmp, "base.dat")
        with open(d1, "w") as f:
            for i, (m, s, t, st) in enumerate(py_panel):
                f.write('%d "%s" %g %s %g\n' % (i, m, s, t if t else "NaN", st))
        with open(d2, "w") as f:
            for i, (m, s, t, st, bi) in enumerate(base_panel):
                f.write('%d "%s\\n(vs %s)" %g %s %g\n' % (i, m, bi, s, t if t else "NaN", st))
        title = header.replace("mproc benchmarks, ", "")
        # Log axes spanning every bar and target, in whole decades.
        def decades(points, lo, hi):
            vals = [v for v in points if v and v > 0]
            lo = min([lo] + [10 ** math.floor(math.log10(v * 0.8)) for v in vals])
            hi = max([hi] + [10 ** math.ceil(math.log10(v * 1.6)) for v in vals])
            return lo, hi
        py_lo, py_hi = decades([v for _, s, t, _ in py_panel for v in (s, t)], 0.5, 10)
        b_lo, b_hi = decades([v for _, s, t, _, _ in base_panel for v in (s, t)], 0.1, 10)
        gp = f"""
set terminal pngcairo size 1400,1000 font "DejaVu Sans,11"
set output "{png}"
set multiplot layout 2,1 title "mproc benchmarks ({title})\\nbars: green = meets its target, red = misses it, grey = no target; black dash = the target" font ",13"
set style fill solid 0.85 border -1
set boxwidth 0.6
set grid ytics mytics
set xtics rotate by -30 left nomirror noenhanced
set key off
set palette defined (0 "#d62728", 0.5 "#9e9e9e", 1 "#2ca02c")
unset colorbox
set cbrange [0:1]
set logscale y
set format y "%gx"
set ylabel "mproc speed-up over Python\\n(higher is better, log scale)"
set yrange [{py_lo}:{py_hi}]
set xrange [-0.6:{len(py_panel) - 0.4}]
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb "#555555"
plot "{d1}" using 1:3:5:xtic(2) with boxes lc palette, \\
     "" using 1:4:(0.35):(0) with vectors nohead lw 3 lc rgb "black", \\
     "" using 1:4:(-0.35):(0) with vectors nohead lw 3 lc rgb "black", \\
     "" using 1:3:(sprintf("%.3gx", $3)) with labels offset 0,0.8 font ",9"
unset arrow 1
set ylabel "mproc speed relative to its limit:\\nthe raw mechanism, else OS / OpenMP\\n(1 = as fast; log scale)"
set yrange [{b_lo}:{b_hi}]
set xrange [-0.6:{len(base_panel) - 0.4}]
set arrow 2 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb "#555555"
plot "{d2}" using 1:3:5:xtic(2) with boxes lc palette, \\
     "" using 1:4:(0.3):(0) with vectors nohead lw 3 lc rgb "black", \\
     "" using 1:4:(-0.3):(0) with vectors nohead lw 3 lc rgb "black", \\
     "" using 1:3:(sprintf("%.2fx", $3)) with labels offset 0,0.8 font ",9"
unset multiplot
"""
        gpf = os.path.join(tmp, "chart.gp")
        with open(gpf, "w") as f:
            f.write(gp)
        subprocess.run(["gnuplot", gpf], check=True)

    # ---- the table -------------------------------------------------------
    def fmt(v):
        return "—" if v is None else "%.4g" % v

    lines = [
        "Measured: %s." % header.replace("mproc benchmarks, ", ""),
        "",
        "| metric | unit | mproc | Python | mproc vs Python | limit (raw / OS / OpenMP) | mproc vs limit | target | met |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for m, unit, mp, py, base, bi, os_v, tdesc, status in rows:
        vs_py = "%.3g× faster" % speed(m, mp, py, units) if py else "—"
        if py and speed(m, mp, py, units) < 1:
            vs_py = "%.3g× slower" % (1 / speed(m, mp, py, units))
        vs_base = "—"
        if base:
            s = speed(m, mp, base, units)
            vs_base = "%.3g× faster" % s if s >= 1 else "%.3g× slower" % (1 / s)
            vs_base += " (%s)" % bi
            if bi != "os" and os_v:
                s = speed(m, mp, os_v, units)
                vs_base += "; %s than os (%.4g)" % ("%.3g× faster" % s if s >= 1 else "%.3g× slower" % (1 / s), os_v)
        lines.append("| `%s` | %s | %s | %s | %s | %s | %s | %s | %s |"
                     % (m, unit, fmt(mp), fmt(py), vs_py, fmt(base), vs_base, tdesc, status))
    for n in notes:
        lines.append("")
        lines.append("Note from the run: " + n)
    with open(md) as f:
        text = f.read()
    text = replace_between(text, "<!-- bench-table -->", "<!-- /bench-table -->", lines, md)
    title = header.replace("mproc benchmarks, ", "")
    charts = draw_curves(load_curves(results), os.path.dirname(png) or ".", title)
    text = replace_between(text, "<!-- scale-charts -->", "<!-- /scale-charts -->", charts, md)
    text = replace_between(text, "<!-- mem-table -->", "<!-- /mem-table -->", mem_table(vals), md)
    with open(md, "w") as f:
        f.write(text)
    print("wrote %s, %d scaling charts and the tables in %s" % (png, len(charts) // 2, md))


if __name__ == "__main__":
    main()
