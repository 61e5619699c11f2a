"""Folding (mapper/fold.py): several logical cores of a layer time-multiplexed on one physical core; folded maps
emulate to exactly the unfolded outputs, on both emulators, with fewer physical cores and more phases."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import nmc
from nmc import rules as drc
from nmc.errors import InputError
from nmc.frontend.builder import ModelBuilder
from nets import lossless_snn, spike_inputs
from test_mapper import TINY, dense_chain, int_calib
from test_relay import same_outputs


def positions(cm) -> int:
    return len({(int(x), int(y)) for x, y in zip(cm.cores.x, cm.cores.y)})


def test_folding_by_hand():
    # fc1 (one core) -> fc2 (40 neurons: 5 cores of 8, TINY).  A fc2 core needs 8 axons x 8 one-byte weight rows,
    # 8 neurons and one table entry: far below 1024 B, so `cores` folds all 5 onto one physical core: they run
    # in phases 1 .. 5 (6 static phases instead of 2) on 2 physical cores; `balanced` folds pairs: [1 2] [3 4] [5],
    # phases 1 2 1 2 1, 4 physical cores.  `energy` does not fold: every variant needs the same one chip.
    model = dense_chain([16, 8, 40], seed=3)
    x = int_calib(16, batch=3, seed=5)
    cms = {o: nmc.compile(model, calib=int_calib(16), overrides=TINY, objective=o, lint=True)
           for o in ("latency", "balanced", "cores", "energy")}
    assert {o: (positions(cm), cm.cores.phase.tolist()) for o, cm in cms.items()} == {
        "latency": (6, [0, 1, 1, 1, 1, 1]), "balanced": (4, [0, 1, 2, 1, 2, 1]),
        "cores": (2, [0, 1, 2, 3, 4, 5]), "energy": (6, [0, 1, 1, 1, 1, 1])}
    assert cms["cores"].meta["phases"]["static"] == 6 and cms["cores"].meta["compile"]["objective"] == "cores"
    runs = {o: nmc.emulate(cm, x) for o, cm in cms.items()}
    for o in ("balanced", "cores"):
        same_outputs(runs["latency"], runs[o])
        assert runs[o].result.equal(nmc.emulate(cms[o], x, backend="reference").result)
    # the same work, serialised: the same compute cycles per logical core, a longer task
    np.testing.assert_array_equal(runs["cores"].result.core_cycles, runs["latency"].result.core_cycles)
    assert runs["cores"].report["latency_cycles"] > runs["balanced"].report["latency_cycles"] > \
        runs["latency"].report["latency_cycles"]


def test_folded_snn_with_recurrence_emulates_to_the_unfolded_outputs():
    x = spike_inputs(0, 6, 3, 40)
    model = lossless_snn(seed=0, steps=6, recurrent=True)
    plain = nmc.compile(model, calib={"spikes": x}, overrides=TINY, chips="auto", lint=True)
    folded = nmc.compile(model, calib={"spikes": x}, overrides=TINY, chips="auto", objective="cores", lint=True)
    assert positions(folded) < positions(plain) == plain.num_cores == folded.num_cores
    assert plain.meta["phases"]["step"] < folded.meta["phases"]["step"] <= folded.chip.core.phases_per_step
    a, b = nmc.emulate(plain, {"spikes": x}), nmc.emulate(folded, {"spikes": x})
    same_outputs(a, b)
    assert b.result.equal(nmc.emulate(folded, {"spikes": x}, backend="reference").result)
    assert not drc.check_coremap(folded)
    # static energy: the folded cores share their physical core's; fewer chips are powered
    assert b.report["energy_breakdown"]["static_idle_j"] >= 0


def test_folded_cores_share_memory_and_may_not_share_a_phase():
    model = dense_chain([16, 8, 40], seed=3)
    cm = nmc.compile(model, calib=int_calib(16), overrides=TINY, objective="cores")
    small = dataclasses.replace(cm.chip, core=dataclasses.replace(cm.chip.core, memory_bytes=300))
    v = [m for m in drc.check_coremap(cm.replace(chip=small)) if "folded on one core" in m]
    assert len(v) == 1 and "layer 'fc2' core 1 and layer 'fc2' core 2" in v[0] and "> 300 B" in v[0]
    ph = cm.cores.phase.copy()
    ph[2] = ph[1]  # two folded cores in one phase
    bad = cm.replace(cores=dataclasses.replace(cm.cores, phase=ph))
    assert any(m.startswith("placement: layer 'fc2' core 1 and layer 'fc2' core 2 share position") for m in
               drc.check_coremap(bad))


def test_unknown_objective():
    with pytest.raises(InputError, match="objective 'speed' is not one of"):
        nmc.compile(dense_chain([16, 8]), calib=int_calib(16), objective="speed")


@pytest.mark.parametrize("seed", range(4))
def test_seeded_relayed_and_folded_maps_emulate_to_the_plain_outputs(seed):
    # random small nets, router tables and objectives: the compile passes the design rules (every core within
    # its limits, folds' memory and tables added up), and the emulated outputs are the plain map's
    rng = np.random.default_rng(seed)
    steps = int(rng.integers(3, 6))
    model = lossless_snn(seed=seed, steps=steps, hidden=int(rng.integers(12, 40)), recurrent=bool(seed % 2))
    x = spike_inputs(seed, steps, 2, 40)
    small = dict(TINY, **{"core.router_table_entries": int(rng.choice([2, 3, 5]))})
    objective = ["cores", "balanced", "energy", "cores"][seed]
    plain = nmc.compile(model, calib={"spikes": x}, overrides=TINY, chips="auto")
    other = nmc.compile(model, calib={"spikes": x}, overrides=small, chips="auto", objective=objective, lint=True,
                        placement=["locality", "zigzag", "greedy", "locality"][seed])
    assert not drc.check_coremap(other)
    again = nmc.compile(model, calib={"spikes": x}, overrides=small, chips="auto", objective=objective,
                        placement=["locality", "zigzag", "greedy", "locality"][seed])
    for k, v in other.arrays().items():  # same inputs, same map
        np.testing.assert_array_equal(again.arrays()[k], v, err_msg=k)
    a, b = nmc.emulate(plain, {"spikes": x}), nmc.emulate(other, {"spikes": x})
    same_outputs(a, b)
    assert b.result.equal(nmc.emulate(other, {"spikes": x}, backend="reference").result)


def test_pipelined_schedule_refuses_a_folded_map():
    model = dense_chain([16, 8, 40], seed=3)
    cm = nmc.compile(model, calib=int_calib(16), overrides=TINY, objective="cores")
    with pytest.raises(InputError, match="folds several cores onto one physical core"):
        nmc.emulate(cm, int_calib(16, batch=1), schedule="pipelined")


def test_folded_maps_report_physical_cores(tmp_path, capsys):
    # the hand example above: `cores` puts fc1 on one core and the 5 fc2 cores on another: 2 physical cores,
    # 6 logical ones.  The compile line, `nmc info` and the run report count physical cores (a new user
    # found all three saying 6).
    from nmc.cli import main
    model = dense_chain([16, 8, 40], seed=3)
    cm = nmc.compile(model, calib=int_calib(16), overrides=TINY, objective="cores")
    assert (cm.num_cores, cm.physical_cores, cm.cores_text()) == (6, 2, "2 cores (6 logical, folded)")
    run = nmc.emulate(cm, int_calib(16, batch=2, seed=5))
    assert (run.report["cores_used"], run.report["logical_cores"]) == (2, 6)
    path = tmp_path / "m.nmc"
    nmc.save(cm, path)
    assert main(["info", str(path)]) == 0
    assert "| 2 of " in capsys.readouterr().out


def test_folding_adds_no_round():
    # test_folding_by_hand's chain: unfolded, 2 static phases.  With 4 phases per round, `cores` (cap 6) would run
    # the 5 fc2 cores in phases 1 .. 5 (6 phases: 2 rounds), so the cap halves to 3: folds [1 2 3] [4 5], phases
    # 0 1 2 3 1 2 (4 phases, 1 round) on 3 physical cores.  With 2 phases per round even pairs (3 phases) would
    # need a second round, so nothing folds.
    model = dense_chain([16, 8, 40], seed=3)
    four = nmc.compile(model, calib=int_calib(16), overrides={**TINY, "core.phases_per_step": 4}, objective="cores")
    assert (positions(four), four.cores.phase.tolist(), four.meta["rounds"]["static"]) == (3, [0, 1, 2, 3, 1, 2], 1)
    two = nmc.compile(model, calib=int_calib(16), overrides={**TINY, "core.phases_per_step": 2}, objective="cores")
    assert (positions(two), two.cores.phase.tolist(), two.meta["rounds"]["static"]) == (6, [0, 1, 1, 1, 1, 1], 1)


def test_folded_tiles_of_one_convolution_store_its_kernel_once():
    """16 tiles (16 channels x 2 x 2 positions) of a 3x3 convolution over 8 x 8 x 8, on 64-neuron, 128-axon cores of
    4,096 B.  By hand: a tile's kernel is 16 x 8 x 9 = 1,152 B; its 64 neurons 64 x 7 B (32-bit bias, 16-bit mult,
    8-bit shift) = 448 B; its axons 1 B each: 8 channels x 3 x 3 = 72 at a corner, 8 x 3 x 4 = 96 on an edge,
    8 x 4 x 4 = 128 inside; one routing entry, 4 B.  A corner tile needs 1,676 B, so without sharing the kernel
    two tiles fold (1,676 + 1,700 = 3,376 B; a third would need 5,076 B).  Stored once, five fold: the first row
    (corner, edge, edge, corner) and the next tile (an edge): 5 x (448 + 4) + 72 + 96 + 96 + 72 + 96 + 1,152 =
    3,844 B; a sixth (an inside tile, 584 B more) would need 4,428 B."""
    from nmc.resources import core_usages, position_bytes
    from nmc.rules import shared_positions
    rng = np.random.default_rng(0)
    b = ModelBuilder("fold_kernels", num_steps=1)
    x = b.input("x", (8, 8, 8))
    b.output(b.relu(b.conv(x, rng.normal(size=(16, 8, 3, 3)), None, pads=(1, 1, 1, 1), name="conv")))
    g = b.build()
    X = rng.uniform(0, 1, size=(4, 8, 8, 8))
    ov = {"core.neurons": 64, "core.axons": 128, "core.memory_bytes": 4096}
    runs = {}
    for obj in ("latency", "cores"):
        cm = nmc.compile(g, "tianjicx", calib={"x": X}, tiles="on", objective=obj, overrides=ov)
        assert cm.num_cores == 16 and np.all(cm.cores.w_fmt == 1)
        runs[obj] = (cm, nmc.emulate(cm, {"x": X[:2]}))
    cm = runs["cores"][0]
    us = core_usages(cm)
    assert [us[c].total for c in range(5)] == [1676, 1700, 1700, 1676, 1700]
    shared = shared_positions(cm)
    assert shared[0].tolist() == [0, 1, 2, 3, 4]
    assert position_bytes(cm, shared[0], us) == 3844
    assert len({(int(a), int(b_)) for a, b_ in zip(cm.cores.x, cm.cores.y)}) == 4  # 5 + 5 + 5 + 1 tiles
    for o, v in runs["latency"][1].outputs.items():  # folding changes when cores run, not what they compute
        np.testing.assert_array_equal(np.asarray(runs["cores"][1].outputs[o]), np.asarray(v))


def test_shared_kernel_bytes_by_hand():
    from nmc.resources import shared_kernel_bytes
    # A (100 B) and B (50 B) on one core, A again on another: 150; an identity kernel E (10 B) read twice by one
    # merge core and once by another: stored twice, 20
    assert shared_kernel_bytes([[("A", 100), ("B", 50)], [("A", 100)], [("E", 10), ("E", 10)], [("E", 10)]]) == 170
    assert shared_kernel_bytes([]) == 0
