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
    # the tianjic preset: 1.0e-4 W of static power per core, 300 MHz, 12 x 13 = 156 cores per chip
    assert cm.chip.energy.static_power_per_core_w == 1.0e-4 and cm.chip.clock_hz == 300e6
    assert cm.chip.cores_per_chip == 156 and _chip_of_cores(cm) == {(0, 0)}
    L = rep["per_task"]["latency_cycles"][0]
    # one idle core for one task: 1.0e-4 W * L cycles / 300e6 Hz = L * 3.333e-13 J
    per_idle_core = 1.0e-4 * L / 300e6
    idle = 156 - cm.num_cores
    assert rep["energy_breakdown"]["static_idle_j"] == pytest.approx(idle * per_idle_core, rel=1e-12)
    assert rep["energy_breakdown"]["static_used_j"] == pytest.approx(cm.num_cores * per_idle_core, rel=1e-12)
    assert rep["latency_s"] == pytest.approx(L / 300e6, rel=1e-12)


def test_report_formats_the_pricing(images):
    cm, r = _digits((3, 1), images, overrides=SMALL_CHIP)
    pr = price_run(cm, r.result)
    rep = r.report
    assert isinstance(pr, Pricing)
    B, C = len(images), cm.num_cores
    assert pr.dynamic_j.shape == (B, C, len(EVENT_KINDS))
    assert pr.static_used_j.shape == pr.core_j.shape == (B, C)
    assert pr.static_idle_j.shape == pr.energy_j.shape == pr.latency_s.shape == (B,)
    np.testing.assert_allclose(pr.energy_j, pr.dynamic_j.sum((1, 2)) + pr.static_used_j.sum(1) + pr.static_idle_j)
    np.testing.assert_allclose(pr.core_j, pr.dynamic_j.sum(2) + pr.static_used_j)
    # the report's numbers are the pricing's
    assert rep["energy_j"] == pytest.approx(float(pr.energy_j.mean()), rel=1e-12)
    assert rep["latency_s"] == pytest.approx(float(pr.latency_s.mean()), rel=1e-12)
    np.testing.assert_allclose(rep["per_task"]["energy_j"], pr.energy_j, rtol=1e-12)
    eb = rep["energy_breakdown"]
    assert eb["static_idle_j"] == pytest.approx(float(pr.static_idle_j.mean()), rel=1e-12)
    assert eb["static_used_j"] == pytest.approx(float(pr.static_used_j.sum(1).mean()), rel=1e-12)
    assert eb["dynamic_j"] == pytest.approx(float(pr.dynamic_j.sum((1, 2)).mean()), rel=1e-12)
    assert (rep["chips_powered"], rep["cores_powered"]) == (pr.chips_powered, pr.cores_powered)
    assert "static (idle cores of powered chips)" in format_profile(rep)


def test_profile_does_no_pricing():
    src = (ROOT / "emulator" / "profile.py").read_text()
    for word in ("static_power", "clock_hz", "chip.energy", "_pj", "price(", "static_energy", "idle_cores"):
        assert word not in src, word
