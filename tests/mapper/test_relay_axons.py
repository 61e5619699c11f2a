"""Found by the tiles on/off fuzz campaign (``benchmarks/fuzz.py --kinds tiles``): a relay core (mapper/relay.py)
holds one axon per value of its source core, so a source with more neurons than a core has axons
(``core.axons`` < ``core.neurons``) gets a relay that breaks ``axons-per-core``; emit's design rules then refuse
the model (a clean DesignRuleError, but a model that fits is refused).  Seen with ``tiles="on"`` and
``tiles="off"`` alike: 19 of 7,800 random CNNs on small cores.  Fixed: relays group their destinations so that
the values one relay forwards fit its core (``min(core.axons, core.neurons)``); the relayed maps emulate like
maps on cores large enough to need no such split."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import nmc
from nmc.errors import DoesNotFitError, InputError, MappingError
from nmc.frontend.builder import ModelBuilder

ROOT = Path(__file__).resolve().parents[2]


def _sum_then_fan_out():
    """conv + conv of one input summed (8 x 10 x 5), read by two 3 x 2 dilated convolutions: tiles=on cuts the sum
    into 40-neuron tiles whose values fan out to 272 partial cores, over the router table: relays of 40 axons."""
    rng = np.random.default_rng(0)
    b = ModelBuilder("m", num_steps=1)
    x = b.input("x", (4, 6, 4))
    w1 = rng.integers(-4, 5, size=(8, 1, 1, 2)) / 4
    h = b.conv(x, w1, None, pads=(2, 2, 2, 1), dilations=(1, 2), group=4, name="conv0")
    h = b.relu(b.add(h, b.conv(x, rng.integers(-4, 5, size=w1.shape) / 4, None, pads=(2, 2, 2, 1), dilations=(1, 2),
                               group=4, name="branch0"), name="sum0"))
    w2 = rng.integers(-4, 5, size=(1, 8, 3, 2)) / 4
    h2 = b.conv(h, w2, None, pads=(1, 2, 1, 2), dilations=(2, 2), strides=(1, 2), name="conv1")
    h2 = b.add(h2, b.conv(h, w2, None, pads=(1, 2, 1, 2), dilations=(2, 2), strides=(1, 2), name="branch1"),
               name="sum1")
    b.output(b.flatten(b.relu(h2)))
    return b.build(), {"x": rng.uniform(0, 1, (4, 4, 6, 4))}


def _fuzz_cnn(seed):
    spec = importlib.util.spec_from_file_location("nmc_fuzz", ROOT / "benchmarks" / "fuzz.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.random_cnn(seed)


def _compiles_or_does_not_fit(model, calib, **kw):
    try:
        cm = nmc.compile(model, calib=calib, chips="auto", **kw)
    except DoesNotFitError:
        return
    assert max(cm.n_axons(c) for c in range(cm.num_cores)) <= cm.chip.core.axons


def _same_outputs(model, calib, tiles, small, large):
    a = nmc.compile(model, calib=calib, chips="auto", tiles=tiles, overrides=small)
    b = nmc.compile(model, calib=calib, chips="auto", tiles=tiles, overrides=large)
    assert a.meta["routing"]["relay_cores"] > 0 and max(a.n_axons(c) for c in range(a.num_cores)) <= a.chip.core.axons
    x = {k: v[:2] for k, v in calib.items()}
    ra, rb = nmc.emulate(a, x), nmc.emulate(b, x)
    for o in ra.outputs:
        np.testing.assert_array_equal(ra.outputs[o], rb.outputs[o])


def test_relays_of_a_tiled_sum_respect_the_cores_axons():
    model, calib = _sum_then_fan_out()
    _compiles_or_does_not_fit(model, calib, tiles="on", overrides={"core.axons": 32})
    _same_outputs(model, calib, "on", {"core.axons": 32}, {"core.axons": 64})


def test_relays_of_an_unfolded_layer_respect_the_cores_axons():
    model, calib = _fuzz_cnn(1803628062)
    _compiles_or_does_not_fit(model, calib, tiles="off", overrides={"core.axons": 16, "core.memory_bytes": 8000})
    _same_outputs(model, calib, "off", {"core.axons": 16, "core.memory_bytes": 8000},
                  {"core.axons": 64, "core.memory_bytes": 8000})


def test_the_same_models_map_when_the_relays_fit():
    # the control: with axons for a relay of the whole source core, both map within every design rule
    model, calib = _sum_then_fan_out()
    _compiles_or_does_not_fit(model, calib, tiles="on", overrides={"core.axons": 48})
    model, calib = _fuzz_cnn(1803628062)
    _compiles_or_does_not_fit(model, calib, tiles="off", overrides={"core.axons": 64, "core.memory_bytes": 8000})


def test_a_spike_state_s_initial_value_is_the_value_of_exactly_its_delayed_axons():
    """axons.init, by hand: the state 'rec' = [1, 0, 1] before step 0 is read by fc_rec (one core), so the two axons
    holding elements 0 and 2 start at 1 and every other axon at 0 (the wiring keeps only the nonzero ones)."""
    b = ModelBuilder("rec_init", num_steps=4)
    x = b.input("x", (2,), kind="step")
    prev = b.state("rec", (3,), init=[1.0, 0.0, 1.0])
    h = b.add(b.gemm(x, np.ones((3, 2)), name="fc_in"), b.gemm(prev, np.eye(3), name="fc_rec"), name="sum")
    s, _ = b.lif(h, "lif", beta=1.0, threshold=1.0, reset_mode="subtract", v_reset=0.0)
    b.bind_state("rec", s)
    b.output(s)
    cm = nmc.compile(b.build(), chip="tianjic", calib={"x": np.ones((4, 1, 2))})
    delayed = cm.routes.delayed == 1
    assert delayed.sum() == 3
    src, dst = cm.routes.src[delayed], cm.routes.dst[delayed]
    elem = src - src.min()  # (the lif layer: one core, its neurons in element order)
    init = cm.axons.init
    assert sorted(elem.tolist()) == [0, 1, 2]
    assert init[dst[elem == 0]].tolist() == [1] and init[dst[elem == 1]].tolist() == [0]
    assert init[dst[elem == 2]].tolist() == [1]
    assert int(np.count_nonzero(init)) == 2


def _rec_model(init):
    b = ModelBuilder("rec_init", num_steps=4)
    x = b.input("x", (2,), kind="step")
    prev = b.state("rec", (3,), init=init)
    h = b.add(b.gemm(x, np.ones((3, 2)), name="fc_in"), b.gemm(prev, np.eye(3), name="fc_rec"), name="sum")
    s, _ = b.lif(h, "lif", beta=1.0, threshold=1.0, reset_mode="subtract", v_reset=0.0)
    b.bind_state("rec", s)
    b.output(s)
    return b.build()


def test_a_state_s_initial_value_beyond_an_axon_s_range_is_refused_naming_it():
    # axons.init is int16 (core-map format 4): 40000 before step 0 cannot be an axon's value; element 1 is named
    with pytest.raises(MappingError, match=r"state 'rec' starts at 40000 \(element 1\).*\[-32768, 32767\]"):
        nmc.compile(_rec_model([1.0, 40000.0, 1.0]), chip="tianjic", calib={"x": np.ones((4, 1, 2))})


def test_a_state_input_beyond_an_axon_s_range_is_refused_at_emulation():
    cm = nmc.compile(_rec_model([1.0, 0.0, 1.0]), chip="tianjic", calib={"x": np.ones((4, 1, 2))})
    x = np.ones((4, 1, 2))
    ok = nmc.emulate(cm, {"x": x, "rec": np.array([[0.0, 1.0, 1.0]])}, backend="reference")
    assert ok.outputs  # (a state given as an input in range runs)
    with pytest.raises(InputError, match=r"state input 'rec' \(sample 0\) holds 70000.0, beyond .*\[-32768, 32767\]"):
        nmc.emulate(cm, {"x": x, "rec": np.array([[0.0, 70000.0, 1.0]])}, backend="reference")


def test_a_mapping_beyond_the_core_map_s_index_range_is_refused(monkeypatch):
    # the core map's routes are int32 (MAX_INDEX neurons and axons); shrunk to 4 here, a 2-3-3 network (6 axons)
    # is refused by emit, naming both counts
    import nmc.mapper.emit as emit_mod
    monkeypatch.setattr(emit_mod, "MAX_INDEX", 4)
    with pytest.raises(MappingError, match=r"has \d+ neurons and \d+ axons; a core map indexes at most 4 of each"):
        nmc.compile(_rec_model([1.0, 0.0, 1.0]), chip="tianjic", calib={"x": np.ones((4, 1, 2))})


def test_a_bias_beyond_int32_is_refused_naming_the_layer_not_wrapped():
    # neurons.bias is int32 (core-map format 5; the accumulator is at most 32 bits): a LIF layer's bias of 3e9
    # (threshold 1: membrane scale 1) would wrap to 3e9 - 2^32 = -1294967296 in a cast; emit refuses it instead
    b = ModelBuilder("bias_big", num_steps=2)
    x = b.input("x", (2,), kind="step")
    s, _ = b.lif(b.gemm(x, np.ones((3, 2)), b=np.array([0.0, 3e9, 0.0]), name="fc"), "lif", beta=1.0, threshold=1.0)
    b.output(s)
    with pytest.raises(MappingError, match=r"layer 'fc' .*a bias is 3000000000, outside the core map's int32 range "
                                           r"-2147483648 \.\. 2147483647"):
        nmc.compile(b.build(), chip="tianjic", calib={"x": np.ones((2, 1, 2))})
    ok = ModelBuilder("bias_ok", num_steps=2)  # (2^31 - 128, the largest float32 below 2^31: kept as it is)
    x = ok.input("x", (2,), kind="step")
    s, _ = ok.lif(ok.gemm(x, np.ones((3, 2)), b=np.array([0.0, 2.0 ** 31 - 128, 0.0]), name="fc"), "lif", beta=1.0,
                  threshold=1.0)
    ok.output(s)
    cm = nmc.compile(ok.build(), chip="tianjic", calib={"x": np.ones((2, 1, 2))})
    assert cm.neurons.bias.dtype == np.int32 and 2 ** 31 - 128 in cm.neurons.bias.tolist()
