"""Partition every layer into pieces that fit one core each.

A piece holds some of a layer's neurons and the axons (input elements) they read.  Neurons are
taken in locality order (for feature maps: position-major, so a piece covers a spatial tile of all
channels and its inputs overlap) and added to the current piece while the core's neurons, axons
and SRAM limits hold.  When even a single neuron reads more inputs than a core can hold, the layer
is split by fan-in: each group of neurons gets *partial* cores (one per chunk of inputs, emitting
32-bit partial sums) and a *merge* core that adds them and runs the soma (docs/numerics.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from nmc.chip import ChipSpec
from nmc.errors import DoesNotFitError

from nmc.resources import bytes_of_bits, core_usage, unit_weight_bits

from .lower import Layer
from .quantize import TQ, Quantized

__all__ = ["Piece", "partition", "layer_in_bytes"]


@dataclass(frozen=True, eq=False)
class Piece:
    layer: int  #: index into LayerGraph.layers
    kind: str  #: "full" | "partial" | "merge" | "relay"
    neurons: np.ndarray  #: layer neuron indices this core holds (for partials: the group it sums for)
    cols: np.ndarray  #: layer input columns it reads (full/partial); empty for merge
    partials: list[int] = field(default_factory=list)  #: merge: piece indices of its partial cores
    source: int = -1  #: relay (mapper/relay.py): the core whose values it forwards (neurons: which of them)

    @property
    def n_neurons(self) -> int:
        return int(self.neurons.shape[0])

    @property
    def n_axons(self) -> int:
        if self.kind == "relay":
            return self.n_neurons
        if self.kind == "merge":
            return len(self.partials) * self.n_neurons
        return int(self.cols.shape[0])


def layer_in_bytes(l: Layer, tq: dict[str, TQ]) -> int:
    return max(bytes_of_bits(tq[t].bits) for t in l.inputs)


def partition(q: Quantized, chip: ChipSpec, reserve: Mapping[int, int] | None = None) -> list[Piece]:
    """Pieces of every layer; ``reserve[layer]`` routing-table entries are kept free on each of its cores."""
    pieces: list[Piece] = []
    for li, l in enumerate(q.lg.layers):
        ps = _partition_layer(li, l, q.layers[li].w_bits, chip, q.tq, int((reserve or {}).get(li, 0)))
        off = len(pieces)
        pieces.extend(replace(p, partials=[i + off for i in p.partials]) if p.partials else p for p in ps)
    return pieces


def _csr(l: Layer) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(l.rows, kind="stable")
    cols = l.cols[order]
    ptr = np.zeros(l.n + 1, np.int64)
    np.add.at(ptr, l.rows + 1, 1)
    return np.cumsum(ptr), cols


def _partition_layer(li: int, l: Layer, w_bits: int, chip: ChipSpec, tq: dict[str, TQ], rr: int = 0) -> list[Piece]:
    c = chip.core
    ptr, cols = _csr(l)
    in_b = layer_in_bytes(l, tq)
    soma = l.soma
    order = l.order if l.order is not None else np.arange(l.n, dtype=np.int64)
    fan_in = np.diff(ptr)

    def fits(n_a: int, n_n: int) -> bool:
        return (n_n <= c.neurons and n_a <= c.axons
                and core_usage(chip, n_a, n_n, w_bits, soma, in_b, router_entries=rr).total <= c.memory_bytes)

    split = not all(fits(int(f), 1) for f in np.unique(fan_in))
    if not split:
        return _greedy_full(li, l, order, ptr, cols, fits)
    if l.dendrite == "max":
        k = int(np.argmax(fan_in))
        raise DoesNotFitError(
            f"{l.where()}: max-pooling neuron {k} reads {int(fan_in[k])} inputs; a core has {c.axons} axons "
            f"(core.axons) and {c.memory_bytes} B (core.memory_bytes), and max pooling cannot be split by fan-in; "
            "use a smaller pooling window or a chip with more axons per core")
    return _greedy_split(li, l, order, ptr, cols, chip, in_b, w_bits, rr)


def _greedy_full(li, l, order, ptr, cols, fits) -> list[Piece]:
    pieces = []
    mark = np.zeros(l.n_cols, bool)
    cur: list[int] = []
    n_ax = 0
    for nrn in order:
        cs = cols[ptr[nrn]:ptr[nrn + 1]]
        new = cs[~mark[cs]]
        new = np.unique(new)
        if cur and not fits(n_ax + new.shape[0], len(cur) + 1):
            pieces.append(_full_piece(li, cur, mark))
            mark[:] = False
            cur, n_ax = [], 0
            new = np.unique(cs)
        mark[new] = True
        n_ax += new.shape[0]
        cur.append(int(nrn))
    if cur:
        pieces.append(_full_piece(li, cur, mark))
    return pieces


def _full_piece(li, cur, mark) -> Piece:
    return Piece(layer=li, kind="full", neurons=np.array(cur, np.int64), cols=np.flatnonzero(mark).astype(np.int64))


def _greedy_split(li, l: Layer, order, ptr, cols, chip: ChipSpec, in_b: int, w_bits: int, rr: int = 0) -> list[Piece]:
    c = chip.core
    mw = unit_weight_bits(chip)

    def a_max(g: int) -> int:
        # most axons a partial core with g neurons can hold
        lo, hi = 0, c.axons
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if core_usage(chip, mid, g, w_bits, "partial", in_b, has_bias=False, router_entries=rr).total <= c.memory_bytes:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def merge_ok(k: int, g: int) -> bool:
        return (g <= c.neurons and k * g <= c.axons
                and core_usage(chip, k * g, g, mw, l.soma, 4, router_entries=rr).total <= c.memory_bytes)

    amax_cache: dict[int, int] = {}
    groups: list[tuple[list[int], np.ndarray]] = []
    mark = np.zeros(l.n_cols, bool)
    n_u = 0
    cur: list[int] = []

    def plan(n_union: int, g: int) -> int | None:
        if g not in amax_cache:
            amax_cache[g] = a_max(g)
        am = amax_cache[g]
        if am == 0:
            return None
        k = -(-n_union // am)
        return k if merge_ok(k, g) else None

    for nrn in order:
        cs = np.unique(cols[ptr[nrn]:ptr[nrn + 1]])
        new = cs[~mark[cs]]
        if cur and plan(n_u + new.shape[0], len(cur) + 1) is None:
            groups.append((cur, np.flatnonzero(mark)))
            mark[:] = False
            cur, n_u, new = [], 0, cs
        if not cur and plan(cs.shape[0], 1) is None:
            raise DoesNotFitError(
                f"{l.where()}: neuron {int(nrn)} reads {cs.shape[0]} inputs; split across partial cores of at most "
                f"{a_max(1)} axons this needs a merge core with {-(-cs.shape[0] // max(a_max(1), 1))} axons, more than "
                f"core.axons = {c.axons} (or its memory exceeds core.memory_bytes = {c.memory_bytes}); reduce the layer's "
                "fan-in or use a chip with larger cores")
        mark[new] = True
        n_u += new.shape[0]
        cur.append(int(nrn))
    if cur:
        groups.append((cur, np.flatnonzero(mark)))
    pieces: list[Piece] = []
    for nrns, U in groups:
        g = len(nrns)
        am = amax_cache.get(g) or a_max(g)
        k = -(-U.shape[0] // am)
        neurons = np.array(nrns, np.int64)
        if k <= 1 and core_usage(chip, U.shape[0], g, w_bits, l.soma, in_b, router_entries=rr).total <= c.memory_bytes:
            pieces.append(Piece(layer=li, kind="full", neurons=neurons, cols=U.astype(np.int64)))
            continue
        k = max(k, 2)
        chunks = np.array_split(U.astype(np.int64), k)
        base = len(pieces)
        for ch in chunks:
            pieces.append(Piece(layer=li, kind="partial", neurons=neurons, cols=ch))
        # partial indices are relative to this layer's pieces; partition() offsets them
        pieces.append(Piece(layer=li, kind="merge", neurons=neurons, cols=np.zeros(0, np.int64),
                            partials=list(range(base, base + k))))
    return pieces
