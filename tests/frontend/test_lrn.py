"""ONNX LRN on the cores (frontend/onnx_ops.py ``_lrn``): a chain of linear layers and look-up-table somas.

Float: the IR's interpretation equals onnxruntime for every variant (odd sizes: onnxruntime refuses even ones, and
the ONNX reference evaluator's LRN loops over the batch axis instead of the channels, so even sizes are checked
against the formula of the ONNX specification written out below, itself checked against onnxruntime on the odd
sizes).  Chip: the emulated integers are within the quantisation bound derived in docs/numerics.md ("LRN") of
onnxruntime; the Numba emulator equals the NumPy reference bit for bit."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nmc
from nmc.errors import QuantizationError
from nmc.frontend import load_onnx, run_float

ort = pytest.importorskip("onnxruntime")


def lrn_spec(x, size, alpha, beta, bias):
    """ONNX LRN as its specification writes it: the window of ``size`` channels around c, floor((size-1)/2) before,
    ceil((size-1)/2) after, clipped at the ends."""
    C = x.shape[1]
    sq = np.zeros_like(x)
    for c in range(C):
        lo, hi = max(0, c - math.floor((size - 1) / 2)), min(C - 1, c + math.ceil((size - 1) / 2))
        sq[:, c] = (x[:, lo:hi + 1] ** 2).sum(axis=1)
    return x / (bias + alpha / size * sq) ** beta


def _f32(v):  # ONNX stores float attributes as float32
    return float(np.float32(v))


def lrn_model(size, alpha, beta, bias, relu, shape=(7, 3, 4), conv=None):
    nodes, inits, src = [], [], "x"
    if conv is not None:
        inits.append(numpy_helper.from_array(conv.astype(np.float32), "W"))
        nodes.append(helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]))
        src = "c"
    if relu:
        nodes.append(helper.make_node("Relu", [src], ["r"]))
        src = "r"
    nodes.append(helper.make_node("LRN", [src], ["y"], name="norm", size=size, alpha=alpha, beta=beta, bias=bias))
    out = (conv.shape[0], *shape[1:]) if conv is not None else shape
    g = helper.make_graph(nodes, "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


# (size, alpha, beta, bias): odd and even sizes, AlexNet's and ZFNet's parameters, strong and weak normalisation
VARIANTS = [(5, 1e-4, 0.75, 1.0), (5, 5e-4, 0.75, 2.0), (3, 0.5, 0.75, 2.0), (1, 0.25, 1.5, 0.5), (2, 0.3, 0.5, 2.0),
            (4, 1.0, 1.25, 1.0), (6, 0.05, 0.6, 0.75)]


def _inputs(seed, n, shape=(7, 3, 4), scale=4.0):
    return (np.random.default_rng(seed).normal(size=(n, *shape)) * scale).astype(np.float32)


def test_the_specification_formula_is_onnxruntime():  # (the even sizes' reference)
    x = _inputs(0, 3)
    for size, alpha, beta, bias in VARIANTS:
        if size % 2:
            m = lrn_model(size, alpha, beta, bias, relu=False)
            ref = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
            np.testing.assert_allclose(lrn_spec(x.astype(np.float64), size, _f32(alpha), _f32(beta), _f32(bias)),
                                       ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("size,alpha,beta,bias", VARIANTS)
def test_float_chain_equals_onnx_lrn(size, alpha, beta, bias, relu):
    m = lrn_model(size, alpha, beta, bias, relu)
    x = _inputs(1, 4)
    g = load_onnx(m)
    assert "nmc.approximated" not in g.metadata
    luts = sorted(n.attrs["fn"] for n in g.nodes if n.op == "lut")
    # x >= 0 after a ReLU: square, window, log, exp; else the negative part's log and exp too
    assert luts == (["exp", "log", "lrn_scale", "square"] if relu else ["exp", "exp", "log", "log", "lrn_scale",
                                                                         "square"])
    got = run_float(g, {"x": x})["y"]
    xr = np.maximum(x, 0) if relu else x
    spec = lrn_spec(xr.astype(np.float64), size, _f32(alpha), _f32(beta), _f32(bias))
    np.testing.assert_allclose(got, spec, rtol=1e-9, atol=1e-25)  # the chain is exact in float
    if size % 2:
        ref = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())  # onnxruntime runs float32


def test_zero_alpha_or_beta_is_a_constant_scale():
    for alpha, beta in ((0.0, 0.75), (1e-4, 0.0)):
        g = load_onnx(lrn_model(3, alpha, beta, 2.0, relu=False))
        assert [n.op for n in g.nodes] == ["batchnorm"]
        x = _inputs(2, 2)
        np.testing.assert_allclose(run_float(g, {"x": x})["y"], x.astype(np.float64) * 2.0 ** -beta, rtol=1e-12)


def _scales(cm, relu):
    """The steps the bound needs, from the compile report: the error of LRN's input x (the graph input's step, plus
    the ReLU layer's when there is one: each a rounding, or a floor on tianjicx), square q, window index s,
    log-factor t, log u, exp index v, output y."""
    by_op = {}
    for l in cm.meta["layers"]:
        by_op.setdefault(l["op"], []).append(l["quant"])
    s_x = cm.meta["inputs"][0]["scale"] + (by_op["relu"][0]["out_scale"] if relu else 0.0)
    win = by_op["conv+lut(lrn_scale)"][0]
    exp = by_op["add+lut(exp)"]
    s_y = exp[0]["out_scale"] if relu else by_op["add"][0]["out_scale"]
    return dict(s_x=s_x, s_q=by_op["lut(square)"][0]["out_scale"], s_s=win["lut_index_scale"], s_t=win["out_scale"],
                s_u=max(q["out_scale"] for q in by_op["lut(log)"]), s_v=max(q["lut_index_scale"] for q in exp),
                s_y=s_y)


def lrn_bound(y, alpha, beta, bias, relu, s):
    """The chip's error bound per element (docs/numerics.md, "LRN"): half a step of each log-domain link (u, t and
    exp's index v) and of the window's sum (its index step, and half a step of q per term: alpha * s_q / 2 in
    alpha/size * S) is a relative error of y; the input's error s_x moves y by at most d_max * s_x; the output's
    rounding (and exp's 0.45-step cut-off) one output step, two with the sum of the signed parts."""
    eps = (s["s_u"] + s["s_t"] + s["s_v"]) / 2 + beta * (s["s_s"] + alpha * s["s_q"]) / (2 * bias)
    d_max = bias ** -beta
    return np.abs(y) * math.expm1(eps) + d_max * s["s_x"] + (1 if relu else 2) * s["s_y"]


@pytest.mark.parametrize("chip", ["tianjic", "tianjicx"])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("size,alpha,beta,bias", VARIANTS[:5])
def test_chip_lrn_is_within_its_quantisation_bound(size, alpha, beta, bias, relu, chip):
    m = lrn_model(size, alpha, beta, bias, relu)
    x = _inputs(4, 16)
    calib = np.concatenate([_inputs(3, 48), x])  # (the bound holds within the calibrated ranges; beyond, saturation)
    ref = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0] if size % 2 else \
        lrn_spec(np.maximum(x, 0) if relu else x, size, _f32(alpha), _f32(beta), _f32(bias))
    cm = nmc.compile(m, calib={"x": calib}, chip=chip)
    got = nmc.emulate(cm, {"x": x}).outputs["y"]
    s = _scales(cm, relu)
    bound = lrn_bound(ref, _f32(alpha), _f32(beta), _f32(bias), relu, s)
    assert np.all(np.abs(got - ref) <= bound), float((np.abs(got - ref) - bound).max())


def test_conv_relu_lrn_pool_dense_compiles_and_numba_equals_the_reference():
    rng = np.random.default_rng(5)
    m = lrn_model(5, 1e-3, 0.75, 1.0, relu=True, shape=(3, 6, 6), conv=rng.normal(size=(8, 3, 3, 3)) * 3)
    g = m.graph
    g.output.pop()
    g.node.append(helper.make_node("MaxPool", ["y"], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
    g.node.append(helper.make_node("Flatten", ["p"], ["f"]))
    g.initializer.append(numpy_helper.from_array(rng.normal(size=(72, 5)).astype(np.float32), "Wd"))
    g.node.append(helper.make_node("MatMul", ["f", "Wd"], ["z"]))
    g.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 5]))
    calib, x = _inputs(6, 32, (3, 6, 6), 1.0), _inputs(7, 8, (3, 6, 6), 1.0)
    cm = nmc.compile(m, calib={"x": calib})
    assert [l["op"] for l in cm.meta["layers"]][1:5] == ["lut(square)", "lut(log)", "conv+lut(lrn_scale)",
                                                         "add+lut(exp)"]
    res = {b: nmc.emulate(cm, {"x": x}, backend=b) for b in ("reference", "numba")}
    assert res["reference"].result.differences(res["numba"].result) == []  # outputs, states, events, cycles
    np.testing.assert_array_equal(res["numba"].raw["z"], res["reference"].raw["z"])
    ref = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    # the read-out sums 72 LRN outputs, each within a few percent: within a tenth of the read-out's range
    assert np.abs(res["numba"].outputs["z"] - ref).max() <= 0.1 * np.abs(ref).max()


def test_a_chip_without_a_table_refuses_naming_the_approximation():
    m = lrn_model(3, 1e-4, 0.75, 1.0, relu=True)
    with pytest.raises(QuantizationError, match=r"no activation look-up table .* ONNX LRN node 'norm' .*"
                                                r"approximate=\{'LRN': 'identity'\}"):
        nmc.compile(m, calib={"x": _inputs(8, 4)}, chip="loihi")
    cm = nmc.compile(m, calib={"x": _inputs(8, 4)}, chip="loihi", approximate={"LRN": "identity"})
    assert any("LRN node 'norm' is approximated as identity" in w for w in cm.meta["compile"]["warnings"])


def test_lrn_with_unusable_parameters_is_refused_naming_the_approximation():
    from nmc.errors import UnsupportedOpError
    with pytest.raises(UnsupportedOpError, match=r"bias=0.*bias > 0.*approximate=\{'LRN': 'identity'\}"):
        load_onnx(lrn_model(3, 1e-4, 0.75, 0.0, relu=True))
    g = load_onnx(lrn_model(3, 1e-4, 0.75, 0.0, relu=True), approximate={"LRN": "identity"})
    assert [n.op for n in g.nodes] == ["relu", "identity"]


def test_floor4_table_scales_by_hand():
    """Under floor4 the chain's index step is b * 4^k / n (weights whole multiples of b, weight scale b / n)."""
    from nmc.mapper.quantize import _floor4_exact
    # an identity synapse of an input of step 0.5 read at that step: weight 1, no shift
    assert _floor4_exact(np.array([0.5, 0.5, 0.5]), 0.5) == (0.5, 0.5, 0)
    # u : t = 3 : 1 (b = 0.1), a step of at least 0.25: k = 3, n = floor(6.4 / 0.25) = 25 (weights 75, 25 <= 127;
    # k = 4 would need n = 102, weights 306): step 6.4 / 25 = 0.256
    s_w, step, k = _floor4_exact(np.array([0.3, 0.1]), 0.25)
    assert (k, round(s_w, 12), round(step, 12)) == (3, 0.004, 0.256)
    # no common base: the step itself, weight scale step / 4^k with 0.3 * 4^k / 0.25 <= 127: k = 3
    assert _floor4_exact(np.array([0.3, 0.1414]), 0.25) == (0.25 / 64, 0.25, 3)
