"""The nmc intermediate representation: one timestep of a hybrid ANN/SNN network.

A :class:`Graph` is a list of typed :class:`Node` s over named tensors.  Shapes
exclude the batch axis (the frontend strips the ONNX batch dimension); every
tensor is stored flat in C order, so ``reshape``/``flatten`` change no data.

Graph inputs have a ``kind``:

* ``static``: a value given once per sample (e.g. an image; direct-current coding);
* ``step``: a value given every timestep (leading ``[T]`` axis in inputs.npz);
* ``state``: the previous step's value of a state pair (see :class:`StatePair`).

Each node has a ``stage`` once :func:`assign_stages` ran: ``static`` (runs once per
sample, before step 0), ``step`` (every timestep) or ``readout`` (once, after the
last step).  Float semantics of every op are in ``frontend/interpret.py``; the
chip's integer semantics in ``emulator/reference.py`` (docs/numerics.md).

Ops and their attributes (params are float64 NumPy arrays):

========== =========================== ========================================================
op         inputs -> outputs           attrs / params
========== =========================== ========================================================
dense      x -> y                      params W [out, in], b [out]; y = W @ x.flatten() + b
conv       x -> y                      params W [Co, Ci/g, kh, kw], b [Co]; attrs strides (2),
                                       pads (top, left, bottom, right), dilations (2), group
relu       x -> y                      -
add        x1, x2, ... -> y            - (same shapes)
maxpool    x -> y                      kernel (2), strides (2), pads (4)
avgpool    x -> y                      kernel, strides, pads, count_include_pad (0/1)
reshape    x -> y                      shape (output shape, batch excluded)
batchnorm  x -> y                      params scale [C], bias [C]: y = x*scale + bias per channel
identity   x -> y                      -
lut        x -> y                      fn (sigmoid, tanh, hardsigmoid, leakyrelu, clip, elu, selu, softplus,
                                       softsign, thresholdedrelu, celu, mish, gelu, gelu_tanh, hardswish; square,
                                       log, exp, lrn_scale: the links of ONNX LRN's chain, with bias, span, ...),
                                       alpha, beta, min, max (selu: gamma too): an activation the soma's
                                       look-up table computes (float semantics: frontend/interpret.py)
softmax    x -> y                      attrs axis (per sample, negative: from the end): host op (below)
logsoftmax x -> y                      attrs axis: host op
argmax     x -> y                      attrs axis, keepdims, select_last_index: host op (indices as floats)
index      x1, x2, ... -> y            attrs shape (output shape); params idx [y size] (integers held as
                                       float64): y.flat = concat(x1.flat, x2.flat, ...)[idx], 0 where
                                       idx = -1 (data movement: concat, slice, transpose, pad, ...)
========== =========================== ========================================================

*Host ops* (softmax, logsoftmax, argmax) run on the host after the chip, on a graph output's values: they may
only feed other host ops or graph outputs (the mapper checks this, ``mapper.lower.split_host``).

Neuron ops come from the neuron models (:mod:`nmc.neurons`): ``lif`` (x, v -> s, v'),
``spike_count`` (s, c -> c'), ``cubalif`` (x, i, v -> s, i', v'), ``lif_refractory``
(x, v, r -> s, v', r'), ...; their attributes are their ONNX op's (``model.onnx.attrs``); per-neuron
parameters (``lift``'s beta, threshold, ...) are params of the neuron's shape.  The spike encoders
``poisson_encode`` and ``ttfs_encode`` (x, t -> s) come from :mod:`nmc.encoders` and run on the host.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .encoders import ENCODERS
from .encoders import STEP_INDEX
from .errors import ModelError, ShapeError
from .neurons import MODELS

__all__ = ["Tensor", "Node", "StatePair", "Graph", "OPS", "HOST_OPS", "STAGES", "assign_stages", "merge_graphs",
           "MODEL_SEP", "split_wide_maxpools"]

#: every IR op and its (number of inputs, number of outputs); -1 = variadic
OPS: dict[str, tuple[int, int]] = {
    "dense": (1, 1),
    "conv": (1, 1),
    "relu": (1, 1),
    "add": (-1, 1),
    "maxpool": (1, 1),
    "avgpool": (1, 1),
    "reshape": (1, 1),
    "batchnorm": (1, 1),
    "identity": (1, 1),
    "lut": (1, 1),
    "index": (-1, 1),
    "softmax": (1, 1),
    "logsoftmax": (1, 1),
    "argmax": (1, 1),
}
#: ops the host runs after the chip (read-out only)
HOST_OPS = ("softmax", "logsoftmax", "argmax")
# neuron ops (lif, spike_count, cubalif, lif_refractory, ...): declared with their model (nmc.neurons)
OPS.update({m.ir_op: (len(m.ir_inputs), len(m.onnx.outputs)) for m in MODELS.values() if m.onnx is not None})
# spike encoders (x, t -> s): run on the host (nmc.encoders)
OPS.update({e.ir_op: (len(e.schema.inputs), len(e.schema.outputs)) for e in ENCODERS.values()})
STAGES = ("static", "step", "readout")
INPUT_KINDS = ("static", "step", "state")


@dataclass
class Tensor:
    """A named tensor: shape without the batch axis."""

    name: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass
class Node:
    """One op. ``source`` names the ONNX node it came from (for error messages)."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    stage: str = ""

    def where(self) -> str:
        """How error messages name this node."""
        src = f" (ONNX node '{self.source}')" if self.source and self.source != self.name else ""
        return f"layer '{self.name}'{src}"


@dataclass
class StatePair:
    """``input`` holds the previous step's value of ``output``; ``init`` is its value before step 0."""

    input: str
    output: str
    init: np.ndarray


@dataclass
class Graph:
    """One timestep of a network, nodes in topological order."""

    name: str
    tensors: dict[str, Tensor]
    inputs: dict[str, str]  #: graph input name -> kind (static | step | state)
    outputs: list[str]
    nodes: list[Node]
    states: list[StatePair] = field(default_factory=list)
    num_steps: int = 1  #: default number of timesteps (nmc.num_steps)
    metadata: dict[str, str] = field(default_factory=dict)

    # ----------------------------------------------------------------- queries
    def producer(self, tensor: str) -> Node | None:
        for n in self.nodes:
            if tensor in n.outputs:
                return n
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def state_of_input(self, name: str) -> StatePair | None:
        for s in self.states:
            if s.input == name:
                return s
        return None

    def state_of_output(self, name: str) -> StatePair | None:
        for s in self.states:
            if s.output == name:
                return s
        return None

    # ----------------------------------------------------------------- checks
    def lint(self) -> None:
        """Check structural invariants; raise :class:`ModelError` naming the first broken one."""
        produced: dict[str, str] = {}
        for name, kind in self.inputs.items():
            if kind not in INPUT_KINDS:
                raise ModelError(f"graph input '{name}' has kind {kind!r}; kinds are {INPUT_KINDS}")
            if name not in self.tensors:
                raise ModelError(f"graph input '{name}' has no tensor entry")
            produced[name] = "<input>"
        names = set()
        for n in self.nodes:
            if n.name in names:
                raise ModelError(f"two nodes are named '{n.name}'")
            names.add(n.name)
            if n.op not in OPS:
                raise ModelError(f"{n.where()}: unknown IR op '{n.op}'")
            n_in, n_out = OPS[n.op]
            if (n_in >= 0 and len(n.inputs) != n_in) or (n_in < 0 and len(n.inputs) < 1) or len(n.outputs) != n_out:
                raise ModelError(f"{n.where()}: op {n.op} takes {n_in} inputs/{n_out} outputs, "
                                 f"has {len(n.inputs)}/{len(n.outputs)}")
            for t in n.inputs:
                if t not in produced:
                    raise ModelError(f"{n.where()}: input '{t}' is not produced before it (graph not topologically sorted, or dangling)")
            for t in n.outputs:
                if t in produced:
                    raise ModelError(f"{n.where()}: output '{t}' is produced twice")
                if t not in self.tensors:
                    raise ModelError(f"{n.where()}: output '{t}' has no tensor entry")
                produced[t] = n.name
            if n.stage and n.stage not in STAGES:
                raise ModelError(f"{n.where()}: stage {n.stage!r} is not one of {STAGES}")
        for o in self.outputs:
            if o not in produced:
                raise ModelError(f"graph output '{o}' is not produced")
        for s in self.states:
            if self.inputs.get(s.input) != "state":
                raise ModelError(f"state pair ({s.input} -> {s.output}): '{s.input}' is not a state input")
            if s.output not in produced:
                raise ModelError(f"state pair ({s.input} -> {s.output}): '{s.output}' is not produced")
            if self.tensors[s.input].shape != self.tensors[s.output].shape:
                raise ShapeError(f"state pair ({s.input} -> {s.output}): shapes {self.tensors[s.input].shape} "
                                 f"and {self.tensors[s.output].shape} differ")
            if np.shape(s.init) not in ((), self.tensors[s.input].shape):
                raise ShapeError(f"state '{s.input}': initial value of shape {np.shape(s.init)} does not match "
                                 f"{self.tensors[s.input].shape}")
        for name, kind in self.inputs.items():
            if kind == "state" and self.state_of_input(name) is None:
                raise ModelError(f"graph input '{name}' is a state input without a state pair")

    # ----------------------------------------------------------------- dump
    def dump(self) -> str:
        """A stable, human-readable text form (tests compare it; params are summarised by a checksum)."""
        lines = [f"graph {self.name} steps={self.num_steps}"]
        for name, kind in self.inputs.items():
            lines.append(f"  input {kind} {name}{list(self.tensors[name].shape)}")
        for s in self.states:
            init = np.asarray(s.init, dtype=np.float64)
            lines.append(f"  state {s.input} <- {s.output} init={_digest(init)}")
        for n in self.nodes:
            attrs = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(n.attrs.items()))
            params = ", ".join(f"{k}{list(v.shape)}:{_digest(v)}" for k, v in sorted(n.params.items()))
            ins = ", ".join(n.inputs)
            outs = ", ".join(f"{t}{list(self.tensors[t].shape)}" for t in n.outputs)
            stage = f"[{n.stage}] " if n.stage else ""
            extra = "; ".join(x for x in (attrs, params) if x)
            lines.append(f"  {stage}{n.name} = {n.op}({ins}) -> {outs}" + (f"  {{{extra}}}" if extra else ""))
        lines.append("  outputs " + ", ".join(self.outputs))
        return "\n".join(lines) + "\n"

    def copy(self, params: bool = True) -> "Graph":
        """A copy to edit; ``params=False`` shares the parameter arrays (new dicts, same arrays: at VGG-19's size a
        copy of its weights is 1.1 GB), for rewrites that replace nodes but never write into an array."""
        return Graph(
            name=self.name,
            tensors={k: Tensor(v.name, tuple(v.shape)) for k, v in self.tensors.items()},
            inputs=dict(self.inputs),
            outputs=list(self.outputs),
            nodes=[Node(n.name, n.op, list(n.inputs), list(n.outputs), dict(n.attrs),
                        {k: (v.copy() if params else v) for k, v in n.params.items()}, n.source, n.stage)
                   for n in self.nodes],
            states=[StatePair(s.input, s.output, np.array(s.init, copy=True)) for s in self.states],
            num_steps=self.num_steps,
            metadata=dict(self.metadata),
        )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(float(v))
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return json.dumps(v) if isinstance(v, str) else str(v)


def _digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
    return hashlib.sha256(a.tobytes()).hexdigest()[:10]


def assign_stages(g: Graph, step_sources: Iterable[str] = ()) -> None:
    """Set ``node.stage`` from dataflow (docs/onnx_convention.md).

    A node is *static* if no state input, step input (or ``step_sources``) reaches it;
    of the others, nodes from which no state output can be reached are *read-out*;
    the rest are *step*.
    """
    varying = {name for name, kind in g.inputs.items() if kind in ("state", "step")} | set(step_sources)
    for n in g.nodes:
        if any(t in varying for t in n.inputs):
            varying.update(n.outputs)
            n.stage = "step"
        else:
            n.stage = "static"
    # backwards: which nodes feed a state output
    feeds_state = {s.output for s in g.states}
    feeding: set[str] = set()
    for n in reversed(g.nodes):
        if any(t in feeds_state for t in n.outputs):
            feeding.add(n.name)
            feeds_state.update(n.inputs)
    for n in g.nodes:
        if n.stage == "step" and n.name not in feeding:
            n.stage = "readout"


#: separates a model's name from its tensor and layer names in a graph of several models (:func:`merge_graphs`)
MODEL_SEP = ":"


def merge_graphs(graphs: list[Graph], names: list[str] | None = None) -> Graph:
    """One graph running several models side by side on one system (as Tianjic ran several networks on one
    chip): every tensor, node, input, output and state of model ``k`` is renamed ``<names[k]>:<name>``, and
    ``metadata["nmc.models"]`` lists the models (JSON); the step index ``nmc.t`` stays one input shared by all.
    The models must run the same number of steps."""
    if not graphs:
        raise ModelError("no models to compile")
    names = list(names) if names is not None else [g.name or f"model{k}" for k, g in enumerate(graphs)]
    seen: dict[str, int] = {}
    uniq = []
    for n in names:  # distinct prefixes: a repeated name gets a suffix
        k = seen.get(n, 0)
        seen[n] = k + 1
        uniq.append(n if k == 0 else f"{n}_{k + 1}")
    steps = {g.num_steps for g in graphs}
    if len(steps) > 1:
        listed = ", ".join(f"'{n}' {g.num_steps}" for n, g in zip(uniq, graphs))
        raise ModelError(f"models on one system run the same number of steps; these run {listed}; give them the "
                         "same nmc.num_steps")
    out = Graph(name="+".join(uniq), tensors={}, inputs={}, outputs=[], nodes=[], states=[],
                num_steps=graphs[0].num_steps)
    ranges: dict[str, Any] = {}
    for pre, g in zip(uniq, graphs):
        def r(t: str) -> str:
            return t if t == STEP_INDEX else f"{pre}{MODEL_SEP}{t}"  # one step index serves every model
        out.tensors.update({r(k): Tensor(r(k), tuple(v.shape)) for k, v in g.tensors.items()})
        out.inputs.update({r(k): v for k, v in g.inputs.items()})
        out.outputs.extend(r(o) for o in g.outputs)
        out.nodes.extend(Node(r(n.name), n.op, [r(t) for t in n.inputs], [r(t) for t in n.outputs], dict(n.attrs),
                              {k: v.copy() for k, v in n.params.items()}, n.source and r(n.source), n.stage)
                         for n in g.nodes)
        out.states.extend(StatePair(r(st.input), r(st.output), np.array(st.init, copy=True)) for st in g.states)
        if "nmc.ranges" in g.metadata:
            try:
                ranges.update({r(k): v for k, v in json.loads(g.metadata["nmc.ranges"]).items()})
            except (ValueError, AttributeError):
                raise ModelError(f"model '{pre}': metadata nmc.ranges is not a JSON table of tensor ranges") from None
    if ranges:
        out.metadata["nmc.ranges"] = json.dumps(ranges)
    out.metadata["nmc.models"] = json.dumps(uniq)
    return out


# ----------------------------------------------------------------- rewrites
def _pool_out(n_in: int, k: int, s: int, p0: int, p1: int) -> int:
    return (n_in + p0 + p1 - k) // s + 1


def split_wide_maxpools(g: Graph, max_inputs: int) -> Graph:
    """The graph with every max pooling whose window has more than ``max_inputs`` elements (a core's axons: a
    max-pooling neuron cannot be split by fan-in) rewritten into narrower ones; the same graph when there is none.

    Max is associative, so the rewrite is exact: a ``kh x kw`` window becomes a ``kh x 1`` pooling followed by a
    ``1 x kw`` one (the padding of each axis goes with its pooling: padded positions never win a max); a window
    still too wide is laid out as rows of ``K1`` elements by an ``index`` view (a padded position repeats a real
    element of its window) and pooled in two steps, ``K1`` then ``ceil(K / K1)`` (again while wider than
    ``max_inputs``).  Node names keep the original's with ``/rows``, ``/chunks`` suffixes; sources stay."""
    if not any(n.op == "maxpool" and int(np.prod(n.attrs["kernel"])) > max_inputs for n in g.nodes):
        return g
    if max_inputs < 2:
        raise ModelError(f"cannot split a max pooling for cores of {max_inputs} input(s)")
    g = g.copy(params=False)
    names = {n.name for n in g.nodes}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in names or name in g.tensors:
            name, k = f"{base}_{k}", k + 1
        names.add(name)
        return name

    out: list[Node] = []
    work = list(g.nodes)
    while work:
        n = work.pop(0)
        kernel = [int(k) for k in n.attrs.get("kernel", (1, 1))]
        if n.op != "maxpool" or kernel[0] * kernel[1] <= max_inputs:
            out.append(n)
            continue
        kh, kw = kernel
        sh, sw = (int(s) for s in (n.attrs.get("strides") or kernel))
        pt, pl, pb, pr = (int(p) for p in n.attrs.get("pads", (0, 0, 0, 0)))
        C, H, W = g.tensors[n.inputs[0]].shape
        y = n.outputs[0]
        if kh > 1 and kw > 1:  # separable: rows of the window, then its columns
            mid = fresh(f"{y}::rows")
            g.tensors[mid] = Tensor(mid, (C, _pool_out(H, kh, sh, pt, pb), W))
            first = Node(fresh(f"{n.name}/rows"), "maxpool", [n.inputs[0]], [mid],
                         {"kernel": [kh, 1], "strides": [sh, 1], "pads": [pt, 0, pb, 0]}, {}, n.source, n.stage)
            second = Node(fresh(f"{n.name}/cols"), "maxpool", [mid], [y],
                          {"kernel": [1, kw], "strides": [1, sw], "pads": [0, pl, 0, pr]}, {}, n.source, n.stage)
            work[:0] = [first, second]
            continue
        # one wide axis: lay each window out as K2 rows of K1 elements, pool the rows, then the K2 row maxima
        K = kh * kw
        K2 = -(-K // max_inputs)
        K1 = -(-K // K2)
        K2 = -(-K // K1)
        Ho, Wo = _pool_out(H, kh, sh, pt, pb), _pool_out(W, kw, sw, pl, pr)
        r = (np.arange(Ho) * sh - pt)[:, None, None, None] + np.arange(kh)[None, None, :, None]
        c = (np.arange(Wo) * sw - pl)[None, :, None, None] + np.arange(kw)[None, None, None, :]
        r, c = np.broadcast_arrays(r, c)
        r, c = r.reshape(Ho * Wo, K), c.reshape(Ho * Wo, K)
        real = (r >= 0) & (r < H) & (c >= 0) & (c < W)
        if not real.any(axis=1).all():
            raise ShapeError(f"{n.where()}: a pooling window lies wholly in the padding")
        flat = np.where(real, r * W + c, -1)
        first_real = flat[np.arange(Ho * Wo), np.argmax(real, axis=1)][:, None]
        flat = np.where(real, flat, first_real)
        flat = np.concatenate([flat, np.repeat(first_real, K1 * K2 - K, axis=1)], axis=1)  # [Ho*Wo, K2*K1]
        idx = (np.arange(C)[:, None, None] * (H * W) + flat[None]).reshape(-1).astype(np.float64)
        rows, rmax, chunks, cmax = (fresh(f"{y}::{s}") for s in ("windows", "window_rows", "chunks", "chunk_max"))
        g.tensors[rows] = Tensor(rows, (C, Ho * Wo * K2, K1))
        g.tensors[rmax] = Tensor(rmax, (C, Ho * Wo * K2, 1))
        g.tensors[chunks] = Tensor(chunks, (C, Ho * Wo, K2))
        g.tensors[cmax] = Tensor(cmax, (C, Ho * Wo, 1))
        shape = list(g.tensors[y].shape)
        work[:0] = [
            Node(fresh(f"{n.name}/windows"), "index", [n.inputs[0]], [rows], {"shape": [C, Ho * Wo * K2, K1]},
                 {"idx": idx}, n.source, n.stage),
            Node(fresh(f"{n.name}/rows"), "maxpool", [rows], [rmax],
                 {"kernel": [1, K1], "strides": [1, K1], "pads": [0, 0, 0, 0]}, {}, n.source, n.stage),
            Node(fresh(f"{n.name}/chunks"), "reshape", [rmax], [chunks], {"shape": [C, Ho * Wo, K2]}, {}, n.source,
                 n.stage),
            Node(fresh(f"{n.name}/chunk_max"), "maxpool", [chunks], [cmax],
                 {"kernel": [1, K2], "strides": [1, K2], "pads": [0, 0, 0, 0]}, {}, n.source, n.stage),
            Node(fresh(f"{n.name}/out"), "reshape", [cmax], [y], {"shape": shape}, {}, n.source, n.stage),
        ]
    g.nodes = out
    g.lint()
    return g
