"""Move the spike encoders (``nmc::PoissonEncode``, ``nmc::TTFSEncode``, ``nmc::OneHotEncode``) out of the step
graph: they run on the host (nmc/encoders.py says why), which feeds their spikes to the chip as a step input.

:func:`split_host_encoders` returns a copy of the graph in which every encoder's output is a step input (of
range [0, 1], integer: spikes), its source input and the step index ``nmc.t`` are dropped when nothing else
reads them, and the metadata ``nmc.host_encoders`` lists what the host computes (the core map's header carries
it to :func:`nmc.emulate`, which encodes with :func:`nmc.encoders.encode_inputs`).
"""
from __future__ import annotations

import json

from nmc.encoders import STEP_INDEX, by_ir_op
from nmc.errors import UnsupportedOpError
from nmc.ir import Graph, assign_stages

__all__ = ["split_host_encoders", "host_encoder_specs"]


def host_encoder_specs(graph: Graph) -> list[dict]:
    return json.loads(graph.metadata.get("nmc.host_encoders", "[]"))


def split_host_encoders(graph: Graph) -> Graph:
    """The graph with its encoders moved to the host (the same graph when it has none)."""
    encs = [n for n in graph.nodes if by_ir_op(n.op) is not None]
    if not encs:
        return graph
    g = graph.copy(params=False)
    bad = []
    specs = host_encoder_specs(g)
    try:
        ranges = json.loads(g.metadata.get("nmc.ranges", "{}"))
    except ValueError:
        ranges = None  # malformed: the calibrate pass reports it
    if not isinstance(ranges, dict):
        ranges = None
    for n in [n for n in g.nodes if by_ir_op(n.op) is not None]:
        x, t = n.inputs
        enc = by_ir_op(n.op)
        if g.inputs.get(x) not in ("static", "step"):
            bad.append((n.source or n.name, f"nmc::{enc.schema.name}",
                        f"its input '{x}' is computed on the chip; an encoder runs on the host and reads a graph input "
                        "(static or step): encode the graph input, or feed the computed value as direct current"))
            continue
        out = n.outputs[0]
        if out in g.outputs:
            bad.append((n.source or n.name, f"nmc::{enc.schema.name}",
                        f"its spikes '{out}' are a graph output, but the host computes them (they never leave the "
                        "host): compute them with nmc.encoders on the host instead of listing them in nmc.outputs"))
            continue
        g.nodes.remove(n)
        g.inputs[out] = "step"
        if ranges is not None:
            ranges[out] = [0.0, 1.0, True]  # spikes: no calibration needed
        specs.append(dict(op=enc.schema.name, input=x, kind=g.inputs[x], shape=list(g.tensors[x].shape),
                          output=out, attrs=dict(n.attrs), node=n.source or n.name))
    if bad:
        raise UnsupportedOpError(bad, supported=["PoissonEncode, TTFSEncode and OneHotEncode of a graph input"])
    read = {t for n in g.nodes for t in n.inputs} | set(g.outputs) | {s.output for s in g.states}
    for name in [i for i, kind in g.inputs.items() if kind in ("static", "step") and i not in read]:
        if name == STEP_INDEX or any(s["input"] == name for s in specs):
            del g.inputs[name]
    g.metadata["nmc.host_encoders"] = json.dumps(specs)
    if ranges is not None:
        g.metadata["nmc.ranges"] = json.dumps(ranges)
    assign_stages(g)
    g.lint()
    return g
