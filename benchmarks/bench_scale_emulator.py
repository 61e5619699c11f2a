"""Memory at scale (project issue 7): a 1M-neuron, 100M-synapse system must emulate within 8 GB.

Builds the core map directly (vectorised, weights int8 from the start; the compiler is not part of this
check): ``--layers`` LIF layers of ``--neurons`` neurons each on the tianjic preset, every neuron with
``--fan-in`` synapses (2-bit weights, as Tianjic allows, so a 256-neuron core with 100 axons fits the 22 KB core), layer 0 fed
by a spike input every step, layer k fed by spikes of layer k - 1 (sources drawn near the same position),
one step phase per layer, on as many tianjic chips as needed.  It then runs ``nmc.emulate`` (design rules,
Numba kernel, NoC, energy and report) for a few steps and prints the peak resident memory of the process
(``resource.getrusage``) after building and after emulating.

Usage: ``python benchmarks/bench_scale_emulator.py [--neurons 250112] [--layers 4] [--fan-in 100] [--steps 4]``
"""
from __future__ import annotations

import argparse
import math
import resource
import time

import numpy as np

import nmc
from nmc.chip import load_chip
from nmc.coremap import CoreMap, widths
from nmc.neurons import MODELS


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2 ** 30  # ru_maxrss: KiB on Linux


def rss_gib() -> float:
    """Resident memory now (Linux ``/proc/self/statm``; 0 elsewhere)."""
    try:
        return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2 ** 30
    except OSError:
        return 0.0


def build(neurons_per_layer: int, layers: int, fan_in: int, n_in: int, n_out: int, seed: int = 0) -> CoreMap:
    chip = load_chip("tianjic")
    rng = np.random.default_rng(seed)
    npc = chip.core.neurons
    cpl = -(-neurons_per_layer // npc)  # cores per layer
    C = cpl * layers
    per_chip = chip.cores_per_chip
    n_chips = -(-C // per_chip)
    chips_x = math.ceil(math.sqrt(n_chips))
    chips_y = -(-n_chips // chips_x)
    W_grid = chips_x * chip.cores_x
    pos = np.arange(C)  # raster order over the global grid (layer after layer)
    Wd = widths()
    lif = MODELS["lif"]
    nn = np.full(C, npc, np.int64)
    last = neurons_per_layer - (cpl - 1) * npc
    nn[cpl - 1::cpl] = last  # the last core of every layer holds the rest
    na = np.full(C, fan_in, np.int64)
    n_off = np.concatenate([[0], np.cumsum(nn)])
    a_off = np.concatenate([[0], np.cumsum(na)])
    w_size = na * nn
    w_off = np.concatenate([[0], np.cumsum(w_size)])
    weights = rng.choice(np.array([-1, 0, 1], np.int8), int(w_off[-1]), p=[0.3, 0.2, 0.5])  # 2-bit ([-1, 1])
    cp = {"threshold": 8, "v_reset": 0, "v_leak": 0, "beta_mult": int(0.9 * (1 << chip.core.beta_shift)),
          "reset_mode": 0, "spike_ge": 1, "reset_delay": 0}
    cparam = np.zeros((C, Wd["P"]), np.int64)
    cparam[:, :len(lif.core_params)] = [cp[p.name] for p in lif.core_params]
    N, A = int(n_off[-1]), int(a_off[-1])
    layer_of_core = np.repeat(np.arange(layers), cpl)
    # routes: axon a of a core of layer k >= 1 <- a neuron of layer k - 1 in a core within +-2 of the same position
    core_of_axon = np.repeat(np.arange(C), na)
    dst = np.flatnonzero(layer_of_core[core_of_axon] >= 1)
    dcore = core_of_axon[dst]
    j = dcore % cpl + rng.integers(-2, 3, dst.size)
    j = np.clip(j, 0, cpl - 1)
    score = (layer_of_core[dcore] - 1) * cpl + j
    src = n_off[score] + rng.integers(0, nn[score])
    order = np.lexsort((dst, dcore, score))
    src, dst = src[order], dst[order]
    scores, dcores = score[order], dcore[order]
    # feeds: layer 0's axons <- elements of the spike input
    f_dst = np.flatnonzero(layer_of_core[core_of_axon] == 0)
    f_elem = rng.integers(0, n_in, f_dst.size)
    # taps: the first n_out neurons of the last layer, every step
    taps = n_off[(layers - 1) * cpl] + np.arange(n_out)
    tap_core = np.repeat(np.arange(C), nn)[taps]
    # router table: per source core, its distinct destination cores ascending, then the host port if tapped
    pair_start = np.flatnonzero(np.r_[True, (scores[1:] != scores[:-1]) | (dcores[1:] != dcores[:-1])])
    e_src, e_dst = scores[pair_start], dcores[pair_start]
    e_roff = pair_start
    host = np.unique(tap_core)
    all_src = np.concatenate([e_src, host])
    all_dst = np.concatenate([e_dst, np.full(host.size, -1)])
    ends = np.searchsorted(scores, host, side="right")  # host entry: no routes, after the core's routes
    all_roff = np.concatenate([e_roff, ends])
    key = np.lexsort((all_dst, all_dst < 0, all_src))  # by source core, the host port last
    all_src, all_dst, all_roff = all_src[key], all_dst[key], all_roff[key]
    rt_off = np.concatenate([[0], np.cumsum(np.bincount(all_src, minlength=C))])
    rt_route_off = np.concatenate([all_roff, [src.size]])
    # route_off[e + 1] must be the end of entry e: starts are ascending, the host entries repeat their core's end
    arrays = {
        "cores.layer": layer_of_core.astype(np.int32), "cores.x": (pos % W_grid).astype(np.int32),
        "cores.y": (pos // W_grid).astype(np.int32), "cores.stage": np.ones(C, np.int8),
        "cores.phase": layer_of_core.astype(np.int32), "cores.dendrite": np.zeros(C, np.int8),
        "cores.spike_in": np.ones(C, np.int8), "cores.model": np.full(C, lif.code, np.int8),
        "cores.out_bits": np.ones(C, np.int8), "cores.w_bits": np.full(C, 2, np.int8),
        "cores.out_lo": np.zeros(C, np.int64), "cores.out_hi": np.ones(C, np.int64), "cores.param": cparam,
        "cores.neuron_off": n_off, "cores.axon_off": a_off, "cores.w_off": w_off,
        "neurons.bias": np.zeros(N, np.int32), "neurons.param": np.zeros((N, Wd["Q"]), np.int32),
        "neurons.state_init": np.zeros((N, Wd["S"]), np.int64), "axons.init": np.zeros(A, np.int16),
        "weights.data": weights, "routes.src": src.astype(np.int32), "routes.dst": dst.astype(np.int32), "routes.delayed": np.zeros(src.size, np.int8),
        "feeds.input": np.zeros(f_dst.size, np.int32), "feeds.elem": f_elem.astype(np.int64), "feeds.dst": f_dst,
        "taps.off": np.array([0, n_out], np.int64), "taps.src": taps.astype(np.int64),
        "router.off": rt_off.astype(np.int64), "router.dst": all_dst.astype(np.int64),
        "router.route_off": rt_route_off.astype(np.int64),
    }
    meta = {
        "model": "scale", "num_steps": 4, "chips": [int(chips_x), int(chips_y)],
        "layers": [{"name": f"L{i}", "op": "nmc::LIF", "stage": "step", "source": f"n{i}", "neurons": neurons_per_layer,
                    "cores": list(range(i * cpl, (i + 1) * cpl)), "split": False, "w_bits": 2, "acc_bound": 0.0,
                    "quant": {}} for i in range(layers)],
        "inputs": [{"name": "spikes", "kind": "step", "shape": [n_in], "scale": 1.0, "lo": 0, "hi": 1}],
        "outputs": [{"name": "out", "stage": "step", "shape": [n_out], "scale": 1.0, "signed": False, "layer": f"L{layers - 1}",
                     "kind": "spike", "final": False}],
        "state_outputs": [], "states": [], "phases": {"static": 0, "step": layers, "readout": 0}, "compile": {},
    }
    return CoreMap.from_arrays(chip, meta, arrays)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--neurons", type=int, default=250_112, help="neurons per layer (977 cores of 256)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--fan-in", type=int, default=100)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--inputs", type=int, default=1000, help="spike input elements")
    ap.add_argument("--rate", type=float, default=0.2, help="input spike probability per element and step")
    args = ap.parse_args()
    t = time.perf_counter()
    cm = build(args.neurons, args.layers, args.fan_in, args.inputs, 1000)
    syn = int(cm.weights.data.size)
    print(f"built {cm.num_neurons:,} neurons, {syn:,} synapses (int8 weights: {cm.weights.data.nbytes / 2 ** 20:.0f} MiB), "
          f"{cm.num_cores} cores on {cm.meta['chips'][0]}x{cm.meta['chips'][1]} tianjic chips in "
          f"{time.perf_counter() - t:.1f} s; RSS {rss_gib():.2f} GiB (peak while building {peak_rss_gib():.2f} GiB)")
    rng = np.random.default_rng(1)
    x = (rng.random((args.steps, 1, args.inputs)) < args.rate).astype(np.float64)
    before = rss_gib()
    t = time.perf_counter()
    res = nmc.emulate(cm, {"spikes": x}, steps=args.steps)
    el = time.perf_counter() - t
    r = res.report
    print(f"emulated {args.steps} steps in {el:.1f} s (incl. design rules, kernel compile or cache load, report): "
          f"sop {r['events']['sop']:,.0f}, spikes {r['events']['spike']:,.0f}, packets {r['events']['packet']:,.0f}; "
          f"latency {r['latency_cycles']:,.0f} cycles, {r['energy_j'] * 1e6:.1f} uJ per task")
    print(f"RSS before emulating {before:.2f} GiB, after {rss_gib():.2f} GiB; peak RSS of the process "
          f"{peak_rss_gib():.2f} GiB (issue 7's limit: 8 GB = 7.45 GiB)")


if __name__ == "__main__":
    main()
