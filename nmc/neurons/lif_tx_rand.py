"""``lif_tx_rand``: the TianjicX LIF (``lif_tx``) with its random threshold (``nmc::LIFTXRand``).

Every step, before anything else, each neuron advances its 32-bit LFSR once and adds a noise drawn
from it to the threshold (BiMap ``prim_08``: ``lfsr::update``, ``lfsr_mask``, ``Vth = Vth0 + noise``)::

    bit = (q ^ q>>1 ^ q>>2 ^ q>>3 ^ q>>5 ^ q>>7) & 1        # taps 0, 1, 2, 3, 5, 7
    q   = (bit << 31) | (q >> 1)                             # q: the register, 0 <= q < 2^32
    o   = q - 2^32 if q >= 2^31 else q                       # read as a signed 32-bit number
    noise = o & VM if o >= 0 else -((-o - 1) & VM)           # VM = 2^rand_bits - 1
    th  = max(sat_M(threshold + noise), v_min if floor)      # then the lif_tx step with this threshold

The register is kept as two state words of 16 bits, ``qh = q >> 16`` and ``ql = q & 0xFFFF`` (exact in
the float32 tensors of an ONNX model); each neuron has its own register, seeded by its initial state
(:func:`lfsr_seeds`), where the chip steps one register per core through its neurons in order, so
the streams differ from the chip's while every number of them is the chip's arithmetic.  The noise is
in the chip's membrane units: the layer must compile with membrane scale 1 (integer weights and
parameters).
"""
from __future__ import annotations

import numpy as np
import onnx
from numba import njit
from onnx import helper

from ..opschema import AttrSpec, OpSchema, attr_const
from ._int import NJIT, NJIT_STEP, nb_clamp, nb_limits, sat
from .lif_tx import ATTRS, CORE_PARAMS, COUNTER, MEMBRANE, body_core, float_core, nb_core, quantize_tx, ref_core
from .model import NeuronModel, Param, StateWord, register

__all__ = ["LIF_TX_RAND", "lfsr_next", "lfsr_noise", "lfsr_seeds"]

RAND_BITS = Param("rand_bits", lambda c: 0, lambda c: c.membrane_bits - 1, lambda c: 5,
                  "threshold noise mask VM = 2^rand_bits - 1 (0: no noise)")
# unsigned 16-bit halves, in signed state words of 17 bits
Q_HI = StateWord("qh", lambda c: 17, "qh", "qh_next", scaled=False)
Q_LO = StateWord("ql", lambda c: 17, "ql", "ql_next", scaled=False)
_M32 = (1 << 32) - 1


def lfsr_next(q):
    """One step of the register (NumPy, int64 or Python int in ``[0, 2^32)``)."""
    bit = (q ^ (q >> 1) ^ (q >> 2) ^ (q >> 3) ^ (q >> 5) ^ (q >> 7)) & 1
    return (bit << 31) | (q >> 1)


def lfsr_noise(q, rand_bits: int):
    """The threshold noise of register value ``q`` with the mask ``2^rand_bits - 1``."""
    vm = (1 << int(rand_bits)) - 1
    o = np.where(q >= (1 << 31), q - (1 << 32), q)
    return np.where(o >= 0, o & vm, -((-o - 1) & vm))


def _fmix32(h):
    h = h & _M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def lfsr_seeds(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Initial ``(qh, ql)`` of ``n`` neurons from one seed: ``q_i = fmix32((seed + i * 0x9E3779B9) mod 2^32)``
    (MurmurHash3's finaliser), 1 where that is 0 (an all-zero register stays zero)."""
    i = np.arange(n, dtype=np.int64)
    q = _fmix32((int(seed) + i * 0x9E3779B9) & _M32)
    q = np.where(q == 0, 1, q)
    return (q >> 16).astype(np.float64), (q & 0xFFFF).astype(np.float64)


def _split(state_hi, state_lo):
    q = lfsr_next((state_hi.astype(np.int64) << 16) | state_lo.astype(np.int64))
    return q, q >> 16, q & 0xFFFF


def _float_step(a, x, v, r, qh, ql):
    q, qh2, ql2 = _split(qh, ql)
    th = a["threshold"] + lfsr_noise(q, a["rand_bits"])
    if a["floor"]:
        th = np.maximum(th, a["v_min"])
    s, v_next, r_next = float_core(a, x, v, r, th)
    return s, v_next, r_next, qh2.astype(np.float64), ql2.astype(np.float64)


def _quantize(a, k, core):
    if a["rand_bits"] and k != 1.0:
        raise ValueError(f"a random threshold (rand_bits {a['rand_bits']}) needs membrane scale 1 (integer weights, "
                         f"threshold and membrane parameters), not {k:g}")
    return dict(quantize_tx(a, k, core), rand_bits=int(a["rand_bits"]))


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    q, qh, ql = _split(state[:, 2], state[:, 3])
    th = np.maximum(sat(int(cp[0]) + lfsr_noise(q, int(cp[8])), core.membrane_bits), int(cp[5]))
    state[:, 2], state[:, 3] = qh, ql
    return ref_core(acc, state, th, cp, core)


@njit(**NJIT_STEP)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    mmin, mmax = nb_limits(mem_bits)
    vm = (np.int64(1) << cp[8]) - 1
    nspk = 0
    for j in range(nn):
        n = n0 + j
        q = (state[n, 2] << 16) | state[n, 3]
        bit = (q ^ (q >> 1) ^ (q >> 2) ^ (q >> 3) ^ (q >> 5) ^ (q >> 7)) & 1
        q = (bit << 31) | (q >> 1)
        state[n, 2] = q >> 16
        state[n, 3] = q & 0xFFFF
        o = q - (np.int64(1) << 32) if q >= (np.int64(1) << 31) else q
        noise = (o & vm) if o >= 0 else -((-o - 1) & vm)
        th = max(nb_clamp(cp[0] + noise, mmin, mmax), cp[5])
        s = nb_core(state, n, acc[j], th, cp, mmin, mmax, beta_shift)
        out[n] = s
        nspk += s
    return nspk


def _body(schema):
    mk = helper.make_node
    I64, U64 = onnx.TensorProto.INT64, onnx.TensorProto.UINT64

    def u64(name, value):
        return mk("Constant", [], [name], value=helper.make_tensor(name, U64, [], [value]))

    shifts = [u64(f"k{b}", b) for b in (1, 2, 3, 5, 7, 16, 31)]
    return [
        attr_const("thr0", "threshold", "float"), attr_const("vmin", "v_min", "float"),
        attr_const("floor_i", "floor", "int"), mk("Cast", ["floor_i"], ["floor"], to=onnx.TensorProto.BOOL),
        attr_const("rb_i", "rand_bits", "int"),
        *shifts, u64("one_u", 1), u64("lo16", 0xFFFF),
        mk("Constant", [], ["two31"], value=helper.make_tensor("two31", I64, [], [1 << 31])),
        mk("Constant", [], ["two32"], value=helper.make_tensor("two32", I64, [], [1 << 32])),
        mk("Constant", [], ["zero64"], value=helper.make_tensor("zero64", I64, [], [0])),
        mk("Constant", [], ["one64"], value=helper.make_tensor("one64", I64, [], [1])),
        # the register q = qh << 16 | ql, as uint64
        mk("Cast", ["qh"], ["qh_u"], to=U64), mk("Cast", ["ql"], ["ql_u"], to=U64),
        mk("BitShift", ["qh_u", "k16"], ["qh_s"], direction="LEFT"), mk("BitwiseOr", ["qh_s", "ql_u"], ["q"]),
        *[mk("BitShift", ["q", f"k{b}"], [f"q{b}"], direction="RIGHT") for b in (1, 2, 3, 5, 7)],
        mk("BitwiseXor", ["q", "q1"], ["t1"]), mk("BitwiseXor", ["t1", "q2"], ["t2"]),
        mk("BitwiseXor", ["t2", "q3"], ["t3"]), mk("BitwiseXor", ["t3", "q5"], ["t5"]),
        mk("BitwiseXor", ["t5", "q7"], ["t7"]), mk("BitwiseAnd", ["t7", "one_u"], ["bit"]),
        mk("BitShift", ["bit", "k31"], ["bit31"], direction="LEFT"), mk("BitwiseOr", ["bit31", "q1"], ["qn"]),
        mk("BitShift", ["qn", "k16"], ["qh_n"], direction="RIGHT"), mk("BitwiseAnd", ["qn", "lo16"], ["ql_n"]),
        mk("CastLike", ["qh_n", "qh"], ["qh_next"]), mk("CastLike", ["ql_n", "ql"], ["ql_next"]),
        # the signed reading o and the noise
        mk("Cast", ["qn"], ["qn_i"], to=I64), mk("GreaterOrEqual", ["qn_i", "two31"], ["neg"]),
        mk("Sub", ["qn_i", "two32"], ["qn_m"]), mk("Where", ["neg", "qn_m", "qn_i"], ["o"]),
        mk("Cast", ["rb_i"], ["rb"], to=I64), mk("Cast", ["rb"], ["rb_u"], to=U64),
        mk("BitShift", ["one_u", "rb_u"], ["vm_p"], direction="LEFT"), mk("Cast", ["vm_p"], ["vm_pi"], to=I64),
        mk("Sub", ["vm_pi", "one64"], ["vm"]),
        mk("BitwiseAnd", ["o", "vm"], ["pos"]),
        mk("Neg", ["o"], ["o_neg"]), mk("Sub", ["o_neg", "one64"], ["o_inv"]),
        mk("BitwiseAnd", ["o_inv", "vm"], ["neg_m"]), mk("Neg", ["neg_m"], ["neg_n"]),
        mk("GreaterOrEqual", ["o", "zero64"], ["o_pos"]), mk("Where", ["o_pos", "pos", "neg_n"], ["noise_i"]),
        mk("CastLike", ["noise_i", "x"], ["noise"]), mk("CastLike", ["thr0", "x"], ["thr0_x"]),
        mk("Add", ["thr0_x", "noise"], ["th_r"]), mk("CastLike", ["vmin", "x"], ["vmin_x"]),
        mk("Max", ["th_r", "vmin_x"], ["th_f"]), mk("Where", ["floor", "th_f", "th_r"], ["th"]),
        *body_core(),
    ]


SCHEMA = OpSchema(
    name="LIFTXRand", ir_op="lif_tx_rand", inputs=("x", "v", "r", "qh", "ql"),
    outputs=("s", "v_next", "r_next", "qh_next", "ql_next"),
    attrs={**ATTRS, "rand_bits": AttrSpec("int", 0, "threshold noise of up to 2^rand_bits - 1 either way (LFSR)",
                                          lo=0, hi=27)},
    doc="TianjicX LIF neuron with its LFSR random threshold, one timestep: (x, v, r, qh, ql) -> (s, v', r', qh', ql').",
    body=_body,
)

LIF_TX_RAND = register(NeuronModel(
    name="lif_tx_rand", code=9, doc=__doc__, out_bits=1, ref_step=_ref_step, nb_step=_nb_step,
    core_params=(*CORE_PARAMS, RAND_BITS), state=(MEMBRANE, COUNTER, Q_HI, Q_LO), onnx=SCHEMA,
    float_step=_float_step, quantize=_quantize, membrane_attrs=("threshold", "v_reset", "dv", "leak", "v_min"),
    lossless=lambda a: a["beta"] in (0.0, 1.0), timing_like="lif",
))
