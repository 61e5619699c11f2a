"""Hand-written ONNX graphs (the spellings exporters use) convert and run like onnxruntime."""
from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from nmc.frontend import load_onnx, run_float, run_onnxruntime
from nmc.frontend.nmc_ops import function_protos

pytest.importorskip("onnxruntime")
rng = np.random.default_rng(7)


def vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def init(name, a, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(a, dtype=dtype), name)


def model(nodes, inputs, outputs, inits=(), meta=None, functions=True):
    g = helper.make_graph(nodes, "m", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("nmc", 1)],
                          functions=function_protos() if functions else [])
    if meta:
        helper.set_model_props(m, meta)
    return m


def compare(m, inputs, steps=3):
    g = load_onnx(m)
    a, r = run_float(g, inputs, steps=steps), run_onnxruntime(m, inputs, steps=steps)
    assert set(a) == set(r)
    for k in a:
        np.testing.assert_allclose(a[k], r[k], rtol=1e-5, atol=1e-5, err_msg=k)
    return g, a


def test_dense_spellings():
    const_w = helper.make_node("Constant", [], ["Wc"], value=init("Wc", rng.normal(size=(4, 3))))
    nodes = [
        const_w,
        helper.make_node("Gemm", ["x", "Wc"], ["g1"], name="g_transB0", alpha=0.5, beta=2.0),  # B [in, out]
        helper.make_node("Gemm", ["x", "Wt", "C"], ["g2"], name="g_biasrow", transB=1, beta=0.5),
        helper.make_node("MatMul", ["x", "Wm"], ["m1"], name="mm"),
        helper.make_node("Add", ["bm", "m1"], ["m2"], name="mm_bias"),  # constant first: folded into mm
        helper.make_node("Add", ["g2", "m2"], ["y"], name="sum"),
        helper.make_node("Relu", ["y"], ["z"], name="relu"),
    ]
    m = model(nodes, [vi("x", ["N", 4])], [vi("g1", ["N", 3]), vi("z", ["N", 5])],
              [init("Wt", rng.normal(size=(5, 4))), init("C", rng.normal(size=(1, 5))),
               init("Wm", rng.normal(size=(4, 5))), init("bm", rng.normal(size=(5,)))])
    g, out = compare(m, {"x": rng.normal(size=(2, 4))})
    assert [n.op for n in g.nodes] == ["dense", "dense", "dense", "add", "relu"]
    assert g.node("mm").outputs == ["m2"]  # the constant Add became its bias
    assert out["z"].shape == (2, 5) and all(n.stage == "static" for n in g.nodes)


def test_reshape_flatten_gap_spellings():
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["gp"], name="gap"),
        helper.make_node("Flatten", ["x"], ["f"], name="flat"),
        helper.make_node("Reshape", ["f", "sh1"], ["r1"], name="rs_minus1_first"),  # [-1, 3, 4, 4]
        helper.make_node("Reshape", ["r1", "sh2"], ["r2"], name="rs_zero"),  # [0, 6, -1]
        helper.make_node("AveragePool", ["r1"], ["ap"], name="ap", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         count_include_pad=1, strides=[2, 2]),
        helper.make_node("MaxPool", ["r1"], ["mp"], name="mp", kernel_shape=[2, 3], pads=[0, 1, 1, 1]),
        helper.make_node("Identity", ["mp"], ["mpi"], name="idn"),
    ]
    m = model(nodes, [vi("x", ["N", 3, 4, 4])],
              [vi("gp", ["N", 3, 1, 1]), vi("r2", ["N", 6, 8]), vi("ap", ["N", 3, 2, 2]), vi("mpi", ["N", 3, 4, 4])],
              [init("sh1", [-1, 3, 4, 4], np.int64), init("sh2", [0, 6, -1], np.int64)])
    g, out = compare(m, {"x": rng.normal(size=(2, 3, 4, 4))})
    assert g.tensors["r2"].shape == (6, 8)


def test_nmc_ops_without_shipped_functions_are_accepted():
    node = helper.make_node("LIF", ["x", "v"], ["s", "v.next"], name="l", domain="nmc", beta=0.75, reset_delay=1)
    cnt = helper.make_node("SpikeCount", ["s", "c"], ["c.next"], name="cnt", domain="nmc")
    m = model([node, cnt], [vi("x", ["N", 3]), vi("v", ["N", 3]), vi("c", ["N", 3])],
              [vi("s", ["N", 3]), vi("v.next", ["N", 3]), vi("c.next", ["N", 3])],
              meta={"nmc.step_inputs": json.dumps(["x"]), "nmc.num_steps": "5"}, functions=False)
    g = load_onnx(m)
    assert g.num_steps == 5
    x = rng.normal(size=(5, 2, 3)) * 2
    a, r = run_float(g, {"x": x}), run_onnxruntime(m, {"x": x})
    np.testing.assert_array_equal(a["s"], r["s"])
    np.testing.assert_array_equal(a["c.next"], r["c.next"])
    np.testing.assert_array_equal(a["c.next"][-1], a["s"].sum(axis=0))
