"""The chip description: frozen dataclasses loaded from TOML presets.

The chip is data.  Every limit, cycle cost and per-event energy that the mapper,
the emulator and the cost model use is read from a :class:`ChipSpec`; no module
holds a hardware number as a literal.  Presets live in ``nmc/presets/*.toml``
and cite their sources; a user-written file of the same format works the same.

Units are in the field names (``_bytes``, ``_cycles``, ``_pj``, ``_hz``, ``_w``).
"""
from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ChipSpecError

__all__ = [
    "ChipSpec",
    "CoreSpec",
    "TimingSpec",
    "NocSpec",
    "EnergySpec",
    "SystemSpec",
    "load_chip",
    "list_presets",
    "PRESET_DIR",
]

PRESET_DIR = Path(__file__).with_name("presets")


@dataclass(frozen=True)
class CoreSpec:
    """Limits and shape of one functional core (axon -> dendrite -> soma -> router)."""

    neurons: int  #: soma neurons per core (output neurons)
    axons: int  #: fan-in: axon inputs per core
    memory_bytes: int  #: SRAM per core: weights, neuron state, parameters, axon buffer, routing table
    mac_rows: int  #: MAC array: input rows consumed per cycle
    mac_cols: int  #: MAC array: output neurons served per cycle
    soma_lanes: int  #: neurons the soma updates per cycle
    phases_per_step: int  #: most phases one stage (timestep) may have
    weight_bits: tuple[int, ...]  #: supported weight precisions in bits (8 = int8, 2 = ternary, 1 = binary)
    activation_bits: int  #: width of an ANN activation (int8/uint8)
    accumulator_bits: int  #: dendrite accumulator width (saturating)
    membrane_bits: int  #: LIF membrane width (saturating, two's complement)
    beta_shift: int  #: leak is v <- floor(v * beta_mult / 2**beta_shift)
    requant_mult_bits: int  #: width of the requantisation multiplier (unsigned)
    router_table_entries: int  #: destinations one core's router can hold
    router_entry_bytes: int  #: SRAM bytes one routing-table entry costs
    axon_bandwidth_bytes_per_cycle: int  #: bytes the axon reads from its buffer per cycle
    weight_bandwidth_bytes_per_cycle: int  #: weight bytes the dendrite can read from SRAM per cycle (a bound on the MACs)
    #: how the ANN soma turns the accumulator into an activation (docs/numerics.md, "ANN soma"): "round"
    #: (multiply by m < 2^requant_mult_bits, shift right, round half up), "floor4" (divide by a power of 4 and
    #: floor: TianjicX), "lut" (the "round" requantiser gives the index of a look-up table: Tianjic)
    requant_mode: str = "round"
    lut_index_bits: int = 0  #: index width of the soma's activation look-up table (0: the chip has none)
    lut_entry_bits: int = 8  #: width of one look-up table entry
    refractory_bits: int = 4  #: width of a neuron's refractory counter (lif_tx)


@dataclass(frozen=True)
class TimingSpec:
    """Cycle costs of the primitives (see docs/timing_energy.md)."""

    core_overhead_cycles: int  #: fixed cost of activating a core in a phase
    soma_ann_cycles: int  #: cycles per soma-lane batch in ANN mode (requantise + activate)
    soma_lif_cycles: int  #: cycles per soma-lane batch in LIF mode
    soma_count_cycles: int  #: cycles per soma-lane batch in count (decoder) mode
    soma_partial_cycles: int  #: cycles per soma-lane batch to emit raw partial sums
    barrier_cycles: int  #: cost of the barrier that ends a phase
    #: dendrite cycles of spike inputs: "event" (only the axons that spiked are read) or "dense" (every axon,
    #: as a chip whose cycle counts do not depend on how many inputs spiked)
    spike_input_timing: str
    #: ``soma_<model>_cycles`` of other neuron models (nmc.neurons) the chip file times, by model name
    soma_model_cycles: Mapping[str, int] = field(default_factory=dict)
    #: what a round boundary costs besides the barrier that ends the round's last phase, when a stage needs more
    #: phases than ``core.phases_per_step`` and runs in several rounds (docs/timing_energy.md, "Rounds"); optional,
    #: 0 when a chip file does not give it
    round_overhead_cycles: int = 0

    def soma_cycles(self, model: str) -> int | None:
        """Cycles per soma-lane batch of neuron model ``model``, or None when the chip does not time it."""
        v = getattr(self, f"soma_{model}_cycles", None)
        return v if v is not None else self.soma_model_cycles.get(model)


@dataclass(frozen=True)
class NocSpec:
    """The 2D-mesh network on chip and the links between chips."""

    hop_latency_cycles: int  #: router-to-router link latency inside a chip
    chip_link_latency_cycles: int  #: latency of a link that crosses a chip boundary
    port_latency_cycles: int  #: core -> router (inject) and router -> core (eject) latency
    io_latency_cycles: int  #: latency of the host I/O port link (west of core (0, 0) of chip (0, 0))
    packet_payload_bytes: int  #: payload bytes per packet
    spike_encoding: str  #: "aer" (one packet per spike) or "bitmap" (spikes packed 8 per byte)


@dataclass(frozen=True)
class EnergySpec:
    """Per-event energies (pJ) and static power; the cost model prices event counts with them."""

    mac_pj: float  #: one multiply-accumulate in ANN mode
    sop_pj: float  #: one synaptic operation (weight added for an input spike) in SNN mode
    neuron_update_pj: float  #: one soma update of one neuron
    spike_pj: float  #: one spike generated
    sram_read_byte_pj: float  #: one SRAM byte read
    sram_write_byte_pj: float  #: one SRAM byte written
    packet_pj: float  #: one packet injected (router work at the source)
    hop_pj: float  #: one packet crossing one router-to-router link inside a chip
    chip_crossing_pj: float  #: one packet crossing a chip-to-chip link (instead of hop_pj)
    static_power_per_core_w: float  #: leakage/clock power of one core, paid for every core of every powered chip
    lut_read_pj: float = 0.0  #: one read of the soma's activation look-up table


@dataclass(frozen=True)
class SystemSpec:
    """Default system: a grid of identical chips."""

    chips_x: int
    chips_y: int


@dataclass(frozen=True)
class PublishedSpec:
    """Figures published for the chip as a whole, which its per-event numbers must reproduce (the energy
    calibration fits to them, tests check against them); 0 where nothing is published.  Optional section."""

    peak_ann_tops_per_w: float = 0.0  #: peak ANN efficiency, tera-operations (2 per MAC) per joule
    peak_snn_gsops_per_w: float = 0.0  #: peak SNN efficiency, giga synaptic operations per joule
    average_power_w: float = 0.0  #: average chip power on the published applications
    sram_bandwidth_bytes_per_s: float = 0.0  #: internal memory bandwidth of one chip (an upper bound)


@dataclass(frozen=True)
class ChipSpec:
    """A complete chip (and default system) description."""

    name: str
    description: str
    clock_hz: float
    cores_x: int  #: cores per chip along x (columns)
    cores_y: int  #: cores per chip along y (rows)
    core: CoreSpec
    timing: TimingSpec
    noc: NocSpec
    energy: EnergySpec
    system: SystemSpec
    published: PublishedSpec = field(default_factory=PublishedSpec)
    sources: Mapping[str, str] = field(default_factory=dict)
    estimates: tuple[str, ...] = ()

    @property
    def cores_per_chip(self) -> int:
        return self.cores_x * self.cores_y

    def grid(self, chips_x: int | None = None, chips_y: int | None = None) -> tuple[int, int]:
        """Global core grid (width, height) of a system of chips_x x chips_y chips."""
        cx = self.system.chips_x if chips_x is None else chips_x
        cy = self.system.chips_y if chips_y is None else chips_y
        return cx * self.cores_x, cy * self.cores_y

    def with_overrides(self, overrides: Mapping[str, Any]) -> "ChipSpec":
        """Return a copy with dotted fields replaced, e.g. ``{"core.neurons": 64}``."""
        data = self.to_dict()
        for key, value in overrides.items():
            parts = key.split(".")
            node = data
            for p in parts[:-1]:
                if p not in node or not isinstance(node[p], dict):
                    raise ChipSpecError(f"chip override '{key}': no section '{p}'; sections: "
                                        + ", ".join(k for k, v in data.items() if isinstance(v, dict)))
                node = node[p]
            if parts[-1] not in node:
                raise ChipSpecError(f"chip override '{key}': no field '{parts[-1]}'; fields: "
                                    + ", ".join(sorted(node)))
            node[parts[-1]] = value
        return chip_from_dict(data, origin=f"{self.name} with overrides")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (TOML/JSON-able) that :func:`chip_from_dict` turns back into an equal spec."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v):
                d = dataclasses.asdict(v)
                d.update({f"soma_{m}_cycles": c for m, c in d.pop("soma_model_cycles", {}).items()})
                out[f.name] = {k: (list(x) if isinstance(x, tuple) else x) for k, x in d.items()}
            elif isinstance(v, tuple):
                out[f.name] = list(v)
            elif isinstance(v, Mapping):
                out[f.name] = dict(v)
            else:
                out[f.name] = v
        return out


#: the largest integer a chip field may hold, and the most cores a system may have (grids, tables are sized
#: from them before anything is checked against a model)
MAX_INT_FIELD = 2 ** 31 - 1
MAX_SYSTEM_CORES = 1 << 22
#: the largest chip description file read
MAX_CHIP_FILE_BYTES = 1 << 20
_SECTIONS = {"core": CoreSpec, "timing": TimingSpec, "noc": NocSpec, "energy": EnergySpec, "system": SystemSpec,
             "published": PublishedSpec}
_OPTIONAL_SECTIONS = ("published",)  #: sections a chip file may leave out (every field has a default)
_TOP = {"name": str, "description": str, "clock_hz": float, "cores_x": int, "cores_y": int}
_SPIKE_ENCODINGS = ("aer", "bitmap")
_SPIKE_TIMINGS = ("event", "dense")
#: ANN requantisation modes (core.requant_mode)
REQUANT_MODES = ("round", "floor4", "lut")


def _coerce(origin: str, where: str, value: Any, typ: Any) -> Any:
    if typ in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ChipSpecError(f"{origin}: field '{where}' must be an integer, got {value!r}")
        if value < 0:
            raise ChipSpecError(f"{origin}: field '{where}' must be >= 0, got {value}")
        if value > MAX_INT_FIELD:
            raise ChipSpecError(f"{origin}: field '{where}' is {value}, more than {MAX_INT_FIELD}; no chip has that "
                                "many: fix the chip description")
        return value
    if typ in (float, "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ChipSpecError(f"{origin}: field '{where}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ChipSpecError(f"{origin}: field '{where}' is {value}; give a finite number")
        if value < 0:
            raise ChipSpecError(f"{origin}: field '{where}' must be >= 0, got {value}")
        return float(value)
    if typ in (str, "str"):
        if not isinstance(value, str):
            raise ChipSpecError(f"{origin}: field '{where}' must be a string, got {value!r}")
        return value
    if typ in ("tuple[int, ...]",):
        if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in value
        ):
            raise ChipSpecError(f"{origin}: field '{where}' must be a non-empty list of positive integers, got {value!r}")
        return tuple(value)
    raise AssertionError(f"unhandled type {typ!r}")  # internal invariant


_SOMA_FIELD = re.compile(r"soma_([a-z][a-z0-9_]*)_cycles")


def _section(origin: str, name: str, cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ChipSpecError(f"{origin}: section [{name}] is missing; it needs the fields "
                            + ", ".join(f.name for f in fields(cls) if f.name != "soma_model_cycles"))
    known = {f.name: f.type for f in fields(cls) if f.name != "soma_model_cycles"}
    extra = {}
    if cls is TimingSpec:  # soma timing of further neuron models: timing.soma_<model>_cycles
        data = dict(data)
        for k in [k for k in data if k not in known and _SOMA_FIELD.fullmatch(k)]:
            extra[_SOMA_FIELD.fullmatch(k).group(1)] = _coerce(origin, f"{name}.{k}", data.pop(k), int)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ChipSpecError(f"{origin}: section [{name}] has unknown field(s) {unknown}; "
                            f"known fields: {sorted(known)}")
    optional = {f.name for f in fields(cls) if f.default is not dataclasses.MISSING}
    missing = sorted(set(known) - set(data) - optional)
    if missing:
        raise ChipSpecError(f"{origin}: section [{name}] is missing field(s) {missing}")
    kwargs = {k: _coerce(origin, f"{name}.{k}", data[k], t) for k, t in known.items() if k in data}
    if cls is TimingSpec:
        kwargs["soma_model_cycles"] = extra
    return cls(**kwargs)


def chip_from_dict(data: Mapping[str, Any], origin: str = "chip") -> ChipSpec:
    """Validate a parsed chip description and build a :class:`ChipSpec`."""
    if not isinstance(data, Mapping):
        raise ChipSpecError(f"{origin}: a chip description is a table, got {type(data).__name__}")
    allowed = set(_TOP) | set(_SECTIONS) | {"sources", "estimates"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ChipSpecError(f"{origin}: unknown top-level key(s) {unknown}; allowed: {sorted(allowed)}")
    top = {}
    for k, t in _TOP.items():
        if k not in data:
            raise ChipSpecError(f"{origin}: missing top-level field '{k}'")
        top[k] = _coerce(origin, k, data[k], t)
    secs = {k: _section(origin, k, cls, data.get(k, {} if k in _OPTIONAL_SECTIONS else None))
            for k, cls in _SECTIONS.items()}
    sources = data.get("sources", {})
    if not isinstance(sources, Mapping) or not all(isinstance(v, str) for v in sources.values()):
        raise ChipSpecError(f"{origin}: [sources] must map field names to citation strings")
    estimates = data.get("estimates", [])
    if not isinstance(estimates, (list, tuple)) or not all(isinstance(v, str) for v in estimates):
        raise ChipSpecError(f"{origin}: 'estimates' must be a list of field names")
    spec = ChipSpec(**top, **secs, sources=dict(sources), estimates=tuple(estimates))
    _check_sane(spec, origin)
    return spec


def _check_sane(spec: ChipSpec, origin: str) -> None:
    c = spec.core
    must_be_positive = {
        "clock_hz": spec.clock_hz, "cores_x": spec.cores_x, "cores_y": spec.cores_y,
        "core.neurons": c.neurons, "core.axons": c.axons, "core.memory_bytes": c.memory_bytes,
        "core.mac_rows": c.mac_rows, "core.mac_cols": c.mac_cols, "core.soma_lanes": c.soma_lanes,
        "core.phases_per_step": c.phases_per_step, "core.router_table_entries": c.router_table_entries,
        "core.axon_bandwidth_bytes_per_cycle": c.axon_bandwidth_bytes_per_cycle,
        "core.weight_bandwidth_bytes_per_cycle": c.weight_bandwidth_bytes_per_cycle,
        "noc.packet_payload_bytes": spec.noc.packet_payload_bytes,
        "noc.hop_latency_cycles": spec.noc.hop_latency_cycles,
        "noc.chip_link_latency_cycles": spec.noc.chip_link_latency_cycles,
        "noc.port_latency_cycles": spec.noc.port_latency_cycles,
        "noc.io_latency_cycles": spec.noc.io_latency_cycles,
        "system.chips_x": spec.system.chips_x, "system.chips_y": spec.system.chips_y,
    }
    for k, v in must_be_positive.items():
        if v <= 0:
            raise ChipSpecError(f"{origin}: field '{k}' must be > 0, got {v}")
    if spec.timing.round_overhead_cycles < 0:
        raise ChipSpecError(f"{origin}: field 'timing.round_overhead_cycles' must be >= 0, "
                            f"got {spec.timing.round_overhead_cycles}")
    n_cores = spec.cores_x * spec.cores_y * spec.system.chips_x * spec.system.chips_y
    if n_cores > MAX_SYSTEM_CORES:
        raise ChipSpecError(f"{origin}: {spec.cores_x}x{spec.cores_y} cores per chip on {spec.system.chips_x}x"
                            f"{spec.system.chips_y} chips is {n_cores} cores, more than nmc models "
                            f"({MAX_SYSTEM_CORES}); fix cores_x/cores_y/system.chips_x/system.chips_y")
    for k, v in (("core.neurons", c.neurons), ("core.axons", c.axons)):
        if v > 1 << 20:
            raise ChipSpecError(f"{origin}: field '{k}' is {v}, more than {1 << 20} per core; fix the chip description")
    if spec.noc.spike_encoding not in _SPIKE_ENCODINGS:
        raise ChipSpecError(f"{origin}: noc.spike_encoding is {spec.noc.spike_encoding!r}; "
                            f"choose one of {list(_SPIKE_ENCODINGS)}")
    if spec.timing.spike_input_timing not in _SPIKE_TIMINGS:
        raise ChipSpecError(f"{origin}: timing.spike_input_timing is {spec.timing.spike_input_timing!r}; "
                            f"choose one of {list(_SPIKE_TIMINGS)}")
    if c.activation_bits != 8:
        raise ChipSpecError(f"{origin}: core.activation_bits is {c.activation_bits}; nmc emulates 8-bit activations only")
    if not 16 <= c.accumulator_bits <= 32:
        raise ChipSpecError(f"{origin}: core.accumulator_bits is {c.accumulator_bits}; supported range is 16..32")
    if not 8 <= c.membrane_bits <= 32:
        raise ChipSpecError(f"{origin}: core.membrane_bits is {c.membrane_bits}; supported range is 8..32")
    if not 1 <= c.beta_shift <= 16:
        raise ChipSpecError(f"{origin}: core.beta_shift is {c.beta_shift}; supported range is 1..16")
    if not 8 <= c.requant_mult_bits <= 24:
        raise ChipSpecError(f"{origin}: core.requant_mult_bits is {c.requant_mult_bits}; supported range is 8..24")
    if c.requant_mode not in REQUANT_MODES:
        raise ChipSpecError(f"{origin}: core.requant_mode is {c.requant_mode!r}; choose one of {list(REQUANT_MODES)}")
    if c.requant_mode == "lut" and c.lut_index_bits == 0:
        raise ChipSpecError(f"{origin}: core.requant_mode is 'lut' but core.lut_index_bits is 0 (no look-up table); "
                            "give the table's index width")
    if c.lut_index_bits > 8 or c.lut_entry_bits != c.activation_bits:
        raise ChipSpecError(f"{origin}: core.lut_index_bits {c.lut_index_bits} / lut_entry_bits {c.lut_entry_bits}: "
                            f"nmc models tables of at most 8 index bits whose entries are activations "
                            f"({c.activation_bits} bits)")
    if not 1 <= c.refractory_bits <= 16:
        raise ChipSpecError(f"{origin}: core.refractory_bits is {c.refractory_bits}; supported range is 1..16")
    bad = [b for b in c.weight_bits if b not in (1, 2, 8)]
    if bad or 8 not in c.weight_bits:
        raise ChipSpecError(f"{origin}: core.weight_bits is {list(c.weight_bits)}; allowed values are 1, 2, 8 "
                            "and 8 must be present")


def list_presets() -> list[str]:
    """Names of the presets shipped with nmc."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_chip(name_or_path: str | Path, overrides: Mapping[str, Any] | None = None) -> ChipSpec:
    """Load a preset by name (``"tianjic"``) or a chip file by path, optionally with dotted overrides."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        path = p
    else:
        path = PRESET_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise ChipSpecError(f"unknown chip preset '{name_or_path}'; presets: {', '.join(list_presets())}; "
                                "or pass the path of a chip .toml file")
    try:
        if path.is_dir():
            raise ChipSpecError(f"chip file '{path}' is a folder; give the .toml file")
        if path.exists() and path.stat().st_size > MAX_CHIP_FILE_BYTES:
            raise ChipSpecError(f"chip file '{path}' has {path.stat().st_size} bytes; a chip description is a few "
                                "KiB: give the right file")
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ChipSpecError(f"chip file '{path}' does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ChipSpecError(f"chip file '{path}' is not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ChipSpecError(f"chip file '{path}' is not UTF-8 text ({e}); save it as UTF-8 TOML") from None
    except (OSError, ValueError) as e:  # permissions, a NUL in the path, ...
        if isinstance(e, ChipSpecError):
            raise
        raise ChipSpecError(f"cannot read chip file '{path}': {e}") from None
    spec = chip_from_dict(data, origin=str(path))
    if overrides:
        spec = spec.with_overrides(overrides)
    return spec
