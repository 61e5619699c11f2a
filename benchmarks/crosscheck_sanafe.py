"""The same small SNN through SANA-FE (silicon-calibrated Loihi model) and nmc's `loihi` preset, side by side.

    python benchmarks/crosscheck_sanafe.py [--steps 8] [--seed 0]

Network: 64 input spikes (30 % per step) -> 64 IF neurons -> 16 IF neurons, integer weights in -4 .. 4,
threshold 8, reset to 0 when the membrane exceeds the threshold, no leak. SANA-FE (`pip install sanafe`, an
optional tool: skipped with a message when it is missing) runs it on its bundled `loihi.yaml` (Davies et al.
2018 energies, 8 x 4 tiles of 4 cores); nmc compiles it for the `loihi` preset and emulates it. The table
gives energy and latency per timestep and the event counts both report; docs/performance.md has the figures.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nmc  # noqa: E402
from nmc.frontend.builder import ModelBuilder  # noqa: E402

N_IN, N_HID, N_OUT, THRESHOLD, RATE = 64, 64, 16, 8.0, 0.3


def network(steps: int, seed: int):
    rng = np.random.default_rng(seed)
    x = (rng.random((steps, N_IN)) < RATE).astype(np.int64)
    W1 = rng.integers(-4, 5, (N_IN, N_HID))
    W2 = rng.integers(-4, 5, (N_HID, N_OUT))
    return x, W1, W2


def run_nmc(x, W1, W2):
    T = x.shape[0]
    b = ModelBuilder("crosscheck", num_steps=T)
    s = b.input("spikes", (N_IN,), kind="step")
    h, _ = b.lif(b.gemm(s, W1.T.astype(float), None, name="hid"), "hid_lif", threshold=THRESHOLD, reset_mode="zero")
    o, _ = b.lif(b.gemm(h, W2.T.astype(float), None, name="out"), "out_lif", threshold=THRESHOLD, reset_mode="zero")
    b.output(o)
    inputs = {"spikes": x[:, None, :].astype(np.float32)}
    cm = nmc.compile(b.build(), chip="loihi", calib=inputs)
    r = nmc.emulate(cm, inputs).report
    ev = r["events"]
    return dict(energy_j=r["energy_j"] / T, dynamic_j=r["energy_breakdown"]["dynamic_j"] / T,
                latency_s=r["latency_s"] / T, synaptic_ops=ev["sop"] / T, spikes_out=ev["spike"] / T,
                neuron_updates=ev["neuron_update"] / T, packets=ev["packet"] / T, cores=r["cores_used"])


def run_sanafe(x, W1, W2):
    try:
        import sanafe
    except ImportError:
        return None
    T = x.shape[0]
    arch = sanafe.load_loihi()
    net = sanafe.Network()
    inp = net.create_neuron_group("in", N_IN, soma_hw_name="loihi_inputs[0]")
    for i in range(N_IN):
        inp.neurons[i].set_attributes(soma_hw_name=f"loihi_inputs[{i}]", model_attributes={"spikes": x[:, i].tolist()})
    attrs = {"threshold": THRESHOLD, "reset": 0.0, "leak_decay": 1.0}
    hid = net.create_neuron_group("hid", N_HID, model_attributes=attrs)
    out = net.create_neuron_group("out", N_OUT, model_attributes=attrs)
    inp.connect_neurons_dense(hid, {"weight": W1.reshape(-1).astype(float).tolist()})
    hid.connect_neurons_dense(out, {"weight": W2.reshape(-1).astype(float).tolist()})
    inp.map_to_core(arch.tiles[0].cores[0])
    hid.map_to_core(arch.tiles[0].cores[1])
    out.map_to_core(arch.tiles[1].cores[0])
    chip = sanafe.SpikingChip(arch)
    chip.load(net)
    r = chip.sim(T)
    return dict(energy_j=r["energy"]["total"] / T, dynamic_j=r["energy"]["total"] / T, latency_s=r["sim_time"] / T,
                synaptic_ops=r["spikes"] / T, spikes_out=r["neurons_fired"] / T,
                neuron_updates=r["neurons_updated"] / T, packets=r["packets_sent"] / T, cores=3)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    x, W1, W2 = network(a.steps, a.seed)
    rows = {"nmc (loihi preset)": run_nmc(x, W1, W2)}
    sf = run_sanafe(x, W1, W2)
    if sf is None:
        print("SANA-FE is not installed (pip install sanafe): its column is skipped", file=sys.stderr)
    else:
        rows["SANA-FE 2 (loihi.yaml)"] = sf
    keys = ["energy_j", "dynamic_j", "latency_s", "synaptic_ops", "spikes_out", "neuron_updates", "packets", "cores"]
    print(f"per timestep, {N_IN} -> {N_HID} -> {N_OUT} IF neurons, {a.steps} steps, seed {a.seed}")
    print("| per timestep | " + " | ".join(rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for k in keys:
        cells = []
        for v in rows.values():
            val = v[k]
            cells.append(f"{val * 1e9:.2f} nJ" if k.endswith("_j") else f"{val * 1e6:.2f} us" if k == "latency_s"
                         else f"{val:.4g}")
        print(f"| {k} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
