"""Placement benchmark: traffic x hops, maximum link load and chip crossings of every placement strategy on a
set of networks (cores of each net placed on the same grid of chips by every strategy).

    python benchmarks/bench_placement.py [--chip tianjic] [--check]

``--check`` exits non-zero unless ``locality`` beats ``zigzag`` by at least 30% on traffic x hops summed over
the set (and on every net by at least 15%).  Figures are in docs/performance.md.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmc.chip import load_chip  # noqa: E402
from nmc.frontend import load_onnx  # noqa: E402
from nmc.frontend.builder import ModelBuilder  # noqa: E402
from nmc.mapper import passes  # noqa: E402
from nmc.mapper.place import chips_needed, near_square, place, placement_metrics, traffic_graph  # noqa: E402

STRATEGIES = ("zigzag", "greedy", "locality")


def mlp_snn(sizes, seed=0):
    """A LIF multi-layer perceptron ``sizes[0] -> ... -> sizes[-1]`` with a spike-count read-out."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder(f"mlp_{'_'.join(map(str, sizes))}", num_steps=4)
    h = b.input("spikes", (sizes[0],), kind="step")
    for i, (a, o) in enumerate(zip(sizes[:-2], sizes[1:-1])):
        h, _ = b.lif(b.gemm(h, rng.normal(size=(o, a)) * 0.1, name=f"fc{i}"), f"lif{i}", beta=0.9)
    b.output(b.gemm(b.spike_count(h, "count"), rng.normal(size=(sizes[-1], sizes[-2])), name="head"))
    return b.build(), {"spikes": (rng.random((4, 2, sizes[0])) < 0.2).astype(float)}


def cnn(size, widths=(16, 32, 32), seed=0):
    """An ANN CNN: 3x3 convolutions (stride 2 after the first), then two dense layers."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder(f"cnn{size}_{'_'.join(map(str, widths))}", num_steps=1)
    h = b.input("image", (3, size, size))
    c_in, s = 3, size
    for i, c in enumerate(widths):
        st = 1 if i == 0 else 2
        h = b.relu(b.conv(h, rng.normal(size=(c, c_in, 3, 3)) * 0.2, strides=(st, st), pads=(1, 1, 1, 1),
                          name=f"conv{i}"))
        c_in, s = c, (s - 1) // st + 1
    h = b.relu(b.gemm(b.flatten(h), rng.normal(size=(128, c_in * s * s)) * 0.05, name="fc"))
    b.output(b.gemm(h, rng.normal(size=(10, 128)) * 0.1, name="head"))
    return b.build(), {"image": rng.random((2, 3, size, size))}


def resnet(size, width=16, blocks=3, seed=0):
    """A small residual network: a stem convolution, ``blocks`` residual blocks (two 3x3 convolutions and a
    skip connection), global average pooling and a dense head."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder(f"resnet{size}_{width}x{blocks}", num_steps=1)
    h = b.relu(b.conv(b.input("image", (3, size, size)), rng.normal(size=(width, 3, 3, 3)) * 0.2, pads=(1, 1, 1, 1),
                      name="stem"))
    for k in range(blocks):
        r = b.relu(b.conv(h, rng.normal(size=(width, width, 3, 3)) * 0.05, pads=(1, 1, 1, 1), name=f"b{k}a"))
        r = b.conv(r, rng.normal(size=(width, width, 3, 3)) * 0.05, pads=(1, 1, 1, 1), name=f"b{k}b")
        h = b.relu(b.add(h, r, name=f"add{k}"))
    b.output(b.gemm(b.flatten(b.global_avgpool(h)), rng.normal(size=(10, width)) * 0.1, name="head"))
    return b.build(), {"image": rng.random((2, 3, size, size))}


NETS = {
    "mlp 784-512-512-10 (SNN)": lambda: mlp_snn([784, 512, 512, 10]),
    "mlp 256-1024-256-10 (SNN)": lambda: mlp_snn([256, 1024, 256, 10], seed=1),
    "cnn 32x32 16-32-32": lambda: cnn(32),
    "cnn 24x24 8-16-32-64": lambda: cnn(24, (8, 16, 32, 64), seed=2),
    "resnet 16x16 w16 x3": lambda: resnet(16),
}


def fitted(model, calib, chip):
    ps = [p for p in passes.default_passes() if p.name in ("lower", "calibrate", "quantize", "fit")]
    return passes.PassManager(ps).run(load_onnx(model), passes.Context(chip=chip, calib=calib))["fit"]


def chips_auto_vs_row(chip) -> None:
    """Emulated latency of one sample with ``--chips auto`` and with the fewest chips in a row (a small chip of
    3 x 3 cores, so the nets span many chips)."""
    import nmc  # the API (compile + emulate)

    small = {"cores_x": 3, "cores_y": 3}
    print(f"\n--chips auto vs a row of chips ({chip.name} with 3 x 3 cores per chip, greedy placement, one sample)")
    for name in ("mlp 256-1024-256-10 (SNN)", "cnn 24x24 8-16-32-64"):
        model, calib = NETS[name]()
        one = {k: (v[:, :1] if k == "spikes" else v[:1]) for k, v in calib.items()}
        res = {}
        for label, chips in (("auto", "auto"), ("row", None)):
            if chips is None:
                n = res["auto"][0].num_cores
                chips = (-(-n // 9), 1)
            cm = nmc.compile(model, chip=chip, calib=calib, chips=chips, overrides=small)
            res[label] = (cm, nmc.emulate(cm, one).report["latency_cycles"])
        (ca, la), (cr, lr) = res["auto"], res["row"]
        print(f"  {name:<28} {ca.num_cores} cores: auto {ca.meta['chips'][0]}x{ca.meta['chips'][1]} {la:,.0f} cycles; "
              f"row {cr.meta['chips'][0]}x{cr.meta['chips'][1]} {lr:,.0f} cycles ({lr / la - 1:+.0%})")


def fanout() -> None:
    """The 784-4096-4096-10 LIF network on tianjic: every hidden core sends to 256 cores, the table holds 64."""
    import nmc  # the API (compile + emulate)

    model, calib = mlp_snn([784, 4096, 4096, 10])
    t0 = time.perf_counter()
    cm = nmc.compile(model, chip="tianjic", calib=calib, chips="auto")
    secs = time.perf_counter() - t0
    r = cm.meta["routing"]
    print(f"\n784-4096-4096-10 LIF on tianjic: compiled in {secs:.0f} s to {cm.num_cores} cores "
          f"({r['relay_cores']} relay cores) on {cm.meta['chips'][0]}x{cm.meta['chips'][1]} chips, largest router "
          f"table {r['max_table_entries']} (limit {cm.chip.core.router_table_entries}), phases {cm.meta['phases']}")
    t0 = time.perf_counter()
    rep = nmc.emulate(cm, {"spikes": calib["spikes"][:, :1]}).report
    print(f"  one sample, {cm.meta['num_steps']} steps: {rep['latency_cycles']:,.0f} cycles, "
          f"{rep['energy_j'] * 1e6:.0f} uJ (emulated in {time.perf_counter() - t0:.0f} s)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chip", default="tianjic")
    ap.add_argument("--check", action="store_true", help="fail unless locality beats zigzag by >= 30%% overall")
    ap.add_argument("--chips", action="store_true", help="also emulate --chips auto against a row of chips")
    ap.add_argument("--fanout", action="store_true",
                    help="also compile and emulate the 784-4096-4096-10 LIF network on tianjic (relay cores; minutes)")
    a = ap.parse_args()
    chip = load_chip(a.chip)
    tot = {s: 0.0 for s in STRATEGIES}
    worst = 1.0
    print(f"chip {chip.name}; traffic = values routed per step; hops = XY router-to-router links")
    print(f"{'net':<28}{'cores':>6}{'chips':>6}  " + "".join(f"{s + ' t*h':>15}" for s in STRATEGIES)
          + f"{'gain':>7}  {'max link z/l':>14}{'crossings z/l':>16}{'place s':>9}")
    for name, build in NETS.items():
        model, calib = build()
        f = fitted(model, calib, chip)
        n = len(f.pieces)
        grid = near_square(chips_needed(n, chip)[0])
        dag = traffic_graph(f)
        names = ["l"] * n
        m, secs = {}, 0.0
        for s in STRATEGIES:
            t0 = time.perf_counter()
            pos = place(dag, chip, grid, s, names)
            if s == "locality":
                secs = time.perf_counter() - t0
            m[s] = placement_metrics(f.wiring.dag, pos, chip)
            tot[s] += m[s]["traffic_hops"]
        gain = 1 - m["locality"]["traffic_hops"] / m["zigzag"]["traffic_hops"]
        worst = min(worst, gain)
        print(f"{name:<28}{n:>6}{f'{grid[0]}x{grid[1]}':>6}  "
              + "".join(f"{m[s]['traffic_hops']:>15,.0f}" for s in STRATEGIES)
              + f"{gain:>7.0%}  {m['zigzag']['max_link_load']:>7,.0f}/{m['locality']['max_link_load']:<6,.0f}"
              + f"{m['zigzag']['chip_crossings']:>8,.0f}/{m['locality']['chip_crossings']:<7,.0f}{secs:>9.2f}")
    overall = 1 - tot["locality"] / tot["zigzag"]
    print(f"{'all nets':<40}" + "".join(f"{tot[s]:>15,.0f}" for s in STRATEGIES) + f"{overall:>7.0%}")
    if a.chips:
        chips_auto_vs_row(chip)
    if a.fanout:
        fanout()
    if a.check and (overall < 0.30 or worst < 0.15):
        print(f"FAIL: locality beats zigzag by {overall:.0%} overall (>= 30% needed), worst net {worst:.0%}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
