"""The cycle-level emulator: Numba kernels, the NumPy reference they must equal, the NoC model and the
cost model (docs/numerics.md, docs/timing_energy.md).

``BACKENDS`` maps a backend name to a runner ``(cm, static_inputs, step_inputs, steps) -> RawResult``.
"""
from __future__ import annotations

from .cost import price, static_energy
from .kernels import run_numba
from .reference import run_reference
from .result import EVENT_KINDS, RawResult

__all__ = ["run_reference", "run_numba", "RawResult", "EVENT_KINDS", "price", "static_energy", "BACKENDS"]

#: backend name -> runner
BACKENDS = {"numba": run_numba, "reference": run_reference}
