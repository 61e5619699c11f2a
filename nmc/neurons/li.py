"""``li``: leaky integrator with membrane read-out (``nmc::LI``): no spikes, the output is the membrane: the
usual read-out layer of an SNN (e.g. logits as the last layer's membrane).

Float, per step (x input, v membrane)::

    v' = v_leak + beta*(v - v_leak) + gain*x          # output: v'

Integer (``M = core.membrane_bits``, ``B = core.beta_shift``): ``v' = sat_M(vl + floor((v - vl) * bm / 2^B) +
acc)`` with ``bm = round(beta * 2^B)``; the output register holds ``v'`` (32 bits, so ``M <= 32``), which the
host reads as ``v' / k`` (``k`` the layer's membrane scale).  The membrane is a read-out: it goes to the host,
not to other layers.
"""
from __future__ import annotations

from numba import njit
from onnx import helper

from ..opschema import AttrSpec, OpSchema, attr_const
from ._int import NJIT, NJIT_STEP, leak, nb_clamp, nb_leak, nb_limits, sat
from .lif import BETA_MULT, MEMBRANE, V_LEAK, beta_mult
from .model import NeuronModel, register

__all__ = ["LI"]


def _float_step(a, x, v):
    return (a["v_leak"] + a["beta"] * (v - a["v_leak"]) + a["gain"] * x,)


def _quantize(a, k, core):
    return dict(v_leak=int(round(k * a["v_leak"])), beta_mult=beta_mult(a["beta"], core))


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    vl, bm = int(cp[0]), int(cp[1])
    state[:, 0] = sat(leak(state[:, 0], vl, bm, core.beta_shift) + acc, core.membrane_bits)
    return state[:, 0].copy()


@njit(**NJIT_STEP)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    mmin, mmax = nb_limits(mem_bits)
    vl, bm = cp[0], cp[1]
    nz = 0
    for j in range(nn):
        n = n0 + j
        u = nb_clamp(nb_leak(state[n, 0], vl, bm, beta_shift) + acc[j], mmin, mmax)
        state[n, 0] = u
        out[n] = u
        nz += 1 if u != 0 else 0
    return nz


def _body(schema):
    mk = helper.make_node
    return [
        attr_const("beta", "beta", "float"), attr_const("vl", "v_leak", "float"), attr_const("gain", "gain", "float"),
        mk("Sub", ["v", "vl"], ["d"]), mk("Mul", ["beta", "d"], ["bd"]), mk("Add", ["vl", "bd"], ["lk"]),
        mk("Mul", ["gain", "x"], ["gx"]), mk("Add", ["lk", "gx"], ["v_next"]),
    ]


SCHEMA = OpSchema(
    name="LI", ir_op="li", inputs=("x", "v"), outputs=("v_next",),
    attrs={
        "beta": AttrSpec("float", 1.0, "membrane decay per step (1 = a pure integrator)", lo=0.0, hi=1.0),
        "v_leak": AttrSpec("float", 0.0, "resting potential the membrane decays to"),
        "gain": AttrSpec("float", 1.0, "input scale"),
    },
    doc="Leaky integrator (no spikes), one timestep: (x, v) -> v'; the membrane is the output.", body=_body,
)

LI = register(NeuronModel(
    name="li", code=11, doc=__doc__, out_bits=32, ref_step=_ref_step, nb_step=_nb_step,
    core_params=(V_LEAK, BETA_MULT), state=(MEMBRANE,), onnx=SCHEMA, output_port="v_next",
    float_step=_float_step, quantize=_quantize, membrane_attrs=("v_leak",), input_gain="gain",
    lossless=lambda a: a["beta"] in (0.0, 1.0), timing_like="lif", fuse_synapse=True,
))
