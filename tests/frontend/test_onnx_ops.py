"""Each ANN op beyond the core set against onnxruntime: the float import (``run_float``) equals onnxruntime, and
the compiled chip (``nmc.emulate`` on tianjic) equals it exactly where the op is lossless (data movement and
integer arithmetic on integer inputs), else within one output quantisation step (the output range / 127)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nmc
from nmc.errors import ModelError, UnsupportedOpError
from nmc.frontend import ModelBuilder, load_onnx, run_float

ort = pytest.importorskip("onnxruntime")


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _c(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _model(nodes, inputs, outputs, inits=(), opset=18, types=None):
    g = helper.make_graph(nodes, "ops", [_vi(n, ["N", *s]) for n, s in inputs.items()],
                          [helper.make_value_info(n, helper.make_tensor_type_proto((types or {}).get(n, TensorProto.FLOAT),
                                                                                   None)) for n in outputs], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(m, data_prop=True)  # the output shapes, as an exporter writes them


def _ints(shape, seed=0, lo=-8, hi=8):
    return np.random.default_rng(seed).integers(lo, hi + 1, size=shape).astype(np.float32)


def check(nodes, inputs, outputs, inits=(), opset=18, exact=True, B=3, chip=True, **load):
    m = _model(nodes, inputs, outputs, inits, opset)
    xs = {n: _ints((B, *s), seed=i) for i, (n, s) in enumerate(inputs.items())}
    ref = dict(zip(outputs, ort.InferenceSession(m.SerializeToString()).run(outputs, xs)))
    g = load_onnx(m, **load)
    got = run_float(g, xs)
    for o in outputs:
        np.testing.assert_allclose(got[o], ref[o], rtol=1e-5, atol=1e-5, err_msg=o)
    if not chip:
        return g, None
    cm = nmc.compile(g, calib=xs)
    out = nmc.emulate(cm, xs).outputs
    for o in outputs:
        assert out[o].shape == ref[o].shape
        if exact:
            np.testing.assert_array_equal(out[o], ref[o], err_msg=o)
        else:
            np.testing.assert_allclose(out[o], ref[o], atol=np.abs(ref[o]).max() / 127 + 1e-9, err_msg=o)
    return g, cm


def _ops(g):
    return [n.op for n in g.nodes]


# ----------------------------------------------------------------- data movement: one 'index' view each
def test_concat_of_two_inputs():
    g, _ = check([helper.make_node("Concat", ["a", "b"], ["y"], axis=1)], {"a": (2, 3), "b": (1, 3)}, ["y"])
    assert _ops(g) == ["index"]


def test_concat_along_the_last_axis_of_relus():
    check([helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Relu", ["b"], ["rb"]),
           helper.make_node("Concat", ["ra", "rb", "ra"], ["y"], axis=-1)], {"a": (2, 3), "b": (2, 2)}, ["y"])


def test_split_into_three():
    g, _ = check([helper.make_node("Split", ["x", "sizes"], ["y0", "y1", "y2"], axis=1)], {"x": (6, 2)},
                 ["y0", "y1", "y2"], [_c("sizes", [1, 2, 3], np.int64)])
    assert _ops(g) == ["index"] * 3


def test_slice_with_steps_and_negative_indices():
    check([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], {"x": (4, 6)}, ["y"],
          [_c("st", [-1, 1], np.int64), _c("en", [-5, 6], np.int64), _c("ax", [1, 2], np.int64),
           _c("sp", [-2, 2], np.int64)])


def test_channel_shuffle_reshape_transpose_reshape():
    # ShuffleNet: [C, H, W] -> [g, C/g, H, W] -> swap the group axes -> [C, H, W]
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Reshape", ["r", "s1"], ["a"]),
             helper.make_node("Transpose", ["a"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "s2"], ["y"])]
    g, _ = check(nodes, {"x": (6, 2, 2)}, ["y"], [_c("s1", [0, 2, 3, 2, 2], np.int64),
                                                  _c("s2", [0, 6, 2, 2], np.int64)])
    assert _ops(g) == ["relu", "reshape", "index", "reshape"]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad(mode):
    check([helper.make_node("Pad", ["x", "p"], ["y"], mode=mode)], {"x": (2, 3, 3)}, ["y"],
          [_c("p", [0, 0, 1, 2, 0, 0, 2, 1], np.int64)])


def test_pad_with_a_nonzero_constant_is_zero_padding_and_a_bias():
    g, _ = check([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Pad", ["r", "p", "v"], ["y"])],
                 {"x": (2, 3)}, ["y"], [_c("p", [0, 0, 1, 0, 0, 1], np.int64), _c("v", 2.0)])
    assert _ops(g) == ["relu", "index", "reshape", "batchnorm", "reshape"]


def test_pad_of_the_batch_axis_is_refused():
    m = _model([helper.make_node("Pad", ["x", "p"], ["y"])], {"x": (2,)}, ["y"], [_c("p", [1, 0, 0, 0], np.int64)])
    with pytest.raises(UnsupportedOpError, match="across the batch axis"):
        load_onnx(m)


def test_gather_with_constant_indices_unsqueeze_squeeze():
    nodes = [helper.make_node("Gather", ["x", "i"], ["g"], axis=2),
             helper.make_node("Unsqueeze", ["g", "ax"], ["u"]),
             helper.make_node("Squeeze", ["u", "ax"], ["y"])]
    check(nodes, {"x": (2, 5)}, ["y"], [_c("i", [[4, 0], [1, -1]], np.int64), _c("ax", [1], np.int64)])


def test_expand_tile_depth_to_space():
    nodes = [helper.make_node("Expand", ["x", "shape"], ["e"]),
             helper.make_node("Tile", ["e", "reps"], ["t"]),
             helper.make_node("DepthToSpace", ["t"], ["y"], blocksize=2, mode="CRD")]
    check(nodes, {"x": (4, 1, 2)}, ["y"], [_c("shape", [1, 4, 2, 2], np.int64), _c("reps", [1, 2, 1, 1], np.int64)])


def test_shape_gather_unsqueeze_concat_reshape_chain_is_folded():
    # x.view(x.size(0), -1) as the legacy exporter writes it
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"])]
    g, _ = check(nodes, {"x": (2, 3)}, ["y"], [_c("zero", 0, np.int64), _c("ax", [0], np.int64),
                                               _c("minus1", [-1], np.int64)])
    assert _ops(g) == ["relu", "reshape"]


def test_views_compose_and_feed_a_conv():
    # a transposed, sliced input read by a conv: the conv's synapses are renumbered through both views
    W = np.arange(2 * 1 * 2 * 2, dtype=np.float32).reshape(2, 1, 2, 2) - 3
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 1, 3, 2]),
             helper.make_node("Slice", ["t", "st", "en", "ax"], ["s"]),
             helper.make_node("Conv", ["s", "W"], ["y"])]
    check(nodes, {"x": (1, 4, 5)}, ["y"], [_c("st", [1], np.int64), _c("en", [5], np.int64),
                                           _c("ax", [2], np.int64), _c("W", W)])


# ----------------------------------------------------------------- arithmetic with constants
def test_mul_sub_div_neg_sum_by_constants():
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Mul", ["r", "k"], ["m"]),          # per channel
             helper.make_node("Sub", ["ten", "m"], ["s"]),        # constant - activation
             helper.make_node("Neg", ["s"], ["n"]),
             helper.make_node("Sum", ["n", "one", "x"], ["y"])]   # with a constant and an activation
    check(nodes, {"x": (2, 3)}, ["y"], [_c("k", [[2], [3]]), _c("ten", 10.0), _c("one", 1.0)])


def test_div_by_a_constant_and_spatially_varying_scale():
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Div", ["r", "d"], ["y"])]
    check(nodes, {"x": (2, 2)}, ["y"], [_c("d", [[1, 2], [4, 8]])], exact=False)


def test_mul_of_a_conv_output_is_folded_into_its_weights():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("Mul", ["c", "k"], ["y"])]
    g, _ = check(nodes, {"x": (1, 3, 3)}, ["y"], [_c("W", np.ones((2, 1, 2, 2))), _c("k", [[[2]], [[-1]]])])
    assert _ops(g) == ["conv"]


def test_product_of_two_activations_is_refused():
    m = _model([helper.make_node("Mul", ["x", "x"], ["y"], name="sq")], {"x": (2,)}, ["y"])
    with pytest.raises(UnsupportedOpError, match="product of two activations"):
        load_onnx(m)


def test_glu_is_refused_naming_the_gated_linear_unit():
    # torch.nn.GLU as the legacy exporter writes it (the onnx wheel's test_GLU): Split, Sigmoid of the second half,
    # Mul of the halves
    m = _model([helper.make_node("Split", ["x"], ["a", "b"], axis=-1, num_outputs=2, name="halves"),
                helper.make_node("Sigmoid", ["b"], ["g"]), helper.make_node("Mul", ["a", "g"], ["y"], name="glu")],
               {"x": (6,)}, ["y"])
    with pytest.raises(UnsupportedOpError) as e:
        load_onnx(m)
    text = str(e.value)
    assert "Mul x1 (node 'glu'): this Mul is a gated linear unit (torch.nn.GLU: 'a' * sigmoid('b')" in text
    assert "Split 'halves'" in text and "no core computes the product of two values" in text
    assert "GLU cannot run on the cores" in text


@pytest.mark.parametrize("log_input", [True, False])
def test_poisson_nll_loss_is_refused_as_a_training_loss(log_input):
    # torch.nn.PoissonNLLLoss(reduction='none') as exported: exp(x) - t * x, or x - t * log(x + eps)
    t = _c("target", np.ones((1, 4)))
    if log_input:
        nodes = [helper.make_node("Exp", ["x"], ["e"]), helper.make_node("Mul", ["target", "x"], ["tx"]),
                 helper.make_node("Sub", ["e", "tx"], ["y"])]
    else:
        nodes = [helper.make_node("Add", ["x", "eps"], ["xe"]), helper.make_node("Log", ["xe"], ["l"]),
                 helper.make_node("Mul", ["target", "l"], ["tl"]), helper.make_node("Sub", ["x", "tl"], ["y"])]
    m = _model(nodes, {"x": (4,)}, ["y"], [t, _c("eps", 1e-8)])
    with pytest.raises(UnsupportedOpError) as e:
        load_onnx(m)
    text = str(e.value)
    assert text.startswith(f"{len(nodes)} unsupported node(s)")
    assert text.count("torch.nn.PoissonNLLLoss") == len(nodes) and "a training loss, not an inference op" in text
    assert "export the model without its loss" in text


def test_standalone_batchnorm_is_a_scale_layer():
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "g", "b", "m", "v"], ["y"], epsilon=0.0)]
    g, cm = check(nodes, {"x": (2, 2, 2)}, ["y"], [_c("g", [2, 3]), _c("b", [1, -1]), _c("m", [0, 1]),
                                                   _c("v", [1, 1])])
    assert _ops(g) == ["relu", "batchnorm"]
    assert [l["op"] for l in cm.meta["layers"]] == ["relu", "batchnorm"]


def test_chained_scale_layers_are_one_layer():
    # DenseNet-121 as the onnx wheel ships it: BatchNormalization, then Mul and Add by per-channel constants, then
    # ReLU, after a Concat: three per-channel affine maps compose into one scale layer (exact in float)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "g", "b", "m", "v"], ["n"], epsilon=0.0),
             helper.make_node("Mul", ["n", "w"], ["nw"]), helper.make_node("Add", ["nw", "c"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    g, cm = check(nodes, {"x": (2, 2, 2)}, ["y"], [_c("g", [2, 3]), _c("b", [1, -1]), _c("m", [0, 1]),
                                                   _c("v", [1, 1]), _c("w", [[[-1]], [[2]]]), _c("c", [[[3]], [[1]]])])
    assert _ops(g) == ["relu", "batchnorm", "relu"]
    bn = g.nodes[1]
    # channel 0: (x * 2 + 1) * -1 + 3 = -2x + 2; channel 1: ((x - 1) * 3 - 1) * 2 + 1 = 6x - 7
    assert bn.params["scale"].tolist() == [-2, 6] and bn.params["bias"].tolist() == [2, -7]
    assert [l["op"] for l in cm.meta["layers"]] == ["relu", "batchnorm+relu"]


def test_dropout_is_the_identity():
    check([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Dropout", ["r"], ["y", "mask"])], {"x": (3,)},
          ["y"])


# ----------------------------------------------------------------- reductions
@pytest.mark.parametrize("axes,keep", [([2, 3], 1), ([1], 0), ([-1], 1)])
def test_reduce_mean(axes, keep):
    check([helper.make_node("ReduceMean", ["x", "ax"], ["y"], keepdims=keep)], {"x": (3, 2, 4)}, ["y"],
          [_c("ax", axes, np.int64)], exact=False)


def test_reduce_sum_and_max_and_global_pools():
    nodes = [helper.make_node("ReduceSum", ["x", "ax"], ["s"], keepdims=0),
             helper.make_node("ReduceMax", ["x"], ["m"], axes=[1], keepdims=1),
             helper.make_node("GlobalMaxPool", ["x"], ["gm"]),
             helper.make_node("GlobalAveragePool", ["x"], ["ga"])]
    check(nodes, {"x": (2, 3, 2)}, ["s", "m", "gm", "ga"], [_c("ax", [2], np.int64)], opset=17, exact=False)


def test_max_reductions_are_exact():
    # a max moves values, it computes none: the chip equals onnxruntime bit for bit (the test above allows the
    # sums' and means' quantisation to the maxima too)
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], axes=[1], keepdims=1),
             helper.make_node("ReduceMax", ["x"], ["m2"], axes=[1, 3], keepdims=0),
             helper.make_node("GlobalMaxPool", ["x"], ["gm"])]
    check(nodes, {"x": (2, 3, 2)}, ["m", "m2", "gm"], opset=17)


def test_reduce_over_the_batch_axis_is_refused():
    m = _model([helper.make_node("ReduceMean", ["x", "ax"], ["y"])], {"x": (3,)}, ["y"], [_c("ax", [0], np.int64)])
    with pytest.raises(UnsupportedOpError, match="batch axis"):
        load_onnx(m)


# ----------------------------------------------------------------- ConvTranspose
@pytest.mark.parametrize("attrs", [dict(), dict(strides=[2, 2]), dict(strides=[2, 3], pads=[1, 0, 0, 1]),
                                   dict(strides=[2, 2], output_padding=[1, 1], dilations=[1, 2]),
                                   dict(group=2, strides=[2, 1])])
def test_conv_transpose(attrs):
    rng = np.random.default_rng(3)
    group = attrs.get("group", 1)
    W = rng.integers(-2, 3, size=(4, 3 // 1 if group == 1 else 1, 3, 2)).astype(np.float32)
    b = np.arange(W.shape[1] * group, dtype=np.float32)
    check([helper.make_node("ConvTranspose", ["x", "W", "b"], ["y"], **attrs)], {"x": (4, 3, 3)}, ["y"],
          [_c("W", W), _c("b", b)])


# ----------------------------------------------------------------- host ops and LRN
def test_softmax_logsoftmax_argmax_run_on_the_host_after_the_chip():
    W = np.arange(12, dtype=np.float32).reshape(4, 3) / 4 - 1
    nodes = [helper.make_node("MatMul", ["x", "W"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["p"]),
             helper.make_node("LogSoftmax", ["logits"], ["lp"]),
             helper.make_node("ArgMax", ["logits"], ["k"], axis=1, keepdims=0)]
    m = _model(nodes, {"x": (4,)}, ["p", "lp", "k"], [_c("W", W)], types={"k": TensorProto.INT64})
    x = _ints((5, 4))
    p, lp, k = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})
    cm = nmc.compile(m, calib={"x": x})
    assert cm.meta["host"]["outputs"] == ["p", "lp", "k"] and cm.meta["host"]["chip_only"] == ["logits"]
    out = nmc.emulate(cm, {"x": x}).outputs
    assert set(out) == {"p", "lp", "k"}
    np.testing.assert_array_equal(out["k"], k)
    step = np.abs(x @ W).max() / 127  # the logits leave the chip as int8 of their range: each within half a step
    np.testing.assert_allclose(out["lp"], lp, atol=2 * step)  # (log-)softmax moves by at most twice that
    np.testing.assert_allclose(out["p"], p, atol=2 * step)


def test_a_host_op_feeding_the_chip_is_refused():
    nodes = [helper.make_node("Softmax", ["x"], ["p"]), helper.make_node("Relu", ["p"], ["y"], name="after")]
    with pytest.raises(UnsupportedOpError, match="host op"):
        nmc.compile(_model(nodes, {"x": (3,)}, ["y"]), calib={"x": _ints((2, 3))})


def test_lrn_runs_on_the_cores_and_the_identity_approximation_stays_an_option():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("LRN", ["r"], ["y"], name="norm1", size=3)]
    m = _model(nodes, {"x": (3, 2, 2)}, ["y"])
    g = load_onnx(m)  # (its accuracy: tests/frontend/test_lrn.py)
    assert "nmc.approximated" not in g.metadata and [n.attrs["fn"] for n in g.nodes if n.op == "lut"] == \
        ["square", "log", "lrn_scale", "exp"]
    g = load_onnx(m, approximate={"LRN": "identity"})
    assert json.loads(g.metadata["nmc.approximated"]) == [{"node": "norm1", "op": "LRN", "as": "identity"}]
    cm = nmc.compile(g, calib={"x": _ints((2, 3, 2, 2))})
    assert any("LRN node 'norm1' is approximated as identity" in w for w in cm.meta["compile"]["warnings"])
    with pytest.raises(ModelError, match="approximation LRN='zero' is unknown; nmc offers {'LRN': \\['identity'\\]}"):
        load_onnx(m, approximate={"LRN": "zero"})


def test_cli_approximate_option(tmp_path, capsys):
    from nmc import cli
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("LRN", ["r"], ["y"], name="norm1", size=3)]
    onnx.save(_model(nodes, {"x": (3, 2, 2)}, ["y"]), str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "calib.npz", x=_ints((2, 3, 2, 2)))
    args = ["compile", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz"), "-o", str(tmp_path / "m.nmc")]
    assert cli.main(args + ["--chip", "loihi"]) != 0  # no look-up table: the message names the approximation
    assert "--approximate LRN=identity" in capsys.readouterr().err
    assert cli.main(args) == 0 and "approximated" not in capsys.readouterr().err
    assert cli.main(args + ["--approximate", "LRN=identity"]) == 0
    assert "LRN node 'norm1' is approximated as identity" in capsys.readouterr().err


# ----------------------------------------------------------------- preparation
def test_an_opset_9_model_is_converted():
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Unsqueeze", ["r"], ["u"], axes=[1]),
             helper.make_node("Pad", ["u"], ["y"], pads=[0, 0, 1, 0, 0, 1], mode="constant", value=0.0)]
    check(nodes, {"x": (3,)}, ["y"], opset=9)


def test_constant_folding_of_a_weight_computed_by_nodes():
    # W = Transpose(ConstantOfShape([3, 2]) + 1) computed in the graph, not stored
    nodes = [helper.make_node("ConstantOfShape", ["shp"], ["z"], value=numpy_helper.from_array(np.ones(1, np.float32))),
             helper.make_node("Add", ["z", "z"], ["two"]),
             helper.make_node("Transpose", ["two"], ["W"]),
             helper.make_node("MatMul", ["x", "W"], ["y"])]
    g, _ = check(nodes, {"x": (2,)}, ["y"], [_c("shp", [3, 2], np.int64)])
    assert _ops(g) == ["dense"]


# ----------------------------------------------------------------- other ranks, and views in real patterns
@pytest.mark.parametrize("node,inputs,inits", [
    (helper.make_node("Conv", ["x", "W", "b"], ["y"], pads=[1, 2], strides=[2], dilations=[2]), {"x": (2, 9)},
     [_c("W", np.arange(12).reshape(3, 2, 2) % 5 - 2), _c("b", [1, 0, -1])]),
    (helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 0, 0, 0, 1, 1], group=2), {"x": (2, 3, 3, 4)},
     [_c("W", np.arange(4 * 1 * 2 * 2 * 2).reshape(4, 1, 2, 2, 2) % 3 - 1)]),
    (helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2, 2], strides=[1, 2, 2], pads=[0, 1, 1, 0, 1, 1],
                      count_include_pad=1), {"x": (2, 3, 4, 4)}, []),
])
def test_1d_and_3d_linear_ops_become_dense_layers(node, inputs, inits):
    g, _ = check([node], inputs, ["y"], inits, exact=node.op_type == "Conv")
    assert "dense" in _ops(g)


@pytest.mark.parametrize("attrs,shape", [
    (dict(kernel_shape=[3], strides=[2], pads=[1, 1]), (2, 9)),
    (dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2], ceil_mode=1), (2, 3, 5, 5)),
    (dict(kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1]), (2, 5, 5)),
    (dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), (1, 6, 6)),
])
def test_maxpool_of_any_rank_with_dilations_and_ceil_mode(attrs, shape):
    # padding never wins a max (ONNX pads MaxPool with -inf): inputs all negative show it
    nodes = [helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Sub", ["r", "nine"], ["m"]),                 # values in [-9, -1]
             helper.make_node("MaxPool", ["m"], ["y"], **attrs)]
    check(nodes, {"x": shape}, ["y"], [_c("nine", 9.0)])


def test_even_kernel_with_symmetric_padding_c2sp():
    # Wu et al., even-sized kernels: split the channels in 4 groups, pad each at another corner, concat, 2x2 conv
    corners = [[0, 0, 1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1, 1]]
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Split", ["r", "four"], [f"g{i}" for i in range(4)], axis=1)]
    nodes += [helper.make_node("Pad", [f"g{i}", f"p{i}"], [f"q{i}"]) for i in range(4)]
    nodes += [helper.make_node("Concat", [f"q{i}" for i in range(4)], ["cat"], axis=1),
              helper.make_node("Conv", ["cat", "W"], ["y"])]
    W = np.arange(3 * 8 * 2 * 2).reshape(3, 8, 2, 2) % 5 - 2
    g, cm = check(nodes, {"x": (8, 4, 4)}, ["y"], [_c("four", [2, 2, 2, 2], np.int64), _c("W", W)] +
                  [_c(f"p{i}", c, np.int64) for i, c in enumerate(corners)])
    assert _ops(g).count("index") == 9 and [l["op"] for l in cm.meta["layers"]] == ["relu", "conv"]  # 4 + 4 + 1 views, no copies


def test_concatenated_spikes_feed_a_spiking_layer():
    b = ModelBuilder("cat", num_steps=5)
    x = b.input("x", (3,), kind="step")
    s1, _ = b.lif(b.gemm(x, np.array([[1, 1, 0], [0, 1, 1]], float), name="fa"), "a", threshold=1.0)
    s2, _ = b.lif(b.gemm(x, np.array([[2, 0, -1]], float), name="fb"), "b", threshold=1.0)
    m = b.build()
    cat = helper.make_node("Concat", [s1, s2], ["cat"], axis=1)
    m.graph.node.append(cat)
    g2 = helper.make_node("Gemm", ["cat", "W3"], ["h"], transB=1)
    m.graph.node.append(g2)
    m.graph.initializer.append(_c("W3", [[1, -1, 1], [1, 1, 1]]))
    m.graph.node.append(helper.make_node("LIF", ["h", "c.v"], ["c.s", "c.v.next"], domain="nmc", threshold=2.0))
    m.graph.input.append(_vi("c.v", ["N", 2]))
    m.graph.output.append(_vi("c.s", ["N", 2]))
    m.graph.output.append(_vi("c.v.next", ["N", 2]))
    meta = {p.key: p.value for p in m.metadata_props}
    st = json.loads(meta["nmc.state"]) + [["c.v", "c.v.next", 0.0]]
    for p in m.metadata_props:
        if p.key == "nmc.state":
            p.value = json.dumps(st)
        if p.key == "nmc.outputs":
            p.value = json.dumps(["c.s"])
    xs = {"x": (np.random.default_rng(4).random((5, 3, 3)) < 0.6).astype(float)}
    g = load_onnx(m)
    ref = run_float(g, xs)["c.s"]
    cm = nmc.compile(g)
    np.testing.assert_array_equal(nmc.emulate(cm, xs).outputs["c.s"], ref)
    assert ref.sum() > 0 and "index" not in [l["op"] for l in cm.meta["layers"]]


def test_identity_of_a_weight_feeding_a_gemm():
    # what the legacy exporter writes for a parameter used twice (snnTorch's lif1.beta): Identity(weight) -> Gemm
    nodes = [helper.make_node("Identity", ["lif1.W"], ["w_copy"]),
             helper.make_node("Gemm", ["x", "w_copy"], ["y"], transB=1)]
    g, _ = check(nodes, {"x": (3,)}, ["y"], [_c("lif1.W", [[1, 0, 2], [0, -1, 1]])])
    assert _ops(g) == ["dense"]


# ----------------------------------------------------------------- max pooling wider than a core's axons
@pytest.mark.parametrize("attrs,shape,layers", [
    # 20 x 20 = 400 inputs > 256 axons (tianjic): a 20 x 1 then a 1 x 20 pooling, padding split between them
    (dict(kernel_shape=[20, 20], strides=[4, 4], pads=[2, 3, 1, 0]), (2, 30, 31), 2),
    # one axis of 300: each window as 2 rows of 150, then the max of the 2 row maxima
    (dict(kernel_shape=[1, 300], strides=[1, 70], pads=[0, 5, 0, 9]), (2, 2, 420), 2),
    # a dilated 17 x 17 window (ceil_mode: the frontend's window rows [1, 289]) chunked 145 + 144 (a repeat pads it)
    (dict(kernel_shape=[17, 17], dilations=[2, 1], strides=[3, 5], ceil_mode=1), (1, 40, 22), 2),
])
def test_maxpool_wider_than_a_core_is_split_exactly(attrs, shape, layers):
    nodes = [helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Sub", ["r", "nine"], ["m"]),                 # values in [-9, -1]: padding never wins
             helper.make_node("MaxPool", ["m"], ["y"], **attrs)]
    g, cm = check(nodes, {"x": shape}, ["y"], [_c("nine", 9.0)], B=2)
    pools = [l for l in cm.meta["layers"] if "max" in l["op"]]
    assert len(pools) == layers, cm.meta["layers"]


def test_global_max_pool_of_a_large_map_is_split_exactly():
    check([helper.make_node("GlobalMaxPool", ["x"], ["y"])], {"x": (3, 24, 24)}, ["y"], B=2)  # 576 > 256 axons


def test_split_wide_maxpools_in_float_on_random_values():
    # against the unsplit graph's float semantics (exact: max of the same values), with cores of 7 inputs:
    # 60 x 33 windows -> a 60 x 1 pass (rows of 7, then 9 row maxima > 7: rows of 5, then 2) and a 1 x 33 pass
    # (rows of 7, then 5): five max poolings
    from nmc.ir import split_wide_maxpools
    b = ModelBuilder("wide")
    x = b.input("x", (2, 70, 45))
    b.output(b.maxpool(x, (60, 33), (3, 4), pads=(2, 1, 3, 0)))
    g = load_onnx(b.build())
    s = split_wide_maxpools(g, 7)
    kernels = [n.attrs["kernel"] for n in s.nodes if n.op == "maxpool"]
    assert kernels == [[1, 7], [1, 5], [1, 2], [1, 7], [1, 5]]
    assert split_wide_maxpools(g, 60 * 33) is g
    xs = {"x": np.random.default_rng(0).standard_normal((3, 2, 70, 45))}
    y = g.outputs[0]
    np.testing.assert_array_equal(run_float(s, xs)[y], run_float(g, xs)[y])


# ----------------------------------------------------------------- an embedding: one-hot on the host, table on chip
def _embedding_model(table, n_ids, after=()):
    g = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed"), *after], "emb",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", n_ids])],
                          [helper.make_value_info(after[-1].output[0] if after else "emb",
                                                  helper.make_tensor_type_proto(TensorProto.FLOAT, None))],
                          [_c("table", table)])
    return onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))


def test_embedding_is_a_host_one_hot_encoder_and_a_dense_layer_of_the_table():
    table = np.arange(6 * 4).reshape(6, 4) % 7 - 3.0  # integers in [-3, 3]: the weights quantise exactly
    m = _embedding_model(table, 5)
    ids = np.array([[0, 5, 2, 2, -1], [3, 1, 4, 0, -6]], np.int64)  # negative: from the end, as Gather
    ref = ort.InferenceSession(m.SerializeToString()).run(["emb"], {"ids": ids})[0]
    g = load_onnx(m)
    assert _ops(g) == ["onehot_encode", "reshape", "dense", "reshape"]
    assert g.inputs == {"ids": "static", "nmc.t": "step"}
    np.testing.assert_array_equal(run_float(g, {"ids": ids})["emb"], ref)
    for calib in ({"ids": ids}, None):  # one-hot spikes need no calibration; the table's rows are the weights
        cm = nmc.compile(m, calib=calib)
        assert [e["op"] for e in cm.meta["host_encoders"]] == ["OneHotEncode"]
        np.testing.assert_array_equal(nmc.emulate(cm, {"ids": ids}).outputs["emb"], ref)
    with pytest.raises(nmc.errors.InputError, match=r"index 6 at \[0, 1\] is not an integer from -6 to 5 \(the table "
                                                     r"has 6 rows\)"):
        nmc.emulate(cm, {"ids": np.array([[0, 6, 0, 0, 0]])})


def test_embedding_rows_calibration_never_visited_are_not_clipped():
    # calibration sees rows 0 and 1 only (values within 0.2); row 5 holds 1.0: the layer's range stays the table's
    table = np.full((6, 4), 0.125)
    table[1] = -0.2
    table[5] = [1.0, -0.875, 0.75, 0.5]
    m = _embedding_model(table, 2)
    cm = nmc.compile(m, calib={"ids": np.array([[0, 1], [1, 0]])})
    out = nmc.emulate(cm, {"ids": np.array([[5, 1]])}).outputs["emb"]
    np.testing.assert_allclose(out[0], table[[5, 1]], atol=1.875 / 255)  # half a step of the table's range


def test_embedding_feeding_a_layer_within_one_quantisation_step():
    rng = np.random.default_rng(5)
    table = rng.standard_normal((10, 3))
    after = [helper.make_node("Flatten", ["emb"], ["f"]), helper.make_node("Gemm", ["f", "W"], ["y"], transB=1)]
    m = _embedding_model(table, 4, after)
    m.graph.initializer.append(_c("W", rng.standard_normal((2, 12))))
    ids = rng.integers(0, 10, size=(16, 4))
    ref = ort.InferenceSession(m.SerializeToString()).run(["y"], {"ids": ids})[0]
    out = nmc.emulate(nmc.compile(m, calib={"ids": ids}), {"ids": ids}).outputs["y"]
    np.testing.assert_allclose(out, ref, atol=np.abs(ref).max() / 127 * 2)


def test_embedding_by_computed_indices_is_refused():
    m = _embedding_model(np.eye(3), 2)
    m.graph.node.insert(0, helper.make_node("Unsqueeze", ["ids", "ax"], ["ids2"]))
    m.graph.node.insert(1, helper.make_node("Squeeze", ["ids2", "ax"], ["ids3"]))
    m.graph.node[2].input[1] = "ids3"
    m.graph.initializer.append(_c("ax", [2], np.int64))
    with pytest.raises(UnsupportedOpError, match="by computed indices 'ids3': the cores cannot address by value"):
        load_onnx(m)


@pytest.mark.parametrize("seed", range(6))
def test_split_wide_maxpools_on_random_windows_equals_onnxruntime(seed):
    # random windows, strides (overlapping and gapped) and pads, cores of 5 inputs: the split graph's float run
    # equals onnxruntime's MaxPool exactly (a max of the same float32 values)
    from nmc.ir import split_wide_maxpools
    rng = np.random.default_rng(seed)
    H, W = (int(v) for v in rng.integers(6, 20, size=2))
    kh, kw = int(rng.integers(1, min(H, 9) + 1)), int(rng.integers(2, min(W, 9) + 1))
    sh, sw = (int(v) for v in rng.integers(1, 5, size=2))
    pads = [int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)),
            int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))]
    m = _model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[kh, kw], strides=[sh, sw], pads=pads)],
               {"x": (2, H, W)}, ["y"])
    x = rng.standard_normal((3, 2, H, W)).astype(np.float32)
    ref = ort.InferenceSession(m.SerializeToString()).run(["y"], {"x": x})[0]
    s = split_wide_maxpools(load_onnx(m), 5)
    assert all(n.attrs["kernel"][0] * n.attrs["kernel"][1] <= 5 for n in s.nodes if n.op == "maxpool")
    np.testing.assert_array_equal(run_float(s, {"x": x})["y"], ref, err_msg=f"{(H, W)} {(kh, kw)} {(sh, sw)} {pads}")
