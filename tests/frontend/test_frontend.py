"""Frontend: builder models -> load_onnx -> run_float must equal onnxruntime; dumps; BN folding."""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest

from nmc.frontend import ModelBuilder, load_onnx, run_float, run_onnxruntime
from nmc.frontend.onnx_import import fold_batchnorm

pytest.importorskip("onnxruntime")

T = 8


def assert_same(graph, model, inputs, steps=T):
    """Spikes (and every integer-valued output) exactly equal, the rest allclose rtol 1e-5."""
    got = run_float(graph, inputs, steps=steps)
    ref = run_onnxruntime(model, inputs, steps=steps)
    assert set(got) == set(ref) == set(graph.outputs)
    for k in got:
        assert got[k].shape == ref[k].shape, k
        if k.endswith(".s") or k.endswith(".c.next"):
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
        else:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=k)
    return got


# ----------------------------------------------------------------- random models
def conv_model(rng, lif_kw):
    b = ModelBuilder("convnet", num_steps=T)
    x = b.input("x", (2, 7, 6))
    y = b.conv(x, rng.normal(size=(4, 2, 3, 2)), rng.normal(size=4), strides=(2, 1), pads=(1, 0, 2, 1))
    y = b.batchnorm(y, rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4))
    y = b.relu(y)
    y = b.maxpool(y, 2, pads=(1, 1, 0, 0))
    y = b.flatten(y)
    s, _ = b.lif(b.gemm(y, rng.normal(size=(6, b.shapes[y][0])), rng.normal(size=6), name="fc"), "l1", **lif_kw)
    s2, _ = b.lif(b.matmul(s, rng.normal(size=(6, 3)) * 1.5, name="fc2"), "l2", **lif_kw)
    b.output(s)
    b.output(s2)
    b.output(b.spike_count(s2, "cnt"))
    return b.build(), {"x": rng.normal(size=(3, 2, 7, 6)) * 2}


def gap_model(rng, lif_kw):
    b = ModelBuilder("gapnet", num_steps=T)
    x = b.input("x", (4, 8, 8))
    y = b.conv(x, rng.normal(size=(6, 2, 3, 3)), None, dilations=(2, 1), group=2, pads=(2, 1, 1, 0))
    y = b.add_const(y, rng.normal(size=(1, 6, 1, 1)))  # a bias folded into the conv
    y = b.avgpool(y, (2, 3), strides=(2, 2), pads=(1, 1, 1, 0), count_include_pad=1)
    y2 = b.avgpool(y, 2, strides=1, pads=(0, 1, 1, 0), count_include_pad=0)
    y3 = b.relu(b.conv(y, rng.normal(size=(6, 6, 2, 2)), rng.normal(size=6), pads=(0, 1, 1, 0)))
    y = b.add(y2, y3)
    s, _ = b.lif(y, "l1", **lif_kw)
    g = b.global_avgpool(s)
    b.output(s)
    b.output(b.identity(b.reshape(g, (-1,))))
    return b.build(), {"x": rng.normal(size=(2, 4, 8, 8)) * 2}


def recurrent_model(rng, lif_kw):
    b = ModelBuilder("recnet", num_steps=T)
    x = b.input("x", (5,), kind="step")
    rec = b.state("rec", (7,), init=0.0)
    h = b.add(b.gemm(x, rng.normal(size=(7, 5)) * 1.5), b.gemm(rec, rng.normal(size=(7, 7)), rng.normal(size=7)))
    s, _ = b.lif(h, "l1", **lif_kw)
    b.bind_state("rec", s)
    out = b.gemm(b.spike_count(s, "cnt"), rng.normal(size=(2, 7)), name="readout")
    b.output(s)
    b.output(out)
    return b.build(), {"x": rng.normal(size=(T, 4, 5))}


LIF_SETTINGS = [
    dict(beta=beta, reset_mode=mode, spike_ge=ge, reset_delay=rd, threshold=thr, v_reset=vr, v_leak=vl, gain=gain)
    for (mode, ge, rd), (beta, thr, vr, vl, gain) in zip(
        itertools.product(("subtract", "zero", "none"), (0, 1), (0, 1)),
        itertools.cycle([(1.0, 1.0, 0.0, 0.0, 1.0), (0.9, 0.75, -0.25, 0.1, 1.3), (0.5, 1.5, 0.2, -0.2, 0.8)]))
]


@pytest.mark.parametrize("factory", [conv_model, gap_model, recurrent_model])
@pytest.mark.parametrize("k", range(len(LIF_SETTINGS)))
def test_random_models_match_onnxruntime(factory, k):
    rng = np.random.default_rng(100 + k)
    model, inputs = factory(rng, LIF_SETTINGS[k])
    graph = load_onnx(model)
    got = assert_same(graph, model, inputs)
    spikes = [v for name, v in got.items() if name.endswith(".s")]
    assert any(v.any() for v in spikes), "the test model never spikes: it would test nothing"
    assert any((v == 0).any() for v in spikes)


def test_stages_and_shapes_of_recurrent_model():
    model, inputs = recurrent_model(np.random.default_rng(0), LIF_SETTINGS[0])
    g = load_onnx(model)
    stages = {n.name: n.stage for n in g.nodes}
    assert stages["readout"] == "readout"
    assert stages["l1"] == stages["cnt"] == "step"
    assert g.inputs == {"x": "step", "rec": "state", "l1.v": "state", "cnt.c": "state"}
    out = run_float(g, inputs)
    assert out["l1.s"].shape == (T, 4, 7)
    assert out["readout"].shape == (4, 2)
    # the read-out equals the dense layer applied to the final count
    W = g.node("readout").params["W"]
    counts = out["l1.s"].sum(axis=0)
    np.testing.assert_allclose(out["readout"], counts @ W.T + g.node("readout").params["b"])


def test_exact_threshold_hits_spike_ge():
    """Integer-valued arithmetic hits the threshold exactly: > and >= must differ, and match ORT."""
    res = {}
    for ge in (0, 1):
        b = ModelBuilder("exact", num_steps=T)
        x = b.input("x", (3,), kind="step")
        s, _ = b.lif(b.gemm(x, [[1, 0, 0], [0, 1, 0], [0.5, 0.5, 0]]), "l1", threshold=1.0, spike_ge=ge)
        b.output(s)
        model = b.build()
        inputs = {"x": np.tile(np.array([0.5, 1.0, 0.0]), (T, 1, 1))}
        res[ge] = assert_same(load_onnx(model), model, inputs)["l1.s"][:, 0]
    np.testing.assert_array_equal(res[1][:, 1], np.ones(T))        # 1.0 >= 1.0 every step
    np.testing.assert_array_equal(res[0][:, 1], [0] + [1] * (T - 1))  # 1 (no), then 2 > 1 every step
    np.testing.assert_array_equal(res[0][:, 0], [0, 0, 1, 0, 1, 0, 1, 0])  # 0.5, 1.0 (no), 1.5 fire -> 0.5 ...
    np.testing.assert_array_equal(res[1][:, 0], [0, 1] * (T // 2))  # 0.5, 1.0 >= 1


def test_state_inputs_and_init_override():
    model, inputs = conv_model(np.random.default_rng(1), LIF_SETTINGS[1])
    g = load_onnx(model)
    v0 = np.full((3, 6), 0.7)
    a = run_float(g, {**inputs, "l1.v": v0}, steps=3)
    r = run_onnxruntime(model, {**inputs, "l1.v": v0}, steps=3)
    np.testing.assert_array_equal(a["l1.s"], r["l1.s"])
    assert a["l1.s"].shape[0] == 3


def test_observer_sees_every_tensor():
    model, inputs = recurrent_model(np.random.default_rng(2), LIF_SETTINGS[0])
    g = load_onnx(model)
    seen = {}
    run_float(g, inputs, observer=lambda name, v: seen.setdefault(name, []).append(v.shape))
    produced = {t for n in g.nodes for t in n.outputs}
    assert produced | set(g.inputs) == set(seen)
    assert len(seen["l1.s"]) == T and len(seen["readout"]) == 1


# ----------------------------------------------------------------- BN folding
def test_batchnorm_folding_equals_unfolded():
    rng = np.random.default_rng(3)
    b = ModelBuilder("bn", num_steps=4)
    x = b.input("x", (3, 5, 5))
    y = b.conv(x, rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4), pads=(1, 1, 1, 1))
    y = b.batchnorm(y, rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4))
    y = b.flatten(b.relu(y))
    y = b.gemm(y, rng.normal(size=(6, 100)), rng.normal(size=6))
    y = b.batchnorm(y, rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2, 6))
    b.output(y)
    model = b.build()
    unfolded = load_onnx(model, fold_bn=False)
    folded = load_onnx(model)
    assert [n.op for n in unfolded.nodes].count("batchnorm") == 2
    assert [n.op for n in folded.nodes].count("batchnorm") == 0
    assert fold_batchnorm(folded) is False  # nothing left to fold
    inputs = {"x": rng.normal(size=(2, 3, 5, 5))}
    a, c = run_float(unfolded, inputs, steps=1), run_float(folded, inputs, steps=1)
    np.testing.assert_allclose(a[y], c[y], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a[y], run_onnxruntime(model, inputs, steps=1)[y], rtol=1e-5, atol=1e-5)


def test_batchnorm_not_folded_when_conv_output_is_shared():
    rng = np.random.default_rng(4)
    b = ModelBuilder("bn2", num_steps=1)
    x = b.input("x", (2, 4, 4))
    y = b.conv(x, rng.normal(size=(2, 2, 1, 1)), name="c")
    z = b.batchnorm(y, [1.0, 2.0], [0.5, 0.0], [0.0, 1.0], [1.0, 1.0])
    b.output(b.add(y, z))
    g = load_onnx(b.build())
    assert [n.op for n in g.nodes] == ["conv", "batchnorm", "add"]


# ----------------------------------------------------------------- dump
#: checksums: the first 10 hex digits of SHA-256 over the float64 bytes of tiny_model's literals, computed apart
#: from nmc with hashlib (W [[1, 0, -1], [0.5, 0.25, 2]] -> 35a85576c0, b [0, 0.5] -> dd3f62a13e, init 0.0 -> af5570f5a1)
TINY_DUMP = """\
graph tiny steps=4
  input static x[3]
  input state l1.v[2]
  state l1.v <- l1.v.next init=af5570f5a1
  [static] fc = dense(x) -> fc[2]  {W[2, 3]:35a85576c0, b[2]:dd3f62a13e}
  [step] l1 = lif(fc, l1.v) -> l1.s[2], l1.v.next[2]  {beta=0.5, gain=1.0, reset_delay=0, reset_mode="subtract", spike_ge=1, threshold=1.0, v_leak=0.0, v_reset=0.0}
  outputs l1.s
"""


def tiny_model():
    b = ModelBuilder("tiny", num_steps=4)
    x = b.input("x", (3,))
    s, _ = b.lif(b.gemm(x, [[1.0, 0.0, -1.0], [0.5, 0.25, 2.0]], [0.0, 0.5], name="fc"), "l1", beta=0.5, spike_ge=1)
    b.output(s)
    return b.build()


def test_dump_is_stable_and_matches_snapshot():
    d1 = load_onnx(tiny_model()).dump()
    d2 = load_onnx(tiny_model().SerializeToString()).dump()
    assert d1 == d2
    assert d1 == TINY_DUMP


def test_load_from_path(tmp_path):
    p = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(p))
    assert load_onnx(p).dump() == TINY_DUMP
    assert load_onnx(str(p)).dump() == TINY_DUMP


def test_load_onnx_does_not_modify_the_model():
    m = tiny_model()
    m.graph.node[0].name = ""
    before = m.SerializeToString()
    g = load_onnx(m)
    assert m.SerializeToString() == before
    assert g.nodes[0].name == "Gemm_0"
