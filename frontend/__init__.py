"""nmc frontend: ONNX (nmc step convention) -> IR, a float interpreter and a model builder.

- :func:`load_onnx` reads a model into an :class:`nmc.ir.Graph`;
- :func:`run_float` runs a graph in float64 (the float semantics of every IR op);
- :class:`ModelBuilder` writes nmc-convention ONNX models;
- :func:`run_onnxruntime` steps such a model in onnxruntime (the float reference);
- :func:`load_nir` / :func:`nir_to_onnx` read NIR graphs (discretised with a timestep ``dt``);
- :func:`lift_step` replaces standard-op neurons of a plain step export by verified ``nmc::LIF`` nodes.
"""
from .builder import ModelBuilder
from .interpret import run_float
from .lift import lift_step
from .nir_import import load_nir, nir_to_onnx
from .onnx_import import fold_batchnorm, load_onnx
from . import onnx_ops  # registers the converters of the ANN ops beyond the core set
from .ort import run_onnxruntime

__all__ = ["load_onnx", "ModelBuilder", "run_float", "run_onnxruntime", "fold_batchnorm", "load_nir", "nir_to_onnx", "lift_step"]
