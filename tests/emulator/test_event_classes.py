"""Dense mac cores whose axons always hold the same values share one event list per phase run
(``kernels._axon_classes``): the classes by hand, and runs equal to the reference (which has no such lists)."""
from __future__ import annotations

import numpy as np

import nmc.emulator.kernels as kernels
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
