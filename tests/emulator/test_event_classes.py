"""Dense mac cores whose axons always hold the same values share one event list per phase run
(``kernels._axon_classes``): the classes by hand, and runs equal to the reference (which has no such lists)."""
from __future__ import annotations

import numpy as np

import nmc.emulator.kernels as kernels
from nmc.emulator.schedule import build_schedule
from randmaps import build_coremap, hand_chip
from test_emulator import run_both


def _map():
    W3 = [[1, -2], [3, 1], [-1, 2]]
    W2 = [[2, 1], [-1, 3]]
    cores = [dict(W=W3, x=0, y=0, stage=1, phase=0, bits=8),                   # 0: axons <- x0, x1, x2
             dict(W=np.array(W3) * 2, x=1, y=0, stage=1, phase=0, bits=8),     # 1: the same writers: class of 0
             dict(W=W3, x=2, y=0, stage=1, phase=0, bits=8, axon_init=[0, 0, 5]),  # 2: other initial values: alone
             dict(W=W3, x=3, y=0, stage=1, phase=0, bits=8),                   # 3: axon 2 also <- core 0's neuron 0
             dict(W=W3, x=0, y=1, stage=1, phase=1, bits=8),                   # 4: as 0 and 1, in the next phase
             dict(W=W2, x=1, y=1, stage=1, phase=1, bits=8),                   # 5: axons <- core 0's neurons 0, 1
             dict(W=np.array(W2) * -1, x=2, y=1, stage=1, phase=1, bits=8),    # 6: the same routes: class of 5
             dict(W=W2, x=3, y=1, stage=1, phase=1, bits=8)]                   # 7: routes from core 0, delayed: alone
    feeds = [(0, i, k, i) for k in (0, 1, 2, 3, 4) for i in range(3)]
    routes = [(0, 0, 3, 2, 0), (0, 0, 5, 0, 0), (0, 1, 5, 1, 0), (0, 0, 6, 0, 0), (0, 1, 6, 1, 0),
              (0, 0, 7, 0, 1), (0, 1, 7, 1, 1)]
    return build_coremap(hand_chip(), cores,
                         inputs=[{"name": "x", "kind": "step", "shape": [3], "scale": 1.0, "lo": -128, "hi": 127}],
                         feeds=feeds, routes=routes,
                         outputs=[("y", "step", [(k, j) for k in range(8) for j in range(2)])], num_steps=4)


def test_axon_classes_by_hand():
    cm = _map()
    net = kernels._net(cm)
    assert net.ev_cls.tolist() == [0, 0, -1, -1, 0, 1, 1, -1]
    assert net.ev_off.tolist() == [0, 3, 5]  # class 0: 3 axons, class 1: 2
    # the axons every core of a class reads: its first core's (core 0: axons 0-2; core 5: axons 15-16)
    assert net.ev_a0.tolist() == [int(cm.cores.axon_off[0]), int(cm.cores.axon_off[5])] == [0, 15]


def _copies(sch, lists):
    """The (destination axon, source) pairs of the copy runs of lists ``lists`` (schedule.copy_runs)."""
    out = []
    for q in range(sch.cr_off[lists[0]], sch.cr_off[lists[-1] + 1]):
        out += [(int(sch.cr_dst[q]) + j, int(sch.cr_src[q]) + j) for j in range(int(sch.cr_len[q]))]
    return out


def test_schedule_leaves_out_the_copies_into_a_class_s_other_cores():
    # the kernel's schedule does not write the axons of cores 1, 4 (class 0, after core 0) and 6 (class 1, after
    # core 5): core 1's and 4's step feeds (axons 3-5, 12-14) and core 6's routes (axons 17, 18); all else as before
    cm = _map()
    net = kernels._net(cm)
    skip = np.zeros(cm.num_axons, bool)
    for c in (1, 4, 6):
        skip[cm.cores.axon_off[c]:cm.cores.axon_off[c + 1]] = True
    full, part = build_schedule(cm), build_schedule(cm, skip_axons=skip)
    n_ph = full.ph_off.shape[0] - 1
    lists = range(n_ph + 3)  # each phase's routes, the delayed routes, the step feeds, the static feeds
    every = _copies(full, lists)
    assert sorted(d for d, _ in every if skip[d]) == [3, 4, 5, 12, 13, 14, 17, 18]
    assert _copies(part, lists) == [(d, s) for d, s in every if not skip[d]]
    for ls in ([0], [1], [n_ph], [n_ph + 1], [n_ph + 2]):  # list by list too
        assert _copies(part, ls) == [(d, s) for d, s in _copies(full, ls) if not skip[d]]
    for f in ("ph_off", "ph_cores", "ent_path", "sf_dst", "tf_dst", "tp_n_in", "pg_v_slot"):
        np.testing.assert_array_equal(getattr(part, f), getattr(full, f))
    # what run_numba leaves out: the same axons
    np.testing.assert_array_equal(kernels.class_members(net), skip)


def test_shared_event_lists_equal_reference():
    cm = _map()
    x = np.array([[[1, 0, 2], [0, 0, 0], [3, -1, 0], [0, 4, 1]]])  # [B, T, 3]: zeros and changes between steps
    r = run_both(cm, {}, {0: x}, 4)
    # core 0 (ann, mult 1, shift 0, 8 bits): y = x @ W3, step 0: [1 - 2, -2 + 4] = [-1, 2]
    assert r.outputs["y"][0, 0, 0:2].tolist() == [-1, 2]
    assert r.outputs["y"][0, 0, 2:4].tolist() == [-2, 4]  # core 1: twice core 0
    # step 2: x = [3, -1, 0]: core 0 [3 - 3, -6 - 1] = [0, -7]; core 5 reads core 0's outputs of this step
    # (routes written after phase 0): [0, -7] @ W2 = [7, -21]
    assert r.outputs["y"][0, 2, 0:2].tolist() == [0, -7]
    assert r.outputs["y"][0, 2, 10:12].tolist() == [7, -21]
