"""Several models on one system (``nmc compile a.onnx b.onnx``, ``nmc.compile([a, b])``): each keeps its own
inputs and outputs (named ``<model>:<name>``), emulates to exactly what it gives compiled alone, and has its own
latency and energy in the report."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import nmc
from nmc.cli import main
from nmc.errors import ModelError
from nmc.frontend.builder import ModelBuilder
from nets import hybrid, lossless_snn, spike_inputs

STEPS = 5


def ann(steps: int = STEPS):
    """A static-stage ANN (two dense layers with integer weights): done before the first step."""
    rng = np.random.default_rng(4)
    b = ModelBuilder("ann", num_steps=steps)
    h = b.relu(b.gemm(b.input("x", (12,)), rng.integers(-2, 3, (10, 12)).astype(float), name="fc1"))
    b.output(b.gemm(h, rng.integers(-2, 3, (4, 10)).astype(float), name="fc2"))
    return b.build()


def test_two_models_on_one_system_keep_their_outputs_and_report_their_own_latency_and_energy():
    x = spike_inputs(0, STEPS, 2, 40)
    xa = np.random.default_rng(1).integers(0, 5, (2, 12)).astype(float)
    alone_snn = nmc.compile(lossless_snn(seed=0, steps=STEPS), calib={"spikes": x}, lint=True)
    alone_ann = nmc.compile(ann(), calib={"x": xa}, lint=True)
    both = nmc.compile([ann(), lossless_snn(seed=0, steps=STEPS)], calib={"ann:x": xa, "lossless0:spikes": x},
                       lint=True)
    assert [m["name"] for m in both.meta["models"]] == ["ann", "lossless0"]
    assert both.meta["models"][0]["inputs"] == ["ann:x"] and both.meta["models"][0]["outputs"] == ["ann:fc2"]
    assert both.num_cores == alone_snn.num_cores + alone_ann.num_cores
    r = nmc.emulate(both, {"ann:x": xa, "lossless0:spikes": x})
    r_snn, r_ann = nmc.emulate(alone_snn, {"spikes": x}), nmc.emulate(alone_ann, {"x": xa})
    for k, v in r_snn.raw.items():
        np.testing.assert_array_equal(r.raw[f"lossless0:{k}"], v)
    np.testing.assert_array_equal(r.raw["ann:fc2"], r_ann.raw["fc2"])
    rep = {m["name"]: m for m in r.report["models"]}
    # the ANN is done after the static stage; the SNN runs through every step: the whole task
    assert rep["ann"]["latency_cycles"] == r.report["stages"]["static"] < rep["lossless0"]["latency_cycles"]
    assert rep["lossless0"]["latency_cycles"] == r.report["latency_cycles"]
    assert rep["ann"]["energy_j"] > 0 and rep["lossless0"]["energy_j"] > 0
    assert rep["ann"]["energy_j"] + rep["lossless0"]["energy_j"] <= r.report["energy_j"]
    assert "lossless0:spikes -> lossless0:lif1.s" in nmc.emulator.profile.format_profile(r.report)


def test_models_with_different_step_counts_are_refused():
    with pytest.raises(ModelError, match="same number of steps.*'ann' 5, 'hybrid0' 8"):
        nmc.compile([ann(), hybrid(seed=0, steps=8)])


def test_cli_compiles_several_models(tmp_path, capsys):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(ann(), a)
    onnx.save(ann(), b)
    out, calib = tmp_path / "ab.nmc", tmp_path / "calib.npz"
    xa = np.random.default_rng(1).integers(0, 5, (2, 12)).astype(float)
    np.savez(calib, **{"a:x": xa, "b:x": xa})
    assert main(["compile", str(a), str(b), "--chip", "tianjic", "--calib", str(calib), "-o", str(out)]) == 0
    cm = nmc.load(out)
    assert [m["name"] for m in cm.meta["models"]] == ["a", "b"] and [i["name"] for i in cm.meta["inputs"]] == ["a:x", "b:x"]
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "models: a (2 layers: a:x -> a:fc2); b (2 layers: b:x -> b:fc2)" in capsys.readouterr().out
