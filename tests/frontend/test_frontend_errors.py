"""load_onnx refuses bad models with messages naming the node/value and the fix."""
from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from nmc.frontend import ModelBuilder, load_onnx, run_float
from nmc.frontend.nmc_ops import function_protos
from nmc.errors import (AttributeSchemaError, ModelError, NmcError, ShapeError, UnsupportedOpError)


def vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def make(nodes, inputs, outputs, inits=(), opset=19, meta=None, nmc=True):
    g = helper.make_graph(nodes, "m", inputs, outputs, list(inits))
    ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("nmc", 1)] if nmc else [])
    m = helper.make_model(g, opset_imports=ops, functions=function_protos() if nmc else [])
    if meta:
        helper.set_model_props(m, meta)
    return m


def W(*shape, name="W"):
    return numpy_helper.from_array(np.ones(shape, dtype=np.float32), name)


def test_unsupported_ops_are_listed_at_once():
    nodes = [
        helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1),
        helper.make_node("Erf", ["h"], ["a"], name="erf1"),
        helper.make_node("Sin", ["a"], ["b"], name="sin_after_erf"),  # downstream of a failure: listed too
        helper.make_node("Cos", ["h"], ["c"], name="cos"),
        helper.make_node("Conv", ["x4", "K"], ["d"], name="same_conv", auto_pad="SAME_UPPER"),
        helper.make_node("MaxPool", ["x4"], ["e", "e_idx"], name="idx_pool", kernel_shape=[2, 2]),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "r"], ["f"], name="square"),
    ]
    m = make(nodes, [vi("x", ["N", 3]), vi("x4", ["N", 1, 4, 4])],
             [vi("b", ["N", 2]), vi("c", ["N", 2]), vi("d", ["N", 1, 4, 4]), vi("e", ["N", 1, 2, 2]),
              vi("f", ["N", 2])],
             [W(2, 3), W(1, 1, 3, 3, name="K")], nmc=False)
    with pytest.raises(UnsupportedOpError) as ei:
        load_onnx(m)
    e = ei.value
    assert [n[0] for n in e.nodes] == ["erf1", "sin_after_erf", "cos", "same_conv", "idx_pool", "square"]
    msg = str(e)
    assert msg.startswith("6 unsupported node(s) of 6 op type(s):")
    assert "  - Erf x1 (node 'erf1'): no converter for this op" in msg
    assert "  - Sin x1 (node 'sin_after_erf'): no converter" in msg
    assert "auto_pad=SAME_UPPER" in msg and "explicit pads" in msg
    assert "Indices output" in msg
    assert "product of two activations" in msg
    assert "Gemm" in e.supported and "nmc::LIF" in e.supported
    assert isinstance(e, ModelError) and isinstance(e, ValueError)


def test_unsupported_nodes_are_grouped_by_op_with_counts():
    # 5 Erf nodes in a chain behind a supported Gemm: one line, a count and the first three names
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h0"], name="fc", transB=1)]
    for i in range(5):
        nodes.append(helper.make_node("Erf", [f"h{i}"], [f"h{i + 1}"], name=f"erf{i}"))
    m = make(nodes, [vi("x", ["N", 3])], [vi("h5", ["N", 2])], [W(2, 3)], nmc=False)
    with pytest.raises(UnsupportedOpError) as ei:
        load_onnx(m)
    msg = str(ei.value)
    assert "5 unsupported node(s) of 1 op type(s):" in msg
    assert "  - Erf x5 (nodes 'erf0', 'erf1', 'erf2' and 2 more): no converter for this op" in msg
    assert len(ei.value.nodes) == 5


def test_misspelt_lif_attribute_suggests_the_name():
    b = ModelBuilder("m")
    x = b.input("x", (3,))
    s, _ = b.lif(x, "layer1")
    b.output(s)
    m = b.build()
    node = next(n for n in m.graph.node if n.op_type == "LIF")
    a = next(a for a in node.attribute if a.name == "threshold")
    a.name = "treshold"
    with pytest.raises(AttributeSchemaError) as ei:
        load_onnx(m)
    msg = str(ei.value)
    assert "'layer1'" in msg and "'treshold'" in msg and "did you mean 'threshold'" in msg


@pytest.mark.parametrize("attr,value,expect", [
    ("threshold", 0.0, "threshold=0.0 is out of range; it must be > 0"),
    ("beta", 1.5, "beta=1.5 is out of range; it must be >= 0 and <= 1"),
    ("reset_mode", "soft", "one of 'subtract', 'zero', 'none'"),
    ("spike_ge", 2, "one of 0, 1"),
    ("threshold", 1, "has type int, expected float"),
])
def test_bad_lif_attribute_values(attr, value, expect):
    node = helper.make_node("LIF", ["x", "v"], ["s", "v.next"], name="n1", domain="nmc", **{attr: value})
    m = make([node], [vi("x", ["N", 2]), vi("v", ["N", 2])], [vi("s", ["N", 2]), vi("v.next", ["N", 2])])
    with pytest.raises(AttributeSchemaError) as ei:
        load_onnx(m)
    assert expect in str(ei.value) and "'n1'" in str(ei.value)


def test_fixed_batch_4_is_stripped_and_run_per_sample():
    # torch exports with the example's batch (4 here); nmc runs one sample at a time, so [4, -1] keeps the batch
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="r"),
             helper.make_node("Reshape", ["r", "shape"], ["y"], name="flat")]
    m = make(nodes, [vi("x", [4, 3, 2])], [vi("y", [4, 6])], [numpy_helper.from_array(np.array([4, -1], np.int64),
                                                                                      "shape")], nmc=False)
    g = load_onnx(m)
    assert g.tensors["x"].shape == (3, 2) and g.tensors["y"].shape == (6,)
    x = np.arange(-12, 12, dtype=float).reshape(4, 3, 2)
    np.testing.assert_array_equal(run_float(g, {"x": x})["y"], np.maximum(x, 0).reshape(4, 6))


def test_reshape_that_merges_a_fixed_batch_is_refused():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="merge")]
    m = make(nodes, [vi("x", [4, 3])], [vi("y", [1, 12])], [numpy_helper.from_array(np.array([1, -1], np.int64),
                                                                                    "shape")], nmc=False)
    with pytest.raises(UnsupportedOpError, match="does not keep the batch dimension first"):
        load_onnx(m)


def test_inputs_with_different_fixed_batches_are_refused():
    nodes = [helper.make_node("Add", ["x", "z"], ["y"], name="add")]
    m = make(nodes, [vi("x", [4, 3]), vi("z", [2, 3])], [vi("y", [4, 3])], nmc=False)
    with pytest.raises(ShapeError, match="different fixed batch sizes"):
        load_onnx(m)


def test_batch_dim_1_is_accepted():
    m = make([helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", [1, 3])], [vi("y", [1, 3])], nmc=False)
    g = load_onnx(m)
    assert g.tensors["x"].shape == (3,)


def test_lif_without_state_pair():
    node = helper.make_node("LIF", ["x", "v"], ["s", "v_out"], name="lif7", domain="nmc")
    m = make([node], [vi("x", ["N", 2]), vi("v", ["N", 2])], [vi("s", ["N", 2]), vi("v_out", ["N", 2])])
    with pytest.raises(ModelError) as ei:
        load_onnx(m)
    msg = str(ei.value)
    assert "'lif7'" in msg and "'v' is not a state input" in msg and "nmc.state" in msg and "'v.next'" in msg


def test_state_metadata_names_missing_output():
    node = helper.make_node("LIF", ["x", "v"], ["s", "v_out"], name="lif7", domain="nmc")
    m = make([node], [vi("x", ["N", 2]), vi("v", ["N", 2])], [vi("s", ["N", 2]), vi("v_out", ["N", 2])],
             meta={"nmc.state": json.dumps([["v", "v.nxt", 0.0]])})
    with pytest.raises(ModelError) as ei:
        load_onnx(m)
    msg = str(ei.value)
    assert "'v' has no pair" in msg and "'v.nxt'" in msg and "fix nmc.state" in msg


def test_naming_fallback_pairs_states():
    node = helper.make_node("LIF", ["x", "v"], ["s", "v.next"], name="lif7", domain="nmc", threshold=0.5)
    m = make([node], [vi("x", ["N", 2]), vi("v", ["N", 2])], [vi("s", ["N", 2]), vi("v.next", ["N", 2])])
    g = load_onnx(m)
    assert [(s.input, s.output) for s in g.states] == [("v", "v.next")]
    assert g.node("lif7").attrs["threshold"] == 0.5 and g.node("lif7").attrs["reset_mode"] == "subtract"


@pytest.mark.parametrize("data", [b"definitely not an onnx file \x00\xff\x13", b""])
def test_garbage_bytes(data, tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(data)
    with pytest.raises(ModelError) as ei:
        load_onnx(p)
    assert "not an ONNX model" in str(ei.value) and "re-export" in str(ei.value)


def test_truncated_model():
    b = ModelBuilder("m")
    x = b.input("x", (30,))
    b.output(b.gemm(x, np.ones((20, 30))))
    data = b.build().SerializeToString()
    with pytest.raises(ModelError) as ei:
        load_onnx(data[: len(data) // 2])
    assert "re-export" in str(ei.value)


def test_missing_file():
    with pytest.raises(ModelError) as ei:
        load_onnx("/nonexistent/model.onnx")
    assert "check the path" in str(ei.value)


def test_non_constant_matmul_weight():
    m = make([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [vi("x", ["N", 3]), vi("w", ["N", 3, 2])],
             [vi("y", ["N", 2])], nmc=False)
    with pytest.raises(UnsupportedOpError) as ei:
        load_onnx(m)
    msg = str(ei.value)
    assert "MatMul x1 (node 'mm')" in msg and "'w' is not a constant" in msg and "initializer" in msg


def test_nmc_ops_need_opset_19():
    node = helper.make_node("SpikeCount", ["s", "c"], ["c.next"], name="cnt", domain="nmc")
    g = helper.make_graph([node], "m", [vi("s", ["N", 2]), vi("c", ["N", 2])], [vi("c.next", ["N", 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("nmc", 1)])
    with pytest.raises(ModelError) as ei:
        load_onnx(m)
    assert "opset 17" in str(ei.value) and "opset_version=19" in str(ei.value)


def test_checker_failure_is_a_model_error():
    m = make([helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", ["N", 3])], [vi("y", ["N", 3])], nmc=False)
    m.graph.node[0].input[0] = "nowhere"
    with pytest.raises(ModelError) as ei:
        load_onnx(m)
    assert "onnx.checker" in str(ei.value)


def test_broadcasting_add_of_tensors_expands_the_smaller():
    m = make([helper.make_node("Add", ["a", "b"], ["y"], name="badd")], [vi("a", ["N", 3]), vi("b", ["N", 1])],
             [vi("y", ["N", 3])], nmc=False)
    g = load_onnx(m)
    a, b = np.array([[1.0, 2.0, 3.0]]), np.array([[10.0]])
    np.testing.assert_array_equal(run_float(g, {"a": a, "b": b})["y"], [[11.0, 12.0, 13.0]])


def test_errors_are_nmc_errors():
    with pytest.raises(NmcError):
        load_onnx(b"xx")


def test_unknown_nmc_op_is_listed():
    node = helper.make_node("AdEx", ["x", "w", "v"], ["s", "w.next", "v.next"], name="adex", domain="nmc")
    m = make([node], [vi(n, ["N", 2]) for n in ("x", "w", "v")], [vi(n, ["N", 2]) for n in ("s", "w.next", "v.next")])
    with pytest.raises(UnsupportedOpError, match="nmc::AdEx x1 \\(node 'adex'\\): nmc-domain op not implemented"):
        load_onnx(m)


def test_scan_with_other_nodes_is_refused():
    body = helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "body", [vi("a", ["N", 2])],
                             [vi("b", ["N", 2])])
    nodes = [helper.make_node("Scan", ["X"], ["Y"], name="loop", body=body, num_scan_inputs=1),
             helper.make_node("Relu", ["Y"], ["Z"], name="after")]
    m = make(nodes, [vi("X", [4, "N", 2])], [vi("Z", [4, "N", 2])], nmc=False)
    with pytest.raises(UnsupportedOpError, match="single top-level node"):
        load_onnx(m)
