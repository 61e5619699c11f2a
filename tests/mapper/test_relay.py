"""Fan-out by relay cores (mapper/relay.py): a core whose destinations exceed the routing table sends through
ordinary cores that forward its values; the outputs are exactly the unrelayed ones, on both emulators."""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nmc import rules as drc
from nmc.coremap import SOMA
from nmc.emulator.result import EVENT_INDEX
from nets import hybrid, lossless_snn, spike_inputs
from test_mapper import TINY, dense_chain, int_calib


def table(entries: int) -> dict:
    return dict(TINY, **{"core.router_table_entries": entries})


def same_outputs(a, b):
    assert set(a.raw) == set(b.raw)
    for k in a.raw:
        np.testing.assert_array_equal(a.raw[k], b.raw[k], err_msg=k)


def test_relay_tree_by_hand():
    # fc1 (8 values, one core) feeds fc2 (40 neurons = 5 cores of 8, each reading all 8 values).  With 2 table
    # entries the 5 destinations are grouped [d0 d1] [d2 d3] d4 -> 3 > 2, then [[d0 d1] [d2 d3]] d4: the source
    # sends to one relay R and to d4; R to two relays, each to two fc2 cores: 3 relay cores, 2 relay levels, so
    # the static stage has 4 phases instead of 2.  A relay core holds 8 neurons on 8 axons: 8 x 8 = 64 MACs and,
    # on tianjic's timing, 420 (overhead) + ceil(8 B / 16 B/cycle) (axon reads) + max(ceil(8 rows / 1) *
    # ceil(8 / 16), ceil(8 rows x 1 B / 13 B/cycle)) (dendrite: MAC array vs weight bandwidth) + ceil(8 / 4
    # lanes) * 4 (ANN soma) = 420 + 1 + 8 + 8 = 437 cycles.
    model = dense_chain([16, 8, 40], seed=3)
    x = int_calib(16, batch=3, seed=5)
    plain = nmc.compile(model, calib=int_calib(16), overrides=table(64), lint=True)
    relayed = nmc.compile(model, calib=int_calib(16), overrides=table(2), lint=True)
    assert plain.num_cores == 6 and relayed.num_cores == 9
    assert drc.router_entries(plain).tolist() == [5, 1, 1, 1, 1, 1]
    assert drc.router_entries(relayed).tolist() == [2, 1, 1, 1, 1, 1, 2, 2, 2]
    assert plain.meta["phases"]["static"] == 2 and relayed.meta["phases"]["static"] == 4
    assert relayed.cores.phase.tolist() == [0, 3, 3, 3, 3, 1, 1, 2, 2]
    assert relayed.cores.model[6:].tolist() == [SOMA["ann"]] * 3
    assert relayed.meta["layers"][0]["cores"] == [0, 6, 7, 8]  # relays belong to the layer they forward
    assert (plain.meta["routing"]["relay_cores"], relayed.meta["routing"]["relay_cores"]) == (0, 3)
    a, b = nmc.emulate(plain, x), nmc.emulate(relayed, x)
    same_outputs(a, b)
    assert b.result.events[0, 6:, EVENT_INDEX["mac"]].tolist() == [64, 64, 64]
    assert b.result.core_cycles[0, 6:].tolist() == [437, 437, 437]
    assert b.report["energy_j"] > a.report["energy_j"] and b.report["latency_cycles"] > a.report["latency_cycles"]
    assert b.result.equal(nmc.emulate(relayed, x, backend="reference").result)


@pytest.mark.parametrize("entries", [8, 3])
def test_relayed_snn_with_recurrence_emulates_to_the_unrelayed_outputs(entries):
    # spikes relayed by LIF pass-through cores; recurrent (delayed) routes keep their delay on the last hop
    x = spike_inputs(0, 6, 3, 40)
    model = lossless_snn(seed=0, steps=6, recurrent=True)
    plain = nmc.compile(model, calib={"spikes": x}, overrides=table(64), chips="auto", lint=True)
    relayed = nmc.compile(model, calib={"spikes": x}, overrides=table(entries), chips="auto", lint=True)
    assert drc.router_entries(plain).max() > entries >= drc.router_entries(relayed).max()
    assert relayed.num_cores > plain.num_cores and (relayed.cores.model == SOMA["lif"]).sum() > \
        (plain.cores.model == SOMA["lif"]).sum()
    a, b = nmc.emulate(plain, {"spikes": x}), nmc.emulate(relayed, {"spikes": x})
    same_outputs(a, b)
    assert b.result.equal(nmc.emulate(relayed, {"spikes": x}, backend="reference").result)
    # a given initial recurrent state reaches the same axons through the relays
    rec = [s for s in plain.meta["states"] if s["target"] == "axon"]
    assert rec, "the model has a recurrent spike state"
    shape = rec[0]["shape"]
    s0 = (np.random.default_rng(3).random([3] + shape) < 0.5).astype(float)
    inputs = {"spikes": x, rec[0]["input"]: s0}
    same_outputs(nmc.emulate(plain, inputs), nmc.emulate(relayed, inputs))


def test_relayed_hybrid_emulates_to_the_unrelayed_outputs():
    img = np.random.default_rng(1).integers(0, 17, (3, 1, 8, 8)).astype(float)
    model = hybrid(seed=6, steps=5, recurrent=True)
    plain = nmc.compile(model, calib={"image": img}, overrides=table(64), chips="auto", lint=True)
    relayed = nmc.compile(model, calib={"image": img}, overrides=table(3), chips="auto", lint=True)
    assert drc.router_entries(relayed).max() <= 3 < drc.router_entries(plain).max()
    a, b = nmc.emulate(plain, {"image": img}), nmc.emulate(relayed, {"image": img})
    same_outputs(a, b)
    assert b.result.equal(nmc.emulate(relayed, {"image": img}, backend="reference").result)


@pytest.mark.parametrize("chip", ["tianjicx", "loihi"])
def test_relays_and_folds_are_exact_on_every_preset(chip):
    # the pass-through somas (ann multiplier 1 whatever the chip's requantiser rounding; lif threshold 1) and
    # folded phases give the plain outputs on each preset's numerics
    x = spike_inputs(0, 6, 2, 40)
    model = lossless_snn(seed=0, steps=6)
    plain = nmc.compile(model, chip=chip, calib={"spikes": x}, overrides=table(64), chips="auto")
    relayed = nmc.compile(model, chip=chip, calib={"spikes": x}, overrides=table(3), chips="auto", lint=True)
    folded = nmc.compile(model, chip=chip, calib={"spikes": x}, overrides=TINY, chips="auto", objective="cores")
    assert relayed.meta["routing"]["relay_cores"] > 0
    a = nmc.emulate(plain, {"spikes": x})
    for cm in (relayed, folded):
        b = nmc.emulate(cm, {"spikes": x})
        same_outputs(a, b)
        assert b.result.equal(nmc.emulate(cm, {"spikes": x}, backend="reference").result)


def test_add_relays_with_the_wiring_handed_over_gives_the_same_wiring_and_empties_the_list():
    # fit hands its wiring over (a one-element list) so that the old routes are freed as the new ones are built;
    # the result is the one of the wiring given as is (the hand example above: 3 relay cores)
    from nmc.chip import load_chip
    from nmc.mapper.connect import connect
    from nmc.mapper.partition import partition
    from nmc.mapper.passes import Context, PassManager, default_passes
    from nmc.mapper.relay import add_relays
    from nmc.frontend import load_onnx

    spec = load_chip("tianjic").with_overrides(table(2))
    res = PassManager(default_passes()[:4]).run(load_onnx(dense_chain([16, 8, 40], seed=3)),
                                                 Context(chip=spec, calib=int_calib(16))).results
    q = res["quantized"]
    pieces = partition(q, spec, {}, "auto")
    p1, w1 = add_relays(q, spec, pieces, connect(q.lg, pieces))
    hand = [connect(q.lg, pieces)]
    p2, w2 = add_relays(q, spec, pieces, hand)
    assert hand == [] and len(p1) == len(p2) == 9
    for k in ("route_src", "route_dst", "route_delayed", "neuron_off", "axon_off", "phase"):
        np.testing.assert_array_equal(getattr(w1, k), getattr(w2, k), err_msg=k)
    assert w2.phase.tolist() == [0, 3, 3, 3, 3, 1, 1, 2, 2]
