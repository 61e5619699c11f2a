"""Pricing has one owner, emulator/cost.py, and follows docs/timing_energy.md: static power is paid for
every core of every chip in use (a chip with at least one core of the map); unused chips cost nothing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nmc
from nmc.emulator.cost import Pricing, chips_in_use, powered_cores, price_run
from nmc.emulator.profile import format_profile
from nmc.emulator.result import EVENT_KINDS
from nets import lossless_snn, spike_inputs
from randmaps import build_coremap, hand_chip

ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "examples"
#: a chip of 2 x 3 cores: the digits example (9 cores) cannot fit one
SMALL_CHIP = {"cores_x": 2, "cores_y": 3}


@pytest.fixture(scope="module")
def images():
    return np.load(EX / "digits_test.npz")["image"][:6]


def _digits(chips, images, overrides=None):
    cm = nmc.compile(EX / "digits_hybrid.onnx", chip="tianjic", chips=chips, overrides=overrides)
    return cm, nmc.emulate(cm, {"image": images})


def _static_j(rep) -> float:
    eb = rep["energy_breakdown"]
    return eb["static_used_j"] + eb["static_idle_j"]


def _chip_of_cores(cm) -> set[tuple[int, int]]:
    """Chips the cores sit on, derived here from the positions (not by cost.py)."""
    x, y = cm.cores.x // cm.chip.cores_x, cm.cores.y // cm.chip.cores_y
    return set(zip(x.tolist(), y.tolist()))


def test_unused_chips_cost_nothing(images):
    cm1, r1 = _digits((1, 1), images)
    cm3, r3 = _digits((3, 1), images)
    # the same placement, every core on chip 0, in both systems
    assert _chip_of_cores(cm1) == _chip_of_cores(cm3) == {(0, 0)}
    np.testing.assert_array_equal(cm1.cores.x, cm3.cores.x)
    np.testing.assert_array_equal(cm1.cores.y, cm3.cores.y)
    a, b = r1.report, r3.report
    assert a["latency_cycles"] == b["latency_cycles"]
    assert _static_j(b) == pytest.approx(_static_j(a), rel=1e-12)
    assert b["energy_j"] == pytest.approx(a["energy_j"], rel=1e-12)
    assert b["energy_breakdown"]["static_idle_j"] == pytest.approx(a["energy_breakdown"]["static_idle_j"], rel=1e-12)
    chip = cm3.chip
    assert (b["chips_powered"], b["cores_powered"]) == (1, chip.cores_per_chip)
    assert b["cores_available"] == 3 * chip.cores_per_chip  # the system's total, powered or not
    # one chip's worth of static power, by hand
    assert _static_j(b) == pytest.approx(chip.energy.static_power_per_core_w * chip.cores_per_chip * b["latency_s"],
                                         rel=1e-12)


def test_old_rule_charging_every_chip_of_the_grid_is_gone(images):
    # the old report charged n_chips * cores_per_chip: 10,000 chips here (3.28 mJ and 156 W per digit)
    cm, r = _digits((100, 100), images[:2])
    rep, chip = r.report, cm.chip
    assert _chip_of_cores(cm) == {(0, 0)}
    p = chip.energy.static_power_per_core_w
    one_chip = p * chip.cores_per_chip * rep["latency_s"]
    whole_grid = p * 100 * 100 * chip.cores_per_chip * rep["latency_s"]
    assert _static_j(rep) == pytest.approx(one_chip, rel=1e-12)
    assert rep["energy_j"] < whole_grid / 100
    assert rep["power_w"] < 1.0  # the old rule reported 156 W


def test_model_on_two_chips_pays_two_chips(images):
    cm, r = _digits((3, 1), images, overrides=SMALL_CHIP)
    rep, chip = r.report, cm.chip
    assert chip.cores_per_chip == 6 and cm.num_cores > chip.cores_per_chip
    used = _chip_of_cores(cm)
    assert len(used) == 2, used  # two of the system's three chips hold cores
    p = chip.energy.static_power_per_core_w
    # static J = static_power_per_core_w * 2 * cores_per_chip * latency_s, per task
    expected = p * 2 * chip.cores_per_chip * rep["latency_s"]
    assert _static_j(rep) == pytest.approx(expected, rel=1e-12)
    assert rep["energy_breakdown"]["static_idle_j"] == pytest.approx(
        p * (2 * chip.cores_per_chip - cm.num_cores) * rep["latency_s"], rel=1e-12)
    assert (rep["chips_powered"], rep["cores_powered"], rep["cores_available"]) == (2, 12, 18)
    # the old rule would have charged all three chips
    assert _static_j(rep) != pytest.approx(p * 3 * chip.cores_per_chip * rep["latency_s"], rel=1e-3)
    assert chips_in_use(cm) == sorted(used) and powered_cores(cm) == 12


def test_static_energy_of_an_idle_core_by_hand():
    steps = 4
    model = lossless_snn(seed=0, steps=steps)
    x = spike_inputs(1, steps, 1, 40)
    cm = nmc.compile(model, chip="tianjic", calib={"spikes": x})
    res = nmc.emulate(cm, {"spikes": x}, steps=steps)
    rep = res.report
    # the tianjic preset: 6.41e-4 W of static power per core, 300 MHz, 12 x 13 = 156 cores per chip
    assert cm.chip.energy.static_power_per_core_w == 6.41e-4 and cm.chip.clock_hz == 300e6
    assert cm.chip.cores_per_chip == 156 and _chip_of_cores(cm) == {(0, 0)}
    L = rep["per_task"]["latency_cycles"][0]
    # one idle core for one task: 6.41e-4 W * L cycles / 300e6 Hz = L * 2.1367e-12 J
    per_idle_core = 6.41e-4 * L / 300e6
    idle = 156 - cm.num_cores
    assert rep["energy_breakdown"]["static_idle_j"] == pytest.approx(idle * per_idle_core, rel=1e-12)
    assert rep["energy_breakdown"]["static_used_j"] == pytest.approx(cm.num_cores * per_idle_core, rel=1e-12)
    assert rep["latency_s"] == pytest.approx(L / 300e6, rel=1e-12)


def test_report_formats_the_pricing(images):
    cm, r = _digits((3, 1), images, overrides=SMALL_CHIP)
    pr = price_run(cm, r.result)
    assert isinstance(pr, Pricing)
    B, C = len(images), cm.num_cores
    assert pr.dynamic_j.shape == (B, C, len(EVENT_KINDS))
    assert pr.static_used_j.shape == pr.core_j.shape == (B, C)
    assert pr.static_idle_j.shape == pr.energy_j.shape == pr.latency_s.shape == (B,)
    assert (pr.chips_powered, pr.cores_powered) == (2, 12)  # two chips of 2 x 3 cores hold the 9 cores
    assert "static (idle cores of powered chips)" in format_profile(r.report)


@pytest.mark.parametrize("n", [1, 3])
def test_report_per_core_figures_are_the_means_over_samples(images, n):
    # the report's per-core energy and cycles: np.mean over the samples of the run's own numbers, exactly (one
    # sample: its value, which the report takes without a mean per core)
    cm = nmc.compile(EX / "digits_hybrid.onnx", chip="tianjic")
    r = nmc.emulate(cm, {"image": images[:n]})
    pr = price_run(cm, r.result)
    cores = r.report["cores"]
    assert [c["energy_j"] for c in cores] == [float(np.mean(pr.core_j[:, k])) for k in range(cm.num_cores)]
    assert [c["compute_cycles"] for c in cores] == [float(np.mean(r.result.core_cycles[:, k]))
                                                    for k in range(cm.num_cores)]
    assert len({c["energy_j"] for c in cores}) > 1  # (the cores differ: a swapped or repeated value would show)


def test_price_run_and_report_of_one_core_by_hand():
    """One ANN core (40 axons x 20 neurons at (1, 0), the map of test_emulator's
    test_cycles_of_one_ann_core_by_hand): its events and latency are derived there by hand, priced here by hand."""
    chip = hand_chip()
    W = np.random.default_rng(0).integers(-5, 6, (40, 20))
    cm = build_coremap(chip, [dict(W=W, x=1, y=0, stage=0, bits=8, mult=1, shift=4)],
                       inputs=[{"name": "x", "kind": "static", "shape": [40], "scale": 1.0, "lo": -128, "hi": 127}],
                       feeds=[(0, i, 0, i) for i in range(40)], outputs=[("y", "static", [(0, j) for j in range(20)])])
    x = np.random.default_rng(1).integers(-128, 128, (2, 40)).astype(float)
    res = nmc.emulate(cm, {"x": x})
    # per task (both tasks alike): 183 cycles; events mac 800, neuron_update 20, sram_read 840 B, sram_write 20 B,
    # packet 8, hop 8, chip_crossing 8
    assert res.result.latency_cycles.tolist() == [183, 183]
    pj = 1e-12
    # dynamic: 800 x 1.2 + 20 x 1.0 + 840 x 0.01 + 20 x 0.02 + 8 x 2.0 + 8 x 1.0 + 8 x 30.0 = 1252.8 pJ
    by_event = {"mac": 960.0, "sop": 0.0, "neuron_update": 20.0, "spike": 0.0, "sram_read_bytes": 8.4,
                "sram_write_bytes": 0.4, "packet": 16.0, "hop": 8.0, "chip_crossing": 240.0, "lut_read": 0.0}
    # 183 cycles / 300 MHz = 0.61 us; static 1e-4 W x 0.61 us = 61 pJ per core: 1 core of the map, 155 idle
    lat_s, used, idle, dyn = 0.61e-6, 61.0, 155 * 61.0, 1252.8
    pr = price_run(cm, res.result)
    np.testing.assert_allclose(pr.latency_s, [lat_s] * 2, rtol=1e-12)
    np.testing.assert_allclose(pr.dynamic_j[0, 0] / pj, [by_event[k] for k in EVENT_KINDS], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pr.static_used_j / pj, [[used]] * 2, rtol=1e-12)
    np.testing.assert_allclose(pr.static_idle_j / pj, [idle] * 2, rtol=1e-12)
    np.testing.assert_allclose(pr.core_j / pj, [[dyn + used]] * 2, rtol=1e-12)  # 1313.8 pJ
    np.testing.assert_allclose(pr.energy_j / pj, [dyn + used + idle] * 2, rtol=1e-12)  # 10768.8 pJ
    assert (pr.chips_powered, pr.cores_powered) == (1, 156)
    # the report gives the same numbers per task
    rep = res.report
    assert rep["latency_cycles"] == 183 and rep["latency_s"] == pytest.approx(lat_s, rel=1e-12)
    assert rep["energy_j"] == pytest.approx(10768.8 * pj, rel=1e-12)
    assert rep["per_task"]["energy_j"] == pytest.approx([10768.8 * pj] * 2, rel=1e-12)
    assert rep["power_w"] == pytest.approx(10768.8e-12 / 0.61e-6, rel=1e-12)  # 17.65 mW
    assert rep["ops_per_j"] == pytest.approx(2 * 800 / 10768.8e-12, rel=1e-12)
    eb = rep["energy_breakdown"]
    assert eb["dynamic_j"] == pytest.approx(dyn * pj, rel=1e-12)
    assert eb["static_used_j"] == pytest.approx(used * pj, rel=1e-12)
    assert eb["static_idle_j"] == pytest.approx(idle * pj, rel=1e-12)
    assert {k: round(v / pj, 9) for k, v in eb["by_event_j"].items()} == by_event
    assert rep["events"] == {"mac": 800, "sop": 0, "neuron_update": 20, "spike": 0, "sram_read_bytes": 840,
                             "sram_write_bytes": 20, "packet": 8, "hop": 8, "chip_crossing": 8, "lut_read": 0}
    (layer,), (core,) = rep["layers"], rep["cores"]
    assert layer["energy_j"] == pytest.approx((dyn + used) * pj, rel=1e-12)
    assert layer["dynamic_j"] == pytest.approx(dyn * pj, rel=1e-12)
    assert core["energy_j"] == pytest.approx((dyn + used) * pj, rel=1e-12)
    assert (core["x"], core["y"], layer["compute_cycles"]) == (1, 0, 27)
    assert rep["stages"] == {"static": 183, "step": 0, "readout": 0}
    assert (rep["chips_powered"], rep["cores_powered"], rep["cores_available"]) == (1, 156, 156)


def test_profile_does_no_pricing():
    src = (ROOT / "emulator" / "profile.py").read_text()
    for word in ("static_power", "clock_hz", "chip.energy", "_pj", "price(", "static_energy", "idle_cores"):
        assert word not in src, word
