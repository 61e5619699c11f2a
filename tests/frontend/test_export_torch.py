"""Export helpers (frontend/export_torch.py): each snnTorch / SpikingJelly / Norse neuron module, exported to
an nmc step model, spikes exactly like the framework's own module over many steps on random inputs (the
exported model run in onnxruntime, float32 like torch); refusals name the module and the reason."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from nmc.errors import UnsupportedOpError  # noqa: E402
from nmc.frontend import load_onnx, run_float, run_onnxruntime  # noqa: E402
from nmc.frontend.export_torch import to_nmc  # noqa: E402

T, B, N_IN, N = 100, 4, 6, 8


def _inputs(seed=0, scale=1.0):
    return (np.random.default_rng(seed).uniform(0, 1, size=(T, B, N_IN)) * scale).astype(np.float32)


def _linear(seed=0, n_in=N_IN, n_out=N):
    torch.manual_seed(seed)
    return torch.nn.Linear(n_in, n_out)


def _compare(model, ref, x, min_spikes=100):
    got = run_onnxruntime(model, {"x": x})[model.graph.output[0].name]
    assert ref.shape == got.shape
    assert ref.sum() >= min_spikes and ref.sum() <= 0.9 * ref.size, ref.sum()  # the test exercises firing
    assert np.array_equal(got, ref), f"{int((got != ref).sum())} of {ref.size} spikes differ"
    g = load_onnx(model)  # what nmc compiles reads it
    f = run_float(g, {"x": x.astype(np.float64)})[g.outputs[0]]
    assert (f != ref).mean() < 1e-3  # float64: at most a rounding flip at the threshold


# ----------------------------------------------------------------- snnTorch
snn = None


def _snn():
    global snn
    snn = pytest.importorskip("snntorch")
    return snn


def _run_snntorch(net, x):
    from snntorch import utils
    utils.reset(net)
    with torch.no_grad():
        return np.array([net(torch.tensor(xt)).numpy() for xt in x], dtype=np.float64)


@pytest.mark.parametrize("reset,delay", [("subtract", True), ("zero", True), ("zero", False), ("none", True)])
def test_snntorch_leaky(reset, delay):
    s = _snn()
    net = torch.nn.Sequential(_linear(), s.Leaky(beta=0.875, threshold=0.75, init_hidden=True,
                                                 reset_mechanism=reset, reset_delay=delay))
    x = _inputs()
    _compare(to_nmc(net, (N_IN,)), _run_snntorch(net, x), x)


def test_snntorch_rleaky():
    s = _snn()
    torch.manual_seed(1)
    net = torch.nn.Sequential(_linear(), s.RLeaky(beta=0.9, linear_features=N, init_hidden=True))
    x = _inputs()
    model = to_nmc(net, (N_IN,))
    assert any(i.name == "l1.spk" for i in model.graph.input)  # the recurrence is a spike state pair
    _compare(model, _run_snntorch(net, x), x)


def test_snntorch_rleaky_one_to_one():
    s = _snn()
    net = torch.nn.Sequential(_linear(), s.RLeaky(beta=0.9, V=-0.5, all_to_all=False, init_hidden=True))
    x = _inputs(scale=2.0)
    _compare(to_nmc(net, (N_IN,)), _run_snntorch(net, x), x)


def test_snntorch_synaptic():
    s = _snn()
    net = torch.nn.Sequential(_linear(), s.Synaptic(alpha=0.5, beta=0.875, init_hidden=True, reset_mechanism="zero",
                                                    reset_delay=False))
    x = _inputs()
    _compare(to_nmc(net, (N_IN,)), _run_snntorch(net, x), x)


def test_snntorch_two_layers_conv():
    s = _snn()
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), s.Leaky(beta=0.9, init_hidden=True),
                              torch.nn.Flatten(), torch.nn.Linear(2 * 5 * 5, 4), s.Leaky(beta=0.8, init_hidden=True))
    with torch.no_grad():
        net[3].weight.mul_(4.0)
    x = np.random.default_rng(3).uniform(0, 4, size=(60, B, 1, 5, 5)).astype(np.float32)
    _compare(to_nmc(net, (1, 5, 5)), _run_snntorch(net, x), x, min_spikes=20)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_snntorch_leaky_per_neuron_is_lift(reset):
    s = _snn()
    neuron = s.Leaky(beta=torch.linspace(0.5, 1.0, N), threshold=torch.linspace(0.5, 1.5, N), init_hidden=True,
                     reset_mechanism=reset)
    net = torch.nn.Sequential(_linear(), neuron)
    x = _inputs(scale=2.0)
    model = to_nmc(net, (N_IN,))
    assert [n.op_type for n in model.graph.node] == ["Gemm", "LIFT"]
    _compare(model, _run_snntorch(net, x), x)


def test_snntorch_refusals_are_listed_at_once():
    s = _snn()
    net = torch.nn.Sequential(_linear(), s.Leaky(beta=0.9, init_hidden=True, reset_delay=False),
                              s.Synaptic(alpha=0.5, beta=0.9, init_hidden=True),
                              s.Synaptic(alpha=torch.linspace(0.1, 0.5, N), beta=0.9, init_hidden=True,
                                         reset_delay=False, reset_mechanism="zero"), torch.nn.GRU(2, 2))
    with pytest.raises(UnsupportedOpError) as e:
        to_nmc(net, (N_IN,))
    reasons = {n: why for n, _, why in e.value.nodes}
    assert set(reasons) == {"#1", "#2", "#3", "#4"}
    assert "reset_delay=False with reset_mechanism='subtract'" in reasons["#1"]
    assert "reset_delay=True" in reasons["#2"]
    assert "nmc::LIFT" in reasons["#3"]


# ----------------------------------------------------------------- SpikingJelly
def _run_sj(net, x):
    from spikingjelly.activation_based import functional
    functional.reset_net(net)
    with torch.no_grad():
        return np.array([net(torch.tensor(xt)).numpy() for xt in x], dtype=np.float64)


@pytest.mark.parametrize("kind", ["lif_hard", "lif_soft", "lif_no_decay_input", "lif_vreset", "if_hard", "if_soft"])
def test_spikingjelly(kind):
    sj = pytest.importorskip("spikingjelly.activation_based.neuron")
    node = {"lif_hard": lambda: sj.LIFNode(tau=2.0),
            "lif_soft": lambda: sj.LIFNode(tau=4.0, v_reset=None),
            "lif_no_decay_input": lambda: sj.LIFNode(tau=8.0, decay_input=False, v_threshold=2.0),
            "lif_vreset": lambda: sj.LIFNode(tau=2.0, v_reset=-0.25, v_threshold=0.5),
            "if_hard": lambda: sj.IFNode(),
            "if_soft": lambda: sj.IFNode(v_reset=None, v_threshold=1.5)}[kind]()
    net = torch.nn.Sequential(_linear(), node)
    x = _inputs(scale=6.0)
    _compare(to_nmc(net, (N_IN,)), _run_sj(net, x), x)


# ----------------------------------------------------------------- Norse
def _run_norse(layers, x):
    out, state = [], [None] * len(layers)
    with torch.no_grad():
        for xt in x:
            h = torch.tensor(xt)
            for k, m in enumerate(layers):
                if type(m).__module__.startswith("norse"):
                    h, state[k] = m(h, state[k])
                else:
                    h = m(h)
            out.append(h.numpy())
    return np.array(out, dtype=np.float64)


def test_norse_lifcell():
    norse = pytest.importorskip("norse.torch")
    layers = [_linear(), norse.LIFCell(p=norse.LIFParameters(tau_syn_inv=torch.tensor(200.0),
                                                            tau_mem_inv=torch.tensor(100.0)))]
    x = _inputs(scale=40.0)
    _compare(to_nmc(layers, (N_IN,)), _run_norse(layers, x), x)


def test_norse_lif_recurrent_cell():
    norse = pytest.importorskip("norse.torch")
    torch.manual_seed(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cell = norse.LIFRecurrentCell(N_IN, N, p=norse.LIFParameters(tau_syn_inv=torch.tensor(200.0),
                                                                      tau_mem_inv=torch.tensor(100.0)))
    x = _inputs(scale=8.0)
    _compare(to_nmc([cell], (N_IN,)), _run_norse([cell], x), x)


def test_exported_model_compiles_and_emulates_like_onnxruntime():
    # integer weights, IF neurons (beta 1), integer thresholds: lossless, so the chip equals onnxruntime exactly
    import nmc
    s = _snn()
    lin = torch.nn.Linear(N_IN, N, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(np.random.default_rng(7).integers(-2, 3, size=(N, N_IN)), dtype=torch.float32))
    net = torch.nn.Sequential(lin, s.Leaky(beta=1.0, threshold=3.0, init_hidden=True))
    model = to_nmc(net, (N_IN,), num_steps=30)
    x = np.random.default_rng(8).integers(0, 2, size=(30, 3, N_IN)).astype(np.float32)
    ref = _run_snntorch(net, x)
    cm = nmc.compile(model, calib={"x": x})
    res = nmc.emulate(cm, {"x": x}, steps=30)
    assert ref.sum() > 20 and np.array_equal(res.outputs[model.graph.output[0].name], ref)
