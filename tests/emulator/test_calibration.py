"""The tianjic preset reproduces Tianjic's published efficiency on the calibration benchmarks."""
import pytest

from nmc.calibration import TARGET_GSOPS_PER_W, TARGET_TOPS_PER_W, measure


def test_tianjic_preset_hits_published_efficiency():
    e = measure("tianjic")
    assert e.tops_per_w == pytest.approx(TARGET_TOPS_PER_W, rel=0.05)
    assert e.gsops_per_w == pytest.approx(TARGET_GSOPS_PER_W, rel=0.05)
    # the benchmarks really are what they claim: MAC-dominated and SOP-dominated
    assert e.ann_macs > 1e6 and e.snn_sops > 5e5
