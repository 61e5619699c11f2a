"""``cubalif``: current-based LIF (``nmc::CubaLIF``): the order of snnTorch's ``Synaptic`` with an immediate
(not delayed) reset; Norse's ``LIFCell`` (input into the current, membrane from it, then the current decays)
spikes like it with the input scaled by ``dt * tau_mem_inv`` (frontend/export_torch.py).

Float, per step (x input, i synaptic current, v membrane)::

    i' = alpha*i + x
    u  = beta*v + i'
    s  = fire(u)                      # u >= threshold if spike_ge else u > threshold
    v' = subtract: u - s*threshold; zero: where(s, v_reset, u); none: u

Integer (``M = core.membrane_bits``, ``B = core.beta_shift``; both state words are M bits):
``i' = sat_M(floor(i * am / 2^B) + acc)``, ``u = sat_M(floor(v * bm / 2^B) + i')`` with
``am = round(alpha * 2^B)``, ``bm = round(beta * 2^B)``; fire and reset as ``lif`` (subtract saturating).
"""
from __future__ import annotations

import numpy as np
from numba import njit
from onnx import helper

from ..opschema import AttrSpec, OpSchema, attr_const
from ._int import NJIT, NJIT_STEP, fire, leak, nb_clamp, nb_fire, nb_leak, nb_limits, nb_reset, reset, sat
from .lif import (BETA_MULT, MEMBRANE, RESET_MODE, RESET_MODES, SPIKE_GE, THRESHOLD, V_RESET, beta_mult, fire_float,
                  fire_nodes, membrane_params, mode_nodes, reset_float, reset_nodes)
from .model import NeuronModel, Param, StateWord, register

__all__ = ["CUBALIF"]

ALPHA_MULT = Param("alpha_mult", lambda c: 0, lambda c: 1 << c.beta_shift, lambda c: c.beta_shift + 1,
                   "current decay multiplier: alpha = alpha_mult / 2^core.beta_shift")
CURRENT = StateWord("i", lambda c: c.membrane_bits, "i", "i_next", scaled=True)


def _float_step(a, x, i, v):
    i_next = a["alpha"] * i + x
    u = a["beta"] * v + i_next
    f = fire_float(u, a)
    return f.astype(np.float64), i_next, np.where(f, reset_float(u, a), u)


def _quantize(a, k, core):
    return dict(membrane_params(a, k, ("threshold", "v_reset")), alpha_mult=beta_mult(a["alpha"], core),
                beta_mult=beta_mult(a["beta"], core))


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    M, B = core.membrane_bits, core.beta_shift
    thr, vr, am, bm, mode, ge = (int(x) for x in cp[:6])
    i = sat(leak(state[:, 0], 0, am, B) + acc, M)
    u = sat(leak(state[:, 1], 0, bm, B) + i, M)
    s = fire(u, thr, ge)
    state[:, 0] = i
    state[:, 1] = np.where(s, reset(u, mode, thr, vr, M), u)
    return s.astype(np.int64)


@njit(**NJIT_STEP)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    mmin, mmax = nb_limits(mem_bits)
    thr, vr, am, bm, mode = cp[0], cp[1], cp[2], cp[3], cp[4]
    ge = cp[5] != 0
    nspk = 0
    for j in range(nn):
        i = nb_clamp(nb_leak(state[n0 + j, 0], 0, am, beta_shift) + acc[j], mmin, mmax)
        u = nb_clamp(nb_leak(state[n0 + j, 1], 0, bm, beta_shift) + i, mmin, mmax)
        s = nb_fire(u, thr, ge)
        state[n0 + j, 0] = i
        state[n0 + j, 1] = nb_reset(u, mode, thr, vr, mmin, mmax) if s else u
        out[n0 + j] = 1 if s else 0
        nspk += 1 if s else 0
    return nspk


def _body(schema):
    mk = helper.make_node
    return [
        attr_const("alpha", "alpha", "float"), attr_const("beta", "beta", "float"),
        attr_const("thr", "threshold", "float"), attr_const("vr", "v_reset", "float"), *mode_nodes(),
        mk("Mul", ["alpha", "i"], ["ai"]), mk("Add", ["ai", "x"], ["i_next"]),
        mk("Mul", ["beta", "v"], ["bv"]), mk("Add", ["bv", "i_next"], ["u"]),
        *fire_nodes("u", "u"), mk("CastLike", ["fire_u", "x"], ["s"]),
        *reset_nodes("u", "fire_u", "v_next"),
    ]


SCHEMA = OpSchema(
    name="CubaLIF", ir_op="cubalif", inputs=("x", "i", "v"), outputs=("s", "i_next", "v_next"),
    attrs={
        "alpha": AttrSpec("float", 0.0, "synaptic current decay per step", lo=0.0, hi=1.0),
        "beta": AttrSpec("float", 1.0, "membrane decay per step", lo=0.0, hi=1.0),
        "threshold": AttrSpec("float", 1.0, "firing threshold", lo=0.0, lo_open=True),
        "reset_mode": AttrSpec("string", "subtract", "after a spike", choices=RESET_MODES),
        "v_reset": AttrSpec("float", 0.0, "membrane after a zero reset"),
        "spike_ge": AttrSpec("int", 0, "1: fire on >=, 0: on >", choices=(0, 1)),
    },
    doc="Current-based LIF neuron, one timestep: (x, i, v) -> (s, i', v').", body=_body,
)

CUBALIF = register(NeuronModel(
    name="cubalif", code=4, doc=__doc__, out_bits=1, ref_step=_ref_step, nb_step=_nb_step,
    core_params=(THRESHOLD, V_RESET, ALPHA_MULT, BETA_MULT, RESET_MODE, SPIKE_GE),
    state=(CURRENT, MEMBRANE), onnx=SCHEMA, float_step=_float_step, quantize=_quantize,
    membrane_attrs=("threshold", "v_reset"), lossless=lambda a: a["alpha"] in (0.0, 1.0) and a["beta"] in (0.0, 1.0),
    timing_like="lif",
))
