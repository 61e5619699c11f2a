"""Every neuron model end to end: an nmc step graph built with ModelBuilder.neuron, compiled for tianjic,
emulated by both backends, equal to onnxruntime (the ONNX function bodies) exactly where the model is
lossless: integer weights and thresholds, decays of 0 or 1.  Iterates the registry, so a new model is
covered without editing this file."""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nmc.frontend import ModelBuilder, run_onnxruntime
from nmc.neurons import MODELS

#: models with an ONNX op whose synaptic input can be a dense layer's output (spiking models)
SPIKING = sorted(m.onnx.name for m in MODELS.values() if m.onnx is not None and m.spiking)
#: lossless attribute variants beyond each op's defaults (a model without an entry runs its defaults)
VARIANTS = {
    "LIF": [dict(threshold=3.0, reset_mode="zero", v_reset=-1.0, spike_ge=1), dict(threshold=2.0, reset_delay=1)],
    "CubaLIF": [dict(alpha=1.0, beta=1.0, threshold=4.0), dict(alpha=0.0, beta=0.0, threshold=2.0, reset_mode="zero")],
    "LIFT": [dict(threshold=np.arange(1.0, 11.0), reset_mode="zero", v_reset=np.arange(10) % 3 - 1.0, spike_ge=1),
             dict(threshold=2.0, reset_delay=1, beta=np.tile([0.0, 1.0], 5), v_leak=np.arange(10) % 2 * 1.0)],
    "LIFTX": [dict(reset_mode="dv", dv=2.0, refractory=2, leak=-1.0, floor=1, v_min=-2.0),
              dict(reset_mode="subtract", beta=0.0, leak=1.0), dict(reset_mode="none", floor=1, v_min=0.0, threshold=4.0)],
    "LIFRefractory": [dict(threshold=3.0, refractory=2), dict(threshold=2.0, refractory=3, reset_mode="subtract",
                                                               spike_ge=1, v_leak=0.0)],
}


def _network(op: str, attrs: dict, seed: int, T: int = 12):
    rng = np.random.default_rng(seed)
    b = ModelBuilder(f"e2e_{op}", num_steps=T)
    x = b.input("x", (16,), kind="step")
    W = rng.integers(-2, 4, size=(10, 16)).astype(float)
    outs = b.neuron(op, b.gemm(x, W, name="fc"), "n", **{"threshold": 3.0, **attrs})
    for o in outs:  # the spikes and every state word (onnxruntime reports declared outputs only)
        b.output(o)
    b.output(b.spike_count(outs[0], "count"))
    spikes = (rng.random((T, 3, 16)) < 0.4).astype(np.float32)
    return b.build(), spikes


@pytest.mark.parametrize("op", SPIKING)
def test_every_spiking_model_equals_onnxruntime_when_lossless(op):
    for k, attrs in enumerate([{}] + VARIANTS.get(op, [])):
        model, x = _network(op, attrs, seed=k)
        cm = nmc.compile(model, chip="tianjic", calib={"x": x}, lint=True)
        assert all(l["quant"]["lossless"] for l in cm.meta["layers"]), (op, attrs)
        ref = run_onnxruntime(model, {"x": x})
        res = {b: nmc.emulate(cm, {"x": x}, backend=b) for b in ("reference", "numba")}
        assert res["reference"].result.differences(res["numba"].result) == [], (op, attrs)
        out = res["numba"].outputs
        np.testing.assert_array_equal(out["n.s"], ref["n.s"], err_msg=f"{op} {attrs}")
        np.testing.assert_array_equal(out["count.c.next"], ref["count.c.next"], err_msg=f"{op} {attrs}")
        assert out["n.s"].sum() > 0, (op, attrs)  # the test exercises firing
        # every state word of the model (membrane, current, refractory counter) after the last step
        for w in next(m for m in MODELS.values() if m.onnx is not None and m.onnx.name == op).state:
            name = f"n.{w.in_port}.next"
            np.testing.assert_array_equal(out[name], ref[name][-1], err_msg=f"{op} {attrs} {name}")


def test_state_inputs_of_a_two_word_model_set_the_initial_state():
    """A CubaLIF's current and membrane given as inputs start the run: the same as onnxruntime started there."""
    model, x = _network("CubaLIF", dict(alpha=1.0, beta=1.0, threshold=5.0), seed=3)
    cm = nmc.compile(model, calib={"x": x})
    init = {"n.i": np.tile(np.arange(-4, 6, dtype=np.float32), (3, 1)), "n.v": np.full((3, 10), 2.0, np.float32)}
    got = nmc.emulate(cm, {"x": x, **init}).outputs
    ref = run_onnxruntime(model, {"x": x, **init})
    np.testing.assert_array_equal(got["n.s"], ref["n.s"])
    np.testing.assert_array_equal(got["n.v.next"], ref["n.v.next"][-1])
    np.testing.assert_array_equal(got["n.i.next"], ref["n.i.next"][-1])


def test_refractory_period_silences_a_driven_neuron():
    """A neuron driven above threshold every step fires once per refractory period + 1 (hand-derived)."""
    b = ModelBuilder("refr", num_steps=10)
    x = b.input("x", (1,), kind="step")
    s, _, _ = b.neuron("LIFRefractory", b.gemm(x, [[5.0]], name="fc"), "n", threshold=3.0, refractory=2)
    b.output(s)
    cm = nmc.compile(b.build(), calib={"x": np.ones((10, 1, 1))})
    out = nmc.emulate(cm, {"x": np.ones((10, 1, 1))}).outputs["n.s"][:, 0, 0]
    # input 5 > 3: fire at step 0, reset to 0, ignore steps 1-2, fire at 3, ... -> 0, 3, 6, 9
    assert np.flatnonzero(out).tolist() == [0, 3, 6, 9]
