"""Lifting plain step exports (frontend/lift.py): neurons spelt with standard ONNX ops, built here with
onnx.helper the way snnTorch and SpikingJelly spell them, located, probed, verified and replaced by nmc::LIF;
the lifted model steps like the original in onnxruntime, and what does not verify is reported, not lifted."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime")

import nmc  # noqa: E402
from nmc.errors import ModelError  # noqa: E402
from nmc.frontend import load_onnx, run_float, run_onnxruntime  # noqa: E402
from nmc.frontend.lift import lift_step  # noqa: E402

N_IN, N = 4, 6
mk = helper.make_node


def _c(name, value):
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _heaviside(u, thr, out, ge=False):
    """snnTorch's spike: Heaviside(u - threshold) as Sub -> Greater(0) -> Cast."""
    return [mk("Sub", [u, thr], [out + "_shift"]),
            mk("GreaterOrEqual" if ge else "Greater", [out + "_shift", "zero"], [out + "_b"]),
            mk("Cast", [out + "_b"], [out], to=TensorProto.FLOAT)]


def _model(neuron_nodes, inits, opset=17, extra_outputs=(), W=None):
    """x -> Gemm (fc1) -> neuron (state mem -> mem.next) -> Gemm (fc2) on the spikes."""
    rng = np.random.default_rng(0)
    W = rng.normal(0, 0.8, size=(N, N_IN)) if W is None else W
    W2 = rng.normal(size=(3, N))
    nodes = [mk("Gemm", ["x", "fc1.W", "fc1.b"], ["cur"], transB=1, name="fc1"), *neuron_nodes,
             mk("Gemm", ["spk", "fc2.W"], ["out"], transB=1, name="fc2")]
    inits = [_c("fc1.W", W), _c("fc1.b", rng.normal(0, 0.2, size=N)), _c("fc2.W", W2), _c("zero", 0.0), *inits]
    g = helper.make_graph(nodes, "plain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", N_IN]),
                                           helper.make_tensor_value_info("mem", TensorProto.FLOAT, ["N", N])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3]),
                           helper.make_tensor_value_info("mem.next", TensorProto.FLOAT, ["N", N]),
                           *[helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", N]) for o in extra_outputs]],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    helper.set_model_props(m, {"nmc.step_inputs": json.dumps(["x"]), "nmc.num_steps": "40",
                               "nmc.outputs": json.dumps(["out"])})
    onnx.checker.check_model(m)
    return m


def snntorch_leaky(reset="subtract"):
    """snnTorch Leaky, default reset_delay=True: reset from the stored membrane, spike from the new one."""
    nodes = [*_heaviside("mem", "thr", "rst"),
             mk("Mul", ["beta", "mem"], ["bm"]), mk("Add", ["bm", "cur"], ["u"])]
    if reset == "subtract":
        nodes += [mk("Mul", ["rst", "thr"], ["rt"]), mk("Sub", ["u", "rt"], ["mem.next"])]
    else:  # zero: snnTorch zeroes the stored membrane before the decay: mem = beta * (1 - reset) * mem + x
        nodes = [*_heaviside("mem", "thr", "rst"), mk("Sub", ["one", "rst"], ["keep"]),
                 mk("Mul", ["keep", "mem"], ["m0"]), mk("Mul", ["beta", "m0"], ["bm"]),
                 mk("Add", ["bm", "cur"], ["mem.next"])]
    nodes += _heaviside("mem.next", "thr", "spk")
    return _model(nodes, [_c("beta", 0.875), _c("thr", 1.0), _c("one", 1.0)])


def test_snntorch_leaky_subtract_is_lifted_and_steps_like_the_original():
    m = snntorch_leaky("subtract")
    lifted, rep = lift_step(m)
    (r,) = rep.results
    assert r.lifted, rep.format()
    assert r.attrs == dict(beta=0.875, threshold=1.0, v_leak=0.0, gain=1.0, spike_ge=0, reset_delay=1,
                           reset_mode="subtract")
    assert len(r.replaced) == 10 and r.checked >= 8000
    assert [n.op_type for n in lifted.graph.node] == ["Gemm", "LIF", "Gemm"]
    x = np.random.default_rng(1).uniform(0, 1, size=(40, 5, N_IN))
    ref = run_onnxruntime(m, {"x": x})["out"]
    got = run_onnxruntime(lifted, {"x": x})["out"]
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    g = load_onnx(lifted)
    assert [n.op for n in g.nodes] == ["dense", "lif", "dense"]
    np.testing.assert_allclose(run_float(g, {"x": x})["out"], ref, rtol=1e-5, atol=1e-5)
    assert "lifted 1 of 1" in rep.format() and "nmc::LIF 'mem.lif'" in rep.format()


def test_snntorch_leaky_zero_reset_is_lifted_by_its_spikes():
    # snnTorch's delayed zero reset keeps the step's input (u = x after a spike), which no single nmc::LIF step
    # reproduces for every stored membrane; from the initial state it spikes like the immediate reset to 0
    m = snntorch_leaky("zero")
    lifted, rep = lift_step(m)
    (r,) = rep.results
    assert r.lifted, rep.format()
    assert (r.attrs["reset_mode"], r.attrs["v_reset"], r.attrs["reset_delay"]) == ("zero", 0.0, 0)
    assert "spikes verified over runs" in rep.format()
    x = np.random.default_rng(1).uniform(0, 1, size=(40, 5, N_IN))
    np.testing.assert_allclose(run_onnxruntime(lifted, {"x": x})["out"], run_onnxruntime(m, {"x": x})["out"],
                               rtol=1e-6, atol=1e-6)
    # when the membrane is an output the user reads, it is not lifted
    helper.set_model_props(m, {"nmc.step_inputs": json.dumps(["x"]), "nmc.outputs": json.dumps(["out", "mem.next"])})
    _, rep = lift_step(m)
    assert not rep.results[0].lifted and "spikes on random inputs" in rep.results[0].reason


def test_immediate_zero_reset_with_where():
    # u = 0.5 v + 0.25 x; s = u > 0.75; v' = where(s, -0.125, u)
    nodes = [mk("Mul", ["beta", "mem"], ["bm"]), mk("Mul", ["g", "cur"], ["gx"]), mk("Add", ["bm", "gx"], ["u"]),
             mk("Greater", ["u", "thr"], ["sb"]), mk("Cast", ["sb"], ["spk"], to=TensorProto.FLOAT),
             mk("Where", ["sb", "vr", "u"], ["mem.next"])]
    m = _model(nodes, [_c("beta", 0.5), _c("g", 0.25), _c("thr", 0.75), _c("vr", -0.125)])
    lifted, rep = lift_step(m)
    (r,) = rep.results
    assert r.lifted, rep.format()
    assert r.attrs == dict(beta=0.5, threshold=0.75, v_leak=0.0, gain=0.25, spike_ge=0, reset_delay=0,
                           reset_mode="zero", v_reset=-0.125)


def test_spikingjelly_style_lif_fires_on_ge():
    # SpikingJelly LIF (tau = 2, decay_input, v_reset = 0): h = v + (x - v) / tau; s = h >= 1; v' = s ? 0 : h
    nodes = [mk("Sub", ["cur", "mem"], ["d"]), mk("Div", ["d", "tau"], ["dt"]), mk("Add", ["mem", "dt"], ["h"]),
             *_heaviside("h", "thr", "spk", ge=True),
             mk("Sub", ["one", "spk"], ["keep"]), mk("Mul", ["h", "keep"], ["mem.next"])]
    m = _model(nodes, [_c("tau", 2.0), _c("thr", 1.0), _c("one", 1.0)])
    _, rep = lift_step(m)
    (r,) = rep.results
    assert r.lifted, rep.format()
    assert r.attrs == dict(beta=0.5, threshold=1.0, v_leak=0.0, gain=0.5, spike_ge=1, reset_delay=0,
                           reset_mode="zero", v_reset=0.0)


def test_snntorch_immediate_subtract_quirk_is_not_lifted():
    # snnTorch with reset_delay=False: r = H(v - thr); u = beta v + x - r thr; s = H(u - thr); v' = u - (s - r) thr
    # decides the spike on u - r*thr, which nmc::LIF does not express: verification must refuse it
    nodes = [*_heaviside("mem", "thr", "rst"), mk("Mul", ["beta", "mem"], ["bm"]), mk("Add", ["bm", "cur"], ["u0"]),
             mk("Mul", ["rst", "thr"], ["rt"]), mk("Sub", ["u0", "rt"], ["u"]), *_heaviside("u", "thr", "spk"),
             mk("Sub", ["spk", "rst"], ["dr"]), mk("Mul", ["dr", "thr"], ["drt"]),
             mk("Sub", ["u", "drt"], ["mem.next"])]
    m = _model(nodes, [_c("beta", 0.875), _c("thr", 1.0)])
    out, rep = lift_step(m)
    (r,) = rep.results
    assert not r.lifted
    assert "differs from the region" in r.reason and "spikes on random inputs" in r.reason
    assert out.graph == m.graph  # nothing replaced
    assert "not lifted mem -> mem.next" in rep.format()


def test_per_neuron_beta_is_not_lifted():
    nodes = [mk("Mul", ["beta", "mem"], ["bm"]), mk("Add", ["bm", "cur"], ["u"]),
             *_heaviside("u", "thr", "spk"), mk("Mul", ["spk", "thr"], ["st"]), mk("Sub", ["u", "st"], ["mem.next"])]
    m = _model(nodes, [_c("beta", np.linspace(0.5, 1.0, N)), _c("thr", 1.0)])
    _, rep = lift_step(m)
    (r,) = rep.results
    assert not r.lifted and "beta (membrane decay) differs between neurons" in r.reason and "LIFT" in r.reason


def test_membrane_used_elsewhere_is_not_lifted():
    # the membrane is also a model output besides the state: a neuron hands on its spikes only
    nodes = [mk("Mul", ["beta", "mem"], ["bm"]), mk("Add", ["bm", "cur"], ["u"]), mk("Identity", ["u"], ["u_out"]),
             *_heaviside("u", "thr", "spk"), mk("Mul", ["spk", "thr"], ["st"]), mk("Sub", ["u", "st"], ["mem.next"])]
    m = _model(nodes, [_c("beta", 0.875), _c("thr", 1.0)], extra_outputs=["u_out"])
    _, rep = lift_step(m)
    assert not rep.results[0].lifted and "hands 2 tensors" in rep.results[0].reason


def test_lifted_model_compiles_and_emulates_like_onnxruntime():
    # integer weights, beta 1 (IF): lossless, so the chip equals onnxruntime exactly
    W = np.random.default_rng(5).integers(-2, 3, size=(N, N_IN)).astype(float)
    nodes = [mk("Add", ["mem", "cur"], ["u"]), *_heaviside("u", "thr", "spk"),
             mk("Mul", ["spk", "thr"], ["st"]), mk("Sub", ["u", "st"], ["mem.next"])]
    m = _model(nodes, [_c("thr", 3.0)], W=W)
    for t in m.graph.initializer:  # integer bias too
        if t.name == "fc1.b":
            t.CopyFrom(_c("fc1.b", np.zeros(N)))
    lifted, rep = lift_step(m)
    assert rep.results[0].lifted, rep.format()
    x = np.random.default_rng(6).integers(0, 2, size=(40, 3, N_IN)).astype(float)
    cm = nmc.compile(lifted, calib={"x": x})
    res = nmc.emulate(cm, {"x": x}, steps=40)
    ref = run_onnxruntime(m, {"x": x})["out"]
    assert np.array_equal(res.outputs["out"], ref)


def test_no_state_pairs_is_an_error():
    m = snntorch_leaky()
    g = m.graph
    g.output[1].name = "mem_out"
    for n in g.node:
        n.output[:] = ["mem_out" if o == "mem.next" else o for o in n.output]
        n.input[:] = ["mem_out" if i == "mem.next" else i for i in n.input]
    with pytest.raises(ModelError, match="states="):
        lift_step(m)
    _, rep = lift_step(m, states=[("mem", "mem_out")])
    assert rep.results[0].lifted


def test_cli_compile_lift(tmp_path, capsys):
    from nmc.cli import main
    path = tmp_path / "plain.onnx"
    onnx.save(snntorch_leaky(), str(path))
    x = np.random.default_rng(1).uniform(0, 1, size=(8, 2, N_IN))
    np.savez(tmp_path / "calib.npz", x=x)
    out = tmp_path / "m.nmc"
    assert main(["compile", str(path), "--calib", str(tmp_path / "calib.npz"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unsupported node" in err and "hint: neurons spelt with standard ops" in err and "--lift" in err
    assert main(["compile", str(path), "--lift", "--calib", str(tmp_path / "calib.npz"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "lifted 1 of 1 state pair(s)" in err and "reset_delay=1" in err


@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_export_of_an_snntorch_step_is_lifted(tmp_path, dynamo):
    """A real plain export: an snnTorch Leaky step function through torch.onnx.export (legacy and dynamo)."""
    import warnings
    torch = pytest.importorskip("torch")
    snn = pytest.importorskip("snntorch")
    if dynamo:
        pytest.importorskip("onnxscript")

    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(N_IN, N)
            self.lif = snn.Leaky(beta=0.875, threshold=1.0)

        def forward(self, x, mem):
            return self.lif(self.fc(x), mem)

    torch.manual_seed(0)
    step = Step().eval()
    path = tmp_path / "step.onnx"
    names = ["x", "mem", "spk", "mem.next"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(step, (torch.zeros(1, N_IN), torch.zeros(1, N)), str(path), dynamo=True,
                              input_names=names[:2], output_names=names[2:], verbose=False)
        else:
            torch.onnx.export(step, (torch.zeros(1, N_IN), torch.zeros(1, N)), str(path), dynamo=False,
                              opset_version=17, input_names=names[:2], output_names=names[2:],
                              dynamic_axes={n: {0: "N"} for n in names})
    m = onnx.load(str(path))  # (the dynamo exporter fixes the batch at 1, which nmc reads)
    helper.set_model_props(m, {"nmc.step_inputs": json.dumps(["x"]), "nmc.outputs": json.dumps(["spk"])})
    lifted, rep = lift_step(m)
    (r,) = rep.results
    assert r.lifted, rep.format()
    assert r.attrs == dict(beta=0.875, threshold=1.0, v_leak=0.0, gain=1.0, spike_ge=0, reset_delay=1,
                           reset_mode="subtract")
    assert [n.op_type for n in lifted.graph.node if n.op_type != "Identity"] == ["Gemm", "LIF"]
    x = np.random.default_rng(2).uniform(0, 1, size=(60, 1, N_IN)).astype(np.float32)
    mem = torch.zeros(1, N)
    ref = []
    with torch.no_grad():
        for xt in x:
            spk, mem = step(torch.tensor(xt), mem)
            ref.append(spk.numpy())
    ref = np.array(ref, dtype=np.float64)
    got = run_onnxruntime(lifted, {"x": x})["spk"]
    assert ref.sum() > 30 and np.array_equal(got, ref)
    g = load_onnx(lifted)
    assert [n.op for n in g.nodes if n.op != "identity"] == ["dense", "lif"]
