"""The main job on the shipped example: compile -> emulate -> report, with chip accuracy next to float.

    pip install -e ".[examples]" && python examples/digits_demo.py

Compiles examples/digits_hybrid.onnx (trained by examples/train_digits.py on scikit-learn's digits)
for a chip preset, emulates the held-out test images on the cycle-level emulator, and prints the
accuracy of the emulated chip next to the float model (nmc's float interpreter, and onnxruntime when
installed), the latency and energy per task, and the profile table. Writes the core map, the
result.npz and the report.json to --out.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import nmc  # noqa: E402
from nmc.emulator.profile import format_profile  # noqa: E402
from nmc.frontend import load_onnx, run_float  # noqa: E402
from nmc.files import save_json, save_npz  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=HERE / "digits_hybrid.onnx")
    ap.add_argument("--data", type=Path, default=HERE / "digits_test.npz")
    ap.add_argument("--chip", default="tianjic")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N test images")
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--out", type=Path, default=Path("out"))
    a = ap.parse_args(argv)

    data = np.load(a.data)
    images, labels = data["image"], data["label"]
    if a.limit:
        images, labels = images[: a.limit], labels[: a.limit]

    t0 = time.perf_counter()
    cm = nmc.compile(a.model, chip=a.chip)
    t_compile = time.perf_counter() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    nmc.save(cm, a.out / "digits.nmc")
    steps = a.steps or cm.meta["num_steps"]
    print(f"compiled {a.model.name} for {cm.chip.name} in {t_compile:.2f} s: {len(cm.meta['layers'])} layers on "
          f"{cm.num_cores} cores, phases {cm.meta['phases']}")

    t0 = time.perf_counter()
    res = nmc.emulate(cm, {"image": images}, steps=steps, backend=a.backend)
    t_emu = time.perf_counter() - t0
    chip_pred = res.outputs["logits"].argmax(-1)

    g = load_onnx(a.model)
    flt = run_float(g, {"image": images.astype(np.float64)}, steps=steps)
    float_pred = flt["logits"].argmax(-1)
    lines = [f"{'float model (nmc interpreter):':<34}accuracy {np.mean(float_pred == labels):.4f}"]
    try:
        from nmc.frontend.ort import run_onnxruntime

        ort = run_onnxruntime(str(a.model), {"image": images.astype(np.float32)}, steps=steps)
        lines.append(f"{'float model (onnxruntime):':<34}accuracy {np.mean(ort['logits'].argmax(-1) == labels):.4f}")
    except nmc.NmcError as e:
        lines.append(f"(onnxruntime not used: {e})")
    lines.append(f"{f'emulated chip ({cm.chip.name}):':<34}accuracy {np.mean(chip_pred == labels):.4f}  "
                 f"(agrees with float on {np.mean(chip_pred == float_pred):.1%} of {len(labels)} images)")
    print("\n".join(lines))
    rep = res.report
    rep["accuracy"] = dict(chip=float(np.mean(chip_pred == labels)), float=float(np.mean(float_pred == labels)),
                           agreement=float(np.mean(chip_pred == float_pred)), images=int(len(labels)))
    print(f"per task: {rep['latency_cycles']:.0f} cycles = {rep['latency_s'] * 1e6:.2f} us, "
          f"{rep['energy_j'] * 1e6:.4g} uJ; emulated {len(labels)} tasks x {steps} steps in {t_emu:.2f} s "
          "(the first run also compiles the Numba kernels, cached afterwards)")
    print()
    print(format_profile(rep))
    save_npz(a.out / "result.npz", res.outputs)
    save_json(a.out / "report.json", rep)
    print(f"\nwrote {a.out / 'digits.nmc'}, {a.out / 'result.npz'}, {a.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
