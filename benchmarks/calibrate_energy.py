"""Fit a preset's energy.mac_pj / energy.sop_pj to Tianjic's published efficiency and show the result.

    python benchmarks/calibrate_energy.py [--chip tianjic]

Prints the efficiencies of the shipped preset, the fitted per-event energies, and the efficiencies
with them. Copy fitted values into nmc/presets/<chip>.toml if they differ (nmc/calibration.py says how).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmc.calibration import TARGET_GSOPS_PER_W, TARGET_TOPS_PER_W, fit_energies, measure  # noqa: E402
from nmc.chip import load_chip  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chip", default="tianjic")
    a = ap.parse_args()
    chip = load_chip(a.chip)
    e = measure(chip)
    print(f"{a.chip} as shipped: dense ANN {e.tops_per_w:.3f} TOPS/W (target {TARGET_TOPS_PER_W}), "
          f"SNN {e.gsops_per_w:.1f} GSOPS/W (target {TARGET_GSOPS_PER_W}); "
          f"ANN {e.ann_macs:.3g} MACs / {e.ann_energy_j * 1e6:.3f} uJ, SNN {e.snn_sops:.3g} SOPs / {e.snn_energy_j * 1e6:.3f} uJ")
    fit = fit_energies(chip)
    print("fitted: " + ", ".join(f"{k} = {v:.4f}" for k, v in fit.items()))
    e2 = measure(chip.with_overrides(fit))
    print(f"with fitted values: dense ANN {e2.tops_per_w:.3f} TOPS/W, SNN {e2.gsops_per_w:.1f} GSOPS/W")
    return 0


if __name__ == "__main__":
    sys.exit(main())
