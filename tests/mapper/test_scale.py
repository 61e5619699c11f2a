"""Scale: closed-form lower bounds (mapper/bounds.py, nmc check) and the vectorised partitioner and
requantiser against per-neuron references."""
from __future__ import annotations

import time

import numpy as np
import pytest

import nmc
from nmc.chip import load_chip
from nmc.cli import main
from nmc.errors import DoesNotFitError
from nmc.frontend.builder import ModelBuilder
from nmc.mapper.bounds import bounds
from nmc.mapper.partition import Piece, _csr, _partition_layer, layer_in_bytes
from nmc.mapper.quantize import requant_params
from nmc.frontend import load_onnx
from nmc.resources import core_usage, unit_weight_bits
from nmc.rules import owner

from nets import hybrid, lossless_snn, spike_inputs
from test_mapper import run_passes


# ============================================================================ bounds, by hand
def _small():
    """image [1, 5, 5] -> conv 2x1x3x3 (pads 1) + relu -> flatten -> dense 10 x 50."""
    rng = np.random.default_rng(0)
    b = ModelBuilder("small")
    x = b.input("image", (1, 5, 5))
    h = b.relu(b.conv(x, rng.normal(size=(2, 1, 3, 3)) + 5.0, pads=(1, 1, 1, 1), name="conv1"))
    b.output(b.gemm(b.flatten(h), rng.normal(size=(10, 50)) + 5.0, name="fc"))
    return b.build()


SMALL_CHIP = {"core.neurons": 16, "core.axons": 32, "core.memory_bytes": 10 ** 6}


def test_bounds_of_a_small_model_by_hand():
    b = nmc.check(_small(), chip="tianjic", overrides=SMALL_CHIP)
    conv, fc = b.layers
    # conv 3x3, pads 1, on 5x5: the taps inside the input per output row are 2, 3, 3, 3, 2 (13 in all), per
    # column likewise; 2 output channels x 1 input channel x 13 x 13 = 338 synapses, fan-in 9 (interior)
    assert (conv.name, conv.op, conv.neurons, conv.synapses, conv.fan_in) == ("conv1", "conv+relu", 50, 338, 9)
    # 50 neurons, 16 per core: 4 cores; memory (10^6 B) does not bind; one phase
    assert (conv.cores, conv.binding, conv.split, conv.phase_end) == (4, "neurons", False, 1)
    # dense 10 x 50: 500 synapses, fan-in 50 > 32 axons: split, ceil(50 / 32) = 2 partial + 1 merge core, and a
    # merge phase after the conv's: phases 2 and 3
    assert (fc.neurons, fc.synapses, fc.fan_in, fc.split) == (10, 500, 50, True)
    assert (fc.cores, fc.binding, fc.phase_end) == (3, "fan-in", 3)
    assert (b.cores, b.chips_needed, b.phases["static"]) == (7, 1, 3) and b.fits
    # with 2 phases per step it runs in ceil(3 / 2) = 2 rounds; refusing depth, it cannot fit: the table says so,
    # by how much, and which option fixes it
    b1 = nmc.check(_small(), chip="tianjic", overrides={**SMALL_CHIP, "core.phases_per_step": 2})
    assert b1.fits and b1.rounds == {"static": 2, "step": 1, "readout": 1}
    b2 = nmc.check(_small(), chip="tianjic", overrides={**SMALL_CHIP, "core.phases_per_step": 2}, depth="refuse")
    assert not b2.fits and len(b2.problems) == 1
    assert "the static stage needs at least 3 phases, 1 more than core.phases_per_step = 2" in b2.problems[0]
    assert "--set core.phases_per_step=3" in b2.problems[0]
    # on a 2 x 2-core chip the 7 cores need 2 chips
    b3 = nmc.check(_small(), chip="tianjic", chips="1x1", overrides={**SMALL_CHIP, "cores_x": 2, "cores_y": 2})
    assert "the model needs at least 7 cores, 1.8 x the 4 of 1 x 1 chip(s)" in b3.problems[0]
    assert "--chips 2x1" in b3.problems[0]


def _too_big():
    """image [16, 128, 128] -> 8 x (conv 16x16x3x3, pads 1, + relu): 3.0e8 synapses unfolded."""
    b = ModelBuilder("too_big")
    h = b.input("image", (16, 128, 128))
    for i in range(8):
        h = b.relu(b.conv(h, np.full((16, 16, 3, 3), 0.01), pads=(1, 1, 1, 1), name=f"conv{i}"))
    b.output(h)
    return b.build()


def test_a_model_too_big_fails_in_seconds_with_the_table():
    model = _too_big()
    t0 = time.perf_counter()
    with pytest.raises(DoesNotFitError) as ei:
        nmc.compile(model, chip="tianjicx")
    assert time.perf_counter() - t0 < 10
    msg = str(ei.value)
    assert msg.startswith("the model cannot fit (closed-form lower bounds, before mapping)")
    # taps of a 3-wide kernel with pads 1 inside 128 positions: 3 x 128 - 2 = 382 per axis; per layer
    # 16 x 16 x 382^2 = 37,356,544 synapses, 8 layers 298,852,352
    assert "conv0" in msg and "37,356,544" in msg and "298,852,352 synapses" in msg
    # 16 x 128 x 128 = 262,144 neurons per layer, 1024 per tianjicx core: >= 256 cores each, 2,048 in all,
    # 12.8 x the 160 cores of one chip
    assert "the model needs at least 2,048 cores, 12.8 x the 160 of 1 x 1 chip(s) of 'tianjicx'" in msg
    assert "--chips 4x4 (>= 13 chips)" in msg


def test_nmc_check_cli(tmp_path, capsys):
    import onnx
    p = tmp_path / "small.onnx"
    onnx.save(_small(), p)
    assert main(["check", str(p), "--set", "core.neurons=16", "--set", "core.axons=32",
                 "--set", "core.memory_bytes=1000000"]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "fits these bounds" in out and ">= 7 cores" in out
    assert main(["check", str(p), "--set", "core.axons=32", "--set", "core.phases_per_step=2", "--depth", "refuse"]) == 1
    assert "does not fit:" in capsys.readouterr().out


def _actual(cm):
    return {l["name"]: len(l["cores"]) for l in cm.meta["layers"]}


@pytest.mark.parametrize("seed", range(4))
def test_bounds_never_exceed_the_mapping(seed):
    """On random small chips, every layer's cores and every stage's phases bound the real mapping from below,
    and the closed-form synapse counts and largest fan-in equal the unfolded lowering's (an Add's fan-in: at most)."""
    rng = np.random.default_rng(seed)
    over = {"core.neurons": int(rng.integers(4, 40)), "core.axons": int(rng.integers(24, 80)),
            "core.memory_bytes": int(rng.integers(800, 4000)), "core.weight_bits": [[8], [8, 2]][seed % 2]}
    if seed % 2:
        model, calib = lossless_snn(seed=seed, steps=4), {"spikes": spike_inputs(seed, 4, 2, 40)}
    else:
        model = hybrid(seed=seed, steps=4, recurrent=True)
        calib = {"image": rng.integers(0, 17, (3, 1, 8, 8)).astype(float)}
    b = bounds(load_onnx(model), load_chip("tianjic", over), "auto")
    try:
        st = run_passes(model, calib=calib, overrides=over, chips="auto")
    except DoesNotFitError:
        return
    lg, cm = st.lg, st.coremap
    assert [l.name for l in lg.layers] == [l.name for l in b.layers]
    for l, lb in zip(lg.layers, b.layers):
        assert lb.synapses == l.rows.shape[0]
        fan = int(np.bincount(l.rows, minlength=l.n).max())
        assert lb.fan_in == fan if not l.op.startswith("add") else lb.fan_in <= fan  # (module doc: exact but Adds)
        assert _actual(cm)[l.name] >= lb.cores, (l.name, lb)
    for st_name, n in b.phases.items():
        assert cm.meta["phases"][st_name] >= n


# ============================================================================ partitioner == per-neuron reference
# the partitioner before vectorisation (one neuron at a time): the oracle of the vectorised one
def ref_greedy_full(li, l, order, ptr, cols, fits) -> list[Piece]:
    pieces = []
    mark = np.zeros(l.n_cols, bool)
    cur: list[int] = []
    n_ax = 0
    for nrn in order:
        cs = cols[ptr[nrn]:ptr[nrn + 1]]
        new = cs[~mark[cs]]
        new = np.unique(new)
        if cur and not fits(n_ax + new.shape[0], len(cur) + 1):
            pieces.append(ref_full_piece(li, cur, mark))
            mark[:] = False
            cur, n_ax = [], 0
            new = np.unique(cs)
        mark[new] = True
        n_ax += new.shape[0]
        cur.append(int(nrn))
    if cur:
        pieces.append(ref_full_piece(li, cur, mark))
    return pieces


def ref_full_piece(li, cur, mark) -> Piece:
    return Piece(layer=li, kind="full", neurons=np.array(cur, np.int64), cols=np.flatnonzero(mark).astype(np.int64))


def ref_greedy_split(li, l: Layer, order, ptr, cols, chip: ChipSpec, in_b: int, w_bits: int, rr: int = 0) -> list[Piece]:
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


def ref_partition_layer(li, l, w_bits, chip, tq, rr=0):
    c = chip.core
    ptr, cols = _csr(l)
    in_b = layer_in_bytes(l, tq)
    order = l.order if l.order is not None else np.arange(l.n, dtype=np.int64)

    def fits(n_a, n_n):
        return (n_n <= c.neurons and n_a <= c.axons
                and core_usage(chip, n_a, n_n, w_bits, l.soma, in_b, router_entries=rr).total <= c.memory_bytes)

    if all(fits(int(f), 1) for f in np.unique(np.diff(ptr))):
        return ref_greedy_full(li, l, order, ptr, cols, fits)
    return ref_greedy_split(li, l, order, ptr, cols, chip, in_b, w_bits, rr)


@pytest.mark.parametrize("seed", range(8))
def test_vectorised_partition_equals_the_per_neuron_reference(seed):
    rng = np.random.default_rng(100 + seed)
    over = {"core.neurons": int(rng.integers(2, 48)), "core.axons": int(rng.integers(30, 120)),
            "core.memory_bytes": int(rng.integers(300, 5000)), "core.weight_bits": [[8], [8, 2], [8, 2, 1]][seed % 3]}
    if seed % 2:
        model, calib = lossless_snn(seed=seed, steps=4), {"spikes": spike_inputs(seed, 4, 2, 40)}
    else:
        model = hybrid(seed=seed, steps=4, recurrent=True, conv_ch=int(rng.integers(2, 6)))
        calib = {"image": rng.integers(0, 17, (3, 1, 8, 8)).astype(float)}
    st = run_passes(model, calib=calib, overrides=over, upto="quantize")
    q, chip = st.quant, st.chip
    for li, l in enumerate(q.lg.layers):
        for rr in (0, 3):
            try:
                got = _partition_layer(li, l, q.layers[li].w_bits, chip, q.tq, rr)
            except DoesNotFitError as e:
                with pytest.raises(DoesNotFitError) as ref_e:
                    ref_partition_layer(li, l, q.layers[li].w_bits, chip, q.tq, rr)
                assert str(ref_e.value) == str(e)
                continue
            want = ref_partition_layer(li, l, q.layers[li].w_bits, chip, q.tq, rr)
            assert len(got) == len(want)
            for a, b in zip(got, want):
                assert (a.kind, a.partials) == (b.kind, b.partials)
                np.testing.assert_array_equal(a.neurons, b.neurons)
                np.testing.assert_array_equal(a.cols, b.cols)


# ============================================================================ requantiser
def test_requant_hand_values_and_many_distinct_factors_in_linear_time():
    m, s = requant_params(np.array([0.75, 1 / 3, 5.0, 0.0]), 16, "x")
    # 0.75 = 3 / 2^2 exactly; 1/3: the most precision below 2^16 is 2^17 / 3 = 43690.67 -> 43691, shift 17
    assert m.tolist() == [3, 43691, 5, 0] and s.tolist() == [2, 17, 0, 0]
    f = np.random.default_rng(0).random(200_000) * 3  # one factor per neuron of a wide layer (was quadratic)
    t0 = time.perf_counter()
    m, s = requant_params(f, 16, "x")
    assert time.perf_counter() - t0 < 10
    assert np.all(np.abs(m / 2.0 ** s - f) <= 2.0 ** -s)


# ============================================================================ seeded random graphs
def random_graph(seed: int):
    """A seeded random feed-forward CNN -> SNN: conv / pool / residual-add blocks, then dense + LIF, count, head."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder(f"rand{seed}", num_steps=3)
    C, H = int(rng.integers(1, 4)), int(rng.integers(6, 12))
    calib = {"image": rng.random((2, C, H, H))}
    h = b.input("image", (C, H, H))
    for i in range(int(rng.integers(1, 4))):
        co, k = int(rng.integers(2, 6)), int(rng.choice([1, 3]))
        h2 = b.relu(b.conv(h, rng.normal(size=(co, C, k, k)) * 0.3, pads=(k // 2,) * 4, name=f"conv{i}"))
        if co == C and rng.random() < 0.5:
            h2 = b.relu(b.add(h2, h, name=f"res{i}"))
        h, C = h2, co
        if H >= 4 and rng.random() < 0.5:
            h = (b.maxpool if rng.random() < 0.5 else b.avgpool)(h, (2, 2), name=f"pool{i}")
            H //= 2
    m = int(rng.integers(8, 40))
    s, _ = b.lif(b.gemm(b.flatten(h), rng.normal(size=(m, C * H * H)) * 0.2, name="fc"), "lif", beta=0.9)
    b.output(b.gemm(b.spike_count(s, "count"), rng.normal(size=(5, m)), name="head"))
    return b.build(), calib


@pytest.mark.parametrize("tiles", ["auto", "on"])
@pytest.mark.parametrize("seed", range(6))
def test_random_graphs_map_every_neuron_once_within_limits_and_reproducibly(seed, tiles):
    # tiles="on": every convolution, pooling, sum and dense layer cut into tiles of shared kernels
    model, calib = random_graph(seed)
    rng = np.random.default_rng(1000 + seed)
    over = {"core.neurons": int(rng.integers(8, 64)), "core.axons": int(rng.integers(32, 128)),
            "core.memory_bytes": int(rng.integers(2000, 8000))}
    try:
        # lint: every neuron of every layer held by exactly one full/merge core, no core over its neurons/axons;
        # emit: every design rule (memory, router table, phases, ...) holds, or it raises
        a = nmc.compile(model, calib=calib, overrides=over, chips="auto", lint=True, tiles=tiles)
    except DoesNotFitError as e:
        assert "layer '" in str(e) or "cannot fit" in str(e)
        return
    if tiles == "auto":  # (the bounds assume the default: small layers store dense blocks)
        bnd = nmc.check(model, overrides=over, chips="auto")
        assert a.num_cores >= bnd.cores
    b = nmc.compile(model, calib=calib, overrides=over, chips="auto", tiles=tiles)
    A, B = a.arrays(), b.arrays()
    assert A.keys() == B.keys() and all(np.array_equal(A[k], B[k]) for k in A)


def test_a_layer_of_zero_weights_adds_no_phase_to_the_bound():
    # fc2 routes nothing from fc1 (all its weights are 0): it runs in phase 0 beside fc1, and the bound agrees
    b = ModelBuilder("zero")
    x = b.input("x", (4,))
    h = b.gemm(x, np.ones((3, 4)), name="fc1")
    b.output(b.gemm(h, np.zeros((2, 3)), np.ones(2), name="fc2"))
    b.output(h)
    model = b.build()
    cm = nmc.compile(model, calib={"x": np.ones((1, 4))})
    assert cm.meta["phases"]["static"] == 1
    assert nmc.check(model).phases["static"] == 1


def test_bounds_of_table_activations_fused_and_standalone():
    # a Sigmoid on the input stands alone (identity synapse, the table soma); after a dense layer or an Add it is
    # fused into that layer
    rng = np.random.default_rng(0)
    b = ModelBuilder("luts")
    x = b.activation("Sigmoid", b.input("x", (6,)), name="sig0")
    h = b.activation("Sigmoid", b.gemm(x, rng.normal(size=(5, 6)), name="fc"), name="sig1")
    b.output(b.activation("Sigmoid", b.add(h, h, name="twice"), name="sig2"))
    model = b.build()
    lb = nmc.check(model)
    cm = nmc.compile(model, calib={"x": rng.normal(size=(4, 6))})
    assert [(l.name, l.soma, l.synapses) for l in lb.layers] == [("sig0", "lut", 6), ("fc", "lut", 30),
                                                                  ("twice", "lut", 10)]
    assert [l["name"] for l in cm.meta["layers"]] == ["sig0", "fc", "twice"]
    assert cm.meta["phases"]["static"] == lb.phases["static"] == 3


def test_owner_of_indices_by_hand_and_by_both_paths():
    # cores of 2, 0 and 3 neurons: neurons 0-1 on core 0, 2-4 on core 2 (core 1 is empty)
    off = np.array([0, 2, 2, 5])
    assert owner(off, np.array([0, 1, 2, 3, 4])).tolist() == [0, 0, 2, 2, 2]
    long = np.array([4, 0, 2, 1, 3] * 10)  # long enough for the owner-table gather
    assert owner(off, long).tolist() == [2, 0, 2, 0, 2] * 10
    rng = np.random.default_rng(0)
    off = np.concatenate([[0], np.cumsum(rng.integers(0, 5, 300))])
    idx = rng.integers(0, off[-1], 5000)
    np.testing.assert_array_equal(owner(off, idx), np.searchsorted(off, idx, side="right") - 1)


def test_the_host_estimate_before_lowering_by_hand():
    # one tiled conv, 64 -> 64 channels, 3 x 3, pads 1, on 32 x 32: 65,536 neurons (tiled: >= 2^16); taps inside the
    # input per output row 2 + 30 x 3 + 2 = 94, per column likewise: 64 x 64 x 94 x 94 = 36,192,256 synapses.  The
    # estimate: max(100 B x 65,536, 0.35 B x 36,192,256) = 12,667,289.6 -> 12,667,289 B (mapper/bounds.py)
    rng = np.random.default_rng(0)
    b = ModelBuilder("conv64")
    x = b.input("x", (64, 32, 32))
    b.output(b.conv(x, rng.normal(size=(64, 64, 3, 3)) + 0.01, np.zeros(64), name="c", pads=[1, 1, 1, 1]))
    bd = nmc.check(b.build(), chip="tianjicx")
    (l,) = bd.layers
    assert (l.neurons, l.synapses, l.tiled) == (65_536, 36_192_256, True)
    assert bd.host_bytes == 12_667_289


def test_the_partition_is_refused_when_its_mapping_would_exceed_the_host_budget():
    """After partitioning, before connecting: a dense 4 -> 8 layer on tianjic is one core of 4 axons and a dense
    block of 4 x 8 weights, so by hand the estimate is 400 MiB + 77 B x 4 + 3.05 B x 32 = 419,430,400 + 405.6 B,
    405 B of it for the layer (whole bytes): 419,430,805 B (mapper/fit.py's constants).  One byte less is refused, naming the layer; that much is mapped."""
    from nmc.chip import load_chip
    from nmc.frontend import load_onnx
    from nmc.mapper.passes import map_graph
    b = ModelBuilder("tiny", num_steps=1)
    x = b.input("x", (4,))
    b.output(b.gemm(x, np.arange(32.0).reshape(8, 4) / 32, name="fc"))
    g = load_onnx(b.build())
    chip = load_chip("tianjic")
    calib = {"x": np.ones((2, 4))}
    with pytest.raises(DoesNotFitError, match=r"would take about .* of host memory, more than .*layer 'fc'"):
        map_graph(g, chip, calib, host_budget=419_430_804)
    assert map_graph(g, chip, calib, host_budget=419_430_805).num_cores == 1
