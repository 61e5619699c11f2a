"""``ann``: the ANN soma: requantise the accumulator and clamp (ReLU when the range starts at 0).

Integer: ``y = acc * mult`` then, for ``shift > 0``, ``y = (y + 2^(shift-1)) >> shift`` (round half up);
``out = clamp(y, lo, hi)`` with the core's output range (int8, or uint8 after a ReLU).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._int import NJIT, nb_clamp
from .model import NeuronModel, Param, register

__all__ = ["ANN"]


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    mult, shift = nparam[:, 0], nparam[:, 1]
    prod = acc * mult
    half = np.left_shift(np.int64(1), np.maximum(shift - 1, 0))
    y = np.where(shift == 0, prod, (prod + half) >> shift)
    return np.clip(y, lo, hi)


@njit(**NJIT)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    nz = 0
    for j in range(nn):
        sh = nparam[n0 + j, 1]
        y = acc[j] * nparam[n0 + j, 0]
        if sh > 0:
            y = (y + (np.int64(1) << (sh - 1))) >> sh
        y = nb_clamp(y, lo, hi)
        out[n0 + j] = y
        nz += 1 if y != 0 else 0
    return nz


ANN = register(NeuronModel(
    name="ann", code=0, doc=__doc__, out_bits=8, ref_step=_ref_step, nb_step=_nb_step,
    neuron_params=(
        Param("mult", lambda c: 0, lambda c: (1 << c.requant_mult_bits) - 1, lambda c: c.requant_mult_bits,
              "requantisation multiplier"),
        Param("shift", lambda c: 0, lambda c: 62, lambda c: 8, "requantisation shift (one byte)"),
    ),
))
