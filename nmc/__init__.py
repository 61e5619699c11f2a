"""nmc: a neuromorphic hardware compiler and cycle-level emulator for Tianjic-like many-core chips.

``nmc.compile(model, chip=...)`` returns a :class:`~nmc.coremap.CoreMap`;
``nmc.check(model, chip=...)`` the closed-form lower bounds of what it needs (does it fit, and why not);
``nmc.emulate(core_map, inputs, steps=...)`` returns outputs and a profile report;
``nmc.save`` / ``nmc.load`` write and read core-map files; ``nmc.load_nir(path, dt=...)`` reads a NIR graph.

Layers (docs/architecture.md): the data types here (``ir``, ``chip``, ``coremap``, ``errors``,
``version``, ...) import nothing above them; the stages ``nmc.frontend``, ``nmc.mapper`` and
``nmc.emulator`` build on them; only ``nmc.api`` and ``nmc.cli`` (and this package's namespace)
import the stages.
"""
from .api import EmulationResult, check, compile, emulate  # noqa: A004 - the documented API name
from .corefile import load, save
from .errors import NmcError
from .frontend.nir_import import load_nir
from .version import __version__

__all__ = ["__version__", "check", "compile", "emulate", "load", "save", "NmcError", "EmulationResult", "load_nir"]
