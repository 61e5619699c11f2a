"""``first_spike``: first-spike-time decoder (``nmc::FirstSpikeTime``): the step at which each neuron first
spiked, ``-1`` while it has not.

Float, per step (s spikes, f first-spike time, k steps so far; initial ``f = -1``, ``k = 0``)::

    f' = k if (f < 0 and s > 0) else f
    k' = k + 1                                         # output: f'

Steps count from 0 (the first step of the run); after ``T`` steps a neuron that never spiked reads ``-1``.
Integer: the same, both words ``core.membrane_bits`` wide (``k`` saturates at ``2^(M-1) - 1``); the output
register holds ``f'`` (32 bits).  The input must be spikes.  ``k`` is a per-neuron step counter: the chip's
somas see no step index, so each neuron keeps its own (one more state word per neuron).
"""
from __future__ import annotations

import numpy as np
from numba import njit
from onnx import helper

from ..opschema import OpSchema
from ._int import NJIT, NJIT_STEP, nb_limits, sat
from .model import NeuronModel, StateWord, register

__all__ = ["FIRST_SPIKE"]

FIRST = StateWord("f", lambda c: c.membrane_bits, "f", "f_next", scaled=False, init=-1.0)
STEPS = StateWord("k", lambda c: c.membrane_bits, "k", "k_next", scaled=False)


def _float_step(a, s, f, k):
    return np.where((f < 0) & (s > 0), k, f), k + 1.0


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    f, k = state[:, 0], state[:, 1]
    state[:, 0] = np.where((f < 0) & (acc > 0), k, f)
    state[:, 1] = sat(k + 1, core.membrane_bits)
    return state[:, 0].copy()


@njit(**NJIT_STEP)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    mmin, mmax = nb_limits(mem_bits)
    nz = 0
    for j in range(nn):
        n = n0 + j
        f, k = state[n, 0], state[n, 1]
        if f < 0 and acc[j] > 0:
            f = k
        state[n, 0] = f
        state[n, 1] = k + 1 if k < mmax else mmax
        out[n] = f
        nz += 1 if f != 0 else 0
    return nz


def _body(schema):
    mk = helper.make_node
    return [
        mk("Constant", [], ["zero"], value_float=0.0), mk("Constant", [], ["one"], value_float=1.0),
        mk("CastLike", ["zero", "s"], ["z"]), mk("CastLike", ["one", "s"], ["o"]),
        mk("Less", ["f", "z"], ["unset"]), mk("Greater", ["s", "z"], ["spk"]), mk("And", ["unset", "spk"], ["now"]),
        mk("Where", ["now", "k", "f"], ["f_next"]), mk("Add", ["k", "o"], ["k_next"]),
    ]


SCHEMA = OpSchema(
    name="FirstSpikeTime", ir_op="first_spike_time", inputs=("s", "f", "k"), outputs=("f_next", "k_next"), attrs={},
    doc="First-spike-time decoder, one timestep: (s, f, k) -> (f', k'); f starts at -1, k at 0.", body=_body,
)

FIRST_SPIKE = register(NeuronModel(
    name="first_spike", code=12, doc=__doc__, out_bits=32, ref_step=_ref_step, nb_step=_nb_step,
    state=(FIRST, STEPS), onnx=SCHEMA, synapse_port="s", output_port="f_next", float_step=_float_step,
    quantize=lambda a, k, core: {}, lossless=lambda a: True, timing_like="count", spike_input=True,
))
