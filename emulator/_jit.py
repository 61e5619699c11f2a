"""Numba options and on-disk cache hygiene, in one place.

Every ``@njit`` of the emulator and of the neuron models uses :data:`NJIT` (cached on disk, no GIL).
Numba keys a cached function on its own source file only, so a kernel that inlines functions of
other files (the neuron models' steps, the NoC model, the cycle formula) would keep running their old
code after they change.  :func:`guard_caches` drops the caches when any of those files changed (or a module was renamed)
since they were written.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from nmc.neurons._int import NJIT

__all__ = ["NJIT", "guard_caches"]


def _fingerprint(modules: list) -> str:
    h = hashlib.sha256()
    for mod in modules:
        h.update(mod.__name__.encode())  # a cache written under another module name cannot be loaded
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()


def guard_caches(modules: list) -> None:
    """Flush the on-disk cache of every cached Numba function of ``modules`` unless all their sources (and
    module names) are those the caches were written from: a kernel inlines functions of the other modules."""
    want = _fingerprint(modules)
    for mod in modules:
        for obj in vars(mod).values():
            cache = getattr(obj, "_cache", None)
            if getattr(obj, "py_func", None) is None or getattr(obj.py_func, "__module__", None) != mod.__name__ \
                    or not hasattr(cache, "_cache_path"):
                continue
            try:
                stamp = Path(cache._cache_path) / f"{mod.__name__}.{obj.py_func.__qualname__}.deps"
                if not stamp.exists() or stamp.read_text() != want:
                    cache.flush()
                    stamp.write_text(want)
            except OSError:  # a read-only cache folder: Numba compiles afresh
                pass
