"""Step an nmc-convention ONNX model in onnxruntime: the float reference.

Same input and output conventions as :func:`frontend.interpret.run_float`: static inputs
``[B, *shape]``, step inputs ``[T, B, *shape]``, optional state inputs ``[B, *shape]``;
outputs of the step stage ``[T, B, *shape]``, static and read-out outputs ``[B, *shape]``
(static: the value computed at step 0; read-out: the value computed at the last step).
Stages are derived from the ONNX dataflow with the same rule as :func:`nmc.ir.assign_stages`.
The session runs in float32 (the model's dtype); results are returned as float64.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from nmc.encoders import STEP_INDEX, step_index
from nmc.errors import InputError, ModelError, NmcError

from . import nmc_ops
from .onnx_import import _check, _extract_scan, _load_model, _opset, _real_inputs, read_convention

__all__ = ["run_onnxruntime"]


def _onnx_stages(model: onnx.ModelProto, kinds: dict[str, str], state_outputs: set[str]) -> dict[str, str]:
    """Stage (static | step | readout) of every tensor of the graph."""
    g = model.graph
    varying = {n for n, k in kinds.items() if k in ("state", "step")}
    node_stage = []
    for n in g.node:
        node_stage.append("step" if any(t in varying for t in n.input) else "static")
        if node_stage[-1] == "step":
            varying.update(n.output)
    feeds = set(state_outputs)
    feeding = set()
    for i in range(len(g.node) - 1, -1, -1):
        n = g.node[i]
        if any(t in feeds for t in n.output):
            feeding.add(i)
            feeds.update(n.input)
    stages = {n: ("static" if k == "static" else "step") for n, k in kinds.items()}
    for i, n in enumerate(g.node):
        st = node_stage[i]
        if st == "step" and i not in feeding:
            st = "readout"
        for t in n.output:
            stages[t] = st
    return stages


def _with_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Attach the nmc function bodies a model uses but does not ship (onnxruntime needs them)."""
    have = {(f.domain, f.name) for f in model.functions}
    need = {n.op_type for n in model.graph.node if n.domain == nmc_ops.NMC_DOMAIN
            and (nmc_ops.NMC_DOMAIN, n.op_type) not in have and n.op_type in nmc_ops.SCHEMAS}
    if not need:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.functions.extend(nmc_ops.function_protos(need, _opset(model, "") or nmc_ops.MIN_OPSET))
    if _opset(out, nmc_ops.NMC_DOMAIN) is None:
        out.opset_import.append(onnx.helper.make_opsetid(nmc_ops.NMC_DOMAIN, nmc_ops.NMC_DOMAIN_VERSION))
    return out


def run_onnxruntime(model_or_path: Any, inputs: dict, steps: int | None = None) -> dict[str, np.ndarray]:
    """Run an nmc-convention ONNX model (ModelProto, path or bytes) for ``steps`` timesteps in onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise NmcError("run_onnxruntime needs onnxruntime: pip install onnxruntime (or the test extra)") from e
    model = _load_model(model_or_path)
    _check(model)
    model = _extract_scan(model)
    model = _with_functions(model)
    conv = read_convention(model)
    g = model.graph
    kinds = {vi.name: conv.kind(vi.name) for vi in _real_inputs(g)}
    shapes = {}
    for vi in _real_inputs(g):
        shapes[vi.name] = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim[1:])
    inputs = dict(inputs or {})
    unknown = sorted(set(inputs) - set(kinds))
    if unknown:
        raise InputError(f"inputs {unknown} are not graph inputs of '{g.name}'; its inputs are {sorted(kinds)}")
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()}
    T = None
    for n, k in kinds.items():
        if k == "step" and n in arrays:
            T = arrays[n].shape[0] if T is None else T
            if arrays[n].shape[0] != T:
                raise InputError(f"step inputs disagree on the number of steps: '{n}' has {arrays[n].shape[0]}, others {T}")
    if steps is None:
        steps = T if T is not None else conv.num_steps
    elif T is not None and steps > T:
        raise InputError(f"steps={steps} but step inputs hold only {T} steps")
    B = 1
    for n, k in kinds.items():
        if n in arrays and n != STEP_INDEX:
            B = arrays[n].shape[1 if k == "step" else 0]
            break
    if STEP_INDEX in kinds and STEP_INDEX not in arrays:  # the step index: 0 .. steps-1
        arrays[STEP_INDEX] = step_index(steps, B).astype(np.float32)
    for n, k in kinds.items():
        if k != "state" and n not in arrays:
            raise InputError(f"missing {k} input '{n}'")
    state_now = {}
    for i, o, init in conv.states:
        state_now[i] = (arrays[i] if i in arrays
                        else np.broadcast_to(np.asarray(init, dtype=np.float32), (B, *shapes[i])).copy())
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(f"onnxruntime cannot load model '{g.name}': {e}") from e
    out_names = [o.name for o in g.output]
    stages = _onnx_stages(model, kinds, {o for _, o, _ in conv.states})
    series = {o: [] for o in conv.outputs}
    for t in range(steps):
        feed = {}
        for n, k in kinds.items():
            feed[n] = arrays[n][t] if k == "step" else (state_now[n] if k == "state" else arrays[n])
        res = dict(zip(out_names, sess.run(out_names, feed)))
        for o in conv.outputs:
            series[o].append(np.asarray(res[o], dtype=np.float64))
        for i, o, _ in conv.states:
            state_now[i] = res[o]
    out = {}
    for o in conv.outputs:
        st = stages.get(o, "static")
        out[o] = np.stack(series[o]) if st == "step" else (series[o][0] if st == "static" else series[o][-1])
    return out
