"""ModelBuilder, the nmc op registry and function bodies, the onnxruntime runner, Scan models."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

from nets import scan_model
from nmc.neurons.lif import LIF, lif_float_step
from nmc.frontend import ModelBuilder, load_onnx, run_float, run_onnxruntime
from nmc.frontend import nmc_ops
from nmc.frontend.onnx_import import register_converter
from nmc.errors import AttributeSchemaError, ModelError, NmcError, RegistryError, ShapeError

ort = pytest.importorskip("onnxruntime")



def lif_step(x, v, **attrs):
    """The LIF model's float step with the ONNX op's defaults for attributes not given."""
    return lif_float_step({**LIF.onnx.defaults(), **attrs}, x, v)

def test_metadata_and_io():
    b = ModelBuilder("m", num_steps=7)
    x = b.input("x", (3,), kind="step")
    r = b.state("r", (2,), init=[0.5, 1.0])
    s, v = b.lif(b.add(b.gemm(x, np.ones((2, 3))), b.gemm(r, np.eye(2))), "l", init=0.25)
    b.bind_state("r", s)
    c = b.spike_count(s, "cnt")
    b.output(c)
    m = b.build()
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["nmc.convention"] == "step/1"
    assert meta["nmc.num_steps"] == "7"
    assert json.loads(meta["nmc.step_inputs"]) == ["x"]
    assert json.loads(meta["nmc.state"]) == [["r", "r.next", [0.5, 1.0]], ["l.v", "l.v.next", 0.25],
                                            ["cnt.c", "cnt.c.next", 0.0]]
    assert [o.name for o in m.graph.output] == ["cnt.c.next", "r.next", "l.v.next"]
    assert [i.name for i in m.graph.input] == ["x", "r", "l.v", "cnt.c"]
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 3
    assert {f.name for f in m.functions} == {"LIF", "SpikeCount"}
    assert {(o.domain, o.version) for o in m.opset_import} == {("", 19), ("nmc", 1)}
    g = load_onnx(m)
    assert g.outputs == ["cnt.c.next"] and g.num_steps == 7
    np.testing.assert_array_equal(g.state_of_input("r").init, [0.5, 1.0])


def test_save_and_reload(tmp_path):
    b = ModelBuilder("m", num_steps=2)
    x = b.input("x", (2, 4, 4))
    b.output(b.reshape(b.maxpool(x, 2), (2, -1)))
    b.save(tmp_path / "m.onnx")
    g = load_onnx(tmp_path / "m.onnx")
    assert g.tensors[g.outputs[0]].shape == (2, 4)
    x = np.random.default_rng(0).normal(size=(3, 2, 4, 4))
    np.testing.assert_allclose(run_float(g, {"x": x})[g.outputs[0]],
                               run_onnxruntime(tmp_path / "m.onnx", {"x": x})[g.outputs[0]], rtol=1e-6)


def test_builder_refuses_bad_attributes_and_shapes():
    b = ModelBuilder("m")
    x = b.input("x", (3,))
    with pytest.raises(AttributeSchemaError, match="threshold=0.0 is out of range"):
        b.lif(x, "l", threshold=0.0)
    with pytest.raises(AttributeSchemaError, match="reset_mode='soft'"):
        b.lif(x, "l2", reset_mode="soft")
    with pytest.raises(ShapeError, match="does not fit input 'x'"):
        b.gemm(x, np.ones((2, 4)))
    with pytest.raises(ModelError, match="already used"):
        b.input("x", (3,))
    b.state("r", (2,))
    with pytest.raises(ShapeError):
        b.bind_state("r", x)
    with pytest.raises(ModelError, match="never bound"):
        b.build()
    with pytest.raises(ModelError, match="opset 17"):
        ModelBuilder("old", opset=17)


def test_registry_refuses_duplicates_and_names_supported():
    with pytest.raises(RegistryError, match="already registered"):
        nmc_ops.register_schema(nmc_ops.LIF)
    with pytest.raises(RegistryError, match="supported: .*LIF, .*SpikeCount"):
        nmc_ops.get_schema("CubaLIFF")
    with pytest.raises(RegistryError, match="already registered"):
        register_converter("Gemm")(lambda *a: None)


def test_function_defaults_match_schema_defaults():
    """An nmc::LIF node without attributes runs with the schema defaults in onnxruntime too."""
    node = helper.make_node("LIF", ["x", "v"], ["s", "v.next"], name="bare", domain="nmc")
    g = helper.make_graph([node], "m", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in "xv"],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("s", "v.next")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("nmc", 1)],
                          functions=nmc_ops.function_protos())
    helper.set_model_props(m, {"nmc.step_inputs": '["x"]'})
    x = np.array([0.5, 1.0, 1.5, -1.0]).reshape(1, 1, 4).repeat(3, axis=0)
    a, r = run_float(load_onnx(m), {"x": x}), run_onnxruntime(m, {"x": x})
    np.testing.assert_array_equal(a["s"], r["s"])
    np.testing.assert_array_equal(a["s"][:, 0], [[0, 0, 1, 0], [0, 1, 1, 0], [1, 1, 1, 0]])
    # the defaults of docs/neurons.md's nmc::LIF table
    assert load_onnx(m).node("bare").attrs == {"beta": 1.0, "threshold": 1.0, "reset_mode": "subtract",
                                               "v_reset": 0.0, "v_leak": 0.0, "gain": 1.0, "spike_ge": 0,
                                               "reset_delay": 0}


def test_lif_function_runs_every_mode_in_onnxruntime_alone():
    """Direct check of the function body against lif_step, including exact threshold hits."""
    rng = np.random.default_rng(5)
    v = np.concatenate([rng.normal(size=40), [1.0, 0.5, 1.0, 0.0]]).astype(np.float32)
    x = np.concatenate([rng.normal(size=40), [0.0, 0.5, 0.0, 1.0]]).astype(np.float32)
    for mode in ("subtract", "zero", "none"):
        for ge in (0, 1):
            for rd in (0, 1):
                kw = dict(beta=0.75, threshold=1.0, reset_mode=mode, v_reset=-0.5, v_leak=0.25, gain=1.5,
                          spike_ge=ge, reset_delay=rd)
                node = helper.make_node("LIF", ["x", "v"], ["s", "vn"], domain="nmc", **kw)
                g = helper.make_graph([node], "f", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [44])
                                                    for n in "xv"],
                                      [helper.make_tensor_value_info(n, TensorProto.FLOAT, [44]) for n in ("s", "vn")])
                m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("nmc", 1)],
                                      functions=nmc_ops.function_protos())
                s, vn = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
                    None, {"x": x, "v": v})
                kw64 = {k: (float(np.float32(val)) if isinstance(val, float) else val) for k, val in kw.items()}
                es, ev = lif_step(x.astype(np.float64), v.astype(np.float64), **kw64)
                np.testing.assert_array_equal(s, es, err_msg=str(kw))
                np.testing.assert_allclose(vn, ev, rtol=1e-6, atol=1e-6, err_msg=str(kw))


def test_run_onnxruntime_without_onnxruntime(monkeypatch):
    b = ModelBuilder("m")
    x = b.input("x", (2,))
    b.output(b.relu(x))
    m = b.build()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(NmcError, match="pip install onnxruntime"):
        run_onnxruntime(m, {"x": np.zeros((1, 2))})


def test_scan_body_is_extracted():
    m = scan_model()
    g = load_onnx(m)
    assert g.inputs == {"v": "state", "x": "step"}
    assert [(s.input, s.output) for s in g.states] == [("v", "v.next")]
    assert g.num_steps == 6
    X = np.random.default_rng(0).normal(size=(6, 1, 3)).astype(np.float32)
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": X})
    out = run_float(g, {"x": X})
    np.testing.assert_array_equal(out["s"], ref[1])
    np.testing.assert_allclose(out["v.next"][-1], ref[0], rtol=1e-6)
    assert out["s"].any()
