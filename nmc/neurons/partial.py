"""``partial``: emit the accumulator as it is (a 32-bit partial sum for a merge core to add up)."""
from __future__ import annotations

from numba import njit

from ._int import NJIT
from .model import NeuronModel, register

__all__ = ["PARTIAL"]


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    return acc.copy()


@njit(**NJIT)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    nz = 0
    for j in range(nn):
        out[n0 + j] = acc[j]
        nz += 1 if acc[j] != 0 else 0
    return nz


PARTIAL = register(NeuronModel(name="partial", code=2, doc=__doc__, out_bits=32, ref_step=_ref_step,
                               nb_step=_nb_step))
