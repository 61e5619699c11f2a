"""The nine ``light`` CNNs the onnx wheel ships (onnx/backend/test/data/light: AlexNet, DenseNet-121, Inception
v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512; opset 9, weights made by ConstantOfShape, every
initializer also listed as a graph input, a fixed batch of 1) import as shipped.  Lowering them is measured by
``benchmarks/onnx_backend_models.py --set light --lower`` (the unfolded lowering refuses their 224 x 224 first
layers: over 2^26 synapses each)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import pytest

from nmc.errors import UnsupportedOpError
from nmc.frontend import load_onnx

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
    g = load_onnx(str(path), approximate={"LRN": "identity"} if name in WITH_LRN else None)
    ir = Counter(n.op for n in g.nodes)
    assert [g.tensors[i].shape for i in g.inputs] == [(3, 224, 224)]
    assert ir["conv"] == ops["Conv"] and ir["dense"] == ops["Gemm"]  # every layer is there
    assert ir["softmax"] == ops["Softmax"] and g.tensors[g.outputs[0]].size == 1000  # softmax: on the host
    if name in ("resnet50", "inception_v2", "shufflenet"):  # BatchNormalization (and Mul/Add by constants)
        assert ir["batchnorm"] == 0  # right after each Conv: folded into it
    if name == "densenet121":  # pre-activation blocks (BN -> ReLU -> Conv after a Concat): per-channel scale layers
        assert ir["batchnorm"] > 0 and ir["index"] == ops["Concat"]
    if name == "shufflenet":
        assert ir["index"] == ops["Transpose"] + ops["Concat"]  # channel shuffles and concatenations: views
    if name in WITH_LRN:
        assert "LRN" in g.metadata["nmc.approximated"]


def test_lrn_models_are_refused_without_the_approximation_with_every_lrn_listed():
    path = LIGHT / "light_bvlc_alexnet.onnx"
    if not path.exists():
        pytest.skip(f"{path} is not in this onnx wheel")
    with pytest.raises(UnsupportedOpError) as ei:
        load_onnx(str(path))
    assert str(ei.value).startswith("2 unsupported node(s) of 1 op type(s):\n  - LRN x2 (nodes ")
