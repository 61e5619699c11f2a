"""Design-rule checks: "does it fit" as a list of small named rules over a core map.

Every rule returns violations (strings) that name the rule, the layer and core, the value, the
limit (with the chip field it comes from) and a fix.  :func:`check_coremap` runs them all, so a
user sees every problem at once; the mapper raises :class:`DesignRuleError` with the list, and
loading a core map refuses a file that breaks any rule.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .coremap import CoreMap, in_bytes, kblock_ranges
from .neurons import by_code
from .resources import CoreUsage, core_usage_table, position_bytes

__all__ = ["owner", "owner_table", "RULES", "check_coremap", "rounds_needed", "stage_phases", "stage_rounds", "router_entries",
           "count_router_entries", "route_pairs", "in_bytes"]

Rule = Callable[[CoreMap], list[str]]
RULES: dict[str, Rule] = {}


def _rule(name: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        assert name not in RULES, name  # internal invariant: rules are registered once, at import
        RULES[name] = fn
        return fn
    return deco


def _who(cm: CoreMap, c: int) -> str:
    layers = cm.meta.get("layers", [])
    li = int(cm.cores.layer[c])
    name = layers[li]["name"] if 0 <= li < len(layers) else f"#{li}"
    return f"layer '{name}' core {c}"


def owner(off: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The core ``c`` with ``off[c] <= i < off[c+1]`` of every index ``i`` (int32 or int64: cast before
    arithmetic that may exceed 2^31): a gather from a table of owners when there are many indices (at ResNet-50's
    36M routes, 10x faster than a binary search each)."""
    idx = np.asarray(idx)
    if idx.size > 4 * off.shape[0] and int(off[-1]) <= 4 * idx.size:
        return owner_table(off)[idx]
    return np.searchsorted(off, idx, side="right") - 1


def owner_table(off: np.ndarray) -> np.ndarray:
    """The core of every index ``0 .. off[-1] - 1`` (int32): what :func:`owner` gathers from."""
    return np.repeat(np.arange(off.shape[0] - 1, dtype=np.int32), np.diff(off))


def route_pairs(neuron_off: np.ndarray, axon_off: np.ndarray, route_src: np.ndarray,
                route_dst: np.ndarray) -> np.ndarray:
    """Distinct (source core, destination core) pairs of the routes, ``[2, P]``."""
    if not route_src.size:
        return np.zeros((2, 0), np.int64)
    n_dst = max(int(axon_off.shape[0]) - 1, 1)
    key = owner(neuron_off, route_src).astype(np.int64)
    key *= n_dst
    key += owner(axon_off, route_dst)
    if np.all(key[1:] >= key[:-1]):  # routes sorted by (source, destination core), as connect and core maps keep them
        key = key[np.concatenate([[True], key[1:] != key[:-1]])]
    else:
        key = np.unique(key)  # one 1-D sort: (source, destination) ascending
    return np.stack([key // n_dst, key % n_dst])


def count_router_entries(neuron_off: np.ndarray, axon_off: np.ndarray, route_src: np.ndarray,
                         route_dst: np.ndarray, tap_neurons: np.ndarray) -> np.ndarray:
    """Destinations each core's routing table will hold: distinct destination cores, +1 for the host port
    when the core holds a neuron of a graph output (``tap_neurons``).  The partitioner's estimate before a
    core map exists; a core map's own table (:func:`router_entries`) has exactly these counts."""
    pairs = route_pairs(neuron_off, axon_off, route_src, route_dst)
    n = np.bincount(pairs[0], minlength=len(neuron_off) - 1).astype(np.int64)
    if tap_neurons.size:
        n[np.unique(owner(neuron_off, tap_neurons))] += 1
    return n


def router_entries(cm: CoreMap) -> np.ndarray:
    """Routing-table entries of every core of ``cm``, read from its table (``cm.router``)."""
    return np.diff(cm.router.off).astype(np.int64)


@_rule("neurons-per-core")
def _neurons(cm: CoreMap) -> list[str]:
    lim = cm.chip.core.neurons
    n = np.diff(cm.cores.neuron_off)
    return [f"neurons-per-core: {_who(cm, c)} has {int(n[c])} neurons > {lim} (core.neurons of '{cm.chip.name}'); "
            "fix: recompile so the layer is split over more cores" for c in np.flatnonzero(n > lim)]


@_rule("axons-per-core")
def _axons(cm: CoreMap) -> list[str]:
    lim = cm.chip.core.axons
    n = np.diff(cm.cores.axon_off)
    return [f"axons-per-core: {_who(cm, c)} reads {int(n[c])} axons > {lim} (core.axons of '{cm.chip.name}'); "
            "fix: recompile so the layer's fan-in is split" for c in np.flatnonzero(n > lim)]


class _UsageRows:
    """Core ``i``'s :class:`CoreUsage` as ``rows[i]``, from :func:`nmc.resources.core_usage_table`'s arrays."""

    FIELDS = ("weight_bytes", "neuron_bytes", "axon_bytes", "router_bytes", "table_bytes")

    def __init__(self, tab: dict[str, np.ndarray]):
        self.tab = tab

    def __getitem__(self, i: int) -> CoreUsage:
        return CoreUsage(*(int(self.tab[k][i]) for k in self.FIELDS))


def _core_neurons(cm: CoreMap, cores: np.ndarray) -> np.ndarray:
    """Which neurons belong to the cores ``cores`` (a mask over cores): a mask over neurons."""
    return np.repeat(np.asarray(cores, bool), np.diff(np.asarray(cm.cores.neuron_off, np.int64)))


@_rule("memory-per-core")
def _memory(cm: CoreMap) -> list[str]:
    lim = cm.chip.core.memory_bytes
    out = []
    tab = core_usage_table(cm)
    us = _UsageRows(tab)
    for c in np.flatnonzero(tab["total"] > lim).tolist():
        u = us[c]
        out.append(f"memory-per-core: {_who(cm, c)} needs {u.total} B (weights {u.weight_bytes}, neurons "
                   f"{u.neuron_bytes}, axon buffer {u.axon_bytes}, routing {u.router_bytes}) > {lim} B "
                   f"(core.memory_bytes of '{cm.chip.name}'); fix: recompile (the partitioner sizes cores) or "
                   "use lower-precision weights")
    for cs in shared_positions(cm):
        total = position_bytes(cm, cs, us)  # (kernel slices they share stored once)
        if total > lim:
            out.append(f"memory-per-core: {' and '.join(_who(cm, int(c)) for c in cs)}, folded on one core at "
                       f"({int(cm.cores.x[cs[0]])}, {int(cm.cores.y[cs[0]])}), need {total} B together > {lim} B "
                       f"(core.memory_bytes of '{cm.chip.name}'); fix: recompile with a lower --objective")
    return out


@_rule("weight-precision")
def _weights(cm: CoreMap) -> list[str]:
    out = []
    allowed = cm.chip.core.weight_bits
    rng = {8: (-128, 127), 2: (-1, 1), 1: (0, 1)}
    kmin = kmax = None
    # the dense blocks' ranges at once (one reduceat over the blocks, which follow each other in the weights array)
    # when every dense block has its core's shape; else core by core below (core_weights raises on a damaged one)
    c_ = cm.cores
    w_off, data = np.asarray(c_.w_off, np.int64), cm.weights.data
    size = np.diff(w_off)
    dense = c_.w_fmt == 0
    dmin = dmax = None
    if w_off.size and w_off[0] >= 0 and w_off[-1] <= data.size and (size >= 0).all() and \
            (size[dense] == (np.diff(c_.axon_off) * np.diff(c_.neuron_off))[dense]).all():
        nz = np.flatnonzero(size > 0)
        if nz.size:
            part = data[:w_off[-1]]
            dmin, dmax = np.full(cm.num_cores, 0, np.int64), np.full(cm.num_cores, 0, np.int64)
            dmin[nz] = np.minimum.reduceat(part, w_off[nz])
            dmax[nz] = np.maximum.reduceat(part, w_off[nz])
    for c in range(cm.num_cores):
        wb = int(cm.cores.w_bits[c])
        if wb not in allowed:
            out.append(f"weight-precision: {_who(cm, c)} uses {wb}-bit weights; '{cm.chip.name}' supports "
                       f"{list(allowed)} (core.weight_bits); fix: recompile for this chip")
            continue
        if cm.cores.w_fmt[c]:  # shared kernels: the stored kernels (the dense block sums overlapping taps)
            if kmin is None:
                kmin, kmax = kblock_ranges(cm)  # every distinct kernel slice read once
            wmin, wmax = int(kmin[c]), int(kmax[c])
        elif dmin is not None:
            if not size[c]:
                continue
            wmin, wmax = int(dmin[c]), int(dmax[c])
        else:
            w = cm.core_weights(c)
            if not w.size:
                continue
            wmin, wmax = int(w.min()), int(w.max())
        lo, hi = rng[wb]
        if wmin < lo or wmax > hi:
            out.append(f"weight-precision: {_who(cm, c)} has weights in [{wmin}, {wmax}] but declares "
                       f"{wb}-bit weights ([{lo}, {hi}]); fix: recompile")
    return out


STAGES = ("static", "step", "readout")


def rounds_needed(n_phases: int, phases_per_step: int) -> int:
    """Rounds a stage of ``n_phases`` phases runs in on a chip of ``phases_per_step`` phases per round (at least 1)."""
    return max(1, -(-int(n_phases) // int(phases_per_step)))


def stage_phases(cm: CoreMap) -> dict[str, int]:
    """Phases of every stage: its largest ``cores.phase`` + 1 (0 for a stage without cores)."""
    return {st: int(cm.cores.phase[cm.cores.stage == k].max(initial=-1)) + 1 for k, st in enumerate(STAGES)}


def stage_rounds(cm: CoreMap) -> dict[str, int]:
    """Rounds of every stage as the header records them (``meta["rounds"]``); a core map without that key (written
    before rounds existed) runs every stage in 1 round.  Round ``r`` of a stage holds its phases
    ``r * core.phases_per_step`` .. ``(r + 1) * core.phases_per_step - 1`` (docs/numerics.md, "Rounds")."""
    rec = cm.meta.get("rounds") or {}
    return {st: int(rec.get(st, 1)) for st in STAGES}


@_rule("phases-per-step")
def _phases(cm: CoreMap) -> list[str]:
    """Every round of a stage within ``core.phases_per_step`` phases, and no more rounds than the phases need."""
    lim = cm.chip.core.phases_per_step
    rounds = stage_rounds(cm)
    out = []
    for k, (st, n) in enumerate(stage_phases(cm).items()):
        r = rounds[st]
        if r < 1:
            out.append(f"phases-per-step: the header gives the {st} stage {r} rounds; a stage runs in at least 1; "
                       "fix: recompile")
        elif n > r * lim:
            sel = (cm.cores.stage == k) & (cm.cores.phase >= r * lim)
            deep = sorted({_who(cm, c).split(" core")[0] for c in np.flatnonzero(sel)})
            fix = (f"recompile with depth='rounds' (--depth rounds; the stage then runs in {rounds_needed(n, lim)} "
                   "rounds, each boundary costing timing.barrier_cycles + timing.round_overhead_cycles)"
                   if r == 1 else "recompile")
            out.append(f"phases-per-step: the {st} stage needs {n} phases > {r} round(s) of {lim} (core.phases_per_step"
                       f" of '{cm.chip.name}'); layers beyond the limit: {', '.join(deep[:6])}; fix: {fix}, make the "
                       "network shallower per timestep, or avoid fan-in splits (they add a merge phase) with a "
                       "larger-core chip")
        elif r > rounds_needed(n, lim):
            out.append(f"phases-per-step: the header gives the {st} stage {r} rounds, but its {n} phases need "
                       f"{rounds_needed(n, lim)} of {lim} (core.phases_per_step of '{cm.chip.name}'); fix: recompile")
    return out


@_rule("router-table")
def _router(cm: CoreMap) -> list[str]:
    lim = cm.chip.core.router_table_entries
    n = router_entries(cm)
    out = [f"router-table: {_who(cm, c)} sends to {int(n[c])} destinations > {lim} (core.router_table_entries of "
           f"'{cm.chip.name}'); fix: place consumers of this layer on fewer cores" for c in np.flatnonzero(n > lim)]
    for cs in shared_positions(cm):
        if int(n[cs].sum()) > lim:
            out.append(f"router-table: {' and '.join(_who(cm, int(c)) for c in cs)}, folded on one router, hold "
                       f"{int(n[cs].sum())} entries together > {lim} (core.router_table_entries of '{cm.chip.name}'); "
                       "fix: recompile with a lower --objective")
    return out


@_rule("placement")
def _placement(cm: CoreMap) -> list[str]:
    x, y = cm.cores.x, cm.cores.y
    chips = cm.meta.get("chips", [1, 1])
    W, H = cm.chip.grid(int(chips[0]), int(chips[1]))
    out = []
    bad = np.flatnonzero((x < 0) | (x >= W) | (y < 0) | (y >= H))
    for c in bad:
        out.append(f"placement: {_who(cm, c)} is at ({int(x[c])}, {int(y[c])}), outside the "
                   f"{W} x {H} grid of {chips[0]} x {chips[1]} chip(s); fix: recompile with more chips")
    # cores share a position only when folded (mapper/fold.py): never two in one (stage, phase)
    xy = np.stack([x.astype(np.int64), y.astype(np.int64), cm.cores.stage.astype(np.int64),
                   cm.cores.phase.astype(np.int64)], axis=1)
    uniq, inv, counts = np.unique(xy, axis=0, return_inverse=True, return_counts=True)
    for k in np.flatnonzero(counts > 1):
        cs = np.flatnonzero(inv.reshape(-1) == k)
        out.append(f"placement: {' and '.join(_who(cm, c) for c in cs)} share position ({int(x[cs[0]])}, {int(y[cs[0]])}); "
                   f" a position holds 1 core per phase; fix: recompile")
    return out


def shared_positions(cm: CoreMap) -> list[np.ndarray]:
    """The cores of every router position that holds more than one (folded cores, mapper/fold.py)."""
    at = cm.cores.x.astype(np.int64) * (1 << 31) + cm.cores.y.astype(np.int64)
    _, inv, counts = np.unique(at, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    return [np.flatnonzero(inv == k) for k in np.flatnonzero(counts > 1)]


@_rule("accumulator-range")
def _accumulator(cm: CoreMap) -> list[str]:
    lim = 2 ** (cm.chip.core.accumulator_bits - 1)
    out = []
    for l in cm.meta.get("layers", []):
        if l.get("split") and l.get("acc_bound", 0) >= lim:
            out.append(f"accumulator-range: layer '{l['name']}' is split across cores and its worst-case sum "
                       f"{l['acc_bound']:.0f} reaches 2^{cm.chip.core.accumulator_bits - 1} (core.accumulator_bits); "
                       "split and unsplit results could differ; fix: reduce the layer's fan-in or weight range")
    return out


@_rule("soma-parameters")
def _soma(cm: CoreMap) -> list[str]:
    """Every core's and neuron's model parameters within the ranges their neuron model declares for this chip."""
    core = cm.chip.core
    out = []
    for code in np.unique(cm.cores.model):
        m = by_code(int(code))
        cores = np.flatnonzero(cm.cores.model == code)
        for i, p in enumerate(m.core_params):
            v = cm.cores.param[cores, i]
            for c in cores[(v < p.lo(core)) | (v > p.hi(core))]:
                out.append(f"soma-parameters: {_who(cm, c)} ({m.name}) has {p.name} {int(cm.cores.param[c, i])} "
                           f"outside {p.lo(core)} .. {p.hi(core)} ({p.doc}; core.membrane_bits = {core.membrane_bits}, "
                           f"core.beta_shift = {core.beta_shift}); fix: rescale the layer or recompile for this chip")
        if not m.neuron_params:
            continue
        nrn = _core_neurons(cm, cm.cores.model == code)
        for i, p in enumerate(m.neuron_params):
            v = cm.neurons.param[:, i]
            bad = nrn & ((v < p.lo(core)) | (v > p.hi(core)))
            if bad.any():
                n = int(np.argmax(bad))  # (the first, in core order)
                c = int(np.searchsorted(cm.cores.neuron_off, n, side="right") - 1)
                out.append(f"soma-parameters: {_who(cm, c)} ({m.name}) neuron {n} has {p.name} "
                           f"{int(cm.neurons.param[n, i])} outside {p.lo(core)} .. {p.hi(core)} ({p.doc}; "
                           f"core.requant_mult_bits = {core.requant_mult_bits}, core.membrane_bits = "
                           f"{core.membrane_bits}, core.beta_shift = {core.beta_shift}); fix: recompile for this chip")
    return out


@_rule("state-words")
def _state_words(cm: CoreMap) -> list[str]:
    """Every neuron's initial state words within the bits its model declares for them on this chip."""
    core = cm.chip.core
    out = []
    init = cm.neurons.state_init
    for code in np.unique(cm.cores.model):
        m = by_code(int(code))
        cores = np.flatnonzero(cm.cores.model == code)
        if not m.state or not cores.size:
            continue
        nrn = _core_neurons(cm, cm.cores.model == code)
        for i, w in enumerate(m.state):
            if i >= init.shape[1] or not nrn.any():
                continue
            bits = w.bits(core)
            lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
            v = init[:, i]
            bad = nrn & ((v < lo) | (v > hi))
            if bad.any():
                n = int(np.argmax(bad))  # (the first, in core order)
                c = int(np.searchsorted(cm.cores.neuron_off, n, side="right") - 1)
                out.append(f"state-words: {_who(cm, c)} ({m.name}) neuron {n} starts with {w.name} {int(init[n, i])} "
                           f"outside its {bits}-bit state word {lo} .. {hi}; fix: recompile (a smaller initial state)")
    return out


def check_coremap(cm: CoreMap) -> list[str]:
    """All violations of every rule, in rule order."""
    out: list[str] = []
    for fn in RULES.values():
        out.extend(fn(cm))
    return out
