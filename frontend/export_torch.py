"""Export helpers: PyTorch spiking networks (snnTorch, SpikingJelly, Norse) -> nmc step models.

An optional extra (``pip install -e '.[torch]'`` in the nmc checkout): this module imports torch, and nothing in the compiler
imports this module.  :func:`to_nmc` walks a network made of a sequence of layers (an ``nn.Sequential``,
a list of modules, or one neuron module) and writes the nmc step model with
:class:`~nmc.frontend.ModelBuilder`: each layer's weights become a Gemm/Conv, each neuron module the
nmc op with the framework's semantics, so that the model steps spike for spike like the framework
(tests/frontend/test_export_torch.py runs each module against its export over many steps).

Layers: ``nn.Linear``, ``nn.Conv2d``, ``nn.Flatten``, ``nn.ReLU``, ``nn.AvgPool2d``, ``nn.MaxPool2d``,
``nn.Identity``, ``nn.Dropout`` (eval: identity) become the standard ops.  Neurons:

- snnTorch ``Leaky``: ``nmc::LIF`` (beta, threshold, reset_mechanism); with the default ``reset_delay=True``
  the subtract reset is ``reset_delay=1``, and the zero reset spikes like an immediate reset to 0 (snnTorch
  zeroes the stored membrane before the decay and keeps the step's input).  ``reset_delay=False`` with the
  subtract reset is refused: snnTorch then decides the spike on the membrane minus the threshold once more
  when the stored membrane is still above it, which nmc::LIF does not express.
- snnTorch ``Leaky``/``RLeaky`` with per-neuron ``beta`` or ``threshold`` tensors: ``nmc::LIFT``.
- snnTorch ``RLeaky``: the same plus a recurrent Gemm (``all_to_all``: its ``recurrent`` Linear; else the
  weight ``V`` per neuron) on the previous step's spikes (a state pair).
- snnTorch ``Synaptic``: ``nmc::CubaLIF`` (alpha, beta); only ``reset_delay=False`` with the zero or no
  reset (nmc::CubaLIF has no delayed reset).
- SpikingJelly ``LIFNode``: ``nmc::LIF`` with beta = 1 - 1/tau, gain = 1/tau (``decay_input``) else 1,
  v_leak = v_reset, firing on ``>=``; ``v_reset=None`` is the subtract reset; the membrane starts at v_reset.
  ``IFNode``: ``nmc::LIF`` with beta = 1, firing on ``>=``.
- Norse ``LIFCell``: ``nmc::CubaLIF`` with alpha = 1 - dt*tau_syn_inv, beta = 1 - dt*tau_mem_inv, the input
  scaled by dt*tau_mem_inv (folded into the layer before); v_leak must be 0.  ``LIFRecurrentCell``: the same
  with its input and recurrent weights (no bias) as Gemms.

Other per-neuron parameter tensors must hold one value (nmc's neuron ops other than ``nmc::LIFT`` take one
value per layer).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch

from nmc.errors import ModelError, UnsupportedOpError

from .builder import ModelBuilder
from .nir_import import LIFT_NOTE

__all__ = ["to_nmc", "SUPPORTED_MODULES"]

SUPPORTED_MODULES = ("Linear", "Conv2d", "Flatten", "ReLU", "AvgPool2d", "MaxPool2d", "Identity", "Dropout",
                     "snntorch.Leaky", "snntorch.RLeaky", "snntorch.Synaptic", "spikingjelly.LIFNode",
                     "spikingjelly.IFNode", "norse.LIFCell", "norse.LIFRecurrentCell")


class _Refuse(Exception):
    pass


def _framework(m) -> str:
    return type(m).__module__.split(".")[0]


def _key(m) -> str:
    fw = _framework(m)
    name = type(m).__name__
    return name if fw == "torch" else f"{fw}.{name}"


def _one(v, what: str) -> float:
    a = np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise _Refuse(f"{what} is empty")
    if not np.all(a == a[0]):
        raise _Refuse(f"{what} differs between neurons ({a.min():g} .. {a.max():g}); nmc's neuron ops take one value "
                      f"per layer ({LIFT_NOTE})")
    return float(a[0])


def _vals(v) -> np.ndarray:
    return np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float64).reshape(-1)


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


# ----------------------------------------------------------------- neuron modules -> (op, attrs, gain, extras)
def _snntorch(m) -> dict[str, Any]:
    name = type(m).__name__
    if getattr(m, "inhibition", False):
        raise _Refuse("inhibition=True (winner-take-all) has no nmc op")
    if getattr(m, "state_quant", False):
        raise _Refuse("state_quant quantises the state in snnTorch's own way; export without it")
    if float(getattr(m, "graded_spikes_factor", 1.0)) != 1.0:
        raise _Refuse("graded_spikes_factor != 1: nmc spikes are 1")
    mode = m.reset_mechanism
    delay = bool(getattr(m, "reset_delay", True))
    if name in ("Leaky", "RLeaky"):  # per-neuron beta / threshold: nmc::LIFT
        betas, thrs = _vals(m.beta).clip(0.0, 1.0), _vals(m.threshold)
        per = bool(np.any(betas != betas[0]) or np.any(thrs != thrs[0]))
    else:
        per = False
    beta = min(max(_vals(m.beta)[0], 0.0), 1.0) if per else min(max(_one(m.beta, "beta"), 0.0), 1.0)  # clamped
    thr = _vals(m.threshold)[0] if per else _one(m.threshold, "threshold")
    if name in ("Leaky", "RLeaky"):
        if not delay and mode == "subtract":
            raise _Refuse("reset_delay=False with reset_mechanism='subtract': snnTorch then decides a spike on the "
                          "membrane minus the threshold once more when the stored membrane is still above it, "
                          "which nmc::LIF does not express; use the default reset_delay=True or reset_mechanism="
                          "'zero'")
        # the delayed zero reset zeroes the stored membrane before the decay and keeps the step's input:
        # u = (0 if fire(v) else beta*v) + x, which spikes exactly like an immediate reset to 0 (only the stored
        # membrane differs: snnTorch keeps the value before the reset)
        attrs = dict(beta=beta, threshold=thr, reset_mode=mode, reset_delay=int(delay and mode == "subtract"))
        out = {"op": "LIF", "attrs": attrs, "gain": 1.0}
        if per:
            if np.any(thrs <= 0):
                raise _Refuse(f"threshold {thrs.min():g} <= 0: nmc neurons need a positive threshold")
            out = {"op": "LIFT", "attrs": dict(attrs, beta=betas, threshold=thrs), "gain": 1.0}
        if name == "RLeaky":
            if getattr(m, "all_to_all", True):
                rec = getattr(m, "recurrent", None)
                if not isinstance(rec, torch.nn.Linear):
                    raise _Refuse("only the Linear recurrence (linear_features=...) is supported, not conv2d_channels")
                out["recurrent"] = (_np(rec.weight), _np(rec.bias) if rec.bias is not None else None)
            else:
                V = _np(torch.as_tensor(m.V)).reshape(-1)
                out["recurrent"] = lambda n: (np.diag(np.broadcast_to(V, (n,))), None)
        return out
    if name == "Synaptic":
        if delay and mode != "none":
            raise _Refuse("Synaptic with reset_delay=True (snnTorch's default): nmc::CubaLIF resets at once; construct "
                          "it with reset_delay=False (and reset_mechanism='zero')")
        if mode == "subtract":
            raise _Refuse("Synaptic with reset_mechanism='subtract' and reset_delay=False decides a spike on the "
                          "membrane minus the threshold once more when the stored membrane is still above it, which "
                          "nmc::CubaLIF does not express; use reset_mechanism='zero'")
        alpha = min(max(_one(m.alpha, "alpha"), 0.0), 1.0)
        return {"op": "CubaLIF", "attrs": dict(alpha=alpha, beta=beta, threshold=thr, reset_mode=mode), "gain": 1.0}
    raise _Refuse(f"snnTorch {name} has no nmc mapping")


def _spikingjelly(m) -> dict[str, Any]:
    name = type(m).__name__
    if getattr(m, "step_mode", "s") not in ("s", "m"):
        raise _Refuse(f"step_mode={m.step_mode!r}")
    thr = float(m.v_threshold)
    vr = m.v_reset
    mode, v_reset = ("subtract", 0.0) if vr is None else ("zero", float(vr))
    base = dict(threshold=thr, reset_mode=mode, v_reset=v_reset, spike_ge=1)
    init = 0.0 if vr is None else float(vr)
    if name == "IFNode":
        return {"op": "LIF", "attrs": dict(base, beta=1.0), "gain": 1.0, "init": {"v": init}}
    if name == "LIFNode":
        tau = float(m.tau)
        if tau < 1:
            raise _Refuse(f"tau={tau} < 1 gives a negative decay 1 - 1/tau")
        gain = 1.0 / tau if m.decay_input else 1.0
        return {"op": "LIF", "attrs": dict(base, beta=1.0 - 1.0 / tau, v_leak=v_reset, gain=gain), "gain": 1.0,
                "init": {"v": init}}
    raise _Refuse(f"SpikingJelly {name} has no nmc mapping")


def _norse(m) -> dict[str, Any]:
    name = type(m).__name__
    p = m.p
    dt = float(m.dt)
    if _one(p.v_leak, "v_leak") != 0:
        raise _Refuse("v_leak != 0: nmc::CubaLIF decays the membrane to 0")
    if getattr(p, "method", "super") not in ("super", "heaviside", "tanh", "triangle", "circ", "logistic",
                                                "heaviside_erfc", "tent", "sigmoid"):
        raise _Refuse(f"method={p.method!r}")
    a_m = dt * _one(p.tau_mem_inv, "tau_mem_inv")
    a_s = dt * _one(p.tau_syn_inv, "tau_syn_inv")
    if not (0 <= a_m <= 1 and 0 <= a_s <= 1):
        raise _Refuse(f"dt*tau_mem_inv = {a_m:g} and dt*tau_syn_inv = {a_s:g} must lie in [0, 1]")
    attrs = dict(alpha=1.0 - a_s, beta=1.0 - a_m, threshold=_one(p.v_th, "v_th"), reset_mode="zero",
                 v_reset=_one(p.v_reset, "v_reset"))
    out = {"op": "CubaLIF", "attrs": attrs, "gain": a_m}
    if name == "LIFRecurrentCell":
        out["input_weights"] = _np(m.input_weights)
        out["recurrent"] = (_np(m.recurrent_weights), None)
    elif name != "LIFCell":
        raise _Refuse(f"Norse {name} has no nmc mapping")
    return out


_NEURONS = {"snntorch": _snntorch, "spikingjelly": _spikingjelly, "norse": _norse}


# ----------------------------------------------------------------- the walk
def _layers(module) -> list:
    if isinstance(module, (list, tuple)):
        return list(module)
    if isinstance(module, torch.nn.Sequential):
        return list(module)
    return [module]


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def to_nmc(module, input_shape: Sequence[int], *, name: str = "model", num_steps: int = 16, input_name: str = "x",
           input_kind: str = "step", path: str | Path | None = None) -> onnx.ModelProto:
    """The nmc step model of ``module`` (a sequence of layers; see the module doc) for inputs of
    ``input_shape`` per sample (without batch); the model's output is the last layer's.  Written to
    ``path`` when given.  Every module that cannot be exported is listed at once
    (:class:`~nmc.errors.UnsupportedOpError`)."""
    layers = _layers(module)
    bad = []
    for i, m in enumerate(layers):
        fw = _framework(m)
        if fw in _NEURONS:
            try:
                _NEURONS[fw](m)
            except _Refuse as e:
                bad.append((f"#{i}", _key(m), str(e)))
        elif _key(m) not in SUPPORTED_MODULES:
            bad.append((f"#{i}", _key(m), "no nmc mapping for this module"))
        elif isinstance(m, torch.nn.Conv2d) and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
            bad.append((f"#{i}", "Conv2d", "padding must be numbers with padding_mode='zeros'"))
    if bad:
        raise UnsupportedOpError(bad, supported=list(SUPPORTED_MODULES))
    b = ModelBuilder(name, num_steps=num_steps)
    x = b.input(input_name, tuple(int(d) for d in input_shape), kind=input_kind)
    pending_gain = [1.0] * len(layers)  # input gain a neuron needs folded into the layer before it
    for i, m in enumerate(layers):
        if _framework(m) in _NEURONS:
            spec = _NEURONS[_framework(m)](m)
            pending_gain[i] = 1.0 if "input_weights" in spec else spec["gain"]
    for i, m in enumerate(layers):
        tag = f"l{i}"
        nxt = pending_gain[i + 1] if i + 1 < len(layers) else 1.0
        fw = _framework(m)
        if isinstance(m, torch.nn.Linear):
            W = _np(m.weight) * nxt
            bias = _np(m.bias) * nxt if m.bias is not None else None
            x = b.gemm(x, W, bias, name=tag)
            if nxt != 1.0:
                pending_gain[i + 1] = 1.0
        elif isinstance(m, torch.nn.Conv2d):
            W = _np(m.weight) * nxt
            bias = _np(m.bias) * nxt if m.bias is not None else None
            ph, pw = _pair(m.padding)
            x = b.conv(x, W, bias, strides=_pair(m.stride), pads=(ph, pw, ph, pw), dilations=_pair(m.dilation),
                       group=int(m.groups), name=tag)
            if nxt != 1.0:
                pending_gain[i + 1] = 1.0
        elif isinstance(m, torch.nn.Flatten):
            x = b.flatten(x, name=tag)
        elif isinstance(m, torch.nn.ReLU):
            x = b.relu(x, name=tag)
        elif isinstance(m, (torch.nn.Identity, torch.nn.Dropout)):
            continue
        elif isinstance(m, torch.nn.AvgPool2d):
            k = _pair(m.kernel_size)
            ph, pw = _pair(m.padding)
            x = b.avgpool(x, k, _pair(m.stride or k), pads=(ph, pw, ph, pw),
                          count_include_pad=int(m.count_include_pad), name=tag)
        elif isinstance(m, torch.nn.MaxPool2d):
            k = _pair(m.kernel_size)
            ph, pw = _pair(m.padding)
            x = b.maxpool(x, k, _pair(m.stride or k), pads=(ph, pw, ph, pw), name=tag)
        elif fw in _NEURONS:
            x = _neuron(b, x, _NEURONS[fw](m), pending_gain[i], tag)
        else:  # pragma: no cover - refused above
            raise ModelError(f"module #{i} ({_key(m)}) has no nmc mapping")
    b.output(x)
    model = b.build()
    if path is not None:
        onnx.save(model, str(path))
    return model


def _scale(b: ModelBuilder, x: str, g: float, name: str) -> str:
    shp = b.shapes[x]
    if len(shp) == 1:
        return b.gemm(x, np.eye(shp[0]) * g, name=name)
    if len(shp) == 3:
        return b.conv(x, np.full((shp[0], 1, 1, 1), g), group=shp[0], name=name)
    raise ModelError(f"cannot scale '{x}' of shape {list(shp)} before a neuron: put a Linear or Conv2d before it")


def _neuron(b: ModelBuilder, x: str, spec: dict[str, Any], gain: float, tag: str) -> str:
    g = spec["gain"]
    if "input_weights" in spec:  # Norse LIFRecurrentCell: its own input weights take the gain
        x = b.gemm(x, spec["input_weights"] * g, name=f"{tag}.in")
        gain = 1.0
    elif gain != 1.0:  # no layer before to fold the gain into
        x = _scale(b, x, gain, f"{tag}.gain")
    if "recurrent" in spec:
        shp = b.shapes[x]
        if len(shp) != 1:
            raise ModelError(f"layer {tag}: a recurrent neuron needs a flat input, not {list(shp)}")
        rec = spec["recurrent"]
        W, bias = rec(shp[0]) if callable(rec) else rec
        prev = b.state(f"{tag}.spk", shp)
        rec = b.gemm(prev, W * g, None if bias is None else bias * g, name=f"{tag}.rec")
        x = b.add(x, rec, name=f"{tag}.sum")
    shp = b.shapes[x]
    size = int(np.prod(shp))
    attrs = {k: (v.reshape(shp) if isinstance(v, np.ndarray) and v.size == size else v)
             for k, v in spec["attrs"].items()}  # LIFT's per-neuron tensors (a single value broadcasts)
    outs = b.neuron(spec["op"], x, tag, init=spec.get("init"), **attrs)
    if "recurrent" in spec:
        b.bind_state(f"{tag}.spk", outs[0])
    return outs[0]
