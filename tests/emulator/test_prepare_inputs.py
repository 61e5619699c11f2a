"""``nmc.api.prepare_inputs``: inputs already whole and in range take a fast path (a min/max and one comparison)
that gives the same integers as the general path (round, clip, count what was saturated); hand-derived values."""
from __future__ import annotations

import numpy as np

from nmc.api import _quantised_in_range, prepare_inputs
from randmaps import build_coremap, hand_chip


def _map(scale):
    chip = hand_chip()
    return build_coremap(chip, [dict(W=np.eye(3, dtype=int), x=0, y=0, stage=1, bits=8)],
                         inputs=[{"name": "x", "kind": "step", "shape": [3], "scale": scale, "lo": -3, "hi": 3}],
                         feeds=[(0, i, 0, i) for i in range(3)], outputs=[("y", "step", [(0, j) for j in range(3)])])


def test_fast_path_by_hand():
    spec = {"scale": 0.5, "lo": -3, "hi": 3}
    # / 0.5: 1, -2, 3, 0: whole and within [-3, 3]
    assert _quantised_in_range(np.array([0.5, -1.0, 1.5, 0.0]), spec).tolist() == [1, -2, 3, 0]
    assert _quantised_in_range(np.array([0.25]), spec) is None  # 0.5: not whole, rounded by the general path
    assert _quantised_in_range(np.array([2.0]), spec) is None  # 4: above hi
    assert _quantised_in_range(np.array([-2.0]), spec) is None  # -4: below lo
    assert _quantised_in_range(np.zeros(0), spec) is None
    q = _quantised_in_range(np.array([1.0, 0.0, 1.0]), {"scale": 1.0, "lo": 0, "hi": 1})
    assert q.dtype == np.int64 and q.tolist() == [1, 0, 1]


def test_prepare_inputs_fast_and_general_paths_by_hand():
    cm = _map(0.5)
    # T = 2 steps, B = 2 samples, 3 values: [T, B, 3]; every value x / 0.5 whole and in [-3, 3]: the fast path
    x = np.array([[[0.5, -1.0, 1.5], [0.0, 1.0, -1.5]],
                  [[-0.5, 0.0, 0.5], [1.5, 1.5, -1.0]]])
    sat = {}
    static, step, states, B = prepare_inputs(cm, {"x": x}, 2, saturated=sat)
    assert B == 2 and static == {} and states == {} and sat == {}
    assert step[0].dtype == np.int64 and step[0].flags.c_contiguous
    assert step[0].tolist() == [[[1, -2, 3], [-1, 0, 1]],    # sample 0, steps 0 and 1  ([B, T, n])
                                [[0, 2, -3], [3, 3, -2]]]
    # one value (0.3 / 0.5 = 0.6) not whole and one (2.5 / 0.5 = 5) out of range: the general path rounds the
    # first to 1 and saturates the second to 3, and counts it
    x2 = x.copy()
    x2[0, 0, 0], x2[1, 1, 2] = 0.3, 2.5
    static, step, states, B = prepare_inputs(cm, {"x": x2}, 2, saturated=sat)
    assert step[0].tolist() == [[[1, -2, 3], [-1, 0, 1]],
                                [[0, 2, -3], [3, 3, 3]]]
    assert sat == {"x": (1, 12, -1.5, 1.5)}
    # the caller's array is not written
    assert x2[0, 0, 0] == 0.3 and x[0, 0, 0] == 0.5
