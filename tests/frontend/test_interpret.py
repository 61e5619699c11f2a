"""The float interpreter: hand-derived LIF responses, kernels vs naive loops, input checking."""
from __future__ import annotations

import numpy as np
import pytest

from nmc.neurons.lif import LIF, lif_float_step
from nmc.frontend import ModelBuilder, load_onnx, run_float
from nmc.frontend.interpret import conv2d, pool2d
from nmc.errors import InputError



def lif_step(x, v, **attrs):
    """The LIF model's float step with the ONNX op's defaults for attributes not given."""
    return lif_float_step({**LIF.onnx.defaults(), **attrs}, x, v)

def lif_graph(T, **kw):
    b = ModelBuilder("lif", num_steps=T)
    x = b.input("x", (1,), kind="step")
    s, v = b.lif(x, "n", **kw)
    b.output(s)
    b.output(v)
    return load_onnx(b.build())


IMPULSE = np.array([1.5, 0, 0, 0]).reshape(4, 1, 1)


@pytest.mark.parametrize("kw,spikes,v", [
    # u0 = 1.5 > 1 fires, subtract -> 0.5, then halves
    (dict(beta=0.5), [1, 0, 0, 0], [0.5, 0.25, 0.125, 0.0625]),
    (dict(beta=0.5, reset_mode="zero", v_reset=-0.25), [1, 0, 0, 0], [-0.25, -0.125, -0.0625, -0.03125]),
    (dict(beta=0.5, reset_mode="none"), [1, 0, 0, 0], [1.5, 0.75, 0.375, 0.1875]),
    # delayed reset (snnTorch): v keeps 1.5, the reset by thr applies at the next step
    (dict(beta=0.5, reset_delay=1), [1, 0, 0, 0], [1.5, -0.25, -0.125, -0.0625]),
    (dict(beta=0.5, reset_delay=1, reset_mode="zero", v_reset=0.25), [1, 0, 0, 0], [1.5, 0.25, 0.125, 0.0625]),
    # leak towards v_leak = 1: u = 1 + 0.5*(v - 1) + x; never above 1 without input
    (dict(beta=0.5, v_leak=1.0, threshold=2.0), [0, 0, 0, 0], [2.0, 1.5, 1.25, 1.125]),
    # gain 2: u0 = 3 > 2 fires; IF keeps the rest
    (dict(beta=1.0, gain=2.0, threshold=2.0), [1, 0, 0, 0], [1.0, 1.0, 1.0, 1.0]),
])
def test_lif_impulse_response(kw, spikes, v):
    out = run_float(lif_graph(4, **kw), {"x": IMPULSE})
    np.testing.assert_array_equal(out["n.s"][:, 0, 0], spikes)
    np.testing.assert_array_equal(out["n.v.next"][:, 0, 0], v)


def test_if_neuron_constant_input_spike_train():
    # IF, threshold 1, input 0.25 per step: fires when u exceeds 1, i.e. at the 5th step (1.25), then every 4
    out = run_float(lif_graph(12, threshold=1.0), {"x": np.full((12, 1, 1), 0.25)})
    np.testing.assert_array_equal(np.flatnonzero(out["n.s"][:, 0, 0]), [4, 8])
    out = run_float(lif_graph(12, threshold=1.0, spike_ge=1), {"x": np.full((12, 1, 1), 0.25)})
    np.testing.assert_array_equal(np.flatnonzero(out["n.s"][:, 0, 0]), [3, 7, 11])


def test_lif_step_delayed_reset_uses_stored_v():
    s, v = lif_step(np.array([0.0]), np.array([2.0]), beta=1.0, threshold=1.0, reset_delay=1)
    assert s[0] == 0.0 and v[0] == 1.0  # r = fire(2.0): u = 2 - 1 = 1, not > 1
    s, v = lif_step(np.array([0.0]), np.array([2.0]), beta=1.0, threshold=1.0, reset_delay=1, spike_ge=1)
    assert s[0] == 1.0 and v[0] == 1.0


def naive_conv(x, W, b, strides, pads, dil, group):
    B, C, H, Wd = x.shape
    co, cg, kh, kw = W.shape
    xp = np.zeros((B, C, H + pads[0] + pads[2], Wd + pads[1] + pads[3]))
    xp[:, :, pads[0]:pads[0] + H, pads[1]:pads[1] + Wd] = x
    ho = (xp.shape[2] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (xp.shape[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    y = np.zeros((B, co, ho, wo))
    per = co // group
    for n in range(B):
        for o in range(co):
            g = o // per
            for i in range(ho):
                for j in range(wo):
                    acc = b[o]
                    for c in range(cg):
                        for p in range(kh):
                            for q in range(kw):
                                acc += W[o, c, p, q] * xp[n, g * cg + c, i * strides[0] + p * dil[0],
                                                          j * strides[1] + q * dil[1]]
                    y[n, o, i, j] = acc
    return y


@pytest.mark.parametrize("strides,pads,dil,group", [
    ((1, 1), (0, 0, 0, 0), (1, 1), 1),
    ((2, 1), (1, 0, 2, 1), (1, 2), 2),
    ((1, 3), (2, 2, 0, 1), (2, 1), 4),
])
def test_conv2d_matches_naive(strides, pads, dil, group):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 7, 8))
    W = rng.normal(size=(8, 4 // group, 3, 2))
    b = rng.normal(size=8)
    np.testing.assert_allclose(conv2d(x, W, b, strides, pads, dil, group), naive_conv(x, W, b, strides, pads, dil, group),
                               rtol=1e-12, atol=1e-12)


def test_pools_hand_values():
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # 1..9
    mx = pool2d(x, "max", (2, 2), (2, 2), (1, 1, 0, 0))
    np.testing.assert_array_equal(mx[0, 0], [[1, 3], [7, 9]])  # -inf padding never wins
    ex = pool2d(x, "avg", (2, 2), (2, 2), (1, 1, 0, 0), count_include_pad=0)
    np.testing.assert_array_equal(ex[0, 0], [[1, 2.5], [5.5, 7]])
    inc = pool2d(x, "avg", (2, 2), (2, 2), (1, 1, 0, 0), count_include_pad=1)
    np.testing.assert_array_equal(inc[0, 0], [[0.25, 1.25], [2.75, 7]])
    mneg = pool2d(-x, "max", (2, 2), (1, 1), (1, 1, 1, 1))
    assert mneg.max() < 0


def test_input_errors_name_the_input():
    g = lif_graph(4)
    with pytest.raises(InputError, match="missing step input 'x'"):
        run_float(g, {})
    with pytest.raises(InputError, match=r"'x' has shape \[4, 1\]; expected \['T', 'B', 1\]"):
        run_float(g, {"x": np.zeros((4, 1))})
    with pytest.raises(InputError, match="not graph inputs"):
        run_float(g, {"x": np.zeros((4, 1, 1)), "y": 0})
    with pytest.raises(InputError, match="steps=9"):
        run_float(g, {"x": np.zeros((4, 1, 1))}, steps=9)


def test_steps_default_and_static_outputs():
    b = ModelBuilder("s", num_steps=5)
    x = b.input("x", (2,))
    h = b.gemm(x, np.eye(2), name="h")
    s, _ = b.lif(h, "n", threshold=0.5)
    b.output(h)
    b.output(s)
    g = load_onnx(b.build())
    out = run_float(g, {"x": np.array([[0.375, 0.75]])})
    assert out["h"].shape == (1, 2)            # static output once
    assert out["n.s"].shape == (5, 1, 2)       # graph.num_steps
    np.testing.assert_array_equal(out["n.s"][:, 0, 1], [1, 1, 1, 1, 1])
    # 0.375, 0.75 fires -> 0.25, 0.625 fires -> 0.125, 0.5 (not > 0.5), 0.875 fires
    np.testing.assert_array_equal(out["n.s"][:, 0, 0], [0, 1, 1, 0, 1])
