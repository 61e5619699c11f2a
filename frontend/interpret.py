"""Float64 NumPy interpreter of the IR: the float semantics of every op.

Values are batched: a tensor of shape ``s`` is held as ``[B, *s]``.  A run executes the
static stage once, the step stage ``T`` times (states carried from each pair's output to
its input) and the read-out stage once on the last step's values.

Op semantics (per sample, shapes without batch)::

    dense        y = W @ x.flatten() + b
    conv         2-D cross-correlation (ONNX Conv): strides, pads (top, left, bottom, right),
                 dilations, group; + b per output channel
    relu         max(x, 0)
    add          x1 + x2 + ...
    maxpool      max over the window, padding is -inf
    avgpool      mean over the window; count_include_pad=1 divides by kh*kw, else by the
                 number of non-padding elements
    reshape      same data, new shape
    batchnorm    x * scale[c] + bias[c] (c = first axis)
    identity     x
    lut          the activation ``fn`` (see :data:`ACTIVATIONS`): sigmoid 1/(1+exp(-x)), tanh,
                 hardsigmoid max(0, min(1, alpha*x + beta)), leakyrelu x if x >= 0 else alpha*x,
                 clip min(max(x, min), max), elu x if x >= 0 else alpha*(exp(x)-1), selu gamma*(x if x > 0
                 else alpha*(exp(x)-1)), softplus log(1+exp(x)), softsign x/(1+|x|), thresholdedrelu x if
                 x > alpha else 0, celu max(0,x) + min(0, alpha*(exp(x/alpha)-1)), mish x*tanh(softplus(x)),
                 gelu x/2*(1+erf(x/sqrt 2)), gelu_tanh x/2*(1+tanh(sqrt(2/pi)*(x+0.044715x^3))),
                 hardswish x*max(0, min(1, x/6+1/2)); and the links of ONNX LRN's chain (frontend/onnx_ops.py):
                 square x^2, log log(max(alpha*x, LOG_EPS)) (alpha = 1 or -1: the positive or negative part),
                 exp alpha*exp(x), lrn_scale -beta*log(bias + x) (the log of LRN's factor (bias + x)^-beta)
    index        y.flat = concat(x1.flat, x2.flat, ...)[idx], 0 where idx = -1
    softmax      exp(x - max) / sum(exp(x - max)) along ``axis`` (host op)
    logsoftmax   x - max - log(sum(exp(x - max))) along ``axis`` (host op)
    argmax       index of the first (or last, select_last_index) maximum along ``axis`` (host op)
    neuron ops   the model's ``float_step`` (nmc.neurons: lif, spike_count, cubalif, ...)
    encoders     poisson_encode, ttfs_encode: nmc.encoders (x and the step index nmc.t -> spikes)
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from nmc.errors import InputError, ModelError
from nmc.ir import Graph, Node
from nmc.encoders import ENCODERS, STEP_INDEX, step_index
from nmc.neurons import MODELS

__all__ = ["run_float", "OP_IMPLS", "conv2d", "pool2d", "ACTIVATIONS", "LOG_EPS", "activation", "host_op",
           "run_host_ops"]


# ----------------------------------------------------------------- kernels
def _windows(x: np.ndarray, kernel, strides, pads, dilations, pad_value: float) -> np.ndarray:
    """im2col: ``x[B, C, H, W]`` -> ``[B, C, kh, kw, Ho, Wo]``."""
    kh, kw = kernel
    sh, sw = strides
    dh, dw = dilations
    pt, pl, pb, pr = pads
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad_value)
    H, W = xp.shape[2], xp.shape[3]
    ho = (H - dh * (kh - 1) - 1) // sh + 1
    wo = (W - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty(x.shape[:2] + (kh, kw, ho, wo), dtype=xp.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
    return cols


def conv2d(x: np.ndarray, W: np.ndarray, b: np.ndarray, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
           group: int = 1) -> np.ndarray:
    """ONNX Conv on ``x[B, C, H, W]`` with ``W[Co, C/group, kh, kw]``."""
    B, C = x.shape[:2]
    co = W.shape[0]
    cols = _windows(x, W.shape[2:], strides, pads, dilations, 0.0)  # B, C, kh, kw, Ho, Wo
    ho, wo = cols.shape[-2:]
    cols = cols.reshape(B, group, C // group, W.shape[2], W.shape[3], ho, wo)
    Wg = W.reshape(group, co // group, *W.shape[1:])
    y = np.einsum("bgcklhw,gockl->bgohw", cols, Wg, optimize=True).reshape(B, co, ho, wo)
    return y + b.reshape(1, co, 1, 1)


def pool2d(x: np.ndarray, kind: str, kernel, strides, pads, count_include_pad: int = 0) -> np.ndarray:
    if kind == "max":
        return _windows(x, kernel, strides, pads, (1, 1), -np.inf).max(axis=(2, 3))
    total = _windows(x, kernel, strides, pads, (1, 1), 0.0).sum(axis=(2, 3))
    if count_include_pad:
        return total / (kernel[0] * kernel[1])
    ones = np.ones((1, 1) + x.shape[2:])
    count = _windows(ones, kernel, strides, pads, (1, 1), 0.0).sum(axis=(2, 3))
    return total / count


# ----------------------------------------------------------------- op table
def _dense(n: Node, x):
    B = x.shape[0]
    return [x.reshape(B, -1) @ n.params["W"].T + n.params["b"]]


def _conv(n: Node, x):
    a = n.attrs
    return [conv2d(x, n.params["W"], n.params["b"], a["strides"], a["pads"], a["dilations"], a["group"])]


def _bn(n: Node, x):
    sh = (1, -1) + (1,) * (x.ndim - 2)
    return [x * n.params["scale"].reshape(sh) + n.params["bias"].reshape(sh)]


def _reshape(n: Node, x):
    return [x.reshape((x.shape[0], *n.attrs["shape"]))]


def _index(n: Node, *xs):
    B = xs[0].shape[0]
    flat = np.concatenate([x.reshape(B, -1) for x in xs] + [np.zeros((B, 1))], axis=1)  # idx -1: the zero
    return [flat[:, n.params["idx"].astype(np.int64)].reshape((B, *n.attrs["shape"]))]


def _softmax(x: np.ndarray, axis: int, log: bool) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return z - lse if log else np.exp(z - lse)


def _argmax(x: np.ndarray, axis: int, keepdims: int, last: int) -> np.ndarray:
    if last:
        k = x.shape[axis] - 1 - np.argmax(np.flip(x, axis=axis), axis=axis)
    else:
        k = np.argmax(x, axis=axis)
    k = k.astype(np.float64)
    return np.expand_dims(k, axis) if keepdims else k


def host_op(op: str, attrs: dict, x: np.ndarray) -> np.ndarray:
    """A host op (``nmc.ir.HOST_OPS``) on ``x`` of any leading axes (``[B, ...]`` or ``[T, B, ...]``): the axis
    is counted from the end."""
    if op in ("reshape", "identity"):  # keep the leading (batch, time) axes
        return x.reshape(x.shape[:x.ndim - int(attrs["in_rank"])] + tuple(attrs["shape"]))
    axis = int(attrs["axis"])
    if op == "argmax":
        return _argmax(x, axis, int(attrs.get("keepdims", 1)), int(attrs.get("select_last_index", 0)))
    return _softmax(x, axis, op == "logsoftmax")


def run_host_ops(spec: dict, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Apply the host ops of a core map (``meta["host"]``: ops in order, each ``op, input, output, attrs``) to the
    chip's outputs; returns the model's outputs (those only the host ops read are dropped)."""
    values = dict(outputs)
    for h in spec["ops"]:
        values[h["output"]] = host_op(h["op"], h["attrs"], values[h["input"]])
    keep = set(spec["outputs"]) | (set(outputs) - set(spec["chip_only"]))
    return {k: v for k, v in values.items() if k in keep}


def _add(n: Node, *xs):
    y = xs[0]
    for t in xs[1:]:
        y = y + t
    return [y]


def _sigmoid(x):
    # split by sign: exp of a large positive number would overflow
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


#: the smallest argument of the table function ``log`` (``log(max(alpha*x, LOG_EPS))``): LRN's chain computes
#: ``x * d`` as ``exp(log(max(x, LOG_EPS)) + log d)``, so an input below it counts as LOG_EPS (an absolute error
#: below ``LOG_EPS * d``, d <= bias^-beta, in float; on the chip the table's lower bound is set by quantisation)
LOG_EPS = 1e-30


def _erf(x):  # NumPy has no erf; math.erf per element (tables and calibration grids are small)
    return np.frompyfunc(math.erf, 1, 1)(x).astype(np.float64)


#: the activations of IR op ``lut`` (ONNX semantics), by ``fn``: f(x, attrs)
ACTIVATIONS: dict[str, Callable] = {
    "sigmoid": lambda x, a: _sigmoid(x),
    "tanh": lambda x, a: np.tanh(x),
    "hardsigmoid": lambda x, a: np.clip(a["alpha"] * x + a["beta"], 0.0, 1.0),
    "leakyrelu": lambda x, a: np.where(x >= 0, x, a["alpha"] * x),
    "clip": lambda x, a: np.clip(x, a["min"], a["max"]),
    "elu": lambda x, a: np.where(x >= 0, x, a["alpha"] * np.expm1(np.minimum(x, 0.0))),
    "selu": lambda x, a: a["gamma"] * np.where(x > 0, x, a["alpha"] * np.expm1(np.minimum(x, 0.0))),
    "softplus": lambda x, a: np.logaddexp(0.0, x),
    "softsign": lambda x, a: x / (1.0 + np.abs(x)),
    "thresholdedrelu": lambda x, a: np.where(x > a["alpha"], x, 0.0),
    "celu": lambda x, a: np.maximum(x, 0.0) + np.minimum(0.0, a["alpha"] * np.expm1(np.minimum(x, 0.0) / a["alpha"])),
    "mish": lambda x, a: x * np.tanh(np.logaddexp(0.0, x)),
    "gelu": lambda x, a: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x, a: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
    "hardswish": lambda x, a: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    # the links of LRN's chain (frontend/onnx_ops.py ``_lrn``)
    "square": lambda x, a: x * x,
    "log": lambda x, a: np.log(np.maximum(a["alpha"] * x, LOG_EPS)),
    "exp": lambda x, a: a["alpha"] * np.exp(np.minimum(x, 700.0)),
    "lrn_scale": lambda x, a: -a["beta"] * np.log(np.maximum(a["bias"] + x, LOG_EPS)),
}


def activation(attrs: dict) -> Callable[[np.ndarray], np.ndarray]:
    """The float function of a ``lut`` node's attributes."""
    f = ACTIVATIONS[attrs["fn"]]
    return lambda x: f(np.asarray(x, dtype=np.float64), attrs)


OP_IMPLS: dict[str, Callable] = {
    "dense": _dense,
    "conv": _conv,
    "relu": lambda n, x: [np.maximum(x, 0.0)],
    "add": _add,
    "maxpool": lambda n, x: [pool2d(x, "max", n.attrs["kernel"], n.attrs["strides"], n.attrs["pads"])],
    "avgpool": lambda n, x: [pool2d(x, "avg", n.attrs["kernel"], n.attrs["strides"], n.attrs["pads"],
                                    n.attrs.get("count_include_pad", 0))],
    "reshape": _reshape,
    "batchnorm": _bn,
    "identity": lambda n, x: [x],
    "lut": lambda n, x: [activation(n.attrs)(x)],
    "index": _index,
    **{op: (lambda op: lambda n, x: [host_op(op, n.attrs, x)])(op) for op in ("softmax", "logsoftmax", "argmax")},
}


def _neuron(model):
    defaults = model.onnx.defaults()
    # per-neuron parameters (e.g. LIFT's tensors) are node params of the neuron's shape: they broadcast over the batch
    return lambda n, *xs: list(model.float_step({**defaults, **n.attrs, **n.params}, *xs))


OP_IMPLS.update({m.ir_op: _neuron(m) for m in MODELS.values() if m.float_step is not None})


def _encoder(enc):
    defaults = enc.schema.defaults()
    return lambda n, x, t: [enc.fn({**defaults, **n.attrs}, x, int(np.asarray(t).reshape(-1)[0]))]


OP_IMPLS.update({e.ir_op: _encoder(e) for e in ENCODERS.values()})  # spike encoders: x, step index -> spikes


# ----------------------------------------------------------------- driver
def _prepare_inputs(graph: Graph, inputs: dict, steps: int | None):
    inputs = dict(inputs or {})
    unknown = sorted(set(inputs) - set(graph.inputs))
    if unknown:
        raise InputError(f"inputs {unknown} are not graph inputs of '{graph.name}'; its inputs are "
                         f"{sorted(graph.inputs)}")
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
    fill_t = STEP_INDEX in graph.inputs and STEP_INDEX not in arrays
    T = None
    for name, kind in graph.inputs.items():
        if kind == "step" and name in arrays:
            t = arrays[name].shape[0] if arrays[name].ndim else None
            if T is None:
                T = t
            elif t != T:
                raise InputError(f"step inputs disagree on the number of steps: '{name}' has {t}, others {T}")
    if steps is None:
        steps = T if T is not None else graph.num_steps
    elif T is not None and steps > T:
        raise InputError(f"steps={steps} but step inputs hold only {T} steps; give [T, B, ...] with T >= steps")
    if steps < 1:
        raise InputError(f"steps={steps}; need at least 1")
    B = None
    for name, kind in graph.inputs.items():
        if name == STEP_INDEX and fill_t:
            continue
        if name not in arrays:
            if kind != "state":
                raise InputError(f"missing {kind} input '{name}' of shape "
                                 f"{['T'] if kind == 'step' else []}{['B', *graph.tensors[name].shape]}")
            continue
        a = arrays[name]
        shape = tuple(graph.tensors[name].shape)
        lead = 2 if kind == "step" else 1
        if a.ndim != len(shape) + lead or a.shape[lead:] != shape:
            want = (["T"] if kind == "step" else []) + ["B", *shape]
            raise InputError(f"{kind} input '{name}' has shape {list(a.shape)}; expected {want}")
        b = a.shape[lead - 1]
        if B is None:
            B = b
        elif b != B:
            raise InputError(f"input '{name}' has batch {b}, other inputs {B}; all inputs need the same batch size")
    if fill_t:  # the step index: 0 .. steps-1
        arrays[STEP_INDEX] = step_index(steps, 1 if B is None else B)
    return arrays, steps, (1 if B is None else B)


def run_float(graph: Graph, inputs: dict, steps: int | None = None,
              observer: Callable[[str, np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    """Run ``graph`` in float64.

    Parameters
    ----------
    graph : nmc.ir.Graph with stages assigned (as :func:`frontend.load_onnx` returns it).
    inputs : dict graph-input name -> array: static ``[B, *shape]``, step ``[T, B, *shape]``,
        state (optional, else the pair's init) ``[B, *shape]``.
    steps : number of timesteps; default the step inputs' T, else ``graph.num_steps``.
    observer : called as ``observer(tensor_name, value)`` for every input value fed and every
        tensor value computed (each step for step-stage tensors).

    Returns
    -------
    dict graph-output name -> array: step-stage outputs ``[T, B, *shape]``, static and read-out
    outputs ``[B, *shape]``.
    """
    for n in graph.nodes:
        if n.stage not in ("static", "step", "readout"):
            raise ModelError(f"{n.where()} has no stage; run nmc.ir.assign_stages(graph) first")
        if n.op not in OP_IMPLS:
            raise ModelError(f"{n.where()}: the interpreter has no implementation of op '{n.op}'")
    arrays, T, B = _prepare_inputs(graph, inputs, steps)
    obs = observer or (lambda name, value: None)
    values: dict[str, np.ndarray] = {}

    def feed(name, value):
        values[name] = value
        obs(name, value)

    def run(stage):
        for n in graph.nodes:
            if n.stage == stage:
                outs = OP_IMPLS[n.op](n, *(values[t] for t in n.inputs))
                for t, v in zip(n.outputs, outs):
                    feed(t, v)

    state_now: dict[str, np.ndarray] = {}
    for s in graph.states:
        shape = (B, *graph.tensors[s.input].shape)
        if s.input in arrays:
            state_now[s.input] = arrays[s.input]
        else:
            state_now[s.input] = np.broadcast_to(np.asarray(s.init, dtype=np.float64), shape).copy()
    for name, kind in graph.inputs.items():
        if kind == "static":
            feed(name, arrays[name])
    run("static")

    def stage_of(t):
        kind = graph.inputs.get(t)
        if kind is not None:
            return "static" if kind == "static" else "step"
        p = graph.producer(t)
        return p.stage

    out_stage = {o: stage_of(o) for o in graph.outputs}
    series: dict[str, list[np.ndarray]] = {o: [] for o, st in out_stage.items() if st == "step"}
    for t in range(T):
        for name, kind in graph.inputs.items():
            if kind == "step":
                feed(name, arrays[name][t])
            elif kind == "state":
                feed(name, state_now[name])
        run("step")
        for o in series:
            series[o].append(values[o])
        for s in graph.states:
            state_now[s.input] = values[s.output]
    run("readout")
    result = {}
    for o, st in out_stage.items():
        result[o] = np.stack(series[o]) if st == "step" else np.asarray(values[o])
    return result
