"""What a run will hold in memory, estimated before anything is allocated (``nmc.emulate`` checks it).

The estimate counts the arrays whose size grows with the batch ``B`` and the steps ``T`` (inputs as given
and quantised, the packed step inputs, per-step outputs and cycles) and those of the core map the kernel
reads (weights, neuron and axon state per sample, events per core).  It is an estimate of the emulator's
own arrays, not of Python's overhead.
"""
from __future__ import annotations

import os

import numpy as np

from nmc.coremap import CoreMap, kblock_overlap_cores, n_elems
from nmc.errors import InputError

__all__ = ["estimate_bytes", "check_memory", "physical_memory", "format_bytes"]

_I8 = 8  # bytes of an int64 / float64


def estimate_bytes(cm: CoreMap, batch: int, steps: int, stream: bool = False) -> int:
    """Bytes of the run's arrays; ``stream``: per-step outputs and cycles go to files, not memory."""
    B, T = int(batch), int(steps)
    n_step_in = sum(n_elems(i) for i in cm.meta.get("inputs", []) if i.get("kind") == "step")
    n_static_in = sum(n_elems(i) for i in cm.meta.get("inputs", []) if i.get("kind") == "static")
    n_step_out = sum(int(cm.taps.off[j + 1] - cm.taps.off[j]) for j, o in enumerate(cm.meta.get("outputs", []))
                     if o.get("stage") == "step")
    N, A, C = cm.num_neurons, cm.num_axons, cm.num_cores
    S = cm.neurons.state_init.shape[1] if cm.neurons.state_init.ndim == 2 else 1
    per_step = (4 * n_step_in + (0 if stream else 2 * n_step_out + 1)) * _I8  # inputs given, quantised, packed;
    # outputs (raw, float) and cycles unless streamed
    per_sample = (N * S + A + C * 12 + 2 * n_static_in) * _I8
    # the Numba kernel reads shared-kernel cores as kernels, except those whose blocks share axons (expanded to dense
    # blocks; the reference expands one core at a time)
    exp = kblock_overlap_cores(cm)  # (no shared-kernel core: none)
    dense = int(cm.weights.data.nbytes) + int(np.sum((np.diff(cm.cores.axon_off) * np.diff(cm.cores.neuron_off))[exp]))
    constants = dense * 2 + (N * (S + 8) + A * 2 + int(cm.routes.src.shape[0]) * 3) * _I8
    return B * T * per_step + B * per_sample + constants


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine (None when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def check_memory(cm: CoreMap, batch: int, steps: int, limit: int | None = None, stream: bool = False) -> int:
    """Return the estimate; refuse (``InputError``) a run whose estimate exceeds ``limit`` bytes (``nmc.emulate``
    passes ``max_memory`` or what the process can spare; default here: 80% of the machine's physical memory)."""
    est = estimate_bytes(cm, batch, steps, stream)
    if limit is None:
        phys = physical_memory()
        limit = int(0.8 * phys) if phys else None
    if limit is not None and est > limit:
        per = estimate_bytes(cm, batch, 1, stream) - estimate_bytes(cm, batch, 0, stream)
        fit = max(0, (limit - estimate_bytes(cm, batch, 0, stream)) // max(per, 1))
        raise InputError(f"this run (batch {batch} x {steps} steps on {cm.num_cores} cores) needs about "
                         f"{format_bytes(est)} of memory, more than the limit of {format_bytes(limit)}; run at most "
                         f"about {fit} steps at this batch (--steps), a smaller batch, stream per-step outputs to disk "
                         f"(--stream-dir), or raise the limit "
                         f"(--max-memory / max_memory=) if the machine has the memory")
    return est
