"""The ONNX models the `onnx` wheel ships, through nmc: the 82 single-op ``pytorch-converted`` models and the nine
``light`` CNNs (onnx/backend/test/data/ under site-packages).

    python benchmarks/onnx_backend_models.py [--set pytorch-converted|light|both] [--only NAME] [--lower]

pytorch-converted: each model is imported as shipped, calibrated on 256 fresh samples (fewer for inputs over 16k
values) drawn like its test input (same mean and spread, another seed; integer inputs, an embedding's indices:
integers of the test input's range), compiled for tianjic (``chips="auto"``), emulated on the shipped test input and
compared with the shipped output: it *matches* when the largest error is within ``TOL`` (3 %) of the output's
largest magnitude.  The shipped output is what onnxruntime computes (within 1e-6) for 79 models: 59 as shipped, 20
of opsets 1-6 once converted to opset 13; the three old PRelu models with one slope per channel run faithfully in no
current onnxruntime, their reference is the shipped output alone (tests/frontend/test_onnx_backend_models.py).  light: each model is imported as shipped (LRN on the cores, or approximated as
identity where asked for: ``--approximate-lrn``), and with ``--lower`` also lowered (nmc's lower pass).  Prints one line per model
and the totals; exits 0.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nmc  # noqa: E402
from nmc.errors import NmcError  # noqa: E402
from nmc.frontend import load_onnx  # noqa: E402
from nmc.mapper.lower import lower  # noqa: E402

#: a model matches when max |chip - onnxruntime| <= TOL * max |onnxruntime|
TOL = 0.03
DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"


def _first_line(e: Exception) -> str:
    text = str(e).splitlines()
    return f"{type(e).__name__}: " + " | ".join(t.strip() for t in text[:3])[:300]


def pytorch_converted(name: str) -> tuple[str, str]:
    """(status, detail): status is 'match', 'mismatch' or 'refused'."""
    d = DATA / "pytorch-converted" / name
    model = onnx.load(str(d / "model.onnx"))
    x = numpy_helper.to_array(onnx.load_tensor(str(d / "test_data_set_0" / "input_0.pb")))
    y = numpy_helper.to_array(onnx.load_tensor(str(d / "test_data_set_0" / "output_0.pb")))
    inits = {t.name for t in model.graph.initializer}
    in_name = [i.name for i in model.graph.input if i.name not in inits][0]
    out_name = model.graph.output[0].name
    rng = np.random.default_rng(1)
    n = int(np.clip((1 << 22) // max(1, x[0].size), 4, 256))  # fewer samples of a large input (memory)
    if np.issubdtype(x.dtype, np.integer):  # indices (an embedding's): integers of the test input's range
        calib = rng.integers(int(x.min()), int(x.max()) + 1, size=(n, *x.shape[1:]))
    else:
        calib = (rng.standard_normal((n, *x.shape[1:])) * x.std() + x.mean()).astype(np.float32)
    try:
        cm = nmc.compile(model, chip="tianjic", calib={in_name: calib}, chips="auto")
        out = nmc.emulate(cm, {in_name: x}).outputs[out_name]
    except NmcError as e:
        return "refused", _first_line(e)
    if out.shape != y.shape:
        return "mismatch", f"shape {out.shape} != {y.shape}"
    err = float(np.abs(out - y).max())
    rel = err / max(float(np.abs(y).max()), 1e-12)
    return ("match" if rel <= TOL else "mismatch"), f"max error {err:.3g} = {100 * rel:.2f} % of the range"


def light(name: str, do_lower: bool, approximate_lrn: bool) -> tuple[str, str]:
    f = DATA / "light" / f"{name}.onnx"
    t0 = time.perf_counter()
    try:
        g = load_onnx(str(f), approximate={"LRN": "identity"} if approximate_lrn else None)
    except NmcError as e:
        return "refused", _first_line(e)
    detail = f"imported: {len(g.nodes)} IR nodes in {time.perf_counter() - t0:.1f} s"
    if not do_lower:
        return "imported", detail
    t0 = time.perf_counter()
    try:
        lg = lower(g)
    except NmcError as e:
        return "imported", detail + "; lower refused: " + _first_line(e)
    syn = sum(l.rows.size for l in lg.layers)
    return "lowered", detail + f"; lowered: {len(lg.layers)} layers, {syn} synapses in {time.perf_counter() - t0:.1f} s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=["pytorch-converted", "light", "both"], default="both")
    ap.add_argument("--only", help="one model (directory name, e.g. test_Conv2d, or light_squeezenet)")
    ap.add_argument("--lower", action="store_true", help="light: also run nmc's lower pass")
    ap.add_argument("--approximate-lrn", action="store_true", help="light: LRN as identity (else on the cores)")
    a = ap.parse_args(argv)
    if a.set in ("pytorch-converted", "both"):
        names = sorted(p.name for p in (DATA / "pytorch-converted").iterdir() if p.is_dir())
        names = [n for n in names if not a.only or n == a.only]
        counts: dict[str, int] = {}
        for n in names:
            t0 = time.perf_counter()
            status, detail = pytorch_converted(n)
            counts[status] = counts.get(status, 0) + 1
            print(f"{n:45s} {status:9s} {time.perf_counter() - t0:6.1f} s  {detail}", flush=True)
        print(f"pytorch-converted: {counts.get('match', 0)}/{len(names)} match their shipped outputs within {100 * TOL:g} % "
              f"({counts})")
    if a.set in ("light", "both"):
        names = sorted(p.stem for p in (DATA / "light").glob("*.onnx"))
        names = [n for n in names if not a.only or n == a.only]
        counts = {}
        for n in names:
            status, detail = light(n, a.lower, a.approximate_lrn)
            counts[status] = counts.get(status, 0) + 1
            print(f"{n:25s} {status:9s} {detail}", flush=True)
        print(f"light: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
