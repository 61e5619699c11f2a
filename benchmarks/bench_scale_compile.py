"""Compile-scale benchmark: compile time and peak memory against cores, the time to refuse a model that cannot
fit, a wide dense layer (the requantiser was quadratic in it), the 784-4096-4096-10 LIF network on tianjic, and
the onnx wheel's light ResNet-50 / VGG-19 / DenseNet-121 (224 x 224, imported as they ship) compiled for a
multi-chip tianjicx system (``--chips auto``; calibrated on one random image).

    python benchmarks/bench_scale_compile.py [--chip tianjicx] [--sizes 32 48 64] [--light resnet50 vgg19 densenet121]
        [--light-emulate]

Each measurement runs in a fresh process (peak RSS is per process, ``ru_maxrss``).  Prints one table; the
figures in docs/performance.md come from it.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _child(kind: str, arg: int, chip: str) -> dict:
    import numpy as np

    import nmc
    from nmc.errors import DoesNotFitError
    from nmc.frontend import load_onnx
    from nmc.frontend.builder import ModelBuilder
    if kind == "cnn":
        from bench_compile import cnn
        model, calib = cnn(arg)
        t0 = time.perf_counter()
        cm = nmc.compile(model, chip=chip, chips="auto", calib=calib)
        out = dict(cores=cm.num_cores, seconds=time.perf_counter() - t0)
    elif kind == "too_big":
        b = ModelBuilder("too_big")
        h = b.input("image", (16, 128, 128))
        for i in range(arg):
            h = b.relu(b.conv(h, np.full((16, 16, 3, 3), 0.01), pads=(1, 1, 1, 1), name=f"conv{i}"))
        b.output(h)
        model = b.build()
        t0 = time.perf_counter()
        try:
            nmc.compile(model, chip=chip)
            out = dict(refused=False)
        except DoesNotFitError:
            out = dict(refused=True)
        out["seconds"] = time.perf_counter() - t0
    elif kind.startswith("light:"):
        import onnx
        name = kind.split(":", 1)[1]
        path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"
        t0 = time.perf_counter()
        try:
            model = load_onnx(str(path))  # as shipped (opset 9, ConstantOfShape weights, Dropout, Softmax)
            t_load = time.perf_counter() - t0
            t0 = time.perf_counter()
            b = nmc.check(model, chip=chip, chips="auto")
        except nmc.NmcError as e:
            return dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}", peak_mib=_peak())
        t_check = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        calib = {k: rng.random((1,) + tuple(model.tensors[k].shape)) for k in model.inputs}
        t0 = time.perf_counter()
        try:
            cm = nmc.compile(model, chip=chip, chips="auto", calib=calib)
            res = dict(result="compiled", cores=cm.num_cores, chips=cm.meta["chips"], phases=cm.meta["phases"],
                       rounds=cm.meta.get("rounds", {}), tiled=int((cm.cores.w_fmt == 1).sum()),
                       weights_mib=cm.weights.data.nbytes / 2 ** 20)
        except nmc.NmcError as e:
            res = dict(result=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
        out = dict(load_s=t_load, check_s=t_check, compile_s=time.perf_counter() - t0, layers=len(b.layers),
                   synapses=b.synapses, bound_cores=b.cores, **res)
        if arg and res["result"] == "compiled":  # then emulate one random image (shared-kernel cores as kernels)
            out["compile_peak_mib"] = _peak()
            x = {k: rng.random((1,) + tuple(model.tensors[k].shape)) for k in model.inputs}
            t0 = time.perf_counter()
            r = nmc.emulate(cm, x)
            out.update(emulate_s=time.perf_counter() - t0, latency_ms=1e3 * r.report["latency_s"],
                       energy_mj=1e3 * r.report["energy_j"])
    elif kind == "mlp":  # 784-4096-4096-10 LIF
        rng = np.random.default_rng(0)
        b = ModelBuilder("mlp", num_steps=4)
        x = b.input("x", (784,))
        s1, _ = b.lif(b.gemm(x, rng.normal(size=(arg, 784)) * 0.05, name="fc1"), "lif1", beta=0.9)
        s2, _ = b.lif(b.gemm(s1, rng.normal(size=(arg, arg)) * 0.02, name="fc2"), "lif2", beta=0.9)
        b.output(b.gemm(b.spike_count(s2, "count"), rng.normal(size=(10, arg)), name="head"))
        model = b.build()
        t0 = time.perf_counter()
        try:
            cm = nmc.compile(model, chip=chip, chips="auto", calib={"x": rng.random((4, 784))})
            out = dict(cores=cm.num_cores, result="compiled")
        except nmc.NmcError as e:
            rules = sorted({v.split(":")[0] for v in getattr(e, "violations", [])})
            out = dict(result=f"{type(e).__name__} {rules}")
        out["seconds"] = time.perf_counter() - t0
    else:  # a dense 2 -> arg layer
        rng = np.random.default_rng(0)
        b = ModelBuilder("wide")
        x = b.input("x", (2,))
        b.output(b.gemm(x, rng.normal(size=(arg, 2)), name="wide"))
        model = b.build()
        t0 = time.perf_counter()
        cm = nmc.compile(model, chip=chip, chips="auto", calib={"x": rng.normal(size=(4, 2))})
        out = dict(cores=cm.num_cores, seconds=time.perf_counter() - t0)
    out["peak_mib"] = _peak()
    return out


def _peak() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(kind: str, arg: int, chip: str) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", kind, str(arg), "--chip", chip], capture_output=True,
                       text=True)
    if p.returncode != 0:  # e.g. killed by the operating system for memory: say so, go on with the next
        tail = (p.stderr.strip().splitlines() or [""])[-1][:200]
        return dict(error=f"the measuring process exited with {p.returncode} (negative: killed by signal; -9 is "
                          f"usually out of memory) {tail}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chip", default="tianjicx")
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 24, 32])
    ap.add_argument("--wide", type=int, default=100_000)
    ap.add_argument("--light", nargs="*", default=["resnet50", "vgg19", "densenet121"])
    ap.add_argument("--light-chips", type=int, default=4, help="a square system of N x N chips for the light models")
    ap.add_argument("--light-emulate", action="store_true", help="also emulate one random image of each light model")
    ap.add_argument("--child", nargs=2, default=None)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(_child(a.child[0], int(a.child[1]), a.chip)))
        return 0
    print(f"chip {a.chip}; the bench_compile CNN (conv-conv-pool-fc-LIF-fc-LIF-count-head) at growing input sizes")
    print(f"{'size':>5} {'cores':>6} {'compile s':>10} {'ms/core':>8} {'peak MiB':>9}")
    for s in a.sizes:
        r = run("cnn", s, a.chip)
        print(f"{s:>5} {r['cores']:>6} {r['seconds']:>10.2f} {1000 * r['seconds'] / r['cores']:>8.2f} "
              f"{r['peak_mib']:>9.0f}")
    r = run("too_big", 8, a.chip)
    print(f"too big (8 convs 16x128x128, 3.0e8 synapses): refused={r['refused']} in {r['seconds']:.2f} s, "
          f"peak {r['peak_mib']:.0f} MiB")
    r = run("wide", a.wide, a.chip)
    print(f"dense 2 -> {a.wide:,}: {r['cores']} cores in {r['seconds']:.2f} s, peak {r['peak_mib']:.0f} MiB")
    r = run("mlp", 4096, "tianjic")
    print(f"784-4096-4096-10 LIF on tianjic (--chips auto): {r['result']} after {r['seconds']:.1f} s, peak "
          f"{r['peak_mib']:.0f} MiB")
    for name in a.light:
        r = run(f"light:{name}", int(a.light_emulate), a.chip)
        if "error" in r:
            print(f"{name} (224x224): {r['error']}")
            continue
        head = (f"{name} (224x224, as shipped) on {a.chip} --chips auto: {r['layers']} layers, {r['synapses']:,} "
                f"synapses (bound >= {r['bound_cores']:,} cores); load {r['load_s']:.1f} s, check {r['check_s']:.1f} s, "
                f"compile {r['compile_s']:.1f} s, peak {r['peak_mib']:.0f} MiB: ")
        if r["result"] == "compiled":
            print(head + f"{r['cores']:,} cores ({r['tiled']:,} with shared kernels) on {r['chips'][0]}x{r['chips'][1]} "
                  f"chips, phases {r['phases']}, rounds {r['rounds']}, weights {r['weights_mib']:.0f} MiB")
            if "emulate_s" in r:
                print(f"    emulated one image in {r['emulate_s']:.1f} s (compile peak {r['compile_peak_mib']:.0f} MiB, "
                      f"with the emulation {r['peak_mib']:.0f} MiB): {r['latency_ms']:.3f} ms, {r['energy_mj']:.1f} mJ "
                      "per image")
        else:
            print(head + r["result"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
