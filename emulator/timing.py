"""The per-core cycle formula (docs/timing_energy.md), written once: the Numba kernel calls it and the
reference calls the same compiled function from Python."""
from __future__ import annotations

from numba import njit

from ._jit import NJIT

__all__ = ["cdiv", "core_cycles"]


@njit(**NJIT)
def cdiv(a, b):
    return (a + b - 1) // b


@njit(**NJIT)
def core_cycles(overhead, n_axons, in_bytes, axon_bw, rows, mac_rows, n_neurons, mac_cols, soma_lanes, soma_cyc):
    """Compute cycles of one core in one phase: ``overhead + ceil(n_axons * in_bytes / axon_bw)`` (axon
    reads) ``+ ceil(rows / mac_rows) * ceil(n_neurons / mac_cols)`` (dendrite; ``rows`` = nonzero axons when
    event driven, else all) ``+ ceil(n_neurons / soma_lanes) * soma_cyc`` (soma)."""
    return (overhead + cdiv(n_axons * in_bytes, axon_bw) + cdiv(rows, mac_rows) * cdiv(n_neurons, mac_cols)
            + cdiv(n_neurons, soma_lanes) * soma_cyc)
