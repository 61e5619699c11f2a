"""Checks and static derivations shared by both emulators (reference and Numba).

Everything here depends on the core map only (never on input values): the public drivers call
:func:`check_coremap` and :func:`prepare_inputs` before running, so that the kernels never index
out of bounds.
"""
from __future__ import annotations

import math

import numpy as np

from nmc.coremap import (CoreMap, _n_elems, check_coremap, chips_of, in_bytes, input_kind_codes,  # noqa: F401
                         value_bytes)
from nmc.errors import InputError


__all__ = ["phase_slots", "check_coremap", "prepare_inputs", "stage_phases", "in_bytes", "state_bytes", "soma_cycles",
           "input_kind_codes", "chips_of", "value_bytes", "STAGE_NAMES"]

STAGE_NAMES = ("static", "step", "readout")


def prepare_inputs(cm: CoreMap, static_inputs, step_inputs, steps: int, batch: int | None = None):
    """Validate the inputs; return ``(B, T, static, step)`` with int64 ``[B, n]`` / ``[B, T, n]`` arrays.

    ``static``/``step`` map graph-input index -> array; every graph input of kind static/step must be
    given, with the element count of its header shape and values within its ``[lo, hi]``.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise InputError(f"steps must be a non-negative integer, got {steps!r}")
    T = int(steps)
    inputs = cm.meta.get("inputs", [])
    kinds = input_kind_codes(cm)
    static_inputs = dict(static_inputs or {})
    step_inputs = dict(step_inputs or {})
    B = None if batch is None else int(batch)
    out = ({}, {})
    for which, given, code in (("static", static_inputs, 0), ("step", step_inputs, 1)):
        for key in given:
            if not isinstance(key, (int, np.integer)) or not 0 <= key < len(inputs) or kinds[key] != code:
                names = [f"{i} ('{inp.get('name')}')" for i, inp in enumerate(inputs) if kinds[i] == code]
                raise InputError(f"{which}_inputs has key {key!r}, which is not a graph input of kind {which}; "
                                 f"those are: {names or 'none'}")
        for k in np.flatnonzero(kinds == code):
            k = int(k)
            inp = inputs[k]
            name = inp.get("name", k)
            if k not in given:
                raise InputError(f"graph input {k} ('{name}') of kind {which} was not given")
            v = np.asarray(given[k])
            if not (np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_):
                raise InputError(f"graph input '{name}' must be quantised integers (dtype {v.dtype}); "
                                 "quantise with the input's scale first")
            n = _n_elems(inp)
            lead = 1 if code == 0 else 2
            if v.ndim < lead or int(math.prod(v.shape[lead:])) != n:
                raise InputError(f"graph input '{name}' has shape {v.shape}; expected "
                                 f"{'[B' if code == 0 else '[B, T'}, {n} elements (shape {inp.get('shape')})]")
            if code == 1 and v.shape[1] != T:
                raise InputError(f"step input '{name}' has {v.shape[1]} steps; the run has steps={T}")
            if B is None:
                B = int(v.shape[0])
            elif v.shape[0] != B:
                raise InputError(f"graph input '{name}' has batch {v.shape[0]}, others have {B}")
            v = np.ascontiguousarray(v.reshape(v.shape[:lead] + (n,)), dtype=np.int64)
            lo, hi = inp.get("lo"), inp.get("hi")
            if v.size and ((lo is not None and v.min() < lo) or (hi is not None and v.max() > hi)):
                raise InputError(f"graph input '{name}' holds values in [{v.min()}, {v.max()}] outside its "
                                 f"quantised range [{lo}, {hi}]")
            out[code][k] = v
    if B is None:
        B = 1
    return B, T, out[0], out[1]


def phase_slots(cm: CoreMap) -> list[tuple[str, str]]:
    """Labels ``(stage, phase)`` of ``RawResult.phase_cycles``' slots: every phase that has cores, in stage
    order (phase = its ``core_phase``), then ``("static", "input")`` and ``("step", "input")``."""
    out = [(STAGE_NAMES[s], str(p)) for s, phases in enumerate(stage_phases(cm)) for p, _ in phases]
    return out + [("static", "input"), ("step", "input")]


def stage_phases(cm: CoreMap) -> list[list[tuple[int, np.ndarray]]]:
    """Per stage (static, step, readout): ``[(phase, cores ascending), ...]`` for the phases that have cores."""
    st, ph = cm.arrays["core_stage"], cm.arrays["core_phase"]
    out = []
    for s in range(3):
        cores = np.flatnonzero(st == s)
        out.append([(int(p), cores[ph[cores] == p].astype(np.int64)) for p in np.unique(ph[cores])])
    return out


def state_bytes(cm: CoreMap) -> np.ndarray:
    """SRAM bytes of state per neuron of every core [C]: ``ceil(M/8)`` for LIF, ``ceil(A/8)`` for count, else 0."""
    core = cm.chip.core
    soma = cm.arrays["core_soma"]
    out = np.zeros(cm.num_cores, dtype=np.int64)
    out[soma == 1] = (core.membrane_bits + 7) // 8
    out[soma == 3] = (core.accumulator_bits + 7) // 8
    return out


def soma_cycles(cm: CoreMap) -> np.ndarray:
    """``timing.soma_<mode>_cycles`` of every core [C]."""
    t = cm.chip.timing
    per_mode = np.array([t.soma_ann_cycles, t.soma_lif_cycles, t.soma_partial_cycles, t.soma_count_cycles],
                        dtype=np.int64)  # indexed by SOMA code: ann 0, lif 1, partial 2, count 3
    return per_mode[cm.arrays["core_soma"].astype(np.int64)]
