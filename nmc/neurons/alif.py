"""``alif``: LIF with an adaptive threshold (``nmc::ALIF``; Bellec et al. 2018): every spike raises the
neuron's threshold by ``adapt``, and the raise decays by ``rho`` per step.

Float, per step (x input, v membrane, a threshold adaptation, in membrane units)::

    u  = v_leak + beta*(v - v_leak) + x
    th = threshold + a
    s  = u >= th if spike_ge else u > th
    v' = subtract: u - s*th; zero: where(s, v_reset, u); none: u
    a' = rho*a + adapt*s

Integer (``M = core.membrane_bits``, ``B = core.beta_shift``; both state words M bits): ``u = sat_M(vl +
floor((v - vl) * bm / 2^B) + acc)``, ``th = thr + a``, fire and reset as ``lif`` against ``th`` (subtract
saturating), ``a' = sat_M(floor(a * rm / 2^B) + (adapt if s else 0))`` with ``rm = round(rho * 2^B)``.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from onnx import helper

from ..opschema import AttrSpec, OpSchema, attr_const
from ._int import NJIT, NJIT_STEP, fire, leak, nb_clamp, nb_fire, nb_leak, nb_limits, nb_reset, reset, sat
from .lif import (BETA_MULT, MEMBRANE, RESET_MODE, RESET_MODES, SPIKE_GE, THRESHOLD, V_LEAK, V_RESET, beta_mult,
                  membrane_params, mode_nodes)
from .model import NeuronModel, Param, StateWord, register

__all__ = ["ALIF"]

RHO_MULT = Param("rho_mult", lambda c: 0, lambda c: 1 << c.beta_shift, lambda c: c.beta_shift + 1,
                 "adaptation decay multiplier: rho = rho_mult / 2^core.beta_shift")
ADAPT = Param("adapt", lambda c: 0, lambda c: (1 << (c.membrane_bits - 1)) - 1, lambda c: c.membrane_bits,
              "threshold raise per spike (membrane units)")
ADAPTATION = StateWord("a", lambda c: c.membrane_bits, "a", "a_next", scaled=True)


def _float_step(a_, x, v, a):
    u = a_["v_leak"] + a_["beta"] * (v - a_["v_leak"]) + x
    th = a_["threshold"] + a
    f = u >= th if a_["spike_ge"] else u > th
    s = f.astype(np.float64)
    mode = a_["reset_mode"]
    fired = u - th if mode == "subtract" else (np.full_like(u, a_["v_reset"]) if mode == "zero" else u)
    return s, np.where(f, fired, u), a_["rho"] * a + a_["adapt"] * s


def _quantize(a, k, core):
    return dict(membrane_params(a, k, ("threshold", "v_reset", "v_leak", "adapt")), beta_mult=beta_mult(a["beta"], core),
                rho_mult=beta_mult(a["rho"], core))


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    M, B = core.membrane_bits, core.beta_shift
    thr, vr, vl, bm, mode, ge, rm, adapt = (int(x) for x in cp[:8])
    v, a = state[:, 0], state[:, 1]
    u = sat(leak(v, vl, bm, B) + acc, M)
    th = thr + a
    s = fire(u, th, ge)
    state[:, 0] = np.where(s, reset(u, mode, th, vr, M), u)
    state[:, 1] = sat(leak(a, 0, rm, B) + np.where(s, adapt, 0), M)
    return s.astype(np.int64)


@njit(**NJIT_STEP)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    mmin, mmax = nb_limits(mem_bits)
    thr, vr, vl, bm, mode = cp[0], cp[1], cp[2], cp[3], cp[4]
    ge = cp[5] != 0
    rm, adapt = cp[6], cp[7]
    nspk = 0
    for j in range(nn):
        n = n0 + j
        u = nb_clamp(nb_leak(state[n, 0], vl, bm, beta_shift) + acc[j], mmin, mmax)
        th = thr + state[n, 1]
        s = nb_fire(u, th, ge)
        state[n, 0] = nb_reset(u, mode, th, vr, mmin, mmax) if s else u
        state[n, 1] = nb_clamp(nb_leak(state[n, 1], 0, rm, beta_shift) + (adapt if s else 0), mmin, mmax)
        out[n] = 1 if s else 0
        nspk += 1 if s else 0
    return nspk


def _body(schema):
    mk = helper.make_node
    return [
        attr_const("beta", "beta", "float"), attr_const("thr", "threshold", "float"),
        attr_const("vr", "v_reset", "float"), attr_const("vl", "v_leak", "float"),
        attr_const("rho", "rho", "float"), attr_const("adapt", "adapt", "float"), *mode_nodes(),
        mk("Sub", ["v", "vl"], ["d"]), mk("Mul", ["beta", "d"], ["bd"]), mk("Add", ["vl", "bd"], ["lk"]),
        mk("Add", ["lk", "x"], ["u"]), mk("Add", ["thr", "a"], ["th"]),
        mk("GreaterOrEqual", ["u", "th"], ["u_ge"]), mk("Greater", ["u", "th"], ["u_gt"]),
        mk("And", ["ge", "u_ge"], ["u_ge_on"]), mk("Or", ["u_ge_on", "u_gt"], ["fired"]),
        mk("CastLike", ["fired", "x"], ["s"]),
        mk("Mul", ["s", "th"], ["sth"]), mk("Sub", ["u", "sth"], ["v_sub"]),
        mk("Where", ["fired", "vr", "u"], ["v_zero"]), mk("Where", ["is_zero", "v_zero", "u"], ["v_zn"]),
        mk("Where", ["is_sub", "v_sub", "v_zn"], ["v_next"]),
        mk("Mul", ["rho", "a"], ["ra"]), mk("Mul", ["adapt", "s"], ["as"]), mk("Add", ["ra", "as"], ["a_next"]),
    ]


SCHEMA = OpSchema(
    name="ALIF", ir_op="alif", inputs=("x", "v", "a"), outputs=("s", "v_next", "a_next"),
    attrs={
        "beta": AttrSpec("float", 1.0, "membrane decay per step (1 = IF)", lo=0.0, hi=1.0),
        "threshold": AttrSpec("float", 1.0, "base firing threshold", lo=0.0, lo_open=True),
        "reset_mode": AttrSpec("string", "subtract", "after a spike (subtract: the adapted threshold)",
                               choices=RESET_MODES),
        "v_reset": AttrSpec("float", 0.0, "membrane after a zero reset"),
        "v_leak": AttrSpec("float", 0.0, "resting potential the membrane decays to"),
        "spike_ge": AttrSpec("int", 0, "1: fire on >=, 0: on >", choices=(0, 1)),
        "rho": AttrSpec("float", 0.0, "decay of the threshold adaptation per step", lo=0.0, hi=1.0),
        "adapt": AttrSpec("float", 1.0, "threshold raise per spike", lo=0.0),
    },
    doc="LIF neuron with an adaptive threshold, one timestep: (x, v, a) -> (s, v', a').", body=_body,
)

ALIF = register(NeuronModel(
    name="alif", code=6, doc=__doc__, out_bits=1, ref_step=_ref_step, nb_step=_nb_step,
    core_params=(THRESHOLD, V_RESET, V_LEAK, BETA_MULT, RESET_MODE, SPIKE_GE, RHO_MULT, ADAPT),
    state=(MEMBRANE, ADAPTATION), onnx=SCHEMA, float_step=_float_step, quantize=_quantize,
    membrane_attrs=("threshold", "v_reset", "v_leak", "adapt"),
    lossless=lambda a: a["beta"] in (0.0, 1.0) and a["rho"] in (0.0, 1.0), timing_like="lif",
))
