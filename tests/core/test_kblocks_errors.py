"""Damaged shared-kernel tables (core-map format 3: ``cores.w_fmt``, ``kblocks``, ``kpatch``) end in one
CoreMapError naming the block or core, the value and the limit -- never a numpy error from deep inside the
expansion, an int64 wrap-around that slips through, a memory blow-up or a silently wrong weight.  Cases found
by the fuzz campaign (``benchmarks/fuzz.py --kinds kmap``) and derived by hand from the checks' arithmetic."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import nmc
from nmc.corefile import load as load_coremap
from nmc.corefile import save as save_coremap
from nmc.coremap import KGEOM, check_coremap
from nmc.emulator.memory import estimate_bytes
from nmc.errors import CoreMapError, InputError
from nmc.frontend.builder import ModelBuilder

G = {n: i for i, n in enumerate(KGEOM)}


@pytest.fixture(scope="module")
def tiled():
    """A small CNN with every convolution tiled into shared-kernel cores, and an input batch."""
    rng = np.random.default_rng(3)
    b = ModelBuilder("kb", num_steps=1)
    x = b.input("x", (2, 6, 6))
    h = b.relu(b.conv(x, rng.integers(-3, 4, size=(4, 2, 3, 3)) / 4, None, pads=(1, 1, 1, 1), name="c1"))
    h = b.relu(b.conv(h, rng.integers(-3, 4, size=(4, 4, 3, 3)) / 4, None, strides=(2, 2), name="c2"))
    b.output(b.gemm(b.flatten(h), rng.integers(-3, 4, size=(3, 16)) / 4, name="fc"))
    X = rng.uniform(0, 1, size=(4, 2, 6, 6))
    cm = nmc.compile(b.build(), "tianjicx", calib={"x": X}, tiles="on")
    assert np.all(cm.cores.w_fmt == 1)
    return cm, {"x": X[:1]}


def _kb(cm, **cols):
    return cm.replace(kblocks=dataclasses.replace(cm.kblocks, **cols))


def _roundtrip(cm, tmp_path):
    """Saved with nmc's own writer (so the integrity hash matches) and loaded back, structure only."""
    p = tmp_path / "m.nmc"
    save_coremap(cm, p)
    return p


def test_kernel_offset_near_the_int64_limit_is_refused_not_wrapped(tiled, tmp_path):
    # w_off + kernel size wrapped around int64 and passed the range check; the expansion then failed in numpy
    # ("cannot reshape array of size 0") -- found by the fuzz campaign (kmap:114)
    cm, x = tiled
    w_off = cm.kblocks.w_off.copy()
    w_off[0] = 2 ** 63 - 2
    bad = _kb(cm, w_off=w_off)
    with pytest.raises(CoreMapError, match=r"kernel block 0: .*9223372036854775806.*weights\.data"):
        check_coremap(bad)
    p = _roundtrip(bad, tmp_path)
    with pytest.raises(CoreMapError, match="kernel block 0"):
        load_coremap(p)
    with pytest.raises(CoreMapError, match="kernel block 0"):
        nmc.emulate(p, x)


def test_geometry_whose_sizes_wrap_int64_is_refused(tiled):
    # patch 2^30 x 2^17 x 2^17 = 2^64 elements and kernel tc x 2^30 x 2^17 x 2^17: both products are 0 modulo
    # 2^64, so in int64 they matched an empty patch map and an empty kernel
    cm, _ = tiled
    kb = cm.kblocks
    nn = int(cm.cores.neuron_off[1] - cm.cores.neuron_off[0])  # block 0 sits on core 0
    g = kb.geom.copy()
    g[0] = 1
    g[0, [G["oc0"], G["kc0"], G["pc0"]]] = 0
    g[0, [G["tc"], G["co_g"]]] = nn
    g[0, [G["kc"], G["pc"], G["ci_g"]]] = 2 ** 30
    g[0, [G["kh"], G["kw"], G["ph"], G["pw"]]] = 2 ** 17
    n0 = int(kb.ax_off[1])
    bad = cm.replace(kblocks=dataclasses.replace(kb, geom=g, ax_off=np.concatenate([[0], kb.ax_off[1:] - n0])),
                     kpatch=dataclasses.replace(cm.kpatch, ax=cm.kpatch.ax[n0:]))
    with pytest.raises(CoreMapError, match=r"kernel block 0: .*(patch|kernel)"):
        check_coremap(bad)


def test_a_patch_that_names_one_axon_twice_adds_both_taps_and_runs_expanded(tiled):
    # a view may read one input element at two patch positions (nmc.ir.split_wide_maxpools gathers overlapping
    # windows): the core map is valid, the two taps add up on one weight, and the Numba kernel expands that core
    # (its blocks do not read distinct axons) so both backends compute the same sums
    from nmc.coremap import kblock_overlap_cores
    cm, x = tiled
    ax = cm.kpatch.ax.copy()
    lo, hi = int(cm.kblocks.ax_off[0]), int(cm.kblocks.ax_off[1])
    held = np.flatnonzero(ax[lo:hi] >= 0)
    assert int(np.sum(cm.kblocks.core == 0)) == 1  # core 0: one block, so each axon is one patch element's
    W0 = cm.core_weights(0).astype(int)
    a0 = int(ax[lo + held[0]])
    # another element whose axon's weights, added to a0's, stay within int8
    j = next(j for j in held[1:] if np.all(np.abs(W0[a0] + W0[int(ax[lo + j])]) <= 127) and W0[int(ax[lo + j])].any())
    a1 = int(ax[lo + j])
    ax[lo + j] = a0  # patch element j now reads axon a0 too; axon a1 is read by no element
    bad = cm.replace(kpatch=dataclasses.replace(cm.kpatch, ax=ax))
    check_coremap(bad)
    assert kblock_overlap_cores(bad).tolist() == [i == 0 for i in range(cm.num_cores)]
    W = bad.core_weights(0).astype(int)
    want = W0.copy()
    want[a0] += W0[a1]  # what axon a1 fed now comes from a0
    want[a1] = 0
    np.testing.assert_array_equal(W, want)
    r_ref = nmc.emulate(bad, x, backend="reference")
    r_nb = nmc.emulate(bad, x, backend="numba")
    for o in r_ref.outputs:
        np.testing.assert_array_equal(np.asarray(r_nb.outputs[o]), np.asarray(r_ref.outputs[o]))
    np.testing.assert_array_equal(r_nb.result.events, r_ref.result.events)


def test_taps_that_add_up_beyond_int8_are_refused_even_when_int16_would_wrap(tiled):
    # block 0 repeated 516 times on its core with a kernel of 127s: each weight is 516 x 127 = 65532, which an
    # int16 accumulator wraps to -4 (inside int8: a silently wrong weight)
    cm, _ = tiled
    kb = cm.kblocks
    g0 = kb.geom[0]
    size = int(np.prod(g0[[G["tc"], G["kc"], G["kh"], G["kw"]]].astype(np.int64)))
    data = np.concatenate([cm.weights.data, np.full(size, 127, np.int8)])
    n = 516
    patch = cm.kpatch.ax[kb.ax_off[0]:kb.ax_off[1]]
    rest = cm.kpatch.ax[kb.ax_off[1]:]
    ax_sizes = np.concatenate([np.full(n, patch.size), np.diff(kb.ax_off)[1:]])
    bad = cm.replace(
        weights=dataclasses.replace(cm.weights, data=data),
        kblocks=dataclasses.replace(kb, core=np.concatenate([np.full(n, kb.core[0], np.int32), kb.core[1:]]),
                                    w_off=np.concatenate([np.full(n, cm.weights.data.shape[0]), kb.w_off[1:]]),
                                    geom=np.concatenate([np.repeat(kb.geom[:1], n, axis=0), kb.geom[1:]]),
                                    ax_off=np.concatenate([[0], np.cumsum(ax_sizes)]).astype(np.int64)),
        kpatch=dataclasses.replace(cm.kpatch, ax=np.concatenate([np.tile(patch, n), rest])))
    check_coremap(bad)  # structurally fine: several blocks may sum onto one core (a residual sum)
    with pytest.raises(CoreMapError, match=r"core 0: its kernel blocks add up to weights in \[.*65532\], beyond int8"):
        bad.core_weights(0)


def test_a_huge_shared_kernel_core_is_refused_before_its_dense_block_is_allocated(tiled):
    # the last core grows to 2^20 neurons (one 1 x 1 kernel per neuron, channels as the tile) and 2^14 axons: a
    # file of a few MiB whose dense block would be 2^34 weights.  The max-dendrite check expands it before the
    # chip's limits are checked: it must refuse, naming the core, the size and the limit
    cm, _ = tiled
    c = cm.num_cores - 1
    kb, co = cm.kblocks, cm.cores
    assert int(kb.core[-1]) == c and int(np.sum(kb.core == c)) == 1
    nn, na = 2 ** 20, 2 ** 14
    dn = nn - cm.n_neurons(c)
    da = na - cm.n_axons(c)
    g = kb.geom.copy()
    g[-1] = 1
    g[-1, [G["oc0"], G["kc0"], G["pc0"]]] = 0
    g[-1, [G["tc"], G["co_g"]]] = nn
    n0 = int(kb.ax_off[-2])
    N = cm.num_neurons
    neurons = dataclasses.replace(
        cm.neurons, bias=np.concatenate([cm.neurons.bias, np.zeros(dn, np.int32)]),
        param=np.concatenate([cm.neurons.param, np.repeat(cm.neurons.param[N - 1:], dn, axis=0)]),
        state_init=np.concatenate([cm.neurons.state_init, np.zeros((dn, cm.neurons.state_init.shape[1]), np.int64)]))
    huge = cm.replace(
        cores=dataclasses.replace(co, neuron_off=np.concatenate([co.neuron_off[:-1], [co.neuron_off[-1] + dn]]),
                                  axon_off=np.concatenate([co.axon_off[:-1], [co.axon_off[-1] + da]]),
                                  dendrite=np.concatenate([co.dendrite[:-1], [1]]).astype(np.int8)),
        neurons=neurons, axons=dataclasses.replace(cm.axons, init=np.zeros(cm.num_axons + da, np.int16)),
        weights=dataclasses.replace(cm.weights, data=np.concatenate([cm.weights.data, np.ones(nn, np.int8)])),
        kblocks=dataclasses.replace(kb, geom=g, w_off=np.concatenate([kb.w_off[:-1], [cm.weights.data.shape[0]]]),
                                    ax_off=np.concatenate([kb.ax_off[:-1], [n0 + 1]])),
        kpatch=dataclasses.replace(cm.kpatch, ax=np.concatenate([cm.kpatch.ax[:n0], [0]]).astype(np.int32)))
    msg = rf"core {c}: its shared kernels expand to a dense block of {na} axons x {nn} neurons"
    with pytest.raises(CoreMapError, match=msg):
        huge.core_weights(c)
    with pytest.raises(CoreMapError, match=msg):
        check_coremap(huge)


def test_emulate_reads_kernels_not_dense_blocks_and_refuses_before_allocating(tiled, monkeypatch):
    # the Numba kernel reads the shared-kernel cores as kernels (their blocks read distinct axons, as nmc compile
    # writes them): the run holds the stored weights, not the dense [n_axons, n_neurons] blocks, which here are
    # more than ten times larger; a run over the limit is refused before any core is expanded
    cm, x = tiled
    dense = int(np.sum(np.diff(cm.cores.axon_off) * np.diff(cm.cores.neuron_off)))
    assert dense > 10 * cm.weights.data.shape[0]  # shared kernels: far fewer stored weights than dense ones
    est = estimate_bytes(cm, 1, 1)
    assert est < 2 * dense  # (the estimate when every core was expanded: at least 2 bytes per dense weight)
    called = []
    monkeypatch.setattr(type(cm), "core_weights", lambda self, c: called.append(1) or (_ for _ in ()).throw(
        AssertionError("expanded before the memory check")))
    with pytest.raises(InputError, match="needs about .* of memory, more than the limit"):
        nmc.emulate(cm, x, max_memory=est - 1)
    assert not called


def test_many_blocks_over_one_large_kernel_are_checked_without_copying_it_per_block(tiled):
    # 1,024 blocks on core 0, each a 1 x 1 tile of a kernel of 2^20 input channels (only the first lies in the
    # one-element patch): a file of well under 1 MiB whose kernels, copied block by block for the weight-precision
    # rule, were 1 GiB.  The rule reads the kernel pool once; one weight beyond int8's 2-bit range is named
    cm, _ = tiled
    kb, co = cm.kblocks, cm.cores
    n, kc = 1024, 2 ** 20
    c0 = int(np.sum(kb.core == 0))
    g = np.zeros((n, len(KGEOM)), np.int32)
    for name, v in dict(tc=1, th=1, tw=1, kc=kc, kh=1, kw=1, pc=1, ph=1, pw=1, sh=1, sw=1, dh=1, dw=1, co_g=1,
                        ci_g=kc).items():
        g[:, G[name]] = v
    nn = cm.n_neurons(0)
    kernel = np.zeros(kc, np.int8)
    kernel[-1] = 5
    W0 = cm.weights.data.shape[0]
    # core 0 keeps its own blocks' neurons: it gets one neuron (tile 1 x 1 x 1) and one axon instead
    dn, da = 1 - nn, 1 - cm.n_axons(0)
    keep = kb.core != 0
    sizes = np.concatenate([np.ones(n, np.int64), np.diff(kb.ax_off)[keep]])
    rest_ax = np.concatenate([cm.kpatch.ax[kb.ax_off[k]:kb.ax_off[k + 1]] for k in np.flatnonzero(keep)])
    big = cm.replace(
        cores=dataclasses.replace(co, neuron_off=np.concatenate([[0], co.neuron_off[1:] + dn]),
                                  axon_off=np.concatenate([[0], co.axon_off[1:] + da]), w_bits=np.full_like(co.w_bits, 2)),
        weights=dataclasses.replace(cm.weights, data=np.concatenate([cm.weights.data, kernel])),
        kblocks=dataclasses.replace(kb, core=np.concatenate([np.zeros(n, np.int32), kb.core[keep]]),
                                    w_off=np.concatenate([np.full(n, W0), kb.w_off[keep]]),
                                    geom=np.concatenate([g, kb.geom[keep]]),
                                    ax_off=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)),
        kpatch=dataclasses.replace(cm.kpatch, ax=np.concatenate([np.zeros(n, np.int32), rest_ax])))
    assert c0 >= 1
    from nmc.rules import RULES
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = RULES["weight-precision"](big)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 256, grown_mib
    assert any("core 0 has weights in [" in v and ", 5]" in v and "2-bit" in v for v in out), out


def test_kernel_slices_that_overlap_beyond_the_pool_are_refused(tiled):
    # kernels are stored once, so the distinct slices the blocks read fit in the kernel pool (reading them all
    # is one pass over it); here block 0 is repeated on its core reading its kernel shifted by one weight: every
    # slice of the pool plus one more of s0 weights, which must overlap the others
    cm, _ = tiled
    kb = cm.kblocks
    lo, W = int(cm.cores.w_off[-1]), cm.weights.data.shape[0]
    s0 = int(np.prod(kb.geom[0, [0, 3, 4, 5]].astype(np.int64)))
    o0 = int(kb.w_off[0])
    shifted = o0 + 1 if o0 + 1 + s0 <= W else o0 - 1
    patch = cm.kpatch.ax[kb.ax_off[0]:kb.ax_off[1]]
    bad = cm.replace(
        kblocks=dataclasses.replace(kb, core=np.concatenate([kb.core[:1], kb.core]),
                                    w_off=np.concatenate([[shifted], kb.w_off]),
                                    geom=np.concatenate([kb.geom[:1], kb.geom]),
                                    ax_off=np.concatenate([[0], kb.ax_off + patch.size])),
        kpatch=dataclasses.replace(cm.kpatch, ax=np.concatenate([patch, cm.kpatch.ax])))
    with pytest.raises(CoreMapError, match=rf"kernel blocks read {W - lo + s0} weights in .* distinct kernel slices, "
                                           rf"more than the {W - lo} weights of the kernel pool"):
        check_coremap(bad)
