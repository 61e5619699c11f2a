"""Pictures of a run (``nmc profile --plot out/``): PNGs drawn with matplotlib, an optional extra
(``pip install -e '.[plot]'`` in the nmc checkout).  They only draw what the report and the run already hold:

* ``energy_by_layer.png``: energy per task of every layer (dynamic + the static energy of its cores);
* ``energy_by_event.png``: dynamic energy per task of every event kind, and the static energy;
* ``spike_raster.png``: the recorded per-step spike outputs (``kind == "spike"``) of one sample;
* ``core_grid.png``: the chip grid, every used core coloured by its energy and by its compute cycles per task.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nmc.coremap import CoreMap, chips_of
from nmc.errors import InputError

from .noc import grid_shape

__all__ = ["write_plots", "PLOT_FILES", "have_matplotlib"]

#: the files :func:`write_plots` writes
PLOT_FILES = ("energy_by_layer.png", "energy_by_event.png", "spike_raster.png", "core_grid.png")


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401  (optional extra)
    except ImportError:
        return False
    return True


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise InputError("--plot needs matplotlib, which is not installed; install it with "
                         "`pip install matplotlib` (or `pip install -e '.[plot]'` in the nmc checkout), or drop --plot") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def write_plots(cm: CoreMap, report: Mapping[str, Any], raw: Mapping[str, np.ndarray], out_dir, sample: int = 0) -> list[Path]:
    """Write :data:`PLOT_FILES` into ``out_dir`` (created); return their paths.  ``raw``: the run's outputs
    (``EmulationResult.raw``: per-step outputs ``[T, B, ...]``)."""
    plt = _pyplot()
    d = Path(out_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the plot folder '{d}' ({e}); give a writable folder to --plot") from None
    paths = []
    title = f"{report['model']} on {report['chip']}, {report['steps']} steps, mean of {report['samples']} task(s)"

    # energy by layer
    layers = report["layers"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(layers) + 2), 4))
    ax.bar([l["name"] for l in layers], [l["energy_j"] * 1e6 for l in layers], color="tab:blue")
    ax.set_ylabel("energy per task (uJ)")
    ax.set_title("energy by layer: " + title, fontsize=9)
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    paths.append(_save(fig, d / PLOT_FILES[0], plt))

    # energy by event kind
    eb = report["energy_breakdown"]
    names = list(eb["by_event_j"]) + ["static (used cores)", "static (idle cores)"]
    vals = list(eb["by_event_j"].values()) + [eb["static_used_j"], eb["static_idle_j"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(names, np.asarray(vals) * 1e6, color=["tab:orange"] * len(eb["by_event_j"]) + ["tab:gray"] * 2)
    ax.set_ylabel("energy per task (uJ)")
    ax.set_title("energy by event kind: " + title, fontsize=9)
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    paths.append(_save(fig, d / PLOT_FILES[1], plt))

    # spike raster of the per-step spike outputs of one sample
    fig, ax = plt.subplots(figsize=(8, 4))
    base, ticks = 0, []
    for spec in cm.meta["outputs"]:
        if spec["stage"] != "step" or spec.get("final") or spec.get("kind") != "spike" or spec["name"] not in raw:
            continue
        r = np.asarray(raw[spec["name"]])
        T = r.shape[0]
        s = r[:, min(sample, r.shape[1] - 1)].reshape(T, -1) if r.ndim >= 2 and r.shape[1] else np.zeros((T, 0))
        t, n = np.nonzero(s)
        ax.scatter(t, n + base, s=16, marker="|", linewidths=1, label=spec["name"])
        ticks.append((base + s.shape[1] / 2, spec["name"]))
        base += s.shape[1]
    if ticks:
        ax.set_yticks([p for p, _ in ticks], [name for _, name in ticks])
        ax.set_xlabel("step")
        ax.set_ylim(-0.5, base - 0.5)
        ax.set_title(f"spike raster, sample {sample}: " + title, fontsize=9)
    else:
        ax.text(0.5, 0.5, "no per-step spike outputs recorded\n(declare a spiking layer's spikes as a graph output)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    paths.append(_save(fig, d / PLOT_FILES[2], plt))

    # core grid heat maps
    W, H = grid_shape(cm.chip, chips_of(cm))
    fig, axes = plt.subplots(1, 2, figsize=(min(16.0, 4 + 0.25 * W * 2), min(10.0, 2 + 0.25 * H)), squeeze=False)
    for ax, key, label in zip(axes[0], ("energy_j", "compute_cycles"), ("energy per task (uJ)", "compute cycles per task")):
        g = np.full((H, W), np.nan)
        for c in report["cores"]:  # folded cores (one position, several logical cores) add up
            v = c[key] * (1e6 if key == "energy_j" else 1)
            g[c["y"], c["x"]] = v if np.isnan(g[c["y"], c["x"]]) else g[c["y"], c["x"]] + v
        im = ax.imshow(g, origin="upper", cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, label=label)
        for x in range(cm.chip.cores_x, W, cm.chip.cores_x):
            ax.axvline(x - 0.5, color="red", lw=1)
        for y in range(cm.chip.cores_y, H, cm.chip.cores_y):
            ax.axhline(y - 0.5, color="red", lw=1)
        ax.set_title(f"{label} (blank: unused, red: chip edges)", fontsize=8)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.suptitle(title, fontsize=9)
    paths.append(_save(fig, d / PLOT_FILES[3], plt))
    return paths


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
