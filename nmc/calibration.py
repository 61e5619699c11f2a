"""The energy-calibration operating points and the joint fit of a preset's dynamic and static energy.

Published figures of Tianjic (kept here and in ``tests/emulator/test_calibration.py``, which writes them out
again so that re-targeting the fit cannot move the goal):

* peak efficiency 1.28 TOPS/W on ANN work and about 650 GSOPS/W on SNN work (Nature 2019; SENECA table);
* about 400 mW average power on the bicycle applications at 0.9 V (IEEE CAS Magazine 2022);
* > 610 GB/s internal memory bandwidth (Nature 2019).

Three operating points, each run on the *pipelined* schedule (the chip busy, a new task every interval):

* ``ann_peak``: a chain of 8 512-wide int8 dense+ReLU layers on 144 of the 156 cores (the highest ANN
  efficiency of the networks tried: wide layers keep most cores busy in every pipeline slot);
* ``snn_peak``: 30 layers of 256 IF neurons (120 cores) with non-negative weights and threshold 1 driven by
  every input spiking, so every neuron fires every step and every synapse works (the highest SNN efficiency);
* ``bicycle``: a hybrid net like the bicycle's (an ANN branch on values and an SNN branch on 20 % input
  spikes, side by side every step, meeting in one IF layer), whose power is the published 400 mW average.

Energy is linear in ``energy.mac_pj``, ``energy.sop_pj`` and ``energy.static_power_per_core_w`` (cycles and
event counts do not depend on energies), so :func:`fit_energies` runs the three points once with those set
to 0 and solves the 3 x 3 system exactly; the other per-event energies stay the chip file's estimates.
For ``tianjic`` that system needs a negative SOP energy (the bicycle-like hybrid keeps too few cores busy
to draw 400 mW without more static power than the SNN peak point leaves room for), so the preset sets static
power (an estimate: 25 % of the 400 mW) and fits the two peak efficiencies at it
(``fit_energies(chip, static_power_per_core_w)``); the hybrid then draws about 270 mW.
``benchmarks/calibrate_energy.py`` prints both fits; the held-out checks (other sizes, rates, seeds, both
schedules) are in ``tests/emulator/test_calibration.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .api import compile, emulate
from .chip import ChipSpec, load_chip
from .errors import ChipSpecError
from .frontend.builder import ModelBuilder

__all__ = ["dense_ann_benchmark", "snn_benchmark", "hybrid_benchmark", "Point", "run_point", "measure",
           "fit_energies", "FITTED_FIELDS"]

#: the chip fields the fit sets
FITTED_FIELDS = ("energy.mac_pj", "energy.sop_pj", "energy.static_power_per_core_w")


def dense_ann_benchmark(chip: ChipSpec, width: int = 512, layers: int = 8, seed: int = 0):
    """(ONNX model, inputs) of a chain of int8 dense+ReLU layers, two samples."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder("dense_ann_benchmark", num_steps=1)
    h = b.input("x", (width,))
    for i in range(layers):
        W = rng.integers(-8, 9, size=(width, width)).astype(float)
        h = b.relu(b.gemm(h, W, None, name=f"fc{i}"), name=f"relu{i}")
    b.output(h)
    x = rng.integers(0, 128, size=(2, width)).astype(float)
    return b.build(), {"x": x}


def snn_benchmark(chip: ChipSpec, width: int = 512, layers: int = 8, steps: int = 16, rate: float = 1.0,
                  threshold: float = 1.0, w_lo: int = 0, w_hi: int = 8, seed: int = 0):
    """(ONNX model, inputs) of IF layers (weights in ``w_lo .. w_hi``) driven by random input spikes."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder("snn_benchmark", num_steps=steps)
    s = b.input("spikes", (width,), kind="step")
    for i in range(layers):
        W = rng.integers(w_lo, w_hi + 1, size=(width, width)).astype(float)
        s, _ = b.lif(b.gemm(s, W, None, name=f"fc{i}"), f"lif{i}", beta=1.0, threshold=threshold)
    b.output(s)
    x = (rng.random((steps, 2, width)) < rate).astype(np.float32)
    return b.build(), {"spikes": x}


def hybrid_benchmark(chip: ChipSpec, width: int = 256, ann_layers: int = 12, snn_layers: int = 8, steps: int = 16,
                     rate: float = 0.2, seed: int = 0):
    """(ONNX model, inputs) of a bicycle-like hybrid: every step an ANN branch (int8 dense+ReLU on values)
    and an SNN branch (IF layers, firing about 15 %, on ``rate`` input spikes) run side by side and meet in
    an IF layer fed by both (the ANN features converted to spikes)."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder("hybrid_benchmark", num_steps=steps)
    h = b.input("x", (width,), kind="step")
    s = b.input("spikes", (width,), kind="step")
    for i in range(ann_layers):
        W = rng.integers(-8, 9, size=(width, width)) / 64.0  # activations stay about the same size
        h = b.relu(b.gemm(h, W, None, name=f"ann{i}"), name=f"relu{i}")
    for i in range(snn_layers):
        W = rng.integers(-8, 9, size=(width, width)).astype(float)
        s, _ = b.lif(b.gemm(s, W, None, name=f"snn{i}"), f"lif{i}", beta=1.0, threshold=48.0)
    Wh = rng.integers(-8, 9, size=(width, width)) / 64.0
    Ws = rng.integers(-8, 9, size=(width, width)).astype(float)
    s, _ = b.lif(b.add(b.gemm(h, Wh, None, name="join_ann"), b.gemm(s, Ws, None, name="join_snn")), "join",
                 beta=1.0, threshold=48.0)
    b.output(s)
    x = rng.integers(0, 128, size=(steps, 2, width)).astype(float)
    sp = (rng.random((steps, 2, width)) < rate).astype(np.float32)
    return b.build(), {"x": x, "spikes": sp}


@dataclass
class Point:
    """One workload's figures per task (means over its samples)."""

    name: str
    macs: float
    sops: float
    energy_j: float
    static_j: float
    interval_s: float  #: time between consecutive tasks (sequential: the latency)
    latency_s: float
    cores_powered: int
    sram_read_bytes: float

    @property
    def tops_per_w(self) -> float:
        return 2 * self.macs / self.energy_j / 1e12  # an op is half a MAC

    @property
    def gsops_per_w(self) -> float:
        return self.sops / self.energy_j / 1e9

    @property
    def power_w(self) -> float:
        return self.energy_j / self.interval_s

    @property
    def sram_read_b_per_s(self) -> float:
        return self.sram_read_bytes / self.interval_s


def run_point(chip: ChipSpec, workload, name: str = "", schedule: str = "pipelined") -> Point:
    """Compile and emulate ``workload`` = (model, inputs) on ``chip`` under ``schedule``."""
    model, inputs = workload
    cm = compile(model, chip=chip, calib=inputs)
    r = emulate(cm, inputs, schedule=schedule).report
    eb = r["energy_breakdown"]
    return Point(name=name, macs=r["events"]["mac"], sops=r["events"]["sop"], energy_j=r["energy_j"],
                 static_j=eb["static_used_j"] + eb["static_idle_j"], interval_s=1.0 / r["throughput_tasks_per_s"],
                 latency_s=r["latency_s"], cores_powered=r["cores_powered"],
                 sram_read_bytes=r["events"]["sram_read_bytes"])


def _points(chip: ChipSpec) -> dict[str, tuple]:
    return {"ann_peak": dense_ann_benchmark(chip), "snn_peak": snn_benchmark(chip, width=256, layers=30),
            "bicycle": hybrid_benchmark(chip)}


def measure(chip: ChipSpec | str = "tianjic") -> dict[str, Point]:
    """The three operating points of the fit on ``chip`` (pipelined schedule)."""
    chip = load_chip(chip) if isinstance(chip, str) else chip
    return {k: run_point(chip, w, k) for k, w in _points(chip).items()}


def fit_energies(chip: ChipSpec | str = "tianjic", static_power_per_core_w: float | None = None) -> dict[str, float]:
    """Fit ``energy.mac_pj``, ``energy.sop_pj`` and ``energy.static_power_per_core_w`` jointly so that
    ``ann_peak`` gives the chip's published peak ANN efficiency (``published.peak_ann_tops_per_w``; tianjic:
    1.28 TOPS/W), ``snn_peak`` its peak SNN efficiency (650 GSOPS/W) and ``bicycle`` its average power (400 mW),
    every other energy of the chip as it is (the exact solution of the 3 x 3 system).  With
    ``static_power_per_core_w`` given, only the two peak efficiencies are fitted (2 x 2) at that static power.
    Raises :class:`ChipSpecError` when a figure it needs is not published, or naming the solution when it needs a
    negative energy."""
    chip = load_chip(chip) if isinstance(chip, str) else chip
    pub = chip.published
    need = ["peak_ann_tops_per_w", "peak_snn_gsops_per_w"] + (["average_power_w"] if static_power_per_core_w is None
                                                             else [])
    missing = [f"published.{f}" for f in need if not getattr(pub, f) > 0]
    if missing:
        raise ChipSpecError(f"chip '{chip.name}': the energy fit needs the published figure(s) {missing}, which the "
                            "chip file does not give: add them to its [published] section with their sources")
    z = measure(chip.with_overrides({f: 0.0 for f in FITTED_FIELDS}))
    a, s, h = z["ann_peak"], z["snn_peak"], z["bicycle"]
    # energy = other + macs * mac_J + sops * sop_J + cores_powered * interval_s * static_W
    A = np.array([[p.macs * 1e-12, p.sops * 1e-12, p.cores_powered * p.interval_s] for p in (a, s, h)])
    want = np.array([2 * a.macs / (pub.peak_ann_tops_per_w * 1e12), s.sops / (pub.peak_snn_gsops_per_w * 1e9),
                     pub.average_power_w * h.interval_s])
    rhs = want - np.array([a.energy_j, s.energy_j, h.energy_j])
    if static_power_per_core_w is None:
        mac, sop, static = np.linalg.solve(A, rhs)
    else:
        static = float(static_power_per_core_w)
        mac, sop = np.linalg.solve(A[:2, :2], rhs[:2] - A[:2, 2] * static)
    fit = {"energy.mac_pj": float(mac), "energy.sop_pj": float(sop), "energy.static_power_per_core_w": float(static)}
    bad = {k: round(v, 6) for k, v in fit.items() if not v >= 0}
    if bad:
        raise ChipSpecError(f"chip '{chip.name}': the published targets need a negative energy: {fit}; "
                            f"negative: {bad}" + (f" (the {pub.average_power_w * 1e3:g} mW bicycle point asks for more static power than the "
                                                  "peak-efficiency points leave room for: give static_power_per_core_w)"
                                                  if static_power_per_core_w is None else ""))
    return fit
