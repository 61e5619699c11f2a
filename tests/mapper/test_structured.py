"""Structured lowering (mapper/structured.py): layers kept as grouped convolutions, cut into tiles whose cores
store shared kernels (core-map format 3, ``kblocks``).  Hand-derived expansions and SRAM sizes; tiled and
neuron-by-neuron mappings emulate to identical outputs, split or not, on both backends."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import nmc
from nmc.chip import load_chip
from nmc.corefile import load as load_coremap
from nmc.corefile import save as save_coremap
from nmc.coremap import KGEOM, check_coremap, kblock_bytes, kblock_taps
from nmc.errors import CoreMapError
from nmc.frontend import load_onnx
from nmc.frontend.builder import ModelBuilder
from nmc.mapper.lower import lower
from nmc.mapper.structured import Block, Tile, blocks_coo, tile_geoms, tile_patch
from nmc.resources import core_usages


def _geom(**kw) -> np.ndarray:
    return np.array([kw[k] for k in KGEOM], np.int32)


def test_kernel_block_expands_to_the_hand_derived_dense_block():
    # one output channel, 2 x 2 kernel [[1, 2], [3, 4]] over a 3 x 3 patch (axons 0..8 row-major), tile 2 x 2:
    # neuron slot (ty, tx) reads axon (ty + ky) * 3 + (tx + kx) with weight K[ky, kx]
    data = np.array([1, 2, 3, 4], np.int8)
    g = _geom(tc=1, th=2, tw=2, kc=1, kh=2, kw=2, pc=1, ph=3, pw=3, sh=1, sw=1, dh=1, dw=1, co_g=1, ci_g=1, oc0=0,
              kc0=0, pc0=0)
    a, slot, v = kblock_taps(g, data, 0, np.arange(9, dtype=np.int32))
    W = np.zeros((9, 4), np.int64)
    np.add.at(W, (a, slot), v)
    want = np.zeros((9, 4), np.int64)
    for s, base in enumerate((0, 1, 3, 4)):  # slot -> top-left axon of its window
        for w, off in zip((1, 2, 3, 4), (0, 1, 3, 4)):
            want[base + off, s] = w
    np.testing.assert_array_equal(W, want)
    # a patch element the core does not hold (-1) drops its taps; a stride of 2 on a 3 x 3 patch, tile 1 x 1
    ax = np.arange(9, dtype=np.int32)
    ax[4] = -1
    a, slot, v = kblock_taps(g, data, 0, ax)
    assert sorted(zip(a.tolist(), slot.tolist())) == sorted((i, j) for i, j in zip(*np.nonzero(want)) if i != 4)


def test_grouped_kernel_block_reads_only_its_groups_channels():
    # depthwise: 2 output channels over 2 input channels (co_g = ci_g = 1), 1 x 1 kernels [5] and [7], tile 1 x 1:
    # channel 0 reads axon 0 (patch channel 0), channel 1 axon 1
    data = np.array([5, 7], np.int8)
    g = _geom(tc=2, th=1, tw=1, kc=1, kh=1, kw=1, pc=2, ph=1, pw=1, sh=1, sw=1, dh=1, dw=1, co_g=1, ci_g=1, oc0=0,
              kc0=0, pc0=0)
    a, slot, v = kblock_taps(g, data, 0, np.array([0, 1], np.int32))
    assert sorted(zip(a.tolist(), slot.tolist(), v.tolist())) == [(0, 0, 5), (1, 1, 7)]
    # SRAM: each output channel's kernel slice rounded up to bytes: 2 x ceil(1 x 2 / 8) = 2 bytes at 2 bits,
    # a 3 x 3 x 5-channel kernel of 4 channels at 8 bits: 4 x 45 = 180 bytes
    assert kblock_bytes(g, 2).tolist() == [2]
    g2 = _geom(tc=4, th=1, tw=1, kc=5, kh=3, kw=3, pc=5, ph=3, pw=3, sh=1, sw=1, dh=1, dw=1, co_g=4, ci_g=5, oc0=0,
               kc0=0, pc0=0)
    assert kblock_bytes(g2, 8).tolist() == [180] and kblock_bytes(g2, 2).tolist() == [4 * 12]


def test_tile_patch_and_geometry_by_hand():
    # a 3 x 3 convolution, stride 1, padding 1, over (2, 4, 4): tile of output rows 0-1, columns 2-3 of channels
    # 0-2 reads input rows -1..2 (row -1 is padding) and columns 1..4 (column 4 is padding)
    b = Block(np.ones((3, 2, 3, 3)), (2, 4, 4), pads=(1, 1, 1, 1))
    t = Tile(oc0=0, tc=3, y0=0, th=2, x0=2, tw=2, chunks=((0, 2),))
    cols, (pc0, pc, ph, pw) = tile_patch(b, t, 0)
    assert (pc0, pc, ph, pw) == (0, 2, 4, 4)
    grid = cols.reshape(2, 4, 4)
    assert (grid[:, 0, :] == -1).all() and (grid[:, :, 3] == -1).all()
    assert grid[1, 1, 0] == 16 + 0 * 4 + 1  # channel 1, input row 0, input column 1
    (bi, gm), = tile_geoms([b], t)
    G = dict(zip(KGEOM, gm))
    assert (G["tc"], G["kc"], G["pc"], G["ph"], G["pw"], G["oc0"], G["kc0"]) == (3, 2, 2, 4, 4, 0, 0)
    assert t.neurons(4, 4).tolist()[:4] == [2, 3, 6, 7]  # channel 0: (0, 2), (0, 3), (1, 2), (1, 3)


def test_blocks_unfold_to_the_convolution():
    rng = np.random.default_rng(0)
    W = rng.integers(-3, 4, size=(4, 2, 3, 3)).astype(float)
    x = rng.integers(-5, 6, size=(4, 5, 6)).astype(float)
    b = Block(W, (4, 5, 6), strides=(2, 1), pads=(1, 0, 1, 2), dilations=(1, 2), group=2)
    r, c, (v,) = blocks_coo([b])
    y = np.zeros(4 * 3 * 4)  # (OH, OW) = ((5 + 2 - 3) // 2 + 1, (6 + 2 - 5) // 1 + 1) = (3, 4)
    np.add.at(y, r, v * x.reshape(-1)[c])
    # direct convolution, by hand loops
    want = np.zeros((4, 3, 4))
    xp = np.pad(x, ((0, 0), (1, 1), (0, 2)))
    for oc in range(4):
        g = oc // 2
        for oy in range(3):
            for ox in range(4):
                for k in range(2):
                    for ky in range(3):
                        for kx in range(3):
                            want[oc, oy, ox] += W[oc, k, ky, kx] * xp[g * 2 + k, oy * 2 + ky, ox + kx * 2]
    np.testing.assert_array_equal(y.reshape(4, 3, 4), want)


def _cnn(seed=0, group=1, spiking=False, size=10):
    rng = np.random.default_rng(seed)
    b = ModelBuilder("cnn", num_steps=3 if spiking else 1)
    x = b.input("x", (4, size, size), kind="step" if spiking else "static")
    h = b.relu(b.conv(x, rng.normal(size=(8, 4 // group, 3, 3)), rng.normal(size=8), pads=(1, 1, 1, 1), group=group))
    h2 = b.relu(b.conv(h, rng.normal(size=(8, 8, 3, 3)), None, pads=(1, 1, 1, 1)))
    h = b.relu(b.add(h, b.conv(h2, rng.normal(size=(8, 8, 1, 1)), None)))  # a residual sum of two blocks
    h = b.conv(h, rng.normal(size=(16, 8, 3, 3)) * 0.2, None, strides=(2, 2))
    if spiking:
        h, _ = b.lif(h, "lif", beta=0.9, threshold=2.0)
    else:
        h = b.relu(h)
    h = b.maxpool(h, (2, 2))
    h = b.flatten(h)
    side = ((size - 3) // 2 + 1) // 2
    b.output(b.gemm(h, rng.normal(size=(10, 16 * side * side)) * 0.3, None))
    return b.build()


CASES = [
    dict(group=1, overrides=None),  # no split
    dict(group=2, overrides=None),  # grouped convolution
    dict(group=1, overrides={"core.axons": 64, "core.neurons": 64}),  # 3x3x8 = 72 inputs: partial + merge cores
    dict(group=4, overrides={"core.axons": 16, "core.neurons": 64}, size=6),  # the residual sum of two blocks split
    dict(group=1, overrides=None, spiking=True),  # LIF soma on a convolution
]


@pytest.mark.parametrize("case", CASES, ids=["plain", "grouped", "split", "split-sum", "lif"])
def test_tiled_mapping_emulates_exactly_like_the_unfolded_one(case):
    size = case.get("size", 10)
    g = _cnn(group=case["group"], spiking=case.get("spiking", False), size=size)
    rng = np.random.default_rng(1)
    if case.get("spiking"):
        X = (rng.random((3, 6, 4, size, size)) < 0.3).astype(float)
        feed, calib = {"x": X[:, :2]}, {"x": X}
    else:
        X = rng.uniform(0, 1, size=(16, 4, size, size))
        feed, calib = {"x": X[:3]}, {"x": X}
    runs = {}
    for tiles in ("off", "on"):
        cm = nmc.compile(g, "tianjicx", calib=calib, tiles=tiles, lint=True, overrides=case["overrides"],
                         chips="auto")
        assert (cm.cores.w_fmt == 1).any() == (tiles == "on")
        for be in ("numba", "reference"):
            runs[(tiles, be)] = nmc.emulate(cm, feed, backend=be)
    ref = runs[("off", "reference")]
    for key, r in runs.items():
        for o in ref.outputs:
            np.testing.assert_array_equal(np.asarray(r.outputs[o]), np.asarray(ref.outputs[o]), err_msg=str(key))
    # event counts of the two backends agree on the tiled map too
    np.testing.assert_array_equal(runs[("on", "numba")].result.events, runs[("on", "reference")].result.events)


def test_tiled_cores_store_each_kernel_once_and_count_it_in_sram(tmp_path):
    g = _cnn()
    X = np.random.default_rng(1).uniform(0, 1, size=(8, 4, 10, 10))
    cm = nmc.compile(g, "tianjicx", calib={"x": X}, tiles="on")
    check_coremap(cm)
    kb = cm.kblocks
    # SRAM of a tiled core: its kernels (per output channel rounded to bytes), not a dense block
    us = core_usages(cm)
    for c in np.flatnonzero(cm.cores.w_fmt == 1)[:5]:
        sel = kb.core == c
        want = int(kblock_bytes(kb.geom[sel], int(cm.cores.w_bits[c])).sum())
        assert us[c].weight_bytes == want
    # equal kernel slices are stored once: the kernel pool is no larger than the distinct slices
    size = np.prod(kb.geom[:, [0, 3, 4, 5]].astype(np.int64), axis=1)
    distinct = {(int(o), int(s)) for o, s in zip(kb.w_off, size)}
    assert cm.weights.data.shape[0] - int(cm.cores.w_off[-1]) == sum(s for _, s in distinct)
    # file round trip
    p = tmp_path / "tiled.nmc"
    save_coremap(cm, p)
    back = load_coremap(p)
    for k, v in cm.arrays().items():
        np.testing.assert_array_equal(back.arrays()[k], v, err_msg=k)


def test_corrupt_kernel_blocks_are_refused():
    g = _cnn()
    X = np.random.default_rng(1).uniform(0, 1, size=(8, 4, 10, 10))
    cm = nmc.compile(g, "tianjicx", calib={"x": X}, tiles="on")
    kb = cm.kblocks
    bad_ax = cm.kpatch.ax.copy()
    bad_ax[0] = 10 ** 6
    geom = kb.geom.copy()
    geom[0, KGEOM.index("ph")] = 1  # the patch no longer covers the tile's receptive field
    w_off = kb.w_off.copy()
    w_off[0] = cm.weights.data.shape[0]
    for broken, msg in ((cm.replace(kpatch=dataclasses.replace(cm.kpatch, ax=bad_ax)), "axon outside"),
                        (cm.replace(kblocks=dataclasses.replace(kb, geom=geom)), "receptive field|pc x ph x pw"),
                        (cm.replace(kblocks=dataclasses.replace(kb, w_off=w_off)), "outside the kernels")):
        with pytest.raises(CoreMapError, match=msg):
            check_coremap(broken)


def test_structured_layers_quantise_one_scale_per_output_channel():
    # a 2 x 2 kernel [[0.5, 0.3], [0.2, 4.0]], padding 1, on a 1 x 2 x 2 input of integer range (scale 1): the
    # bottom-right neuron sees only tap (0, 0) = 0.5 (unfolded, its own scale would be 0.5 / 127); every neuron of
    # the channel shares the channel's scale 4.0 / 127, so the kernel is stored once:
    # round([0.5, 0.3, 0.2, 4.0] * 127 / 4) = round([15.875, 9.525, 6.35, 127]) = [16, 10, 6, 127]
    b = ModelBuilder("q")
    x = b.input("x", (1, 2, 2))
    b.output(b.conv(x, np.array([[[[0.5, 0.3], [0.2, 4.0]]]]), None, pads=(1, 1, 1, 1)))
    g = b.build()
    X = np.array([[[[100.0, 0.0], [0.0, -100.0]]]])
    cm = nmc.compile(g, "tianjic", calib={"x": X}, tiles="on")
    q = cm.meta["layers"][0]["quant"]
    assert q["weight_scale_min"] == q["weight_scale_max"] == pytest.approx(4.0 / 127)
    assert cm.weights.data[cm.cores.w_off[-1]:].tolist() == [16, 10, 6, 127]


def test_lowering_keeps_convolutions_structured_without_unfolding():
    # a 64-channel 3 x 3 convolution on 128 x 128 (1.2e8 taps): lowered as one block, nothing unfolded
    b = ModelBuilder("big")
    x = b.input("x", (64, 128, 128))
    b.output(b.relu(b.conv(x, np.ones((32, 64, 3, 3)) * 0.01, None, pads=(1, 1, 1, 1))))
    lg = lower(load_onnx(b.build()))
    (l,) = lg.layers
    assert l.coo is None and len(l.blocks) == 1 and "coo" not in l._cache
    assert l.synapse_count() == 32 * 128 * 128 * 64 * 9


def test_the_emulator_reads_shared_kernels_without_dense_blocks_and_expands_only_overlapping_ones(monkeypatch):
    """The Numba kernel computes a shared-kernel core from its kernels (no dense block in memory).  A core whose
    blocks read the same axons (two kernels on one tensor whose taps fall on one weight: not what nmc compile
    writes, which gives each block its own axons, but a valid map) is expanded to its dense block instead, as the
    reference does.  Both agree with the reference and with the kernel fed every core as a dense block."""
    import dataclasses
    from nmc.emulator import kernels
    rng = np.random.default_rng(3)
    b = ModelBuilder("two_kernels", num_steps=1)
    x = b.input("x", (4, 6, 6))
    h = b.relu(b.conv(x, rng.normal(size=(8, 4, 3, 3)), rng.normal(size=8), pads=(1, 1, 1, 1)))
    h = b.add(b.conv(h, rng.normal(size=(8, 8, 3, 3)) * 0.2, None, pads=(1, 1, 1, 1)),
              b.conv(h, rng.normal(size=(8, 8, 1, 1)) * 0.2, None))  # core 1: a 3x3 and a 1x1 block on h
    b.output(b.gemm(b.flatten(b.maxpool(h, (2, 2))), rng.normal(size=(5, 72)) * 0.3, None))
    X = rng.uniform(0, 1, size=(8, 4, 6, 6))
    cm = nmc.compile(b.build(), "tianjicx", calib={"x": X}, tiles="on")
    kb = cm.kblocks
    assert kernels.shared_kernel_cores(cm).tolist() == [True] * 4  # (nmc compile: every block its own axons)
    k3, k1 = np.flatnonzero(kb.core == 1)
    assert kb.geom[k3, 4] == 3 and kb.geom[k1, 4] == 1
    # point the 1x1 block's patch (8 x 6 x 6) at the 3x3 block's axons (its padded patch is 8 x 8 x 8) and keep
    # the sums of two taps within int8
    ax = cm.kpatch.ax.copy()
    ax[kb.ax_off[k1]:kb.ax_off[k1 + 1]] = ax[kb.ax_off[k3]:kb.ax_off[k3 + 1]].reshape(8, 8, 8)[:, 1:7, 1:7].reshape(-1)
    w = cm.weights.data.copy()
    w[kb.w_off[k3]:kb.w_off[k3] + 8 * 8 * 9] = np.clip(w[kb.w_off[k3]:kb.w_off[k3] + 8 * 8 * 9], -100, 100)
    w[kb.w_off[k1]:kb.w_off[k1] + 8 * 8] = rng.integers(-20, 21, size=64)
    cm = dataclasses.replace(cm, kpatch=dataclasses.replace(cm.kpatch, ax=ax),
                             weights=dataclasses.replace(cm.weights, data=w))
    native = kernels.shared_kernel_cores(cm)
    assert native.tolist() == [True, False, True, True]
    data, w_off, _ = kernels._weights(cm)
    assert data.shape[0] == w.shape[0] + cm.n_axons(1) * cm.n_neurons(1) and w_off[1] == w.shape[0]
    feed = {"x": X[:3]}
    ref = nmc.emulate(cm, feed, backend="reference")
    got = nmc.emulate(cm, feed, backend="numba")
    monkeypatch.setattr(kernels, "shared_kernel_cores", lambda m: np.zeros(m.num_cores, bool))  # all dense
    dense = nmc.emulate(cm, feed, backend="numba")
    for r in (got, dense):
        for o in ref.outputs:
            np.testing.assert_array_equal(np.asarray(r.outputs[o]), np.asarray(ref.outputs[o]))
        np.testing.assert_array_equal(r.result.events, ref.result.events)
        np.testing.assert_array_equal(r.result.core_cycles, ref.result.core_cycles)


def test_a_wide_max_pooling_whose_gathered_windows_overlap_compiles_and_emulates():
    """A 1 x 20 max pooling of stride 4 on 16-axon cores: nmc.ir.split_wide_maxpools gathers each window as rows of
    10 elements (a view), and overlapping windows read one input element at several patch positions, so a tile's
    patch names one axon twice.  Such a map was refused by its own core-map check; the taps add up (max: the
    same value), both backends agree, and every output is the window's maximum (within the input's 8-bit step)."""
    from nmc.coremap import kblock_overlap_cores
    b = ModelBuilder("wide_pool", num_steps=1)
    x = b.input("x", (2, 1, 60))
    b.output(b.maxpool(x, (1, 20), strides=(1, 4), pads=(0, 2, 0, 2)))
    X = np.random.default_rng(0).uniform(0, 1, size=(4, 2, 1, 60))
    cm = nmc.compile(b.build(), "tianjicx", calib={"x": X}, tiles="on", overrides={"core.axons": 16})
    assert kblock_overlap_cores(cm).any()
    ref = nmc.emulate(cm, {"x": X[:2]}, backend="reference")
    got = nmc.emulate(cm, {"x": X[:2]})
    (name, y), = got.outputs.items()
    np.testing.assert_array_equal(np.asarray(y), np.asarray(ref.outputs[name]))
    np.testing.assert_array_equal(got.result.events, ref.result.events)
    xp = np.pad(X[:2], ((0, 0), (0, 0), (0, 0), (2, 2)), constant_values=-np.inf)
    want = np.stack([xp[..., 4 * o:4 * o + 20].max(axis=-1) for o in range(12)], axis=-1)  # (60 + 4 - 20) / 4 + 1
    np.testing.assert_allclose(np.asarray(y).reshape(want.shape), want, atol=1 / 255 + 1e-9)


def test_edge_tiles_hold_no_more_input_channels_per_partial_core_than_inside_tiles():
    """Inception v2's 3x3 stride-2 convolution 128 -> 192 channels over 15 x 15 (out 7 x 7) on tianjicx: tiles of
    192 channels x 1 x 2 outputs, cut by input channels.  By hand: an inside tile's patch is 3 x 5 = 15 axons per
    channel, so 1,024 axons take 68 channels and a kernel slice of 192 x 68 x 9 = 117,504 B (under 147,456 B); the
    last column's tiles are 1 x 1 (3 x 3 = 9 axons per channel), which packed 113 channels (1,017 axons) and a
    195,264-B kernel, refused by the memory rule.  Edge tiles now take at most an inside tile's 68 channels."""
    from nmc.resources import core_usages
    rng = np.random.default_rng(0)
    b = ModelBuilder("edge_tiles", num_steps=1)
    x = b.input("x", (128, 15, 15))
    b.output(b.relu(b.conv(x, rng.normal(size=(192, 128, 3, 3)) * 0.05, None, strides=(2, 2), name="conv")))
    X = rng.uniform(0, 1, size=(2, 128, 15, 15))
    cm = nmc.compile(b.build(), "tianjicx", calib={"x": X}, tiles="on")
    kb = cm.kblocks
    part = kb.geom[:, 0] == 192  # (the merge cores' identity blocks have kc 1)
    assert kb.geom[part, 3].max() == 68 and set(kb.geom[part, 2].tolist()) == {1, 2}
    assert max(u.total for u in core_usages(cm)) <= 147456
    ref = nmc.emulate(cm, {"x": X[:1]}, backend="reference")
    got = nmc.emulate(cm, {"x": X[:1]})
    for o in ref.outputs:
        np.testing.assert_array_equal(np.asarray(got.outputs[o]), np.asarray(ref.outputs[o]))
