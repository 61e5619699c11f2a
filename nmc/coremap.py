"""The core-map format: what the mapper emits and the emulator runs.

A core map is a set of named *tables* of arrays plus a JSON *header* (``meta``).  Each table is a
typed dataclass whose columns declare their dtype and dimensions; :func:`check_coremap` checks every
column against them, :func:`check_header` checks the header against :data:`HEADER`.  Files
(``nmc/corefile.py``) store column ``x`` of table ``cores`` as the array ``cores.x``.

Dimensions: ``C`` cores, ``N`` neurons, ``A`` axons, ``W`` weights, ``R`` routes, ``E`` router-table
entries, ``I`` input feeds, ``O`` graph outputs, ``T`` output taps; ``P``, ``Q``, ``S`` the widths of the
per-core parameter, per-neuron parameter and per-neuron state tables (at least what the largest
neuron model used needs).  All indices are 0-based and global.

* ``cores``: core ``c`` holds neurons ``neuron_off[c]:neuron_off[c+1]``, axons
  ``axon_off[c]:axon_off[c+1]`` and the weights ``weights.data[w_off[c]:w_off[c+1]]`` as
  ``[n_axons, n_neurons]`` (axon-major: an input spike reads one row).  ``stage``: 0 static (once per
  sample before step 0), 1 step (every timestep), 2 readout (once after the last step); ``phase``:
  phase within the stage (phases run in increasing order, the cores of a phase in parallel).
  ``dendrite``: 0 ``mac`` (acc[n] = sum_a x[a] * W[a, n] + bias[n]) or 1 ``max`` (acc[n] = max of x[a]
  over axons with W[a, n] != 0).  ``spike_in``: 1 if every axon input is a spike (0/1): the dendrite is
  event driven (only nonzero axons are read and counted).  ``model``: the soma's neuron model code
  (:mod:`nmc.neurons`: ann 0, lif 1, partial 2, count 3, cubalif 4, lif_refractory 5, ...) and
  ``param[c]`` its core parameters in the model's declared order.  ``out_bits``: width of what the
  core sends (1 spike, 8 value, 32 partial sum); ``out_lo``/``out_hi`` the soma's output range.
* ``neurons``: ``bias``, ``param`` (the model's per-neuron parameters, e.g. the ANN requantiser; format 5: both
  int32, as the accumulator and every parameter are at most 32 bits) and ``state_init`` (the model's state words
  before step 0, e.g. the membrane).
* ``axons``: ``init``, the axon buffer before step 0 (recurrent spikes of a state pair's init; int16: an axon
  holds a neuron's output, at most 8 bits, or a partial sum, which starts at 0).
* ``routes`` (format 4: int32 neuron and axon indices, so a core map holds at most 2**31 - 1 neurons and axons;
  VGG-19 at 224 x 224 has 156M): neuron ``src[r]``'s output register is written to axon ``dst[r]`` at the end of the source
  core's phase (``delayed == 0``) or at the end of the timestep (``delayed == 1``: recurrence through a
  spike state pair).  Routes are sorted by (source core, destination core, destination axon).
* ``router``: the routing table of every core: entries ``off[c]:off[c+1]``, each a destination core
  (``dst``, -1 = the host I/O port) whose routes are ``route_off[e]:route_off[e+1]``.  The design rules
  count its entries; the emulator sends one packet group per entry.
* ``feeds``: element ``elem[i]`` of graph input ``input[i]`` (quantised) is written to axon ``dst[i]``
  when that input is loaded (static inputs once, step inputs at the start of each step).
* ``taps``: graph output ``k`` element ``j`` is the output register of neuron ``src[off[k] + j]``.
* ``kblocks`` (format 3): cores with ``cores.w_fmt == 1`` store *shared kernels* instead of a dense block (a
  convolution's kernel is stored once per core, the chip's folded mapping): the core's weights are the sum of
  its blocks (rows ``K``, sorted by ``core``), each a slice ``[tc, kc, kh, kw]`` of a grouped convolution's
  kernel at ``weights.data[w_off[k]:]`` applied to a patch of the layer's input.  ``geom[k]`` holds
  :data:`KGEOM`; ``kpatch.ax[ax_off[k]:ax_off[k+1]]`` maps each patch element ``(c, y, x)`` (``pc x ph x pw``,
  row-major) to the core's axon holding it, or -1 (padding, or an element the core does not read).  Neuron slot
  ``(t * th + ty) * tw + tx`` of the core is output channel ``oc0 + t`` at tile position ``(ty, tx)``; its weight
  from patch element ``(ci - pc0, ty * sh + ky * dh, tx * sw + kx * dw)`` is ``K[t, k, ky, kx]`` with
  ``ci = ((oc0 + t) // co_g) * ci_g + kc0 + k`` (taps whose patch channel lies outside ``0 .. pc - 1`` are not
  the core's).  A patch may name one axon at several elements (a view, e.g. the windows of a wide max pooling
  gathered by ``nmc.ir.split_wide_maxpools``, reads one input element at several positions): its taps on one
  weight add up, like those of several blocks.
  :meth:`CoreMap.core_weights` expands it to the dense ``[n_axons, n_neurons]`` block (taps of several blocks on
  one weight add up; at most :data:`MAX_CORE_WEIGHTS` weights, :data:`MAX_CORE_KBLOCKS` blocks and
  :data:`MAX_CORE_TAPS` taps per core, else the map is refused as damaged before anything is allocated).  A shared-kernel core has no dense block (``w_off[c+1] == w_off[c]``); kernels live after
  the dense blocks (from ``w_off[C]``), and cores with equal slices of one kernel point to one copy (each core
  still holds it in its own SRAM: ``nmc.resources``).

The numerics of every field are specified in docs/numerics.md and implemented by
``emulator/reference.py`` (and each neuron model's ``ref_step``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np

from .chip import MAX_SYSTEM_CORES, ChipSpec
from .errors import CoreMapError
from .neurons import MODELS, by_code, max_core_params, max_neuron_params, max_state_words

__all__ = ["CoreMap", "Cores", "Neurons", "Axons", "Weights", "Routes", "Router", "Feeds", "Taps", "KBlocks", "KPatch",
           "KGEOM", "kblock_taps", "kblock_overlap_cores", "kblock_bytes", "kblock_tap_bound", "kblock_ranges", "TABLES", "MAX_CORE_WEIGHTS",
           "MAX_CORE_KBLOCKS", "MAX_CORE_TAPS", "MAX_INDEX", "AXON_INIT_RANGE",
           "FORMAT", "FORMAT_VERSION", "STAGE", "DENDRITE", "SOMA", "HEADER", "check_coremap", "check_header",
           "chips_of", "input_kind_codes", "value_bytes", "in_bytes", "n_elems"]

FORMAT = "nmc-coremap"
#: 5: int32 neurons.bias and neurons.param (the accumulator and every per-neuron parameter are at most 32 bits:
#: nmc.chip's limits); 4: int32 routes, int16 axons.init (9 B per route and 2 B per axon instead of 17 B and 8 B);
#: 3: shared-kernel cores (kblocks); 2: typed tables, neuron models, router tables (1: flat arrays)
FORMAT_VERSION = 5
#: routes and everything that indexes neurons or axons in a core map are int32 (format 4): at most this many of each
MAX_INDEX = 2 ** 31 - 1
#: routes checked at a time by :func:`check_coremap` (temporaries of this many int64s)
ROUTE_CHUNK = 1 << 22
#: the range of an axon's initial value (``axons.init``: int16)
AXON_INIT_RANGE = (-2 ** 15, 2 ** 15 - 1)

STAGE = {"static": 0, "step": 1, "readout": 2}
DENDRITE = {"mac": 0, "max": 1}
#: soma name -> neuron model code (nmc.neurons)
SOMA = {name: m.code for name, m in MODELS.items()}


def col(dtype: str, *dims: str, doc: str = "") -> Any:
    """A column of a table: its dtype and dimensions (``C``, ``C+1``, ``N``, ... see the module doc)."""
    return field(metadata={"dtype": dtype, "dims": dims, "doc": doc})


class _Table:
    """Base of the tables: frozen dataclasses of NumPy arrays."""

    NAME: ClassVar[str] = ""

    @classmethod
    def columns(cls) -> dict[str, tuple[str, tuple[str, ...]]]:
        return {f.name: (f.metadata["dtype"], f.metadata["dims"]) for f in fields(cls)}

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, eq=False)
class Cores(_Table):
    NAME: ClassVar[str] = "cores"
    layer: np.ndarray = col("int32", "C", doc="index into meta['layers']")
    x: np.ndarray = col("int32", "C", doc="global grid column")
    y: np.ndarray = col("int32", "C", doc="global grid row")
    stage: np.ndarray = col("int8", "C")
    phase: np.ndarray = col("int32", "C")
    dendrite: np.ndarray = col("int8", "C")
    spike_in: np.ndarray = col("int8", "C")
    model: np.ndarray = col("int8", "C", doc="neuron model code")
    out_bits: np.ndarray = col("int8", "C")
    w_bits: np.ndarray = col("int8", "C")
    out_lo: np.ndarray = col("int64", "C")
    out_hi: np.ndarray = col("int64", "C")
    param: np.ndarray = col("int64", "C", "P", doc="the model's core parameters")
    neuron_off: np.ndarray = col("int64", "C+1")
    axon_off: np.ndarray = col("int64", "C+1")
    w_off: np.ndarray = col("int64", "C+1")
    w_fmt: np.ndarray = col("int8", "C", doc="0: dense weight block; 1: shared kernels (kblocks)")


@dataclass(frozen=True, eq=False)
class Neurons(_Table):
    NAME: ClassVar[str] = "neurons"
    bias: np.ndarray = col("int32", "N", doc="added to the accumulator (at most core.accumulator_bits <= 32 bits)")
    param: np.ndarray = col("int32", "N", "Q", doc="the model's per-neuron parameters (each at most 32 bits)")
    state_init: np.ndarray = col("int64", "N", "S", doc="the model's state words before step 0")


@dataclass(frozen=True, eq=False)
class Axons(_Table):
    NAME: ClassVar[str] = "axons"
    init: np.ndarray = col("int16", "A")


@dataclass(frozen=True, eq=False)
class Weights(_Table):
    NAME: ClassVar[str] = "weights"
    data: np.ndarray = col("int8", "W", doc="per core [n_axons, n_neurons], axon-major")


@dataclass(frozen=True, eq=False)
class Routes(_Table):
    NAME: ClassVar[str] = "routes"
    src: np.ndarray = col("int32", "R", doc="source neuron")
    dst: np.ndarray = col("int32", "R", doc="destination axon")
    delayed: np.ndarray = col("int8", "R")


@dataclass(frozen=True, eq=False)
class Router(_Table):
    NAME: ClassVar[str] = "router"
    off: np.ndarray = col("int64", "C+1", doc="entries of core c: off[c]:off[c+1]")
    dst: np.ndarray = col("int64", "E", doc="destination core, -1 = host I/O port")
    route_off: np.ndarray = col("int64", "E+1", doc="routes of entry e: route_off[e]:route_off[e+1]")


@dataclass(frozen=True, eq=False)
class Feeds(_Table):
    NAME: ClassVar[str] = "feeds"
    input: np.ndarray = col("int32", "I", doc="index into meta['inputs']")
    elem: np.ndarray = col("int64", "I")
    dst: np.ndarray = col("int64", "I", doc="axon")


@dataclass(frozen=True, eq=False)
class Taps(_Table):
    NAME: ClassVar[str] = "taps"
    off: np.ndarray = col("int64", "O+1")
    src: np.ndarray = col("int64", "T", doc="neuron")


#: the geometry of a kernel block (``kblocks.geom`` columns, in order; module doc)
KGEOM = ("tc", "th", "tw", "kc", "kh", "kw", "pc", "ph", "pw", "sh", "sw", "dh", "dw", "co_g", "ci_g", "oc0", "kc0",
         "pc0")


@dataclass(frozen=True, eq=False)
class KBlocks(_Table):
    NAME: ClassVar[str] = "kblocks"
    core: np.ndarray = col("int32", "K", doc="the core (ascending)")
    w_off: np.ndarray = col("int64", "K", doc="kernel [tc, kc, kh, kw] at weights.data[w_off:]")
    geom: np.ndarray = col("int32", "K", "G", doc="KGEOM")
    ax_off: np.ndarray = col("int64", "K+1", doc="patch map of block k: kpatch.ax[ax_off[k]:ax_off[k+1]]")


@dataclass(frozen=True, eq=False)
class KPatch(_Table):
    NAME: ClassVar[str] = "kpatch"
    ax: np.ndarray = col("int32", "X", doc="core-local axon of each patch element, -1 none")


#: table name -> class, in file order
TABLES: dict[str, type[_Table]] = {t.NAME: t for t in (Cores, Neurons, Axons, Weights, Routes, Router, Feeds, Taps,
                                                        KBlocks, KPatch)}


@dataclass(eq=False)
class CoreMap:
    """A compiled model: the tables (see the module doc), the header ``meta`` and the chip it was compiled for.

    ``meta`` keys (checked by :func:`check_header` against :data:`HEADER`): ``model`` (name),
    ``num_steps`` (default T), ``chips`` ([x, y] grid of chips), ``layers``, ``inputs``, ``outputs``,
    ``state_outputs``, ``states``, ``host_encoders`` (spike encoders the host runs: source input, encoded
    step input, attributes; nmc.encoders), ``phases`` ({stage: number of phases}), ``rounds`` ({stage: rounds
    it runs in, more than 1 when it has more phases than ``core.phases_per_step``; docs/numerics.md, "Rounds";
    absent in older files: 1 each), ``compile`` (options, warnings and the quantisation report), ``routing``
    (summary of the router tables), ``nmc_version``.
    """

    chip: ChipSpec
    meta: dict[str, Any]
    cores: Cores
    neurons: Neurons
    axons: Axons
    weights: Weights
    routes: Routes
    router: Router
    feeds: Feeds
    taps: Taps
    kblocks: KBlocks
    kpatch: KPatch

    def tables(self) -> dict[str, _Table]:
        return {name: getattr(self, name) for name in TABLES}

    def arrays(self) -> dict[str, np.ndarray]:
        """Every column as ``"<table>.<column>"`` -> array (what files store and the hash covers)."""
        return {f"{t}.{k}": v for t, tab in self.tables().items() for k, v in tab.arrays().items()}

    @classmethod
    def from_arrays(cls, chip: ChipSpec, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "CoreMap":
        """Build from ``"<table>.<column>"`` arrays; a missing column is a :class:`CoreMapError`."""
        arrays = dict(arrays)
        if not any(k.startswith(("kblocks.", "kpatch.")) or k == "cores.w_fmt" for k in arrays) and "cores.layer" in arrays:
            # a core map without shared kernels may leave format 3's kernel-block columns out (all cores dense)
            arrays.update({"cores.w_fmt": np.zeros(np.shape(arrays["cores.layer"])[0], np.int8),
                           "kblocks.core": np.zeros(0, np.int32), "kblocks.w_off": np.zeros(0, np.int64),
                           "kblocks.geom": np.zeros((0, len(KGEOM)), np.int32), "kblocks.ax_off": np.zeros(1, np.int64),
                           "kpatch.ax": np.zeros(0, np.int32)})
        missing = [f"{t}.{k}" for t, tc in TABLES.items() for k in tc.columns() if f"{t}.{k}" not in arrays]
        if missing:
            raise CoreMapError(f"core map lacks array(s) {missing}")
        tabs = {t: tc(**{k: arrays[f"{t}.{k}"] for k in tc.columns()}) for t, tc in TABLES.items()}
        return cls(chip=chip, meta=meta, **tabs)

    def replace(self, **changes: Any) -> "CoreMap":
        """A copy with tables (or ``meta``) replaced, e.g. ``cm.replace(neurons=...)``."""
        return replace(self, **changes)

    @property
    def num_cores(self) -> int:
        return int(self.cores.layer.shape[0])

    @property
    def physical_cores(self) -> int:
        """Distinct core positions: fewer than :attr:`num_cores` (logical cores) when cores are folded, i.e.
        several logical cores time-multiplexed on one physical core (``mapper/fold.py``)."""
        c = self.cores
        return int(np.unique(c.x.astype(np.int64) * (1 << 32) + c.y.astype(np.int64)).shape[0]) if c.x.size else 0

    def cores_text(self) -> str:
        """``"9 cores"``, or ``"8 cores (9 logical, folded)"`` when folded."""
        n, p = self.num_cores, self.physical_cores
        return f"{p} cores" if p == n else f"{p} cores ({n} logical, folded)"

    @property
    def num_neurons(self) -> int:
        return int(self.cores.neuron_off[-1])

    @property
    def num_axons(self) -> int:
        return int(self.cores.axon_off[-1])

    def n_neurons(self, c: int) -> int:
        return int(self.cores.neuron_off[c + 1] - self.cores.neuron_off[c])

    def n_axons(self, c: int) -> int:
        return int(self.cores.axon_off[c + 1] - self.cores.axon_off[c])

    def core_weights(self, c: int) -> np.ndarray:
        """Weights of core c as ``[n_axons, n_neurons]`` (a shared-kernel core's blocks expanded).

        A shared-kernel core is refused (:class:`CoreMapError`) before anything is allocated when its dense block
        would exceed :data:`MAX_CORE_WEIGHTS` weights, it has more than :data:`MAX_CORE_KBLOCKS` blocks or its
        blocks would read more than :data:`MAX_CORE_TAPS` taps: a damaged map, whose shared kernels no longer
        bound what the expansion costs."""
        w = self.cores.w_off
        if self.cores.w_fmt[c] == 0:
            return self.weights.data[w[c]:w[c + 1]].reshape(self.n_axons(c), self.n_neurons(c))
        kb = self.kblocks
        lo, hi = (int(v) for v in np.searchsorted(kb.core, [c, c + 1]))
        na, nn = self.n_axons(c), self.n_neurons(c)
        fix = "the core map is damaged or was not written by 'nmc compile': recompile the model"
        if na * nn > MAX_CORE_WEIGHTS:
            raise CoreMapError(f"core {c}: its shared kernels expand to a dense block of {na} axons x {nn} neurons "
                               f"({na * nn} weights), more than the {MAX_CORE_WEIGHTS} a core can hold; {fix}")
        if hi - lo > MAX_CORE_KBLOCKS:
            raise CoreMapError(f"core {c} has {hi - lo} kernel blocks, more than {MAX_CORE_KBLOCKS}; {fix}")
        taps = sum(kblock_tap_bound(kb.geom[k]) for k in range(lo, hi))
        if taps > MAX_CORE_TAPS:
            raise CoreMapError(f"core {c}: its kernel blocks read up to {taps} taps, more than {MAX_CORE_TAPS}; {fix}")
        # every tap adds |w| <= 128 to one weight: int32 holds the sums of up to 2^24 taps (a block's patch may name
        # an axon more than once: a view that reads one input element at several patch positions)
        out = np.zeros((na, nn), np.int32 if taps <= 1 << 24 else np.int64)
        for k in range(lo, hi):
            for a, slot, val in _kblock_chunks(kb.geom[k], self.weights.data, int(kb.w_off[k]),
                                               self.kpatch.ax[kb.ax_off[k]:kb.ax_off[k + 1]]):
                np.add.at(out, (a, slot), val)
        if out.size and (out.min() < -128 or out.max() > 127):
            raise CoreMapError(f"core {c}: its kernel blocks add up to weights in [{int(out.min())}, {int(out.max())}], "
                               "beyond int8")
        return out.astype(np.int8)

    def dense_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(data, w_off)``: every core's weights as dense ``[n_axons, n_neurons]`` blocks (int8), what the
        emulator reads; the core map's own arrays when no core has shared kernels."""
        c = self.cores
        if not np.any(c.w_fmt):
            return self.weights.data, c.w_off
        size = np.diff(c.axon_off) * np.diff(c.neuron_off)
        off = np.concatenate([[0], np.cumsum(size)]).astype(np.int64)
        data = np.zeros(int(off[-1]), np.int8)
        for k in range(self.num_cores):
            data[off[k]:off[k + 1]] = self.core_weights(k).reshape(-1)
        return data, off

    def neuron_core(self) -> np.ndarray:
        """Core index of every neuron [N]."""
        return np.repeat(np.arange(self.num_cores, dtype=np.int64), np.diff(self.cores.neuron_off))

    def axon_core(self) -> np.ndarray:
        """Core index of every axon [A]."""
        return np.repeat(np.arange(self.num_cores, dtype=np.int64), np.diff(self.cores.axon_off))

    def models(self) -> list:
        """The neuron model of every core."""
        return [by_code(int(m)) for m in self.cores.model]


# --------------------------------------------------------------------------- header
_NUM = (int, float)
_IN = dict(name=str, kind=("static", "step", "state"), shape=[int], scale=float, lo=int, hi=int)
_OUT = dict(name=str, stage=tuple(STAGE), shape=[int], scale=float, signed=bool, layer=str, kind=str, final=bool)
#: the header's schema: key -> type (str, int, float, bool, dict: any table), a tuple of allowed values,
#: ``[spec]`` a list of spec, a dict of key -> spec; keys ending in ``?`` are optional
HEADER: dict[str, Any] = {
    "model": str,
    "num_steps": int,
    "chips": [int],
    "layers": [dict(name=str, op=str, stage=tuple(STAGE), source=str, neurons=int, cores=[int], split=bool,
                    w_bits=int, acc_bound=float, quant=dict)],
    "inputs": [_IN],
    "outputs": [_OUT],
    "state_outputs": [dict(name=str, shape=[int], layer=str, neurons=[int], scale=float, word=int)],
    "states": [{"input": str, "output": str, "shape": [int], "target": ("neuron", "axon", "none"),
                "neurons?": [int], "axons?": [int], "elems?": [int], "scale?": float, "word?": int}],
    "host_encoders?": [dict(op=str, input=str, kind=("static", "step"), shape=[int], output=str, attrs=dict, node=str)],
    "phases": dict,
    "rounds?": {"static": int, "step": int, "readout": int},
    "compile": {"warnings?": [str]},
    "routing?": dict,
    "models?": [dict(name=str, inputs=[str], outputs=[str], layers=[int])],
    "nmc_version?": str,
    "host?": {"ops": [dict(op=str, input=str, output=str, attrs=dict)], "outputs": [str], "chip_only": [str]},
}


#: a shared-kernel core's dense block, its kernel blocks and the taps they read at most (:meth:`CoreMap.core_weights`;
#: a core of the largest preset holds 4,096 x 16,384 = 2^26 weights)
MAX_CORE_WEIGHTS = 1 << 28
MAX_CORE_KBLOCKS = 1 << 16
MAX_CORE_TAPS = 1 << 28
_TAP_CHUNK = 1 << 22  # taps expanded at once


def kblock_tap_bound(geom) -> int:
    """Taps a kernel block reads at most (before dropping zero weights and patch elements the core does not
    hold): its tile's neurons times the kernel taps whose channel lies in its patch."""
    tc, th, tw, kc, kh, kw, pc = (int(v) for v in geom[:7])
    return tc * th * tw * min(kc, pc) * kh * kw


def _kblock_chunks(geom: np.ndarray, data: np.ndarray, w_off: int, ax: np.ndarray):
    """The taps of one kernel block (module doc) as ``(axon, neuron slot, weight)`` arrays, core-local, in chunks
    of about :data:`_TAP_CHUNK` taps."""
    tc, th, tw, kc, kh, kw, pc, ph, pw, sh, sw, dh, dw, co_g, ci_g, oc0, kc0, pc0 = (int(v) for v in geom)
    K = data[w_off:w_off + tc * kc * kh * kw].reshape(tc, kc, kh, kw)
    t, k, ky, kx = (a.reshape(-1) for a in np.meshgrid(np.arange(tc), np.arange(kc), np.arange(kh), np.arange(kw),
                                                       indexing="ij"))
    val = K[t, k, ky, kx]
    pci = ((oc0 + t) // co_g) * ci_g + kc0 + k - pc0
    ok = (val != 0) & (pci >= 0) & (pci < pc)
    t, k, ky, kx, pci, val = t[ok], k[ok], ky[ok], kx[ok], pci[ok], val[ok]
    ty, tx = np.meshgrid(np.arange(th), np.arange(tw), indexing="ij")
    ty, tx = ty.reshape(1, -1), tx.reshape(1, -1)
    step = max(1, _TAP_CHUNK // max(1, th * tw))
    for i in range(0, max(1, t.shape[0]), step):
        j = slice(i, i + step)
        py = ty * sh + (ky[j] * dh)[:, None]
        px = tx * sw + (kx[j] * dw)[:, None]
        a = ax[(pci[j, None] * ph + py) * pw + px]
        slot = (t[j, None] * th + ty) * tw + tx
        v = np.broadcast_to(val[j, None], a.shape)
        keep = a >= 0
        yield a[keep].astype(np.int64), slot[keep].astype(np.int64), v[keep].astype(np.int16)


def kblock_taps(geom: np.ndarray, data: np.ndarray, w_off: int, ax: np.ndarray):
    """The taps of one kernel block (module doc): ``(axon, neuron slot, weight)`` arrays, core-local."""
    parts = list(_kblock_chunks(geom, data, w_off, ax))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def kblock_ranges(cm: "CoreMap") -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` [C]: the smallest and largest stored kernel weight of every shared-kernel core (0, 0 for the
    others), reading each distinct kernel slice once (not once per block that shares it)."""
    kb, C = cm.kblocks, cm.num_cores
    lo, hi = np.zeros(C, np.int64), np.zeros(C, np.int64)
    K = kb.core.shape[0]
    if not K:
        return lo, hi
    size = np.prod(kb.geom[:, [0, 3, 4, 5]].astype(np.int64), axis=1)
    pairs, inv = np.unique(np.stack([kb.w_off.astype(np.int64), size]), axis=1, return_inverse=True)
    inv = inv.reshape(-1)
    s, n = pairs
    data = np.concatenate([cm.weights.data, np.zeros(1, np.int8)])  # reduceat needs an index past each slice
    idx = np.stack([s, s + n], axis=1).reshape(-1)
    mn = np.minimum.reduceat(data, idx)[::2].astype(np.int64)
    mx = np.maximum.reduceat(data, idx)[::2].astype(np.int64)
    mn[n == 0], mx[n == 0] = 0, 0
    core = kb.core.astype(np.int64)
    has = np.zeros(C, bool)
    has[core] = True
    lo[has], hi[has] = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    np.minimum.at(lo, core, mn[inv])
    np.maximum.at(hi, core, mx[inv])
    return lo, hi


def kblock_overlap_cores(cm: "CoreMap") -> np.ndarray:
    """[C] the shared-kernel cores whose blocks' patches name one axon twice (in one block: a view that reads an
    input element at several patch positions; or in two), so that taps may add up on one weight of the dense
    block.  nmc compile gives every block its own axons, in ascending order, so this reads each block once and
    sorts only the others."""
    c, kb = cm.cores, cm.kblocks
    out = np.zeros(cm.num_cores, bool)
    K = kb.core.shape[0]
    if not K or not np.any(c.w_fmt == 1):
        return out
    ax = cm.kpatch.ax
    n_kb = np.bincount(kb.core, minlength=cm.num_cores)
    # blocks whose held axons are not strictly ascending (a repeat is possible only there, within a block)
    held = ax >= 0
    e = np.flatnonzero(held)
    blk_e = np.searchsorted(kb.ax_off, e, side="right") - 1
    a_e = ax[e]
    down = np.flatnonzero((blk_e[1:] == blk_e[:-1]) & (a_e[1:] <= a_e[:-1]))
    suspect = np.unique(np.concatenate([kb.core[blk_e[down]].astype(np.int64),
                                        np.flatnonzero((c.w_fmt == 1) & (n_kb > 1))]))
    del e, blk_e, a_e, held
    if not suspect.size:
        return out
    blk = np.flatnonzero(np.isin(kb.core, suspect))
    lens = kb.ax_off[blk + 1] - kb.ax_off[blk]
    idx = np.repeat(kb.ax_off[blk] - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
    ax = cm.kpatch.ax[idx].astype(np.int64)
    span = int(np.diff(c.axon_off).max()) + 1
    key = np.repeat(kb.core[blk].astype(np.int64), lens) * span + ax
    key = np.sort(key[ax >= 0])
    out[np.unique(key[1:][key[1:] == key[:-1]] // span)] = True
    return out


def kblock_bytes(geom: np.ndarray, w_bits) -> np.ndarray:
    """SRAM bytes of kernel blocks (``geom`` [K, G]) at ``w_bits`` per weight: each output channel's kernel
    slice rounded up to whole bytes."""
    g = np.asarray(geom, np.int64).reshape(-1, len(KGEOM))
    per_ch = g[:, 3] * g[:, 4] * g[:, 5] * np.asarray(w_bits, np.int64)
    return g[:, 0] * ((per_ch + 7) // 8)


#: element types whose exact instances pass :func:`_check` (a list of them is checked in one pass)
_PLAIN = (int, str)


def _check(value: Any, spec: Any, where: str) -> None:
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise CoreMapError(f"header {where} is {type(value).__name__}; expected a table")
        keys = {k.rstrip("?"): k.endswith("?") for k in spec}
        missing = [k for k, opt in keys.items() if not opt and k not in value]
        if missing:
            raise CoreMapError(f"header {where} lacks {missing}")
        for k, s in spec.items():
            k = k.rstrip("?")
            if k in value:
                _check(value[k], s, f"{where}.{k}")
        return
    if isinstance(spec, list):
        if not isinstance(value, list):
            raise CoreMapError(f"header {where} is {type(value).__name__}; expected a list")
        if spec[0] in _PLAIN and (not value or set(map(type, value)) == {spec[0]}):
            return  # (plain ints or strings, e.g. neuron lists: no check per element; anything else is checked below)
        for i, v in enumerate(value):
            _check(v, spec[0], f"{where}[{i}]")
        return
    if isinstance(spec, tuple):
        if all(isinstance(s, type) for s in spec):
            if not isinstance(value, spec):
                raise CoreMapError(f"header {where} is {value!r}; expected one of the types {[s.__name__ for s in spec]}")
        elif value not in spec:
            raise CoreMapError(f"header {where} is {value!r}; expected one of {list(spec)}")
        return
    ok = {str: isinstance(value, str), bool: isinstance(value, bool), dict: isinstance(value, dict),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, _NUM) and not isinstance(value, bool) and math.isfinite(value)}[spec]
    if not ok:
        raise CoreMapError(f"header {where} is {value!r}; expected {'a finite number' if spec is float else spec.__name__}")


def check_header(meta: Any) -> None:
    """Check ``meta`` against :data:`HEADER`; raise :class:`CoreMapError` naming the first bad entry."""
    _check(meta, HEADER, "meta")
    if len(meta["chips"]) != 2 or min(meta["chips"]) < 1:
        raise CoreMapError(f"header meta.chips is {meta['chips']}; expected [chips_x, chips_y] >= 1")


# --------------------------------------------------------------------------- structure
_KIND_CODE = {"static": 0, "step": 1, "state": 2}


def chips_of(cm: CoreMap) -> tuple[int, int]:
    """The ``[chips_x, chips_y]`` grid of chips (``meta["chips"]``, else the chip's default system)."""
    ch = cm.meta.get("chips")
    if ch is None:
        return cm.chip.system.chips_x, cm.chip.system.chips_y
    return int(ch[0]), int(ch[1])


def input_kind_codes(cm: CoreMap) -> np.ndarray:
    """Kind of every graph input: 0 static, 1 step, 2 state."""
    return np.array([_KIND_CODE[inp["kind"]] for inp in cm.meta.get("inputs", [])], dtype=np.int64)


def n_elems(inp: dict) -> int:
    return int(math.prod(int(s) for s in inp.get("shape", [])))


def _dims(cm: CoreMap) -> dict[str, int]:
    c = cm.cores
    return dict(C=int(c.layer.shape[0]), N=int(c.neuron_off[-1]) if c.neuron_off.size else -1,
                A=int(c.axon_off[-1]) if c.axon_off.size else -1, W=int(cm.weights.data.shape[0]),
                K=int(cm.kblocks.core.shape[0]), G=len(KGEOM), X=int(cm.kpatch.ax.shape[0]),
                R=int(cm.routes.src.shape[0]), E=int(cm.router.dst.shape[0]), I=int(cm.feeds.dst.shape[0]),
                O=len(cm.meta.get("outputs", [])), T=int(cm.taps.src.shape[0]),
                P=int(c.param.shape[1]) if c.param.ndim == 2 else -1,
                Q=int(cm.neurons.param.shape[1]) if cm.neurons.param.ndim == 2 else -1,
                S=int(cm.neurons.state_init.shape[1]) if cm.neurons.state_init.ndim == 2 else -1)


def _check_columns(cm: CoreMap) -> dict[str, int]:
    for t, tab in cm.tables().items():
        for k, (dt, dims) in type(tab).columns().items():
            v = getattr(tab, k)
            if not isinstance(v, np.ndarray) or v.dtype != np.dtype(dt) or v.ndim != len(dims):
                got = f"{v.dtype} with {v.ndim} dim(s)" if isinstance(v, np.ndarray) else type(v).__name__
                raise CoreMapError(f"core map column {t}.{k} is {got}; expected {dt} [{', '.join(dims)}]")
    d = _dims(cm)
    for k in ("neuron_off", "axon_off", "w_off"):
        off = getattr(cm.cores, k)
        if off.shape[0] != d["C"] + 1 or off[0] != 0 or np.any(np.diff(off) < 0):
            raise CoreMapError(f"core map column cores.{k} is not {d['C'] + 1} non-decreasing values from 0")
    off = cm.kblocks.ax_off
    if off.shape[0] != d["K"] + 1 or off[0] != 0 or np.any(np.diff(off) < 0) or off[-1] != d["X"]:
        raise CoreMapError(f"core map column kblocks.ax_off is not {d['K'] + 1} non-decreasing values from 0 to the "
                           f"{d['X']} patch entries")
    for t, tab in cm.tables().items():
        for k, (_, dims) in type(tab).columns().items():
            v = getattr(tab, k)
            for axis, dim in enumerate(dims):
                n = d[dim[0]] + (1 if dim.endswith("+1") else 0)
                if v.shape[axis] != n:
                    raise CoreMapError(f"core map column {t}.{k} has {v.shape[axis]} entries along {dim} = {n}")
    return d


def check_coremap(cm: CoreMap) -> None:
    """Structural checks (header schema, column types and sizes, indices in range, codes known, cores on
    distinct routers): what would make emulation undefined.  :func:`nmc.corefile.validate` adds the chip's
    design rules (nmc/rules.py)."""
    check_header(cm.meta)
    d = _check_columns(cm)
    c, N, A, C = cm.cores, d["N"], d["A"], d["C"]
    nn, na = np.diff(c.neuron_off), np.diff(c.axon_off)
    if not np.isin(c.w_fmt, (0, 1)).all():
        raise CoreMapError(f"core {int(np.argmax(~np.isin(c.w_fmt, (0, 1))))}: cores.w_fmt is not 0 or 1")
    dense = c.w_fmt == 0
    if not np.array_equal(np.diff(c.w_off), np.where(dense, nn * na, 0)):
        raise CoreMapError("core map weights do not match n_axons x n_neurons per core")
    if (int(c.w_off[-1]) if c.w_off.size else 0) > d["W"] or (not np.any(c.w_fmt) and c.w_off.size
                                                              and int(c.w_off[-1]) != d["W"]):
        raise CoreMapError(f"core map weights.data holds {d['W']} weights; the dense blocks need {int(c.w_off[-1])} "
                           "(and only shared kernels may follow them)")
    _check_kblocks(cm, d)
    r = cm.routes
    if d["R"] and (r.src.min() < 0 or r.src.max() >= N or r.dst.min() < 0 or r.dst.max() >= A):
        raise CoreMapError("core map routes point outside the neuron/axon arrays")
    if d["R"] and not np.isin(r.delayed, (0, 1)).all():
        raise CoreMapError("core map routes.delayed holds a value other than 0/1")
    _check_router(cm, d)
    f = cm.feeds
    inputs = cm.meta["inputs"]
    if d["I"] and (f.dst.min() < 0 or f.dst.max() >= A):
        raise CoreMapError("core map input feeds point outside the axon array")
    if d["I"] and (f.input.min() < 0 or f.input.max() >= len(inputs)):
        raise CoreMapError("core map input feeds name a graph input that the header does not list")
    if d["I"]:
        kinds = input_kind_codes(cm)
        bad_kind = np.flatnonzero(kinds[f.input] == _KIND_CODE["state"])
        if bad_kind.shape[0]:
            i = int(bad_kind[0])
            k = int(f.input[i])
            raise CoreMapError(f"input feed {i} loads graph input {k} ('{inputs[k]['name']}') of kind 'state'; "
                               "state inputs enter through axons.init and delayed routes, not feeds")
        n_el = np.array([n_elems(inp) for inp in inputs], dtype=np.int64)[f.input]
        bad = np.flatnonzero((f.elem < 0) | (f.elem >= n_el))
        if bad.shape[0]:
            i = int(bad[0])
            raise CoreMapError(f"input feed {i} reads element {int(f.elem[i])} of graph input "
                               f"'{inputs[int(f.input[i])]['name']}' of {int(n_el[i])} elements")
    t = cm.taps
    if t.off[0] != 0 or np.any(np.diff(t.off) < 0) or t.off[-1] != d["T"]:
        raise CoreMapError("core map output taps do not match the header's outputs")
    if d["T"] and (t.src.min() < 0 or t.src.max() >= N):
        raise CoreMapError("core map output taps point outside the neuron array")
    names = [o["name"] for o in cm.meta["outputs"]]
    if len(set(names)) != len(names):
        raise CoreMapError(f"graph outputs have duplicate names: {names}")
    for k, allowed in (("stage", (0, 1, 2)), ("dendrite", (0, 1)), ("out_bits", (1, 8, 32)), ("spike_in", (0, 1)),
                       ("model", tuple(SOMA.values()))):
        bad = ~np.isin(getattr(c, k), allowed)
        if bad.any():
            i = int(np.argmax(bad))
            raise CoreMapError(f"core {i}: cores.{k} = {int(getattr(c, k)[i])} is not one of {list(allowed)}")
    for code in np.unique(c.model):
        m = by_code(int(code))
        need = {"P": len(m.core_params), "Q": len(m.neuron_params), "S": len(m.state)}
        short = {k: v for k, v in need.items() if d[k] < v}
        if short:
            raise CoreMapError(f"neuron model '{m.name}' needs table widths {short}, the core map has "
                               f"{ {k: d[k] for k in short} }")
    if C and c.phase.min() < 0:
        raise CoreMapError(f"core {int(np.argmin(c.phase))}: negative cores.phase")
    if np.any(c.out_lo > c.out_hi):
        i = int(np.argmax(c.out_lo > c.out_hi))
        raise CoreMapError(f"core {i}: output range cores.out_lo = {int(c.out_lo[i])} > cores.out_hi = {int(c.out_hi[i])}")
    _check_references(cm, d)
    for ci in np.flatnonzero(c.dendrite == 1):
        w = cm.core_weights(int(ci))
        if w.shape[1] and (w.shape[0] == 0 or not (w != 0).any(axis=0).all()):
            raise CoreMapError(f"core {int(ci)}: a max-dendrite neuron has no axon with a nonzero weight")
    width, height = cm.chip.grid(*chips_of(cm))
    if C and (c.x.min() < 0 or c.y.min() < 0 or c.x.max() >= width or c.y.max() >= height):
        raise CoreMapError(f"core map places a core outside the {width} x {height} core grid "
                           f"of {chips_of(cm)} chips")
    at = c.x.astype(np.int64) * height + c.y
    if np.unique(at).shape[0] != C and np.unique(np.stack([at, c.stage.astype(np.int64), c.phase.astype(np.int64)]),
                                                  axis=1).shape[1] != C:
        raise CoreMapError("core map places two cores that run in the same phase on the same router (cores may "
                           "share a router only when folded: in distinct stages or phases)")


def _check_kblocks(cm: CoreMap, d: dict[str, int]) -> None:
    """Shared-kernel blocks: on shared-kernel cores, in core order, kernels tiling each core's weights, patches
    covering the tiles, patch entries naming the core's axons, tiles filling the core's neurons."""
    kb, c = cm.kblocks, cm.cores
    K = d["K"]
    if not K:
        if np.any(c.w_fmt == 1):
            raise CoreMapError(f"core {int(np.argmax(c.w_fmt == 1))} has shared kernels (cores.w_fmt 1) but no kblocks")
        return
    core = kb.core.astype(np.int64)
    bad = (core < 0) | (core >= d["C"]) | np.concatenate([[False], np.diff(core) < 0])
    if bad.any():
        i = int(np.argmax(bad))
        raise CoreMapError(f"core map kblocks.core is not ascending core indices 0 .. {d['C'] - 1}: "
                           f"kblocks.core[{i}] = {int(core[i])}" + (f" after {int(core[i - 1])}" if i else ""))
    if np.any(c.w_fmt[core] != 1):
        i = int(np.argmax(c.w_fmt[core] != 1))
        raise CoreMapError(f"kernel block {i} sits on core {int(core[i])}, a dense core (cores.w_fmt 0): kernel blocks "
                           "sit exactly on the cores with cores.w_fmt 1")
    lacking = np.flatnonzero((np.bincount(core, minlength=d["C"]) == 0) & (c.w_fmt == 1))
    if lacking.size:
        raise CoreMapError(f"core {int(lacking[0])} has shared kernels (cores.w_fmt 1) but no kernel block")
    g = kb.geom.astype(np.int64)
    if np.any(g[:, :15] < 1) or np.any(g[:, 15:] < 0):
        i = int(np.argmax(np.any(g[:, :15] < 1, axis=1) | np.any(g[:, 15:] < 0, axis=1)))
        raise CoreMapError(f"kernel block {i}: geometry {dict(zip(KGEOM, g[i].tolist()))} has a size below 1")
    # sizes multiply in float64: exact below 2^53, and a product of huge values stays huge instead of wrapping
    # around int64 to a small one that matches the tables
    tc, th, tw, kc, kh, kw, pc, ph, pw, sh, sw, dh, dw, co_g, ci_g, oc0, kc0, pc0 = g.T.astype(np.float64)
    bad = (ph < (th - 1) * sh + (kh - 1) * dh + 1) | (pw < (tw - 1) * sw + (kw - 1) * dw + 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise CoreMapError(f"kernel block {i}: its patch ({int(g[i, 7])} x {int(g[i, 8])}) does not cover its tile's "
                           f"receptive field (geometry {dict(zip(KGEOM, g[i].tolist()))})")
    patch = pc * ph * pw
    bad = np.diff(kb.ax_off) != patch
    if bad.any():
        i = int(np.argmax(bad))
        raise CoreMapError(f"kernel block {i}: patch map size {int(np.diff(kb.ax_off)[i])} is not pc x ph x pw = "
                           f"{int(g[i, 6]) * int(g[i, 7]) * int(g[i, 8])}")
    nn, na = np.diff(c.neuron_off), np.diff(c.axon_off)
    bad = tc * th * tw != nn[core]
    if bad.any():
        i = int(np.argmax(bad))
        raise CoreMapError(f"kernel block {i}: its tile tc x th x tw = {int(g[i, 0]) * int(g[i, 1]) * int(g[i, 2])} "
                           f"neurons is not its core's {int(nn[core[i]])} neurons (core {int(core[i])})")
    ksize = tc * kc * kh * kw
    lo, W = int(c.w_off[-1]), d["W"]
    w_off = kb.w_off
    bad = (w_off < lo) | (w_off > W) | (ksize > W - np.clip(w_off, lo, W))
    if bad.any():
        i = int(np.argmax(bad))
        size = int(g[i, 0]) * int(g[i, 3]) * int(g[i, 4]) * int(g[i, 5])
        raise CoreMapError(f"kernel block {i}: its kernel of {size} weights at kblocks.w_off = {int(w_off[i])} lies "
                           f"outside the kernels of weights.data ({lo} .. {W})")
    # kernels are stored once and shared: the distinct slices the blocks read fit in the pool (so reading every
    # block's kernel costs at most one pass over the pool: nmc.rules, kblock_ranges)
    pool = W - lo
    starts, size = np.unique(np.stack([w_off, ksize.astype(np.int64)]), axis=1)
    if int(size.sum()) > pool:
        raise CoreMapError(f"core map kernel blocks read {int(size.sum())} weights in {starts.shape[0]} distinct kernel "
                           f"slices, more than the {pool} weights of the kernel pool of weights.data (slices overlap)")
    ax = cm.kpatch.ax.astype(np.int64)
    owner = np.repeat(core, np.diff(kb.ax_off))
    if ax.size and (ax.min() < -1 or np.any(ax >= na[owner])):
        i = int(np.argmax((ax < -1) | (ax >= na[owner])))
        raise CoreMapError(f"core map kpatch.ax[{i}] = {int(ax[i])} names an axon outside its core "
                           f"({int(owner[i])}, axons 0 .. {int(na[owner[i]]) - 1}, or -1)")


def _outside(ks: list, n: int) -> bool:
    """Whether a list of ints holds one outside ``0 .. n-1``."""
    return bool(ks) and (min(ks) < 0 or max(ks) >= n)


def _check_references(cm: CoreMap, d: dict[str, int]) -> None:
    """What the header and the tables say about each other: layer indices, state and state-output neurons,
    axons and words, shapes, the compile warnings."""
    meta, c = cm.meta, cm.cores
    n_sys = meta["chips"][0] * meta["chips"][1] * cm.chip.cores_per_chip
    if n_sys > MAX_SYSTEM_CORES:
        raise CoreMapError(f"header meta.chips {meta['chips']} of {cm.chip.cores_per_chip}-core chips is {n_sys} cores, "
                           f"more than nmc models ({MAX_SYSTEM_CORES})")
    L = len(meta["layers"])
    if d["C"] and (c.layer.min() < 0 or c.layer.max() >= L):
        i = int(np.argmax((c.layer < 0) | (c.layer >= L)))
        raise CoreMapError(f"core {i}: cores.layer = {int(c.layer[i])} names none of the header's {L} layers")
    for i, l in enumerate(meta["layers"]):
        if any(not 0 <= k < d["C"] for k in l["cores"]):
            raise CoreMapError(f"header meta.layers[{i}].cores names cores outside 0 .. {d['C'] - 1}")
    if meta["num_steps"] < 1:
        raise CoreMapError(f"header meta.num_steps is {meta['num_steps']}; expected >= 1")
    for key in ("inputs", "outputs", "states", "state_outputs"):
        for i, e in enumerate(meta.get(key, [])):
            if any(x < 0 for x in e["shape"]) or math.prod(e["shape"]) > 1 << 31:
                raise CoreMapError(f"header meta.{key}[{i}].shape is {e['shape']}")
    for key in ("states", "state_outputs"):
        for i, e in enumerate(meta.get(key, [])):
            n_el = math.prod(e["shape"])
            if "neurons" in e and (len(e["neurons"]) != n_el if key == "state_outputs" else False):
                raise CoreMapError(f"header meta.{key}[{i}] lists {len(e['neurons'])} neurons for shape {e['shape']}")
            # (the header's lists are checked to be ints above: their least and largest decide)
            if _outside(e.get("neurons", []), d["N"]):
                raise CoreMapError(f"header meta.{key}[{i}].neurons point outside the {d['N']} neurons")
            if _outside(e.get("axons", []), d["A"]):
                raise CoreMapError(f"header meta.{key}[{i}].axons point outside the {d['A']} axons")
            if _outside(e.get("elems", []), n_el):
                raise CoreMapError(f"header meta.{key}[{i}].elems point outside its {n_el} elements")
            if len(e.get("axons", [])) != len(e.get("elems", [])):
                raise CoreMapError(f"header meta.{key}[{i}] pairs {len(e.get('axons', []))} axons with "
                                   f"{len(e.get('elems', []))} elements")
            if "word" in e and not 0 <= e["word"] < max(d["S"], 0):
                raise CoreMapError(f"header meta.{key}[{i}].word = {e['word']} is not a state word (0 .. {d['S'] - 1})")
            if key == "states" and e["target"] == "neuron" and ("neurons" not in e or "word" not in e or
                                                                 "scale" not in e or len(e["neurons"]) != n_el):
                raise CoreMapError(f"header meta.states[{i}] targets neurons but lacks one neuron per element, "
                                   "a word or a scale")
            if key == "states" and e["target"] == "axon" and ("axons" not in e or "elems" not in e):
                raise CoreMapError(f"header meta.states[{i}] targets axons but lacks axons/elems")
            if "scale" in e and not e["scale"] > 0:
                raise CoreMapError(f"header meta.{key}[{i}].scale is {e['scale']}; expected > 0")
    for i, e in enumerate(meta["inputs"]):
        if not e["scale"] > 0 or e["lo"] > e["hi"]:
            raise CoreMapError(f"header meta.inputs[{i}] has scale {e['scale']} and range {e['lo']} .. {e['hi']}; "
                               "expected scale > 0 and lo <= hi")
    taps = np.diff(cm.taps.off)
    for k, o in enumerate(meta["outputs"]):
        n_el = math.prod(o["shape"])
        if k < taps.shape[0] and int(taps[k]) != n_el:
            raise CoreMapError(f"header meta.outputs[{k}] ('{o['name']}') has shape {o['shape']} ({n_el} values) but "
                               f"{int(taps[k])} output taps")
    warnings = meta["compile"].get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise CoreMapError("header meta.compile.warnings is not a list of strings")


def _check_router(cm: CoreMap, d: dict[str, int]) -> None:
    """The router table covers exactly the routes of each source core, one entry per destination core in
    ascending order (the host port, -1, last) and nothing else."""
    rt, C, E, R = cm.router, d["C"], d["E"], d["R"]
    if rt.off[0] != 0 or np.any(np.diff(rt.off) < 0) or rt.off[-1] != E:
        raise CoreMapError("core map router.off is not non-decreasing from 0 to the number of entries")
    if rt.route_off[0] != 0 or np.any(np.diff(rt.route_off) < 0) or rt.route_off[-1] != R:
        raise CoreMapError("core map router.route_off is not non-decreasing from 0 to the number of routes")
    if E and (rt.dst.min() < -1 or rt.dst.max() >= C):
        raise CoreMapError("core map router.dst names a core that does not exist")
    src_core = np.repeat(np.arange(C), np.diff(rt.off))
    n_r = np.diff(rt.route_off)
    if np.any((rt.dst == -1) != (n_r == 0)):
        raise CoreMapError("core map router: an entry without routes that is not the host port, or a host entry "
                           "with routes")
    key = np.where(rt.dst < 0, C, rt.dst)
    if E > 1 and np.any((src_core[1:] == src_core[:-1]) & (key[1:] <= key[:-1])):
        raise CoreMapError("core map router: a core's entries are not distinct and ascending (host last)")
    tapped = np.zeros(C, bool)
    tapped[np.searchsorted(cm.cores.neuron_off, cm.taps.src[(cm.taps.src >= 0) & (cm.taps.src < d["N"])],
                           side="right") - 1] = True
    has_host = np.zeros(C, bool)
    has_host[src_core[rt.dst < 0]] = True
    if np.any(tapped != has_host):
        c = int(np.flatnonzero(tapped != has_host)[0])
        raise CoreMapError(f"core map router: core {c} {'lacks' if tapped[c] else 'has'} a host-port entry but "
                           f"{'holds' if tapped[c] else 'holds no'} output taps; host-port entries must sit exactly on "
                           "the cores that hold output taps")
    for i0 in range(0, R, ROUTE_CHUNK):  # a chunk of routes at a time (at VGG-19's 156M, five int64 arrays were 6 GB)
        i1 = min(R, i0 + ROUTE_CHUNK)
        e0 = int(np.searchsorted(rt.route_off, i0, side="right")) - 1
        e1 = int(np.searchsorted(rt.route_off, i1, side="left"))
        n = np.minimum(rt.route_off[e0 + 1:e1 + 1], i1) - np.maximum(rt.route_off[e0:e1], i0)
        entry = np.repeat(np.arange(e0, e1), n)
        r_src = np.searchsorted(cm.cores.neuron_off, cm.routes.src[i0:i1], side="right") - 1
        r_dst = np.searchsorted(cm.cores.axon_off, cm.routes.dst[i0:i1], side="right") - 1
        if np.any(src_core[entry] != r_src) or np.any(rt.dst[entry] != r_dst):
            raise CoreMapError("core map router: an entry's routes do not go from its core to its destination")


def value_bytes(out_bits) -> np.ndarray:
    """Bytes of one value of ``out_bits`` bits: ``ceil(out_bits / 8)``."""
    return (np.asarray(out_bits, dtype=np.int64) + 7) // 8


def in_bytes(cm: CoreMap) -> np.ndarray:
    """Bytes per axon value of every core [C]: the largest ``ceil(out_bits / 8)`` of its sources.

    Sources are the cores that route to it (delayed or not) and graph inputs (8-bit values from the
    host, 1 byte).  A core without sources reads 1 byte per axon.
    """
    out = np.ones(cm.num_cores, dtype=np.int64)
    if cm.routes.src.shape[0]:
        c = cm.cores  # (int8 bytes per axon, then a maximum per core's axon range: small temporaries at 36M routes)
        per_axon = np.zeros(cm.num_axons, np.int8)
        per_axon[cm.routes.dst] = np.repeat(value_bytes(c.out_bits).astype(np.int8), np.diff(c.neuron_off))[cm.routes.src]
        na = np.diff(c.axon_off)
        has = na > 0
        if per_axon.size:
            out[has] = np.maximum(out[has], np.maximum.reduceat(per_axon, c.axon_off[:-1][has]))
    return out


def widths(models=None) -> dict[str, int]:
    """Table widths P, Q, S that hold every registered neuron model, or only ``models`` (NeuronModels: a core map
    needs only the widths of the models it uses; ResNet-50's 11M neurons then hold 2 parameter words, not 4)."""
    if models is None:
        return dict(P=max_core_params(), Q=max_neuron_params(), S=max_state_words())
    models = list(models)
    return dict(P=max((len(m.core_params) for m in models), default=0),
                Q=max((len(m.neuron_params) for m in models), default=0),
                S=max((len(m.state) for m in models), default=0))
