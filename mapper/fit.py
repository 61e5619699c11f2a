"""Fit the quantised layers onto cores: partition them into pieces, connect the pieces (routes, input
feeds, phases), and repeat with routing-table entries reserved until every core's table fits beside
its configuration.

A core's routing-table entries share its memory, but they are only known once every layer is
partitioned and connected: :func:`fit` partitions, counts each core's entries
(``nmc.rules.count_router_entries``), and partitions again with the shortfall reserved on the cores of
the layers that need it, until nothing grows (the table fits, or no reserve can help and the design
rules name the core).  Cores whose tables still exceed ``core.router_table_entries`` then get relay
cores (mapper/relay.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nmc.chip import ChipSpec
from nmc.errors import DoesNotFitError, PassError
from nmc.files import size_text
from nmc.resources import core_usage, unit_weight_bits

from .connect import Wiring, connect
from .partition import Piece, layer_in_bytes, partition, piece_kernel_bytes
from .quantize import Quantized
from .fold import fold
from .relay import add_relays

__all__ = ["Fit", "fit", "routing_shortfall"]


@dataclass(frozen=True, eq=False)
class Fit:
    """The result of :func:`fit`: core ``c`` holds ``pieces[c]``; ``wiring`` says where each of its axons
    reads from and in which phase it runs; ``reserve[layer]`` routing-table entries were kept free on
    each core of that layer."""

    quant: Quantized
    chip: ChipSpec
    pieces: list[Piece]
    wiring: Wiring
    reserve: dict[int, int]
    #: folds (mapper/fold.py): the logical cores that share one physical core, each list ascending; empty:
    #: every core on its own
    folds: list[list[int]] = field(default_factory=list)

    def physical(self) -> list[list[int]]:
        """The folds, or one core per physical core when there are none."""
        return self.folds or [[c] for c in range(len(self.pieces))]

    def lint(self) -> None:
        """Every neuron of every layer held by exactly one full/merge piece, no core over the neuron/axon
        limits, offsets and routes consistent with the pieces, one writer per axon, phases in dataflow order."""
        lg, pieces, w, c = self.quant.lg, self.pieces, self.wiring, self.chip.core
        C = len(pieces)

        def bad(msg: str) -> PassError:
            return PassError(f"fit: {msg}")

        for ci, p in enumerate(pieces):
            if not 0 <= p.layer < len(lg.layers) or p.kind not in ("full", "partial", "merge", "relay"):
                raise bad(f"core {ci} holds a {p.kind!r} piece of layer #{p.layer}")
            l = lg.layers[p.layer]
            if p.n_neurons > c.neurons or p.n_axons > c.axons:
                raise bad(f"core {ci} ({l.where()}) has {p.n_neurons} neurons / {p.n_axons} axons, over the "
                          f"core's {c.neurons} / {c.axons}")
            if p.n_neurons and (p.neurons.min() < 0 or p.neurons.max() >= l.n):
                raise bad(f"core {ci} holds a neuron outside {l.where()}")
            if p.kind == "merge":
                parts = [pieces[k] if 0 <= k < C else None for k in p.partials]
                if len(parts) < 2 or any(q is None or q.kind != "partial" or q.layer != p.layer
                                         or not np.array_equal(q.neurons, p.neurons) for q in parts):
                    raise bad(f"merge core {ci} ({l.where()}) does not sum partial cores of its own neurons")
            elif p.kind == "relay":
                if not 0 <= p.source < C or pieces[p.source].kind not in ("full", "merge") \
                        or pieces[p.source].layer != p.layer or not np.isin(p.neurons, pieces[p.source].neurons).all():
                    raise bad(f"relay core {ci} ({l.where()}) does not forward neurons of a core of its layer")
            elif p.cols.size and (p.cols.min() < 0 or p.cols.max() >= l.n_cols or np.any(np.diff(p.cols) <= 0)):
                raise bad(f"core {ci} ({l.where()}) reads input columns that are not distinct, ascending and in range")
        summed = [k for p in pieces if p.kind == "merge" for k in p.partials]
        partials = [ci for ci, p in enumerate(pieces) if p.kind == "partial"]
        if sorted(summed) != partials:
            raise bad("partial cores and the merge cores that sum them do not pair up one to one")
        for li, l in enumerate(lg.layers):
            held = [p.neurons for p in pieces if p.layer == li and p.kind in ("full", "merge")]
            count = np.bincount(np.concatenate(held), minlength=l.n) if held else np.zeros(l.n, np.int64)
            for wrong in (count > 1, count == 0):
                if wrong.any():
                    k = int(np.flatnonzero(wrong)[0])
                    raise bad(f"neuron {k} of {l.where()} is held by {int(count[k])} full/merge pieces, not 1")
        n_n = np.array([p.n_neurons for p in pieces], np.int64)
        n_a = np.array([p.n_axons for p in pieces], np.int64)
        for name, off, n in (("neuron_off", w.neuron_off, n_n), ("axon_off", w.axon_off, n_a)):
            if not np.array_equal(off, np.concatenate([[0], np.cumsum(n)])):
                raise bad(f"wiring.{name} is not the prefix sum of the pieces' sizes")
        N, A = int(w.neuron_off[-1]), int(w.axon_off[-1])
        for ci, p in enumerate(pieces):
            if p.kind in ("partial", "relay"):
                continue
            got = w.elem_neuron[lg.layers[p.layer].out][p.neurons]
            if not np.array_equal(got, w.neuron_off[ci] + np.arange(p.n_neurons)):
                raise bad(f"wiring.elem_neuron of layer '{lg.layers[p.layer].name}' disagrees with core {ci}")
        R = w.route_src.shape[0]
        if not (w.route_dst.shape[0] == w.route_delayed.shape[0] == R):
            raise bad("route arrays differ in length")
        if R and (w.route_src.min() < 0 or w.route_src.max() >= N or w.route_dst.min() < 0 or w.route_dst.max() >= A):
            raise bad("a route points outside the neuron/axon arrays")
        if w.feed_dst.size and (w.feed_dst.min() < 0 or w.feed_dst.max() >= A):
            raise bad("an input feed points outside the axon array")
        writers = np.bincount(np.concatenate([w.route_dst, w.feed_dst]).astype(np.int64), minlength=A)
        if np.any(writers != 1):
            k = int(np.flatnonzero(writers != 1)[0])
            raise bad(f"axon {k} has {int(writers[k])} writers (routes + input feeds), not 1")
        src = np.searchsorted(w.neuron_off, w.route_src, side="right") - 1
        dst = np.searchsorted(w.axon_off, w.route_dst, side="right") - 1
        if R > 1 and np.any(np.diff(np.lexsort((w.route_dst, dst, src))) != 1):
            raise bad("routes are not sorted by (source core, destination core, destination axon)")
        if w.phase.shape != (C,):
            raise bad(f"wiring.phase has shape {w.phase.shape} for {C} cores")
        stage = np.array([lg.layers[p.layer].stage for p in pieces])
        same = (w.route_delayed == 0) & (stage[src] == stage[dst]) if R else np.zeros(0, bool)
        if np.any(w.phase[dst[same]] <= w.phase[src[same]]):
            raise bad("a core reads a value of its own stage produced in the same or a later phase")
        taps = w.tap_neurons()
        if taps.size and (taps.min() < 0 or taps.max() >= N):
            raise bad("an output tap points outside the neuron array")
        if self.folds:
            if sorted(c for g in self.folds for c in g) != list(range(C)):
                raise bad("the folds do not hold every core exactly once")
            for g in self.folds:
                slots = {(stage[c], int(w.phase[c])) for c in g}
                if len({pieces[c].layer for c in g}) != 1 or len(slots) != len(g):
                    raise bad(f"fold {g} mixes layers or runs two members in one phase")


def routing_shortfall(q: Quantized, chip: ChipSpec, pieces: list[Piece], wiring: Wiring) -> dict[int, int]:
    """Layers with a core whose routing table does not fit beside its configuration, and the entries to
    reserve on that layer's cores.  A core's entries are counted as ``nmc.rules.count_router_entries``
    does (distinct destination cores, +1 for the host port when it holds an output tap)."""
    c = chip.core
    ents = wiring.router_entries()
    out: dict[int, int] = {}
    n_ent = np.minimum(ents, c.router_table_entries).tolist()  # relay cores (mapper/relay.py) keep tables in it
    layer_in = {}
    total: dict[tuple, int] = {}  # pieces of one shape share their usage: computed once per distinct shape
    for ci, p in enumerate(pieces):
        l = q.lg.layers[p.layer]
        soma = "partial" if p.kind == "partial" else l.soma
        w_bits = unit_weight_bits(chip) if p.kind == "merge" else q.layers[p.layer].w_bits
        if p.kind == "merge":
            in_b = 4
        else:
            if p.layer not in layer_in:
                layer_in[p.layer] = layer_in_bytes(l, q.tq)
            in_b = layer_in[p.layer]
        kb = piece_kernel_bytes(p, l, w_bits)
        key = (p.n_axons, p.n_neurons, w_bits, soma, in_b, n_ent[ci], kb)
        if key not in total:
            total[key] = core_usage(chip, p.n_axons, p.n_neurons, w_bits, soma, in_b, has_bias=soma != "partial",
                                    router_entries=n_ent[ci], kernel_bytes=kb).total
        if total[key] > c.memory_bytes:
            out[p.layer] = max(out.get(p.layer, 0), n_ent[ci])
    return out


#: peak host memory of the rest of a compile from its partition: a base, bytes per axon (its route, patch entry,
#: initial value, the wiring's and placement's copies) and per dense weight (the block, emit's and the rules'
#: copies).  Fitted (non-negative least squares, then scaled so that none of them is underestimated; 2026-12-04)
#: on five of the onnx wheel's light models compiled for tianjicx (ResNet-50, SqueezeNet, AlexNet, Inception v2,
#: VGG-19: 1.00-1.28x their peaks) and tested on four others (DenseNet-121, ShuffleNet, Inception v1, ZFNet-512):
#: estimates 1.05-1.18x their peaks (docs/performance.md).
HOST_BASE_BYTES = 400 << 20
HOST_BYTES_PER_AXON = 77
HOST_BYTES_PER_DENSE_WEIGHT = 3.05


def host_estimate(q: Quantized, pieces: list[Piece]) -> tuple[int, dict[int, int]]:
    """Estimated peak host bytes of compiling these pieces, and each layer's share (module constants)."""
    per: dict[int, int] = {}
    for p in pieces:
        b = HOST_BYTES_PER_AXON * p.n_axons + (HOST_BYTES_PER_DENSE_WEIGHT * p.n_axons * p.n_neurons
                                                if p.tile is None else 0)
        per[p.layer] = per.get(p.layer, 0) + int(b)
    return HOST_BASE_BYTES + sum(per.values()), per


def check_host(q: Quantized, pieces: list[Piece], budget: int | None) -> None:
    """Refuse (:class:`DoesNotFitError`) a partition whose mapping would take more host memory than ``budget``,
    before the passes that take it, naming the layers that take most."""
    if budget is None:
        return
    est, per = host_estimate(q, pieces)
    if est <= budget:
        return
    top = sorted(per.items(), key=lambda kv: -kv[1])[:3]
    n_dense = sum(1 for p in pieces if p.tile is None)
    raise DoesNotFitError(
        f"mapping '{q.lg.graph.name}' onto {len(pieces):,} cores ({n_dense:,} of them dense weight blocks) would take "
        f"about {size_text(est)} of host memory, more than the {size_text(budget)} this process can spare; most in "
        + ", ".join(f"layer '{q.lg.layers[li].name}' ({size_text(b)})" for li, b in top)
        + ". Fix: compile on a machine with more memory, or make those layers smaller; layers kept as dense blocks "
          "cost about 3 B per weight of their blocks, tiled ones (--tiles on) about 77 B per axon")


def fit(q: Quantized, chip: ChipSpec, objective: str = "latency", tiles: str = "auto",
        host_budget: int | None = None) -> Fit:
    """Partition and connect, reserving routing-table entries until every table fits, add relay cores, and
    fold cores for ``objective`` (module doc; mapper/fold.py); ``host_budget``: host bytes the mapping may take
    (refused after partitioning, before connecting, when :func:`host_estimate` says more)."""
    reserve: dict[int, int] = {}
    while True:
        pieces = partition(q, chip, reserve, tiles)
        if not reserve:
            check_host(q, pieces, host_budget)
        wiring = connect(q.lg, pieces)
        short = routing_shortfall(q, chip, pieces, wiring)
        grown = {li: n for li, n in short.items() if n > reserve.get(li, 0)}
        if not grown:  # fits, or no reserve can help (the design rules then name the core)
            hand = [wiring]  # (handed over: add_relays frees the old routes as it builds the new ones)
            del wiring
            pieces, wiring = add_relays(q, chip, pieces, hand)
            wiring, folds = fold(q, chip, pieces, wiring, objective)
            return Fit(quant=q, chip=chip, pieces=pieces, wiring=wiring, reserve=dict(reserve),
                       folds=folds if any(len(g) > 1 for g in folds) else [])
        reserve.update(grown)
        del pieces, wiring  # (freed before partitioning again: at DenseNet-121's size they are 3 GB)
