"""The nine ``light`` CNNs the onnx wheel ships (onnx/backend/test/data/light: AlexNet, DenseNet-121, Inception
v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512; opset 9, weights made by ConstantOfShape, every
initializer also listed as a graph input, a fixed batch of 1) import as shipped and lower: their convolutions,
pooling, scales and dense layers stay structured (mapper/structured.py), nothing is unfolded.  AlexNet, ZFNet-512
and Inception v1 have LRNs: they run on the cores as a chain of tables (frontend/onnx_ops.py ``_lrn``), one window
convolution each.  Compiling three of the models is measured by ``benchmarks/bench_scale_compile.py``."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import onnx
import pytest

from nmc.frontend import load_onnx
from nmc.mapper.host_encoders import split_host_encoders
from nmc.mapper.lower import MAX_SYNAPSES, lower

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
NAMES = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
         "vgg19", "zfnet512"]
WITH_LRN = {"bvlc_alexnet", "inception_v1", "zfnet512"}


@pytest.mark.parametrize("name", NAMES)
def test_light_model_imports_as_shipped(name):
    path = LIGHT / f"light_{name}.onnx"
    if not path.exists():
        pytest.skip(f"{path} is not in this onnx wheel")
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    g = load_onnx(str(path))
    ir = Counter(n.op for n in g.nodes)
    assert [g.tensors[i].shape for i in g.inputs] == [(3, 224, 224)]
    # every layer is there (and each LRN's channel window, a convolution)
    assert ir["conv"] == ops["Conv"] + ops["LRN"] and ir["dense"] == ops["Gemm"]
    assert ir["softmax"] == ops["Softmax"] and g.tensors[g.outputs[0]].size == 1000  # softmax: on the host
    if name in ("resnet50", "inception_v2", "shufflenet"):  # BatchNormalization (and Mul/Add by constants)
        assert ir["batchnorm"] == 0  # right after each Conv: folded into it
    if name == "densenet121":  # pre-activation blocks (BN -> ReLU -> Conv after a Concat): per-channel scale layers
        assert ir["batchnorm"] > 0 and ir["index"] == ops["Concat"]
    if name == "shufflenet":
        assert ir["index"] == ops["Transpose"] + ops["Concat"]  # channel shuffles and concatenations: views
    if name in WITH_LRN:  # as shipped: every LRN after a ReLU (or a max pooling of one): square, log, window, exp
        assert ops["LRN"] == 2 and "nmc.approximated" not in g.metadata
        assert Counter(n.attrs["fn"] for n in g.nodes if n.op == "lut") == \
            {"square": 2, "log": 2, "lrn_scale": 2, "exp": 2}
    # lowering: one layer per conv/dense at least, nothing unfolded yet, and every layer the mapper would have to
    # unfold (no blocks) small enough to unfold (the large ones are structured)
    lg = lower(split_host_encoders(g))
    assert len(lg.layers) >= ops["Conv"] + ops["Gemm"] - ops["Add"] - ops["Sum"]  # (sums absorb their convolutions)
    assert all(l.coo is not None or "coo" not in l._cache for l in lg.layers)
    big = [l.name for l in lg.layers if l.blocks is None and l.synapse_count() > MAX_SYNAPSES]
    assert big == []


def test_lrn_models_still_take_the_identity_approximation():
    path = LIGHT / "light_bvlc_alexnet.onnx"
    if not path.exists():
        pytest.skip(f"{path} is not in this onnx wheel")
    g = load_onnx(str(path), approximate={"LRN": "identity"})
    assert [a["node"] for a in json.loads(g.metadata["nmc.approximated"])] == ["n2", "n6"]
    assert not any(n.op == "lut" for n in g.nodes)
