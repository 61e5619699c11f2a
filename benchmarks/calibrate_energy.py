"""Fit a preset's energies to Tianjic's published efficiency and power, and show the result.

    python benchmarks/calibrate_energy.py [--chip tianjic] [--static-w 6.41e-4]

Prints the three operating points (nmc/calibration.py) with the shipped energies, the joint 3 x 3 fit of
energy.mac_pj, energy.sop_pj and energy.static_power_per_core_w (or why it has no non-negative solution),
and the 2 x 2 fit of mac_pj and sop_pj at the given static power, with the points again. Copy fitted
values into nmc/presets/<chip>.toml if they differ.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmc.calibration import fit_energies, measure  # noqa: E402
from nmc.chip import load_chip  # noqa: E402
from nmc.errors import ChipSpecError  # noqa: E402


def show(title, chip):
    print(title)
    for k, p in measure(chip).items():
        print(f"  {k:<9} {p.tops_per_w:6.3f} TOPS/W  {p.gsops_per_w:7.1f} GSOPS/W  {p.power_w * 1e3:7.1f} mW  "
              f"static {100 * p.static_j / p.energy_j:4.1f} %  SRAM reads {p.sram_read_b_per_s / 1e9:6.1f} GB/s  "
              f"interval {p.interval_s * 1e6:.2f} us")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chip", default="tianjic")
    ap.add_argument("--static-w", type=float, default=None,
                    help="static power per core for the 2 x 2 fit (default: the chip file's)")
    a = ap.parse_args()
    chip = load_chip(a.chip)
    pub = chip.published  # the chip file's [published] figures
    print(f"targets: ann_peak {pub.peak_ann_tops_per_w} TOPS/W, snn_peak {pub.peak_snn_gsops_per_w} GSOPS/W, bicycle "
          f"{pub.average_power_w * 1e3:.0f} mW")
    show(f"{a.chip} as shipped:", chip)
    try:
        print("joint fit (3 x 3):", fit_energies(chip))
    except ChipSpecError as e:
        print(f"joint fit (3 x 3): {e}")
    static = a.static_w if a.static_w is not None else chip.energy.static_power_per_core_w
    fit = fit_energies(chip, static)
    print("fit of mac_pj, sop_pj at static " + f"{static:.4g} W/core: " + ", ".join(f"{k} = {v:.4g}" for k, v in fit.items()))
    show("with these:", chip.with_overrides(fit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
