"""Post-training quantisation of layers to the chip's integer formats (docs/numerics.md).

Calibration gives each tensor a float range; from it every activation tensor gets a scale and an
integer range, every layer integer weights, biases, requantisation multipliers/shifts (ANN somas)
or integer membrane parameters (LIF).  Parameters that are already representable stay exact
(scale 1), so a model with integer weights, integer thresholds and IF neurons compiles losslessly.
"""
from __future__ import annotations

import math

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from nmc.chip import ChipSpec
from nmc.errors import InputError, PassError, QuantizationError
from nmc.frontend.interpret import activation, run_float
from nmc.ir import Graph
from nmc.neurons import get_model
from nmc.neurons.lut import ENTRY0, pack_table

from .lower import LayerGraph
from .structured import blocks_coo

__all__ = ["TQ", "Range", "Ranges", "QLayer", "Quantized", "calibrate", "ranges_from_metadata", "quantize",
           "requant_params", "floor4_scales", "requant_report"]

_EPS = 1e-9
#: weights are stored as int8 (ternary/binary are int8 values in a narrower range); core.weight_bits includes 8
W_MAX = 2 ** (8 - 1) - 1


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float
    integer: bool  #: every calibration value was an integer

    def merge(self, other: "Range") -> "Range":
        return Range(min(self.lo, other.lo), max(self.hi, other.hi), self.integer and other.integer)


@dataclass(frozen=True)
class TQ:
    """How a tensor is represented on the chip: float value = scale * integer, integer in [lo, hi]."""

    scale: float
    lo: int
    hi: int
    bits: int  #: 1 spike, 8 value, 32 wide
    kind: str  #: "spike" | "value" | "count" | "word" (a state word in the output register: LI, FirstSpikeTime)
    #: float value = offset + scale * integer: only LRN's internal log values (read by its exp layer alone)
    offset: float = 0.0


@dataclass(frozen=True, eq=False)
class Ranges:
    """The result of calibration: a float range per tensor (from calibration inputs and/or model metadata)."""

    ranges: dict[str, Range] = field(default_factory=dict)

    def lint(self) -> None:
        for t, r in self.ranges.items():
            if not (np.isfinite(r.lo) and np.isfinite(r.hi) and r.lo <= r.hi):
                raise PassError(f"ranges: tensor '{t}' has range [{r.lo}, {r.hi}]")


@dataclass(frozen=True, eq=False)
class QLayer:
    """The chip integers of one layer (aligned with its :class:`~nmc.mapper.lower.Layer`)."""

    wq: np.ndarray | None  #: int weight of every synapse (aligned with ``layer.rows``/``cols``); None: see ``wk``
    bias: np.ndarray  #: [n] int
    lo: int  #: output clamp
    hi: int
    w_bits: int  #: 1, 2 or 8: the narrowest weight precision of the chip that holds ``wq``
    lossless: bool
    acc_bound: float  #: worst-case accumulator magnitude
    report: dict[str, Any]  #: quantisation report (core-map header)
    cparam: np.ndarray  #: the neuron model's core parameters, in its declared order
    nparam: np.ndarray  #: [n, the model's per-neuron parameters] (ANN: requantiser multiplier, shift)
    state_init: np.ndarray  #: [n, the model's state words] initial state
    k: float = 1.0  #: membrane scale: a state word in membrane units holds k * its float value
    #: structured layers (``layer.blocks``): each block's integer kernel (int8, its float kernel's shape); the
    #: weights of one output channel share one scale, so a kernel is stored once per core
    wk: tuple | None = None

    def weights(self, layer) -> np.ndarray:
        """The int weight of every synapse of ``layer``, aligned with ``layer.rows`` (unfolded from ``wk``)."""
        if self.wq is not None:
            return self.wq
        return blocks_coo(layer.blocks, [self.wk])[2][0].astype(np.int64)


@dataclass(frozen=True, eq=False)
class Quantized:
    """The result of :func:`quantize`: one :class:`QLayer` per layer of ``lg`` and each routable tensor's TQ."""

    lg: LayerGraph
    layers: list[QLayer]
    tq: dict[str, TQ]

    def lint(self) -> None:
        if len(self.layers) != len(self.lg.layers):
            raise PassError(f"quantized: {len(self.layers)} quantised layers for {len(self.lg.layers)} layers")
        for l, q in zip(self.lg.layers, self.layers):
            if q.wq is None:
                if q.wk is None or l.blocks is None or [k.shape for k in q.wk] != [b.W.shape for b in l.blocks]:
                    raise PassError(f"quantized: {l.where()} has neither weights per synapse nor a kernel per block")
                wq = np.concatenate([k.reshape(-1) for k in q.wk]).astype(np.int64)
            else:
                wq = q.wq
                if wq.shape != l.rows.shape:
                    raise PassError(f"quantized: {l.where()} has {wq.shape} weights for {l.rows.shape[0]} synapses")
            if q.bias.shape != (l.n,):
                raise PassError(f"quantized: {l.where()} has {q.bias.shape} biases for {l.n} neurons")
            if wq.size and (wq.min() < -W_MAX - 1 or wq.max() > W_MAX):
                raise PassError(f"quantized: {l.where()} has weights in [{wq.min()}, {wq.max()}], beyond int8")
            if q.w_bits not in (1, 2, 8) or (q.w_bits < 8 and wq.size and
                                             (wq.min() < (0 if q.w_bits == 1 else -1) or wq.max() > 1)):
                raise PassError(f"quantized: {l.where()} declares {q.w_bits}-bit weights for its weights")
            if q.lo > q.hi:
                raise PassError(f"quantized: {l.where()} has output range [{q.lo}, {q.hi}]")
            m = l.model
            want = ((len(m.core_params),), (l.n, len(m.neuron_params)), (l.n, len(m.state)))
            got = (q.cparam.shape, q.nparam.shape, q.state_init.shape)
            if got != want:
                raise PassError(f"quantized: {l.where()} ({l.soma}) has parameter/state shapes {got}; its model "
                                f"needs {want}")
            missing = [t for t in (*l.inputs, l.out) if t not in self.tq]
            if missing:
                raise PassError(f"quantized: {l.where()} tensors {missing} have no representation")
            if l.soma != "lut" and any(self.tq[t].offset for t in l.inputs):
                raise PassError(f"quantized: {l.where()} reads a tensor held with an offset (LRN's log values); only a "
                                "table layer adds offsets to its bias")


def calibrate(graph: Graph, inputs: Mapping[str, np.ndarray], steps: int | None = None) -> dict[str, Range]:
    """Run the float interpreter on calibration inputs and record every tensor's range."""
    for name, v in inputs.items():
        v = np.asarray(v)
        if v.dtype.kind in "fc" and not np.all(np.isfinite(v)):
            bad = [int(i) for i in np.argwhere(~np.isfinite(v))[0]]
            raise InputError(f"calibration input '{name}' has {int(np.sum(~np.isfinite(v)))} NaN or infinite "
                             f"value(s), the first at index {bad}; calibrate on finite data")
    ranges: dict[str, Range] = {}

    def observe(name: str, value: np.ndarray) -> None:
        v = np.asarray(value, dtype=np.float64)
        if v.size == 0:
            return
        if not np.all(np.isfinite(v)):
            raise QuantizationError(f"calibration: tensor '{name}' becomes NaN or infinite on the calibration inputs "
                                    "(the float model overflows); check the weights and the calibration inputs' range")
        r = Range(float(v.min()), float(v.max()), bool(np.all(v == np.round(v))))
        ranges[name] = ranges[name].merge(r) if name in ranges else r

    run_float(graph, dict(inputs), steps=steps, observer=observe)
    for name, kind in graph.inputs.items():
        if kind in ("static", "step") and name in inputs:
            observe(name, np.asarray(inputs[name]))
    return ranges


def ranges_from_metadata(graph: Graph) -> dict[str, Range]:
    """Ranges shipped in the model (metadata ``nmc.ranges``: {tensor: [min, max, integer]})."""
    raw = graph.metadata.get("nmc.ranges")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        out = {k: Range(float(v[0]), float(v[1]), bool(v[2])) for k, v in data.items()}
        for k, r in out.items():
            if not (math.isfinite(r.lo) and math.isfinite(r.hi) and r.lo <= r.hi):
                raise QuantizationError(f"model metadata 'nmc.ranges' gives tensor '{k}' the range [{r.lo}, {r.hi}]; "
                                        "a range needs finite min <= max: fix the export or pass calibration inputs")
        return out
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        if isinstance(e, QuantizationError):
            raise
        raise QuantizationError(f"model metadata 'nmc.ranges' is malformed ({e}); expected JSON "
                                "{tensor: [min, max, is_integer]}; fix the export or pass calibration inputs") from None


def requant_params(f: np.ndarray, mult_bits: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Approximate each factor ``f`` by ``m / 2**s`` with ``0 <= m < 2**mult_bits``: exact with the
    smallest shift when possible, else with the most precision.  Vectorised over the distinct factors
    (one pass per shift, at most 63)."""
    f = np.asarray(f, dtype=np.float64)
    lim = 2 ** mult_bits
    vals, inv = np.unique(f.reshape(-1), return_inverse=True)
    bad = (vals < 0) | ~np.isfinite(vals) | (vals >= lim)
    if bad.any():  # the first in ascending order, as a scan of the sorted factors meets it
        val = vals[np.argmax(bad)]
        if val < 0 or not np.isfinite(val):
            raise QuantizationError(f"{where}: requantisation factor {val} is not a finite non-negative number")
        raise QuantizationError(f"{where}: requantisation factor {val:.4g} exceeds the multiplier range "
                                f"2^{mult_bits} (core.requant_mult_bits); the output range is far narrower than "
                                "the accumulator's: recalibrate with representative inputs")
    m = np.zeros(vals.shape, np.int64)
    s = np.zeros(vals.shape, np.int64)
    found = vals == 0  # 0 -> m = 0, s = 0
    looking = ~found  # still below the multiplier range, no exact shift yet
    for sh in range(0, 63):
        if not looking.any():
            break
        x = vals * 2.0 ** sh
        looking &= x < lim
        exact = looking & (np.abs(x - np.round(x)) <= _EPS * np.maximum(1.0, x))
        m[exact], s[exact] = np.round(x[exact]).astype(np.int64), sh
        found |= exact
        looking &= ~exact
    rest = ~found  # no exact shift: the most precision
    sh = _most_precise_shift(vals[rest], lim)
    m[rest] = np.minimum(np.round(vals[rest] * 2.0 ** sh).astype(np.int64), lim - 1)
    s[rest] = sh
    return m[inv].reshape(f.shape), s[inv].reshape(f.shape)


def _most_precise_shift(vals: np.ndarray, lim: int) -> np.ndarray:
    """The largest shift ``sh <= 62`` with ``val * 2^sh < lim - 0.5`` (0 when even ``sh = 1`` is too far)."""
    sh = np.zeros(vals.shape, np.int64)
    for k in range(1, 63):
        sh = np.where(vals * 2.0 ** k < lim - 0.5, k, sh)
    return sh


def floor4_scales(E: np.ndarray, out_scale: float) -> tuple[float, float, int]:
    """Scales of an ANN layer on a chip that divides by ``4^k`` and floors (``core.requant_mode = "floor4"``):
    ``(weight scale, output scale, k)``.  The weights keep their own scale (``s_w = max|E| / 127``, or 1 when
    they are int8 integers); the output scale is ``s_w * 4^k`` with the smallest ``k >= 0`` that covers the
    calibrated scale ``out_scale``: at most 4 times coarser than it (2 bits of the 8)."""
    absmax = float(np.abs(E).max()) if E.size else 0.0
    return _floor4(absmax, E.size == 0 or bool(np.all(_is_int(E))), out_scale)


def _floor4(absmax: float, allint: bool, out_scale: float) -> tuple[float, float, int]:
    s_w = 1.0 if (allint and absmax <= W_MAX) else absmax / W_MAX
    k = 0
    while k < 31 and s_w * 4.0 ** k < out_scale * (1 - _EPS):
        k += 1
    return s_w, s_w * 4.0 ** k, k


def requant_report(s_row: np.ndarray, out_scale: float, mult: np.ndarray, shift: np.ndarray, floor: bool) -> dict:
    """Where the requantiser differs from float: the relative error of its factor ``mult / 2^shift`` against
    ``s_w / s_out`` (worst neuron) and its rounding of the result (in output steps: floor up to 1, round half)."""
    want = s_row / out_scale
    got = mult / np.exp2(shift.astype(np.float64))
    rel = np.abs(got - want) / np.maximum(want, 1e-300)
    return {"requant_factor_rel_err": float(rel.max()) if rel.size else 0.0,
            "requant_rounding": "floor" if floor else "half up",
            "requant_err_steps": 1.0 if floor else 0.5}


def _quantize_lut(l, s_in: np.ndarray, ranges: Mapping[str, Range], chip: ChipSpec, tq: dict[str, TQ]):
    """A layer whose soma computes an activation by table (``lut``; docs/numerics.md, "Look-up table soma"):
    the requantiser maps the accumulator onto a signed index of ``core.lut_index_bits`` bits that covers the
    pre-activation's calibrated range; entry ``i`` holds ``f`` at the value index ``i`` stands for, in the output
    tensor's scale.  Returns weights, bias, output range, weight bits, lossless, neuron and core parameters and
    the report entries (index and output scales, the worst error of the table over the calibrated range).

    A table with attribute ``span`` (the links of LRN's chain; docs/numerics.md, "LRN") covers the
    pre-activation's range ``[min(lo, 0), max(hi, 0)]`` itself, not ``[-max|.|, max|.|]``: the bias shifts it by
    ``c0`` (entry ``i`` stands for ``c0 + i * step``), one more bit for a one-sided range (an 8-bit input read at
    its own step: every value exact).  In that chain ``exp`` starts its index at ``log(0.45 * out_scale)`` (below,
    every entry would be 0), on ``u``'s grid where that is not much coarser; ``log``'s output starts at
    ``log(s_y / 4) - t_max`` (s_y the step of the ``exp`` it feeds, t_max the largest log-factor: the calibrated
    ``log(LOG_EPS)`` of a zero input would waste the table's range, and a zero input still gives
    ``exp(.) < s_y / 4``, an output of 0); ``u`` and ``t`` are held with offsets (:func:`_lrn_log_tq`)."""
    c = chip.core
    where = l.where()
    I = c.lut_index_bits
    fn = l.attrs["fn"]
    if I == 0:
        if "lrn" in l.attrs:
            raise QuantizationError(f"{where}: chip '{chip.name}' has no activation look-up table (core.lut_index_bits "
                                    f"= 0), so ONNX LRN node '{l.attrs['lrn']}' (a chain of tables, this layer its "
                                    f"{fn}) cannot run on a core; choose a chip with a table (tianjic, tianjicx) or "
                                    "accept an approximation: approximate={'LRN': 'identity'} in nmc.compile / "
                                    "--approximate LRN=identity")
        raise QuantizationError(f"{where}: chip '{chip.name}' has no activation look-up table (core.lut_index_bits "
                                f"= 0), so its {fn} cannot run on a core; choose a chip with a table "
                                "(tianjic, tianjicx) or compute the activation on the host after the last layer")
    f = activation(l.attrs)
    half = 2 ** (I - 1)
    r_pre = ranges.get(l.attrs["pre"])
    if r_pre is None:
        raise QuantizationError(f"{where}: no calibration range for its input '{l.attrs['pre']}'; pass calibration "
                                "inputs (nmc compile --calib inputs.npz) or ship 'nmc.ranges' metadata in the model")
    span = bool(l.attrs.get("span"))
    r_out = ranges.get(l.out)
    f_ref = f
    if span and fn == "log" and r_out is not None and "exp_out" in l.attrs:
        r_y = ranges.get(l.attrs["exp_out"])
        if r_y is not None:  # below this, exp(u + t) < s_y / 4 for every t: an output of 0
            s_y = _act_tq(r_y, r_y.lo >= 0, l.attrs["exp_out"], where, c.activation_bits).scale
            floor = math.log(s_y / 4) - float(l.attrs["t_max"])
            r_out = Range(floor, max(r_out.hi, floor), False)  # (from the floor: smaller inputs than calibrated too)
            f_ref = (lambda g, lo: lambda x: np.maximum(g(x), lo))(f, floor)  # what the table can hold
    out_q = _act_tq(r_out, r_out is not None and r_out.lo >= 0, l.out, where, c.activation_bits)
    if span and fn in ("log", "lrn_scale") and r_out is not None:
        out_q = _lrn_log_tq(l, r_out, tq, c.activation_bits, c.requant_mode == "floor4")
    tq[l.out] = out_q
    p_lo, p_hi = min(r_pre.lo, 0.0), max(r_pre.hi, 0.0)  # (0 in range, as every 8-bit tensor's)
    if span and fn == "exp":  # exp(x) < 0.45 out_scale rounds to 0 in the output: the index starts there
        p_lo = min(r_pre.hi, math.log(0.45 * out_q.scale / max(abs(float(l.attrs["alpha"])), 1e-300)))
        p_hi = r_pre.hi
    u_q = tq.get(l.attrs.get("u", "")) if span and fn == "exp" else None
    if span:
        width = p_hi - p_lo
        s_idx = 1.0 if (r_pre.integer and fn != "exp" and width <= 2 * half - 1) else \
            (width / (2 * half - 1) if width > 0 else 1.0)
        m = math.floor(u_q.scale / s_idx + 1e-9) if u_q is not None else 0
        if m >= 1 and u_q.scale / m <= 1.25 * s_idx:  # (not much coarser than its own step)
            s_idx = u_q.scale / m  # LRN's exp on u's own grid (a whole fraction of its step): u is rounded once
        e0 = float(s_in[l.cols[0]] * l.vals[0]) if l.rows.size else 0.0
        if (fn != "exp" and l.rows.size == l.n and e0 > 0 and e0 * (2 * half - 1) >= width
                and np.all(l.vals * s_in[l.cols] == e0)):
            s_idx = e0  # an identity synapse of an input's step: the index is its value, exactly
    else:
        m_pre = max(abs(p_lo), abs(p_hi))
        s_idx = 1.0 if (r_pre.integer and m_pre <= half - 1) else (m_pre / (half - 1) if m_pre > 0 else 1.0)
    E = l.vals * s_in[l.cols]
    floor4 = c.requant_mode == "floor4"
    if floor4:
        s_w, s_idx, k4 = _floor4_exact(E, s_idx) if span else floor4_scales(E, s_idx)
        s_row = np.full(l.n, s_w)
        mult, shift = np.ones(l.n, np.int64), np.full(l.n, 2 * k4, np.int64)
    else:
        s_row = _row_scales(l.rows, E, l.n)
        mult, shift = requant_params(s_row / s_idx, c.requant_mult_bits, where)
    # the index's origin: entry i stands for c0 + i * s_idx; c0 a whole number of every row's accumulator steps
    c0 = 0.0
    if span and l.n:
        c0 = round((p_lo + half * s_idx) / s_row[0]) * s_row[0]
        if not np.all(_is_int(c0 / s_row)):  # rows of other steps: the symmetric index (no shift)
            c0 = 0.0
    # inputs held with an offset (LRN's u and t: value = offset + scale * code): the offsets join the bias
    off = np.concatenate([np.full(sz, tq[t].offset) for t, sz in zip(l.inputs, l.in_sizes)])
    b_f = l.bias + np.bincount(l.rows, weights=l.vals * off[l.cols], minlength=l.n) if np.any(off) else l.bias
    if u_q is not None and _is_int(u_q.scale / s_idx) and l.n:  # the origin on u's grid, when the bias stays exact
        c_u = u_q.offset + round((p_lo + half * s_idx - u_q.offset) / s_idx) * s_idx
        if np.all(_is_int((b_f - c_u) / s_row)):
            c0 = c_u
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        wq = _to_int(E / s_row[l.rows], "weight", where)
        bias = _to_int((b_f - c0) / s_row, "bias", where)
    if floor4 and span and l.n and shift[0] > 0:  # half an index step in the bias: the floor rounds
        bias = bias + (1 << (int(shift[0]) - 1))
    if np.any(np.abs(bias) >= 2 ** (c.accumulator_bits - 1)):
        raise QuantizationError(f"{where}: a bias quantises beyond the {c.accumulator_bits}-bit accumulator "
                                "(core.accumulator_bits); recalibrate or rescale the layer")
    # entry e stands for index i (two's complement order); a floored index covers [i, i+1) steps, a rounded one
    # [i - 1/2, i + 1/2): the table holds f at the middle
    e = np.arange(2 ** I)
    i = np.where(e < half, e, e - 2 ** I)
    mid = 0.5 if (floor4 and np.any(shift > 0) and not span) else 0.0
    y = (f(c0 + (i + mid) * s_idx) - out_q.offset) / out_q.scale
    table = np.clip(np.round(y), out_q.lo, out_q.hi).astype(np.int64)
    cparam = np.zeros(len(get_model("lut").core_params), np.int64)
    cparam[0], cparam[1] = int(floor4), I
    words = pack_table(table)
    cparam[ENTRY0:ENTRY0 + words.size] = words
    # the error against float over the calibrated input range, at the values the accumulator can hold (its step is
    # the weight scale), else on a fine grid: the table is a step function
    step = float(s_row.min()) if l.n else 1.0
    a0, a1 = math.ceil(r_pre.lo / step - _EPS), math.floor(r_pre.hi / step + _EPS)
    x = np.arange(a0, a1 + 1) * step if 0 <= a1 - a0 <= 200_000 else np.linspace(r_pre.lo, r_pre.hi, 200_001)
    xi = (x - c0) / s_idx
    idx = np.clip(np.floor(xi) if mid else np.floor(xi + 0.5), -half, half - 1).astype(np.int64)
    chip_y = out_q.offset + table[idx & (2 ** I - 1)] * out_q.scale
    err = float(np.abs(chip_y - f_ref(x)).max())
    w_err = np.abs(wq * s_row[l.rows] - E)
    in_lo, in_hi = int(np.floor((r_pre.lo - c0) / s_idx)), int(np.ceil((r_pre.hi - c0) / s_idx))
    used = np.arange(max(in_lo, -half), min(in_hi, half - 1) + 1)
    exact = bool(np.all(_is_int((f(c0 + used * s_idx) - out_q.offset) / out_q.scale)))
    lossless = bool(np.all(w_err <= _EPS * np.maximum(1, np.abs(E))) and np.all(s_row == 1.0) and s_idx == 1.0
                    and out_q.scale == 1.0 and np.all(_is_int(b_f)) and exact and mid == 0.0 and f_ref is f
                    and out_q.offset == 0.0)
    rep = {"lossless": lossless, "out_scale": out_q.scale, "lut_fn": fn, "lut_index_bits": I,
           "lut_index_scale": s_idx, "lut_err_max": err, "requant_mode": c.requant_mode,
           "weight_rel_err": float(w_err.max() / max(np.abs(E).max(), 1e-30)) if E.size else 0.0,
           **requant_report(s_row, s_idx, mult, shift, floor4)}
    if span:
        rep["lut_index_origin"] = float(c0)
        if out_q.offset:
            rep["out_offset"] = out_q.offset
    return (wq, bias, out_q.lo, out_q.hi, _w_bits(wq, chip), lossless, np.stack([mult, shift], axis=1).astype(np.int64),
            cparam, rep)


def _lrn_log_tq(l, r_out: Range, tq: dict[str, TQ], bits: int, floor4: bool) -> TQ:
    """The representation of LRN's log values ``u`` (from the floor up) and ``t`` (up to ``t_max``, the log-factor
    of a zero window): every code of ``bits`` used, ``value = offset + scale * code`` (only LRN's exp layer reads
    them; it adds the offsets to its bias).  Their sum ``u + t`` gets exact weights from steps of whole ratios: t,
    quantised after the first u, at u's step / k (at least its own), a later u at a whole multiple of t's; on a
    ``floor4`` chip k is at most 16 (the exp layer's weights, k * n and n, leave n room: :func:`_floor4_exact`)."""
    lo_c, hi_c = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    lo, hi = r_out.lo, r_out.hi
    if l.attrs["fn"] == "lrn_scale":
        hi = float(l.attrs["t_max"])
        lo = min(lo, hi)
    scale = (hi - lo) / (hi_c - lo_c) if hi > lo else 0.0
    u_q, t_q = tq.get(l.attrs.get("u", "")), tq.get(l.attrs.get("t", ""))
    k_max = 16 if floor4 else W_MAX
    if l.attrs["fn"] == "lrn_scale" and u_q is not None:
        k = max(1, min(k_max, math.floor(u_q.scale / scale + 1e-9))) if scale > 0 else k_max
        scale = u_q.scale / k
    if l.attrs["fn"] == "log" and t_q is not None:
        k = max(1, math.ceil(scale / t_q.scale - 1e-9))
        if k <= k_max:
            scale = k * t_q.scale
    scale = scale if scale > 0 else 1.0
    # (t's offset a whole number of its steps: with u's, the exp layer's origin and bias stay exact)
    offset = (math.ceil(hi / scale - 1e-9) - hi_c) * scale if l.attrs["fn"] == "lrn_scale" else lo - lo_c * scale
    return TQ(scale, lo_c, hi_c, bits, "value", offset)


def _floor4_exact(E: np.ndarray, s_idx: float) -> tuple[float, float, int]:
    """Scales of a table layer on a ``floor4`` chip with an index step near ``s_idx`` (instead of
    :func:`floor4_scales`'s up to 4 times coarser one): when every weight is a whole multiple of the smallest,
    ``b``, the weight scale is ``b / n`` (exact integer weights) and the index step ``b * 4^k / n``, the
    smallest such step >= ``s_idx``; else ``s_idx / 4^k`` with the largest ``k`` whose weights still fit int8
    (relative weight error <= 1/64).  Falls back to :func:`floor4_scales` when even ``k = 0`` overflows."""
    absmax = float(np.abs(E).max()) if E.size else 0.0
    if absmax == 0.0 or absmax / s_idx > W_MAX:
        return floor4_scales(E, s_idx)
    if s_idx == 1.0 and bool(np.all(_is_int(E))):
        return 1.0, 1.0, 0
    b = float(np.abs(E[E != 0]).min())
    if np.all(_is_int(E / b)) and absmax / b <= W_MAX:
        best = None
        for k in range(32):
            n = math.floor(b * 4.0 ** k / s_idx * (1 + 1e-12))
            if n >= 1 and n * absmax / b <= W_MAX + 1e-9:
                step = b * 4.0 ** k / n
                if best is None or step < best[1]:
                    best = (b / n, step, k)
        if best is not None:
            return best
    k = 0
    while k < 31 and absmax * 4.0 ** (k + 1) / s_idx <= W_MAX:
        k += 1
    return s_idx / 4.0 ** k, s_idx, k


def _is_int(a: np.ndarray) -> np.ndarray:
    return np.abs(a - np.round(a)) <= _EPS * np.maximum(1.0, np.abs(a))


def _row_max(rows: np.ndarray, x: np.ndarray, n: int, fill: float, ufunc=np.maximum) -> np.ndarray:
    """``ufunc``-reduction of ``x`` per row (``fill`` where a row has no entry): by segments when ``rows`` is
    sorted (dense and conv layers), else with ``ufunc.at``."""
    out = np.full(n, fill)
    if not rows.size:
        return out
    if np.all(rows[1:] >= rows[:-1]):
        starts = np.flatnonzero(np.concatenate([[True], rows[1:] != rows[:-1]]))
        out[rows[starts]] = ufunc(ufunc.reduceat(x, starts), fill)
    else:
        ufunc.at(out, rows, x)
    return out


def _row_all(rows: np.ndarray, ok: np.ndarray, n: int) -> np.ndarray:
    """Per row: every entry ``ok`` (True for a row without entries)."""
    return np.bincount(rows[~ok], minlength=n) == 0


def _row_scales(rows: np.ndarray, E: np.ndarray, n: int, bias: np.ndarray | None = None) -> np.ndarray:
    """Per-neuron weight scale: 1 if the row is already int8, else the row's common step if every
    weight (and the bias) is a small multiple of its smallest one, else max|E| / 127."""
    absE = np.abs(E)
    rmax = _row_max(rows, absE, n, 0.0)
    nz = absE > 0
    rmin = _row_max(rows[nz], absE[nz], n, np.inf, np.minimum)
    allint = _row_all(rows, _is_int(E), n)
    scale = np.where(rmax > 0, rmax / W_MAX, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = absE / rmin[rows]
    step_ok = _row_all(rows, _is_int(ratio) | ~nz, n)
    use_step = step_ok & np.isfinite(rmin) & (rmax / np.where(np.isfinite(rmin), rmin, 1) <= W_MAX + 1e-9)
    if bias is not None:  # the bias is counted in the same step: a step that does not divide it loses it
        with np.errstate(divide="ignore", invalid="ignore"):
            use_step &= _is_int(bias / np.where(np.isfinite(rmin), rmin, 1.0))
    scale = np.where(use_step, np.where(np.isfinite(rmin), rmin, 1.0), scale)
    scale = np.where(allint & (rmax <= W_MAX), 1.0, scale)
    return scale


def _to_int(x: np.ndarray, what: str, where: str, bits: int = 62) -> np.ndarray:
    """Round ``x`` to int64, refusing NaN, infinities and values beyond ``bits`` bits (a cast would wrap them to
    -2^63 in the core map), naming the layer, the quantity and the first bad element."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.round(x)
        bad = ~(np.abs(r) < 2.0 ** bits)
    if bad.any():
        idx = [int(i) for i in np.argwhere(bad)[0]] if x.ndim else []
        raise QuantizationError(f"{where}: {what} element {idx} is {x[tuple(idx)]:g} after scaling, not a finite "
                                f"integer within 2^{bits}; the layer's float values or its calibration ranges are "
                                "extreme: check the model's weights and recalibrate")
    return r.astype(np.int64)


def _state_int(x: np.ndarray, model, layer, core) -> np.ndarray:
    """Initial state words as integers, each within its word's bits (the model's declaration)."""
    q = _to_int(x, "initial state", layer.where())
    for i, w in enumerate(model.state):
        bits = w.bits(core)
        lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
        col = q[:, i]
        bad = (col < lo) | (col > hi)
        if bad.any():
            n = int(np.argmax(bad))
            raise QuantizationError(f"{layer.where()}: initial {w.name} of neuron {n} is {float(x[n, i]):g}, "
                                    f"{int(col[n])} on the chip, outside the {bits}-bit state word {lo} .. {hi}; give a "
                                    "smaller initial state (nmc.state) or rescale the layer")
    return q


def _check_spike_inputs(layer, tq: dict[str, TQ]) -> None:
    """A decoder (SpikeCount, FirstSpikeTime) reads spikes only."""
    for t in layer.inputs:
        if tq[t].kind != "spike":
            raise QuantizationError(f"{layer.where()}: input '{t}' of the {layer.model.onnx.name} decoder is not a "
                                    "spike tensor; feed it the spikes of a spiking layer (LIF, ...)")


def _neuron_params(model, values: dict, layer, chip: ChipSpec, attrs: dict) -> np.ndarray:
    """The model's per-neuron parameters ``[n, Q]`` from its quantize hook's values (a number or one per neuron),
    each checked against its declared range on this chip, naming the first neuron outside it."""
    c = chip.core
    cols = []
    for p in model.neuron_params:
        v = np.broadcast_to(np.asarray(values[p.name], np.float64), (layer.n,))
        lo_p, hi_p = p.lo(c), p.hi(c)
        bad = ~((v >= lo_p) & (v <= hi_p))  # NaN too
        if bad.any():
            i = int(np.argmax(bad))
            src = p.name[:-5] if p.name.endswith("_mult") else p.name
            given = np.ravel(attrs[src])[i] if src in attrs and np.size(attrs[src]) == layer.n else None
            raise QuantizationError(f"{layer.where()}: {p.name} of neuron {i}"
                                    f"{f' ({src} {float(given):g})' if given is not None else ''} is {v[i]:.0f} on "
                                    f"the chip, outside {lo_p} .. {hi_p} ({p.doc}; from core.membrane_bits / "
                                    f"core.beta_shift of '{chip.name}'); rescale the layer's weights or parameters")
        cols.append(np.round(v).astype(np.int64))
    return np.stack(cols, axis=1) if cols else np.zeros((layer.n, 0), np.int64)


def _w_bits(wq: np.ndarray, chip: ChipSpec) -> int:
    vals = set(np.unique(wq).tolist()) if wq.size else {0}
    if vals <= {0, 1} and 1 in chip.core.weight_bits:
        return 1
    if vals <= {-1, 0, 1} and 2 in chip.core.weight_bits:
        return 2
    return 8



def _membrane_scale(l, absmax: float, allint: bool, b: np.ndarray, tq: dict) -> tuple[float, bool]:
    """The membrane scale ``k`` of a LIF-family layer (1 when weights, bias, membrane parameters and initial
    state are exact integers: ``exact``) from its scaled weights' largest magnitude."""
    m, a = l.model, l.attrs
    if m.spike_input:
        _check_spike_inputs(l, tq)
    mem_vals = np.concatenate([np.ravel(np.asarray(a[x], np.float64)) for x in m.membrane_attrs] or [np.zeros(0)])
    exact = (absmax == 0 or (allint and absmax <= W_MAX)) and bool(np.all(_is_int(b))) and \
        bool(np.all(_is_int(mem_vals))) and bool(np.all(_is_int(l.init)))
    k = 1.0 if exact else (W_MAX / absmax if absmax > 0 else 1.0)
    return k, exact


def _lif_rest(l, k: float, exact: bool, b: np.ndarray, w_bits: int, chip: ChipSpec, tq: dict, rep: dict,
              weight_rel_err: float):
    """Everything of a LIF-family layer after its weights: ``(bias, lo, hi, w_bits, lossless, cparam, nparam,
    state_init)``; sets the output's TQ of a non-spiking model and fills ``rep``."""
    m, a, c = l.model, l.attrs, chip.core
    scaled = np.array([w.scaled for w in m.state], bool)
    try:
        values = m.quantize(a, k, c)
    except (OverflowError, ValueError) as e:  # an attribute far outside the layer's scale
        raise QuantizationError(f"{l.where()}: its {m.name} parameters do not scale to chip integers "
                                f"(membrane scale {k:g}: {e}); attributes "
                                f"{ {x: a[x] for x in m.membrane_attrs} } are extreme for its weights: "
                                "rescale them") from None
    for p in m.core_params:
        v, lo_p, hi_p = values[p.name], p.lo(c), p.hi(c)
        if not lo_p <= v <= hi_p:
            given = f" {a[p.name]:g} scales to" if isinstance(a.get(p.name), float) else ""
            raise QuantizationError(f"{l.where()}: {p.name}{given} {v}, outside {lo_p} .. {hi_p} ({p.doc}; "
                                    f"from core.membrane_bits / core.beta_shift of '{chip.name}'); rescale "
                                    "the layer's weights or threshold")
    cparam = np.array([values[p.name] for p in m.core_params], np.int64)
    nparam = _neuron_params(m, values, l, chip, a)
    state_init = _state_int(np.where(scaled, k * l.init, l.init), m, l, c)
    bias, lo, hi = _to_int(k * b, "bias", l.where()), 0, 1
    if not m.spiking:  # the output register holds a state word (LI's membrane, a first-spike time)
        w = next(w for w in m.state if w.out_port == m.output_port)
        lo, hi = -2 ** (w.bits(c) - 1), 2 ** (w.bits(c) - 1) - 1
        tq[l.out] = TQ(1.0 / k if w.scaled else 1.0, lo, hi, m.out_bits, "word")
    lossless = bool(exact and m.lossless(a))
    rep.update(lossless=lossless, membrane_scale=k, weight_rel_err=weight_rel_err,
               **{f"{p.name[:-5]}_chip": values[p.name] / 2 ** c.beta_shift for p in m.core_params
                  if p.name.endswith("_mult")},  # the decay the chip runs, beside the float one
               **{p.name[:-5]: float(a[p.name[:-5]]) for p in m.core_params
                  if p.name.endswith("_mult") and p.name[:-5] in a},
               # per-neuron decays (LIFT): the largest difference between a neuron's float decay and the chip's
               **{f"{p.name[:-5]}_max_err": float(np.abs(nparam[:, i] / 2 ** c.beta_shift -
                                                          np.broadcast_to(a[p.name[:-5]], (l.n,))).max(initial=0))
                  for i, p in enumerate(m.neuron_params) if p.name.endswith("_mult") and p.name[:-5] in a})
    return bias, lo, hi, w_bits, lossless, cparam, nparam, state_init


# ----------------------------------------------------------------------------- structured layers
def _kernel_form(l, s_in: np.ndarray, in_max: np.ndarray):
    """``(bias per channel, positions per channel, [(block, input scale [co, ci_g], input bound [co, ci_g])])``
    when every block's input has one scale per channel and the bias one value per output channel (so one integer
    kernel serves every position), else None."""
    co = l.blocks[0].co
    if l.n % co:
        return None
    hw = l.n // co
    B = l.bias.reshape(co, hw)
    if hw > 1 and not np.all(B == B[:, :1]):
        return None
    parts = []
    for b in l.blocks:
        C = b.in_shape[0]
        cols = b.columns()
        valid = (cols >= 0).reshape(C, -1)
        sc = np.where(valid, s_in[np.maximum(cols, 0)].reshape(C, -1), -np.inf)
        s_ch = sc.max(axis=1)
        if np.any(valid & (sc != s_ch[:, None])):
            return None
        s_ch = np.where(np.isfinite(s_ch), s_ch, 0.0)
        im = np.where(valid, in_max[np.maximum(cols, 0)].reshape(C, -1), 0).max(axis=1)
        if b.group == 1:  # every output channel reads every input channel: views, not [co, ci] copies
            parts.append((b, np.broadcast_to(s_ch[None, :], (co, C)), np.broadcast_to(im[None, :], (co, C))))
            continue
        ci = (np.arange(co)[:, None] // b.co_g) * b.ci_g + np.arange(b.ci_g)[None, :]
        parts.append((b, s_ch[ci], im[ci]))
    return B[:, 0].astype(np.float64), hw, parts


def _kernel_chunks(parts, co: int, gain: float = 1.0):
    """The scaled kernel entries ``E`` and input bounds, ``[channels, entries]``, for chunks of output channels."""
    per = sum(int(np.prod(b.W.shape[1:])) for b, _, _ in parts)
    step = max(1, (1 << 21) // max(per, 1))
    for c0 in range(0, co, step):
        c1 = min(co, c0 + step)
        E = np.concatenate([(gain * b.W[c0:c1].astype(np.float64) * sp[c0:c1, :, None, None]).reshape(c1 - c0, -1)
                            for b, sp, _ in parts], axis=1)
        IM = np.concatenate([np.broadcast_to(im[c0:c1, :, None, None], b.W[c0:c1].shape).reshape(c1 - c0, -1)
                             for b, _, im in parts], axis=1)
        yield c0, c1, E, IM


def _put(wk: list, parts, c0: int, c1: int, wq: np.ndarray) -> None:
    """Write a chunk of integer kernel entries back into each block's kernel."""
    o = 0
    for (b, _, _), k in zip(parts, wk):
        m = int(np.prod(b.W.shape[1:]))
        k[c0:c1] = wq[:, o:o + m].reshape(k[c0:c1].shape)
        o += m


def _unit_soma(l, tq: dict, nonneg: set, chip: ChipSpec, rep: dict):
    """A layer of unit weights: max pooling (``dendrite == "max"``: a mask; multiplier 1, shift 0, floor 0) or a
    spike count.  Sets its output's TQ; returns ``(bias, lo, hi, lossless, k, cparam, nparam, state_init)``."""
    c = chip.core
    if l.dendrite == "max":
        q_in = tq[l.inputs[0]]
        tq[l.out] = TQ(q_in.scale, q_in.lo if not l.relu else max(0, q_in.lo), q_in.hi, 8, "value")
        nparam = np.stack([np.ones(l.n, np.int64), np.zeros(l.n, np.int64)], axis=1)  # multiplier 1, shift 0
        rep.update(lossless=True, weight_rel_err=0.0, out_scale=tq[l.out].scale)
        return (np.zeros(l.n, np.int64), tq[l.out].lo, tq[l.out].hi, True, 1.0, np.zeros(1, np.int64), nparam,
                np.zeros((l.n, 0), np.int64))
    _check_spike_inputs(l, tq)
    hi = 2 ** c.activation_bits - 1
    tq[l.out] = TQ(1.0, 0, hi, 8, "count")
    nonneg.add(l.out)
    lossless = bool(np.all(_is_int(l.init)))  # a count starts from whole spikes
    rep.update(lossless=lossless, count_max=hi)
    return (np.zeros(l.n, np.int64), 0, hi, lossless, 1.0, np.zeros(0, np.int64), np.zeros((l.n, 0), np.int64),
            _state_int(l.init, l.model, l, c))


def _ann_bias(l, s_row: np.ndarray, chip: ChipSpec) -> np.ndarray:
    """An ANN layer's integer biases at its per-neuron weight scales, refused beyond the accumulator."""
    c = chip.core
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        bias = _to_int(l.bias / s_row, "bias", l.where())
    if np.any(np.abs(bias) >= 2 ** (c.accumulator_bits - 1)):
        k = int(np.argmax(np.abs(bias)))
        raise QuantizationError(f"{l.where()}: bias of neuron {k} quantises to {int(bias[k])}, beyond the "
                                f"{c.accumulator_bits}-bit accumulator (core.accumulator_bits); recalibrate "
                                "or rescale the layer")
    return bias


def _quantize_structured(l, kf, chip: ChipSpec, ranges, tq: dict, nonneg: set, in_nonneg: bool, rep: dict) -> QLayer:
    """The :class:`QLayer` of a structured layer: as the per-synapse quantisation, with one weight scale per output
    channel over its whole kernel (docs/numerics.md), integer kernels ``wk`` instead of per-synapse weights."""
    c = chip.core
    Bch, hw, parts = kf
    co = Bch.shape[0]
    wk = [np.zeros(b.W.shape, np.int8) for b, _, _ in parts]
    bound = np.zeros(co)
    stats = dict(absmax=0.0, allint=True, err=0.0, exact=True)  # allint: scaled weights; exact: their integers

    def scan(gain: float = 1.0) -> None:  # the largest scaled weight, and whether all are integers
        for _, _, E, _ in _kernel_chunks(parts, co, gain):
            if E.size:
                stats["absmax"] = max(stats["absmax"], float(np.abs(E).max()))
                stats["allint"] &= bool(np.all(_is_int(E)))

    if l.dendrite == "max" or l.soma == "count":  # unit weights: a mask (max) or an identity (count)
        for c0, c1, E, IM in _kernel_chunks(parts, co):
            wq = (E != 0).astype(np.int64)
            _put(wk, parts, c0, c1, wq)
            bound[c0:c1] = (wq * IM).sum(axis=1)
        w_bits = _w_bits(np.ones(1, np.int64), chip)
        bias, lo, hi, lossless, k, cparam, nparam, state_init = _unit_soma(l, tq, nonneg, chip, rep)
    elif l.soma == "ann":
        nn = l.relu or (in_nonneg and l.op in ("avgpool", "add") and all(bool(np.all(b.W >= 0)) for b, _, _ in parts))
        out_q = _act_tq(ranges.get(l.out), nn, l.out, l.where(), c.activation_bits)
        floor4 = c.requant_mode == "floor4"
        if floor4:
            scan()
            s_layer, out_scale, k4 = _floor4(stats["absmax"], stats["allint"], out_q.scale)
            out_q = TQ(out_scale, out_q.lo, out_q.hi, out_q.bits, out_q.kind)
            s_ch = np.full(co, s_layer)
        else:
            s_ch = np.zeros(co)
        for c0, c1, E, IM in _kernel_chunks(parts, co):
            if not floor4:
                rows = np.repeat(np.arange(c1 - c0), E.shape[1])
                s_ch[c0:c1] = _row_scales(rows, E.reshape(-1), c1 - c0, Bch[c0:c1])
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                wq = _to_int(E / s_ch[c0:c1, None], "weight", l.where())
            if wq.size and (wq.min() < -W_MAX - 1 or wq.max() > W_MAX):
                raise AssertionError(f"{l.name}: weights out of int8")  # internal invariant: scales bound them
            _put(wk, parts, c0, c1, wq)
            bound[c0:c1] = (np.abs(wq) * IM).sum(axis=1)
            if E.size:
                err = np.abs(wq * s_ch[c0:c1, None] - E)
                stats["absmax"] = max(stats["absmax"], float(np.abs(E).max()))
                stats["err"] = max(stats["err"], float(err.max()))
                stats["exact"] &= bool(np.all(err <= _EPS * np.maximum(1, np.abs(E))))
        s_row = np.repeat(s_ch, hw)
        bias = _ann_bias(l, s_row, chip)
        tq[l.out] = out_q
        if nn:
            nonneg.add(l.out)
        if floor4:  # (one (mult, shift) for every neuron: a read-only broadcast, no array of the layer's size)
            mult, shift = np.broadcast_to(np.int64(1), (l.n,)), np.broadcast_to(np.int64(2 * k4), (l.n,))
        else:
            m_ch, sh_ch = requant_params(s_ch / out_q.scale, c.requant_mult_bits, l.where())
            mult, shift = np.repeat(m_ch, hw), np.repeat(sh_ch, hw)
        lossless = bool(stats["exact"] and np.all(s_ch == 1.0) and out_q.scale == 1.0 and np.all(_is_int(l.bias)))
        lo, hi = out_q.lo, out_q.hi
        w_bits = max(_w_bits(k, chip) for k in wk) if wk else 8
        k, cparam, state_init = 1.0, np.array([int(floor4)], np.int64), np.zeros((l.n, 0), np.int64)
        nparam = (np.broadcast_to(np.array([1, 2 * k4], np.int64), (l.n, 2)) if floor4 else
                  np.stack([mult, shift], axis=1).astype(np.int64))
        rep.update(requant_mode=c.requant_mode, **requant_report(s_row, out_q.scale, mult, shift, floor4))
        rep.update(lossless=lossless, weight_rel_err=stats["err"] / max(stats["absmax"], 1e-30),
                   out_scale=out_q.scale, weight_scale_min=float(s_ch.min()), weight_scale_max=float(s_ch.max()))
    elif l.model.quantize is not None:  # the LIF family
        m, a = l.model, l.attrs
        gain = float(a[m.input_gain]) if m.input_gain else 1.0
        scan(gain)
        k, exact = _membrane_scale(l, stats["absmax"], stats["allint"], gain * l.bias, tq)
        for c0, c1, E, IM in _kernel_chunks(parts, co, gain):
            wq = _to_int(k * E, "weight", l.where())
            _put(wk, parts, c0, c1, wq)
            bound[c0:c1] = (np.abs(wq) * IM).sum(axis=1)
            if E.size:
                stats["err"] = max(stats["err"], float(np.abs(wq / k - E).max()))
        w_bits = max(_w_bits(kk, chip) for kk in wk) if wk else 8
        bias, lo, hi, w_bits, lossless, cparam, nparam, state_init = _lif_rest(
            l, k, exact, gain * l.bias, w_bits, chip, tq, rep, stats["err"] / max(stats["absmax"], 1e-30))
    else:
        raise AssertionError(l.soma)
    # worst-case accumulator magnitude over the whole kernel (an upper bound at the borders)
    acc_bound = float((np.repeat(bound, hw) + np.abs(bias)).max()) if l.n else 0.0
    rep["acc_bound"] = acc_bound
    rep["shared_kernels"] = True
    return QLayer(wq=None, wk=tuple(wk), bias=bias, lo=lo, hi=hi, w_bits=w_bits, lossless=lossless,
                  acc_bound=acc_bound, report=rep, cparam=cparam, nparam=nparam, state_init=state_init, k=k)


def _act_tq(r: Range | None, nonneg: bool, name: str, what: str, bits: int) -> TQ:
    if r is None:
        raise QuantizationError(f"{what}: no calibration range for tensor '{name}'; pass calibration inputs "
                                "(nmc compile --calib inputs.npz) or ship 'nmc.ranges' metadata in the model")
    hi = 2 ** bits - 1 if nonneg else 2 ** (bits - 1) - 1  # uint8 / int8 (core.activation_bits)
    lo = 0 if nonneg else -(2 ** (bits - 1))
    m = max(abs(r.lo), abs(r.hi))
    if r.integer and m <= hi:
        scale = 1.0
    else:
        scale = m / hi if m > 0 else 1.0
    return TQ(scale=scale, lo=lo, hi=hi, bits=8, kind="value")


def quantize(lg: LayerGraph, chip: ChipSpec, ranges: Mapping[str, Range]) -> Quantized:
    """Quantise every layer: its :class:`QLayer` and each routable tensor's :class:`TQ`."""
    g = lg.graph
    c = chip.core
    tq: dict[str, TQ] = {}
    qlayers: list[QLayer] = []
    spike_t = {l.out for l in lg.layers if l.model.spiking}
    for s in g.states:
        if lg.root(s.output) in spike_t:
            spike_t.add(s.input)
    for name, kind in g.inputs.items():
        if kind in ("static", "step"):
            r = ranges.get(name)
            if r is not None and r.integer and r.lo >= 0 and r.hi <= 1:
                tq[name] = TQ(1.0, 0, 1, 1, "spike")  # binary input: spikes (event-driven consumers)
            else:
                tq[name] = _act_tq(r, r is not None and r.lo >= 0, name, f"graph input '{name}'", c.activation_bits)
        elif name in spike_t:
            tq[name] = TQ(1.0, 0, 1, 1, "spike")
    nonneg = {t for t, q in tq.items() if q.lo >= 0}
    layers: list = []  #: the layers quantised (a structured layer unfolded when its kernels cannot be shared)
    for l in lg.layers:
        if l.model.spiking:
            tq[l.out] = TQ(1.0, 0, 1, 1, "spike")
            nonneg.add(l.out)
    for l in lg.layers:
        for t in l.inputs:
            if t not in tq:
                raise QuantizationError(f"{l.where()}: input tensor '{t}' has no representation on the chip (it is "
                                        "neither a graph input, a layer output nor a spike state); fix: feed the layer "
                                        "from a layer output or a LIF's spikes: membranes and counts stay inside their "
                                        "layer, and only spikes can be carried to the next step")
            if tq[t].kind == "word":
                raise QuantizationError(f"{l.where()}: input tensor '{t}' is a {tq[t].bits}-bit state word of a "
                                        "read-out layer (nmc::LI's membrane, nmc::FirstSpikeTime); it goes to the host, "
                                        "not to other layers: read it as a graph output")
        s_in = np.concatenate([np.full(sz, tq[t].scale) for t, sz in zip(l.inputs, l.in_sizes)])
        in_nonneg = all(t in nonneg for t in l.inputs)
        rep: dict = {"layer": l.name, "op": l.op}
        in_max = np.concatenate([np.full(sz, max(abs(tq[t].lo), abs(tq[t].hi))) for t, sz in zip(l.inputs, l.in_sizes)])
        if l.blocks is not None:
            kf = _kernel_form(l, s_in, in_max) if l.soma != "lut" else None
            if kf is not None:  # structured: one scale per output channel, integer kernels (mapper/structured.py)
                qlayers.append(_quantize_structured(l, kf, chip, ranges, tq, nonneg, in_nonneg, rep))
                layers.append(l)
                continue
            l = l.unstructured()  # (input scales that vary inside a channel, table somas: per synapse)
        layers.append(l)
        if l.dendrite == "max" or l.soma == "count":  # unit weights: a mask (max) or an identity (count)
            wq, w_bits = np.ones_like(l.rows, dtype=np.int64), _w_bits(np.ones(1, np.int64), chip)
            bias, lo, hi, lossless, k, cparam, nparam, state_init = _unit_soma(l, tq, nonneg, chip, rep)
        elif l.soma == "ann":
            E = l.vals * s_in[l.cols]
            nn = l.relu or (in_nonneg and l.op in ("avgpool", "add") and bool(np.all(l.vals >= 0)))
            out_q = _act_tq(ranges.get(l.out), nn, l.out, l.where(), c.activation_bits)
            floor4 = c.requant_mode == "floor4"
            if floor4:  # one weight scale per layer and an output scale of weight scale x 4^k (docs/numerics.md)
                s_layer, out_scale, k4 = floor4_scales(E, out_q.scale)
                s_row = np.full(l.n, s_layer)
                out_q = TQ(out_scale, out_q.lo, out_q.hi, out_q.bits, out_q.kind)
            else:
                s_row = _row_scales(l.rows, E, l.n, l.bias)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                wq = _to_int(E / s_row[l.rows], "weight", l.where())
            bias = _ann_bias(l, s_row, chip)
            tq[l.out] = out_q
            if nn:
                nonneg.add(l.out)
            if floor4:
                mult, shift = np.ones(l.n, np.int64), np.full(l.n, 2 * k4, np.int64)
            else:
                mult, shift = requant_params(s_row / out_q.scale, c.requant_mult_bits, l.where())
            err = np.abs(wq * s_row[l.rows] - E)
            lossless = bool(np.all(err <= _EPS * np.maximum(1, np.abs(E))) and np.all(s_row == 1.0)
                            and out_q.scale == 1.0 and np.all(_is_int(l.bias)))
            lo, hi, w_bits = out_q.lo, out_q.hi, _w_bits(wq, chip)
            k, cparam, state_init = 1.0, np.array([int(floor4)], np.int64), np.zeros((l.n, 0), np.int64)
            nparam = np.stack([mult, shift], axis=1).astype(np.int64)
            rep.update(requant_mode=c.requant_mode, **requant_report(s_row, out_q.scale, mult, shift, floor4))
            rep.update(lossless=lossless, weight_rel_err=float(err.max() / max(np.abs(E).max(), 1e-30)) if E.size else 0.0,
                       out_scale=out_q.scale, weight_scale_min=float(s_row.min()), weight_scale_max=float(s_row.max()))
        elif l.soma == "lut":
            wq, bias, lo, hi, w_bits, lossless, nparam, cparam, lut_rep = _quantize_lut(l, s_in, ranges, chip, tq)
            if lo >= 0:
                nonneg.add(l.out)
            k, state_init = 1.0, np.zeros((l.n, 0), np.int64)
            rep.update(lut_rep)
        elif l.model.quantize is not None:  # the LIF family: a membrane scale k for weights and parameters
            m, a = l.model, l.attrs
            gain = float(a[m.input_gain]) if m.input_gain else 1.0
            E = gain * l.vals * s_in[l.cols]
            absmax = float(np.abs(E).max()) if E.size else 0.0
            k, exact = _membrane_scale(l, absmax, bool(np.all(_is_int(E))), gain * l.bias, tq)
            wq = _to_int(k * E, "weight", l.where())
            err = np.abs(wq / k - E)
            bias, lo, hi, w_bits, lossless, cparam, nparam, state_init = _lif_rest(
                l, k, exact, gain * l.bias, _w_bits(wq, chip), chip, tq, rep,
                float(err.max() / max(absmax, 1e-30)) if E.size else 0.0)
        else:
            raise AssertionError(l.soma)
        if wq.size and (wq.min() < -W_MAX - 1 or wq.max() > W_MAX):
            raise AssertionError(f"{l.name}: weights out of int8")  # internal invariant: scales bound them
        # worst-case accumulator magnitude (split == unsplit needs it below 2^(A-1))
        bound = np.bincount(l.rows, weights=np.abs(wq) * in_max[l.cols], minlength=l.n)  # whole numbers: exact sums
        acc_bound = float((bound + np.abs(bias)).max()) if l.n else 0.0
        rep["acc_bound"] = acc_bound
        qlayers.append(QLayer(wq=wq, bias=bias, lo=lo, hi=hi, w_bits=w_bits, lossless=lossless, acc_bound=acc_bound,
                              report=rep, cparam=cparam, nparam=nparam, state_init=state_init, k=k))
    for s in g.states:
        if s.output in tq and s.input not in tq:
            tq[s.input] = tq[s.output]
    if any(a is not b for a, b in zip(layers, lg.layers)):
        lg = LayerGraph(graph=lg.graph, layers=layers, alias=lg.alias)
    return Quantized(lg=lg, layers=qlayers, tq=tq)
