"""``lif_refractory``: LIF with a refractory period (``nmc::LIFRefractory``; Tianjic keeps refractory
memory per neuron, TianjicX a counter).

Float, per step (x input, v membrane, r refractory steps left)::

    if r > 0:  s = 0; v' = v; r' = r - 1                  # refractory: input ignored, membrane held
    else:      u  = v_leak + beta*(v - v_leak) + x
               s  = fire(u)                             # u >= threshold if spike_ge else u > threshold
               v' = reset(u) if s else u                # subtract | zero (to v_reset) | none
               r' = refractory if s else 0

Integer: as ``lif`` (``u = sat_M(vl + floor((v - vl) * bm / 2^B) + acc)``); the counter is a state word
of ``core.membrane_bits`` bits holding whole steps.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from onnx import helper

from ..opschema import AttrSpec, OpSchema, attr_const
from ._int import NJIT, NJIT_STEP, fire, leak, nb_clamp, nb_fire, nb_leak, nb_limits, nb_reset, reset, sat
from .lif import (BETA_MULT, MEMBRANE, RESET_MODE, RESET_MODES, SPIKE_GE, THRESHOLD, V_LEAK, V_RESET, beta_mult,
                  fire_float, fire_nodes, membrane_params, mode_nodes, reset_float, reset_nodes)
from .model import NeuronModel, Param, StateWord, register

__all__ = ["LIF_REFRACTORY"]

REFRACTORY = Param("refractory", lambda c: 0, lambda c: (1 << (c.membrane_bits - 1)) - 1, lambda c: c.membrane_bits,
                   "steps a neuron ignores its input after a spike")
COUNTER = StateWord("r", lambda c: c.membrane_bits, "r", "r_next", scaled=False)


def _float_step(a, x, v, r):
    active = r <= 0
    u = a["v_leak"] + a["beta"] * (v - a["v_leak"]) + x
    f = fire_float(u, a) & active
    s = f.astype(np.float64)
    v_next = np.where(active, np.where(f, reset_float(u, a), u), v)
    r_next = np.where(active, s * a["refractory"], r - 1)
    return s, v_next, r_next


def _quantize(a, k, core):
    return dict(membrane_params(a, k), beta_mult=beta_mult(a["beta"], core), refractory=int(a["refractory"]))


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    M, B = core.membrane_bits, core.beta_shift
    thr, vr, vl, bm, mode, ge, ref = (int(x) for x in cp[:7])
    v, r = state[:, 0].copy(), state[:, 1].copy()
    active = r <= 0
    u = sat(leak(v, vl, bm, B) + acc, M)
    s = fire(u, thr, ge) & active
    state[:, 0] = np.where(active, np.where(s, reset(u, mode, thr, vr, M), u), v)
    state[:, 1] = np.where(active, np.where(s, ref, 0), r - 1)
    return s.astype(np.int64)


@njit(**NJIT_STEP)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    mmin, mmax = nb_limits(mem_bits)
    thr, vr, vl, bm, mode = cp[0], cp[1], cp[2], cp[3], cp[4]
    ge = cp[5] != 0
    ref = cp[6]
    nspk = 0
    for j in range(nn):
        n = n0 + j
        if state[n, 1] > 0:
            state[n, 1] -= 1
            out[n] = 0
            continue
        vj = state[n, 0]
        u = nb_clamp(nb_leak(vj, vl, bm, beta_shift) + acc[j], mmin, mmax)
        if nb_fire(u, thr, ge):
            state[n, 0] = nb_reset(u, mode, thr, vr, mmin, mmax)
            state[n, 1] = ref
            out[n] = 1
            nspk += 1
        else:
            state[n, 0] = u
            state[n, 1] = 0
            out[n] = 0
    return nspk


def _body(schema):
    mk = helper.make_node
    return [
        attr_const("beta", "beta", "float"), attr_const("thr", "threshold", "float"),
        attr_const("vr", "v_reset", "float"), attr_const("vl", "v_leak", "float"),
        attr_const("ref_i", "refractory", "int"), *mode_nodes(),
        mk("CastLike", ["ref_i", "r"], ["ref"]),
        mk("Constant", [], ["zero_i"], value_int=0), mk("CastLike", ["zero_i", "r"], ["zero"]),
        mk("Constant", [], ["one_i"], value_int=1), mk("CastLike", ["one_i", "r"], ["one"]),
        mk("LessOrEqual", ["r", "zero"], ["active"]),
        mk("Sub", ["v", "vl"], ["d"]), mk("Mul", ["beta", "d"], ["bd"]), mk("Add", ["vl", "bd"], ["lk"]),
        mk("Add", ["lk", "x"], ["u"]),
        *fire_nodes("u", "u"), mk("And", ["fire_u", "active"], ["fired"]),
        mk("CastLike", ["fired", "x"], ["s"]),
        *reset_nodes("u", "fired", "v_act"),
        mk("Where", ["active", "v_act", "v"], ["v_next"]),
        mk("Mul", ["s", "ref"], ["r_set"]), mk("Sub", ["r", "one"], ["r_dec"]),
        mk("Where", ["active", "r_set", "r_dec"], ["r_next"]),
    ]


SCHEMA = OpSchema(
    name="LIFRefractory", ir_op="lif_refractory", inputs=("x", "v", "r"), outputs=("s", "v_next", "r_next"),
    attrs={
        "beta": AttrSpec("float", 1.0, "membrane decay per step (1 = IF)", lo=0.0, hi=1.0),
        "threshold": AttrSpec("float", 1.0, "firing threshold", lo=0.0, lo_open=True),
        "reset_mode": AttrSpec("string", "zero", "after a spike", choices=RESET_MODES),
        "v_reset": AttrSpec("float", 0.0, "membrane after a zero reset"),
        "v_leak": AttrSpec("float", 0.0, "resting potential the membrane decays to"),
        "spike_ge": AttrSpec("int", 0, "1: fire on >=, 0: on >", choices=(0, 1)),
        "refractory": AttrSpec("int", 1, "steps the input is ignored after a spike", lo=0),
    },
    doc="LIF neuron with a refractory period, one timestep: (x, v, r) -> (s, v', r').", body=_body,
)

LIF_REFRACTORY = register(NeuronModel(
    name="lif_refractory", code=5, doc=__doc__, out_bits=1, ref_step=_ref_step, nb_step=_nb_step,
    core_params=(THRESHOLD, V_RESET, V_LEAK, BETA_MULT, RESET_MODE, SPIKE_GE, REFRACTORY),
    state=(MEMBRANE, COUNTER), onnx=SCHEMA, float_step=_float_step, quantize=_quantize,
    membrane_attrs=("threshold", "v_reset", "v_leak"), lossless=lambda a: a["beta"] in (0.0, 1.0),
    timing_like="lif",
))
