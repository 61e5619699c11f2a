"""The neuron-model declaration and its registry (see :mod:`nmc.neurons`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..chip import ChipSpec, CoreSpec
from ..errors import RegistryError
from ..opschema import OpSchema

__all__ = ["Param", "StateWord", "NeuronModel", "MODELS", "register", "get_model", "by_code", "by_ir_op",
           "max_core_params", "max_neuron_params", "max_state_words", "soma_cycles"]


@dataclass(frozen=True)
class Param:
    """An integer parameter of a model, with its range and the SRAM bits it takes (per neuron params)."""

    name: str
    lo: Callable[[CoreSpec], int]
    hi: Callable[[CoreSpec], int]
    bits: Callable[[CoreSpec], int]
    doc: str = ""


@dataclass(frozen=True)
class StateWord:
    """One word of per-neuron state kept between steps.

    ``in_port``/``out_port`` are the ONNX ports carrying its previous and next value (a state pair of
    the step graph); ``scaled``: its float value is in membrane units (scaled by the layer's membrane
    scale when quantised), else it is an integer counter.
    """

    name: str
    bits: Callable[[CoreSpec], int]
    in_port: str = ""
    out_port: str = ""
    scaled: bool = True
    init: float = 0.0  #: the initial value ModelBuilder gives the state when the user gives none


@dataclass(frozen=True)
class NeuronModel:
    """One soma model (see the module doc)."""

    name: str  #: soma name in core maps and reports
    code: int  #: number in core maps (``cores.model``)
    doc: str
    out_bits: int  #: width of what the soma puts in its output register: 1 spike, 8 value, 32 partial sum
    ref_step: Callable[..., np.ndarray]
    nb_step: Any  #: Numba dispatcher with the signature of :func:`nb_step_signature`
    core_params: tuple[Param, ...] = ()
    neuron_params: tuple[Param, ...] = ()
    state: tuple[StateWord, ...] = ()
    onnx: OpSchema | None = None
    synapse_port: str = "x"  #: the ONNX input that carries the synaptic input
    output_port: str = "s"  #: the ONNX output that holds the output register's value
    float_step: Callable[..., tuple] | None = None
    #: float attributes -> integers ``{param name: value}`` given the membrane scale ``k``: an ``int`` for each
    #: core parameter, an ``int`` or an integer array ``[n]`` (one per neuron) for each per-neuron parameter
    quantize: Callable[[dict, float, CoreSpec], dict[str, Any]] | None = None
    membrane_attrs: tuple[str, ...] = ()  #: float attributes in membrane units (lossless iff integers)
    input_gain: str = ""  #: float attribute that scales the synaptic input (folded into the weights)
    lossless: Callable[[dict], bool] | None = None  #: float attributes the chip reproduces exactly
    timing_like: str = ""  #: built-in model whose chip soma timing it takes when the chip names none
    #: the synapse of a dense/conv/add before the op fuses into its layer (default: spiking models do)
    fuse_synapse: bool | None = None
    spike_input: bool = False  #: its synaptic input must be spikes (a decoder such as SpikeCount)
    #: whether an update reads the soma's activation look-up table on this chip (event ``lut_read``, one per neuron)
    reads_lut: Callable[[CoreSpec], bool] = lambda c: False
    #: SRAM bytes of a per-core table the soma keeps (the ``lut`` soma's activation table)
    table_bytes: Callable[[CoreSpec], int] = lambda c: 0

    @property
    def ir_op(self) -> str:
        return self.onnx.ir_op if self.onnx is not None else self.name

    @property
    def spiking(self) -> bool:
        return self.out_bits == 1

    @property
    def fuses(self) -> bool:
        """Whether a dense/conv/add feeding its synaptic port becomes its layer's synapse."""
        return self.spiking if self.fuse_synapse is None else self.fuse_synapse

    @property
    def param_ports(self) -> tuple[str, ...]:
        """ONNX inputs that carry per-neuron parameters (the schema's ``params``: constants folded into the IR
        node's params, which reach ``float_step`` and ``quantize`` as arrays in the attribute dict)."""
        return tuple(self.onnx.params) if self.onnx is not None else ()

    @property
    def ir_inputs(self) -> tuple[str, ...]:
        """The ONNX inputs that stay inputs of the IR node (every one but the per-neuron parameter ports)."""
        return tuple(p for p in self.onnx.inputs if p not in self.param_ports) if self.onnx is not None else ()

    def param_index(self, name: str) -> int:
        return [p.name for p in self.core_params].index(name)

    def state_bytes(self, core: CoreSpec) -> int:
        """SRAM bytes of state per neuron (read and written once per update)."""
        return sum((w.bits(core) + 7) // 8 for w in self.state)

    def neuron_param_bytes(self, core: CoreSpec) -> int:
        return sum((p.bits(core) + 7) // 8 for p in self.neuron_params)


#: every model, by name, in registration order
MODELS: dict[str, NeuronModel] = {}
_BY_CODE: dict[int, NeuronModel] = {}


def register(model: NeuronModel) -> NeuronModel:
    if model.name in MODELS or model.code in _BY_CODE:
        raise RegistryError(f"neuron model '{model.name}' (code {model.code}) is already registered")
    if model.onnx is not None:
        ports = set(model.onnx.inputs) | set(model.onnx.outputs)
        need = {model.synapse_port, model.output_port} | {p for w in model.state for p in (w.in_port, w.out_port)}
        need |= set(model.param_ports)
        if not need <= ports:
            raise RegistryError(f"neuron model '{model.name}' names ports {sorted(need - ports)} its ONNX op lacks")
    MODELS[model.name] = model
    _BY_CODE[model.code] = model
    return model


def get_model(name: str) -> NeuronModel:
    try:
        return MODELS[name]
    except KeyError:
        raise RegistryError(f"no neuron model '{name}'; models: {', '.join(MODELS)}") from None


def by_code(code: int) -> NeuronModel:
    try:
        return _BY_CODE[int(code)]
    except KeyError:
        raise RegistryError(f"no neuron model with code {code}; codes: {sorted(_BY_CODE)}") from None


def by_ir_op(op: str) -> NeuronModel | None:
    """The model an IR op (e.g. ``lif``) runs on, or None."""
    for m in MODELS.values():
        if m.onnx is not None and m.ir_op == op:
            return m
    return None


def max_core_params() -> int:
    return max(len(m.core_params) for m in MODELS.values())


def max_neuron_params() -> int:
    return max(len(m.neuron_params) for m in MODELS.values())


def max_state_words() -> int:
    return max(len(m.state) for m in MODELS.values())


def soma_cycles(chip: ChipSpec, model: NeuronModel) -> int:
    """Cycles per soma-lane batch of ``model`` on ``chip``: the chip's ``timing.soma_<name>_cycles``, else
    that of the built-in model it is declared like (``timing_like``)."""
    for name in (model.name, model.timing_like):
        v = chip.timing.soma_cycles(name) if name else None
        if v is not None:
            return int(v)
    raise RegistryError(f"chip '{chip.name}' has no soma timing for neuron model '{model.name}' "
                        f"(timing.soma_{model.name}_cycles) and the model names no fallback")


