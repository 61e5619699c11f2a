"""Fan-out by relay cores: when a core's values go to more destination cores than its routing table holds
(``core.router_table_entries``), ordinary cores forward them (TianjicX multicasts this way).

A *relay* core holds one neuron per value it forwards: an axon per value, weight 1 from that axon to its
neuron (``unit_weight_bits``), and a soma that passes the value through unchanged, so the destinations read
exactly the values the source computed in the same step:

* 8-bit values (ANN, count cores): the ``ann`` soma with ``mult = 1, shift = 0`` and the source's output range;
* spikes: the ``lif`` soma with ``threshold = 1`` (fire on ``>=``), no leak (``beta_mult = 0``, ``v_leak = 0``),
  reset to 0, so it fires exactly when its one axon spiked.

A relay runs in the source's stage, one phase after its parent, so the layers after it run later: relays add
phases, cycles and energy that the emulator counts like any core's (no new semantics).  The destinations of
a source are grouped, in ascending core order, into relays of at most ``router_table_entries`` destinations
each, and relays into relays, until the source's table holds its relays and its host port.  A delayed
(recurrent) route keeps its delay on the relay's last hop: the relays run in the step that computed the
spikes, and the destination reads them at the next step, as before.  Partial sums are never relayed (a
partial core sends to one merge core).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from nmc.chip import ChipSpec
from nmc.neurons import get_model

from .connect import RouteGroups, Wiring, dataflow, phases_of, route_dtype
from .partition import Piece
from .quantize import Quantized

__all__ = ["add_relays", "relay_model", "RELAY_LIF_PARAMS"]

#: core parameters of a spike relay (``lif``): fires exactly when its one axon (weight 1) spiked
RELAY_LIF_PARAMS = dict(threshold=1, v_reset=0, v_leak=0, beta_mult=0, reset_mode=1, spike_ge=1, reset_delay=0)


def relay_model(out_bits: int) -> str | None:
    """The neuron model that forwards values of ``out_bits`` bits unchanged (None: not relayed)."""
    return {1: "lif", 8: "ann"}.get(int(out_bits))


def add_relays(q: Quantized, chip: ChipSpec, pieces: list[Piece], w: Wiring | list[Wiring]) -> tuple[list[Piece], Wiring]:
    """``pieces`` and ``w`` with relay cores appended (indices ``len(pieces)`` ...) for every core whose
    routing table would exceed ``chip.core.router_table_entries``; unchanged when none does.  ``w`` given as a
    one-element list hands the wiring over: the list is emptied and the old route arrays are freed one by one as
    the new ones are built (else both sets live at once: 2 x 1.3 GB at VGG-19)."""
    handed = w if isinstance(w, list) else None
    if handed is not None:
        w = handed[0]
    E = chip.core.router_table_entries
    cap = min(chip.core.axons, chip.core.neurons)  # values one relay core can forward
    C = len(pieces)
    ents = w.router_entries()
    over = [int(c) for c in np.flatnonzero(ents > E)]
    if not over or E < 2:
        return pieces, w
    g = w.groups
    taps = w.tap_neurons()
    tapped = np.zeros(C, bool)
    if taps.size:
        tapped[np.searchsorted(w.neuron_off, taps, side="right") - 1] = True
    new_pieces: list[Piece] = []
    n_sizes: list[int] = []
    # only the routes of the cores over their tables change: each such core's routes (one run, routes being sorted
    # by source core) are taken out, given their new sources, and put back with the relays' routes
    touched: list[tuple[int, int]] = []  # (first, end) route range of every relayed core, ascending
    t_src: list[np.ndarray] = []  # the touched routes' new sources, destinations and delays, and the relays' routes
    t_dst: list[np.ndarray] = []
    t_del: list[np.ndarray] = []
    for s in over:
        p = pieces[s]
        model = q.lg.layers[p.layer].model if p.kind != "partial" else get_model("partial")
        if p.kind == "partial" or relay_model(model.out_bits) is None:
            continue  # the design rules name the core
        gs = g.of_core(s)
        lo, hi = int(g.off[gs.start]), int(g.off[gs.stop])
        route_src = w.route_src[lo:hi].copy()  # this core's routes, their sources changed below
        fixed = int(tapped[s])
        # the routes to every destination core (ascending), as positions in route_src
        sel_of = {int(d): np.arange(int(g.off[k]) - lo, int(g.off[k + 1]) - lo)
                  for k, d in zip(range(gs.start, gs.stop), g.dst[gs].tolist())}
        dests = g.dst[gs]
        # children of the source: ("core", d) leaves or ("relay", [children]) nodes, grouped until they fit
        children: list = [("core", int(d)) for d in dests.tolist()]
        n_s = int(w.neuron_off[s + 1] - w.neuron_off[s])
        masks: dict[int, np.ndarray] = {}

        def needs_mask(node) -> np.ndarray:
            """The source's neurons a node's destinations read, as a mask over them (unions by ``|``: a union1d per
            child was 2.5 s at VGG-19's size)."""
            kind, v = node
            if kind == "core":
                if v not in masks:
                    masks[v] = np.zeros(n_s, bool)
                    masks[v][w.route_src[lo + sel_of[v]] - w.neuron_off[s]] = True
                return masks[v]
            out = np.zeros(n_s, bool)
            for c in v:
                out |= needs_mask(c)
            return out

        def needs(node) -> np.ndarray:
            """The same as global neuron indices, ascending."""
            return w.neuron_off[s] + np.flatnonzero(needs_mask(node))

        while len(children) + fixed > E:
            # groups of at most E children whose values fit one relay core (an axon and a neuron per value)
            groups: list[list] = []
            held = np.zeros(n_s, bool)
            for ch in children:
                u = needs_mask(ch)
                both = held | u
                if groups and len(groups[-1]) < E and int(np.count_nonzero(both)) <= cap:
                    groups[-1].append(ch)
                    held = both
                else:
                    groups.append([ch])
                    held = u
            if len(groups) >= len(children):
                break  # no grouping fits a relay core: the design rules name the core
            children = [g[0] if len(g) == 1 else ("relay", g) for g in groups]  # a lone child needs no relay

        def expand(holder: np.ndarray, kids: list) -> None:
            """Route ``kids`` from the neurons in ``holder`` (global neuron of the parent holding each of the
            source's neurons, indexed by source neuron - neuron_off[s])."""
            for kind, v in kids:
                if kind == "core":
                    sel = sel_of[v]
                    route_src[sel] = holder[w.route_src[lo + sel] - w.neuron_off[s]]
                    continue
                U = needs((kind, v))
                r = C + len(new_pieces)
                n0 = int(w.neuron_off[-1]) + sum(n_sizes)
                a0 = int(w.axon_off[-1]) + sum(n_sizes)
                new_pieces.append(Piece(layer=p.layer, kind="relay", neurons=p.neurons[U - w.neuron_off[s]],
                                        cols=np.zeros(0, np.int64), source=s))
                n_sizes.append(int(U.shape[0]))
                t_src.append(holder[U - w.neuron_off[s]])
                t_dst.append(a0 + np.arange(U.shape[0], dtype=np.int64))
                t_del.append(np.zeros(U.shape[0], np.int8))
                h = holder.copy()
                h[U - w.neuron_off[s]] = n0 + np.arange(U.shape[0], dtype=np.int64)
                assert r == C + len(new_pieces) - 1  # internal invariant: relays are appended in order
                expand(h, v)

        n_before = len(new_pieces)
        expand(np.arange(w.neuron_off[s], w.neuron_off[s + 1], dtype=np.int64), children)
        if len(new_pieces) > n_before:
            touched.append((lo, hi))
            t_src.append(route_src)
            t_dst.append(w.route_dst[lo:hi])
            t_del.append(w.route_delayed[lo:hi])
    if not new_pieces:
        return pieces, w
    sizes = np.array(n_sizes, np.int64)
    neuron_off = np.concatenate([w.neuron_off, w.neuron_off[-1] + np.cumsum(sizes)]).astype(np.int64)
    axon_off = np.concatenate([w.axon_off, w.axon_off[-1] + np.cumsum(sizes)]).astype(np.int64)
    # the touched routes and the relays' in (source core, destination core, axon) order, then spliced into the
    # untouched ones: a relayed core's stay where its run was, the relay cores' (indices C ...) go last
    dt = route_dtype(neuron_off, axon_off)
    ts, td, tl, tg = dataflow(neuron_off, axon_off, np.concatenate(t_src).astype(dt),
                                 np.concatenate(t_dst).astype(dt), np.concatenate(t_del).astype(np.int8))
    seg_src, seg_dst, seg_del, seg_groups = [], [], [], []
    old_src, old_dst, old_del = w.route_src, w.route_dst, w.route_delayed
    del t_src, t_dst, t_del  # (views of the old routes among them)
    if handed is not None:  # (the old wiring without its routes: the only references to them are the three above)
        handed.clear()
        w = replace(w, route_src=old_src[:0].copy(), route_dst=old_dst[:0].copy(), route_delayed=old_del[:0].copy())
    prev = 0
    for lo, hi in touched + [(int(old_src.shape[0]), int(old_src.shape[0]))]:
        s = int(np.searchsorted(w.neuron_off, old_src[lo], side="right") - 1) if lo < hi else C
        seg_src.append(old_src[prev:lo])
        seg_dst.append(old_dst[prev:lo])
        seg_del.append(old_del[prev:lo])
        seg_groups.append((g, int(np.searchsorted(g.off, prev)), int(np.searchsorted(g.off, lo))))
        t0 = int(np.searchsorted(tg.src, s))
        t1 = int(np.searchsorted(tg.src, s, side="right")) if lo < hi else int(tg.src.shape[0])
        a, b = int(tg.off[t0]), int(tg.off[t1])
        seg_src.append(ts[a:b])
        seg_dst.append(td[a:b])
        seg_del.append(tl[a:b])
        seg_groups.append((tg, t0, t1))
        prev = hi
    r_src = np.concatenate(seg_src).astype(dt, copy=False)
    del seg_src, old_src  # (each old array freed before the next new one, when the wiring was handed over)
    r_dst = np.concatenate(seg_dst).astype(dt, copy=False)
    del seg_dst, old_dst
    r_del = np.concatenate(seg_del).astype(np.int8, copy=False)
    del seg_del, old_del
    groups = _splice_groups(seg_groups)
    all_pieces = list(pieces) + new_pieces
    stage = [q.lg.layers[pc.layer].stage for pc in all_pieces]
    phase = phases_of(len(all_pieces), stage, groups.pairs())
    return all_pieces, replace(w, neuron_off=neuron_off, axon_off=axon_off, route_src=r_src, route_dst=r_dst,
                               route_delayed=r_del, phase=phase, groups=groups)


def _splice_groups(segs: list[tuple[RouteGroups, int, int]]) -> RouteGroups:
    """The groups of routes joined from runs of groups ``(groups, first, end)``, in order."""
    src, dst, nd, n = [], [], [], []
    for gr, k0, k1 in segs:
        src.append(gr.src[k0:k1])
        dst.append(gr.dst[k0:k1])
        nd.append(gr.n_delayed[k0:k1])
        n.append(np.diff(gr.off[k0:k1 + 1]))
    n = np.concatenate(n).astype(np.int64)
    return RouteGroups(src=np.concatenate(src).astype(np.int32), dst=np.concatenate(dst).astype(np.int32),
                       off=np.concatenate([[0], np.cumsum(n)]).astype(np.int64),
                       n_delayed=np.concatenate(nd).astype(np.int64))
