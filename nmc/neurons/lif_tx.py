"""``lif_tx``: the LIF primitive of TianjicX as BiMap's behaviour simulator runs it (``nmc::LIFTX``).

It differs from ``lif`` in its order (integrate, fire, reset, *then* leak), in its leak (a decay with
an added constant, ``V <- floor(V * a / 2^B) + b``, no resting potential), in its reset modes
(numbered as the chip numbers them: 0 to ``v_reset``, 1 subtract the threshold, 2 subtract ``dv``,
3 none), in a refractory counter (whole steps, ``core.refractory_bits`` wide) and a membrane floor
``v_min`` (a lower clamp of the membrane and of the threshold).  It fires on ``>`` only.

Float, per step (x input, v membrane, r refractory steps left)::

    th = max(threshold, v_min) if floor else threshold
    u  = v + x if r <= 0 else v             # the input is ignored while refractory
    s  = u > th
    w  = reset(u) if s else u               # zero: v_reset; subtract: u - th; dv: u - dv; none: u
    v' = beta * w + leak
    v' = max(v', v_min) if floor
    r' = refractory if s else max(r - 1, 0)

Integer (``M = core.membrane_bits``, ``B = core.beta_shift``)::

    th = max(thr, vmin)
    u  = sat_M(v + acc) if r <= 0 else v
    s  = u > th
    w  = reset(u) if s else u               # 0: vr; 1: u - th; 2: u - dv; 3: u   (exact, no saturation)
    v' = max(sat_M(((w * bm) >> B) + b), vmin)
    r' = ref if s else (r - 1 if r > 0 else 0)

``vmin`` is ``-2^(M-1)`` when the floor is off (then it changes nothing).  Source: openBII/BiMap,
``src/simulator/behavior_simulator/primitive/prim_08.cpp`` (the LIF soma primitive); its random
threshold (LFSR), adaptive threshold and time window are not modelled (docs/neurons.md).
"""
from __future__ import annotations

import numpy as np
import onnx
from numba import njit
from onnx import helper

from ..opschema import AttrSpec, OpSchema, attr_const
from ._int import NJIT, NJIT_STEP, mem_limits, nb_clamp, nb_limits, sat
from .model import NeuronModel, Param, StateWord, register

__all__ = ["LIF_TX", "RESET_MODES_TX", "CORE_PARAMS", "MEMBRANE", "COUNTER", "float_core", "ref_core", "nb_core",
           "body_core", "quantize_tx", "ATTRS"]

#: the chip's reset-mode numbers: index in this tuple (BiMap prim_08 ``reset_mode``)
RESET_MODES_TX = ("zero", "subtract", "dv", "none")


def _lo(c):
    return mem_limits(c.membrane_bits)[0]


def _hi(c):
    return mem_limits(c.membrane_bits)[1]


def _mb(c):
    return c.membrane_bits


CORE_PARAMS = (
    Param("threshold", _lo, _hi, _mb, "firing threshold Vth0 (membrane units; fire on u > max(threshold, v_min))"),
    Param("v_reset", _lo, _hi, _mb, "membrane after a reset of mode 0"),
    Param("dv", _lo, _hi, _mb, "subtracted by a reset of mode 2"),
    Param("leak", _lo, _hi, _mb, "b of the leak V <- floor(V * a / 2^B) + b"),
    Param("beta_mult", lambda c: 0, lambda c: 1 << c.beta_shift, lambda c: c.beta_shift + 1,
          "a of the leak: beta = beta_mult / 2^core.beta_shift"),
    Param("v_min", _lo, _hi, _mb, "membrane floor VL (the lowest membrane and threshold); -2^(M-1): none"),
    Param("reset_mode", lambda c: 0, lambda c: 3, lambda c: 2, "0 to v_reset, 1 subtract threshold, 2 subtract dv, 3 none"),
    Param("refractory", lambda c: 0, lambda c: (1 << c.refractory_bits) - 1, lambda c: max(c.refractory_bits, 1),
          "steps the input is ignored after a spike (core.refractory_bits wide)"),
)
MEMBRANE = StateWord("v", _mb, "v", "v_next", scaled=True)
COUNTER = StateWord("r", lambda c: max(c.refractory_bits, 1), "r", "r_next", scaled=False)


def float_core(a, x, v, r, th):
    """The float step of the TianjicX LIF given the threshold ``th`` (a number or one per neuron)."""
    active = r <= 0
    u = np.where(active, v + x, v)
    f = u > th
    mode = a["reset_mode"]
    fired = {"zero": np.full_like(u, a["v_reset"]), "subtract": u - th, "dv": u - a["dv"], "none": u}[mode]
    w = np.where(f, fired, u)
    v_next = a["beta"] * w + a["leak"]
    if a["floor"]:
        v_next = np.maximum(v_next, a["v_min"])
    r_next = np.where(f, float(a["refractory"]), np.maximum(r - 1, 0))
    return f.astype(np.float64), v_next, r_next


def _float_step(a, x, v, r):
    return float_core(a, x, v, r, max(a["threshold"], a["v_min"]) if a["floor"] else a["threshold"])


def quantize_tx(a, k, core):
    vmin = int(round(k * a["v_min"])) if a["floor"] else _lo(core)
    return dict(threshold=int(round(k * a["threshold"])), v_reset=int(round(k * a["v_reset"])),
                dv=int(round(k * a["dv"])), leak=int(round(k * a["leak"])),
                beta_mult=int(round(float(a["beta"]) * 2 ** core.beta_shift)), v_min=vmin,
                reset_mode=RESET_MODES_TX.index(a["reset_mode"]), refractory=int(a["refractory"]))


def ref_core(acc, state, th, cp, core):
    """The integer step of the TianjicX LIF given the threshold ``th`` (one per neuron, or one): updates the
    state words ``v``, ``r`` (columns 0, 1) and returns the spikes."""
    M, B = core.membrane_bits, core.beta_shift
    _, vr, dv, b, bm, vmin, mode, ref = (int(x) for x in cp[:8])
    v, r = state[:, 0].copy(), state[:, 1].copy()
    u = np.where(r <= 0, sat(v + acc, M), v)
    s = u > th
    fired = (np.full_like(u, vr), u - th, u - dv, u)[mode]
    w = np.where(s, fired, u)
    state[:, 0] = np.maximum(sat(((w * bm) >> B) + b, M), vmin)
    state[:, 1] = np.where(s, ref, np.where(r > 0, r - 1, 0))
    return s.astype(np.int64)


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    return ref_core(acc, state, max(int(cp[0]), int(cp[5])), cp, core)


@njit(**NJIT)
def nb_core(state, n, a, th, cp, mmin, mmax, beta_shift):
    """One neuron of the TianjicX LIF given its threshold ``th``; returns 1 on a spike, else 0."""
    vr, dv, b, bm, vmin, mode, ref = cp[1], cp[2], cp[3], cp[4], cp[5], cp[6], cp[7]
    u = state[n, 0]
    r = state[n, 1]
    if r <= 0:
        u = nb_clamp(u + a, mmin, mmax)
    w = u
    spike = 0
    if u > th:
        if mode == 0:
            w = vr
        elif mode == 1:
            w = u - th
        elif mode == 2:
            w = u - dv
        state[n, 1] = ref
        spike = 1
    else:
        state[n, 1] = r - 1 if r > 0 else 0
    state[n, 0] = max(nb_clamp(((w * bm) >> beta_shift) + b, mmin, mmax), vmin)
    return spike


@njit(**NJIT_STEP)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    mmin, mmax = nb_limits(mem_bits)
    th = max(cp[0], cp[5])
    nspk = 0
    for j in range(nn):
        s = nb_core(state, n0 + j, acc[j], th, cp, mmin, mmax, beta_shift)
        out[n0 + j] = s
        nspk += s
    return nspk


def body_core() -> list[onnx.NodeProto]:
    """Function-body nodes of the TianjicX LIF after its threshold ``th`` is known (constants ``floor``, ``vmin``)."""
    mk = helper.make_node
    return [
        attr_const("beta", "beta", "float"),
        attr_const("vr", "v_reset", "float"), attr_const("dv", "dv", "float"),
        attr_const("leak", "leak", "float"),
        attr_const("ref_i", "refractory", "int"),
        attr_const("mode", "reset_mode", "string"),
        *[mk("Constant", [], [f"s_{m}"], value_string=m) for m in ("zero", "subtract", "dv")],
        *[mk("Equal", ["mode", f"s_{m}"], [f"is_{m}"]) for m in ("zero", "subtract", "dv")],
        mk("CastLike", ["ref_i", "r"], ["ref"]),
        mk("Constant", [], ["zero_i"], value_int=0), mk("CastLike", ["zero_i", "r"], ["zero"]),
        mk("Constant", [], ["one_i"], value_int=1), mk("CastLike", ["one_i", "r"], ["one"]),
        mk("LessOrEqual", ["r", "zero"], ["active"]),
        mk("Add", ["v", "x"], ["vx"]), mk("Where", ["active", "vx", "v"], ["u"]),
        mk("Greater", ["u", "th"], ["fired"]), mk("CastLike", ["fired", "x"], ["s"]),
        mk("Sub", ["u", "th"], ["u_sub"]), mk("Sub", ["u", "dv"], ["u_dv"]),
        mk("Where", ["is_dv", "u_dv", "u"], ["w_dv"]), mk("Where", ["is_subtract", "u_sub", "w_dv"], ["w_sub"]),
        mk("CastLike", ["vr", "u"], ["vr_u"]), mk("Where", ["is_zero", "vr_u", "w_sub"], ["w_fired"]),
        mk("Where", ["fired", "w_fired", "u"], ["w"]),
        mk("Mul", ["beta", "w"], ["bw"]), mk("Add", ["bw", "leak"], ["v_lk"]),
        mk("Max", ["v_lk", "vmin"], ["v_fl"]), mk("Where", ["floor", "v_fl", "v_lk"], ["v_next"]),
        mk("Sub", ["r", "one"], ["r_dec"]), mk("Max", ["r_dec", "zero"], ["r_dn"]),
        mk("Mul", ["s", "ref"], ["r_set"]), mk("Where", ["fired", "r_set", "r_dn"], ["r_next"]),
    ]


def _body(schema):
    mk = helper.make_node
    return [
        attr_const("thr0", "threshold", "float"), attr_const("vmin", "v_min", "float"),
        attr_const("floor_i", "floor", "int"), mk("Cast", ["floor_i"], ["floor"], to=onnx.TensorProto.BOOL),
        mk("Max", ["thr0", "vmin"], ["thr_f"]), mk("Where", ["floor", "thr_f", "thr0"], ["th"]),
        *body_core(),
    ]


#: the attributes of nmc::LIFTX (nmc::LIFTXRand adds its own)
ATTRS = {
    "beta": AttrSpec("float", 1.0, "membrane decay per step, applied after the reset (1 = IF)", lo=0.0, hi=1.0),
    "leak": AttrSpec("float", 0.0, "constant added to the membrane every step after the decay"),
    "threshold": AttrSpec("float", 1.0, "firing threshold (fire on u > threshold)"),
    "reset_mode": AttrSpec("string", "zero", "after a spike: to v_reset, subtract the threshold, subtract dv, none",
                           choices=RESET_MODES_TX),
    "v_reset": AttrSpec("float", 0.0, "membrane after a reset of mode 'zero'"),
    "dv": AttrSpec("float", 0.0, "subtracted from the membrane by a reset of mode 'dv'"),
    "floor": AttrSpec("int", 0, "1: clamp the membrane and the threshold below at v_min", choices=(0, 1)),
    "v_min": AttrSpec("float", 0.0, "membrane floor (with floor=1)"),
    "refractory": AttrSpec("int", 0, "steps the input is ignored after a spike", lo=0),
}

SCHEMA = OpSchema(
    name="LIFTX", ir_op="lif_tx", inputs=("x", "v", "r"), outputs=("s", "v_next", "r_next"), attrs=ATTRS,
    doc="TianjicX LIF neuron, one timestep: (x, v, r) -> (s, v', r').", body=_body,
)

LIF_TX = register(NeuronModel(
    name="lif_tx", code=7, doc=__doc__, out_bits=1, ref_step=_ref_step, nb_step=_nb_step,
    core_params=CORE_PARAMS, state=(MEMBRANE, COUNTER), onnx=SCHEMA, float_step=_float_step, quantize=quantize_tx,
    membrane_attrs=("threshold", "v_reset", "dv", "leak", "v_min"), lossless=lambda a: a["beta"] in (0.0, 1.0),
    timing_like="lif",
))
