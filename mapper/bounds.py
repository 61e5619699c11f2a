"""Closed-form lower bounds of what a model needs, from its shapes and weights alone (before any synapse
is built): cores, chips, phases per timestep and core memory per layer, and the host memory the mapping
itself will take.

Every figure is a *lower* bound the mapper can only meet or exceed, so a model whose bound already breaks a
limit cannot fit, and compile can say so in seconds instead of unfolding millions of synapses first.
Per layer (the layers of ``mapper.lower.plan``: the same fusions as the real lowering):

* ``synapses``: the unfolded connectivity's size, exact (dense: non-zero weights; conv: non-zero kernel taps
  times the output positions where each tap lands inside the input; pooling: window taps inside the input);
* ``fan-in``: a lower bound of the largest number of inputs one neuron reads (exact except for an Add of
  operands of different receptive fields);
* ``w``: weight bits, at least the chip's narrowest when every row's non-zero weights have one magnitude
  (they may quantise to +-1), else 8;
* ``cores``: the largest of ``neurons / core.neurons``, ``(synapses x w / 8 + neurons x bytes per neuron) /
  core.memory_bytes`` (a core's dense weight block holds at least its synapses), ``synapses / (core.axons x
  core.neurons)``, and, when one neuron's fan-in does not fit a core (``core.axons`` or memory), the partial
  cores of one neuron plus its merge core;
* ``phases``: 1, or 2 when the fan-in must be split (a merge phase); the stage's phases are the longest
  chain of layers in it (``mapper.connect``'s phases; a lower bound when each layer reads every element of
  its inputs, as dense, add and convolutions whose stride is at most their kernel do); a stage deeper than
  ``core.phases_per_step`` runs in ``Bounds.rounds`` rounds (refused only with ``depth="refuse"``);
* ``SRAM``: the core memory of its weights and neurons (the numerator above).

The host-memory estimate is that of today's unfolded lowering (bytes per unfolded synapse, measured in
``benchmarks/bench_scale_compile.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nmc.chip import ChipSpec
from nmc.errors import DoesNotFitError, PassError
from nmc.files import size_text
from nmc.ir import Graph, Node
from nmc.neurons import by_ir_op
from nmc.resources import core_usage, neuron_bytes
from nmc.rules import rounds_needed

from .lower import Plan, plan
from .partition import tile_auto

__all__ = ["LayerBound", "Bounds", "bounds", "check_bounds", "HOST_BYTES_PER_SYNAPSE", "EARLY_SYNAPSES"]

#: peak host bytes the unfolded lowering, quantisation, partitioning and emission take per unfolded synapse
#: (measured: benchmarks/bench_scale_compile.py, 80-85 B above the interpreter for 8.5M and 20M synapses; with a
#: margin, docs/performance.md)
HOST_BYTES_PER_SYNAPSE = 120
#: host bytes of a tiled layer: the larger of these per output neuron and per unfolded synapse (its neurons,
#: patch axons, routes and kernel blocks; the axons, hence routes, grow with the synapses a core's patch covers).
#: Low by design: this check only refuses what surely cannot fit, and the partition is checked again with its own
#: axons and dense blocks (mapper/fit.check_host), which is the close estimate.  Set (second session of 2026-12-04)
#: as the largest round values that overestimate none of ResNet-50, SqueezeNet, AlexNet, Inception v2 and VGG-19
#: (the onnx wheel's light models, tianjicx): their estimates 0.19-0.90x their peaks; tested on DenseNet-121,
#: ShuffleNet, Inception v1 and ZFNet-512: 0.25-0.79x (docs/performance.md).  (Before: 0.5 B per synapse, which
#: became 1.11x and 1.26x the peaks of ResNet-50 and VGG-19 once their mapping took less memory, so VGG-19 would have
#: been refused up front on a machine where it fits; and before that 400 B and 1.2 B.)
HOST_BYTES_PER_TILED_NEURON = 100
HOST_BYTES_PER_TILED_SYNAPSE = 0.35
#: models with at least this many unfolded synapses (about a second of mapping) are refused as soon as their
#: lower bound breaks a limit; smaller ones are mapped on, so the design rules name every core at fault
EARLY_SYNAPSES = 1_000_000


@dataclass(frozen=True)
class LayerBound:
    name: str
    op: str
    source: str
    stage: str
    neurons: int
    synapses: int
    fan_in: int  #: lower bound of the largest fan-in
    w_bits: int  #: lower bound of the weight precision
    soma: str
    split: bool  #: one neuron's fan-in cannot fit one core: partial + merge cores
    cores: int  #: lower bound
    binding: str  #: which limit gives ``cores``: "neurons" | "memory" | "axons" | "fan-in"
    sram_bytes: int  #: lower bound of its cores' memory (weights + neurons)
    phase_end: int  #: phases of its stage up to and including this layer (lower bound)
    tiled: bool = False  #: mapped as tiles of shared kernels (mapper/structured.py), not unfolded


@dataclass(frozen=True, eq=False)
class Bounds:
    """Lower bounds of a model on a chip (module doc), and what they break."""

    model: str
    chip: ChipSpec
    chips: Any  #: the system asked for: ``(x, y)``, ``"auto"`` or None (the chip's own)
    layers: list[LayerBound]
    phases: dict[str, int]  #: per stage, lower bound
    host_bytes: int  #: estimated peak host memory of mapping (unfolded lowering)
    host_budget: int | None  #: what the process may spend (None: not checked)
    problems: list[str] = field(default_factory=list)
    depth: str = "rounds"  #: "rounds": a stage deeper than the phase budget runs in rounds; "refuse": it is refused

    @property
    def rounds(self) -> dict[str, int]:
        """Per stage, the rounds its phases' lower bound needs (docs/numerics.md, "Rounds")."""
        return {s: rounds_needed(n, self.chip.core.phases_per_step) for s, n in self.phases.items()}

    @property
    def cores(self) -> int:
        return sum(l.cores for l in self.layers)

    @property
    def synapses(self) -> int:
        return sum(l.synapses for l in self.layers)

    @property
    def chips_needed(self) -> int:
        return max(1, -(-self.cores // self.chip.cores_per_chip))

    @property
    def fits(self) -> bool:
        return not self.problems

    def lint(self) -> None:
        for l in self.layers:
            if min(l.neurons, l.synapses, l.fan_in, l.cores, l.sram_bytes, l.phase_end) < 0 or l.cores < 1:
                raise PassError(f"bounds: layer '{l.name}' has a negative or empty bound")

    def table(self, top: int | None = None) -> str:
        """The per-layer bounds as text (``top``: only the layers needing most cores), the totals and what does
        not fit."""
        c = self.chip.core
        rows = self.layers
        if top is not None and len(rows) > top:
            keep = set(sorted(range(len(rows)), key=lambda i: (-rows[i].cores, i))[:top])
            rows = [l for i, l in enumerate(rows) if i in keep]
        head = (f"lower bounds of '{self.model}' on '{self.chip.name}' ({_system(self)}; per core {c.neurons} neurons, "
                f"{c.axons} axons, {c.memory_bytes} B; {c.phases_per_step} phases per step)")
        hdr = ("layer", "op", "stage", "neurons", "synapses", "fan-in", "w", "cores>=", "by", "SRAM>=", "phase")
        body = [(l.name, l.op, l.stage, f"{l.neurons:,}", f"{l.synapses:,}", f"{l.fan_in:,}", str(l.w_bits),
                 f"{l.cores:,}", l.binding + ("+merge" if l.split and l.binding != "fan-in" else ""),
                 size_text(l.sram_bytes), str(l.phase_end)) for l in rows]
        width = [max(len(r[i]) for r in [hdr] + body) for i in range(len(hdr))]
        width[0] = min(width[0], 28)
        width[1] = min(width[1], 20)

        def line(r):
            cells = [r[0][:28].ljust(width[0]), r[1][:20].ljust(width[1]), r[2].ljust(width[2])]
            cells += [x.rjust(w) for x, w in zip(r[3:8], width[3:8])]
            cells += [r[8].ljust(width[8]), r[9].rjust(width[9]), r[10].rjust(width[10])]
            return "  " + "  ".join(cells)

        out = [head, line(hdr)] + [line(r) for r in body]
        if len(rows) < len(self.layers):
            out.append(f"  ... {len(self.layers) - len(rows)} more layer(s) (nmc check lists them all)")
        phases = ", ".join(f"{k} {v}" + (f" ({self.rounds[k]} rounds)" if self.rounds[k] > 1 else "")
                           for k, v in self.phases.items() if v)
        out.append(f"total: {len(self.layers)} layers, {self.synapses:,} synapses, >= {self.cores:,} cores "
                   f"(>= {self.chips_needed} chip(s) of {self.chip.cores_per_chip} cores), phases >= {phases or '0'}, "
                   f"mapping needs ~{size_text(self.host_bytes)} of host memory"
                   + (f" (this process can spare {size_text(self.host_budget)})" if self.host_budget else ""))
        if self.problems:
            out.append("does not fit:")
            out.extend(f"  - {p}" for p in self.problems)
        else:
            out.append("fits these bounds (the mapping may still need more cores, phases or memory than the bounds)")
        return "\n".join(out)


def _system(b: Bounds) -> str:
    if b.chips == "auto":
        return "--chips auto"
    cx, cy = (b.chip.system.chips_x, b.chip.system.chips_y) if b.chips is None else b.chips
    return f"{cx} x {cy} chip(s), {cx * cy * b.chip.cores_per_chip} cores"


# ----------------------------------------------------------------------------- closed forms
def _taps(n_out: int, size: int, k: int, stride: int, pad: int, dil: int) -> np.ndarray:
    """[n_out, k]: whether tap ``k`` of output position ``o`` lands inside an input axis of ``size``."""
    i = np.arange(n_out)[:, None] * stride - pad + np.arange(k)[None, :] * dil
    return (i >= 0) & (i < size)


def _row_equal(W2: np.ndarray) -> bool:
    """Every row's non-zero weights have one magnitude (they may quantise to +-1); in chunks of rows."""
    step = max(1, (1 << 22) // max(W2.shape[1], 1))
    for r in range(0, W2.shape[0], step):
        a = np.abs(W2[r:r + step])
        big = a.max(axis=1)
        small = np.where(a > 0, a, np.inf).min(axis=1)
        nz = big > 0
        if not np.all(big[nz] == small[nz]):
            return False
    return True


def _nonzero_per_row(W: np.ndarray) -> np.ndarray:
    step = max(1, (1 << 22) // max(W.shape[1], 1))
    return np.concatenate([np.count_nonzero(W[r:r + step], axis=1) for r in range(0, W.shape[0], step)]
                          or [np.zeros(0, np.int64)]).astype(np.int64)


@dataclass(frozen=True)
class _Syn:
    synapses: int
    fan_max: int  #: lower bound of the largest fan-in
    fan_min: int  #: the smallest fan-in (for sums of operands)
    narrow: bool  #: the weights may quantise to the chip's narrowest precision
    hists: tuple = ()  #: (fan-in values, neuron counts): a lower bound of every neuron's fan-in, one or more


def _conv(n: Node, in_shape, out_shape, pool: bool) -> _Syn:
    a = n.attrs
    _, H, Wd = in_shape
    _, OH, OW = out_shape
    if pool:
        kh, kw = tuple(a["kernel"])
        sh, sw = tuple(a.get("strides") or (kh, kw))
        dh = dw = 1
        nzk = np.ones((1, kh, kw), np.int64)  # taps per (channel) kernel position
        narrow = True
        chans = in_shape[0]
    else:
        W = n.params["W"]
        co, ci_g, kh, kw = W.shape
        sh, sw = a.get("strides", (1, 1))
        dh, dw = a.get("dilations", (1, 1))
        nzk = (W != 0).sum(axis=1).astype(np.int64)  # [co, kh, kw]: non-zero input channels per tap
        narrow = _row_equal(W.reshape(co, -1))
        chans = 1
    pt, pl, _, _ = a.get("pads", (0, 0, 0, 0))
    vy = _taps(OH, H, kh, sh, pt, dh)
    vx = _taps(OW, Wd, kw, sw, pl, dw)
    S = int(np.einsum("cij,i,j->", nzk, vy.sum(axis=0), vx.sum(axis=0), dtype=np.int64, optimize=True)) * chans
    uy, ux = np.unique(vy, axis=0).astype(np.int64), np.unique(vx, axis=0).astype(np.int64)
    fan = np.einsum("cij,ai,bj->cab", nzk, uy, ux, optimize=True)  # [co, distinct rows, distinct columns]
    ny = np.array([np.all(vy == r, axis=1).sum() for r in uy.astype(bool)], np.int64)
    nx = np.array([np.all(vx == r, axis=1).sum() for r in ux.astype(bool)], np.int64)
    mult = np.broadcast_to(ny[None, :, None] * nx[None, None, :] * chans, fan.shape)
    vals, inv = np.unique(fan.reshape(-1), return_inverse=True)
    hist = (vals, np.bincount(inv, weights=mult.reshape(-1)).astype(np.int64))
    return _Syn(S, int(fan.max()), int(fan.min()), narrow, (hist,))


def _syn(g: Graph, n: Node, pl: Plan) -> _Syn:
    """The closed form of the synapse of ``n`` (dense, conv, pooling, add, relu)."""
    shape_of = lambda t: g.tensors[t].shape  # noqa: E731 - the shape the op sees (a reshape of its root, maybe)
    if n.op == "dense":
        W = n.params["W"]
        nz = _nonzero_per_row(W)
        vals, cnt = np.unique(nz, return_counts=True)
        return _Syn(int(nz.sum()), int(nz.max(initial=0)), int(nz.min()) if nz.size else 0, _row_equal(W), ((vals, cnt),))
    if n.op in ("conv", "maxpool", "avgpool"):
        return _conv(n, shape_of(n.inputs[0]), g.tensors[n.outputs[0]].shape, pool=n.op != "conv")
    size = g.tensors[n.outputs[0]].size
    if n.op == "add":
        parts = []
        for t in n.inputs:
            p = pl.prod.get(t)
            parts.append(_syn(g, p, pl) if p is not None and p.name in pl.absorbed else _Syn(size, 1, 1, True))
        others = [sum(q.fan_min for j, q in enumerate(parts) if j != i) for i in range(len(parts))]
        fan = max(p.fan_max + o for p, o in zip(parts, others))
        hists = tuple((v + o, c) for p, o in zip(parts, others) for v, c in p.hists)
        return _Syn(sum(p.synapses for p in parts), fan, sum(p.fan_min for p in parts), all(p.narrow for p in parts),
                    hists)
    return _Syn(size, 1, 1, True, ((np.array([1]), np.array([size])),))  # relu: an identity synapse


def _absorbed(n: Node, pl: Plan) -> list[Node]:
    """The dense/conv nodes an Add absorbs (their synapses are the Add's)."""
    if n.op != "add":
        return []
    return [pl.prod[t] for t in n.inputs if t in pl.prod and pl.prod[t].name in pl.absorbed]


def _fan_cores(chip: ChipSpec, hists, wb: int, soma: str) -> int:
    """Cores a layer needs by its fan-ins when no neuron is split: the ``N(>= f)`` neurons reading at least ``f``
    inputs sit on cores of at least ``f`` axons, and such a core holds at most ``cap(f)`` neurons (its dense weight
    block, neurons and axon buffer within core.memory_bytes)."""
    c = chip.core
    nn = np.arange(1, c.neurons + 1)
    best = 0
    for vals, cnt in hists:
        keep = vals <= c.axons
        vals, cnt = np.asarray(vals)[keep], np.asarray(cnt)[keep]
        at_least = np.cumsum(cnt[::-1])[::-1]  # neurons with fan-in >= vals[i]
        for f, n_f in zip(vals.tolist(), at_least.tolist()):
            u = core_usage(chip, f, nn, wb, soma, 1)
            ok = nn[u.total <= c.memory_bytes]
            cap = int(ok.max()) if ok.size else 1
            best = max(best, -(-int(n_f) // cap))
    return best


def bounds(g: Graph, chip: ChipSpec, chips: Any = None, host_budget: int | None = None, *,
           depth: str = "rounds") -> Bounds:
    """Lower bounds of ``g`` on ``chip`` (module doc) and the limits they break: the system's cores
    (``chips``: ``(x, y)``, ``"auto"`` or None for the chip's system), the phases per step, and
    ``host_budget`` bytes of host memory for mapping; ``depth="rounds"`` reports the rounds a stage deeper than
    the phase budget needs (``Bounds.rounds``), ``"refuse"`` refuses it."""
    c = chip.core
    pl = plan(g)
    g = pl.graph
    narrowest = min(c.weight_bits)
    made: dict[str, int] = {}  # tensor -> index of the layer producing it
    layers: list[LayerBound] = []
    for st in pl.steps:
        if st.kind in ("alias", "bad", "view"):  # (a layer reading a view is bounded as if reading an input)
            continue
        n, nxt = st.node, st.fused
        if st.kind == "linear":
            syn = _syn(g, n, pl)
            fn = nxt.op if nxt is not None and nxt.op != "relu" else n.op if n.op == "lut" else None
            soma = "ann" if fn is None else "lut" if fn == "lut" else by_ir_op(fn).name
            nodes = [n] + ([nxt] if nxt is not None else [])
            # the inputs it reads through at least one synapse (a dense/conv of zero weights routes nothing)
            ins = [pl.root(t) for t in n.inputs] if syn.synapses else []
            if n.op == "add":
                ins = []
                for t in n.inputs:
                    p = pl.prod.get(t)
                    if p is not None and p.name in pl.absorbed:
                        ins += [pl.root(i) for i in p.inputs] if _syn(g, p, pl).synapses else []
                    else:
                        ins.append(pl.root(t))
            op = n.op + (f"+{nxt.op}" if nxt is not None else "")
            size = g.tensors[n.outputs[0]].size
        else:
            m = by_ir_op(n.op)
            x = pl.root(n.inputs[m.ir_inputs.index(m.synapse_port)])
            size = g.tensors[x].size
            syn, soma, nodes, ins, op = (_Syn(size, 1, 1, True, ((np.array([1]), np.array([size])),)), m.name, [n],
                                         [x], n.op)
        wb = narrowest if syn.narrow else 8
        nb = neuron_bytes(chip, soma)
        # structured layers this large are tiled (mapper/partition.py): their cores store shared kernels, at least
        # the kernel once; the others store dense blocks holding at least their synapses
        tiled = st.kind == "linear" and tile_auto(syn.synapses, size, chip) and soma != "lut"
        kernel = (sum(int(np.count_nonzero(nd.params["W"])) for nd in [n] + _absorbed(n, pl) if "W" in nd.params)
                  if n.op in ("conv", "dense", "add") else 0)
        sram = -(-(kernel if tiled else syn.synapses) * wb // 8) + size * nb
        fits_one = syn.fan_max <= c.axons and core_usage(chip, syn.fan_max, 1, wb, soma, 1).total <= c.memory_bytes
        cand = {"neurons": -(-size // c.neurons), "memory": -(-sram // c.memory_bytes),
                "axons": -(-syn.synapses // (c.axons * c.neurons))}
        if not fits_one:
            cand["fan-in"] = -(-syn.fan_max // c.axons) + 1
        elif not tiled:
            cand["axons"] = max(cand["axons"], _fan_cores(chip, syn.hists, wb, soma))
        binding = max(cand, key=lambda k: cand[k])
        start = max((layers[made[t]].phase_end for t in ins if t in made
                     and layers[made[t]].stage == n.stage), default=0)
        lb = LayerBound(name=n.name, op=op, source=n.source or n.name, stage=n.stage, neurons=size,
                        synapses=syn.synapses, fan_in=syn.fan_max, w_bits=wb, soma=soma, split=not fits_one,
                        cores=max(1, cand[binding]), binding=binding, sram_bytes=sram,
                        phase_end=start + (1 if fits_one else 2), tiled=tiled)
        for nd in nodes:
            for t in nd.outputs:
                made[t] = len(layers)
        layers.append(lb)
    phases = {s: max((l.phase_end for l in layers if l.stage == s), default=0) for s in ("static", "step", "readout")}
    host = int(sum(max(HOST_BYTES_PER_TILED_NEURON * l.neurons, HOST_BYTES_PER_TILED_SYNAPSE * l.synapses) if l.tiled
                   else HOST_BYTES_PER_SYNAPSE * l.synapses for l in layers))
    b = Bounds(model=g.name, chip=chip, chips=chips, layers=layers, phases=phases, host_bytes=host,
               host_budget=host_budget, depth=depth)
    b.problems.extend(_problems(b))
    return b


def _problems(b: Bounds) -> list[str]:
    chip, c = b.chip, b.chip.core
    out = []
    big = sorted(b.layers, key=lambda l: -l.cores)[:3]
    if b.chips != "auto":
        cx, cy = (chip.system.chips_x, chip.system.chips_y) if b.chips is None else b.chips
        cap = cx * cy * chip.cores_per_chip
        if b.cores > cap:
            need = b.chips_needed
            side = int(np.ceil(np.sqrt(need)))
            out.append(f"cores: the model needs at least {b.cores:,} cores, {b.cores / cap:.1f} x the {cap:,} of "
                       f"{cx} x {cy} chip(s) of '{chip.name}' (largest: "
                       + ", ".join(f"'{l.name}' >= {l.cores:,} by {l.binding}" for l in big)
                       + f"); fix: --chips {side}x{-(-need // side)} (>= {need} chips) or --chips auto, or a chip "
                       "with larger cores")
    for st, n in b.phases.items():
        if n > c.phases_per_step and b.depth == "refuse":
            deep = [l.name for l in b.layers if l.stage == st and l.phase_end > c.phases_per_step]
            n_split = sum(1 for l in b.layers if l.stage == st and l.split)
            out.append(f"phases: the {st} stage needs at least {n} phases, {n - c.phases_per_step} more than "
                       f"core.phases_per_step = {c.phases_per_step} of '{chip.name}' ({len(deep)} layer(s) beyond it, "
                       f"from '{deep[0]}'; {n_split} layer(s) split by fan-in add a merge phase each); fix: --depth rounds, --set "
                       f"core.phases_per_step={n}, a shallower network per timestep, or a chip with larger cores")
    if b.host_budget is not None and b.host_bytes > b.host_budget:
        heavy = sorted(b.layers, key=lambda l: -l.synapses)[:3]
        tiled = sum(l.tiled for l in b.layers)
        how = (f"{tiled} of its {len(b.layers)} layers tiled, the others unfolded" if tiled else "every layer unfolded")
        out.append(f"host memory: mapping {b.synapses:,} synapses ({how}; largest: "
                   + ", ".join(f"'{l.name}' {l.synapses:,}" for l in heavy)
                   + f") takes about {size_text(b.host_bytes)}, more than the {size_text(b.host_budget)} this process "
                   "can spare; fix: a machine with more memory, a smaller input resolution or narrower layers")
    return out


def check_bounds(b: Bounds) -> None:
    """Refuse a model that cannot fit, before any synapse is built: when its host memory bound breaks the
    budget, or when any bound breaks and the model is not small (``EARLY_SYNAPSES``; a small one is mapped on
    and the design rules name every core at fault)."""
    host = any(p.startswith("host memory") for p in b.problems)
    if b.problems and (host or b.synapses >= EARLY_SYNAPSES):
        raise DoesNotFitError("the model cannot fit (closed-form lower bounds, before mapping):\n"
                              + b.table(top=12))
