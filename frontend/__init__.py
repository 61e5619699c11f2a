"""nmc frontend: ONNX (nmc step convention) -> IR, a float interpreter and a model builder.

- :func:`load_onnx` reads a model into an :class:`nmc.ir.Graph`;
- :func:`run_float` runs a graph in float64 (the float semantics of every IR op);
- :class:`ModelBuilder` writes nmc-convention ONNX models;
- :func:`run_onnxruntime` steps such a model in onnxruntime (the float reference).
"""
from .builder import ModelBuilder
from .interpret import run_float
from .onnx_import import fold_batchnorm, load_onnx
from . import onnx_ops  # registers the converters of the ANN ops beyond the core set
from .ort import run_onnxruntime

__all__ = ["load_onnx", "ModelBuilder", "run_float", "run_onnxruntime", "fold_batchnorm"]
