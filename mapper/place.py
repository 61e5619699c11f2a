"""Placement strategies: put every core on a free position of the system's global core grid.

Strategies are plain functions registered by name in :data:`PLACERS` (a second registration of a
name is an error; an unknown name lists the known ones).  Each takes the core dataflow graph
(networkx, edge ``weight`` = values routed) and the grid, and returns ``(x, y)`` per core.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import networkx as nx
import numpy as np

from nmc.chip import ChipSpec
from nmc.errors import DoesNotFitError, PassError, RegistryError

from .fit import Fit

__all__ = ["PLACERS", "Placement", "register_placer", "place", "place_fit", "chips_needed"]

Placer = Callable[[nx.DiGraph, ChipSpec, int, int], list[tuple[int, int]]]
PLACERS: dict[str, Placer] = {}


def register_placer(name: str) -> Callable[[Placer], Placer]:
    def deco(fn: Placer) -> Placer:
        if name in PLACERS:
            raise RegistryError(f"placement strategy '{name}' is already registered")
        PLACERS[name] = fn
        return fn
    return deco


def chips_needed(n_cores: int, chip: ChipSpec) -> tuple[int, int]:
    """Smallest row of chips that holds n_cores."""
    return max(1, -(-n_cores // chip.cores_per_chip)), 1


@dataclass(frozen=True, eq=False)
class Placement:
    """The result of :func:`place_fit`: a grid of ``chips`` and the global ``(x, y)`` of every core."""

    fit: Fit
    chips: tuple[int, int]
    pos: np.ndarray  #: [C, 2] int64

    def lint(self) -> None:
        """One position per core, inside the grid of ``chips``, no two alike."""
        C = len(self.fit.pieces)
        W, H = self.fit.chip.grid(*self.chips)
        if self.pos.shape != (C, 2):
            raise PassError(f"placement: positions of shape {self.pos.shape} for {C} cores")
        x, y = self.pos[:, 0], self.pos[:, 1]
        out = np.flatnonzero((x < 0) | (x >= W) | (y < 0) | (y >= H))
        if out.size:
            raise PassError(f"placement: core {int(out[0])} is at {tuple(self.pos[out[0]].tolist())}, outside the "
                            f"{W} x {H} grid")
        if len({tuple(p) for p in self.pos.tolist()}) != C:
            raise PassError("placement: two cores share a position")


def place_fit(f: Fit, chips: Any = None, strategy: str = "greedy") -> Placement:
    """Place the cores of ``f`` on ``chips`` (``(x, y)``, ``"auto"``: fewest in a row, None: the chip's system)."""
    if chips in (None, "auto"):
        chips = chips_needed(len(f.pieces), f.chip) if chips == "auto" else (f.chip.system.chips_x,
                                                                            f.chip.system.chips_y)
    grid = (int(chips[0]), int(chips[1]))
    names = [f.quant.lg.layers[p.layer].name for p in f.pieces]
    return Placement(fit=f, chips=grid, pos=place(f.wiring.dag, f.chip, grid, strategy, names))


def place(dag: nx.DiGraph, chip: ChipSpec, chips: tuple[int, int], strategy: str,
          layer_of_core: list[str]) -> np.ndarray:
    if strategy not in PLACERS:
        raise RegistryError(f"unknown placement strategy '{strategy}'; known: {', '.join(sorted(PLACERS))}")
    n = dag.number_of_nodes()
    cap = chips[0] * chips[1] * chip.cores_per_chip
    if n > cap:
        per_layer: dict[str, int] = {}
        for name in layer_of_core:
            per_layer[name] = per_layer.get(name, 0) + 1
        worst = sorted(per_layer.items(), key=lambda kv: -kv[1])[:8]
        need = chips_needed(n, chip)
        raise DoesNotFitError(
            f"the model needs {n} cores; {chips[0]} x {chips[1]} chip(s) of '{chip.name}' have {cap} "
            f"({chip.cores_x} x {chip.cores_y} per chip). Cores per layer (largest first): "
            + ", ".join(f"{k}: {v}" for k, v in worst)
            + f". Fix: compile with --chips {need[0]}x{need[1]} (or --chips auto), or shrink the largest layers")
    W, H = chips[0] * chip.cores_x, chips[1] * chip.cores_y
    pos = PLACERS[strategy](dag, chip, W, H)
    out = np.array(pos, np.int64).reshape(n, 2)
    assert len({tuple(p) for p in out.tolist()}) == n, "placer returned overlapping positions"  # invariant
    return out


def _snake(W: int, H: int) -> list[tuple[int, int]]:
    out = []
    for y in range(H):
        xs = range(W) if y % 2 == 0 else range(W - 1, -1, -1)
        out.extend((x, y) for x in xs)
    return out


@register_placer("linear")
def place_linear(dag: nx.DiGraph, chip: ChipSpec, W: int, H: int) -> list[tuple[int, int]]:
    """Cores in index order along a snake through the grid (rows alternate direction)."""
    return _snake(W, H)[: dag.number_of_nodes()]


@register_placer("greedy")
def place_greedy(dag: nx.DiGraph, chip: ChipSpec, W: int, H: int) -> list[tuple[int, int]]:
    """Cores in topological order, each on the free position that minimises traffic-weighted
    distance to its already placed neighbours (chip crossings cost as ``chip_link/hop`` hops);
    ties go to the position nearest the host I/O port at (0, 0)."""
    n = dag.number_of_nodes()
    gx, gy = np.meshgrid(np.arange(W), np.arange(H), indexing="xy")
    gx, gy = gx.reshape(-1), gy.reshape(-1)
    free = np.ones(gx.shape[0], bool)
    cx, cy = gx // chip.cores_x, gy // chip.cores_y
    crossing_cost = chip.noc.chip_link_latency_cycles / chip.noc.hop_latency_cycles
    pos = np.full((n, 2), -1, np.int64)
    und = dag.to_undirected(as_view=False)
    try:
        order = list(nx.lexicographical_topological_sort(dag))
    except nx.NetworkXUnfeasible:
        order = list(range(n))
    base = (gx + gy).astype(np.float64) * 1e-3 + gy * 1e-6
    for c in order:
        cost = base.copy()
        for nb in und.neighbors(c):
            if pos[nb, 0] < 0:
                continue
            w = und.edges[c, nb].get("weight", 1)
            nx_, ny_ = pos[nb]
            d = np.abs(gx - nx_) + np.abs(gy - ny_)
            d = d + crossing_cost * (np.abs(cx - nx_ // chip.cores_x) + np.abs(cy - ny_ // chip.cores_y))
            cost += w * d
        cost[~free] = np.inf
        k = int(np.argmin(cost))
        free[k] = False
        pos[c] = (gx[k], gy[k])
    return [tuple(p) for p in pos.tolist()]
