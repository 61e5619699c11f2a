"""Price an emulator run with a chip's numbers (docs/timing_energy.md, "Events and energy").

The emulator only counts events and cycles; this module is the one place that turns them into joules
and seconds (:func:`price_run`; the report only formats its result).  Every number comes from the
core map's chip: per-event energies from ``chip.energy`` (:data:`ENERGY_FIELD` says which field prices
which event kind), static power from ``chip.energy.static_power_per_core_w``, seconds from
``chip.clock_hz``, and which chips are powered from ``chip.cores_x`` / ``chip.cores_y``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nmc.chip import ChipSpec
from nmc.coremap import CoreMap
from nmc.errors import InputError

from .result import EVENT_KINDS, RawResult
from .schedule import phase_slots, round_boundary_cycles, round_cycles, stage_rounds_of

__all__ = ["ENERGY_FIELD", "J_PER_PJ", "Pricing", "price_run", "price", "static_energy", "energy_per_event",
           "latency_seconds", "chips_in_use", "powered_cores", "SCHEDULES", "Pipeline", "pipeline", "check_schedule",
           "steps_of", "sequential_latency"]

#: how the phases of consecutive tasks and steps are scheduled (docs/timing_energy.md, "Schedules")
SCHEDULES = ("sequential", "pipelined")

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
    "lut_read": "lut_read_pj",
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


def chips_in_use(cm: CoreMap) -> list[tuple[int, int]]:
    """``(chip x, chip y)`` of every chip at least one core of the map sits on, sorted."""
    chip = cm.chip
    cx = np.asarray(cm.cores.x, dtype=np.int64) // chip.cores_x
    cy = np.asarray(cm.cores.y, dtype=np.int64) // chip.cores_y
    return sorted(set(zip(cx.tolist(), cy.tolist())))


def powered_cores(cm: CoreMap) -> int:
    """Cores of every chip in use (a chip is in use when at least one core of the map sits on it);
    unused chips of the system are powered off."""
    return len(chips_in_use(cm)) * cm.chip.cores_per_chip


def check_schedule(cm: CoreMap, schedule: str) -> None:
    """Refuse an unknown schedule, and the pipelined one for a model it would change (recurrent routes) or a
    folded map (mapper/fold.py: its physical cores run one logical core per phase)."""
    if schedule not in SCHEDULES:
        raise InputError(f"unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}")
    if schedule == "pipelined" and int((cm.routes.delayed != 0).sum()):
        layers = cm.meta["layers"]
        src = cm.neuron_core()[cm.routes.src[cm.routes.delayed != 0]]
        names = sorted({layers[int(cm.cores.layer[c])]["name"] for c in src.tolist()})
        raise InputError(f"schedule 'pipelined' overlaps consecutive steps, which changes the outputs of a model "
                         f"with recurrent (one-step delayed) connections: here from layer(s) {', '.join(names)}; "
                         "use the sequential schedule for this model")
    if schedule == "pipelined":
        at = np.asarray(cm.cores.x, np.int64) * (1 << 31) + np.asarray(cm.cores.y, np.int64)
        if np.unique(at).shape[0] != at.shape[0]:
            raise InputError("schedule 'pipelined' runs every phase at once, but this core map folds several cores "
                             "onto one physical core (one per phase); compile it with --objective latency (no folding) "
                             "or use the sequential schedule")


@dataclass(frozen=True)
class Pipeline:
    """Timing of the pipelined schedule (docs/timing_energy.md, "Schedules"), cycles per task, float64 [B].

    Every phase (and the host input phase) is a pipeline stage working on its own task or step: phase ``p``
    runs step ``t`` while phase ``p - 1`` runs step ``t + 1``, and the static and readout phases of
    consecutive tasks overlap the same way.  ``interval_cycles`` (a new task every that many cycles in steady
    state; throughput = clock / interval) is the busiest slot's cycles per task; ``latency_cycles`` is one
    task's way through the filled pipeline: ``n_0 * p_0 + (T + n_1 - 1) * p_1 + n_2 * p_2`` with ``n_s`` the
    stage's busy slots and ``p_s`` its slowest slot per step (per task for static and readout).  Phase times
    are the emulated ones (each phase's mean cycles per step); links shared by overlapping phases are assumed
    free of each other's traffic.  A stage that runs in ``R > 1`` rounds (docs/numerics.md, "Rounds") has
    ``R - 1`` round boundaries as further slots of its pipeline, each taking
    :func:`~emulator.schedule.round_boundary_cycles`: ``n_s`` counts them and ``p_s`` and the interval are at
    least that long.
    """

    interval_cycles: np.ndarray
    latency_cycles: np.ndarray


def pipeline(cm: CoreMap, res: RawResult) -> Pipeline:
    """The pipelined schedule's interval and latency of every task of ``res`` (see :class:`Pipeline`)."""
    check_schedule(cm, "pipelined")
    pc = np.asarray(res.phase_cycles, dtype=np.float64)  # [B, P]
    B = pc.shape[0]
    T = steps_of(res)
    stage = np.array([{"static": 0, "step": 1, "readout": 2}[s] for s, _ in phase_slots(cm)])
    extra = np.maximum(stage_rounds_of(cm) - 1, 0)  # round boundaries per stage (per step for the step stage)
    bc = float(round_boundary_cycles(cm))
    lat = np.zeros(B)
    for s in range(3):
        sel = pc[:, stage == s]
        per = sel / T if s == 1 else sel
        n = (sel > 0).sum(axis=1) + extra[s]
        p = np.ceil(per.max(axis=1)) if sel.shape[1] else np.zeros(B)
        if extra[s]:
            p = np.maximum(p, bc)
        lat += np.where(n > 0, ((T + n - 1) if s == 1 else n) * p, 0.0)
    interval = pc.max(axis=1) if pc.shape[1] else np.zeros(B)
    if extra.any():
        interval = np.maximum(interval, bc)
    return Pipeline(interval_cycles=interval, latency_cycles=lat)


def steps_of(res: RawResult) -> int:
    """The steps ``T`` of a run (``res.step_cycles`` is ``[B, T]``)."""
    return max(int(np.asarray(res.step_cycles).shape[1]), 1) if np.ndim(res.step_cycles) == 2 else 1


def sequential_latency(cm: CoreMap, res: RawResult) -> np.ndarray:
    """Cycles per task under the sequential schedule, int64 ``[B]``: the emulated phases
    (``res.latency_cycles``) plus the round boundaries of stages deeper than the phase budget
    (:func:`~emulator.schedule.round_cycles`; 0 when every stage fits one round)."""
    return np.asarray(res.latency_cycles, dtype=np.int64) + int(round_cycles(cm, steps_of(res)).sum())


@dataclass(frozen=True)
class Pricing:
    """What a run of ``B`` samples on a core map of ``C`` cores costs (float64 arrays, joules and seconds).

    ``energy_j == dynamic_j.sum((1, 2)) + static_used_j.sum(1) + static_idle_j`` and
    ``core_j == dynamic_j.sum(2) + static_used_j``.
    """

    dynamic_j: np.ndarray  #: [B, C, K] dynamic energy per sample, core and event kind (order of EVENT_KINDS)
    static_used_j: np.ndarray  #: [B, C] static energy of every core of the map
    static_idle_j: np.ndarray  #: [B] static energy of the idle cores of the powered chips
    core_j: np.ndarray  #: [B, C] energy of every core of the map (dynamic + its static)
    energy_j: np.ndarray  #: [B] energy of every task
    latency_s: np.ndarray  #: [B] latency of every task in seconds (under the schedule)
    chips_powered: int  #: chips in use (with at least one core of the map)
    cores_powered: int  #: every core of the chips in use
    schedule: str = "sequential"  #: one of :data:`SCHEDULES`
    #: [B] seconds between consecutive tasks (sequential: the latency; pipelined: the busiest stage's time);
    #: static power is paid for this long per task
    interval_s: np.ndarray | None = None
    latency_cycles: np.ndarray | None = None  #: [B] latency in cycles (under the schedule)
    interval_cycles: np.ndarray | None = None  #: [B] interval in cycles


def price_run(cm: CoreMap, res: RawResult, schedule: str = "sequential") -> Pricing:
    """Price an emulator run: dynamic energy of the counted events, static power of every core of every
    chip in use for the time one task holds the chip (unused chips are off and cost nothing), and latency
    in seconds.  Sequential schedule: a task holds the chip for its whole latency, so a map whose cores all
    sit on one chip pays ``static_power_per_core_w * cores_per_chip * latency_s`` of static energy per task,
    however many chips the system has; pipelined: for the interval between tasks (:func:`pipeline`).
    Folded cores (several at one router position) share that physical core's static energy equally.
    """
    chip = cm.chip
    B, C = res.core_cycles.shape
    check_schedule(cm, schedule)
    if schedule == "pipelined":
        pl = pipeline(cm, res)
        lat_c, held_c = pl.latency_cycles, pl.interval_cycles
    else:
        lat_c = held_c = sequential_latency(cm, res).astype(np.float64)
    lat_s = np.asarray(latency_seconds(lat_c, chip), dtype=np.float64).reshape(B)
    held_s = np.asarray(latency_seconds(held_c, chip), dtype=np.float64).reshape(B)
    dyn = price(res.events, chip)  # [B, C, K]
    chips_on = len(chips_in_use(cm))
    cores_on = chips_on * chip.cores_per_chip
    # folded cores (mapper/fold.py) share one physical core, and its static power, equally
    _, at, share = np.unique(np.asarray(cm.cores.x, np.int64) * (1 << 31) + np.asarray(cm.cores.y, np.int64),
                             return_inverse=True, return_counts=True)
    n_phys = share.shape[0]
    assert cores_on >= n_phys, f"{n_phys} cores on {chips_on} chip(s) of {chip.cores_per_chip}"  # internal invariant
    static_used = np.asarray(static_energy(chip, 1.0 / share[at.reshape(-1)][None, :], held_s[:, None]),
                             dtype=np.float64)  # [B, C]
    static_idle = np.asarray(static_energy(chip, cores_on - n_phys, held_s), dtype=np.float64)  # [B]
    core_j = dyn.sum(axis=2) + static_used
    return Pricing(dynamic_j=dyn, static_used_j=static_used, static_idle_j=static_idle, core_j=core_j,
                   energy_j=core_j.sum(axis=1) + static_idle, latency_s=lat_s, chips_powered=chips_on,
                   cores_powered=cores_on, schedule=schedule, interval_s=held_s,
                   latency_cycles=np.asarray(lat_c, dtype=np.float64).reshape(B),
                   interval_cycles=np.asarray(held_c, dtype=np.float64).reshape(B))
