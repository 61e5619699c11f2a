"""Seeded generator of valid random core maps (and matching inputs) for the emulator tests.

Every map is structurally consistent (the checks of ``CoreMap.validate`` except the chip's design
rules, which live in ``nmc.rules``): offsets, weights, unique router positions, one writer per
axon, spike-input cores fed only spikes, dataflow-ordered phases, delayed routes only between step
cores, output taps of every stage, routing tables derived from the routes and taps
(:func:`route_table_arrays`), meta dicts as the ``CoreMap`` docstring describes.

Coverage: ANN cores (mac, requantisation with shift 0 and > 0, rounding half up and floor,
look-up table somas, ReLU / signed / narrow clamps),
LIF cores (all reset modes, spike_ge 0/1, reset_delay 0/1, leaky and non-leaky ``bm``, membranes near
saturation), CubaLIF and LIF-refractory cores (every neuron model of ``nmc.neurons``), count cores, partial cores feeding merge cores, max dendrites, spike-input cores,
delayed (recurrent) routes, static/step/readout stages with several phases, static and step
inputs, multi-chip grids, AER and bitmap spike encodings, 1/2/8-bit weights.
"""
from __future__ import annotations

import numpy as np

from nmc.chip import load_chip
from nmc.coremap import CoreMap, widths
from nmc.neurons import MODELS
from nmc.neurons.lut import pack_table

__all__ = ["random_coremap", "random_inputs", "route_table_arrays", "build_coremap", "SHAPES", "SPIKING", "HAND",
           "hand_chip"]

#: shapes of random maps the tests draw from
SHAPES = ("mixed", "ann", "snn", "multichip", "tiny")

_STAGES = ("static", "step", "readout")
#: every registered spiking neuron model with an integer parameter set (lif, cubalif, lif_refractory, ...)
SPIKING = [m.name for m in MODELS.values() if m.spiking and m.quantize is not None]
#: every model whose output register holds one of its state words (li's membrane, first_spike's time)
WORD_OUT = [m.name for m in MODELS.values() if not m.spiking and m.quantize is not None]


def _draw(rng, p, core) -> int:
    """A value of model parameter ``p`` that is neither always at its limits nor silencing: decay
    multipliers (``*_mult``) anywhere in their range (often exactly 1), others small."""
    lo, hi = p.lo(core), p.hi(core)
    if p.name.endswith("_mult"):
        return hi if rng.random() < 0.3 else int(rng.integers(lo, hi + 1))
    a = max(lo, -3)
    return int(rng.integers(a, min(hi, a + 4) + 1))


def _chip(rng, shape, encoding):
    # drawn from a generator seeded by rng's state without advancing it: the maps drawn after stay as they were
    extra = np.random.default_rng(rng.bit_generator.state["state"]["state"])
    over = {
        "cores_x": int(rng.integers(2, 5)),
        "cores_y": int(rng.integers(2, 4)),
        "core.neurons": 24,
        "core.axons": 40,
        "core.mac_rows": int(rng.choice([1, 3, 16])),
        "core.mac_cols": int(rng.choice([1, 4, 16])),
        "core.soma_lanes": int(rng.choice([1, 5, 16])),
        "core.axon_bandwidth_bytes_per_cycle": int(rng.choice([1, 4, 16])),
        "timing.core_overhead_cycles": int(rng.integers(1, 20)),
        "timing.soma_lif_cycles": int(rng.integers(1, 4)),
        "timing.soma_count_cycles": int(rng.integers(1, 4)),
        "timing.barrier_cycles": int(rng.integers(0, 40)),
        "noc.hop_latency_cycles": int(rng.integers(1, 4)),
        "noc.port_latency_cycles": int(rng.integers(1, 3)),
        "noc.chip_link_latency_cycles": int(rng.integers(5, 30)),
        "noc.io_latency_cycles": int(rng.integers(5, 30)),
        "noc.packet_payload_bytes": int(rng.choice([1, 2, 8])),
        "noc.spike_encoding": encoding or str(rng.choice(["aer", "bitmap"])),
        "core.membrane_bits": int(rng.choice([16, 28])),
        "core.accumulator_bits": int(rng.choice([20, 32])),
        "core.weight_bandwidth_bytes_per_cycle": int(extra.choice([1, 13, 1 << 20])),
        "timing.spike_input_timing": str(extra.choice(["event", "dense"])),
    }
    return load_chip("tianjic", overrides=over)


def random_coremap(seed: int, shape: str = "mixed", *, encoding: str | None = None) -> CoreMap:
    """A valid random core map; ``shape`` is one of :data:`SHAPES`; ``encoding`` forces ``aer``/``bitmap``."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; shapes: {SHAPES}")
    rng = np.random.default_rng(seed)
    chip = _chip(rng, shape, encoding)
    chips = [2, 1] if shape == "multichip" else ([1, 2] if (shape == "mixed" and rng.random() < 0.3) else [1, 1])
    width, height = chip.cores_x * chips[0], chip.cores_y * chips[1]
    core_c = chip.core
    M, Acc, Bs, Q = core_c.membrane_bits, core_c.accumulator_bits, core_c.beta_shift, core_c.requant_mult_bits
    max_n, max_a = core_c.neurons, core_c.axons

    # ---- graph inputs
    inputs = []
    if shape in ("mixed", "ann", "multichip", "tiny") or rng.random() < 0.5:
        lo, hi = [(-128, 127), (0, 255)][int(rng.integers(2))]
        inputs.append({"name": "img", "kind": "static", "shape": [int(rng.integers(3, 12))], "scale": 0.05,
                       "lo": lo, "hi": hi})
    if shape != "ann":
        inputs.append({"name": "spikes", "kind": "step", "shape": [int(rng.integers(3, 16))], "scale": 1.0,
                       "lo": 0, "hi": 1})
        if shape in ("mixed", "multichip") and rng.random() < 0.5:
            inputs.append({"name": "current", "kind": "step", "shape": [2, int(rng.integers(2, 5))], "scale": 0.1,
                           "lo": -128, "hi": 127})

    # ---- stages, phases and cores (kind, stage, phase)
    if shape == "ann":
        n_ph = [int(rng.integers(1, 4)), 0, int(rng.integers(0, 3))]
    elif shape == "snn":
        n_ph = [0, int(rng.integers(1, 4)), int(rng.integers(0, 2))]
    elif shape == "tiny":
        n_ph = [int(rng.integers(0, 2)), 1, int(rng.integers(0, 2))]
    else:
        n_ph = [int(rng.integers(0, 3)), int(rng.integers(1, 4)), int(rng.integers(0, 3))]
    kinds_by_stage = {0: ["ann", "ann", "partial", "ann_max", "lif", "lut"],
                      1: ["lif", "lif", "ann", "count", "partial", "ann_max", "lut", *SPIKING, *WORD_OUT],
                      2: ["ann", "count", "partial", "ann_max", "lut"]}
    if shape == "snn":
        kinds_by_stage[1] = ["lif", "lif", "count", *SPIKING, *WORD_OUT]
    cores = []  # dicts
    max_cores = width * height
    for s in range(3):
        for p in range(n_ph[s]):
            for _ in range(int(rng.integers(1, 4 if shape != "tiny" else 2))):
                if len(cores) >= max_cores:
                    break
                kind = str(rng.choice(kinds_by_stage[s]))
                cores.append({"kind": kind, "stage": s, "phase": p})
    if not cores:
        cores.append({"kind": "lif", "stage": 1, "phase": 0})
        n_ph[1] = max(n_ph[1], 1)
    C = len(cores)
    positions = rng.permutation(width * height)[:C]

    # ---- per-core parameters
    for i, cd in enumerate(cores):
        kind = cd["kind"]
        cd["x"], cd["y"] = int(positions[i] % width), int(positions[i] // width)
        cd["n_n"] = int(rng.integers(1, max_n + 1)) if shape != "tiny" else int(rng.integers(1, 5))
        cd["dend"] = 1 if kind == "ann_max" else 0
        cd["model"] = MODELS["ann" if kind == "ann_max" else kind].code
        lo_a, hi_a = -(1 << (Acc - 1)), (1 << (Acc - 1)) - 1
        if kind in ("ann", "ann_max", "lut"):
            if rng.random() < 0.15:
                cd["bits"], cd["lo"], cd["hi"] = 1, 0, 1  # an ANN layer that emits spikes
            else:
                cd["bits"] = 8
                cd["lo"], cd["hi"] = [(-128, 127), (0, 255), (0, 127), (-4, 9)][int(rng.integers(4))]
        elif kind in SPIKING:
            cd["bits"], cd["lo"], cd["hi"] = 1, 0, 1
        elif kind in WORD_OUT:
            cd["bits"], cd["lo"], cd["hi"] = 32, -(1 << (M - 1)), (1 << (M - 1)) - 1
        elif kind == "partial":
            cd["bits"], cd["lo"], cd["hi"] = 32, lo_a, hi_a
        else:  # count
            cd["bits"], (cd["lo"], cd["hi"]) = (8, [(0, 255), (0, 3)][int(rng.integers(2))]) if rng.random() < 0.7 \
                else (32, (lo_a, hi_a))
        cd["w_bits"] = 1 if kind == "ann_max" else int(rng.choice([8, 8, 2, 1]))

    # ---- sources: who may write an axon of core i
    spike_input_elems = [(k, e) for k, inp in enumerate(inputs) if inp["lo"] == 0 and inp["hi"] == 1
                         for e in range(int(np.prod(inp["shape"])))]
    n_off = np.concatenate([[0], np.cumsum([cd["n_n"] for cd in cores])]).astype(np.int64)

    def earlier(i, j):
        return cores[j]["stage"] < cores[i]["stage"] or (
            cores[j]["stage"] == cores[i]["stage"] and cores[j]["phase"] < cores[i]["phase"])

    weights, routes, feeds, axon_init = [], [], [], []
    a_off = [0]
    for i, cd in enumerate(cores):
        s = cd["stage"]
        src_cores = [j for j in range(C) if earlier(i, j)]
        dly_cores = [j for j in range(C) if s == 1 and cores[j]["stage"] == 1] if shape != "ann" else []
        in_elems = [(k, e) for k, inp in enumerate(inputs)
                    if inp["kind"] == "static" or (inp["kind"] == "step" and s >= 1)
                    for e in range(int(np.prod(inp["shape"])))]
        spike_src = [j for j in src_cores if cores[j]["bits"] == 1]
        spike_dly = [j for j in dly_cores if cores[j]["bits"] == 1]
        spike_in_ok = (spike_src or spike_dly or [x for x in spike_input_elems if x in in_elems])
        spiking = cd["kind"] in (*SPIKING, *WORD_OUT, "count")
        cd["spike_in"] = int(bool(spike_in_ok) and rng.random() < (0.8 if spiking else 0.3))
        if cd["spike_in"]:
            src_cores, dly_cores = spike_src, spike_dly
            in_elems = [x for x in in_elems if x in spike_input_elems]
        # prefer partial sources for a merge (a core after a partial core)
        partial_src = [j for j in src_cores if cores[j]["kind"] == "partial"]
        n_a = int(rng.integers(0 if cd["dend"] == 0 else 1, max_a + 1)) if shape != "tiny" else int(rng.integers(1, 6))
        for ax in range(n_a):
            gi = a_off[-1] + ax
            u = rng.random()
            init = int(rng.integers(0, 2)) if cd["spike_in"] else int(rng.integers(-5, 6))
            if u < 0.12:
                pass  # no writer: the axon keeps axon_init
            elif u < 0.3 and dly_cores:
                j = int(rng.choice(dly_cores))
                routes.append((int(n_off[j] + rng.integers(cores[j]["n_n"])), gi, 1))
            elif u < 0.55 and in_elems:
                k, e = in_elems[int(rng.integers(len(in_elems)))]
                feeds.append((k, e, gi))
            elif src_cores:
                pool = partial_src if (partial_src and rng.random() < 0.6) else src_cores
                j = int(rng.choice(pool))
                routes.append((int(n_off[j] + rng.integers(cores[j]["n_n"])), gi, 0))
            elif in_elems:
                k, e = in_elems[int(rng.integers(len(in_elems)))]
                feeds.append((k, e, gi))
            axon_init.append(init)
        a_off.append(a_off[-1] + n_a)
        cd["n_a"] = n_a
        n_n = cd["n_n"]
        if cd["dend"] == 1:
            w = (rng.random((n_a, n_n)) < 0.4).astype(np.int8)
            w[rng.integers(n_a, size=n_n), np.arange(n_n)] = 1
        elif cd["w_bits"] == 1:
            w = rng.integers(0, 2, (n_a, n_n)).astype(np.int8)
        elif cd["w_bits"] == 2:
            w = rng.integers(-1, 2, (n_a, n_n)).astype(np.int8)
        elif spiking and rng.random() < 0.7:
            w = rng.integers(-20, 60, (n_a, n_n)).astype(np.int8)
        else:
            w = rng.integers(-128, 128, (n_a, n_n)).astype(np.int8)
        if cd["kind"] == "partial" and rng.random() < 0.2:
            w[:] = 127  # large partial sums: exercise sat_A on narrow accumulators
        weights.append(w.reshape(-1))

    # ---- neuron parameters and state, by neuron model
    bias, nparam, state = [], [], []
    mem_hi = (1 << (M - 1)) - 1
    for cd in cores:
        n = cd["n_n"]
        kind = cd["kind"]
        b = rng.integers(-300, 300, n)
        if kind == "partial":
            b[:] = 0
        bias.append(b)
        mult = rng.integers(0, 1 << Q, n) if rng.random() < 0.5 else rng.integers(0, 300, n)
        sh = rng.integers(1, 24, n)
        if rng.random() < 0.3:
            sh[:] = 0
        elif rng.random() < 0.5:
            sh[rng.random(n) < 0.3] = 0
        nparam.append(np.stack([mult, sh], axis=1) if kind in ("ann", "ann_max", "lut") else np.zeros((n, 0), np.int64))
        thr, vr, vl = int(rng.integers(1, 400)), int(rng.integers(-30, 30)), int(rng.integers(-20, 20))
        bm = (1 << Bs) if rng.random() < 0.4 else int(rng.integers(0, 1 << Bs))
        mode, ge, rd = int(rng.integers(0, 3)), int(rng.integers(0, 2)), int(rng.integers(0, 2))

        def membrane():
            if rng.random() < 0.2:  # near the membrane's saturation
                return np.clip(mem_hi - rng.integers(1, 200, n) * rng.choice([1, -1], n), -mem_hi - 1, mem_hi)
            return rng.integers(-50, 50, n)

        if kind in SPIKING or kind in WORD_OUT:  # a model's declared parameters, drawn by what they are
            drawn = dict(threshold=thr, v_reset=vr, v_leak=vl, beta_mult=bm, reset_mode=mode, spike_ge=ge,
                         reset_delay=rd)
            m = MODELS[kind]
            cd["cparam"] = [drawn[p.name] if p.name in drawn else _draw(rng, p, core_c) for p in m.core_params]
            if m.neuron_params:  # per-neuron parameters (LIFT): around the core's draw, different per neuron
                per = dict(threshold=rng.integers(1, 400, n), v_reset=rng.integers(-30, 30, n),
                           v_leak=rng.integers(-20, 20, n),
                           beta_mult=np.where(rng.random(n) < 0.4, 1 << Bs, rng.integers(0, 1 << Bs, n)))
                nparam[-1] = np.stack([per[p.name] if p.name in per else
                                       np.array([_draw(rng, p, core_c) for _ in range(n)]) for p in m.neuron_params],
                                      axis=1).astype(np.int64)
            st = [membrane() if w.scaled else rng.integers(-1, 3, n) for w in m.state]
        elif kind == "count":
            cd["cparam"] = []
            st = [rng.integers(cd["lo"], min(cd["hi"], cd["lo"] + 3) + 1, n)]
        elif kind in ("ann", "ann_max"):
            cd["cparam"] = [int(rng.integers(0, 2))]  # the requantiser rounds half up or floors
            st = []
        elif kind == "lut":  # floor flag, the chip's index width, a random table in int8 / uint8
            ib = core_c.lut_index_bits
            table = pack_table(rng.integers(0, 256, 1 << ib))
            cd["cparam"] = [int(rng.integers(0, 2)), ib, *table.tolist()]
            st = []
        else:
            cd["cparam"] = []
            st = []
        state.append(np.stack(st, axis=1) if st else np.zeros((n, 0), np.int64))

    # ---- outputs: taps of every stage that has cores
    outputs, out_src = [], []
    for s in range(3):
        cs = [i for i in range(C) if cores[i]["stage"] == s]
        for q in range(int(rng.integers(1, 3)) if cs else 0):
            if q > 0 and rng.random() < 0.5:
                continue
            i = int(rng.choice(cs))
            n = cores[i]["n_n"]
            k = int(rng.integers(1, n + 1))
            sel = rng.choice(n, size=k, replace=False)
            if rng.random() < 0.3 and len(cs) > 1:  # an output spread over two cores
                i2 = int(rng.choice(cs))
                sel2 = rng.choice(cores[i2]["n_n"], size=1)
                src = np.concatenate([n_off[i] + sel, n_off[i2] + sel2])
            else:
                src = n_off[i] + sel
            out_src.append(src.astype(np.int64))
            outputs.append({"name": f"{_STAGES[s]}_out{q}", "stage": _STAGES[s], "shape": [int(len(src))],
                            "scale": 1.0, "signed": bool(cores[i]["lo"] < 0), "layer": f"L{i}", "kind": "value",
                            "final": False})

    # ---- tables
    acore = np.repeat(np.arange(C), np.diff(a_off))
    ncore = np.repeat(np.arange(C), np.diff(n_off))
    routes.sort(key=lambda r: (ncore[r[0]], acore[r[1]], r[1]))  # as the format requires
    layers = [{"name": f"L{i}", "op": cd["kind"], "stage": _STAGES[cd["stage"]], "source": f"node{i}",
               "neurons": cd["n_n"], "cores": [i], "split": False, "w_bits": int(cd["w_bits"]), "acc_bound": 0.0,
               "quant": {}} for i, cd in enumerate(cores)]
    meta = {
        "model": f"random-{shape}-{seed}",
        "num_steps": int(rng.integers(2, 6)),
        "chips": chips,
        "layers": layers,
        "inputs": inputs,
        "outputs": outputs,
        "state_outputs": [],
        "states": [],
        "phases": {_STAGES[s]: int(len({cd["phase"] for cd in cores if cd["stage"] == s})) for s in range(3)},
        "compile": {"generator": "tests/randmaps.py", "seed": seed},
    }
    return assemble(chip, meta, cores, weights, bias, nparam, state, axon_init, routes, feeds, out_src)


def assemble(chip, meta, cores, weights, bias, nparam, state, axon_init, routes, feeds, out_src) -> CoreMap:
    """The core map of per-core dicts (``x``, ``y``, ``stage``, ``phase``, ``dend``, ``spike_in``, ``model``,
    ``bits``, ``w_bits``, ``lo``, ``hi``, ``n_n``, ``n_a``, ``cparam``) and per-core weight/bias/parameter/state blocks;
    ``routes`` (global neuron, global axon, delayed) sorted by (source core, destination core); ``feeds``
    (input, element, global axon); ``out_src`` one array of global neurons per output.  Routing tables
    come from :func:`route_table_arrays`."""
    W = widths()
    C = len(cores)
    n_off = np.concatenate([[0], np.cumsum([cd["n_n"] for cd in cores])]).astype(np.int64)
    a_off = np.concatenate([[0], np.cumsum([cd["n_a"] for cd in cores])]).astype(np.int64)

    def col(key, dt):
        return np.array([cd[key] for cd in cores], dtype=dt)

    def widen(blocks, width):
        out = [np.concatenate([np.asarray(b, np.int64).reshape(len(b), -1),
                               np.zeros((len(b), width - np.asarray(b).reshape(len(b), -1).shape[1]), np.int64)], axis=1)
               for b in blocks]
        return np.concatenate(out).astype(np.int64) if out else np.zeros((0, width), np.int64)

    cparam = np.zeros((C, W["P"]), np.int64)
    for i, cd in enumerate(cores):
        cparam[i, :len(cd["cparam"])] = cd["cparam"]
    arrays = {
        "cores.layer": np.arange(C, dtype=np.int32), "cores.x": col("x", np.int32), "cores.y": col("y", np.int32),
        "cores.stage": col("stage", np.int8), "cores.phase": col("phase", np.int32),
        "cores.dendrite": col("dend", np.int8), "cores.spike_in": col("spike_in", np.int8),
        "cores.model": col("model", np.int8), "cores.out_bits": col("bits", np.int8),
        "cores.w_bits": col("w_bits", np.int8), "cores.out_lo": col("lo", np.int64), "cores.out_hi": col("hi", np.int64),
        "cores.param": cparam, "cores.neuron_off": n_off, "cores.axon_off": a_off,
        "cores.w_off": np.concatenate([[0], np.cumsum([w.size for w in weights])]).astype(np.int64),
        "neurons.bias": np.concatenate(bias).astype(np.int32) if bias else np.zeros(0, np.int32),
        "neurons.param": widen(nparam, W["Q"]).astype(np.int32), "neurons.state_init": widen(state, W["S"]),
        "axons.init": np.array(axon_init, np.int16),
        "weights.data": (np.concatenate(weights) if weights else np.zeros(0)).astype(np.int8),
        "routes.src": np.array([r[0] for r in routes], np.int32),
        "routes.dst": np.array([r[1] for r in routes], np.int32),
        "routes.delayed": np.array([r[2] for r in routes], np.int8),
        "feeds.input": np.array([f[0] for f in feeds], np.int32), "feeds.elem": np.array([f[1] for f in feeds], np.int64),
        "feeds.dst": np.array([f[2] for f in feeds], np.int64),
        "taps.off": np.concatenate([[0], np.cumsum([len(t) for t in out_src])]).astype(np.int64),
        "taps.src": (np.concatenate(out_src) if out_src else np.zeros(0)).astype(np.int64),
    }
    arrays.update({f"router.{k}": v for k, v in route_table_arrays(arrays).items()})
    return CoreMap.from_arrays(chip, meta, arrays)


def route_table_arrays(arr: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The router table (``off``, ``dst``, ``route_off``) that ``arr``'s (``"<table>.<column>"``) routes and output taps
    imply, derived entry by entry: a core's entries are the distinct destination cores of its routes,
    ascending, each with the range of its routes, then -1 (host port, no routes) if it holds an output tap.
    Routes must be sorted by (source core, destination core).  Written independently of the mapper's
    ``route_table`` so each checks the other."""
    n_off, a_off = np.asarray(arr["cores.neuron_off"]), np.asarray(arr["cores.axon_off"])
    C = len(n_off) - 1
    ncore = np.repeat(np.arange(C), np.diff(n_off))
    acore = np.repeat(np.arange(C), np.diff(a_off))
    src = [int(ncore[s]) for s in np.asarray(arr["routes.src"], np.int64)]
    dst = [int(acore[d]) for d in np.asarray(arr["routes.dst"], np.int64)]
    tapped = {int(ncore[s]) for s in np.asarray(arr["taps.src"], np.int64)}
    rt_off, rt_dst, rt_route_off = [0], [], [0]
    r = 0
    for c in range(C):
        while r < len(src) and src[r] == c:
            d = dst[r]
            while r < len(src) and src[r] == c and dst[r] == d:
                r += 1
            rt_dst.append(d)
            rt_route_off.append(r)
        if c in tapped:
            rt_dst.append(-1)
            rt_route_off.append(r)
        rt_off.append(len(rt_dst))
    assert r == len(src), "routes are not sorted by source core"
    return {"off": np.array(rt_off, np.int64), "dst": np.array(rt_dst, np.int64),
            "route_off": np.array(rt_route_off, np.int64)}


def random_inputs(cm: CoreMap, batch: int, steps: int, seed: int = 0):
    """Random quantised inputs within every input's ``[lo, hi]``: ``(static_inputs, step_inputs)``."""
    rng = np.random.default_rng(seed)
    static, step = {}, {}
    for k, inp in enumerate(cm.meta["inputs"]):
        n = int(np.prod(inp["shape"]))
        lo, hi = inp["lo"], inp["hi"]
        if inp["kind"] == "static":
            static[k] = rng.integers(lo, hi + 1, (batch, n)).astype(np.int64)
        elif inp["kind"] == "step":
            if lo == 0 and hi == 1:
                step[k] = (rng.random((batch, steps, n)) < rng.uniform(0.1, 0.7)).astype(np.int64)
            else:
                step[k] = rng.integers(lo, hi + 1, (batch, steps, n)).astype(np.int64)
    return static, step


# --------------------------------------------------------------------------- hand-built maps
#: the chip numbers hand-derived expectations use (tests/emulator), pinned so that a re-tuned preset cannot break them
HAND = {"timing.core_overhead_cycles": 16, "core.axon_bandwidth_bytes_per_cycle": 16, "core.mac_rows": 16,
        "core.weight_bandwidth_bytes_per_cycle": 1 << 20, "timing.spike_input_timing": "event",
        "core.mac_cols": 16, "core.soma_lanes": 16, "timing.soma_ann_cycles": 1, "timing.soma_lif_cycles": 2,
        "timing.barrier_cycles": 32, "noc.port_latency_cycles": 1, "noc.hop_latency_cycles": 2,
        "noc.io_latency_cycles": 40, "noc.packet_payload_bytes": 8, "core.membrane_bits": 28, "core.beta_shift": 8,
        "core.accumulator_bits": 32, "noc.spike_encoding": "aer", "cores_x": 12, "cores_y": 13, "clock_hz": 300e6,
        "energy.mac_pj": 1.2, "energy.sop_pj": 1.2, "energy.neuron_update_pj": 1.0, "energy.spike_pj": 0.5,
        "energy.sram_read_byte_pj": 0.01, "energy.sram_write_byte_pj": 0.02, "energy.packet_pj": 2.0,
        "energy.hop_pj": 1.0, "energy.chip_crossing_pj": 30.0, "energy.static_power_per_core_w": 1.0e-4,
        "core.requant_mode": "round", "energy.lut_read_pj": 0.01}


def hand_chip(**extra):
    """The tianjic preset with :data:`HAND` (and ``extra``) pinned."""
    return load_chip("tianjic", overrides={**HAND, **extra})


_CORE_DEFAULTS = dict(stage=1, phase=0, dend=0, spike_in=0, model="ann", bits=8, w_bits=8, lo=-128, hi=127,
                      cparam=None)


def build_coremap(chip, cores, *, inputs=(), feeds=(), routes=(), outputs=(), chips=(1, 1), num_steps=1):
    """A core map from plain descriptions (for hand-derived tests and benchmarks).

    ``cores``: dicts with ``W`` ([n_a, n_n] int weights), ``x``, ``y`` and optionally ``stage`` (0/1/2),
    ``phase``, ``dend``, ``spike_in``, ``model`` (neuron model name), ``bits``, ``w_bits``, ``lo``, ``hi``,
    ``cparam`` (the model's core parameters by name, e.g. ``{"threshold": 3, ...}``; ``beta_mult`` defaults to
    ``2**beta_shift``, others to 0), ``bias``, ``mult``, ``shift`` (scalars or [n_n]), ``state`` ([n_n, words]
    or a scalar for every word) and ``axon_init`` (scalar or [n_a]).
    ``feeds``: (input index, element, core, axon within the core).
    ``routes``: (source core, neuron within it, destination core, axon within it, delayed).
    ``outputs``: (name, stage name, [(core, neuron within it), ...]).
    """
    cds = [{**_CORE_DEFAULTS, **cd} for cd in cores]
    weights, bias, nparam, state, axon_init = [], [], [], [], []
    for cd in cds:
        m = MODELS[cd["model"]]
        W = np.asarray(cd["W"], dtype=np.int64)
        cd["n_a"], cd["n_n"] = W.shape
        n = cd["n_n"]
        given = {"beta_mult": 1 << chip.core.beta_shift, **(cd["cparam"] or {})}
        cd["cparam"] = [int(given.get(p.name, 0)) for p in m.core_params]
        cd["model"] = m.code
        weights.append(W.reshape(-1))
        bias.append(np.broadcast_to(np.asarray(cd.get("bias", 0)), (n,)))
        nparam.append(np.stack([np.broadcast_to(np.asarray(cd.get("mult", 1)), (n,)),
                                np.broadcast_to(np.asarray(cd.get("shift", 0)), (n,))], axis=1)
                      if m.name == "ann" else np.zeros((n, 0), np.int64))
        state.append(np.broadcast_to(np.asarray(cd.get("state", 0)), (n, len(m.state))))
        axon_init.extend(np.broadcast_to(np.asarray(cd.get("axon_init", 0)), (cd["n_a"],)).tolist())
    n_off = np.concatenate([[0], np.cumsum([cd["n_n"] for cd in cds])]).astype(np.int64)
    a_off = np.concatenate([[0], np.cumsum([cd["n_a"] for cd in cds])]).astype(np.int64)
    routes = sorted(((int(n_off[r[0]] + r[1]), int(a_off[r[2]] + r[3]), r[4]) for r in routes),
                    key=lambda r: (np.searchsorted(n_off, r[0], "right"), np.searchsorted(a_off, r[1], "right"), r[1]))
    feeds = [(f[0], f[1], int(a_off[f[2]] + f[3])) for f in feeds]
    out_src = [np.array([n_off[c] + j for c, j in o[2]], np.int64) for o in outputs]
    meta = {
        "model": "hand", "num_steps": num_steps, "chips": list(chips),
        "layers": [{"name": f"L{i}", "op": "hand", "stage": _STAGES[cd["stage"]], "source": f"n{i}",
                    "neurons": cd["n_n"], "cores": [i], "split": False, "w_bits": int(cd["w_bits"]), "acc_bound": 0.0,
                    "quant": {}} for i, cd in enumerate(cds)],
        "inputs": [dict(inp) for inp in inputs],
        "outputs": [{"name": o[0], "stage": o[1], "shape": [len(o[2])], "scale": 1.0, "signed": True, "layer": "L0",
                     "kind": "value", "final": False} for o in outputs],
        "state_outputs": [],
        "states": [],
        "phases": {_STAGES[s]: len({cd["phase"] for cd in cds if cd["stage"] == s}) for s in range(3)},
        "compile": {},
    }
    return assemble(chip, meta, cds, weights, bias, nparam, state, axon_init, routes, feeds, out_src)
