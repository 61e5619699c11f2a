"""The core-map format: what the mapper emits and the emulator runs.

A core map is a set of flat arrays (one entry per core, per neuron, per axon, per
route) plus a JSON header.  It is saved as one file (a ZIP of ``.npy`` members, like
``.npz``) whose header carries the format version, the nmc version, the full chip
description and a SHA-256 over every array; :func:`load` refuses a file of another
version, a corrupt or tampered file, and one that breaks its chip's limits.

Glossary (all indices are 0-based and global):

* core ``c``: ``core_*[c]``.  Its neurons are ``core_neuron_off[c] .. core_neuron_off[c+1]``
  of the neuron arrays, its axons ``core_axon_off[c] .. core_axon_off[c+1]`` of the axon
  buffer, its weights ``weights[core_w_off[c] : core_w_off[c+1]]`` reshaped
  ``[n_axons, n_neurons]`` (axon-major, so an input spike reads one row).
* ``core_stage``: 0 static (once per sample before step 0), 1 step (every timestep),
  2 readout (once after the last step).  ``core_phase``: phase within the stage;
  phases run in increasing order, and all cores of a phase run "in parallel".
* ``core_dendrite``: 0 ``mac`` (acc[n] = sum_a x[a] * W[a, n] + bias[n]) or 1 ``max``
  (acc[n] = max of x[a] over axons a with W[a, n] != 0, bias ignored).
* ``core_spike_in``: 1 if every axon input is a spike (0/1): the dendrite is event
  driven (only nonzero axons are read and counted, "zero-skipping").
* ``core_soma``: 0 ``ann`` (requantise + clamp), 1 ``lif``, 2 ``partial`` (emit the
  accumulator as is), 3 ``count`` (v += acc; out = v).
* ``core_out_bits``: width of what the core sends: 1 (spike), 8 (int8/uint8 value),
  32 (int32 partial sum or wide value).  Sets packet counts.
* routes ``r``: value of neuron ``route_src[r]``'s output register is written to axon
  ``route_dst[r]`` at the end of the source core's phase (``route_delayed[r] == 0``)
  or at the end of the timestep (``route_delayed[r] == 1``: recurrence through a
  spike state pair, the consumer sees it in the next step).  Routes are sorted by
  (source core, destination core); packets are counted per such pair.
* input feeds ``i``: element ``in_elem[i]`` of graph input ``in_input[i]`` (quantised)
  is written to axon ``in_dst[i]`` when that input is loaded (static inputs once,
  step inputs at the start of each step).  Inputs enter through the host I/O port.
* output taps: graph output ``k`` element ``j`` is the output register of neuron
  ``out_src[out_off[k] + j]``; step outputs are recorded after every step, others
  after their stage.  Output values travel to the I/O port (counted as packets).

The numerics of every field are specified in docs/numerics.md and implemented by
``emulator/reference.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .chip import ChipSpec
from .errors import CoreMapError

__all__ = ["CoreMap", "FORMAT", "FORMAT_VERSION", "SOMA", "DENDRITE", "STAGE", "check_coremap"]

FORMAT = "nmc-coremap"
FORMAT_VERSION = 1

STAGE = {"static": 0, "step": 1, "readout": 2}
DENDRITE = {"mac": 0, "max": 1}
SOMA = {"ann": 0, "lif": 1, "partial": 2, "count": 3}
RESET = {"subtract": 0, "zero": 1, "none": 2}

#: array name -> dtype.  Every array of a core map, in file order.
ARRAYS: dict[str, str] = {
    # per core [C]
    "core_layer": "int32",
    "core_x": "int32",
    "core_y": "int32",
    "core_stage": "int8",
    "core_phase": "int32",
    "core_dendrite": "int8",
    "core_spike_in": "int8",
    "core_soma": "int8",
    "core_out_bits": "int8",
    "core_w_bits": "int8",
    "core_out_lo": "int64",
    "core_out_hi": "int64",
    "lif_threshold": "int64",
    "lif_v_reset": "int64",
    "lif_v_leak": "int64",
    "lif_beta_mult": "int64",
    "lif_reset_mode": "int8",
    "lif_spike_ge": "int8",
    "lif_reset_delay": "int8",
    # prefix sums [C + 1]
    "core_neuron_off": "int64",
    "core_axon_off": "int64",
    "core_w_off": "int64",
    # flat weights [sum n_axons * n_neurons], axon-major per core
    "weights": "int8",
    # per neuron [N]
    "bias": "int64",
    "req_mult": "int64",
    "req_shift": "int64",
    "v_init": "int64",
    # per axon [A]
    "axon_init": "int64",
    # routes [R]
    "route_src": "int64",
    "route_dst": "int64",
    "route_delayed": "int8",
    # input feeds [I]
    "in_input": "int32",
    "in_elem": "int64",
    "in_dst": "int64",
    # output taps
    "out_off": "int64",  # [n_outputs + 1]
    "out_src": "int64",
    # routing tables: entries of core c are rt_off[c]:rt_off[c+1]; entry e sends routes
    # rt_route_off[e]:rt_route_off[e+1] to core rt_dst[e] (-1: the host I/O port, no routes, last)
    "rt_off": "int64",  # [C + 1]
    "rt_dst": "int64",  # [E]
    "rt_route_off": "int64",  # [E + 1]
}


@dataclass
class CoreMap:
    """A compiled model: arrays (see module doc) + header ``meta`` + the chip it was compiled for.

    ``meta`` keys: ``model`` (name), ``num_steps`` (default T), ``chips`` ([x, y] grid of chips),
    ``layers`` (list of {name, op, stage, source, neurons, cores}),
    ``inputs`` (list of {name, kind: static|step|state, shape, scale, lo, hi}),
    ``outputs`` (list of {name, stage: static|step|readout, shape, scale, signed}),
    ``states`` (list of {input, output, target: neuron|axon|none, index_off, scale}),
    ``phases`` ({stage: number of phases}), ``compile`` (options and quantisation report).
    """

    chip: ChipSpec
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays")
        if arrays is not None and name in arrays:
            return arrays[name]
        raise AttributeError(name)

    @property
    def num_cores(self) -> int:
        return int(self.arrays["core_layer"].shape[0])

    @property
    def num_neurons(self) -> int:
        return int(self.arrays["core_neuron_off"][-1])

    @property
    def num_axons(self) -> int:
        return int(self.arrays["core_axon_off"][-1])

    def n_neurons(self, c: int) -> int:
        off = self.arrays["core_neuron_off"]
        return int(off[c + 1] - off[c])

    def n_axons(self, c: int) -> int:
        off = self.arrays["core_axon_off"]
        return int(off[c + 1] - off[c])

    def core_weights(self, c: int) -> np.ndarray:
        """Weights of core c as ``[n_axons, n_neurons]``."""
        w_off = self.arrays["core_w_off"]
        return self.arrays["weights"][w_off[c]:w_off[c + 1]].reshape(self.n_axons(c), self.n_neurons(c))

    def neuron_core(self) -> np.ndarray:
        """Core index of every neuron [N]."""
        off = self.arrays["core_neuron_off"]
        return np.repeat(np.arange(self.num_cores, dtype=np.int64), np.diff(off))

    def axon_core(self) -> np.ndarray:
        """Core index of every axon [A]."""
        off = self.arrays["core_axon_off"]
        return np.repeat(np.arange(self.num_cores, dtype=np.int64), np.diff(off))


# --------------------------------------------------------------------------- structure
_KIND_CODE = {"static": 0, "step": 1, "state": 2}


def chips_of(cm: "CoreMap") -> tuple[int, int]:
    """The ``[chips_x, chips_y]`` grid of chips (``meta["chips"]``, else the chip's default system)."""
    ch = cm.meta.get("chips")
    if ch is None:
        return cm.chip.system.chips_x, cm.chip.system.chips_y
    return int(ch[0]), int(ch[1])


def input_kind_codes(cm: "CoreMap") -> np.ndarray:
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


def check_coremap(cm: "CoreMap") -> None:
    """Structural checks (indices in range, codes known, cores on distinct routers): what would make
    emulation undefined. :func:`nmc.corefile.validate` adds the chip's design rules (nmc/rules.py)."""
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
    width, height = cm.chip.grid(*chips_of(cm))
    x, y = a["core_x"], a["core_y"]
    if C and (x.min() < 0 or y.min() < 0 or x.max() >= width or y.max() >= height):
        raise CoreMapError(f"core map places a core outside the {width} x {height} core grid "
                           f"of {chips_of(cm)} chips")
    pos = x.astype(np.int64) * height + y
    if np.unique(pos).shape[0] != C:
        raise CoreMapError("core map places two cores on the same router")
    # routing tables: per core its routes' distinct destination cores ascending, then -1 (host port) iff it
    # holds an output tap; entry ranges partition the routes in order
    rt_off, rt_dst, rt_ro = a["rt_off"], a["rt_dst"], a["rt_route_off"]
    E = rt_dst.shape[0]
    if rt_off.shape[0] != C + 1 or rt_off[0] != 0 or np.any(np.diff(rt_off) < 0) or rt_off[-1] != E:
        raise CoreMapError(f"core map routing-table offsets 'rt_off' are not {C + 1} non-decreasing values "
                           f"from 0 to {E}")
    if rt_ro.shape[0] != E + 1 or rt_ro[0] != 0 or np.any(np.diff(rt_ro) < 0) or rt_ro[-1] != R:
        raise CoreMapError(f"core map 'rt_route_off' is not {E + 1} non-decreasing values from 0 to {R} (the routes)")
    if E and (rt_dst.min() < -1 or rt_dst.max() >= C):
        raise CoreMapError(f"core map routing table sends to a destination outside [-1, {C})")
    e_core, n_r = np.repeat(np.arange(C), np.diff(rt_off)), np.diff(rt_ro)
    key = np.where(rt_dst < 0, C, rt_dst)
    if np.any((e_core[1:] == e_core[:-1]) & (key[1:] <= key[:-1])):
        raise CoreMapError("core map routing table: a core's entries are not distinct and ascending, host (-1) last")
    if np.any((rt_dst < 0) != (n_r == 0)):
        raise CoreMapError("core map routing table: an entry to a core sends no route, or a host entry sends routes")
    r_e = np.repeat(np.arange(E), n_r)
    if R and (np.any(cm.neuron_core()[a["route_src"]] != e_core[r_e])
              or np.any(cm.axon_core()[a["route_dst"]] != rt_dst[r_e])):
        raise CoreMapError("core map routing table: an entry's routes come from another core or go to another one")
    tapped = np.zeros(C, bool)
    tapped[cm.neuron_core()[a["out_src"]]] = True
    if not np.array_equal(np.isin(np.arange(C), e_core[rt_dst < 0]), tapped):
        raise CoreMapError("core map routing table: host-port entries are not exactly on the cores holding output taps")


def value_bytes(out_bits) -> np.ndarray:
    """Bytes of one value of ``out_bits`` bits: ``ceil(out_bits / 8)``."""
    return (np.asarray(out_bits, dtype=np.int64) + 7) // 8


def in_bytes(cm: "CoreMap") -> np.ndarray:
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


def empty_arrays() -> dict[str, np.ndarray]:
    """All arrays of a core map with zero entries (offsets hold a single 0)."""
    out = {k: np.zeros(0, dtype=dt) for k, dt in ARRAYS.items()}
    for k in ("core_neuron_off", "core_axon_off", "core_w_off", "out_off", "rt_off", "rt_route_off"):
        out[k] = np.zeros(1, dtype=np.int64)
    return out
