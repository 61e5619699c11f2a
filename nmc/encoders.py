"""Spike encoders (``nmc::PoissonEncode``, ``nmc::TTFSEncode``, ``nmc::OneHotEncode``): a value per element ->
spikes per step.

They run on the **host**, not on cores: the chip's somas have no random-number source or step index (the
presets describe none), so the compiler moves each encoder out of the step graph and the host computes its
spikes every step, from the same NumPy function as the float interpreter, and feeds them to the chip as a
step input (docs/onnx_convention.md, "Encoders").  Their cost on the chip is that step input: every step's
spikes enter through the input feeds and are priced like any other step input.

Both take the step index ``t``: the graph input named ``nmc.t`` (shape ``[N, 1]``), which every runner fills
with the step number (0, 1, ...) when the user does not give it.

Poisson (rate) coding, counter-based so that every element's spike at every step is a pure function of
``(seed, t, e)``, ``e`` the element's index within one sample (C order)::

    mix(z)  = z ^= z >> 16; z = (z * 0x45D9F3B) mod 2^32; z ^= z >> 16; z = (z * 0x45D9F3B) mod 2^32; z ^= z >> 16
    h       = mix((mix((mix(seed) + t) mod 2^32) + e) mod 2^32)
    u       = (h >> 8) / 2^24                              # 24 random bits: a float in [0, 1), exact in float32
    s       = 1 if u < float32(x) else 0                   # x is the spike probability per step

Every sample of a batch gets the same stream (a sample's spikes do not depend on its place in the batch).
Time-to-first-spike coding, in float32 arithmetic (what onnxruntime computes)::

    tf = floor((1 - clip(float32(x), 0, 1)) * window)      # x = 1 fires at step 0; x <= 0 never
    s  = 1 if (t == tf and tf < window) else 0              # one spike per element at most

One-hot coding (an embedding's indices, ``depth`` classes): every element ``x`` (an integer in
``[-depth, depth - 1]``, negative counted from the end as ONNX Gather does) becomes ``depth`` spikes, one of them 1,
at every step: ``s[..., k] = 1 if k == x mod depth``.  The frontend compiles ``Gather(table, indices)`` of a
constant ``[depth, D]`` table as this encoder feeding a dense layer whose weights are the table (each spike
selects its row).  An index that is not such an integer is refused (onnxruntime's OneHot gives a row of zeros).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import helper

from .errors import InputError
from .opschema import AttrSpec, OpSchema, attr_const

__all__ = ["STEP_INDEX", "ENCODERS", "Encoder", "by_ir_op", "counter_uniform", "poisson", "ttfs", "onehot",
           "step_index", "encode_inputs"]

#: the graph input that carries the step index (shape [N, 1]; filled by the runners)
STEP_INDEX = "nmc.t"
_M32 = 0xFFFFFFFF
_MUL = 0x45D9F3B  # < 2^27: products of 32-bit values stay below 2^59 (exact in int64)


def _mix(z: np.ndarray) -> np.ndarray:
    z = z ^ (z >> 16)
    z = (z * _MUL) & _M32
    z = z ^ (z >> 16)
    z = (z * _MUL) & _M32
    return z ^ (z >> 16)


def counter_uniform(seed: int, t: int, shape: tuple[int, ...]) -> np.ndarray:
    """The 24-bit uniform integers ``h >> 8`` of step ``t`` for every element of one sample of ``shape``."""
    e = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)
    base = _mix((_mix(np.int64(seed) & _M32) + np.int64(t)) & _M32)
    return _mix((base + e) & _M32) >> 8


def poisson(x: np.ndarray, seed: int, t: int) -> np.ndarray:
    """Spikes (0.0/1.0) of step ``t`` for rates ``x[B, *shape]``."""
    u = counter_uniform(seed, t, x.shape[1:]).astype(np.float64) * 2.0 ** -24
    return (u < np.asarray(x, np.float32)).astype(np.float64)


def ttfs(x: np.ndarray, window: int, t: int) -> np.ndarray:
    """Spikes (0.0/1.0) of step ``t``: each element fires once, at ``floor((1 - x) * window)`` (float32)."""
    xc = np.clip(np.asarray(x, np.float32), np.float32(0), np.float32(1))
    tf = np.floor((np.float32(1) - xc) * np.float32(window))
    return ((tf == np.float32(t)) & (tf < np.float32(window))).astype(np.float64)


def onehot(x: np.ndarray, depth: int) -> np.ndarray:
    """Spikes (0.0/1.0) ``[B, *shape, depth]``: a 1 at each element's index ``x`` (an integer in
    ``[-depth, depth - 1]``; negative ones count from the end)."""
    v = np.asarray(x, dtype=np.float64)
    bad = ~(np.isfinite(v) & (v == np.round(v)) & (v >= -depth) & (v <= depth - 1))
    if bad.any():
        at = [int(i) for i in np.argwhere(bad)[0]]
        raise InputError(f"one-hot encoding (an embedding's lookup): index {v[tuple(at)]:g} at {at} is not an integer "
                         f"from {-depth} to {depth - 1} (the table has {depth} rows); give valid indices")
    k = np.mod(v.astype(np.int64), depth)
    return (k[..., None] == np.arange(depth)).astype(np.float64)


def step_index(steps: int, batch: int) -> np.ndarray:
    """The value of ``nmc.t`` for a run: ``[T, B, 1]`` holding 0 .. T-1."""
    return np.broadcast_to(np.arange(steps, dtype=np.float64)[:, None, None], (steps, batch, 1)).copy()


# ----------------------------------------------------------------- ONNX function bodies
def _index_nodes() -> list[onnx.NodeProto]:
    """Function-body nodes: ``ti`` the step (int64 scalar) from input ``t``; ``e`` the element index [1, *shape]."""
    mk = helper.make_node
    i64 = onnx.TensorProto.INT64
    return [
        mk("ReduceMax", ["t"], ["t_max"], keepdims=0), mk("Cast", ["t_max"], ["ti"], to=i64),
        mk("Shape", ["x"], ["x_shape"]), mk("Constant", [], ["c1"], value_ints=[1]),
        mk("Constant", [], ["c_big"], value_ints=[1 << 62]),
        mk("Slice", ["x_shape", "c1", "c_big"], ["sample_shape"]),
        mk("ReduceProd", ["sample_shape"], ["n_el"], keepdims=0),
        mk("Constant", [], ["z0"], value_int=0), mk("Constant", [], ["z1"], value_int=1),
        mk("Range", ["z0", "n_el", "z1"], ["e_flat"]),
        mk("Concat", ["c1", "sample_shape"], ["e_shape"], axis=0), mk("Reshape", ["e_flat", "e_shape"], ["e"]),
    ]


def _mix_nodes(z: str, out: str) -> list[onnx.NodeProto]:
    mk = helper.make_node
    return [
        mk("Div", [z, "k16"], [f"{out}_a"]), mk("BitwiseXor", [z, f"{out}_a"], [f"{out}_b"]),
        mk("Mul", [f"{out}_b", "kmul"], [f"{out}_c"]), mk("BitwiseAnd", [f"{out}_c", "m32"], [f"{out}_d"]),
        mk("Div", [f"{out}_d", "k16"], [f"{out}_e"]), mk("BitwiseXor", [f"{out}_d", f"{out}_e"], [f"{out}_f"]),
        mk("Mul", [f"{out}_f", "kmul"], [f"{out}_g"]), mk("BitwiseAnd", [f"{out}_g", "m32"], [f"{out}_h"]),
        mk("Div", [f"{out}_h", "k16"], [f"{out}_i"]), mk("BitwiseXor", [f"{out}_h", f"{out}_i"], [out]),
    ]


def _poisson_body(schema: OpSchema) -> list[onnx.NodeProto]:
    mk = helper.make_node
    return [
        *_index_nodes(),
        mk("Constant", [], ["k16"], value_int=1 << 16), mk("Constant", [], ["k8"], value_int=1 << 8),
        mk("Constant", [], ["kmul"], value_int=_MUL), mk("Constant", [], ["m32"], value_int=_M32),
        attr_const("seed_raw", "seed", "int"), mk("BitwiseAnd", ["seed_raw", "m32"], ["seed"]),
        *_mix_nodes("seed", "h0"),
        mk("Add", ["h0", "ti"], ["h0t"]), mk("BitwiseAnd", ["h0t", "m32"], ["h0m"]), *_mix_nodes("h0m", "h1"),
        mk("Add", ["h1", "e"], ["h1e"]), mk("BitwiseAnd", ["h1e", "m32"], ["h1m"]), *_mix_nodes("h1m", "h2"),
        mk("Div", ["h2", "k8"], ["u24"]), mk("Cast", ["u24"], ["u24f"], to=onnx.TensorProto.DOUBLE),
        mk("Constant", [], ["scale"], value_float=2.0 ** -24), mk("CastLike", ["scale", "u24f"], ["scale_d"]),
        mk("Mul", ["u24f", "scale_d"], ["u_d"]), mk("CastLike", ["u_d", "x"], ["u"]),  # exact: 24 bits
        mk("Less", ["u", "x"], ["fired"]), mk("CastLike", ["fired", "x"], ["s"]),
    ]


def _ttfs_body(schema: OpSchema) -> list[onnx.NodeProto]:
    mk = helper.make_node
    return [
        mk("Constant", [], ["zero"], value_float=0.0), mk("Constant", [], ["one"], value_float=1.0),
        mk("CastLike", ["zero", "x"], ["z"]), mk("CastLike", ["one", "x"], ["o"]),
        attr_const("w_i", "window", "int"), mk("CastLike", ["w_i", "x"], ["w"]),
        mk("Clip", ["x", "z", "o"], ["xc"]), mk("Sub", ["o", "xc"], ["d"]), mk("Mul", ["d", "w"], ["dw"]),
        mk("Floor", ["dw"], ["tf"]),
        mk("ReduceMax", ["t"], ["t_max"], keepdims=0), mk("CastLike", ["t_max", "x"], ["tt"]),
        mk("Equal", ["tf", "tt"], ["now"]), mk("Less", ["tf", "w"], ["inside"]), mk("And", ["now", "inside"], ["fired"]),
        mk("CastLike", ["fired", "x"], ["s"]),
    ]


def _onehot_body(schema: OpSchema) -> list[onnx.NodeProto]:
    mk = helper.make_node
    return [
        attr_const("depth_i", "depth", "int"), mk("Constant", [], ["off_on"], value_floats=[0.0, 1.0]),
        mk("CastLike", ["off_on", "x"], ["values"]), mk("Cast", ["x"], ["x_i"], to=onnx.TensorProto.INT64),
        mk("OneHot", ["x_i", "depth_i", "values"], ["s"], axis=-1),
    ]


def _same_shape(attrs: dict, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape)


@dataclass(frozen=True)
class Encoder:
    """A host-side encoder op: its schema, ``fn(attrs, x, t) -> spikes`` (the float semantics) and the shape of
    its spikes per sample from its attributes and its input's shape (``out_shape``; the input's by default)."""

    schema: OpSchema
    fn: Callable[[dict, np.ndarray, int], np.ndarray]
    out_shape: Callable[[dict, tuple[int, ...]], tuple[int, ...]] = _same_shape

    @property
    def ir_op(self) -> str:
        return self.schema.ir_op


POISSON = OpSchema(
    name="PoissonEncode", ir_op="poisson_encode", inputs=("x", "t"), outputs=("s",),
    attrs={"seed": AttrSpec("int", 0, "seed of the counter-based generator", lo=0, hi=_M32)},
    doc="Poisson (rate) encoder, one timestep: (x, t) -> s, s = 1 with probability x (counter-based, seeded).",
    body=_poisson_body,
)
TTFS = OpSchema(
    name="TTFSEncode", ir_op="ttfs_encode", inputs=("x", "t"), outputs=("s",),
    attrs={"window": AttrSpec("int", 16, "steps of the coding window: x = 1 fires at 0, x -> 0 at window - 1", lo=1,
                              hi=1 << 24)},
    doc="Time-to-first-spike encoder, one timestep: (x, t) -> s, one spike at floor((1 - x) * window).",
    body=_ttfs_body,
)

ONEHOT = OpSchema(
    name="OneHotEncode", ir_op="onehot_encode", inputs=("x", "t"), outputs=("s",),
    attrs={"depth": AttrSpec("int", 2, "number of classes: the spikes get a last axis of this size", lo=1,
                             hi=1 << 24)},
    doc="One-hot encoder, one timestep: (x, t) -> s [*x.shape, depth], s[..., k] = 1 where k = x (mod depth); "
        "the same spikes every step.",
    body=_onehot_body,
)

#: every encoder op, by ONNX op type
ENCODERS: dict[str, Encoder] = {
    "PoissonEncode": Encoder(POISSON, lambda a, x, t: poisson(x, int(a["seed"]), t)),
    "TTFSEncode": Encoder(TTFS, lambda a, x, t: ttfs(x, int(a["window"]), t)),
    "OneHotEncode": Encoder(ONEHOT, lambda a, x, t: onehot(x, int(a["depth"])),
                            lambda a, shape: (*shape, int(a["depth"]))),
}


def by_ir_op(op: str) -> Encoder | None:
    for e in ENCODERS.values():
        if e.ir_op == op:
            return e
    return None


# ----------------------------------------------------------------- the host side of a run
def encode_inputs(specs: list[dict], inputs: dict, steps: int) -> dict:
    """The inputs of a run with every host encoder's spikes added (``[T, B, *shape]`` under the encoder's output
    name), computed from its source input (``spec["input"]``: static ``[B, *shape]`` or ``[*shape]``, step
    ``[T, B, *shape]``) for ``steps`` steps.  ``specs`` are the compiled model's ``host_encoders`` entries."""
    out = dict(inputs)
    for spec in specs:
        name, shape = spec["input"], tuple(spec["shape"])
        if name not in inputs:
            continue  # the caller reports the missing input
        x = np.asarray(inputs[name], dtype=np.float64)
        step = spec["kind"] == "step"
        if x.shape == shape and not step:
            x = x[None]
        lead = 2 if step else 1
        if x.ndim != len(shape) + lead or x.shape[lead:] != shape or (step and x.shape[0] < steps):
            want = (["T"] if step else []) + ["B", *shape]
            raise InputError(f"input '{name}' (encoded on the host by nmc::{spec['op']} into '{spec['output']}') has "
                             f"shape {list(x.shape)}; expected {want}" + (f" with T >= {steps}" if step else ""))
        fn = ENCODERS[spec["op"]].fn
        out[spec["output"]] = np.stack([fn(spec["attrs"], x[t] if step else x, t) for t in range(steps)])
    return out
