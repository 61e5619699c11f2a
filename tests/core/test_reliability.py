"""Hostile files and numbers (issue 10): every class of bad input the fuzz campaign found has a test of its
message (what is named, the value, the limit, the fix), plus the behaviours that could silently change
(atomic writes, permissions, input rounding, the first ``steps`` of a longer step input, BatchNormalization
epsilon)."""
from __future__ import annotations

import io
import json
import os
import types
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nmc
from nmc import cli, files
from nmc.api import load_inputs, prepare_inputs
from nmc.chip import load_chip
from nmc.corefile import load as load_coremap
from nmc.corefile import save as save_coremap
from nmc.errors import (AttributeSchemaError, ChipSpecError, CoreMapError, InputError, ModelError, OutputError,
                        QuantizationError, ShapeError, UnsupportedOpError)
from nmc.frontend import load_onnx, nmc_ops
from nmc.frontend.builder import ModelBuilder
from nmc.mapper.lower import lower
from nets import hybrid

STEPS = 4


@pytest.fixture(scope="module")
def model():
    return hybrid(seed=1, steps=STEPS, recurrent=True)


@pytest.fixture(scope="module")
def img():
    return np.random.default_rng(0).integers(0, 17, (3, 1, 8, 8)).astype(float)


@pytest.fixture(scope="module")
def cm(model, img):
    return nmc.compile(model, calib={"image": img})


def _copy(m):
    out = onnx.ModelProto()
    out.CopyFrom(m)
    return out


def _init(m, name):
    return next(t for t in m.graph.initializer if t.name == name)


def _node(m, name):
    return next(n for n in m.graph.node if n.name == name)


def _set_attr(node, name, value):
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))


def _meta(m, key, value):
    meta = {p.key: p.value for p in m.metadata_props}
    meta[key] = value
    del m.metadata_props[:]
    helper.set_model_props(m, meta)


def _compile_error(m, exc=ModelError, calib=None, **kw):
    with pytest.raises(exc) as ei:
        nmc.compile(m, calib=calib, **kw)
    return str(ei.value)


# ============================================================================ ONNX: tensors
def test_initializer_with_a_wrong_data_type(model, img):
    m = _copy(model)
    _init(m, "fc1.W").data_type = TensorProto.STRING
    msg = _compile_error(m, calib={"image": img})
    assert "fc1.W" in msg and ("STRING" in msg or "onnx.checker" in msg)


def test_initializer_whose_data_does_not_fit_its_dims(model, img):
    m = _copy(model)
    t = _init(m, "fc1.W")
    t.dims[0] = t.dims[0] + 1
    msg = _compile_error(m, calib={"image": img})
    assert "fc1.W" in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_weight_names_tensor_and_element(model, img, bad):
    m = _copy(model)
    W = numpy_helper.to_array(_init(m, "fc1.W")).copy()
    W[3, 5] = bad
    _init(m, "fc1.W").CopyFrom(numpy_helper.from_array(W, "fc1.W"))
    msg = _compile_error(m, calib={"image": img})
    assert "initializer 'fc1.W'" in msg and "index [3, 5]" in msg and "NaN or infinite" in msg


def test_nan_bias_names_tensor(model, img):
    m = _copy(model)
    b = numpy_helper.to_array(_init(m, "conv1.b")).copy()
    b[1] = np.nan
    _init(m, "conv1.b").CopyFrom(numpy_helper.from_array(b, "conv1.b"))
    msg = _compile_error(m, calib={"image": img})
    assert "initializer 'conv1.b'" in msg and "index [1]" in msg


@pytest.mark.parametrize("beta", [float("nan"), float("inf")])
def test_non_finite_gemm_beta(model, img, beta):
    m = _copy(model)
    _set_attr(_node(m, "fc1"), "beta", beta)
    msg = _compile_error(m, AttributeSchemaError, calib={"image": img})
    assert "node 'fc1' (Gemm)" in msg and "'beta'" in msg and "not finite" in msg


def test_huge_gemm_beta_is_refused_by_quantisation_not_cast_to_int64_min(model, img):
    m = _copy(model)
    _set_attr(_node(m, "fc1"), "beta", 1e38)
    with pytest.raises(QuantizationError, match=r"layer 'fc1'.*bias") as ei:
        nmc.compile(m, calib={"image": img})
    assert "fc1" in str(ei.value)


def test_infinite_attribute_is_refused(model, img):
    m = _copy(model)
    _set_attr(_node(m, "fc1"), "alpha", float("inf"))
    msg = _compile_error(m, AttributeSchemaError, calib={"image": img})
    assert "node 'fc1' (Gemm)" in msg and "'alpha'" in msg and "not finite" in msg


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_threshold_is_refused(model, img, bad):
    m = _copy(model)
    _set_attr(_node(m, "lif1"), "threshold", bad)
    msg = _compile_error(m, AttributeSchemaError, calib={"image": img})
    assert "lif1" in msg and "threshold" in msg


def test_non_utf8_string_attribute(model, img):
    m = _copy(model)
    _set_attr(_node(m, "lif1"), "reset_mode", b"\xff\xfe")
    msg = _compile_error(m, AttributeSchemaError, calib={"image": img})
    assert "lif1" in msg and "reset_mode" in msg and "UTF-8" in msg


def test_constant_without_a_value(model, img):
    m = _copy(model)
    m.graph.node.insert(0, helper.make_node("Constant", [], ["unused_c"], name="c0"))
    msg = _compile_error(m, calib={"image": img})
    assert "Constant node 'c0'" in msg and "0 value attributes" in msg


def test_initializer_named_like_a_graph_input(model, img):
    m = _copy(model)
    m.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 1, 8, 8), np.float32), "image"))
    msg = _compile_error(m, calib={"image": img})
    assert "['image']" in msg and "name of a graph input" in msg


# ============================================================================ ONNX: external data
def _external(model, tmp_path, location="w.bin", offset=None, write=True):
    m = _copy(model)
    t = _init(m, "fc1.W")
    raw = numpy_helper.from_array(numpy_helper.to_array(t)).raw_data
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", offset)):
        if v is not None:
            e = t.external_data.add()
            e.key, e.value = k, str(v)
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    if write:
        (d / "w.bin").write_bytes(raw)
    (d / "m.onnx").write_bytes(m.SerializeToString())
    return d / "m.onnx"


def test_external_data_is_read_beside_the_model_not_the_working_directory(model, img, tmp_path, monkeypatch):
    p = _external(model, tmp_path)
    monkeypatch.chdir(tmp_path)  # w.bin is not here
    cm = nmc.compile(p, calib={"image": img})
    ref = nmc.compile(model, calib={"image": img})
    for k, v in ref.arrays().items():
        np.testing.assert_array_equal(cm.arrays()[k], v, err_msg=k)


def test_external_data_outside_the_model_folder_is_refused(model, img, tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 8192)
    p = _external(model, tmp_path, location="../secret.bin")
    msg = _compile_error(p, calib={"image": img})
    assert "fc1.W" in msg and "outside the model's folder" in msg


def test_external_data_with_a_bad_offset_is_refused(model, img, tmp_path):
    p = _external(model, tmp_path, offset=10 ** 9)
    msg = _compile_error(p, calib={"image": img})
    assert "fc1.W" in msg and "offset 1000000000" in msg


def test_external_data_of_a_model_given_as_bytes_is_refused(model, img, tmp_path):
    p = _external(model, tmp_path)
    msg = _compile_error(p.read_bytes(), calib={"image": img})
    assert "fc1.W" in msg and "pass the model's path" in msg


# ============================================================================ ONNX: graph and metadata
def test_empty_graph_is_refused(model, img):
    m = _copy(model)
    del m.graph.node[:]
    with pytest.raises(ModelError, match="onnx.checker"):  # outputs computed by no node
        nmc.compile(m, calib={"image": img})
    # a graph without nodes whose output is its input passes the checker; it would compile to 0 cores
    g = helper.make_graph([], "empty", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])])
    empty = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(nmc.NmcError, match="graph output 'x' is not computed by any layer"):
        nmc.compile(empty, calib={"x": np.ones((2, 4))})


def _scan_model(num_scan_inputs):
    body = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1),
         helper.make_node("LIF", ["h", "v"], ["s", "v.next"], name="l1", domain="nmc", beta=0.5, threshold=0.5)],
        "step", [helper.make_tensor_value_info("v", TensorProto.FLOAT, ["N", 2]),
                 helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("v.next", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 2])])
    scan = helper.make_node("Scan", ["v0", "X"], ["v_final", "S"], name="loop", body=body,
                            num_scan_inputs=num_scan_inputs)
    g = helper.make_graph([scan], "scanned", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [6, 1, 3])],
                          [helper.make_tensor_value_info("v_final", TensorProto.FLOAT, [1, 2]),
                           helper.make_tensor_value_info("S", TensorProto.FLOAT, [6, 1, 2])],
                          [numpy_helper.from_array(np.ones((2, 3), np.float32), "W"),
                           numpy_helper.from_array(np.zeros((1, 2), np.float32), "v0")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("nmc", 1)],
                             functions=nmc_ops.function_protos())


def test_scan_with_negative_num_scan_inputs():
    load_onnx(_scan_model(1))  # the unmutated model loads
    m = _scan_model(-1)
    with pytest.raises(ModelError, match=r"num_scan_inputs") as ei:
        load_onnx(m)
    assert "loop" in str(ei.value)


@pytest.mark.parametrize("strides,match", [([0, 1], r"strides=\[0, 1\] is out of range"),
                                           ([1], r"strides=\[1\].*2 values")])
def test_conv_strides_of_zero_or_of_the_wrong_length(model, img, strides, match):
    m = _copy(model)
    _set_attr(_node(m, "conv1"), "strides", strides)
    with pytest.raises(ModelError, match=match) as ei:
        nmc.compile(m, calib={"image": img})
    assert "conv1" in str(ei.value)


def test_pool_strides_of_the_wrong_length(model, img):
    m = _copy(model)
    _set_attr(_node(m, "pool1"), "strides", [2, 2, 2])
    with pytest.raises(UnsupportedOpError, match=r"strides=\[2, 2, 2\].*2 values") as ei:
        nmc.compile(m, calib={"image": img})
    assert "pool1" in str(ei.value)


def test_non_list_nmc_outputs(model, img):
    m = _copy(model)
    _meta(m, "nmc.outputs", '"logits"')
    msg = _compile_error(m, calib={"image": img})
    assert "nmc.outputs" in msg and "JSON list" in msg


def test_lif_with_a_missing_input(model, img):
    m = _copy(model)
    n = _node(m, "lif1")
    n.input[1] = ""
    msg = _compile_error(m, calib={"image": img})
    assert "lif1" in msg and "needs 2 input(s)" in msg


def test_spike_count_with_a_missing_input(model, img):
    m = _copy(model)
    del _node(m, "count").input[:]
    with pytest.raises(ModelError) as ei:
        nmc.compile(m, calib={"image": img})
    assert "count" in str(ei.value)


@pytest.mark.parametrize("init,match", [('"abc"', "give a number"), ("NaN", "NaN or infinite")])
def test_non_numeric_or_nan_state_init(model, img, init, match):
    m = _copy(model)
    meta = {p.key: p.value for p in m.metadata_props}
    states = json.loads(meta["nmc.state"]) if "nmc.state" in meta else None
    if states is None:
        states = [[i.name, i.name + ".next", 0.0] for i in m.graph.input if i.name != "image"]
    states[0][2] = "__X__"
    _meta(m, "nmc.state", json.dumps(states).replace('"__X__"', init))
    msg = _compile_error(m, calib={"image": img})
    assert "nmc.state init of" in msg and match in msg


def test_initial_state_beyond_the_state_word(img):
    b = ModelBuilder("big_init", num_steps=2)
    x = b.input("x", (4,))
    s, _ = b.lif(b.gemm(x, np.eye(4)), "l", threshold=1.0, init=1e12)
    b.output(s)
    with pytest.raises(QuantizationError, match=r"initial v of neuron 0 .*outside the \d+-bit state word"):
        nmc.compile(b.build(), calib={"x": np.ones((2, 4))})


def test_calibration_nan_names_input_and_element(model, img):
    bad = img.copy()
    bad[1, 0, 2, 3] = np.nan
    msg = _compile_error(model, InputError, calib={"image": bad})
    assert "calibration input 'image'" in msg and "[1, 0, 2, 3]" in msg


def test_calib_steps_must_be_sane(model, img):
    msg = _compile_error(model, InputError, calib={"image": img}, calib_steps=10 ** 12)
    assert "calib_steps = 1000000000000" in msg


# ============================================================================ chips
@pytest.mark.parametrize("field,value", [("clock_hz", float("nan")), ("energy.mac_pj", float("inf")),
                                         ("cores_x", 2 ** 40)])
def test_nan_inf_or_absurd_chip_fields(model, img, field, value):
    msg = _compile_error(model, ChipSpecError, calib={"image": img}, overrides={field: value})
    assert field in msg


# ============================================================================ inputs.npz
def test_empty_or_truncated_npz(cm, tmp_path):
    good = io.BytesIO()
    np.savez(good, image=np.zeros((1, 1, 8, 8)))
    for name, data in (("empty.npz", b""), ("trunc.npz", good.getvalue()[:200])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match="not a readable .npz|truncated|damaged") as ei:
            nmc.emulate(cm, tmp_path / name)
        assert name in str(ei.value)


def test_npz_header_claiming_a_huge_array_is_refused_before_reading(cm, tmp_path):
    b = io.BytesIO()
    np.save(b, np.zeros(4))
    raw = b.getvalue()
    hlen = int.from_bytes(raw[8:10], "little")
    header = raw[10:10 + hlen].decode("latin1")
    huge = header.replace("(4,)", "(100000000000,)").rstrip("\n").rstrip().ljust(hlen - 1) + "\n"
    p = tmp_path / "huge.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("image.npy", raw[:10] + huge.encode("latin1") + raw[10 + hlen:])
    with pytest.raises(InputError, match=r"array 'image' .* declares shape \[100000000000\] of float64 = "
                                         r"800000000000 bytes .* more than the limit"):
        load_inputs(p)


def test_npz_member_that_inflates_beyond_the_limit_is_refused(tmp_path):
    p = tmp_path / "x.npz"
    np.savez_compressed(p, image=np.zeros(1 << 16))
    with pytest.raises(InputError, match=r"array 'image' .* inflates to \d+ bytes .* more than the limit"):
        load_inputs(p, limit=1000)


@pytest.mark.parametrize("value,match", [(np.array([["x"] * 24]), "dtype <U1"),
                                         (np.zeros((0, 24)), "empty batch"),
                                         (np.full((1, 24), np.inf), "NaN or infinite")])
def test_bad_state_inputs(cm, img, value, match):
    with pytest.raises(InputError, match=match) as ei:
        nmc.emulate(cm, {"image": img[:1], "lif1.v": value})
    assert "lif1.v" in str(ei.value)


def test_state_input_beyond_its_state_word(cm, img):
    with pytest.raises(InputError, match=r"state input 'lif1.v' element \[0, 0\] = 1e\+300 .* outside the "
                                         r"\d+-bit state range"):
        nmc.emulate(cm, {"image": img[:1], "lif1.v": np.full((1, 24), 1e300)})


def test_huge_steps_are_refused_with_the_estimate_before_allocating(cm, img):
    # emulator/memory.py refuses first (the run's kernel arrays), naming the estimate and the steps that fit
    with pytest.raises(InputError, match=r"x 1000000000000 steps .* needs about [\d.]+ [GT]iB .* run at most "
                                         r"(about )?\d+ steps"):
        nmc.emulate(cm, {"image": img[:1]}, steps=10 ** 12)


@pytest.mark.parametrize("steps", [1.5, "3", True])
def test_steps_must_be_a_whole_number(cm, img, steps):
    with pytest.raises(InputError, match="whole number"):
        nmc.emulate(cm, {"image": img[:1]}, steps=steps)


# ============================================================================ core maps
def _zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for n, d in members:
            z.writestr(n, d)


def test_core_map_whose_header_is_a_list(tmp_path):
    _zip(tmp_path / "a.nmc", [("header.json", b"[]")])
    with pytest.raises(CoreMapError, match=r"is not an nmc core map \(header format 'a JSON list'\)"):
        load_coremap(tmp_path / "a.nmc")
    assert cli.main(["info", str(tmp_path / "a.nmc")]) == 2


def test_core_map_member_that_would_inflate_beyond_the_limit(cm, tmp_path):
    p = save_coremap(cm, tmp_path / "m.nmc")
    with pytest.raises(CoreMapError, match=r"its arrays inflate to \d+ bytes \(.*\) in total, more than the limit "
                                           r"of 64 bytes for a core map"):
        load_coremap(p, limit=64)


def test_core_map_with_an_unexpected_member(cm, tmp_path):
    p = save_coremap(cm, tmp_path / "m.nmc")
    with zipfile.ZipFile(p, "a") as z:
        z.writestr("extra.npy", b"x")
    with pytest.raises(CoreMapError, match=r"unexpected member\(s\) \['extra.npy'\]"):
        load_coremap(p)


def test_core_map_layer_index_edited_and_rehashed(cm, tmp_path):
    bad = cm.replace(cores=type(cm.cores)(**{**cm.cores.arrays(), "layer": cm.cores.layer + 100}))
    p = save_coremap(bad, tmp_path / "m.nmc")
    with pytest.raises(CoreMapError, match=r"core 0: cores.layer = \d+ names none of the header's \d+ layers"):
        load_coremap(p)


def test_core_map_state_neurons_edited_and_rehashed(cm, tmp_path):
    meta = json.loads(json.dumps(cm.meta, default=float))
    meta["states"][0]["neurons"][0] = 10 ** 6
    p = save_coremap(cm.replace(meta=meta), tmp_path / "m.nmc")
    with pytest.raises(CoreMapError, match=r"meta.states\[0\].neurons point outside"):
        load_coremap(p)


def test_core_map_members_are_in_a_fixed_order(cm, tmp_path):
    p = save_coremap(cm, tmp_path / "m.nmc")
    names = zipfile.ZipFile(p).namelist()
    assert names[0] == "header.json"
    assert names[1:] == [f"{k}.npy" for k in cm.arrays()]
    infos = zipfile.ZipFile(p).infolist()
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}


# ============================================================================ files and the CLI
def test_output_path_that_is_a_folder_or_unwritable(cm, img, tmp_path, capsys):
    p = save_coremap(cm, tmp_path / "m.nmc")
    np.savez(tmp_path / "in.npz", image=img[:1])
    (tmp_path / "out").mkdir()
    assert cli.main(["run", str(p), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out")]) == 2
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert cli.main(["run", str(p), "--input", str(tmp_path / "in.npz"),
                     "--report", str(tmp_path / "file" / "r.json")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(OutputError, match="is a folder"):
        save_coremap(cm, tmp_path / "out")


def test_atomic_write_removes_its_temp_file_on_interrupt_and_keeps_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "r.json"
    files.save_json(p, {"old": 1})

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.save_json(p, {"new": 2})
    assert json.loads(p.read_text()) == {"old": 1}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.json"]


def test_atomic_write_removes_its_temp_file_when_the_write_fails(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OutputError, match="No space left on device"):
        files.atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_normal_permissions_respecting_the_umask(cm, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        files.save_json(tmp_path / "r.json", {})
        files.save_npz(tmp_path / "r.npz", {"a": np.zeros(2)})
        save_coremap(cm, tmp_path / "m.nmc")
    finally:
        os.umask(old)
    for n in ("r.json", "r.npz", "m.nmc"):
        assert (tmp_path / n).stat().st_mode & 0o777 == mode, n


def test_report_with_nan_is_not_written_as_invalid_json(tmp_path):
    with pytest.raises(ValueError):
        files.save_json(tmp_path / "r.json", {"x": float("nan")})
    assert not (tmp_path / "r.json").exists()


# ============================================================================ pinned numerics
def _fake_map(inputs):
    return types.SimpleNamespace(meta={"inputs": inputs, "states": [], "model": "fake"})


def test_input_quantisation_rounds_half_to_even_and_clips():
    spec = {"name": "x", "kind": "static", "shape": [6], "scale": 0.5, "lo": -128, "hi": 127}
    x = np.array([[0.25, 0.75, -0.25, 1.25, 1000.0, -1000.0]])  # / 0.5 = 0.5, 1.5, -0.5, 2.5, 2000, -2000
    static, step, states, B = prepare_inputs(_fake_map([spec]), {"x": x}, steps=1)
    assert B == 1
    np.testing.assert_array_equal(static[0], [[0, 2, 0, 2, 127, -128]])


def test_the_first_steps_of_a_longer_step_input_are_used():
    spec = {"name": "s", "kind": "step", "shape": [2], "scale": 1.0, "lo": 0, "hi": 255}
    x = np.arange(5 * 1 * 2, dtype=float).reshape(5, 1, 2)  # T=5, B=1
    static, step, states, B = prepare_inputs(_fake_map([spec]), {"s": x}, steps=3)
    np.testing.assert_array_equal(step[0], x[:3].transpose(1, 0, 2).astype(np.int64))


def test_batchnorm_epsilon_enters_the_folded_scale():
    b = ModelBuilder("bn", num_steps=1)
    x = b.input("x", (2, 2, 2))
    y = b.batchnorm(x, scale=[2.0, 3.0], bias=[0.5, -1.0], mean=[1.0, 0.0], var=[3.0, 15.0], eps=1.0, name="bn")
    b.output(b.relu(y))
    g = load_onnx(b.build(), fold_bn=False)
    bn = next(n for n in g.nodes if n.op == "batchnorm")
    # scale = gamma / sqrt(var + eps) = 2/2, 3/4 ; bias = beta - mean * scale = 0.5 - 1, -1 - 0
    np.testing.assert_array_equal(bn.params["scale"], [1.0, 0.75])
    np.testing.assert_array_equal(bn.params["bias"], [-0.5, -1.0])


def test_batchnorm_with_var_plus_epsilon_not_positive_is_refused():
    b = ModelBuilder("bn", num_steps=1)
    x = b.input("x", (2, 2, 2))
    b.output(b.relu(b.batchnorm(x, [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [1.0, -2.0], eps=1.0, name="bn")))
    with pytest.raises(ModelError, match=r"node 'bn' \(BatchNormalization\): channel 1 has var -2 \+ epsilon 1 <= 0"):
        load_onnx(b.build())


# ============================================================================ sizes before allocation (compile)
@pytest.mark.parametrize("dim,match", [(0, "dimension 1 is 0; sizes must be >= 1"),
                                       (2 ** 40, "more than 16777216 values per sample")])
def test_graph_input_dims_are_bounded(model, img, dim, match):
    m = _copy(model)
    vi = next(i for i in m.graph.input if i.name == "image")
    vi.type.tensor_type.shape.dim[1].dim_value = dim
    with pytest.raises(ShapeError, match=match) as ei:
        load_onnx(m)
    assert "graph input 'image'" in str(ei.value)


def test_a_layer_that_unfolds_to_too_many_synapses_is_never_unfolded():
    # the import reads it (a model is imported as shipped); lowering keeps it structured (a convolution block, no
    # synapse built) and a pass asking for its unfolded synapses is refused: 64 x 512 x 512 outputs x 64 x 3 x 3
    # taps = 9,663,676,416 (the border taps outside the input counted: an upper bound)
    b = ModelBuilder("big", num_steps=1)
    x = b.input("x", (64, 512, 512))
    b.output(b.relu(b.conv(x, np.ones((64, 64, 3, 3), np.float32), pads=(1, 1, 1, 1), name="c")))
    g = load_onnx(b.build())
    (l,) = lower(g).layers
    assert l.coo is None and l.blocks is not None
    with pytest.raises(ShapeError, match=r"layer 'c'.*: unfolds to 9663676416 synapses, more than nmc unfolds in one "
                                         r"layer \(67108864\); it is mapped structured"):
        l.rows


def test_a_run_estimated_to_take_too_long_is_refused(cm, img, monkeypatch):
    monkeypatch.setenv("NMC_MAX_RUN_SECONDS", "1")
    with pytest.raises(InputError, match=r"x 1000000 steps .* on the reference backend would take about [\d.e+]+ s "
                                         r"\(estimate\), more than the limit of 1 s \(NMC_MAX_RUN_SECONDS\); run fewer "
                                         r"steps \(--steps\) or samples, or use the numba backend"):
        nmc.emulate(cm, {"image": img[:1]}, steps=10 ** 6, backend="reference")


def test_core_map_whose_chip_grid_was_edited_to_a_huge_system(cm, tmp_path):
    meta = json.loads(json.dumps(cm.meta, default=float))
    meta["chips"] = [1, 2 ** 31 - 1]
    p = save_coremap(cm.replace(meta=meta), tmp_path / "m.nmc")
    with pytest.raises(CoreMapError, match=r"header meta.chips \[1, 2147483647\] of 156-core chips is \d+ cores, more "
                                           r"than nmc models"):
        load_coremap(p)


def test_compile_for_a_huge_grid_of_chips_is_refused(model, img):
    msg = _compile_error(model, InputError, calib={"image": img}, chips="100000x100000")
    assert "chips=100000x100000" in msg and "more than nmc models" in msg


@pytest.mark.parametrize("content,match", [(b"\xff\xfe[core\n", "is not UTF-8 text"), (b"[core\n", "not valid TOML"),
                                           (None, "is a folder")])
def test_damaged_chip_files(tmp_path, content, match):
    p = tmp_path / "chip.toml"
    if content is None:
        p.mkdir()
    else:
        p.write_bytes(content)
    with pytest.raises(ChipSpecError, match=match):
        load_chip(p)



def test_a_state_pair_listed_twice(model, img):
    m = _copy(model)
    states = [[i.name, i.name + ".next", 0.0] for i in m.graph.input if i.name != "image"]
    _meta(m, "nmc.state", json.dumps(states + [states[-1]]))
    msg = _compile_error(m, calib={"image": img})
    assert f"nmc.state lists input '{states[-1][0]}'" in msg and "more than one pair" in msg


def test_core_map_output_shape_edited_and_rehashed(cm, tmp_path):
    meta = json.loads(json.dumps(cm.meta, default=float))
    meta["outputs"][0]["shape"] = [2, 10]
    p = save_coremap(cm.replace(meta=meta), tmp_path / "m.nmc")
    with pytest.raises(CoreMapError, match=r"meta.outputs\[0\] \('head'\) has shape \[2, 10\] \(20 values\) but 10 "
                                           r"output taps"):
        load_coremap(p)


def test_add_of_two_constants_that_do_not_broadcast():
    b = ModelBuilder("cadd", num_steps=1)
    x = b.input("x", (4,))
    b.output(b.relu(b.gemm(x, np.eye(4), name="fc"), name="r"))
    m = b.build()
    m.graph.initializer.extend([numpy_helper.from_array(np.ones(2, np.float32), "c1"),
                                numpy_helper.from_array(np.ones(8, np.float32), "c2")])
    m.graph.node.insert(0, helper.make_node("Add", ["c1", "c2"], ["c3"], name="cadd"))
    with pytest.raises(ModelError, match=r"node 'cadd' \(Add\): computing it from its constants 'c1' \[2\] and 'c2' \[8\] fails"):
        load_onnx(m)
