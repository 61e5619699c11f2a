"""Converters of the ANN ops beyond the core set: data movement, arithmetic with constants, reductions,
transposed convolution, LRN (a chain of look-up tables, or the identity with the user's consent), and ops that
run on the host.

Data-movement ops (Concat, Split, Slice, Transpose, Pad, Squeeze, Unsqueeze, Gather with constant indices,
Expand, Tile, DepthToSpace, SpaceToDepth) all become one IR op, ``index``: ``y.flat = concat(inputs).flat[idx]``
with ``idx = -1`` for a zero.  ``idx`` is found by running the ONNX op itself (ONNX's reference implementation)
on numbered inputs, twice over a batch of two samples to check that the op keeps samples apart; so every
attribute, opset variant and negative axis means what ONNX says.  A view that only renumbers nothing becomes a
``reshape``.  The mapper never moves data for a view: a layer reading it reads its sources (mapper/lower.py).

Arithmetic with constants (Add, Sub, Mul, Div, Neg, Sum) is an affine map ``x * scale + bias``: folded into the
Gemm/Conv before it when it is that layer's only consumer, else a per-channel (or per-element) scale layer
(IR ``batchnorm``).  A product of two activations is refused: the cores multiply activations by constant weights.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from nmc.encoders import STEP_INDEX
from nmc.errors import ModelError, ShapeError

from .onnx_import import APPROXIMATIONS, OTHER_FORMS, _Ctx, _pads_2d, _Unsupported, register_converter

__all__ = ["DATA_MOVEMENT_OPS", "affine"]

#: ONNX op -> the inputs that carry data (the others must be constants: axes, pads, indices, ...); None: all
DATA_MOVEMENT_OPS: dict[str, tuple[int, ...] | None] = {
    "Concat": None, "Split": (0,), "Slice": (0,), "Transpose": (0,), "Pad": (0,), "Squeeze": (0,),
    "Unsqueeze": (0,), "Gather": (0,), "Expand": (0,), "Tile": (0,), "DepthToSpace": (0,), "SpaceToDepth": (0,),
}

#: the most values a view may renumber per sample (the IR's bound on one tensor)
MAX_VIEW = 1 << 24

# op -> the approximations ``load_onnx(approximate={op: name})`` / ``nmc compile --approximate OP=NAME`` allow
APPROXIMATIONS.update({"LRN": ("identity",)})  # (LRN runs on the cores by default: ``_lrn``)


def _numbered(shape, n_before: int, per_sample: int, B: int) -> np.ndarray:
    """``B`` samples of ``shape`` numbered ``1 + n_before + b * per_sample + i`` (0 stays free for zeros)."""
    n = int(np.prod(shape, dtype=np.int64))
    v = np.arange(n, dtype=np.float64)[None, :] + 1 + n_before + per_sample * np.arange(B)[:, None]
    return v.reshape((B, *shape))


def _index_maps(ctx: _Ctx, node: onnx.NodeProto, data: list[str], zero: tuple[str, ...] = ()) -> list[np.ndarray]:
    """Run ``node`` on numbered data inputs (constants named in ``zero`` replaced by zeros): per output, the
    per-sample index array (-1 = zero)."""
    if sum(int(np.prod(ctx.shape(t), dtype=np.int64)) for t in data) > MAX_VIEW:
        raise _Unsupported(f"its inputs hold more than {MAX_VIEW} values per sample; too large to renumber")
    shapes = [ctx.shape(t) for t in data]
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    N = sum(sizes)
    ref = ReferenceEvaluator(node, opsets={"": ctx.opset})

    def run(B):
        feeds, off = {}, 0
        for t, s, n in zip(data, shapes, sizes):
            feeds[t] = _numbered(s, off, N, B)
            off += n
        for t in node.input:
            if t and t not in feeds:
                feeds[t] = np.zeros_like(ctx.consts[t]) if t in zero else ctx.consts[t]
        return [np.asarray(o) for o in ref.run(None, feeds)]

    for B in (2, ctx.batch):
        try:
            outs = run(B)
        except Exception:
            continue
        ok = True
        for o in outs:
            if o.ndim == 0 or o.shape[0] != B or not np.all(o == np.round(o)):
                ok = False
                break
            for b in range(1, B):  # sample b is sample 0 shifted by b * N (zeros stay zeros)
                if not np.array_equal(np.where(o[0] > 0, o[0] + b * N, 0), o[b]):
                    ok = False
        if ok:
            return [o[0].astype(np.int64) - 1 for o in outs]
        if B == 1:
            break
    raise _Unsupported("it moves data across the batch axis (or its attributes do not fit the input); nmc runs "
                       "each sample on its own: keep the batch axis first and untouched")


def _emit_view(ctx: _Ctx, node, sources: list[str], out: str, idx: np.ndarray, name: str | None = None):
    shape = tuple(int(d) for d in idx.shape)
    flat = idx.reshape(-1)
    size = int(np.prod(shape, dtype=np.int64))
    if len(sources) == 1 and flat.size == int(np.prod(ctx.shape(sources[0]), dtype=np.int64)) and \
            np.array_equal(flat, np.arange(flat.size)):
        ctx.emit(node, "reshape", sources, [out], [shape], attrs={"shape": list(shape)})
        return
    if size == 0:
        raise ShapeError(f"{ctx.where(node)}: output '{out}' is empty (shape {list(shape)})")
    ctx.emit(node, "index", sources, [out], [shape], attrs={"shape": list(shape)}, params={"idx": flat})


def _embedding(ctx: _Ctx, node, a):
    """``Gather(table, indices)`` of a constant ``[V, D]`` table by a graph input (token ids: torch.nn.Embedding):
    the host one-hot encodes the indices (``nmc::OneHotEncode``, spikes ``[*indices, V]``, nmc/encoders.py) and a
    dense layer whose weights are the table turns each one-hot row into its table row (``[*indices, D]``).  The
    layer's range is the table's (shipped as ``nmc.ranges``): it needs no calibration."""
    table, ids = node.input[0], node.input[1]
    T = np.asarray(ctx.consts[table], np.float64)
    axis = int(a.get("axis", 0))
    if T.ndim != 2 or axis not in (0, -2):
        raise _Unsupported(f"a lookup in the constant table '{table}' of shape {list(T.shape)} along axis {axis} by "
                           "activations; nmc compiles an embedding: a [rows, features] table indexed along axis 0")
    if ctx.producer(ids) is not None or ids in ctx.opaque:
        raise _Unsupported(f"a lookup in the constant table '{table}' by computed indices '{ids}': the cores cannot "
                           "address by value; an embedding's indices must be a graph input (the host one-hot encodes "
                           "them, and the table becomes a layer's weights)")
    V, D = T.shape
    ishape = ctx.shape(ids)
    L = int(np.prod(ishape, dtype=np.int64))
    if L * V * D > MAX_VIEW:
        raise _Unsupported(f"its one-hot layer ({L} indices x {V} rows x {D} features) is more than nmc lays out "
                           f"({MAX_VIEW} weights)")
    ctx.add_input(STEP_INDEX, (1,), "step")
    spikes, flat, dense = (f"{node.output[0]}::{s}" for s in ("onehot", "onehot_flat", "rows"))
    ctx.emit(node, "onehot_encode", [ids, STEP_INDEX], [spikes], [(*ishape, V)], attrs={"depth": int(V)})
    ctx.emit(node, "reshape", [spikes], [flat], [(L * V,)], attrs={"shape": [L * V]})
    ctx.emit(node, "dense", [flat], [dense], [(L * D,)], params={"W": np.kron(np.eye(L), T.T), "b": np.zeros(L * D)})
    # every output is an entry of the table: its range is the table's, exact (calibration, which may not visit
    # every row, does not replace it)
    ctx.known_ranges[dense] = [float(T.min()), float(T.max()), bool(np.all(T == np.round(T))), True]
    out = (*ishape, D)
    ctx.emit(node, "reshape", [dense], [node.output[0]], [out], attrs={"shape": list(out)})


def _data_movement(ctx: _Ctx, node, a):
    which = DATA_MOVEMENT_OPS[node.op_type]
    pos = range(len(node.input)) if which is None else which
    if node.op_type == "Gather" and ctx.is_const(node.input[0]) and not ctx.is_const(node.input[1]):
        _embedding(ctx, node, a)
        return
    data = []
    for i in pos:
        t = node.input[i] if i < len(node.input) else ""
        if not t:
            continue
        if ctx.is_const(t):
            raise _Unsupported(f"input '{t}' is a constant among activations; nmc moves activations only (fold the "
                               "constant part into the layer that reads it)")
        if t not in data:
            data.append(t)
    for i, t in enumerate(node.input):
        if t and i not in pos and not ctx.is_const(t):
            raise _Unsupported(f"input {i} ('{t}') is computed from activations; it must be a constant (axes, pads, "
                               "indices, shapes: export with constant shapes)")
    if node.op_type == "Pad":
        mode = a.get("mode", "constant")
        value = a.get("value", 0.0)
        if len(node.input) > 2 and node.input[2]:
            value = float(np.asarray(ctx.consts[node.input[2]]).reshape(-1)[0])
        if mode != "constant":
            value = 0.0
    else:
        value = 0.0
    pad_value = tuple(node.input[2:3]) if node.op_type == "Pad" else ()
    maps = _index_maps(ctx, node, data, zero=pad_value)
    for o, idx in zip(node.output, maps):
        if o and value != 0 and (idx < 0).any():  # constant padding: zero padding, then the value as a bias
            padded = f"{o}::zero_padded"
            _emit_view(ctx, node, data, padded, idx)
            affine(ctx, node, padded, o, 1.0, np.where(idx < 0, value, 0.0))
        elif o:
            _emit_view(ctx, node, data, o, idx)


for _op in DATA_MOVEMENT_OPS:
    register_converter(_op)(_data_movement)


# ----------------------------------------------------------------- arithmetic with constants
def affine(ctx: _Ctx, node, x: str, out: str, scale, bias) -> None:
    """``out = x * scale + bias`` with constants broadcasting to ``x`` (per sample, or with a batch axis of 1)."""
    xs = ctx.shape(x)

    def full(c):
        c = np.asarray(c, dtype=np.float64)
        if c.ndim == len(xs) + 1 and c.shape[0] == 1:
            c = c[0]
        try:
            return np.broadcast_to(c, xs)
        except ValueError:
            raise _Unsupported(f"constant of shape {list(c.shape)} does not broadcast to the activation's "
                               f"[{', '.join(map(str, xs))}] per sample") from None

    S, Bc = full(scale), full(bias)
    C = xs[0] if xs else 1
    per_s, per_b = S.reshape(C, -1), Bc.reshape(C, -1)
    per_channel = bool(np.all(per_s == per_s[:, :1]) and np.all(per_b == per_b[:, :1]))
    prod = ctx.producer(x)
    if (per_channel and out == node.output[0] and prod is not None and prod.op in ("dense", "conv")
            and prod.outputs == [x] and ctx.n_consumers.get(x, 0) == 1 and x not in ctx.graph_outputs):
        s, b = per_s[:, 0], per_b[:, 0]  # fold into the layer before: W' = W * s, b' = b * s + bias
        W = prod.params["W"]
        prod.params["W"] = W * s.reshape((-1,) + (1,) * (W.ndim - 1))
        prod.params["b"] = prod.params["b"] * s + b
        prod.outputs = [out]
        ctx.shapes[out] = xs
        return
    if per_channel:
        ctx.emit(node, "batchnorm", [x], [out], [xs], params={"scale": per_s[:, 0], "bias": per_b[:, 0]})
        return
    n = int(np.prod(xs))
    flat_in, flat_out = f"{out}::flat", f"{out}::flat_scaled"
    ctx.emit(node, "reshape", [x], [flat_in], [(n,)], attrs={"shape": [n]})
    ctx.emit(node, "batchnorm", [flat_in], [flat_out], [(n,)], params={"scale": S.reshape(-1), "bias": Bc.reshape(-1)})
    ctx.emit(node, "reshape", [flat_out], [out], [xs], attrs={"shape": list(xs)})


def _const_and_act(ctx: _Ctx, node):
    x, y = node.input[0], node.input[1]
    cx, cy = ctx.is_const(x), ctx.is_const(y)
    if not cx and not cy:
        return None
    return (y, np.asarray(ctx.consts[x], np.float64), True) if cx else (x, np.asarray(ctx.consts[y], np.float64), False)


def _broadcast_operand(ctx: _Ctx, node, t: str, shape: tuple[int, ...]) -> str:
    """``t`` expanded to ``shape`` (numpy broadcasting) as an index view; ``t`` when it has that shape."""
    ts = ctx.shape(t)
    if ts == tuple(shape):
        return t
    n = int(np.prod(ts, dtype=np.int64))
    src = np.arange(n).reshape(ts)
    try:
        idx = np.broadcast_to(src.reshape((1,) * (len(shape) - len(ts)) + ts), shape)
    except ValueError:
        raise _Unsupported(f"shapes [{', '.join(map(str, ts))}] and [{', '.join(map(str, shape))}] do not "
                           "broadcast") from None
    out = f"{t}::expanded_{node.name}"
    _emit_view(ctx, node, [t], out, np.ascontiguousarray(idx))
    return out


def _sum_of(ctx: _Ctx, node, terms: list[str], out: str) -> None:
    shapes = [ctx.shape(t) for t in terms]
    try:
        shape = tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        raise _Unsupported(f"shapes {[list(s) for s in shapes]} do not broadcast") from None
    ins = [_broadcast_operand(ctx, node, t, shape) for t in terms]
    ctx.emit(node, "add", ins, [out], [shape])


@register_converter("Add")
def _add(ctx: _Ctx, node, a):
    ca = _const_and_act(ctx, node)
    if ca is None:
        _sum_of(ctx, node, [node.input[0], node.input[1]], node.output[0])
        return
    x, c, _ = ca
    affine(ctx, node, x, node.output[0], 1.0, c)


@register_converter("Sum")
def _sum(ctx: _Ctx, node, a):
    acts = [t for t in node.input if t and not ctx.is_const(t)]
    consts = [np.asarray(ctx.consts[t], np.float64) for t in node.input if t and ctx.is_const(t)]
    if not consts:
        if len(acts) == 1:
            ctx.emit(node, "identity", acts, [node.output[0]], [ctx.shape(acts[0])])
        else:
            _sum_of(ctx, node, acts, node.output[0])
        return
    c = consts[0]
    for k in consts[1:]:
        c = c + k
    if len(acts) == 1:
        affine(ctx, node, acts[0], node.output[0], 1.0, c)
        return
    tmp = f"{node.output[0]}::sum"
    _sum_of(ctx, node, acts, tmp)
    affine(ctx, node, tmp, node.output[0], 1.0, c)


@register_converter("Sub")
def _sub(ctx: _Ctx, node, a):
    ca = _const_and_act(ctx, node)
    if ca is None:
        neg = f"{node.input[1]}::neg_{node.name}"
        affine(ctx, node, node.input[1], neg, -1.0, 0.0)
        _sum_of(ctx, node, [node.input[0], neg], node.output[0])
        return
    x, c, const_first = ca
    if const_first:  # c - x
        affine(ctx, node, x, node.output[0], -1.0, c)
    else:
        affine(ctx, node, x, node.output[0], 1.0, -c)


def _product_why(ctx: _Ctx, node) -> str:
    """Why ``x * y`` of two activations cannot run on the cores, naming a gated linear unit (torch.nn.GLU:
    ``a * sigmoid(b)`` with ``a, b`` the halves of one Split) when it is one."""
    x, y = node.input[0], node.input[1]
    cores = ("a core's synapses multiply each input by a constant weight and its soma applies a function to one "
             "accumulated sum, so no core computes the product of two values that both depend on the input")
    for gate, other in ((y, x), (x, y)):
        sig, split = ctx.onnx_producer.get(gate), ctx.onnx_producer.get(other)
        if (sig is not None and sig.op_type == "Sigmoid" and split is not None and split.op_type == "Split"
                and ctx.onnx_producer.get(sig.input[0]) is split):
            return (f"this Mul is a gated linear unit (torch.nn.GLU: '{other}' * sigmoid('{sig.input[0]}'), the two "
                    f"halves of Split '{split.name}'), a product of two activations: {cores}.  GLU cannot run on the "
                    "cores: use an activation of one tensor instead (ReLU, Sigmoid, Tanh, ...; the layer before it "
                    "then needs only the first half of its outputs)")
    return (f"the product of two activations '{x}' * '{y}' is not supported: {cores}; rewrite the model so that one "
            "operand is a constant (an initializer)")


@register_converter("Mul")
def _mul(ctx: _Ctx, node, a):
    ca = _const_and_act(ctx, node)
    if ca is None:
        raise _Unsupported(_product_why(ctx, node))
    x, c, _ = ca
    affine(ctx, node, x, node.output[0], c, 0.0)


@register_converter("Div")
def _div(ctx: _Ctx, node, a):
    ca = _const_and_act(ctx, node)
    if ca is None or ca[2]:
        raise _Unsupported("only division of an activation by a constant is supported (the cores multiply "
                           "activations by constant weights)")
    x, c, _ = ca
    if np.any(c == 0):
        raise ModelError(f"{ctx.where(node)}: divides by a constant that holds 0; fix the model")
    affine(ctx, node, x, node.output[0], 1.0 / c, 0.0)


@register_converter("Neg")
def _neg(ctx: _Ctx, node, a):
    affine(ctx, node, node.input[0], node.output[0], -1.0, 0.0)


@register_converter("Dropout")
def _dropout(ctx: _Ctx, node, a):
    if len(node.output) > 1 and node.output[1] and (ctx.n_consumers.get(node.output[1], 0) or
                                                     node.output[1] in ctx.graph_outputs):
        raise _Unsupported("the mask output is read; inference has no dropout mask")
    if len(node.input) > 2 and node.input[2] and ctx.is_const(node.input[2]) and \
            bool(np.asarray(ctx.consts[node.input[2]]).reshape(-1)[0]):
        raise _Unsupported("training_mode=True; export the model in eval mode")
    ctx.emit(node, "identity", [node.input[0]], [node.output[0]], [ctx.shape(node.input[0])])


# ----------------------------------------------------------------- reductions
def _reduce_axes(ctx: _Ctx, node, a, rank: int) -> list[int]:
    axes = a.get("axes")
    if len(node.input) > 1 and node.input[1]:
        if not ctx.is_const(node.input[1]):
            raise _Unsupported("the axes input must be a constant")
        axes = [int(v) for v in np.asarray(ctx.consts[node.input[1]]).reshape(-1)]
    if not axes:
        if int(a.get("noop_with_empty_axes", 0)):
            return []
        raise _Unsupported("reducing over every axis includes the batch axis; give the axes")
    out = sorted({int(x) + (rank + 1 if int(x) < 0 else 0) for x in axes})
    if 0 in out or any(not 1 <= x <= rank for x in out):
        raise _Unsupported(f"axes={list(axes)} include the batch axis or lie outside the input's {rank + 1} axes")
    return [x - 1 for x in out]  # per-sample axes


def _reduce(ctx: _Ctx, node, a, kind: str, axes: list[int] | None = None, keepdims: int | None = None):
    """Reduce (mean, sum or max) over per-sample axes: a view that puts the reduced elements of each output last,
    shaped [1, outputs, reduced], then a 1 x reduced pooling window."""
    x = node.input[0]
    xs = ctx.shape(x)
    axes = _reduce_axes(ctx, node, a, len(xs)) if axes is None else axes
    keep = int(a.get("keepdims", 1)) if keepdims is None else keepdims
    out_shape = tuple(1 if i in axes else d for i, d in enumerate(xs)) if keep else \
        tuple(d for i, d in enumerate(xs) if i not in axes)
    if not axes:
        ctx.emit(node, "identity", [x], [node.output[0]], [xs])
        return
    kept = [i for i in range(len(xs)) if i not in axes]
    M = int(np.prod([xs[i] for i in kept], dtype=np.int64))
    R = int(np.prod([xs[i] for i in axes], dtype=np.int64))
    perm = kept + axes
    idx = np.arange(int(np.prod(xs, dtype=np.int64))).reshape(xs).transpose(perm).reshape(1, M, R)
    grid = f"{node.output[0]}::windows"
    _emit_view(ctx, node, [x], grid, idx)
    pooled = f"{node.output[0]}::pooled"
    op = "maxpool" if kind == "max" else "avgpool"
    attrs = {"kernel": [1, R], "strides": [1, R], "pads": [0, 0, 0, 0]}
    if op == "avgpool":
        attrs["count_include_pad"] = 0
    ctx.emit(node, op, [grid], [pooled], [(1, M, 1)], attrs=attrs)
    if kind == "sum":
        summed = f"{node.output[0]}::summed"
        ctx.emit(node, "batchnorm", [pooled], [summed], [(1, M, 1)], params={"scale": np.array([float(R)]),
                                                                          "bias": np.zeros(1)})
        pooled = summed
    ctx.emit(node, "reshape", [pooled], [node.output[0]], [out_shape], attrs={"shape": list(out_shape)})


for _op, _kind in (("ReduceMean", "mean"), ("ReduceSum", "sum"), ("ReduceMax", "max")):
    register_converter(_op)(partial(_reduce, kind=_kind))


@register_converter("GlobalMaxPool")
def _global_max(ctx, node, a):
    xs = ctx.shape(node.input[0])
    if len(xs) < 2:
        raise _Unsupported(f"input has shape [N, {', '.join(map(str, xs))}]; GlobalMaxPool needs [N, C, ...]")
    _reduce(ctx, node, a, "max", axes=list(range(1, len(xs))), keepdims=1)


# ----------------------------------------------------------------- transposed convolution
@register_converter("ConvTranspose")
def _conv_transpose(ctx: _Ctx, node, a):
    """A view that inserts ``stride - 1`` zeros between inputs and pads by ``dilation * (k - 1) - pad`` (cropping
    where negative), then a stride-1 convolution with the flipped kernel (in/out channels swapped per group)."""
    x = node.input[0]
    xs = ctx.shape(x)
    if not ctx.is_const(node.input[1]):
        raise _Unsupported("the weight must be a constant")
    W = np.asarray(ctx.consts[node.input[1]], np.float64)
    if len(xs) != 3 or W.ndim != 4:
        raise _Unsupported(f"only 2-D transposed convolutions are supported; input has shape "
                           f"[N, {', '.join(map(str, xs))}]")
    if "output_shape" in a:
        raise _Unsupported("the output_shape attribute is not supported; export with explicit pads")
    group = int(a.get("group", 1))
    C, H, Wd = xs
    if W.shape[0] != C or C % group:
        raise ShapeError(f"{ctx.where(node)}: weight {list(W.shape)} with group={group} does not fit input '{x}' "
                         f"with {C} channels")
    kh, kw = W.shape[2:]
    sh, sw = (int(v) for v in a.get("strides", (1, 1)))
    dh, dw = (int(v) for v in a.get("dilations", (1, 1)))
    oph, opw = (int(v) for v in a.get("output_padding", (0, 0)))
    pt, pl, pb, pr = _pads_2d(node, a, (kh, kw))
    # padded, zero-inserted input: rows -(dh*(kh-1)-pt) .. of the upsampled grid
    lo_h, lo_w = dh * (kh - 1) - pt, dw * (kw - 1) - pl
    hi_h, hi_w = dh * (kh - 1) - pb + oph, dw * (kw - 1) - pr + opw
    UH, UW = (H - 1) * sh + 1, (Wd - 1) * sw + 1
    PH, PW = UH + lo_h + hi_h, UW + lo_w + hi_w
    if PH < dh * (kh - 1) + 1 or PW < dw * (kw - 1) + 1:
        raise ShapeError(f"{ctx.where(node)}: output would be empty (input {list(xs)}, kernel {[kh, kw]})")
    y = np.arange(PH) - lo_h
    xx = np.arange(PW) - lo_w
    vy = (y >= 0) & (y < UH) & (y % sh == 0)
    vx = (xx >= 0) & (xx < UW) & (xx % sw == 0)
    iy, ix = np.where(vy, y // sh, 0), np.where(vx, xx // sw, 0)
    c = np.arange(C)[:, None, None]
    idx = c * H * Wd + iy[None, :, None] * Wd + ix[None, None, :]
    idx = np.where(vy[None, :, None] & vx[None, None, :], idx, -1)
    up = f"{node.output[0]}::upsampled"
    _emit_view(ctx, node, [x], up, idx)
    ci_g, co_g = C // group, W.shape[1]
    Wc = np.zeros((co_g * group, ci_g, kh, kw))
    for g in range(group):
        blk = W[g * ci_g:(g + 1) * ci_g]  # [ci_g, co_g, kh, kw]
        Wc[g * co_g:(g + 1) * co_g] = blk.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    b = np.zeros(co_g * group)
    if len(node.input) > 2 and node.input[2]:
        b = np.broadcast_to(np.asarray(ctx.consts[node.input[2]], np.float64).reshape(-1), b.shape)
    OH, OW = PH - dh * (kh - 1), PW - dw * (kw - 1)
    ctx.emit(node, "conv", [up], [node.output[0]], [(co_g * group, OH, OW)],
             attrs={"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [dh, dw], "group": group},
             params={"W": Wc, "b": b})


# ----------------------------------------------------------------- ops the cores cannot run
def _nonneg(ctx: _Ctx, t: str, depth: int = 0) -> bool:
    """Whether IR tensor ``t`` is >= 0 by construction: a ReLU's output, or pooling, reshaping or data movement of
    such outputs (a look through a few producers; False when unknown)."""
    p = ctx.producer(t)
    if p is None or depth > 16:
        return False
    if p.op == "relu":
        return True
    if p.op == "lut":
        fn, at = p.attrs.get("fn"), p.attrs
        return (fn in ("square", "sigmoid", "softplus", "hardsigmoid") or (fn == "exp" and at.get("alpha", 0) >= 0)
                or (fn == "clip" and at.get("min", -1) >= 0))
    if p.op in ("maxpool", "avgpool", "reshape", "identity", "index"):
        return all(_nonneg(ctx, i, depth + 1) for i in p.inputs)
    return False


@register_converter("LRN")
def _lrn(ctx: _Ctx, node, a):
    """ONNX LRN, ``y[c] = x[c] * d[c]``, ``d = (bias + alpha/size * sum_{j in window(c)} x[j]^2)^-beta``, as a chain
    of layers the cores compute (every link a linear layer or a look-up-table soma; docs/numerics.md, "LRN"), on
    ``x`` viewed position-major as ``[1, H*W, C]`` (a free view; the exp reads u and t viewed back)::

        q = square(x)                       identity synapse, table x^2
        t = lrn_scale(conv(q))              the channel window as a (1 x size) convolution of weights alpha/size,
                                            table -beta*log(bias + s) = log d
        u = log(max(x, LOG_EPS))            identity synapse, table log
        y = exp(u + t)                      the sum of two tensors, table exp

    For an ``x`` not known to be >= 0 (not after a ReLU) the positive and negative parts go separately:
    ``y = exp(log(max(x, eps)) + t) - exp(log(max(-x, eps)) + t)`` (two more layers and a sum).  alpha = 0 or
    beta = 0 make d the constant bias^-beta: one per-element scale.  ``approximate={'LRN': 'identity'}`` keeps
    the old approximation (y = x, reported)."""
    how = ctx.approximate.get("LRN")
    x = node.input[0]
    xs = ctx.shape(x)
    if how is not None:
        ctx.emit(node, "identity", [x], [node.output[0]], [xs])
        ctx.approximated.append({"node": node.name, "op": "LRN", "as": how})
        return
    if "size" not in a:
        raise ModelError(f"{ctx.where(node)}: attribute 'size' is required (ONNX LRN)")
    size = int(a["size"])
    alpha, beta, bias = float(a.get("alpha", 1e-4)), float(a.get("beta", 0.75)), float(a.get("bias", 1.0))
    if size < 1 or not len(xs):
        raise _Unsupported(f"size={size} on an input of shape [N, {', '.join(map(str, xs))}]; ONNX LRN needs "
                           "size >= 1 and a channel axis")
    if not (bias > 0 and alpha >= 0 and np.isfinite(beta) and np.isfinite(alpha) and np.isfinite(bias)):
        raise _Unsupported(f"bias={bias:g}, alpha={alpha:g}, beta={beta:g}: the cores compute LRN for bias > 0 "
                           "and alpha >= 0 only (then bias + alpha/size * sum >= bias > 0); or accept an "
                           "approximation: approximate={'LRN': 'identity'} in nmc.compile / --approximate "
                           "LRN=identity")
    y = node.output[0]
    C = xs[0]
    M = int(np.prod(xs[1:], dtype=np.int64))
    if alpha == 0.0 or beta == 0.0:  # d = bias^-beta for every element: a constant scale, exact
        ctx.emit(node, "batchnorm", [x], [y], [xs],
                 params={"scale": np.full(C, bias ** -beta), "bias": np.zeros(C)})
        return
    # x viewed position-major, [1, H*W, C] (a free view): a core holding every channel of a few positions reads
    # just those positions' values, and the channel window is a (1 x size) convolution along the last axis
    vs = (1, M, C)
    tag = f"{y}::lrn"
    t_max = -beta * np.log(bias)  # log d is at most this (the window's sum of squares is >= 0)
    lut = {"alpha": 0.0, "beta": beta, "bias": bias, "min": -np.inf, "max": np.inf, "span": 1.0, "lrn": node.name,
           "t_max": t_max}

    def emit(op, ins, out, shape=vs, **kw):
        ctx.emit(node, op, ins, [out], [shape], **kw)
        return out

    xv = emit("index", [x], f"{tag}.x", attrs={"shape": list(vs)},
              params={"idx": np.arange(C * M).reshape(C, M).T.reshape(-1)})
    q = emit("lut", [xv], f"{tag}.q", attrs={**lut, "fn": "square"})
    signs = (1.0,) if _nonneg(ctx, x) else (1.0, -1.0)
    t = f"{tag}.t"
    us = []
    for i, sign in enumerate(signs):  # (the first log before t: t's step is a whole fraction of its step)
        k = "+" if sign > 0 else "-"
        us.append((u := f"{tag}.u{k}", y if len(signs) == 1 else f"{tag}.y{k}", sign))
        at = {**lut, "fn": "log", "alpha": sign, "exp_out": us[-1][1]}
        emit("lut", [xv], u, attrs=at if i == 0 else {**at, "t": t})
        if i == 0:
            s = emit("conv", [q], f"{tag}.s", params={"W": np.full((1, 1, 1, size), alpha / size), "b": np.zeros(1)},
                     attrs={"strides": [1, 1], "pads": [0, (size - 1) // 2, 0, size // 2], "dilations": [1, 1],
                            "group": 1})
            emit("lut", [s], t, attrs={**lut, "fn": "lrn_scale", "u": u})
    # exp's sum reads u and t viewed back in x's layout: y is written in it (no view of the output to materialise)
    back = {"attrs": {"shape": list(xs)}, "params": {"idx": np.arange(C * M).reshape(M, C).T.reshape(-1)}}
    tb = emit("index", [t], f"{t}.b", shape=xs, **back)
    parts = []
    for u, yk, sign in us:
        v = emit("add", [emit("index", [u], f"{u}.b", shape=xs, **back), tb], f"{u}+t", shape=xs)
        parts.append(emit("lut", [v], yk, shape=xs,
                          attrs={**lut, "fn": "exp", "alpha": sign, "u": u}))
    if len(parts) > 1:
        emit("add", parts, y, shape=xs)


# ----------------------------------------------------------------- read-out ops run on the host
def _host(ctx: _Ctx, node, a, op: str):
    """Softmax / LogSoftmax / ArgMax: run on the host after the chip (the cores have no exp, log or compare
    across neurons); only at the read-out (their outputs may feed only graph outputs or other such ops)."""
    x = node.input[0]
    xs = ctx.shape(x)
    axis = int(a.get("axis", -1 if op != "argmax" else 0))
    if ctx.opset < 13 and op != "argmax" and axis != -1 and axis != len(xs):
        raise _Unsupported(f"axis={axis} before opset 13 flattens the trailing axes; re-export with opset >= 13")
    if axis < 0:
        axis += len(xs) + 1
    if not 1 <= axis <= len(xs):
        raise _Unsupported(f"axis={a.get('axis')} is the batch axis or out of range; nmc runs samples one by one")
    attrs = {"axis": axis - 1 - len(xs)}  # counted from the end: the same for [B, ...] and [T, B, ...] values
    if ctx.producer(x) is None and x not in ctx.opaque:  # a graph input: the chip passes it to the host
        c = xs[0] if xs else 1
        copy = f"{x}::to_host"
        if copy not in ctx.shapes:
            ctx.emit(node, "batchnorm", [x], [copy], [xs], params={"scale": np.ones(c), "bias": np.zeros(c)})
        x = copy
    shape = xs
    if op == "argmax":
        keep = int(a.get("keepdims", 1))
        attrs.update(keepdims=keep, select_last_index=int(a.get("select_last_index", 0)))
        shape = tuple(1 if i == axis - 1 else d for i, d in enumerate(xs)) if keep else \
            tuple(d for i, d in enumerate(xs) if i != axis - 1)
    ctx.emit(node, op, [x], [node.output[0]], [shape], attrs=attrs)


for _op, _ir in (("Softmax", "softmax"), ("LogSoftmax", "logsoftmax"), ("ArgMax", "argmax")):
    register_converter(_op)(partial(_host, op=_ir))


# ----------------------------------------------------------------- 1-D and 3-D convolution and pooling
#: the most weights a convolution/average pooling of another rank than 2-D may unfold to (a dense layer)
MAX_PROBED_WEIGHTS = 1 << 24


def _linear_by_probe(ctx: _Ctx, node, a):
    """A linear op of constant weights (Conv, AveragePool of 1-D or 3-D inputs) as a dense layer: ONNX's
    reference implementation run on the zero input gives the bias, on every unit input a column of weights."""
    x = node.input[0]
    xs = ctx.shape(x)
    for i, t in enumerate(node.input[1:], start=1):
        if t and not ctx.is_const(t):
            raise _Unsupported(f"input {i} ('{t}') must be a constant")
    if len(node.output) > 1 and node.output[1]:
        raise _Unsupported("the Indices output is not supported")
    n_in = int(np.prod(xs, dtype=np.int64))
    ref = ReferenceEvaluator(node, opsets={"": ctx.opset})
    consts = {t: ctx.consts[t] for t in node.input[1:] if t}
    try:
        zero = np.asarray(ref.run(None, {x: np.zeros((1, *xs), np.float64), **consts})[0], np.float64)
    except Exception as e:
        raise _Unsupported(f"its attributes do not fit the input [N, {', '.join(map(str, xs))}] ({e})") from None
    n_out = int(zero[0].size)
    if n_in * n_out > MAX_PROBED_WEIGHTS:
        raise _Unsupported(f"a {len(xs) - 1}-D {node.op_type} becomes a dense layer of {n_in} x {n_out} weights here, "
                           f"more than nmc unfolds ({MAX_PROBED_WEIGHTS}); only 2-D ones are mapped structurally")
    cols = []
    for k in range(0, n_in, 4096):
        eye = np.zeros((min(4096, n_in - k), n_in))
        eye[np.arange(eye.shape[0]), k + np.arange(eye.shape[0])] = 1.0
        out = np.asarray(ref.run(None, {x: eye.reshape(-1, *xs), **consts})[0], np.float64)
        cols.append(out.reshape(eye.shape[0], -1) - zero.reshape(1, -1))
    W = np.concatenate(cols).T  # [out, in]
    W[np.abs(W) < 1e-12 * max(1.0, np.abs(W).max())] = 0.0
    flat_in, flat_out = f"{node.output[0]}::flat_in", f"{node.output[0]}::dense"
    ctx.emit(node, "reshape", [x], [flat_in], [(n_in,)], attrs={"shape": [n_in]})
    ctx.emit(node, "dense", [flat_in], [flat_out], [(n_out,)], params={"W": W, "b": zero.reshape(-1)})
    shape = tuple(int(d) for d in zero.shape[1:])
    ctx.emit(node, "reshape", [flat_out], [node.output[0]], [shape], attrs={"shape": list(shape)})


def _maxpool_windows(ctx: _Ctx, node, a):
    """MaxPool of any rank, with dilations and ceil_mode: a view that lays every window out as a row
    ([1, outputs, window]; a padded position repeats a real element of its window, which leaves the max as it is),
    then a 1 x window max pooling."""
    if len(node.output) > 1 and node.output[1]:
        raise _Unsupported("the Indices output is not supported")
    x = node.input[0]
    xs = ctx.shape(x)
    sp = xs[1:]
    d = len(sp)
    if "kernel_shape" not in a or len(a["kernel_shape"]) != d:
        raise _Unsupported(f"kernel_shape {a.get('kernel_shape')} does not fit the {d}-D input")
    ks = [int(k) for k in a["kernel_shape"]]
    st = [int(s) for s in a.get("strides", [1] * d)]
    dil = [int(v) for v in a.get("dilations", [1] * d)]
    auto = a.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise _Unsupported(f"auto_pad={auto} is not supported; export with explicit pads")
    pads = [0] * (2 * d) if auto == "VALID" else [int(p) for p in a.get("pads", [0] * (2 * d))]
    ceil = int(a.get("ceil_mode", 0))
    outs = []
    for i in range(d):
        span = sp[i] + pads[i] + pads[d + i] - dil[i] * (ks[i] - 1) - 1
        o = (-(-span // st[i]) if ceil else span // st[i]) + 1
        if ceil and (o - 1) * st[i] >= sp[i] + pads[i]:  # ONNX/torch: the last window must start inside
            o -= 1
        outs.append(o)
    if min(outs) < 1:
        raise ShapeError(f"{ctx.where(node)}: output would be empty (input {list(xs)}, kernel {ks})")
    # per spatial axis: positions [out, k] and whether they are real
    grids = []
    for i in range(d):
        p = np.arange(outs[i])[:, None] * st[i] - pads[i] + np.arange(ks[i])[None, :] * dil[i]
        grids.append(p)
    M, K = int(np.prod(outs)), int(np.prod(ks))
    C = xs[0]
    if C * M * K > MAX_VIEW:
        raise _Unsupported(f"its {C * M} windows of {K} elements are more than nmc lays out ({MAX_VIEW} values)")
    pos = np.zeros((M, K, d), np.int64)
    o_idx = np.stack(np.meshgrid(*[np.arange(o) for o in outs], indexing="ij"), -1).reshape(M, d)
    k_idx = np.stack(np.meshgrid(*[np.arange(k) for k in ks], indexing="ij"), -1).reshape(K, d)
    for i in range(d):
        pos[:, :, i] = grids[i][o_idx[:, i][:, None], k_idx[:, i][None, :]]
    real = np.all((pos >= 0) & (pos < np.array(sp)), axis=2)
    if not real.any(axis=1).all():
        raise _Unsupported("a window lies wholly in the padding")
    first = np.argmax(real, axis=1)  # a real element of each window stands in for its padded positions
    pos = np.where(real[:, :, None], pos, pos[np.arange(M), first][:, None, :])
    flat = np.ravel_multi_index(tuple(pos[:, :, i] for i in range(d)), sp)  # [M, K]
    idx = (np.arange(C)[:, None, None] * int(np.prod(sp)) + flat[None]).reshape(1, C * M, K)
    grid = f"{node.output[0]}::windows"
    _emit_view(ctx, node, [x], grid, idx)
    pooled = f"{node.output[0]}::pooled"
    ctx.emit(node, "maxpool", [grid], [pooled], [(1, C * M, 1)],
             attrs={"kernel": [1, K], "strides": [1, K], "pads": [0, 0, 0, 0]})
    shape = (C, *outs)
    ctx.emit(node, "reshape", [pooled], [node.output[0]], [shape], attrs={"shape": list(shape)})


OTHER_FORMS.update({"Conv": _linear_by_probe, "AveragePool": _linear_by_probe, "MaxPool": _maxpool_windows})
