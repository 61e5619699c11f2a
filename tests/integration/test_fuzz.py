"""A seeded subset of the fuzz campaign (benchmarks/fuzz.py): hostile ONNX models, inputs.npz and .nmc files
end in one clean NmcError (or a valid result), never in a traceback, a hang, a memory blow-up or a result
that slipped through broken.  The cases run in one worker process capped at 4 GB and 20 s per case, as in
the full campaign (``python benchmarks/fuzz.py --cases 10000``)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = 200  # per kind: 600 cases, about 15 s


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
    res = fuzz.campaign(fuzz.KINDS, CASES, seed0=0, log=None)
    bad = {k: {o: st[o] for o in ("traceback", "hang", "memory", "slip") if st[o]} for k, st in res["stats"].items()}
    assert all(st["cases"] == CASES for st in res["stats"].values())
    assert not any(bad.values()), fuzz.format_table(res)
    # the cases exercise both sides: some inputs are accepted, most are refused cleanly
    for k, st in res["stats"].items():
        assert st["ok"] > 0 and st["error"] > 0, (k, st)
