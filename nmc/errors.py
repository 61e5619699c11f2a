"""One exception hierarchy for everything nmc refuses.

Every error a user can trigger is an :class:`NmcError`; each subclass is also
the matching builtin (``ValueError``, ``KeyError``, ...) so that generic
handlers keep working.  Messages name the ONNX node or layer, the offending
value, the limit, and what to do about it.
"""
from __future__ import annotations

__all__ = [
    "NmcError",
    "ChipSpecError",
    "ModelError",
    "UnsupportedOpError",
    "AttributeSchemaError",
    "ShapeError",
    "QuantizationError",
    "MappingError",
    "DoesNotFitError",
    "DesignRuleError",
    "PassError",
    "CoreMapError",
    "InputError",
    "RegistryError",
    "OutputError",
]


class NmcError(Exception):
    """Base class of every error nmc raises on bad input."""


class ChipSpecError(NmcError, ValueError):
    """A chip description file is missing a field, has a wrong type or an impossible value."""


class ModelError(NmcError, ValueError):
    """The ONNX/NIR model is malformed or breaks the nmc step convention."""


class UnsupportedOpError(ModelError):
    """One or more nodes use ops the frontend does not support (all are listed at once)."""

    def __init__(self, nodes: list[tuple[str, str, str]], supported: list[str]):
        self.nodes = list(nodes)
        self.supported = sorted(supported)
        groups: dict[str, dict[str, list[str]]] = {}  # op -> reason -> node names (in graph order)
        for name, op, why in self.nodes:
            groups.setdefault(op, {}).setdefault(why, []).append(name)
        lines = [f"{len(self.nodes)} unsupported node(s) of {len(groups)} op type(s):"]
        for op, reasons in groups.items():
            count = sum(len(v) for v in reasons.values())
            if len(reasons) == 1:
                why, names = next(iter(reasons.items()))
                lines.append(f"  - {op} x{count} ({_first(names)}): {why}")
            else:
                lines.append(f"  - {op} x{count}:")
                lines.extend(f"      {_first(names)}: {why}" for why, names in reasons.items())
        lines.append("supported ops: " + ", ".join(self.supported))
        lines.append("fix: rewrite these nodes with supported ops, or file an issue asking for the op")
        super().__init__("\n".join(lines))


def _first(names: list[str], k: int = 3) -> str:
    """``node 'a', 'b', 'c' and 5 more``: the first ``k`` names of a group."""
    shown = ", ".join(f"'{n}'" for n in names[:k])
    more = f" and {len(names) - k} more" if len(names) > k else ""
    return f"node{'s' if len(names) > 1 else ''} {shown}{more}"


class AttributeSchemaError(ModelError):
    """An nmc op carries an unknown, misspelt, missing or out-of-range attribute."""


class ShapeError(NmcError, ValueError):
    """A tensor has a shape the op or the input file contract does not allow."""


class QuantizationError(NmcError, ValueError):
    """A value cannot be represented in the chip's integer formats."""


class MappingError(NmcError, ValueError):
    """The mapper cannot produce a core map."""


class DoesNotFitError(MappingError):
    """The model needs more cores (or another resource) than the system has."""


class DesignRuleError(MappingError):
    """One or more design rules are broken; ``violations`` lists all of them."""

    def __init__(self, violations: list[str]):
        self.violations = list(violations)
        msg = f"{len(self.violations)} design-rule violation(s):\n" + "\n".join(
            "  - " + v for v in self.violations
        )
        super().__init__(msg)


class PassError(MappingError):
    """A mapper pass failed its requirements or guarantees."""


class CoreMapError(NmcError, ValueError):
    """A core-map file is corrupt, tampered with, of another version, or breaks the chip's limits."""


class InputError(NmcError, ValueError):
    """Emulator inputs (an inputs.npz or arrays) do not match the model's graph inputs."""


class RegistryError(NmcError, KeyError):
    """A registry key is missing (the message lists what is supported) or registered twice."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class OutputError(NmcError, OSError):
    """An output file cannot be written (the path is a folder, its folder is not writable, the disk is full)."""

    def __str__(self) -> str:  # OSError would format (errno, strerror)
        return str(self.args[0]) if self.args else ""
