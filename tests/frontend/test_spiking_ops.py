"""Reading the spiking ops' ONNX: LIFT's per-neuron tensors (constants, shapes, ranges), the encoders' step index,
and the IR they become."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from nmc.errors import AttributeSchemaError, ShapeError, UnsupportedOpError
from nmc.frontend import ModelBuilder, load_onnx


def _lift_model(threshold=(1.0, 2.0, 3.0), beta=1.0):
    b = ModelBuilder("lift", num_steps=4)
    x = b.input("x", (3,), kind="step")
    s, _ = b.lift(b.gemm(x, np.eye(3), name="fc"), "n", threshold=threshold, beta=beta)
    b.output(s)
    return b.build()


def test_lift_tensors_become_per_neuron_params_of_the_ir_node():
    g = load_onnx(_lift_model(beta=0.5))
    n = next(n for n in g.nodes if n.op == "lift")
    assert n.inputs == ["fc", "n.v"]  # the parameter tensors are not activations
    assert n.params["threshold"].tolist() == [1.0, 2.0, 3.0]
    assert n.params["beta"].tolist() == [0.5, 0.5, 0.5]  # a scalar broadcasts to every neuron
    assert n.attrs["reset_mode"] == "subtract"


def _edit_initializer(model: onnx.ModelProto, name: str, value) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for i, t in enumerate(m.graph.initializer):
        if t.name == name:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return m


def test_lift_refuses_out_of_range_wrong_shape_and_computed_parameters():
    with pytest.raises(AttributeSchemaError, match=r"per-neuron parameter beta of neuron 1 is 1\.5.*<= 1"):
        load_onnx(_edit_initializer(_lift_model(), "n.beta", [1.0, 1.5, 0.5]))
    with pytest.raises(AttributeSchemaError, match="threshold of neuron 2 is 0; it must be > 0"):
        load_onnx(_edit_initializer(_lift_model(), "n.threshold", [1.0, 1.0, 0.0]))
    with pytest.raises(ShapeError, match=r"threshold 'n.threshold' of shape \[2\] does not broadcast to the neurons' "
                                         r"shape \[3\]"):
        load_onnx(_edit_initializer(_lift_model(), "n.threshold", [1.0, 2.0]))
    m = _lift_model()
    m.graph.input.append(helper.make_tensor_value_info("thr_in", onnx.TensorProto.FLOAT, ["N", 3]))
    node = next(n for n in m.graph.node if n.op_type == "LIFT")
    node.input[3] = "thr_in"  # a threshold computed at run time cannot be a neuron parameter
    with pytest.raises(UnsupportedOpError, match="per-neuron parameter threshold 'thr_in' is not a constant"):
        load_onnx(m)
    b = ModelBuilder("b")
    with pytest.raises(ShapeError, match="does not broadcast to the layer's shape"):
        b.lift(b.input("x", (3,)), "n", threshold=[1.0, 2.0])


def test_encoders_read_the_step_index_and_become_ir_ops():
    b = ModelBuilder("enc", num_steps=4)
    img = b.input("img", (5,))
    p = b.poisson(img, "p", seed=3)
    s, _ = b.lif(b.gemm(p, np.eye(5), name="fc"), "n")
    b.output(s)
    g = load_onnx(b.build())
    assert g.inputs["nmc.t"] == "step"  # the step index is given every step
    enc = next(n for n in g.nodes if n.op == "poisson_encode")
    assert enc.inputs == ["img", "nmc.t"] and enc.attrs["seed"] == 3 and enc.stage == "step"
    m = b.build()
    m.graph.input.append(helper.make_tensor_value_info("u", onnx.TensorProto.FLOAT, ["N", 1]))
    next(n for n in m.graph.node if n.op_type == "PoissonEncode").input[1] = "u"
    with pytest.raises(UnsupportedOpError, match="must be the step index"):
        load_onnx(m)
    m = b.build()
    vi = next(i for i in m.graph.input if i.name == "nmc.t")
    vi.CopyFrom(helper.make_tensor_value_info("nmc.t", onnx.TensorProto.FLOAT, ["N", 2]))
    with pytest.raises(ShapeError, match=r"'nmc.t' \(the step index\) has shape \[N, 2\]"):
        load_onnx(m)
    b = ModelBuilder("b")
    with pytest.raises(AttributeSchemaError, match="seed"):
        b.poisson(b.input("x", (3,)), "p", seed=-1)
