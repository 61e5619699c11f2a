"""What an emulator run returns: raw integer counts, before any pricing (see ``emulator/cost.py``)."""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

__all__ = ["EVENT_KINDS", "EVENT_INDEX", "RawResult"]

#: event kinds counted per sample and core, in the order of ``RawResult.events[..., k]``
EVENT_KINDS: tuple[str, ...] = ("mac", "sop", "neuron_update", "spike", "sram_read_bytes",
                                "sram_write_bytes", "packet", "hop", "chip_crossing", "lut_read")
#: event kind -> index along the last axis of ``RawResult.events``
EVENT_INDEX: dict[str, int] = {k: i for i, k in enumerate(EVENT_KINDS)}


@dataclass
class RawResult:
    """Result of running ``B`` samples of ``T`` steps on a core map of ``C`` cores, ``N`` neurons, ``A`` axons.

    Attributes
    ----------
    outputs : dict name -> int64 array
        Output-register values per graph output: ``[B, T, n_k]`` for stage ``step`` (recorded after every
        step), ``[B, n_k]`` for stages ``static`` / ``readout`` (recorded after that stage).
    state_final : int64 [B, N, S]
        Every neuron's state words after the task (``S`` as the core map's ``neurons.state_init``).
    axon_final : int64 [B, A]
        Axon buffers after the task.
    events : int64 [B, C, len(EVENT_KINDS)]
        Event counts summed over the task (NoC events charged as docs/timing_energy.md says).
    core_cycles : int64 [B, C]
        Compute (busy) cycles of every core summed over the task.
    stage_cycles : int64 [B, 3]
        Cycles of the static stage, of all steps together, and of the readout stage.
    step_cycles : int64 [B, T]
        Cycles of every step.
    latency_cycles : int64 [B]
        ``stage_cycles.sum(1)``.
    phase_cycles : int64 [B, P]
        Latency of every phase slot summed over the task (a step phase over all ``T`` steps); slots are
        ``schedule.phase_slots(cm)``: the phases with cores in stage order, then the static-input and
        step-input phases.
    phase_compute : int64 [B, P]
        The compute part of each slot: the slowest core's compute cycles, summed like ``phase_cycles``
        (the rest is network and barrier).
    """

    outputs: dict[str, np.ndarray]
    state_final: np.ndarray
    axon_final: np.ndarray
    events: np.ndarray
    core_cycles: np.ndarray
    stage_cycles: np.ndarray
    step_cycles: np.ndarray
    latency_cycles: np.ndarray
    phase_cycles: np.ndarray
    phase_compute: np.ndarray

    @property
    def batch(self) -> int:
        return int(self.latency_cycles.shape[0])

    def event_totals(self) -> dict[str, np.ndarray]:
        """Event counts per kind summed over cores: kind -> int64 [B]."""
        tot = self.events.sum(axis=1)
        return {k: tot[:, i] for i, k in enumerate(EVENT_KINDS)}

    def equal(self, other: "RawResult") -> bool:
        """True if every field is identical (integer equality, same output names and shapes)."""
        return not self.differences(other)

    def differences(self, other: "RawResult") -> list[str]:
        """Names of the fields (and outputs) that differ from ``other``."""
        diff = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "outputs":
                if set(a) != set(b):
                    diff.append("outputs (names)")
                    continue
                for k in a:
                    if a[k].shape != b[k].shape or a[k].dtype != b[k].dtype or not np.array_equal(a[k], b[k]):
                        diff.append(f"outputs[{k!r}]")
            elif a.shape != b.shape or a.dtype != b.dtype or not np.array_equal(a, b):
                diff.append(f.name)
        return diff
