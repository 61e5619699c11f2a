"""Emulator tests: Numba == reference bit for bit on random maps, and hand-derived expectations.

Hand numbers use the tianjic preset with the values of ``randmaps.HAND`` pinned: overhead 16, axon 16 B/cycle,
MAC 16 x 16, weight reads unbounded (1 MiB/cycle), event-driven spike timing, 16 soma lanes,
soma ann/lif 1/2 cycles, barrier 32, port 1, hop 2, I/O 40, payload 8 B,
membrane 28 bits, beta shift 8.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import nmc
import nmc.emulator.kernels as kernels
import nmc.emulator.noc as noc
import nmc.emulator.reference as reference
from nmc.emulator import EVENT_KINDS, RawResult, price, run_numba, run_reference, static_energy
from nmc.errors import CoreMapError, InputError
from nmc.neurons import MODELS
from nmc.neurons.lif import LIF
from randmaps import SHAPES, build_coremap, hand_chip, random_coremap, random_inputs

EV = {k: i for i, k in enumerate(EVENT_KINDS)}


@pytest.fixture(scope="module")
def chip():
    return hand_chip()


def run_both(cm, static, step, steps, **kw) -> RawResult:
    ref = run_reference(cm, static, step, steps, **kw)
    nb = run_numba(cm, static, step, steps, **kw)
    assert ref.differences(nb) == []
    return ref


# --------------------------------------------------------------------------- Numba == reference
@pytest.mark.parametrize("seed", range(30))
def test_numba_equals_reference_random(seed):
    shape = SHAPES[seed % len(SHAPES)]
    cm = random_coremap(seed, shape)
    T = cm.meta["num_steps"]
    static, step = random_inputs(cm, batch=3, steps=T, seed=seed)
    r = run_both(cm, static, step, T)
    assert r.events.shape == (3, cm.num_cores, len(EVENT_KINDS))
    assert (r.core_cycles > 0).all()  # every core runs at least once


@pytest.mark.parametrize("seed", range(4))
def test_random_bitmap_and_aer(seed):
    for enc in ("aer", "bitmap"):
        cm = random_coremap(100 + seed, "multichip", encoding=enc)
        static, step = random_inputs(cm, 2, 3, seed)
        run_both(cm, static, step, 3)


def test_random_maps_are_active():
    """The random maps do exercise spikes, packets, chip crossings, saturation and every soma."""
    tot = np.zeros(len(EVENT_KINDS), np.int64)
    somas, resets = set(), set()
    for seed in range(20):
        cm = random_coremap(seed, SHAPES[seed % len(SHAPES)])
        T = cm.meta["num_steps"]
        static, step = random_inputs(cm, 1, T, seed)
        tot += run_reference(cm, static, step, T).events.sum((0, 1))
        somas |= set(cm.cores.model.tolist())
        resets |= set(cm.cores.param[cm.cores.model == LIF.code, LIF.param_index("reset_mode")].tolist())
    assert (tot > 0).all(), dict(zip(EVENT_KINDS, tot))
    assert somas == {m.code for m in MODELS.values()} and resets == {0, 1, 2}


def test_generator_coverage():
    seen = {k: set() for k in ("dend", "spike_in", "bits", "w_bits", "ge", "rd", "shift0", "leaky", "delayed",
                               "stage", "enc", "chips", "in_kind", "out_stage", "phases>1")}
    for seed in range(25):
        cm = random_coremap(seed, SHAPES[seed % len(SHAPES)])
        lif = cm.cores.model == LIF.code
        par = cm.cores.param[lif]
        seen["dend"] |= set(cm.cores.dendrite.tolist())
        seen["spike_in"] |= set(cm.cores.spike_in.tolist())
        seen["bits"] |= set(cm.cores.out_bits.tolist())
        seen["w_bits"] |= set(cm.cores.w_bits.tolist())
        seen["ge"] |= set(par[:, LIF.param_index("spike_ge")].tolist())
        seen["rd"] |= set(par[:, LIF.param_index("reset_delay")].tolist())
        seen["leaky"] |= set((par[:, LIF.param_index("beta_mult")] == 1 << cm.chip.core.beta_shift).tolist())
        ann = np.repeat(cm.cores.model == MODELS["ann"].code, np.diff(cm.cores.neuron_off))
        seen["shift0"] |= set((cm.neurons.param[ann, 1] == 0).tolist())
        seen["delayed"] |= set(cm.routes.delayed.tolist())
        seen["stage"] |= set(cm.cores.stage.tolist())
        seen["enc"].add(cm.chip.noc.spike_encoding)
        seen["chips"].add(tuple(cm.meta["chips"]))
        seen["in_kind"] |= {i["kind"] for i in cm.meta["inputs"]}
        seen["out_stage"] |= {o["stage"] for o in cm.meta["outputs"]}
        seen["phases>1"] |= {n > 1 for n in cm.meta["phases"].values()}
    assert seen["dend"] == {0, 1} and seen["spike_in"] == {0, 1} and seen["bits"] == {1, 8, 32}
    assert seen["w_bits"] == {1, 2, 8} and seen["ge"] == {0, 1} and seen["rd"] == {0, 1}
    assert seen["shift0"] == {True, False} and seen["leaky"] == {True, False} and seen["delayed"] == {0, 1}
    assert seen["stage"] == {0, 1, 2} and seen["enc"] == {"aer", "bitmap"} and (2, 1) in seen["chips"]
    assert seen["in_kind"] == {"static", "step"} and seen["out_stage"] == {"static", "step", "readout"}
    assert True in seen["phases>1"]


def test_samples_are_independent():
    cm = random_coremap(7, "mixed")
    T = cm.meta["num_steps"]
    static, step = random_inputs(cm, 3, T, 1)
    both = run_numba(cm, static, step, T)
    for b in range(3):
        one = run_numba(cm, {k: v[b:b + 1] for k, v in static.items()}, {k: v[b:b + 1] for k, v in step.items()}, T)
        assert np.array_equal(one.state_final[0], both.state_final[b])
        assert np.array_equal(one.events[0], both.events[b])
        assert one.latency_cycles[0] == both.latency_cycles[b]


def test_comparison_can_fail():
    cm = random_coremap(3, "snn")
    T = cm.meta["num_steps"]
    static, step = random_inputs(cm, 2, T, 3)
    r = run_numba(cm, static, step, T)
    halved = cm.replace(cores=dataclasses.replace(cm.cores, param=cm.cores.param // 2))  # a different network
    r2 = run_numba(halved, static, step, T)
    assert r.differences(r2)


def test_each_backend_name_runs_its_own_emulator(chip, monkeypatch):
    """``nmc.emulate(backend=...)`` runs the emulator it names: were both names bound to one runner, every
    Numba == reference comparison made through ``nmc.emulate`` would compare a backend with itself."""
    ran = []
    numba_kernel, heap = kernels._run, reference.simulate_heap

    def kernel(*args):  # the Numba kernel, called by run_numba only
        ran.append("numba")
        return numba_kernel(*args)

    def simulate(*args):  # the Python NoC model, called by run_reference only
        ran.append("reference")
        return heap(*args)

    monkeypatch.setattr(kernels, "_run", kernel)
    monkeypatch.setattr(reference, "simulate_heap", simulate)
    cm = _if_map(chip)
    x = {"s": np.ones((2, 1, 1))}
    for name in ("numba", "reference"):
        ran.clear()
        nmc.emulate(cm, x, backend=name)
        assert ran and set(ran) == {name}, (name, ran)


# --------------------------------------------------------------------------- LIF impulse responses
def _if_map(chip, *, thr=3, mode=0, ge=1, rd=0, vr=0, vl=0, bm=None, w=1, v_init=0):
    cparam = dict(threshold=thr, reset_mode=mode, spike_ge=ge, reset_delay=rd, v_reset=vr, v_leak=vl)
    if bm is not None:
        cparam["beta_mult"] = bm
    core = dict(W=[[w]], x=0, y=0, stage=1, model="lif", bits=1, lo=0, hi=1, spike_in=1, cparam=cparam, state=v_init)
    return build_coremap(chip, [core], inputs=[{"name": "s", "kind": "step", "shape": [1], "scale": 1.0, "lo": 0,
                                                "hi": 1}],
                         feeds=[(0, 0, 0, 0)], outputs=[("spk", "step", [(0, 0)])])


def _membrane_trace(cm, x):
    """Spikes of the run and membrane after each step (runs of 1..T steps)."""
    x = np.asarray(x, np.int64)
    T = len(x)
    full = run_both(cm, {}, {0: x.reshape(1, T, 1)}, T)
    vs = [int(run_both(cm, {}, {0: x[:t].reshape(1, t, 1)}, t).state_final[0, 0, 0]) for t in range(1, T + 1)]
    return full.outputs["spk"][0, :, 0].tolist(), vs


@pytest.mark.parametrize("mode, ge, rd, vr, spikes, v", [
    (0, 1, 0, 0, [0, 0, 1, 0], [1, 2, 0, 1]),     # subtract, fire on >= 3 at the third input
    (1, 1, 0, -1, [0, 0, 1, 0], [1, 2, -1, 0]),   # zero (to v_reset)
    (2, 1, 0, 0, [0, 0, 1, 1], [1, 2, 3, 4]),     # none: keeps firing
    (0, 0, 0, 0, [0, 0, 0, 1], [1, 2, 3, 1]),     # fire on > 3 only
    (0, 1, 1, 0, [0, 0, 1, 0], [1, 2, 3, 1]),     # delayed reset: subtracted one step later
    (1, 1, 1, -1, [0, 0, 1, 0], [1, 2, 3, -1]),
    (2, 1, 1, 0, [0, 0, 1, 1], [1, 2, 3, 4]),
])
def test_if_impulse_response(chip, mode, ge, rd, vr, spikes, v):
    cm = _if_map(chip, thr=3, mode=mode, ge=ge, rd=rd, vr=vr)
    assert _membrane_trace(cm, [1, 1, 1, 1]) == (spikes, v)


def test_leak_floors_towards_v_leak(chip):
    # beta = 128 / 256: floor((v - vl) / 2) + vl
    cm = _if_map(chip, thr=1000, bm=128, v_init=-5)
    assert _membrane_trace(cm, [0, 0, 0, 0])[1] == [-3, -2, -1, -1]
    cm = _if_map(chip, thr=1000, bm=128, vl=10)
    assert _membrane_trace(cm, [0, 0, 0, 0])[1] == [5, 7, 8, 9]
    cm = _if_map(chip, thr=1000, bm=128, w=8)
    assert _membrane_trace(cm, [1, 1, 1, 1])[1] == [8, 12, 14, 15]


def test_membrane_saturates(chip):
    top = (1 << (chip.core.membrane_bits - 1)) - 1
    cm = _if_map(chip, thr=top, ge=0, w=5, v_init=top - 1)
    assert _membrane_trace(cm, [1, 1, 1]) == ([0, 0, 0], [top, top, top])
    cm = _if_map(chip, thr=1, ge=0, mode=2, w=-100, v_init=-top)
    assert _membrane_trace(cm, [1, 1])[1] == [-top - 1, -top - 1]


# --------------------------------------------------------------------------- ANN, count, max
def _static_identity(chip, x, *, mult, shift, bias=0, lo=-128, hi=127):
    n = len(x)
    cm = build_coremap(chip, [dict(W=np.eye(n, dtype=int), x=0, y=0, stage=0, bits=8, lo=lo, hi=hi,
                                   mult=mult, shift=shift, bias=bias)],
                       inputs=[{"name": "x", "kind": "static", "shape": [n], "scale": 1.0, "lo": -128, "hi": 127}],
                       feeds=[(0, i, 0, i) for i in range(n)], outputs=[("y", "static", [(0, i) for i in range(n)])])
    return run_both(cm, {0: np.array([x])}, {}, 0).outputs["y"][0].tolist()


def test_requant_round_half_up(chip):
    #       x    m  s   exact       -> y
    cases = [(3, 1, 1),   # 1.5      -> 2
             (-3, 1, 1),  # -1.5     -> -1 (half up, not away from zero)
             (5, 1, 1),   # 2.5      -> 3
             (-5, 1, 1),  # -2.5     -> -2
             (1, 1, 1),   # 0.5      -> 1
             (-1, 1, 1),  # -0.5     -> 0
             (-4, 1, 1),  # -2       -> -2
             (2, 3, 2),   # 1.5      -> 2
             (-2, 3, 2),  # -1.5     -> -1
             (7, 5, 3),   # 4.375    -> 4
             (-7, 5, 3),  # -4.375   -> -4
             (100, 3, 0),  # 300     -> 127 (clamp)
             (-100, 3, 0)]  # -300   -> -128
    x, m, s = (np.array(c) for c in zip(*cases))
    assert _static_identity(chip, x, mult=m, shift=s) == [2, -1, 3, -2, 1, 0, -2, 2, -1, 4, -4, 127, -128]
    # bias is added before rounding: (3 + 10) / 4 = 3.25 -> 3; ReLU clamps at 0
    assert _static_identity(chip, [3, -5, 5], mult=1, shift=[2, 0, 0], bias=[10, 0, 0], lo=0, hi=255) == [3, 0, 5]


def test_count_saturates(chip):
    cm = build_coremap(chip, [dict(W=[[2]], x=0, y=0, stage=1, model="count", bits=8, lo=0, hi=5, spike_in=1)],
                       inputs=[{"name": "s", "kind": "step", "shape": [1], "scale": 1.0, "lo": 0, "hi": 1}],
                       feeds=[(0, 0, 0, 0)], outputs=[("c", "step", [(0, 0)])])
    r = run_both(cm, {}, {0: np.array([[[1], [1], [1], [1]], [[1], [0], [1], [1]]])}, 4)
    assert r.outputs["c"][:, :, 0].tolist() == [[2, 4, 5, 5], [2, 2, 4, 5]]
    assert r.state_final[:, 0, 0].tolist() == [5, 5]


def test_max_dendrite_ignores_bias(chip):
    W = [[1, 0, 0], [1, 1, 0], [0, 0, -1], [0, 1, 1]]
    cm = build_coremap(chip, [dict(W=W, x=0, y=0, stage=0, dend=1, bits=8, bias=100, w_bits=8)],
                       inputs=[{"name": "x", "kind": "static", "shape": [4], "scale": 1.0, "lo": -128, "hi": 127}],
                       feeds=[(0, i, 0, i) for i in range(4)], outputs=[("y", "static", [(0, 0), (0, 1), (0, 2)])])
    r = run_both(cm, {0: np.array([[3, -7, 10, 0]])}, {}, 0)
    assert r.outputs["y"].tolist() == [[3, 0, 10]]


def test_accumulator_saturates():
    chip = hand_chip(**{"core.accumulator_bits": 16})
    cm = build_coremap(chip, [dict(W=[[127], [127], [127]], x=0, y=0, stage=0, model="partial", bits=32,
                                   lo=-(1 << 15), hi=(1 << 15) - 1)],
                       inputs=[{"name": "x", "kind": "static", "shape": [3], "scale": 1.0, "lo": -128, "hi": 127}],
                       feeds=[(0, i, 0, i) for i in range(3)], outputs=[("p", "static", [(0, 0)])])
    r = run_both(cm, {0: np.array([[127, 127, 127], [-128, -128, -128], [1, 2, 3]])}, {}, 0)
    assert r.outputs["p"][:, 0].tolist() == [32767, -32768, 6 * 127]


# --------------------------------------------------------------------------- routing semantics
def test_delayed_route_seen_one_step_later(chip):
    cores = [dict(W=[[1]], x=0, y=0, stage=1, phase=0, bits=8),
             dict(W=np.eye(2, dtype=int), x=1, y=0, stage=1, phase=1, bits=8, axon_init=[0, 11])]
    cm = build_coremap(chip, cores,
                       inputs=[{"name": "x", "kind": "step", "shape": [1], "scale": 1.0, "lo": -128, "hi": 127}],
                       feeds=[(0, 0, 0, 0)], routes=[(0, 0, 1, 0, 0), (0, 0, 1, 1, 1)],
                       outputs=[("y", "step", [(1, 0), (1, 1)])])
    r = run_both(cm, {}, {0: np.array([[[5], [7], [9]]])}, 3)
    assert r.outputs["y"][0].tolist() == [[5, 11], [7, 5], [9, 7]]
    assert r.axon_final[0].tolist() == [9, 9, 9]


def test_readout_sees_last_step(chip):
    cores = [dict(W=[[1]], x=0, y=0, stage=1, bits=8),
             dict(W=[[2]], x=0, y=1, stage=2, bits=8)]
    cm = build_coremap(chip, cores,
                       inputs=[{"name": "x", "kind": "step", "shape": [1], "scale": 1.0, "lo": -128, "hi": 127}],
                       feeds=[(0, 0, 0, 0)], routes=[(0, 0, 1, 0, 0)], outputs=[("y", "readout", [(1, 0)])])
    r = run_both(cm, {}, {0: np.array([[[5], [7], [9]]])}, 3)
    assert r.outputs["y"].tolist() == [[18]]


# --------------------------------------------------------------------------- cycles and events by hand
def test_cycles_of_one_ann_core_by_hand(chip):
    rng = np.random.default_rng(0)
    W = rng.integers(-5, 6, (40, 20))
    cm = build_coremap(chip, [dict(W=W, x=1, y=0, stage=0, bits=8, mult=1, shift=4)],
                       inputs=[{"name": "x", "kind": "static", "shape": [40], "scale": 1.0, "lo": -128, "hi": 127}],
                       feeds=[(0, i, 0, i) for i in range(40)], outputs=[("y", "static", [(0, j) for j in range(20)])])
    r = run_both(cm, {0: rng.integers(-128, 128, (1, 40))}, {}, 2)
    # compute = overhead 16 + axon ceil(40*1/16)=3 + dendrite ceil(40/16)*ceil(20/16)=6 + soma ceil(20/16)*1=2
    assert r.core_cycles.tolist() == [[27]]
    # input phase: 5 packets (40 B / 8 B) I/O(40) -> hop(2) -> eject(1), one per cycle: last = 4 + 43; + barrier
    # compute phase: 3 tap packets (20 B) ready at 27: inject, hop, I/O: last = 29 + 43 = 72; + barrier
    assert r.stage_cycles.tolist() == [[47 + 32 + 72 + 32, 0, 0]]
    assert r.step_cycles.tolist() == [[0, 0]] and r.latency_cycles.tolist() == [183]
    ev = dict(zip(EVENT_KINDS, r.events[0, 0].tolist()))
    assert ev == {"mac": 800, "sop": 0, "neuron_update": 20, "spike": 0,
                  "sram_read_bytes": 40 * 20 + 40 + 0, "sram_write_bytes": 20, "packet": 8, "hop": 8,
                  "chip_crossing": 8, "lut_read": 0}


def test_cycles_of_one_spiking_core_by_hand(chip):
    W = np.ones((40, 20), dtype=int)
    cm = build_coremap(chip, [dict(W=W, x=1, y=0, stage=1, model="lif", bits=1, lo=0, hi=1, spike_in=1,
                                   cparam=dict(threshold=5, spike_ge=1))],
                       inputs=[{"name": "s", "kind": "step", "shape": [40], "scale": 1.0, "lo": 0, "hi": 1}],
                       feeds=[(0, i, 0, i) for i in range(40)])
    x = np.zeros((1, 1, 40), np.int64)
    x[0, 0, [1, 5, 6, 20, 30, 31, 39]] = 1  # 7 spikes
    r = run_both(cm, {}, {0: x}, 1)
    # 16 + axon ceil(40/16)=3 + dendrite ceil(7/16)*ceil(20/16)=2 + soma ceil(20/16)*2=4
    assert r.core_cycles.tolist() == [[25]]
    assert r.step_cycles.tolist() == [[(47 + 32) + (25 + 32)]]
    ev = dict(zip(EVENT_KINDS, r.events[0, 0].tolist()))
    assert ev == {"mac": 0, "sop": 140, "neuron_update": 20, "spike": 20,  # u = 7 >= 5: all fire
                  "sram_read_bytes": 7 * 20 + 40 + 20 * 4, "sram_write_bytes": 20 * 4 + 20 * 1,
                  "packet": 5, "hop": 5, "chip_crossing": 5, "lut_read": 0}


def test_cycles_of_the_three_stages_by_hand(chip):
    # static core 0 at (0, 0) -> step core 1 at (1, 0) -> readout core 2 at (2, 0) -> host; one 8-bit value each
    cores = [dict(W=[[1]], x=0, y=0, stage=0, bits=8), dict(W=[[1]], x=1, y=0, stage=1, bits=8),
             dict(W=[[2]], x=2, y=0, stage=2, bits=8)]
    cm = build_coremap(chip, cores,
                       inputs=[{"name": "x", "kind": "static", "shape": [1], "scale": 1.0, "lo": -128, "hi": 127}],
                       feeds=[(0, 0, 0, 0)], routes=[(0, 0, 1, 0, 0), (1, 0, 2, 0, 0)],
                       outputs=[("y", "readout", [(2, 0)])])
    r = run_both(cm, {0: np.array([[5]])}, {}, 3)
    assert r.outputs["y"].tolist() == [[10]]
    # every core: 16 + axon ceil(1/16)=1 + dendrite 1*1 + soma ceil(1/16)*1=1 = 19
    assert r.core_cycles.tolist() == [[19, 19 * 3, 19]]
    # static: input phase: 1 packet I/O(40) + eject(1) into (0, 0) = 41, + barrier = 73;
    #         phase 0: core 0 done at 19, its packet inject 1 + hop 2 + eject 1 -> 23, + barrier = 55
    # step (x3, no step inputs): core 1 done at 19, one hop to (2, 0) -> 23, + barrier = 55
    # readout: core 2 done at 19, tap to the host: inject 1 + 2 hops x 2 + I/O 40 -> 64, + barrier = 96
    assert r.step_cycles.tolist() == [[55, 55, 55]]
    assert r.stage_cycles.tolist() == [[73 + 55, 3 * 55, 96]]
    assert r.latency_cycles.tolist() == [128 + 165 + 96]
    # slots: static/0, step/0 (over 3 steps), readout/0, then the static and step input phases
    assert r.phase_cycles.tolist() == [[55, 165, 96, 73, 0]]
    assert r.phase_compute.tolist() == [[19, 57, 19, 0, 0]]
    ev = [dict(zip(EVENT_KINDS, r.events[0, c].tolist())) for c in range(3)]
    # core 0: 1 mac, reads 1 weight + 1 axon byte, writes 1 output byte; 1 input packet (I/O crossing)
    #         + 1 route packet (1 hop); core 1 the same compute 3 times, 3 route packets of 1 hop;
    #         core 2: 1 tap packet to the host (2 hops, the I/O crossing)
    assert ev[0] == {"mac": 1, "sop": 0, "neuron_update": 1, "spike": 0, "sram_read_bytes": 2,
                     "sram_write_bytes": 1, "packet": 2, "hop": 1, "chip_crossing": 1, "lut_read": 0}
    assert ev[1] == {"mac": 3, "sop": 0, "neuron_update": 3, "spike": 0, "sram_read_bytes": 6,
                     "sram_write_bytes": 3, "packet": 3, "hop": 3, "chip_crossing": 0, "lut_read": 0}
    assert ev[2] == {"mac": 1, "sop": 0, "neuron_update": 1, "spike": 0, "sram_read_bytes": 2,
                     "sram_write_bytes": 1, "packet": 1, "hop": 2, "chip_crossing": 1, "lut_read": 0}


@pytest.mark.parametrize("enc, bits, packets", [("aer", 1, 4), ("bitmap", 1, 1), ("aer", 8, 2), ("bitmap", 8, 2)])
def test_packet_counts(enc, bits, packets):
    chip = hand_chip(**{"noc.spike_encoding": enc})
    lo, hi = (0, 1) if bits == 1 else (-128, 127)
    cores = [dict(W=np.eye(10, dtype=int), x=0, y=0, stage=0, phase=0, bits=bits, lo=lo, hi=hi),
             dict(W=np.ones((10, 1), dtype=int), x=2, y=0, stage=0, phase=1, bits=8)]
    cm = build_coremap(chip, cores,
                       inputs=[{"name": "x", "kind": "static", "shape": [10], "scale": 1.0, "lo": 0, "hi": 1}],
                       feeds=[(0, i, 0, i) for i in range(10)], routes=[(0, i, 1, i, 0) for i in range(10)],
                       outputs=[("y", "static", [(1, 0)])])
    x = np.array([[1, 0, 0, 1, 1, 0, 0, 0, 1, 0]])
    r = run_both(cm, {0: x}, {}, 0)
    assert r.outputs["y"].tolist() == [[4]]
    # core 0: 2 input packets (10 B) from the host (I/O crossing each) + its route packets (2 hops each)
    assert r.events[0, 0, EV["packet"]] == 2 + packets
    assert r.events[0, 0, EV["hop"]] == 2 * packets
    assert r.events[0, 0, EV["chip_crossing"]] == 2
    assert r.events[0, 0, EV["spike"]] == (4 if bits == 1 else 0)


def test_aer_packets_of_entries_that_send_a_whole_core_or_part_of_it():
    # core 0's 10 spikes go to core 1 (all 10 neurons, in reversed order: the core's spike count is used), to
    # core 2 (neurons 0-4 only: counted over those routes) and to core 3 (10 routes, but neuron 0 twice and
    # neuron 9 not at all: counted over the routes).  Spikes at neurons 0, 3, 4, 8: 4 packets to core 1 (2 hops
    # away), 3 to core 2 (1 hop away), 5 to core 3 (neuron 0's spike twice; 1 hop away)
    chip = hand_chip(**{"noc.spike_encoding": "aer"})
    cores = [dict(W=np.eye(10, dtype=int), x=0, y=0, stage=0, phase=0, bits=1, lo=0, hi=1),
             dict(W=np.ones((10, 1), dtype=int), x=2, y=0, stage=0, phase=1, bits=8),
             dict(W=np.ones((5, 1), dtype=int), x=0, y=1, stage=0, phase=1, bits=8),
             dict(W=np.ones((10, 1), dtype=int), x=1, y=0, stage=0, phase=1, bits=8)]
    cm = build_coremap(chip, cores,
                       inputs=[{"name": "x", "kind": "static", "shape": [10], "scale": 1.0, "lo": 0, "hi": 1}],
                       feeds=[(0, i, 0, i) for i in range(10)],
                       routes=[(0, i, 1, 9 - i, 0) for i in range(10)] + [(0, i, 2, i, 0) for i in range(5)]
                       + [(0, n, 3, a, 0) for a, n in enumerate([0, 0, 1, 2, 3, 4, 5, 6, 7, 8])],
                       outputs=[("y", "static", [(1, 0), (2, 0), (3, 0)])])
    whole = kernels._net(cm).ent_whole
    dst = cm.router.dst[cm.router.off[0]:cm.router.off[1]].tolist()
    assert sorted(zip(dst, whole[cm.router.off[0]:cm.router.off[1]].tolist())) == [(1, 1), (2, 0), (3, 0)]
    r = run_both(cm, {0: np.array([[1, 0, 0, 1, 1, 0, 0, 0, 1, 0]])}, {}, 0)
    assert r.outputs["y"].tolist() == [[4, 3, 5]]
    assert r.events[0, 0, EV["packet"]] == 2 + 4 + 3 + 5  # 2 input packets from the host, then the spikes
    assert r.events[0, 0, EV["hop"]] == 4 * 2 + 3 * 1 + 5 * 1


# --------------------------------------------------------------------------- energy
def test_price_known_vector(chip):
    e = np.arange(1, len(EVENT_KINDS) + 1, dtype=np.int64)
    # 1*1.2 + 2*1.2 + 3*1.0 + 4*0.5 + 5*0.01 + 6*0.02 + 7*2.0 + 8*1.0 + 9*30.0 + 10*0.01 pJ
    joules = price(e, chip)
    assert joules.shape == e.shape
    assert abs(joules.sum() - 300.87e-12) < 1e-24
    assert abs(joules[EV["chip_crossing"]] - 270e-12) < 1e-24
    assert price(np.zeros((2, 3, len(EVENT_KINDS)), np.int64), chip).shape == (2, 3, len(EVENT_KINDS))
    assert abs(static_energy(chip, 156, 1e-3) - 1.56e-5) < 1e-18  # 1e-4 W * 156 cores * 1 ms


def test_every_event_kind_is_priced_by_its_own_field():
    # a distinct price per kind (1, 2, 4, ... 512 pJ) so that two fields swapped, or one kind priced with
    # another's field, shows (the HAND prices repeat: mac = sop = 1.2, neuron_update = hop = 1.0)
    pj = {"mac_pj": 1, "sop_pj": 2, "neuron_update_pj": 4, "spike_pj": 8, "sram_read_byte_pj": 16,
          "sram_write_byte_pj": 32, "packet_pj": 64, "hop_pj": 128, "chip_crossing_pj": 256,
          "lut_read_pj": 512}
    chip = hand_chip(**{f"energy.{k}": float(v) for k, v in pj.items()})
    e = np.zeros((2, len(EVENT_KINDS)), np.int64)
    e[0, EV["mac"]], e[0, EV["sram_read_bytes"]], e[1, EV["hop"]] = 3, 5, 7
    got = price(e, chip) / 1e-12
    # kind by kind: mac 3 x 1, sram_read_bytes 5 x 16, hop 7 x 128 pJ, every other entry 0
    expect = np.zeros((2, len(EVENT_KINDS)))
    expect[0, EV["mac"]], expect[0, EV["sram_read_bytes"]], expect[1, EV["hop"]] = 3.0, 80.0, 896.0
    np.testing.assert_allclose(got, expect, rtol=1e-12, atol=0)
    # one of each, by kind
    one = price(np.ones(len(EVENT_KINDS), np.int64), chip) / 1e-12
    assert {k: round(float(v), 9) for k, v in zip(EVENT_KINDS, one)} == {
        "mac": 1, "sop": 2, "neuron_update": 4, "spike": 8, "sram_read_bytes": 16, "sram_write_bytes": 32,
        "packet": 64, "hop": 128, "chip_crossing": 256, "lut_read": 512}


# --------------------------------------------------------------------------- errors
def test_input_errors(chip):
    cm = _if_map(chip)
    with pytest.raises(InputError, match="was not given"):
        run_numba(cm, {}, {}, 2)
    with pytest.raises(InputError, match="steps"):
        run_numba(cm, {}, {0: np.zeros((1, 3, 1), np.int64)}, 2)
    with pytest.raises(InputError, match="outside"):
        run_reference(cm, {}, {0: np.full((1, 2, 1), 2)}, 2)
    with pytest.raises(InputError, match="not a graph input"):
        run_reference(cm, {0: np.zeros((1, 1), np.int64)}, {0: np.zeros((1, 2, 1), np.int64)}, 2)
    with pytest.raises(InputError, match="integers"):
        run_reference(cm, {}, {0: np.zeros((1, 2, 1))}, 2)


def test_coremap_errors(chip):
    cm = _if_map(chip)
    cm = cm.replace(cores=dataclasses.replace(cm.cores, x=np.array([99], np.int32)))
    with pytest.raises(CoreMapError, match="outside"):
        run_numba(cm, {}, {0: np.zeros((1, 2, 1), np.int64)}, 2)


@pytest.mark.parametrize("seed", range(3))
def test_reference_with_cycle_by_cycle_noc(seed, monkeypatch):
    """The emulator's NoC timing equals the slow cycle-by-cycle model inside whole runs too."""
    cm = random_coremap(200 + seed, "tiny" if seed else "multichip")
    static, step = random_inputs(cm, 1, 2, seed)
    fast = run_numba(cm, static, step, 2)
    monkeypatch.setattr(reference, "simulate_heap", noc.simulate_per_cycle)
    assert run_reference(cm, static, step, 2).differences(fast) == []


# --------------------------------------------------------------------------- speed paths: same results
@pytest.mark.parametrize("seed", range(6))
def test_jobs_equal_one_thread(seed):
    cm = random_coremap(200 + seed, SHAPES[seed % len(SHAPES)])
    T = cm.meta["num_steps"]
    static, step = random_inputs(cm, batch=5, steps=T, seed=seed)
    one = run_numba(cm, static, step, T)
    for jobs in (2, 3, 0):
        assert one.differences(run_numba(cm, static, step, T, jobs=jobs)) == []


def test_jobs_must_be_a_thread_count():
    cm = random_coremap(1, "tiny")
    static, step = random_inputs(cm, 1, 2, 0)
    for bad in (-1, 1.5, True):
        with pytest.raises(InputError, match="jobs"):
            run_numba(cm, static, step, 2, jobs=bad)


@pytest.mark.parametrize("seed", range(8))
def test_sparse_rows_equal_reference(seed, monkeypatch):
    """Every mac core read as rows of nonzeros (normally only cores under 25% dense): same results."""
    monkeypatch.setattr(kernels, "SPARSE_DENSITY", 2.0)
    cm = random_coremap(300 + seed, SHAPES[seed % len(SHAPES)])
    assert (kernels._sparse_rows(cm)[0] > 0).sum() == (cm.cores.dendrite == 0).sum()
    T = cm.meta["num_steps"]
    static, step = random_inputs(cm, batch=2, steps=T, seed=seed)
    run_both(cm, static, step, T)


@pytest.mark.parametrize("seed", range(8))
def test_one_weight_per_row_equals_reference(seed, monkeypatch):
    """Mac cores with exactly one nonzero weight in every axon row (as a merge core's) read as such (``sparse``
    2): same results as the reference."""
    monkeypatch.setattr(kernels, "SPARSE_DENSITY", 2.0)
    cm = random_coremap(500 + seed, SHAPES[seed % len(SHAPES)])
    rng = np.random.default_rng(seed)
    c = cm.cores
    made = []
    for k in range(cm.num_cores):
        na, nn = cm.n_axons(k), cm.n_neurons(k)
        if c.dendrite[k] != 0 or c.w_fmt[k] != 0 or na == 0 or nn == 0:
            continue
        W = np.zeros((na, nn), np.int8)
        W[np.arange(na), rng.integers(nn, size=na)] = rng.choice([-128, -3, 1, 2, 127], size=na)
        cm.weights.data[c.w_off[k]:c.w_off[k] + na * nn] = W.reshape(-1)
        made.append(k)
    assert made
    assert (kernels._sparse_rows(cm)[0][made] == 2).all()
    T = cm.meta["num_steps"]
    static, step = random_inputs(cm, batch=2, steps=T, seed=seed)
    run_both(cm, static, step, T)


def test_emulate_checks_the_core_map_once(chip, monkeypatch):
    """``nmc.emulate`` validates the core map (structure and design rules) and runs it without checking its
    structure a second time; ``run_numba`` and ``run_reference`` called on their own still check it."""
    import nmc.corefile
    calls = []
    real = nmc.corefile.check_coremap

    def counting(cm):
        calls.append(1)
        return real(cm)

    for mod in (nmc.corefile, kernels, reference):
        monkeypatch.setattr(mod, "check_coremap", counting)
    cm = random_coremap(7, "tiny")
    T = cm.meta["num_steps"]
    static, step = random_inputs(cm, batch=1, steps=T, seed=0)
    run_numba(cm, static, step, T)
    run_reference(cm, static, step, T)
    assert len(calls) == 2
    cm = _if_map(chip)
    for backend in ("numba", "reference"):
        calls.clear()
        nmc.emulate(cm, {"s": np.ones((2, 1, 1))}, backend=backend)
        assert len(calls) == 1


def test_functions_the_kernel_calls_per_core_and_phase_count_no_references():
    # _run calls the soma dispatcher once per core and step, and the NoC model once per phase: compiled with Numba's
    # reference counting, each call counted its array arguments up and down atomically (about 8% of the bench's time)
    assert kernels._soma.targetoptions.get("_nrt") is False
    assert noc.noc_program.targetoptions.get("_nrt") is False
    for m in MODELS.values():
        assert m.nb_step.targetoptions.get("_nrt") is False, m.name
