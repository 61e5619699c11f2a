"""The Python API: ``compile`` a model to a core map, ``emulate`` a core map on inputs.

>>> import nmc
>>> cm = nmc.compile("examples/digits_hybrid.onnx", chip="tianjic")     # doctest: +SKIP
>>> res = nmc.emulate(cm, {"image": images}, steps=16)                  # doctest: +SKIP
>>> res.outputs["logits"].shape, res.report["energy_j"]                 # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

try:
    import resource
    resource_unlimited = resource.RLIM_INFINITY
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]
    resource_unlimited = -1

from .chip import MAX_SYSTEM_CORES, ChipSpec, load_chip
from .corefile import load as load_coremap
from .corefile import validate
from .coremap import AXON_INIT_RANGE, CoreMap
from .emulator import BACKENDS
from .emulator.cost import check_schedule
from .emulator.kernels import trace_buffers
from .emulator.memory import check_memory
from .emulator.trace import chrome_trace
from .emulator.profile import build_report
from .emulator.result import EVENT_INDEX
from .encoders import STEP_INDEX, encode_inputs, step_index
from .errors import InputError, ModelError
from .files import GIB, MAX_ARRAY_BYTES, read_npz, size_text
from .frontend import load_onnx
from .frontend.interpret import run_host_ops
from .frontend.nir_import import is_nir
from .frontend.onnx_import import MAX_STEPS
from .ir import Graph, merge_graphs, split_wide_maxpools
from .mapper.bounds import Bounds, bounds
from .mapper.fold import OBJECTIVES
from .mapper.host_encoders import split_host_encoders
from .mapper.passes import map_graph

#: what compile does with a stage deeper than the phase budget (docs/numerics.md, "Rounds")
DEPTHS = ("rounds", "refuse")

__all__ = ["compile", "check", "emulate", "EmulationResult", "load_inputs", "prepare_inputs"]


def _as_graph(model: Any, approximate: Mapping[str, str] | None = None):
    if isinstance(model, (list, tuple)):  # several models on one system
        if len(model) == 1:
            return _as_graph(model[0], approximate)
        graphs = [_as_graph(m, approximate) for m in model]
        names = [Path(m).stem if isinstance(m, (str, os.PathLike)) else g.name for m, g in zip(model, graphs)]
        return merge_graphs(graphs, names)
    if isinstance(model, Graph):
        return model
    if is_nir(model):
        raise ModelError("a NIR graph is continuous-time: discretise it first with a timestep, "
                         "nmc.compile(nmc.load_nir(path_or_graph, dt=...)) (CLI: nmc compile model.nir --dt ...)")
    return load_onnx(model, approximate=approximate)


#: how structured layers are partitioned (``compile(tiles=...)``, ``--tiles``)
TILES = ("auto", "on", "off")


def compile(model: Any, chip: str | ChipSpec | os.PathLike = "tianjic", *, chips: Any = None,
            calib: Mapping[str, np.ndarray] | str | os.PathLike | None = None, calib_steps: int | None = None,
            placement: str = "greedy", overrides: Mapping[str, Any] | None = None, lint: bool = False,
            profile_inputs: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
            objective: str = "latency", approximate: Mapping[str, str] | None = None, tiles: str = "auto",
            depth: str = "rounds") -> CoreMap:
    """Compile an ONNX model (path, bytes or ModelProto in the nmc step convention) or an IR graph, or a list of
    them: several models on one system, each with its own inputs and outputs, named ``<model>:<name>`` (the
    model is the file's stem, or the graph's name), and its own latency and energy in the report
    (``report["models"]``; :func:`nmc.ir.merge_graphs`).

    Parameters
    ----------
    chip : preset name (``tianjic``, ``tianjicx``, ``loihi``), path of a chip .toml, or a ChipSpec.
    chips : ``(x, y)`` grid of chips, ``"auto"`` (fewest chips in a row that fit), or None (the preset's).
    calib : calibration inputs (dict or path of an .npz in the inputs.npz format); without them the
        ranges shipped in the model's ``nmc.ranges`` metadata are used.
    placement : placement strategy name (``greedy``, ``zigzag`` = ``linear``, ``locality``, ``profile``;
        nmc/mapper/place.py).  ``profile`` compiles with ``locality``, emulates ``profile_inputs`` (dict or
        inputs.npz path, the format of :func:`emulate`) and places again with the packets every core sent.
    overrides : dotted chip fields to replace, e.g. ``{"core.neurons": 64}``.
    objective : ``latency`` (no folding), ``cores`` (fold as many logical cores per physical core as memory,
        router table and phase budget allow), ``balanced`` (at most 2), ``energy`` (the least folding that
        reaches the chip count of ``cores``); nmc/mapper/fold.py.
    tiles : ``auto`` (convolutions and dense layers of over 1M unfolded synapses or 64k neurons are cut into tiles
        whose cores store shared kernels; smaller layers are packed neuron by neuron into dense weight blocks),
        ``on`` (every such layer tiled) or ``off`` (none; a layer over 2^26 synapses then cannot be mapped);
        nmc/mapper/structured.py.
    depth : ``rounds`` (default): a stage with more phases than ``core.phases_per_step`` runs in several rounds of
        at most that many phases, each round boundary costing ``timing.barrier_cycles +
        timing.round_overhead_cycles`` (outputs unchanged; docs/numerics.md, "Rounds"); ``refuse``: such a stage
        is refused (design rule ``phases-per-step``).
    lint : check every mapper pass's result between passes (for tests; slower).
    approximate : ops replaced by a named approximation instead of their on-core form, e.g. ``{"LRN": "identity"}``
        (``nmc compile --approximate LRN=identity``); each use is a warning in the core map's compile report.
    """
    spec = chip if isinstance(chip, ChipSpec) else load_chip(chip)
    if overrides:
        spec = spec.with_overrides(overrides)
    graph = _as_graph(model, approximate)
    if isinstance(calib, (str, os.PathLike)):
        calib = load_inputs(calib)
    if calib_steps is not None and (isinstance(calib_steps, (bool, np.bool_)) or
                                    not isinstance(calib_steps, (int, np.integer)) or
                                    not 1 <= calib_steps <= MAX_STEPS):
        raise InputError(f"calib_steps = {calib_steps!r}; give a whole number of steps from 1 to {MAX_STEPS}")
    calib_in = None
    if calib is not None:
        if not isinstance(calib, Mapping):
            raise InputError(f"calibration inputs are a {type(calib).__name__}; give a dict of arrays by graph input "
                             "name or the path of an .npz")
        calib_in = _calib_for_graph(graph, calib)
        _check_calib_work(graph, calib_in, calib_steps)
    chips = _chips_arg(chips, spec)
    if objective not in OBJECTIVES:
        raise InputError(f"objective '{objective}' is not one of {list(OBJECTIVES)} (--objective)")
    if tiles not in TILES:
        raise InputError(f"tiles '{tiles}' is not one of {list(TILES)} (--tiles)")
    if depth not in DEPTHS:
        raise InputError(f"depth '{depth}' is not one of {list(DEPTHS)} (--depth)")
    opts = dict(calib=calib_in, lint=lint, host_budget=memory_budget(), calib_steps=calib_steps, objective=objective,
                tiles=tiles, depth=depth)
    if placement != "profile":
        if profile_inputs is not None:
            raise InputError(f"profile inputs are given but placement is '{placement}'; they are for "
                             "placement='profile' (--placement profile)")
        return map_graph(graph, spec, chips=chips, placement=placement, **opts)
    if profile_inputs is None:
        raise InputError("placement 'profile' needs inputs to measure traffic on: give profile_inputs (a dict or an "
                         "inputs.npz path; --profile-inputs on the command line)")
    first = map_graph(graph, spec, chips=chips, placement="locality", **opts)
    run = emulate(first, profile_inputs)
    traffic = run.result.events[:, :, EVENT_INDEX["packet"]].mean(axis=0)
    return map_graph(graph, spec, chips=tuple(first.meta["chips"]), placement="profile", traffic=traffic, **opts)


def check(model: Any, chip: str | ChipSpec | os.PathLike = "tianjic", *, chips: Any = None,
          overrides: Mapping[str, Any] | None = None, depth: str = "rounds") -> Bounds:
    """Closed-form lower bounds of what ``model`` needs on ``chip`` (cores, chips, phases, core and host memory
    per layer; nmc.mapper.bounds), from its shapes and weights alone, in seconds: ``.fits``, ``.problems`` (what
    cannot fit, by how much, and the option that would make it fit) and ``.table()``.  Arguments as
    :func:`compile`'s."""
    spec = chip if isinstance(chip, ChipSpec) else load_chip(chip)
    if overrides:
        spec = spec.with_overrides(overrides)
    graph = split_host_encoders(_as_graph(model))  # as compile: spike encoders run on the host, wide max
    graph = split_wide_maxpools(graph, spec.core.axons)  # poolings are split
    graph.lint()
    if depth not in DEPTHS:
        raise InputError(f"depth '{depth}' is not one of {list(DEPTHS)} (--depth)")
    return bounds(graph, spec, _chips_arg(chips, spec), memory_budget(), depth=depth)


def _chips_arg(chips: Any, spec: ChipSpec) -> Any:
    if isinstance(chips, str) and chips != "auto":
        chips = parse_chips(chips)
    if isinstance(chips, (tuple, list)):
        if len(chips) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
                                      for v in chips):
            raise InputError(f"chips={chips!r}: expected (x, y) with positive integers, or 'auto'")
        if chips[0] * chips[1] * spec.cores_per_chip > MAX_SYSTEM_CORES:
            raise InputError(f"chips={chips[0]}x{chips[1]} of {spec.cores_per_chip}-core chips is "
                             f"{chips[0] * chips[1] * spec.cores_per_chip} cores, more than nmc models "
                             f"({MAX_SYSTEM_CORES}); give a smaller grid or 'auto'")
        chips = (int(chips[0]), int(chips[1]))
    return chips


def parse_chips(text: str) -> tuple[int, int] | str:
    if text == "auto":
        return text
    try:
        x, y = (int(v) for v in text.lower().split("x"))
        if x < 1 or y < 1:
            raise ValueError
        return x, y
    except ValueError:
        raise InputError(f"--chips '{text}': expected 'XxY' with positive integers (e.g. 2x1) or 'auto'") from None


#: most multiply-adds the float interpreter may spend on calibration (minutes of NumPy at most)
MAX_CALIB_WORK = 2 * 10 ** 10


def _calib_for_graph(graph, calib: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, kind in graph.inputs.items():
        if kind == "state":
            if name in calib:
                x = _numeric(name, calib[name], "calibration state input")
                shape = tuple(graph.tensors[name].shape)
                if x.shape == shape:
                    x = x[None]
                if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or x.shape[0] < 1:
                    raise InputError(f"calibration state input '{name}' has shape {list(x.shape)}; expected "
                                     f"[B, {', '.join(map(str, shape))}] with B >= 1")
                out[name] = x
            continue
        if name == STEP_INDEX and name not in calib:
            continue  # the step index: the float interpreter fills it
        if name not in calib:
            raise InputError(f"calibration inputs lack graph input '{name}'; they have {sorted(calib)}")
        shape = graph.tensors[name].shape
        x = _batched(name, kind, _numeric(name, calib[name], "calibration input"), shape, None)
        b = x.shape[1] if kind == "step" else x.shape[0]
        if b < 1 or (kind == "step" and x.shape[0] < 1):
            raise InputError(f"calibration input '{name}' has shape {list(x.shape)}: no samples (or no steps); give "
                             "at least one")
        out[name] = x
    return out


def _check_calib_work(graph: Graph, calib: Mapping[str, np.ndarray], calib_steps: int | None) -> None:
    """Refuse a calibration run the float interpreter could not finish in reasonable time and memory."""
    T = calib_steps
    B = 1
    for name, kind in graph.inputs.items():
        if name in calib and kind == "step":
            T = T or calib[name].shape[0]
            B = max(B, calib[name].shape[1])
        elif name in calib:
            B = max(B, calib[name].shape[0])
    T = int(T or graph.num_steps)
    per_sample_step = sum(int(v.size) for n in graph.nodes for v in n.params.values()) + \
        sum(int(t.size) for t in graph.tensors.values())
    work = T * B * per_sample_step
    if work > MAX_CALIB_WORK:
        raise InputError(f"calibrating on {B} sample(s) x {T} steps needs about {work:.3g} operations of the float "
                         f"interpreter, more than nmc's limit of {MAX_CALIB_WORK:.3g}; pass fewer calibration samples "
                         "or fewer steps (calib_steps=...)")
    out_elems = sum(int(graph.tensors[o].size) for o in graph.outputs if o in graph.tensors)
    need, budget = 8 * 2 * T * B * out_elems, memory_budget()
    if need > budget:
        raise InputError(f"calibrating on {B} sample(s) x {T} steps needs about {_gib(need)} for its outputs, more "
                         f"than the {_gib(budget)} this process can spare; pass fewer samples or steps")


def load_inputs(path: str | os.PathLike, limit: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """Read an inputs.npz (one array per graph input, by name); sizes are checked against ``limit`` bytes per
    array before anything is inflated, and a damaged archive is an :class:`InputError`."""
    return read_npz(path, InputError, what="input file", limit=limit)


def memory_budget() -> int:
    """Bytes one run may allocate: half of what is left of the address-space limit (``RLIMIT_AS``) or of
    the physical memory, whichever is smaller."""
    try:
        avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 16 * GIB
    soft = resource.getrlimit(resource.RLIMIT_AS)[0] if resource is not None else resource_unlimited
    if soft not in (-1, resource_unlimited):
        used = 0
        try:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
        avail = min(avail, max(soft - used, 0))
    return avail // 2


def _gib(n: float) -> str:
    return size_text(n)


def _numeric(name: str, x: Any, what: str, copy: bool = True) -> np.ndarray:
    """``x`` as float64, refusing non-numeric, complex and non-finite values (naming the first bad element).
    ``copy=False``: ``x`` itself when it is a float64 array already (for callers that do not write into it)."""
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise InputError(f"{what} '{name}' is not an array ({e}); give a numeric array") from None
    if x.dtype.kind not in "biuf":
        raise InputError(f"{what} '{name}' has dtype {x.dtype}; give numbers (real: float, integer or bool)")
    need, budget = 4 * 8 * x.size, memory_budget()
    if need > budget:
        raise InputError(f"{what} '{name}' has {x.size} elements; quantising it needs about {_gib(need)}, more than "
                         f"the {_gib(budget)} this process can spare; give fewer samples or steps per run")
    x = x.astype(np.float64, copy=copy)
    bad = ~np.isfinite(x)
    if bad.any():
        where = [int(i) for i in np.argwhere(bad)[0]]
        raise InputError(f"{what} '{name}' has {int(bad.sum())} NaN or infinite value(s), the first at index "
                         f"{where} ({x[tuple(where)]}); replace them with finite numbers")
    return x


def _batched(name: str, kind: str, x: np.ndarray, shape: tuple[int, ...], steps: int | None) -> np.ndarray:
    """Static -> [B, *shape]; step -> [T, B, *shape] (a missing batch axis is added)."""
    shape = tuple(shape)
    nd = len(shape)
    if kind == "step":
        if x.ndim == nd + 1 and tuple(x.shape[1:]) == shape:
            x = x[:, None]
        if x.ndim != nd + 2 or tuple(x.shape[2:]) != shape:
            raise InputError(f"step input '{name}' has shape {list(x.shape)}; expected [T, B, {', '.join(map(str, shape))}] "
                             f"or [T, {', '.join(map(str, shape))}] (time axis first: the model lists it in its "
                             f"metadata nmc.step_inputs, a new value every step)")
        if steps is not None and x.shape[0] < steps:
            raise InputError(f"step input '{name}' has {x.shape[0]} steps but {steps} were asked for; give at least "
                             f"{steps} or run fewer steps")
        return x
    if x.ndim == nd and tuple(x.shape) == shape:
        x = x[None]
    if x.ndim == nd + 2 and tuple(x.shape[2:]) == shape:
        raise InputError(f"static input '{name}' has shape {list(x.shape)}: [T, B, {', '.join(map(str, shape))}], a "
                         f"leading time axis, but the model reads '{name}' once per sample; if it is given every "
                         f"step, declare it a step input in the model's metadata nmc.step_inputs (ModelBuilder: "
                         f"b.input('{name}', {shape}, kind='step')), else give [B, {', '.join(map(str, shape))}]")
    if x.ndim != nd + 1 or tuple(x.shape[1:]) != shape:
        raise InputError(f"static input '{name}' has shape {list(x.shape)}; expected [B, {', '.join(map(str, shape))}] "
                         f"or [{', '.join(map(str, shape))}]")
    return x


def _quantised_in_range(x: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray | None:
    """``round(x / scale)`` as int64 when every value of ``x / scale`` lies in ``[lo, hi]`` and is a whole number
    (e.g. spikes, 0 or 1, at scale 1): then nothing is saturated and the quantisation is a conversion, checked by a
    min/max and one comparison instead of rounding, clipping and counting.  ``None`` otherwise (the caller takes
    the general path, which gives the same integers here)."""
    if x.size == 0:
        return None
    with np.errstate(over="ignore"):
        y = x / spec["scale"] if spec["scale"] != 1.0 else x
    if not (spec["lo"] <= y.min() and y.max() <= spec["hi"]):
        return None
    q = y.astype(np.int64)  # exact for whole numbers in range (|value| < 2**63)
    if not (q == y).all():
        return None
    return q


def prepare_inputs(cm: CoreMap, inputs: Mapping[str, np.ndarray], steps: int,
                   saturated: dict[str, tuple[int, int, float, float]] | None = None):
    """Validate and quantise inputs for ``cm``. Returns (static {idx: int64 [B, n]}, step {idx: int64 [B, T, n]},
    state overrides {state input name: float [B, *shape]}, B).  ``saturated`` (if given) receives, per input with
    values outside the range its calibration gave it, (how many, of how many, the range's float lo and hi): those
    values are saturated to the range."""
    known = [i["name"] for i in cm.meta["inputs"]] + [s["input"] for s in cm.meta["states"]]
    unknown = sorted(set(inputs) - set(known))
    if unknown:
        raise InputError(f"inputs {unknown} are not graph inputs of model '{cm.meta['model']}'; its inputs are {known}")
    static, step, states = {}, {}, {}
    B = None
    for idx, spec in enumerate(cm.meta["inputs"]):
        name = spec["name"]
        if name not in inputs:
            raise InputError(f"input '{name}' ({spec['kind']}, shape {spec['shape']}) is missing; inputs.npz needs one "
                             "array per graph input, by name")
        x = _batched(name, spec["kind"], _numeric(name, inputs[name], "input", copy=False), tuple(spec["shape"]),
                     steps)  # (not copied: only read below)
        if spec["kind"] == "step":
            x = x[:steps]  # the first `steps` of a longer step input
        b = x.shape[1] if spec["kind"] == "step" else x.shape[0]
        if b < 1:
            raise InputError(f"input '{name}' has an empty batch (shape {list(x.shape)}); give at least one sample")
        if B is not None and b != B:
            raise InputError(f"input '{name}' has batch size {b} but an earlier input has {B}; all inputs need the same")
        B = b
        q = _quantised_in_range(x[:steps] if spec["kind"] == "step" else x, spec)
        if q is None:
            with np.errstate(over="ignore"):
                r = np.round((x[:steps] if spec["kind"] == "step" else x) / spec["scale"])
                q = np.clip(r, spec["lo"], spec["hi"]).astype(np.int64)
            if saturated is not None:
                n_out = int(np.count_nonzero((r < spec["lo"]) | (r > spec["hi"])))
                if n_out:
                    saturated[name] = (n_out, int(r.size), spec["lo"] * spec["scale"], spec["hi"] * spec["scale"])
        if spec["kind"] == "step":
            step[idx] = np.ascontiguousarray(q[:steps].reshape(steps, b, -1).transpose(1, 0, 2))
        else:
            static[idx] = np.ascontiguousarray(q.reshape(b, -1))
    for s in cm.meta["states"]:
        if s["input"] in inputs:
            x = _numeric(s["input"], inputs[s["input"]], "state input")
            shape = tuple(s["shape"])
            if x.shape == shape:
                x = x[None]
            if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
                raise InputError(f"state input '{s['input']}' has shape {list(x.shape)}; expected [B, {', '.join(map(str, shape))}] "
                                 f"or {list(shape)}")
            if x.shape[0] < 1:
                raise InputError(f"state input '{s['input']}' has an empty batch (shape {list(x.shape)}); give at least "
                                 "one sample or leave it out")
            if s["target"] == "none":
                raise InputError(f"state input '{s['input']}' has no storage on the chip; leave it out")
            _check_state_range(cm, s, x)
            states[s["input"]] = x
    if B is None:
        B = max([v.shape[0] for v in states.values()] or [1])
    for k, v in states.items():
        if v.shape[0] not in (1, B):
            raise InputError(f"state input '{k}' has batch size {v.shape[0]}; expected 1 or {B}")
    return static, step, states, B


def _check_state_range(cm: CoreMap, s: Mapping[str, Any], x: np.ndarray) -> None:
    """The integers a state input becomes must fit the state words (or axon buffers) they initialise."""
    if s["target"] == "neuron":
        neurons = np.asarray(s["neurons"], np.int64)
        cores = np.searchsorted(cm.cores.neuron_off, neurons, side="right") - 1
        models = cm.models()
        bits = min(models[int(c)].state[int(s["word"])].bits(cm.chip.core) for c in np.unique(cores))
        q = x / float(s["scale"])
        unit = f"state-word units (scale {float(s['scale']):.6g})"
    else:
        bits = 32
        q = x
        unit = "axon units"
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~((np.round(q) >= lo) & (np.round(q) <= hi))
    if bad.any():
        where = [int(i) for i in np.argwhere(bad)[0]]
        raise InputError(f"state input '{s['input']}' element {where} = {x[tuple(where)]:.6g} is {q[tuple(where)]:.6g} in "
                         f"{unit}, outside the {bits}-bit state range {lo} .. {hi}; give a value within "
                         f"{lo * (float(s['scale']) if s['target'] == 'neuron' else 1):.6g} .. "
                         f"{hi * (float(s['scale']) if s['target'] == 'neuron' else 1):.6g}")


@dataclass
class EmulationResult:
    """What the chip outputs (dequantised floats and raw integers) and the profile report."""

    outputs: dict[str, np.ndarray]  #: step outputs [T, B, ...]; others [B, ...]
    raw: dict[str, np.ndarray]  #: the chip's integers, same layout
    report: dict[str, Any]
    result: Any  #: the backend's RawResult (per-core events, cycles)
    trace: dict[str, Any] | None = None  #: the Chrome trace of one sample (``emulate(trace_steps=...)``)
    stream_dir: Path | None = None  #: where per-step outputs were streamed (``emulate(stream_dir=...)``)


def _with_states(cm: CoreMap, states: Mapping[str, np.ndarray], b: int) -> CoreMap:
    """``cm`` with sample ``b``'s given state inputs as initial state words / axon values."""
    init = cm.neurons.state_init.copy()
    axon_init = cm.axons.init.copy()
    for s in cm.meta["states"]:
        if s["input"] not in states:
            continue
        x = states[s["input"]]
        x = (x[b] if x.shape[0] > 1 else x[0]).reshape(-1)
        if s["target"] == "neuron":
            init[np.asarray(s["neurons"], np.int64), s["word"]] = np.round(x / s["scale"]).astype(np.int64)
        elif s["target"] == "axon":
            v = np.round(x[np.asarray(s["elems"], np.int64)])
            lo, hi = AXON_INIT_RANGE
            out = ~((v >= lo) & (v <= hi))  # (NaN too)
            if out.any():
                bad = float(v[out][0])
                raise InputError(f"state input '{s['input']}' (sample {b}) holds {bad}, beyond an axon's initial value "
                                 f"range [{lo}, {hi}]: it is read as spikes or activations (at most 8 bits)")
            axon_init[np.asarray(s["axons"], np.int64)] = v.astype(np.int16)
    return cm.replace(neurons=dataclasses.replace(cm.neurons, state_init=init),
                      axons=dataclasses.replace(cm.axons, init=axon_init))


def emulate(core_map: CoreMap | str | os.PathLike, inputs: Mapping[str, np.ndarray] | str | os.PathLike,
            steps: int | None = None, backend: str = "numba", jobs: int = 1,
            max_memory: int | None = None, *, trace_steps: int | None = None, trace_sample: int = 0,
            stream_dir: str | os.PathLike | None = None, progress: bool = False,
            schedule: str = "sequential") -> EmulationResult:
    """Run a core map on inputs (dict or inputs.npz path) for ``steps`` timesteps (default: the model's).

    ``jobs``: threads over the samples of the batch (0: every CPU); the result equals one thread's.
    ``max_memory``: bytes the run may hold (default half of what the process can spare, :func:`memory_budget`);
    a run whose estimate (``emulator/memory.py``) exceeds it is refused before anything is allocated.
    ``trace_steps``: record a timeline of sample ``trace_sample`` (static stage, the first ``trace_steps``
    steps, readout stage) as a Chrome trace in ``result.trace`` (``emulator/trace.py``; Numba backend).
    ``stream_dir``: write per-step outputs to ``<name>.npy`` there (``[T, B, ...]``, dequantised, and the
    chip's integers in ``<name>.raw.npy``) and per-step cycles to ``step_cycles.npy`` (``[B, T]``) chunk by
    chunk instead of holding them in memory; the result's per-step outputs are those files, memory-mapped.
    ``progress``: a progress bar on stderr (``tqdm``, when installed) for runs longer than 2 s.
    ``schedule``: ``"sequential"`` (default: one task, one step, one phase after the other) or ``"pipelined"``
    (consecutive steps and tasks overlap, phase by phase: the report's latency, interval between tasks,
    throughput, energy and power are the pipelined ones; outputs are the same; refused for recurrent models);
    docs/timing_energy.md, "Schedules"."""
    if isinstance(core_map, CoreMap):
        cm = core_map
        validate(cm)  # the emulator refuses a core map that breaks its chip's limits
    else:
        cm = load_coremap(core_map)  # validates
    if isinstance(inputs, (str, os.PathLike)):
        inputs = load_inputs(inputs)
    if backend not in BACKENDS:
        raise InputError(f"unknown emulator backend '{backend}'; choose one of {sorted(BACKENDS)}")
    T = steps if steps is not None else cm.meta["num_steps"]
    if isinstance(T, (bool, np.bool_)) or not isinstance(T, (int, np.integer)):
        raise InputError(f"steps = {T!r}; give a whole number of timesteps")
    T = int(T)
    if T < 1:
        raise InputError(f"steps = {T}; run at least 1 step")
    check_schedule(cm, schedule)
    extra = backend != "numba" and (trace_steps is not None or stream_dir is not None or progress)
    if extra:
        raise InputError(f"tracing, streaming and progress need the numba backend, not '{backend}'; "
                         "drop --backend reference or those options")
    inputs = _host_inputs(cm, inputs, T)
    check_memory(cm, _batch_of(cm, inputs), T, max_memory if max_memory is not None else memory_budget(),
                 stream=stream_dir is not None)
    saturated: dict[str, tuple[int, int, float, float]] = {}
    static, step, states, B = prepare_inputs(cm, inputs, T, saturated=saturated)
    check_run_time(cm, B, T, backend)
    run = BACKENDS[backend]
    kw: dict[str, Any] = {}
    tb = None
    if trace_steps is not None:
        if isinstance(trace_steps, bool) or not isinstance(trace_steps, (int, np.integer)) or trace_steps < 1:
            raise InputError(f"trace_steps = {trace_steps!r}: trace at least 1 step (--trace-steps N)")
        if isinstance(trace_sample, bool) or not isinstance(trace_sample, (int, np.integer)) \
                or not 0 <= trace_sample < B:
            raise InputError(f"trace sample {trace_sample!r} is not a sample of this batch of {B}; "
                             f"choose 0 .. {B - 1} (--trace-sample)")
        tb = trace_buffers(cm, T, int(trace_sample), int(trace_steps))
    step_out, cyc_out, sdir = _stream_files(cm, stream_dir, B, T)
    if step_out is not None:
        kw.update(step_out=step_out, step_cycles_out=cyc_out)
    bar = _progress_bar(B * T) if progress else None
    if bar is not None:
        kw["progress"] = lambda done: bar.update(done - bar.n)
    try:
        if states:
            parts = []
            for b in range(B):
                sub = _with_states(cm, states, b)
                kb = dict(kw)
                if tb is not None:
                    kb["trace"] = tb._replace(sample=0) if b == trace_sample else None
                if step_out is not None:
                    kb.update(step_out={k: v[b:b + 1] for k, v in step_out.items()}, step_cycles_out=cyc_out[b:b + 1])
                if bar is not None:
                    kb["progress"] = lambda done, b=b: bar.update(b * T + done - bar.n)
                parts.append(run(sub, {k: v[b:b + 1] for k, v in static.items()},
                                 {k: v[b:b + 1] for k, v in step.items()}, T, **kb))
            res = _concat_results(parts, keep=set(step_out or ()))
            if step_out is not None:
                res.outputs.update(step_out)
                res.step_cycles = cyc_out
        else:
            if tb is not None:
                kw["trace"] = tb
            res = run(cm, static, step, T, jobs=jobs, checked=True, **kw)  # validated above: not checked twice
    finally:
        if bar is not None:
            bar.close()
    outputs, raw = {}, {}
    for spec in cm.meta["outputs"]:
        r = res.outputs[spec["name"]]
        shape = tuple(spec["shape"])
        if spec["stage"] == "step" and spec.get("final"):
            r = np.asarray(r[:, -1]).reshape((B,) + shape)
        elif spec["stage"] == "step":
            r = r.transpose(1, 0, 2).reshape((T, B) + shape)
        else:
            r = r.reshape((B,) + shape)
        raw[spec["name"]] = r
        if sdir is not None and spec["stage"] == "step" and not spec.get("final"):
            outputs[spec["name"]] = _dequantise_to_file(sdir / f"{spec['name']}.npy", r, spec["scale"])
            continue
        outputs[spec["name"]] = (r * spec["scale"]).astype(np.float64) if spec["scale"] != 1.0 else r.astype(np.float64)
    for spec in cm.meta.get("state_outputs", []):
        v = res.state_final[:, np.asarray(spec["neurons"], np.int64), spec["word"]].reshape((B,) + tuple(spec["shape"]))
        raw[spec["name"]] = v
        outputs[spec["name"]] = v * spec["scale"]
    if cm.meta.get("host"):  # softmax / logsoftmax / argmax of the read-out, on the host after the chip
        outputs = run_host_ops(cm.meta["host"], outputs)
    report = build_report(cm, res, T, backend, schedule)
    for name, (n, total, lo, hi) in saturated.items():  # counted, not clipped silently
        report.setdefault("warnings", []).append(
            f"input '{name}': {n} of {total} values ({100 * n / total:.2g} %) lie outside the range [{lo:.4g}, "
            f"{hi:.4g}] its calibration gave it and were saturated to it; recalibrate with representative inputs"
            + (" (a step input without calibration is taken as spikes, 0 or 1)" if lo == 0 and hi == 1 else ""))
    report["inputs_saturated"] = {k: v[0] for k, v in saturated.items()}  # (empty: none)
    trace = chrome_trace(cm, res, tb, int(trace_sample), T) if tb is not None else None
    return EmulationResult(outputs=outputs, raw=raw, report=report, result=res, trace=trace, stream_dir=sdir)


#: rows of a streamed output converted to floats at a time
_STREAM_ROWS_BYTES = 64 << 20


def _stream_files(cm: CoreMap, stream_dir, B: int, T: int):
    """Memory-mapped ``.npy`` files for the per-step outputs (``<name>.raw.npy``, ``[T, B, n]`` int64, given to
    the kernel as ``[B, T, n]`` views) and cycles (``step_cycles.npy``, ``[B, T]``); ``(None, None, None)``
    without a stream folder."""
    if stream_dir is None:
        return None, None, None
    d = Path(stream_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
        step_out = {}
        for j, spec in enumerate(cm.meta["outputs"]):
            if spec["stage"] == "step":
                n = int(cm.taps.off[j + 1] - cm.taps.off[j])
                mm = np.lib.format.open_memmap(d / f"{spec['name']}.raw.npy", mode="w+", dtype=np.int64, shape=(T, B, n))
                step_out[spec["name"]] = mm.transpose(1, 0, 2)
        cyc = np.lib.format.open_memmap(d / "step_cycles.npy", mode="w+", dtype=np.int64, shape=(B, T))
    except OSError as e:
        raise InputError(f"cannot write the streamed outputs to '{d}' ({e}); give a writable folder "
                         "(--stream-dir)") from None
    return step_out, cyc, d


def _dequantise_to_file(path: Path, r: np.ndarray, scale: float) -> np.ndarray:
    """``r * scale`` as float64 into the ``.npy`` file ``path``, a few rows at a time; the file, memory-mapped."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=r.shape)
    row = max(1, int(np.prod(r.shape[1:])) * 8)
    step = max(1, _STREAM_ROWS_BYTES // row)
    for t in range(0, r.shape[0], step):
        mm[t:t + step] = r[t:t + step] * scale if scale != 1.0 else r[t:t + step]
    mm.flush()
    del mm
    return np.load(path, mmap_mode="r")


def _progress_bar(total: int):
    """A tqdm bar on stderr shown after 2 s, or None when tqdm is not installed (``pip install -e '.[progress]'`` in the nmc checkout)."""
    try:
        from tqdm import tqdm  # optional extra
    except ImportError:
        return None
    return tqdm(total=total, unit="step", desc="emulating", delay=2.0, file=sys.stderr, leave=False, dynamic_ncols=True)


def _host_inputs(cm: CoreMap, inputs: Mapping[str, np.ndarray], T: int) -> dict[str, np.ndarray]:
    """What the host computes before a run: the spikes of the model's host encoders (from their source
    inputs, which the chip does not read) and the step index ``nmc.t`` when the chip reads it."""
    inputs = dict(inputs)
    specs = cm.meta.get("host_encoders") or []
    chip_inputs = {i["name"] for i in cm.meta["inputs"]} | {s["input"] for s in cm.meta["states"]}
    if specs:
        missing = sorted({s["input"] for s in specs} - set(inputs) - {STEP_INDEX})
        if missing:
            raise InputError(f"input(s) {missing} are missing; the host encodes them into spikes "
                             f"({', '.join(s['op'] for s in specs if s['input'] in missing)}): give them by name")
        inputs = encode_inputs(specs, inputs, T)
        for s in specs:
            if s["input"] not in chip_inputs:
                inputs.pop(s["input"], None)
    if STEP_INDEX in chip_inputs and STEP_INDEX not in inputs:
        inputs[STEP_INDEX] = step_index(T, _batch_of(cm, inputs))
    elif STEP_INDEX not in chip_inputs:
        inputs.pop(STEP_INDEX, None)  # the step number, which only the host encoders read (as the step)
    return inputs


def _batch_of(cm: CoreMap, inputs: Mapping[str, np.ndarray]) -> int:
    """The batch size the inputs seem to have (1 if none says; ``prepare_inputs`` checks them properly)."""
    for spec in cm.meta["inputs"]:
        x = inputs.get(spec["name"]) if hasattr(inputs, "get") else None
        if x is None:
            continue
        shape = np.shape(x)
        nd = len(spec["shape"])
        if spec["kind"] == "step" and len(shape) == nd + 2:
            return int(shape[1])
        if spec["kind"] != "step" and len(shape) == nd + 1:
            return int(shape[0])
    return 1


#: seconds per (sample, step, core) and per (sample, step, synapse) of each backend, measured on the digits
#: example (9 cores, 69k synapses) and rounded up: the run-time estimate behind :func:`check_run_time`
_SECONDS_PER = {"numba": (5e-6, 2e-9), "reference": (1e-4, 2e-8)}


def estimate_run_seconds(cm: CoreMap, B: int, T: int, backend: str) -> float:
    """A coarse (pessimistic) estimate of a run's time on ``backend``."""
    per_core, per_syn = _SECONDS_PER.get(backend, _SECONDS_PER["reference"])
    return float(B) * float(T + 2) * (cm.num_cores * per_core + int(np.sum(np.diff(cm.cores.axon_off) *
                                                                          np.diff(cm.cores.neuron_off))) * per_syn)


def max_run_seconds() -> float:
    """The longest run :func:`emulate` starts (``NMC_MAX_RUN_SECONDS``, default one day)."""
    try:
        return float(os.environ.get("NMC_MAX_RUN_SECONDS", 86400))
    except ValueError:
        raise InputError(f"NMC_MAX_RUN_SECONDS={os.environ['NMC_MAX_RUN_SECONDS']!r} is not a number of seconds") \
            from None


def check_run_time(cm: CoreMap, B: int, T: int, backend: str = "numba") -> None:
    """Refuse a run estimated to take longer than :func:`max_run_seconds`, with the estimate and what would help.
    (Its memory is checked before, by ``nmc.emulator.memory.check_memory`` against :func:`memory_budget`.)"""
    secs, limit = estimate_run_seconds(cm, B, T, backend), max_run_seconds()
    if secs > limit:
        raise InputError(f"running {B} sample(s) x {T} steps of model '{cm.meta['model']}' on the {backend} backend "
                         f"would take about {secs:.3g} s (estimate), more than the limit of {limit:.3g} s "
                         "(NMC_MAX_RUN_SECONDS); run fewer steps (--steps) or samples"
                         + (", or use the numba backend" if backend != "numba" else "")
                         + ", or raise NMC_MAX_RUN_SECONDS")


def _concat_results(parts, keep: set = frozenset()):
    """One RawResult of per-sample results (outputs named in ``keep`` are left out: streamed to files)."""
    first = parts[0]
    kw = {}
    for f in dataclasses.fields(first):
        v = getattr(first, f.name)
        if isinstance(v, dict):
            kw[f.name] = {k: np.concatenate([getattr(p, f.name)[k] for p in parts]) for k in v if k not in keep}
        elif isinstance(v, np.ndarray):
            kw[f.name] = np.concatenate([getattr(p, f.name) for p in parts])
        else:
            kw[f.name] = v
    return type(first)(**kw)
