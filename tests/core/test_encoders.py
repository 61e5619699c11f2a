"""Spike encoders (nmc.encoders): the counter-based generator against a plain-Python transcription of its
documented formula, hand-derived TTFS steps, Poisson rates, and the ONNX function bodies (onnxruntime) equal
to the NumPy semantics bit for bit."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from nmc.encoders import ENCODERS, counter_uniform, encode_inputs, poisson, step_index, ttfs
from nmc.errors import InputError
from nmc.frontend import nmc_ops
from nmc.opschema import MIN_OPSET, NMC_DOMAIN


def _mix_py(z: int) -> int:
    """docs/onnx_convention.md's mix(), in Python integers."""
    z ^= z >> 16
    z = (z * 0x45D9F3B) % 2 ** 32
    z ^= z >> 16
    z = (z * 0x45D9F3B) % 2 ** 32
    return z ^ (z >> 16)


def _u24_py(seed: int, t: int, e: int) -> int:
    return _mix_py((_mix_py((_mix_py(seed) + t) % 2 ** 32) + e) % 2 ** 32) >> 8


def test_counter_generator_is_the_documented_formula():
    for seed, t in ((0, 0), (1, 0), (0, 1), (12345, 77), (2 ** 32 - 1, 2 ** 20)):
        got = counter_uniform(seed, t, (3, 5))
        want = np.array([_u24_py(seed, t, e) for e in range(15)]).reshape(3, 5)
        np.testing.assert_array_equal(got, want)
    assert counter_uniform(0, 0, (2,)).tolist() != counter_uniform(1, 0, (2,)).tolist()  # the seed matters
    assert counter_uniform(0, 0, (2,)).tolist() != counter_uniform(0, 1, (2,)).tolist()  # so does the step


def test_poisson_fires_with_probability_x():
    x = np.array([[0.0, 0.25, 0.5, 1.0]])
    s = np.stack([poisson(x, 3, t) for t in range(4000)])
    rate = s.mean(axis=(0, 1))
    assert rate[0] == 0.0 and rate[3] == 1.0  # u in [0, 1): never below 0, always below 1
    assert abs(rate[1] - 0.25) < 0.02 and abs(rate[2] - 0.5) < 0.025  # 4000 draws: sd 0.007 and 0.008
    # every sample of a batch gets the same stream: a sample's spikes do not depend on its batch
    xb = np.tile(x, (3, 1))
    np.testing.assert_array_equal(poisson(xb, 3, 5), np.tile(poisson(x, 3, 5), (3, 1)))


def test_ttfs_fires_once_at_the_hand_derived_step():
    # window 16: x = 1 -> 0; 0.5 -> floor(0.5 * 16) = 8; 0.25 -> floor(0.75 * 16) = 12; 0.9375 = 15/16 -> 1;
    # x <= 0 -> floor(16) = 16, outside the window: never; x > 1 is clipped to 1 -> 0
    x = np.array([[1.0, 0.5, 0.25, 0.9375, 0.0, -1.0, 2.0]])
    s = np.stack([ttfs(x, 16, t) for t in range(20)])[:, 0]
    first = [int(np.flatnonzero(s[:, i])[0]) if s[:, i].any() else None for i in range(7)]
    assert first == [0, 8, 12, 1, None, None, 0]
    assert s.sum(axis=0).tolist() == [1, 1, 1, 1, 0, 0, 1]  # at most one spike each


def _ort_encoder(op: str, attrs: dict, shape: tuple[int, ...]):
    node = helper.make_node(op, ["x", "t"], ["s"], domain=NMC_DOMAIN, **attrs)
    g = helper.make_graph([node], "enc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape]),
                                          helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", 1])],
                          [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", *shape])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", MIN_OPSET), helper.make_opsetid(NMC_DOMAIN, 1)],
                          functions=nmc_ops.function_protos([op]))
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("op,attrs", [("PoissonEncode", dict(seed=0)), ("PoissonEncode", dict(seed=2 ** 32 - 1)),
                                      ("TTFSEncode", dict(window=16)), ("TTFSEncode", dict(window=7))])
def test_function_body_equals_numpy_bit_for_bit(op, attrs):
    rng = np.random.default_rng(2)
    for shape in ((5,), (2, 3, 4)):
        sess = _ort_encoder(op, attrs, shape)
        # values near every TTFS boundary k / window and at float32 rounding of 1 - x
        x = np.concatenate([rng.random(24), np.arange(17) / 16, [1e-8, 1 - 1e-7, -0.5, 1.5]])
        x = np.resize(x, (3, *shape)).astype(np.float32)
        enc = ENCODERS[op]
        for t in (0, 1, 2, 5, 8, 12, 15, 16, 1000, 2 ** 20):
            got = sess.run(None, {"x": x, "t": np.full((3, 1), t, np.float32)})[0]
            np.testing.assert_array_equal(got, enc.fn(attrs, x.astype(np.float64), t), err_msg=f"{op} t={t}")


def test_encode_inputs_adds_the_spikes_of_every_host_encoder():
    specs = [dict(op="TTFSEncode", input="img", kind="static", shape=[3], output="sp", attrs=dict(window=4), node="e")]
    out = encode_inputs(specs, {"img": np.array([1.0, 0.5, 0.0])}, steps=5)  # unbatched static: B = 1
    assert out["sp"].shape == (5, 1, 3)
    assert out["sp"][:, 0].T.tolist() == [[1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]
    with pytest.raises(InputError, match="img.*TTFSEncode.*expected"):
        encode_inputs(specs, {"img": np.zeros((2, 4))}, steps=5)
    assert step_index(3, 2)[:, :, 0].tolist() == [[0, 0], [1, 1], [2, 2]]
