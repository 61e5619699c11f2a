"""The timeline (Chrome trace), runs in chunks (progress, streaming to disk), and their promise: the run's
numbers are unchanged, and the trace's numbers are the emulator's own."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nmc
import nmc.emulator.kernels as kernels
from nmc.emulator import run_numba, run_reference
from nmc.emulator.memory import estimate_bytes
from nmc.emulator.schedule import phase_slots
from nmc.emulator.trace import chrome_trace
from nmc.errors import InputError
from randmaps import random_coremap, random_inputs

EX = Path(__file__).resolve().parents[2] / "examples"


def _traced(cm, static, step, T, sample, n, **kw):
    tb = kernels.trace_buffers(cm, T, sample, n)
    res = run_numba(cm, static, step, T, trace=tb, **kw)
    tr = json.loads(json.dumps(chrome_trace(cm, res, tb, sample, T)))  # JSON round trip: it loads
    return res, tr


def _slices(tr, cat):
    return [e for e in tr["traceEvents"] if e["ph"] == "X" and e["cat"] == cat]


@pytest.mark.parametrize("seed,shape", [(1, "mixed"), (2, "multichip"), (3, "snn"), (4, "ann")])
def test_trace_numbers_are_the_emulators(seed, shape):
    cm = random_coremap(seed, shape)
    B, T = 3, 3
    static, step = random_inputs(cm, B, T, seed)
    plain = run_numba(cm, static, step, T)
    res, tr = _traced(cm, static, step, T, sample=1, n=T, jobs=2)
    assert res.differences(plain) == []  # tracing changes nothing
    clock = cm.chip.clock_hz
    # the phase slices sum to the task's latency; the step slices are the steps' cycles
    phases = _slices(tr, "phase")
    assert sum(e["args"]["cycles"] for e in phases) == plain.latency_cycles[1]
    assert [e["args"]["cycles"] for e in _slices(tr, "step")] == plain.step_cycles[1].tolist()
    for e in phases + _slices(tr, "core") + _slices(tr, "link"):
        assert e["dur"] == pytest.approx(e["args"]["cycles"] * 1e6 / clock)
    # phases follow each other without gaps
    ph = sorted(phases, key=lambda e: e["ts"])
    for a, b in zip(ph, ph[1:]):
        assert b["ts"] == pytest.approx(a["ts"] + a["dur"])
    # every core slice is that core's compute cycles in that phase: per step, from the reference run of
    # t + 1 steps minus the run of t steps (step cores only compute in steps)
    cores = _slices(tr, "core")
    per_core = np.zeros(cm.num_cores, np.int64)
    for e in cores:
        per_core[e["args"]["core"]] += e["args"]["cycles"]
    assert per_core.tolist() == plain.core_cycles[1].tolist()
    one = {k: v[1:2] for k, v in static.items()}
    prev = np.zeros(cm.num_cores, np.int64)
    for t in range(T):
        ref = run_reference(cm, one, {k: v[1:2, :t + 1] for k, v in step.items()}, t + 1)
        stage0 = ref.core_cycles[0] * (cm.cores.stage == 1)
        got = {e["args"]["core"]: e["args"]["cycles"] for e in cores if e["args"].get("step") == t}
        want = stage0 - prev
        assert got == {c: int(want[c]) for c in np.flatnonzero(cm.cores.stage == 1)}
        prev = stage0
    # tracks: the system, one process per chip in use, a track per core that computes and per busy link
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in tr["traceEvents"] if e["name"] == "thread_name"}
    procs = {e["pid"]: e["args"]["name"] for e in tr["traceEvents"] if e["name"] == "process_name"}
    assert procs[0] == "system" and {"stages and steps", "phases", "barriers"} <= set(names.values())
    assert all(v.startswith("chip (") for p, v in procs.items() if p != 0)
    assert {e["args"]["core"] for e in cores} == set(range(cm.num_cores))
    assert all((e["pid"], e["tid"]) in names for e in cores + _slices(tr, "link"))
    # links started by packets: each crosses 2 end links (inject or host I/O, eject or host I/O), its hops
    # and its chip-to-chip links (crossings other than the host I/O link)
    n_starts = sum(e["args"]["packets"] for e in _slices(tr, "link"))
    P, H, X = (int(plain.events[1, :, kernels.EVENT_INDEX[k]].sum()) for k in ("packet", "hop", "chip_crossing"))
    assert 2 * P + H <= n_starts <= 2 * P + H + X


def test_trace_is_bounded_to_its_steps():
    cm = random_coremap(5, "mixed")
    B, T, n = 2, 7, 2
    static, step = random_inputs(cm, B, T, 5)
    plain = run_numba(cm, static, step, T)
    res, tr = _traced(cm, static, step, T, sample=0, n=n)
    assert res.differences(plain) == []
    assert len(_slices(tr, "step")) == n
    untraced = [e for e in _slices(tr, "untraced") if e["tid"] == 1]
    assert len(untraced) == 1 and untraced[0]["args"]["cycles"] == plain.step_cycles[0, n:].sum()
    total = sum(e["args"]["cycles"] for e in _slices(tr, "phase")) + untraced[0]["args"]["cycles"]
    assert total == plain.latency_cycles[0]
    assert tr["otherData"]["traced_steps"] == n and "--trace-steps" in tr["otherData"]["note"]


@pytest.mark.parametrize("seed,shape", [(6, "mixed"), (7, "multichip"), (8, "snn")])
def test_chunked_runs_equal_one_call(seed, shape, monkeypatch):
    cm = random_coremap(seed, shape)
    B, T = 5, 9
    static, step = random_inputs(cm, B, T, seed)
    whole = run_numba(cm, static, step, T)
    seen = []
    monkeypatch.setattr(kernels, "PROGRESS_PIECES", 4)
    chunked = run_numba(cm, static, step, T, progress=seen.append, jobs=2)
    assert chunked.differences(whole) == []
    assert len(seen) > 2 and seen[-1] == B * T and seen == sorted(seen)
    monkeypatch.setattr(kernels, "CHUNK_BYTES", 1)  # one step per chunk
    out = {name: np.zeros_like(v) for name, v in whole.outputs.items() if v.ndim == 3}
    cyc = np.zeros_like(whole.step_cycles)
    streamed = run_numba(cm, static, step, T, step_out=out, step_cycles_out=cyc)
    assert streamed.differences(whole) == []
    assert all(np.array_equal(out[k], whole.outputs[k]) for k in out) and np.array_equal(cyc, whole.step_cycles)


@pytest.fixture(scope="module")
def digits():
    cm = nmc.compile(EX / "digits_hybrid.onnx", chip="tianjic")
    x = np.load(EX / "digits_inputs.npz")
    return cm, {k: x[k][:6] for k in x.files}


def test_streamed_outputs_equal_the_in_memory_ones(digits, tmp_path):
    cm, inputs = digits
    mem = nmc.emulate(cm, inputs, steps=12)
    st = nmc.emulate(cm, inputs, steps=12, stream_dir=tmp_path / "s", progress=True)
    assert st.result.differences(mem.result) == []
    assert st.report == mem.report
    step_names = [o["name"] for o in cm.meta["outputs"] if o["stage"] == "step" and not o.get("final")]
    assert step_names
    for name in mem.outputs:
        assert np.array_equal(st.outputs[name], mem.outputs[name]) and np.array_equal(st.raw[name], mem.raw[name])
    for name in step_names:
        assert isinstance(st.outputs[name], np.memmap)  # not held in memory
        assert np.array_equal(np.load(tmp_path / "s" / f"{name}.npy"), mem.outputs[name])
        assert np.array_equal(np.load(tmp_path / "s" / f"{name}.raw.npy"), mem.raw[name])
    assert np.array_equal(np.load(tmp_path / "s" / "step_cycles.npy"), mem.result.step_cycles)


def test_streaming_lowers_the_memory_estimate(digits):
    cm, _ = digits
    assert estimate_bytes(cm, 8, 10 ** 6, stream=True) < estimate_bytes(cm, 8, 10 ** 6)


def test_trace_through_the_api_and_its_errors(digits):
    cm, inputs = digits
    r = nmc.emulate(cm, inputs, steps=16, trace_steps=3, trace_sample=4)
    assert r.trace["otherData"]["sample"] == 4
    assert sum(e["args"]["cycles"] for e in r.trace["traceEvents"] if e.get("cat") in ("phase", "untraced")
               and e["tid"] == 1) == r.report["per_task"]["latency_cycles"][4]
    for kw, what in ((dict(trace_steps=0), "trace at least 1 step"), (dict(trace_steps=2, trace_sample=6), "0 .. 5"),
                     (dict(trace_steps=2, backend="reference"), "numba backend")):
        with pytest.raises(InputError, match=what):
            nmc.emulate(cm, inputs, steps=4, **kw)


def test_phase_slots_label_the_trace(digits):
    cm, inputs = digits
    r = nmc.emulate(cm, inputs, steps=2, trace_steps=2)
    labels = {e["name"] for e in r.trace["traceEvents"] if e.get("cat") == "phase"}
    assert labels == {f"{s} input" if p == "input" else f"{s} phase {p}" for s, p in phase_slots(cm)
                      if not (p == "input" and s not in [i["kind"] for i in cm.meta["inputs"]])}
