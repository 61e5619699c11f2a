"""The example's whole story, small: train on the real digits (torch), export ONNX, compile, emulate."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import nmc

EX = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EX / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_train_export_compile_emulate(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    train = _load("train_digits")
    res = train.train_and_export(epochs=8, seed=1, out=tmp_path)
    # the exported file computes what was trained (spikes may flip only at float32/64 ties)
    assert res["export_agreement"] >= 0.97, res
    assert res["torch_accuracy"] > 0.8, res
    data = np.load(tmp_path / "digits_test.npz")
    images, labels = data["image"][:120], data["label"][:120]
    cm = nmc.compile(tmp_path / "digits_hybrid.onnx", chip="tianjic")  # ranges ship in the model
    chip = nmc.emulate(cm, {"image": images}).outputs["logits"].argmax(-1)
    assert np.mean(chip == labels) >= res["onnx_accuracy"] - 0.08


def test_demo_runs_on_the_shipped_model(tmp_path, capsys):
    demo = _load("digits_demo")
    assert demo.main(["--limit", "40", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "emulated chip (tianjic):" in out and "where the time goes" in out
    for f in ("digits.nmc", "result.npz", "report.json"):
        assert (tmp_path / f).exists()
    with np.load(tmp_path / "result.npz") as z:
        assert z["logits"].shape == (40, 10)
