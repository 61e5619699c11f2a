"""The header check (``nmc.coremap.check_header``, part of the emulator's validation) takes a list of plain ints
in one pass; a list with anything else is still checked element by element, with the same messages."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from nmc.coremap import check_header
from nmc.errors import CoreMapError
from randmaps import build_coremap, hand_chip


def _meta():
    cm = build_coremap(hand_chip(), [dict(W=[[1]], x=0, y=0, stage=0, bits=8)],
                       inputs=[{"name": "x", "kind": "static", "shape": [1], "scale": 1.0, "lo": -128, "hi": 127}],
                       feeds=[(0, 0, 0, 0)], outputs=[("y", "static", [(0, 0)])])
    return copy.deepcopy(cm.meta)


def test_int_lists():
    meta = _meta()
    meta["layers"][0]["cores"] = [0, 1, 2]
    check_header(meta)
    for bad, shown in ((True, "True"), (1.0, "1.0"), (np.int64(2), r"np.int64\(2\)"), ("3", "'3'")):
        meta["layers"][0]["cores"] = [0, 1, bad]
        with pytest.raises(CoreMapError, match=rf"^header meta.layers\[0\].cores\[2\] is {shown}; expected int$"):
            check_header(meta)
    meta["layers"][0]["cores"] = (0, 1)
    with pytest.raises(CoreMapError, match=r"meta.layers\[0\].cores is tuple; expected a list"):
        check_header(meta)
