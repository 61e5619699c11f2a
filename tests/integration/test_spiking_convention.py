"""The spiking convention end to end: LIFT (per-neuron parameters, also split across cores), LI (membrane
read-out), FirstSpikeTime and the host-side encoders, each built with ModelBuilder, compiled, emulated by both
backends and compared with onnxruntime (exact: integer weights and thresholds, decays of 0 or 1)."""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nmc.cli import format_info
from nmc.errors import InputError, QuantizationError, UnsupportedOpError
from nmc.frontend import ModelBuilder, load_onnx, run_float, run_onnxruntime


def _run_both(cm, inputs):
    res = {b: nmc.emulate(cm, inputs, backend=b) for b in ("reference", "numba")}
    assert res["reference"].result.differences(res["numba"].result) == []
    return res["numba"]


def _lift_net(T=16, seed=0):
    rng = np.random.default_rng(seed)
    b = ModelBuilder("lift", num_steps=T)
    x = b.input("x", (12,), kind="step")
    thr = np.arange(1, 11, dtype=float)  # every neuron its own threshold, leak, reset
    s, v = b.lift(b.gemm(x, rng.integers(-1, 4, size=(10, 12)).astype(float), name="fc"), "n", threshold=thr,
                  beta=np.where(np.arange(10) % 2, 1.0, 0.0), v_reset=np.arange(10) % 3 - 1.0,
                  v_leak=np.where(np.arange(10) < 5, 0.0, 1.0), reset_mode="zero")
    b.output(s)
    b.output(v)
    return b.build(), (rng.random((T, 2, 12)) < 0.5).astype(np.float32)


def test_lift_per_neuron_parameters_equal_onnxruntime_split_or_not():
    model, x = _lift_net()
    ref = run_onnxruntime(model, {"x": x})
    assert ref["n.s"].sum() > 20
    # the thresholds differ per neuron: neuron 0 (threshold 1) fires more than neuron 9 (threshold 10)
    assert ref["n.s"][:, :, 0].sum() > ref["n.s"][:, :, 9].sum()
    outs = []
    for over in (None, {"core.neurons": 4}):  # 10 neurons on one core, or on three
        cm = nmc.compile(model, calib={"x": x}, overrides=over, lint=True)
        assert cm.meta["layers"][0]["quant"]["lossless"]
        assert len(cm.meta["layers"][0]["cores"]) == (1 if over is None else 3)
        out = _run_both(cm, {"x": x}).outputs
        np.testing.assert_array_equal(out["n.s"], ref["n.s"])
        np.testing.assert_array_equal(out["n.v.next"], ref["n.v.next"][-1])
        outs.append(out["n.s"])
    np.testing.assert_array_equal(outs[0], outs[1])
    # the per-neuron integers are in the core map, each with its neuron: thresholds 1 .. 10
    cm = nmc.compile(model, calib={"x": x}, overrides={"core.neurons": 4})
    got = sorted(cm.neurons.param[cm.cores.neuron_off[c]:cm.cores.neuron_off[c + 1], 0].tolist()
                 for c in range(cm.num_cores))
    assert sorted(sum(got, [])) == list(range(1, 11))


def test_lift_scaled_parameters_stay_per_neuron():
    """Non-integer thresholds: the membrane scale k = 127 / 0.5 = 254 multiplies every neuron's own value."""
    b = ModelBuilder("lift_k", num_steps=8)
    x = b.input("x", (2,), kind="step")
    s, _ = b.lift(b.gemm(x, [[0.5, 0.0], [0.0, 0.5]], name="fc"), "n", threshold=[0.77, 1.61])
    b.output(s)
    model = b.build()
    ones = np.ones((8, 1, 2))
    cm = nmc.compile(model, calib={"x": ones})
    q = cm.meta["layers"][0]["quant"]
    assert q["membrane_scale"] == pytest.approx(254.0) and not q["lossless"]
    assert cm.neurons.param[:2, 0].tolist() == [196, 409]  # round(0.77 * 254 = 195.58), round(1.61 * 254 = 408.94)
    out = nmc.emulate(cm, {"x": ones}).outputs["n.s"][:, 0]
    # by hand, neuron 0: v = .5, 1 (fire, .23), .73, 1.23 (fire), .96 (fire), .69, 1.19 (fire), .92 (fire)
    #          neuron 1: v = .5, 1, 1.5, 2 (fire, .39), .89, 1.39, 1.89 (fire), .78
    assert np.flatnonzero(out[:, 0]).tolist() == [1, 3, 4, 6, 7]
    assert np.flatnonzero(out[:, 1]).tolist() == [3, 6]
    np.testing.assert_array_equal(out, run_onnxruntime(model, {"x": ones})["n.s"][:, 0])


def test_li_membrane_read_out_equals_onnxruntime_every_step():
    rng = np.random.default_rng(1)
    T = 12
    b = ModelBuilder("li", num_steps=T)
    x = b.input("x", (16,), kind="step")
    s, _ = b.lif(b.gemm(x, rng.integers(-2, 4, size=(10, 16)).astype(float), name="fc"), "n", threshold=3.0)
    logits = b.li(b.gemm(s, rng.integers(-3, 4, size=(4, 10)).astype(float), name="ro"), "out")
    b.output(logits)
    model = b.build()
    xs = (rng.random((T, 3, 16)) < 0.4).astype(np.float32)
    cm = nmc.compile(model, calib={"x": xs}, lint=True)
    layers = {l["name"]: l for l in cm.meta["layers"]}
    assert layers["ro"]["op"] == "dense+li" and layers["ro"]["quant"]["lossless"]  # one layer: synapse + LI soma
    ref = run_onnxruntime(model, {"x": xs})
    out = _run_both(cm, {"x": xs}).outputs
    np.testing.assert_array_equal(out["out.v.next"], ref["out.v.next"])
    assert np.abs(ref["out.v.next"]).max() > 5  # a membrane, not spikes


def test_li_with_a_leak_is_close_to_onnxruntime():
    """beta = 0.875 is 224 / 256 on the chip exactly; fractional weights: within the quantisation error."""
    rng = np.random.default_rng(2)
    b = ModelBuilder("li_leak", num_steps=10)
    x = b.input("x", (8,), kind="step")
    v = b.li(b.gemm(x, rng.normal(size=(3, 8)), name="ro"), "out", beta=0.875)
    b.output(v)
    model = b.build()
    xs = (rng.random((10, 2, 8)) < 0.5).astype(np.float32)
    cm = nmc.compile(model, calib={"x": xs})
    out = nmc.emulate(cm, {"x": xs}).outputs["out.v.next"]
    ref = run_onnxruntime(model, {"x": xs})["out.v.next"]
    np.testing.assert_allclose(out, ref, atol=0.05 * np.abs(ref).max())


def test_li_output_cannot_feed_another_layer():
    b = ModelBuilder("li_bad", num_steps=4)
    x = b.input("x", (4,), kind="step")
    v = b.li(b.gemm(x, np.eye(4), name="ro"), "out")
    s, _ = b.lif(b.gemm(v, np.eye(4), name="fc2"), "n")
    b.output(s)
    with pytest.raises(QuantizationError, match="state word of a read-out layer"):
        nmc.compile(b.build(), calib={"x": np.ones((4, 1, 4))})


def test_first_spike_time_equals_onnxruntime_and_reads_minus_one_for_silence():
    rng = np.random.default_rng(3)
    T = 10
    b = ModelBuilder("fst", num_steps=T)
    x = b.input("x", (6,), kind="step")
    W = rng.integers(0, 3, size=(5, 6)).astype(float)
    W[4] = 0.0  # neuron 4 never fires
    s, _ = b.lif(b.gemm(x, W, name="fc"), "n", threshold=4.0)
    f = b.first_spike_time(s, "fst")
    b.output(f)
    b.output(s)
    model = b.build()
    xs = (rng.random((T, 2, 6)) < 0.5).astype(np.float32)
    cm = nmc.compile(model, calib={"x": xs}, lint=True)
    ref = run_onnxruntime(model, {"x": xs})
    out = _run_both(cm, {"x": xs}).outputs
    np.testing.assert_array_equal(out["fst.f.next"], ref["fst.f.next"])
    last = out["fst.f.next"][-1]
    assert (last[:, 4] == -1).all()
    spk = ref["n.s"]
    for bi in range(2):  # the first spike step, read off the spike trains by hand
        for n in range(5):
            hits = np.flatnonzero(spk[:, bi, n])
            assert last[bi, n] == (hits[0] if hits.size else -1)


def _encoded_net(T=20):
    b = ModelBuilder("enc", num_steps=T)
    img = b.input("img", (2, 4, 4))
    rate = b.poisson(img, "rate", seed=11)
    first = b.ttfs(img, "first", window=16)
    rng = np.random.default_rng(4)
    h = b.add(b.gemm(b.flatten(rate), rng.integers(-1, 3, size=(10, 32)).astype(float), name="fc_r"),
              b.gemm(b.flatten(first), rng.integers(0, 3, size=(10, 32)).astype(float), name="fc_f"))
    s, _ = b.lif(h, "n", threshold=3.0)
    b.output(s)
    b.output(b.spike_count(s, "cnt"))
    return b.build(), rng.random((3, 2, 4, 4)).astype(np.float32)


def test_host_encoders_equal_onnxruntime_and_need_no_calibration():
    model, img = _encoded_net()
    ref = run_onnxruntime(model, {"img": img})  # the step index nmc.t is filled by the runner
    np.testing.assert_array_equal(run_float(load_onnx(model), {"img": img})["n.s"], ref["n.s"])
    for calib in ({"img": img}, None):  # no calibration: the encoded inputs are spikes, the weights integers
        cm = nmc.compile(model, calib=calib, lint=True)
        assert [e["op"] for e in cm.meta["host_encoders"]] == ["PoissonEncode", "TTFSEncode"]
        ins = {i["name"]: i for i in cm.meta["inputs"]}
        assert set(ins) == {"rate", "first"} and all(i["kind"] == "step" and i["hi"] == 1 for i in ins.values())
        out = _run_both(cm, {"img": img}).outputs
        np.testing.assert_array_equal(out["n.s"], ref["n.s"])
        np.testing.assert_array_equal(out["cnt.c.next"], ref["cnt.c.next"])
    assert ref["n.s"].sum() > 0


def test_host_encoder_spikes_are_priced_as_step_inputs():
    """The chip pays for what the host sends: every step's encoded spikes enter through the input feeds."""
    model, img = _encoded_net(T=8)
    cm = nmc.compile(model, calib={"img": img})
    r1 = nmc.emulate(cm, {"img": img})
    r0 = nmc.emulate(cm, {"img": np.zeros_like(img)})  # zero rates and times: no spike is sent
    ev1, ev0 = r1.report["events"], r0.report["events"]
    assert ev0["sop"] == 0 and ev1["sop"] > 0  # synaptic work only where the host sent spikes
    assert ev1["packet"] > ev0["packet"]
    assert r1.report["energy_breakdown"]["dynamic_j"] > r0.report["energy_breakdown"]["dynamic_j"]


def test_encoder_errors_name_what_to_do():
    model, img = _encoded_net()
    cm = nmc.compile(model, calib={"img": img})
    with pytest.raises(InputError, match="img"):
        nmc.emulate(cm, {})
    b = ModelBuilder("enc_bad", num_steps=4)
    x = b.input("x", (4,))
    h = b.relu(b.gemm(x, np.eye(4), name="fc"))
    s, _ = b.lif(b.gemm(b.poisson(h, "p"), np.eye(4), name="fc2"), "n")
    b.output(s)
    with pytest.raises(UnsupportedOpError, match="computed on the chip"):
        nmc.compile(b.build(), calib={"x": np.ones((1, 4))})
    b = ModelBuilder("enc_out", num_steps=4)
    p = b.poisson(b.input("x", (4,)), "p")
    s, _ = b.lif(b.gemm(p, np.eye(4), name="fc"), "n")
    b.output(s)
    b.output(p)
    with pytest.raises(UnsupportedOpError, match="'p' are a graph output, but the host computes them"):
        nmc.compile(b.build(), calib={"x": np.ones((1, 4))})


def test_lift_per_channel_thresholds_of_a_conv_layer_split_across_cores():
    """Per-channel tensors [C, 1, 1] broadcast to every neuron of the channel; the partitioner's spatial order
    and the split keep each neuron's threshold with it."""
    rng = np.random.default_rng(6)
    T = 10
    b = ModelBuilder("conv_lift", num_steps=T)
    x = b.input("x", (2, 6, 6), kind="step")
    h = b.conv(x, rng.integers(-1, 3, size=(3, 2, 3, 3)).astype(float), pads=(1, 1, 1, 1), name="conv")
    s, _ = b.lift(h, "n", threshold=np.array([2.0, 4.0, 6.0]).reshape(3, 1, 1),
                  beta=np.array([1.0, 0.0, 1.0]).reshape(3, 1, 1), reset_mode="zero")
    b.output(s)
    model = b.build()
    xs = (rng.random((T, 2, 2, 6, 6)) < 0.4).astype(np.float32)
    ref = run_onnxruntime(model, {"x": xs})
    assert ref["n.s"][:, :, 0].sum() > ref["n.s"][:, :, 2].sum() > 0  # threshold 2 fires more than 6
    cm = nmc.compile(model, calib={"x": xs}, overrides={"core.neurons": 16}, lint=True)
    assert len(cm.meta["layers"][0]["cores"]) >= 7  # 108 neurons, 16 per core
    np.testing.assert_array_equal(_run_both(cm, {"x": xs}).outputs["n.s"], ref["n.s"])


def test_info_names_the_host_encoders_and_the_step_index_may_be_given():
    model, img = _encoded_net(T=6)
    cm = nmc.compile(model, calib={"img": img})
    text = format_info(cm)
    assert "host encoder PoissonEncode(seed=11): input 'img' -> spikes 'rate' every step" in text
    assert "host encoder TTFSEncode(window=16): input 'img' -> spikes 'first' every step" in text
    t = np.broadcast_to(np.arange(6.0)[:, None, None], (6, 3, 1))
    a = nmc.emulate(cm, {"img": img}).outputs["n.s"]
    np.testing.assert_array_equal(nmc.emulate(cm, {"img": img, "nmc.t": t}).outputs["n.s"], a)
    np.testing.assert_array_equal(run_onnxruntime(model, {"img": img, "nmc.t": t}, steps=6)["n.s"], a)


def test_lift_report_gives_the_worst_per_neuron_decay_error():
    b = ModelBuilder("lift_beta", num_steps=4)
    x = b.input("x", (3,), kind="step")
    s, _ = b.lift(b.gemm(x, np.eye(3), name="fc"), "n", beta=[0.9, 0.5, 1.0])
    b.output(s)
    cm = nmc.compile(b.build(), calib={"x": np.ones((4, 1, 3))})
    q = cm.meta["layers"][0]["quant"]
    # 0.9 * 256 = 230.4 -> 230: the chip decays by 230 / 256 = 0.8984375; 0.5 and 1.0 are exact
    assert cm.neurons.param[:3, 3].tolist() == [230, 128, 256]
    assert q["beta_max_err"] == pytest.approx(0.9 - 0.8984375, abs=1e-7) and not q["lossless"]


@pytest.mark.parametrize("seed", range(6))
def test_random_lossless_lift_layers_equal_onnxruntime(seed):
    """Random integer per-neuron thresholds, resets, leaks and decays of 0 or 1, every mode: spikes and membranes
    equal onnxruntime on both backends, with the layer on one core or split over several."""
    rng = np.random.default_rng(100 + seed)
    T, n = 14, 24
    b = ModelBuilder(f"lift_rand{seed}", num_steps=T)
    x = b.input("x", (20,), kind="step")
    h = b.gemm(x, rng.integers(-3, 5, size=(n, 20)).astype(float), rng.integers(-2, 3, size=n).astype(float),
               name="fc")
    s, v = b.lift(h, "n", threshold=rng.integers(1, 9, size=n).astype(float),
                  beta=rng.integers(0, 2, size=n).astype(float), v_reset=rng.integers(-3, 3, size=n).astype(float),
                  v_leak=rng.integers(-2, 3, size=n).astype(float),
                  reset_mode=str(rng.choice(["subtract", "zero", "none"])), spike_ge=int(rng.integers(0, 2)),
                  reset_delay=int(rng.integers(0, 2)), init=rng.integers(-3, 4, size=n).astype(float))
    b.output(s)
    b.output(v)
    model = b.build()
    xs = (rng.random((T, 2, 20)) < 0.4).astype(np.float32)
    ref = run_onnxruntime(model, {"x": xs})
    for over in (None, {"core.neurons": 7}):
        cm = nmc.compile(model, calib={"x": xs}, overrides=over)
        assert cm.meta["layers"][0]["quant"]["lossless"]
        out = _run_both(cm, {"x": xs}).outputs
        np.testing.assert_array_equal(out["n.s"], ref["n.s"])
        np.testing.assert_array_equal(out["n.v.next"], ref["n.v.next"][-1])


def test_the_step_index_can_feed_a_chip_layer():
    """nmc.t read by a Gemm is a step input the runners fill (0 .. T-1); the chip gets it as an 8-bit value."""
    b = ModelBuilder("t_in", num_steps=6)
    s, _ = b.lif(b.gemm(b.step_index(), [[1.0], [2.0]], name="fc"), "n", threshold=5.0)
    b.output(s)
    model = b.build()
    cm = nmc.compile(model, calib={})  # the interpreter fills nmc.t: its range is calibrated without inputs
    assert cm.meta["inputs"] == [dict(name="nmc.t", kind="step", shape=[1], scale=1.0, lo=0, hi=255)]
    out = _run_both(cm, {}).outputs["n.s"][:, 0]
    # neuron 0 integrates t: 0, 1, 3, 6 > 5 (fire, 1), 5, 10 (fire); neuron 1 integrates 2t: 0, 2, 6 (fire, 1), 7 ...
    assert out[:, 0].tolist() == [0, 0, 0, 1, 0, 1] and out[:, 1].tolist() == [0, 0, 1, 1, 1, 1]
    np.testing.assert_array_equal(out, run_onnxruntime(model, {}, steps=6)["n.s"][:, 0])


def test_onehot_encoder_equals_onnxruntime_and_needs_no_calibration():
    # nmc::OneHotEncode's function body (ONNX OneHot) against the host's NumPy, then a spiking layer on its spikes
    T = 6
    b = ModelBuilder("onehot", num_steps=T)
    ids = b.input("ids", (3,))
    oh = b.onehot(ids, "oh", depth=5)
    W = np.random.default_rng(8).integers(0, 3, size=(4, 15)).astype(float)
    s, _ = b.lif(b.gemm(b.flatten(oh), W, name="fc"), "n", threshold=5.0)
    b.output(s)
    model = b.build()
    x = np.array([[0, 4, -1], [2, 2, -5], [3, 1, 0]], np.float32)  # -1 is row 4, -5 row 0
    g = load_onnx(model)
    assert g.tensors["oh"].shape == (3, 5)
    ref = run_onnxruntime(model, {"ids": x})
    np.testing.assert_array_equal(run_float(g, {"ids": x})["n.s"], ref["n.s"])
    cm = nmc.compile(model, lint=True)  # no calibration: spikes in, integer weights
    assert cm.meta["host_encoders"][0]["op"] == "OneHotEncode"
    np.testing.assert_array_equal(_run_both(cm, {"ids": x}).outputs["n.s"], ref["n.s"])
    assert ref["n.s"].sum() > 0
    # by hand: sample 0 drives rows 0, 4, 4 of the one-hot: fc = W[:, 0] + W[:, 9] + W[:, 14] every step, into an
    # IF neuron firing on v > 5 with a subtract reset
    fc = W[:, 0] + W[:, 9] + W[:, 14]
    v, spikes = np.zeros(4), []
    for _ in range(T):
        v = v + fc
        spikes.append(v > 5.0)
        v = np.where(v > 5.0, v - 5.0, v)
    assert ref["n.s"][:, 0].tolist() == np.array(spikes, float).tolist()
    with pytest.raises(InputError, match=r"index 0.5 at \[0, 0\] is not an integer"):
        nmc.emulate(cm, {"ids": np.array([[0.5, 0, 0]])})
