"""NIR graphs (the Neuromorphic Intermediate Representation, ``pip install nir``) -> nmc.

NIR describes a network in continuous time: neurons are differential equations with time constants,
there is no timestep, only a hard reset, no refractory period. :func:`nir_to_onnx` discretises such a
graph with a user-given ``dt`` and ``discretisation`` into an nmc-step-convention ONNX model (written
with :class:`~nmc.frontend.ModelBuilder`, so onnxruntime runs it as the float reference);
:func:`load_nir` reads that model into an IR :class:`~nmc.ir.Graph` (what ``nmc.compile`` takes).

Per step, with ``a = dt / tau`` (``euler``: forward Euler; ``exp``: exponential, exact for an input
held constant over the step):

=========== ============================================================================================
NIR node    nmc
=========== ============================================================================================
Input       a step input (a new value every step)
Output      a model output
Affine      Gemm (``W[out, in]``, bias); Linear: without bias
Conv2d      Conv (``padding`` int, pair, ``"same"`` or ``"valid"``)
Flatten     Flatten / Reshape
Scale       a diagonal Gemm (1-D) or a depthwise 1x1 Conv (a scale per channel)
SumPool2d   a depthwise Conv of ones; AvgPool2d: of ``1/(kh*kw)``
LIF         ``nmc::LIF``: beta = ``1 - a`` (euler) or ``exp(-a)`` (exp); gain = ``a*r`` (euler) or
            ``(1 - beta)*r`` (exp); v_leak, threshold = v_threshold, reset to v_reset
IF          ``nmc::LIF`` with beta = 1, gain = ``dt*r``
CubaLIF     ``nmc::CubaLIF``: alpha, beta from tau_syn, tau_mem as for LIF; the input gain
            ``(dt/tau_mem)*r*(dt/tau_syn)*w_in`` (euler) or ``(1-beta)*r*(1-alpha)*w_in`` (exp) is folded into
            the synapse before it; the current is updated first (the order of nmc::CubaLIF and of
            snnTorch's ``Synaptic``); v_leak must be 0
Threshold   ``nmc::LIF`` with beta = 0 (memoryless: ``s = x > threshold``)
LI, I       ``nmc::LI`` (where this nmc has it): beta and gain as for LIF (I: beta = 1, gain = ``dt*r``); the
            output is the membrane
=========== ============================================================================================

NIR fires on ``v > v_threshold`` and resets to ``v_reset``; frameworks that reset by subtraction
(snnTorch's default) export the same NIR node, so the reset mode is an option (``reset_mode``) and a
:class:`NirResetWarning` says when it was assumed.  Several edges into one node are summed.  A cycle
(recurrence) is cut after a spiking node: those spikes reach the rest of the cycle one step later (a
state pair, as in snnTorch's ``RLeaky``).

Per-neuron parameters: a per-neuron input gain (``r``, ``w_in``, ``dt/tau``) is folded into the weights of
the synapse before the neuron; a LIF/IF layer whose decay, threshold, v_leak or v_reset differs between
neurons becomes ``nmc::LIFT`` (without LIFT, per-neuron thresholds are normalised to 1, dividing each
neuron's gain, v_leak and v_reset by its threshold, which leaves its spikes unchanged); what nmc cannot
take per neuron (CubaLIF, LI) is reported.  Every node nmc cannot map is listed at once in an
:class:`~nmc.errors.UnsupportedOpError`.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from nmc.errors import InputError, ModelError, NmcError, UnsupportedOpError
from nmc.ir import Graph

from . import nmc_ops
from .builder import ModelBuilder
from .onnx_import import load_onnx

__all__ = ["load_nir", "nir_to_onnx", "is_nir", "NirResetWarning", "DISCRETISATIONS", "SUPPORTED_NIR_NODES"]

DISCRETISATIONS = ("euler", "exp")
#: NIR node types the importer maps (others are listed as unsupported)
SUPPORTED_NIR_NODES = ("Input", "Output", "Affine", "Linear", "Conv2d", "Flatten", "Scale", "SumPool2d",
                       "AvgPool2d", "LIF", "IF", "CubaLIF", "Threshold", "LI", "I")
#: why the NIR node types nmc knows but cannot map are refused
_REFUSED = {
    "CubaLI": "a non-spiking current-based integrator has no nmc op",
    "Delay": "nmc has no per-synapse delays; a delay of one step is a state pair (recurrence)",
    "Conv1d": "nmc compiles 2-D convolutions; export the layer as Conv2d with a height of 1",
}
_SPIKING = ("LIF", "IF", "CubaLIF", "Threshold")
_INTEGRATORS = ("LI", "I")
_RESETTING = ("LIF", "IF", "CubaLIF")
#: what to say about per-neuron parameters nmc cannot take
LIFT_NOTE = "nmc::LIFT takes per-neuron values of LIF's parameters only"
_RTOL = 1e-9  # values that differ by less (relative) count as one value per layer


class NirResetWarning(UserWarning):
    """NIR cannot say whether a neuron resets to v_reset or by subtracting the threshold; nmc assumed one."""


def is_nir(model: Any) -> bool:
    """Whether ``model`` is a NIR graph: a ``nir.NIRNode`` or a path ending in ``.nir``."""
    if isinstance(model, (str, Path)):
        return str(model).lower().endswith(".nir")
    return type(model).__module__.split(".")[0] == "nir"


def _nir():
    """The nir package (an optional extra, imported when a NIR graph is read: it pulls in h5py)."""
    try:
        import nir
    except ImportError:
        raise NmcError("reading NIR graphs needs the nir package: pip install nir (or pip install -e '.[nir]' in "
                       "the nmc checkout)") from None
    return nir


def _read(path_or_graph) -> Any:
    nir = _nir()
    if isinstance(path_or_graph, nir.NIRGraph):
        return path_or_graph
    if isinstance(path_or_graph, nir.NIRNode):
        raise ModelError(f"a single NIR node ({type(path_or_graph).__name__}) is not a graph; wrap it: "
                         "nir.NIRGraph.from_list(nir.Input(...), node, nir.Output(...))")
    path = Path(path_or_graph)
    if not path.is_file():
        raise ModelError(f"NIR file '{path}' does not exist or is not a file; give the path of a .nir file "
                         "(written with nir.write)")
    try:
        return nir.read(str(path))
    except Exception as e:  # h5py / nir errors of all kinds on a damaged file
        raise ModelError(f"'{path}' is not a readable NIR graph ({type(e).__name__}: {e}); write it with nir.write "
                         "and check the nir package versions match") from e


# ----------------------------------------------------------------- graph structure
def _flatten_graph(g, passthrough: set[str] | None = None) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Nodes and edges of ``g`` with nested NIRGraphs inlined (their nodes named ``<sub>.<node>``; their
    Input and Output nodes are added to ``passthrough``)."""
    nir = _nir()
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    passthrough = set() if passthrough is None else passthrough
    for name, node in g.nodes.items():
        if isinstance(node, nir.NIRGraph):
            inner: set[str] = set()
            sub_nodes, sub_edges = _flatten_graph(node, inner)
            for k, v in sub_nodes.items():
                nodes[f"{name}.{k}"] = v
                if k in inner or isinstance(v, (nir.Input, nir.Output)):
                    passthrough.add(f"{name}.{k}")
            edges += [(f"{name}.{a}", f"{name}.{b}") for a, b in sub_edges]
        else:
            nodes[name] = node
    subs = {name: node for name, node in g.nodes.items() if isinstance(node, nir.NIRGraph)}

    def port(ref: str, io: str) -> list[str]:
        """The inlined node(s) an edge end refers to: ``sub``, ``sub.<input/output name>`` or a plain node."""
        head = ref.split(".", 1)[0]
        if ref in nodes or head not in subs:
            return [ref]
        sub = subs[head]
        ends = sub.inputs if io == "in" else sub.outputs
        rest = ref[len(head) + 1:]
        names = [rest] if rest in ends else list(ends)
        return [f"{head}.{n}" for n in names]

    for a, b in g.edges:
        for x in port(a, "out"):
            for y in port(b, "in"):
                edges.append((x, y))
    return nodes, edges


def _shape(node, key: str) -> tuple[int, ...] | None:
    t = getattr(node, key, None) or {}
    v = next(iter(t.values()), None) if isinstance(t, dict) else t
    if v is None:
        return None
    return tuple(int(d) for d in np.asarray(v).reshape(-1))


@dataclass
class _Neuron:
    """A NIR neuron node discretised: nmc op, attributes and the per-neuron input gain still to apply."""

    op: str
    attrs: dict[str, Any]
    gain: np.ndarray  #: per-neuron input gain (folded into the synapse before the neuron)
    notes: list[str] = field(default_factory=list)


def _arr(node, name) -> np.ndarray:
    v = getattr(node, name)
    return np.asarray(1.0 if v is None else v, dtype=np.float64)


def _uniform(a: np.ndarray) -> bool:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    return a.size == 0 or bool(np.all(np.abs(a - a[0]) <= _RTOL * max(1.0, float(np.abs(a[0])))))


def _one(a: np.ndarray) -> float:
    return float(np.asarray(a, dtype=np.float64).reshape(-1)[0])


def _decay(tau: np.ndarray, dt: float, disc: str, what: str) -> np.ndarray:
    """The per-step decay of a time constant; a forward-Euler step longer than tau is refused."""
    if np.any(tau <= 0):
        raise _Refuse(f"{what} has a time constant <= 0 ({float(np.min(tau)):g}); NIR time constants are > 0")
    a = dt / tau
    if disc == "exp":
        return np.exp(-a)
    if np.any(a > 1):
        raise _Refuse(f"dt = {dt:g} is longer than {what} ({float(np.min(tau)):g}): forward Euler would give a "
                      "negative decay; use a smaller dt or discretisation='exp'")
    return 1.0 - a


class _Refuse(Exception):
    """A node nmc cannot map, with the reason."""


def _neuron(kind: str, node, dt: float | None, disc: str, reset_mode: str) -> _Neuron:
    need_dt = kind in ("LIF", "IF", "CubaLIF", "LI", "I")
    if need_dt and dt is None:
        raise _Refuse("NIR is continuous-time: give the timestep dt (seconds; snnTorch's NIR export assumes 1e-4)")
    if kind == "Threshold":
        thr = _arr(node, "threshold")
        return _lif(_Neuron("LIF", {"beta": 0.0, "reset_mode": "none"}, np.ones_like(thr)), thr, {})
    if kind == "I":  # dv/dt = r I
        return _Neuron("LI", {"beta": 1.0, "v_leak": 0.0}, dt * _arr(node, "r"))
    if kind == "LI":
        tau, r, vl = _arr(node, "tau"), _arr(node, "r"), _arr(node, "v_leak")
        beta = _decay(tau, dt, disc, "tau")
        gain = (dt / tau) * r if disc == "euler" else (1.0 - beta) * r
        n = _Neuron("LI", {}, np.broadcast_to(gain, np.broadcast_shapes(gain.shape, vl.shape)).astype(np.float64))
        for k, v in (("beta", beta), ("v_leak", vl)):
            if not _uniform(v):
                raise _Refuse(f"{k} differs between neurons ({float(np.min(v)):g} .. {float(np.max(v)):g}); nmc::LI "
                              "takes one value per layer")
            n.attrs[k] = _one(v)
        return n
    if kind == "IF":
        r = _arr(node, "r")
        thr, vr = _arr(node, "v_threshold"), _arr(node, "v_reset")
        return _lif(_Neuron("LIF", {"beta": 1.0, "reset_mode": reset_mode}, dt * r), thr, {"v_reset": vr})
    if kind == "LIF":
        tau, r, vl = _arr(node, "tau"), _arr(node, "r"), _arr(node, "v_leak")
        thr, vr = _arr(node, "v_threshold"), _arr(node, "v_reset")
        beta = _decay(tau, dt, disc, "tau")
        gain = (dt / tau) * r if disc == "euler" else (1.0 - beta) * r
        return _lif(_Neuron("LIF", {"beta": beta, "reset_mode": reset_mode}, gain), thr,
                     {"v_reset": vr, "v_leak": vl})
    if kind == "CubaLIF":
        ts, tm, r = _arr(node, "tau_syn"), _arr(node, "tau_mem"), _arr(node, "r")
        vl, w_in = _arr(node, "v_leak"), _arr(node, "w_in")
        thr, vr = _arr(node, "v_threshold"), _arr(node, "v_reset")
        if np.any(vl != 0):
            raise _Refuse(f"v_leak = {float(vl.reshape(-1)[np.argmax(vl.reshape(-1) != 0)]):g}; nmc::CubaLIF decays "
                          "the membrane to 0 (no v_leak): shift v_threshold and v_reset by -v_leak and set v_leak = 0")
        alpha = _decay(ts, dt, disc, "tau_syn")
        beta = _decay(tm, dt, disc, "tau_mem")
        if disc == "euler":
            gain = (dt / tm) * r * (dt / ts) * w_in
        else:
            gain = (1.0 - beta) * r * (1.0 - alpha) * w_in
        return _norm(_Neuron("CubaLIF", {"alpha": alpha, "beta": beta, "reset_mode": reset_mode}, gain), thr,
                     {"v_reset": vr})
    raise AssertionError(kind)


def _lif(n: _Neuron, thr: np.ndarray, rel: dict[str, np.ndarray]) -> _Neuron:
    """``nmc::LIF`` when one value per layer fits, else ``nmc::LIFT`` (per-neuron beta, threshold, v_reset,
    v_leak)."""
    attrs = dict(n.attrs)
    if all(_uniform(v) for v in (thr, attrs["beta"], *rel.values())):
        return _norm(n, thr, rel)
    per = {"beta": np.asarray(attrs["beta"], dtype=np.float64), "threshold": thr,
           "v_reset": rel.get("v_reset", np.zeros(())), "v_leak": rel.get("v_leak", np.zeros(()))}
    shape = np.broadcast_shapes(np.shape(n.gain), *(np.shape(v) for v in per.values()))
    per = {k: np.broadcast_to(np.asarray(v, dtype=np.float64), shape).copy() for k, v in per.items()}
    if np.any(per["threshold"] <= 0):
        raise _Refuse(f"v_threshold {float(per['threshold'].min()):g} <= 0; nmc neurons need a positive threshold")
    return _Neuron("LIFT", {"reset_mode": attrs["reset_mode"], **per},
                   np.broadcast_to(np.asarray(n.gain, dtype=np.float64), shape).copy(),
                   ["per-neuron parameters: nmc::LIFT"])


def _norm(n: _Neuron, thr: np.ndarray, rel: dict[str, np.ndarray]) -> _Neuron:
    """Set the threshold; when it differs per neuron, scale each neuron's membrane by 1/threshold."""
    shape = np.broadcast_shapes(np.shape(thr), np.shape(n.gain), *(np.shape(v) for v in rel.values()))
    thr = np.broadcast_to(thr, shape)
    if np.any(thr <= 0):
        raise _Refuse(f"v_threshold {float(np.min(thr)):g} <= 0; nmc neurons need a positive threshold")
    gain = np.broadcast_to(n.gain, shape).astype(np.float64)
    rel = {k: np.broadcast_to(v, shape) for k, v in rel.items()}
    if _uniform(thr):
        n.attrs["threshold"] = _one(thr)
    else:
        gain = gain / thr
        rel = {k: v / thr for k, v in rel.items()}
        n.attrs["threshold"] = 1.0
        n.notes.append("per-neuron thresholds normalised to 1 (the gain, v_leak and v_reset of each neuron divided "
                       "by its threshold)")
    for k, v in list(rel.items()) + [(k, n.attrs[k]) for k in ("alpha", "beta") if k in n.attrs]:
        v = np.asarray(v, dtype=np.float64)
        if not _uniform(v):
            raise _Refuse(f"{k} differs between neurons ({float(v.min()):g} .. {float(v.max()):g}"
                          f"{', relative to the threshold' if k in rel and not _uniform(thr) else ''}); nmc's neuron "
                          f"ops take one value per layer ({LIFT_NOTE}): "
                          "split the layer or give every neuron the same value")
        n.attrs[k] = _one(v)
    n.gain = gain
    return n


# ----------------------------------------------------------------- cycles
def _cut_cycles(names: list[str], edges: list[tuple[str, str]], kinds: dict[str, str]) -> set[tuple[str, str]]:
    """Edges to delay by one step so that the rest is acyclic: in each cycle, the edge leaving its last
    spiking node.  Raises _Refuse (with the cycle) when a cycle has no spiking node."""
    cut: set[tuple[str, str]] = set()
    while True:
        succ: dict[str, list[str]] = {n: [] for n in names}
        for a, b in edges:
            if (a, b) not in cut:
                succ[a].append(b)
        cycle = _find_cycle(names, succ)
        if cycle is None:
            return cut
        spiking = [i for i, n in enumerate(cycle[:-1]) if kinds.get(n) in _SPIKING]
        if not spiking:
            raise _Refuse("the cycle " + " -> ".join(cycle) + " has no spiking node; nmc carries only spikes from one "
                          "step to the next (a recurrent synapse reads the previous step's spikes)")
        i = spiking[-1]
        cut.add((cycle[i], cycle[i + 1]))


def _find_cycle(names: list[str], succ: dict[str, list[str]]) -> list[str] | None:
    color = {n: 0 for n in names}
    for root in names:
        if color[root]:
            continue
        stack = [(root, iter(succ[root]))]
        path = [root]
        color[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[node] = 2
                stack.pop()
                path.pop()
            elif color[nxt] == 1:
                return path[path.index(nxt):] + [nxt]
            elif color[nxt] == 0:
                color[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
                path.append(nxt)
    return None


def _topo(names: list[str], edges: list[tuple[str, str]]) -> list[str]:
    indeg = {n: 0 for n in names}
    succ: dict[str, list[str]] = {n: [] for n in names}
    for a, b in edges:
        succ[a].append(b)
        indeg[b] += 1
    ready = [n for n in names if indeg[n] == 0]
    out = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for m in succ[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    return out


# ----------------------------------------------------------------- conversion
def _pair(v, what: str) -> tuple[int, int]:
    a = np.asarray(v).reshape(-1)
    if a.size == 1:
        return int(a[0]), int(a[0])
    if a.size != 2:
        raise _Refuse(f"{what}={list(a)} is not one value or a pair")
    return int(a[0]), int(a[1])


def _conv_pads(node, ks, dil) -> tuple[int, int, int, int]:
    p = node.padding
    if isinstance(p, str):
        if p == "valid":
            return (0, 0, 0, 0)
        total = [d * (k - 1) for d, k in zip(dil, ks)]  # "same" (stride 1), as torch pads it
        return (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)
    ph, pw = _pair(p, "padding")
    return (ph, pw, ph, pw)


def nir_to_onnx(path_or_graph, *, dt: float | None = None, discretisation: str = "euler",
                reset_mode: str | None = None, num_steps: int = 16, name: str | None = None) -> onnx.ModelProto:
    """A NIR graph (a ``nir.NIRGraph`` or the path of a ``.nir`` file) as an nmc-step-convention ONNX model.

    Parameters
    ----------
    dt : the timestep in seconds (NIR's time constants are in seconds); needed by LIF, IF and CubaLIF.
    discretisation : ``"euler"`` (forward Euler, what snnTorch and Norse step) or ``"exp"`` (exponential:
        exact for an input held over the step).
    reset_mode : ``"zero"`` (to v_reset, what NIR says), ``"subtract"`` (subtract the threshold: snnTorch's
        default, which its NIR export cannot say) or ``"none"``; None assumes ``"zero"`` and warns
        (:class:`NirResetWarning`) when the graph has resetting neurons.
    num_steps : the model's default number of timesteps (``nmc.num_steps``).
    """
    g = _read(path_or_graph)
    if discretisation not in DISCRETISATIONS:
        raise ModelError(f"discretisation={discretisation!r}; choose one of {', '.join(DISCRETISATIONS)}")
    if reset_mode not in (None, "zero", "subtract", "none"):
        raise ModelError(f"reset_mode={reset_mode!r}; choose 'zero', 'subtract' or 'none' (or None: NIR's 'zero', "
                         "with a warning)")
    if dt is not None and (isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating, np.integer))
                           or not math.isfinite(float(dt)) or float(dt) <= 0):
        raise ModelError(f"dt={dt!r}; give the timestep as a positive number of seconds")
    dt = None if dt is None else float(dt)
    passthrough: set[str] = set()
    nodes, edges = _flatten_graph(g, passthrough)
    kinds = {n: ("Pass" if n in passthrough else type(v).__name__) for n, v in nodes.items()}
    bad: list[tuple[str, str, str]] = []
    for a, b in edges:
        for end in (a, b):
            if end not in nodes:
                raise ModelError(f"NIR edge ({a} -> {b}) names '{end}', which is not a node of the graph")
    names = list(nodes)
    preds: dict[str, list[str]] = {n: [a for a, b in edges if b == n] for n in names}
    succs: dict[str, list[str]] = {n: [b for a, b in edges if a == n] for n in names}

    # neurons: discretise (continuous-time neurons need the timestep: said first, as the one thing to give)
    timed = [n for n, k in kinds.items() if k in ("LIF", "IF", "CubaLIF", "LI", "I")]
    if timed and dt is None:
        raise InputError(f"NIR is continuous-time and this graph has {len(timed)} neuron node(s) ("
                         + ", ".join(f"{kinds[n]} '{n}'" for n in timed[:3]) + (", ..." if len(timed) > 3 else "")
                         + "): give the timestep in seconds, nmc.load_nir(..., dt=1e-4) or nmc compile model.nir "
                         "--dt 1e-4 (snnTorch's NIR export assumes 1e-4)")
    mode = reset_mode or "zero"
    neurons: dict[str, _Neuron] = {}
    for n, node in nodes.items():
        k = kinds[n]
        if k in _REFUSED:
            bad.append((n, k, _REFUSED[k]))
        elif k not in SUPPORTED_NIR_NODES and k not in ("Identity", "Pass"):
            bad.append((n, k, "no mapping of this NIR node type to nmc"))
        elif k in _SPIKING or k in _INTEGRATORS:
            try:
                neurons[n] = _neuron(k, node, dt, discretisation, mode)
            except _Refuse as e:
                bad.append((n, k, str(e)))
    try:
        cut = _cut_cycles(names, edges, kinds)
    except _Refuse as e:
        bad.append(("<graph>", "cycle", str(e)))
        cut = set()
    if bad:
        raise UnsupportedOpError(bad, supported=list(SUPPORTED_NIR_NODES))
    if reset_mode is None and any(kinds[n] in _RESETTING for n in neurons):
        warnings.warn("NIR cannot say how a neuron resets: nmc assumed NIR's reset to v_reset (reset_mode='zero'). "
                      "A model trained with a subtractive reset (snnTorch's default) needs reset_mode='subtract' "
                      "(CLI: --reset-mode subtract)", NirResetWarning, stacklevel=3)

    # per-neuron gains: fold into the synapses before the neuron, else a scale layer
    scale_w: dict[str, np.ndarray] = {}  # synapse node -> per-output scale
    pre_scale: dict[str, np.ndarray] = {}  # neuron -> gain applied by a scale layer before it
    for n, neu in neurons.items():
        g_ = neu.gain
        if _uniform(g_) and "gain" in nmc_ops.SCHEMAS[neu.op].attrs:
            neu.attrs["gain"] = _one(g_) if g_.size else 1.0
            continue
        if _uniform(g_) and abs(_one(g_) - 1.0) <= _RTOL:
            continue
        ins = preds[n]
        foldable = ins and all(kinds[s] in ("Affine", "Linear", "Conv2d") and succs[s] == [n] and (s, n) not in cut
                               and s not in scale_w for s in ins)
        if foldable:
            for s in ins:
                scale_w[s] = g_
        else:
            pre_scale[n] = g_

    b = ModelBuilder(name or _graph_name(path_or_graph), num_steps=num_steps)
    out_of: dict[str, str] = {}
    state_of: dict[str, str] = {}  # spiking node -> state carrying its previous spikes
    dag = [e for e in edges if e not in cut]
    order = _topo(names, dag)
    for src, _ in cut:
        if src not in state_of:
            shp = _shape(nodes[src], "output_type")
            if shp is None:
                raise ModelError(f"NIR node '{src}' feeds a cycle but has no output shape; run "
                                 "graph.infer_types() before writing it")
            state_of[src] = b.state(f"{src}.prev", shp)
    problems: list[tuple[str, str, str]] = []
    for n in order:
        node, k = nodes[n], kinds[n]
        ins = [state_of[a] if (a, n) in cut else out_of.get(a) for a in preds[n]]
        if any(t is None for t in ins):
            continue  # a predecessor failed
        try:
            if k == "Input":
                shp = _shape(node, "input_type")
                if shp is None:
                    raise _Refuse("the Input node has no shape")
                out_of[n] = b.input(_safe(n), shp, kind="step")
                continue
            x = _sum(b, ins, n)
            if k == "Pass":
                out_of[n] = x
                continue
            if k == "Output":
                out_of[n] = b.output(x) if x is not None else None
                continue
            if x is None:
                raise _Refuse("no edge feeds this node")
            out_of[n] = _emit(b, n, k, node, x, neurons.get(n), scale_w.get(n), pre_scale.get(n))
        except _Refuse as e:
            problems.append((n, k, str(e)))
    if problems:
        raise UnsupportedOpError(problems, supported=list(SUPPORTED_NIR_NODES))
    for src, st in state_of.items():
        b.bind_state(st, out_of[src])
    outs = [out_of[n] for n in names if kinds[n] == "Output"]
    if not outs:
        raise ModelError("the NIR graph has no Output node; add nir.Output nodes for what the model returns")
    model = b.build()
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "nmc.source": "nir",
                                        "nmc.nir": json.dumps({"dt": dt, "discretisation": discretisation,
                                                               "reset_mode": mode,
                                                               "reset_mode_assumed": reset_mode is None})})
    return model


def _graph_name(path_or_graph) -> str:
    return Path(path_or_graph).stem if isinstance(path_or_graph, (str, Path)) else "nir"


def _safe(n: str) -> str:
    return n if n else "input"


def _sum(b: ModelBuilder, ins: list[str], n: str) -> str | None:
    if not ins:
        return None
    x = ins[0]
    for i, y in enumerate(ins[1:]):
        if b.shapes[x] != b.shapes[y]:
            raise _Refuse(f"its inputs '{x}' {list(b.shapes[x])} and '{y}' {list(b.shapes[y])} differ in shape; NIR "
                          "sums the edges into a node, which needs equal shapes")
        x = b.add(x, y, name=f"{n}.sum{i}")
    return x


def _scale_layer(b: ModelBuilder, x: str, g: np.ndarray, name: str) -> str:
    """``x * g`` elementwise as a layer: a diagonal Gemm (1-D) or a depthwise 1x1 Conv (one scale per channel)."""
    shp = b.shapes[x]
    g = np.broadcast_to(np.asarray(g, dtype=np.float64), shp) if np.size(g) != int(np.prod(shp)) else \
        np.asarray(g, dtype=np.float64).reshape(shp)
    if len(shp) == 1:
        return b.gemm(x, np.diag(g), name=name)
    if len(shp) == 3:
        per = g.reshape(shp[0], -1)
        if np.all(per == per[:, :1]):
            return b.conv(x, per[:, 0].reshape(shp[0], 1, 1, 1), group=shp[0], name=name)
    raise _Refuse(f"a scale that varies within a channel of shape {list(shp)}: nmc has no elementwise multiply; "
                  "put an Affine or Conv2d before the neuron (its weights take the scale)")


def _emit(b: ModelBuilder, n: str, k: str, node, x: str, neu: _Neuron | None, wscale, pre) -> str:
    if k == "Identity":
        return b.identity(x, name=n)
    if k in ("Affine", "Linear"):
        W = np.asarray(node.weight, dtype=np.float64)
        if W.ndim != 2:
            raise _Refuse(f"weight of shape {list(W.shape)}; nmc maps 2-D weights [out, in]")
        bias = np.asarray(node.bias, dtype=np.float64) if k == "Affine" else np.zeros(W.shape[0])
        bias = np.broadcast_to(bias, (W.shape[0],))
        xs = b.shapes[x]
        if len(xs) != 1:
            raise _Refuse(f"input of shape {list(xs)}; an Affine/Linear needs a flat input: add a nir.Flatten")
        if wscale is not None:
            s = np.broadcast_to(wscale, (W.shape[0],)).reshape(-1) if np.size(wscale) != W.shape[0] else \
                np.asarray(wscale).reshape(-1)
            W, bias = W * s[:, None], bias * s
        return b.gemm(x, W, bias, name=n)
    if k == "Conv2d":
        W = np.asarray(node.weight, dtype=np.float64)
        if W.ndim != 4:
            raise _Refuse(f"weight of shape {list(W.shape)}; Conv2d needs [C_out, C_in/groups, kh, kw]")
        st, dil = _pair(node.stride, "stride"), _pair(node.dilation, "dilation")
        if isinstance(node.padding, str) and node.padding == "same" and st != (1, 1):
            raise _Refuse("padding='same' with a stride other than 1 is ambiguous; give the padding as numbers")
        pads = _conv_pads(node, W.shape[2:], dil)
        bias = np.broadcast_to(np.asarray(node.bias, dtype=np.float64), (W.shape[0],))
        if wscale is not None:
            co = W.shape[0]
            per = np.asarray(wscale, dtype=np.float64)
            per = per.reshape(co, -1) if per.size % co == 0 and per.size >= co else np.broadcast_to(per, (co, 1))
            if not np.all(per == per[:, :1]):
                raise _Refuse("the neuron after this Conv2d has an input gain that varies within a channel; a "
                              "convolution shares its weights over space, so the gain cannot be folded into it")
            W, bias = W * per[:, 0].reshape(-1, 1, 1, 1), bias * per[:, 0]
        return b.conv(x, W, bias, strides=st, pads=pads, dilations=dil, group=int(node.groups), name=n)
    if k == "Flatten":
        xs = b.shapes[x]
        start, end = int(node.start_dim), int(node.end_dim)
        full = (1, *xs)  # NIR's flatten dims count a batch axis (torch's start_dim=1)
        end_ = end if end >= 0 else len(full) + end
        if start < 1:
            raise _Refuse(f"start_dim={start} would flatten the batch axis")
        out = list(full[:start]) + [int(np.prod(full[start:end_ + 1]))] + list(full[end_ + 1:])
        out = out[1:]
        return b.flatten(x, name=n) if len(out) == 1 else b.reshape(x, out, name=n)
    if k == "Scale":
        return _scale_layer(b, x, np.asarray(node.scale, dtype=np.float64), n)
    if k in ("SumPool2d", "AvgPool2d"):
        xs = b.shapes[x]
        if len(xs) != 3:
            raise _Refuse(f"input of shape {list(xs)}; 2-D pooling needs [C, H, W]")
        kh, kw = _pair(node.kernel_size, "kernel_size")
        st = _pair(node.stride, "stride") if node.stride is not None else (kh, kw)
        ph, pw = _pair(node.padding, "padding") if node.padding is not None else (0, 0)
        val = 1.0 if k == "SumPool2d" else 1.0 / (kh * kw)
        W = np.full((xs[0], 1, kh, kw), val)
        return b.conv(x, W, strides=st, pads=(ph, pw, ph, pw), group=xs[0], name=n)
    if neu is not None:
        xs = b.shapes[x]
        if np.size(neu.gain) not in (1, int(np.prod(xs))):
            raise _Refuse(f"its parameters have {int(np.size(neu.gain))} values but its input '{x}' has shape "
                          f"{list(xs)}")
        if pre is not None:
            x = _scale_layer(b, x, pre, f"{n}.gain")
        size = int(np.prod(xs))
        attrs = {k: (v.reshape(b.shapes[x]) if isinstance(v, np.ndarray) and v.size == size else v)
                 for k, v in neu.attrs.items()}
        return b.neuron(neu.op, x, n, **attrs)[0]
    raise AssertionError(k)


def load_nir(path_or_graph, *, dt: float | None = None, discretisation: str = "euler",
             reset_mode: str | None = None, num_steps: int = 16) -> Graph:
    """A NIR graph (``nir.NIRGraph`` or a ``.nir`` path) as an nmc IR graph (see :func:`nir_to_onnx`)."""
    return load_onnx(nir_to_onnx(path_or_graph, dt=dt, discretisation=discretisation, reset_mode=reset_mode,
                                 num_steps=num_steps))
