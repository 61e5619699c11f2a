"""``ann``: the ANN soma: requantise the accumulator and clamp (ReLU when the range starts at 0).

Integer: ``y = acc * mult``, then for ``shift > 0`` either ``y = (y + 2^(shift-1)) >> shift`` (round half
up, core parameter ``floor = 0``) or ``y = y >> shift`` (floor, ``floor = 1``: TianjicX divides by a power
of 4 and floors, ``core.requant_mode = "floor4"``); ``out = clamp(y, lo, hi)`` with the core's output
range (int8, or uint8 after a ReLU).  On a chip whose ANN outputs all pass the soma's look-up table
(``core.requant_mode = "lut"``: Tianjic) the table holds the identity, so the values are the same and
every update counts a ``lut_read``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._int import NJIT, NJIT_STEP, nb_clamp
from .model import NeuronModel, Param, register

__all__ = ["ANN", "REQUANT", "FLOOR", "requant", "nb_requant"]

#: the requantiser's per-neuron parameters (shared with the ``lut`` soma)
REQUANT = (
    Param("mult", lambda c: 0, lambda c: (1 << c.requant_mult_bits) - 1, lambda c: c.requant_mult_bits,
          "requantisation multiplier"),
    Param("shift", lambda c: 0, lambda c: 62, lambda c: 8, "requantisation shift (one byte)"),
)
#: the requantiser's rounding (core parameter)
FLOOR = Param("floor", lambda c: 0, lambda c: 1, lambda c: 1, "0: round half up, 1: floor (core.requant_mode floor4)")


def requant(acc, nparam, fl: int):
    """``acc * mult`` shifted right by ``shift``: rounded half up (``fl = 0``) or floored (``fl = 1``)."""
    mult, shift = nparam[:, 0], nparam[:, 1]
    prod = acc * mult
    half = np.left_shift(np.int64(1), np.maximum(shift - 1, 0)) * (1 - fl)
    return np.where(shift == 0, prod, (prod + half) >> shift)


@njit(**NJIT)
def nb_requant(a, m, sh, fl):
    y = a * m
    if sh > 0:
        y = (y + ((np.int64(1) << (sh - 1)) if fl == 0 else 0)) >> sh
    return y


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    return np.clip(requant(acc, nparam, int(cp[0]) if len(cp) else 0), lo, hi)


@njit(**NJIT_STEP)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    fl = cp[0]
    nz = 0
    for j in range(nn):
        y = nb_clamp(nb_requant(acc[j], nparam[n0 + j, 0], nparam[n0 + j, 1], fl), lo, hi)
        out[n0 + j] = y
        nz += 1 if y != 0 else 0
    return nz


ANN = register(NeuronModel(
    name="ann", code=0, doc=__doc__, out_bits=8, ref_step=_ref_step, nb_step=_nb_step,
    core_params=(FLOOR,), neuron_params=REQUANT,
    reads_lut=lambda c: c.requant_mode == "lut",  # Tianjic: every ANN output goes through the soma's table
))
