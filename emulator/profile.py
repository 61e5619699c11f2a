"""Turn an emulator run (event counts and cycles) into the profile report: latency and energy per
task, per stage, per layer, per core and per event kind (docs/timing_energy.md).

This module only formats: every joule and second comes from :func:`emulator.cost.price_run`."""
from __future__ import annotations

from typing import Any

import numpy as np

from nmc.coremap import CoreMap
from nmc.version import __version__

from .cost import price_run
from .schedule import STAGE_NAMES, phase_slots, round_boundary_cycles, round_cycles, stage_rounds_of
from .result import EVENT_KINDS, RawResult

__all__ = ["build_report", "format_profile"]


def build_report(cm: CoreMap, res: RawResult, steps: int, backend: str, schedule: str = "sequential") -> dict[str, Any]:
    chip = cm.chip
    B, C = res.core_cycles.shape
    chips = cm.meta.get("chips", [1, 1])
    n_chips = int(chips[0]) * int(chips[1])
    pr = price_run(cm, res, schedule)
    lat_cyc, interval_cyc = pr.latency_cycles, pr.interval_cycles  # [B] under the schedule
    dyn, core_energy, task_energy = pr.dynamic_j, pr.core_j, pr.energy_j  # [B, C, K], [B, C], [B] joules

    def mean(x):
        return float(np.mean(x)) if np.size(x) else 0.0

    ev_task = res.events.sum(axis=1)  # [B, K]
    events = {k: mean(ev_task[:, i]) for i, k in enumerate(EVENT_KINDS)}
    by_event = {k: mean(dyn[:, :, i].sum(axis=1)) for i, k in enumerate(EVENT_KINDS)}
    layers_meta = cm.meta["layers"]
    core_layer = cm.cores.layer
    layers = []
    for li, l in enumerate(layers_meta):
        sel = core_layer == li
        layers.append(dict(
            name=l["name"], op=l["op"], stage=l["stage"], cores=int(sel.sum()),
            compute_cycles=mean(res.core_cycles[:, sel].sum(axis=1)),
            energy_j=mean(core_energy[:, sel].sum(axis=1)),
            dynamic_j=mean(dyn[:, sel].sum(axis=(1, 2))),
            events={k: mean(res.events[:, sel, i].sum(axis=1)) for i, k in enumerate(EVENT_KINDS)},
        ))
    cores = []
    # per-core means of integer counts: exact integer sums over the samples, then / B (what np.mean gives while the
    # sums stay below 2**53), in one pass instead of a mean per core and kind
    ev_core = (res.events.sum(axis=0) / B).tolist() if B else [[0.0] * len(EVENT_KINDS)] * C
    cyc_core = (res.core_cycles.sum(axis=0) / B).tolist() if B else [0.0] * C
    # (floats: np.mean's own summation order; of one sample, the value itself)
    e_core = core_energy[0].tolist() if B == 1 else [mean(core_energy[:, c]) for c in range(C)]
    xs, ys, sts, phs = (cm.cores.x.tolist(), cm.cores.y.tolist(), cm.cores.stage.tolist(), cm.cores.phase.tolist())
    names = [layers_meta[int(li)]["name"] for li in core_layer.tolist()]
    for c in range(C):
        cores.append(dict(
            core=c, layer=names[c], x=int(xs[c]), y=int(ys[c]), stage=int(sts[c]), phase=int(phs[c]),
            compute_cycles=cyc_core[c], energy_j=e_core[c], events=dict(zip(EVENT_KINDS, ev_core[c])),
        ))
    phases = []
    st_code = {"static": 0, "step": 1, "readout": 2}
    for i, (stage, label) in enumerate(phase_slots(cm)):
        cyc = mean(res.phase_cycles[:, i])
        if label == "input":
            if cyc == 0:
                continue
            names = ["<host input>"]
        else:
            sel = (cm.cores.stage == st_code[stage]) & (cm.cores.phase == int(label))
            names = sorted({layers_meta[int(li)]["name"] for li in core_layer[sel]})
        comp = mean(res.phase_compute[:, i])
        phases.append(dict(stage=stage, phase=label, cycles=cyc, compute_cycles=comp,
                           network_barrier_cycles=cyc - comp, layers=names))
    # stages deeper than the phase budget: their rounds and what the boundaries cost (docs/numerics.md, "Rounds")
    n_rounds, bound_cyc = stage_rounds_of(cm), round_cycles(cm, steps)
    lim = chip.core.phases_per_step
    rounds = {}
    for s, st in enumerate(STAGE_NAMES):
        n_ph = int(cm.cores.phase[cm.cores.stage == s].max(initial=-1)) + 1
        rounds[st] = dict(phases=n_ph, rounds=int(n_rounds[s]), boundary_cycles=round_boundary_cycles(cm),
                          cycles=int(bound_cyc[s]),
                          round_phases=[[r * lim, min(n_ph, (r + 1) * lim) - 1] for r in range(int(n_rounds[s]))
                                        if n_ph])
        if bound_cyc[s]:  # after the stage's phases, like the input phases' rows
            phases.append(dict(stage=st, phase="rounds", cycles=float(bound_cyc[s]), compute_cycles=0.0,
                               network_barrier_cycles=float(bound_cyc[s]),
                               layers=[f"<{int(n_rounds[s]) - 1} round boundaries"
                                       + (" per step>" if s == 1 else ">")]))
    models = []
    for m in cm.meta.get("models", []):  # several models on one system: each its own latency and energy
        sel = np.isin(core_layer, np.asarray(m["layers"], np.int64))
        models.append(dict(name=m["name"], inputs=list(m["inputs"]), outputs=list(m["outputs"]), cores=int(sel.sum()),
                           energy_j=mean(core_energy[:, sel].sum(axis=1)),
                           latency_cycles=mean(_model_latency(cm, res, sel))))
    total_ops = events["mac"] * 2 + events["sop"]
    e_task = mean(task_energy)
    return dict(
        nmc_version=__version__,
        model=cm.meta["model"],
        chip=chip.name,
        chip_preset=chip.to_dict(),
        backend=backend,
        steps=int(steps),
        samples=int(B),
        chips=[int(chips[0]), int(chips[1])],
        cores_used=int(cm.physical_cores),  # physical cores (positions); logical ones below
        logical_cores=int(C),
        cores_available=int(n_chips * chip.cores_per_chip),
        chips_powered=int(pr.chips_powered),
        cores_powered=int(pr.cores_powered),
        schedule=schedule,
        latency_cycles=mean(lat_cyc),
        latency_s=mean(pr.latency_s),
        interval_cycles=mean(interval_cyc),
        throughput_tasks_per_s=1.0 / mean(pr.interval_s) if mean(pr.interval_s) > 0 else 0.0,
        energy_j=e_task,
        power_w=e_task / mean(pr.interval_s) if mean(pr.interval_s) > 0 else 0.0,
        ops_per_j=total_ops / e_task if e_task > 0 else 0.0,
        sram_read_bytes_per_s=events["sram_read_bytes"] / mean(pr.interval_s) if mean(pr.interval_s) > 0 else 0.0,
        estimates=_estimates(chip),
        per_task=dict(latency_cycles=[int(round(x)) for x in lat_cyc], energy_j=[float(x) for x in task_energy]),
        stages=dict(zip(("static", "step", "readout"), (mean(res.stage_cycles[:, i]) + float(bound_cyc[i])
                                                        for i in range(3)))),
        rounds=rounds,
        step_cycles_mean=[float(x) + float(bound_cyc[1]) / max(int(steps), 1)
                          for x in np.asarray(res.step_cycles).mean(axis=0)] if B else [],  # one pass
        phases=phases,
        energy_breakdown=dict(dynamic_j=mean(dyn.sum(axis=(1, 2))), static_used_j=mean(pr.static_used_j.sum(axis=1)),
                              static_idle_j=mean(pr.static_idle_j), by_event_j=by_event),
        events=events,
        layers=layers,
        cores=cores,
        warnings=list(cm.meta.get("compile", {}).get("warnings", [])),
        **({"models": models} if models else {}),
    )


def _estimates(chip) -> list[str]:
    """The chip's fields that are estimates (not published), as its description lists them."""
    return sorted(chip.estimates)


def _model_latency(cm: CoreMap, res: RawResult, sel: np.ndarray) -> np.ndarray:
    """Cycles per task until the cores ``sel`` of one model of several are done [B]: the models share the
    phases and their barriers, so a model pays every phase up to its last one: the static input phase and
    static phases up to its last static phase (all of them if it has step or read-out cores), every step if
    it has step or read-out cores, and the read-out phases up to its last one."""
    st, ph = cm.cores.stage[sel], cm.cores.phase[sel]
    later = bool(np.any(st > 0))
    last = {k: int(ph[st == k].max()) if np.any(st == k) else -1 for k in (0, 2)}
    out = np.zeros(res.latency_cycles.shape[0], np.float64)
    # round boundaries it waits for: every one of a stage it runs after, those before its last phase otherwise
    lim, bc, n_rounds = cm.chip.core.phases_per_step, round_boundary_cycles(cm), stage_rounds_of(cm)
    out += bc * (n_rounds[0] - 1 if later else max(last[0], 0) // lim)
    out += bc * (max(last[2], 0) // lim)
    if later:
        out += bc * (n_rounds[1] - 1) * (res.step_cycles.shape[1] if np.ndim(res.step_cycles) == 2 else 1)
    for i, (stage, label) in enumerate(phase_slots(cm)):
        if stage == "static" and (label == "input" or later or int(label) <= last[0]):
            out += res.phase_cycles[:, i]
        elif stage == "readout" and label != "input" and int(label) <= last[2]:
            out += res.phase_cycles[:, i]
    if later:
        out += res.stage_cycles[:, 1]
    return out


def _si(x: float, unit: str) -> str:
    for f, p in ((1e-12, "p"), (1e-9, "n"), (1e-6, "u"), (1e-3, "m"), (1.0, "")):
        if abs(x) < f * 1000:
            return f"{x / f:.3g} {p}{unit}"
    return f"{x:.3g} {unit}"


def format_profile(rep: dict[str, Any], top_cores: int = 10) -> str:
    """A plain-text table of the report: per task, per stage, per event kind, per layer, busiest cores."""
    L = []
    L.append(f"model {rep['model']} on {rep['chip']} ({rep['chips'][0]}x{rep['chips'][1]} chip(s), "
             f"{rep.get('chips_powered', '?')} powered, {rep['cores_used']}/{rep['cores_available']} cores), "
             f"{rep['steps']} steps, {rep['samples']} task(s), backend {rep['backend']}")
    L.append(f"per task: latency {rep['latency_cycles']:.0f} cycles = {_si(rep['latency_s'], 's')}, a task every "
             f"{rep.get('interval_cycles', rep['latency_cycles']):.0f} cycles "
             f"({rep.get('throughput_tasks_per_s', 0.0):.4g} tasks/s; {rep.get('schedule', 'sequential')} schedule), "
             f"energy {_si(rep['energy_j'], 'J')}, power {_si(rep['power_w'], 'W')}")
    st = rep["stages"]
    L.append(f"stages (cycles): static {st['static']:.0f}, steps {st['step']:.0f}, readout {st['readout']:.0f}")
    deep = {k: r for k, r in rep.get("rounds", {}).items() if r["rounds"] > 1}
    if deep:  # stages deeper than the phase budget (docs/numerics.md, "Rounds")
        L.append("rounds (stages deeper than core.phases_per_step): " + "; ".join(
            f"{k} {r['phases']} phases in {r['rounds']} rounds, {r['rounds'] - 1} boundaries"
            + (" per step" if k == "step" else "") + f" x {r['boundary_cycles']} cycles = {r['cycles']} cycles per task"
            for k, r in deep.items()))
    eb = rep["energy_breakdown"]
    L.append(f"energy: dynamic {_si(eb['dynamic_j'], 'J')}, static (used cores) {_si(eb['static_used_j'], 'J')}, "
             f"static (idle cores of powered chips) {_si(eb['static_idle_j'], 'J')}")
    L.append("")
    L.append(f"{'event':<18}{'count/task':>14}{'energy/task':>14}")
    for k, v in rep["events"].items():
        L.append(f"{k:<18}{v:>14.4g}{_si(eb['by_event_j'][k], 'J'):>14}")
    L.append("")
    L.append(f"{'layer':<16}{'op':<18}{'stage':<9}{'cores':>6}{'cycles':>12}{'energy':>12}{'share':>8}")
    tot = rep["energy_j"] or 1.0
    for l in rep["layers"]:
        L.append(f"{l['name'][:15]:<16}{l['op'][:17]:<18}{l['stage']:<9}{l['cores']:>6}{l['compute_cycles']:>12.0f}"
                 f"{_si(l['energy_j'], 'J'):>12}{100 * l['energy_j'] / tot:>7.1f}%")
    L.append("")
    L.append("where the time goes (per task; step phases summed over all steps):")
    L.append(f"{'stage/phase':<16}{'cycles':>10}{'compute':>10}{'net+barr':>10}  layers")
    for ph in rep["phases"]:
        L.append(f"{ph['stage'] + '/' + ph['phase']:<16}{ph['cycles']:>10.0f}{ph['compute_cycles']:>10.0f}"
                 f"{ph['network_barrier_cycles']:>10.0f}  {', '.join(ph['layers'])[:60]}")
    L.append("")
    L.append(f"busiest cores (top {top_cores} by compute cycles):")
    L.append(f"{'core':>5} {'(x,y)':<9}{'layer':<16}{'cycles':>12}{'energy':>12}")
    for c in sorted(rep["cores"], key=lambda c: -c["compute_cycles"])[:top_cores]:
        L.append(f"{c['core']:>5} {('(%d,%d)' % (c['x'], c['y'])):<9}{c['layer'][:15]:<16}{c['compute_cycles']:>12.0f}"
                 f"{_si(c['energy_j'], 'J'):>12}")
    if rep.get("estimates"):
        L.append("")
        L.append(f"estimates (not published; the chip file says how each was chosen): {', '.join(rep['estimates'])}")
    if rep.get("models"):
        L.append("")
        L.append(f"{'model':<20}{'cores':>6}{'latency (cycles)':>18}{'energy':>12}  inputs -> outputs")
        for m in rep["models"]:
            L.append(f"{m['name'][:19]:<20}{m['cores']:>6}{m['latency_cycles']:>18.0f}{_si(m['energy_j'], 'J'):>12}  "
                     f"{', '.join(m['inputs'])} -> {', '.join(m['outputs'])}")
    for w in rep.get("warnings", []):
        L.append(f"warning: {w}")
    return "\n".join(L)
