"""Integer helpers shared by the neuron models' steps: saturation, firing and reset, each in NumPy (for
``ref_step``) and Numba (for ``nb_step``).  Numba options are the emulator's (cached, no GIL)."""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["NJIT", "NJIT_STEP", "sat", "leak", "nb_clamp", "nb_fire", "nb_reset", "nb_limits", "nb_leak", "fire",
           "reset", "mem_limits"]

#: options of every Numba function of the emulator and the neuron models (integer code: no fastmath)
NJIT: dict = {"cache": True, "nogil": True}
#: options of a model's ``nb_step``: :data:`NJIT` without Numba's reference counting (``_nrt=False``: no atomic
#: increments and decrements of its array arguments' counts, once per core and step, about 8% of the emulator's
#: time on benchmarks/bench_emulator.py), which a step that allocates no array does not need (one that allocates
#: does not compile with it: use :data:`NJIT`)
NJIT_STEP: dict = dict(NJIT, _nrt=False)


def mem_limits(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def sat(x, bits: int):
    """Clamp to the signed range of ``bits`` bits."""
    lo, hi = mem_limits(bits)
    return np.clip(x, lo, hi)


def leak(v, vl, bm, shift: int):
    """The decay towards ``vl``: ``vl + floor((v - vl) * bm / 2^shift)`` (an arithmetic shift floors)."""
    return vl + (((v - vl) * bm) >> shift)


def fire(u, thr: int, ge: bool):
    return (u >= thr) if ge else (u > thr)


def reset(u, mode: int, thr: int, vr: int, bits: int):
    """Reset of membrane ``u`` after a spike: 0 subtract the threshold (saturating), 1 to ``vr``, 2 none."""
    if mode == 0:
        return sat(u - thr, bits)
    if mode == 1:
        return np.full_like(u, vr)
    return u


@njit(**NJIT)
def nb_clamp(x, lo, hi):
    return lo if x < lo else (hi if x > hi else x)


@njit(**NJIT)
def nb_fire(u, thr, ge):
    return (u >= thr) if ge else (u > thr)


@njit(**NJIT)
def nb_reset(u, mode, thr, vr, mmin, mmax):
    if mode == 0:
        return nb_clamp(u - thr, mmin, mmax)
    if mode == 1:
        return vr
    return u


@njit(**NJIT)
def nb_limits(bits):
    """``(min, max)`` of a signed ``bits``-bit word."""
    return -(np.int64(1) << (bits - 1)), (np.int64(1) << (bits - 1)) - 1


@njit(**NJIT)
def nb_leak(v, vl, bm, shift):
    return vl + (((v - vl) * bm) >> shift)
