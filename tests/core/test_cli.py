"""The README's command-line flow and file contracts on the shipped example."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nmc
import nmc.cli as cli
from nmc.cli import main
from nmc.emulator.kernels import kernels_compiled
from nmc.frontend import load_onnx, run_float

EX = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    cm_path = d / "model.nmc"
    assert main(["compile", str(EX / "digits_hybrid.onnx"), "--chip", "tianjic", "-o", str(cm_path)]) == 0
    return d, cm_path


def test_compile_run_profile_info(compiled, capsys):
    d, cm_path = compiled
    inputs = EX / "digits_inputs.npz"
    res, rep = d / "result.npz", d / "report.json"
    assert main(["run", str(cm_path), "--input", str(inputs), "--steps", "16", "-o", str(res), "--report", str(rep),
                 "--raw"]) == 0
    images = np.load(inputs)["image"]
    B = images.shape[0]
    with np.load(res) as z:
        assert z["logits"].shape == (B, 10)                       # read-out output: [B, ...]
        assert z["lif2.s"].shape == (16, B, 32)                   # per-step output: [T, B, ...]
        assert set(np.unique(z["lif2.s"])) <= {0.0, 1.0}
        assert z["raw/logits"].dtype.kind == "i"
        scale = [o for o in nmc.load(cm_path).meta["outputs"] if o["name"] == "logits"][0]["scale"]
        np.testing.assert_allclose(z["logits"], z["raw/logits"] * scale)
    r = json.loads(rep.read_text())
    for key in ("latency_cycles", "latency_s", "energy_j", "layers", "cores", "events", "chip", "nmc_version",
                "chip_preset", "per_task", "energy_breakdown"):
        assert key in r, key
    assert r["chip"] == "tianjic" and r["nmc_version"] == nmc.__version__
    assert r["latency_s"] == pytest.approx(r["latency_cycles"] / 300e6)
    assert len(r["per_task"]["energy_j"]) == B
    # the breakdowns add up to the totals
    assert sum(l["energy_j"] for l in r["layers"]) + r["energy_breakdown"]["static_idle_j"] == pytest.approx(r["energy_j"])
    assert sum(c["energy_j"] for c in r["cores"]) == pytest.approx(sum(l["energy_j"] for l in r["layers"]))
    # (the per-event and per-core energies of a run are priced by hand in tests/emulator/test_cost.py)

    capsys.readouterr()
    assert main(["profile", str(cm_path), "--input", str(inputs)]) == 0
    out = capsys.readouterr().out
    assert "per task: latency" in out and "fc2" in out and "busiest cores" in out
    assert "sequential schedule" in out and "estimates (not published" in out
    assert main(["profile", str(cm_path), "--input", str(inputs), "--schedule", "pipelined",
                 "--report", str(rep)]) == 0
    assert "pipelined schedule" in capsys.readouterr().out
    rp = json.loads(rep.read_text())
    # pipelined: a task every interval (the busiest phase), no longer than the sequential latency
    assert rp["schedule"] == "pipelined" and rp["interval_cycles"] <= r["latency_cycles"]
    assert rp["throughput_tasks_per_s"] == pytest.approx(300e6 / rp["interval_cycles"])
    assert main(["info", str(cm_path)]) == 0
    out = capsys.readouterr().out
    assert "placement" in out and "conv1" in out and "utilisation" in out
    assert main(["chips"]) == 0
    assert "tianjicx" in capsys.readouterr().out


def test_run_and_reference_backends_agree_via_cli(compiled):
    d, cm_path = compiled
    a, b = d / "a.npz", d / "b.npz"
    inputs = EX / "digits_inputs.npz"
    assert main(["run", str(cm_path), "--input", str(inputs), "--steps", "4", "-o", str(a)]) == 0
    assert main(["run", str(cm_path), "--input", str(inputs), "--steps", "4", "-o", str(b), "--backend", "reference"]) == 0
    with np.load(a) as za, np.load(b) as zb:
        for k in za.files:
            np.testing.assert_array_equal(za[k], zb[k])


def test_bad_input_file_exits_2_with_message(compiled, tmp_path, capsys):
    _, cm_path = compiled
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((3, 8, 8)))
    assert main(["run", str(cm_path), "--input", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "image" in err and "[B, 1, 8, 8]" in err


def test_shipped_example_accuracy_on_chip_tracks_float():
    """The quantised example: accuracy of the emulated chip reported next to the float model."""
    data = np.load(EX / "digits_test.npz")
    images, labels = data["image"][:150], data["label"][:150]
    cm = nmc.compile(EX / "digits_hybrid.onnx", chip="tianjic")
    chip = nmc.emulate(cm, {"image": images}).outputs["logits"].argmax(-1)
    flt = run_float(load_onnx(EX / "digits_hybrid.onnx"), {"image": images.astype(np.float64)}, steps=16)["logits"].argmax(-1)
    acc_chip, acc_float = np.mean(chip == labels), np.mean(flt == labels)
    assert acc_float > 0.9
    assert acc_chip >= acc_float - 0.03, (acc_chip, acc_float)
    assert np.mean(chip == flt) > 0.95


def test_huge_run_is_refused_with_the_estimate(compiled, capsys):
    _, cm_path = compiled
    capsys.readouterr()
    assert main(["run", str(cm_path), "--input", str(EX / "digits_inputs.npz"), "--steps", "1e7"]) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "GiB" in err and "--steps" in err and "--max-memory" in err
    with pytest.raises(nmc.NmcError, match="needs about"):
        nmc.emulate(nmc.load(cm_path), EX / "digits_inputs.npz", steps=10 ** 7)


def test_run_jobs_equal_one_thread(compiled):
    d, cm_path = compiled
    a, b = d / "j1.npz", d / "j2.npz"
    inputs = EX / "digits_inputs.npz"
    assert main(["run", str(cm_path), "--input", str(inputs), "--steps", "3", "-o", str(a)]) == 0
    assert main(["run", str(cm_path), "--input", str(inputs), "--steps", "3", "-o", str(b), "--jobs", "2"]) == 0
    with np.load(a) as za, np.load(b) as zb:
        for k in za.files:
            np.testing.assert_array_equal(za[k], zb[k])


def test_run_trace_and_stream_dir(compiled, capsys):
    d, cm_path = compiled
    inputs = EX / "digits_inputs.npz"
    tr, out, s = d / "trace.json", d / "t.npz", d / "stream"
    capsys.readouterr()
    assert main(["run", str(cm_path), "--input", str(inputs), "--steps", "6", "--trace", str(tr), "--trace-steps", "2",
                 "--trace-sample", "1", "--stream-dir", str(s), "-o", str(out), "--report", str(d / "r.json")]) == 0
    msg = capsys.readouterr().out
    assert "timeline of sample 1" in msg and "streamed" in msg
    t = json.loads(tr.read_text())
    rep = json.loads((d / "r.json").read_text())
    cyc = sum(e["args"]["cycles"] for e in t["traceEvents"] if e.get("cat") in ("phase", "untraced") and e["tid"] == 1)
    assert cyc == rep["per_task"]["latency_cycles"][1]
    assert sum(e.get("cat") == "step" for e in t["traceEvents"]) == 2
    with np.load(out) as z:
        assert "lif2.s" not in z.files and "logits" in z.files  # streamed outputs are in the stream folder
    assert np.load(s / "lif2.s.npy").shape == (6, np.load(inputs)["image"].shape[0], 32)
    assert main(["run", str(cm_path), "--input", str(inputs), "--trace-steps", "2"]) == 2
    assert "--trace FILE.json" in capsys.readouterr().err


def test_profile_plot_writes_pngs(compiled, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib (the nmc[plot] extra) is not installed: --plot untested")
    _, cm_path = compiled
    assert main(["profile", str(cm_path), "--input", str(EX / "digits_inputs.npz"), "--steps", "8",
                 "--plot", str(tmp_path / "p")]) == 0
    assert "plots ->" in capsys.readouterr().out
    for name in ("energy_by_layer.png", "energy_by_event.png", "spike_raster.png", "core_grid.png"):
        data = (tmp_path / "p" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, name


def test_profile_plot_without_matplotlib_says_how_to_get_it(compiled, monkeypatch, capsys):
    _, cm_path = compiled
    monkeypatch.setattr(cli, "have_matplotlib", lambda: False)
    assert main(["profile", str(cm_path), "--input", str(EX / "digits_inputs.npz"), "--plot", "x"]) == 2
    assert "pip install -e '.[plot]'" in capsys.readouterr().err


def test_first_run_says_it_is_compiling(compiled, monkeypatch, capsys):
    _, cm_path = compiled
    inputs = EX / "digits_inputs.npz"
    capsys.readouterr()
    assert main(["run", str(cm_path), "--input", str(inputs), "--steps", "2"]) == 0
    assert kernels_compiled()  # compiled (or loaded) in this process: no message from now on
    assert "compiling" not in capsys.readouterr().err
    monkeypatch.setattr(cli, "kernels_compiled", lambda: False)
    assert main(["run", str(cm_path), "--input", str(inputs), "--steps", "2"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "compiling the emulator's Numba kernels" in err and "cached on disk" in err


def test_a_killed_write_leaves_no_temp_file(tmp_path):
    """``kill`` (SIGTERM) during ``nmc compile -o``'s write: the command ends with 143 and removes its temporary
    file; the destination is never half written."""
    script = ("import os, sys, time\n"
              "from nmc import cli\n"
              "def slow_fsync(fd):\n"
              "    print('writing', flush=True)\n"
              "    time.sleep(60)\n"
              "os.fsync = slow_fsync\n"
              f"sys.exit(cli.main(['compile', {str(EX / 'digits_hybrid.onnx')!r}, '-o', 'm.nmc']))\n")
    p = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "writing"  # the temp file exists and is being synced
        assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".tmp")]
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        p.kill()
    assert sorted(f.name for f in tmp_path.iterdir()) == []


def test_compile_with_locality_and_profile_placement_reports_the_measures(compiled, capsys):
    d, _ = compiled
    capsys.readouterr()
    loc, prof = d / "loc.nmc", d / "prof.nmc"
    assert main(["compile", str(EX / "digits_hybrid.onnx"), "--placement", "locality", "-o", str(loc)]) == 0
    out = capsys.readouterr().out
    assert "placement locality: traffic x hops" in out and "max link load" in out and "chip crossings" in out
    assert main(["compile", str(EX / "digits_hybrid.onnx"), "--placement", "profile", "--profile-inputs",
                 str(EX / "digits_inputs.npz"), "-o", str(prof)]) == 0
    assert "placement profile: traffic x hops" in capsys.readouterr().out
    assert main(["info", str(prof)]) == 0
    assert "placement profile: traffic x hops" in capsys.readouterr().out
    assert main(["compile", str(EX / "digits_hybrid.onnx"), "--placement", "profile", "-o", str(prof)]) == 2
    assert "--profile-inputs" in capsys.readouterr().err
