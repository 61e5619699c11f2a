"""nmc: a neuromorphic hardware compiler and cycle-level emulator for Tianjic-like many-core chips.

``nmc.compile(model, chip=...)`` returns a :class:`~nmc.coremap.CoreMap`;
``nmc.emulate(core_map, inputs, steps=...)`` returns outputs and a profile report.
"""
__version__ = "0.1.0"

from .errors import NmcError  # noqa: E402


def compile(model, chip="tianjic", **kwargs):  # noqa: A001 - the documented API name
    """Compile a model to a core map; see :func:`nmc.api.compile`."""
    from .api import compile as _compile

    return _compile(model, chip, **kwargs)


def emulate(core_map, inputs, steps=None, backend="numba"):
    """Emulate a core map; see :func:`nmc.api.emulate`."""
    from .api import emulate as _emulate

    return _emulate(core_map, inputs, steps=steps, backend=backend)


def load(path):
    """Load a core-map file (checks version, integrity and the chip's limits)."""
    from .coremap import load as _load

    return _load(path)


def save(core_map, path):
    """Write a core map atomically."""
    from .coremap import save as _save

    return _save(core_map, path)


__all__ = ["__version__", "compile", "emulate", "load", "save", "NmcError"]
