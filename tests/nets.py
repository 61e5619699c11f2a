"""Small seeded networks in the nmc step convention, built with frontend.ModelBuilder, for the tests."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from nmc.frontend import nmc_ops
from nmc.frontend.builder import ModelBuilder


def hybrid(seed: int = 0, steps: int = 8, conv_ch: int = 4, hidden: int = 24, out: int = 10, beta: float = 0.875,
           reset_mode: str = "subtract", spike_ge: int = 0, reset_delay: int = 0, recurrent: bool = False):
    """image [1, 8, 8] -> conv+relu -> avgpool -> dense -> LIF -> dense+LIF [-> recurrent] -> count -> head."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder(f"hybrid{seed}", num_steps=steps)
    x = b.input("image", (1, 8, 8))
    h = b.relu(b.conv(x, rng.normal(size=(conv_ch, 1, 3, 3)) * 0.3, rng.normal(size=conv_ch) * 0.1,
                      pads=(1, 1, 1, 1), name="conv1"), name="relu1")
    h = b.flatten(b.avgpool(h, (2, 2), name="pool1"), name="flat")
    h = b.gemm(h, rng.normal(size=(hidden, conv_ch * 16)) * 0.3, rng.normal(size=hidden) * 0.1, name="fc1")
    s1, _ = b.lif(h, "lif1", beta=beta, threshold=1.0, reset_mode=reset_mode, spike_ge=spike_ge,
                  reset_delay=reset_delay)
    h2 = b.gemm(s1, rng.normal(size=(hidden, hidden)) * 0.5, None, name="fc2")
    if recurrent:
        prev = b.state("rec", (hidden,))
        h2 = b.add(h2, b.gemm(prev, rng.normal(size=(hidden, hidden)) * 0.3, name="fc_rec"), name="sum2")
    s2, _ = b.lif(h2, "lif2", beta=beta, threshold=1.0, reset_mode=reset_mode, spike_ge=spike_ge,
                  reset_delay=reset_delay)
    if recurrent:
        b.bind_state("rec", s2)
    c = b.spike_count(s2, "count")
    y = b.gemm(c, rng.normal(size=(out, hidden)) * 0.2, rng.normal(size=out) * 0.1, name="head")
    b.output(y)
    b.output(s2)
    return b.build()


def lossless_snn(seed: int = 0, steps: int = 12, n_in: int = 40, hidden: int = 30, n_out: int = 12,
                 reset_mode: str = "subtract", spike_ge: int = 0, reset_delay: int = 0, recurrent: bool = True,
                 step_input: bool = True):
    """IF neurons, integer weights and thresholds, spike inputs: compiles losslessly (exact on the chip)."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder(f"lossless{seed}", num_steps=steps)
    x = b.input("spikes", (n_in,), kind="step" if step_input else "static")
    W1 = rng.integers(-4, 6, size=(hidden, n_in)).astype(float)
    h = b.gemm(x, W1, rng.integers(-2, 3, size=hidden).astype(float), name="fc1")
    if recurrent:
        prev = b.state("rec", (hidden,))
        h = b.add(h, b.gemm(prev, rng.integers(-3, 4, size=(hidden, hidden)).astype(float), name="fc_rec"), name="sum1")
    s1, _ = b.lif(h, "lif1", beta=1.0, threshold=float(rng.integers(4, 9)), reset_mode=reset_mode,
                  v_reset=0.0, spike_ge=spike_ge, reset_delay=reset_delay)
    if recurrent:
        b.bind_state("rec", s1)
    h2 = b.gemm(s1, rng.integers(-3, 5, size=(n_out, hidden)).astype(float), name="fc2")
    s2, _ = b.lif(h2, "lif2", beta=1.0, threshold=3.0, reset_mode=reset_mode, spike_ge=spike_ge,
                  reset_delay=reset_delay)
    c = b.spike_count(s2, "count")
    b.output(s1)
    b.output(s2)
    b.output(c)
    return b.build()


def spike_inputs(seed: int, steps: int, batch: int, n: int, p: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((steps, batch, n)) < p).astype(np.float32)


def scan_model():
    """A Scan over time whose body is a LIF step graph (state v, scan input x)."""
    body_nodes = [
        helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1),
        helper.make_node("LIF", ["h", "v"], ["s", "v.next"], name="l1", domain="nmc", beta=0.5, threshold=0.5),
    ]
    body = helper.make_graph(
        body_nodes, "step",
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("v.next", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 2])])
    W = numpy_helper.from_array(np.array([[1, -1, 0.5], [0.25, 1, 1]], dtype=np.float32), "W")
    v0 = numpy_helper.from_array(np.zeros((1, 2), dtype=np.float32), "v0")
    scan = helper.make_node("Scan", ["v0", "X"], ["v_final", "S"], name="loop", body=body, num_scan_inputs=1)
    g = helper.make_graph([scan], "scanned", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [6, 1, 3])],
                          [helper.make_tensor_value_info("v_final", TensorProto.FLOAT, [1, 2]),
                           helper.make_tensor_value_info("S", TensorProto.FLOAT, [6, 1, 2])], [W, v0])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("nmc", 1)],
                             functions=nmc_ops.function_protos())
