"""What one core's configuration costs in SRAM: the single formula the partitioner, the design-rule
checks and ``nmc info`` all use (docs/timing_energy.md, "memory")."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .chip import ChipSpec
from .coremap import CoreMap, in_bytes, kblock_bytes
from .neurons import by_code, get_model

__all__ = ["CoreUsage", "neuron_bytes", "core_usage", "core_usages", "core_usage_table", "bytes_of_bits",
           "unit_weight_bits",
           "shared_kernel_bytes", "position_bytes"]


def bytes_of_bits(bits: int) -> int:
    return (bits + 7) // 8


def unit_weight_bits(chip: ChipSpec) -> int:
    """Narrowest weight precision of ``chip`` that holds the weight 1 (merge cores add with unit weights)."""
    bits = chip.core.weight_bits
    return 1 if 1 in bits else (2 if 2 in bits else 8)


def neuron_bytes(chip: ChipSpec, model: str, has_bias: bool = True) -> int:
    """SRAM bytes per neuron: its bias (an accumulator word) and its neuron model's per-neuron parameters and
    state words (``nmc.neurons``)."""
    c = chip.core
    m = get_model(model)
    return (bytes_of_bits(c.accumulator_bits) if has_bias else 0) + m.neuron_param_bytes(c) + m.state_bytes(c)


@dataclass(frozen=True)
class CoreUsage:
    weight_bytes: int
    neuron_bytes: int
    axon_bytes: int
    router_bytes: int
    table_bytes: int = 0  #: the soma's activation look-up table (model ``lut``)

    @property
    def total(self) -> int:
        return self.weight_bytes + self.neuron_bytes + self.axon_bytes + self.router_bytes + self.table_bytes


def core_usage(chip: ChipSpec, n_axons: int, n_neurons: int, w_bits: int, model: str, in_bytes: int,
               has_bias: bool = True, router_entries: int = 0, kernel_bytes=None) -> CoreUsage:
    """SRAM a core needs: dense weight block (axon rows, each ``ceil(n_neurons * w_bits / 8)`` bytes) or, for a
    shared-kernel core, its kernels (``kernel_bytes``: ``nmc.coremap.kblock_bytes``), per-neuron parameters and
    state (of neuron model ``model``), the axon buffer, its routing table and its soma's look-up table, if any."""
    row = bytes_of_bits(n_neurons * w_bits)
    return CoreUsage(
        weight_bytes=n_axons * row if kernel_bytes is None else kernel_bytes,
        neuron_bytes=n_neurons * neuron_bytes(chip, model, has_bias),
        axon_bytes=n_axons * in_bytes,
        router_bytes=router_entries * chip.core.router_entry_bytes,
        table_bytes=get_model(model).table_bytes(chip.core),
    )


def core_usage_table(cm: CoreMap) -> dict[str, np.ndarray]:
    """What every core of ``cm`` needs (:func:`core_usage` of each core, with its routing table's entries), as
    arrays [C] of the :class:`CoreUsage` fields and their ``total``."""
    c = cm.cores
    nn, na, ib, ents = np.diff(c.neuron_off), np.diff(c.axon_off), in_bytes(cm), np.diff(cm.router.off)
    kb = cm.kblocks
    kbytes = np.bincount(kb.core.astype(np.int64), weights=kblock_bytes(kb.geom, c.w_bits[kb.core]),
                         minlength=cm.num_cores).astype(np.int64)
    codes, inv = np.unique(np.asarray(c.model, np.int64), return_inverse=True)
    inv = inv.reshape(-1)
    per_nrn, table = np.zeros(codes.shape[0], np.int64), np.zeros(codes.shape[0], np.int64)
    for k, code in enumerate(codes.tolist()):
        m = by_code(int(code))
        per_nrn[k] = neuron_bytes(cm.chip, m.name, m.name != "partial")
        table[k] = get_model(m.name).table_bytes(cm.chip.core)
    nn, na = nn.astype(np.int64), na.astype(np.int64)
    row = (nn * c.w_bits.astype(np.int64) + 7) // 8
    out = dict(weight_bytes=np.where(c.w_fmt != 0, kbytes, na * row), neuron_bytes=nn * per_nrn[inv],
               axon_bytes=na * np.asarray(ib, np.int64),
               router_bytes=ents.astype(np.int64) * cm.chip.core.router_entry_bytes,
               table_bytes=table[inv])
    out["total"] = sum(out[k] for k in ("weight_bytes", "neuron_bytes", "axon_bytes", "router_bytes", "table_bytes"))
    return out


def core_usages(cm: CoreMap) -> list[CoreUsage]:
    """What every core of ``cm`` needs, with its routing table's entries (``cm.router``)."""
    t = core_usage_table(cm)
    cols = [t[k].tolist() for k in ("weight_bytes", "neuron_bytes", "axon_bytes", "router_bytes", "table_bytes")]
    return [CoreUsage(*u) for u in zip(*cols)]


def shared_kernel_bytes(slices) -> int:
    """SRAM of the kernels of several logical cores folded onto one physical core (mapper/fold.py), each a list of
    ``(kernel slice key, bytes)`` per kernel block: a slice is stored once for all of them, as often as the one
    among them that reads it most (a merge core reads its identity kernel once per partial sum)."""
    most: dict = {}
    for blocks in slices:
        count: dict = {}
        for key, b in blocks:
            count[key] = count.get(key, 0) + 1
            most[key] = (max(most.get(key, (0, b))[0], count[key]), b)
    return int(sum(n * b for n, b in most.values()))


def position_bytes(cm: CoreMap, cores, usages: list[CoreUsage] | None = None) -> int:
    """SRAM of the cores ``cores`` folded onto one router position: their usages, with the kernel slices they share
    stored once (:func:`shared_kernel_bytes`; a slice is its place in ``weights.data`` and its size)."""
    us = core_usages(cm) if usages is None else usages
    c, kb = cm.cores, cm.kblocks
    cores = [int(x) for x in cores]
    total = sum(us[i].total for i in cores)
    tiled = [i for i in cores if c.w_fmt[i]]
    if not tiled:
        return total
    lo, hi = np.searchsorted(kb.core, tiled), np.searchsorted(kb.core, tiled, side="right")
    slices = []
    for i, a, z in zip(tiled, lo.tolist(), hi.tolist()):
        g = kb.geom[a:z].astype(np.int64)
        size = g[:, 0] * g[:, 3] * g[:, 4] * g[:, 5]
        b = kblock_bytes(g, int(c.w_bits[i]))
        slices.append([((int(w), int(n), int(c.w_bits[i])), int(x)) for w, n, x in zip(kb.w_off[a:z], size, b)])
        total -= us[i].weight_bytes
    return total + shared_kernel_bytes(slices)
