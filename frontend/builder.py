"""Build nmc-step-convention ONNX models programmatically.

The model is one timestep of the network (``docs/onnx_convention.md``): every state is a
graph input paired with a graph output, declared in the ``nmc.state`` metadata; neuron
layers are ``nmc`` domain nodes whose function bodies ship in the model so onnxruntime can
run it.  Tensors are float32 with a leading symbolic batch dimension ``N``; shapes given to
the builder exclude it.

Examples
--------
>>> b = ModelBuilder("tiny", num_steps=4)
>>> x = b.input("x", (3,))
>>> s, v = b.lif(b.gemm(x, [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]), "l1", threshold=0.5)
>>> b.output(s)
'l1.s'
>>> model = b.build()
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nmc.encoders import ENCODERS, STEP_INDEX
from nmc.errors import ModelError, ShapeError
from nmc.neurons import MODELS

from . import nmc_ops
from ._shapes import conv_out_shape, pool_out_shape

__all__ = ["ModelBuilder"]


def _arr(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


class ModelBuilder:
    """Accumulates nodes of one timestep; :meth:`build` returns a checked ``onnx.ModelProto``."""

    def __init__(self, name: str, num_steps: int = 16, opset: int = 19):
        if opset < nmc_ops.MIN_OPSET:
            raise ModelError(f"ModelBuilder '{name}': opset {opset} is below {nmc_ops.MIN_OPSET}, which the nmc "
                             f"function bodies need; use opset>={nmc_ops.MIN_OPSET}")
        if int(num_steps) < 1:
            raise ModelError(f"ModelBuilder '{name}': num_steps={num_steps} must be >= 1")
        self.name = name
        self.num_steps = int(num_steps)
        self.opset = int(opset)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.step_inputs: list[str] = []
        self.states: list[list[Any]] = []  # [in, out, init]
        self._state_shapes: dict[str, tuple[int, ...]] = {}
        self._bound: set[str] = set()
        self.user_outputs: list[str] = []
        self.nmc_ops_used: set[str] = set()
        self._counter: dict[str, int] = {}

    # ----------------------------------------------------------------- helpers
    def _fresh(self, prefix: str) -> str:
        while True:
            i = self._counter.get(prefix, 0)
            self._counter[prefix] = i + 1
            cand = f"{prefix}{i}"
            if cand not in self.shapes and not any(n.name == cand for n in self.nodes):
                return cand

    def _name(self, name: str | None, op: str) -> str:
        if name is None:
            return self._fresh(op.lower() + "_")
        if name in self.shapes or any(n.name == name for n in self.nodes):
            raise ModelError(f"ModelBuilder: name '{name}' is already used; pick another")
        return name

    def _shape(self, t: str) -> tuple[int, ...]:
        try:
            return self.shapes[t]
        except KeyError:
            raise ModelError(f"ModelBuilder: unknown tensor '{t}'") from None

    def _init(self, name: str, value) -> str:
        self.initializers.append(numpy_helper.from_array(_arr(value), name))
        return name

    def _node(self, op: str, inputs: list[str], out: str, shape: tuple[int, ...], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        self.shapes[out] = tuple(int(d) for d in shape)
        return out

    @staticmethod
    def _vi(name: str, shape: Sequence[int]) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *[int(d) for d in shape]])

    # ----------------------------------------------------------------- inputs
    def input(self, name: str, shape: Sequence[int], kind: str = "static") -> str:
        """A graph input (``shape`` without batch); ``kind`` is ``static`` or ``step``."""
        if kind not in ("static", "step"):
            raise ModelError(f"ModelBuilder.input('{name}'): kind {kind!r} must be 'static' or 'step' "
                             f"(use state() for state inputs)")
        name = self._name(name, "input")
        self.inputs.append(self._vi(name, shape))
        self.shapes[name] = tuple(int(d) for d in shape)
        if kind == "step":
            self.step_inputs.append(name)
        return name

    def state(self, name: str, shape: Sequence[int], init=0.0) -> str:
        """A generic state input; close the pair with :meth:`bind_state`. Returns the input name."""
        name = self._name(name, "state")
        shape = tuple(int(d) for d in shape)
        init_a = np.asarray(init, dtype=np.float64)
        if init_a.shape not in ((), shape):
            raise ShapeError(f"ModelBuilder.state('{name}'): init of shape {init_a.shape} does not match {shape}")
        self.inputs.append(self._vi(name, shape))
        self.shapes[name] = shape
        self._state_shapes[name] = shape
        self.states.append([name, None, init_a.tolist()])
        return name

    def bind_state(self, name: str, tensor: str) -> str:
        """Make ``tensor`` the next value of state ``name``: output ``<name>.next = Identity(tensor)``."""
        entry = next((s for s in self.states if s[0] == name), None)
        if entry is None:
            raise ModelError(f"ModelBuilder.bind_state: '{name}' is not a state created with state()")
        if entry[1] is not None:
            raise ModelError(f"ModelBuilder.bind_state: state '{name}' is already bound to '{entry[1]}'")
        if self._shape(tensor) != self._state_shapes[name]:
            raise ShapeError(f"ModelBuilder.bind_state('{name}'): tensor '{tensor}' has shape {self._shape(tensor)}, "
                             f"the state has {self._state_shapes[name]}")
        out = f"{name}.next"
        self._node("Identity", [tensor], out, self._shape(tensor), self._name(None, f"{name}.bind"))
        entry[1] = out
        return out

    # ----------------------------------------------------------------- layers
    def gemm(self, x: str, W, b=None, name: str | None = None) -> str:
        """``y = x @ W.T + b`` with ``W[out, in]`` (ONNX Gemm, transB=1)."""
        name = self._name(name, "gemm")
        W = _arr(W)
        if W.ndim != 2 or self._shape(x) != (W.shape[1],):
            raise ShapeError(f"ModelBuilder.gemm('{name}'): W {W.shape} does not fit input '{x}' of shape {self._shape(x)}")
        ins = [x, self._init(f"{name}.W", W)]
        if b is not None:
            ins.append(self._init(f"{name}.b", np.broadcast_to(_arr(b), (W.shape[0],))))
        return self._node("Gemm", ins, name, (W.shape[0],), name, transB=1)

    def matmul(self, x: str, W, name: str | None = None) -> str:
        """``y = x @ W`` with ``W[in, out]`` (ONNX MatMul with a constant right operand)."""
        name = self._name(name, "matmul")
        W = _arr(W)
        if W.ndim != 2 or self._shape(x) != (W.shape[0],):
            raise ShapeError(f"ModelBuilder.matmul('{name}'): W {W.shape} does not fit input '{x}' of shape {self._shape(x)}")
        return self._node("MatMul", [x, self._init(f"{name}.W", W)], name, (W.shape[1],), name)

    def conv(self, x: str, W, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group: int = 1,
             name: str | None = None) -> str:
        """2-D convolution, ``W[Co, Ci/group, kh, kw]``, pads in ONNX order (top, left, bottom, right)."""
        name = self._name(name, "conv")
        W = _arr(W)
        xs = self._shape(x)
        if W.ndim != 4 or len(xs) != 3 or xs[0] != W.shape[1] * group or W.shape[0] % group:
            raise ShapeError(f"ModelBuilder.conv('{name}'): W {W.shape} with group={group} does not fit input "
                             f"'{x}' of shape {xs}")
        ins = [x, self._init(f"{name}.W", W)]
        if b is not None:
            ins.append(self._init(f"{name}.b", np.broadcast_to(_arr(b), (W.shape[0],))))
        shape = conv_out_shape(xs, W.shape, strides, pads, dilations)
        return self._node("Conv", ins, name, shape, name, kernel_shape=list(W.shape[2:]), strides=list(strides),
                          pads=list(pads), dilations=list(dilations), group=int(group))

    def relu(self, x: str, name: str | None = None) -> str:
        name = self._name(name, "relu")
        return self._node("Relu", [x], name, self._shape(x), name)

    def activation(self, op: str, x: str, name: str | None = None, **attrs) -> str:
        """An elementwise activation the chip computes by look-up table: ``op`` is ``Sigmoid``, ``Tanh``,
        ``HardSigmoid`` (alpha, beta), ``LeakyRelu`` (alpha), ``PRelu`` (slope: a number or a tensor),
        ``Clip`` (min, max: numbers, each optional), ``Elu`` (alpha), ``Selu`` (alpha, gamma), ``Softplus``,
        ``Softsign``, ``ThresholdedRelu`` (alpha), ``Celu`` (alpha), ``Mish`` (opset >= 18), ``Gelu``
        (approximate: "none" or "tanh"; opset >= 20) or ``HardSwish``."""
        acts = ("Sigmoid", "Tanh", "HardSigmoid", "LeakyRelu", "PRelu", "Clip", "Elu", "Selu", "Softplus",
                "Softsign", "ThresholdedRelu", "Celu", "Mish", "Gelu", "HardSwish")
        if op not in acts:
            raise ModelError(f"ModelBuilder.activation: op {op!r} is not one of {acts}")
        name = self._name(name, op.lower())
        ins = [x]
        if op == "PRelu":
            ins.append(self._init(f"{name}.slope", np.asarray(attrs.pop("slope", 0.01), np.float32)))
        elif op == "Clip":
            ins += [self._init(f"{name}.{k}", np.asarray(attrs.pop(k), np.float32)) if k in attrs else ""
                    for k in ("min", "max")]
            while ins[-1] == "":
                ins.pop()
        return self._node(op, ins, name, self._shape(x), name,
                          **{k: v if isinstance(v, str) else float(v) for k, v in attrs.items()})

    def identity(self, x: str, name: str | None = None) -> str:
        name = self._name(name, "identity")
        return self._node("Identity", [x], name, self._shape(x), name)

    def add(self, a: str, b: str, name: str | None = None) -> str:
        name = self._name(name, "add")
        if self._shape(a) != self._shape(b):
            raise ShapeError(f"ModelBuilder.add('{name}'): shapes {self._shape(a)} and {self._shape(b)} differ")
        return self._node("Add", [a, b], name, self._shape(a), name)

    def add_const(self, x: str, c, name: str | None = None) -> str:
        """``x + c`` with a constant ``c`` (e.g. a bias of shape [C, 1, 1]); c must broadcast to x."""
        name = self._name(name, "addc")
        c = _arr(c)
        np.broadcast_shapes(c.shape, self._shape(x))
        return self._node("Add", [x, self._init(f"{name}.c", c)], name, self._shape(x), name)

    def _pool(self, op: str, x: str, kernel, strides, pads, name, **extra) -> str:
        name = self._name(name, op)
        xs = self._shape(x)
        if len(xs) != 3:
            raise ShapeError(f"ModelBuilder.{op.lower()}('{name}'): input '{x}' has shape {xs}, need [C, H, W]")
        kernel = tuple(int(k) for k in (kernel if np.ndim(kernel) else (kernel, kernel)))
        strides = kernel if strides is None else tuple(int(s) for s in (strides if np.ndim(strides) else (strides, strides)))
        shape = pool_out_shape(xs, kernel, strides, pads)
        return self._node(op, [x], name, shape, name, kernel_shape=list(kernel), strides=list(strides),
                          pads=list(pads), **extra)

    def maxpool(self, x: str, kernel, strides=None, pads=(0, 0, 0, 0), name: str | None = None) -> str:
        return self._pool("MaxPool", x, kernel, strides, pads, name)

    def avgpool(self, x: str, kernel, strides=None, pads=(0, 0, 0, 0), count_include_pad: int = 0,
                name: str | None = None) -> str:
        return self._pool("AveragePool", x, kernel, strides, pads, name, count_include_pad=int(count_include_pad))

    def global_avgpool(self, x: str, name: str | None = None) -> str:
        name = self._name(name, "gap")
        xs = self._shape(x)
        return self._node("GlobalAveragePool", [x], name, (xs[0], 1, 1), name)

    def flatten(self, x: str, name: str | None = None) -> str:
        name = self._name(name, "flatten")
        return self._node("Flatten", [x], name, (int(np.prod(self._shape(x))),), name, axis=1)

    def reshape(self, x: str, shape: Sequence[int], name: str | None = None) -> str:
        """Reshape to ``shape`` (without batch; may hold one -1)."""
        name = self._name(name, "reshape")
        size = int(np.prod(self._shape(x)))
        shape = [int(d) for d in shape]
        if any(d == 0 or d < -1 for d in shape) or shape.count(-1) > 1:
            raise ShapeError(f"ModelBuilder.reshape('{name}'): shape {shape} needs positive sizes and at most one -1")
        if shape.count(-1) == 1:
            rest = int(np.prod([d for d in shape if d != -1]))
            shape[shape.index(-1)] = size // rest if rest else 0
        if int(np.prod(shape)) != size:
            raise ShapeError(f"ModelBuilder.reshape('{name}'): cannot reshape {self._shape(x)} to {shape}")
        sh = numpy_helper.from_array(np.array([0, *shape], dtype=np.int64), f"{name}.shape")
        self.initializers.append(sh)
        return self._node("Reshape", [x, f"{name}.shape"], name, tuple(shape), name)

    def batchnorm(self, x: str, scale, bias, mean, var, eps: float = 1e-5, name: str | None = None) -> str:
        name = self._name(name, "bn")
        c = self._shape(x)[0]
        ins = [x] + [self._init(f"{name}.{k}", np.broadcast_to(_arr(v), (c,)))
                     for k, v in (("scale", scale), ("bias", bias), ("mean", mean), ("var", var))]
        return self._node("BatchNormalization", ins, name, self._shape(x), name, epsilon=float(eps))

    # ----------------------------------------------------------------- neurons
    def neuron(self, op_type: str, x: str, name: str, init: dict[str, Any] | None = None,
               **attrs: Any) -> tuple[str, ...]:
        """A layer of any neuron model's nmc op (``LIF``, ``CubaLIF``, ``LIFRefractory``, ``SpikeCount``, ...):
        ``x`` feeds its synaptic port; every state word gets a state ``<name>.<port>`` -> ``<name>.<port>.next``
        with initial value ``init[port]`` (default: the model's, 0 for most). A per-neuron parameter of the op
        (e.g. LIFT's ``threshold``) is given like an attribute, as a number or an array that broadcasts to the
        layer's shape, and becomes the initializer ``<name>.<param>`` (default: the schema's).
        Returns the op's outputs in port order (e.g. s, v_next)."""
        schema = nmc_ops.get_schema(op_type)
        if op_type in ENCODERS:
            raise ModelError(f"ModelBuilder.neuron: {op_type} is an encoder, not a neuron layer; use "
                             f"b.encode('{op_type}', x, name, ...) (or b.poisson / b.ttfs)")
        model = next(m for m in MODELS.values() if m.onnx is schema)
        name = self._name(name, op_type.lower())
        shape = self._shape(x)
        init = dict(init or {})
        unknown = sorted(set(init) - {w.in_port for w in model.state})
        if unknown:
            raise ModelError(f"ModelBuilder.neuron '{name}': init names {unknown}, which are not state ports of "
                             f"{op_type}; its states are {[w.in_port for w in model.state]}")
        port = {model.synapse_port: x}
        out_port = {}
        for w in model.state:
            port[w.in_port] = self.state(f"{name}.{w.in_port}", shape, init.get(w.in_port, w.init))
            out_port[w.out_port] = f"{name}.{w.in_port}.next"
        attrs = dict(attrs)
        for p, spec in schema.params.items():
            v = _arr(attrs.pop(p, spec.default))
            try:
                v = np.broadcast_to(v, shape) if v.ndim else v
            except ValueError:
                raise ShapeError(f"ModelBuilder.neuron '{name}': {p} of shape {v.shape} does not broadcast to the "
                                 f"layer's shape {shape}; give a number or one value per neuron") from None
            port[p] = self._init(f"{name}.{p}", v)
        outs = [out_port.get(p, f"{name}.{p}") for p in schema.outputs]
        typed = {k: (float(v) if schema.attrs[k].type == "float" else (int(v) if schema.attrs[k].type == "int" else str(v)))
                 for k, v in attrs.items() if k in schema.attrs}
        node = helper.make_node(op_type, [port[p] for p in schema.inputs], outs, name=name, domain=nmc_ops.NMC_DOMAIN,
                                **typed, **{k: v for k, v in attrs.items() if k not in schema.attrs})
        nmc_ops.validate_attrs(node)  # names a misspelt attribute
        self.nodes.append(node)
        for o in outs:
            self.shapes[o] = shape
        for w in model.state:
            next(st for st in self.states if st[0] == port[w.in_port])[1] = out_port[w.out_port]
        self.nmc_ops_used.add(op_type)
        return tuple(outs)

    def lif(self, x: str, name: str, beta: float = 1.0, threshold: float = 1.0, reset_mode: str = "subtract",
            v_reset: float = 0.0, v_leak: float = 0.0, gain: float = 1.0, spike_ge: int = 0,
            reset_delay: int = 0, init=0.0) -> tuple[str, str]:
        """An ``nmc::LIF`` layer; creates state ``<name>.v`` -> ``<name>.v.next``. Returns (s, v_next)."""
        s, vn = self.neuron("LIF", x, name, init={"v": init}, beta=beta, threshold=threshold, reset_mode=reset_mode,
                            v_reset=v_reset, v_leak=v_leak, gain=gain, spike_ge=spike_ge, reset_delay=reset_delay)
        return s, vn

    def spike_count(self, s: str, name: str) -> str:
        """An ``nmc::SpikeCount`` decoder; state ``<name>.c`` -> ``<name>.c.next`` (init 0)."""
        return self.neuron("SpikeCount", s, name)[0]

    def lift(self, x: str, name: str, beta=1.0, threshold=1.0, v_reset=0.0, v_leak=0.0, init=0.0,
             **attrs: Any) -> tuple[str, str]:
        """An ``nmc::LIFT`` layer: LIF with per-neuron ``beta``, ``threshold``, ``v_reset``, ``v_leak`` (numbers or
        arrays of the layer's shape; initializers ``<name>.beta`` ...); ``attrs``: reset_mode, gain, spike_ge,
        reset_delay. Returns (s, v_next)."""
        s, vn = self.neuron("LIFT", x, name, init={"v": init}, beta=beta, threshold=threshold, v_reset=v_reset,
                            v_leak=v_leak, **attrs)
        return s, vn

    def li(self, x: str, name: str, beta: float = 1.0, v_leak: float = 0.0, gain: float = 1.0, init=0.0) -> str:
        """An ``nmc::LI`` read-out (leaky integrator, no spikes); state ``<name>.v`` -> ``<name>.v.next``, which
        it returns: the membrane, the layer's output."""
        return self.neuron("LI", x, name, init={"v": init}, beta=beta, v_leak=v_leak, gain=gain)[0]

    def first_spike_time(self, s: str, name: str) -> str:
        """An ``nmc::FirstSpikeTime`` decoder of spikes ``s``: states ``<name>.f`` (init -1) and ``<name>.k`` (the
        step counter, init 0); returns ``<name>.f.next``: the first step each neuron spiked, -1 if none yet."""
        return self.neuron("FirstSpikeTime", s, name)[0]

    # ----------------------------------------------------------------- encoders (run on the host)
    def step_index(self) -> str:
        """The graph input ``nmc.t`` (shape [1]): the step number, filled by every runner. Returns its name."""
        if STEP_INDEX not in self.shapes:
            self.inputs.append(self._vi(STEP_INDEX, (1,)))
            self.shapes[STEP_INDEX] = (1,)
        return STEP_INDEX

    def encode(self, op_type: str, x: str, name: str, **attrs: Any) -> str:
        """A spike encoder (``PoissonEncode`` with ``seed``, ``TTFSEncode`` with ``window``, ``OneHotEncode`` with
        ``depth``) of ``x`` (a graph input: encoders run on the host); adds the step index input. Returns the spikes
        ``name``."""
        if op_type not in ENCODERS:
            raise ModelError(f"ModelBuilder.encode: '{op_type}' is not an encoder; encoders: {sorted(ENCODERS)}")
        schema = ENCODERS[op_type].schema
        name = self._name(name, op_type.lower())
        t = self.step_index()
        typed = {k: (int(v) if schema.attrs[k].type == "int" else v) for k, v in attrs.items() if k in schema.attrs}
        node = helper.make_node(op_type, [x, t], [name], name=name, domain=nmc_ops.NMC_DOMAIN, **typed,
                                **{k: v for k, v in attrs.items() if k not in schema.attrs})
        nmc_ops.validate_attrs(node)
        self.nodes.append(node)
        self.shapes[name] = ENCODERS[op_type].out_shape({**schema.defaults(), **typed}, self._shape(x))
        self.nmc_ops_used.add(op_type)
        return name

    def poisson(self, x: str, name: str, seed: int = 0) -> str:
        """``nmc::PoissonEncode``: spikes with probability ``x`` per step (counter-based, ``seed``)."""
        return self.encode("PoissonEncode", x, name, seed=seed)

    def ttfs(self, x: str, name: str, window: int = 16) -> str:
        """``nmc::TTFSEncode``: one spike per element at step ``floor((1 - x) * window)`` (none for x <= 0)."""
        return self.encode("TTFSEncode", x, name, window=window)

    def onehot(self, x: str, name: str, depth: int) -> str:
        """``nmc::OneHotEncode``: ``depth`` spikes per element of ``x`` (integer indices), a 1 at the index, every
        step; a ``gemm`` of them with a table's transpose is an embedding lookup."""
        return self.encode("OneHotEncode", x, name, depth=depth)

    # ----------------------------------------------------------------- outputs and build
    def output(self, t: str) -> str:
        self._shape(t)
        if t not in self.user_outputs:
            self.user_outputs.append(t)
        return t

    def build(self) -> onnx.ModelProto:
        """Assemble, check (onnx.checker) and return the model."""
        for s in self.states:
            if s[1] is None:
                raise ModelError(f"ModelBuilder '{self.name}': state '{s[0]}' was never bound; call bind_state()")
        outs = list(self.user_outputs) + [s[1] for s in self.states if s[1] not in self.user_outputs]
        if not outs:
            raise ModelError(f"ModelBuilder '{self.name}': the model has no output; call output()")
        graph = helper.make_graph(self.nodes, self.name, list(self.inputs),
                                  [self._vi(o, self.shapes[o]) for o in outs], list(self.initializers))
        opsets = [helper.make_opsetid("", self.opset)]
        if self.nmc_ops_used:
            opsets.append(helper.make_opsetid(nmc_ops.NMC_DOMAIN, nmc_ops.NMC_DOMAIN_VERSION))
        model = helper.make_model(graph, opset_imports=opsets, producer_name="nmc.frontend.builder",
                                  functions=nmc_ops.function_protos(self.nmc_ops_used, self.opset))
        meta = {
            "nmc.convention": "step/1",
            "nmc.num_steps": str(self.num_steps),
            "nmc.state": json.dumps(self.states),
            "nmc.step_inputs": json.dumps(self.step_inputs),
        }
        if self.user_outputs:
            meta["nmc.outputs"] = json.dumps(self.user_outputs)
        helper.set_model_props(model, meta)
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as e:  # a builder bug, not a user error, but say what failed
            raise ModelError(f"ModelBuilder '{self.name}': the built model fails onnx.checker: {e}") from e
        return model

    def save(self, path: str | Path) -> onnx.ModelProto:
        model = self.build()
        onnx.save(model, str(path))
        return model
