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

from nmc.coremap import KGEOM, kblock_bytes
from nmc.resources import bytes_of_bits, core_usage, unit_weight_bits

from .lower import Layer
from .structured import (Tile, block_out_shape, choose_tiles, gather_segments, merge_geom, tile_geoms, tile_patches,
                         tiles_of)
from .quantize import TQ, Quantized

__all__ = ["Piece", "partition", "layer_in_bytes", "use_tiles", "piece_kernel_bytes", "TILE_MIN_SYNAPSES",
           "TILE_MIN_NEURONS", "TILE_MIN_DENSE", "tile_auto"]


@dataclass(frozen=True, eq=False)
class Piece:
    layer: int  #: index into LayerGraph.layers
    kind: str  #: "full" | "partial" | "merge" | "relay"
    neurons: np.ndarray  #: layer neuron indices this core holds (for partials: the group it sums for)
    cols: np.ndarray  #: layer input columns it reads (full/partial); empty for merge
    partials: list[int] = field(default_factory=list)  #: merge: piece indices of its partial cores
    source: int = -1  #: relay (mapper/relay.py): the core whose values it forwards (neurons: which of them)
    tile: Tile | None = None  #: a tile of a structured layer (full or partial): its cores store shared kernels

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


#: structured layers with more unfolded synapses than this, or at least this many neurons, are cut into tiles
#: (``tiles="auto"``): packed neuron by neuron, a large layer's cores would each store a dense block (a per-channel
#: scale of 1024 neurons: a 1 MB diagonal)
TILE_MIN_SYNAPSES = 1 << 20
TILE_MIN_NEURONS = 1 << 16


#: ... or whose cores, packed neuron by neuron, would hold more dense weight entries than this in all
TILE_MIN_DENSE = 1 << 24


def tile_auto(synapses: int, neurons: int, chip: ChipSpec) -> bool:
    """``tiles="auto"``: whether a structured layer of this size is tiled (:data:`TILE_MIN_SYNAPSES`,
    :data:`TILE_MIN_NEURONS`, :data:`TILE_MIN_DENSE`: its dense blocks, up to ``neurons x core.axons``)."""
    return (synapses > TILE_MIN_SYNAPSES or neurons >= TILE_MIN_NEURONS
            or neurons * chip.core.axons > TILE_MIN_DENSE)


def use_tiles(l: Layer, ql, chip: ChipSpec, tiles: str = "auto") -> bool:
    """Whether layer ``l`` (quantised as ``ql``) is cut into tiles of shared kernels on ``chip`` (``tiles``:
    "auto" as :func:`tile_auto` says, "on" for every structured layer, "off" for none)."""
    if l.blocks is None or ql.wk is None or tiles == "off":
        return False
    return tiles == "on" or tile_auto(l.synapse_count(), l.n, chip)


#: piece_kernel_slices' results by value (tile shape and channels, layer, precision, block geometry): the tiles of a
#: layer that differ only in position share them (bounded: cleared when full)
_SLICES: dict = {}
_SLICES_MAX = 1 << 16


def piece_kernel_slices(p: Piece, l: Layer, w_bits: int) -> list[tuple[tuple, int]] | None:
    """A tile's kernel blocks as ``(kernel slice, SRAM bytes)`` (None: the piece stores a dense weight block).  The
    slice ``(layer, block, oc0, tc, kc0, kc)``, or ``("eye", tc)`` for a merge core's identity kernel (one per
    partial sum), is the one emit stores once in the core map."""
    t = p.tile
    if t is None:
        return None
    merge = p.kind == "merge"
    key = ((merge, len(p.partials), t.tc, t.th, t.tw, w_bits) if merge else
           (merge, p.layer, t.oc0, t.tc, t.th, t.tw, t.chunks, w_bits,
            tuple((b.W.shape, b.strides, b.dilations, b.group) for b in l.blocks)))
    out = _SLICES.get(key)
    if out is None:
        out = _kernel_slices(p, l, w_bits)
        if len(_SLICES) >= _SLICES_MAX:
            _SLICES.clear()
        _SLICES[key] = out
    return list(out)


def _kernel_slices(p: Piece, l: Layer, w_bits: int) -> list[tuple[tuple, int]]:
    if p.kind == "merge":
        gm = merge_geom(p.tile)
        return [(("eye", gm[0]), int(kblock_bytes(np.array(gm), w_bits)[0]))] * len(p.partials)
    out = []
    for bi, gm in tile_geoms(l.blocks, p.tile):
        G = dict(zip(KGEOM, gm))
        out.append(((p.layer, bi, G["oc0"], G["tc"], G["kc0"], G["kc"]), int(kblock_bytes(np.array(gm), w_bits)[0])))
    return out


def piece_kernel_bytes(p: Piece, l: Layer, w_bits: int) -> int | None:
    """SRAM of a tile's shared kernels (None: the piece stores a dense weight block)."""
    s = piece_kernel_slices(p, l, w_bits)
    return None if s is None else sum(b for _, b in s)


def partition(q: Quantized, chip: ChipSpec, reserve: Mapping[int, int] | None = None, tiles: str = "auto") -> list[Piece]:
    """Pieces of every layer; ``reserve[layer]`` routing-table entries are kept free on each of its cores;
    ``tiles``: see :func:`use_tiles`."""
    pieces: list[Piece] = []
    for li, l in enumerate(q.lg.layers):
        rr = int((reserve or {}).get(li, 0))
        if use_tiles(l, q.layers[li], chip, tiles):
            ps = _tile_layer(li, l, q.layers[li].w_bits, chip, q.tq, rr)
        else:
            ps = _partition_layer(li, l, q.layers[li].w_bits, chip, q.tq, rr)
        off = len(pieces)
        pieces.extend(replace(p, partials=[i + off for i in p.partials]) if p.partials else p for p in ps)
    return pieces


def _csr(l: Layer) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(l.rows, kind="stable")
    cols = l.cols[order]
    ptr = np.zeros(l.n + 1, np.int64)
    ptr[1:] = np.bincount(l.rows, minlength=l.n)
    return np.cumsum(ptr), cols


def _partition_layer(li: int, l: Layer, w_bits: int, chip: ChipSpec, tq: dict[str, TQ], rr: int = 0) -> list[Piece]:
    c = chip.core
    ptr, cols = _csr(l)
    in_b = layer_in_bytes(l, tq)
    soma = l.soma
    order = l.order if l.order is not None else np.arange(l.n, dtype=np.int64)
    fan_in = np.diff(ptr)

    def fits(n_a, n_n):  # elementwise over arrays
        return ((n_n <= c.neurons) & (n_a <= c.axons)
                & (core_usage(chip, n_a, n_n, w_bits, soma, in_b, router_entries=rr).total <= c.memory_bytes))

    uf = np.unique(fan_in)
    split = not bool(np.all(fits(uf, np.ones_like(uf))))
    if not split:
        return _greedy(li, l, order, ptr, cols, lambda n_ax, g: fits(n_ax, g), c.neurons)[1]
    if l.dendrite == "max":
        k = int(np.argmax(fan_in))
        raise DoesNotFitError(
            f"{l.where()}: max-pooling neuron {k} reads {int(fan_in[k])} inputs; a core has {c.axons} axons "
            f"(core.axons) and {c.memory_bytes} B (core.memory_bytes), and max pooling cannot be split by fan-in; "
            "use a smaller pooling window or a chip with more axons per core")
    return _greedy_split(li, l, order, ptr, cols, chip, in_b, w_bits, rr)


def _window(order, ptr, cols, s: int, K: int, scratch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the neurons ``order[s:s+K]``: the axons a piece of the first ``k + 1`` of them reads (``n_ax[k]``,
    distinct input columns), and each distinct column with the position of the first neuron reading it.
    ``scratch`` (one int per input column, any content) finds first occurrences without sorting; only the
    entries of this window's columns are written and read."""
    nrns = order[s:s + K]
    lo, hi = ptr[nrns], ptr[nrns + 1]
    lens = hi - lo
    pos = np.repeat(np.arange(nrns.shape[0]), lens)
    idx = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(lo, lens)
    cc = cols[idx]
    at = np.arange(cc.shape[0])
    scratch[cc[::-1]] = at[::-1]  # the last write wins: each column's first occurrence
    first = scratch[cc] == at
    ucol, first_pos = cc[first], pos[first]
    n_ax = np.cumsum(np.bincount(first_pos, minlength=nrns.shape[0]))
    return n_ax, ucol, first_pos


def _greedy(li, l, order, ptr, cols, ok, cap: int, kind: str = "full"):
    """Neurons in ``order`` into pieces greedily: each piece takes the next neurons while ``ok(axons, neurons)``
    holds for the piece with one more (its first is always taken); vectorised per piece over a window of
    candidates.  Returns ``(groups as (neurons, cols), pieces)``."""
    n = order.shape[0]
    groups = []
    scratch = np.zeros(l.n_cols, np.int64)
    s, K = 0, 64
    while s < n:
        while True:
            K = min(K, n - s, cap + 1)
            n_ax, ucol, first_pos = _window(order, ptr, cols, s, K, scratch)
            good = ok(n_ax[1:], np.arange(2, K + 1))
            size = 1 + (int(np.argmin(good)) if not good.all() else K - 1)
            if size < K or K >= min(n - s, cap + 1):
                break
            K *= 2
        groups.append((order[s:s + size].astype(np.int64), np.sort(ucol[first_pos < size]).astype(np.int64)))
        s += size
        K = max(64, 2 * size)
    return groups, [Piece(layer=li, kind=kind, neurons=nr, cols=cs) for nr, cs in groups]


def _greedy_split(li, l: Layer, order, ptr, cols, chip: ChipSpec, in_b: int, w_bits: int, rr: int = 0) -> list[Piece]:
    c = chip.core
    mw = unit_weight_bits(chip)
    g_all = np.arange(1, c.neurons + 1)
    # most axons a partial core with g neurons can hold (binary search, all g at once)
    lo, hi = np.zeros(g_all.shape, np.int64), np.full(g_all.shape, c.axons, np.int64)
    while np.any(lo < hi):
        mid = (lo + hi + 1) // 2
        good = core_usage(chip, mid, g_all, w_bits, "partial", in_b, has_bias=False,
                          router_entries=rr).total <= c.memory_bytes
        lo, hi = np.where(good, mid, lo), np.where(good, hi, mid - 1)
    a_max = np.concatenate([[0], lo])  # a_max[g]

    def plan_ok(n_union, g):  # a group of g neurons reading n_union inputs has partial + merge cores that fit
        g = np.asarray(g)
        am = a_max[np.minimum(g, c.neurons)]
        k = -(-np.asarray(n_union) // np.maximum(am, 1))
        merge = ((g <= c.neurons) & (k * g <= c.axons)
                 & (core_usage(chip, k * g, g, mw, l.soma, 4, router_entries=rr).total <= c.memory_bytes))
        return (am > 0) & merge

    # a neuron whose inputs (distinct columns) cannot be split into partial sums a merge core can add
    fan = np.diff(ptr)
    maybe = order[~plan_ok(fan[order], np.ones(order.shape[0], np.int64))]  # plan_ok: no easier with more inputs
    for nrn in maybe.tolist():  # (a neuron reading a column twice needs one axon for it)
        cs = np.unique(cols[ptr[nrn]:ptr[nrn + 1]])
        if plan_ok(cs.shape[0], 1):
            continue
        am1 = int(a_max[1])
        raise DoesNotFitError(
            f"{l.where()}: neuron {int(nrn)} reads {cs.shape[0]} inputs; split across partial cores of at most "
            f"{am1} axons this needs a merge core with {-(-cs.shape[0] // max(am1, 1))} axons, more than "
            f"core.axons = {c.axons} (or its memory exceeds core.memory_bytes = {c.memory_bytes}); reduce the layer's "
            "fan-in or use a chip with larger cores")
    groups, _ = _greedy(li, l, order, ptr, cols, plan_ok, c.neurons)
    pieces: list[Piece] = []
    for neurons, U in groups:
        g = neurons.shape[0]
        am = int(a_max[g])
        k = -(-U.shape[0] // am)
        if k <= 1 and core_usage(chip, U.shape[0], g, w_bits, l.soma, in_b, router_entries=rr).total <= c.memory_bytes:
            pieces.append(Piece(layer=li, kind="full", neurons=neurons, cols=U))
            continue
        k = max(k, 2)
        chunks = np.array_split(U, k)
        base = len(pieces)
        for ch in chunks:
            pieces.append(Piece(layer=li, kind="partial", neurons=neurons, cols=ch))
        # partial indices are relative to this layer's pieces; partition() offsets them
        pieces.append(Piece(layer=li, kind="merge", neurons=neurons, cols=np.zeros(0, np.int64),
                            partials=list(range(base, base + k))))
    return pieces


def _tile_layer(li: int, l: Layer, w_bits: int, chip: ChipSpec, tq: dict[str, TQ], rr: int = 0) -> list[Piece]:
    """Pieces of a structured layer: rectangular tiles of its output whose cores store shared kernels
    (mapper/structured.py); a tile whose inputs exceed a core is cut by input channels into partial cores and a
    merge core."""
    c = chip.core
    in_b = layer_in_bytes(l, tq)
    out = block_out_shape(l.blocks[0])
    mw = unit_weight_bits(chip)

    def usage(ax, n, kbytes, partial=False):
        return core_usage(chip, ax, n, w_bits, "partial" if partial else l.soma, in_b, has_bias=not partial,
                          router_entries=rr, kernel_bytes=kbytes).total

    def unit_usage(ax, n):
        return core_usage(chip, ax, n, mw, l.soma, 4, router_entries=rr).total

    pick = choose_tiles(l.blocks, out, chip, usage, l.dendrite == "max", unit_usage, w_bits)
    if pick is None:
        raise DoesNotFitError(
            f"{l.where()}: no tile of its output {list(out)} fits a core of '{chip.name}' ({c.neurons} neurons, "
            f"{c.axons} axons, {c.memory_bytes} B): one output reads more inputs than a core holds and this layer "
            "cannot be split into partial sums (max pooling, a sum of several operands or a grouped convolution); "
            "use smaller kernels or fewer input channels, or a chip with larger cores")
    shape, budget = pick
    _, OH, OW = out
    # int32 indices where they fit: the tiled layers are the largest, and their cores' columns are most of a compile's
    # memory (DenseNet-121: 38M)
    n_dt = np.int32 if l.n < 2 ** 31 else np.int64
    c_dt = np.int32 if l.n_cols < 2 ** 31 else np.int64
    groups = tiles_of(l.blocks, out, shape, budget)
    tiles = [t for group in groups for t in group]
    cols, off = _tile_columns(l.blocks, tiles, c_dt)
    pieces: list[Piece] = []
    shapes: dict[tuple, np.ndarray] = {}  # a tile shape's neurons at (0, 0, 0), slot order (t, ty, tx)
    i = 0
    for group in groups:
        t0 = group[0]
        base_n = shapes.get((t0.tc, t0.th, t0.tw))
        if base_n is None:
            base_n = shapes[(t0.tc, t0.th, t0.tw)] = Tile(0, t0.tc, 0, t0.th, 0, t0.tw, ()).neurons(OH, OW)
        neurons = (base_n + (t0.oc0 * OH * OW + t0.y0 * OW + t0.x0)).astype(n_dt)  # (Tile.neurons)
        base = len(pieces)
        k = len(group)
        for t in group:
            c = cols[off[i]:off[i + 1]] if isinstance(off, np.ndarray) else off[i]
            pieces.append(Piece(layer=li, kind="full" if k == 1 else "partial", neurons=neurons, cols=c, tile=t))
            i += 1
        if k > 1:  # (its tile: it stores identity kernels, mapper/structured.merge_geom)
            pieces.append(Piece(layer=li, kind="merge", neurons=neurons, cols=np.zeros(0, np.int64),
                                partials=list(range(base, base + k)), tile=group[0]))
    return pieces


def _tile_columns(blocks, tiles: list[Tile], dtype=np.int64) -> tuple[np.ndarray, np.ndarray | list]:
    """The layer input columns every tile reads: its blocks' patches (:func:`tile_patch`, in block order) without
    padding and zeros, ascending (made unique where not: views, or blocks out of column order).  Returns ``(cols,
    off)``: tile ``i`` reads ``cols[off[i]:off[i + 1]]``; or, when some tile's columns had to be made unique,
    ``(cols, list of each tile's array)``; columns as ``dtype``."""
    n = len(tiles)
    tt = np.array([(t.y0, t.x0, t.th, t.tw) for t in tiles], np.int64).reshape(n, 4)
    ch = np.array([t.chunks for t in tiles], np.int64).reshape(n, len(blocks), 2)
    flats, seg_tile, seg_block, seg_len = [], [], [], []
    for bi, b in enumerate(blocks):
        sel = np.flatnonzero(ch[:, bi, 1] > 0)
        if not sel.shape[0]:
            continue
        y0, x0, th, tw = tt[sel].T
        flat, off = tile_patches(b, y0, x0, th, tw, ch[sel, bi, 0], ch[sel, bi, 1], dtype)
        flats.append(flat)
        seg_tile.append(sel)
        seg_block.append(np.full(sel.shape[0], bi, np.int64))
        seg_len.append(np.diff(off))
    if not flats:
        return np.zeros(0, dtype), np.zeros(n + 1, np.int64)
    flat = np.concatenate(flats) if len(flats) > 1 else flats[0]
    del flats
    st, sb, sl = np.concatenate(seg_tile), np.concatenate(seg_block), np.concatenate(seg_len)
    if st.shape[0] > 1 and np.any((st[1:] < st[:-1]) | ((st[1:] == st[:-1]) & (sb[1:] <= sb[:-1]))):
        order = np.lexsort((sb, st))  # tile by tile, its blocks in order
        start = np.zeros(sl.shape[0], np.int64)
        np.cumsum(sl[:-1], out=start[1:])
        flat = gather_segments(flat, start, sl, order)
        st, sl = st[order], sl[order]
    per_tile = np.bincount(st, weights=sl, minlength=n).astype(np.int64)
    valid = flat >= 0
    cv = np.zeros(flat.shape[0] + 1, np.int64)
    np.cumsum(valid, out=cv[1:])
    raw = np.zeros(n + 1, np.int64)
    np.cumsum(per_tile, out=raw[1:])
    off = cv[raw]  # each tile's columns in the compacted list
    cols = flat[valid].astype(dtype, copy=False)
    del flat, valid, cv
    # a tile whose columns are not strictly ascending: a drop inside its run
    drop = np.flatnonzero(cols[1:] <= cols[:-1]) + 1  # (position of the second of the pair)
    ti = np.searchsorted(off, drop, side="right") - 1  # (the tile whose run holds it; empty runs skipped)
    bad = np.unique(ti[drop > off[ti]])  # (not the first of its tile's run)
    if not bad.shape[0]:
        return cols, off
    out = [cols[off[i]:off[i + 1]] for i in range(n)]
    for i in bad.tolist():
        out[i] = np.unique(out[i])
    return cols, out
