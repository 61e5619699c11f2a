"""Models as torch's two ONNX exporters write them compile for tianjic and match the float model.

torch 2.13's default exporter is the dynamo one (``torch.onnx.export(..., dynamo=True)``, needs ``onnxscript``);
the legacy one is ``dynamo=False``.  Both export with the example input's batch as a fixed size (no
``dynamic_axes`` / ``dynamic_shapes`` here: the common case), opset 20, ``Reshape allowzero=1`` (dynamo) and
``ReduceMean`` with an axes input (``x.mean(dim=(2, 3))``).  The tolerance is that of int8 quantisation after
calibration on other inputs: the chip's logits within a few percent of their range of onnxruntime's (measured:
1.2 % for the CNN, 3.9 % for the ResNet-20 after 19 quantised layers), and the same predicted class.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import nmc
from nmc.frontend import load_onnx, run_float

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
nn, F = torch.nn, torch.nn.functional


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.relu(self.c2(x))
        return self.fc(x.view(-1, 8 * 2 * 2))


class Block(nn.Module):
    def __init__(self, i, o, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o)
        self.c2, self.b2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
        self.short = None
        if stride != 1 or i != o:
            self.short = nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))

    def forward(self, x):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNet20(nn.Module):
    """He et al. 2016's CIFAR ResNet-20 (3 stages of 3 basic blocks, 16/32/64 channels), fed 8x8 images here
    so that it fits two tianjic chips."""

    def __init__(self):
        super().__init__()
        self.c, self.b = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        blocks, i = [], 16
        for o, stride in ((16, 1), (32, 2), (64, 2)):
            for k in range(3):
                blocks.append(Block(i, o, stride if k == 0 else 1))
                i = o
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.b(self.c(x))))
        return self.fc(x.mean(dim=(2, 3)))


def _trained_stats(net):
    """BatchNorm statistics that are not the identity (as after training), fixed by a seed."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()


def _export(net, shape, dynamo, path):
    if dynamo:
        pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    with torch.no_grad():
        torch.onnx.export(net, (torch.randn(*shape),), str(path), dynamo=dynamo, input_names=["x"],
                          output_names=["y"])
    return path


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
@pytest.mark.parametrize("name,make,shape,chips,tol", [
    ("cnn", CNN, (1, 1, 8, 8), None, 0.03),
    ("resnet20", ResNet20, (1, 3, 8, 8), "auto", 0.06),
])
def test_exported_model_compiles_and_matches(tmp_path, name, make, shape, chips, tol, dynamo):
    torch.manual_seed(0)
    net = _trained_stats(make())
    path = _export(net, shape, dynamo, tmp_path / f"{name}.onnx")
    rng = np.random.default_rng(1)
    calib = rng.normal(size=(16, *shape[1:])).astype(np.float32)
    x = rng.normal(size=(6, *shape[1:])).astype(np.float32)
    sess = ort.InferenceSession(str(path))
    ref = np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    with torch.no_grad():
        np.testing.assert_allclose(ref, net(torch.from_numpy(x)).numpy(), atol=1e-4)  # the export is the model
    cm = nmc.compile(str(path), chip="tianjic", calib={"x": calib}, chips=chips)
    out = nmc.emulate(cm, {"x": x}).outputs["y"]
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= tol * np.abs(ref).max()
    assert np.array_equal(out.argmax(1), ref.argmax(1))


def test_dynamo_export_has_the_ops_the_issue_named(tmp_path):
    # what made the dynamo export fail before: Reshape allowzero=1 (CNN) and ReduceMean (ResNet-20)
    cnn = onnx.load(_export(CNN().eval(), (1, 1, 8, 8), True, tmp_path / "c.onnx"))
    assert any(n.op_type == "Reshape" and any(a.name == "allowzero" and a.i == 1 for a in n.attribute)
               for n in cnn.graph.node)
    res = onnx.load(_export(ResNet20().eval(), (1, 3, 8, 8), True, tmp_path / "r.onnx"))
    assert any(n.op_type == "ReduceMean" for n in res.graph.node)
    assert load_onnx(cnn).tensors["x"].shape == (1, 8, 8)


def test_the_default_exporter_call_writes_opset_18_or_later_and_compiles(tmp_path):
    # torch.onnx.export with no exporter chosen, as a new user calls it: torch 2.13's default (dynamo) path
    pytest.importorskip("onnxscript")
    net = _trained_stats(CNN())
    path = tmp_path / "default.onnx"
    with torch.no_grad():
        torch.onnx.export(net, (torch.randn(1, 1, 8, 8),), str(path), input_names=["x"], output_names=["y"])
    m = onnx.load(str(path))
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 18
    x = np.random.default_rng(2).normal(size=(4, 1, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x[:1]})[0]
    out = nmc.emulate(nmc.compile(str(path), calib={"x": x}), {"x": x[:1]}).outputs["y"]
    assert np.abs(out - ref).max() <= 0.03 * np.abs(ref).max()


def test_fixed_batch_of_4_runs_per_sample(tmp_path):
    # exported with a batch of 4 examples (a fixed batch axis): nmc strips it and runs any number of samples
    net = CNN().eval()
    path = _export(net, (4, 1, 8, 8), False, tmp_path / "b4.onnx")
    g = load_onnx(str(path))
    assert g.tensors["x"].shape == (1, 8, 8)
    x = np.random.default_rng(2).normal(size=(3, 1, 8, 8))
    with torch.no_grad():
        np.testing.assert_allclose(run_float(g, {"x": x})["y"], net(torch.from_numpy(x).float()).numpy(), atol=1e-5)
