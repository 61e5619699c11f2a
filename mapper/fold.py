"""Folding: several logical cores of one layer time-multiplexed on one physical core (fewer cores, more phases).

The cores of a layer that run in the same phase are grouped, in index order, into *folds* of up to ``cap``
cores whose configurations fit one core's SRAM together (``core.memory_bytes``, every logical core's weights,
neurons, axon buffer and routing table counted; a kernel slice that several tiles of a convolution share is
stored once, ``nmc.resources.shared_kernel_bytes``) and whose routing tables fit one router
(``core.router_table_entries`` in total).  The members of a fold run one after the other: member ``j`` runs
``j`` phases after the first, and the layers after it wait for the last member.  In the core map the members
are ordinary cores at the same router position in distinct (stage, phase) slots, so the emulators run them
unchanged (no new semantics); the design rules count a position's memory and table once for all its cores.

The objective (``nmc.compile(objective=...)``, ``nmc compile --objective``) picks the fold size:

* ``latency`` (default): no folding;
* ``cores``: as many logical cores per physical core as memory, router table and phase budget allow;
* ``balanced``: at most 2 per physical core;
* ``energy``: the smallest cap that needs as few chips as ``cores`` does (static power is paid per chip in
  use; every extra phase costs a barrier).

Folding adds no round (docs/numerics.md, "Rounds"): when a stage's folded phases need more rounds of
``core.phases_per_step`` phases than its unfolded phases (one round when they fit the budget), the cap is halved
until they do not.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from nmc.chip import ChipSpec
from nmc.errors import InputError
from nmc.resources import core_usage, unit_weight_bits
from nmc.rules import rounds_needed

from .connect import Wiring, phases_of
from .partition import Piece, layer_in_bytes, piece_kernel_bytes, piece_kernel_slices
from .quantize import Quantized

__all__ = ["OBJECTIVES", "fold", "fold_groups"]

OBJECTIVES = ("latency", "cores", "balanced", "energy")
_STAGE = {"static": 0, "step": 1, "readout": 2}


def _w_bits(q: Quantized, chip: ChipSpec, p: Piece) -> int:
    return unit_weight_bits(chip) if p.kind in ("merge", "relay") else q.layers[p.layer].w_bits


def _usage(q: Quantized, chip: ChipSpec, p: Piece, entries: int) -> int:
    l = q.lg.layers[p.layer]
    if p.kind == "partial":
        soma, w_bits, in_b = "partial", q.layers[p.layer].w_bits, layer_in_bytes(l, q.tq)
    elif p.kind == "merge":
        soma, w_bits, in_b = l.soma, unit_weight_bits(chip), 4
    elif p.kind == "relay":
        soma, w_bits, in_b = ("lif" if l.model.out_bits == 1 else "ann"), unit_weight_bits(chip), 1
    else:
        soma, w_bits, in_b = l.soma, q.layers[p.layer].w_bits, layer_in_bytes(l, q.tq)
    return core_usage(chip, p.n_axons, p.n_neurons, w_bits, soma, in_b, has_bias=soma != "partial",
                      router_entries=entries, kernel_bytes=piece_kernel_bytes(p, l, w_bits)).total


def _costs(q: Quantized, chip: ChipSpec, pieces: list[Piece], w: Wiring):
    """Routing-table entries, memory besides shared kernels, and the shared kernels (per core: slice -> (blocks,
    bytes)) of every core (the same for every fold size: computed once)."""
    ents = w.router_entries().tolist()
    seen: dict[tuple, int] = {}  # cores of one shape share their usage
    mem, kern = [], []
    for c, p in enumerate(pieces):
        if p.tile is not None:  # a tile's shared kernels depend on its place in the layer; folded tiles of one
            # kernel slice store it once (nmc.resources.shared_kernel_bytes)
            slices = piece_kernel_slices(p, q.lg.layers[p.layer], _w_bits(q, chip, p))
            ks: dict[tuple, tuple[int, int]] = {}
            for key, b in slices:
                ks[key] = (ks.get(key, (0, b))[0] + 1, b)
            mem.append(int(_usage(q, chip, p, ents[c])) - sum(b for _, b in slices))
            kern.append(ks)
            continue
        key = (p.layer, p.kind, p.n_axons, p.n_neurons, ents[c])
        if key not in seen:
            seen[key] = int(_usage(q, chip, p, ents[c]))
        mem.append(seen[key])
        kern.append({})
    return ents, mem, kern


def fold_groups(q: Quantized, chip: ChipSpec, pieces: list[Piece], w: Wiring, cap: int,
                costs: tuple[list[int], list[int]] | None = None) -> list[list[int]]:
    """Folds of at most ``cap`` cores (module doc); every core is in exactly one, members ascending.  ``costs``:
    :func:`_costs` of these pieces, when the caller has them."""
    C = len(pieces)
    if cap <= 1:
        return [[c] for c in range(C)]
    ents, mem, kern = costs if costs is not None else _costs(q, chip, pieces, w)
    groups: list[list[int]] = []
    slot: dict[tuple, list[int]] = {}
    for c, p in enumerate(pieces):
        slot.setdefault((p.layer, p.kind, q.lg.layers[p.layer].stage, int(w.phase[c])), []).append(c)
    for cores in slot.values():
        cur: list[int] = []
        m = e = 0  # memory and table entries of the fold so far
        most: dict[tuple, int] = {}  # blocks of each kernel slice the fold stores (once: the most any member reads)
        for c in cores:
            more = sum(b * max(0, n - most.get(key, 0)) for key, (n, b) in kern[c].items())
            if cur and (len(cur) >= cap or m + mem[c] + more > chip.core.memory_bytes
                        or e + ents[c] > chip.core.router_table_entries):
                groups.append(cur)
                cur, m, e, most = [], 0, 0, {}
                more = sum(b * n for n, b in kern[c].values())
            cur.append(c)
            m, e = m + mem[c] + more, e + ents[c]
            for key, (n, _) in kern[c].items():
                most[key] = max(most.get(key, 0), n)
        if cur:
            groups.append(cur)
    return sorted(groups)


def _phases(q: Quantized, pieces: list[Piece], pairs: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """Phases with every fold's members serialised (member j after member j - 1); ``pairs``: the wiring's
    (source, destination, delayed) core triples (``Wiring.groups.pairs()``)."""
    chain = [(g[i], g[i + 1], 0) for g in groups for i in range(len(g) - 1)]
    if chain:
        pairs = np.concatenate([pairs, np.array(chain, np.int64).T], axis=1)
    return phases_of(len(pieces), [q.lg.layers[p.layer].stage for p in pieces], pairs)


def _chips(n_phys: int, chip: ChipSpec) -> int:
    return -(-n_phys // chip.cores_per_chip)


def fold(q: Quantized, chip: ChipSpec, pieces: list[Piece], w: Wiring, objective: str) -> tuple[Wiring, list[list[int]]]:
    """The wiring with folded phases and the folds for ``objective`` (module doc)."""
    if objective not in OBJECTIVES:
        raise InputError(f"objective '{objective}' is not one of {list(OBJECTIVES)} (--objective)")
    C = len(pieces)
    if objective == "latency" or C == 0:
        return w, [[c] for c in range(C)]
    lim = chip.core.phases_per_step
    stage = np.array([_STAGE[q.lg.layers[p.layer].stage] for p in pieces], np.int64)

    def rounds(phase: np.ndarray) -> list[int]:
        return [rounds_needed(int(phase[stage == s].max(initial=-1)) + 1, lim) for s in range(3)]

    budget = rounds(w.phase)
    costs = _costs(q, chip, pieces, w)
    pairs = w.groups.pairs()

    def attempt(cap: int):
        while cap > 1:
            groups = fold_groups(q, chip, pieces, w, cap, costs)
            phase = _phases(q, pieces, pairs, groups)
            if all(a <= b for a, b in zip(rounds(phase), budget)):
                return groups, phase
            cap //= 2
        return [[c] for c in range(C)], w.phase

    caps = {"cores": C, "balanced": 2}
    if objective in caps:
        groups, phase = attempt(caps[objective])
    else:  # energy: the smallest cap reaching the chip count of the most folded mapping
        most, _ = attempt(C)
        target = _chips(len(most), chip)
        cap = 1
        groups, phase = [[c] for c in range(C)], w.phase
        while _chips(len(groups), chip) > target and cap < C:
            cap *= 2
            groups, phase = attempt(cap)
    return replace(w, phase=np.asarray(phase, np.int64)), groups
