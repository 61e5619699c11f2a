"""A timeline of one task in the Chrome trace event format (``nmc run --trace trace.json``; opens in
Perfetto, https://ui.perfetto.dev, or chrome://tracing).

The Numba kernel records, for one sample, the latency of every phase it runs, every core's compute cycles
and the NoC flows of every phase (``kernels.TraceBuf``), for the static stage, the first ``trace_steps``
steps and the readout stage; nothing else changes in the run.  :func:`chrome_trace` lays them out in time:

* process ``system``: track ``stages and steps`` (one slice per stage and per step, and one slice for the
  steps that were not traced), track ``phases`` (one slice per phase: compute, network and barrier),
  track ``barriers`` (the barrier at the end of every phase), and the host I/O links;
* one process per chip in use: one track per core (a slice per phase in which it computes, as long as its
  compute cycles) and one track per link that carries packets (a slice per run of consecutive busy cycles:
  a link starts one packet per cycle).

Times are microseconds at the chip's clock (``ts``/``dur``); every slice also carries its exact ``cycles``
in ``args``.  Link activity is recomputed packet by packet from the recorded flows with the reference NoC
model (``noc.simulate_heap``), which the tests hold equal to the kernel's; its last delivery is checked
against the kernel's for every phase.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from nmc.coremap import CoreMap, chips_of

from .noc import grid_shape, simulate_heap
from .result import RawResult
from .schedule import STAGE_NAMES, build_schedule, phase_slots

__all__ = ["chrome_trace", "DEFAULT_TRACE_STEPS"]

#: steps traced unless asked otherwise (a trace grows with steps x cores x busy links)
DEFAULT_TRACE_STEPS = 4

_SYSTEM_PID = 0
_TID_STEPS, _TID_PHASES, _TID_BARRIERS = 0, 1, 2
_CORE_TID0 = 100
_LINK_TID0 = 1_000_000
_DIRS = ("inject", "eject", "+x", "-x", "+y", "-y")


def _link_place(link: int, width: int, height: int, chip) -> tuple[int | None, str]:
    """(chip index or None for the host I/O links, a name) of a link of the grid (``emulator/noc.py``)."""
    n = 6 * width * height
    if link == n:
        return None, "host -> router (0,0)"
    if link == n + 1:
        return None, "router (0,0) -> host"
    r, k = divmod(link, 6)
    y, x = divmod(r, width)
    cx, cy = x // chip.cores_x, y // chip.cores_y
    chips_x = width // chip.cores_x
    to = {2: (x + 1, y), 3: (x - 1, y), 4: (x, y + 1), 5: (x, y - 1)}.get(k)
    name = f"link ({x},{y}) {_DIRS[k]}" if to is None else f"link ({x},{y}) -> ({to[0]},{to[1]})"
    return cy * chips_x + cx, name


def _busy_runs(starts: list[tuple[int, int]]) -> dict[int, list[tuple[int, int, int]]]:
    """Per link, runs ``(first cycle, cycles, packets)`` of consecutive busy cycles."""
    by_link: dict[int, list[int]] = {}
    for link, t in starts:
        by_link.setdefault(link, []).append(t)
    out = {}
    for link, ts in by_link.items():
        ts.sort()
        runs = []
        a = prev = ts[0]
        for t in ts[1:]:
            if t != prev + 1:
                runs.append((a, prev + 1 - a, prev + 1 - a))
                a = t
            prev = t
        runs.append((a, prev + 1 - a, prev + 1 - a))
        out[link] = runs
    return out


def chrome_trace(cm: CoreMap, res: RawResult, tb, sample: int, steps: int) -> dict[str, Any]:
    """The Chrome trace (a JSON-able dict) of ``sample`` of a run of ``steps`` steps whose kernel filled ``tb``
    (``kernels.trace_buffers``)."""
    chip = cm.chip
    sch = build_schedule(cm)
    slots = phase_slots(cm)
    n_ph = sch.ph_off.shape[0] - 1
    kinds = [inp["kind"] for inp in cm.meta["inputs"]]
    width, height = grid_shape(chip, chips_of(cm))
    chips_x = width // chip.cores_x
    layers = cm.meta["layers"]
    barrier = chip.timing.barrier_cycles
    us = 1e6 / chip.clock_hz
    ev: list[dict[str, Any]] = []
    tracks: dict[tuple[int, int], tuple[str, int]] = {}  # (pid, tid) -> name, sort index

    def sl(name, cat, pid, tid, t0, cyc, **args):
        ev.append({"name": name, "cat": cat, "ph": "X", "pid": pid, "tid": tid, "ts": t0 * us, "dur": cyc * us,
                   "args": {"cycles": int(cyc), **args}})

    def core_pid(c):
        return 1 + (int(cm.cores.y[c]) // chip.cores_y) * chips_x + int(cm.cores.x[c]) // chip.cores_x

    def run_phase(row, slot, t0, step):
        """Slices of one phase starting at cycle ``t0``; returns its latency."""
        pc = int(tb.ph[row, slot])
        stage, label = slots[slot]
        name = f"{stage} input" if label == "input" else f"{stage} phase {label}"
        where = {"step": step} if step is not None else {}
        if slot < n_ph:
            cores = sch.ph_cores[sch.ph_off[slot]:sch.ph_off[slot + 1]]
            lnames = sorted({layers[int(cm.cores.layer[c])]["name"] for c in cores})
            sl(name, "phase", _SYSTEM_PID, _TID_PHASES, t0, pc, compute_cycles=int(tb.cmax[row, slot]),
               layers=lnames, **where)
            for c in cores.tolist():
                pid = core_pid(c)
                tracks.setdefault((pid, _CORE_TID0 + c), (
                    f"core {c} ({int(cm.cores.x[c])},{int(cm.cores.y[c])}) "
                    f"{layers[int(cm.cores.layer[c])]['name']}", _CORE_TID0 + c))
                sl(layers[int(cm.cores.layer[c])]["name"], "core", pid, _CORE_TID0 + c, t0, int(tb.core[row, c]),
                   core=c, phase=name, **where)
        else:
            sl(name, "phase", _SYSTEM_PID, _TID_PHASES, t0, pc, compute_cycles=0, layers=["<host input>"], **where)
        if barrier:
            sl("barrier", "barrier", _SYSTEM_PID, _TID_BARRIERS, t0 + pc - barrier, barrier, **where)
        f0, nf = int(tb.fo[row, slot]), int(tb.fn[row, slot])
        fl = tb.flows[f0:f0 + nf]
        if nf:
            ready = np.repeat(fl[:, 0], fl[:, 2])
            path = np.repeat(fl[:, 1], fl[:, 2])
            starts: list[tuple[int, int]] = []
            deliver = simulate_heap(ready, path, sch.path_off, sch.path_link, sch.path_lat, starts)
            last = int(deliver.max()) if deliver.size else 0
            assert last == int(tb.last[row, slot]), (last, int(tb.last[row, slot]))  # the kernel's NoC == reference
            for link, runs in _busy_runs(starts).items():
                ci, lname = _link_place(link, width, height, chip)
                pid = _SYSTEM_PID if ci is None else 1 + ci
                tracks.setdefault((pid, _LINK_TID0 + link), (lname, _LINK_TID0 + link))
                for a, cyc, n in runs:
                    sl(f"{n} packet(s)", "link", pid, _LINK_TID0 + link, t0 + a, cyc, packets=n, link=link, **where)
        return pc

    def run_stage(row, s, t0, step=None):
        t = t0
        inp = n_ph + s if s < 2 and STAGE_NAMES[s] in kinds else None
        for slot in ([inp] if inp is not None else []) + list(range(int(sch.stage_ph[s]), int(sch.stage_ph[s + 1]))):
            t += run_phase(row, slot, t, step)
        return t - t0

    n = int(tb.steps)
    t = 0
    cyc = run_stage(0, 0, t)
    assert cyc == int(res.stage_cycles[sample, 0])
    sl("static stage", "stage", _SYSTEM_PID, _TID_STEPS, t, cyc)
    t += cyc
    for step in range(n):
        cyc = run_stage(1 + step, 1, t, step)
        assert cyc == int(res.step_cycles[sample, step])
        sl(f"step {step}", "step", _SYSTEM_PID, _TID_STEPS, t, cyc)
        t += cyc
    if steps > n:
        cyc = int(np.asarray(res.step_cycles[sample, n:steps]).sum())
        sl(f"steps {n}..{steps - 1} (not traced)", "untraced", _SYSTEM_PID, _TID_STEPS, t, cyc, steps=steps - n)
        sl(f"steps {n}..{steps - 1} (not traced)", "untraced", _SYSTEM_PID, _TID_PHASES, t, cyc, steps=steps - n)
        t += cyc
    cyc = run_stage(n + 1, 2, t)
    assert cyc == int(res.stage_cycles[sample, 2])
    sl("readout stage", "stage", _SYSTEM_PID, _TID_STEPS, t, cyc)
    t += cyc
    assert t == int(res.latency_cycles[sample])

    meta = [{"name": "process_name", "ph": "M", "pid": _SYSTEM_PID, "tid": 0, "args": {"name": "system"}},
            {"name": "process_sort_index", "ph": "M", "pid": _SYSTEM_PID, "tid": 0, "args": {"sort_index": 0}}]
    for tid, name in ((_TID_STEPS, "stages and steps"), (_TID_PHASES, "phases"), (_TID_BARRIERS, "barriers")):
        tracks[(_SYSTEM_PID, tid)] = (name, tid)
    for pid in sorted({p for p, _ in tracks} - {_SYSTEM_PID}):
        cy, cx = divmod(pid - 1, chips_x)
        meta.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": f"chip ({cx},{cy})"}})
        meta.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": pid}})
    for (pid, tid), (name, order) in sorted(tracks.items()):
        meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}})
        meta.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid, "args": {"sort_index": order}})
    return {
        "traceEvents": meta + ev,
        "displayTimeUnit": "ns",
        "otherData": {
            "model": cm.meta.get("model"), "chip": chip.name, "clock_hz": chip.clock_hz, "sample": int(sample),
            "steps": int(steps), "traced_steps": n, "latency_cycles": int(res.latency_cycles[sample]),
            "note": (f"sample {sample}: static stage, steps 0..{n - 1} and readout stage in detail"
                     + (f"; steps {n}..{steps - 1} as one slice (trace more with --trace-steps)" if steps > n else "")
                     + "; ts/dur in microseconds at the chip clock, exact cycles in args"),
        },
    }
