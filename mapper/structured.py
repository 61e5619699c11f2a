"""Structured synapses: layers kept as grouped convolutions (kernel, stride, channel groups) until emission.

A layer of ``mapper.lower`` holds its synapse either as unfolded COO arrays or as *blocks*: grouped 2-D
convolutions from a virtual input ``(C, H, W)`` (a layer input, or a view of several: ``colmap`` maps its
elements to the layer's input columns) into the layer's output ``(co, OH, OW)``, their outputs summed.  Dense
layers are 1 x 1 convolutions over ``(in, 1, 1)``; identity operands, batch-norm scales and pooling are
depthwise convolutions.  The COO form is computed from the blocks only when a pass asks for it.

With blocks, partitioning cuts the output into rectangular *tiles* (output channels x rows x columns): a tile's
core reads the patch of inputs under its receptive field and stores each block's kernel slice once (the
"folded" mapping of Tianjic: a convolution's shared kernel stored once per core), so the memory of compiling
grows with the cores, not with the unfolded synapses.  When one output's inputs exceed a core, a tile's input
channels are cut into chunks on partial cores and a merge core adds them (as the unfolded mapping does).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nmc.chip import ChipSpec
from nmc.coremap import KGEOM
from nmc.errors import ModelError

__all__ = ["Block", "Tile", "blocks_coo", "concat_ranges", "block_out_shape", "choose_tiles", "tile_patch", "tile_geoms", "merge_geom",
           "tiles_of", "tile_patches", "tile_geom_rows", "gather_segments"]


@dataclass(frozen=True, eq=False)
class Block:
    """``out[oc, y, x] += sum W[oc, k, ky, kx] * in[(oc // co_g) * ci_g + k, y*sh - pt + ky*dh, x*sw - pl + kx*dw]``
    over taps inside the input; ``in`` is the virtual input of ``in_shape``, whose element ``e`` is layer input
    column ``col0 + e`` (``colmap is None``) or ``colmap[e]`` (-1: a zero)."""

    W: np.ndarray  #: float [co, ci_g, kh, kw]
    in_shape: tuple[int, int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    col0: int = 0
    colmap: np.ndarray | None = None

    @property
    def co(self) -> int:
        return int(self.W.shape[0])

    @property
    def ci_g(self) -> int:
        return int(self.W.shape[1])

    @property
    def co_g(self) -> int:
        return self.co // self.group

    def columns(self) -> np.ndarray:
        """The layer input column of every virtual input element (-1: zero)."""
        n = int(np.prod(self.in_shape))
        return np.arange(self.col0, self.col0 + n, dtype=np.int64) if self.colmap is None else self.colmap

    def columns_of(self, e: np.ndarray) -> np.ndarray:
        """The layer input columns of virtual input elements ``e`` (-1: zero)."""
        return self.col0 + e if self.colmap is None else self.colmap[e]

    def renumbered(self, cm: np.ndarray) -> "Block":
        """This block with its columns mapped through ``cm`` (old column -> new column, -1 zero)."""
        cols = self.columns()
        new = np.where(cols >= 0, cm[np.maximum(cols, 0)], -1)
        return Block(self.W, self.in_shape, self.strides, self.pads, self.dilations, self.group, 0, new)


def block_out_shape(b: Block) -> tuple[int, int, int]:
    C, H, W = b.in_shape
    kh, kw = b.W.shape[2:]
    OH = (H + b.pads[0] + b.pads[2] - b.dilations[0] * (kh - 1) - 1) // b.strides[0] + 1
    OW = (W + b.pads[1] + b.pads[3] - b.dilations[1] * (kw - 1) - 1) // b.strides[1] + 1
    return b.co, OH, OW


def _block_coo(b: Block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, virtual input element, flat kernel index)`` of every tap inside the input with a non-zero weight."""
    C, H, Wd = b.in_shape
    co, ci_g, kh, kw = b.W.shape
    sh, sw = b.strides
    pt, pl = b.pads[0], b.pads[1]
    dh, dw = b.dilations
    _, OH, OW = block_out_shape(b)
    if OH <= 0 or OW <= 0:
        raise ModelError(f"convolution output would be empty: input {b.in_shape}, kernel {b.W.shape[2:]}")
    co_g = b.co_g
    nzk = np.flatnonzero(b.W.reshape(-1) != 0)  # non-zero kernel entries
    oc, k, ky, kx = np.unravel_index(nzk, b.W.shape)
    R, E, KI = [], [], []
    per = max(1, (1 << 22) // max(OH * OW, 1))  # kernel entries per chunk (bounded temporaries)
    oy, ox = np.meshgrid(np.arange(OH), np.arange(OW), indexing="ij")
    oy, ox = oy.reshape(1, -1), ox.reshape(1, -1)
    for s in range(0, nzk.shape[0], per):
        sl = slice(s, s + per)
        iy = oy * sh - pt + (ky[sl] * dh)[:, None]
        ix = ox * sw - pl + (kx[sl] * dw)[:, None]
        ci = ((oc[sl] // co_g) * ci_g + k[sl])[:, None]
        ok = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < Wd)
        rows = oc[sl][:, None] * (OH * OW) + oy * OW + ox
        R.append(rows[ok])
        E.append((ci * H * Wd + iy * Wd + ix)[ok])
        KI.append(np.broadcast_to(nzk[sl][:, None], ok.shape)[ok])
    cat = lambda xs: np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, np.int64)  # noqa: E731
    return cat(R), cat(E), cat(KI)


def blocks_coo(blocks, kernels=None) -> tuple[np.ndarray, np.ndarray, list]:
    """The unfolded synapses of ``blocks``: ``(rows, cols, [values of each array of kernels])`` with
    ``kernels`` a list of per-block kernel arrays to read values from (default: the float kernels), sorted by
    row (stable: block order, then the kernel's order)."""
    kernels = [[b.W for b in blocks]] if kernels is None else kernels
    R, Cc, V = [], [], [[] for _ in kernels]
    for bi, b in enumerate(blocks):
        r, e, ki = _block_coo(b)
        cols = b.columns()[e]
        keep = cols >= 0
        R.append(r[keep])
        Cc.append(cols[keep])
        for j, ks in enumerate(kernels):
            V[j].append(np.asarray(ks[bi]).reshape(-1)[ki[keep]])
    rows = np.concatenate(R)
    order = np.argsort(rows, kind="stable")
    return rows[order], np.concatenate(Cc)[order], [np.concatenate(v)[order] for v in V]


# ----------------------------------------------------------------------------- tiles
@dataclass(frozen=True)
class Tile:
    """A core's share of a structured layer: output channels ``oc0 .. oc0+tc-1``, rows ``y0 .. y0+th-1``, columns
    ``x0 .. x0+tw-1``; ``chunks``: per block, the virtual input channels ``(pc0, pc)`` it reads (``pc == 0``: none
    of that block; a partial core reads a chunk of them)."""

    oc0: int
    tc: int
    y0: int
    th: int
    x0: int
    tw: int
    chunks: tuple[tuple[int, int], ...]

    def neurons(self, OH: int, OW: int) -> np.ndarray:
        """Layer neuron indices of the tile, slot order ``(t, ty, tx)``."""
        t = np.arange(self.oc0, self.oc0 + self.tc, dtype=np.int64)[:, None, None] * (OH * OW)
        y = np.arange(self.y0, self.y0 + self.th, dtype=np.int64)[None, :, None] * OW
        x = np.arange(self.x0, self.x0 + self.tw, dtype=np.int64)[None, None, :]
        return (t + y + x).reshape(-1)


def _group_channels(b: Block, oc0: int, tc: int) -> tuple[int, int]:
    """The virtual input channels ``(first, count)`` that output channels ``oc0 .. oc0+tc-1`` read."""
    g0, g1 = oc0 // b.co_g, (oc0 + tc - 1) // b.co_g
    return g0 * b.ci_g, (g1 - g0 + 1) * b.ci_g


def patch_dims(b: Block, th: int, tw: int) -> tuple[int, int]:
    kh, kw = b.W.shape[2:]
    return (th - 1) * b.strides[0] + (kh - 1) * b.dilations[0] + 1, (tw - 1) * b.strides[1] + (kw - 1) * b.dilations[1] + 1


def tile_patch(b: Block, t: Tile, bi: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The layer input column of every element of block ``bi``'s patch of tile ``t`` (``(c, y, x)`` row-major, -1:
    padding or zero) and the patch's ``(pc0, pc, ph, pw)``."""
    pc0, pc = t.chunks[bi]
    ph, pw = patch_dims(b, t.th, t.tw)
    C, H, W = b.in_shape
    iy = t.y0 * b.strides[0] - b.pads[0] + np.arange(ph)
    ix = t.x0 * b.strides[1] - b.pads[1] + np.arange(pw)
    c = pc0 + np.arange(pc)
    inside = ((iy >= 0) & (iy < H))[None, :, None] & ((ix >= 0) & (ix < W))[None, None, :]
    e = (c[:, None, None] * H + np.clip(iy, 0, H - 1)[None, :, None]) * W + np.clip(ix, 0, W - 1)[None, None, :]
    cols = b.columns_of(e)
    return np.where(inside, cols, -1).reshape(-1), (pc0, pc, ph, pw)


def tile_geoms(blocks, t: Tile) -> list[tuple[int, tuple]]:
    """Per block the tile reads: ``(block index, KGEOM values, kernel slice (oc, kc) ranges)``."""
    out = []
    for bi, b in enumerate(blocks):
        pc0, pc = t.chunks[bi]
        if pc == 0:
            continue
        ph, pw = patch_dims(b, t.th, t.tw)
        g0, g1 = t.oc0 // b.co_g, (t.oc0 + t.tc - 1) // b.co_g
        if g0 == g1:  # one group: only the kernel channels of the chunk
            kc0 = max(0, pc0 - g0 * b.ci_g)
            kc1 = min(b.ci_g, pc0 + pc - g0 * b.ci_g)
        else:
            kc0, kc1 = 0, b.ci_g
        kh, kw = b.W.shape[2:]
        geom = dict(tc=t.tc, th=t.th, tw=t.tw, kc=kc1 - kc0, kh=kh, kw=kw, pc=pc, ph=ph, pw=pw, sh=b.strides[0],
                    sw=b.strides[1], dh=b.dilations[0], dw=b.dilations[1], co_g=b.co_g, ci_g=b.ci_g, oc0=t.oc0,
                    kc0=kc0, pc0=pc0)
        out.append((bi, tuple(geom[k] for k in KGEOM)))
    return out


def tile_patches(b: Block, y0, x0, th, tw, pc0, pc, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """:func:`tile_patch` of many tiles of block ``b`` at once (arrays of their ``y0, x0, th, tw`` and of the
    block's chunk ``pc0, pc``): every tile's patch columns (as ``dtype``: it must hold the block's columns),
    concatenated in tile order, and their offsets ``[n + 1]`` (tile ``i``'s patch: ``cols[off[i]:off[i + 1]]``).
    Tiles of one ``(th, tw, pc)`` have patches of one shape, computed together (an edge tile's padding is where its
    rows or columns leave the input)."""
    y0, x0, th, tw, pc0, pc = (np.asarray(a, np.int64).reshape(-1) for a in (y0, x0, th, tw, pc0, pc))
    C, H, W = b.in_shape
    sh, sw = b.strides
    ph, pw = patch_dims(b, th, tw)
    size = pc * ph * pw
    off = np.zeros(y0.shape[0] + 1, np.int64)
    np.cumsum(size, out=off[1:])
    out = np.empty(int(off[-1]), dtype)
    if not y0.shape[0]:
        return out, off
    et = np.int32 if b.col0 + C * H * W < 2 ** 31 else np.int64  # (virtual input elements, and col0 + them)
    shapes, inv = np.unique(np.stack([th, tw, pc], axis=1), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    for s, (sth, stw, spc) in enumerate(shapes.tolist()):
        idx = np.flatnonzero(inv == s)
        sph, spw = patch_dims(b, sth, stw)
        n_el = spc * sph * spw
        step = max(1, (1 << 22) // max(n_el, 1))  # tiles per chunk (bounded temporaries)
        for a in range(0, idx.shape[0], step):
            i = idx[a:a + step]
            iy = (y0[i] * sh - b.pads[0])[:, None] + np.arange(sph)  # [m, ph]
            ix = (x0[i] * sw - b.pads[1])[:, None] + np.arange(spw)  # [m, pw]
            c = pc0[i][:, None] + np.arange(spc)  # [m, pc]
            inside = (((iy >= 0) & (iy < H))[:, None, :, None] & ((ix >= 0) & (ix < W))[:, None, None, :])
            e = ((c.astype(et)[:, :, None, None] * H + np.clip(iy, 0, H - 1).astype(et)[:, None, :, None]) * W
                 + np.clip(ix, 0, W - 1).astype(et)[:, None, None, :])
            cols = b.columns_of(e)
            cols = np.where(inside, cols, np.asarray(-1, cols.dtype)).reshape(i.shape[0], n_el)
            # runs of consecutive tiles are one slice of the output (interior tiles of a row); else scattered
            brk = np.flatnonzero(np.diff(i) != 1) + 1
            if brk.shape[0] < max(8, i.shape[0] // 4):
                for r0, r1 in zip([0, *brk.tolist()], [*brk.tolist(), i.shape[0]]):
                    o = int(off[i[r0]])
                    out[o:o + (r1 - r0) * n_el] = cols[r0:r1].reshape(-1)
            else:
                out[off[i][:, None] + np.arange(n_el)] = cols
    return out, off


def tile_geom_rows(b: Block, oc0, tc, th, tw, pc0, pc) -> np.ndarray:
    """The KGEOM rows ``[n, len(KGEOM)]`` of block ``b`` of many tiles (arrays: the tiles' ``oc0, tc, th, tw`` and
    their chunk ``pc0, pc`` of the block, ``pc > 0``), as :func:`tile_geoms` gives one tile's."""
    oc0, tc, th, tw, pc0, pc = (np.asarray(a, np.int64).reshape(-1) for a in (oc0, tc, th, tw, pc0, pc))
    ph, pw = patch_dims(b, th, tw)
    co_g, ci_g = b.co_g, b.ci_g
    g0, g1 = oc0 // co_g, (oc0 + tc - 1) // co_g
    one = g0 == g1  # one group: only the kernel channels of the chunk
    kc0 = np.where(one, np.maximum(0, pc0 - g0 * ci_g), 0)
    kc1 = np.where(one, np.minimum(ci_g, pc0 + pc - g0 * ci_g), ci_g)
    kh, kw = b.W.shape[2:]
    n = oc0.shape[0]
    full = lambda v: np.full(n, v, np.int64)  # noqa: E731
    geom = dict(tc=tc, th=th, tw=tw, kc=kc1 - kc0, kh=full(kh), kw=full(kw), pc=pc, ph=ph, pw=pw,
                sh=full(b.strides[0]), sw=full(b.strides[1]), dh=full(b.dilations[0]), dw=full(b.dilations[1]),
                co_g=full(co_g), ci_g=full(ci_g), oc0=oc0, kc0=kc0, pc0=pc0)
    return np.stack([geom[k] for k in KGEOM], axis=1) if n else np.zeros((0, len(KGEOM)), np.int64)


def concat_ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """``starts[k] .. starts[k] + lens[k] - 1`` for every ``k``, concatenated (int64)."""
    starts, lens = np.asarray(starts, np.int64), np.asarray(lens, np.int64)
    ends = np.cumsum(lens)
    return np.repeat(starts - (ends - lens), lens) + np.arange(int(ends[-1]) if ends.shape[0] else 0)


def gather_segments(flat: np.ndarray, start: np.ndarray, lens: np.ndarray, order: np.ndarray,
                    chunk: int = 1 << 22) -> np.ndarray:
    """The segments ``flat[start[k]:start[k] + lens[k]]`` for ``k`` in ``order``, concatenated (in chunks of
    about ``chunk`` elements: bounded index temporaries)."""
    start, lens, order = (np.asarray(a, np.int64) for a in (start, lens, order))
    ls = lens[order]
    out = np.empty(int(ls.sum()), flat.dtype)
    new = np.zeros(order.shape[0] + 1, np.int64)
    np.cumsum(ls, out=new[1:])
    a = 0
    while a < order.shape[0]:
        z = max(a + 1, int(np.searchsorted(new, new[a] + chunk, side="right")) - 1)
        z = min(z, order.shape[0])
        o = order[a:z]
        idx = np.repeat(start[o] - new[a:z], ls[a:z]) + np.arange(new[a], new[z])
        out[new[a]:new[z]] = flat[idx]
        a = z
    return out


def merge_geom(t: Tile) -> tuple:
    """The KGEOM of one partial sum read by a tile's merge core: the identity over the tile's ``(tc, th, tw)``
    outputs (a depthwise 1 x 1 kernel of ones; one such block per partial core)."""
    g = dict(tc=t.tc, th=t.th, tw=t.tw, kc=1, kh=1, kw=1, pc=t.tc, ph=t.th, pw=t.tw, sh=1, sw=1, dh=1, dw=1, co_g=1,
             ci_g=1, oc0=0, kc0=0, pc0=0)
    return tuple(g[k] for k in KGEOM)


def _axons_per_channel(b: Block, th, tw):
    """Axons per input channel of a ``th x tw`` tile's patch inside the input (an upper bound: tiles at the border
    hold fewer); ``th``, ``tw`` numbers or arrays."""
    ph, pw = patch_dims(b, th, tw)
    return np.minimum(ph, b.in_shape[1]) * np.minimum(pw, b.in_shape[2])


def _patch_channels(b: Block, tc):
    """Input channels the patch of ``tc`` output channels reads (every channel, or their groups': at most one
    group more when the channels do not start at a group boundary); ``tc`` a number or an array."""
    groups = np.where(b.group == 1, 1, -(-tc // b.co_g) + np.where(tc % b.co_g == 0, 0, 1))
    return np.minimum(groups * b.ci_g, b.in_shape[0])


def _tile_sizes(n: int) -> np.ndarray:
    """The distinct tile sizes along an axis of ``n``: ``ceil(n / k)`` for every count ``k``."""
    return np.unique(-(-n // np.arange(1, n + 1)))


def choose_tiles(blocks, out_shape: tuple[int, int, int], chip: ChipSpec, usage, max_dendrite: bool,
                 unit_usage, w_bits: int) -> tuple[tuple[int, int, int], int] | None:
    """The tile shape ``(tc, th, tw)`` and the axon budget of a partial core (1: no partial cores) that need the
    fewest cores, or None when no tile fits.  ``usage(axons, neurons, kernel_bytes, partial=False)`` is
    the SRAM a full or partial core needs (arrays), ``unit_usage(axons, neurons)`` a merge core's."""
    c = chip.core
    co, OH, OW = out_shape
    tcs, ths, tws = _tile_sizes(co), _tile_sizes(OH), _tile_sizes(OW)
    tc, th, tw = (a.reshape(-1) for a in np.meshgrid(tcs, ths, tws, indexing="ij"))
    n = tc * th * tw
    keep = n <= c.neurons
    tc, th, tw, n = tc[keep], th[keep], tw[keep], n[keep]
    # per block: channels and axons per channel of an interior tile's patch (upper bounds of every tile's)
    per_block = [(_patch_channels(b, tc), _axons_per_channel(b, th, tw)) for b in blocks]
    ax = sum(pc * a for pc, a in per_block)
    kent = sum(tc * ((((b.ci_g if b.group == 1 else np.minimum(b.ci_g, pc)) * int(np.prod(b.W.shape[2:])) * w_bits)
                      + 7) // 8) for b, (pc, _) in zip(blocks, per_block))  # its kernels' bytes
    cores = (-(-co // tc)) * (-(-OH // th)) * (-(-OW // tw))
    ok = (ax <= c.axons) & (usage(ax, n, kent) <= c.memory_bytes)
    if ok.any():
        i = np.flatnonzero(ok)
        j = i[np.lexsort((ax[i], cores[i]))[0]]
        return (int(tc[j]), int(th[j]), int(tw[j])), 1  # (budget 1: no partial cores)
    if max_dendrite:
        return None  # (a max cannot be split into partial sums)
    # partial cores: the tile's input channels (of every block, in order) packed into chunks of at most ``budget``
    # axons; a merge core per tile adds the chunks' partial sums
    tot = sum(pc * a for pc, a in per_block)
    amax = np.maximum.reduce([a for _, a in per_block])
    # kernel bytes per axon (the worst block)
    ratio = np.maximum.reduce([np.minimum(tc, b.co_g if b.group > 1 else tc) * ((int(np.prod(b.W.shape[2:])) * w_bits + 7)
                                                                            // 8) / a
                               for b, (_, a) in zip(blocks, per_block)])
    best = None
    for frac in (1.0, 0.75, 0.5, 0.375, 0.25, 0.125):
        budget = max(1, int(c.axons * frac))
        # chunks: at most the bound of greedy packing, and at most the blocks packed one by one
        k = -(-tot // np.maximum(budget - amax + 1, 1))
        k = np.minimum(k, sum(-(-pc // np.maximum(budget // a, 1)) for pc, a in per_block))
        good = ((amax <= budget) & (k >= 2) & (usage(budget, n, np.ceil(ratio * budget).astype(np.int64) + tc,
                                                      partial=True) <= c.memory_bytes)
                & (k * n <= c.axons) & (unit_usage(k * n, n) <= c.memory_bytes))
        if not good.any():
            continue
        i = np.flatnonzero(good)
        cost = cores[i] * (k[i] + 1)
        j = i[np.argmin(cost)]
        if best is None or cost.min() < best[0]:
            best = (int(cost.min()), (int(tc[j]), int(th[j]), int(tw[j])), budget)
    return None if best is None else (best[1], best[2])


def _pack(blocks, chans, th: int, tw: int, budget: int) -> list[tuple[tuple[int, int], ...]]:
    """The input channels ``chans`` (per block ``(first, count)``) packed in order into chunks of at most
    ``budget`` patch axons; each chunk as per block ``(first, count)`` (count 0: none of that block)."""
    chunks: list[list[tuple[int, int]]] = []
    cur = [(0, 0)] * len(blocks)
    used = 0
    for bi, (b, (c0, cn)) in enumerate(zip(blocks, chans)):
        a = int(_axons_per_channel(b, th, tw))
        ch = c0
        while ch < c0 + cn:
            take = min(c0 + cn - ch, (budget - used) // a)
            if take <= 0:
                chunks.append(cur)
                cur, used = [(0, 0)] * len(blocks), 0
                continue
            first, count = cur[bi]
            cur = list(cur)
            cur[bi] = (ch, take) if count == 0 else (first, count + take)
            used += take * a
            ch += take
    if used:
        chunks.append(cur)
    return [tuple(ck) for ck in chunks]


def tiles_of(blocks, out_shape, shape: tuple[int, int, int], budget: int) -> list[list[Tile]]:
    """Every tile of the output (``shape`` = ``(tc, th, tw)``, edge tiles clipped), each as one tile reading every
    input channel its outputs read (``budget == 1``) or as its chunks of at most ``budget`` patch axons (partial
    cores)."""
    co, OH, OW = out_shape
    tc, th, tw = shape
    out = []
    chunks: dict[tuple, list] = {}
    for oc0 in range(0, co, tc):
        ntc = min(tc, co - oc0)
        chans = [_group_channels(b, oc0, ntc) for b in blocks]
        for y0 in range(0, OH, th):
            for x0 in range(0, OW, tw):
                nth, ntw = min(th, OH - y0), min(tw, OW - x0)
                if budget == 1:
                    out.append([Tile(oc0, ntc, y0, nth, x0, ntw, tuple(chans))])
                    continue
                # tiles of one size and channels are cut into the same chunks: equal kernel slices, stored once in
                # the core map (at most four sizes: inside, right and bottom edge, corner)
                key = (oc0, nth, ntw)
                if key not in chunks:
                    bud = budget
                    if (nth, ntw) != (th, tw):  # an edge tile's patch has fewer axons per channel: as many channels
                        # per chunk as an inside tile's, no more (choose_tiles sized the partial cores' kernels for
                        # those), so its budget shrinks with its axons per channel
                        a_in = [_axons_per_channel(b, th, tw) for b in blocks]
                        a_edge = [_axons_per_channel(b, nth, ntw) for b in blocks]
                        bud = max(int(budget * min(e / i for e, i in zip(a_edge, a_in))), int(max(a_edge)), 1)
                    packs = _pack(blocks, chans, nth, ntw, bud)
                    if len(packs) == 1 and sum(n for _, n in chans) > 1:  # (partial cores were asked for: two)
                        packs = _pack(blocks, chans, nth, ntw, max(1, -(-sum(
                            n * min(patch_dims(b, nth, ntw)[0], b.in_shape[1]) *
                            min(patch_dims(b, nth, ntw)[1], b.in_shape[2]) for b, (_, n) in zip(blocks, chans)) // 2)))
                    chunks[key] = packs
                packs = chunks[key]
                out.append([Tile(oc0, ntc, y0, nth, x0, ntw, pk) for pk in packs])
    return out
