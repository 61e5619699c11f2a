"""The energy-calibration benchmarks and how a preset's per-event energies are fitted to them.

Tianjic's published efficiency (Nature 2019) is 1.28 TOPS/W on ANN work and about 650 GSOPS/W on
SNN work.  The ``tianjic`` preset's ``energy.mac_pj`` and ``energy.sop_pj`` are fitted so that

* the *dense ANN benchmark* (a chain of 256-wide int8 dense+ReLU layers filling most of the chip,
  one inference) gives 1.28 TOPS/W (an op is half a MAC), and
* the *SNN benchmark* (eight 256-wide IF layers driven by 20 % random input spikes for 16 steps)
  gives 650 GSOPS/W,

where energy is everything the cost model charges (all event kinds plus static power of the whole
chip).  The other per-event energies are estimates (see the preset); ``benchmarks/calibrate_energy.py``
prints the fitted values and ``tests/emulator/test_calibration.py`` checks the shipped preset stays within 10 %.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .api import compile, emulate
from .chip import ChipSpec, load_chip
from .frontend.builder import ModelBuilder

__all__ = ["dense_ann_benchmark", "snn_benchmark", "measure", "fit_energies", "TARGET_TOPS_PER_W",
           "TARGET_GSOPS_PER_W"]

TARGET_TOPS_PER_W = 1.28  #: Pei et al., Nature 2019
TARGET_GSOPS_PER_W = 650.0  #: Nature 2019 / SENECA comparison table


def dense_ann_benchmark(chip: ChipSpec, width: int = 256, layers: int | None = None, seed: int = 0):
    """(ONNX model, inputs, calibration inputs) of a chain of int8 dense+ReLU layers."""
    n = layers if layers is not None else max(2, min(chip.core.phases_per_step - 2, 30))
    rng = np.random.default_rng(seed)
    b = ModelBuilder("dense_ann_benchmark", num_steps=1)
    h = b.input("x", (width,))
    for i in range(n):
        W = rng.integers(-8, 9, size=(width, width)).astype(float)
        h = b.relu(b.gemm(h, W, None, name=f"fc{i}"), name=f"relu{i}")
    b.output(h)
    x = rng.integers(0, 128, size=(2, width)).astype(float)
    return b.build(), {"x": x}


def snn_benchmark(chip: ChipSpec, width: int = 256, layers: int = 8, steps: int = 16, rate: float = 0.2,
                  seed: int = 0):
    """(ONNX model, inputs) of IF layers driven by random input spikes."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder("snn_benchmark", num_steps=steps)
    s = b.input("spikes", (width,), kind="step")
    for i in range(layers):
        W = rng.integers(-8, 9, size=(width, width)).astype(float)  # firing rates settle at about 15 %
        s, _ = b.lif(b.gemm(s, W, None, name=f"fc{i}"), f"lif{i}", beta=1.0, threshold=48.0)
    b.output(s)
    x = (rng.random((steps, 2, width)) < rate).astype(np.float32)
    return b.build(), {"spikes": x}


@dataclass
class Efficiency:
    tops_per_w: float
    gsops_per_w: float
    ann_macs: float
    ann_energy_j: float
    snn_sops: float
    snn_energy_j: float


def _run(chip: ChipSpec, model, inputs):
    cm = compile(model, chip=chip, calib=inputs)
    return emulate(cm, inputs).report


def measure(chip: ChipSpec | str = "tianjic") -> Efficiency:
    """Emulate both benchmarks on ``chip`` and return their efficiencies."""
    chip = load_chip(chip) if isinstance(chip, str) else chip
    ra = _run(chip, *dense_ann_benchmark(chip))
    rs = _run(chip, *snn_benchmark(chip))
    macs, sops = ra["events"]["mac"], rs["events"]["sop"]
    return Efficiency(tops_per_w=2 * macs / ra["energy_j"] / 1e12, gsops_per_w=sops / rs["energy_j"] / 1e9,
                      ann_macs=macs, ann_energy_j=ra["energy_j"], snn_sops=sops, snn_energy_j=rs["energy_j"])


def fit_energies(chip: ChipSpec | str = "tianjic") -> dict[str, float]:
    """``energy.mac_pj`` and ``energy.sop_pj`` that make ``measure`` hit the published targets, keeping every
    other per-event energy of the chip as it is. Energy is linear in them, so two runs per benchmark suffice."""
    chip = load_chip(chip) if isinstance(chip, str) else chip
    z = chip.with_overrides({"energy.mac_pj": 0.0, "energy.sop_pj": 0.0})
    e0 = measure(z)
    other_ann = e0.ann_energy_j
    other_snn = e0.snn_energy_j
    want_ann = 2 * e0.ann_macs / (TARGET_TOPS_PER_W * 1e12)
    want_snn = e0.snn_sops / (TARGET_GSOPS_PER_W * 1e9)
    # the ANN benchmark has no SOPs and the SNN benchmark's MACs (if any) are counted in other_snn only if
    # mac_pj is 0, so solve the 2x2 system exactly
    one = measure(chip.with_overrides({"energy.mac_pj": 1.0, "energy.sop_pj": 0.0}))
    mac_in_snn = (one.snn_energy_j - other_snn) / 1e-12  # MACs the SNN benchmark performs
    mac_pj = (want_ann - other_ann) / (e0.ann_macs * 1e-12)
    sop_pj = (want_snn - other_snn - mac_in_snn * mac_pj * 1e-12) / (e0.snn_sops * 1e-12)
    return {"energy.mac_pj": mac_pj, "energy.sop_pj": sop_pj}
