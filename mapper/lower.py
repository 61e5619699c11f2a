"""Lower the IR to *layers*: one synapse (an unfolded connectivity matrix) plus one soma each.

This is the "fully unfolded" mapping style of Tianjic (Nature 2019, Ext. Data Fig. 3): every
layer becomes a sparse matrix from its input elements to its output neurons.  Fusions:

* dense/conv/add/avgpool/maxpool followed by a ReLU that is their only consumer -> one ANN layer;
* dense/conv/add/avgpool followed by a table activation (IR ``lut``: Sigmoid, Tanh, ...) that is their only
  consumer -> one layer with the ``lut`` soma (any other ``lut`` node gets an identity synapse);
* dense/conv/add followed by a spiking neuron op (LIF, CubaLIF, ...) or another that declares ``fuse_synapse`` (LI)
  that is their only consumer -> one layer (synapse + soma); a neuron op fed by anything else gets an identity
  synapse;
* reshape/flatten/identity move no data: their outputs are aliases of their inputs;
* ``index`` (concat, slice, transpose, pad, ...) is a *view*: no layer of its own; a layer reading it reads the
  view's sources, its synapses renumbered through the view's index (those hitting a zero dropped).  A view that
  is a graph or state output, or that a max-pooling layer reads from several tensors, is materialised by an
  identity layer (:func:`read_through_views`);
* a batchnorm not folded into the layer before it is a per-channel scale layer.

The connectivity uses float weights; ``mapper.quantize`` turns them into the chip's integers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from nmc.errors import ModelError, PassError, ShapeError, UnsupportedOpError
from nmc.ir import HOST_OPS, Graph, Node
from nmc.neurons import MODELS, NeuronModel, by_ir_op, get_model

from .structured import Block, block_out_shape, blocks_coo

__all__ = ["Layer", "LayerGraph", "Plan", "Step", "plan", "lower", "conv_connectivity", "pool_connectivity", "View",
           "add_view", "read_through_views", "split_host"]


@dataclass(frozen=True, eq=False)
class Layer:
    """One synapse + soma.  ``rows``/``cols``/``vals`` is the COO connectivity: neuron ``rows[i]``
    reads column ``cols[i]`` (columns enumerate the concatenated elements of ``inputs``) with float
    weight ``vals[i]`` (for ``dendrite == "max"``, a mask of ones)."""

    name: str
    op: str  #: what it came from, e.g. "conv+relu", "dense+lif"
    source: str  #: ONNX node name(s), for messages
    stage: str
    inputs: list[str]
    in_sizes: list[int]
    out: str  #: the tensor whose elements the neurons hold (register values)
    out_shape: tuple[int, ...]
    coo: tuple | None  #: ``(rows, cols, vals)``, or None when ``blocks`` hold the synapse (computed on demand)
    bias: np.ndarray
    dendrite: str  #: "mac" | "max"
    soma: str  #: the neuron model (nmc.neurons): "ann", "lif", "count", "cubalif", ...
    relu: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)  #: the neuron op's attributes; per-neuron ones arrays [n]
    state_in: tuple[str, ...] = ()  #: per state word of the model: its state input tensor
    state_out: tuple[str, ...] = ()  #: per state word: its state output tensor (count: the same as ``out``)
    init: np.ndarray | None = None  #: [n, state words] initial state (float)
    order: np.ndarray | None = None  #: neuron order for partitioning (locality)
    #: the synapse as grouped convolutions (``mapper.structured``), kept through partitioning; None: COO only
    blocks: tuple | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def _coo(self) -> tuple:
        if self.coo is not None:
            return self.coo
        if "coo" not in self._cache:
            syn = self.synapse_count()
            if syn > MAX_SYNAPSES:
                raise ShapeError(f"{self.where()}: unfolds to {syn} synapses, more than nmc unfolds in one layer "
                                 f"({MAX_SYNAPSES}); it is mapped structured (tiles of shared kernels) only: compile "
                                 "without options that unfold it (tiles='off')")
            r, c, (v,) = blocks_coo(self.blocks)
            self._cache["coo"] = (r, c, v.astype(np.float64))
        return self._cache["coo"]

    @property
    def rows(self) -> np.ndarray:
        return self._coo()[0]

    @property
    def cols(self) -> np.ndarray:
        return self._coo()[1]

    @property
    def vals(self) -> np.ndarray:
        return self._coo()[2]

    def synapse_count(self) -> int:
        """Unfolded synapses (an upper bound for blocks: taps inside the input, zeros of views included)."""
        if self.coo is not None:
            return int(self.coo[0].shape[0])
        total = 0
        for b in self.blocks:
            co, oh, ow = block_out_shape(b)
            total += co * oh * ow * int(np.prod(b.W.shape[1:]))
        return total

    def unstructured(self) -> "Layer":
        """This layer with its synapse unfolded to COO (no blocks)."""
        return self if self.blocks is None else replace(self, coo=self._coo(), blocks=None, _cache={})

    @property
    def model(self) -> NeuronModel:
        return get_model(self.soma)

    @property
    def n(self) -> int:
        return int(np.prod(self.out_shape, dtype=np.int64))

    @property
    def n_cols(self) -> int:
        return int(sum(self.in_sizes))

    def where(self) -> str:
        return f"layer '{self.name}' ({self.op}, ONNX node '{self.source}')"


@dataclass(frozen=True, eq=False)
class LayerGraph:
    """The result of :func:`lower`: the layers in dataflow order and the tensor aliases."""

    graph: Graph
    layers: list[Layer]
    alias: dict[str, str]  #: tensor -> the tensor it is a view of (roots map to themselves)

    def root(self, t: str) -> str:
        return self.alias.get(t, t)

    def producer(self) -> dict[str, Layer]:
        return {l.out: l for l in self.layers}

    def reported_outputs(self) -> list[tuple[str, bool]]:
        """What a run reports: ``(tensor, final)`` for every graph output, then every state output that is
        not one (``final``: only its value after the last step is reported)."""
        g = self.graph
        return [(o, False) for o in g.outputs] + [(s.output, True) for s in g.states if s.output not in g.outputs]

    def membranes(self) -> dict[str, tuple[Layer, int]]:
        """State outputs held in neuron state words, not in output registers (a LIF's membrane, a CubaLIF's
        current, ...) -> (their layer, the word)."""
        return {t: (l, w) for l in self.layers for w, t in enumerate(l.state_out) if t != l.out}

    def lint(self) -> None:
        """Check the invariants later passes rely on; raise :class:`PassError` naming the first broken one."""
        g = self.graph
        outs: set[str] = set()
        for t, r in self.alias.items():
            if r in self.alias and self.alias[r] != r:
                raise PassError(f"layers: alias '{t}' -> '{r}' is not a root")
        for l in self.layers:
            n, n_cols = l.n, l.n_cols
            if l.out in outs:
                raise PassError(f"layers: two layers write tensor '{l.out}'")
            outs.add(l.out)
            if len(l.inputs) != len(l.in_sizes) or any(g.tensors[t].size != sz for t, sz in zip(l.inputs, l.in_sizes)):
                raise PassError(f"layers: {l.where()} input sizes {l.in_sizes} do not match its inputs {l.inputs}")
            if l.blocks is not None:
                for b in l.blocks:
                    cols = b.columns()
                    if int(np.prod(block_out_shape(b))) != n or cols.shape[0] != int(np.prod(b.in_shape)) or \
                            (cols.size and (cols.min() < -1 or cols.max() >= n_cols)):
                        raise PassError(f"layers: {l.where()} has a block of output {block_out_shape(b)} reading "
                                        f"columns outside its {n} neurons x {n_cols} inputs")
            elif not (l.rows.shape == l.cols.shape == l.vals.shape) or l.rows.ndim != 1:
                raise PassError(f"layers: {l.where()} has COO arrays of different shapes")
            elif l.rows.size and (l.rows.min() < 0 or l.rows.max() >= n or l.cols.min() < 0 or l.cols.max() >= n_cols):
                raise PassError(f"layers: {l.where()} has a synapse outside its {n} neurons x {n_cols} inputs")
            if l.bias.shape != (n,):
                raise PassError(f"layers: {l.where()} has {l.bias.shape} biases for {n} neurons")
            if l.order is not None and not np.array_equal(np.sort(l.order), np.arange(n)):
                raise PassError(f"layers: {l.where()} neuron order is not a permutation of its {n} neurons")
            if l.dendrite not in ("mac", "max") or l.soma not in MODELS:
                raise PassError(f"layers: {l.where()} has dendrite {l.dendrite!r} / soma {l.soma!r}")
            S = len(l.model.state)
            if len(l.state_in) != S or len(l.state_out) != S or (S and (l.init is None or l.init.shape != (n, S))):
                raise PassError(f"layers: {l.where()} lacks a state pair or initial state for each of its {S} state "
                                f"word(s) of its {n} neurons")


# ----------------------------------------------------------------------------- connectivity
def conv_connectivity(in_shape, W, strides, pads, dilations, group):
    """COO of an unfolded 2-D convolution. Returns rows, cols, vals, out_shape."""
    ci_tot, H, Wd = in_shape
    co, ci_g, kh, kw = W.shape
    sh, sw = strides
    pt, pl, pb, pr = pads
    dh, dw = dilations
    OH = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    OW = (Wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if OH <= 0 or OW <= 0:
        raise ModelError(f"convolution output would be empty: input {in_shape}, kernel {W.shape[2:]}")
    co_g = co // group
    R, Cs, V = [], [], []
    step = max(1, (1 << 22) // max(OH * OW * ci_g * kh * kw, 1))  # output channels per chunk (bounded temporaries)
    for c0 in range(0, co, step):
        o_c, o_y, o_x, k_c, k_y, k_x = np.meshgrid(np.arange(c0, min(c0 + step, co)), np.arange(OH), np.arange(OW),
                                                   np.arange(ci_g), np.arange(kh), np.arange(kw), indexing="ij")
        iy = o_y * sh - pt + k_y * dh
        ix = o_x * sw - pl + k_x * dw
        ci = (o_c // co_g) * ci_g + k_c
        ok = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < Wd)
        vals = W[o_c, k_c, k_y, k_x][ok]
        keep = vals != 0
        R.append((o_c * OH * OW + o_y * OW + o_x)[ok][keep].astype(np.int64))
        Cs.append((ci * H * Wd + iy * Wd + ix)[ok][keep].astype(np.int64))
        V.append(vals[keep].astype(np.float64))
    return np.concatenate(R), np.concatenate(Cs), np.concatenate(V), (co, OH, OW)


def pool_connectivity(in_shape, kernel, strides, pads, mode, count_include_pad=0):
    """COO of max (mask) or average (1/divisor) pooling."""
    C, H, Wd = in_shape
    kh, kw = kernel
    sh, sw = strides
    pt, pl, pb, pr = pads
    OH = (H + pt + pb - kh) // sh + 1
    OW = (Wd + pl + pr - kw) // sw + 1
    if OH <= 0 or OW <= 0:
        raise ModelError(f"pooling output would be empty: input {in_shape}, kernel {kernel}")
    o_c, o_y, o_x, k_y, k_x = np.meshgrid(np.arange(C), np.arange(OH), np.arange(OW), np.arange(kh),
                                          np.arange(kw), indexing="ij")
    iy = o_y * sh - pt + k_y
    ix = o_x * sw - pl + k_x
    ok = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < Wd)
    rows = (o_c * OH * OW + o_y * OW + o_x)
    cols = (o_c * H * Wd + np.clip(iy, 0, H - 1) * Wd + np.clip(ix, 0, Wd - 1))
    if mode == "max":
        vals = np.ones(rows.shape)
    else:
        if count_include_pad:
            # ONNX: the divisor counts padded positions inside the padded input
            iy_in = (o_y * sh + k_y < H + pt + pb)
            ix_in = (o_x * sw + k_x < Wd + pl + pr)
            div = (iy_in & ix_in).sum(axis=(3, 4), keepdims=True) * np.ones_like(ok)
        else:
            div = ok.sum(axis=(3, 4), keepdims=True) * np.ones_like(ok)
        vals = 1.0 / div
    return (rows[ok].astype(np.int64), cols[ok].astype(np.int64), vals[ok].astype(np.float64), (C, OH, OW))


def _spatial_order(shape: tuple[int, ...]) -> np.ndarray | None:
    """Neuron order (y, x, c) for a (C, H, W) tensor: spatially local groups share inputs."""
    if len(shape) != 3:
        return None
    C, H, W = shape
    c, y, x = np.meshgrid(np.arange(C), np.arange(H), np.arange(W), indexing="ij")
    idx = (c * H * W + y * W + x)
    return np.transpose(idx, (1, 2, 0)).reshape(-1).astype(np.int64)


# ----------------------------------------------------------------------------- lowering
#: the most synapses one layer may unfold to (three arrays of 8 bytes each: 1.5 GiB)
MAX_SYNAPSES = 1 << 26
_LINEAR = ("dense", "conv", "add", "avgpool", "maxpool", "batchnorm")


@dataclass(frozen=True)
class Step:
    """One entry of a :class:`Plan`: ``kind`` is ``"alias"`` (reshape/identity), ``"view"`` (an ``index`` node: a view, see :func:`add_view`), ``"bad"`` (no lowering;
    ``why`` says so), ``"linear"`` (dense/conv/add/pool/relu ``node``, with the ReLU or spiking neuron op it fuses,
    ``fused``) or ``"neuron"`` (a neuron op fed by anything else: an identity synapse)."""

    kind: str
    node: Node
    fused: Node | None = None
    why: str = ""


@dataclass(frozen=True, eq=False)
class Plan:
    """Which IR nodes become which layers (the fusions of the module doc), decided from the graph's structure
    alone: :func:`lower` materialises it, ``mapper.bounds`` bounds it in closed form."""

    steps: list[Step]
    alias: dict[str, str]  #: reshape/identity outputs -> their input
    absorbed: set[str]  #: dense/conv nodes whose synapses become part of their Add's
    prod: dict[str, Node]  #: tensor -> the node producing it
    graph: Graph  #: the graph planned: the input graph without its host ops (:func:`split_host`)
    graph_outs: set[str]  #: its outputs and state outputs

    def root(self, t: str) -> str:
        while t in self.alias:
            t = self.alias[t]
        return t


def plan(g: Graph) -> Plan:
    """The layers of ``g`` before any synapse is built (see :class:`Plan`)."""
    g = split_host(g)
    alias: dict[str, str] = {}
    consumers: dict[str, list[Node]] = {}
    for n in g.nodes:
        for t in n.inputs:
            consumers.setdefault(t, []).append(n)
    graph_outs = set(g.outputs) | {s.output for s in g.states}

    def sole_consumer(t: str) -> Node | None:
        cs = consumers.get(t, [])
        if len(cs) == 1 and t not in graph_outs:
            return cs[0]
        return None

    # dense/conv layers whose only consumer is an Add become part of the Add's synapse (one core
    # sums all operands: recurrent LIFs, residual sums)
    prod = {t: n for n in g.nodes for t in n.outputs}
    absorbed: set[str] = set()
    for n in g.nodes:
        if n.op == "add":
            for t in n.inputs:
                p = prod.get(t)
                if (p is not None and p.op in ("dense", "conv") and sole_consumer(t) is n and p.stage == n.stage
                        and n.inputs.count(t) == 1):
                    absorbed.add(p.name)
    steps: list[Step] = []
    fused: set[str] = set()
    for n in g.nodes:
        if n.name in fused or n.name in absorbed:
            continue
        if n.op in ("reshape", "identity"):
            alias[n.outputs[0]] = n.inputs[0]
            steps.append(Step("alias", n))
        elif n.op == "index":
            steps.append(Step("view", n))
        elif n.op in _LINEAR or n.op in ("relu", "lut"):
            nxt = sole_consumer(n.outputs[0]) if n.op not in ("relu", "lut") else None
            if nxt is not None and nxt.op == "relu":
                fused.add(nxt.name)
                steps.append(Step("linear", n, nxt))
            elif nxt is not None and nxt.op == "lut" and n.op != "maxpool" and nxt.stage == n.stage:
                fused.add(nxt.name)  # (a max-pooling dendrite has no accumulator for the table)
                steps.append(Step("linear", n, nxt))
            elif (nxt is not None and _fusable(nxt, n.outputs[0]) and n.op in ("dense", "conv", "add")
                  and nxt.stage == n.stage):
                fused.add(nxt.name)
                steps.append(Step("linear", n, nxt))
            else:
                steps.append(Step("linear", n))
        elif by_ir_op(n.op) is not None:
            steps.append(Step("neuron", n))
        else:
            steps.append(Step("bad", n, why="the mapper has no lowering for this IR op"))
    return Plan(steps=steps, alias=alias, absorbed=absorbed, prod=prod, graph=g, graph_outs=graph_outs)


def lower(g: Graph) -> LayerGraph:
    """Turn the IR graph into layers (see module doc). Raises for IR it cannot lower, naming all nodes."""
    pl = plan(g)
    g = pl.graph
    root = pl.root
    layers: list[Layer] = []
    views: dict[str, View] = {}
    bad: list[tuple[str, str, str]] = []
    for st in pl.steps:
        n, nxt = st.node, st.fused
        if st.kind == "alias":
            continue
        if st.kind == "view":
            add_view(views, g, n, root)
            continue
        if st.kind == "bad":
            bad.append((n.source or n.name, n.op, st.why))
            continue
            continue
        ins = [root(t) for t in n.inputs]
        if st.kind == "linear":
            if n.op == "add":
                ins, syn, bias, out_shape, dendrite, n_abs = _add_synapse(g, n, pl.prod, pl.absorbed, root)
            else:
                syn, bias, out_shape, dendrite = _synapse(g, n, ins)
                n_abs = 0
            name, op, source, out, relu = n.name, n.op, n.source or n.name, n.outputs[0], False
            soma, attrs = "ann", {}
            if n_abs:
                op = f"add({n_abs} synapses)"
            if n.op == "relu":
                relu = True
            elif n.op == "lut":  # an activation fed by another layer: an identity synapse, the table soma
                op, soma, attrs = f"lut({n.attrs['fn']})", "lut", {**n.attrs, "pre": ins[0]}
            elif nxt is not None and nxt.op == "relu":
                op, out, relu = f"{op}+relu", nxt.outputs[0], True
                source += "+" + (nxt.source or nxt.name)
            elif nxt is not None and nxt.op == "lut":  # the table reads the layer's accumulator: one layer
                op, out, soma = f"{op}+lut({nxt.attrs['fn']})", nxt.outputs[0], "lut"
                attrs = {**nxt.attrs, "pre": n.outputs[0]}
                source += "+" + (nxt.source or nxt.name)
            elif nxt is not None:  # a fused spiking neuron op
                layer = _neuron_layer(g, nxt, name, f"{op}+{nxt.op}", source + "+" + (nxt.source or nxt.name),
                                      ins, syn, bias, out_shape, bad)
                if layer is not None:
                    layers.append(layer)
                continue
            layers.append(Layer(name=name, op=op, source=source, stage=n.stage, inputs=ins,
                                in_sizes=[g.tensors[t].size for t in ins], out=out, out_shape=out_shape,
                                coo=syn if not isinstance(syn[0], Block) else None,
                                blocks=syn if isinstance(syn[0], Block) else None, bias=bias, dendrite=dendrite,
                                soma=soma, relu=relu, attrs=attrs, order=_spatial_order(out_shape)))
        else:  # a neuron op fed by anything else: an identity synapse
            m = by_ir_op(n.op)
            x = root(n.inputs[m.ir_inputs.index(m.synapse_port)])
            size = g.tensors[x].size
            layer = _neuron_layer(g, n, n.name, n.op, n.source or n.name, [x], (_eye_block(g.tensors[x].shape, 0),),
                                  np.zeros(size), g.tensors[x].shape, bad)
            if layer is not None:
                layers.append(layer)
    if views:
        layers = read_through_views(g, layers, views, [root(t) for t in pl.graph_outs])
    if bad:
        raise UnsupportedOpError(bad, supported=["dense", "conv", "relu", "lut", "add", "maxpool", "avgpool", "reshape",
                                                 "identity", "batchnorm", "index"]
                                 + [m.ir_op for m in MODELS.values() if m.onnx is not None])
    # a layer whose output is aliased under other names keeps one root
    lg = LayerGraph(graph=g, layers=layers, alias={t: root(t) for t in list(pl.alias)})
    return lg


def _chw(shape) -> tuple[int, int, int]:
    """A tensor shape as ``(C, H, W)`` for blocks: rank 3 as it is, others as ``(size, 1, 1)``."""
    shape = tuple(int(d) for d in shape)
    return shape if len(shape) == 3 else (int(np.prod(shape, dtype=np.int64)), 1, 1)


def _eye_block(shape, col0: int, scale=None) -> Block:
    """The identity (or a per-channel scale) over a tensor of ``shape``: a depthwise 1 x 1 convolution."""
    C, H, W = _chw(shape)
    w = np.ones(C) if scale is None else np.asarray(scale, np.float64).reshape(C)
    return Block(w.reshape(C, 1, 1, 1).astype(np.float64), (C, H, W), group=C, col0=col0)


def _add_synapse(g: Graph, n: Node, prod: dict[str, Node], absorbed: set[str], root):
    """Synapse of an Add: the blocks of absorbed dense/conv operands side by side, identity blocks for the other
    operands; biases add up."""
    shp = g.tensors[n.outputs[0]].shape
    size = g.tensors[n.outputs[0]].size
    ins: list[str] = []
    blocks: list[Block] = []
    bias = np.zeros(size)
    off = 0
    n_abs = 0
    for t in n.inputs:
        p = prod.get(t)
        if p is not None and p.name in absorbed:
            p_ins = [root(i) for i in p.inputs]
            syn, b, out_shape, _ = _synapse(g, p, p_ins)
            if int(np.prod(out_shape)) != size:
                raise ModelError(f"{n.where()}: operand '{t}' has {int(np.prod(out_shape))} elements, the sum has {size}")
            ins.extend(p_ins)
            bias = bias + b
            n_abs += 1
            blocks.extend(replace(bl, col0=bl.col0 + off) for bl in syn)
            off += sum(g.tensors[i].size for i in p_ins)
        else:
            t = root(t)
            if g.tensors[t].size != size:
                raise ModelError(f"{n.where()}: Add of shapes {g.tensors[t].shape} and {shp}; only equal shapes are supported")
            ins.append(t)
            blocks.append(_eye_block(shp, off))
            off += size
    outs = {block_out_shape(b) for b in blocks}
    if len(outs) != 1:  # operands of one size but different (C, H, W) views: unfold them
        r, c, (v,) = blocks_coo(blocks)
        return ins, (r, c, v.astype(np.float64)), bias, tuple(shp), "mac", n_abs
    return ins, tuple(blocks), bias, tuple(shp), "mac", n_abs


def _float_weights(W) -> np.ndarray:
    """A layer's float weights as the model holds them when they are float32 or float64 (no copy: at VGG-19's size
    a float64 copy of float32 weights is 1.1 GB); every reader casts them to float64 before arithmetic."""
    W = np.asarray(W)
    return W if W.dtype in (np.float32, np.float64) else W.astype(np.float64)


def _synapse(g: Graph, n: Node, ins: list[str]):
    """``(synapse, bias, out_shape, dendrite)``; the synapse is a tuple of :class:`Block` (structured) or the COO
    ``(rows, cols, vals)``."""
    shp = g.tensors[n.inputs[0]].shape  # the shape the op sees (its input may be a reshape of the root)
    if n.op == "dense":
        W = _float_weights(n.params["W"])
        out_n, in_n = W.shape
        if in_n != g.tensors[ins[0]].size:
            raise ModelError(f"{n.where()}: weight has {in_n} inputs, input tensor has {g.tensors[ins[0]].size} elements")
        b = n.params.get("b", np.zeros(out_n))
        return ((Block(W.reshape(out_n, in_n, 1, 1), (in_n, 1, 1)),), np.asarray(b, float).reshape(-1), (out_n,),
                "mac")
    if n.op == "conv":
        W = _float_weights(n.params["W"])
        a = n.attrs
        if len(shp) != 3:
            raise ModelError(f"{n.where()}: convolution input has shape {list(shp)}; expected (C, H, W)")
        blk = Block(W, tuple(int(d) for d in shp), tuple(a.get("strides", (1, 1))), tuple(a.get("pads", (0, 0, 0, 0))),
                    tuple(a.get("dilations", (1, 1))), int(a.get("group", 1)))
        out_shape = block_out_shape(blk)
        if out_shape[1] <= 0 or out_shape[2] <= 0:
            raise ModelError(f"convolution output would be empty: input {tuple(shp)}, kernel {W.shape[2:]}")
        b = n.params.get("b", np.zeros(W.shape[0]))
        bias = np.repeat(np.asarray(b, float), out_shape[1] * out_shape[2])
        return (blk,), bias, out_shape, "mac"
    if n.op in ("maxpool", "avgpool"):
        a = n.attrs
        kernel = tuple(a["kernel"])
        strides = tuple(a.get("strides") or kernel)
        pads = tuple(a.get("pads", (0, 0, 0, 0)))
        mode = "max" if n.op == "maxpool" else "avg"
        if mode == "max" or not any(pads) or a.get("count_include_pad", 0):
            C = int(shp[0])
            w = np.full((C, 1) + kernel, 1.0 if mode == "max" else 1.0 / (kernel[0] * kernel[1]))
            blk = Block(w, tuple(int(d) for d in shp), strides, pads, (1, 1), C)
            out_shape = block_out_shape(blk)
            if out_shape[1] > 0 and out_shape[2] > 0 and (mode == "max" or _pool_windows_inside(shp, kernel, strides,
                                                                                                  pads)):
                return (blk,), np.zeros(int(np.prod(out_shape))), out_shape, ("max" if mode == "max" else "mac")
        r, c, v, out_shape = pool_connectivity(shp, kernel, strides, pads, mode, a.get("count_include_pad", 0))
        return (r, c, v), np.zeros(int(np.prod(out_shape))), out_shape, ("max" if n.op == "maxpool" else "mac")
    if n.op == "batchnorm":
        size = g.tensors[ins[0]].size
        per = size // max(1, n.params["scale"].size)
        C = n.params["scale"].size
        blk = Block(np.asarray(n.params["scale"], np.float64).reshape(C, 1, 1, 1), (C, per, 1), group=C)
        return (blk,), np.repeat(n.params["bias"], per), shp, "mac"
    if n.op in ("add", "relu", "lut"):
        size = g.tensors[ins[0]].size
        for t in ins[1:]:
            if g.tensors[t].size != size:
                raise ModelError(f"{n.where()}: Add of shapes {shp} and {g.tensors[t].shape}; only equal shapes are supported")
        return tuple(_eye_block(shp, k * size) for k in range(len(ins))), np.zeros(size), shp, "mac"
    raise AssertionError(n.op)


def _pool_windows_inside(shp, kernel, strides, pads) -> bool:
    """Every average-pooling window lies inside the padded input (so ONNX's divisor is the window's size)."""
    _, H, W = shp
    OH = (H + pads[0] + pads[2] - kernel[0]) // strides[0] + 1
    OW = (W + pads[1] + pads[3] - kernel[1]) // strides[1] + 1
    return ((OH - 1) * strides[0] + kernel[0] <= H + pads[0] + pads[2]
            and (OW - 1) * strides[1] + kernel[1] <= W + pads[1] + pads[3])


def _fusable(node: Node, t: str) -> bool:
    """A neuron op (spiking, or declared ``fuse_synapse``) whose synaptic input is ``t``: its synapse can be the
    producer's (one layer)."""
    m = by_ir_op(node.op)
    return m is not None and m.fuses and node.inputs[m.ir_inputs.index(m.synapse_port)] == t


def _neuron_layer(g: Graph, node: Node, name, op, source, ins, syn, bias, out_shape,
                  bad: list) -> Layer | None:
    """The layer of a neuron op: its model, attributes and one state pair per state word of the model (each
    state input paired with the matching state output); None (and an entry in ``bad``) when a pair is wrong."""
    m = by_ir_op(node.op)
    port = dict(zip(m.ir_inputs, node.inputs))
    outp = dict(zip(m.onnx.outputs, node.outputs))
    n = int(np.prod(out_shape, dtype=np.int64))
    init = np.zeros((n, len(m.state)))
    for i, w in enumerate(m.state):
        t_in, t_out = port[w.in_port], outp[w.out_port]
        pair = g.state_of_input(t_in)
        if pair is None or pair.output != t_out:
            bad.append((node.source or node.name, f"nmc::{m.onnx.name}",
                        f"its state input '{t_in}' ({w.in_port}) must be the state input paired with its output "
                        f"'{t_out}' ({w.out_port}) (nmc.state metadata or the '<x>' -> '<x>.next' naming rule)"))
            return None
        init[:, i] = np.broadcast_to(np.asarray(pair.init, float), g.tensors[t_in].shape).reshape(-1)
    # per-neuron parameters (the model's param_ports): one value per neuron, in the neurons' order
    shape = g.tensors[port[m.synapse_port]].shape
    per_neuron = {p: np.broadcast_to(node.params[p], shape).reshape(-1).copy() for p in m.param_ports}
    return Layer(name=name, op=op, source=source, stage=node.stage, inputs=ins,
                 in_sizes=[g.tensors[t].size for t in ins], out=outp[m.output_port], out_shape=tuple(out_shape),
                 coo=syn if not isinstance(syn[0], Block) else None, blocks=syn if isinstance(syn[0], Block) else None,
                 bias=bias, dendrite="mac", soma=m.name,
                 attrs={**m.onnx.defaults(), **node.attrs, **per_neuron},
                 state_in=tuple(port[w.in_port] for w in m.state), state_out=tuple(outp[w.out_port] for w in m.state),
                 init=init, order=_spatial_order(tuple(out_shape)))


# ----------------------------------------------------------------------------- host ops
def split_host(g: Graph) -> Graph:
    """The graph without its host ops (``nmc.ir.HOST_OPS``: softmax, logsoftmax, argmax at the read-out): their
    inputs become graph outputs (what the chip streams out) and metadata ``nmc.host_ops`` (JSON: ops in order,
    the model's outputs, the chip outputs only the host reads) tells the emulator what to run after the chip."""
    host: list[Node] = []
    made: set[str] = set()
    for n in g.nodes:  # host ops and the reshapes of their outputs (e.g. ONNX's 2-D Softmax before opset 13)
        if n.op in HOST_OPS or (n.op in ("reshape", "identity") and n.inputs[0] in made):
            host.append(n)
            made.update(n.outputs)
    if not host:
        return g
    state_out = {s.output for s in g.states}
    bad = []
    on_host = {n.name for n in host}
    for n in g.nodes:
        if n.name not in on_host and any(t in made for t in n.inputs):
            bad.append((n.source or n.name, n.op, f"it reads '{[t for t in n.inputs if t in made][0]}', the output "
                        "of a host op (softmax/logsoftmax/argmax run on the host after the chip): only graph outputs "
                        "and other host ops may read it"))
    bad.extend((n.source or n.name, n.op, "a host op's output cannot be a state: it runs on the host after the chip")
               for n in host if n.outputs[0] in state_out)
    if bad:
        raise UnsupportedOpError(bad, supported=list(HOST_OPS))
    chip_out = [n.inputs[0] for n in host if n.inputs[0] not in made]
    outputs = [o for o in g.outputs if o not in made]
    outputs += [t for t in dict.fromkeys(chip_out) if t not in outputs]
    spec = {"ops": [{"op": n.op, "input": n.inputs[0], "output": n.outputs[0],
                     "attrs": {**n.attrs, "shape": list(g.tensors[n.outputs[0]].shape),
                               "in_rank": len(g.tensors[n.inputs[0]].shape)}} for n in host],
            "outputs": list(g.outputs), "chip_only": [t for t in dict.fromkeys(chip_out) if t not in g.outputs]}
    h = g.copy(params=False)
    h.nodes = [n for n in h.nodes if n.name not in on_host]
    h.outputs = outputs
    for t in made:
        h.tensors.pop(t, None)
    h.metadata["nmc.host_ops"] = json.dumps(spec)
    return h


# ----------------------------------------------------------------------------- views (IR op ``index``)
@dataclass(frozen=True, eq=False)
class View:
    """A tensor that is a renumbering of others: element ``i`` is element ``idx[i]`` of the concatenated
    ``sources`` (root tensors that layers write or graph inputs), or zero where ``idx[i] == -1``."""

    node: Node
    sources: list[str]
    idx: np.ndarray


def add_view(views: dict[str, View], g: Graph, n: Node, root) -> None:
    """Record ``index`` node ``n`` as a view, composed through the views it reads (so sources are never views)."""
    srcs: list[str] = []
    pos: dict[str, int] = {}
    total = 0

    def at(t: str) -> int:
        nonlocal total
        if t not in pos:
            pos[t] = total
            srcs.append(t)
            total += g.tensors[t].size
        return pos[t]

    maps = []
    for t in (root(x) for x in n.inputs):
        v = views.get(t)
        if v is None:
            maps.append(np.arange(g.tensors[t].size, dtype=np.int64) + at(t))
        else:
            local = np.concatenate([np.arange(g.tensors[s].size, dtype=np.int64) + at(s) for s in v.sources])
            maps.append(np.where(v.idx >= 0, local[np.maximum(v.idx, 0)], -1))
    full = np.concatenate(maps)
    idx = n.params["idx"].astype(np.int64)
    views[n.outputs[0]] = View(n, srcs, np.where(idx >= 0, full[np.maximum(idx, 0)], -1))


def read_through_views(g: Graph, layers: list[Layer], views: dict[str, View], outputs: list[str]) -> list[Layer]:
    """Replace every view a layer reads by the view's sources (columns renumbered, synapses on zeros dropped);
    materialise by an identity layer each view that is a graph/state output or that a max-pooling layer reads
    from several sources (its quantisation reads one input scale) or with zeros (a max counts them)."""
    need = {t for t in outputs if t in views}
    for l in layers:
        if l.dendrite == "max":
            need.update(t for t in l.inputs if t in views and (len(views[t].sources) > 1 or (views[t].idx < 0).any()))
    made: list[Layer] = []
    for t in sorted(need, key=lambda t: [n.name for n in g.nodes].index(views[t].node.name)):
        v = views[t]
        keep = np.nonzero(v.idx >= 0)[0].astype(np.int64)
        shape = g.tensors[t].shape
        made.append(Layer(name=v.node.name, op="index", source=v.node.source or v.node.name, stage=v.node.stage,
                          inputs=list(v.sources), in_sizes=[g.tensors[s].size for s in v.sources], out=t,
                          out_shape=tuple(shape), coo=(keep, v.idx[keep], np.ones(keep.size)),
                          bias=np.zeros(v.idx.size), dendrite="mac", soma="ann", order=_spatial_order(tuple(shape))))
    out: list[Layer] = []
    for l in layers:
        if not any(t in views and t not in need for t in l.inputs):
            out.append(l)
            continue
        srcs: list[str] = []
        pos: dict[str, int] = {}
        colmap = []
        for t in l.inputs:
            if t in views and t not in need:
                v = views[t]
                for s in v.sources:
                    if s not in pos:
                        pos[s] = sum(g.tensors[x].size for x in srcs)
                        srcs.append(s)
                local = np.concatenate([np.arange(g.tensors[s].size, dtype=np.int64) + pos[s] for s in v.sources])
                colmap.append(np.where(v.idx >= 0, local[np.maximum(v.idx, 0)], -1))
            else:
                if t not in pos:
                    pos[t] = sum(g.tensors[x].size for x in srcs)
                    srcs.append(t)
                colmap.append(np.arange(g.tensors[t].size, dtype=np.int64) + pos[t])
        cm = np.concatenate(colmap)
        if l.blocks is not None:  # structured: each block's columns renumbered (a view's zeros become -1)
            out.append(replace(l, inputs=srcs, in_sizes=[g.tensors[s].size for s in srcs],
                               blocks=tuple(b.renumbered(cm) for b in l.blocks), _cache={}))
            continue
        cols = cm[l.cols]
        keep = cols >= 0
        out.append(replace(l, inputs=srcs, in_sizes=[g.tensors[s].size for s in srcs],
                           coo=(l.rows[keep], cols[keep], l.vals[keep])))
    # materialised views go before their first reader (their sources are written before the view node ran)
    for m in made:
        first = next((i for i, l in enumerate(out) if m.out in l.inputs), len(out))
        out.insert(first, m)
    return out
