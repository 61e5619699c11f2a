"""Route: the routing table of every core, and a summary of the static XY routes it implies.

A core's table has one entry per distinct destination core of its routes, ascending, plus one entry
for the host I/O port (destination -1, last) when the core holds a neuron of a reported graph output.
Entry ``e`` sends the routes ``rt_route_off[e] : rt_route_off[e + 1]`` (a host entry sends none: output
taps are read through ``out_src``).  This works because routes are sorted by (source core,
destination core, destination axon) (``connect``).  The tables are stored in the core map as
``rt_off`` [C + 1], ``rt_dst`` [E] and ``rt_route_off`` [E + 1] (nmc/coremap.py); the design rules
(``nmc.rules``) read their size from there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nmc.errors import PassError
from nmc.rules import count_router_entries

from .connect import RouteGroups
from .place import Placement

__all__ = ["HOST", "RouteTable", "Routes", "route", "route_table"]

#: destination of a routing-table entry that sends to the host I/O port
HOST = -1


@dataclass(frozen=True, eq=False)
class RouteTable:
    """Routing tables of all cores as flat arrays (module doc)."""

    rt_off: np.ndarray  #: [C + 1] entries of core c are rt_off[c] : rt_off[c + 1]
    rt_dst: np.ndarray  #: [E] destination core of each entry, HOST (-1) for the host I/O port
    rt_route_off: np.ndarray  #: [E + 1] routes of entry e are rt_route_off[e] : rt_route_off[e + 1]

    def entries(self) -> np.ndarray:
        """Number of entries of every core [C]."""
        return np.diff(self.rt_off)

    def entry_core(self) -> np.ndarray:
        """Source core of every entry [E]."""
        return np.repeat(np.arange(self.rt_off.shape[0] - 1, dtype=np.int64), np.diff(self.rt_off))


def route_table(groups: RouteGroups, neuron_off: np.ndarray, tap_neurons: np.ndarray) -> RouteTable:
    """The routing table of every core from its routes' (source core, destination core) runs (``groups``; routes
    sorted by source core, then destination core) and the neurons whose values go to the host (``tap_neurons``)."""
    C = neuron_off.shape[0] - 1
    n_routes = np.diff(groups.off)
    host = np.unique(np.searchsorted(neuron_off, tap_neurons, side="right") - 1) if tap_neurons.size \
        else np.zeros(0, np.int64)
    core = np.concatenate([groups.src, host]).astype(np.int64)
    dest = np.concatenate([groups.dst, np.full(host.shape[0], HOST)]).astype(np.int64)
    count = np.concatenate([n_routes, np.zeros(host.shape[0], np.int64)]).astype(np.int64)
    order = np.lexsort((np.where(dest == HOST, C, dest), core))  # per core: ascending, the host port last
    core, dest, count = core[order], dest[order], count[order]
    return RouteTable(rt_off=np.concatenate([[0], np.cumsum(np.bincount(core, minlength=C))]).astype(np.int64),
                      rt_dst=dest, rt_route_off=np.concatenate([[0], np.cumsum(count)]).astype(np.int64))


@dataclass(frozen=True, eq=False)
class Routes:
    """The result of :func:`route`: the placement and every core's routing table."""

    placement: Placement
    table: RouteTable

    def summary(self) -> dict:
        """Table sizes, the static XY hop count of every (source, destination core) entry, the placement strategy and
        its measures (``Placement.metrics``: traffic x hops, maximum link load, chip crossings) (``meta["routing"]``)."""
        t, pos = self.table, self.placement.pos
        sel = t.rt_dst != HOST
        s, d = t.entry_core()[sel], t.rt_dst[sel]
        hops = np.abs(pos[s, 0] - pos[d, 0]) + np.abs(pos[s, 1] - pos[d, 1])
        return dict(pairs=int(sel.sum()), max_table_entries=int(t.entries().max(initial=0)),
                    mean_pair_hops=float(hops.mean()) if hops.size else 0.0, max_pair_hops=int(hops.max(initial=0)),
                    relay_cores=sum(p.kind == "relay" for p in self.placement.fit.pieces),
                    placement=self.placement.strategy, **self.placement.metrics())

    def lint(self) -> None:
        """The table is consistent with the routes: per core, the distinct destination cores of its routes in
        ascending order (+ the host port, last, when it holds an output tap), each entry's range exactly the
        routes from that core to that destination, the same counts as ``nmc.rules.count_router_entries``."""
        w = self.placement.fit.wiring
        t = self.table
        C, R = w.neuron_off.shape[0] - 1, w.route_src.shape[0]
        E = t.rt_dst.shape[0]

        def bad(msg: str) -> PassError:
            return PassError(f"routes: {msg}")

        if t.rt_off.shape != (C + 1,) or t.rt_off[0] != 0 or np.any(np.diff(t.rt_off) < 0) or t.rt_off[-1] != E:
            raise bad(f"rt_off is not {C + 1} non-decreasing offsets from 0 to {E}")
        if t.rt_route_off.shape != (E + 1,) or t.rt_route_off[0] != 0 or np.any(np.diff(t.rt_route_off) < 0) \
                or t.rt_route_off[-1] != R:
            raise bad(f"rt_route_off is not {E + 1} non-decreasing offsets from 0 to {R}")
        if E and (t.rt_dst.min() < HOST or t.rt_dst.max() >= C):
            raise bad(f"a destination is outside [-1, {C})")
        expect = count_router_entries(w.neuron_off, w.axon_off, w.route_src, w.route_dst, w.tap_neurons())
        if not np.array_equal(t.entries(), expect):
            c = int(np.flatnonzero(t.entries() != expect)[0])
            raise bad(f"core {c} has {int(t.entries()[c])} entries; its routes and taps need {int(expect[c])}")
        ec = t.entry_core()
        key = np.where(t.rt_dst == HOST, C, t.rt_dst)
        if np.any((ec[1:] == ec[:-1]) & (key[1:] <= key[:-1])):
            raise bad("the entries of a core are not distinct and ascending with the host port last")
        n = np.diff(t.rt_route_off)
        if np.any((t.rt_dst == HOST) != (n == 0)):
            raise bad("an entry to a core sends no route, or the host entry sends routes")
        r_entry = np.repeat(np.arange(E), n)
        src = np.searchsorted(w.neuron_off, w.route_src, side="right") - 1
        dst = np.searchsorted(w.axon_off, w.route_dst, side="right") - 1
        if np.any(src != ec[r_entry]) or np.any(dst != t.rt_dst[r_entry]):
            raise bad("an entry's route range holds a route from another core or to another destination")


def route(p: Placement) -> Routes:
    w = p.fit.wiring
    return Routes(placement=p, table=route_table(w.groups, w.neuron_off, w.tap_neurons()))
