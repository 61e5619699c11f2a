"""The route and feed copies as runs (``emulator.schedule.copy_runs``): hand-derived runs, and a core map whose
routes make runs broken by a gap and by a source out of order, with hand-derived outputs."""
from __future__ import annotations

import numpy as np

from nmc.emulator.schedule import build_schedule, copy_runs
from randmaps import build_coremap, hand_chip
from test_emulator import run_both


def _apply(dst, src, values, n):
    axons = np.full(n, -1, np.int64)
    for d, s in zip(dst, src):
        axons[d] = values[s]
    return axons


def test_copy_runs_by_hand():
    # pairs (dst <- src): 3<-10 4<-11 5<-12 | 5<-20 6<-21 | 9<-30 | 10<-32 | 11<-33
    #  - 5<-20 writes axon 5 again (dst 5 is not 5 + 1): a new run, done after the first, so it wins
    #  - 9<-30: a gap in the destinations; 10<-32: a gap in the sources
    dst = [3, 4, 5, 5, 6, 9, 10, 11]
    src = [10, 11, 12, 20, 21, 30, 32, 33]
    off, rdst, rsrc, rlen = copy_runs(dst, src)
    assert off.tolist() == [0, 4]
    assert rdst.tolist() == [3, 5, 9, 10]
    assert rsrc.tolist() == [10, 20, 30, 32]
    assert rlen.tolist() == [3, 2, 1, 2]
    # the runs done in order copy what the pairs copy in order: axon 5 holds value 20 (the later write)
    values = np.arange(100) * 7
    axons = np.full(12, -1, np.int64)
    for d, s, n in zip(rdst, rsrc, rlen):
        axons[d:d + n] = values[s:s + n]
    assert axons.tolist() == [-1, -1, -1, 70, 77, 140, 147, -1, -1, 210, 224, 231]
    assert axons.tolist() == _apply(dst, src, values, 12).tolist()


def test_copy_runs_lists_do_not_share_runs():
    # lists [0, 1 <- 0, 1], [] and [2, 3 <- 2, 3]: consecutive across the boundary, yet two runs
    off, rdst, rsrc, rlen = copy_runs([0, 1, 2, 3], [0, 1, 2, 3], [0, 2, 2, 4])
    assert off.tolist() == [0, 1, 1, 2]
    assert rdst.tolist() == [0, 2] and rsrc.tolist() == [0, 2] and rlen.tolist() == [2, 2]
    off, rdst, rsrc, rlen = copy_runs([], [], [0, 0, 0])
    assert off.tolist() == [0, 0, 0] and rdst.size == rsrc.size == rlen.size == 0


def test_routes_as_runs_on_a_core_map():
    """Core 0 (identity, static input x) sends neurons 0, 1, 3, 2 to axons 0, 1, 2, 3 of core 1 (identity): one
    run of two routes, then two runs of one (the sources go back), so y = x0, x1, x3, x2."""
    chip = hand_chip()
    cores = [dict(W=np.eye(4, dtype=int), x=0, y=0, stage=0, phase=0, bits=8),
             dict(W=np.eye(4, dtype=int), x=1, y=0, stage=0, phase=1, bits=8)]
    cm = build_coremap(chip, cores,
                       inputs=[{"name": "x", "kind": "static", "shape": [4], "scale": 1.0, "lo": -128, "hi": 127}],
                       feeds=[(0, i, 0, i) for i in range(4)],
                       routes=[(0, 0, 1, 0, 0), (0, 1, 1, 1, 0), (0, 3, 1, 2, 0), (0, 2, 1, 3, 0)],
                       outputs=[("y", "static", [(1, j) for j in range(4)])])
    sch = build_schedule(cm)
    n_ph = sch.ph_off.shape[0] - 1
    assert n_ph == 2
    # phase 0's routes: axons 4, 5 <- neurons 0, 1 (one run), axon 6 <- neuron 3, axon 7 <- neuron 2
    r0, r1 = sch.cr_off[0], sch.cr_off[1]
    assert sch.cr_dst[r0:r1].tolist() == [4, 6, 7]
    assert sch.cr_src[r0:r1].tolist() == [0, 3, 2]
    assert sch.cr_len[r0:r1].tolist() == [2, 1, 1]
    # no routes after phase 1, no delayed routes, no step feeds; the static feeds: axons 0..3 <- columns 0..3
    assert sch.cr_off[1:].tolist() == [3, 3, 3, 3, 4]
    assert (sch.cr_dst[3], sch.cr_src[3], sch.cr_len[3]) == (0, 0, 4)
    r = run_both(cm, {0: np.array([[5, -6, 7, -8]])}, {}, 1)
    assert r.outputs["y"].tolist() == [[5, -6, -8, 7]]
