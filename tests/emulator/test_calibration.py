"""Energy of the tianjic preset against Tianjic's published figures, checked on workloads the fit never saw.

The fit (nmc/calibration.py) uses three operating points: 8 512-wide dense layers (ANN peak), 30 x 256 IF layers
with every synapse active (SNN peak), a bicycle-like hybrid (seed 0). The held-out workloads below differ in
size, input sparsity, seed and schedule. Published figures, written here so that re-targeting cannot move them:
"""
import pytest

from nmc.calibration import dense_ann_benchmark, fit_energies, hybrid_benchmark, measure, run_point, snn_benchmark
from nmc.chip import list_presets, load_chip
from nmc.errors import ChipSpecError

PUBLISHED_TOPS_PER_W = 1.28  #: Pei et al., Nature 2019: peak ANN efficiency
PUBLISHED_GSOPS_PER_W = 650.0  #: Nature 2019 / SENECA comparison table: peak SNN efficiency
PUBLISHED_SRAM_B_PER_S = 610e9  #: Nature 2019: internal memory bandwidth
#: most power the chip can draw: every MAC of 156 cores (16 per cycle, the preset's derived width) at 300 MHz
#: working at the published peak efficiency: 156 * 16 * 3e8 * 2 ops / 1.28e12 ops/J = 1.17 W
MAX_CHIP_POWER_W = 156 * 16 * 3e8 * 2 / 1.28e12
#: static power floor of the preset: 25 % of the 400 mW average (CAS Mag 2022), see the preset
STATIC_CHIP_W = 0.1


@pytest.fixture(scope="module")
def chip():
    return load_chip("tianjic")


def test_every_preset_energy_is_non_negative():
    for name in list_presets():
        e = load_chip(name).energy
        assert all(getattr(e, f) >= 0 for f in e.__dataclass_fields__), name


def test_fit_points_reach_the_published_peaks(chip):
    m = measure(chip)
    assert m["ann_peak"].tops_per_w == pytest.approx(PUBLISHED_TOPS_PER_W, rel=0.02)
    assert m["snn_peak"].gsops_per_w == pytest.approx(PUBLISHED_GSOPS_PER_W, rel=0.02)
    assert m["snn_peak"].macs == 0 and m["ann_peak"].sops == 0  # each point exercises one kind only


HELD_OUT_ANN = [dict(width=256, layers=30, seed=1), dict(width=384, layers=6, seed=2), dict(width=128, layers=12, seed=3)]
HELD_OUT_SNN = [dict(width=256, layers=8, rate=0.2, threshold=48.0, w_lo=-8, seed=4),
                dict(width=192, layers=6, rate=0.5, threshold=16.0, w_lo=-4, seed=5, steps=8)]


@pytest.mark.parametrize("schedule", ["pipelined", "sequential"])
@pytest.mark.parametrize("kw", HELD_OUT_ANN, ids=lambda k: f"w{k['width']}x{k['layers']}")
def test_held_out_ann_never_beats_the_published_peak(chip, kw, schedule):
    p = run_point(chip, dense_ann_benchmark(chip, **kw), schedule=schedule)
    assert 0 < p.tops_per_w <= PUBLISHED_TOPS_PER_W
    assert STATIC_CHIP_W * 0.99 <= p.power_w <= MAX_CHIP_POWER_W
    assert p.sram_read_b_per_s <= PUBLISHED_SRAM_B_PER_S


@pytest.mark.parametrize("schedule", ["pipelined", "sequential"])
@pytest.mark.parametrize("kw", HELD_OUT_SNN, ids=lambda k: f"w{k['width']}r{k['rate']}")
def test_held_out_snn_never_beats_the_published_peak(chip, kw, schedule):
    p = run_point(chip, snn_benchmark(chip, **kw), schedule=schedule)
    # SOP efficiency counts all the workload's energy (partial-sum cores' MACs too)
    assert 0 < p.gsops_per_w <= PUBLISHED_GSOPS_PER_W
    assert STATIC_CHIP_W * 0.99 <= p.power_w <= MAX_CHIP_POWER_W
    assert p.sram_read_b_per_s <= PUBLISHED_SRAM_B_PER_S


@pytest.mark.parametrize("kw", [dict(width=192, seed=6), dict(width=256, ann_layers=6, snn_layers=4, rate=0.4, seed=7)])
def test_held_out_hybrid_power_and_bandwidth_within_published_bounds(chip, kw):
    p = run_point(chip, hybrid_benchmark(chip, **kw), schedule="pipelined")
    assert STATIC_CHIP_W * 0.99 <= p.power_w <= MAX_CHIP_POWER_W
    assert p.sram_read_b_per_s <= PUBLISHED_SRAM_B_PER_S
    assert (2 * p.macs + p.sops) / p.energy_j <= PUBLISHED_TOPS_PER_W * 1e12


def test_the_fit_targets_are_the_preset_s_published_figures_and_need_them():
    # the tianjic file's [published] section holds the papers' figures (written above by hand)
    pub = load_chip("tianjic").published
    assert (pub.peak_ann_tops_per_w, pub.peak_snn_gsops_per_w, pub.average_power_w,
            pub.sram_bandwidth_bytes_per_s) == (PUBLISHED_TOPS_PER_W, PUBLISHED_GSOPS_PER_W, 0.4, PUBLISHED_SRAM_B_PER_S)
    # loihi publishes none of them: the fit refuses at once, naming the fields and the section
    with pytest.raises(ChipSpecError, match=r"published\.peak_ann_tops_per_w.*\[published\]"):
        fit_energies("loihi")
