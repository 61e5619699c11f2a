"""The batched helpers of emission and partitioning (tiles of a layer at once) against hand-derived values and
against their one-tile counterparts."""
from __future__ import annotations

import numpy as np

from nmc.coremap import KGEOM
from nmc.mapper.emit import _first_order
from nmc.mapper.structured import concat_ranges
from nmc.mapper.structured import Block, Tile, gather_segments, tile_geom_rows, tile_geoms, tile_patch, tile_patches


def test_tile_patches_by_hand_with_padded_edge_tiles():
    # a 3 x 3 convolution, stride 1, padding 1, over (1, 3, 3) (input elements 0..8, columns 10..18)
    b = Block(np.ones((1, 1, 3, 3)), (1, 3, 3), pads=(1, 1, 1, 1), col0=10)
    # tiles (y0, x0, th, tw): top-left output (0, 0); the middle output (1, 1); the 2 x 2 outputs from (1, 1)
    cols, off = tile_patches(b, y0=[0, 1, 1], x0=[0, 1, 1], th=[1, 1, 2], tw=[1, 1, 2], pc0=[0, 0, 0], pc=[1, 1, 1])
    assert off.tolist() == [0, 9, 18, 34]
    # input rows -1..1, columns -1..1: the first row and column are padding
    assert cols[0:9].tolist() == [-1, -1, -1, -1, 10, 11, -1, 13, 14]
    # rows 0..2, columns 0..2: the whole input
    assert cols[9:18].tolist() == list(range(10, 19))
    # rows 0..3, columns 0..3: row 3 and column 3 are padding
    assert cols[18:34].tolist() == [10, 11, 12, -1, 13, 14, 15, -1, 16, 17, 18, -1, -1, -1, -1, -1]


def test_tile_patches_of_a_channel_chunk_through_a_column_map():
    # 1 x 1 kernel, stride 2, over (3, 2, 2) whose elements map to columns 100 - e (element 5: a zero, -1)
    cm = 100 - np.arange(12)
    cm[5] = -1
    b = Block(np.ones((2, 3, 1, 1)), (3, 2, 2), strides=(2, 2), colmap=cm)
    # output (1, 1): rows 0, columns 0; channels 1..2 (a partial core's chunk): elements 4, 8
    cols, off = tile_patches(b, [0], [0], [1], [1], [1], [2])
    assert off.tolist() == [0, 2] and cols.tolist() == [96, 92]
    cols, off = tile_patches(b, [0], [0], [1], [1], [0], [2])  # channels 0..1: elements 0, 4
    assert cols.tolist() == [100, 96]
    b2 = Block(np.ones((2, 3, 2, 2)), (3, 2, 2), colmap=cm)  # 2 x 2 kernel, channel 1: elements 4..7, one a zero
    cols, _ = tile_patches(b2, [0], [0], [1], [1], [1], [1])
    assert cols.tolist() == [96, -1, 94, 93]


def test_tile_patches_and_geom_rows_equal_the_one_tile_functions():
    rng = np.random.default_rng(3)
    b = Block(np.ones((6, 2, 3, 2)), (6, 9, 8), strides=(2, 1), pads=(1, 0, 2, 1), dilations=(1, 2), group=3,
              col0=5)
    OH, OW = 5, 6
    tiles = []
    for _ in range(40):
        th, tw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        y0, x0 = int(rng.integers(0, OH - th + 1)), int(rng.integers(0, OW - tw + 1))
        oc0 = int(rng.integers(0, 6))
        tc = int(rng.integers(1, 7 - oc0))
        pc0 = int(rng.integers(0, 6))
        pc = int(rng.integers(1, 7 - pc0))
        tiles.append(Tile(oc0, tc, y0, th, x0, tw, ((pc0, pc),)))
    a = {k: np.array([getattr(t, k) for t in tiles]) for k in ("oc0", "tc", "y0", "th", "x0", "tw")}
    pc0 = np.array([t.chunks[0][0] for t in tiles])
    pc = np.array([t.chunks[0][1] for t in tiles])
    cols, off = tile_patches(b, a["y0"], a["x0"], a["th"], a["tw"], pc0, pc)
    rows = tile_geom_rows(b, a["oc0"], a["tc"], a["th"], a["tw"], pc0, pc)
    for i, t in enumerate(tiles):
        assert cols[off[i]:off[i + 1]].tolist() == tile_patch(b, t, 0)[0].tolist()
        (_, gm), = tile_geoms([b], t)
        assert rows[i].tolist() == list(gm)


def test_tile_geom_rows_by_hand_for_a_grouped_convolution():
    # 2 groups of 2 output and 2 input channels; a 3 x 3 kernel, stride 1, over (4, 5, 5)
    b = Block(np.ones((4, 2, 3, 3)), (4, 5, 5), group=2)
    # (oc0, tc, th, tw, pc0, pc): group 0's channels; channels 1-2 (both groups: every kernel channel); channels
    # 2-3 reading only input channel 3 (a partial core's chunk: kernel channel 1 of group 1)
    rows = tile_geom_rows(b, [0, 1, 2], [2, 2, 2], [1, 2, 3], [1, 1, 2], [0, 0, 3], [2, 4, 1])
    G = {k: rows[:, j].tolist() for j, k in enumerate(KGEOM)}
    assert G["kc0"] == [0, 0, 1] and G["kc"] == [2, 2, 1]
    assert G["ph"] == [3, 4, 5] and G["pw"] == [3, 3, 4]
    assert G["co_g"] == [2, 2, 2] and G["ci_g"] == [2, 2, 2] and G["pc0"] == [0, 0, 3] and G["pc"] == [2, 4, 1]


def test_gather_segments_by_hand():
    flat = np.arange(10) * 10
    for chunk in (1, 2, 3, 100):
        got = gather_segments(flat, np.array([0, 3, 7]), np.array([3, 4, 3]), np.array([2, 0, 1]), chunk=chunk)
        assert got.tolist() == [70, 80, 90, 0, 10, 20, 30, 40, 50, 60]
    assert gather_segments(flat, np.array([5, 0]), np.array([0, 2]), np.array([0, 1])).tolist() == [0, 10]


def test_ranges_and_first_order_by_hand():
    assert concat_ranges(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist() == [5, 6, 9, 10, 11]
    assert concat_ranges(np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []
    keys = np.array([[3, 1], [0, 2], [3, 1], [1, 1], [0, 2]])
    u, first, inv = _first_order(keys)
    assert u.tolist() == [[3, 1], [0, 2], [1, 1]] and first.tolist() == [0, 1, 3] and inv.tolist() == [0, 1, 0, 2, 1]


def test_core_usage_table_is_core_usage_of_every_core():
    import nmc
    from nmc.coremap import in_bytes, kblock_bytes
    from nmc.frontend.builder import ModelBuilder
    from nmc.neurons import by_code
    from nmc.resources import core_usage, core_usage_table, core_usages
    rng = np.random.default_rng(0)
    b = ModelBuilder("t", num_steps=4)
    x = b.input("image", (3, 12, 12))
    h = b.relu(b.conv(x, rng.normal(size=(8, 3, 3, 3)) * 0.2, pads=(1, 1, 1, 1), name="conv1"))
    b.output(b.gemm(b.flatten(h), rng.normal(size=(10, 8 * 144)) * 0.05, name="fc"))
    model, calib = b.build(), {"image": rng.random((2, 3, 12, 12))}
    for tiles in ("on", "off"):  # shared kernels, dense blocks
        cm = nmc.compile(model, chip="tianjic", chips="auto", calib=calib, tiles=tiles)
        assert (cm.cores.w_fmt == 1).all() if tiles == "on" else (cm.cores.w_fmt == 0).all()
        c = cm.cores
        nn, na, ib, ents = np.diff(c.neuron_off), np.diff(c.axon_off), in_bytes(cm), np.diff(cm.router.off)
        tab = core_usage_table(cm)
        us = core_usages(cm)
        for i in range(cm.num_cores):
            m = by_code(int(c.model[i]))
            sel = cm.kblocks.core == i
            kb = int(kblock_bytes(cm.kblocks.geom[sel], int(c.w_bits[i])).sum()) if c.w_fmt[i] else None
            u = core_usage(cm.chip, int(na[i]), int(nn[i]), int(c.w_bits[i]), m.name, int(ib[i]),
                           has_bias=m.name != "partial", router_entries=int(ents[i]), kernel_bytes=kb)
            assert us[i] == u
            assert [int(tab[k][i]) for k in ("weight_bytes", "neuron_bytes", "axon_bytes", "router_bytes",
                                             "table_bytes", "total")] == [u.weight_bytes, u.neuron_bytes, u.axon_bytes,
                                                                         u.router_bytes, u.table_bytes, u.total]


def test_tile_columns_by_hand_drop_padding_and_make_out_of_order_blocks_unique():
    from nmc.mapper.partition import _tile_columns
    # block 0: 3 x 3 kernel, padding 1, over (1, 3, 3), columns 10..18; block 1: 1 x 1 kernel over (1, 3, 3) whose
    # elements are columns 0..8 (before block 0's: the tile's columns are not ascending, so made unique)
    b0 = Block(np.ones((1, 1, 3, 3)), (1, 3, 3), pads=(1, 1, 1, 1), col0=10)
    b1 = Block(np.ones((1, 1, 1, 1)), (1, 3, 3), col0=0)
    t_corner = Tile(0, 1, 0, 1, 0, 1, ((0, 1), (0, 0)))  # block 0 only: rows -1..1, columns -1..1 (padding dropped)
    t_both = Tile(0, 1, 2, 1, 2, 1, ((0, 1), (0, 1)))  # output (2, 2): block 0 rows 1..3, columns 1..3; block 1: (2, 2)
    t_one = Tile(0, 1, 1, 1, 0, 1, ((0, 0), (0, 1)))  # block 1 only: element (1, 0)
    cols, off = _tile_columns([b0, b1], [t_corner, t_both, t_one])
    got = [cols[off[i]:off[i + 1]] for i in range(3)] if isinstance(off, np.ndarray) else off
    assert got[0].tolist() == [10, 11, 13, 14]
    assert got[1].tolist() == [8, 14, 15, 17, 18]  # block 0's 14, 15, 17, 18 then block 1's 8: sorted
    assert got[2].tolist() == [3]
    # in order: one array and offsets, int32 when asked
    cols, off = _tile_columns([b0], [Tile(0, 1, 0, 1, 0, 1, ((0, 1),)), Tile(0, 1, 1, 1, 1, 1, ((0, 1),))], np.int32)
    assert cols.dtype == np.int32 and off.tolist() == [0, 4, 13] and cols[4:].tolist() == list(range(10, 19))


def test_piece_kernel_slices_are_those_of_the_tile_wherever_it_is():
    from nmc.mapper.partition import Piece, _kernel_slices, piece_kernel_slices

    class L:  # (the layer fields piece_kernel_slices reads)
        blocks = [Block(np.ones((4, 2, 3, 3)), (4, 6, 6), group=2), Block(np.ones((4, 1, 1, 1)), (4, 6, 6), group=4)]
    for y0, x0 in ((0, 0), (2, 3), (0, 0)):
        for chunks in (((0, 4), (0, 4)), ((2, 2), (0, 0))):
            p = Piece(layer=3, kind="full", neurons=np.arange(4), cols=np.arange(3),
                      tile=Tile(1, 2, y0, 2, x0, 2, chunks))
            assert piece_kernel_slices(p, L, 8) == _kernel_slices(p, L, 8)
            assert piece_kernel_slices(p, L, 2) == _kernel_slices(p, L, 2)
    # channels 1-2 span both groups of block 0 (every kernel channel: 2), block 1's depthwise kernel 1 channel
    p = Piece(layer=3, kind="full", neurons=np.arange(4), cols=np.arange(3),
              tile=Tile(1, 2, 0, 2, 0, 2, ((0, 4), (0, 4))))
    assert piece_kernel_slices(p, L, 8) == [((3, 0, 1, 2, 0, 2), 2 * 2 * 9), ((3, 1, 1, 2, 0, 1), 2)]
    m = Piece(layer=3, kind="merge", neurons=np.arange(8), cols=np.zeros(0, np.int64), partials=[0, 1, 2],
              tile=Tile(1, 2, 0, 2, 0, 2, ((0, 4), (0, 4))))
    assert piece_kernel_slices(m, L, 1) == [(("eye", 2), 2)] * 3
