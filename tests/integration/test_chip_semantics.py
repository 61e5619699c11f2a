"""Chip semantics per preset (issue 8): the ANN requantiser as each chip does it, hand-derived end to end."""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nmc.chip import load_chip
from nmc.frontend import ModelBuilder, run_onnxruntime


def _dense_model():
    b = ModelBuilder("rq")
    x = b.input("x", (2,))
    b.output(b.gemm(x, np.array([[4.0, 1.0], [-3.0, 2.0]]), name="fc"))
    return b.build()


#: calibration: integer inputs of scale 1; the largest output is 4 * 127 = 508, so the output scale is 508 / 127 = 4
CALIB = np.array([[127, 0], [1, 1], [-1, 1], [2, -3]], np.float32)
X = np.array([[1, 1], [1, -2], [127, 0]], np.float32)


@pytest.mark.parametrize("chip, want", [
    # tianjicx divides by 4^k and floors (k = 1): acc (5, -1) -> (1, -1); (2, -7) -> (0, -2); (508, -381) -> (127, -96)
    ("tianjicx", [[4.0, -4.0], [0.0, -8.0], [508.0, -384.0]]),
    # tianjic multiplies by 1 and shifts by 2, rounding half up: (5+2)>>2 = 1, (-1+2)>>2 = 0; (2+2)>>2 = 1,
    # (-7+2)>>2 = -2; 508 -> 127, (-381+2)>>2 = -95
    ("tianjic", [[4.0, 0.0], [4.0, -8.0], [508.0, -380.0]]),
])
def test_ann_requantisation_is_the_chips(chip, want):
    cm = nmc.compile(_dense_model(), chip=chip, calib={"x": CALIB})
    q = cm.meta["layers"][0]["quant"]
    assert q["out_scale"] == 4.0 and q["requant_mode"] == load_chip(chip).core.requant_mode
    assert q["requant_rounding"] == ("floor" if chip == "tianjicx" else "half up")
    for backend in ("reference", "numba"):
        got = nmc.emulate(cm, {"x": X}, backend=backend).outputs["fc"]
        np.testing.assert_array_equal(got, want, err_msg=f"{chip} {backend}")


def test_floor4_keeps_the_weights_and_coarsens_the_output_by_a_power_of_4():
    """Weights up to 1.0 -> s_w = 1/127; a calibrated output scale of 3 needs 4^k >= 3 * 127 = 381: k = 5
    (4^4 = 256 < 381 <= 1024), output scale 1024 / 127."""
    from nmc.mapper.quantize import floor4_scales
    s_w, s_out, k = floor4_scales(np.array([1.0, -0.5, 0.25]), 3.0)
    assert k == 5 and s_w == pytest.approx(1 / 127) and s_out == pytest.approx(1024 / 127)
    # an output finer than the weights: k = 0 and the output takes the weight scale
    assert floor4_scales(np.array([127.0 * 2]), 1.0) == (2.0, 2.0, 0)
    assert floor4_scales(np.array([5.0, -7.0]), 1.0) == (1.0, 1.0, 0)  # integers: lossless
    assert floor4_scales(np.array([5.0, -7.0]), 4.0) == (1.0, 4.0, 1)  # exactly a power of 4: no coarsening


# --------------------------------------------------------------------------- look-up table activations
def _act_model(op, W, **attrs):
    b = ModelBuilder(f"act_{op}", opset=20 if op == "Gelu" else 19)  # Gelu is opset 20
    x = b.input("x", (W.shape[1],))
    b.output(b.activation(op, b.gemm(x, W, name="fc"), name="act", **attrs))
    return b.build()


W_INT = np.array([[1.0, -2.0, 1.0], [3.0, 1.0, -1.0], [-1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])


def _int_inputs(seed, n=40, top=6):
    return np.random.default_rng(seed).integers(-top, top + 1, (n, 3)).astype(np.float32)


@pytest.mark.parametrize("chip", ["tianjic", "tianjicx"])
@pytest.mark.parametrize("op, attrs", [("Clip", dict(min=-3.0, max=5.0)), ("PRelu", dict(slope=2.0)),
                                       ("LeakyRelu", dict(alpha=3.0)), ("Clip", dict(max=4.0)),
                                       ("ThresholdedRelu", dict(alpha=2.0))])
def test_lossless_table_activations_equal_onnxruntime(chip, op, attrs):
    """Integer weights and inputs, integer-valued activations whose range fits int8: index scale 1, output scale 1,
    the table holds f(i) exactly, so the chip equals onnxruntime bit for bit."""
    model = _act_model(op, W_INT, **attrs)
    X = _int_inputs(1)
    cm = nmc.compile(model, chip=chip, calib={"x": X})
    q = cm.meta["layers"][0]["quant"]
    assert q["lossless"] and q["lut_index_scale"] == 1.0 and "lut" in cm.meta["layers"][0]["op"]
    ref = run_onnxruntime(model, {"x": X})["act"]
    for backend in ("reference", "numba"):
        np.testing.assert_array_equal(nmc.emulate(cm, {"x": X}, backend=backend).outputs["act"], ref)


@pytest.mark.parametrize("chip", ["tianjic", "tianjicx"])
@pytest.mark.parametrize("op, attrs, lip", [
    ("Sigmoid", {}, 0.25), ("Tanh", {}, 1.0), ("HardSigmoid", {}, 0.2),
    ("Elu", {}, 1.0), ("Elu", dict(alpha=1.5), 1.5), ("Selu", {}, 1.0507 * 1.6733), ("Softplus", {}, 1.0),
    ("Softsign", {}, 1.0), ("Celu", dict(alpha=0.5), 1.0), ("Mish", {}, 1.09), ("Gelu", {}, 1.129),
    ("Gelu", dict(approximate="tanh"), 1.129), ("HardSwish", {}, 1.5)])
def test_smooth_table_activations_within_the_stated_bound(chip, op, attrs, lip):
    """Integer weights and inputs: the accumulator is exact, so the chip's only error is the table's. With the
    pre-activation's integer range inside the 8-bit index (scale 1) each entry is f(i) rounded to the output
    step s: |chip - f| <= s / 2.  With a wider range (weights x 20: index scale > 1) the index covers one index
    step d of input (rounded: half a step each side; floored on tianjicx: the step, f taken at its middle):
    |chip - f| <= lip * d / 2 + s / 2, lip the slope bound of f, sup |f'| from the ONNX definitions: sigmoid
    1/4, tanh 1, hardsigmoid alpha 0.2, elu max(1, alpha), selu gamma * max(1, alpha), softplus (its slope is a
    sigmoid), softsign 1/(1+|x|)^2 and celu 1, mish 1.0885 (max of its slope, found numerically), gelu
    Phi(x) + x phi(x) at x = sqrt 2: 0.9214 + 1.4142 * 0.1468 = 1.1289 (the tanh form within 1e-4),
    hardswish (2x + 3) / 6 at x = 3: 1.5."""
    for scale in (1, 20):
        # integer weights up to 61: still exact int8; the + 1s keep pre-activations near 0, where f is not flat
        model = _act_model(op, W_INT * scale + (scale > 1) * np.eye(4, 3), **attrs)
        X = _int_inputs(2, n=200)
        cm = nmc.compile(model, chip=chip, calib={"x": X})
        q = cm.meta["layers"][0]["quant"]
        ref = run_onnxruntime(model, {"x": X})["act"].astype(np.float64)
        got = nmc.emulate(cm, {"x": X}).outputs["act"]
        d, s = q["lut_index_scale"], q["out_scale"]
        assert (d == 1.0) == (scale == 1) and q["weight_rel_err"] == 0.0, (scale, d)
        bound = s / 2 + (0 if d == 1.0 else lip * d / 2) + 1e-6  # + float32 rounding of onnxruntime
        err = np.abs(got - ref).max()
        assert err <= bound, (chip, op, scale, err, bound)
        assert q["lut_err_max"] <= bound  # the report's figure obeys the same bound
        assert err > 0  # the table does differ from float: the test can fail


def test_lut_reads_are_counted_and_priced_per_preset():
    """One table read per neuron update of a table soma; Tianjic also reads its table for every ANN output
    (core.requant_mode = "lut"), TianjicX does not (it shifts and floors)."""
    relu = ModelBuilder("relu")
    x = relu.input("x", (3,))
    relu.output(relu.relu(relu.gemm(x, W_INT, name="fc"), name="r"))
    X = _int_inputs(3, n=2)
    for chip, model, want in (("tianjic", _act_model("Sigmoid", W_INT), 4), ("tianjicx", _act_model("Sigmoid", W_INT), 4),
                              ("tianjic", relu.build(), 4), ("tianjicx", relu.build(), 0)):
        res = nmc.emulate(nmc.compile(model, chip=chip, calib={"x": X}), {"x": X})
        assert res.report["events"]["lut_read"] == want, (chip, model.graph.name)  # 4 neurons, one read each
        assert res.report["energy_breakdown"]["by_event_j"]["lut_read"] == pytest.approx(
            want * load_chip(chip).energy.lut_read_pj * 1e-12)


@pytest.mark.parametrize("op", ["Sigmoid", "Elu", "Selu", "Softplus", "Softsign", "ThresholdedRelu", "Celu", "Mish",
                                "Gelu", "HardSwish"])
def test_a_chip_without_a_table_refuses_a_table_activation(op):
    from nmc.errors import QuantizationError
    with pytest.raises(QuantizationError, match="no activation look-up table.*core.lut_index_bits"):
        nmc.compile(_act_model(op, W_INT), chip="loihi", calib={"x": _int_inputs(4)})


def test_per_channel_prelu_slopes_are_refused_with_the_reason():
    from nmc.errors import UnsupportedOpError
    b = ModelBuilder("prelu")
    x = b.input("x", (2, 3, 3))
    b.output(b.activation("PRelu", x, name="act", slope=np.array([[[0.1]], [[0.2]]])))
    with pytest.raises(UnsupportedOpError, match="slopes differ per channel"):
        nmc.compile(b.build(), chip="tianjic", calib={"x": np.zeros((1, 2, 3, 3), np.float32)})


def test_relu_shaped_activations_become_relu():
    """Clip(min=0) without max, LeakyRelu(alpha=0) and PRelu(slope=0) are ReLUs: no table (a ReLU layer)."""
    for op, attrs in (("Clip", dict(min=0.0)), ("LeakyRelu", dict(alpha=0.0)), ("PRelu", dict(slope=0.0))):
        cm = nmc.compile(_act_model(op, W_INT, **attrs), chip="tianjicx", calib={"x": _int_inputs(5)})
        assert cm.meta["layers"][0]["op"] == "dense+relu", op


# --------------------------------------------------------------------------- TianjicX LIF, random threshold
def test_random_threshold_neurons_equal_onnxruntime_and_are_reproducible():
    """nmc::LIFTXRand seeded per neuron (lfsr_seeds): integer weights and threshold, so the chip equals
    onnxruntime spike for spike, the LFSR registers included; the same seeds give the same spikes and the
    noise changes them (the test can fail)."""
    from nmc.neurons.lif_tx_rand import lfsr_seeds

    def model(rand_bits):
        b = ModelBuilder("rand", num_steps=12)
        x = b.input("x", (6,), kind="step")
        qh, ql = lfsr_seeds(7, 5)
        outs = b.neuron("LIFTXRand", b.gemm(x, W_R, name="fc"), "n", init={"qh": qh, "ql": ql}, threshold=4.0,
                        reset_mode="subtract", refractory=1, rand_bits=rand_bits)
        for o in outs:
            b.output(o)
        return b.build()

    W_R = np.random.default_rng(0).integers(-2, 4, (5, 6)).astype(float)
    X = (np.random.default_rng(1).random((12, 2, 6)) < 0.5).astype(np.float32)
    got = {}
    for rb in (0, 3):
        m = model(rb)
        cm = nmc.compile(m, chip="tianjicx", calib={"x": X})
        assert cm.meta["layers"][0]["quant"]["lossless"]
        ref = run_onnxruntime(m, {"x": X})
        res = {b: nmc.emulate(cm, {"x": X}, backend=b) for b in ("reference", "numba")}
        assert res["reference"].result.differences(res["numba"].result) == []
        out = res["numba"].outputs
        np.testing.assert_array_equal(out["n.s"], ref["n.s"])
        for w in ("v", "r", "qh", "ql"):
            np.testing.assert_array_equal(out[f"n.{w}.next"], ref[f"n.{w}.next"][-1])
        got[rb] = out["n.s"]
    assert got[3].sum() > 0 and not np.array_equal(got[0], got[3])


@pytest.mark.parametrize("chip", ["tianjic", "tianjicx"])
def test_a_split_table_layer_equals_the_unsplit_one(chip):
    """A Tanh layer of 12 neurons x 20 inputs on cores of 5 neurons x 8 axons: partial cores, merge cores with the
    table soma (each with its copy of the table); the same outputs, 12 table reads per task either way."""
    rng = np.random.default_rng(0)
    m = _act_model("Tanh", rng.normal(size=(12, 20)))
    X = rng.normal(size=(16, 20)).astype(np.float32)
    whole = nmc.compile(m, chip=chip, calib={"x": X})
    split = nmc.compile(m, chip=chip, calib={"x": X}, overrides={"core.neurons": 5, "core.axons": 8})
    assert whole.num_cores == 1 and split.num_cores > 3
    a, b = nmc.emulate(whole, {"x": X}), nmc.emulate(split, {"x": X})
    np.testing.assert_array_equal(a.outputs["act"], b.outputs["act"])
    assert a.report["events"]["lut_read"] == b.report["events"]["lut_read"] == 12


@pytest.mark.parametrize("op, attrs", [("Sigmoid", {}), ("Tanh", {}), ("HardSigmoid", dict(alpha=0.3, beta=0.4)),
                                       ("LeakyRelu", dict(alpha=0.1)), ("PRelu", dict(slope=np.full((1, 1), 0.2))),
                                       ("Clip", dict(min=-0.5, max=0.75)), ("Clip", dict(max=0.5)),
                                       ("Elu", {}), ("Elu", dict(alpha=0.7)), ("Selu", {}),
                                       ("Selu", dict(alpha=1.2, gamma=0.9)), ("Softplus", {}), ("Softsign", {}),
                                       ("ThresholdedRelu", {}), ("ThresholdedRelu", dict(alpha=-0.5)),
                                       ("Celu", {}), ("Celu", dict(alpha=2.0)), ("Mish", {}), ("Gelu", {}),
                                       ("Gelu", dict(approximate="tanh")), ("HardSwish", {})])
def test_interpreter_float_semantics_equal_onnxruntime(op, attrs):
    """The IR op lut's float semantics (frontend/interpret.py, the calibration reference) are ONNX's, to float32."""
    from nmc.frontend import load_onnx, run_float
    b = ModelBuilder("f", opset=20 if op == "Gelu" else 19)
    x = b.input("x", (2, 3))
    b.output(b.activation(op, x, name="act", **attrs))
    m = b.build()
    X = np.random.default_rng(0).normal(scale=4, size=(5, 2, 3)).astype(np.float32)
    # Gelu's x/2 * (1 + tanh(..)) cancels for negative x: onnxruntime's float32 result is then good to
    # eps32 * |x| / 2 absolute (|x| <= 16 here: 1e-6), not relative
    np.testing.assert_allclose(run_float(load_onnx(m), {"x": X})["act"], run_onnxruntime(m, {"x": X})["act"],
                               rtol=1e-6, atol=1e-6 if op == "Gelu" else 1e-7)


def test_an_activation_of_a_graph_input_gets_an_identity_synapse():
    """PRelu(slope 2) straight on integer inputs: an identity synapse feeding the table soma, lossless."""
    b = ModelBuilder("in_act")
    x = b.input("x", (5,))
    b.output(b.activation("PRelu", x, name="act", slope=2.0))
    m = b.build()
    X = _int_inputs(6, n=10)[:, :1] * np.ones((1, 5), np.float32)
    cm = nmc.compile(m, chip="tianjicx", calib={"x": X})
    assert cm.meta["layers"][0]["op"] == "lut(leakyrelu)" and cm.meta["layers"][0]["quant"]["lossless"]
    np.testing.assert_array_equal(nmc.emulate(cm, {"x": X}).outputs["act"], run_onnxruntime(m, {"x": X})["act"])


def test_nmc_info_says_where_each_layer_differs_from_float():
    from nmc.cli import format_info
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3)).astype(np.float32)
    text = format_info(nmc.compile(_act_model("Sigmoid", rng.normal(size=(4, 3))), chip="tianjicx", calib={"x": X}))
    assert "chip vs float" in text and "requant floor (floor4)" in text and "sigmoid table err <=" in text
    text = format_info(nmc.compile(_dense_model(), chip="tianjic", calib={"x": CALIB}))
    assert "requant half up (lut)" in text


@pytest.mark.parametrize("one", [1.0, 2.0])
def test_decomposed_softsign_becomes_the_table(one):
    """x / (1 + |x|) written as Abs, Add and Div (torch's legacy exporter) is one Softsign table layer: integer
    inputs in the 8-bit index (scale 1), so |chip - onnxruntime| <= s / 2. With 2 in place of the 1 it is not a
    Softsign, and the Abs is refused as before."""
    from onnx import TensorProto, helper
    from nmc.errors import UnsupportedOpError
    g = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["a"], name="abs"),
         helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [one])),
         helper.make_node("Add", ["c", "a"], ["d"], name="add"), helper.make_node("Div", ["x", "d"], ["y"], name="div")],
        "softsign", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    X = _int_inputs(7)
    if one != 1.0:
        with pytest.raises(UnsupportedOpError, match="Abs"):
            nmc.compile(m, chip="tianjic", calib={"x": X})
        return
    cm = nmc.compile(m, chip="tianjic", calib={"x": X})
    layer = cm.meta["layers"][0]
    assert cm.meta["layers"] == [layer] and layer["op"] == "lut(softsign)" and layer["quant"]["lut_index_scale"] == 1.0
    err = np.abs(nmc.emulate(cm, {"x": X}).outputs["y"] - run_onnxruntime(m, {"x": X})["y"]).max()
    assert 0 < err <= layer["quant"]["out_scale"] / 2 + 1e-6
