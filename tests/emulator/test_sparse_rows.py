"""``kernels._sparse_rows``: which mac cores read their weights as rows of nonzeros, and those rows; by hand."""
from __future__ import annotations

import numpy as np

import nmc.emulator.kernels as kernels
from randmaps import build_coremap, hand_chip
from test_emulator import run_both


def _map():
    W0 = [[0, 3, 0, 0, 0],  # one nonzero per row, 4 of 20 weights (20% < 25%): sparse 2
          [5, 0, 0, 0, 0],
          [0, 0, 0, 0, -2],
          [0, 0, 0, 0, 7]]
    W1 = np.ones((3, 5), int)  # dense: 0
    W2 = [[1, 0, 0, 0, 0, 2],  # 3 of 18 (17%), a row with two and one with none: sparse 1
          [0, 0, 0, 0, 0, 0],
          [0, 0, 0, -4, 0, 0]]
    W3 = np.eye(5, dtype=int)  # 5 of 25 (20%), but a max dendrite: 0
    W4 = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]  # exactly 25%: not below, dense: 0
    cores = [dict(W=W0, x=0, y=0, stage=0, bits=8), dict(W=W1, x=1, y=0, stage=0, bits=8),
             dict(W=W2, x=2, y=0, stage=0, bits=8), dict(W=W3, x=3, y=0, stage=0, bits=8, dend=1),
             dict(W=W4, x=0, y=1, stage=0, bits=8)]
    n_ax = [4, 3, 3, 5, 4]
    feeds, col = [], 0
    for k, n in enumerate(n_ax):
        for i in range(n):
            feeds.append((0, col, k, i))
            col += 1
    n_out = [5, 5, 6, 5, 4]
    return build_coremap(hand_chip(), cores,
                         inputs=[{"name": "x", "kind": "static", "shape": [col], "scale": 1.0, "lo": -128, "hi": 127}],
                         feeds=feeds, outputs=[("y", "static", [(k, j) for k, n in enumerate(n_out) for j in range(n)])])


def test_sparse_rows_by_hand():
    cm = _map()
    sparse, row_off, row_col, row_w = kernels._sparse_rows(cm)
    assert sparse.tolist() == [2, 0, 1, 0, 0]
    # axons 0-3 (core 0): one each; 4-6 (core 1): none; 7-9 (core 2): 2, 0, 1; 10-18 (cores 3, 4): none
    assert row_off.tolist() == [0, 1, 2, 3, 4, 4, 4, 4, 6, 6, 7] + [7] * 9
    assert row_col.dtype == np.int32 and row_col.tolist() == [1, 0, 4, 4, 0, 5, 3]
    assert row_w.dtype == np.int64 and row_w.tolist() == [3, 5, -2, 7, 1, 2, -4]


def test_sparse_rows_run_equals_reference():
    cm = _map()
    x = np.array([[1, 2, 3, 4, 1, 1, 1, 2, 9, 3, 5, 6, 7, 8, 9, 1, 1, 1, 1]])
    r = run_both(cm, {0: x}, {}, 1)
    # core 0: y = [5*2, 3*1, 0, 0, -2*3 + 7*4]; core 2: [1*2, 0, 0, -4*3, 0, 2*2]
    y = r.outputs["y"][0].tolist()
    assert y[:5] == [10, 3, 0, 0, 22]
    assert y[10:16] == [2, 0, 0, -12, 0, 4]
    assert y[16:21] == [5, 6, 7, 8, 9]  # core 3: the largest input of a nonzero weight, x itself
