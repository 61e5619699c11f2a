"""``lif``: leaky integrate-and-fire (``nmc::LIF``), the chip's spiking soma.

Float, per step (x input, v state)::

    fire(u) = u >= threshold if spike_ge else u > threshold
    r  = fire(v) if reset_delay else 0          # delayed (snnTorch default) reset
    u  = v_leak + beta*(v - v_leak) + gain*x
    if reset_delay: subtract: u -= r*threshold; zero: u = where(r, v_reset, u); none: u
    s  = fire(u)
    v' = u if reset_delay else (subtract: u - s*threshold; zero: where(s, v_reset, u); none: u)

Integer (membrane ``M = core.membrane_bits`` bits, leak multiplier ``bm = round(beta * 2^B)``,
``B = core.beta_shift``): ``u = sat_M(vl + floor((v - vl) * bm / 2^B) + acc)``, then the same
fire/reset with the subtract reset saturating.
"""
from __future__ import annotations

import numpy as np
import onnx
from numba import njit
from onnx import helper

from ..opschema import AttrSpec, OpSchema, attr_const
from ._int import NJIT, NJIT_STEP, fire, leak, mem_limits, nb_clamp, nb_fire, nb_leak, nb_limits, nb_reset, reset, sat
from .model import NeuronModel, Param, StateWord, register

__all__ = ["LIF", "lif_float_step"]

RESET_MODES = ("subtract", "zero", "none")


def _mem_lo(c):
    return mem_limits(c.membrane_bits)[0]


def _mem_hi(c):
    return mem_limits(c.membrane_bits)[1]


def _mem_bits(c):
    return c.membrane_bits


#: core parameters shared by the LIF family (cubalif and lif_refractory extend them)
THRESHOLD = Param("threshold", lambda c: 1, _mem_hi, _mem_bits, "firing threshold (membrane units)")
V_RESET = Param("v_reset", _mem_lo, _mem_hi, _mem_bits, "membrane after a zero reset")
V_LEAK = Param("v_leak", _mem_lo, _mem_hi, _mem_bits, "resting potential the membrane decays to")
BETA_MULT = Param("beta_mult", lambda c: 0, lambda c: 1 << c.beta_shift, lambda c: c.beta_shift + 1,
                  "leak multiplier: beta = beta_mult / 2^core.beta_shift")
RESET_MODE = Param("reset_mode", lambda c: 0, lambda c: 2, lambda c: 2, "0 subtract, 1 to v_reset, 2 none")
SPIKE_GE = Param("spike_ge", lambda c: 0, lambda c: 1, lambda c: 1, "1: fire on >=, 0: on >")
RESET_DELAY = Param("reset_delay", lambda c: 0, lambda c: 1, lambda c: 1, "1: reset at the next step")
MEMBRANE = StateWord("v", _mem_bits, "v", "v_next", scaled=True)


def beta_mult(beta: float, core) -> int:
    return int(round(float(beta) * 2 ** core.beta_shift))


def membrane_params(a: dict, k: float, names=("threshold", "v_reset", "v_leak")) -> dict[str, int]:
    """The LIF family's shared integers: membrane-unit attributes scaled by ``k``, reset mode and spike_ge."""
    out = {n: int(round(k * a[n])) for n in names}
    out.update(reset_mode=RESET_MODES.index(a["reset_mode"]), spike_ge=int(a["spike_ge"]))
    return out


def fire_float(u, a: dict):
    """Float firing of the LIF family: ``u >= threshold`` with spike_ge, else ``u > threshold``."""
    return u >= a["threshold"] if a["spike_ge"] else u > a["threshold"]


def reset_float(u, a: dict):
    """Float membrane after a spike, by ``reset_mode``."""
    mode = a["reset_mode"]
    return u - a["threshold"] if mode == "subtract" else (np.full_like(u, a["v_reset"]) if mode == "zero" else u)


def lif_float_step(a: dict, x, v):
    """One LIF step (float); returns (spikes as 0.0/1.0, next membrane)."""
    u = a["v_leak"] + a["beta"] * (v - a["v_leak"]) + a["gain"] * x
    if a["reset_delay"]:
        u = np.where(fire_float(v, a), reset_float(u, a), u)
    f = fire_float(u, a)
    v_next = u if a["reset_delay"] else np.where(f, reset_float(u, a), u)
    return f.astype(np.float64), v_next


def _quantize(a: dict, k: float, core) -> dict[str, int]:
    return dict(membrane_params(a, k), beta_mult=beta_mult(a["beta"], core), reset_delay=int(a["reset_delay"]))


def lif_update(acc, v, thr, vr, vl, bm, mode, ge, rd, M, B):
    """The integer LIF update of every neuron (NumPy): ``(spikes, v')``; the parameters are scalars or
    per-neuron arrays (nmc::LIFT)."""
    r = fire(v, thr, ge) if rd else np.zeros(v.shape[0], dtype=bool)
    u = sat(leak(v, vl, bm, B) + acc, M)
    if rd:
        u = np.where(r, reset(u, mode, thr, vr, M), u)
    s = fire(u, thr, ge)
    return s, (u if rd else np.where(s, reset(u, mode, thr, vr, M), u))


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    thr, vr, vl, bm, mode, ge, rd = (int(x) for x in cp[:7])
    s, state[:, 0] = lif_update(acc, state[:, 0], thr, vr, vl, bm, mode, ge, rd, core.membrane_bits, core.beta_shift)
    return s.astype(np.int64)


@njit(**NJIT)
def nb_lif_update(vj, a, thr, vr, vl, bm, mode, ge, rd, beta_shift, mmin, mmax):
    """The integer LIF update of one neuron (Numba): ``(spike, v')``, as :func:`lif_update`."""
    u = nb_clamp(nb_leak(vj, vl, bm, beta_shift) + a, mmin, mmax)
    if rd and nb_fire(vj, thr, ge):
        u = nb_reset(u, mode, thr, vr, mmin, mmax)
    s = nb_fire(u, thr, ge)
    return s, (nb_reset(u, mode, thr, vr, mmin, mmax) if (s and not rd) else u)


@njit(**NJIT_STEP)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    mmin, mmax = nb_limits(mem_bits)
    thr, vr, vl, bm, mode = cp[0], cp[1], cp[2], cp[3], cp[4]
    ge = cp[5] != 0
    rd = cp[6] != 0
    nspk = 0
    for j in range(nn):  # (unsigned indices: no negative-index wraparound code in the emulator's hot loop)
        uj = np.uint64(n0 + j)
        s, state[uj, 0] = nb_lif_update(state[uj, 0], acc[np.uint64(j)], thr, vr, vl, bm, mode, ge, rd, beta_shift,
                                        mmin, mmax)
        out[uj] = 1 if s else 0
        nspk += 1 if s else 0
    return nspk


def fire_nodes(u: str, tag: str) -> list[onnx.NodeProto]:
    """Function-body nodes computing ``fire_<tag>`` = fire(u) from constants ``thr`` and ``ge``."""
    mk = helper.make_node
    return [mk("GreaterOrEqual", [u, "thr"], [f"{tag}_ge"]), mk("Greater", [u, "thr"], [f"{tag}_gt"]),
            mk("And", ["ge", f"{tag}_ge"], [f"{tag}_ge_on"]),
            mk("Or", [f"{tag}_ge_on", f"{tag}_gt"], [f"fire_{tag}"])]  # u > thr implies u >= thr


def mode_nodes() -> list[onnx.NodeProto]:
    """Function-body nodes: ``is_sub``/``is_zero`` from the string attribute ``reset_mode``, ``ge`` from spike_ge."""
    mk = helper.make_node
    return [attr_const("mode", "reset_mode", "string"), attr_const("ge_i", "spike_ge", "int"),
            mk("Cast", ["ge_i"], ["ge"], to=onnx.TensorProto.BOOL),
            mk("Constant", [], ["s_subtract"], value_string="subtract"),
            mk("Constant", [], ["s_zero"], value_string="zero"),
            mk("Equal", ["mode", "s_subtract"], ["is_sub"]), mk("Equal", ["mode", "s_zero"], ["is_zero"])]


def reset_nodes(u: str, fired: str, out: str) -> list[onnx.NodeProto]:
    """``out`` = reset(u) where ``fired`` (bool) else u, by ``reset_mode`` (constants thr, vr, is_sub, is_zero)."""
    mk = helper.make_node
    return [mk("CastLike", [fired, u], [f"{out}_f"]), mk("Mul", [f"{out}_f", "thr"], [f"{out}_fthr"]),
            mk("Sub", [u, f"{out}_fthr"], [f"{out}_sub"]), mk("Where", [fired, "vr", u], [f"{out}_zero"]),
            mk("Where", ["is_zero", f"{out}_zero", u], [f"{out}_zn"]),
            mk("Where", ["is_sub", f"{out}_sub", f"{out}_zn"], [out])]


def _body(schema: OpSchema) -> list[onnx.NodeProto]:
    mk = helper.make_node
    return [
        attr_const("beta", "beta", "float"), attr_const("thr", "threshold", "float"),
        attr_const("vr", "v_reset", "float"), attr_const("vl", "v_leak", "float"),
        attr_const("gain", "gain", "float"), attr_const("rd_i", "reset_delay", "int"),
        *mode_nodes(),
        mk("Cast", ["rd_i"], ["rd"], to=onnx.TensorProto.BOOL),
        *fire_nodes("v", "v"),
        mk("And", ["fire_v", "rd"], ["r"]),  # delayed reset flag
        mk("Sub", ["v", "vl"], ["d"]), mk("Mul", ["beta", "d"], ["bd"]), mk("Add", ["vl", "bd"], ["lk"]),
        mk("Mul", ["gain", "x"], ["gx"]), mk("Add", ["lk", "gx"], ["u0"]),  # u = v_leak + beta*(v - v_leak) + gain*x
        *reset_nodes("u0", "r", "u"),  # delayed reset applied to u
        *fire_nodes("u", "u"),
        mk("CastLike", ["fire_u", "x"], ["s"]),
        *reset_nodes("u", "fire_u", "v_imm"),  # immediate reset
        mk("Where", ["rd", "u", "v_imm"], ["v_next"]),
    ]


SCHEMA = OpSchema(
    name="LIF", ir_op="lif", inputs=("x", "v"), outputs=("s", "v_next"),
    attrs={
        "beta": AttrSpec("float", 1.0, "membrane decay per step (1 = IF)", lo=0.0, hi=1.0),
        "threshold": AttrSpec("float", 1.0, "firing threshold", lo=0.0, lo_open=True),
        "reset_mode": AttrSpec("string", "subtract", "after a spike", choices=RESET_MODES),
        "v_reset": AttrSpec("float", 0.0, "membrane after a zero reset"),
        "v_leak": AttrSpec("float", 0.0, "resting potential the membrane decays to"),
        "gain": AttrSpec("float", 1.0, "input scale"),
        "spike_ge": AttrSpec("int", 0, "1: fire on >=, 0: on >", choices=(0, 1)),
        "reset_delay": AttrSpec("int", 0, "1: reset at the next step from the stored v (snnTorch)", choices=(0, 1)),
    },
    doc="Leaky integrate-and-fire neuron, one timestep: (x, v) -> (s, v').", body=_body,
)

LIF = register(NeuronModel(
    name="lif", code=1, doc=__doc__, out_bits=1, ref_step=_ref_step, nb_step=_nb_step,
    core_params=(THRESHOLD, V_RESET, V_LEAK, BETA_MULT, RESET_MODE, SPIKE_GE, RESET_DELAY),
    state=(MEMBRANE,), onnx=SCHEMA, float_step=lif_float_step, quantize=_quantize,
    membrane_attrs=("threshold", "v_reset", "v_leak"), input_gain="gain",
    lossless=lambda a: a["beta"] in (0.0, 1.0),
))
