"""``lut``: the ANN soma with a look-up table activation (Sigmoid, Tanh, HardSigmoid, LeakyRelu, PRelu, Clip,
Elu, Selu, Softplus, Softsign, ThresholdedRelu, Celu, Mish, Gelu, HardSwish; the links of ONNX LRN's chain).

The requantiser of ``ann`` (per-neuron ``mult``, ``shift``; core parameter ``floor``) turns the
accumulator into a signed table index of ``I = core.lut_index_bits`` bits, clamped; the table entry at
that index (negative indices wrap: entry ``idx mod 2^I``, as TianjicX's BiMap ``prim_07`` reads its
table) is the output, clamped to the core's output range::

    idx    = clamp(requant(acc), -2^(I-1), 2^(I-1) - 1)
    out[n] = clamp(lut[idx mod 2^I], lo, hi)

Core parameters: ``floor``, ``index_bits`` (= ``core.lut_index_bits``), then the ``2^I`` one-byte entries
packed four to a word, ``lut_w0 ..`` (entry ``4w + j`` in bits ``8j .. 8j + 7`` of word ``w``; the model
declares 64 words, the most an 8-bit index reads); an entry's byte is read as int8 when the core's output
range has negative values, else as uint8.
Every update reads the table once (event ``lut_read``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._int import NJIT, NJIT_STEP, nb_clamp
from .ann import FLOOR, REQUANT, nb_requant, requant
from .model import NeuronModel, Param, register

__all__ = ["LUT", "MAX_ENTRIES", "ENTRY0", "pack_table", "entry"]

#: table entries the model declares: an 8-bit index (core.lut_index_bits <= 8)
MAX_ENTRIES = 256
#: entries packed into one core-parameter word (one byte each, entry 4w + j in bits 8j .. 8j + 7 of word w)
PER_WORD = 4
#: index of the first table word among the core parameters
ENTRY0 = 2


def _word(w: int) -> Param:
    def bits(c):  # the bytes of this word the chip's table uses
        return 8 * max(0, min(PER_WORD, (1 << c.lut_index_bits) - PER_WORD * w)) if c.lut_index_bits else 0
    return Param(f"lut_w{w}", lambda c: 0, lambda c: (1 << bits(c)) - 1, bits,
                 f"table entries {PER_WORD * w} .. {PER_WORD * w + PER_WORD - 1}, one byte each (entry 4w + j in bits "
                 "8j .. 8j + 7); beyond 2^core.lut_index_bits entries: 0")


CORE_PARAMS = (FLOOR, Param("index_bits", lambda c: c.lut_index_bits, lambda c: c.lut_index_bits, lambda c: 4,
                            "table index width (core.lut_index_bits)"),
               *(_word(w) for w in range(MAX_ENTRIES // PER_WORD)))


def pack_table(entries) -> np.ndarray:
    """The core-parameter words of a table of byte entries (int8 or uint8 values)."""
    b = np.asarray(entries, np.int64) & 0xFF
    b = np.concatenate([b, np.zeros((-b.size) % PER_WORD, np.int64)]).reshape(-1, PER_WORD)
    return (b << (8 * np.arange(PER_WORD))).sum(axis=1)


def entry(cp, e, signed):
    """Table entry ``e`` (NumPy): its byte, read as int8 when ``signed`` else as uint8."""
    b = (cp[ENTRY0 + (e >> 2)] >> (8 * (e & 3))) & 0xFF
    return np.where(signed & (b >= 128), b - 256, b)


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    fl, ib = int(cp[0]), int(cp[1])
    half = 1 << (ib - 1)
    idx = np.clip(requant(acc, nparam, fl), -half, half - 1)
    return np.clip(entry(cp, idx & ((1 << ib) - 1), lo < 0), lo, hi)


@njit(**NJIT_STEP)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    fl, ib = cp[0], cp[1]
    half = np.int64(1) << (ib - 1)
    mask = (np.int64(1) << ib) - 1
    signed = lo < 0
    nz = 0
    for j in range(nn):
        e = nb_clamp(nb_requant(acc[j], nparam[n0 + j, 0], nparam[n0 + j, 1], fl), -half, half - 1) & mask
        b = (cp[ENTRY0 + (e >> 2)] >> (8 * (e & 3))) & 0xFF
        if signed and b >= 128:
            b -= 256
        y = nb_clamp(b, lo, hi)
        out[n0 + j] = y
        nz += 1 if y != 0 else 0
    return nz


LUT = register(NeuronModel(
    name="lut", code=8, doc=__doc__, out_bits=8, ref_step=_ref_step, nb_step=_nb_step,
    core_params=CORE_PARAMS, neuron_params=REQUANT, timing_like="ann", reads_lut=lambda c: True,
    table_bytes=lambda c: ((1 << c.lut_index_bits) * c.lut_entry_bits + 7) // 8 if c.lut_index_bits else 0,
))
