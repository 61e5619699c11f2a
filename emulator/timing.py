"""The per-core cycle formula (docs/timing_energy.md), written once: the Numba kernel calls it and the
reference calls the same compiled function from Python."""
from __future__ import annotations

from numba import njit

from ._jit import NJIT

__all__ = ["cdiv", "core_cycles", "timing_rows"]


@njit(**NJIT)
def cdiv(a, b):
    return (a + b - 1) // b


@njit(**NJIT)
def timing_rows(spike_in, nonzero, n_axons, spike_dense):
    """Axon rows the dendrite spends cycles on: every axon for value inputs and, on a chip whose spike timing
    is ``"dense"``, for spike inputs too; else (event driven) only the ``nonzero`` axons."""
    return nonzero if spike_in and not spike_dense else n_axons


@njit(**NJIT)
def core_cycles(overhead, n_axons, in_bytes, axon_bw, rows, mac_rows, n_neurons, mac_cols, soma_lanes, soma_cyc,
                w_row_bytes, weight_bw):
    """Compute cycles of one core in one phase: ``overhead + ceil(n_axons * in_bytes / axon_bw)`` (axon
    reads) ``+ max(ceil(rows / mac_rows) * ceil(n_neurons / mac_cols), ceil(rows * w_row_bytes / weight_bw))``
    (dendrite: the MAC array, or the SRAM's weight bandwidth when that is the tighter bound; ``rows`` from
    :func:`timing_rows`) ``+ ceil(n_neurons / soma_lanes) * soma_cyc`` (soma)."""
    return (overhead + cdiv(n_axons * in_bytes, axon_bw)
            + max(cdiv(rows, mac_rows) * cdiv(n_neurons, mac_cols), cdiv(rows * w_row_bytes, weight_bw))
            + cdiv(n_neurons, soma_lanes) * soma_cyc)
