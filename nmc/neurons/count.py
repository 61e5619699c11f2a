"""``count``: spike-count decoder (``nmc::SpikeCount``): ``c' = c + s``.

Integer: ``c = clamp(c + acc, lo, hi)`` (the core's output range, 0..255 for 8-bit values); the output
register holds ``c``.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from onnx import helper

from ..opschema import OpSchema
from ._int import NJIT, NJIT_STEP, nb_clamp
from .model import NeuronModel, StateWord, register

__all__ = ["COUNT"]


def _ref_step(acc, state, nparam, cp, lo, hi, core):
    state[:, 0] = np.clip(state[:, 0] + acc, lo, hi)
    return state[:, 0].copy()


@njit(**NJIT_STEP)
def _nb_step(n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out):
    nz = 0
    for j in range(nn):
        y = nb_clamp(state[n0 + j, 0] + acc[j], lo, hi)
        state[n0 + j, 0] = y
        out[n0 + j] = y
        nz += 1 if y != 0 else 0
    return nz


SCHEMA = OpSchema(name="SpikeCount", ir_op="spike_count", inputs=("s", "c"), outputs=("c_next",), attrs={},
                  doc="Spike-count decoder, one timestep: c' = c + s.",
                  body=lambda schema: [helper.make_node("Add", ["c", "s"], ["c_next"])])

COUNT = register(NeuronModel(
    name="count", code=3, doc=__doc__, out_bits=8, ref_step=_ref_step, nb_step=_nb_step,
    state=(StateWord("c", lambda c: c.accumulator_bits, "c", "c_next", scaled=False),),
    onnx=SCHEMA, synapse_port="s", output_port="c_next", float_step=lambda a, s, c: (c + s,),
    lossless=lambda a: True,
))
