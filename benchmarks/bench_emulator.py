"""Emulator speed against a bare Numba event loop (project issue 7), measured in one process.

The network: 784-1024-1024-10 LIF (soft reset, beta 0.9, threshold 1), seeded weights
``w = (0.004 + 0.3 N(0, 1)) / sqrt(fan_in * r)`` with ``r = 0.1`` for the input layer and 0.05 for the
hidden layers, Bernoulli(p = 0.1) step input, T = 1000 steps, built with the model builder and compiled
with ``chips="auto"`` on ``tianjic``.

* **nmc**: ``nmc.emulate`` (Numba backend; timing, NoC, events and energy on, the report built), timed
  after a warm-up run that compiles or loads the cached kernels;
* **bare loop**: one ``@njit`` function doing the same synaptic arithmetic event-driven on the layers'
  int8 weights (int32 accumulators, integer LIF), without timing, energy or the chip's splitting.

Both are given the same synaptic event count, the bare loop's (spikes in x fan-out, summed over steps
and layers); the figure that matters is the ratio of the times.  Each is run ``--repeat`` times, the two
alternating, and its best CPU time (``time.process_time``) is quoted: on a shared machine wall time, and
even one CPU time, vary from run to run (wall times are printed too).

Usage: ``python benchmarks/bench_emulator.py [--steps 1000] [--batch 1] [--jobs 1] [--repeat 3]``
(the old comparison of the two emulators on random core maps: ``benchmarks/bench_emulator_maps.py``).
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from numba import njit

import nmc
from nmc.emulator import EVENT_KINDS
from nmc.frontend import ModelBuilder

SIZES = (784, 1024, 1024, 10)


def weights(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(3):
        fi, fo = SIZES[i], SIZES[i + 1]
        r = 0.1 if i == 0 else 0.05
        out.append((0.004 + 0.3 * rng.standard_normal((fo, fi))) / np.sqrt(fi * r))
    return out


def build(Ws, steps: int):
    b = ModelBuilder("mlp_784_1024_1024_10", num_steps=steps)
    h = b.input("x", (SIZES[0],), kind="step")
    for i, W in enumerate(Ws):
        h, _ = b.lif(b.gemm(h, W, name=f"fc{i}"), f"lif{i}", beta=0.9, threshold=1.0, reset_mode="subtract")
    b.output(h)
    return b.build()


@njit(cache=True, nogil=True)
def bare_loop(x, W1, W2, W3, thr, bm):
    """Event-driven integer LIF network: ``x`` [T, 784] spikes; ``Wk`` int8 [fan_in, fan_out]; returns
    (synaptic events, output spike count)."""
    T = x.shape[0]
    Ws = (W1, W2, W3)
    v1 = np.zeros(W1.shape[1], np.int32)
    v2 = np.zeros(W2.shape[1], np.int32)
    v3 = np.zeros(W3.shape[1], np.int32)
    vs = (v1, v2, v3)
    events = 0
    nout = 0
    src = np.zeros(1024, np.int64)
    nsrc = 0
    for t in range(T):
        nsrc = 0
        for i in range(x.shape[1]):
            if x[t, i] != 0:
                src[nsrc] = i
                nsrc += 1
        for l in range(3):
            W = Ws[l]
            v = vs[l]
            no = W.shape[1]
            acc = np.zeros(no, np.int32)
            for q in range(nsrc):
                row = W[src[q]]
                for j in range(no):
                    acc[j] += row[j]
            events += nsrc * no
            nsrc = 0
            for j in range(no):
                u = ((v[j] * bm[l]) >> 8) + acc[j]
                if u >= thr[l]:
                    u -= thr[l]
                    src[nsrc] = j
                    nsrc += 1
                v[j] = u
        nout += nsrc
    return events, nout


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each, alternating; the best CPU time is quoted")
    args = ap.parse_args(argv)
    T = args.steps
    Ws = weights()
    rng = np.random.default_rng(1)
    calib = {"x": (rng.random((32, 4, SIZES[0])) < args.rate).astype(np.float64)}
    t0 = time.perf_counter()
    cm = nmc.compile(build(Ws, T), chip="tianjic", chips="auto", calib=calib)
    t_compile = time.perf_counter() - t0
    x = (rng.random((T, args.batch, SIZES[0])) < args.rate).astype(np.float64)

    # the bare loop: int8 weights per layer (scale 127 / max|W|), threshold and beta in the same units
    Wq, thr = [], []
    for W in Ws:
        k = 127.0 / np.abs(W).max()
        Wq.append(np.ascontiguousarray(np.round(W.T * k).astype(np.int8)))
        thr.append(int(round(k)))
    thr_a, bm = np.array(thr, np.int32), np.array([round(0.9 * 256)] * 3, np.int32)
    xi = np.ascontiguousarray((x[:, 0] > 0).astype(np.int8))
    bare_loop(xi[:2], *Wq, thr_a, bm)  # compile / load from the cache (not timed)
    xs = [np.ascontiguousarray((x[:, b] > 0).astype(np.int8)) for b in range(args.batch)]
    t0 = time.perf_counter()
    nmc.emulate(cm, {"x": x[:2]}, steps=2, jobs=args.jobs)  # warm-up: compile or load the cached kernels
    t_warm = time.perf_counter() - t0

    bare_cpu, bare_wall, nmc_cpu, nmc_wall = [], [], [], []
    for _ in range(max(1, args.repeat)):
        w0, c0 = time.perf_counter(), time.process_time()
        for b in range(args.batch):
            ev, nout = bare_loop(xs[b], *Wq, thr_a, bm)
        bare_cpu.append(time.process_time() - c0)
        bare_wall.append(time.perf_counter() - w0)
        w0, c0 = time.perf_counter(), time.process_time()
        res = nmc.emulate(cm, {"x": x}, steps=T, jobs=args.jobs)
        nmc_cpu.append(time.process_time() - c0)
        nmc_wall.append(time.perf_counter() - w0)
    ev_bare = ev * args.batch  # close enough for several samples: the same count per sample is assumed
    t_bare, t_nmc = min(bare_cpu), min(nmc_cpu)
    ev = res.result.event_totals()
    syn = int(ev["sop"].sum() + ev["mac"].sum())

    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}, "
          f"date {time.strftime('%Y-%m-%d')}")
    print(f"network 784-1024-1024-10 LIF, T={T}, batch {args.batch}, input p={args.rate}: compiled in {t_compile:.2f} s "
          f"to {cm.num_cores} cores on {cm.meta['chips'][0]}x{cm.meta['chips'][1]} tianjic chip(s)")
    print(f"synaptic events (bare loop: spikes x fan-out): {ev_bare:,}; nmc counts sop {int(ev['sop'].sum()):,} + "
          f"mac {int(ev['mac'].sum()):,} = {syn:,} (split layers: partial sums merged densely); "
          f"packets {int(ev['packet'].sum()):,}")
    runs = lambda v: " ".join(f"{t:.4f}" for t in v)  # noqa: E731
    print(f"best CPU time of {len(nmc_cpu)} alternating runs each (all CPU times; wall times):")
    print(f"bare Numba loop : {t_bare:8.4f} s  {ev_bare / t_bare:12.3e} events/s  "
          f"({runs(bare_cpu)}; {runs(bare_wall)})")
    print(f"nmc (jobs={args.jobs})   : {t_nmc:8.4f} s  {ev_bare / t_nmc:12.3e} events/s  "
          f"({runs(nmc_cpu)}; {runs(nmc_wall)})")
    print(f"  (timing, NoC, energy and report on; warm-up incl. compile/cache load {t_warm:.2f} s; with jobs > 1 "
          f"the CPU time is summed over threads)")
    print(f"ratio nmc / bare: {t_nmc / t_bare:.1f}x;  latency {res.report['latency_s'] * 1e3:.3f} ms and "
          f"{res.report['energy_j'] * 1e6:.2f} uJ per task")


if __name__ == "__main__":
    main()
