"""Emulator speed: synaptic events per second of the reference (NumPy) and Numba emulators.

Builds a large random SNN-like core map on the tianjic preset (full 256 x 256 cores, LIF layers fed
by spikes, event-driven dendrites, AER packets, some recurrent delayed routes), runs both emulators
on the same inputs, checks that they agree bit for bit, and prints synaptic events (``sop`` + ``mac``)
per second.  Numba compile time is excluded: the kernel is compiled (or loaded from the cache) by
a warm-up run on a tiny batch before timing.

Usage: ``python benchmarks/bench_emulator_maps.py [--layers 4] [--cores-per-layer 8] [--steps 50] [--batch 4]``
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from nmc.emulator import EVENT_KINDS, run_numba, run_reference  # noqa: E402
from nmc.chip import load_chip  # noqa: E402
from randmaps import build_coremap  # noqa: E402


def snn_coremap(layers: int, cores_per_layer: int, seed: int = 0):
    chip = load_chip("tianjic")
    rng = np.random.default_rng(seed)
    n, a = chip.core.neurons, chip.core.axons
    cores, routes, feeds = [], [], []
    positions = rng.permutation(chip.cores_x * chip.cores_y)
    for l in range(layers):
        for j in range(cores_per_layer):
            c = len(cores)
            W = rng.integers(-44, 48, (a, n))
            cores.append(dict(W=W, x=int(positions[c] % chip.cores_x), y=int(positions[c] // chip.cores_x),
                              stage=1, phase=l, model="lif", bits=1, lo=0, hi=1, spike_in=1,
                              cparam=dict(threshold=int(rng.integers(300, 600)), reset_mode=0, spike_ge=1,
                                          beta_mult=int(0.9 * (1 << chip.core.beta_shift)))))
            for ax in range(a):
                if l == 0:
                    feeds.append((0, int(rng.integers(256)), c, ax))
                elif rng.random() < 0.1:  # recurrence inside the layer through a spike state pair
                    src = l * cores_per_layer + int(rng.integers(cores_per_layer))
                    routes.append((src, int(rng.integers(n)), c, ax, 1))
                else:
                    src = (l - 1) * cores_per_layer + int(rng.integers(cores_per_layer))
                    routes.append((src, int(rng.integers(n)), c, ax, 0))
    last = (layers - 1) * cores_per_layer
    outputs = [("spikes", "step", [(last, k) for k in range(16)])]
    inputs = [{"name": "in", "kind": "step", "shape": [256], "scale": 1.0, "lo": 0, "hi": 1}]
    return build_coremap(chip, cores, inputs=inputs, feeds=feeds, routes=routes, outputs=outputs)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--cores-per-layer", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rate", type=float, default=0.2, help="input spike probability per step")
    args = ap.parse_args(argv)
    cm = snn_coremap(args.layers, args.cores_per_layer)
    rng = np.random.default_rng(1)
    x = (rng.random((args.batch, args.steps, 256)) < args.rate).astype(np.int64)
    syn = [EVENT_KINDS.index("sop"), EVENT_KINDS.index("mac")]

    run_numba(cm, {}, {0: x[:1, :1]}, 1)  # warm-up: compile / load the cached kernel (not timed)
    t0 = time.perf_counter()
    nb = run_numba(cm, {}, {0: x}, args.steps)
    t_nb = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = run_reference(cm, {}, {0: x}, args.steps)
    t_ref = time.perf_counter() - t0
    assert ref.differences(nb) == [], ref.differences(nb)

    events = int(nb.events[..., syn].sum())
    spikes = int(nb.events[..., EVENT_KINDS.index("spike")].sum())
    print(f"map: {cm.num_cores} cores, {cm.num_neurons} neurons, {len(cm.routes.src)} routes; "
          f"batch {args.batch} x {args.steps} steps")
    print(f"synaptic events (sop + mac): {events:,}; spikes: {spikes:,} "
          f"({spikes / (cm.num_neurons * args.batch * args.steps):.1%} of neuron updates)")
    print(f"reference (NumPy): {t_ref:8.3f} s  {events / t_ref:14,.0f} synaptic events/s")
    print(f"numba            : {t_nb:8.3f} s  {events / t_nb:14,.0f} synaptic events/s  (compile time excluded)")
    print(f"speed-up numba / reference: {t_ref / t_nb:.1f}x; results identical bit for bit")


if __name__ == "__main__":
    main()
