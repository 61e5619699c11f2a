"""Compile-time benchmark: how long mapping takes for a mid-size CNN -> SNN model, per pass.

    python benchmarks/bench_compile.py [--chip tianjic] [--size 32]

Prints the model size (synapses), cores and chips used, and seconds per mapper pass.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmc.frontend import load_onnx  # noqa: E402
from nmc.frontend.builder import ModelBuilder  # noqa: E402
from nmc.mapper import passes  # noqa: E402
from nmc.chip import load_chip  # noqa: E402


def cnn(size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    b = ModelBuilder("bench_cnn", num_steps=8)
    x = b.input("image", (3, size, size))
    h = b.relu(b.conv(x, rng.normal(size=(16, 3, 3, 3)) * 0.2, pads=(1, 1, 1, 1), name="conv1"))
    h = b.relu(b.conv(h, rng.normal(size=(32, 16, 3, 3)) * 0.1, strides=(2, 2), pads=(1, 1, 1, 1), name="conv2"))
    h = b.flatten(b.maxpool(h, (2, 2), name="pool"))
    n = 32 * (size // 4) ** 2
    s, _ = b.lif(b.gemm(h, rng.normal(size=(256, n)) * 0.05, name="fc1"), "lif1", beta=0.9)
    s2, _ = b.lif(b.gemm(s, rng.normal(size=(128, 256)) * 0.2, name="fc2"), "lif2", beta=0.9)
    b.output(b.gemm(b.spike_count(s2, "count"), rng.normal(size=(10, 128)), name="head"))
    img = rng.random((4, 3, size, size))
    return b.build(), {"image": img}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chip", default="tianjic")
    ap.add_argument("--size", type=int, default=32)
    a = ap.parse_args()
    model, calib = cnn(a.size)
    t0 = time.perf_counter()
    g = load_onnx(model)
    t_load = time.perf_counter() - t0
    ctx = passes.Context(chip=load_chip(a.chip), options=dict(chips="auto", placement="greedy"), calib=calib)
    run = passes.PassManager(passes.default_passes()).run(g, ctx)
    times = list(run.seconds.items())
    total = t_load + sum(t for _, t in times)
    layers = run["layers"].layers
    syn = sum(int(l.rows.shape[0]) for l in layers)
    cm = run["coremap"]
    print(f"model: {a.size}x{a.size}x3 CNN -> SNN, {len(layers)} layers, {syn:,} synapses (unfolded)")
    print(f"mapped onto {cm.num_cores} cores of {a.chip} ({cm.meta['chips'][0]}x{cm.meta['chips'][1]} chips) "
          f"in {total:.2f} s ({syn / total / 1e6:.2f} M synapses/s)")
    print(f"  load_onnx {t_load:.3f} s")
    for name, t in times:
        print(f"  {name:<10} {t:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
