"""The mapping pipeline as passes: each checks what it requires, runs, and checks what it ensures.

A :class:`PassManager` runs them in order over one :class:`MapState`; a failure names the pass
that failed and the passes before it.  Passes hold no global state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from nmc.chip import ChipSpec
from nmc.coremap import CoreMap
from nmc.errors import DesignRuleError, NmcError, PassError
from nmc.ir import Graph

from nmc import rules as drc
from .connect import Wiring, connect
from .emit import emit
from .lower import LayerGraph, lower
from .partition import Piece, partition, routing_shortfall
from .place import chips_needed, place
from .quantize import TQ, Range, calibrate, quantize, ranges_from_metadata

__all__ = ["MapState", "Pass", "PassManager", "default_passes", "map_graph"]


@dataclass
class MapState:
    graph: Graph
    chip: ChipSpec
    options: dict[str, Any]
    calib: Mapping[str, np.ndarray] | None = None
    lg: LayerGraph | None = None
    ranges: dict[str, Range] | None = None
    tq: dict[str, TQ] | None = None
    pieces: list[Piece] | None = None
    wiring: Wiring | None = None
    chips: tuple[int, int] | None = None
    pos: np.ndarray | None = None
    coremap: CoreMap | None = None
    log: list[str] = field(default_factory=list)


@dataclass
class Pass:
    name: str
    requires: tuple[str, ...]
    ensures: tuple[str, ...]
    fn: Callable[[MapState], bool]

    def __call__(self, st: MapState) -> bool:
        missing = [r for r in self.requires if getattr(st, r) is None]
        if missing:
            raise PassError(f"pass '{self.name}' requires {missing}, which no earlier pass produced")
        changed = self.fn(st)
        absent = [e for e in self.ensures if getattr(st, e) is None]
        if absent:
            raise PassError(f"pass '{self.name}' did not produce {absent}")  # a bug in the pass
        return changed


class PassManager:
    def __init__(self, passes: list[Pass]):
        self.passes = list(passes)

    def run(self, st: MapState) -> MapState:
        done: list[str] = []
        for p in self.passes:
            try:
                changed = p(st)
            except NmcError:
                raise
            except Exception as e:  # an internal failure: say where it happened
                raise PassError(f"mapper pass '{p.name}' failed after passes {done or '[]'}: "
                                f"{type(e).__name__}: {e}") from e
            st.log.append(f"{p.name}: {'changed' if changed else 'no change'}")
            done.append(p.name)
        return st


# ----------------------------------------------------------------------------- passes
def _lint(st: MapState) -> bool:
    st.graph.lint()
    return False


def _lower(st: MapState) -> bool:
    st.lg = lower(st.graph)
    return True


def _calibrate(st: MapState) -> bool:
    ranges = ranges_from_metadata(st.graph)
    if st.calib is not None:
        ranges.update(calibrate(st.graph, st.calib, st.options.get("calib_steps")))
    st.ranges = ranges
    return True


def _quantize(st: MapState) -> bool:
    st.tq = quantize(st.lg, st.chip, st.ranges)
    return True


def _partition(st: MapState) -> bool:
    # routing tables share a core's memory but their size is known only once every layer is partitioned:
    # partition, count each core's destinations, and partition again with those entries reserved
    reserve: dict[int, int] = {}
    while True:
        st.pieces = partition(st.lg, st.chip, st.tq, reserve)
        st.wiring = connect(st.lg, st.pieces)
        short = routing_shortfall(st.lg, st.chip, st.tq, st.pieces, st.wiring)
        grown = {li: n for li, n in short.items() if n > reserve.get(li, 0)}
        if not grown:  # fits, or no reserve can help (the design rules then name the core)
            return True
        reserve.update(grown)


def _connect(st: MapState) -> bool:
    # the partition pass already connected its final pieces (it needs the routing tables)
    if st.wiring is None:
        st.wiring = connect(st.lg, st.pieces)
        return True
    return False


def _place(st: MapState) -> bool:
    chips = st.options.get("chips")
    n = len(st.pieces)
    if chips in (None, "auto"):
        chips = chips_needed(n, st.chip) if chips == "auto" else (st.chip.system.chips_x, st.chip.system.chips_y)
    st.chips = (int(chips[0]), int(chips[1]))
    names = [st.lg.layers[p.layer].name for p in st.pieces]
    st.pos = place(st.wiring.dag, st.chip, st.chips, st.options.get("placement", "greedy"), names)
    return True


def _emit(st: MapState) -> bool:
    opts = {k: (list(v) if isinstance(v, tuple) else v) for k, v in st.options.items() if k != "calib_steps"}
    opts["chips"] = list(st.chips)
    st.coremap = emit(st.lg, st.pieces, st.tq, st.wiring, st.pos, st.chip, st.chips, st.graph.num_steps, opts)
    return True


def _route(st: MapState) -> bool:
    """Routing tables (destinations per core) and the static XY hop count of every (source, destination) pair."""
    cm = st.coremap
    a = cm.arrays
    pairs = drc.route_pairs(a["core_neuron_off"], a["core_axon_off"], a["route_src"], a["route_dst"])
    hops = np.abs(a["core_x"][pairs[0]] - a["core_x"][pairs[1]]) + np.abs(a["core_y"][pairs[0]] - a["core_y"][pairs[1]])
    ents = drc.router_entries(cm)
    cm.meta["routing"] = dict(pairs=int(pairs.shape[1]), max_table_entries=int(ents.max(initial=0)),
                              mean_pair_hops=float(hops.mean()) if hops.size else 0.0,
                              max_pair_hops=int(hops.max(initial=0)))
    return True


def _drc(st: MapState) -> bool:
    violations = drc.check_coremap(st.coremap)
    if violations:
        raise DesignRuleError(violations)
    return False


def default_passes() -> list[Pass]:
    return [
        Pass("lint", ("graph",), (), _lint),
        Pass("lower", ("graph",), ("lg",), _lower),
        Pass("calibrate", ("graph",), ("ranges",), _calibrate),
        Pass("quantize", ("lg", "ranges"), ("tq",), _quantize),
        Pass("partition", ("lg", "tq"), ("pieces",), _partition),
        Pass("connect", ("lg", "pieces"), ("wiring",), _connect),
        Pass("place", ("wiring", "pieces"), ("pos", "chips"), _place),
        Pass("emit", ("pos", "wiring", "tq"), ("coremap",), _emit),
        Pass("route", ("coremap",), ("coremap",), _route),
        Pass("drc", ("coremap",), ("coremap",), _drc),
    ]


def map_graph(graph: Graph, chip: ChipSpec, calib: Mapping[str, np.ndarray] | None = None,
              **options: Any) -> CoreMap:
    """Map an IR graph onto ``chip``: lower, calibrate, quantise, partition, connect, place, emit, route, check."""
    st = MapState(graph=graph, chip=chip, options=dict(options), calib=calib)
    PassManager(default_passes()).run(st)
    return st.coremap
