"""``partial``: emit the accumulator as it is (a 32-bit partial sum for a merge core to add up)."""
from __future__ import annotations

import numpy as np
from numba import njit

from ._int import NJIT, NJIT_STEP
from .model import NeuronModel, register

__all__ = ["PARTIAL"]


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    return acc.copy()


@njit(**NJIT_STEP)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    nz = 0
    o = np.uint64(n0)  # (unsigned indices: no negative-index wraparound code)
    for j in range(nn):
        x = acc[np.uint64(j)]
        out[o + np.uint64(j)] = x
        nz += x != 0
    return nz


PARTIAL = register(NeuronModel(name="partial", code=2, doc=__doc__, out_bits=32, ref_step=_ref_step,
                               nb_step=_nb_step))
