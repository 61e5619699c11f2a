"""Calibration as a user meets it: spike step inputs need none, ranges shipped in the model, a time axis on a
static input named, NaN refused, inputs outside the calibrated range counted and reported (not clipped silently)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import nmc
from nmc.chip import load_chip
from nmc.errors import InputError
from nmc.frontend import ModelBuilder, load_onnx, run_float
from nmc.mapper.passes import map_graph


def _snn():
    b = ModelBuilder("snn", num_steps=6)
    s = b.input("spikes", (4,), kind="step")
    W = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, -1, 1, -1]], float)
    out, _ = b.lif(b.gemm(s, W, name="fc"), "l1", beta=1.0, threshold=2.0)
    b.output(out)
    return b.build(), out


def test_a_spiking_model_with_spike_step_inputs_compiles_without_calibration():
    m, out = _snn()
    cm = nmc.compile(m)  # no calib, no nmc.ranges: the step input is taken as spikes
    assert cm.meta["inputs"][0]["scale"] == 1.0 and (cm.meta["inputs"][0]["lo"], cm.meta["inputs"][0]["hi"]) == (0, 1)
    x = (np.random.default_rng(0).random((6, 3, 4)) < 0.5).astype(float)
    res = nmc.emulate(cm, {"spikes": x})
    np.testing.assert_array_equal(res.outputs[out], run_float(load_onnx(m), {"spikes": x})[out])
    assert res.report["inputs_saturated"] == {}  # (always there: none saturated)


def test_values_outside_the_calibrated_range_are_counted_and_reported():
    m, out = _snn()
    cm = nmc.compile(m)
    x = np.zeros((6, 2, 4))
    x[0, 0, 0] = 3.0   # not a spike: saturates to 1
    x[2, 1, 3] = -1.0  # saturates to 0
    rep = nmc.emulate(cm, {"spikes": x}).report
    assert rep["inputs_saturated"] == {"spikes": 2}
    w = [w for w in rep["warnings"] if w.startswith("input 'spikes'")]
    assert w and "2 of 48 values" in w[0] and "[0, 1]" in w[0] and "taken as spikes" in w[0]


def test_nmc_run_prints_the_saturation_warning(tmp_path, capsys):
    from nmc.cli import main
    m, out = _snn()
    nmc.save(nmc.compile(m), tmp_path / "m.nmc")
    x = np.zeros((6, 2, 4))
    x[0, 0, 0] = 3.0
    np.savez(tmp_path / "x.npz", spikes=x)
    assert main(["run", str(tmp_path / "m.nmc"), "--input", str(tmp_path / "x.npz")]) == 0
    err = capsys.readouterr().err
    assert "warning: input 'spikes': 1 of 48 values" in err and "saturated" in err


def test_an_ann_input_beyond_its_calibration_is_reported():
    b = ModelBuilder("ann", num_steps=1)
    x = b.input("x", (2,))
    y = b.output(b.relu(b.gemm(x, np.eye(2), name="fc"), name="r"))
    cm = nmc.compile(b.build(), calib={"x": np.array([[0.0, 1.0], [1.0, 0.5]])})  # x in [0, 1]
    rep = nmc.emulate(cm, {"x": np.array([[0.5, 2.0], [0.25, 1.0]])}).report  # 2.0 is twice the range
    assert rep["inputs_saturated"] == {"x": 1} and any("1 of 4 values" in w for w in rep["warnings"])


def test_calibration_with_nan_is_refused_on_every_path():
    b = ModelBuilder("ann", num_steps=1)
    x = b.input("x", (2,))
    b.output(b.relu(b.gemm(x, np.eye(2), name="fc"), name="r"))
    m = b.build()
    bad = np.array([[0.0, np.nan]])
    with pytest.raises(InputError, match="NaN or infinite"):
        nmc.compile(m, calib={"x": bad})
    with pytest.raises(InputError, match="calibration input 'x' has 1 NaN or infinite value"):
        map_graph(load_onnx(m), load_chip("tianjic"), calib={"x": np.array([[0.0, np.inf]])})


def test_calibration_with_a_time_axis_for_a_static_input_names_nmc_step_inputs():
    b = ModelBuilder("ann", num_steps=4)
    x = b.input("x", (2,))
    b.output(b.relu(b.gemm(x, np.eye(2), name="fc"), name="r"))
    with pytest.raises(InputError) as ei:
        nmc.compile(b.build(), calib={"x": np.zeros((4, 3, 2))})  # [T, B, 2]
    msg = str(ei.value)
    assert "leading time axis" in msg and "nmc.step_inputs" in msg and "kind='step'" in msg


def test_ranges_shipped_by_a_model_builder_user():
    # the README recipe: calibrate once with nmc's calibrate, ship the ranges as metadata nmc.ranges
    from nmc.mapper.quantize import calibrate
    b = ModelBuilder("ann", num_steps=1)
    x = b.input("x", (2,))
    y = b.output(b.relu(b.gemm(x, np.array([[1.0, -1.0], [0.5, 0.5]]), name="fc"), name="r"))
    m = b.build()
    ranges = calibrate(load_onnx(m), {"x": np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])})
    prop = m.metadata_props.add()
    prop.key, prop.value = "nmc.ranges", json.dumps({k: [r.lo, r.hi, r.integer] for k, r in ranges.items()})
    cm = nmc.compile(m)  # no calib: the shipped ranges
    out = nmc.emulate(cm, {"x": np.array([[1.0, 0.0]])}).outputs[y]
    np.testing.assert_allclose(out, [[1.0, 0.5]], atol=1 / 255)
