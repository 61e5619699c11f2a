"""Train the shipped hybrid ANN/SNN example on scikit-learn's 8x8 handwritten digits and export it.

    pip install torch==2.13.0 scikit-learn   # the CPU build of torch; or pip install -e ".[train]"
    python examples/train_digits.py  # writes examples/digits_hybrid.onnx, digits_inputs.npz, digits_test.npz

The network (one timestep of it is the ONNX graph, nmc step convention):

    image [1, 8, 8] (static, pixel values 0..16)
      -> conv 3x3 (8 ch, pad 1) -> ReLU -> avg-pool 2x2 -> flatten -> dense 128->64     (static ANN, once per image)
      -> LIF (beta 0.875, threshold 1)                                                    (SNN, every step; direct current)
      -> dense 64->32 -> LIF (beta 0.875, threshold 1)                                    (SNN)
      -> spike count                                                                      (decoder)
      -> dense 32->10 = logits                                                            (ANN read-out, after the last step)

Training uses a fast-sigmoid surrogate gradient for the spikes and exactly the nmc LIF semantics
(subtract reset, no reset delay), so the exported ONNX file computes what was trained. The
calibration ranges of every tensor (from the training images) ship in the model's ``nmc.ranges``
metadata, so ``nmc compile`` needs no calibration file.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

T = 16
BETA = 0.875  # exactly representable: 224 / 2**8
THRESHOLD = 1.0


def load_digits_split(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32)[:, None]  # [n, 1, 8, 8], values 0..16
    y = d.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def train(epochs: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    xtr, xte, ytr, yte = load_digits_split(seed)

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u > 0).to(u.dtype)

        @staticmethod
        def backward(ctx, g):
            (u,) = ctx.saved_tensors
            return g / (1 + 5 * u.abs()) ** 2

    def lif_step(x, v):
        u = BETA * v + x
        s = Spike.apply(u - THRESHOLD)
        return s, u - s * THRESHOLD

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.fc1 = nn.Linear(128, 64)
            self.fc2 = nn.Linear(64, 32)
            self.head = nn.Linear(32, 10)

        def forward(self, img):
            a = torch.relu(self.conv(img / 16.0))
            a = nn.functional.avg_pool2d(a, 2).flatten(1)
            cur = self.fc1(a)
            v1 = torch.zeros_like(cur)
            v2 = torch.zeros(img.shape[0], 32)
            count = torch.zeros(img.shape[0], 32)
            for _ in range(T):
                s1, v1 = lif_step(cur, v1)
                s2, v2 = lif_step(self.fc2(s1), v2)
                count = count + s2
            return self.head(count / T)

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    Xtr, Ytr = torch.tensor(xtr), torch.tensor(ytr)
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(Xtr))
        for i in range(0, len(Xtr), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(net(Xtr[idx]), Ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if ep % 10 == 9 or ep == epochs - 1:
            with torch.no_grad():
                acc = (net(torch.tensor(xte)).argmax(1).numpy() == yte).mean()
            print(f"epoch {ep + 1}: loss {loss.item():.3f}, test accuracy (torch) {acc:.3f}")
    with torch.no_grad():
        torch_logits = net(torch.tensor(xte)).numpy()
    p = {k: v.detach().numpy().astype(np.float64) for k, v in net.state_dict().items()}
    return p, (xtr, xte, ytr, yte), torch_logits


def build_onnx(p):
    from nmc.frontend.builder import ModelBuilder

    b = ModelBuilder("digits_hybrid", num_steps=T)
    x = b.input("image", (1, 8, 8), kind="static")
    h = b.conv(x, p["conv.weight"] / 16.0, p["conv.bias"], pads=(1, 1, 1, 1), name="conv1")
    h = b.relu(h, name="relu1")
    h = b.avgpool(h, (2, 2), name="pool1")
    h = b.flatten(h, name="flatten")
    h = b.gemm(h, p["fc1.weight"], p["fc1.bias"], name="fc1")
    s1, _ = b.lif(h, "lif1", beta=BETA, threshold=THRESHOLD)
    h2 = b.gemm(s1, p["fc2.weight"], p["fc2.bias"], name="fc2")
    s2, _ = b.lif(h2, "lif2", beta=BETA, threshold=THRESHOLD)
    c = b.spike_count(s2, "count")
    y = b.gemm(c, p["head.weight"] / T, p["head.bias"], name="head")
    b.output(b.identity(y, name="logits"))
    b.output(s2)
    return b.build()


def attach_ranges(model, calib_images: np.ndarray):
    """Run nmc's float interpreter on calibration images and store every tensor's range in the model."""
    from nmc.frontend import load_onnx
    from nmc.mapper.quantize import calibrate

    g = load_onnx(model)
    ranges = calibrate(g, {"image": calib_images}, steps=T)
    meta = {k: [r.lo, r.hi, r.integer] for k, r in sorted(ranges.items())}
    prop = model.metadata_props.add()
    prop.key, prop.value = "nmc.ranges", json.dumps(meta)
    return model


def train_and_export(epochs: int, seed: int, out: Path) -> dict:
    """Train, export, and check the export: the ONNX file (run by nmc's float interpreter) must predict what
    the trained torch model predicts. Returns the accuracies."""
    import onnx

    from nmc.frontend import load_onnx, run_float

    p, (xtr, xte, ytr, yte), torch_logits = train(epochs, seed)
    model = attach_ranges(build_onnx(p), xtr)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / "digits_hybrid.onnx"))
    np.savez(out / "digits_test.npz", image=xte, label=yte)
    np.savez(out / "digits_inputs.npz", image=xte[:32])
    onnx_logits = run_float(load_onnx(model), {"image": xte.astype(np.float64)}, steps=T)["logits"]
    res = dict(torch_accuracy=float(np.mean(torch_logits.argmax(1) == yte)),
               onnx_accuracy=float(np.mean(onnx_logits.argmax(1) == yte)),
               export_agreement=float(np.mean(onnx_logits.argmax(1) == torch_logits.argmax(1))))
    print(f"wrote {out / 'digits_hybrid.onnx'}, digits_test.npz ({len(xte)} test images), digits_inputs.npz (32); "
          f"accuracy torch {res['torch_accuracy']:.3f}, exported ONNX {res['onnx_accuracy']:.3f}, "
          f"predictions agree on {res['export_agreement']:.1%}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE)
    a = ap.parse_args(argv)
    train_and_export(a.epochs, a.seed, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
