"""Depth: a stage with more phases than ``core.phases_per_step`` runs in rounds (docs/numerics.md, "Rounds").

Every test compiles one network twice: on a chip whose phase budget holds every stage (32 phases) and on the
same chip with a budget of 2 phases per round.  The budget changes nothing but the rounds, so the two core
maps hold the same arrays and emulate to the same outputs, events and phase cycles, and the latencies
differ by exactly the round boundaries, counted by hand below:

* ``dense_chain`` of 5 layers: one static stage of 5 phases; at 2 phases per round it runs in
  ``ceil(5 / 2) = 3`` rounds (phases 0-1, 2-3, 4): 2 boundaries per task;
* ``lossless_snn`` without recurrence: a step stage of 3 phases (fc1+lif1, fc2+lif2, count); 2 rounds
  per step (phases 0-1, 2): 1 boundary per step, ``T`` per task.

A boundary costs ``timing.barrier_cycles + timing.round_overhead_cycles``, set here to 32 + 100 = 132.
"""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nmc import rules as drc
from nmc.errors import DesignRuleError
from nmc.frontend.builder import ModelBuilder
from tests.nets import lossless_snn, spike_inputs

BOUNDARY = 32 + 100
DEEP = {"core.phases_per_step": 2, "timing.barrier_cycles": 32, "timing.round_overhead_cycles": 100}
WIDE = {"core.phases_per_step": 32, "timing.barrier_cycles": 32, "timing.round_overhead_cycles": 100}


def dense_chain(k: int, n: int = 6, seed: int = 0, name: str = "chain"):
    rng = np.random.default_rng(seed)
    b = ModelBuilder(name, num_steps=1)
    h = b.input("x", (n,))
    for i in range(k):
        h = b.gemm(h, rng.integers(-2, 3, size=(n, n)).astype(float), name=f"fc{i + 1}")
    b.output(h)
    return b.build()


def _calib(n=6, batch=4, seed=0):
    return {"x": np.random.default_rng(seed).integers(-3, 4, (batch, n)).astype(float)}


@pytest.fixture(scope="module")
def chain():
    model, calib = dense_chain(5), _calib()
    return (nmc.compile(model, calib=calib, overrides=DEEP, lint=True),
            nmc.compile(model, calib=calib, overrides=WIDE, lint=True), calib)


@pytest.fixture(scope="module")
def snn():
    model = lossless_snn(seed=1, steps=6, recurrent=False)
    x = {"spikes": spike_inputs(0, 6, 3, 40)}
    return (nmc.compile(model, calib=x, overrides=DEEP, lint=True),
            nmc.compile(model, calib=x, overrides=WIDE, lint=True), x)


def _same_map(a, b):
    aa, bb = a.arrays(), b.arrays()
    assert aa.keys() == bb.keys() and all(np.array_equal(aa[k], bb[k]) for k in aa)


def test_a_static_chain_deeper_than_the_budget_runs_in_three_rounds(chain):
    deep, wide, _ = chain
    assert deep.meta["phases"] == wide.meta["phases"] == {"static": 5, "step": 0, "readout": 0}
    assert deep.meta["rounds"] == {"static": 3, "step": 1, "readout": 1}
    assert wide.meta["rounds"] == {"static": 1, "step": 1, "readout": 1}
    _same_map(deep, wide)
    assert drc.check_coremap(deep) == []


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_rounds_change_only_the_latency_by_the_boundaries(chain, backend):
    deep, wide, x = chain
    a, b = nmc.emulate(deep, x, backend=backend), nmc.emulate(wide, x, backend=backend)
    assert a.result.equal(b.result)  # outputs, state, events, phase cycles: the emulated chip is the same
    for k in a.outputs:
        assert np.array_equal(a.outputs[k], b.outputs[k])
    ra, rb = a.report, b.report
    assert ra["per_task"]["latency_cycles"] == [x + 2 * BOUNDARY for x in rb["per_task"]["latency_cycles"]]
    assert ra["stages"]["static"] == rb["stages"]["static"] + 2 * BOUNDARY
    assert ra["rounds"]["static"] == dict(phases=5, rounds=3, boundary_cycles=BOUNDARY, cycles=2 * BOUNDARY,
                                          round_phases=[[0, 1], [2, 3], [4, 4]])
    assert rb["rounds"]["static"]["rounds"] == 1 and rb["rounds"]["static"]["cycles"] == 0
    # the report's phase rows still add up to the latency: the boundaries are a row of their own
    assert sum(p["cycles"] for p in ra["phases"]) == pytest.approx(ra["latency_cycles"])
    assert [p for p in ra["phases"] if p["phase"] == "rounds"][0]["cycles"] == 2 * BOUNDARY
    assert ra["energy_j"] > rb["energy_j"]  # static power is paid for the longer task


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_every_timestep_of_a_deep_step_stage_runs_its_rounds(snn, backend):
    deep, wide, x = snn
    assert deep.meta["phases"]["step"] == 3 and deep.meta["rounds"]["step"] == 2
    _same_map(deep, wide)
    T = 6
    a, b = nmc.emulate(deep, x, backend=backend), nmc.emulate(wide, x, backend=backend)
    assert a.result.equal(b.result)
    for k in a.outputs:
        assert np.array_equal(a.outputs[k], b.outputs[k])
    assert a.report["per_task"]["latency_cycles"] == [v + T * BOUNDARY for v in b.report["per_task"]["latency_cycles"]]
    assert a.report["rounds"]["step"]["cycles"] == T * BOUNDARY
    assert a.report["stages"]["step"] == b.report["stages"]["step"] + T * BOUNDARY
    text = nmc.emulator.profile.format_profile(a.report)
    assert "step 3 phases in 2 rounds, 1 boundaries per step x 132 cycles = 792 cycles per task" in text


def test_pipelined_rounds_are_slots_of_their_own(chain):
    """Pipelined: a task crosses the 2 boundaries as 2 more slots of the static pipeline (whose slots are the host
    input phase and the 5 phases).  With a boundary far slower than any phase (100,032 cycles) the boundary is
    the slowest slot, so by hand: interval = 100,032 and latency = (1 input + 5 phases + 2 boundaries) x 100,032;
    the unlimited budget keeps its interval (the slowest phase) and its 6 slots."""
    _, _, x = chain
    slow = dict(DEEP, **{"timing.round_overhead_cycles": 100_000})
    deep = nmc.compile(dense_chain(5), calib=x, overrides=slow)
    wide = nmc.compile(dense_chain(5), calib=x, overrides=dict(slow, **{"core.phases_per_step": 32}))
    a = nmc.emulate(deep, x, schedule="pipelined").report
    b = nmc.emulate(wide, x, schedule="pipelined").report
    assert a["interval_cycles"] == 100_032 and a["latency_cycles"] == 8 * 100_032
    assert b["interval_cycles"] < 10_000 and b["latency_cycles"] == 6 * b["interval_cycles"]


def test_pipelined_rounds_keep_the_interval_when_a_phase_is_slower(chain):
    """With the 132-cycle boundary every phase is slower (its core alone costs the 420-cycle overhead of
    ``tianjic``), so the interval is unchanged and a task's latency spans 2 more slots of the slowest phase: 8
    slots (input phase, 5 phases, 2 boundaries) instead of 6."""
    deep, wide, x = chain
    a = nmc.emulate(deep, x, schedule="pipelined").report
    b = nmc.emulate(wide, x, schedule="pipelined").report
    assert a["interval_cycles"] == b["interval_cycles"] > BOUNDARY
    assert a["latency_cycles"] == 8 * b["interval_cycles"] and b["latency_cycles"] == 6 * b["interval_cycles"]


def test_depth_refuse_keeps_the_old_refusal():
    with pytest.raises(DesignRuleError, match=r"static stage needs 5 phases > 1 round\(s\) of 2.*depth='rounds'"):
        nmc.compile(dense_chain(5), calib=_calib(), overrides=DEEP, depth="refuse")
    with pytest.raises(nmc.errors.InputError, match="depth 'deep' is not one of"):
        nmc.compile(dense_chain(2), calib=_calib(), depth="deep")


def test_the_rule_checks_phases_per_round_and_old_files_have_one_round(chain):
    deep, _, _ = chain
    old = deep.replace(meta={k: v for k, v in deep.meta.items() if k != "rounds"})
    assert drc.stage_rounds(old) == {"static": 1, "step": 1, "readout": 1}
    assert any("static stage needs 5 phases > 1 round(s) of 2" in v for v in drc.check_coremap(old))
    few = deep.replace(meta=dict(deep.meta, rounds={"static": 2, "step": 1, "readout": 1}))
    assert any("5 phases > 2 round(s) of 2" in v for v in drc.check_coremap(few))
    many = deep.replace(meta=dict(deep.meta, rounds={"static": 4, "step": 1, "readout": 1}))
    assert any("gives the static stage 4 rounds, but its 5 phases need 3" in v for v in drc.check_coremap(many))


def test_rounds_survive_a_save_and_load(chain, tmp_path):
    deep, _, _ = chain
    nmc.corefile.save(deep, tmp_path / "deep.nmc")
    back = nmc.corefile.load(tmp_path / "deep.nmc")
    assert back.meta["rounds"] == {"static": 3, "step": 1, "readout": 1}


def test_bounds_report_rounds_instead_of_refusing():
    b = nmc.check(dense_chain(5), overrides={"core.phases_per_step": 2})
    assert b.fits and b.phases["static"] == 5 and b.rounds["static"] == 3
    assert "static 5 (3 rounds)" in b.table()
    r = nmc.check(dense_chain(5), overrides={"core.phases_per_step": 2}, depth="refuse")
    assert not r.fits and "--depth rounds" in r.problems[0]


def test_cli_compiles_in_rounds_and_profiles_them(tmp_path, capsys):
    import onnx
    from nmc import cli
    onnx.save(dense_chain(5), str(tmp_path / "chain.onnx"))
    np.savez(tmp_path / "x.npz", **_calib())
    sets = [a for k, v in DEEP.items() for a in ("--set", f"{k}={v}")]
    assert cli.main(["compile", str(tmp_path / "chain.onnx"), "--calib", str(tmp_path / "x.npz"), *sets,
                     "-o", str(tmp_path / "m.nmc")]) == 0
    out = capsys.readouterr().out
    assert "phases {'static': 5, 'step': 0, 'readout': 0} in rounds {'static': 3, 'step': 1, 'readout': 1}" in out
    assert cli.main(["profile", str(tmp_path / "m.nmc"), "--input", str(tmp_path / "x.npz")]) == 0
    out = capsys.readouterr().out
    assert "rounds (stages deeper than core.phases_per_step): static 5 phases in 3 rounds, 2 boundaries x 132 " \
           "cycles = 264 cycles per task" in out
    assert "static/rounds" in out
    assert cli.main(["compile", str(tmp_path / "chain.onnx"), "--calib", str(tmp_path / "x.npz"), *sets,
                     "--depth", "refuse", "-o", str(tmp_path / "r.nmc")]) == 2
    assert "phases-per-step" in capsys.readouterr().err


def test_several_models_pay_the_boundaries_before_their_last_phase():
    """A 5-layer and a 2-layer chain on one system share the static stage's 5 phases, 3 rounds at 2 phases per
    round: the deep model waits for both boundaries (its last phase, 4, is in round 2), the shallow one for none
    (its last phase, 1, is in round 0)."""
    models = [dense_chain(5, name="deep"), dense_chain(2, seed=1, name="flat")]
    x = {"deep:x": _calib()["x"], "flat:x": _calib(seed=1)["x"]}
    a = nmc.emulate(nmc.compile(models, calib=x, overrides=DEEP), x).report
    b = nmc.emulate(nmc.compile(models, calib=x, overrides=WIDE), x).report
    lat = {m["name"]: m["latency_cycles"] for m in a["models"]}
    ref = {m["name"]: m["latency_cycles"] for m in b["models"]}
    assert lat == {"deep": ref["deep"] + 2 * BOUNDARY, "flat": ref["flat"]}


def test_latency_of_a_hand_built_chain_in_two_rounds():
    """Three static cores in a row, A (0, 0) -> B (1, 0) -> C (2, 0) -> host, one 8-bit value each, in phases 0, 1,
    2, on the hand chip (tests/randmaps.py: overhead 16, barrier 32, hop 2, host link 40, port 1) with 2 phases per
    round: rounds {0, 1} and {2}.  By hand (as test_emulator's three-stage example): every core computes
    16 + 1 + 1 + 1 = 19 cycles; input phase 40 + 1 = 41 + 32 = 73; A's phase 19 + 1 + 2 + 1 = 23 + 32 = 55; B's
    the same, 55; C's tap to the host 19 + 1 + 2 x 2 + 40 = 64 + 32 = 96: phases 279 cycles, plus one round
    boundary of 32 + 100 = 132: 411 cycles per task."""
    from randmaps import build_coremap, hand_chip
    chip = hand_chip(**{"core.phases_per_step": 2, "timing.round_overhead_cycles": 100})
    cores = [dict(W=[[1]], x=i, y=0, stage=0, phase=i, bits=8) for i in range(3)]
    cm = build_coremap(chip, cores,
                       inputs=[{"name": "x", "kind": "static", "shape": [1], "scale": 1.0, "lo": -128, "hi": 127}],
                       feeds=[(0, 0, 0, 0)], routes=[(0, 0, 1, 0, 0), (1, 0, 2, 0, 0)], outputs=[("y", "static", [(2, 0)])])
    old = cm  # a file without meta["rounds"]: one round per stage, so 3 phases break the budget of 2
    assert any(v.startswith("phases-per-step: the static stage needs 3 phases > 1 round(s) of 2")
               for v in drc.check_coremap(old))
    cm = cm.replace(meta=dict(cm.meta, rounds={"static": 2, "step": 1, "readout": 1}))
    assert drc.check_coremap(cm) == []
    for backend in ("numba", "reference"):
        run = nmc.emulate(cm, {"x": np.array([[5.0]])}, backend=backend)
        assert run.outputs["y"].tolist() == [[5.0]]
        assert run.result.latency_cycles.tolist() == [279]  # the phases, as a chip with no budget runs them
        assert run.report["latency_cycles"] == 411 and run.report["stages"]["static"] == 411
        assert run.report["rounds"]["static"] == dict(phases=3, rounds=2, boundary_cycles=132, cycles=132,
                                                      round_phases=[[0, 1], [2, 2]])


def test_pipelined_step_rounds(snn):
    """Pipelined SNN: the step stage's slots are the step-input phase, the 3 phases and 1 round boundary; with
    a boundary far slower than any phase (100,032 cycles) it is the slowest slot, so by hand the interval is
    100,032 and a task of T = 6 steps takes (T + 5 - 1) x 100,032 = 1,000,320 cycles (no static or read-out
    phases)."""
    _, _, x = snn
    model = lossless_snn(seed=1, steps=6, recurrent=False)
    slow = dict(DEEP, **{"timing.round_overhead_cycles": 100_000})
    cm = nmc.compile(model, calib=x, overrides=slow)
    assert cm.meta["phases"] == {"static": 0, "step": 3, "readout": 0} and cm.meta["rounds"]["step"] == 2
    rep = nmc.emulate(cm, x, schedule="pipelined").report
    assert rep["interval_cycles"] == 100_032 and rep["latency_cycles"] == 10 * 100_032
