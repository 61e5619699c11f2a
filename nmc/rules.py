"""Design-rule checks: "does it fit" as a list of small named rules over a core map.

Every rule returns violations (strings) that name the rule, the layer and core, the value, the
limit (with the chip field it comes from) and a fix.  :func:`check_coremap` runs them all, so a
user sees every problem at once; the mapper raises :class:`DesignRuleError` with the list, and
loading a core map refuses a file that breaks any rule.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from nmc.coremap import SOMA, CoreMap, in_bytes

from nmc.resources import core_usage

__all__ = ["RULES", "check_coremap", "router_entries", "count_router_entries", "route_pairs", "in_bytes"]

Rule = Callable[[CoreMap], list[str]]
RULES: dict[str, Rule] = {}
_SOMA_NAME = {v: k for k, v in SOMA.items()}


def _rule(name: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        assert name not in RULES, name  # internal invariant: rules are registered once, at import
        RULES[name] = fn
        return fn
    return deco


def _who(cm: CoreMap, c: int) -> str:
    layers = cm.meta.get("layers", [])
    li = int(cm.arrays["core_layer"][c])
    name = layers[li]["name"] if 0 <= li < len(layers) else f"#{li}"
    return f"layer '{name}' core {c}"


def route_pairs(neuron_off: np.ndarray, axon_off: np.ndarray, route_src: np.ndarray,
                route_dst: np.ndarray) -> np.ndarray:
    """Distinct (source core, destination core) pairs of the routes, ``[2, P]``."""
    if not route_src.size:
        return np.zeros((2, 0), np.int64)
    src = np.searchsorted(neuron_off, route_src, side="right") - 1
    dst = np.searchsorted(axon_off, route_dst, side="right") - 1
    return np.unique(np.stack([src, dst]), axis=1)


def count_router_entries(neuron_off: np.ndarray, axon_off: np.ndarray, route_src: np.ndarray,
                         route_dst: np.ndarray, tap_neurons: np.ndarray) -> np.ndarray:
    """Destinations each core's routing table will hold: distinct destination cores, +1 for the host port
    when the core holds a neuron of a graph output (``tap_neurons``).  The partitioner's estimate before a
    core map exists; a core map's own table (:func:`router_entries`) has exactly these counts."""
    pairs = route_pairs(neuron_off, axon_off, route_src, route_dst)
    n = np.bincount(pairs[0], minlength=len(neuron_off) - 1).astype(np.int64)
    if tap_neurons.size:
        n[np.unique(np.searchsorted(neuron_off, tap_neurons, side="right") - 1)] += 1
    return n


def router_entries(cm: CoreMap) -> np.ndarray:
    """Routing-table entries of every core of ``cm``, read from its table (``rt_off``)."""
    return np.diff(cm.arrays["rt_off"]).astype(np.int64)


@_rule("neurons-per-core")
def _neurons(cm: CoreMap) -> list[str]:
    lim = cm.chip.core.neurons
    n = np.diff(cm.arrays["core_neuron_off"])
    return [f"neurons-per-core: {_who(cm, c)} has {int(n[c])} neurons > {lim} (core.neurons of '{cm.chip.name}'); "
            "fix: recompile so the layer is split over more cores" for c in np.flatnonzero(n > lim)]


@_rule("axons-per-core")
def _axons(cm: CoreMap) -> list[str]:
    lim = cm.chip.core.axons
    n = np.diff(cm.arrays["core_axon_off"])
    return [f"axons-per-core: {_who(cm, c)} reads {int(n[c])} axons > {lim} (core.axons of '{cm.chip.name}'); "
            "fix: recompile so the layer's fan-in is split" for c in np.flatnonzero(n > lim)]


@_rule("memory-per-core")
def _memory(cm: CoreMap) -> list[str]:
    a = cm.arrays
    lim = cm.chip.core.memory_bytes
    nn, na = np.diff(a["core_neuron_off"]), np.diff(a["core_axon_off"])
    ents, ib = router_entries(cm), in_bytes(cm)
    out = []
    for c in range(cm.num_cores):
        soma = _SOMA_NAME[int(a["core_soma"][c])]
        u = core_usage(cm.chip, int(na[c]), int(nn[c]), int(a["core_w_bits"][c]), soma, int(ib[c]),
                       has_bias=soma != "partial", router_entries=int(ents[c]))
        if u.total > lim:
            out.append(f"memory-per-core: {_who(cm, c)} needs {u.total} B (weights {u.weight_bytes}, neurons "
                       f"{u.neuron_bytes}, axon buffer {u.axon_bytes}, routing {u.router_bytes}) > {lim} B "
                       f"(core.memory_bytes of '{cm.chip.name}'); fix: recompile (the partitioner sizes cores) or "
                       "use lower-precision weights")
    return out


@_rule("weight-precision")
def _weights(cm: CoreMap) -> list[str]:
    a = cm.arrays
    out = []
    allowed = cm.chip.core.weight_bits
    rng = {8: (-128, 127), 2: (-1, 1), 1: (0, 1)}
    for c in range(cm.num_cores):
        wb = int(a["core_w_bits"][c])
        if wb not in allowed:
            out.append(f"weight-precision: {_who(cm, c)} uses {wb}-bit weights; '{cm.chip.name}' supports "
                       f"{list(allowed)} (core.weight_bits); fix: recompile for this chip")
            continue
        w = cm.core_weights(c)
        lo, hi = rng[wb]
        if w.size and (int(w.min()) < lo or int(w.max()) > hi):
            out.append(f"weight-precision: {_who(cm, c)} has weights in [{int(w.min())}, {int(w.max())}] but declares "
                       f"{wb}-bit weights ([{lo}, {hi}]); fix: recompile")
    return out


@_rule("phases-per-step")
def _phases(cm: CoreMap) -> list[str]:
    a = cm.arrays
    lim = cm.chip.core.phases_per_step
    out = []
    for st, code in (("static", 0), ("step", 1), ("readout", 2)):
        sel = a["core_stage"] == code
        n = int(a["core_phase"][sel].max(initial=-1)) + 1
        if n > lim:
            deep = sorted({_who(cm, c).split(" core")[0] for c in np.flatnonzero(sel & (a["core_phase"] >= lim))})
            out.append(f"phases-per-step: the {st} stage needs {n} phases > {lim} (core.phases_per_step of "
                       f"'{cm.chip.name}'); layers beyond the limit: {', '.join(deep[:6])}; fix: make the network "
                       "shallower per timestep, or avoid fan-in splits (they add a merge phase) with a larger-core chip")
    return out


@_rule("router-table")
def _router(cm: CoreMap) -> list[str]:
    lim = cm.chip.core.router_table_entries
    n = router_entries(cm)
    return [f"router-table: {_who(cm, c)} sends to {int(n[c])} destinations > {lim} (core.router_table_entries of "
            f"'{cm.chip.name}'); fix: place consumers of this layer on fewer cores" for c in np.flatnonzero(n > lim)]


@_rule("placement")
def _placement(cm: CoreMap) -> list[str]:
    a = cm.arrays
    chips = cm.meta.get("chips", [1, 1])
    W, H = cm.chip.grid(int(chips[0]), int(chips[1]))
    out = []
    bad = np.flatnonzero((a["core_x"] < 0) | (a["core_x"] >= W) | (a["core_y"] < 0) | (a["core_y"] >= H))
    for c in bad:
        out.append(f"placement: {_who(cm, c)} is at ({int(a['core_x'][c])}, {int(a['core_y'][c])}), outside the "
                   f"{W} x {H} grid of {chips[0]} x {chips[1]} chip(s); fix: recompile with more chips")
    xy = np.stack([a["core_x"].astype(np.int64), a["core_y"].astype(np.int64)], axis=1)
    uniq, inv, counts = np.unique(xy, axis=0, return_inverse=True, return_counts=True)
    for k in np.flatnonzero(counts > 1):
        cs = np.flatnonzero(inv.reshape(-1) == k)
        out.append(f"placement: {' and '.join(_who(cm, c) for c in cs)} share position ({int(a['core_x'][cs[0]])}, "
                   f"{int(a['core_y'][cs[0]])}); a position holds 1 core; fix: recompile")
    return out


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
    a = cm.arrays
    c_ = cm.chip.core
    mem = 2 ** (c_.membrane_bits - 1)
    out = []
    for c in np.flatnonzero(a["core_soma"] == SOMA["lif"]):
        thr = int(a["lif_threshold"][c])
        if not 1 <= thr < mem:
            out.append(f"soma-parameters: {_who(cm, c)} has threshold {thr} outside 1 .. {mem - 1} "
                       f"(core.membrane_bits = {c_.membrane_bits}); fix: rescale the layer")
        bm = int(a["lif_beta_mult"][c])
        if not 0 <= bm <= 2 ** c_.beta_shift:
            out.append(f"soma-parameters: {_who(cm, c)} has leak multiplier {bm} outside 0 .. 2^{c_.beta_shift} "
                       "(beta must be in [0, 1]); fix: check the LIF's beta")
    bad = (a["req_mult"] < 0) | (a["req_mult"] >= 2 ** c_.requant_mult_bits) | (a["req_shift"] < 0) | (a["req_shift"] > 62)
    if bad.any():
        n = int(np.argmax(bad))
        c = int(np.searchsorted(a["core_neuron_off"], n, side="right") - 1)
        out.append(f"soma-parameters: {_who(cm, c)} neuron {n} has requantiser {int(a['req_mult'][n])} >> "
                   f"{int(a['req_shift'][n])}, outside multiplier 0 .. 2^{c_.requant_mult_bits} - 1 "
                   "(core.requant_mult_bits) or shift 0 .. 62; fix: recompile for this chip")
    return out


def check_coremap(cm: CoreMap) -> list[str]:
    """All violations of every rule, in rule order."""
    out: list[str] = []
    for fn in RULES.values():
        out.extend(fn(cm))
    return out
