"""The ``nmc`` command line: compile, check, run, profile, info, chips."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .api import check, compile, emulate
from .chip import list_presets, load_chip
from .corefile import load, save
from .emulator.kernels import kernels_compiled
from .emulator.plots import have_matplotlib, write_plots
from .emulator.profile import format_profile
from .emulator.trace import DEFAULT_TRACE_STEPS
from .errors import InputError, NmcError, UnsupportedOpError
from .files import save_json, save_npz
from .frontend.lift import ELEMENTWISE_OPS, lift_step
from .frontend.nir_import import DISCRETISATIONS, NirResetWarning, is_nir, load_nir
from .resources import core_usages
from .rules import stage_rounds
from .version import __version__

__all__ = ["main", "format_info"]


def _overrides(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items or []:
        if "=" not in it:
            raise InputError(f"--set '{it}': expected FIELD=VALUE, e.g. core.neurons=64")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _approximations(items: list[str] | None) -> dict[str, str]:
    """``--approximate OP=NAME`` (repeatable): ops the cores cannot run, replaced by a named approximation."""
    out = {}
    for it in items or []:
        op, sep, how = it.partition("=")
        if not sep or not op or not how:
            raise InputError(f"--approximate '{it}': expected OP=NAME, e.g. LRN=identity")
        out[op] = how
    return out


def _model(a: argparse.Namespace):
    """What to compile: each path of ``a.model`` (one model, or several side by side) as :func:`_one_model`."""
    models = [_one_model(a, path) for path in a.model]
    return models[0] if len(models) == 1 else models


def _one_model(a: argparse.Namespace, path: str):
    """The model to compile: an ONNX path as given, a NIR graph discretised with --dt (its warnings printed)."""
    nir_opts = {"dt": a.dt, "discretisation": a.discretisation, "reset_mode": a.reset_mode, "num_steps": a.steps}
    if not is_nir(path):
        given = [f"--{k.replace('_', '-')}" for k, v in nir_opts.items() if v is not None]
        if given:
            raise InputError(f"{', '.join(given)} apply to NIR graphs (.nir files); '{path}' is an ONNX model, "
                             "whose timestep and neurons are in the file")
        if not a.lift:
            return path
        model, report = lift_step(path)
        print(report.format(), file=sys.stderr)
        return model
    if a.lift:
        raise InputError("--lift applies to plain ONNX step exports; a NIR graph's neurons are NIR nodes")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NirResetWarning)
        graph = load_nir(path, **{k: v for k, v in nir_opts.items() if v is not None})
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return graph


def cmd_compile(a: argparse.Namespace) -> int:
    try:
        cm = compile(_model(a), chip=a.chip, chips=a.chips, calib=a.calib, placement=a.placement,
                     overrides=_overrides(a.set), approximate=_approximations(a.approximate),
                     profile_inputs=a.profile_inputs, objective=a.objective, tiles=a.tiles, depth=a.depth)
    except UnsupportedOpError as e:
        if not a.lift and not any(is_nir(p) for p in a.model) and any(op in ELEMENTWISE_OPS for _, op, _ in e.nodes):
            print("hint: neurons spelt with standard ops (a plain step export)? --lift replaces the ones that "
                  "verify by nmc::LIF", file=sys.stderr)
        raise
    save(cm, a.output)
    layers = cm.meta["layers"]
    print(f"compiled '{cm.meta['model']}' for {cm.chip.name}: {len(layers)} layers on {cm.cores_text()} "
          f"({cm.meta['chips'][0]}x{cm.meta['chips'][1]} chip(s)), phases {cm.meta['phases']}"
          + (f" in rounds {stage_rounds(cm)}" if max(stage_rounds(cm).values()) > 1 else "") + f" -> {a.output}")
    print(_routing_line(cm.meta))
    for w in cm.meta["compile"].get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    b = check(a.model, chip=a.chip, chips=a.chips, overrides=_overrides(a.set), depth=a.depth)
    print(b.table())
    return 0 if b.fits else 1


def _routing_line(meta) -> str:
    r = meta.get("routing") or {}
    if "traffic_hops" not in r:
        return "placement: (no measures in this core map)"
    num = ("traffic_hops", "max_link_load", "chip_crossings", "pairs", "mean_pair_hops", "max_table_entries")
    if not all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for k in num) or \
            not isinstance(r.get("relay_cores", 0), int):
        return "placement: (the routing summary in this core map is incomplete or damaged)"
    return (f"placement {r.get('placement') or '?'}: traffic x hops {r['traffic_hops']:,.0f}, max link load "
            f"{r['max_link_load']:,.0f}, chip crossings {r['chip_crossings']:,.0f} (values per step; "
            f"{r['pairs']} core pairs, mean {r['mean_pair_hops']:.2f} hops, largest router table "
            f"{r['max_table_entries']}, {r.get('relay_cores', 0)} relay core(s))")


def _steps(text: str) -> int:
    """``--steps``: a whole number, also written like ``1e7``."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v == v or v in (float("inf"), float("-inf")) or v != int(v):
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of steps")
    return int(v)


def _run(a: argparse.Namespace):
    limit = None if a.max_memory is None else int(a.max_memory * 2 ** 30)
    if a.backend == "numba" and not kernels_compiled():
        print("nmc: compiling the emulator's Numba kernels (once, about 10-20 s; they are cached on disk, so "
              "later runs start at once) ...", file=sys.stderr, flush=True)
    trace = getattr(a, "trace", None)
    if trace is None and (a.trace_steps is not None or a.trace_sample != 0):
        raise InputError("--trace-steps and --trace-sample need --trace FILE.json (where to write the timeline)")
    progress = not a.no_progress and sys.stderr.isatty()
    return emulate(a.coremap, a.input, steps=a.steps, backend=a.backend, jobs=a.jobs, max_memory=limit,
                   trace_steps=(a.trace_steps or DEFAULT_TRACE_STEPS) if trace else None, trace_sample=a.trace_sample,
                   stream_dir=getattr(a, "stream_dir", None), progress=progress,
                   schedule=getattr(a, "schedule", "sequential"))


def _write_trace(a: argparse.Namespace, res) -> str:
    if not a.trace:
        return ""
    save_json(Path(a.trace), res.trace)
    o = res.trace["otherData"]
    return (f"; timeline of sample {o['sample']} (static, steps 0..{o['traced_steps'] - 1} of {o['steps']}, readout) "
            f"-> {a.trace}")


def cmd_run(a: argparse.Namespace) -> int:
    res = _run(a)
    streamed = set()
    if res.stream_dir is not None:
        streamed = {name for name, v in res.outputs.items() if isinstance(v, np.memmap)}
    if a.output:
        arrays = {k: v for k, v in res.outputs.items() if k not in streamed}
        if a.raw:
            arrays.update({f"raw/{k}": v for k, v in res.raw.items() if k not in streamed})
        save_npz(Path(a.output), arrays)
    if a.report:
        save_json(Path(a.report), res.report)
    r = res.report
    print(f"{r['samples']} task(s) x {r['steps']} steps: latency {r['latency_cycles']:.0f} cycles "
          f"({r['latency_s'] * 1e6:.2f} us) and {r['energy_j'] * 1e6:.4g} uJ per task"
          + (f"; outputs -> {a.output}" if a.output else "")
          + (f"; per-step outputs {sorted(streamed)} streamed -> {res.stream_dir}/<name>.npy" if streamed else "")
          + (f"; report -> {a.report}" if a.report else "") + _write_trace(a, res))
    for w in r.get("warnings", []):  # (e.g. inputs saturated to their calibrated range: counted, never silent)
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_profile(a: argparse.Namespace) -> int:
    if a.plot and not have_matplotlib():  # before the run, not after it
        raise InputError("--plot needs matplotlib, which is not installed; install it with `pip install matplotlib` "
                         "(or `pip install -e '.[plot]'` in the nmc checkout), or drop --plot")
    res = _run(a)
    print(format_profile(res.report, top_cores=a.top))
    if a.report:
        save_json(Path(a.report), res.report)
    if a.plot:
        paths = write_plots(load(a.coremap), res.report, res.raw, a.plot)
        print(f"plots -> {', '.join(str(p) for p in paths)}")
    tail = _write_trace(a, res)
    if tail:
        print(tail[2:])
    return 0



def _differs(q: dict) -> str:
    """Where a layer's chip arithmetic differs from float, from its quantisation report (docs/numerics.md)."""
    parts = []
    if q.get("weight_rel_err"):
        parts.append(f"weights {q['weight_rel_err']:.1%}")
    if "requant_rounding" in q and not q.get("lossless"):
        parts.append(f"requant {q['requant_rounding']} ({q['requant_mode']})")
    if "lut_err_max" in q:
        parts.append(f"{q['lut_fn']} table err <= {q['lut_err_max']:.3g}")
    for k in ("beta", "alpha", "rho"):
        if k in q and q.get(f"{k}_chip") != q[k]:
            parts.append(f"{k} {q[k]:g} -> {q[f'{k}_chip']:g}")
        elif q.get(f"{k}_max_err"):
            parts.append(f"{k} err <= {q[f'{k}_max_err']:.3g}")
        if q.get(k) not in (None, 0.0, 1.0) and not q.get("lossless"):
            parts.append(f"{k} decay floors")
    return ", ".join(parts) or "-"

def format_info(cm) -> str:
    cs = cm.cores
    chip = cm.chip
    chips = cm.meta["chips"]
    nn, na = np.diff(cs.neuron_off), np.diff(cs.axon_off)
    mem = [u.total for u in core_usages(cm)]
    models = cm.models()
    L = [f"model {cm.meta['model']} | chip {chip.name} ({chip.cores_x}x{chip.cores_y} cores/chip) | "
         f"{chips[0]}x{chips[1]} chip(s) | {cm.physical_cores} of {chips[0] * chips[1] * chip.cores_per_chip} cores used"
         f"{'' if cm.physical_cores == cm.num_cores else f' ({cm.num_cores} logical, folded)'} | "
         f"default steps {cm.meta['num_steps']} | nmc {cm.meta.get('nmc_version') or __version__}",
         f"phases per stage: {cm.meta['phases']} (limit {chip.core.phases_per_step} per round; rounds "
         f"{stage_rounds(cm)})",
         _routing_line(cm.meta),
         *([f"models: " + "; ".join(f"{m['name']} ({len(m['layers'])} layers: {', '.join(m['inputs'])} -> "
                                    f"{', '.join(m['outputs'])})" for m in cm.meta["models"])]
           if cm.meta.get("models") else []),
         f"utilisation of used (logical) cores: neurons {nn.sum() / (max(cm.num_cores, 1) * chip.core.neurons):.1%}, "
         f"axons {na.sum() / (max(cm.num_cores, 1) * chip.core.axons):.1%}, "
         f"memory {sum(mem) / (max(cm.num_cores, 1) * chip.core.memory_bytes):.1%}",
         ""]
    if cm.num_cores == 0:
        L[2] = "utilisation of used cores: no cores used"
    for e in cm.meta.get("host_encoders") or []:  # spike encoders the host runs (docs/onnx_convention.md)
        attrs = ", ".join(f"{k}={v}" for k, v in e["attrs"].items())
        L.insert(-1, f"host encoder {e['op']}({attrs}): input '{e['input']}' -> spikes '{e['output']}' every step")
    L.append(f"{'layer':<16}{'op':<18}{'stage':<9}{'neurons':>8}{'cores':>6}{'split':>6}{'w_bits':>7}{'lossless':>9}"
             "  chip vs float")
    for l in cm.meta["layers"]:
        L.append(f"{l['name'][:15]:<16}{l['op'][:17]:<18}{l['stage']:<9}{l['neurons']:>8}{len(l['cores']):>6}"
                 f"{'yes' if l['split'] else 'no':>6}{l['w_bits']:>7}{'yes' if l['quant'].get('lossless') else 'no':>9}"
                 f"  {_differs(l['quant'])}")
    L.append("")
    L.append(f"{'core':>5} {'(x,y)':<9}{'layer':<16}{'soma':<15}{'stage/ph':<10}{'neurons':>12}{'axons':>12}"
             f"{'memory B':>16}")
    st_name = {0: "static", 1: "step", 2: "readout"}
    for c in range(cm.num_cores):
        L.append(f"{c:>5} {('(%d,%d)' % (cs.x[c], cs.y[c])):<9}"
                 f"{cm.meta['layers'][int(cs.layer[c])]['name'][:15]:<16}{models[c].name:<15}"
                 f"{st_name[int(cs.stage[c])] + '/' + str(int(cs.phase[c])):<10}"
                 f"{f'{nn[c]}/{chip.core.neurons}':>12}{f'{na[c]}/{chip.core.axons}':>12}"
                 f"{f'{mem[c]}/{chip.core.memory_bytes}':>16}")
    # grid picture: layer index per position
    W, H = chip.grid(int(chips[0]), int(chips[1]))
    if W * H <= 4096:
        grid = [["." for _ in range(W)] for _ in range(H)]
        for c in range(cm.num_cores):
            grid[int(cs.y[c])][int(cs.x[c])] = _glyph(int(cs.layer[c]))
        L.append("")
        L.append("placement (one character per core, '.' free, chips apart; layer key below; the host I/O port "
                 "is west of (0,0)):")
        for y, row in enumerate(grid):
            if y and y % chip.cores_y == 0:
                L.append("")  # chip boundary
            L.append("  " + " ".join("".join(row[x:x + chip.cores_x]) for x in range(0, W, chip.cores_x)))
        L.append("  key: " + ", ".join(f"{_glyph(i)}={l['name']}" for i, l in enumerate(cm.meta["layers"])))
    return "\n".join(L)


def _glyph(i: int) -> str:
    s = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return s[i % len(s)]


def cmd_info(a: argparse.Namespace) -> int:
    print(format_info(load(a.coremap)))
    return 0


def cmd_chips(a: argparse.Namespace) -> int:
    for name in list_presets():
        c = load_chip(name)
        print(f"{name:<10} {c.cores_x}x{c.cores_y} cores, {c.core.neurons} neurons / {c.core.axons} axons / "
              f"{c.core.memory_bytes} B per core, {c.clock_hz / 1e6:.0f} MHz - {c.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nmc", description="Compile hybrid ANN/SNN models for Tianjic-like chips, "
                                "emulate them cycle by cycle, and profile latency and energy.")
    p.add_argument("--version", action="version", version=f"nmc {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("compile", help="ONNX model (or NIR graph) -> core map")
    c.add_argument("model", nargs="+", help="ONNX file(s) in the nmc step convention, or NIR graphs (.nir, need --dt); "
                                            "several: one system runs them side by side, inputs and outputs named "
                                            "<file stem>:<name>")
    c.add_argument("--chip", default="tianjic", help="preset name (see 'nmc chips') or path of a chip .toml")
    c.add_argument("--chips", default=None, help="grid of chips 'XxY' or 'auto' (default: the preset's)")
    c.add_argument("--calib", default=None, help="calibration inputs (.npz, inputs.npz format)")
    c.add_argument("--placement", default="greedy",
                   help="placement strategy: greedy, zigzag (= linear), locality, profile (needs --profile-inputs)")
    c.add_argument("--tiles", default="auto", choices=["auto", "on", "off"],
                   help="cut convolutions and dense layers into tiles whose cores store shared kernels: auto (layers "
                        "over 1M synapses or of 64k neurons), on (all), off (none: neuron by neuron)")
    c.add_argument("--objective", default="latency", choices=["latency", "cores", "balanced", "energy"],
                   help="folding trade-off: latency (no folding, default), cores (fold logical cores onto as few physical "
                        "cores as memory and phases allow), balanced (at most 2 per core), energy")
    c.add_argument("--depth", default="rounds", choices=["rounds", "refuse"],
                   help="a stage with more phases than core.phases_per_step: run it in several rounds (default; each "
                        "round boundary costs timing.barrier_cycles + timing.round_overhead_cycles) or refuse it")
    c.add_argument("--profile-inputs", default=None, metavar="INPUTS.npz",
                   help="inputs the emulator measures traffic on, for --placement profile")
    c.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a chip field, e.g. core.neurons=64")
    c.add_argument("--approximate", action="append", metavar="OP=NAME",
                   help="accept an approximation of an op instead of its on-core form, e.g. LRN=identity (reported)")
    c.add_argument("-o", "--output", required=True, help="core-map file to write")
    c.add_argument("--lift", action="store_true",
                   help="plain step export: replace neurons spelt with standard ops (Mul/Add/Greater/...) by nmc::LIF "
                        "where probing and verifying in onnxruntime succeeds; prints what was lifted")
    c.add_argument("--dt", type=float, default=None, help="NIR only: the timestep in seconds (NIR is continuous-time)")
    c.add_argument("--discretisation", default=None, choices=DISCRETISATIONS,
                   help="NIR only: euler (forward Euler, default) or exp (exponential decay)")
    c.add_argument("--reset-mode", default=None, choices=("zero", "subtract", "none"),
                   help="NIR only: how neurons reset (NIR cannot say; default zero, with a warning)")
    c.add_argument("--steps", type=_steps, default=None, help="NIR only: the model's number of timesteps (default 16)")
    c.set_defaults(fn=cmd_compile)

    k = sub.add_parser("check", help="closed-form lower bounds: cores, chips, phases, memory per layer (does it fit?)",
                       description="Bound what the model needs from its shapes alone, in seconds, and say what does "
                                   "not fit and which option would make it fit. Exit status 0: fits the bounds, 1: "
                                   "cannot fit.")
    k.add_argument("model", help="ONNX file in the nmc step convention")
    k.add_argument("--chip", default="tianjic", help="preset name (see 'nmc chips') or path of a chip .toml")
    k.add_argument("--chips", default=None, help="grid of chips 'XxY' or 'auto' (default: the preset's)")
    k.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a chip field, e.g. core.neurons=64")
    k.add_argument("--depth", default="rounds", choices=["rounds", "refuse"],
                   help="a stage deeper than core.phases_per_step: report its rounds (default) or refuse it")
    k.set_defaults(fn=cmd_check)

    for name, fn, hlp in (("run", cmd_run, "emulate a core map on inputs"),
                          ("profile", cmd_profile, "emulate and print latency/energy per task, layer, core")):
        r = sub.add_parser(name, help=hlp)
        r.add_argument("coremap")
        r.add_argument("--input", required=True, help="inputs.npz: one array per graph input, by name")
        r.add_argument("--steps", type=_steps, default=None, help="timesteps (default: the model's nmc.num_steps)")
        r.add_argument("--jobs", type=int, default=1,
                       help="threads over the samples of the batch (0: every CPU); results equal one thread's")
        r.add_argument("--max-memory", type=float, default=None, metavar="GIB",
                       help="memory the run may hold, GiB (default half of what the process can spare); estimated before "
                            "allocating")
        r.add_argument("--backend", default="numba", help="numba (fast) or reference (NumPy, the numerics spec)")
        r.add_argument("--report", default=None, help="write the JSON report here")
        r.add_argument("--schedule", default="sequential", choices=["sequential", "pipelined"],
                       help="sequential (default) or pipelined: consecutive steps and tasks overlap phase by phase; "
                            "latency, interval between tasks, throughput, energy and power are reported for it "
                            "(outputs are the same; refused for models with recurrent connections)")
        r.add_argument("--trace", default=None, metavar="FILE.json",
                       help="write a timeline (Chrome trace event JSON; open in https://ui.perfetto.dev) of one sample: "
                            "a track per core and per busy link, phases and barriers as slices")
        r.add_argument("--trace-steps", type=int, default=None, metavar="N",
                       help=f"steps shown in detail in the trace (default {DEFAULT_TRACE_STEPS}; the rest is one slice)")
        r.add_argument("--trace-sample", type=int, default=0, metavar="B", help="the sample traced (default 0)")
        r.add_argument("--no-progress", action="store_true",
                       help="no progress bar (shown on a terminal for runs over 2 s when tqdm is installed)")
        if name == "run":
            r.add_argument("-o", "--output", default=None, help="result.npz: one array per graph output")
            r.add_argument("--raw", action="store_true", help="also store the chip's raw integers as raw/<name>")
            r.add_argument("--stream-dir", default=None, metavar="DIR",
                           help="write per-step outputs to DIR/<name>.npy ([T, B, ...]; raw integers in <name>.raw.npy) "
                                "and step cycles to DIR/step_cycles.npy chunk by chunk instead of holding them in memory")
        else:
            r.add_argument("--top", type=int, default=10, help="how many of the busiest cores to list")
            r.add_argument("--plot", default=None, metavar="DIR",
                           help="write PNGs to DIR: energy by layer and by event kind, spike raster, core-grid heat "
                                "map (needs matplotlib: pip install -e '.[plot]' in the nmc checkout)")
        r.set_defaults(fn=fn)

    i = sub.add_parser("info", help="what is placed where, utilisation")
    i.add_argument("coremap")
    i.set_defaults(fn=cmd_info)

    ch = sub.add_parser("chips", help="list the chip presets")
    ch.set_defaults(fn=cmd_chips)
    return p


def _terminate(signum, frame):
    """SIGTERM (``kill``) ends the command like Ctrl-C does: through the ``finally`` blocks, so a file being
    written removes its temporary file (nmc/files.py)."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return args.fn(args)
    except NmcError as e:
        print(f"nmc {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `nmc info model.nmc | head`
        sys.stderr.close()
        return 0
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
