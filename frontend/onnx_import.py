"""ONNX (nmc step convention) -> :class:`nmc.ir.Graph`.

:func:`load_onnx` checks the model, converts an opset older than :data:`MIN_MODEL_OPSET` with
``onnx.version_converter``, reads Softsign's Abs/Add/Div decomposition as one ``Softsign``, reads the convention metadata (``nmc.state``, ``nmc.num_steps``,
``nmc.step_inputs``, optional ``nmc.outputs``), folds initializers, ``Constant`` nodes and every node
computed from constants alone (ONNX's reference implementation) into parameters, strips the batch
dimension (symbolic or a fixed size), infers every shape itself and converts each node with a converter
from :data:`CONVERTERS` (one per ONNX op type; ``frontend/onnx_ops.py`` registers the ANN ops beyond the
core set).  Every node it cannot convert is collected over the whole graph (the nodes after an
unsupported one are checked with the shapes ONNX shape inference gives) and reported at once in an
:class:`~nmc.errors.UnsupportedOpError`, grouped by op.  Then stages are assigned, the graph linted and
batch normalisations folded into the layer before them (:func:`fold_batchnorm`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nmc.errors import AttributeSchemaError, ModelError, RegistryError, ShapeError, UnsupportedOpError
from nmc.ir import Graph, Node, StatePair, Tensor, assign_stages
from nmc.encoders import ENCODERS, STEP_INDEX
from nmc.neurons import MODELS

from . import nmc_ops
from .nmc_ops import validate_attrs
from ._shapes import conv_out_shape, pool_out_shape

__all__ = ["load_onnx", "fold_batchnorm", "read_convention", "CONVERTERS", "register_converter",
           "MIN_MODEL_OPSET"]

#: oldest ai.onnx opset whose semantics of the supported ops the converters implement
MIN_MODEL_OPSET = 11


class _Unsupported(Exception):
    """Raised by a converter: the node cannot be converted, with the reason."""


# ----------------------------------------------------------------- loading and convention
def _load_model(model_or_path) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(model_or_path)  # load_onnx names unnamed nodes: never touch the caller's model
        _internalize_external_data(model, None, "the given model")
        return model
    base = None
    try:
        if isinstance(model_or_path, (bytes, bytearray)):
            data = bytes(model_or_path)
            where = "the given bytes"
        else:
            where = f"'{model_or_path}'"
            path = Path(model_or_path)
            if path.is_dir():
                raise ModelError(f"ONNX model {where} is a folder; give the .onnx file")
            data = path.read_bytes()
            base = path.resolve().parent
    except OSError as e:
        raise ModelError(f"cannot read ONNX model {where}: {e}; check the path") from e
    except ValueError as e:  # e.g. a NUL byte in the path
        raise ModelError(f"cannot read ONNX model {where}: {e}; check the path") from e
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf DecodeError and friends
        raise ModelError(f"{where} is not an ONNX model (protobuf decoding failed: {e}); the file is truncated or "
                         f"of another format: re-export it with torch.onnx.export or onnx.save") from e
    if not model.HasField("graph") or not model.opset_import:
        raise ModelError(f"{where} is not an ONNX model (no graph or no opset_import); the file is truncated or "
                         f"of another format: re-export it with torch.onnx.export or onnx.save")
    _internalize_external_data(model, base, where)
    return model


#: numeric ONNX tensor data types nmc reads (weights are converted to float64)
_NUMERIC_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                  TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8,
                  TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64, TensorProto.BOOL}
#: the most elements one constant tensor may have (2^27: 1 GiB as float64; VGG-19's 4096 x 25088 fully connected
#: weight has 1.03e8; the mapper keeps such a layer structured, mapper/structured.py)
MAX_TENSOR_ELEMS = 1 << 27
#: the most elements a constant computed by a node may have (the light VGG-19's 4096 x 25088 weight
#: made by ConstantOfShape: a fully connected layer at the size of the real model)
MAX_FOLDED_ELEMS = 1 << 27
#: the most values one tensor may have per sample (every value becomes a neuron or an axon)
MAX_ACTIVATIONS = 1 << 24


def _tensor_type_name(dt: int) -> str:
    try:
        return TensorProto.DataType.Name(dt)
    except ValueError:
        return str(dt)


def _tensors(g: onnx.GraphProto):
    """Every TensorProto of the graph: initializers and Constant values, also inside subgraphs (Scan bodies)."""
    for t in g.initializer:
        yield t
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield a.t
            elif a.type == onnx.AttributeProto.GRAPH:
                yield from _tensors(a.g)


def _internalize_external_data(model: onnx.ModelProto, base: Path | None, where: str) -> None:
    """Read every external-data tensor from its file, resolved against the model's folder ``base`` and
    refused outside it, its offset and length checked against the file and the tensor's size."""
    for t in _tensors(model.graph):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        what = f"initializer '{t.name}'"
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        if base is None:
            raise ModelError(f"{what} keeps its data in an external file ('{loc}') but the model was given as "
                             f"{'bytes' if where == 'the given bytes' else 'a ModelProto'}, which has no folder to "
                             "find it in; pass the model's path, or save it with its data inside")
        if not loc or "\x00" in loc or Path(loc).is_absolute():
            raise ModelError(f"{what} has external data location {loc!r}; it must be a file name relative to the "
                             f"model's folder '{base}'")
        f = (base / loc).resolve()
        if not f.is_relative_to(base):
            raise ModelError(f"{what} has external data location {loc!r}, which is outside the model's folder "
                             f"'{base}'; nmc reads external data only from beside the model")
        if not f.is_file():
            raise ModelError(f"{what}: external data file '{f}' does not exist (location {loc!r}, relative to the "
                             "model's folder); copy it beside the model")
        size = f.stat().st_size
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else size - offset
        except ValueError:
            raise ModelError(f"{what}: external data offset {info.get('offset')!r} / length {info.get('length')!r} "
                             "are not integers; re-export the model") from None
        if offset < 0 or length < 0 or offset + length > size:
            raise ModelError(f"{what}: external data offset {offset} and length {length} do not lie within "
                             f"'{f}' ({size} bytes); the file is truncated or the model was edited: re-export it")
        n = _checked_elems(t, what)
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize if t.data_type in \
            _NUMERIC_TYPES else None
        if itemsize is not None and length != n * itemsize:
            raise ModelError(f"{what}: external data length {length} bytes does not match dims {list(t.dims)} of "
                             f"{_tensor_type_name(t.data_type)} ({n * itemsize} bytes); re-export the model")
        with open(f, "rb") as fh:
            fh.seek(offset)
            data = fh.read(length)
        t.raw_data = data
        t.data_location = TensorProto.DEFAULT
        del t.external_data[:]


def _checked_elems(t: onnx.TensorProto, what: str) -> int:
    if t.data_type not in _NUMERIC_TYPES:
        raise ModelError(f"{what} has data type {_tensor_type_name(t.data_type)}; nmc reads numeric tensors only "
                         "(float, double, float16, int, uint, bool): fix the exporter")
    if any(d < 0 for d in t.dims):
        raise ModelError(f"{what} has negative dims {list(t.dims)}; the model is damaged: re-export it")
    n = 1
    for d in t.dims:
        n *= int(d)
    if n > MAX_TENSOR_ELEMS:
        raise ModelError(f"{what} has dims {list(t.dims)} = {n} elements, more than nmc reads in one tensor "
                         f"({MAX_TENSOR_ELEMS}); the model is damaged or far too large for the chip")
    return n


def decode_tensor(t: onnx.TensorProto, what: str) -> np.ndarray:
    """A constant tensor as a NumPy array: data type, dims and data checked, NaN and infinities refused
    (naming ``what`` and the first bad element)."""
    n = _checked_elems(t, what)
    if t.data_location == TensorProto.EXTERNAL:
        raise ModelError(f"{what} keeps its data in an external file; pass the model by path")
    try:
        a = numpy_helper.to_array(t)
    except Exception as e:  # protobuf payload and dims disagree, unknown type, ...
        raise ModelError(f"{what} cannot be decoded ({type(e).__name__}: {e}); its dims {list(t.dims)} and data "
                         "disagree: the model is damaged, re-export it") from None
    if a.size != n:
        raise ModelError(f"{what} holds {a.size} values for dims {list(t.dims)}; re-export the model")
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            idx = [int(i) for i in np.argwhere(bad)[0]] if a.ndim else []
            raise ModelError(f"{what} has {int(bad.sum())} NaN or infinite value(s), the first at index {idx} "
                             f"({a[tuple(idx)]}); fix the trained weights (e.g. torch.nan_to_num) and re-export")
    return a


def _opset(model: onnx.ModelProto, domain: str) -> int | None:
    for o in model.opset_import:
        if o.domain == domain or (domain == "" and o.domain == "ai.onnx"):
            return int(o.version)
    return None


def _check(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ModelError(f"model '{model.graph.name}' fails onnx.checker: {e}; fix the exporter or re-export "
                         f"the model") from e
    version = _opset(model, "")
    if version is None:
        raise ModelError(f"model '{model.graph.name}' imports no ai.onnx opset; re-export with an opset "
                         f">= {nmc_ops.MIN_OPSET}")
    uses_nmc = any(n.domain == nmc_ops.NMC_DOMAIN for n in model.graph.node)
    if uses_nmc and version < nmc_ops.MIN_OPSET:
        raise ModelError(f"model '{model.graph.name}' has nmc-domain nodes but ai.onnx opset {version}; their function "
                         f"bodies need opset >= {nmc_ops.MIN_OPSET}: re-export with opset_version={nmc_ops.MIN_OPSET}")
    nv = _opset(model, nmc_ops.NMC_DOMAIN)
    if uses_nmc and nv is not None and nv != nmc_ops.NMC_DOMAIN_VERSION:
        raise ModelError(f"model '{model.graph.name}' imports nmc domain version {nv}; this nmc understands version "
                         f"{nmc_ops.NMC_DOMAIN_VERSION}: the model was written for another nmc; rebuild it with this nmc's "
                         "ModelBuilder")


def _real_inputs(g: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in g.initializer}
    return [i for i in g.input if i.name not in inits]


#: the most timesteps a model may ask for by default (nmc.num_steps)
MAX_STEPS = 1 << 20


def _state_init(value: Any, where: str) -> np.ndarray:
    """An initial state from metadata: numbers (a scalar or a nested list), all finite."""
    try:
        init = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise ModelError(f"{where} is {value!r}; give a number or a list of numbers") from None
    if init.size > MAX_TENSOR_ELEMS:
        raise ModelError(f"{where} has {init.size} values; too many")
    bad = ~np.isfinite(init)
    if bad.any():
        idx = [int(i) for i in np.argwhere(bad)[0]] if init.ndim else []
        raise ModelError(f"{where} has a NaN or infinite value at index {idx} ({init[tuple(idx)]}); give finite "
                         "numbers")
    return init


@dataclass
class Convention:
    """What the model's ``nmc.*`` metadata (or the naming fallback) says."""

    states: list[tuple[str, str, np.ndarray]]
    step_inputs: list[str]
    num_steps: int
    outputs: list[str]
    metadata: dict[str, str] = field(default_factory=dict)

    def kind(self, name: str) -> str:
        if any(s[0] == name for s in self.states):
            return "state"
        return "step" if name in self.step_inputs else "static"


def read_convention(model: onnx.ModelProto) -> Convention:
    """Read state pairs, step inputs, number of steps and outputs of an nmc-convention model."""
    g = model.graph
    meta = {p.key: p.value for p in model.metadata_props}
    in_names = [i.name for i in _real_inputs(g)]
    out_names = [o.name for o in g.output]
    where = f"model '{g.name}'"

    def parse(key, default):
        if key not in meta:
            return default
        try:
            return json.loads(meta[key])
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:  # bytes that are not UTF-8 too
            raise ModelError(f"{where}: metadata {key}={meta[key]!r} is not valid JSON ({e}); write it with json.dumps") from e

    conv = meta.get("nmc.convention")
    if conv is not None and conv != "step/1":
        raise ModelError(f"{where}: metadata nmc.convention={conv!r}; this nmc reads 'step/1'")
    states: list[tuple[str, str, np.ndarray]] = []
    raw = parse("nmc.state", None)
    if raw is None:  # naming fallback: <x> -> <x>.next
        for n in in_names:
            if n + ".next" in out_names:
                states.append((n, n + ".next", np.zeros(())))
    else:
        if not isinstance(raw, list):
            raise ModelError(f"{where}: metadata nmc.state must be a JSON list of [input, output, init]")
        for entry in raw:
            if not (isinstance(entry, list) and len(entry) in (2, 3)):
                raise ModelError(f"{where}: nmc.state entry {entry!r} is not [input, output, init]")
            i, o = entry[0], entry[1]
            if not (isinstance(i, str) and isinstance(o, str)):
                raise ModelError(f"{where}: nmc.state entry {entry!r} must name its input and output as strings")
            init = _state_init(entry[2] if len(entry) == 3 else 0.0, f"{where}: nmc.state init of '{i}'")
            if i not in in_names:
                raise ModelError(f"{where}: nmc.state pairs '{i}' -> '{o}' but '{i}' is not a graph input; "
                                 f"add the input or fix nmc.state")
            if o not in out_names:
                raise ModelError(f"{where}: state input '{i}' has no pair: nmc.state names output '{o}', which is not "
                                 f"a graph output; add '{o}' to the graph outputs or fix nmc.state")
            if any(st[0] == i for st in states) or any(st[1] == o for st in states):
                raise ModelError(f"{where}: nmc.state lists input '{i}' or output '{o}' in more than one pair; each "
                                 "state input and output belongs to one pair: fix the metadata")
            states.append((i, o, init))
    step_inputs = parse("nmc.step_inputs", [])
    if not isinstance(step_inputs, list) or not all(isinstance(x, str) for x in step_inputs):
        raise ModelError(f"{where}: metadata nmc.step_inputs must be a JSON list of input names")
    if STEP_INDEX in in_names and STEP_INDEX not in step_inputs:
        step_inputs = [*step_inputs, STEP_INDEX]  # the step index is given every step (the runners fill it)
    for s in step_inputs:
        if s not in in_names:
            raise ModelError(f"{where}: nmc.step_inputs names '{s}', which is not a graph input; fix the metadata")
        if any(st[0] == s for st in states):
            raise ModelError(f"{where}: '{s}' is both a step input and a state input; fix the metadata")
    num_steps = parse("nmc.num_steps", 1)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= MAX_STEPS:
        raise ModelError(f"{where}: metadata nmc.num_steps={meta.get('nmc.num_steps')!r} must be an integer from 1 to "
                         f"{MAX_STEPS}")
    outputs = parse("nmc.outputs", None)
    if outputs is None:
        outputs = out_names
    if not isinstance(outputs, list) or not all(isinstance(x, str) for x in outputs):
        raise ModelError(f"{where}: metadata nmc.outputs={meta.get('nmc.outputs')!r} must be a JSON list of output "
                         "names")
    if len(set(outputs)) != len(outputs):
        raise ModelError(f"{where}: metadata nmc.outputs names an output twice ({outputs}); list each once")
    for o in outputs:
        if o not in out_names:
            raise ModelError(f"{where}: nmc.outputs names '{o}', which is not a graph output; fix the metadata")
    return Convention(states, list(step_inputs), num_steps, list(outputs), meta)


# ----------------------------------------------------------------- Scan
def _extract_scan(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace a model whose graph is one top-level Scan by its body (the step graph)."""
    g = model.graph
    scans = [n for n in g.node if n.op_type == "Scan"]
    if not scans:
        return model
    others = [n for n in g.node if n.op_type not in ("Scan", "Constant")]
    if len(scans) > 1 or others:
        raise UnsupportedOpError([(n.name or f"#{i}", n.op_type, "Scan is accepted only as the single top-level node "
                                   "whose body is the step graph; export the step function instead")
                                  for i, n in enumerate(g.node) if n.op_type == "Scan"],
                                 supported=sorted(CONVERTERS))
    scan = scans[0]
    a = _attrs(scan)
    body = a.get("body")
    if not isinstance(body, onnx.GraphProto):
        raise ModelError(f"Scan node '{scan.name}' has no 'body' graph attribute; the body is the step graph")
    n_scan = a.get("num_scan_inputs")
    if not isinstance(n_scan, int) or not 0 <= n_scan <= len(scan.input):
        raise ModelError(f"Scan node '{scan.name}': num_scan_inputs={n_scan!r} must be an integer from 0 to its "
                         f"{len(scan.input)} inputs; fix the exporter")
    if len(body.input) != len(scan.input) or len(body.output) < len(scan.input) - n_scan:
        raise ModelError(f"Scan node '{scan.name}': its body has {len(body.input)} inputs and {len(body.output)} "
                         f"outputs for {len(scan.input)} Scan inputs ({n_scan} scanned); they must correspond")
    for key in ("scan_input_axes", "scan_output_axes", "scan_input_directions", "scan_output_directions"):
        if any(int(v) != 0 for v in a.get(key, [])):
            raise ModelError(f"Scan node '{scan.name}': {key}={a[key]} is not supported; scan over axis 0 forwards")
    n_state = len(scan.input) - n_scan
    outer_inits = {t.name: decode_tensor(t, f"initializer '{t.name}'") for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            outer_inits[n.output[0]] = _constant_value(n)
    outer_shapes = {v.name: v for v in list(g.input) + list(g.value_info)}
    new_inputs, states, step_inputs = [], [], []
    for k, bin_ in enumerate(body.input):
        outer = scan.input[k]
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(bin_)
        if k < n_state:
            if outer in outer_inits:
                init = np.asarray(outer_inits[outer], dtype=np.float64)
                if init.ndim and init.shape[0] == 1:
                    init = init[0]
                shape = ["N", *init.shape]
            elif outer in outer_shapes:
                init = np.zeros(())
                shape = None
            else:
                raise ModelError(f"Scan node '{scan.name}': initial state '{outer}' is neither an input nor constant")
            states.append([bin_.name, body.output[k].name, init.tolist()])
            if not vi.type.tensor_type.HasField("shape") and shape is not None:
                vi = helper.make_tensor_value_info(bin_.name, onnx.TensorProto.FLOAT, shape)
        else:
            step_inputs.append(bin_.name)
            if not vi.type.tensor_type.HasField("shape") and outer in outer_shapes:
                dims = outer_shapes[outer].type.tensor_type.shape.dim[1:]
                vi = helper.make_tensor_value_info(bin_.name, onnx.TensorProto.FLOAT,
                                                   [d.dim_param or d.dim_value for d in dims])
        new_inputs.append(vi)
    used = {i for n in body.node for i in n.input}
    inits = [numpy_helper.from_array(v, k) for k, v in outer_inits.items() if k in used]
    new_graph = helper.make_graph(list(body.node), body.name or g.name, new_inputs, list(body.output),
                                  list(body.initializer) + inits)
    new = helper.make_model(new_graph, opset_imports=list(model.opset_import), functions=list(model.functions))
    new.ir_version = model.ir_version
    meta = {p.key: p.value for p in model.metadata_props}
    meta["nmc.state"] = json.dumps(states)
    meta["nmc.step_inputs"] = json.dumps(step_inputs)
    if "nmc.num_steps" not in meta and n_scan:
        d = outer_shapes.get(scan.input[n_state])
        if d is not None and d.type.tensor_type.shape.dim and d.type.tensor_type.shape.dim[0].dim_value > 0:
            meta["nmc.num_steps"] = str(d.type.tensor_type.shape.dim[0].dim_value)
    meta.pop("nmc.outputs", None)
    helper.set_model_props(new, meta)
    return new


# ----------------------------------------------------------------- preparation: opset, shapes, constants
#: the opset older models are converted to (onnx.version_converter) before conversion
UPGRADE_OPSET = 13


def _upgrade_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert a model older than :data:`MIN_MODEL_OPSET` to opset :data:`UPGRADE_OPSET` with ONNX's
    version converter (e.g. the opset-6/9 models of the onnx wheel's test data)."""
    version = _opset(model, "")
    if version is None or version >= MIN_MODEL_OPSET:
        return model
    try:
        from onnx import version_converter
        new = version_converter.convert_version(model, UPGRADE_OPSET)
    except Exception as e:  # the converter raises plain RuntimeErrors naming the op it cannot adapt
        raise ModelError(f"model '{model.graph.name}' uses ai.onnx opset {version}; nmc reads opset >= "
                         f"{MIN_MODEL_OPSET} and converting it to opset {UPGRADE_OPSET} failed ({e}); re-export "
                         f"with opset_version={nmc_ops.MIN_OPSET}") from None
    new.metadata_props.extend([p for p in model.metadata_props if p.key not in {q.key for q in new.metadata_props}])
    return new


def _fuse_softsign(model: onnx.ModelProto) -> onnx.ModelProto:
    """``Div(x, Add(Abs(x), 1))`` -- Softsign as torch's legacy exporter writes it -- becomes one ``Softsign`` node
    (the look-up table's), when the ``Abs`` and ``Add`` results feed nothing else. Returns the model (a copy when
    changed)."""
    g = model.graph
    prod = {t: n for n in g.node for t in n.output if t}
    uses: dict[str, int] = {}
    for n in g.node:
        for t in n.input:
            uses[t] = uses.get(t, 0) + 1
    for o in g.output:
        uses[o.name] = uses.get(o.name, 0) + 1
    inits = {t.name: t for t in g.initializer}

    def one(t):  # a constant of value 1 with one element (it broadcasts without changing a shape)
        n = prod.get(t)
        try:
            if n is not None and n.op_type == "Constant" and len(n.attribute) == 1:
                at = n.attribute[0]
                v = numpy_helper.to_array(at.t) if at.name == "value" else np.asarray(helper.get_attribute_value(at))
            elif t in inits and t not in prod:
                v = numpy_helper.to_array(inits[t])
            else:
                return False
            return v.size == 1 and v.ndim <= 1 and float(v.reshape(-1)[0]) == 1.0
        except (TypeError, ValueError):  # not a numeric constant: the converters will say so
            return False

    nodes = list(g.node)
    pos = {t: i for i, n in enumerate(nodes) for t in n.output if t}
    repl: dict[int, onnx.NodeProto | None] = {}  # node index -> its replacement (None: removed)
    for i, n in enumerate(nodes):
        if n.op_type != "Div" or n.domain not in ("", "ai.onnx") or len(n.input) != 2:
            continue
        x, d = n.input
        add = prod.get(d)
        if add is None or add.op_type != "Add" or uses.get(d) != 1 or len(add.input) != 2:
            continue
        a = next((u for u, v in (list(add.input), list(add.input)[::-1]) if one(v)), None)
        ab = prod.get(a) if a is not None else None
        if ab is None or ab.op_type != "Abs" or ab.input[0] != x or uses.get(a) != 1:
            continue
        repl[i] = helper.make_node("Softsign", [x], [n.output[0]], name=n.name)
        repl[pos[d]] = repl[pos[a]] = None
    if not repl:
        return model
    new = onnx.ModelProto()
    new.CopyFrom(model)
    del new.graph.node[:]
    new.graph.node.extend([repl.get(i, n) for i, n in enumerate(nodes) if repl.get(i, n) is not None])
    return new


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """ONNX shape inference's view of every tensor (dims as ints, or the symbol/None): used to go on checking the
    nodes after an unsupported one, so that every unsupported node is listed at once."""
    try:
        inf = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # inference is a help for messages only
        return {}
    out = {}
    for vi in list(inf.graph.value_info) + list(inf.graph.output) + list(inf.graph.input):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    return out


#: ops never folded into constants (random, or with subgraphs)
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
            "If", "Loop", "Scan", "Dropout"}


def _fold_constant(ctx: "_Ctx", node: onnx.NodeProto) -> bool:
    """Constant folding: a standard node whose inputs are all constants is evaluated once (ONNX's reference
    implementation) and its outputs become constants; ``Shape``/``Size`` of an activation read its known shape
    (axis 0: the model's batch size).  Returns whether the node was folded."""
    if node.domain not in ("", "ai.onnx") or node.op_type in _NO_FOLD:
        return False
    ins = [t for t in node.input if t]
    if node.op_type in ("Shape", "Size") and ins and ins[0] in ctx.shapes:
        full = np.array([ctx.batch, *ctx.shapes[ins[0]]], np.int64)
        if node.op_type == "Size":
            ctx.consts[node.output[0]] = np.array(int(np.prod(full)), np.int64)
            return True
        a = _attrs(node)
        start, end = int(a.get("start", 0)), a.get("end")
        ctx.consts[node.output[0]] = full[start:(None if end is None else int(end))]
        return True
    if not all(t in ctx.consts for t in ins):
        return False
    from onnx.reference import ReferenceEvaluator
    try:
        ref = ReferenceEvaluator(node, opsets={"": ctx.opset})
        vals = ref.run(None, {t: ctx.consts[t] for t in ins})
    except Exception as e:  # e.g. shapes that do not broadcast
        args = " and ".join(f"'{t}' {list(np.shape(ctx.consts[t]))}" for t in ins)
        raise ModelError(f"{ctx.where(node)}: computing it from its constants {args} fails "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); fix the model") from None
    for t, v in zip(node.output, vals):
        if t:
            v = np.asarray(v)
            if v.size > MAX_FOLDED_ELEMS:
                raise ModelError(f"node '{node.name}' ({node.op_type}) computes a constant '{t}' of shape "
                                 f"{list(v.shape)}, more than nmc reads in one tensor ({MAX_FOLDED_ELEMS}); the model "
                                 "is far too large for the chip")
            ctx.consts[t] = v
    return True


# ----------------------------------------------------------------- conversion context
class _Ctx:
    def __init__(self, model: onnx.ModelProto, conv: Convention, approximate: Mapping[str, str] | None = None):
        self.model = model
        self.conv = conv
        self.opset = _opset(model, "") or MIN_MODEL_OPSET
        self.batch = 1  #: the models' fixed batch size (1 when symbolic): what Shape reports for axis 0
        self.opaque: set[str] = set()  #: outputs of unsupported nodes (shapes from ONNX shape inference)
        self.approximate = dict(approximate or {})  #: op type -> approximation the user allowed
        self.approximated: list[dict[str, str]] = []  #: what was approximated (node, op, how)
        self.consts: dict[str, np.ndarray] = {t.name: decode_tensor(t, f"initializer '{t.name}'")
                                              for t in model.graph.initializer}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.nodes: list[Node] = []
        self.node_names: set[str] = set()
        self.n_consumers: dict[str, int] = {}
        #: tensor -> the ONNX node computing it (for messages that name a pattern, e.g. GLU)
        #: ranges a converter knows exactly (tensor -> [min, max, integer]), shipped as metadata nmc.ranges
        self.known_ranges: dict[str, list] = {}
        self.added_inputs: dict[str, str] = {}  #: graph inputs a converter adds (the step index): name -> kind
        self.onnx_producer: dict[str, onnx.NodeProto] = {t: n for n in model.graph.node for t in n.output if t}
        for n in model.graph.node:
            for i in n.input:
                self.n_consumers[i] = self.n_consumers.get(i, 0) + 1
        self.graph_outputs = {o.name for o in model.graph.output}

    def where(self, node: onnx.NodeProto) -> str:
        return f"node '{node.name}' ({node.op_type})"

    def add_input(self, name: str, shape: tuple[int, ...], kind: str) -> None:
        """Make ``name`` a graph input (of ``shape`` per sample) unless the model has it already."""
        if name not in self.shapes:
            self.shapes[name] = tuple(shape)
            self.added_inputs[name] = kind

    def is_const(self, t: str) -> bool:
        return t in self.consts

    def const(self, node: onnx.NodeProto, t: str, role: str) -> np.ndarray:
        if t not in self.consts:
            raise _Unsupported(f"{role} '{t}' is not a constant (initializer or Constant node); nmc compiles it into "
                               f"fixed parameters: make it an initializer")
        return self.consts[t]

    def shape(self, t: str) -> tuple[int, ...]:
        if t not in self.shapes:
            if t in self.consts:
                raise _Unsupported(f"input '{t}' is a constant where nmc needs activations (a graph input or a "
                                   "node's output)")
            raise ModelError(f"tensor '{t}' is read but no node, input or initializer provides it")
        return self.shapes[t]

    def emit(self, node: onnx.NodeProto, op: str, inputs: list[str], outputs: list[str],
             shapes: list[tuple[int, ...]], attrs: dict | None = None, params: dict | None = None) -> Node:
        base = node.name or f"{node.op_type.lower()}_{len(self.nodes)}"
        name, k = base, 1
        while name in self.node_names:
            name, k = f"{base}_{k}", k + 1
        self.node_names.add(name)
        for t, shp in zip(outputs, shapes):
            size = 1
            for d in shp:
                size *= int(d)
            if size > MAX_ACTIVATIONS:
                raise ShapeError(f"{self.where(node)}: output '{t}' has shape {list(shp)} = {size} values per sample, "
                                 f"more than nmc compiles ({MAX_ACTIVATIONS}); the model is far too large for the chip")
        ps = {k2: np.asarray(v, dtype=np.float64) for k2, v in (params or {}).items()}
        for k2, v in ps.items():
            bad = ~np.isfinite(v)
            if bad.any():
                idx = [int(i) for i in np.argwhere(bad)[0]] if v.ndim else []
                raise ModelError(f"{self.where(node)}: parameter {k2} has {int(bad.sum())} NaN or infinite value(s), "
                                 f"the first at index {idx} ({v[tuple(idx)]}), from its constants and attributes "
                                 "(e.g. a huge alpha/beta or a zero variance); fix the exported values")
        n = Node(name, op, list(inputs), list(outputs), dict(attrs or {}), ps, source=node.name)
        for t, s in zip(outputs, shapes):
            self.shapes[t] = tuple(int(d) for d in s)
        self.nodes.append(n)
        return n

    def producer(self, t: str) -> Node | None:
        for n in reversed(self.nodes):
            if t in n.outputs:
                return n
        return None


Converter = Callable[[_Ctx, onnx.NodeProto, dict], None]
#: ONNX op type (``domain::op`` for non-default domains) -> converter
CONVERTERS: dict[str, Converter] = {}


def register_converter(op_type: str):
    """Decorator registering a converter; a second registration of the same op type is an error."""
    def deco(fn: Converter) -> Converter:
        if op_type in CONVERTERS:
            raise RegistryError(f"an ONNX converter for '{op_type}' is already registered")
        CONVERTERS[op_type] = fn
        return fn
    return deco


#: value rules of the standard attributes the converters read: name -> (ONNX type, lo, hi)
_STD_ATTRS: dict[str, tuple[int, int, int]] = {
    **{k: (onnx.AttributeProto.INTS, 1, 1 << 16) for k in ("strides", "kernel_shape", "dilations")},
    "pads": (onnx.AttributeProto.INTS, 0, 1 << 16),
    "group": (onnx.AttributeProto.INT, 1, 1 << 16),
    **{k: (onnx.AttributeProto.INT, 0, 1) for k in ("transA", "transB", "ceil_mode", "count_include_pad",
                                                     "allowzero", "training_mode")},
    "axis": (onnx.AttributeProto.INT, -64, 64),
    "num_scan_inputs": (onnx.AttributeProto.INT, 0, 1 << 16),
}


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attribute values, checked where they enter: strings are UTF-8, floats finite, and the
    standard attributes the converters read have their ONNX type and a sane range."""
    out = {}
    where = f"node '{node.name}' ({node.op_type})"
    for a in node.attribute:
        try:
            v = helper.get_attribute_value(a)
        except Exception as e:  # an attribute without a value, an unknown type
            raise AttributeSchemaError(f"{where}: attribute '{a.name}' has no readable value ({e}); re-export the "
                                       "model") from None
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                raise AttributeSchemaError(f"{where}: attribute '{a.name}' = {v[:40]!r} is not UTF-8 text; fix the "
                                           "exporter") from None
        elif isinstance(v, float) or (isinstance(v, list) and v and isinstance(v[0], float)):
            vals = v if isinstance(v, list) else [v]
            bad = [x for x in vals if not math.isfinite(x)]
            if bad:
                raise AttributeSchemaError(f"{where}: attribute '{a.name}' = {v} is not finite; give a finite number")
        rule = _STD_ATTRS.get(a.name) if node.domain in ("", "ai.onnx") else None
        if rule is not None:
            typ, lo, hi = rule
            if a.type != typ:
                raise AttributeSchemaError(f"{where}: attribute '{a.name}' has type "
                                           f"{onnx.AttributeProto.AttributeType.Name(a.type)}, expected "
                                           f"{onnx.AttributeProto.AttributeType.Name(typ)}")
            for x in (v if isinstance(v, list) else [v]):
                if not lo <= x <= hi:
                    raise AttributeSchemaError(f"{where}: attribute {a.name}={v} is out of range; each value must lie "
                                               f"in {lo} .. {hi}")
        out[a.name] = v
    return out


def _ins(node: onnx.NodeProto) -> list[str]:
    return list(node.input)


# ----------------------------------------------------------------- converters
@register_converter("Gemm")
def _gemm(ctx: _Ctx, node, a):
    if int(a.get("transA", 0)):
        raise _Unsupported("transA=1 is not supported; transpose the weights instead (transB=1)")
    ins = _ins(node)
    if ctx.is_const(ins[0]):
        raise _Unsupported("input A is a constant; nmc needs the activations as A and the weights as B")
    xs = ctx.shape(ins[0])
    if len(xs) != 1:
        raise _Unsupported(f"input A has shape [N, {', '.join(map(str, xs))}]; Gemm needs [N, features]: Flatten first")
    B = ctx.const(node, ins[1], "operand B")
    if B.ndim != 2:
        raise _Unsupported(f"operand B has shape {list(B.shape)}, not 2-D")
    W = (B if int(a.get("transB", 0)) else B.T).astype(np.float64) * float(a.get("alpha", 1.0))
    if W.shape[1] != xs[0]:
        raise ShapeError(f"{ctx.where(node)}: weights {list(W.shape)} (out, in) do not fit input '{ins[0]}' with "
                         f"{xs[0]} features; check transB and the weight shape")
    b = np.zeros(W.shape[0])
    if len(ins) > 2 and ins[2]:
        C = np.asarray(ctx.const(node, ins[2], "bias C"), dtype=np.float64)
        if C.ndim == 2 and C.shape[0] == 1:
            C = C[0]
        try:
            b = np.broadcast_to(C, (W.shape[0],)) * float(a.get("beta", 1.0))
        except ValueError:
            raise _Unsupported(f"bias C of shape {list(C.shape)} does not broadcast to [{W.shape[0]}] per sample")
    ctx.emit(node, "dense", [ins[0]], [node.output[0]], [(W.shape[0],)], params={"W": W, "b": b})


@register_converter("MatMul")
def _matmul(ctx: _Ctx, node, a):
    ins = _ins(node)
    if ctx.is_const(ins[0]):
        raise _Unsupported("the left operand is a constant; nmc supports x @ W with a constant right operand W")
    xs = ctx.shape(ins[0])
    if not ctx.is_const(ins[1]):
        raise _Unsupported(f"the right operand '{ins[1]}' is not a constant: nmc maps MatMul to a synapse with fixed "
                           f"weights; make the weight an initializer (a product of two activations is not supported)")
    B = ctx.consts[ins[1]]
    if len(xs) != 1 or B.ndim != 2:
        raise _Unsupported(f"shapes [N, {', '.join(map(str, xs))}] @ {list(B.shape)}: only [N, in] @ [in, out] is "
                           f"supported; Flatten first")
    if B.shape[0] != xs[0]:
        raise ShapeError(f"{ctx.where(node)}: weight '{ins[1]}' {list(B.shape)} does not fit input '{ins[0]}' with "
                         f"{xs[0]} features")
    ctx.emit(node, "dense", [ins[0]], [node.output[0]], [(B.shape[1],)],
             params={"W": B.T.astype(np.float64), "b": np.zeros(B.shape[1])})


def _pads_2d(node, a, kernel, what="pads") -> tuple[int, int, int, int]:
    auto = a.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise _Unsupported(f"auto_pad={auto} is not supported; export with explicit pads (auto_pad NOTSET)")
    if auto == "VALID":
        return (0, 0, 0, 0)
    pads = tuple(int(p) for p in a.get("pads", (0, 0, 0, 0)))
    if len(pads) != 4:
        raise _Unsupported(f"{what}={list(pads)} is not 2-D")
    return pads


@register_converter("Conv")
def _conv(ctx: _Ctx, node, a):
    if _other_form(ctx, node, a):
        return
    ins = _ins(node)
    xs = ctx.shape(ins[0])
    W = ctx.const(node, ins[1], "weight W").astype(np.float64)
    if len(xs) != 3 or W.ndim != 4:
        raise _Unsupported(f"only 2-D convolutions ([N, C, H, W] input) are supported; input has shape "
                           f"[N, {', '.join(map(str, xs))}]")
    group = int(a.get("group", 1))
    if xs[0] != W.shape[1] * group or W.shape[0] % group:
        raise ShapeError(f"{ctx.where(node)}: weight {list(W.shape)} with group={group} does not fit input "
                         f"'{ins[0]}' with {xs[0]} channels")
    ks = tuple(int(k) for k in a.get("kernel_shape", W.shape[2:]))
    if ks != tuple(W.shape[2:]):
        raise ShapeError(f"{ctx.where(node)}: kernel_shape {list(ks)} differs from the weight's {list(W.shape[2:])}")
    strides = tuple(int(s) for s in a.get("strides", (1, 1)))
    dil = tuple(int(d) for d in a.get("dilations", (1, 1)))
    if len(strides) != 2 or len(dil) != 2:
        raise _Unsupported(f"strides={list(strides)} and dilations={list(dil)} must have 2 values each (2-D)")
    pads = _pads_2d(node, a, ks)
    b = np.zeros(W.shape[0])
    if len(ins) > 2 and ins[2]:
        bb = np.asarray(ctx.const(node, ins[2], "bias B"), dtype=np.float64).reshape(-1)
        if bb.size not in (1, W.shape[0]):
            raise ShapeError(f"{ctx.where(node)}: bias '{ins[2]}' has {bb.size} values for {W.shape[0]} output "
                             "channels; give one per channel")
        b = np.broadcast_to(bb, (W.shape[0],))
    out = conv_out_shape(xs, W.shape, strides, pads, dil)
    if min(out) < 1:
        raise ShapeError(f"{ctx.where(node)}: output shape {list(out)} is empty (input {list(xs)}, kernel {list(ks)})")
    ctx.emit(node, "conv", [ins[0]], [node.output[0]], [out],
             attrs={"strides": list(strides), "pads": list(pads), "dilations": list(dil), "group": group},
             params={"W": W, "b": b})


@register_converter("Relu")
def _relu(ctx, node, a):
    ctx.emit(node, "relu", [node.input[0]], [node.output[0]], [ctx.shape(node.input[0])])


# ----- activations the soma computes by look-up table (IR op ``lut``; ReLU where they are one)
def _lut(ctx: _Ctx, node, fn: str, **attrs) -> None:
    ctx.emit(node, "lut", [node.input[0]], [node.output[0]], [ctx.shape(node.input[0])],
             attrs={"fn": fn, "alpha": 0.0, "beta": 0.0, "min": -math.inf, "max": math.inf,
                    **{k: float(v) for k, v in attrs.items()}})


#: ONNX ops that are one table function of their input: op -> (table function, {attribute: ONNX default})
_TABLE_OPS: dict[str, tuple[str, dict[str, float]]] = {
    "Sigmoid": ("sigmoid", {}), "Tanh": ("tanh", {}), "HardSigmoid": ("hardsigmoid", {"alpha": 0.2, "beta": 0.5}),
    "Elu": ("elu", {"alpha": 1.0}),
    "Selu": ("selu", {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}),
    "Softplus": ("softplus", {}), "Softsign": ("softsign", {}), "ThresholdedRelu": ("thresholdedrelu", {"alpha": 1.0}),
    "Mish": ("mish", {}), "HardSwish": ("hardswish", {}),
}


def _table_converter(fn: str, defaults: dict[str, float]) -> Converter:
    def convert(ctx, node, a):
        _lut(ctx, node, fn, **{k: a.get(k, v) for k, v in defaults.items()})
    return convert


for _op, (_fn, _defaults) in _TABLE_OPS.items():
    register_converter(_op)(_table_converter(_fn, _defaults))


def _leaky(ctx, node, alpha: float) -> None:
    if alpha == 0.0:
        _relu(ctx, node, {})
    else:
        _lut(ctx, node, "leakyrelu", alpha=alpha)


@register_converter("LeakyRelu")
def _leakyrelu(ctx, node, a):
    _leaky(ctx, node, float(a.get("alpha", 0.01)))


@register_converter("PRelu")
def _prelu(ctx, node, a):
    slope = np.asarray(ctx.const(node, node.input[1], "slope"), np.float64)
    if slope.size == 0 or not np.all(slope == slope.reshape(-1)[0]):
        raise _Unsupported(f"its slopes differ per channel ({np.unique(slope)[:4].tolist()}...); a core's look-up "
                           "table is one function for all its neurons: export one slope (LeakyRelu)")
    _leaky(ctx, node, float(slope.reshape(-1)[0]))


@register_converter("Clip")
def _clip(ctx, node, a):
    ins = list(node.input) + ["", ""]
    lo, hi = (float(np.asarray(ctx.const(node, t, role)).reshape(-1)[0]) if t else default
              for t, role, default in ((ins[1], "min", -math.inf), (ins[2], "max", math.inf)))
    if lo > hi:
        raise _Unsupported(f"min {lo:g} > max {hi:g}")
    if lo == 0.0 and hi == math.inf:
        _relu(ctx, node, a)
    else:
        _lut(ctx, node, "clip", min=lo, max=hi)


@register_converter("Celu")
def _celu(ctx, node, a):
    alpha = float(a.get("alpha", 1.0))
    if alpha == 0.0:
        raise _Unsupported("alpha = 0 (ONNX divides x by alpha): give a non-zero alpha")
    _lut(ctx, node, "celu", alpha=alpha)


@register_converter("Gelu")
def _gelu(ctx, node, a):
    approx = a.get("approximate", "none")
    if approx not in ("none", "tanh"):
        raise _Unsupported(f"approximate = {approx!r}; ONNX defines 'none' and 'tanh'")
    _lut(ctx, node, "gelu" if approx == "none" else "gelu_tanh")


@register_converter("Identity")
def _identity(ctx, node, a):
    ctx.emit(node, "identity", [node.input[0]], [node.output[0]], [ctx.shape(node.input[0])])


@register_converter("Flatten")
def _flatten(ctx, node, a):
    xs = ctx.shape(node.input[0])
    axis = int(a.get("axis", 1))
    if axis < 0:
        axis += len(xs) + 1
    if axis != 1:
        raise _Unsupported(f"axis={a.get('axis')} would merge the batch dimension; only axis=1 is supported")
    ctx.emit(node, "reshape", [node.input[0]], [node.output[0]], [(int(np.prod(xs)),)],
             attrs={"shape": [int(np.prod(xs))]})


@register_converter("Reshape")
def _reshape(ctx, node, a):
    x = node.input[0]
    xs = ctx.shape(x)
    shape = [int(d) for d in ctx.const(node, node.input[1], "target shape").reshape(-1)]
    if int(a.get("allowzero", 0)) and 0 in shape:  # allowzero only changes what a 0 in the shape means
        raise _Unsupported(f"allowzero=1 with a 0 in the target shape {shape} makes an empty tensor")
    if not shape:
        raise _Unsupported("a scalar target shape drops the batch dimension")
    full = (ctx.batch, *xs)  # the model's batch size (1 when symbolic) for the 0-copy rule
    size = int(np.prod(xs))
    dims = [full[i] if d == 0 and i < len(full) else d for i, d in enumerate(shape)]
    lead, rest = dims[0], dims[1:]
    if rest.count(-1) > 1 or (lead == -1 and -1 in rest):
        raise _Unsupported(f"target shape {shape} has more than one -1")
    if lead not in (-1, ctx.batch):
        raise _Unsupported(f"target shape {shape} does not keep the batch dimension first; use [0 or -1, ...]")
    if -1 in rest:
        known = int(np.prod([d for d in rest if d != -1]))
        if known == 0 or size % known:
            raise ShapeError(f"{ctx.where(node)}: cannot reshape [{', '.join(map(str, xs))}] to {shape}")
        rest[rest.index(-1)] = size // known
    if int(np.prod(rest)) != size:
        raise ShapeError(f"{ctx.where(node)}: cannot reshape [{', '.join(map(str, xs))}] (per sample) to {shape}")
    ctx.emit(node, "reshape", [x], [node.output[0]], [tuple(rest)], attrs={"shape": list(rest)})


#: op -> the approximations ``load_onnx(approximate={op: name})`` accepts (registered with their converters)
APPROXIMATIONS: dict[str, tuple[str, ...]] = {}

#: converters of Conv / AveragePool / MaxPool for what the 2-D image form does not cover (1-D and 3-D inputs,
#: pooling with ceil_mode or dilations): op type -> converter (registered by frontend/onnx_ops.py)
OTHER_FORMS: dict[str, Converter] = {}


def _other_form(ctx: _Ctx, node, a) -> bool:
    """Convert ``node`` with its OTHER_FORMS converter when it is not a plain 2-D conv/pool; returns whether it did."""
    xs = ctx.shape(node.input[0])
    plain = len(xs) == 3 and not int(a.get("ceil_mode", 0)) and all(int(d) == 1 for d in a.get("dilations", (1, 1)))
    if node.op_type == "Conv":
        plain = len(xs) == 3
    if plain or node.op_type not in OTHER_FORMS:
        return False
    OTHER_FORMS[node.op_type](ctx, node, a)
    return True


def _pool(ctx: _Ctx, node, a, op: str):
    if _other_form(ctx, node, a):
        return
    if int(a.get("ceil_mode", 0)):
        raise _Unsupported("ceil_mode=1 is not supported; export with ceil_mode=0 (floor), adding pads if needed")
    if any(int(d) != 1 for d in a.get("dilations", (1, 1))):
        raise _Unsupported(f"dilations={a['dilations']} are not supported for pooling")
    if len(node.output) > 1 and node.output[1]:
        raise _Unsupported("the Indices output is not supported")
    xs = ctx.shape(node.input[0])
    if "kernel_shape" not in a:
        raise _Unsupported("the kernel_shape attribute is missing")
    ks = tuple(int(k) for k in a["kernel_shape"])
    if len(xs) != 3 or len(ks) != 2:
        raise _Unsupported(f"only 2-D pooling is supported; input has shape [N, {', '.join(map(str, xs))}]")
    strides = tuple(int(s) for s in a.get("strides", (1, 1)))
    if len(strides) != 2:
        raise _Unsupported(f"strides={list(strides)} must have 2 values (2-D)")
    pads = _pads_2d(node, a, ks)
    out = pool_out_shape(xs, ks, strides, pads)
    if min(out) < 1:
        raise ShapeError(f"{ctx.where(node)}: output shape {list(out)} is empty (input {list(xs)}, kernel {list(ks)})")
    attrs = {"kernel": list(ks), "strides": list(strides), "pads": list(pads)}
    if op == "avgpool":
        attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
    ctx.emit(node, op, [node.input[0]], [node.output[0]], [out], attrs=attrs)


@register_converter("MaxPool")
def _maxpool(ctx, node, a):
    _pool(ctx, node, a, "maxpool")


@register_converter("AveragePool")
def _avgpool(ctx, node, a):
    _pool(ctx, node, a, "avgpool")


@register_converter("GlobalAveragePool")
def _gap(ctx, node, a):
    xs = ctx.shape(node.input[0])
    if len(xs) != 3:
        raise _Unsupported(f"only 2-D pooling is supported; input has shape [N, {', '.join(map(str, xs))}]")
    ctx.emit(node, "avgpool", [node.input[0]], [node.output[0]], [(xs[0], 1, 1)],
             attrs={"kernel": [xs[1], xs[2]], "strides": [1, 1], "pads": [0, 0, 0, 0], "count_include_pad": 0})


@register_converter("BatchNormalization")
def _bn(ctx: _Ctx, node, a):
    if int(a.get("training_mode", 0)):
        raise _Unsupported("training_mode=1; export the model in eval mode")
    if len([o for o in node.output if o]) > 1:
        raise _Unsupported("running-statistics outputs are not supported; export the model in eval mode")
    xs = ctx.shape(node.input[0])
    gamma, beta, mean, var = (np.asarray(ctx.const(node, t, r), dtype=np.float64).reshape(-1)
                              for t, r in zip(node.input[1:5], ("scale", "bias", "mean", "var")))
    if not (len(gamma) == len(beta) == len(mean) == len(var) == xs[0]):
        raise ShapeError(f"{ctx.where(node)}: parameters of length {len(gamma)} do not match {xs[0]} channels")
    eps = float(a.get("epsilon", 1e-5))
    if not np.all(var + eps > 0):
        c = int(np.argmax(~(var + eps > 0)))
        raise ModelError(f"{ctx.where(node)}: channel {c} has var {var[c]:g} + epsilon {eps:g} <= 0; the variance "
                         "must be >= 0 and epsilon > 0: fix the exported statistics")
    scale = gamma / np.sqrt(var + eps)
    ctx.emit(node, "batchnorm", [node.input[0]], [node.output[0]], [xs],
             params={"scale": scale, "bias": beta - mean * scale})


def _state_input(ctx: _Ctx, node, t: str, role: str):
    if ctx.conv.kind(t) != "state" or t in ctx.consts:
        raise ModelError(f"{ctx.where(node)}: {role} input '{t}' is not a state input; nmc::{node.op_type} needs its "
                         f"state passed in as a graph input paired with a graph output: declare the pair in metadata "
                         f"nmc.state or name the output '{t}.next'")


def _neuron_converter(model):
    """The converter of a neuron model's nmc op: attributes checked against its schema, every state port
    a state input of the synaptic input's shape (one value per neuron)."""
    schema = model.onnx

    def convert(ctx: _Ctx, node, a):
        attrs = validate_attrs(node)
        if len(node.input) != len(schema.inputs) or len(node.output) != len(schema.outputs):
            raise ModelError(f"{ctx.where(node)}: nmc::{node.op_type} takes inputs ({', '.join(schema.inputs)}) and "
                             f"outputs ({', '.join(schema.outputs)}); it has {len(node.input)} and {len(node.output)}")
        port = dict(zip(schema.inputs, node.input))
        x = port[model.synapse_port]
        for w in model.state:
            t = port[w.in_port]
            _state_input(ctx, node, t, f"state '{w.in_port}'")
            if ctx.shape(t) != ctx.shape(x):
                raise ShapeError(f"{ctx.where(node)}: input '{x}' {list(ctx.shape(x))} and state '{t}' "
                                 f"{list(ctx.shape(t))} differ in shape; the state needs one value per neuron")
        params = {}
        for p in model.param_ports:  # per-neuron parameters: constants of the neurons' shape (or broadcasting to it)
            v = np.asarray(ctx.const(node, port[p], f"per-neuron parameter {p}"), dtype=np.float64)
            try:
                v = np.broadcast_to(v, ctx.shape(x)).copy()
            except ValueError:
                raise ShapeError(f"{ctx.where(node)}: per-neuron parameter {p} '{port[p]}' of shape {list(v.shape)} "
                                 f"does not broadcast to the neurons' shape {list(ctx.shape(x))}; give one value per "
                                 "neuron or a scalar") from None
            spec = schema.params[p]
            bad = spec.violations(v).reshape(-1)
            if bad.any():
                i = int(np.argmax(bad))
                raise AttributeSchemaError(f"{ctx.where(node)}: per-neuron parameter {p} of neuron {i} is "
                                           f"{float(v.reshape(-1)[i]):g}; it must be {spec.describe()} ({spec.doc}): "
                                           f"fix the tensor '{port[p]}' in the export")
            params[p] = v
        attrs = {k: (float(v) if schema.attrs[k].type == "float" else v) for k, v in attrs.items()}
        ctx.emit(node, model.ir_op, [port[p] for p in model.ir_inputs], list(node.output),
                 [ctx.shape(x)] * len(node.output), attrs=attrs, params=params)

    return convert


for _m in MODELS.values():  # every neuron model with an ONNX op (nmc.neurons)
    if _m.onnx is not None:
        register_converter(f"nmc::{_m.onnx.name}")(_neuron_converter(_m))


def _encoder_converter(enc):
    """The converter of a spike encoder: attributes checked, ``t`` the step index input ``nmc.t``."""
    def convert(ctx: _Ctx, node, a):
        attrs = validate_attrs(node)
        if len(node.input) != 2 or len(node.output) != 1:
            raise ModelError(f"{ctx.where(node)}: nmc::{node.op_type} takes inputs (x, t) and output (s); it has "
                             f"{len(node.input)} and {len(node.output)}")
        x, t = node.input
        if t != STEP_INDEX:
            raise _Unsupported(f"its input t is '{t}'; it must be the step index, the graph input '{STEP_INDEX}' "
                               "(shape [N, 1]) that every runner fills with the step number")
        ctx.emit(node, enc.ir_op, [x, t], [node.output[0]],
                 [enc.out_shape({**enc.schema.defaults(), **attrs}, ctx.shape(x))], attrs=attrs)

    return convert


for _e in ENCODERS.values():  # the spike encoders (nmc.encoders)
    register_converter(f"nmc::{_e.schema.name}")(_encoder_converter(_e))


# ----------------------------------------------------------------- main entry
def _input_shape(vi: onnx.ValueInfoProto) -> tuple[int, ...]:
    """The per-sample shape of a graph input (its leading batch axis, symbolic or a fixed size, stripped)."""
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
        raise ShapeError(f"graph input '{vi.name}' has no shape; export with input shapes [N, ...] (batch first)")
    dims = list(tt.shape.dim)
    if not dims:
        raise ShapeError(f"graph input '{vi.name}' is a scalar; nmc needs [N, ...] with a leading batch dimension")
    shape = []
    for i, d in enumerate(dims[1:], start=1):
        if not d.HasField("dim_value"):
            raise ShapeError(f"graph input '{vi.name}': dimension {i} is {d.dim_param or 'unknown'}; only the batch "
                             f"dimension may be symbolic: export with fixed feature/image sizes")
        if d.dim_value < 1:
            raise ShapeError(f"graph input '{vi.name}': dimension {i} is {d.dim_value}; sizes must be >= 1")
        shape.append(int(d.dim_value))
    if int(np.prod(shape, dtype=object)) > MAX_ACTIVATIONS:
        raise ShapeError(f"graph input '{vi.name}' has shape [N, {', '.join(map(str, shape))}], more than "
                         f"{MAX_ACTIVATIONS} values per sample; the model is far too large for the chip")
    return tuple(shape)


#: inputs every node of an op must have (the rest are optional); nmc ops: their schema's ports
_ARITY = {"Gemm": 2, "MatMul": 2, "Conv": 2, "Reshape": 2, "Add": 2, "BatchNormalization": 5,
          **{f"nmc::{m.onnx.name}": len(m.onnx.inputs) for m in MODELS.values() if m.onnx is not None},
          **{f"nmc::{e.schema.name}": 2 for e in ENCODERS.values()}}


def _training_losses(g: onnx.GraphProto) -> dict[str, str]:
    """Nodes of a training loss torch exported with the model (node name -> why it is refused): a loss compares the
    model's output with a target, which a deployed model does not have.  Recognised: ``PoissonNLLLoss``
    (``log_input=True``: ``Exp(x) - target * x``; ``log_input=False``: ``x - target * Log(x + eps)``)."""
    prod = {t: n for n in g.node for t in n.output if t}
    found: dict[str, str] = {}
    for sub in (n for n in g.node if n.op_type == "Sub" and len(n.input) == 2):
        a, b = (prod.get(t) for t in sub.input)
        if b is None or b.op_type != "Mul":
            continue
        mul_in = set(b.input)
        if a is not None and a.op_type == "Exp" and a.input[0] in mul_in:
            part, form = [a, b, sub], "exp(x) - target * x"
        else:
            logs = [prod.get(t) for t in b.input]
            log = next((n for n in logs if n is not None and n.op_type == "Log"), None)
            add = prod.get(log.input[0]) if log is not None else None
            x = add.input if add is not None and add.op_type == "Add" else (log.input if log is not None else ())
            if log is None or sub.input[0] not in x:
                continue
            part, form = [b, log, sub] + ([add] if add is not None and add.op_type == "Add" else []), \
                "x - target * log(x + eps)"
        why = (f"these nodes compute torch.nn.PoissonNLLLoss ({form}, output '{sub.output[0]}'), a training loss, not "
               "an inference op: it needs the target, which a deployed model does not have; export the model without "
               "its loss (torch.onnx.export of the network alone)")
        found.update({n.name: why for n in part})
    return found


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    """The value of a Constant node (exactly one numeric value attribute), checked like an initializer."""
    where = f"Constant node '{node.name}'"
    if len(node.output) != 1 or not node.output[0]:
        raise ModelError(f"{where} has {len(node.output)} outputs; a Constant has one")
    if len(node.attribute) != 1:
        raise ModelError(f"{where} has {len(node.attribute)} value attributes ({[a.name for a in node.attribute]}); "
                         "it needs exactly one (value, value_float(s) or value_int(s))")
    at = node.attribute[0]
    if at.name == "value" and at.type == onnx.AttributeProto.TENSOR:
        return decode_tensor(at.t, f"{where} value")
    if at.name in ("value_float", "value_floats", "value_int", "value_ints"):
        val = np.asarray(helper.get_attribute_value(at), dtype=np.float64)
        bad = ~np.isfinite(val)
        if bad.any():
            raise ModelError(f"{where}: {at.name} holds NaN or infinity ({val.reshape(-1)[np.argmax(bad.reshape(-1))]}); "
                             "give finite numbers")
        return val
    raise UnsupportedOpError([(node.name, "Constant", f"attribute '{at.name}' is not supported; nmc reads numeric "
                               "constants (value, value_float(s), value_int(s))")], supported=[*CONVERTERS, "Constant"])


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def load_onnx(model_or_path, *, fold_bn: bool = True, approximate: Mapping[str, str] | None = None) -> Graph:
    """Read an nmc-step-convention ONNX model (ModelProto, path or bytes) into an IR :class:`Graph`.

    Raises :class:`ModelError` (malformed model or convention), :class:`UnsupportedOpError`
    (listing every unsupported node), :class:`AttributeSchemaError` or :class:`ShapeError`.

    ``approximate``: ops replaced by a named approximation instead of their on-core form (``{"LRN": "identity"}``);
    each use is recorded in the graph's metadata ``nmc.approximated`` (and so in the compile report).
    """
    for op, how in (approximate or {}).items():
        if how not in APPROXIMATIONS.get(op, ()):
            raise ModelError(f"approximation {op}={how!r} is unknown; nmc offers "
                             f"{ {k: list(v) for k, v in APPROXIMATIONS.items()} }")
    model = _load_model(model_or_path)
    _check(model)
    shadow = sorted({t.name for t in model.graph.initializer} & {i.name for i in model.graph.input})
    if shadow and model.ir_version >= 4:
        raise ModelError(f"initializer(s) {shadow} have the name of a graph input; nmc does not take inputs with "
                         "default values: rename the initializer or remove the input (re-export with "
                         "keep_initializers_as_inputs=False)")
    # (before IR version 4 ONNX listed every initializer as a graph input: there they are constants)
    model = _upgrade_opset(model)
    model = _extract_scan(model)
    model = _fuse_softsign(model)
    g = model.graph
    conv = read_convention(model)
    dup = sorted({t.name for t in g.initializer if sum(u.name == t.name for u in g.initializer) > 1})
    if dup:
        raise ModelError(f"initializer(s) {dup} are defined twice; the model is damaged: re-export it")
    # an initializer that is also listed as a graph input (old exporters, keep_initializers_as_inputs=True) is a
    # constant: _real_inputs leaves it out
    ctx = _Ctx(model, conv, approximate)
    inputs: dict[str, str] = {}
    batches: dict[str, int] = {}
    for vi in _real_inputs(g):
        ctx.shapes[vi.name] = _input_shape(vi)
        inputs[vi.name] = conv.kind(vi.name)
        if vi.name == STEP_INDEX and ctx.shapes[vi.name] != (1,):
            raise ShapeError(f"graph input '{STEP_INDEX}' (the step index) has shape [N, "
                             f"{', '.join(map(str, ctx.shapes[vi.name]))}]; it must be [N, 1]")
        b = vi.type.tensor_type.shape.dim[0]
        if b.HasField("dim_value"):
            batches[vi.name] = int(b.dim_value)
    if len(set(batches.values())) > 1:
        raise ShapeError(f"graph inputs have different fixed batch sizes {batches}; nmc runs one sample at a time: "
                         "export every input with the same batch size (or a symbolic one)")
    ctx.batch = next(iter(batches.values()), 1)
    for i, node in enumerate(g.node):
        if not node.name:  # name nodes for messages
            node.name = f"{node.op_type}_{i}"
    inferred = _inferred_shapes(model)

    bad: list[tuple[str, str, str]] = []
    unknown: set[str] = set()  # outputs of failed nodes whose shapes not even ONNX shape inference knows

    def failed(node, key, why):
        bad.append((node.name, key, why))
        for t in node.output:  # go on converting downstream with the shape ONNX infers: every failure is listed
            shp = inferred.get(t)
            if t and shp is not None and len(shp) >= 1 and all(isinstance(d, int) and d >= 1 for d in shp[1:]):
                ctx.shapes[t] = tuple(shp[1:])
                ctx.opaque.add(t)
            else:
                unknown.add(t)

    losses = _training_losses(g)
    for node in g.node:
        key = _op_key(node)
        if node.name in losses:
            failed(node, key, losses[node.name])
            continue
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            ctx.consts[node.output[0]] = _constant_value(node)
            continue
        if any(t in unknown for t in node.input if t):
            unknown.update(node.output)
            continue
        if _fold_constant(ctx, node):
            continue
        if key not in CONVERTERS:
            why = ("nmc-domain op not implemented yet" if node.domain == nmc_ops.NMC_DOMAIN
                   else "no converter for this op")
            failed(node, key, why)
            continue
        need = _ARITY.get(key, 1)
        if len([t for t in node.input[:need] if t]) < need or not node.output or not node.output[0]:
            raise ModelError(f"node '{node.name}' ({key}) has inputs {list(node.input)} and outputs "
                             f"{list(node.output)}; it needs {need} input(s) and an output")
        missing = [t for t in node.input if t and t not in ctx.shapes and t not in ctx.consts]
        if missing:
            raise ModelError(f"node '{node.name}' ({key}) reads '{missing[0]}', which no node, input or initializer "
                             f"provides")
        try:
            CONVERTERS[key](ctx, node, _attrs(node))
        except _Unsupported as e:
            failed(node, key, str(e))
    if bad:
        raise UnsupportedOpError(bad, supported=[*CONVERTERS, "Constant"])
    for name, kind in ctx.added_inputs.items():
        inputs.setdefault(name, kind)

    states = []
    for i, o, init in conv.states:
        if o in ctx.consts or o not in ctx.shapes:
            raise ModelError(f"state pair '{i}' -> '{o}': '{o}' is not computed by the graph")
        try:
            np.broadcast_to(init, ctx.shapes[i])
        except ValueError:
            raise ModelError(f"state pair '{i}' -> '{o}': its initial value of shape {list(init.shape)} does not "
                             f"broadcast to the state's shape {list(ctx.shapes[i])}; give a scalar or one value per "
                             "element") from None
        states.append(StatePair(i, o, init))
    tensors = {t: Tensor(t, s) for t, s in ctx.shapes.items()}
    # keep only tensors that exist in the IR (inputs and node outputs)
    live = set(inputs) | {t for n in ctx.nodes for t in n.outputs}
    tensors = {k: v for k, v in tensors.items() if k in live}
    for o in conv.outputs:
        if o not in live:
            raise ModelError(f"graph output '{o}' is a constant or not computed; nmc needs outputs computed from inputs")
    _check_declared_shapes(g, tensors)
    meta = dict(conv.metadata)
    if ctx.approximated:
        meta["nmc.approximated"] = json.dumps(ctx.approximated)
    if ctx.known_ranges:  # ranges the model ships win; a malformed table is left for the calibrate pass to report
        try:
            shipped = json.loads(meta.get("nmc.ranges", "{}"))
        except ValueError:
            shipped = None
        if isinstance(shipped, dict):
            meta["nmc.ranges"] = json.dumps({**ctx.known_ranges, **shipped})
    graph = Graph(name=g.name or "model", tensors=tensors, inputs=inputs, outputs=list(conv.outputs),
                  nodes=ctx.nodes, states=states, num_steps=conv.num_steps, metadata=meta)
    assign_stages(graph)
    graph.lint()
    if fold_bn:
        fold_batchnorm(graph)
        graph.lint()
    return graph


def _check_declared_shapes(g: onnx.GraphProto, tensors: dict[str, Tensor]) -> None:
    for vi in g.output:
        if vi.name not in tensors or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
        got = tensors[vi.name].shape
        if len(declared) != len(got) or any(d is not None and d != s for d, s in zip(declared, got)):
            raise ShapeError(f"graph output '{vi.name}' is declared [N, {', '.join(map(str, declared))}] but computes "
                             f"[N, {', '.join(map(str, got))}]; fix the exported output shape")


# ----------------------------------------------------------------- passes
def fold_batchnorm(graph: Graph) -> bool:
    """Fold each ``batchnorm`` into the ``conv``/``dense`` before it when that is its only consumer.

    ``W' = W * scale`` (per output channel), ``b' = b * scale + bias``; the layer takes over the
    batchnorm's output tensor.  A ``batchnorm`` after another one (e.g. BatchNormalization, then Mul and Add by
    per-channel constants, as DenseNet-121's pre-activation blocks are shipped) folds into it the same way:
    ``scale' = scale1 * scale2``, ``bias' = bias1 * scale2 + bias2``.  Returns whether anything changed.
    """
    changed = False
    state_io = {s.output for s in graph.states} | {s.input for s in graph.states}
    for bn in [n for n in graph.nodes if n.op == "batchnorm"]:
        x = bn.inputs[0]
        prod = graph.producer(x)
        if prod is None or prod.op not in ("conv", "dense", "batchnorm") or len(graph.consumers(x)) != 1:
            continue
        if x in graph.outputs or x in state_io:
            continue
        scale, bias = bn.params["scale"], bn.params["bias"]
        if prod.op == "batchnorm":  # two per-channel affine maps in a row: one
            if prod.params["scale"].shape != scale.shape:
                continue
            prod.params["scale"] = prod.params["scale"] * scale
            prod.params["bias"] = prod.params["bias"] * scale + bias
            prod.outputs = [bn.outputs[0]]
            graph.nodes.remove(bn)
            del graph.tensors[x]
            changed = True
            continue
        W = prod.params["W"]
        prod.params["W"] = W * scale.reshape((-1,) + (1,) * (W.ndim - 1))
        prod.params["b"] = prod.params["b"] * scale + bias
        prod.outputs = [bn.outputs[0]]
        graph.nodes.remove(bn)
        del graph.tensors[x]
        changed = True
    return changed
