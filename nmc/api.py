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

from .chip import ChipSpec, load_chip
from .corefile import load as load_coremap
from .corefile import validate
from .coremap import CoreMap
from .emulator import BACKENDS
from .emulator.kernels import trace_buffers
from .emulator.memory import check_memory
from .emulator.trace import chrome_trace
from .emulator.profile import build_report
from .errors import InputError
from .frontend import load_onnx
from .ir import Graph
from .mapper.passes import map_graph

__all__ = ["compile", "emulate", "EmulationResult", "load_inputs", "prepare_inputs"]


def _as_graph(model: Any):
    if isinstance(model, Graph):
        return model
    return load_onnx(model)


def compile(model: Any, chip: str | ChipSpec | os.PathLike = "tianjic", *, chips: Any = None,
            calib: Mapping[str, np.ndarray] | str | os.PathLike | None = None, calib_steps: int | None = None,
            placement: str = "greedy", overrides: Mapping[str, Any] | None = None, lint: bool = False) -> CoreMap:
    """Compile an ONNX model (path, bytes or ModelProto in the nmc step convention) or an IR graph.

    Parameters
    ----------
    chip : preset name (``tianjic``, ``tianjicx``, ``loihi``), path of a chip .toml, or a ChipSpec.
    chips : ``(x, y)`` grid of chips, ``"auto"`` (fewest chips in a row that fit), or None (the preset's).
    calib : calibration inputs (dict or path of an .npz in the inputs.npz format); without them the
        ranges shipped in the model's ``nmc.ranges`` metadata are used.
    placement : placement strategy name (``greedy``, ``linear``).
    overrides : dotted chip fields to replace, e.g. ``{"core.neurons": 64}``.
    lint : check every mapper pass's result between passes (for tests; slower).
    """
    spec = chip if isinstance(chip, ChipSpec) else load_chip(chip)
    if overrides:
        spec = spec.with_overrides(overrides)
    graph = _as_graph(model)
    if isinstance(calib, (str, os.PathLike)):
        calib = load_inputs(calib)
    calib_in = None
    if calib is not None:
        calib_in = _calib_for_graph(graph, calib)
    if isinstance(chips, str) and chips != "auto":
        chips = parse_chips(chips)
    return map_graph(graph, spec, calib=calib_in, lint=lint, chips=chips, placement=placement, calib_steps=calib_steps)


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


def _calib_for_graph(graph, calib: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, kind in graph.inputs.items():
        if kind == "state":
            if name in calib:
                out[name] = np.asarray(calib[name], np.float64)
            continue
        if name not in calib:
            raise InputError(f"calibration inputs lack graph input '{name}'; they have {sorted(calib)}")
        shape = graph.tensors[name].shape
        x = np.asarray(calib[name], np.float64)
        out[name] = _batched(name, kind, x, shape, None)
    return out


def load_inputs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an inputs.npz (one array per graph input, by name)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InputError(f"input file '{p}' does not exist") from None
    except (ValueError, OSError) as e:
        raise InputError(f"input file '{p}' is not a readable .npz ({e}); write it with numpy.savez") from None


def _batched(name: str, kind: str, x: np.ndarray, shape: tuple[int, ...], steps: int | None) -> np.ndarray:
    """Static -> [B, *shape]; step -> [T, B, *shape] (a missing batch axis is added)."""
    shape = tuple(shape)
    nd = len(shape)
    if kind == "step":
        if x.ndim == nd + 1 and tuple(x.shape[1:]) == shape:
            x = x[:, None]
        if x.ndim != nd + 2 or tuple(x.shape[2:]) != shape:
            raise InputError(f"step input '{name}' has shape {list(x.shape)}; expected [T, B, {', '.join(map(str, shape))}] "
                             f"or [T, {', '.join(map(str, shape))}] (time axis first)")
        if steps is not None and x.shape[0] < steps:
            raise InputError(f"step input '{name}' has {x.shape[0]} steps but {steps} were asked for; give at least "
                             f"{steps} or run fewer steps")
        return x
    if x.ndim == nd and tuple(x.shape) == shape:
        x = x[None]
    if x.ndim != nd + 1 or tuple(x.shape[1:]) != shape:
        raise InputError(f"static input '{name}' has shape {list(x.shape)}; expected [B, {', '.join(map(str, shape))}] "
                         f"or [{', '.join(map(str, shape))}]")
    return x


def prepare_inputs(cm: CoreMap, inputs: Mapping[str, np.ndarray], steps: int):
    """Validate and quantise inputs for ``cm``. Returns (static {idx: int64 [B, n]}, step {idx: int64 [B, T, n]},
    state overrides {state input name: float [B, *shape]}, B)."""
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
        x = np.asarray(inputs[name])
        if not np.issubdtype(x.dtype, np.number) and x.dtype != bool:
            raise InputError(f"input '{name}' has dtype {x.dtype}; give numbers")
        x = _batched(name, spec["kind"], x.astype(np.float64), tuple(spec["shape"]), steps)
        b = x.shape[1] if spec["kind"] == "step" else x.shape[0]
        if B is not None and b != B:
            raise InputError(f"input '{name}' has batch size {b} but an earlier input has {B}; all inputs need the same")
        B = b
        bad = ~np.isfinite(x)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(f"input '{name}' has {int(bad.sum())} NaN or infinite value(s), the first at index "
                             f"{list(where)} ({x[where]}); replace them with finite numbers")
        q = np.clip(np.round(x / spec["scale"]), spec["lo"], spec["hi"]).astype(np.int64)
        if spec["kind"] == "step":
            step[idx] = np.ascontiguousarray(q[:steps].reshape(steps, b, -1).transpose(1, 0, 2))
        else:
            static[idx] = np.ascontiguousarray(q.reshape(b, -1))
    for s in cm.meta["states"]:
        if s["input"] in inputs:
            x = np.asarray(inputs[s["input"]], np.float64)
            shape = tuple(s["shape"])
            if x.shape == shape:
                x = x[None]
            if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
                raise InputError(f"state input '{s['input']}' has shape {list(x.shape)}; expected [B, {shape}] or {list(shape)}")
            if s["target"] == "none":
                raise InputError(f"state input '{s['input']}' has no storage on the chip; leave it out")
            states[s["input"]] = x
    if B is None:
        B = max([v.shape[0] for v in states.values()] or [1])
    for k, v in states.items():
        if v.shape[0] not in (1, B):
            raise InputError(f"state input '{k}' has batch size {v.shape[0]}; expected 1 or {B}")
    return static, step, states, B


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
            axon_init[np.asarray(s["axons"], np.int64)] = np.round(x[np.asarray(s["elems"], np.int64)]).astype(np.int64)
    return cm.replace(neurons=dataclasses.replace(cm.neurons, state_init=init),
                      axons=dataclasses.replace(cm.axons, init=axon_init))


def emulate(core_map: CoreMap | str | os.PathLike, inputs: Mapping[str, np.ndarray] | str | os.PathLike,
            steps: int | None = None, backend: str = "numba", jobs: int = 1,
            max_memory: int | None = None, *, trace_steps: int | None = None, trace_sample: int = 0,
            stream_dir: str | os.PathLike | None = None, progress: bool = False) -> EmulationResult:
    """Run a core map on inputs (dict or inputs.npz path) for ``steps`` timesteps (default: the model's).

    ``jobs``: threads over the samples of the batch (0: every CPU); the result equals one thread's.
    ``max_memory``: bytes the run may hold (default 80% of physical memory); a run whose estimate
    (``emulator/memory.py``) exceeds it is refused before anything is allocated.
    ``trace_steps``: record a timeline of sample ``trace_sample`` (static stage, the first ``trace_steps``
    steps, readout stage) as a Chrome trace in ``result.trace`` (``emulator/trace.py``; Numba backend).
    ``stream_dir``: write per-step outputs to ``<name>.npy`` there (``[T, B, ...]``, dequantised, and the
    chip's integers in ``<name>.raw.npy``) and per-step cycles to ``step_cycles.npy`` (``[B, T]``) chunk by
    chunk instead of holding them in memory; the result's per-step outputs are those files, memory-mapped.
    ``progress``: a progress bar on stderr (``tqdm``, when installed) for runs longer than 2 s."""
    if isinstance(core_map, CoreMap):
        cm = core_map
        validate(cm)  # the emulator refuses a core map that breaks its chip's limits
    else:
        cm = load_coremap(core_map)  # validates
    if isinstance(inputs, (str, os.PathLike)):
        inputs = load_inputs(inputs)
    if backend not in BACKENDS:
        raise InputError(f"unknown emulator backend '{backend}'; choose one of {sorted(BACKENDS)}")
    T = int(steps if steps is not None else cm.meta["num_steps"])
    if T < 1:
        raise InputError(f"steps = {T}; run at least 1 step")
    extra = backend != "numba" and (trace_steps is not None or stream_dir is not None or progress)
    if extra:
        raise InputError(f"tracing, streaming and progress need the numba backend, not '{backend}'; "
                         "drop --backend reference or those options")
    check_memory(cm, _batch_of(cm, inputs), T, max_memory, stream=stream_dir is not None)
    static, step, states, B = prepare_inputs(cm, inputs, T)
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
            res = run(cm, static, step, T, jobs=jobs, **kw)
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
    report = build_report(cm, res, T, backend)
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
    """A tqdm bar on stderr shown after 2 s, or None when tqdm is not installed (``pip install nmc[progress]``)."""
    try:
        from tqdm import tqdm  # optional extra
    except ImportError:
        return None
    return tqdm(total=total, unit="step", desc="emulating", delay=2.0, file=sys.stderr, leave=False, dynamic_ncols=True)


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
