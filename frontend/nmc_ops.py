"""Schemas of the ``nmc`` ONNX domain ops and their ONNX function bodies.

Each op of the ``nmc`` domain (see ``../shared/spec/onnx.md``) is described by an
:class:`OpSchema`: inputs, outputs and typed attributes with defaults and allowed
values.  The schema also builds the op's ONNX ``FunctionProto`` (standard ops only,
attributes referenced with defaults) that a model ships so that onnxruntime runs it
as the float reference.  The ONNX checker does not compare a node's attributes with
its function's signature, so :func:`validate_attrs` does.

LIF, per step (x input, v state)::

    fire(u) = u >= threshold if spike_ge else u > threshold
    r  = fire(v) if reset_delay else 0          # delayed (snnTorch default) reset
    u  = v_leak + beta*(v - v_leak) + gain*x
    if reset_delay: subtract: u -= r*threshold; zero: u = where(r, v_reset, u); none: u
    s  = fire(u)
    v' = u if reset_delay else (subtract: u - s*threshold; zero: where(s, v_reset, u); none: u)

SpikeCount: ``c' = c + s``.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

import onnx
from onnx import AttributeProto, helper

from nmc.errors import AttributeSchemaError, RegistryError

__all__ = [
    "NMC_DOMAIN",
    "NMC_DOMAIN_VERSION",
    "MIN_OPSET",
    "AttrSpec",
    "OpSchema",
    "SCHEMAS",
    "register_schema",
    "get_schema",
    "validate_attrs",
    "function_protos",
]

NMC_DOMAIN = "nmc"
NMC_DOMAIN_VERSION = 1
#: ai.onnx opset the function bodies need (string ``Equal`` needs 19)
MIN_OPSET = 19

_ATTR_TYPES = {
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
        return " and ".join(parts) if parts else "any value"

    def check(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return value == value  # rejects NaN


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

    def defaults(self) -> dict[str, Any]:
        return {k: a.default for k, a in self.attrs.items()}

    def function(self, opset: int = MIN_OPSET) -> onnx.FunctionProto:
        """The ONNX FunctionProto implementing this op with standard ops."""
        protos = [helper.make_attribute(k, a.default) for k, a in self.attrs.items()]
        # make_attribute infers the type from the Python value; make sure floats stay floats
        for p, (k, a) in zip(protos, self.attrs.items()):
            assert p.type == _ATTR_TYPES[a.type], (k, p.type)
        return helper.make_function(
            NMC_DOMAIN, self.name, list(self.inputs), list(self.outputs), self.body(self),
            [helper.make_opsetid("", max(opset, MIN_OPSET))],
            attribute_protos=protos, doc_string=self.doc,
        )


#: every nmc-domain op schema, by ONNX op type
SCHEMAS: dict[str, OpSchema] = {}


def register_schema(schema: OpSchema) -> OpSchema:
    """Add ``schema`` to :data:`SCHEMAS`; a second registration of the same op type is an error."""
    if schema.name in SCHEMAS:
        raise RegistryError(f"nmc op '{schema.name}' is already registered; pick another op type name")
    SCHEMAS[schema.name] = schema
    return schema


def get_schema(op_type: str) -> OpSchema:
    try:
        return SCHEMAS[op_type]
    except KeyError:
        raise RegistryError(f"no nmc-domain op '{op_type}'; supported: {', '.join(sorted(SCHEMAS))}") from None


# ----------------------------------------------------------------- attribute validation
def _attr_value(a: onnx.AttributeProto) -> Any:
    return helper.get_attribute_value(a)


def validate_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """Check an nmc-domain node's attributes against its schema; return all values (defaults filled).

    Raises :class:`AttributeSchemaError` naming the node for unknown (misspelt) attributes,
    wrong types and out-of-range values.
    """
    schema = get_schema(node.op_type)
    where = f"node '{node.name or '<unnamed>'}' (nmc::{node.op_type})"
    values = schema.defaults()
    for a in node.attribute:
        spec = schema.attrs.get(a.name)
        if spec is None:
            close = difflib.get_close_matches(a.name, list(schema.attrs), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise AttributeSchemaError(
                f"{where}: unknown attribute '{a.name}'; {hint}"
                f"{node.op_type} takes: {', '.join(schema.attrs)} (onnxruntime would silently ignore it "
                f"and use the default; fix the attribute name in the exporter)")
        if a.ref_attr_name:
            raise AttributeSchemaError(f"{where}: attribute '{a.name}' is a reference to '{a.ref_attr_name}'; "
                                       f"nmc ops in the main graph need literal attribute values")
        if a.type != _ATTR_TYPES[spec.type]:
            tname = AttributeProto.AttributeType.Name(a.type).lower()
            raise AttributeSchemaError(
                f"{where}: attribute '{a.name}' has type {tname}, expected {spec.type}"
                + (" (write e.g. 1.0, not 1)" if spec.type == "float" else ""))
        v = _attr_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if not spec.check(v):
            raise AttributeSchemaError(f"{where}: attribute {a.name}={v!r} is out of range; it must be {spec.describe()}")
        values[a.name] = v
    return values


# ----------------------------------------------------------------- function bodies
def _const(out: str, attr: str, kind: str) -> onnx.NodeProto:
    n = helper.make_node("Constant", [], [out])
    field_name = {"float": "value_float", "int": "value_int", "string": "value_string"}[kind]
    n.attribute.append(helper.make_attribute_ref(field_name, _ATTR_TYPES[kind], ref_attr_name=attr))
    return n


def _lif_body(schema: OpSchema) -> list[onnx.NodeProto]:
    mk = helper.make_node
    nodes = [
        _const("beta", "beta", "float"),
        _const("thr", "threshold", "float"),
        _const("vr", "v_reset", "float"),
        _const("vl", "v_leak", "float"),
        _const("gain", "gain", "float"),
        _const("ge_i", "spike_ge", "int"),
        _const("rd_i", "reset_delay", "int"),
        _const("mode", "reset_mode", "string"),
        mk("Cast", ["ge_i"], ["ge"], to=onnx.TensorProto.BOOL),
        mk("Cast", ["rd_i"], ["rd"], to=onnx.TensorProto.BOOL),
        mk("Constant", [], ["s_subtract"], value_string="subtract"),
        mk("Constant", [], ["s_zero"], value_string="zero"),
        mk("Equal", ["mode", "s_subtract"], ["is_sub"]),
        mk("Equal", ["mode", "s_zero"], ["is_zero"]),
        # delayed reset flag r = fire(v) and reset_delay
        mk("GreaterOrEqual", ["v", "thr"], ["v_ge"]),
        mk("Greater", ["v", "thr"], ["v_gt"]),
        mk("And", ["ge", "v_ge"], ["v_ge_on"]),
        mk("Or", ["v_ge_on", "v_gt"], ["fire_v"]),  # v > thr implies v >= thr
        mk("And", ["fire_v", "rd"], ["r"]),
        # u = v_leak + beta*(v - v_leak) + gain*x
        mk("Sub", ["v", "vl"], ["d"]),
        mk("Mul", ["beta", "d"], ["bd"]),
        mk("Add", ["vl", "bd"], ["lk"]),
        mk("Mul", ["gain", "x"], ["gx"]),
        mk("Add", ["lk", "gx"], ["u0"]),
        # delayed reset applied to u
        mk("CastLike", ["r", "x"], ["rf"]),
        mk("Mul", ["rf", "thr"], ["rthr"]),
        mk("Sub", ["u0", "rthr"], ["u_sub"]),
        mk("Where", ["r", "vr", "u0"], ["u_zero"]),
        mk("Where", ["is_zero", "u_zero", "u0"], ["u_zn"]),
        mk("Where", ["is_sub", "u_sub", "u_zn"], ["u"]),
        # fire
        mk("GreaterOrEqual", ["u", "thr"], ["u_ge"]),
        mk("Greater", ["u", "thr"], ["u_gt"]),
        mk("And", ["ge", "u_ge"], ["u_ge_on"]),
        mk("Or", ["u_ge_on", "u_gt"], ["fire_u"]),
        mk("CastLike", ["fire_u", "x"], ["s"]),
        # immediate reset
        mk("Mul", ["s", "thr"], ["sthr"]),
        mk("Sub", ["u", "sthr"], ["v_sub"]),
        mk("Where", ["fire_u", "vr", "u"], ["v_zero"]),
        mk("Where", ["is_zero", "v_zero", "u"], ["v_zn"]),
        mk("Where", ["is_sub", "v_sub", "v_zn"], ["v_imm"]),
        mk("Where", ["rd", "u", "v_imm"], ["v_next"]),
    ]
    return nodes


def _spike_count_body(schema: OpSchema) -> list[onnx.NodeProto]:
    return [helper.make_node("Add", ["c", "s"], ["c_next"])]


LIF = register_schema(OpSchema(
    name="LIF",
    ir_op="lif",
    inputs=("x", "v"),
    outputs=("s", "v_next"),
    attrs={
        "beta": AttrSpec("float", 1.0, "membrane decay per step (1 = IF)", lo=0.0, hi=1.0),
        "threshold": AttrSpec("float", 1.0, "firing threshold", lo=0.0, lo_open=True),
        "reset_mode": AttrSpec("string", "subtract", "after a spike", choices=("subtract", "zero", "none")),
        "v_reset": AttrSpec("float", 0.0, "membrane after a zero reset"),
        "v_leak": AttrSpec("float", 0.0, "resting potential the membrane decays to"),
        "gain": AttrSpec("float", 1.0, "input scale"),
        "spike_ge": AttrSpec("int", 0, "1: fire on >=, 0: on >", choices=(0, 1)),
        "reset_delay": AttrSpec("int", 0, "1: reset at the next step from the stored v (snnTorch)", choices=(0, 1)),
    },
    doc="Leaky integrate-and-fire neuron, one timestep: (x, v) -> (s, v').",
    body=_lif_body,
))

SPIKE_COUNT = register_schema(OpSchema(
    name="SpikeCount",
    ir_op="spike_count",
    inputs=("s", "c"),
    outputs=("c_next",),
    attrs={},
    doc="Spike-count decoder, one timestep: c' = c + s.",
    body=_spike_count_body,
))


def function_protos(op_types=None, opset: int = MIN_OPSET) -> list[onnx.FunctionProto]:
    """FunctionProtos of the given nmc op types (all registered ones by default), sorted by name."""
    names = sorted(SCHEMAS) if op_types is None else sorted(set(op_types))
    return [get_schema(n).function(opset) for n in names]
