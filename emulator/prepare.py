"""The input checks both emulators (reference and Numba) run before a run: the public drivers call
:func:`nmc.coremap.check_coremap` and :func:`prepare_inputs`, so that the kernels never index out of
bounds.  What they derive from the core map alone is the schedule (``emulator/schedule.py``)."""
from __future__ import annotations

import math

import numpy as np

from nmc.coremap import CoreMap, input_kind_codes, n_elems
from nmc.errors import InputError

__all__ = ["prepare_inputs"]


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
            n = n_elems(inp)
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
