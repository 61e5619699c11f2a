"""The ``nmc`` ONNX domain: every op's schema, attribute validation and function bodies.

Neuron-model ops (``LIF``, ``SpikeCount``, ``CubaLIF``, ``LIFRefractory``, ...) are declared once with
their model in :mod:`nmc.neurons`; this registry collects their :class:`~nmc.opschema.OpSchema` s (and
any non-neuron nmc op registered with :func:`register_schema`).  A schema also builds the op's ONNX
``FunctionProto`` (standard ops only, attributes referenced with defaults) that a model ships so that
onnxruntime runs it as the float reference.  The ONNX checker does not compare a node's attributes
with its function's signature, so :func:`validate_attrs` does.  The semantics of each neuron op are in
its model's module doc (docs/onnx_convention.md lists them).
"""
from __future__ import annotations

import difflib
from typing import Any

import onnx
from onnx import AttributeProto, helper

from nmc.errors import AttributeSchemaError, RegistryError
from nmc.encoders import ENCODERS
from nmc.neurons import MODELS
from nmc.opschema import ATTR_TYPES, MIN_OPSET, NMC_DOMAIN, NMC_DOMAIN_VERSION, AttrSpec, OpSchema

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
        if a.type != ATTR_TYPES[spec.type]:
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


for _m in MODELS.values():
    if _m.onnx is not None:
        register_schema(_m.onnx)
for _e in ENCODERS.values():  # the spike encoders (run on the host)
    register_schema(_e.schema)

#: the schemas of the built-in neuron ops, by their ONNX op type
LIF = SCHEMAS["LIF"]
SPIKE_COUNT = SCHEMAS["SpikeCount"]


def function_protos(op_types=None, opset: int = MIN_OPSET) -> list[onnx.FunctionProto]:
    """FunctionProtos of the given nmc op types (all registered ones by default), sorted by name."""
    names = sorted(SCHEMAS) if op_types is None else sorted(set(op_types))
    return [get_schema(n).function(opset) for n in names]
