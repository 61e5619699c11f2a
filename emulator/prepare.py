"""Checks and static derivations shared by both emulators (reference and Numba).

Everything here depends on the core map only (never on input values): the public drivers call
:func:`check_coremap` and :func:`prepare_inputs` before running, so that the kernels never index
out of bounds.
"""
from __future__ import annotations

import math

import numpy as np

from nmc.coremap import ARRAYS, STAGE, CoreMap
from nmc.errors import CoreMapError, InputError

from .noc import grid_shape

__all__ = ["check_coremap", "prepare_inputs", "stage_phases", "in_bytes", "state_bytes", "soma_cycles",
           "input_kind_codes", "chips_of", "value_bytes", "STAGE_NAMES"]

STAGE_NAMES = ("static", "step", "readout")
_KIND_CODE = {"static": 0, "step": 1, "state": 2}


def chips_of(cm: CoreMap) -> tuple[int, int]:
    """The ``[chips_x, chips_y]`` grid of chips (``meta["chips"]``, else the chip's default system)."""
    ch = cm.meta.get("chips")
    if ch is None:
        return cm.chip.system.chips_x, cm.chip.system.chips_y
    return int(ch[0]), int(ch[1])


def input_kind_codes(cm: CoreMap) -> np.ndarray:
    """Kind of every graph input: 0 static, 1 step, 2 state."""
    out = []
    for k, inp in enumerate(cm.meta.get("inputs", [])):
        kind = inp.get("kind")
        if kind not in _KIND_CODE:
            raise CoreMapError(f"graph input {k} ('{inp.get('name')}') has kind {kind!r}; "
                               f"expected one of {list(_KIND_CODE)}")
        out.append(_KIND_CODE[kind])
    return np.array(out, dtype=np.int64)


def _n_elems(inp: dict) -> int:
    return int(math.prod(int(s) for s in inp.get("shape", [])))


def check_coremap(cm: CoreMap) -> None:
    """Structural checks the emulators need (indices in range, codes known, cores on distinct routers).

    The chip's design rules are the mapper's business (``CoreMap.validate``); this checks only what
    would make the emulation undefined.
    """
    a = cm.arrays
    missing = [k for k in ARRAYS if k not in a]
    if missing:
        raise CoreMapError(f"core map lacks array(s) {missing}")
    for k, dt in ARRAYS.items():
        if a[k].dtype != np.dtype(dt) or a[k].ndim != 1:
            raise CoreMapError(f"core map array '{k}' has dtype {a[k].dtype} ndim {a[k].ndim}; expected 1-D {dt}")
    C = a["core_layer"].shape[0]
    for k in ARRAYS:
        if k.startswith(("core_", "lif_")) and not k.endswith("_off") and a[k].shape[0] != C:
            raise CoreMapError(f"core map array '{k}' has {a[k].shape[0]} entries for {C} cores")
    for k in ("core_neuron_off", "core_axon_off", "core_w_off"):
        off = a[k]
        if off.shape[0] != C + 1 or off[0] != 0 or np.any(np.diff(off) < 0):
            raise CoreMapError(f"core map offsets '{k}' are not {C + 1} non-decreasing values from 0")
    N, A = int(a["core_neuron_off"][-1]), int(a["core_axon_off"][-1])
    nn, na = np.diff(a["core_neuron_off"]), np.diff(a["core_axon_off"])
    if not np.array_equal(np.diff(a["core_w_off"]), nn * na) or a["weights"].shape[0] != a["core_w_off"][-1]:
        raise CoreMapError("core map weights do not match n_axons x n_neurons per core")
    for k in ("bias", "req_mult", "req_shift", "v_init"):
        if a[k].shape[0] != N:
            raise CoreMapError(f"core map array '{k}' has {a[k].shape[0]} entries for {N} neurons")
    if a["axon_init"].shape[0] != A:
        raise CoreMapError(f"core map array 'axon_init' has {a['axon_init'].shape[0]} entries for {A} axons")
    R = a["route_src"].shape[0]
    if a["route_dst"].shape[0] != R or a["route_delayed"].shape[0] != R:
        raise CoreMapError("core map route arrays differ in length")
    if R and (a["route_src"].min() < 0 or a["route_src"].max() >= N or a["route_dst"].min() < 0
              or a["route_dst"].max() >= A):
        raise CoreMapError("core map routes point outside the neuron/axon arrays")
    if R and not np.isin(a["route_delayed"], (0, 1)).all():
        raise CoreMapError("core map route_delayed holds a value other than 0/1")
    I = a["in_dst"].shape[0]
    if a["in_input"].shape[0] != I or a["in_elem"].shape[0] != I:
        raise CoreMapError("core map input-feed arrays differ in length")
    if I and (a["in_dst"].min() < 0 or a["in_dst"].max() >= A):
        raise CoreMapError("core map input feeds point outside the axon array")
    inputs = cm.meta.get("inputs", [])
    kinds = input_kind_codes(cm)
    if I and (a["in_input"].min() < 0 or a["in_input"].max() >= len(inputs)):
        raise CoreMapError("core map input feeds name a graph input that the header does not list")
    if I:
        bad_kind = np.flatnonzero(kinds[a["in_input"]] == _KIND_CODE["state"])
        if bad_kind.shape[0]:
            i = int(bad_kind[0])
            k = int(a["in_input"][i])
            raise CoreMapError(f"input feed {i} loads graph input {k} ('{inputs[k].get('name')}') of kind 'state'; "
                               "state inputs enter through axon_init and delayed routes, not feeds")
        n_el = np.array([_n_elems(inp) for inp in inputs], dtype=np.int64)[a["in_input"]]
        bad = np.flatnonzero((a["in_elem"] < 0) | (a["in_elem"] >= n_el))
        if bad.shape[0]:
            i = int(bad[0])
            k = int(a["in_input"][i])
            raise CoreMapError(f"input feed {i} reads element {int(a['in_elem'][i])} of graph input "
                               f"'{inputs[k].get('name')}' of {int(n_el[i])} elements")
    outputs = cm.meta.get("outputs", [])
    if a["out_off"].shape[0] != len(outputs) + 1 or a["out_off"][0] != 0 or np.any(np.diff(a["out_off"]) < 0) \
            or a["out_off"][-1] != a["out_src"].shape[0]:
        raise CoreMapError("core map output taps do not match the header's outputs")
    if a["out_src"].shape[0] and (a["out_src"].min() < 0 or a["out_src"].max() >= N):
        raise CoreMapError("core map output taps point outside the neuron array")
    names = [o.get("name") for o in outputs]
    if len(set(names)) != len(names):
        raise CoreMapError(f"graph outputs have duplicate names: {names}")
    for k, o in enumerate(outputs):
        if o.get("stage") not in STAGE:
            raise CoreMapError(f"graph output {k} ('{o.get('name')}') has stage {o.get('stage')!r}; "
                               f"expected one of {list(STAGE)}")
    for k, allowed in (("core_stage", (0, 1, 2)), ("core_dendrite", (0, 1)), ("core_soma", (0, 1, 2, 3)),
                       ("core_out_bits", (1, 8, 32)), ("lif_reset_mode", (0, 1, 2)), ("lif_spike_ge", (0, 1)),
                       ("lif_reset_delay", (0, 1)), ("core_spike_in", (0, 1))):
        bad = ~np.isin(a[k], allowed)
        if bad.any():
            c = int(np.argmax(bad))
            raise CoreMapError(f"core {c}: {k} = {int(a[k][c])} is not one of {list(allowed)}")
    if C and a["core_phase"].min() < 0:
        raise CoreMapError(f"core {int(np.argmin(a['core_phase']))}: negative core_phase")
    if N and (a["req_shift"].min() < 0 or a["req_shift"].max() > 62):
        raise CoreMapError("core map req_shift outside 0..62")
    for c in np.flatnonzero(a["core_dendrite"] == 1):
        w = cm.core_weights(int(c))
        if w.shape[1] and (w.shape[0] == 0 or not (w != 0).any(axis=0).all()):
            raise CoreMapError(f"core {int(c)}: a max-dendrite neuron has no axon with a nonzero weight")
    width, height = grid_shape(cm.chip, chips_of(cm))
    x, y = a["core_x"], a["core_y"]
    if C and (x.min() < 0 or y.min() < 0 or x.max() >= width or y.max() >= height):
        raise CoreMapError(f"core map places a core outside the {width} x {height} core grid "
                           f"of {chips_of(cm)} chips")
    pos = x.astype(np.int64) * height + y
    if np.unique(pos).shape[0] != C:
        raise CoreMapError("core map places two cores on the same router")


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


def stage_phases(cm: CoreMap) -> list[list[tuple[int, np.ndarray]]]:
    """Per stage (static, step, readout): ``[(phase, cores ascending), ...]`` for the phases that have cores."""
    st, ph = cm.arrays["core_stage"], cm.arrays["core_phase"]
    out = []
    for s in range(3):
        cores = np.flatnonzero(st == s)
        out.append([(int(p), cores[ph[cores] == p].astype(np.int64)) for p in np.unique(ph[cores])])
    return out


def value_bytes(out_bits) -> np.ndarray:
    """Bytes of one value of ``out_bits`` bits: ``ceil(out_bits / 8)``."""
    return (np.asarray(out_bits, dtype=np.int64) + 7) // 8


def in_bytes(cm: CoreMap) -> np.ndarray:
    """Bytes per axon value of every core [C]: the largest ``ceil(out_bits / 8)`` of its sources.

    Sources are the cores that route to it (delayed or not) and graph inputs (8-bit values from the
    host, 1 byte).  A core without sources reads 1 byte per axon.
    """
    a = cm.arrays
    C = cm.num_cores
    out = np.ones(C, dtype=np.int64)
    if a["route_src"].shape[0]:
        src_core = cm.neuron_core()[a["route_src"]]
        dst_core = cm.axon_core()[a["route_dst"]]
        np.maximum.at(out, dst_core, value_bytes(a["core_out_bits"][src_core]))
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
