"""A seeded subset of the fuzz campaign (benchmarks/fuzz.py): hostile ONNX models, inputs.npz and .nmc files
(also tiled core maps with damaged shared-kernel tables) end in one clean NmcError (or a valid result), never
in a traceback, a hang, a memory blow-up or a result that slipped through broken; random small CNNs emulate
identically with every structured layer tiled and unfolded.  The cases run in one worker process capped at 4 GB and 20 s per case, as in
the full campaign (``python benchmarks/fuzz.py --cases 10000``)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = {"onnx": 200, "npz": 200, "nmc": 200, "kmap": 200, "tiles": 40}  # about 40 s


def _fuzz():
    spec = importlib.util.spec_from_file_location("nmc_fuzz", ROOT / "benchmarks" / "fuzz.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the worker's memory cap uses RLIMIT_AS")
def test_seeded_fuzz_subset_has_no_tracebacks_hangs_or_blowups(monkeypatch):
    fuzz = _fuzz()
    if not os.environ.get("PYTHONPATH"):  # the worker imports nmc from where this process does
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    assert set(CASES) == set(fuzz.KINDS)
    res = fuzz.campaign([k for k in fuzz.KINDS if k != "tiles"], CASES["onnx"], seed0=0, log=None)
    tiles = fuzz.campaign(["tiles"], CASES["tiles"], seed0=0, log=None)
    res["stats"].update(tiles["stats"])
    res["sigs"].update(tiles["sigs"])
    bad = {k: {o: st[o] for o in ("traceback", "hang", "memory", "slip") if st[o]} for k, st in res["stats"].items()}
    assert all(st["cases"] == CASES[k] for k, st in res["stats"].items())
    assert not any(bad.values()), fuzz.format_table(res)
    # the cases exercise both sides: some inputs are accepted, most are refused cleanly
    for k, st in res["stats"].items():
        assert st["ok"] > 0 and st["error"] > 0, (k, st)
