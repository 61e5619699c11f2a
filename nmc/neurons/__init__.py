"""Neuron (soma) models: the extension point, each model declared once.

A :class:`NeuronModel` says everything the stages need about one soma model:

* its integer parameters (per core and per neuron) with bit widths and ranges, and its state words
  (the per-neuron memory it keeps between steps), all as functions of the chip's
  :class:`~nmc.chip.CoreSpec`, so that the core map's columns, the SRAM a core needs and the design
  rules derive from it;
* ``float_step``: the float semantics of one step (the interpreter, calibration);
* its ONNX op (:class:`~nmc.opschema.OpSchema`: attributes, ports, an onnxruntime-runnable body);
* ``quantize``: float attributes -> integer core parameters, given the membrane scale;
* ``ref_step`` (NumPy, the numerics contract) and ``nb_step`` (Numba) of the integer step, which must
  agree bit for bit; and which chip timing entry prices it.

How to add a model (docs/architecture.md): write ``nmc/neurons/<model>.py`` with one ``register(...)``
call, add it to the import line of this file, add its tests and its paragraph in docs/numerics.md.
The frontend, mapper and emulator pick it up by name.

``code`` is the model's number in core maps (``cores.model``): stable across versions.
"""
from __future__ import annotations

from . import alif, ann, count, cubalif, first_spike, li, lif, lif_refractory, lif_tx, lif_tx_rand, lift, lut, partial  # noqa: F401  (the built-in models register)
from .model import (MODELS, NeuronModel, Param, StateWord, by_code, by_ir_op, get_model, max_core_params,
                    max_neuron_params, max_state_words, register, soma_cycles)

__all__ = ["Param", "StateWord", "NeuronModel", "MODELS", "register", "get_model", "by_code", "by_ir_op",
           "max_core_params", "max_neuron_params", "max_state_words", "soma_cycles"]
