"""ONNX schemas of nmc-domain ops (ground floor): typed attributes with defaults and ranges, and the
op's ONNX function body (standard ops only) that lets onnxruntime run a model as the float reference.

Neuron models (:mod:`nmc.neurons`) declare their op with an :class:`OpSchema`; the frontend's registry
(``nmc.frontend.nmc_ops``) collects them with the other nmc-domain ops.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
from onnx import AttributeProto, helper

__all__ = ["NMC_DOMAIN", "NMC_DOMAIN_VERSION", "MIN_OPSET", "ATTR_TYPES", "AttrSpec", "OpSchema", "attr_const"]

NMC_DOMAIN = "nmc"
NMC_DOMAIN_VERSION = 1
#: ai.onnx opset the function bodies need (string ``Equal`` needs 19)
MIN_OPSET = 19

ATTR_TYPES = {
    "float": AttributeProto.FLOAT,
    "int": AttributeProto.INT,
    "string": AttributeProto.STRING,
}


@dataclass(frozen=True)
class AttrSpec:
    """One attribute: ONNX type (float | int | string), default and allowed values.

    ``lo``/``hi`` bound the value (``lo_open``/``hi_open`` make a bound strict);
    ``choices`` lists the allowed values of an int or string attribute.
    """

    type: str
    default: Any
    doc: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple | None = None

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        if self.type == "float":
            parts.append("finite")
        return " and ".join(parts) if parts else "any value"

    def violations(self, values) -> np.ndarray:
        """Boolean mask of the elements of a numeric array that break the rule (vectorised :meth:`check`)."""
        v = np.asarray(values, dtype=np.float64)
        bad = ~np.isfinite(v)
        if self.choices is not None:
            bad |= ~np.isin(v, np.asarray(self.choices, dtype=np.float64))
        if self.lo is not None:
            bad |= (v <= self.lo) if self.lo_open else (v < self.lo)
        if self.hi is not None:
            bad |= (v >= self.hi) if self.hi_open else (v > self.hi)
        return bad

    def check(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False  # NaN and infinities
        return True


@dataclass(frozen=True)
class OpSchema:
    """An nmc-domain op: the ONNX op type, the IR op it becomes, ports and attributes."""

    name: str
    ir_op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, AttrSpec] = field(default_factory=dict)
    doc: str = ""
    body: Callable[["OpSchema"], list[onnx.NodeProto]] | None = None
    #: inputs that are constant tensors of per-neuron parameters (not activations), with the rule every value
    #: obeys (type ``float``; the default is what ModelBuilder gives when the user gives none)
    params: dict[str, AttrSpec] = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        return {k: a.default for k, a in self.attrs.items()}

    def function(self, opset: int = MIN_OPSET) -> onnx.FunctionProto:
        """The ONNX FunctionProto implementing this op with standard ops."""
        protos = [helper.make_attribute(k, a.default) for k, a in self.attrs.items()]
        # make_attribute infers the type from the Python value; make sure floats stay floats
        for p, (k, a) in zip(protos, self.attrs.items()):
            assert p.type == ATTR_TYPES[a.type], (k, p.type)
        return helper.make_function(
            NMC_DOMAIN, self.name, list(self.inputs), list(self.outputs), self.body(self),
            [helper.make_opsetid("", max(opset, MIN_OPSET))],
            attribute_protos=protos, doc_string=self.doc,
        )


def attr_const(out: str, attr: str, kind: str) -> onnx.NodeProto:
    """A ``Constant`` node of a function body whose value is the function's attribute ``attr``."""
    n = helper.make_node("Constant", [], [out])
    field_name = {"float": "value_float", "int": "value_int", "string": "value_string"}[kind]
    n.attribute.append(helper.make_attribute_ref(field_name, ATTR_TYPES[kind], ref_attr_name=attr))
    return n
