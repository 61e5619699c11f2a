"""``lut``: the ANN soma with a look-up table activation (Sigmoid, Tanh, HardSigmoid, LeakyRelu, PRelu, Clip).

The requantiser of ``ann`` (per-neuron ``mult``, ``shift``; core parameter ``floor``) turns the
accumulator into a signed table index of ``I = core.lut_index_bits`` bits, clamped; the table entry at
that index (negative indices wrap: entry ``idx mod 2^I``, as TianjicX's BiMap ``prim_07`` reads its
table) is the output, clamped to the core's output range::

    idx    = clamp(requant(acc), -2^(I-1), 2^(I-1) - 1)
    out[n] = clamp(lut[idx mod 2^I], lo, hi)

Core parameters: ``floor``, ``index_bits`` (= ``core.lut_index_bits``), then the ``2^I`` entries
``lut_0 ..`` (``core.lut_entry_bits`` each; the model declares 256, the most an 8-bit index reads).
Every update reads the table once (event ``lut_read``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._int import NJIT, nb_clamp
from .ann import FLOOR, REQUANT, nb_requant, requant
from .model import NeuronModel, Param, register

__all__ = ["LUT", "MAX_ENTRIES", "ENTRY0"]

#: table entries the model declares: an 8-bit index (core.lut_index_bits <= 8)
MAX_ENTRIES = 256
#: index of the first table entry among the core parameters
ENTRY0 = 2


def _entry(j: int) -> Param:
    used = (lambda c: j < (1 << c.lut_index_bits))
    return Param(f"lut_{j}", lambda c: -(1 << (c.lut_entry_bits - 1)) if used(c) else 0,
                 lambda c: (1 << c.lut_entry_bits) - 1 if used(c) else 0,
                 lambda c: c.lut_entry_bits if used(c) else 0,
                 "table entry (int8 or uint8 by the core's output range); entries past 2^core.lut_index_bits are 0")


CORE_PARAMS = (FLOOR, Param("index_bits", lambda c: c.lut_index_bits, lambda c: c.lut_index_bits, lambda c: 4,
                            "table index width (core.lut_index_bits)"),
               *(_entry(j) for j in range(MAX_ENTRIES)))


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    fl, ib = int(cp[0]), int(cp[1])
    half = 1 << (ib - 1)
    idx = np.clip(requant(acc, nparam, fl), -half, half - 1)
    return np.clip(cp[ENTRY0 + (idx & ((1 << ib) - 1))], lo, hi)


@njit(**NJIT)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    fl, ib = cp[0], cp[1]
    half = np.int64(1) << (ib - 1)
    mask = (np.int64(1) << ib) - 1
    nz = 0
    for j in range(nn):
        idx = nb_clamp(nb_requant(acc[j], nparam[n0 + j, 0], nparam[n0 + j, 1], fl), -half, half - 1)
        y = nb_clamp(cp[ENTRY0 + (idx & mask)], lo, hi)
        out[n0 + j] = y
        nz += 1 if y != 0 else 0
    return nz


LUT = register(NeuronModel(
    name="lut", code=8, doc=__doc__, out_bits=8, ref_step=_ref_step, nb_step=_nb_step,
    core_params=CORE_PARAMS, neuron_params=REQUANT, timing_like="ann", reads_lut=lambda c: True,
    table_bytes=lambda c: ((1 << c.lut_index_bits) * c.lut_entry_bits + 7) // 8 if c.lut_index_bits else 0,
))
