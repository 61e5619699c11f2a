"""End to end: ONNX -> core map -> emulator, against onnxruntime, between backends, split vs unsplit."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import nmc
from nmc.frontend import load_onnx, run_float
from nets import hybrid, lossless_snn, spike_inputs

ort = pytest.importorskip("onnxruntime")
from nmc.frontend.ort import run_onnxruntime  # noqa: E402

#: limits small enough that every layer of the test nets is split by neurons, by fan-in, or both
TINY = {"core.neurons": 8, "core.axons": 16, "core.memory_bytes": 1024}

SETTINGS = [
    dict(reset_mode="subtract", spike_ge=0, reset_delay=0, recurrent=True),
    dict(reset_mode="zero", spike_ge=1, reset_delay=0, recurrent=True),
    dict(reset_mode="none", spike_ge=0, reset_delay=0, recurrent=False),
    dict(reset_mode="subtract", spike_ge=0, reset_delay=1, recurrent=True),
    dict(reset_mode="zero", spike_ge=0, reset_delay=1, recurrent=False),
]


def _all_outputs(model):
    """The same model with every graph output (state outputs too) reported, per step."""
    m = type(model)()
    m.CopyFrom(model)
    keep = [p for p in m.metadata_props if p.key != "nmc.outputs"]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    return m


def _assert_same_raw(a, b):
    assert a.raw.keys() == b.raw.keys()
    for k in a.raw:
        np.testing.assert_array_equal(a.raw[k], b.raw[k], err_msg=k)


@pytest.mark.parametrize("i,setting", list(enumerate(SETTINGS)))
def test_lossless_model_equals_onnxruntime_exactly(i, setting):
    steps, batch = 12, 5
    model = lossless_snn(seed=i, steps=steps, **setting)
    x = spike_inputs(100 + i, steps, batch, 40)
    cm = nmc.compile(model, chip="tianjic", calib={"spikes": x})
    assert all(l["quant"]["lossless"] for l in cm.meta["layers"]), [l["quant"] for l in cm.meta["layers"]]
    res = nmc.emulate(cm, {"spikes": x}, steps=steps)
    ref = run_onnxruntime(_all_outputs(model), {"spikes": x}, steps=steps)
    for name in ("lif1.s", "lif2.s", "count.c.next"):
        assert res.outputs[name].shape == ref[name].shape
        np.testing.assert_array_equal(res.outputs[name], ref[name], err_msg=name)
    assert res.outputs["lif1.s"].sum() > 0 and res.outputs["lif2.s"].sum() > 0  # the test exercises spikes
    # final membranes are exact too
    np.testing.assert_array_equal(res.outputs["lif2.v.next"], ref["lif2.v.next"][-1])


@pytest.mark.parametrize("i,setting", list(enumerate(SETTINGS[:3])))
def test_split_equals_unsplit_exactly(i, setting):
    steps, batch = 10, 4
    model = lossless_snn(seed=10 + i, steps=steps, **setting)
    x = spike_inputs(7 + i, steps, batch, 40)
    big = nmc.compile(model, chip="tianjic", calib={"spikes": x})
    small = nmc.compile(model, chip="tianjic", calib={"spikes": x}, overrides=TINY, chips="auto")
    assert small.num_cores > 3 * big.num_cores
    assert any(l["split"] for l in small.meta["layers"])  # fan-in splitting (partial + merge cores) happened
    _assert_same_raw(nmc.emulate(big, {"spikes": x}), nmc.emulate(small, {"spikes": x}))


def test_split_equals_unsplit_on_quantised_hybrid():
    model = hybrid(seed=3, steps=6, recurrent=True)
    img = np.random.default_rng(0).integers(0, 17, (6, 1, 8, 8)).astype(float)
    big = nmc.compile(model, chip="tianjic", calib={"image": img})
    small = nmc.compile(model, chip="tianjic", calib={"image": img}, overrides=TINY, chips="auto")
    assert any(l["split"] for l in small.meta["layers"])
    _assert_same_raw(nmc.emulate(big, {"image": img}), nmc.emulate(small, {"image": img}))


def test_multi_chip_gives_same_outputs_and_counts_crossings():
    steps = 8
    model = lossless_snn(seed=5, steps=steps)
    x = spike_inputs(5, steps, 3, 40)
    one = nmc.compile(model, chip="tianjic", calib={"spikes": x}, overrides=TINY, chips="auto")
    small_chip = dict(TINY, cores_x=4, cores_y=4)
    many = nmc.compile(model, chip="tianjic", calib={"spikes": x}, overrides=small_chip, chips="auto")
    assert many.meta["chips"][0] > 1
    a, b = nmc.emulate(one, {"spikes": x}), nmc.emulate(many, {"spikes": x})
    _assert_same_raw(a, b)
    assert b.report["events"]["chip_crossing"] > a.report["events"]["chip_crossing"]
    assert b.report["latency_cycles"] > a.report["latency_cycles"]  # chip links are slower


@pytest.mark.parametrize("model_fn,inp", [
    (lambda: lossless_snn(seed=2, steps=9), "spikes"),
    (lambda: hybrid(seed=1, steps=9, recurrent=True, reset_delay=1), "image"),
])
def test_numba_equals_reference_on_compiled_models(model_fn, inp):
    model = model_fn()
    rng = np.random.default_rng(0)
    x = spike_inputs(1, 9, 3, 40) if inp == "spikes" else rng.integers(0, 17, (3, 1, 8, 8)).astype(float)
    cm = nmc.compile(model, chip="tianjic", calib={inp: x}, overrides=TINY, chips="auto")
    a = nmc.emulate(cm, {inp: x}, backend="numba")
    b = nmc.emulate(cm, {inp: x}, backend="reference")
    for f in dataclasses.fields(a.result):
        va, vb = getattr(a.result, f.name), getattr(b.result, f.name)
        if isinstance(va, dict):
            for k in va:
                np.testing.assert_array_equal(va[k], vb[k], err_msg=f"{f.name}[{k}]")
        else:
            np.testing.assert_array_equal(va, vb, err_msg=f.name)
    assert a.report["energy_j"] == b.report["energy_j"]


def test_quantised_hybrid_tracks_float_model():
    """A quantised model (no exact representation): the chip's logits follow the float model's."""
    model = hybrid(seed=4, steps=8)
    rng = np.random.default_rng(1)
    img = rng.integers(0, 17, (40, 1, 8, 8)).astype(float)
    cm = nmc.compile(model, chip="tianjic", calib={"image": img[:20]})
    assert not all(l["quant"]["lossless"] for l in cm.meta["layers"])
    chip = nmc.emulate(cm, {"image": img}).outputs["head"]
    flt = run_float(load_onnx(model), {"image": img}, steps=8)["head"]
    corr = np.corrcoef(chip.reshape(-1), flt.reshape(-1))[0, 1]
    assert corr > 0.9, corr
    agree = np.mean(chip.argmax(-1) == flt.argmax(-1))
    assert agree >= 0.7, agree


def test_state_inputs_override_initial_membrane():
    steps = 4
    model = lossless_snn(seed=8, steps=steps, recurrent=False)
    x = np.zeros((steps, 2, 40), np.float32)
    cm = nmc.compile(model, chip="tianjic", calib={"spikes": spike_inputs(0, steps, 2, 40)})
    thr_v = np.array([[100.0] * 30, [0.0] * 30])  # sample 0 starts far above threshold, sample 1 at rest
    res = nmc.emulate(cm, {"spikes": x, "lif1.v": thr_v}, steps=steps)
    ref = run_onnxruntime(model, {"spikes": x, "lif1.v": thr_v}, steps=steps)
    np.testing.assert_array_equal(res.outputs["lif1.s"], ref["lif1.s"])
    assert res.outputs["lif1.s"][0, 0].sum() > 0  # sample 0 fires at the first step: the override took effect


def test_phase_breakdown_adds_up_to_latency():
    model = hybrid(seed=2, steps=5, recurrent=True)
    img = np.random.default_rng(0).integers(0, 17, (3, 1, 8, 8)).astype(float)
    cm = nmc.compile(model, chip="tianjic", calib={"image": img}, overrides=TINY, chips="auto")
    for backend in ("numba", "reference"):
        res = nmc.emulate(cm, {"image": img}, backend=backend)
        r = res.result
        np.testing.assert_array_equal(r.phase_cycles.sum(axis=1), r.latency_cycles)
        barrier = cm.chip.timing.barrier_cycles
        assert np.all(r.phase_compute <= r.phase_cycles)
        # every phase with cores pays its barrier once per run of the phase: 5 times in the step stage
        phases = res.report["phases"]
        assert [p["stage"] for p in phases if p["phase"] != "input"] == sorted(
            [p["stage"] for p in phases if p["phase"] != "input"], key=["static", "step", "readout"].index)
        for p in phases:
            runs = 5 if p["stage"] == "step" else 1
            assert p["network_barrier_cycles"] >= runs * barrier
        assert sum(p["cycles"] for p in phases) == pytest.approx(res.report["latency_cycles"])
