"""Seconds of the mapper's late passes (after partitioning) on large core maps, and a hash of each map.

    python benchmarks/bench_late_passes.py [--nets fanout deep wide] [--hash-only]

Per net: the PassManager's seconds per pass (``Run.seconds``), and inside ``fit`` and ``emit`` the time of
their parts (partition, connect, routing shortfall, relays, fold; the design rules), measured by wrapping
those functions.  The hash covers every array of the core map and its header's phases and chips, so two
runs (before and after a change) can be compared for identical output.  Nets:

* ``cnn64``: the ``bench_compile`` CNN at 64 x 64 on ``tianjicx``, ``--chips auto`` (bench_scale_compile.py's largest);
* ``fanout``: the 784-4096-4096-10 LIF network on ``tianjic`` with ``--chips auto`` (relay cores);
* ``deep``: 30 3x3 convolutions 4 -> 4 channels on 64 x 64 (+ relu) on ``tianjicx`` with 48-neuron cores,
  ``--chips auto``: over 10,000 cores and 2 million routes in 30 static phases;
* ``wide``: dense 2 -> 640,000 on ``tianjicx`` with 64-neuron cores: 10,000 cores;
* ``tiled``: 3 convolutions 16 -> 16 channels on 128 x 128 (38M synapses each: tiles with shared kernels).
"""
import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nmc  # noqa: E402
from nmc import rules  # noqa: E402
from nmc.chip import load_chip  # noqa: E402
from nmc.frontend.builder import ModelBuilder  # noqa: E402
from nmc.mapper import fit as fit_mod  # noqa: E402
from nmc.mapper import passes  # noqa: E402
from bench_placement import mlp_snn  # noqa: E402  (the same LIF MLP as the placement benchmark)

PARTS: dict[str, float] = {}


def _wrap(mod, name, label):
    fn = getattr(mod, name)

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            PARTS[label] = PARTS.get(label, 0.0) + time.perf_counter() - t0
    setattr(mod, name, timed)


for n in ("partition", "connect", "routing_shortfall", "add_relays", "fold"):
    _wrap(fit_mod, n, f"fit.{n}")
for n in list(rules.RULES):
    fn = rules.RULES[n]

    def timed(cm, fn=fn, n=n):
        t0 = time.perf_counter()
        try:
            return fn(cm)
        finally:
            PARTS[f"rule.{n}"] = PARTS.get(f"rule.{n}", 0.0) + time.perf_counter() - t0
    rules.RULES[n] = timed


def deep_conv(layers=30, ch=4, size=64, seed=0):
    rng = np.random.default_rng(seed)
    b = ModelBuilder(f"deep{layers}x{ch}x{size}", num_steps=1)
    h = b.input("image", (ch, size, size))
    for i in range(layers):
        h = b.relu(b.conv(h, rng.normal(size=(ch, ch, 3, 3)) * 0.3, pads=(1, 1, 1, 1), name=f"conv{i}"))
    b.output(h)
    return b.build(), {"image": rng.random((2, ch, size, size))}


def wide_dense(n=640_000, seed=0):
    rng = np.random.default_rng(seed)
    b = ModelBuilder(f"wide{n}", num_steps=1)
    b.output(b.gemm(b.input("x", (2,)), rng.normal(size=(n, 2)), name="fc"))
    return b.build(), {"x": rng.random((4, 2))}


LAST: list = []
_run = passes.PassManager.run


def _keep_run(self, graph, ctx):
    r = _run(self, graph, ctx)
    LAST[:] = [r]
    return r


passes.PassManager.run = _keep_run

SMALL = {"core.neurons": 64}
def _cnn(size):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_compile import cnn  # the bench_scale_compile CNN
    return cnn(size)


NETS = {
    "cnn64": lambda: (_cnn(64), "tianjicx", {}),
    "fanout": lambda: (mlp_snn([784, 4096, 4096, 10]), "tianjic", {}),
    "deep": lambda: (deep_conv(), "tianjicx", {"core.neurons": 48}),
    "wide": lambda: (wide_dense(), "tianjicx", SMALL),
    "tiled": lambda: (deep_conv(layers=3, ch=16, size=128), "tianjicx", {}),
}


def map_hash(cm) -> str:
    h = hashlib.sha256()
    for k, v in sorted(cm.arrays().items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(v).tobytes())
    h.update(repr((cm.meta["phases"], cm.meta["chips"])).encode())
    return h.hexdigest()[:16]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", nargs="+", default=["fanout", "deep", "wide"], choices=list(NETS))
    ap.add_argument("--placement", default="greedy")
    a = ap.parse_args()
    for name in a.nets:
        (model, calib), chip, over = NETS[name]()
        spec = load_chip(chip).with_overrides(over) if over else load_chip(chip)
        PARTS.clear()
        t0 = time.perf_counter()
        cm = nmc.compile(model, chip=spec, calib=calib, chips="auto", placement=a.placement)
        total = time.perf_counter() - t0
        run = LAST[0]
        print(f"{name}: {cm.num_cores} cores on {cm.meta['chips']} chips of {chip}, phases {cm.meta['phases']}, "
              f"rounds {cm.meta.get('rounds')}, {cm.routes.src.shape[0]:,} routes; {total:.1f} s; hash {map_hash(cm)}")
        print("  passes: " + ", ".join(f"{k} {v:.2f}" for k, v in run.seconds.items()))
        print("  parts:  " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(PARTS.items(), key=lambda kv: -kv[1])
                                       if v >= 0.01))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
