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
from nmc.rules import count_router_entries

from .connect import Wiring, dataflow, phases_of
from .partition import Piece
from .quantize import Quantized

__all__ = ["add_relays", "relay_model", "RELAY_LIF_PARAMS"]

#: core parameters of a spike relay (``lif``): fires exactly when its one axon (weight 1) spiked
RELAY_LIF_PARAMS = dict(threshold=1, v_reset=0, v_leak=0, beta_mult=0, reset_mode=1, spike_ge=1, reset_delay=0)


def relay_model(out_bits: int) -> str | None:
    """The neuron model that forwards values of ``out_bits`` bits unchanged (None: not relayed)."""
    return {1: "lif", 8: "ann"}.get(int(out_bits))


def add_relays(q: Quantized, chip: ChipSpec, pieces: list[Piece], w: Wiring) -> tuple[list[Piece], Wiring]:
    """``pieces`` and ``w`` with relay cores appended (indices ``len(pieces)`` ...) for every core whose
    routing table would exceed ``chip.core.router_table_entries``; unchanged when none does."""
    E = chip.core.router_table_entries
    cap = min(chip.core.axons, chip.core.neurons)  # values one relay core can forward
    C = len(pieces)
    ents = count_router_entries(w.neuron_off, w.axon_off, w.route_src, w.route_dst, w.tap_neurons())
    over = [int(c) for c in np.flatnonzero(ents > E)]
    if not over or E < 2:
        return pieces, w
    src_core = np.searchsorted(w.neuron_off, w.route_src, side="right") - 1
    dst_core = np.searchsorted(w.axon_off, w.route_dst, side="right") - 1
    tapped = np.zeros(C, bool)
    taps = w.tap_neurons()
    if taps.size:
        tapped[np.searchsorted(w.neuron_off, taps, side="right") - 1] = True
    route_src = w.route_src.copy()
    # the routes of every source core, in route order (one stable sort instead of a scan per source)
    by_src = np.argsort(src_core, kind="stable")
    src_off = np.searchsorted(src_core[by_src], np.arange(C + 1))
    new_pieces: list[Piece] = []
    n_sizes: list[int] = []
    extra_src: list[np.ndarray] = []
    extra_dst: list[np.ndarray] = []
    for s in over:
        p = pieces[s]
        model = q.lg.layers[p.layer].model if p.kind != "partial" else get_model("partial")
        if p.kind == "partial" or relay_model(model.out_bits) is None:
            continue  # the design rules name the core
        relayed = by_src[src_off[s]:src_off[s + 1]]
        fixed = int(tapped[s])
        # the routes to every destination core, ascending (one stable sort of this source's routes)
        to = relayed[np.argsort(dst_core[relayed], kind="stable")]
        dests, first = np.unique(dst_core[to], return_index=True)
        bounds = np.append(first, to.shape[0])
        sel_of = {int(d): to[bounds[i]:bounds[i + 1]] for i, d in enumerate(dests.tolist())}
        # children of the source: ("core", d) leaves or ("relay", [children]) nodes, grouped until they fit
        children: list = [("core", int(d)) for d in dests.tolist()]
        need = {d: np.unique(route_src[sel]) for d, sel in sel_of.items()}

        def needs(node) -> np.ndarray:
            kind, v = node
            return need[v] if kind == "core" else np.unique(np.concatenate([needs(c) for c in v]))

        while len(children) + fixed > E:
            # groups of at most E children whose values fit one relay core (an axon and a neuron per value)
            groups: list[list] = []
            held = np.zeros(0, np.int64)
            for ch in children:
                u = needs(ch)
                both = np.union1d(held, u)
                if groups and len(groups[-1]) < E and both.shape[0] <= cap:
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
                    route_src[sel] = holder[w.route_src[sel] - w.neuron_off[s]]
                    continue
                U = needs((kind, v))
                r = C + len(new_pieces)
                n0 = int(w.neuron_off[-1]) + sum(n_sizes)
                a0 = int(w.axon_off[-1]) + sum(n_sizes)
                new_pieces.append(Piece(layer=p.layer, kind="relay", neurons=p.neurons[U - w.neuron_off[s]],
                                        cols=np.zeros(0, np.int64), source=s))
                n_sizes.append(int(U.shape[0]))
                extra_src.append(holder[U - w.neuron_off[s]])
                extra_dst.append(a0 + np.arange(U.shape[0], dtype=np.int64))
                h = holder.copy()
                h[U - w.neuron_off[s]] = n0 + np.arange(U.shape[0], dtype=np.int64)
                assert r == C + len(new_pieces) - 1  # internal invariant: relays are appended in order
                expand(h, v)

        expand(np.arange(w.neuron_off[s], w.neuron_off[s + 1], dtype=np.int64), children)
    if not new_pieces:
        return pieces, w
    sizes = np.array(n_sizes, np.int64)
    neuron_off = np.concatenate([w.neuron_off, w.neuron_off[-1] + np.cumsum(sizes)]).astype(np.int64)
    axon_off = np.concatenate([w.axon_off, w.axon_off[-1] + np.cumsum(sizes)]).astype(np.int64)
    r_src = np.concatenate([route_src] + extra_src).astype(np.int64)
    r_dst = np.concatenate([w.route_dst] + extra_dst).astype(np.int64)
    r_del = np.concatenate([w.route_delayed] + [np.zeros(e.shape[0], np.int8) for e in extra_src]).astype(np.int8)
    all_pieces = list(pieces) + new_pieces
    stage = [q.lg.layers[pc.layer].stage for pc in all_pieces]
    r_src, r_dst, r_del, dag, pairs = dataflow(neuron_off, axon_off, r_src, r_dst, r_del)
    phase = phases_of(len(all_pieces), stage, pairs)
    return all_pieces, replace(w, neuron_off=neuron_off, axon_off=axon_off, route_src=r_src, route_dst=r_dst,
                               route_delayed=r_del, phase=phase, dag=dag)

