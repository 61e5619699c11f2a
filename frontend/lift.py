"""Lift plain step exports: neurons spelt with standard ONNX ops -> ``nmc::LIF`` nodes.

A framework that exports one timestep without nmc ops spells each neuron as a chain of elementwise
ops (``Mul``/``Add``/``Sub``/``Greater``/``Where``/``Cast``/...) whose shape changes with the framework,
the reset mechanism and constant folding, so nmc does not match op templates.  For every state pair
(``nmc.state``, the ``<x>`` -> ``<x>.next`` naming rule, or pairs given by the caller) :func:`lift_step`:

1. **locates** the neuron: the elementwise nodes on the paths from the state input ``v`` to its next
   value ``v'``, plus the elementwise nodes computed from those alone (the spike); the region must read
   exactly one other tensor (the synaptic input ``x``) and hand exactly one tensor besides ``v'`` to the
   rest of the graph (the spikes ``s``);
2. **probes** that region alone in onnxruntime on chosen inputs: ``v' (x=0)`` at two membranes gives
   ``beta`` and ``v_leak``, ``v' (v=0)`` gives ``gain``, a bisection on ``x`` gives the threshold (and
   ``>`` vs ``>=``: the boundary value with the shortest decimal form, on the side that fires), a firing
   input gives the reset (``v' = u - threshold``: subtract, ``v'`` the same for two inputs: zero to that
   value, ``v' = u``: none, or a reset at the next step, which a second step shows: ``reset_delay``);
3. **verifies** the fitted ``nmc::LIF`` against the region on thousands of random ``(x, v)`` (both run in
   onnxruntime): the spikes must be equal and ``v'`` within float32 rounding;

and replaces only the regions that verify.  The :class:`LiftReport` says for every state pair what was
lifted (the attributes, the nodes replaced) or why not (what locating, probing or verifying found).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from nmc.errors import ModelError, NmcError

from . import nmc_ops
from .onnx_import import _load_model, read_convention

__all__ = ["lift_step", "LiftReport", "LiftResult", "ELEMENTWISE_OPS"]

#: ops a neuron region may consist of (elementwise, no weights)
ELEMENTWISE_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Neg", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Equal", "Where",
    "Cast", "CastLike", "Not", "And", "Or", "Xor", "Identity", "Sign", "Relu", "Clip", "Min", "Max", "Abs",
    "Floor", "Ceil", "Round", "Sigmoid", "Constant", "Heaviside",
})
_VERIFY_SAMPLES = 8192
LIFT_NOTE = "the lifter fits nmc::LIF only, not nmc::LIFT"


@dataclass
class LiftResult:
    """What happened to one state pair."""

    state: tuple[str, str]
    lifted: bool
    reason: str = ""
    node: str = ""  #: name of the nmc::LIF node that replaced the region
    attrs: dict[str, Any] = field(default_factory=dict)
    replaced: list[str] = field(default_factory=list)  #: names (op types) of the nodes replaced
    checked: int = 0  #: random (x, v) pairs (or neuron-steps of runs) the fitted op reproduced
    note: str = ""


@dataclass
class LiftReport:
    results: list[LiftResult]

    @property
    def lifted(self) -> list[LiftResult]:
        return [r for r in self.results if r.lifted]

    @property
    def not_lifted(self) -> list[LiftResult]:
        return [r for r in self.results if not r.lifted]

    def format(self) -> str:
        lines = [f"lifted {len(self.lifted)} of {len(self.results)} state pair(s) to nmc::LIF"]
        for r in self.results:
            pair = f"{r.state[0]} -> {r.state[1]}"
            if r.lifted:
                attrs = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.attrs.items())
                lines.append(f"  lifted {pair}: {len(r.replaced)} nodes ({', '.join(r.replaced)}) -> nmc::LIF "
                             f"'{r.node}' ({attrs}); verified on {r.checked} random inputs"
                             + (f" ({r.note})" if r.note else ""))
            else:
                lines.append(f"  not lifted {pair}: {r.reason}")
        return "\n".join(lines)


class _NoLift(Exception):
    """This state pair is not lifted, with the reason."""


# ----------------------------------------------------------------- locate
def _consts(g: onnx.GraphProto) -> set[str]:
    out = {t.name for t in g.initializer}
    changed = True
    while changed:  # Constant nodes and nodes of constants only
        changed = False
        for n in g.node:
            if n.output and n.output[0] not in out and all(i in out for i in n.input if i) and \
                    (n.op_type == "Constant" or (n.input and n.op_type in ELEMENTWISE_OPS)):
                out.update(o for o in n.output if o)
                changed = True
    return out


@dataclass
class _Region:
    nodes: list[int]  #: indices into graph.node, in graph order
    x: str
    s: str


def _locate(g: onnx.GraphProto, v_in: str, v_out: str, consts: set[str]) -> _Region:
    nodes = list(g.node)
    ew = [n.op_type in ELEMENTWISE_OPS and n.domain in ("", "ai.onnx") for n in nodes]
    # forward from v through elementwise nodes
    fwd: set[int] = set()
    reach = {v_in}
    for i, n in enumerate(nodes):
        if ew[i] and any(t in reach for t in n.input):
            fwd.add(i)
            reach.update(n.output)
    if v_out not in reach:
        raise _NoLift(f"'{v_out}' is not computed from '{v_in}' by elementwise ops alone (a neuron's update has no "
                      "weights; a state updated through a Gemm/Conv is a recurrent synapse, not a neuron)")
    # backward from v' through elementwise nodes
    back: set[int] = set()
    need = {v_out}
    for i in range(len(nodes) - 1, -1, -1):
        if ew[i] and any(o in need for o in nodes[i].output):
            back.add(i)
            need.update(t for t in nodes[i].input if t)
    core = fwd & back
    region = set(core)
    have = {v_in} | {o for i in core for o in nodes[i].output} | consts
    outside = {t for i in core for t in nodes[i].input if t and t not in have}
    if len(outside) != 1:
        raise _NoLift(f"the update of '{v_in}' reads {len(outside)} tensors besides the state and constants "
                      f"({sorted(outside)}); a neuron reads one synaptic input")
    (x,) = outside
    # scalings of the input by constants (Mul, Div, Neg) belong to the neuron (its gain)
    graph_outs = {o.name for o in g.output}
    users = {}
    for j, n in enumerate(nodes):
        for t in n.input:
            users.setdefault(t, set()).add(j)
    while True:
        j = next((j for j in back - region if x in nodes[j].output), None)
        if j is None or nodes[j].op_type not in ("Mul", "Div", "Neg") or x in graph_outs or \
                users.get(x, set()) - region:
            break
        var = [t for t in nodes[j].input if t and t not in consts]
        if len(var) != 1 or (nodes[j].op_type == "Div" and nodes[j].input[0] != var[0]):
            break
        region.add(j)
        have.update(nodes[j].output)
        x = var[0]
    have.add(x)
    changed = True
    while changed:  # the spike side: elementwise nodes computed from the region alone
        changed = False
        for i in sorted(fwd - region):
            if all(t in have for t in nodes[i].input if t):
                region.add(i)
                have.update(nodes[i].output)
                changed = True
    exported = set()
    for i in region:
        for o in nodes[i].output:
            if not o or o == v_out:
                continue
            users = [j for j, n in enumerate(nodes) if o in n.input and j not in region]
            if users or o in graph_outs:
                exported.add(o)
    if len(exported) != 1:
        raise _NoLift(f"the neuron region hands {len(exported)} tensors to the rest of the graph "
                      f"({sorted(exported)}); a neuron hands on its spikes only")
    (s,) = exported
    if s in consts or x in consts:
        raise _NoLift("the region's input or spikes are constants")
    return _Region(sorted(region), x, s)


# ----------------------------------------------------------------- probe
class _Probe:
    """The region as its own model in onnxruntime: (x, v) -> (s, v')."""

    def __init__(self, model: onnx.ModelProto, region: _Region, v_in: str, v_out: str, shape: tuple[int, ...],
                 const_names: set[str]):
        import onnxruntime as ort
        g = model.graph
        nodes = [g.node[i] for i in region.nodes]
        used = {t for n in nodes for t in n.input}
        consts = []  # the nodes computing the constants the region reads (Constant, a Clip of one, ...)
        for i in range(len(g.node) - 1, -1, -1):
            n = g.node[i]
            if i not in region.nodes and any(o in used for o in n.output) and \
                    all(o in const_names for o in n.output if o):
                consts.insert(0, n)
                used.update(n.input)
        inits = [t for t in g.initializer if t.name in used]
        dims = ["B", *shape]
        sub = helper.make_graph(consts + nodes, "probe",
                                [helper.make_tensor_value_info(region.x, TensorProto.FLOAT, dims),
                                 helper.make_tensor_value_info(v_in, TensorProto.FLOAT, dims)],
                                [helper.make_tensor_value_info(region.s, TensorProto.FLOAT, None),
                                 helper.make_tensor_value_info(v_out, TensorProto.FLOAT, None)], inits)
        m = helper.make_model(sub, opset_imports=list(model.opset_import))
        m.ir_version = model.ir_version
        self.sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        self.x, self.v, self.shape = region.x, v_in, shape

    def __call__(self, x, v):
        x = np.broadcast_to(np.asarray(x, np.float32), np.broadcast_shapes(np.shape(x), np.shape(v))).copy()
        v = np.broadcast_to(np.asarray(v, np.float32), x.shape).copy()
        s, vn = self.sess.run(None, {self.x: x, self.v: v})
        return np.asarray(s, np.float64), np.asarray(vn, np.float64)


def _uniform(a: np.ndarray, what: str, tol: float = 1e-6) -> float:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise _NoLift(f"probing {what} gave non-finite values")
    if np.max(a) - np.min(a) > tol * max(1.0, float(np.max(np.abs(a)))):
        raise _NoLift(f"{what} differs between neurons ({np.min(a):.6g} .. {np.max(a):.6g}); nmc::LIF takes one value "
                      f"per layer ({LIFT_NOTE})")
    return float(np.mean(a))


def _nice(lo: float, hi: float) -> float:
    """The number in [lo, hi] with the shortest decimal form (a threshold as the user wrote it)."""
    for d in range(1, 10):
        for c in (float(f"{(lo + hi) / 2:.{d}g}"), float(f"{lo:.{d}g}"), float(f"{hi:.{d}g}")):
            if lo <= c <= hi:
                return c
    return float(np.float32(hi))


def _clean(v: float, tol: float = 1e-6) -> float:
    """A probed value snapped to a short decimal when it is within float32 rounding of one."""
    for d in range(1, 8):
        c = float(f"{v:.{d}g}")
        if abs(c - v) <= tol * max(1.0, abs(v)):
            return c
    return float(v)


def _fit(p: _Probe) -> dict[str, Any]:
    shape = (1, *p.shape)
    eps = 1e-3
    # x = 0: v' = v_leak + beta (v - v_leak) (tiny membranes stay below any sensible threshold)
    s0, y0 = p(0.0, np.zeros(shape))
    s1, y1 = p(0.0, np.full(shape, eps))
    if s0.any() or s1.any():
        raise _NoLift("the neuron fires with no input and a membrane near 0 (threshold <= 0?)")
    beta = _clean(_uniform((y1 - y0) / eps, "beta (membrane decay)"))
    c = _uniform(y0, "v_leak (resting potential)")  # (1 - beta) v_leak
    v_leak = 0.0 if abs(c) < 1e-9 else (_clean(c / (1 - beta)) if beta != 1 else None)
    if v_leak is None:
        raise _NoLift(f"without leak (beta = 1) the membrane still drifts by {c:.6g} per step: nmc::LIF has no "
                      "constant input current")
    _, y2 = p(np.full(shape, eps), np.zeros(shape))
    gain = _clean(_uniform((y2 - y0) / eps, "gain (input scale)"))
    if gain == 0:
        raise _NoLift("the input does not reach the membrane (gain 0)")
    sign = 1.0 if gain > 0 else -1.0
    # threshold: bisection on x (v = 0) between no spike and a spike
    lo, hi = 0.0, sign * 1.0
    for _ in range(60):
        if p(np.full(shape, hi), np.zeros(shape))[0].all():
            break
        lo, hi = hi, hi * 2
    else:
        raise _NoLift("no input up to 2^60 makes it fire")
    if not p(np.full(shape, hi), np.zeros(shape))[0].all():
        raise _NoLift(f"the neurons fire at different inputs ({LIFT_NOTE})")
    for _ in range(200):
        mid = np.float32((lo + hi) / 2)
        if mid in (np.float32(lo), np.float32(hi)):
            break
        if p(np.full(shape, mid), np.zeros(shape))[0].any():
            hi = float(mid)
        else:
            lo = float(mid)
    s_lo, u_lo = p(np.full(shape, lo), np.zeros(shape))  # no spike: v' is u
    s_hi, _ = p(np.full(shape, hi), np.zeros(shape))
    if s_lo.any() or not s_hi.all():
        raise _NoLift(f"the neurons fire at different inputs ({LIFT_NOTE})")
    u_lo_ = _uniform(u_lo, "the membrane below threshold")
    u_hi_ = float(np.float32(v_leak * (1 - beta)) + np.float32(gain) * np.float32(hi))
    lo_u, hi_u = min(u_lo_, u_hi_), max(u_lo_, u_hi_)
    thr = _nice(lo_u, hi_u)
    if thr <= 0:
        raise _NoLift(f"threshold {thr:.6g} <= 0; nmc::LIF needs a positive threshold")
    spike_ge = int(thr == hi_u and thr != lo_u)
    # reset: one firing input, then one step with x = 0 from the membrane it left
    xf = (1.5 * thr - (1 - beta) * v_leak) / gain
    sf, yf = p(np.full(shape, xf), np.zeros(shape))
    if not sf.all():
        raise _NoLift("an input of 1.5 thresholds does not fire: the fitted threshold is wrong")
    u = (1 - beta) * v_leak + gain * xf
    xf2 = (1.8 * thr - (1 - beta) * v_leak) / gain
    _, yf2 = p(np.full(shape, xf2), np.zeros(shape))
    tol = 1e-4 * max(1.0, thr)
    a = dict(beta=beta, threshold=thr, v_leak=v_leak, gain=gain, spike_ge=spike_ge, reset_delay=0)
    yv = _uniform(yf, "the membrane after a spike")
    if abs(yv - (u - thr)) <= tol:
        return dict(a, reset_mode="subtract")
    if abs(yv - _uniform(yf2, "the membrane after a spike")) <= tol:
        return dict(a, reset_mode="zero", v_reset=_clean(yv))
    if abs(yv - u) > tol:
        raise _NoLift(f"after a spike the membrane is {yv:.6g} (was {u:.6g} before, threshold {thr:.6g}): neither a "
                      "subtract, zero nor no reset")
    # v' = u: no reset, or a reset applied at the next step (snnTorch's reset_delay)
    _, yn = p(0.0, np.full(shape, yv))
    un = v_leak + beta * (yv - v_leak)
    yn_ = _uniform(yn, "the membrane a step after a spike")
    if abs(yn_ - un) <= tol:
        return dict(a, reset_mode="none")
    if abs(yn_ - (un - thr)) <= tol:
        return dict(a, reset_mode="subtract", reset_delay=1)
    return dict(a, reset_mode="zero", v_reset=_clean(yn_), reset_delay=1)


# ----------------------------------------------------------------- verify
def _lif_session(attrs: dict[str, Any], opset: int):
    import onnxruntime as ort
    node = helper.make_node("LIF", ["x", "v"], ["s", "v_next"], domain=nmc_ops.NMC_DOMAIN, **attrs)
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "v", "s", "v_next")]
    g = helper.make_graph([node], "lif", vi[:2], vi[2:])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset),
                                            helper.make_opsetid(nmc_ops.NMC_DOMAIN, nmc_ops.NMC_DOMAIN_VERSION)],
                          functions=nmc_ops.function_protos(["LIF"], opset))
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def _verify(p: _Probe, attrs: dict[str, Any], opset: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    n = max(1, int(np.prod(p.shape)))
    B = max(1, _VERIFY_SAMPLES // n)
    thr, gain = attrs["threshold"], attrs["gain"]
    v = rng.uniform(-thr, 2.5 * thr, size=(B, *p.shape)).astype(np.float32)
    x = (rng.uniform(-thr, 2 * thr, size=(B, *p.shape)) / gain).astype(np.float32)
    s_ref, v_ref = p(x, v)
    sess = _lif_session(attrs, opset)
    s, vn = (np.asarray(t, np.float64) for t in sess.run(None, {"x": x, "v": v}))
    u = attrs["v_leak"] + attrs["beta"] * (v.astype(np.float64) - attrs["v_leak"]) + gain * x.astype(np.float64)
    edge = np.abs(u - thr) <= 1e-5 * max(1.0, thr)  # float32 rounding of another op order may flip these
    bad = (s != s_ref) & ~edge
    if bad.any():
        raise _NoLift(f"the fitted nmc::LIF ({_attr_text(attrs)}) differs from the region in {int(bad.sum())} of "
                      f"{bad.size} spikes on random inputs (e.g. x={float(x[bad][0]):.6g}, v={float(v[bad][0]):.6g}: "
                      f"region {int(s_ref[bad][0])}, LIF {int(s[bad][0])}); the neuron has semantics nmc::LIF does not "
                      "express")
    vbad = ~np.isclose(vn, v_ref, rtol=1e-4, atol=1e-4 * max(1.0, thr)) & ~edge
    if vbad.any():
        raise _NoLift(f"the fitted nmc::LIF ({_attr_text(attrs)}) differs from the region in {int(vbad.sum())} of "
                      f"{vbad.size} next membranes on random inputs (e.g. x={float(x[vbad][0]):.6g}, "
                      f"v={float(v[vbad][0]):.6g}: region {float(v_ref[vbad][0]):.6g}, LIF {float(vn[vbad][0]):.6g})")
    return int(s.size)


def _spike_equivalent(a: dict[str, Any]) -> dict[str, Any] | None:
    """Another nmc::LIF that spikes like the fitted one from any run's start but stores another membrane:
    a delayed zero reset that keeps the step's input (snnTorch's: ``u = (0 if fire(v) else beta*v) + x``)
    spikes like the immediate reset to 0."""
    if a["reset_mode"] == "zero" and a["reset_delay"] == 1 and a["v_reset"] == 0 and a["v_leak"] == 0:
        return dict(a, reset_delay=0)
    return None


def _verify_runs(p: _Probe, attrs: dict[str, Any], opset: int, seed: int, init, steps: int = 64) -> int:
    """Spikes of the region and of the fitted op over runs from the initial state on random inputs."""
    rng = np.random.default_rng(seed)
    n = max(1, int(np.prod(p.shape)))
    B = max(1, _VERIFY_SAMPLES // (n * 8))
    thr, gain = attrs["threshold"], attrs["gain"]
    sess = _lif_session(attrs, opset)
    v_ref = np.broadcast_to(np.asarray(init, np.float32), (B, *p.shape)).copy()
    v = v_ref.copy()
    for t in range(steps):
        x = (rng.uniform(-0.5 * thr, 1.5 * thr, size=(B, *p.shape)) / gain).astype(np.float32)
        s_ref, v_ref = p(x, v_ref)
        s, v = sess.run(None, {"x": x, "v": v})
        if not np.array_equal(np.asarray(s, np.float64), s_ref):
            raise _NoLift(f"runs differ in spikes at step {t}")
        v_ref = v_ref.astype(np.float32)
    return B * n * steps


def _attr_text(a: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in a.items())


# ----------------------------------------------------------------- main
def _input_shape(g: onnx.GraphProto, name: str) -> tuple[int, ...]:
    for vi in g.input:
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            shape = [d.dim_value for d in dims[1:]]
            if any(d < 1 for d in shape):
                raise _NoLift(f"state input '{name}' has no fixed per-sample shape")
            return tuple(shape)
    raise _NoLift(f"'{name}' is not a graph input")


def lift_step(model_or_path, states: list[tuple[str, str]] | None = None, *, seed: int = 0
              ) -> tuple[onnx.ModelProto, LiftReport]:
    """Replace the standard-op neurons of a plain step export by ``nmc::LIF`` nodes where they verify.

    ``states`` lists the (state input, next-value output) pairs to try; by default those of the model's
    ``nmc.state`` metadata or the ``<x>`` -> ``<x>.next`` naming rule.  Returns the new model (the
    input model is not changed; ai.onnx opset raised to 19 when lower, as nmc ops need) and the report.
    """
    try:
        import onnxruntime  # noqa: F401 - the probes run the regions in onnxruntime
    except ImportError as e:
        raise NmcError("lifting plain step exports probes them with onnxruntime: pip install onnxruntime") from e
    model = original = _load_model(model_or_path)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ModelError("the model imports no ai.onnx opset")
    if opset < nmc_ops.MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, nmc_ops.MIN_OPSET)
        except Exception as e:
            raise ModelError(f"the model uses ai.onnx opset {opset}; nmc ops need {nmc_ops.MIN_OPSET} and onnx's "
                             f"version converter failed ({e}): re-export with opset_version={nmc_ops.MIN_OPSET}") from e
        opset = nmc_ops.MIN_OPSET
    meta = {p.key: p.value for p in model.metadata_props}
    if states is None:
        states = [(i, o) for i, o, _ in read_convention(model).states]
        if not states:
            raise ModelError("the model declares no state pairs (metadata nmc.state, or outputs named '<input>.next'); "
                             "pass them in Python, lift_step(model, states=[('mem', 'mem_out'), ...]), or, for nmc "
                             "compile --lift, name the outputs '<state input>.next' or add the nmc.state metadata "
                             "(docs/onnx_convention.md)")
    g = model.graph
    consts = _consts(g)
    conv = read_convention(model)
    inits = {i: init for i, _, init in conv.states}
    user_outputs = set(json.loads(meta["nmc.outputs"])) if "nmc.outputs" in meta else {o.name for o in g.output}
    results: list[LiftResult] = []
    replace: list[tuple[_Region, str, str, dict]] = []
    taken: set[int] = set()
    for k, (v_in, v_out) in enumerate(states):
        res = LiftResult((v_in, v_out), False)
        results.append(res)
        try:
            shape = _input_shape(g, v_in)
            region = _locate(g, v_in, v_out, consts)
            if taken & set(region.nodes):
                raise _NoLift("its region overlaps another state's: one neuron op per state pair")
            probe = _Probe(model, region, v_in, v_out, shape, consts)
            attrs = _fit(probe)
            try:
                res.checked = _verify(probe, attrs, opset, seed + k)
            except _NoLift as e:
                alt = _spike_equivalent(attrs)
                if alt is None or v_out in user_outputs:
                    raise
                try:
                    res.checked = _verify_runs(probe, alt, opset, seed + k, inits.get(v_in, 0.0))
                except _NoLift:
                    raise e from None
                attrs = alt
                res.note = (f"spikes verified over runs from the initial state; '{v_out}' now holds the membrane "
                            "after the reset (the region kept it before)")
        except _NoLift as e:
            res.reason = str(e)
            continue
        except Exception as e:  # onnxruntime refusing the region, shapes that do not broadcast, ...
            res.reason = f"probing failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            continue
        taken.update(region.nodes)
        res.lifted, res.attrs = True, attrs
        res.node = f"{v_in}.lif"
        res.replaced = [f"{g.node[i].name or '?'} ({g.node[i].op_type})" for i in region.nodes]
        replace.append((region, v_in, v_out, attrs))
    if not replace:
        return original, LiftReport(results)
    return _replace(model, replace, meta, states), LiftReport(results)


def _replace(model: onnx.ModelProto, replace, meta: dict[str, str], states) -> onnx.ModelProto:
    g = model.graph
    drop = {i for r, *_ in replace for i in r.nodes}
    first = {min(r.nodes): (r, v_in, v_out, a) for r, v_in, v_out, a in replace}
    new_nodes = []
    for i, n in enumerate(g.node):
        if i in first:
            r, v_in, v_out, a = first[i]
            attrs = {k: (float(v) if nmc_ops.LIF.attrs[k].type == "float" else v) for k, v in a.items()}
            new_nodes.append(helper.make_node("LIF", [r.x, v_in], [r.s, v_out], name=f"{v_in}.lif",
                                              domain=nmc_ops.NMC_DOMAIN, **attrs))
        if i not in drop:
            new_nodes.append(n)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(_prune(_toposort(new_nodes, {t.name for t in g.initializer} | {i.name for i in g.input}),
                                 {o.name for o in g.output}))
    used = {t for n in out.graph.node for t in n.input}
    keep = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    if not any(o.domain == nmc_ops.NMC_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(nmc_ops.NMC_DOMAIN, nmc_ops.NMC_DOMAIN_VERSION))
    if not any(f.name == "LIF" and f.domain == nmc_ops.NMC_DOMAIN for f in out.functions):
        out.functions.extend(nmc_ops.function_protos(["LIF"], nmc_ops.MIN_OPSET))
    if "nmc.state" not in meta:
        meta = dict(meta, **{"nmc.state": json.dumps([[i, o, 0.0] for i, o in states])})
    meta["nmc.lifted"] = json.dumps([v_in for _, v_in, _, _ in replace])
    helper.set_model_props(out, meta)
    onnx.checker.check_model(out)
    return out


def _prune(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Drop nodes nothing reads any more (e.g. the constants only the replaced region used)."""
    nodes = list(nodes)
    while True:
        read = {t for n in nodes for t in n.input} | outputs
        keep = [n for n in nodes if any(o in read for o in n.output if o)]
        if len(keep) == len(nodes):
            return nodes
        nodes = keep


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    have = set(available)
    out, rest = [], list(nodes)
    while rest:
        for j, n in enumerate(rest):
            if all((not t) or t in have for t in n.input):
                out.append(n)
                have.update(n.output)
                rest.pop(j)
                break
        else:  # inputs produced nowhere: keep the original order (the checker names the problem)
            return out + rest
    return out

