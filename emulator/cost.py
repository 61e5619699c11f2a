"""Price event counts with a chip's per-event energies (docs/timing_energy.md, "Events and energy").

The emulator only counts events; this module turns counts into joules.  Every energy comes from
``chip.energy``; :data:`ENERGY_FIELD` says which field prices which event kind.
"""
from __future__ import annotations

import numpy as np

from nmc.chip import ChipSpec

from .result import EVENT_KINDS

__all__ = ["ENERGY_FIELD", "J_PER_PJ", "price", "static_energy", "energy_per_event", "latency_seconds",
           "powered_cores"]

#: event kind -> field of :class:`nmc.chip.EnergySpec` (picojoules per event)
ENERGY_FIELD: dict[str, str] = {
    "mac": "mac_pj",
    "sop": "sop_pj",
    "neuron_update": "neuron_update_pj",
    "spike": "spike_pj",
    "sram_read_bytes": "sram_read_byte_pj",
    "sram_write_bytes": "sram_write_byte_pj",
    "packet": "packet_pj",
    "hop": "hop_pj",
    "chip_crossing": "chip_crossing_pj",
}
assert tuple(ENERGY_FIELD) == EVENT_KINDS  # internal invariant: one price per counted kind, same order

#: unit conversion picojoule -> joule
J_PER_PJ = 1e-12


def energy_per_event(chip: ChipSpec) -> np.ndarray:
    """Joules per event of every kind, float64 [len(EVENT_KINDS)]."""
    return np.array([getattr(chip.energy, ENERGY_FIELD[k]) for k in EVENT_KINDS], dtype=np.float64) * J_PER_PJ


def price(events: np.ndarray, chip: ChipSpec) -> np.ndarray:
    """Dynamic energy in joules of event counts ``events[..., K]``, per kind (same shape, float64).

    Examples
    --------
    >>> from nmc.chip import load_chip
    >>> chip = load_chip("tianjic")
    >>> e = np.zeros(len(EVENT_KINDS), dtype=np.int64); e[0] = 1000   # 1000 MACs
    >>> float(price(e, chip).sum()) == 1000 * chip.energy.mac_pj * 1e-12
    True
    """
    ev = np.asarray(events)
    if ev.shape[-1:] != (len(EVENT_KINDS),):
        raise ValueError(f"events must have a last axis of {len(EVENT_KINDS)} kinds {EVENT_KINDS}, "
                         f"got shape {ev.shape}")
    return ev.astype(np.float64) * energy_per_event(chip)


def static_energy(chip: ChipSpec, n_cores_powered: int | np.ndarray, latency_s: float | np.ndarray) -> np.ndarray | float:
    """Static (leakage/clock) energy in joules: ``static_power_per_core_w * n_cores_powered * latency_s``."""
    return chip.energy.static_power_per_core_w * np.asarray(n_cores_powered, dtype=np.float64) * np.asarray(
        latency_s, dtype=np.float64)


def latency_seconds(cycles: int | np.ndarray, chip: ChipSpec) -> np.ndarray | float:
    """Cycles -> seconds at ``chip.clock_hz``."""
    return np.asarray(cycles, dtype=np.float64) / chip.clock_hz


def powered_cores(cm) -> int:
    """Cores of every chip in use (a chip is in use when at least one core of the map sits on it)."""
    chip = cm.chip
    if cm.num_cores == 0:
        return 0
    cx = np.asarray(cm.arrays["core_x"]) // chip.cores_x
    cy = np.asarray(cm.arrays["core_y"]) // chip.cores_y
    return int(len(set(zip(cx.tolist(), cy.tolist())))) * chip.cores_per_chip
