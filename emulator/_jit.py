"""Numba options, in one place: every ``@njit`` of the emulator uses :data:`NJIT`."""
from __future__ import annotations

__all__ = ["NJIT"]

#: options of every Numba kernel of the emulator (integer code: no fastmath needed)
NJIT: dict = {"cache": True, "nogil": True}
