"""The mapping pipeline as passes: each takes typed results of earlier passes and returns the next one.

::

    graph ─bounds────▶ Bounds (closed-form lower bounds; refuses what cannot fit, before anything is unfolded)
    graph ─lower─────▶ LayerGraph ─┐
    graph ─calibrate─▶ Ranges ─────┴─quantize─▶ Quantized ─fit─▶ Fit ─place─▶ Placement
      ─route─▶ Routes ─emit─▶ CoreMap (checked against the chip's design rules)

``bounds`` checks the IR graph (``Graph.lint``) and bounds what it needs (``mapper.bounds``); ``lower``
lowers it to layers; ``calibrate`` gives tensor
ranges; ``quantize`` the chip integers of every layer; ``fit`` partitions the layers into core-sized
pieces and wires them (routes, input feeds, phases), reserving routing-table memory until it fits;
``place`` puts the cores on the chips' grid; ``route`` builds every core's routing table; ``emit``
writes the core map (with the rounds of every stage: option ``depth``, docs/numerics.md "Rounds") and runs the
design rules (``nmc.rules``) on it.

Results are frozen dataclasses; no pass edits an earlier result, so every result stays what its pass
returned.  A :class:`PassManager` runs the passes in order; a failure names the pass that failed and
the passes before it.  With ``lint=True`` it also checks every result's invariants (``.lint()``)
between passes, as the tests do.  Passes hold no global state, except one bounded cache of results that depend
only on their key (``partition.piece_kernel_slices``: a tile's kernel slices by its shape and geometry).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from nmc import rules as drc
from nmc.chip import ChipSpec
from nmc.coremap import CoreMap
from nmc.coremap import check_coremap as check_structure
from nmc.encoders import STEP_INDEX, encode_inputs
from nmc.errors import DesignRuleError, NmcError, PassError
from nmc.ir import Graph, split_wide_maxpools

from .bounds import Bounds, bounds, check_bounds
from .emit import emit
from .fit import Fit, fit
from .host_encoders import host_encoder_specs, split_host_encoders
from .lower import LayerGraph, lower
from .place import Placement, place_fit
from .quantize import Quantized, Range, Ranges, calibrate, quantize, ranges_from_metadata
from .route import Routes, route

__all__ = ["Context", "Pass", "PassManager", "Run", "default_passes", "map_graph"]


@dataclass(frozen=True)
class Context:
    """What every pass may read besides its inputs: the chip, the compile options, calibration inputs."""

    chip: ChipSpec
    options: Mapping[str, Any] = field(default_factory=dict)
    calib: Mapping[str, np.ndarray] | None = None
    host_budget: int | None = None  #: host bytes mapping may take (None: not checked)


def _lint_method(result: Any) -> None:
    result.lint()


@dataclass(frozen=True)
class Pass:
    """``fn(ctx, *results named by takes)`` returns the result named ``gives``, an instance of ``result``;
    ``lint`` checks that result's invariants (default: its ``lint()`` method)."""

    name: str
    takes: tuple[str, ...]
    gives: str
    result: type
    fn: Callable[..., Any]
    lint: Callable[[Any], None] = _lint_method

    def __call__(self, results: Mapping[str, Any], ctx: Context) -> Any:
        missing = [t for t in self.takes if t not in results]
        if missing:
            raise PassError(f"pass '{self.name}' requires {missing}, which no earlier pass produced")
        out = self.fn(ctx, *(results[t] for t in self.takes))
        if not isinstance(out, self.result):  # a bug in the pass
            raise PassError(f"pass '{self.name}' did not produce '{self.gives}' (a {self.result.__name__}); "
                            f"it returned a {type(out).__name__}")
        return out


@dataclass
class Run:
    """What :meth:`PassManager.run` returns: every result by name (``"graph"`` first), the log, and the
    seconds each pass took."""

    results: dict[str, Any]
    log: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.results[name]


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None elsewhere)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim() if sys.platform.startswith("linux") else None


def _return_freed_heap() -> None:
    """Give the memory a pass freed back to the system.  glibc keeps freed blocks under its mmap threshold (which
    grows to 32 MiB as large arrays come and go) in the heap, so a pass's temporaries stay in the process's
    footprint: 0.6 GB after DenseNet-121's fit.  ``malloc_trim(0)`` releases every free page (a few ms).  (Not a
    ``gc.collect()``: in a process holding many objects, e.g. a test session with torch, a full collection per pass
    cost seconds per compile; passes free their cyclic garbage themselves: ``place_fit``.)"""
    if _TRIM is not None:
        _TRIM(0)


class PassManager:
    def __init__(self, passes: list[Pass], lint: bool = False):
        self.passes = list(passes)
        self.lint = lint

    def run(self, graph: Graph, ctx: Context) -> Run:
        run = Run(results={"graph": graph})
        done: list[str] = []
        for p in self.passes:
            if p.gives in run.results:
                raise PassError(f"pass '{p.name}' would replace '{p.gives}', which an earlier pass produced")
            t0 = time.perf_counter()
            try:
                out = p(run.results, ctx)
            except NmcError:
                raise
            except Exception as e:  # an internal failure: say where it happened
                raise PassError(f"mapper pass '{p.name}' failed after passes {done or '[]'}: "
                                f"{type(e).__name__}: {e}") from e
            run.seconds[p.name] = time.perf_counter() - t0
            if self.lint:
                try:
                    p.lint(out)
                except Exception as e:
                    raise PassError(f"mapper pass '{p.name}' returned a {type(out).__name__} that breaks its "
                                    f"invariants: {e}") from e
            run.results[p.gives] = out
            _return_freed_heap()
            run.log.append(f"{p.name}: {p.gives}")
            done.append(p.name)
        return run


# ----------------------------------------------------------------------------- passes
def _bounds(ctx: Context, graph: Graph) -> Bounds:
    graph.lint()
    b = bounds(graph, ctx.chip, ctx.options.get("chips"), ctx.host_budget, depth=ctx.options.get("depth", "rounds"))
    check_bounds(b)
    return b


def _lower(ctx: Context, graph: Graph) -> LayerGraph:
    graph.lint()
    return lower(graph)


def _exact_ranges(graph: Graph) -> set[str]:
    """Tensors whose shipped range (metadata ``nmc.ranges``) is marked exact by a fourth value ``true`` (the
    frontend knows it, e.g. an embedding's rows are its table's entries): calibration does not replace it."""
    try:
        data = json.loads(graph.metadata.get("nmc.ranges") or "{}")
        return {k for k, v in data.items() if isinstance(v, list) and len(v) > 3 and v[3] is True}
    except (ValueError, AttributeError):
        return set()  # malformed: ranges_from_metadata reports it


def _calibrate(ctx: Context, graph: Graph) -> Ranges:
    ranges = ranges_from_metadata(graph)
    if ctx.calib is not None:
        exact = {k: ranges[k] for k in _exact_ranges(graph) if k in ranges}
        ranges.update(calibrate(graph, ctx.calib, ctx.options.get("calib_steps")))
        ranges.update(exact)
    for name, kind in graph.inputs.items():  # a step input nothing calibrated carries spikes: 0 or 1
        if kind == "step" and name not in ranges and name != STEP_INDEX:
            ranges[name] = Range(0.0, 1.0, True)
    return Ranges(ranges)


def _quantize(ctx: Context, layers: LayerGraph, ranges: Ranges) -> Quantized:
    return quantize(layers, ctx.chip, ranges.ranges)


def _fit(ctx: Context, q: Quantized) -> Fit:
    return fit(q, ctx.chip, ctx.options.get("objective", "latency"), ctx.options.get("tiles", "auto"), ctx.host_budget)


def _place(ctx: Context, f: Fit) -> Placement:
    return place_fit(f, ctx.options.get("chips"), ctx.options.get("placement", "greedy"), ctx.options.get("traffic"))


def _route(ctx: Context, p: Placement) -> Routes:
    return route(p)


def _emit(ctx: Context, r: Routes) -> CoreMap:
    opts = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ctx.options.items()
            if k not in ("calib_steps", "traffic")}
    opts["chips"] = list(r.placement.chips)
    cm = emit(r, opts)
    if ctx.options.get("depth", "rounds") == "rounds":  # a stage deeper than the phase budget runs in rounds
        lim = ctx.chip.core.phases_per_step
        cm.meta["rounds"] = {st: drc.rounds_needed(n, lim) for st, n in drc.stage_phases(cm).items()}
    else:  # "refuse": one round per stage, so the design rule refuses a stage deeper than the budget
        cm.meta["rounds"] = {st: 1 for st in drc.STAGES}
    _return_freed_heap()  # (emit's temporaries, before the check's)
    violations = drc.check_coremap(cm)
    if violations:
        raise DesignRuleError(violations)
    return cm


def default_passes() -> list[Pass]:
    return [
        Pass("bounds", ("graph",), "bounds", Bounds, _bounds),
        Pass("lower", ("graph",), "layers", LayerGraph, _lower),
        Pass("calibrate", ("graph",), "ranges", Ranges, _calibrate),
        Pass("quantize", ("layers", "ranges"), "quantized", Quantized, _quantize),
        Pass("fit", ("quantized",), "fit", Fit, _fit),
        Pass("place", ("fit",), "placement", Placement, _place),
        Pass("route", ("placement",), "routes", Routes, _route),
        Pass("emit", ("routes",), "coremap", CoreMap, _emit, lint=check_structure),
    ]


def map_graph(graph: Graph, chip: ChipSpec, calib: Mapping[str, np.ndarray] | None = None, *, lint: bool = False,
              host_budget: int | None = None, **options: Any) -> CoreMap:
    """Map an IR graph onto ``chip``: move its spike encoders to the host (``host_encoders``), split max poolings
    wider than a core's axons (``nmc.ir.split_wide_maxpools``, exact), bound (refuse what
    cannot fit), lower, calibrate, quantise, fit (partition + connect), place, route, emit (and check the design
    rules).  ``lint``: check every pass's result (for tests; slower); ``host_budget``: host bytes mapping may
    take."""
    graph = split_host_encoders(graph)  # encoders run on the host: their spikes become step inputs
    graph = split_wide_maxpools(graph, chip.core.axons)  # a max-pooling neuron cannot be split by fan-in
    specs = host_encoder_specs(graph)
    if calib is not None and specs:
        steps = options.get("calib_steps") or next((np.shape(v)[0] for k, v in calib.items()
                                                    if graph.inputs.get(k) == "step"), graph.num_steps)
        calib = encode_inputs(specs, calib, int(steps))
        calib = {k: v for k, v in calib.items() if k in graph.inputs}
    ctx = Context(chip=chip, options=dict(options), calib=calib, host_budget=host_budget)
    return PassManager(default_passes(), lint=lint).run(graph, ctx)["coremap"]
