"""``lift``: LIF with per-neuron parameters (``nmc::LIFT``): ``beta``, ``threshold``, ``v_reset`` and ``v_leak``
are constant tensors (one value per neuron, or any shape that broadcasts to the neurons'), not attributes.

Float, per step and neuron: exactly ``nmc::LIF``'s (see :mod:`nmc.neurons.lif`) with that neuron's values::

    r  = fire(v) if reset_delay else 0
    u  = v_leak + beta*(v - v_leak) + gain*x
    if reset_delay: subtract: u -= r*threshold; zero: u = where(r, v_reset, u); none: u
    s  = fire(u)
    v' = u if reset_delay else (subtract: u - s*threshold; zero: where(s, v_reset, u); none: u)

Integer: ``lif``'s step with ``thr``, ``vr``, ``vl`` and ``bm`` read from the neuron's parameters
(``neurons.param[n]``: threshold, v_reset, v_leak, beta_mult) instead of the core's; reset mode, spike_ge and
reset_delay stay core parameters.  The per-neuron values cost ``3 * ceil(M / 8) + ceil((B + 1) / 8)`` bytes of
neuron memory per neuron (``M = core.membrane_bits``, ``B = core.beta_shift``).
"""
from __future__ import annotations

import numpy as np
import onnx
from numba import njit
from onnx import helper

from ..opschema import AttrSpec, OpSchema, attr_const
from ._int import NJIT, NJIT_STEP, nb_limits
from .lif import (BETA_MULT, MEMBRANE, RESET_DELAY, RESET_MODE, RESET_MODES, SPIKE_GE, THRESHOLD, V_LEAK, V_RESET,
                  fire_nodes, lif_float_step, lif_update, mode_nodes, nb_lif_update, reset_nodes)
from .lif import SCHEMA as LIF_SCHEMA
from .model import NeuronModel, register

__all__ = ["LIFT"]


def _float_step(a: dict, x, v):
    """LIF's float step with the per-neuron arrays (LIF's defaults for any LIF attribute LIFT does not have)."""
    return lif_float_step({**LIF_SCHEMA.defaults(), **a}, x, v)


def _quantize(a: dict, k: float, core) -> dict:
    """Per-neuron integers (arrays, range-checked by the mapper) and the core's modes."""
    out = {n: np.round(k * np.asarray(a[n], np.float64)) for n in ("threshold", "v_reset", "v_leak")}
    out["beta_mult"] = np.round(np.asarray(a["beta"], np.float64) * 2 ** core.beta_shift)
    out.update(reset_mode=RESET_MODES.index(a["reset_mode"]), spike_ge=int(a["spike_ge"]),
               reset_delay=int(a["reset_delay"]))
    return out


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    mode, ge, rd = (int(x) for x in cp[:3])
    thr, vr, vl, bm = nparam[:, 0], nparam[:, 1], nparam[:, 2], nparam[:, 3]
    s, state[:, 0] = lif_update(acc, state[:, 0], thr, vr, vl, bm, mode, ge, rd, core.membrane_bits, core.beta_shift)
    return s.astype(np.int64)


@njit(**NJIT_STEP)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    mmin, mmax = nb_limits(mem_bits)
    mode = cp[0]
    ge = cp[1] != 0
    rd = cp[2] != 0
    nspk = 0
    for j in range(nn):
        n = n0 + j
        s, state[n, 0] = nb_lif_update(state[n, 0], acc[j], nparam[n, 0], nparam[n, 1], nparam[n, 2], nparam[n, 3],
                                       mode, ge, rd, beta_shift, mmin, mmax)
        out[n] = 1 if s else 0
        nspk += 1 if s else 0
    return nspk


def _body(schema: OpSchema):
    mk = helper.make_node
    return [
        mk("Identity", ["threshold"], ["thr"]), mk("Identity", ["v_reset"], ["vr"]),
        mk("Identity", ["v_leak"], ["vl"]),
        attr_const("gain", "gain", "float"), attr_const("rd_i", "reset_delay", "int"),
        *mode_nodes(),
        mk("Cast", ["rd_i"], ["rd"], to=onnx.TensorProto.BOOL),
        *fire_nodes("v", "v"),
        mk("And", ["fire_v", "rd"], ["r"]),
        mk("Sub", ["v", "vl"], ["d"]), mk("Mul", ["beta", "d"], ["bd"]), mk("Add", ["vl", "bd"], ["lk"]),
        mk("Mul", ["gain", "x"], ["gx"]), mk("Add", ["lk", "gx"], ["u0"]),
        *reset_nodes("u0", "r", "u"),
        *fire_nodes("u", "u"),
        mk("CastLike", ["fire_u", "x"], ["s"]),
        *reset_nodes("u", "fire_u", "v_imm"),
        mk("Where", ["rd", "u", "v_imm"], ["v_next"]),
    ]


SCHEMA = OpSchema(
    name="LIFT", ir_op="lift", inputs=("x", "v", "beta", "threshold", "v_reset", "v_leak"), outputs=("s", "v_next"),
    attrs={
        "reset_mode": AttrSpec("string", "subtract", "after a spike", choices=RESET_MODES),
        "gain": AttrSpec("float", 1.0, "input scale"),
        "spike_ge": AttrSpec("int", 0, "1: fire on >=, 0: on >", choices=(0, 1)),
        "reset_delay": AttrSpec("int", 0, "1: reset at the next step from the stored v (snnTorch)", choices=(0, 1)),
    },
    params={
        "beta": AttrSpec("float", 1.0, "membrane decay per step (1 = IF)", lo=0.0, hi=1.0),
        "threshold": AttrSpec("float", 1.0, "firing threshold", lo=0.0, lo_open=True),
        "v_reset": AttrSpec("float", 0.0, "membrane after a zero reset"),
        "v_leak": AttrSpec("float", 0.0, "resting potential the membrane decays to"),
    },
    doc="LIF neuron with per-neuron tensors beta, threshold, v_reset, v_leak, one timestep: (x, v, ...) -> (s, v').",
    body=_body,
)

LIFT = register(NeuronModel(
    name="lift", code=10, doc=__doc__, out_bits=1, ref_step=_ref_step, nb_step=_nb_step,
    core_params=(RESET_MODE, SPIKE_GE, RESET_DELAY),
    neuron_params=(THRESHOLD, V_RESET, V_LEAK, BETA_MULT),
    state=(MEMBRANE,), onnx=SCHEMA, float_step=_float_step, quantize=_quantize,
    membrane_attrs=("threshold", "v_reset", "v_leak"), input_gain="gain",
    lossless=lambda a: bool(np.all(np.isin(np.asarray(a["beta"]), (0.0, 1.0)))), timing_like="lif",
))
