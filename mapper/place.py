"""Placement strategies: put every core on a free position of the system's global core grid.

Strategies are plain functions registered by name in :data:`PLACERS` (a second registration of a
name is an error; an unknown name lists the known ones).  Each takes the core dataflow graph
(networkx, edge ``weight`` = traffic: values routed, or packets measured by the emulator; node
attribute ``host`` = values exchanged with the host I/O port) and the grid, and returns ``(x, y)`` per
core.  Every strategy is deterministic: the same graph gives the same positions.

* ``zigzag`` (also ``linear``): cores in index order along a snake through the grid, the baseline;
* ``greedy``: cores in dataflow order, each on the free position nearest its placed neighbours;
* ``locality``: recursive bisection of the traffic graph (spectral ordering, Kernighan-Lin refinement)
  onto a compact rectangle of the grid, then pairwise swaps and moves while they lower the cost;
* ``profile``: ``locality`` on traffic measured by the emulator on the user's data
  (``nmc.compile(..., placement="profile", profile_inputs=...)``).

:func:`placement_metrics` measures a placement: traffic x hops, the most traffic one link carries under
XY routing, and traffic x chip crossings.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Callable

import networkx as nx
import numpy as np
from numba import njit

from nmc.chip import MAX_SYSTEM_CORES, ChipSpec
from nmc.errors import DoesNotFitError, InputError, PassError, RegistryError

from .fit import Fit

__all__ = ["PLACERS", "Placement", "register_placer", "place", "place_fit", "chips_needed", "near_square", "placement_metrics",
           "traffic_graph", "auto_chips"]

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


def near_square(k: int) -> tuple[int, int]:
    """A grid of at least ``k`` chips, as square as it goes: ``ceil(sqrt(k)) x ceil(k / that)``."""
    cx = max(1, math.ceil(math.sqrt(k)))
    return cx, -(-k // cx)


@dataclass(frozen=True, eq=False)
class Placement:
    """The result of :func:`place_fit`: a grid of ``chips`` and the global ``(x, y)`` of every core."""

    fit: Fit
    chips: tuple[int, int]
    pos: np.ndarray  #: [C, 2] int64
    strategy: str = ""  #: the placement strategy that produced ``pos``

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
        folds = self.fit.physical()
        if len({tuple(p) for p in self.pos.tolist()}) != len(folds) or any(
                np.any(self.pos[g] != self.pos[g[0]]) for g in folds):
            raise PassError("placement: two cores share a position (only the members of a fold may)")

    def metrics(self) -> dict[str, float]:
        """:func:`placement_metrics` of this placement on the static traffic (values routed per step)."""
        g = self.fit.wiring.groups  # the dag's edges, without building it (at VGG-19's size 2.8M edges)
        return edge_metrics(g.src.astype(np.int64), g.dst.astype(np.int64), np.diff(g.off).astype(np.float64),
                            self.pos, self.fit.chip)


def traffic_graph(f: Fit, traffic: np.ndarray | None = None) -> nx.DiGraph:
    """The core dataflow graph of ``f`` with node attribute ``host`` (values the core exchanges with the host
    I/O port: input feeds and output taps) and edge ``weight`` = values routed per step, or, given
    ``traffic`` (packets each core sent, measured by the emulator, [C]), each core's packets split over its
    destinations (host port included) in proportion to the values it routes there."""
    w = f.wiring
    C = len(f.pieces)
    dag = f.wiring.dag  # (a new graph)
    feeds = np.bincount(np.searchsorted(w.axon_off, w.feed_dst, side="right") - 1, minlength=C) if w.feed_dst.size \
        else np.zeros(C, np.int64)
    taps = w.tap_neurons()
    tapped = np.bincount(np.searchsorted(w.neuron_off, taps, side="right") - 1, minlength=C) if taps.size \
        else np.zeros(C, np.int64)
    if traffic is not None:
        traffic = np.asarray(traffic, np.float64).reshape(-1)
        if traffic.shape != (C,) or not np.all(np.isfinite(traffic)) or np.any(traffic < 0):
            raise InputError(f"measured traffic has shape {traffic.shape}; expected one non-negative count per "
                             f"core ({C})")
        out_w = tapped.astype(np.float64)
        for s_, _, d in dag.edges(data=True):
            out_w[s_] += d["weight"]
        share = np.divide(traffic, out_w, out=np.zeros(C), where=out_w > 0)
        for s_, _, d in dag.edges(data=True):
            d["weight"] = float(d["weight"] * share[s_])
        tapped = tapped * share
    for c in range(C):
        dag.nodes[c]["host"] = float(feeds[c] + tapped[c])
    return dag


def place_fit(f: Fit, chips: Any = None, strategy: str = "greedy", traffic: np.ndarray | None = None) -> Placement:
    """Place the cores of ``f`` on ``chips`` (``(x, y)``; ``"auto"``: the grid of chips with the lowest modelled
    latency, :func:`auto_chips`; None: the chip's system).  ``traffic``: packets per core measured by the
    emulator (strategy ``profile`` needs it)."""
    if strategy == "profile" and traffic is None:
        raise InputError("placement 'profile' needs traffic measured by the emulator: compile with "
                         "nmc.compile(..., placement='profile', profile_inputs=...) or `nmc compile --placement "
                         "profile --profile-inputs inputs.npz`")
    if strategy not in PLACERS:
        raise RegistryError(f"unknown placement strategy '{strategy}'; known: {', '.join(sorted(PLACERS))}")
    made = [traffic_graph(f, traffic)]
    try:
        return _place_graph(f, made, chips, strategy)
    finally:
        for gr in made:  # networkx graphs sit in reference cycles (a graph and its cached node/edge views): cleared,
            gr.clear()  # their dicts go now, not at the cyclic collector's next full pass (1.2 GB at VGG-19)


def _place_graph(f: Fit, made: list, chips: Any, strategy: str) -> Placement:
    """:func:`place_fit` on the traffic graph ``made[0]`` (graphs it builds are appended to ``made``)."""
    dag = made[0]
    names = [f.quant.lg.layers[p.layer].name for p in f.pieces]
    stage = np.array([f.quant.lg.layers[p.layer].stage for p in f.pieces])
    _, stage_code = np.unique(stage, return_inverse=True) if stage.size else (None, np.zeros(0, np.int64))
    key = stage_code.astype(np.int64).reshape(-1) * (1 << 20) + f.wiring.phase
    folds = f.physical()
    gid = np.zeros(len(f.pieces), np.int64)
    for i, g in enumerate(folds):
        gid[g] = i
    if len(folds) < len(f.pieces):  # place the physical cores: the folds' quotient graph
        q = nx.DiGraph()
        made.append(q)
        q.add_nodes_from(range(len(folds)), host=0.0)
        for c in range(len(f.pieces)):
            q.nodes[int(gid[c])]["host"] += dag.nodes[c]["host"]
        for s_, d_, a in dag.edges(data=True):
            gs, gd = int(gid[s_]), int(gid[d_])
            if gs != gd:
                w = a.get("weight", 1) + (q.edges[gs, gd]["weight"] if q.has_edge(gs, gd) else 0)
                q.add_edge(gs, gd, weight=w)
        dag, names, key = q, [names[g[0]] for g in folds], key[[g[0] for g in folds]]
    if chips == "auto":
        grid, pos = auto_chips(f.chip, dag, key, strategy, names)
    else:
        if chips is None:
            chips = (f.chip.system.chips_x, f.chip.system.chips_y)
        grid = (int(chips[0]), int(chips[1]))
        pos = place(dag, f.chip, grid, strategy, names)
    return Placement(fit=f, chips=grid, pos=np.ascontiguousarray(pos[gid]), strategy=strategy)


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
        need = near_square(chips_needed(n, chip)[0])
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


@register_placer("zigzag")
@register_placer("linear")
def place_linear(dag: nx.DiGraph, chip: ChipSpec, W: int, H: int) -> list[tuple[int, int]]:
    """Cores in index order along a snake through the grid (rows alternate direction)."""
    return _snake(W, H)[: dag.number_of_nodes()]


@register_placer("greedy")
def place_greedy(dag: nx.DiGraph, chip: ChipSpec, W: int, H: int) -> list[tuple[int, int]]:
    """Cores in topological order, each on the free position that minimises traffic-weighted
    distance to its already placed neighbours (chip crossings cost as ``chip_link/hop`` hops);
    ties go to the position nearest the host I/O port at (0, 0).

    The cost is separable: the neighbours' part of position (x, y) is ``fx[x] + fy[y]`` (a weighted sum over the
    placed neighbours on a line of W, H positions), so :func:`_greedy_kernel` visits positions in increasing
    ``fx[x] + fy[y]`` and stops at the first sum above the best free position's cost: near-linear in cores where
    scanning the whole grid per core was ``O(cores x positions)`` (VGG-19's 172,501 cores on 172,800
    positions: 77 s)."""
    n = dag.number_of_nodes()
    src, dst, wt = _edges(dag)
    m = src.shape[0]
    order = _topological_order(n, src, dst)  # nx.lexicographical_topological_sort, or 0..n-1 on a cycle
    # neighbours and weights as ``dag.to_undirected()`` has them (an edge in both directions: the later one's)
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    key = lo * n + hi
    last = np.unique(key[::-1], return_index=True)[1]
    keep = np.sort(m - 1 - last)  # the last occurrence of every pair, in edge order
    lo, hi, wt = lo[keep], hi[keep], wt[keep]
    a = np.concatenate([lo, hi])
    b = np.concatenate([hi, lo])
    by = np.argsort(a, kind="stable")
    nb, w = b[by], np.concatenate([wt, wt])[by]
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(a, minlength=n), out=ptr[1:])
    crossing_cost = chip.noc.chip_link_latency_cycles / chip.noc.hop_latency_cycles
    pos = _greedy_kernel(order, ptr, nb, w, W, H, chip.cores_x, chip.cores_y, float(crossing_cost))
    return [tuple(p) for p in pos.tolist()]


@njit(cache=True, nogil=True)
def _topological_order(n, src, dst):  # pragma: no cover - compiled
    """Kahn's algorithm taking the smallest ready node first (``nx.lexicographical_topological_sort`` on integer
    nodes); ``0 .. n-1`` when the graph has a cycle."""
    indeg = np.zeros(n, np.int64)
    for e in range(src.shape[0]):
        indeg[dst[e]] += 1
    by = np.argsort(src, kind="mergesort")
    ptr = np.zeros(n + 1, np.int64)
    for e in range(src.shape[0]):
        ptr[src[e] + 1] += 1
    for i in range(n):
        ptr[i + 1] += ptr[i]
    heap = [np.int64(i) for i in range(n) if indeg[i] == 0]  # ascending: already a heap
    out = np.empty(n, np.int64)
    k = 0
    while len(heap) > 0:
        u = heapq.heappop(heap)
        out[k] = u
        k += 1
        for j in range(ptr[u], ptr[u + 1]):
            v = dst[by[j]]
            indeg[v] -= 1
            if indeg[v] == 0:
                heapq.heappush(heap, v)
    if k < n:
        return np.arange(n, dtype=np.int64)
    return out


@njit(cache=True, nogil=True)
def _abs_dev(a, out):  # pragma: no cover - compiled
    """``out[x] = sum_p a[p] |x - p|`` in O(len(a)): a pass from the left and one from the right."""
    n = a.shape[0]
    below = 0.0  # weight at positions < x
    acc = 0.0
    for x in range(n):
        acc += below
        out[x] = acc
        below += a[x]
    above = 0.0
    acc = 0.0
    for x in range(n - 1, -1, -1):
        acc += above
        out[x] += acc
        above += a[x]


@njit(cache=True, nogil=True)
def _greedy_kernel(order, ptr, nb, w, W, H, cx, cy, crossing_cost):  # pragma: no cover - compiled
    """Positions ``[n, 2]`` of :func:`place_greedy`.  A free position's cost is ``base + (fy[y] + fx[x])`` with
    ``base = (x + y) 1e-3 + y 1e-6`` (the tie-break towards the host port) and ``fx[x] = sum_nb w (|x - x_nb| +
    crossing_cost |x // cx - x_nb // cx|)`` (``fy`` alike; from the neighbours' weight per position and per chip
    column, :func:`_abs_dev`: exact for integer weights, and within rounding otherwise); the lowest cost wins, ties
    the lowest ``y W + x``.
    Positions are visited by ``x`` in increasing ``fx``, and for each by ``y`` in increasing ``fy``; since
    ``base >= 0`` and rounding is monotone, a sum ``fx[x] + fy[y]`` above the best cost so far ends the row (and
    a row whose ``fx[x] + min fy`` is above it ends the search)."""
    n = order.shape[0]
    pos = np.full((n, 2), -1, np.int64)  # (-1: not placed yet)
    taken = np.zeros(W * H, np.bool_)
    fx = np.zeros(W, np.float64)
    fy = np.zeros(H, np.float64)
    # per line: the placed neighbours' weight at every position and at every chip column (row)
    ax, ay = np.zeros(W, np.float64), np.zeros(H, np.float64)
    acx, acy = np.zeros(-(-W // cx), np.float64), np.zeros(-(-H // cy), np.float64)
    gx, gy = np.zeros(acx.shape[0], np.float64), np.zeros(acy.shape[0], np.float64)
    for c in order:
        ax[:] = 0.0
        ay[:] = 0.0
        acx[:] = 0.0
        acy[:] = 0.0
        for e in range(ptr[c], ptr[c + 1]):
            m = nb[e]
            if pos[m, 0] >= 0:
                ax[pos[m, 0]] += w[e]
                ay[pos[m, 1]] += w[e]
                acx[pos[m, 0] // cx] += w[e]
                acy[pos[m, 1] // cy] += w[e]
        # fx[x] = sum_p a[p] |x - p| + crossing_cost sum_q ac[q] |x // cx - q|, each in two passes
        _abs_dev(ax, fx)
        _abs_dev(acx, gx)
        _abs_dev(ay, fy)
        _abs_dev(acy, gy)
        for x in range(W):
            fx[x] += crossing_cost * gx[x // cx]
        for y in range(H):
            fy[y] += crossing_cost * gy[y // cy]
        ox = np.argsort(fx, kind="mergesort")
        oy = np.argsort(fy, kind="mergesort")
        fy_min = fy[oy[0]]
        best = np.inf
        bk = -1
        for i in range(W):
            x = ox[i]
            if fx[x] + fy_min > best:
                break
            for j in range(H):
                y = oy[j]
                s = fx[x] + fy[y]
                if s > best:
                    break
                k = y * W + x
                if taken[k]:
                    continue
                cost = ((x + y) * 1e-3 + y * 1e-6) + (fy[y] + fx[x])
                if cost < best or (cost == best and k < bk):
                    best = cost
                    bk = k
        taken[bk] = True
        pos[c, 0] = bk % W
        pos[c, 1] = bk // W
    return pos


# ----------------------------------------------------------------------------- metrics
def _edges(dag: nx.DiGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sources, destinations and weights (default 1) of the edges of ``dag``, in its adjacency order."""
    m = dag.number_of_edges()
    return (np.fromiter((u for u, nbrs in dag.adj.items() for _ in nbrs), np.int64, m),
            np.fromiter((v for nbrs in dag.adj.values() for v in nbrs), np.int64, m),
            np.fromiter((a.get("weight", 1) for nbrs in dag.adj.values() for a in nbrs.values()), np.float64, m))


def _max_link_load(pos: np.ndarray, s: np.ndarray, d: np.ndarray, w: np.ndarray, W: int, H: int) -> float:
    """Most traffic one directed router-to-router link carries when every edge follows its XY route (X first
    on the source's row, then Y on the destination's column)."""
    if s.size == 0:
        return 0.0
    x0, y0, x1, y1 = pos[s, 0], pos[s, 1], pos[d, 0], pos[d, 1]
    best = 0.0
    # +x links (x -> x+1) on row y0 for x in [x0, x1); -x links (x -> x-1) for x in (x1, x0]: difference arrays
    # per row (then per column for the Y part on the destination's column)
    for sign in (1, -1):
        m = (x1 - x0) * sign > 0
        best = max(best, _busiest(y0[m], np.minimum(x0, x1)[m], np.maximum(x0, x1)[m], w[m], H, W))
        m = (y1 - y0) * sign > 0
        best = max(best, _busiest(x1[m], np.minimum(y0, y1)[m], np.maximum(y0, y1)[m], w[m], W, H))
    return best


def _busiest(line: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: np.ndarray, n_lines: int, length: int) -> float:
    """Most traffic on one link when each edge loads links ``lo .. hi - 1`` of its line with ``w``."""
    diff = np.zeros((n_lines, length + 1))
    np.add.at(diff, (line, lo), w)
    np.add.at(diff, (line, hi), -w)
    return float(np.cumsum(diff, axis=1).max(initial=0))


def placement_metrics(dag: nx.DiGraph, pos: np.ndarray, chip: ChipSpec) -> dict[str, float]:
    """Measures of a placement over the core-to-core edges of ``dag`` (weight = traffic):

    * ``traffic_hops``: sum of traffic x router-to-router hops of its XY route (= Manhattan distance);
    * ``max_link_load``: the most traffic one directed link carries under XY routing;
    * ``chip_crossings``: sum of traffic x chip-to-chip links crossed.
    """
    return edge_metrics(*_edges(dag), pos, chip)


def edge_metrics(s: np.ndarray, d: np.ndarray, w: np.ndarray, pos: np.ndarray, chip: ChipSpec) -> dict[str, float]:
    """:func:`placement_metrics` of the edges ``s -> d`` with traffic ``w``."""
    pos = np.asarray(pos, np.int64).reshape(-1, 2)
    W = int(pos[:, 0].max(initial=0)) + 1
    H = int(pos[:, 1].max(initial=0)) + 1
    hops = np.abs(pos[s] - pos[d]).sum(axis=1) if s.size else np.zeros(0, np.int64)
    cx, cy = pos[:, 0] // chip.cores_x, pos[:, 1] // chip.cores_y
    cross = (np.abs(cx[s] - cx[d]) + np.abs(cy[s] - cy[d])) if s.size else np.zeros(0, np.int64)
    return dict(traffic_hops=float((w * hops).sum()), max_link_load=_max_link_load(pos, s, d, w, W, H),
                chip_crossings=float((w * cross).sum()))


# ----------------------------------------------------------------------------- locality-aware placement
def _dist(chip: ChipSpec, ax, ay, bx, by):
    """Placement cost of one unit of traffic between routers: hops, a chip-to-chip link counted as
    ``chip_link_latency / hop_latency`` hops."""
    k = chip.noc.chip_link_latency_cycles / chip.noc.hop_latency_cycles
    return (np.abs(ax - bx) + np.abs(ay - by)
            + (k - 1) * (np.abs(ax // chip.cores_x - bx // chip.cores_x) + np.abs(ay // chip.cores_y - by // chip.cores_y)))


def _compact_rect(n: int, chip: ChipSpec, W: int, H: int) -> tuple[int, int]:
    """The ``w x h`` rectangle at the host port's corner that holds ``n`` cores with the smallest diameter
    (chip crossings weighted as in :func:`_dist`), ties to the smaller area."""
    k = chip.noc.chip_link_latency_cycles / chip.noc.hop_latency_cycles
    best = None
    for w in range(1, W + 1):
        h = -(-n // w)
        if h > H:
            continue
        cost = (w + h + (k - 1) * ((w - 1) // chip.cores_x + (h - 1) // chip.cores_y), w * h, abs(w - h))
        if best is None or cost < best[0]:
            best = (cost, (w, h))
    assert best is not None  # place() checked that n cores fit the grid
    return best[1]


def _spectral_order(und: nx.Graph, nodes: list[int], rank: dict[int, int]) -> list[int]:
    """``nodes`` ordered by the Fiedler vector of their induced subgraph (per connected component, components
    in dataflow order); large sets (over 200 nodes) keep their dataflow order (a dense eigensolve would cost
    more than it gains)."""
    sub = und.subgraph(nodes)
    comps = sorted((sorted(c, key=rank.__getitem__) for c in nx.connected_components(sub)), key=lambda c: rank[c[0]])
    out: list[int] = []
    for comp in comps:
        if len(comp) <= 2 or len(comp) > 200:
            out.extend(comp)
            continue
        at = {u: i for i, u in enumerate(comp)}
        e = [(at[u], at[v], d["weight"]) for u, v, d in sub.subgraph(comp).edges(data=True)]
        i, j, w = (np.array(x) for x in zip(*e))
        L = np.zeros((len(comp), len(comp)))
        np.add.at(L, (i, j), -w)
        np.add.at(L, (j, i), -w)
        np.add.at(L, (i, i), w)
        np.add.at(L, (j, j), w)
        _, vec = np.linalg.eigh(L)
        f = vec[:, 1]
        # orient the vector so the earliest core (dataflow order) comes first: a deterministic sign
        if f[0] > 0 or (f[0] == 0 and f.sum() > 0):
            f = -f
        order = np.lexsort((np.arange(len(comp)), np.round(f, 12)))
        out.extend(comp[i] for i in order)
    return out


def _bisect(und: nx.Graph, nodes: list[int], n1: int, rank: dict[int, int], seed: int) -> tuple[list[int], list[int]]:
    """Split ``nodes`` into ``n1`` and the rest: spectral ordering, then Kernighan-Lin swaps (size preserving)."""
    order = _spectral_order(und, nodes, rank)
    a, b = order[:n1], order[n1:]
    if a and b and len(nodes) <= 400:
        sub = und.subgraph(nodes)
        if sub.number_of_edges():
            pa, pb = nx.algorithms.community.kernighan_lin_bisection(sub, partition=(set(a), set(b)), weight="weight",
                                                                     seed=seed)
            if len(pa) != len(a):  # networkx may return the two sets in either order
                pa, pb = pb, pa
            a, b = sorted(pa, key=rank.__getitem__), sorted(pb, key=rank.__getitem__)
    return a, b


def _recursive_bisection(und: nx.Graph, chip: ChipSpec, rect: tuple[int, int, int, int], rank: dict[int, int],
                         host: np.ndarray, seed: int) -> np.ndarray:
    n = und.number_of_nodes()
    pos = np.zeros((n, 2), np.int64)
    centre = np.zeros((n, 2), np.float64)
    stack = [(sorted(und.nodes, key=rank.__getitem__), rect)]
    while stack:
        nodes, (x0, y0, w, h) = stack.pop()
        if not nodes:
            continue
        centre[nodes] = (x0 + (w - 1) / 2, y0 + (h - 1) / 2)
        if len(nodes) == 1:
            # one core: the cell of the region nearest the host port
            pos[nodes[0]] = (x0, y0)
            continue
        # cut the longer side, at a chip boundary inside the region when there is one
        vertical = w >= h
        length, start, per_chip = (w, x0, chip.cores_x) if vertical else (h, y0, chip.cores_y)
        cut = length // 2
        bounds = [b - start for b in range(start + 1, start + length) if b % per_chip == 0]
        if bounds:
            cut = min(bounds, key=lambda b: (abs(b - length / 2), b))
        r1 = (x0, y0, cut, h) if vertical else (x0, y0, w, cut)
        r2 = (x0 + cut, y0, w - cut, h) if vertical else (x0, y0 + cut, w, h - cut)
        c1, c2 = r1[2] * r1[3], r2[2] * r2[3]
        m = len(nodes)
        n1 = min(c1, max(m - c2, int(round(m * c1 / (c1 + c2)))))
        a, b = _bisect(und, nodes, n1, rank, seed)
        if len(a) != len(b):
            halves = [(a, r1), (b, r2)]
        else:  # equal halves: put each on the side nearer its outside neighbours (and the host port)
            inside = set(nodes)

            def pull(part, r) -> float:
                cx, cy = r[0] + (r[2] - 1) / 2, r[1] + (r[3] - 1) / 2
                t = sum(float(host[u]) * (cx + 1 + cy) for u in part)
                for u in part:
                    for v, dd in und[u].items():
                        if v not in inside:
                            t += dd["weight"] * (abs(cx - centre[v, 0]) + abs(cy - centre[v, 1]))
                return t

            halves = [(a, r1), (b, r2)] if pull(a, r1) + pull(b, r2) <= pull(a, r2) + pull(b, r1) else [(b, r1), (a, r2)]
        stack.extend(reversed(halves))
    return pos


def _refine(und: nx.Graph, chip: ChipSpec, W: int, H: int, pos: np.ndarray, host: np.ndarray, order: list[int],
            radius: int = 2, passes: int = 8) -> np.ndarray:
    """Local refinement: for every core in turn, try the positions around the weighted median of its neighbours
    (and its own neighbourhood); move it to a free one or swap it with the core there when that lowers the
    total cost (traffic x distance, :func:`_dist`; host traffic measured to the I/O port west of (0, 0)).
    Repeats until a pass improves nothing."""
    n = pos.shape[0]
    pos = pos.copy()
    occ = np.full((W, H), -1, np.int64)
    occ[pos[:, 0], pos[:, 1]] = np.arange(n)
    nbr = [np.array(list(und[u]), np.int64) for u in range(n)]
    wts = [np.array([und[u][v]["weight"] for v in und[u]], np.float64) for u in range(n)]
    ptr = np.concatenate([[0], np.cumsum([a.shape[0] for a in nbr])]).astype(np.int64)
    flat_n = np.concatenate(nbr) if n else np.zeros(0, np.int64)
    flat_w = np.concatenate(wts) if n else np.zeros(0)

    def cost_at(us: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """Cost of core ``us[i]`` at position ``(px[i], py[i])`` given everyone else's current position."""
        cnt = ptr[us + 1] - ptr[us]
        idx = np.concatenate([np.arange(ptr[u], ptr[u + 1]) for u in us]) if cnt.sum() else np.zeros(0, np.int64)
        rx, ry = np.repeat(px, cnt), np.repeat(py, cnt)
        v = flat_n[idx]
        c = flat_w[idx] * _dist(chip, rx, ry, pos[v, 0], pos[v, 1])
        out = np.zeros(us.shape[0])
        np.add.at(out, np.repeat(np.arange(us.shape[0]), cnt), c)
        return out + host[us] * _dist(chip, px, py, -1, 0)

    for _ in range(passes):
        improved = False
        for u in order:
            nb = nbr[u]
            if nb.size == 0 and host[u] == 0:
                continue
            px, py = int(pos[u, 0]), int(pos[u, 1])
            tx, ty = px, py
            if nb.size:
                ww = wts[u]
                o = np.argsort(pos[nb, 0], kind="stable")
                tx = int(pos[nb, 0][o][np.searchsorted(np.cumsum(ww[o]), ww.sum() / 2)])
                o = np.argsort(pos[nb, 1], kind="stable")
                ty = int(pos[nb, 1][o][np.searchsorted(np.cumsum(ww[o]), ww.sum() / 2)])
            cand = {(x, y) for cx_, cy_ in ((tx, ty), (px, py))
                    for x in range(max(0, cx_ - radius), min(W, cx_ + radius + 1))
                    for y in range(max(0, cy_ - radius), min(H, cy_ + radius + 1))}
            cand.discard((px, py))
            if not cand:
                continue
            cand_a = np.array(sorted(cand), np.int64)
            qx, qy = cand_a[:, 0], cand_a[:, 1]
            uu = np.full(qx.shape[0], u)
            delta = cost_at(uu, qx, qy) - cost_at(np.array([u]), np.array([px]), np.array([py]))[0]
            occ_v = occ[qx, qy]
            sw = np.flatnonzero(occ_v >= 0)
            if sw.size:
                vs = occ_v[sw]
                dv = (cost_at(vs, np.full(sw.size, px), np.full(sw.size, py)) - cost_at(vs, qx[sw], qy[sw]))
                # an edge u-v keeps its length when the two swap; both deltas counted it as changed
                w_uv = np.array([und[u][v]["weight"] if und.has_edge(u, v) else 0.0 for v in vs.tolist()])
                dv += 2 * w_uv * _dist(chip, px, py, qx[sw], qy[sw])
                delta[sw] += dv
            k = int(np.argmin(delta))
            if delta[k] < -1e-9:
                q = (int(qx[k]), int(qy[k]))
                v = int(occ[q])
                occ[q] = u
                pos[u] = q
                occ[px, py] = v
                if v >= 0:
                    pos[v] = (px, py)
                improved = True
        if not improved:
            break
    return pos


def _locality(dag: nx.DiGraph, chip: ChipSpec, W: int, H: int, seed: int = 0) -> list[tuple[int, int]]:
    n = dag.number_of_nodes()
    if n == 0:
        return []
    und = nx.Graph()
    und.add_nodes_from(range(n))
    for s_, d_, a in dag.edges(data=True):
        if s_ == d_:
            continue
        w = float(a.get("weight", 1))
        if und.has_edge(s_, d_):
            und[s_][d_]["weight"] += w
        else:
            und.add_edge(s_, d_, weight=w)
    host = np.array([float(dag.nodes[c].get("host", 0.0)) for c in range(n)])
    try:
        topo = list(nx.lexicographical_topological_sort(dag))
    except nx.NetworkXUnfeasible:
        topo = list(range(n))
    rank = {c: i for i, c in enumerate(topo)}
    w, h = _compact_rect(n, chip, W, H)
    pos = _recursive_bisection(und, chip, (0, 0, w, h), rank, host, seed)
    pos = _refine(und, chip, W, H, pos, host, topo, passes=8 if n <= 1000 else 2)
    und.clear()  # (its dicts freed now: a networkx graph sits in a reference cycle with its cached views)
    return [tuple(p) for p in pos.tolist()]


@register_placer("locality")
def place_locality(dag: nx.DiGraph, chip: ChipSpec, W: int, H: int) -> list[tuple[int, int]]:
    """Recursive bisection of the traffic graph onto the most compact rectangle at the host port (spectral
    ordering + Kernighan-Lin per cut, cuts at chip boundaries first), then local refinement by moves and
    pairwise swaps; seeded (seed 0), so deterministic."""
    return _locality(dag, chip, W, H)


@register_placer("profile")
def place_profile(dag: nx.DiGraph, chip: ChipSpec, W: int, H: int) -> list[tuple[int, int]]:
    """``locality`` on the measured traffic (:func:`traffic_graph` with the emulator's packet counts)."""
    return _locality(dag, chip, W, H)


# ----------------------------------------------------------------------------- systems of chips
def modelled_latency(dag: nx.DiGraph, pos: np.ndarray, chip: ChipSpec, stage_phase: np.ndarray) -> float:
    """A static model of the network part of a step's latency: for every (stage, phase) of the sources, the
    longest XY path latency of its edges plus the most traffic one link carries among them (one value per
    cycle), plus the longest host-port path."""
    pos = np.asarray(pos, np.int64)
    s, d, w = _edges(dag)
    noc = chip.noc

    def lat(ax, ay, bx, by):
        cross = (np.abs(ax // chip.cores_x - bx // chip.cores_x) + np.abs(ay // chip.cores_y - by // chip.cores_y))
        hops = np.abs(ax - bx) + np.abs(ay - by)
        return 2 * noc.port_latency_cycles + (hops - cross) * noc.hop_latency_cycles + cross * noc.chip_link_latency_cycles

    total = 0.0
    W = int(pos[:, 0].max(initial=0)) + 1
    H = int(pos[:, 1].max(initial=0)) + 1
    if s.size:
        L = lat(pos[s, 0], pos[s, 1], pos[d, 0], pos[d, 1])
        key = stage_phase[s]
        for k in np.unique(key):
            m = key == k
            total += float(L[m].max()) + _max_link_load(pos, s[m], d[m], w[m], W, H)
    host = np.array([dag.nodes[c].get("host", 0.0) for c in range(pos.shape[0])])
    if np.any(host > 0):
        hc = np.flatnonzero(host > 0)
        total += float(lat(pos[hc, 0], pos[hc, 1], 0, 0).max()) + noc.io_latency_cycles
    return total


#: above this many cores ``--chips auto`` places only the grid of smallest closed-form diameter
AUTO_PLACE_MAX_CORES = 1500


def auto_chips(chip: ChipSpec, dag: nx.DiGraph, key: np.ndarray, strategy: str,
               names: list[str]) -> tuple[tuple[int, int], np.ndarray]:
    """The grid of chips for ``--chips auto`` and the positions of the nodes of ``dag`` (the physical cores;
    ``key`` their stage and phase, for the latency model): among the grids with the fewest chips that hold the cores (and
    grids of up to ``sqrt`` more chips), the three with the smallest closed-form diameter are placed with
    ``strategy``; the one with the lowest :func:`modelled_latency` wins (ties: fewer chips, squarer).  Maps
    of more than :data:`AUTO_PLACE_MAX_CORES` cores take the smallest closed-form diameter."""
    n = dag.number_of_nodes()
    k = chips_needed(n, chip)[0]
    if k * chip.cores_per_chip > MAX_SYSTEM_CORES:
        raise DoesNotFitError(f"the model needs {n} cores, {k} chips of '{chip.name}' ({k * chip.cores_per_chip} "
                              f"cores), more than nmc models ({MAX_SYSTEM_CORES})")
    slack = int(np.ceil(np.sqrt(k))) if k > 1 else 0
    grids = sorted({(cx, -(-k // cx)) for cx in range(1, k + 1)} | {(-(-k // cy), cy) for cy in range(1, k + 1)})
    grids = [g for g in grids if g[0] * g[1] <= k + slack]
    noc = chip.noc

    def diameter(g):
        W, H = chip.grid(*g)
        return ((W + H) * noc.hop_latency_cycles + (g[0] + g[1] - 2) * noc.chip_link_latency_cycles,
                g[0] * g[1], abs(g[0] - g[1]))

    best = None
    # large maps: the closed form alone picks (placing several candidates would multiply the placement time)
    cands = sorted(grids, key=diameter)[:3 if n <= AUTO_PLACE_MAX_CORES else 1]
    for g in cands:
        pos = place(dag, chip, g, strategy, names)
        if len(cands) == 1:
            return g, pos
        score = (modelled_latency(dag, pos, chip, key), g[0] * g[1], abs(g[0] - g[1]), g)
        if best is None or score < best[0]:
            best = (score, g, pos)
    assert best is not None
    return best[1], best[2]
