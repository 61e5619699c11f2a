"""Connect the pieces: where every axon's value comes from, and which phase every core runs in.

Produces, per core, the source of each axon: a neuron of another core (a route, delayed when it
crosses a spike state pair), or an element of a graph input (a feed from the host).  Phases are
the longest-path depth of each core in the dataflow DAG of its stage (built with networkx), which
gives exactly the step graph's semantics with no added delay.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
from numba import njit

from nmc.errors import MappingError
from nmc.coremap import AXON_INIT_RANGE, MAX_INDEX
from nmc.rules import owner, owner_table

from .lower import LayerGraph
from .partition import Piece
from .structured import concat_ranges

__all__ = ["RouteGroups", "Wiring", "connect", "dataflow", "groups_dag", "phases_of", "route_groups"]


@dataclass(frozen=True, eq=False)
class RouteGroups:
    """The routes of every (source core, destination core) pair.  Routes are sorted by (source core, destination
    core, destination axon), so a pair's routes are one run ``off[k]:off[k+1]``; pairs ascend."""

    src: np.ndarray  #: [K] source core (int32)
    dst: np.ndarray  #: [K] destination core (int32)
    off: np.ndarray  #: [K+1] route offsets (int64)
    n_delayed: np.ndarray  #: [K] how many of the run's routes are delayed (cross a spike state pair)

    def pairs(self) -> np.ndarray:
        """Distinct (source core, destination core, delayed) triples, ascending, ``[3, P]``."""
        n = np.diff(self.off)
        now, later = self.n_delayed < n, self.n_delayed > 0
        k = np.flatnonzero(now).tolist() + np.flatnonzero(later).tolist()
        d = np.concatenate([np.zeros(int(now.sum()), np.int64), np.ones(int(later.sum()), np.int64)])
        k = np.asarray(k, np.int64)
        o = np.lexsort((d, k))
        return np.stack([self.src[k[o]].astype(np.int64), self.dst[k[o]].astype(np.int64), d[o]])

    def entries(self, C: int) -> np.ndarray:
        """Destination cores of every core's routes (its routing-table entries, without the host port)."""
        return np.bincount(self.src, minlength=C).astype(np.int64)

    def of_core(self, c: int) -> slice:
        """The pairs (indices into ``src``, ``dst``, ``off``) whose source is core ``c``."""
        return slice(int(np.searchsorted(self.src, c)), int(np.searchsorted(self.src, c, side="right")))


#: routes scanned at a time by :func:`route_groups` (temporaries of this many int64s)
GROUP_CHUNK = 1 << 22


def route_groups(neuron_off: np.ndarray, axon_off: np.ndarray, route_src: np.ndarray, route_dst: np.ndarray,
                 route_delayed: np.ndarray) -> RouteGroups:
    """The :class:`RouteGroups` of routes sorted by (source core, destination core): one linear scan, a chunk of
    :data:`GROUP_CHUNK` routes at a time (at VGG-19's 170M routes, no array of the routes' size)."""
    R = int(route_src.shape[0])
    n_dst = max(int(axon_off.shape[0]) - 1, 1)
    src, dst, start = [], [], []
    prev = -1
    # many routes: each one's cores by a gather from tables of owners (int32, one per neuron and per axon; at
    # VGG-19's 170M routes 4.5 s of binary searches), else by binary search
    tables = R > 4 * (neuron_off.shape[0] + axon_off.shape[0]) and int(neuron_off[-1]) + int(axon_off[-1]) <= 4 * R
    if tables:
        s_tab, d_tab = owner_table(neuron_off), owner_table(axon_off)
    for i0 in range(0, R, GROUP_CHUNK):
        if tables:
            s = s_tab[route_src[i0:i0 + GROUP_CHUNK]].astype(np.int64)
            d = d_tab[route_dst[i0:i0 + GROUP_CHUNK]]
        else:
            s = np.searchsorted(neuron_off, route_src[i0:i0 + GROUP_CHUNK], side="right") - 1
            d = np.searchsorted(axon_off, route_dst[i0:i0 + GROUP_CHUNK], side="right") - 1
        key = s * n_dst + d
        new = np.empty(key.shape[0], bool)
        new[0] = key[0] != prev
        np.not_equal(key[1:], key[:-1], out=new[1:])
        if key[0] < prev or np.any(key[1:] < key[:-1]):
            raise AssertionError("routes are not sorted by (source core, destination core)")  # internal invariant
        i = np.flatnonzero(new)
        src.append(s[i].astype(np.int32))
        dst.append(d[i].astype(np.int32))
        start.append(i + i0)
        prev = int(key[-1])

    def cat(xs, dt):
        return np.concatenate(xs).astype(dt, copy=False) if xs else np.zeros(0, dt)

    if tables:
        del s_tab, d_tab  # (0.8 GB at VGG-19)
    starts = cat(start, np.int64)
    # delayed routes per group from the delayed ones alone (few; a reduceat with dtype=int64 would convert all R
    # routes' int8 flags to int64 first: 1.2 GB at VGG-19)
    nd = np.zeros(starts.shape[0], np.int64)
    dl = np.flatnonzero(route_delayed)
    np.add.at(nd, np.searchsorted(starts, dl, side="right") - 1, route_delayed[dl].astype(np.int64))
    return RouteGroups(src=cat(src, np.int32), dst=cat(dst, np.int32), off=np.append(starts, R).astype(np.int64),
                       n_delayed=nd)


@dataclass(frozen=True, eq=False)
class Wiring:
    neuron_off: np.ndarray  #: [C+1] prefix sums of neurons per core
    axon_off: np.ndarray  #: [C+1]
    elem_neuron: dict[str, np.ndarray]  #: layer output tensor -> global neuron index per element
    route_src: np.ndarray
    route_dst: np.ndarray
    route_delayed: np.ndarray
    feed_input: np.ndarray  #: index into the list of host inputs
    feed_elem: np.ndarray
    feed_dst: np.ndarray
    init_axons: np.ndarray  #: the axons with a nonzero value before step 0 (delayed spike state), ascending
    init_values: np.ndarray  #: their values
    host_inputs: list[str]  #: static/step graph inputs, in feed index order
    phase: np.ndarray  #: [C]
    groups: RouteGroups  #: the routes of every (source core, destination core) pair
    out_taps: list[np.ndarray]  #: neurons of each reported graph output that is not a membrane, in report order

    @property
    def dag(self) -> nx.DiGraph:
        """The core dataflow graph (edge weight = values routed), a new graph at every call: built only where it is
        used (placement), since at VGG-19's 172k cores and 2.8M edges building it takes about 4 s."""
        return groups_dag(int(self.neuron_off.shape[0]) - 1, self.groups)

    def axon_init(self) -> np.ndarray:
        """Every axon's value before step 0 (the core-map ``axons.init``; most are zero, so the wiring keeps only
        the others until emit)."""
        init = np.zeros(int(self.axon_off[-1]), np.int16)  # (values checked in connect: AXON_INIT_RANGE)
        init[self.init_axons] = self.init_values
        return init

    def router_entries(self) -> np.ndarray:
        """Every core's routing-table entries: its destination cores, +1 for the host port when it holds an output
        tap (what ``nmc.rules.count_router_entries`` counts from the routes)."""
        n = self.groups.entries(int(self.neuron_off.shape[0]) - 1)
        taps = self.tap_neurons()
        if taps.size:
            n[np.unique(owner(self.neuron_off, taps))] += 1
        return n

    def tap_neurons(self) -> np.ndarray:
        """Every neuron whose output register is sent to the host (the core-map ``out_src``)."""
        return np.concatenate(self.out_taps).astype(np.int64) if self.out_taps else np.zeros(0, np.int64)


def connect(lg: LayerGraph, pieces: list[Piece]) -> Wiring:
    g = lg.graph
    C = len(pieces)
    n_n = np.array([p.n_neurons for p in pieces], np.int64)
    n_a = np.array([p.n_axons for p in pieces], np.int64)
    neuron_off = np.concatenate([[0], np.cumsum(n_n)]).astype(np.int64)
    axon_off = np.concatenate([[0], np.cumsum(n_a)]).astype(np.int64)

    # which neuron holds each element of each layer's output
    elem_neuron: dict[str, np.ndarray] = {}
    holders: dict[int, list[int]] = {}  # layer -> the pieces that hold its outputs (all but partial cores), in order
    for ci, p in enumerate(pieces):
        if p.kind != "partial":
            holders.setdefault(p.layer, []).append(ci)
    for li, cis in holders.items():  # one assignment per layer, in piece order (at VGG-19, 143k pieces)
        l = lg.layers[li]
        if l.out not in elem_neuron:
            elem_neuron[l.out] = np.full(l.n, -1, np.int64)
        c = np.asarray(cis, np.int64)
        neurons = np.concatenate([pieces[ci].neurons for ci in cis])
        elem_neuron[l.out][neurons] = concat_ranges(neuron_off[c], n_n[c])
    for t, arr in elem_neuron.items():
        assert np.all(arr >= 0), f"tensor {t} has unplaced elements"  # internal invariant
    membranes = lg.membranes()
    out_taps = []
    for o, _ in lg.reported_outputs():
        if o in membranes:
            continue
        if lg.root(o) not in elem_neuron:
            raise MappingError(f"graph output '{o}' is not computed by any layer (it is a graph input or a state "
                               "passed through); drop it from the outputs")
        out_taps.append(elem_neuron[lg.root(o)])

    host_inputs = [n for n, k in g.inputs.items() if k in ("static", "step")]
    host_index = {n: i for i, n in enumerate(host_inputs)}
    spike_state = {}
    for s in g.states:
        out = lg.root(s.output)
        if out in elem_neuron:
            spike_state[s.input] = (out, np.broadcast_to(np.asarray(s.init, float), g.tensors[s.input].shape).reshape(-1))

    rt = route_dtype(neuron_off, axon_off)  # (int32, as the core map holds them)
    r_src, r_dst, r_del = [], [], []
    f_in, f_el, f_dst = [], [], []
    i_ax, i_val = [], []
    # merge pieces read their partials' sums (routes are sorted by dataflow() below, so their order here is free)
    # (all at once: merge core m's axon j * n + t reads neuron t of its j-th partial core, n its neurons)
    M = np.fromiter((ci for ci, p in enumerate(pieces) if p.kind == "merge"), np.int64)
    if M.shape[0]:
        parts = [pieces[ci].partials for ci in M.tolist()]
        n_p = np.fromiter((len(x) for x in parts), np.int64, M.shape[0])
        P = np.fromiter((j for x in parts for j in x), np.int64, int(n_p.sum()))
        r_src.append(concat_ranges(neuron_off[P], np.repeat(n_n[M], n_p)).astype(rt))  # (a partial: its merge's n)
        r_dst.append(concat_ranges(axon_off[M], n_p * n_n[M]).astype(rt))
        r_del.append(np.zeros(r_dst[-1].shape[0], np.int8))
    # the other pieces read their columns: one pass per layer over all its pieces' columns
    by_layer: dict[int, list[int]] = {}
    for ci, p in enumerate(pieces):
        if p.kind != "merge":
            by_layer.setdefault(p.layer, []).append(ci)
    for li, cis in by_layer.items():
        l = lg.layers[li]
        n_cols = np.array([pieces[ci].cols.shape[0] for ci in cis], np.int64)
        cols = np.concatenate([pieces[ci].cols for ci in cis]).astype(np.int64, copy=False) if cis else np.zeros(0, np.int64)
        start = np.cumsum(n_cols) - n_cols
        axons_all = np.repeat(axon_off[np.asarray(cis, np.int64)] - start, n_cols) + np.arange(cols.shape[0])
        col_off = np.concatenate([[0], np.cumsum(l.in_sizes)]).astype(np.int64)
        # one input and no padding column: every column is an element of it (no selection: at VGG-19's size that
        # saves five passes over 156M columns)
        one = len(l.inputs) == 1 and (cols.size == 0 or int(cols.min()) >= 0)
        which = None if one else np.searchsorted(col_off, cols, side="right") - 1
        for ti, t in enumerate(l.inputs):
            if one:
                elems, axons = cols, axons_all
            else:
                sel = np.flatnonzero(which == ti)
                elems = cols[sel] - col_off[ti]
                axons = axons_all[sel]
            n = int(elems.shape[0])
            if n == 0:
                continue
            if t in elem_neuron:
                r_src.append(elem_neuron[t][elems].astype(rt))
                r_dst.append(axons.astype(rt))
                r_del.append(np.zeros(n, np.int8))
            elif t in spike_state:
                out, init = spike_state[t]
                r_src.append(elem_neuron[out][elems].astype(rt))
                r_dst.append(axons.astype(rt))
                r_del.append(np.ones(n, np.int8))
                v = np.round(init[elems]).astype(np.int64)
                lo, hi = AXON_INIT_RANGE
                if v.size and (int(v.min()) < lo or int(v.max()) > hi):
                    k = int(np.argmax((v < lo) | (v > hi)))
                    raise MappingError(f"{l.where()}: state '{t}' starts at {int(v[k])} (element {int(elems[k])}), "
                                       f"beyond an axon's initial value range [{lo}, {hi}] (core-map axons.init); "
                                       "a state pair's initial value is a spike or an activation: rescale it")
                i_ax.append(axons[v != 0])
                i_val.append(v[v != 0])
            elif t in host_index:
                f_in.append(np.full(n, host_index[t], np.int32))
                f_el.append(elems)
                f_dst.append(axons)
            else:
                raise MappingError(f"{l.where()}: input '{t}' comes from neither a layer, a spike state pair nor "
                                   "a graph input; membrane and count states cannot feed other layers")

    def cat(xs, dt):
        return np.concatenate(xs).astype(dt, copy=False) if xs else np.zeros(0, dt)

    if f_dst:  # feeds in piece order, then input order, then axon order (as the cores read them)
        ti_of = np.concatenate([np.full(x.shape[0], i, np.int64) for i, x in enumerate(f_dst)])
        fd = cat(f_dst, np.int64)
        core = np.searchsorted(axon_off, fd, side="right") - 1
        o = np.lexsort((fd, ti_of, core))
        f_in, f_el, f_dst = [cat(f_in, np.int32)[o]], [cat(f_el, np.int64)[o]], [fd[o]]

    routes = [cat(r_src, rt), cat(r_dst, rt), cat(r_del, np.int8)]
    del r_src, r_dst, r_del
    rs, rd, rl = sort_routes(neuron_off, axon_off, routes)
    route_src, route_dst, route_delayed, groups = dataflow(neuron_off, axon_off, rs, rd, rl, is_sorted=True)
    del rs, rd, rl
    stage = [lg.layers[p.layer].stage for p in pieces]
    try:
        phase = phases_of(C, stage, groups.pairs())
    except nx.NetworkXUnfeasible as e:
        names = sorted({lg.layers[pieces[s].layer].name for s, _ in e.args[1]})
        raise MappingError(f"layers {names} form a loop inside one timestep; a recurrence must go through a "
                           "spike state pair (previous step's spikes)") from None
    i_ax = cat(i_ax, np.int64)
    o = np.argsort(i_ax, kind="stable")
    return Wiring(neuron_off=neuron_off, axon_off=axon_off, elem_neuron=elem_neuron, route_src=route_src,
                  route_dst=route_dst, route_delayed=route_delayed, feed_input=cat(f_in, np.int32),
                  feed_elem=cat(f_el, np.int64), feed_dst=cat(f_dst, np.int64), init_axons=i_ax[o],
                  init_values=cat(i_val, np.int64)[o],
                  host_inputs=host_inputs, phase=phase, groups=groups, out_taps=out_taps)


def _route_order(neuron_off: np.ndarray, axon_off: np.ndarray, route_src: np.ndarray, route_dst: np.ndarray):
    """The order sorting routes by (source core, destination core, destination axon): an axon's core grows with
    the axon, so (source core, destination axon) orders them; one 1-D key, stable for two writes to one axon."""
    key = owner(neuron_off, route_src).astype(np.int64)
    key *= int(axon_off[-1]) + 1
    key += route_dst
    return np.argsort(key, kind="stable")


@njit(cache=True, nogil=True)
def _axon_slots(route_dst, slot):
    """``slot[a] = r`` for the route ``r`` that writes axon ``a`` (slots start at -1); False if an axon has two
    writers."""
    for r in range(route_dst.shape[0]):
        a = route_dst[r]
        if slot[a] >= 0:
            return False
        slot[a] = r
    return True


@njit(cache=True, nogil=True)
def _scatter_by_source(slot, s_tab, route_src, route_delayed, n_cores, out_src, out_dst, out_del):
    """Routes in (source core, destination axon) order into ``out_*``: a counting sort by source core, visiting the
    routes in axon order (``slot``)."""
    R = route_src.shape[0]
    start = np.zeros(n_cores + 1, np.int64)
    for r in range(R):
        start[s_tab[route_src[r]] + 1] += 1
    for c in range(n_cores):
        start[c + 1] += start[c]
    for a in range(slot.shape[0]):
        r = slot[a]
        if r < 0:
            continue
        c = s_tab[route_src[r]]
        p = start[c]
        start[c] = p + 1
        out_src[p] = route_src[r]
        out_dst[p] = a
        out_del[p] = route_delayed[r]


def route_dtype(neuron_off: np.ndarray, axon_off: np.ndarray):
    """The type of route indices: int32, the core map's (``nmc.coremap.MAX_INDEX``), while neurons and axons fit it
    (emit refuses a map that does not)."""
    return np.int32 if max(int(neuron_off[-1]), int(axon_off[-1])) <= MAX_INDEX else np.int64


def sort_routes(neuron_off: np.ndarray, axon_off: np.ndarray, routes: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Routes ``[src, dst, delayed]`` (any integer types) sorted by (source core, destination axon), their indices as
    :func:`route_dtype` says, delays int8.  The list's arrays are released as they are read (at VGG-19's 156M routes,
    a stable argsort of a 1-D key took 8 s and five arrays of the routes' size; this is a counting sort by source
    core in axon order, O(routes + axons)).  When an axon has two writers, which no mapping makes, the argsort
    orders them stably."""
    rs, rd, rl = routes
    routes.clear()
    dt = route_dtype(neuron_off, axon_off)
    A = int(axon_off[-1])
    slot = np.full(A, -1, np.int32 if rd.shape[0] < 2 ** 31 - 1 else np.int64)
    if not _axon_slots(rd, slot):
        del slot
        o = _route_order(neuron_off, axon_off, rs, rd)
        return rs[o].astype(dt, copy=False), rd[o].astype(dt, copy=False), rl[o].astype(np.int8, copy=False)
    del rd
    R = int(rs.shape[0])
    out = (np.empty(R, dt), np.empty(R, dt), np.empty(R, np.int8))
    _scatter_by_source(slot, owner_table(neuron_off), rs, rl, int(neuron_off.shape[0]) - 1, *out)
    return out


def dataflow(neuron_off: np.ndarray, axon_off: np.ndarray, route_src: np.ndarray, route_dst: np.ndarray,
             route_delayed: np.ndarray, is_sorted: bool = False):
    """Routes sorted by (source core, destination core, destination axon) and their :class:`RouteGroups`
    (``is_sorted``: the routes are in that order already)."""
    if not is_sorted:
        route_src, route_dst, route_delayed = sort_routes(neuron_off, axon_off, [route_src, route_dst, route_delayed])
    groups = route_groups(neuron_off, axon_off, route_src, route_dst, route_delayed)
    return route_src, route_dst, route_delayed, groups


def groups_dag(C: int, groups: RouteGroups) -> nx.DiGraph:
    """The core dataflow graph of ``C`` cores: an edge per (source core, destination core) pair, weight = its
    routes (values routed per step)."""
    dag = nx.DiGraph()
    dag.add_nodes_from(range(C))
    dag.add_weighted_edges_from(zip(groups.src.tolist(), groups.dst.tolist(), np.diff(groups.off).tolist()))
    return dag


def phases_of(C: int, stage: list[str], pairs: np.ndarray) -> np.ndarray:
    """Phase of every core: its longest path within its stage over non-delayed edges (``pairs`` as
    :func:`dataflow` gives them).  A loop raises ``networkx.NetworkXUnfeasible(message, cycle edges)``."""
    phase = np.zeros(C, np.int64)
    codes: dict[str, int] = {}
    st = np.array([codes.setdefault(x, len(codes)) for x in stage], np.int64).reshape(-1)
    pairs = np.asarray(pairs, np.int64).reshape(3, -1)
    keep = (pairs[2] == 0) & (st[pairs[0]] == st[pairs[1]]) if pairs.shape[1] else np.zeros(0, bool)
    src, dst = pairs[0, keep], pairs[1, keep]
    # longest path by levels (Kahn): a core's phase is final once every core it reads from is done
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    off = np.searchsorted(src, np.arange(C + 1))
    indeg = np.bincount(dst, minlength=C)
    frontier = np.flatnonzero(indeg == 0)
    done = 0
    while frontier.size:
        done += frontier.size
        n_out = off[frontier + 1] - off[frontier]
        e = np.repeat(off[frontier] - np.cumsum(n_out) + n_out, n_out) + np.arange(int(n_out.sum()))
        d = dst[e]
        np.maximum.at(phase, d, phase[src[e]] + 1)
        np.subtract.at(indeg, d, 1)
        cand = np.unique(d)
        frontier = cand[indeg[cand] == 0]
    if done < C:  # a loop: name its edges as networkx finds them
        sub = nx.DiGraph()
        sub.add_nodes_from(range(C))
        sub.add_edges_from(zip(src.tolist(), dst.tolist()))
        raise nx.NetworkXUnfeasible("a loop inside one timestep", nx.find_cycle(sub))
    return phase
