"""Seeded fuzz campaign: hostile files and numbers into nmc's readers.

Five kinds of case, each reproducible from ``(kind, seed)``:

- ``onnx``: a model of the repository (``examples/digits_hybrid.onnx`` and ``tests/nets.py`` builders, a
  Scan model, an op zoo) mutated at the protobuf level (attributes, dims, data types, initializer values,
  names and external data, metadata, node inputs, Constant nodes, raw bytes, chip overrides, calibration
  inputs, chip files with a damaged value) into ``nmc.compile``; a compiled map must then save, load and
  print (``nmc info``) and hold no overflowed integer.
- ``npz``: a damaged ``inputs.npz`` (values, dtypes, shapes, names, state inputs, bytes, a lying .npy
  header, a decompression bomb, huge ``steps``) into ``nmc.emulate`` / ``nmc run``.
- ``nmc``: a damaged ``.nmc`` core map (header or arrays edited and re-hashed with nmc's own format,
  raw byte damage, zip structure damage, a decompression bomb) into ``nmc.load`` / ``nmc info`` /
  ``nmc run`` / ``nmc profile`` (also with output paths that are folders or unwritable); the seeds include tiled
  maps (shared-kernel cores, core-map format 3).
- ``kmap``: a tiled core map (seeded random CNNs compiled with ``tiles="on"``, whole, split over small cores with
  every third core stored dense, and with LIF layers) with its shared-kernel tables damaged and re-hashed
  (``cores.w_fmt``, every ``kblocks``/``kpatch`` column: out of range, negative, huge, geometry scaled so the
  covering checks pass, offsets beyond the data, axons beyond the core's, blocks on dense cores, unsorted,
  inconsistent sizes) into ``nmc.load`` (with and without the design rules, then every core's weights
  expanded) / ``nmc info`` / ``nmc.emulate`` (both backends).
- ``tiles``: a seeded random small CNN on a chip of small cores compiled with ``tiles="on"`` and ``"off"``:
  both must emulate (numba) to identical outputs or both refuse; a difference is a ``slip``, one side refusing
  alone a clean error counted as ``one-sided``.

Every case runs in a worker subprocess capped with ``RLIMIT_AS`` (4 GB) and a per-case timeout (20 s);
a worker runs cases one after the other and is restarted after a hang or a memory failure.  Outcomes:
``ok``, ``error`` (one clean ``NmcError``), ``traceback`` (any other exception, or an internal exception
the mapper's pass manager wrapped in a ``PassError``: its type and innermost frame), ``hang``, ``memory`` (MemoryError or the worker died), ``slip`` (accepted but the result is
broken: a compiled map that does not load, a report that is not valid JSON, non-finite outputs, a temp
file left behind).

    PYTHONPATH=... python benchmarks/fuzz.py --cases 1000 [--kinds onnx,npz,nmc] [--seed0 0] [--time 600]
    python benchmarks/fuzz.py --repro nmc:123      # run one case in this process, show its traceback

Workers run with ``NMC_MAX_RUN_SECONDS=5`` (unless set): an emulation that nmc estimates to take longer is
refused with the estimate, so the 20 s timeout measures hangs, not long runs that were asked for.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import re
import resource
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import nmc  # noqa: E402
from nmc import cli, corefile  # noqa: E402
from nmc.chip import PRESET_DIR  # noqa: E402
from nmc.errors import NmcError, PassError  # noqa: E402
from nmc.frontend.builder import ModelBuilder  # noqa: E402

import nets  # noqa: E402

KINDS = ("onnx", "npz", "nmc", "kmap", "tiles")
OUTCOMES = ("ok", "error", "traceback", "hang", "memory", "slip")
MEM_LIMIT = 4 << 30
CASE_TIMEOUT = 20.0

NASTY_FLOATS = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e308, -1e308, 5e-324, 2.0 ** 63, -2.0 ** 63,
                1e30, -1.0, 0.5, 3.0, 1e-30, 255.5]
NASTY_INTS = [0, -1, 1, 2, 3, -2 ** 31, 2 ** 31 - 1, 2 ** 63 - 1, -2 ** 63, 10 ** 9, 7, 65536, -7]
ATTR_NAMES = ["strides", "pads", "kernel_shape", "group", "dilations", "axis", "alpha", "beta", "epsilon", "transA",
              "transB", "threshold", "reset_mode", "num_scan_inputs", "value", "ceil_mode", "auto_pad",
              "count_include_pad", "allowzero", "spike_ge", "reset_delay", "v_reset", "gain", "training_mode"]
META_KEYS = ["nmc.state", "nmc.outputs", "nmc.num_steps", "nmc.step_inputs", "nmc.ranges", "nmc.convention"]


# ----------------------------------------------------------------------------- seed material
def zoo_model() -> onnx.ModelProto:
    """Most converters once: strided conv, batchnorm, relu, maxpool, reshape, matmul, constant add, identity,
    a CubaLIF and a LIFRefractory layer."""
    rng = np.random.default_rng(7)
    b = ModelBuilder("zoo", num_steps=3)
    x = b.input("img", (2, 6, 6))
    h = b.conv(x, rng.normal(size=(3, 2, 3, 3)) * 0.4, rng.normal(size=3) * 0.1, strides=(2, 2), pads=(1, 1, 1, 1),
               name="conv")
    h = b.relu(b.batchnorm(h, [1.0, 0.5, 2.0], [0.1, 0.0, -0.1], [0.0, 0.1, 0.2], [1.0, 2.0, 0.5], name="bn"),
               name="relu")
    h = b.maxpool(h, (2, 2), name="pool")
    h = b.reshape(h, [-1], name="reshape")
    h = b.relu(b.add_const(b.matmul(h, rng.normal(size=(3, 8)) * 0.5, name="mm"), rng.normal(size=8) * 0.1,
                           name="bias"), name="relu2")
    h = b.identity(h, name="ident")
    s, *_ = b.neuron("CubaLIF", b.gemm(h, rng.normal(size=(6, 8)), name="fc"), "cuba")
    s2, *_ = b.neuron("LIFRefractory", b.gemm(s, rng.normal(size=(4, 6)), name="fc2"), "refr")
    b.output(h)
    b.output(s2)
    return b.build()


TILED_SPLIT = {"core.axons": 48, "core.neurons": 32}


def random_cnn(seed: int, steps: int | None = None):
    """A seeded random small CNN and calibration inputs: convolutions of random kernel sizes, strides, paddings,
    dilations and groups, ReLUs, max/average pools, residual sums, a LIF layer on some (``steps`` > 1), a dense
    head.  Returns ``(model, calib)``."""
    rng = np.random.default_rng([99, seed])
    T = int(rng.choice([1, 1, 3])) if steps is None else steps
    b = ModelBuilder(f"cnn{seed}", num_steps=T)
    C, H, W = int(rng.integers(1, 5)), int(rng.integers(4, 11)), int(rng.integers(4, 11))
    calib = {"x": np.round(rng.uniform(0, 1, size=(6, C, H, W)) * 8) / 8}
    h = b.input("x", (C, H, W))
    for i in range(int(rng.integers(1, 4))):
        groups = [g for g in (1, 2, 3, 4) if C % g == 0]
        g = int(rng.choice(groups))
        co = g * int(rng.integers(1, 4))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        dh, dw = int(rng.choice([1, 1, 2])), int(rng.choice([1, 1, 2]))
        sh, sw = int(rng.choice([1, 1, 2])), int(rng.choice([1, 2]))
        pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        oh = (H + pads[0] + pads[2] - (kh - 1) * dh - 1) // sh + 1
        ow = (W + pads[1] + pads[3] - (kw - 1) * dw - 1) // sw + 1
        if oh < 1 or ow < 1:
            continue
        wq = rng.integers(-4, 5, size=(co, C // g, kh, kw)) / 4.0  # coarse weights: few rounding ties
        bias = rng.integers(-2, 3, size=co) / 4.0 if rng.random() < 0.5 else None
        h2 = b.conv(h, wq, bias, strides=(sh, sw), pads=pads, dilations=(dh, dw), group=g, name=f"conv{i}")
        if rng.random() < 0.3:  # a sum of two convolutions of one input (two blocks on one tile)
            w2 = rng.integers(-4, 5, size=(co, C // g, kh, kw)) / 4.0
            h2 = b.add(h2, b.conv(h, w2, None, strides=(sh, sw), pads=pads, dilations=(dh, dw), group=g,
                                  name=f"branch{i}"), name=f"sum{i}")
        h2 = b.lif(h2, f"lif{i}", beta=0.5, threshold=0.5)[0] if T > 1 and rng.random() < 0.4 else b.relu(h2)
        if (co, oh, ow) == (C, H, W) and rng.random() < 0.6:
            h2 = b.relu(b.add(h2, h, name=f"res{i}"))
        h, C, H, W = h2, co, oh, ow
        if min(H, W) >= 2 and rng.random() < 0.4:
            k = int(rng.choice([2, 2, 3])) if min(H, W) >= 3 else 2
            st = int(rng.choice([1, k]))
            h = (b.maxpool if rng.random() < 0.5 else b.avgpool)(h, (k, k), strides=(st, st), name=f"pool{i}")
            H, W = (H - k) // st + 1, (W - k) // st + 1
    m = int(rng.integers(3, 12))
    h = b.gemm(b.flatten(h), rng.integers(-4, 5, size=(m, C * H * W)) / 8.0, name="fc")
    if T > 1:
        s, _ = b.lif(h, "lif", beta=0.75, threshold=1.0)
        b.output(b.gemm(b.spike_count(s, "count"), rng.integers(-4, 5, size=(4, m)) / 4.0, name="head"))
    else:
        b.output(b.gemm(b.relu(h), rng.integers(-4, 5, size=(4, m)) / 4.0, name="head"))
    return b.build(), calib


def densify(cm, which):
    """``cm`` with the shared-kernel cores ``which`` stored as dense blocks (their expanded weights): a map that
    mixes dense and shared-kernel cores, as ``tiles="auto"`` makes of a model with large and small layers."""
    import dataclasses
    c, kb = cm.cores, cm.kblocks
    which = np.asarray(sorted(which), np.int64)
    fmt = c.w_fmt.copy()
    fmt[which] = 0
    blocks = [cm.core_weights(i).reshape(-1) if fmt[i] == 0 else np.zeros(0, np.int8) for i in range(cm.num_cores)]
    w_off = np.concatenate([[0], np.cumsum([b.size for b in blocks])]).astype(np.int64)
    kernels = cm.weights.data[int(c.w_off[-1]):]
    keep = ~np.isin(kb.core, which)
    sizes = np.diff(kb.ax_off)[keep]
    ax = np.concatenate([cm.kpatch.ax[kb.ax_off[k]:kb.ax_off[k + 1]] for k in np.flatnonzero(keep)] or
                        [np.zeros(0, np.int32)])
    return cm.replace(
        cores=dataclasses.replace(c, w_fmt=fmt, w_off=w_off),
        weights=dataclasses.replace(cm.weights, data=np.concatenate(blocks + [kernels]).astype(np.int8)),
        kblocks=dataclasses.replace(kb, core=kb.core[keep], w_off=kb.w_off[keep] - int(c.w_off[-1]) + int(w_off[-1]),
                                    geom=kb.geom[keep], ax_off=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)),
        kpatch=dataclasses.replace(cm.kpatch, ax=ax.astype(np.int32)))


class Seeds:
    """The unmutated material, built once per worker."""

    def __init__(self):
        rng = np.random.default_rng(0)
        digits = onnx.load(str(ROOT / "examples" / "digits_hybrid.onnx"))
        self.models = {
            "digits": (digits, None),
            "hybrid": (nets.hybrid(seed=1, steps=4, recurrent=True),
                       {"image": rng.integers(0, 17, (3, 1, 8, 8)).astype(np.float64)}),
            "lossless": (nets.lossless_snn(seed=2, steps=5, n_in=12, hidden=10, n_out=6),
                         {"spikes": nets.spike_inputs(3, 5, 2, 12)}),
            "scan": (nets.scan_model(), {"x": rng.normal(size=(6, 2, 3))}),
            "zoo": (zoo_model(), {"img": rng.normal(size=(4, 2, 6, 6))}),
        }
        # tiled maps (core-map format 3, shared-kernel cores): a CNN with grouped, strided, dilated, padded
        # convolutions, a residual sum and pools, mapped whole and split over small cores (partial + merge cores)
        self.models["tiled"] = random_cnn(9)  # sums of two convolutions
        self.models["tiled_split"] = random_cnn(25)  # sums, a max pool
        self.models["tiled_lif"] = random_cnn(3)  # sums, pools, LIF layers on convolutions
        kw = {"tiled": dict(tiles="on"), "tiled_split": dict(tiles="on", overrides=TILED_SPLIT, chips="auto"),
              "tiled_lif": dict(tiles="on", overrides={"core.neurons": 64}, chips="auto")}
        self.compiled = {}
        self.tiled = ("tiled", "tiled_split", "tiled_lif")
        for name in ("digits", "hybrid", "lossless", "zoo") + self.tiled:
            m, calib = self.models[name]
            cm = nmc.compile(m, calib=calib, **kw.get(name, {}))
            if name in self.tiled:
                assert np.any(cm.cores.w_fmt == 1), name
            if name == "tiled_split":  # every third core dense: blocks beside dense cores
                cm = densify(cm, range(0, cm.num_cores, 3))
                corefile.validate(cm)
            if name == "digits":
                x = {"image": np.load(ROOT / "examples" / "digits_inputs.npz")["image"][:2]}
            elif name in self.tiled:
                x = {k: np.asarray(v[:1]) for k, v in calib.items()}
            else:
                x = {k: np.asarray(v[:, :1] if cm.meta["inputs"][0]["kind"] == "step" else v[:1])
                     for k, v in calib.items()}
            buf = io.BytesIO()
            np.savez(buf, **x)
            with tempfile.TemporaryDirectory() as d:
                corefile.save(cm, Path(d) / "m.nmc")
                data = (Path(d) / "m.nmc").read_bytes()
            self.compiled[name] = (cm, data, x, buf.getvalue())
            nmc.emulate(cm, x)  # warm the JIT outside the timed cases


_SEEDS: Seeds | None = None


def seeds() -> Seeds:
    global _SEEDS
    if _SEEDS is None:
        _SEEDS = Seeds()
    return _SEEDS


# ----------------------------------------------------------------------------- helpers
def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def nasty_json(rng, depth=0):
    r = rng.random()
    if r < 0.2:
        return _pick(rng, NASTY_INTS)
    if r < 0.35:
        return _pick(rng, NASTY_FLOATS)
    if r < 0.5:
        return _pick(rng, ["", "x", "nan", "\udcff" if False else "\u00ff", "../../etc/passwd", "lif1.v", "image",
                           "step", "static", "neuron", "axon", "none"])
    if r < 0.6:
        return _pick(rng, [None, True, False])
    if r < 0.8 and depth < 3:
        return [nasty_json(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    if depth < 3:
        return {str(_pick(rng, ["a", "name", "shape", "scale", "kind", "lo", "hi"])): nasty_json(rng, depth + 1)
                for _ in range(int(rng.integers(0, 3)))}
    return 0


def mutate_json(rng, obj, p_stop=0.3):
    """Replace, delete or add one element somewhere in a JSON-like tree; returns the new tree."""
    if not isinstance(obj, (dict, list)) or not obj or rng.random() < p_stop * 0.5:
        return nasty_json(rng)
    if isinstance(obj, dict):
        obj = dict(obj)
        k = _pick(rng, sorted(obj))
        r = rng.random()
        if r < 0.15:
            del obj[k]
        elif r < 0.25:
            obj[str(_pick(rng, ["extra", "x", k + "_"]))] = nasty_json(rng)
        else:
            obj[k] = mutate_json(rng, obj[k], p_stop)
        return obj
    obj = list(obj)
    i = int(rng.integers(len(obj)))
    r = rng.random()
    if r < 0.15:
        del obj[i]
    elif r < 0.25:
        obj.append(copy.deepcopy(obj[i]) if rng.random() < 0.5 else nasty_json(rng))
    else:
        obj[i] = mutate_json(rng, obj[i], p_stop)
    return obj


def damage_bytes(rng, data: bytes) -> bytes:
    b = bytearray(data)
    r = rng.random()
    if r < 0.2 or not b:
        return bytes(b[: int(rng.integers(0, max(1, len(b))))])
    if r < 0.3:
        return b""
    if r < 0.4:
        return bytes(b) + bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(len(b)))
        b[i] = int(rng.integers(256))
    return bytes(b)


def lying_npy(rng, arr: np.ndarray) -> bytes:
    """An .npy whose header claims another (often huge) shape or dtype than its data."""
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=False)
    raw = b.getvalue()
    hlen = struct.unpack("<H", raw[8:10])[0]
    header = raw[10:10 + hlen].decode("latin1")
    shape = _pick(rng, ["(1000000000000,)", "(4000000000, 8)", "(-1,)", "(3, 0, 2)", "(2, 1, 8, 8)", "()",
                        "(70000, 70000)", "(1, 1, 1, 1, 1, 1, 1, 1, 1)"])
    descr = _pick(rng, [None, "'<f8'", "'<U9'", "'|O'", "'<c16'", "'V3'", "'<i8'", "'|b1'"])
    new = header.replace(str(arr.shape).replace(",)", ",)") if arr.ndim != 1 else f"({arr.shape[0]},)", shape, 1)
    if descr:
        new = re.sub(r"'descr': '[^']*'", f"'descr': {descr}", new)
    new = new.strip().ljust(hlen - 1) + "\n"
    if len(new) != hlen:
        new = new[: hlen - 1] + "\n"
    return raw[:8] + struct.pack("<H", hlen) + new.encode("latin1") + raw[10 + hlen:]


_BOMB: dict[int, bytes] = {}


def bomb_member(name: str, size: int) -> tuple[bytes, int, int]:
    """(deflate stream, crc, uncompressed size) of an .npy of about ``size`` zero bytes (uint8 [n])."""
    if size not in _BOMB:
        hdr = io.BytesIO()
        np.lib.format.write_array_header_1_0(hdr, {"descr": "|u1", "fortran_order": False, "shape": (size,)})
        h = hdr.getvalue()
        chunk = bytes(1 << 24)
        n_chunks = max(2, (size - len(h)) // len(chunk))
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        first = c.compress(h) + c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
        block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)  # after a full flush: the same bytes every time
        stream = first + block * (n_chunks - 1) + c.flush()
        crc = zlib.crc32(h)
        for _ in range(n_chunks):
            crc = zlib.crc32(chunk, crc)
        usize = len(h) + n_chunks * len(chunk)
        assert usize - len(h) <= size  # the header claims `size` bytes; the data is shorter (a lie too)
        _BOMB[size] = (stream, crc & 0xFFFFFFFF, usize)
    return _BOMB[size]


def raw_zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip from (name, data, method, crc, uncompressed size) members written verbatim (no zip64)."""
    out = io.BytesIO()
    central = []
    for name, data, method, crc, usize in members:
        off = out.tell()
        nb = name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), usize, len(nb), 0))
        out.write(nb)
        out.write(data)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data),
                                   usize, len(nb), 0, 0, 0, 0, 0, off) + nb)
    cd = out.tell()
    for c in central:
        out.write(c)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), out.tell() - cd, cd, 0))
    return out.getvalue()


def zip_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(n, z.read(n)) for n in z.namelist()]


def make_zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for n, d in members:
            with warnings_off():
                z.writestr(n, d)
    return buf.getvalue()


@contextlib.contextmanager
def warnings_off():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ----------------------------------------------------------------------------- onnx mutators
def _nodes(m):
    out = list(m.graph.node)
    for n in m.graph.node:  # Scan bodies
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out.extend(a.g.node)
    return out


def _tensor_names(m):
    g = m.graph
    names = [i.name for i in g.input] + [t.name for t in g.initializer] + [o for n in g.node for o in n.output]
    return names + ["", "nonexistent", "image"]


def mo_attr(rng, m, ctx):
    nodes = _nodes(m)
    if not nodes:
        return
    n = _pick(rng, nodes)
    r = rng.random()
    if n.attribute and r < 0.7:
        a = _pick(rng, list(n.attribute))
        name = a.name
        n.attribute.remove(a)
        if rng.random() < 0.15:
            return  # attribute deleted
    else:
        name = _pick(rng, ATTR_NAMES)
        for a in list(n.attribute):
            if a.name == name:
                n.attribute.remove(a)
    t = rng.random()
    if t < 0.25:
        v = _pick(rng, NASTY_INTS)
    elif t < 0.5:
        v = [int(_pick(rng, NASTY_INTS)) for _ in range(int(rng.integers(0, 6)))]
        if not v:
            n.attribute.append(helper.make_attribute(name, [], attr_type=onnx.AttributeProto.INTS))
            return
    elif t < 0.7:
        v = float(_pick(rng, NASTY_FLOATS))
    elif t < 0.8:
        v = [float(_pick(rng, NASTY_FLOATS)) for _ in range(int(rng.integers(1, 4)))]
    elif t < 0.92:
        v = bytes(_pick(rng, [b"\xff\xfe\x00", b"subtract", b"zero", b"", b"SAME_UPPER", b"VALID", b"\xc3"]))
    else:
        v = numpy_helper.from_array(np.array(_pick(rng, NASTY_FLOATS), dtype=np.float32))
    n.attribute.append(helper.make_attribute(name, v))


def mo_dims(rng, m, ctx):
    vis = list(m.graph.input) + list(m.graph.output)
    if not vis:
        return
    vi = _pick(rng, vis)
    tt = vi.type.tensor_type
    r = rng.random()
    if r < 0.15:
        tt.ClearField("shape")
    elif r < 0.3:
        tt.elem_type = int(_pick(rng, [0, 2, 6, 7, 8, 9, 10, 11, 16, 99]))
    elif r < 0.4 and tt.HasField("shape"):
        tt.shape.dim.add().dim_value = int(_pick(rng, [1, 3, 0]))
    elif tt.HasField("shape") and tt.shape.dim:
        d = _pick(rng, list(tt.shape.dim))
        if rng.random() < 0.2:
            d.dim_param = _pick(rng, ["N", "T", "x"])
        else:
            d.dim_value = int(_pick(rng, [0, -1, 1, 2, 2 ** 31, 2 ** 40, 7, 10 ** 6]))


def _init(rng, m):
    inits = list(m.graph.initializer)
    return _pick(rng, inits) if inits else None


def mo_init_dtype(rng, m, ctx):
    t = _init(rng, m)
    if t is not None:
        t.data_type = int(_pick(rng, [0, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 99]))


def mo_init_values(rng, m, ctx):
    t = _init(rng, m)
    if t is None:
        return
    try:
        a = numpy_helper.to_array(t).astype(np.float64).copy()
    except Exception:
        return
    if a.size:
        flat = a.reshape(-1)
        for _ in range(int(rng.integers(1, 4))):
            flat[int(rng.integers(flat.size))] = _pick(rng, NASTY_FLOATS)
    with np.errstate(all="ignore"):
        new = numpy_helper.from_array(a.astype(np.float32), t.name)
    t.CopyFrom(new)


def mo_init_dims(rng, m, ctx):
    t = _init(rng, m)
    if t is None:
        return
    r = rng.random()
    if r < 0.4 and t.dims:
        t.dims[int(rng.integers(len(t.dims)))] = int(_pick(rng, [0, -1, 2, 1000, 2 ** 33]))
    elif r < 0.6:
        t.dims.append(int(_pick(rng, [1, 2, 0])))
    elif r < 0.8 and t.raw_data:
        t.raw_data = t.raw_data[: int(rng.integers(len(t.raw_data)))]
    else:
        del t.dims[:]


def mo_init_rename(rng, m, ctx):
    t = _init(rng, m)
    if t is None:
        return
    g = m.graph
    r = rng.random()
    if r < 0.35:
        t.name = _pick(rng, [i.name for i in g.input] or ["x"])
    elif r < 0.5:
        g.initializer.remove(t)
    elif r < 0.65:
        g.initializer.append(copy.deepcopy(t))
    else:
        outs = [o for n in g.node for o in n.output]
        t.name = _pick(rng, outs or ["y"])


def mo_meta(rng, m, ctx):
    meta = {p.key: p.value for p in m.metadata_props}
    key = _pick(rng, META_KEYS)
    r = rng.random()
    if r < 0.1:
        meta.pop(key, None)
    elif r < 0.2:
        meta[key] = _pick(rng, ["{", "[1,", "NaN", "1e999", "\"\\ud800\"", "", "[[\"lif1.v\", \"lif1.v.next\", \"abc\"]]",
                                "[[\"lif1.v\", \"lif1.v.next\", [1, 2, 3]]]", "[[\"lif1.v\", \"lif1.v.next\", NaN]]",
                                "{\"fc1\": [NaN, 1, false]}", "{\"fc1\": [5, -5, false]}", "\"logits\"",
                                "[[\"lif1.v\", \"lif1.v.next\", 1e999]]"])
    else:
        try:
            cur = json.loads(meta.get(key, "null"))
        except ValueError:
            cur = None
        meta[key] = json.dumps(mutate_json(rng, cur))
    del m.metadata_props[:]
    helper.set_model_props(m, meta)


def mo_node_inputs(rng, m, ctx):
    nodes = _nodes(m)
    if not nodes:
        return
    n = _pick(rng, nodes)
    names = _tensor_names(m)
    r = rng.random()
    if r < 0.4 and n.input:
        n.input[int(rng.integers(len(n.input)))] = _pick(rng, names)
    elif r < 0.6 and n.input:
        del n.input[-1]
    elif r < 0.7:
        n.input.append(_pick(rng, names))
    elif r < 0.85 and n.output:
        n.output[int(rng.integers(len(n.output)))] = _pick(rng, names)
    else:
        del n.output[1:]


def mo_nodes(rng, m, ctx):
    g = m.graph
    r = rng.random()
    if r < 0.15:
        del g.node[:]
    elif r < 0.45 and g.node:
        del g.node[int(rng.integers(len(g.node)))]
    elif r < 0.6 and g.node:
        g.node.append(copy.deepcopy(_pick(rng, list(g.node))))
    elif g.node:
        n = _pick(rng, list(g.node))
        n.op_type = _pick(rng, ["Gemm", "Conv", "Relu", "MaxPool", "AveragePool", "Flatten", "Reshape", "Add",
                                "Identity", "BatchNormalization", "MatMul", "GlobalAveragePool", "LIF", "SpikeCount",
                                "CubaLIF", "Constant", "Scan", "Sigmoid"])
        if rng.random() < 0.5:
            n.domain = _pick(rng, ["", "nmc", "ai.onnx"])


def mo_constant(rng, m, ctx):
    """Turn an initializer into a Constant node with a random (often broken) value attribute."""
    t = _init(rng, m)
    g = m.graph
    name = t.name if t is not None else "c"
    if t is not None and rng.random() < 0.7:
        g.initializer.remove(t)
    r = rng.random()
    if r < 0.2:
        node = helper.make_node("Constant", [], [name])
    elif r < 0.4 and t is not None:
        node = helper.make_node("Constant", [], [name], value=t)
    elif r < 0.55:
        node = helper.make_node("Constant", [], [name], value_float=float(_pick(rng, NASTY_FLOATS)))
    elif r < 0.7:
        node = helper.make_node("Constant", [], [name], value_ints=[int(_pick(rng, NASTY_INTS)) for _ in range(3)])
    elif r < 0.8:
        node = helper.make_node("Constant", [], [name], value_string="\u00ff")
    else:
        node = helper.make_node("Constant", [], [name], value_floats=[float(_pick(rng, NASTY_FLOATS))])
    g.node.insert(0, node)


def mo_external(rng, m, ctx):
    t = _init(rng, m)
    if t is None or t.data_location == TensorProto.EXTERNAL:
        return
    raw = t.raw_data or numpy_helper.from_array(numpy_helper.to_array(t)).raw_data
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    loc = _pick(rng, ["w.bin", "w.bin", "../w.bin", "/etc/hostname", "sub/../w.bin", "missing.bin", "", ".",
                      "/dev/zero", "w.bin\x00x"])
    entries = {"location": loc}
    if rng.random() < 0.5:
        entries["offset"] = str(_pick(rng, [0, 0, 3, -1, 2 ** 40, "x"]))
    if rng.random() < 0.4:
        entries["length"] = str(_pick(rng, [len(raw), 0, -5, 2 ** 40, len(raw) + 7]))
    for k, v in entries.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    ctx["files"]["w.bin"] = raw if rng.random() < 0.8 else raw[: len(raw) // 2]
    ctx["by_path"] = True


def mo_opset(rng, m, ctx):
    r = rng.random()
    if r < 0.5 and m.opset_import:
        o = _pick(rng, list(m.opset_import))
        o.version = int(_pick(rng, [1, 9, 11, 13, 19, 25, 2 ** 31 - 1, 0]))
    elif r < 0.7:
        m.ir_version = int(_pick(rng, [0, 1, 3, 99]))
    else:
        del m.opset_import[:]


def mo_overrides(rng, m, ctx):
    key = _pick(rng, ["core.neurons", "core.axons", "core.memory_bytes", "clock_hz", "core.weight_bits",
                      "core.membrane_bits", "cores_x", "core.phases_per_step", "energy.static_w_per_core",
                      "noc.packet_payload_bytes", "core.mac_rows", "timing.soma_lif_cycles", "core.accumulator_bits",
                      "energy.synop_j", "noc.spike_encoding", "nonexistent.field"])
    ctx["overrides"][key] = _pick(rng, NASTY_FLOATS + NASTY_INTS + ["x", None, [1]])


def mo_chip_file(rng, m, ctx):
    """Compile for a chip file: the tianjic preset with one value replaced (NaN, inf, huge, negative, text)."""
    lines = (PRESET_DIR / "tianjic.toml").read_text().splitlines()
    idx = [i for i, ln in enumerate(lines) if re.match(r"^\s*[a-z_]+\s*=\s*[-0-9.]", ln)]
    for _ in range(int(rng.integers(1, 3))):
        i = _pick(rng, idx)
        key = lines[i].split("=")[0].strip()
        lines[i] = f"{key} = " + _pick(rng, ["nan", "inf", "-inf", "-1", "0", "1e300", "9223372036854775807",
                                             "\"x\"", "[1, 2]", "1.5", "3", "2147483648"])
    if rng.random() < 0.1:
        del lines[_pick(rng, idx)]
    ctx["chip_file"] = "\n".join(lines) + "\n"


def mo_scale_init(rng, m, ctx):
    """Multiply an initializer by a finite factor (the model stays valid for onnx.checker)."""
    t = _init(rng, m)
    if t is None or t.data_location == TensorProto.EXTERNAL:
        return
    try:
        a = numpy_helper.to_array(t).astype(np.float64)
    except Exception:
        return
    with np.errstate(all="ignore"):
        b = (a * _pick(rng, [1e-30, 1e-6, 1e6, 1e20, 1e30, -1.0, 0.0])).astype(numpy_helper.to_array(t).dtype)
    t.CopyFrom(numpy_helper.from_array(b, t.name))


def mo_calib(rng, m, ctx):
    calib = ctx.get("calib")
    if not calib:
        ctx["calib"] = {"image": np.zeros((1, 1, 8, 8))} if rng.random() < 0.5 else {}
        return
    k = _pick(rng, sorted(calib))
    try:
        x = np.array(calib[k], dtype=np.float64)
    except (TypeError, ValueError):
        x = np.zeros(np.shape(calib[k]))
    r = rng.random()
    if r < 0.35 and x.size:
        x.reshape(-1)[int(rng.integers(x.size))] = _pick(rng, NASTY_FLOATS)
        calib[k] = x
    elif r < 0.5:
        calib[k] = x[:0]
    elif r < 0.6:
        calib[k] = np.array(["a"] * max(1, x.size)).reshape(x.shape) if x.size else np.array(["a"])
    elif r < 0.75:
        calib[k] = x.reshape(-1)
    elif r < 0.85:
        calib["lif1.v"] = np.full((1, 64), _pick(rng, NASTY_FLOATS))
    else:
        del calib[k]


def mo_calib_steps(rng, m, ctx):
    ctx["calib_steps"] = _pick(rng, [0, -1, 1, 10 ** 7, 2 ** 40])


ONNX_MUTATORS = [mo_chip_file, mo_scale_init, mo_scale_init, mo_attr, mo_attr, mo_dims, mo_init_dtype, mo_init_values, mo_init_values, mo_init_dims,
                 mo_init_rename, mo_meta, mo_meta, mo_node_inputs, mo_nodes, mo_constant, mo_external, mo_opset,
                 mo_overrides, mo_calib, mo_calib_steps]


def onnx_case(rng, work: Path):
    name = _pick(rng, sorted(seeds().models))
    base, calib = seeds().models[name]
    m = onnx.ModelProto()
    m.CopyFrom(base)
    ctx = {"files": {}, "overrides": {}, "by_path": rng.random() < 0.3,
           "calib": {k: np.array(v) for k, v in calib.items()} if calib else None}
    for _ in range(int(rng.integers(1, 4))):
        _pick(rng, ONNX_MUTATORS)(rng, m, ctx)
    try:
        data = m.SerializeToString()
    except Exception:
        data = b""
    if rng.random() < 0.08:
        data = damage_bytes(rng, data)
    model: object = data
    if ctx["by_path"]:
        d = work / "model"
        d.mkdir()
        (d / "model.onnx").write_bytes(data)
        for fn, content in ctx["files"].items():
            (d / fn).write_bytes(content)
        model = d / "model.onnx"
    kw = {"calib": ctx["calib"]}
    if "chip_file" in ctx:
        (work / "chip.toml").write_text(ctx["chip_file"])
        kw["chip"] = work / "chip.toml"
    if ctx["overrides"]:
        kw["overrides"] = ctx["overrides"]
    if "calib_steps" in ctx:
        kw["calib_steps"] = ctx["calib_steps"]
    return f"compile {name}", lambda: _compile_and_check(model, kw, work)


def _compile_and_check(model, kw, work: Path):
    cm = nmc.compile(model, **kw)
    try:  # anything the compiler accepts must save, load and print
        p = work / "out.nmc"
        corefile.save(cm, p)
        cm2 = corefile.load(p)
        cli.format_info(cm2)
        for k, v in cm2.arrays().items():  # a NaN or overflow cast to int64 becomes -2^63
            if v.dtype.kind == "i" and v.size and (v.min() <= -2 ** 62 or v.max() >= 2 ** 62):
                raise Slip(f"core map column {k} holds {int(v.min())} .. {int(v.max())} (an overflowed cast)")
        json.dumps(cm2.meta, allow_nan=False)
    except Slip:
        raise
    except Exception as e:
        raise Slip(f"compiled map does not round-trip: {type(e).__name__}: {str(e)[:200]}") from e


class Slip(Exception):
    """An input was accepted but what came out is broken."""


# ----------------------------------------------------------------------------- npz cases
def _damage_array(rng, x: np.ndarray) -> np.ndarray:
    x = np.array(x)
    r = rng.random()
    if r < 0.25 and x.size:
        try:
            x = x.astype(np.float64)
        except (TypeError, ValueError):
            x = np.zeros(x.shape)
        x.reshape(-1)[int(rng.integers(x.size))] = _pick(rng, NASTY_FLOATS)
        return x
    if r < 0.4:
        dt = _pick(rng, ["U3", "S2", np.complex128, bool, np.int8, np.uint64, np.float16, np.int64, "M8[s]", "V4"])
        with warnings_off(), np.errstate(all="ignore"):
            try:
                return x.astype(dt)
            except Exception:  # e.g. text that is no date
                return np.zeros(x.shape, dt)
    if r < 0.55:
        shape = list(x.shape)
        if shape:
            shape[int(rng.integers(len(shape)))] = int(_pick(rng, [0, 1, 2, 3]))
        return np.zeros(shape)
    if r < 0.65:
        return x.reshape(-1)
    if r < 0.75:
        return x[None]
    if r < 0.85:
        return np.asarray(_pick(rng, NASTY_FLOATS))
    return np.zeros((int(_pick(rng, [40, 1000, 5000])),) + x.shape[1:])  # a long step input


def _damage_inputs(rng, x: dict, cm) -> dict:
    x = {k: np.array(v) for k, v in x.items()}
    for _ in range(int(rng.integers(1, 3))):
        r = rng.random()
        keys = sorted(x)
        if r < 0.5 and keys:
            k = _pick(rng, keys)
            x[k] = _damage_array(rng, x[k])
        elif r < 0.6 and keys:
            del x[_pick(rng, keys)]
        elif r < 0.7:
            x[_pick(rng, ["extra", "Image", ""])] = np.zeros(3)
        else:  # a state input
            states = cm.meta["states"]
            if states:
                s = _pick(rng, states)
                shape = tuple(s["shape"])
                v = _pick(rng, [np.zeros((1,) + shape), np.zeros((0,) + shape), np.full(shape, np.nan),
                                np.array(["x"] * int(np.prod(shape))).reshape(shape), np.zeros((3,) + shape),
                                np.full((1,) + shape, 1e300), np.zeros((2, 2)), np.full(shape, -np.inf)])
                x[s["input"]] = v
    return x


def _npz_bytes(rng, x: dict) -> bytes:
    buf = io.BytesIO()
    with warnings_off():
        if rng.random() < 0.2:
            np.savez_compressed(buf, **x)
        else:
            np.savez(buf, **x)
    return buf.getvalue()


def _damage_npz_file(rng, data: bytes) -> bytes:
    r = rng.random()
    if r < 0.45:
        return damage_bytes(rng, data)
    if r < 0.75:
        members = zip_members(data)
        if not members:
            return data
        i = int(rng.integers(len(members)))
        n, d = members[i]
        try:
            arr = np.load(io.BytesIO(d), allow_pickle=False)
            members[i] = (n, lying_npy(rng, arr))
        except Exception:
            members[i] = (n, damage_bytes(rng, d))
        return make_zip(members)
    if r < 0.85:
        members = zip_members(data)
        name = members[0][0] if members else "image.npy"
        size = int(_pick(rng, [3 << 30, 1 << 30]))
        stream, crc, usize = bomb_member(name, size)
        return raw_zip([(name, stream, 8, crc, usize)])
    members = zip_members(data)
    if members:
        n, d = members[0]
        members[0] = (_pick(rng, ["x", "image", "../image.npy", "a.npy/b.npy", "image.npz"]), d)
    return make_zip(members)


def npz_case(rng, work: Path):
    name = _pick(rng, sorted(seeds().compiled))
    cm, cm_bytes, x, x_bytes = seeds().compiled[name]
    (work / "m.nmc").write_bytes(cm_bytes)
    r = rng.random()
    if r < 0.55:
        data = _npz_bytes(rng, _damage_inputs(rng, x, cm))
    elif r < 0.9:
        data = _damage_npz_file(rng, x_bytes)
    else:
        data = x_bytes
    (work / "in.npz").write_bytes(data)
    steps = None
    if rng.random() < 0.2:
        steps = _pick(rng, [0, -3, 1, 10 ** 7, 2 ** 40, 10 ** 5, 3])
    backend = "numba" if rng.random() < 0.9 else _pick(rng, ["reference", "bogus"])
    if rng.random() < 0.7:
        def run():
            res = nmc.emulate(work / "m.nmc", work / "in.npz", steps=steps, backend=backend)
            _check_result(res)
        return f"emulate {name}", run
    argv = ["run", str(work / "m.nmc"), "--input", str(work / "in.npz"), "-o", str(work / "out.npz"),
            "--report", str(work / "r.json")]
    if steps is not None:
        argv += ["--steps", str(steps)]
    return f"nmc run {name}", lambda: _cli(argv, work)


def _check_result(res) -> None:
    try:
        json.dumps(res.report, allow_nan=False)
    except (ValueError, TypeError) as e:
        raise Slip(f"report is not valid JSON: {e}") from e
    for k, v in res.outputs.items():
        if not np.all(np.isfinite(v)):
            raise Slip(f"output '{k}' is not finite")


def _cli(argv, work: Path):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = cli.main(argv)
    except SystemExit as e:  # argparse
        raise CleanExit(f"argparse exit {e.code}") from None
    if rc == 2:
        raise CleanExit(out.getvalue()[-300:])
    if rc != 0:
        raise Slip(f"nmc {argv[0]} returned {rc}")
    rep = work / "r.json"
    if rep.exists():
        try:
            json.loads(rep.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        except ValueError as e:
            raise Slip(f"report.json is not valid JSON: {e}") from e


class CleanExit(Exception):
    """The CLI refused cleanly (exit status 2 and one message)."""


# ----------------------------------------------------------------------------- nmc cases
def _header_and_arrays(cm):
    header = {"format": corefile.FORMAT, "format_version": corefile.FORMAT_VERSION,
              "nmc_version": nmc.__version__, "chip": cm.chip.to_dict(), "meta": copy.deepcopy(cm.meta)}
    return header, {k: np.array(v) for k, v in cm.arrays().items()}


def _write_nmc(header, arrays, rehash=True) -> bytes:
    """What corefile.save writes, from a (possibly edited) header and arrays, re-hashed with nmc's digest."""
    if rehash and isinstance(header, dict):
        header = dict(header)
        header.pop("sha256", None)
        try:
            header["sha256"] = corefile._digest(header, arrays)
        except (TypeError, ValueError):
            pass
    members = [("header.json", json.dumps(header, indent=1, sort_keys=True, default=str).encode())]
    for k, v in arrays.items():
        b = io.BytesIO()
        np.save(b, v, allow_pickle=False)
        members.append((f"{k}.npy", b.getvalue()))
    return make_zip(members)


def _edit_array(rng, arrays: dict):
    k = _pick(rng, sorted(arrays))
    a = arrays[k]
    r = rng.random()
    if r < 0.45 and a.size:
        a = a.copy()
        flat = a.reshape(-1)
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(flat.size))
            if a.dtype.kind == "f":
                flat[i] = _pick(rng, NASTY_FLOATS)
            elif a.dtype.kind in "iu":
                info = np.iinfo(a.dtype)
                flat[i] = int(np.clip(_pick(rng, NASTY_INTS + [int(flat[i]) + 1, int(flat[i]) - 1]), info.min, info.max))
            elif a.dtype.kind == "b":
                flat[i] = not flat[i]
    elif r < 0.6:
        dt = _pick(rng, [np.int8, np.int32, np.int64, np.float64, np.float32, np.uint64, bool, "U3", np.int16])
        with warnings_off(), np.errstate(all="ignore"):
            try:
                a = a.astype(dt)
            except (TypeError, ValueError):
                a = np.zeros(a.shape, dt)
    elif r < 0.75:
        a = a.reshape(-1)[: int(rng.integers(0, a.size + 1))] if a.size else np.zeros(3, a.dtype)
    elif r < 0.85:
        a = np.concatenate([a.reshape(-1), a.reshape(-1)[:3]]) if a.size else a[None]
    elif r < 0.93:
        del arrays[k]
        return
    else:
        arrays[_pick(rng, ["extra.x", "cores.extra", k + "2"])] = a
        return
    arrays[k] = a


def nmc_case(rng, work: Path):
    name = _pick(rng, sorted(seeds().compiled))
    cm, cm_bytes, x, x_bytes = seeds().compiled[name]
    r = rng.random()
    if r < 0.35:
        header, arrays = _header_and_arrays(cm)
        for _ in range(int(rng.integers(1, 3))):
            if rng.random() < 0.05:
                header = _pick(rng, [[], {}, "x", None, 1])
            elif isinstance(header, dict):
                part = _pick(rng, ["meta", "meta", "meta", "chip", "top"])
                if part == "top":
                    header = mutate_json(rng, header)
                else:
                    header[part] = mutate_json(rng, header.get(part))
        data = _write_nmc(header, arrays)
    elif r < 0.6:
        header, arrays = _header_and_arrays(cm)
        for _ in range(int(rng.integers(1, 3))):
            _edit_array(rng, arrays)
        data = _write_nmc(header, arrays)
    elif r < 0.8:
        data = damage_bytes(rng, cm_bytes)
    elif r < 0.9:
        members = zip_members(cm_bytes)
        t = rng.random()
        if t < 0.3:
            i = int(rng.integers(len(members)))
            n, d = members[i]
            try:
                members[i] = (n, lying_npy(rng, np.load(io.BytesIO(d), allow_pickle=False)))
            except Exception:
                members[i] = (n, damage_bytes(rng, d))
        elif t < 0.5:
            members.append(copy.copy(_pick(rng, members)))
        elif t < 0.7:
            i = int(rng.integers(len(members)))
            members[i] = (_pick(rng, ["../x.npy", "header.json", "cores.x.npy", "/abs.npy"]), members[i][1])
        else:
            members.append(("extra.npy", bytes(10)))
        data = make_zip(members)
    else:
        members = zip_members(cm_bytes)
        i = int(rng.integers(1, len(members)))
        name_b = members[i][0]
        stream, crc, usize = bomb_member(name_b, int(_pick(rng, [3 << 30, 1 << 30])))
        parts = []
        for j, (n, d) in enumerate(members):
            if j == i:
                parts.append((n, stream, 8, crc, usize))
            else:
                parts.append((n, d, 0, zlib.crc32(d), len(d)))
        data = raw_zip(parts)
    p = work / "m.nmc"
    p.write_bytes(data)
    (work / "in.npz").write_bytes(x_bytes)
    action = _pick(rng, ["load", "load", "info", "run", "profile"])
    if action == "load":
        return f"load {name}", lambda: corefile.load(p)
    if action == "info":
        return f"info {name}", lambda: _cli(["info", str(p)], work)
    argv = [action, str(p), "--input", str(work / "in.npz")]
    if rng.random() < 0.3:
        argv += ["--steps", str(_pick(rng, [1, 0, 3, 10 ** 7]))]
    out = _pick(rng, [None, None, "out.npz", "dir", "/proc/nmc-nope/out.npz", "ro/out.npz"])
    if out == "dir":
        (work / "dir").mkdir()
    if out == "ro/out.npz":
        (work / "ro").mkdir()
        os.chmod(work / "ro", 0o500)
    if out:
        target = out if out.startswith("/") else str(work / out)
        argv += (["-o", target] if action == "run" else ["--report", target])
    if action == "run" and rng.random() < 0.5:
        argv += ["--report", str(work / _pick(rng, ["r.json", "dir", "ro/r.json"]))]
    return f"{action} {name}", lambda: _cli(argv, work)


# ----------------------------------------------------------------------------- kmap cases (shared-kernel cores)
HUGE_INTS = [2 ** 31 - 1, 2 ** 30, 65536, 46341, 10 ** 5, 10 ** 9, -2 ** 31, -1, 0, 1]


def _int_value(rng, a: np.ndarray, old: int) -> int:
    info = np.iinfo(a.dtype)
    v = _pick(rng, NASTY_INTS + HUGE_INTS + [old + 1, old - 1, old * 2, old * 1000, -old])
    return int(np.clip(v, info.min, info.max))


def _kgeom_scaled(rng, arrays: dict, header: dict) -> None:
    """A block whose sizes grow together so that the covering checks still pass: a tile and patch of huge
    height/width, channels or kernel (what would make its expansion allocate gigabytes)."""
    from nmc.coremap import KGEOM
    g = arrays["kblocks.geom"].astype(np.int64).copy()
    k = int(rng.integers(g.shape[0]))
    f = int(_pick(rng, [2, 100, 10 ** 4, 46341, 2 ** 20]))
    idx = {n: i for i, n in enumerate(KGEOM)}
    which = _pick(rng, ["tile", "patch", "kernel", "channels", "dilation"])
    cols = {"tile": ["th", "tw", "ph", "pw"], "patch": ["pc", "ph", "pw"], "kernel": ["kh", "kw", "ph", "pw"],
            "channels": ["tc", "kc", "co_g", "ci_g"], "dilation": ["dh", "dw", "ph", "pw"]}[which]
    for n in cols:
        g[k, idx[n]] = g[k, idx[n]] * f
    arrays["kblocks.geom"] = np.clip(g, -2 ** 31, 2 ** 31 - 1).astype(np.int32)
    if rng.random() < 0.5:  # keep the patch map's size consistent
        sizes = np.diff(arrays["kblocks.ax_off"])
        tc, th, tw, kc, kh, kw, pc, ph, pw = (int(v) for v in g[k, :9])
        need = pc * ph * pw
        if 0 <= need <= 1 << 22:  # (a larger patch map is a large file, read in linear time)
            ax = arrays["kpatch.ax"]
            off = arrays["kblocks.ax_off"]
            new = rng.integers(-1, 4, need).astype(np.int32)
            arrays["kpatch.ax"] = np.concatenate([ax[:off[k]], new, ax[off[k + 1]:]])
            sizes[k] = need
            arrays["kblocks.ax_off"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _kmap_mutation(rng, arrays: dict, header: dict) -> str:
    """One targeted edit of the shared-kernel tables or of what they depend on; returns its name."""
    kb = arrays["kblocks.core"]
    K = kb.shape[0]
    r = int(rng.integers(14))
    if r == 0:  # cores.w_fmt: flip one core, or a value other than 0/1
        a = arrays["cores.w_fmt"].copy()
        i = int(rng.integers(a.size))
        a[i] = _pick(rng, [0, 1, 2, -1, 127, 1 - int(a[i])])
        arrays["cores.w_fmt"] = a
        return "w_fmt"
    if r == 1:  # kblocks.core: out of range, negative, unsorted, moved to another core
        a = kb.copy()
        t = rng.random()
        if t < 0.3 and K > 1:
            i = int(rng.integers(K - 1))
            a[i], a[i + 1] = a[i + 1], a[i]
            if a[i] == a[i + 1]:
                a = a[::-1].copy()
        else:
            i = int(rng.integers(K))
            a[i] = _int_value(rng, a, int(a[i]))
        arrays["kblocks.core"] = a
        return "kblocks.core"
    if r == 2:  # kblocks.w_off
        a = arrays["kblocks.w_off"].copy()
        i = int(rng.integers(K))
        W = arrays["weights.data"].shape[0]
        a[i] = _pick(rng, [W, W - 1, W + 1, -1, -2 ** 63, 2 ** 63 - 1, 2 ** 62, int(a[i]) + 1, int(a[i]) - 1,
                           int(arrays["cores.w_off"][-1]) - 1, 0])
        arrays["kblocks.w_off"] = a
        return "kblocks.w_off"
    if r in (3, 4, 5):  # kblocks.geom: one or a few entries
        a = arrays["kblocks.geom"].copy()
        for _ in range(int(rng.integers(1, 4))):
            i, j = int(rng.integers(K)), int(rng.integers(a.shape[1]))
            a[i, j] = _int_value(rng, a, int(a[i, j]))
        arrays["kblocks.geom"] = a
        return "kblocks.geom"
    if r == 6:
        _kgeom_scaled(rng, arrays, header)
        return "kblocks.geom scaled"
    if r == 7:  # kblocks.ax_off
        a = arrays["kblocks.ax_off"].copy()
        i = int(rng.integers(a.size))
        a[i] = _int_value(rng, a, int(a[i]))
        arrays["kblocks.ax_off"] = a
        return "kblocks.ax_off"
    if r == 8:  # kpatch.ax
        a = arrays["kpatch.ax"].copy()
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(a.size))
            na = int(np.max(np.diff(arrays["cores.axon_off"])))
            a[i] = _pick(rng, [-1, -2, na, na - 1, 2 ** 31 - 1, -2 ** 31, int(a[i]) + 1, 0])
        arrays["kpatch.ax"] = a
        return "kpatch.ax"
    if r == 9:  # inconsistent sizes: drop, duplicate or truncate a kblocks/kpatch column or row
        t = _pick(rng, ["drop_row", "dup_row", "col", "kpatch"])
        if t in ("drop_row", "dup_row"):
            i = int(rng.integers(K))
            for col in ("kblocks.core", "kblocks.w_off", "kblocks.geom"):
                a = arrays[col]
                arrays[col] = np.delete(a, i, axis=0) if t == "drop_row" else np.insert(a, i, a[i], axis=0)
            if rng.random() < 0.5:
                sz = np.diff(arrays["kblocks.ax_off"])
                sz = np.delete(sz, i) if t == "drop_row" else np.insert(sz, i, sz[i])
                arrays["kblocks.ax_off"] = np.concatenate([[0], np.cumsum(sz)]).astype(np.int64)
        elif t == "col":
            col = _pick(rng, ["kblocks.core", "kblocks.w_off", "kblocks.geom", "kblocks.ax_off", "cores.w_fmt"])
            a = arrays[col]
            arrays[col] = a[: int(rng.integers(0, a.shape[0] + 1))] if rng.random() < 0.5 else \
                np.concatenate([a, a[:1]])
            if col == "kblocks.geom" and rng.random() < 0.3:
                arrays[col] = arrays[col][:, : int(rng.integers(0, arrays[col].shape[1] + 2))] \
                    if arrays[col].ndim == 2 else arrays[col]
        else:
            a = arrays["kpatch.ax"]
            arrays["kpatch.ax"] = a[:-int(rng.integers(1, 5))] if rng.random() < 0.5 else np.concatenate([a, a[:3]])
        return "sizes " + t
    if r == 10:  # the weights the kernels live in: truncated or extended, or a dense core's block moved
        a = arrays["weights.data"]
        t = rng.random()
        if t < 0.4:
            arrays["weights.data"] = a[: int(rng.integers(0, a.size))]
        elif t < 0.6:
            arrays["weights.data"] = np.concatenate([a, a[:7]])
        else:
            a = a.copy()
            a[int(rng.integers(a.size))] = _pick(rng, [-128, 127, 0, 1])
            arrays["weights.data"] = a
        return "weights.data"
    if r == 11:  # a shared-kernel core's neurons/axons: counts no longer match its tile, or huge
        col = _pick(rng, ["cores.neuron_off", "cores.axon_off"])
        a = arrays[col].copy()
        i = int(rng.integers(1, a.size))
        d = int(_pick(rng, [1, -1, 10 ** 6, 2 ** 31, 2 ** 40]))
        a[i:] += d
        arrays[col] = a
        return col
    if r == 12:  # blocks on a dense core / a dense core made shared-kernel
        a = arrays["cores.w_fmt"].copy()
        dense = np.flatnonzero(a == 0)
        c = int(_pick(rng, dense)) if dense.size else int(rng.integers(a.size))
        kc = arrays["kblocks.core"].copy()
        kc[int(rng.integers(K))] = c
        arrays["kblocks.core"] = np.sort(kc) if rng.random() < 0.7 else kc
        if rng.random() < 0.5:
            a[c] = 1
            arrays["cores.w_fmt"] = a
        return "blocks on a dense core"
    # dtype / ndim damage of a kernel-block column
    col = _pick(rng, ["kblocks.core", "kblocks.w_off", "kblocks.geom", "kblocks.ax_off", "kpatch.ax", "cores.w_fmt"])
    a = arrays[col]
    t = rng.random()
    if t < 0.5:
        with warnings_off(), np.errstate(all="ignore"):
            arrays[col] = a.astype(_pick(rng, [np.int8, np.int16, np.int32, np.int64, np.float64, np.uint32]))
    elif t < 0.75:
        arrays[col] = a.reshape(-1)
    else:
        arrays[col] = a.reshape(a.shape + (1,))
    return "dtype " + col


def kmap_case(rng, work: Path):
    """A tiled core map (shared-kernel cores) with its kernel-block tables damaged and re-hashed."""
    name = _pick(rng, seeds().tiled)
    cm, cm_bytes, x, x_bytes = seeds().compiled[name]
    header, arrays = _header_and_arrays(cm)
    what = []
    for _ in range(int(_pick(rng, [1, 1, 1, 2, 3]))):
        try:
            what.append(_kmap_mutation(rng, arrays, header))
        except (TypeError, ValueError, IndexError, KeyError, OverflowError):  # an earlier edit left nothing to edit
            what.append("-")
    data = _write_nmc(header, arrays, rehash=rng.random() < 0.97)
    p = work / "m.nmc"
    p.write_bytes(data)
    (work / "in.npz").write_bytes(x_bytes)
    action = _pick(rng, ["load", "load_nocheck", "emulate", "emulate", "info", "reference"])
    label = f"{action} {name} ({', '.join(what)})"
    if action == "load":
        return label, lambda: corefile.load(p)
    if action == "load_nocheck":
        def run():  # structure only, then every core's weights expanded (what the emulator and tools read)
            m = corefile.load(p, check=False)
            for c in range(m.num_cores):
                m.core_weights(c)
        return label, run
    if action == "info":
        return label, lambda: _cli(["info", str(p)], work)

    def run():
        res = nmc.emulate(p, work / "in.npz", backend="reference" if action == "reference" else "numba")
        _check_result(res)
    return label, run


# ----------------------------------------------------------------------------- tiles cases (on vs off)
def tiles_case(rng, work: Path):
    """A seeded random small CNN compiled with every structured layer tiled (``tiles="on"``) and unfolded
    (``tiles="off"``) on a chip of small cores: both must emulate (numba) to identical outputs, or both refuse
    with an NmcError.  A difference is a ``slip``; one side refusing alone is counted as a clean error whose
    message starts with ``one-sided``."""
    seed = int(rng.integers(2 ** 31))
    model, calib = random_cnn(seed)
    over = {}
    if rng.random() < 0.8:
        over["core.neurons"] = int(_pick(rng, [8, 16, 24, 32, 64, 128]))
    if rng.random() < 0.8:
        over["core.axons"] = int(_pick(rng, [8, 16, 27, 32, 48, 64, 128]))
    if rng.random() < 0.3:
        over["core.memory_bytes"] = int(_pick(rng, [1000, 2000, 4000, 8000]))
    feed = {k: v[:2] for k, v in calib.items()}

    def run():
        outs, errs = {}, {}
        for tiles in ("off", "on"):
            try:
                cm = nmc.compile(model, calib=calib, tiles=tiles, overrides=over or None, chips="auto")
                outs[tiles] = nmc.emulate(cm, feed).outputs
            except NmcError as e:
                errs[tiles] = f"{type(e).__name__}: {str(e)[:200]}"
        if len(errs) == 2:
            raise CleanExit(f"both refuse: {errs['off']}")
        if errs:
            (side, msg), = errs.items()
            raise CleanExit(f"one-sided: tiles={side} refuses: {msg}")
        for k in outs["off"]:
            a, b = np.asarray(outs["off"][k]), np.asarray(outs["on"][k])
            if a.shape != b.shape or not np.array_equal(a, b):
                raise Slip(f"tiles on/off outputs differ: output '{k}' (model seed {seed}, overrides {over}): "
                           f"max |diff| {np.max(np.abs(a - b)) if a.shape == b.shape else 'shape'}")
    return f"tiles cnn{seed} {over}", run


CASES = {"onnx": onnx_case, "npz": npz_case, "nmc": nmc_case, "kmap": kmap_case, "tiles": tiles_case}


# ----------------------------------------------------------------------------- running one case
def _signature(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    inner = tb[-1] if tb else None
    # the innermost frame inside nmc's own code says more than one in numpy/onnx
    own = [f for f in tb if "/work/" in f.filename and "benchmarks/fuzz.py" not in f.filename]
    f = own[-1] if own else inner
    where = f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno} {f.name}" if f else "?"
    return f"{type(e).__name__} at {where}"


def run_case(kind: str, seed: int) -> dict:
    """Build and run case ``(kind, seed)`` in this process; returns {outcome, what, sig, msg}."""
    rng = np.random.default_rng([KINDS.index(kind), seed])
    base = Path(tempfile.mkdtemp(prefix="nmc-fuzz-", dir=os.environ.get("NMC_FUZZ_TMP")))
    work = base / "w"
    work.mkdir()
    old = os.getcwd()
    os.chdir(base)  # relative paths a reader resolves against the working directory land here, not in work/
    try:
        what, fn = CASES[kind](rng, work)
        try:
            fn()
            left = [str(p.relative_to(base)) for p in base.rglob("*.tmp")]
            if left:
                return {"outcome": "slip", "what": what, "sig": "temp file left behind", "msg": str(left)}
            return {"outcome": "ok", "what": what}
        except PassError as e:
            cause = e.__cause__
            if cause is not None and not isinstance(cause, NmcError):  # an internal failure wrapped by the pass manager
                return {"outcome": "traceback", "what": what, "sig": "PassError from " + _signature(cause),
                        "msg": str(e)[:300]}
            return {"outcome": "error", "what": what, "msg": str(e)[:300]}
        except (NmcError, CleanExit) as e:
            return {"outcome": "error", "what": what, "msg": str(e)[:300]}
        except Slip as e:
            return {"outcome": "slip", "what": what, "sig": str(e)[:120], "msg": str(e)[:300]}
        except MemoryError as e:
            return {"outcome": "memory", "what": what, "sig": _signature(e), "msg": ""}
        except RecursionError as e:
            return {"outcome": "traceback", "what": what, "sig": _signature(e), "msg": str(e)[:300]}
        except Exception as e:
            return {"outcome": "traceback", "what": what, "sig": _signature(e), "msg": str(e)[:300]}
    finally:
        os.chdir(old)
        for p in base.rglob("*"):
            if p.is_dir():
                with contextlib.suppress(OSError):
                    os.chmod(p, 0o700)
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------- worker and campaign
def _worker() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    seeds()
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        try:
            out = run_case(req["kind"], req["seed"])
        except MemoryError:
            out = {"outcome": "memory", "what": "?", "sig": "MemoryError while building the case"}
        except BaseException as e:  # a harness bug: report it as a traceback too
            out = {"outcome": "traceback", "what": "harness", "sig": "harness: " + _signature(e), "msg": str(e)[:200]}
        out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        proto.write(json.dumps(out) + "\n")


class Worker:
    def __init__(self):
        env = dict(os.environ)
        self.tmp = tempfile.mkdtemp(prefix="nmc-fuzz-worker-")
        env["NMC_FUZZ_TMP"] = self.tmp
        # runs estimated to take longer are refused (InputError) rather than timed out as hangs
        env.setdefault("NMC_MAX_RUN_SECONDS", "5")
        self.p = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
        line = self._read(300.0)
        if line is None or "ready" not in line:
            self.kill()
            raise RuntimeError(f"fuzz worker failed to start: {line!r}")

    def _read(self, timeout: float):
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not r:
            return None
        return self.p.stdout.readline()

    def run(self, kind: str, seed: int, timeout: float) -> dict:
        self.p.stdin.write(json.dumps({"kind": kind, "seed": seed}) + "\n")
        self.p.stdin.flush()
        line = self._read(timeout)
        if line is None:
            self.kill()
            return {"outcome": "hang", "what": "?", "sig": f"no answer in {timeout:.0f} s"}
        if not line:
            code = self.p.wait()
            return {"outcome": "memory", "what": "?", "sig": f"worker died (exit {code})"}
        return json.loads(line)

    def kill(self):
        with contextlib.suppress(ProcessLookupError):
            self.p.kill()
        self.p.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)  # what a killed case left behind


def campaign(kinds, cases: int, seed0: int = 0, timeout: float = CASE_TIMEOUT, budget_s: float | None = None,
             log=print) -> dict:
    """Run ``cases`` cases of each kind (seeds seed0 ...) in one worker at a time; returns the tallies."""
    stats = {k: {o: 0 for o in OUTCOMES} | {"cases": 0, "maxrss_mb": 0.0} for k in kinds}
    sigs: dict[tuple[str, str, str], list[int]] = {}
    t0 = time.time()
    w = None
    try:
        for i in range(cases):
            for kind in kinds:
                if budget_s is not None and time.time() - t0 > budget_s:
                    return {"stats": stats, "sigs": sigs, "seconds": time.time() - t0, "stopped": True}
                if w is None:
                    w = Worker()
                seed = seed0 + i
                out = w.run(kind, seed, timeout)
                st = stats[kind]
                st["cases"] += 1
                st[out["outcome"]] += 1
                st["maxrss_mb"] = max(st["maxrss_mb"], out.get("maxrss_mb", 0.0))
                if out["outcome"] == "error" and out.get("msg", "").startswith("one-sided"):
                    st["one_sided"] = st.get("one_sided", 0) + 1  # tiles: one mapping refused, the other ran
                    if log:
                        log(f"  one-sided: {kind}:{seed} {out.get('what')} {out.get('msg', '')[:200]!r}")
                if out["outcome"] in ("traceback", "hang", "memory", "slip"):
                    key = (kind, out["outcome"], out.get("sig", "?"))
                    sigs.setdefault(key, []).append(seed)
                    if len(sigs[key]) == 1 and log:
                        log(f"  new {out['outcome']}: {kind}:{seed} {out.get('what')} {out.get('sig')} "
                            f"{out.get('msg', '')[:160]!r}")
                if out["outcome"] in ("hang", "memory"):
                    w.kill()
                    w = None
            if log and (i + 1) % 100 == 0:
                log(f"{i + 1} cases per kind, {time.time() - t0:.0f} s: " +
                    "; ".join(f"{k} " + " ".join(f"{o}={stats[k][o]}" for o in OUTCOMES if stats[k][o])
                              for k in kinds))
    finally:
        if w is not None:
            w.kill()
    return {"stats": stats, "sigs": sigs, "seconds": time.time() - t0, "stopped": False}


def format_table(res: dict) -> str:
    L = [f"{'kind':<6}{'cases':>7}" + "".join(f"{o:>11}" for o in OUTCOMES) + f"{'max RSS MB':>12}"]
    for k, st in res["stats"].items():
        L.append(f"{k:<6}{st['cases']:>7}" + "".join(f"{st[o]:>11}" for o in OUTCOMES) + f"{st['maxrss_mb']:>12.0f}"
                 + (f"  ({st['one_sided']} clean errors of one side only: tiles on or off)" if st.get("one_sided") else ""))
    if res["sigs"]:
        L.append("")
        L.append("distinct failures (kind, outcome, signature: count, first seeds):")
        for (kind, outcome, sig), s in sorted(res["sigs"].items(), key=lambda kv: -len(kv[1])):
            L.append(f"  {kind:<5} {outcome:<9} {sig}: {len(s)} x, e.g. --repro {kind}:{s[0]}"
                     + (f" {s[1:4]}" if len(s) > 1 else ""))
    L.append(f"({res['seconds']:.0f} s{', stopped by the time budget' if res.get('stopped') else ''})")
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cases", type=int, default=200, help="cases per kind")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--seed0", type=int, default=0, help="first seed")
    ap.add_argument("--timeout", type=float, default=CASE_TIMEOUT, help="seconds per case")
    ap.add_argument("--time", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--repro", default=None, help="KIND:SEED: run one case here and print its traceback")
    a = ap.parse_args(argv)
    if a.worker:
        _worker()
        return 0
    if a.repro:
        kind, seed = a.repro.split(":")
        rng = np.random.default_rng([KINDS.index(kind), int(seed)])
        with tempfile.TemporaryDirectory() as d:
            work = Path(d) / "w"
            work.mkdir()
            what, fn = CASES[kind](rng, work)
            print(f"case {a.repro}: {what}")
            try:
                fn()
                print("ok")
            except (NmcError, CleanExit) as e:
                print(f"clean error: {e}")
        return 0
    kinds = [k for k in a.kinds.split(",") if k]
    res = campaign(kinds, a.cases, a.seed0, a.timeout, a.time)
    print(format_table(res))
    bad = sum(st[o] for st in res["stats"].values() for o in ("traceback", "hang", "memory", "slip"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
