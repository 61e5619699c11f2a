"""The schedule of a core map: everything both emulators derive from it before any input is seen.

:func:`build_schedule` runs once per core map; the reference (NumPy) and the Numba kernel both read the
same :class:`Schedule` (a NamedTuple of int64 arrays, which Numba takes as one argument):

* phases: the phases of every stage with their cores (ascending) and the non-delayed routes those
  cores write at the end of the phase (route order); the delayed routes (written at the end of a step);
* packets: per router-table entry the path of its packets (an entry to a core, or to the host I/O
  port for the core's output taps), and per core its taps (``tp_off``/``tp_neur``) in tap order;
* inputs: per kind (static, step) the feeds (destination axon, column of the packed input matrix)
  and per destination core the number of values and the path from the host;
* per-core constants: bytes per axon value, state bytes per neuron, bytes per weight row and soma
  cycles per lane batch (from the core's neuron model and the chip's timing);
* the path table of the NoC (``emulator/noc.py``, with the links' ranks for the flow model) and the most
  packets and flows one phase can send.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from nmc.coremap import CoreMap, chips_of, in_bytes, input_kind_codes, n_elems, value_bytes
from nmc.neurons import by_code, soma_cycles
from nmc.rules import stage_rounds

from .noc import PathTable, flow_program, grid_shape

__all__ = ["Schedule", "build_schedule", "pack_inputs", "phase_slots", "STAGE_NAMES", "stage_rounds_of",
           "round_boundary_cycles", "round_cycles", "copy_runs"]

STAGE_NAMES = ("static", "step", "readout")


class Schedule(NamedTuple):
    stage_ph: np.ndarray  #: [4] phases of stage s are stage_ph[s]:stage_ph[s+1]
    ph_off: np.ndarray  #: [n_ph+1] cores of phase p: ph_cores[ph_off[p]:ph_off[p+1]]
    ph_cores: np.ndarray
    ph_r_off: np.ndarray  #: [n_ph+1] non-delayed routes written after phase p
    ph_routes: np.ndarray
    dl_routes: np.ndarray  #: delayed routes, written at the end of every step
    #: the kernel's copies as runs (:func:`copy_runs`): list ``l`` is ``cr_off[l]:cr_off[l+1]``, run ``r`` writes
    #: ``axons[cr_dst[r] + j] = src[cr_src[r] + j]`` for ``j < cr_len[r]``, runs in order.  Lists ``0 .. n_ph-1``: the
    #: non-delayed routes of each phase (source: output registers), ``n_ph``: the delayed routes, ``n_ph + 1``: the
    #: step-input feeds (source: a column of the step's packed input row), ``n_ph + 2``: the static-input feeds.
    #: Each list's (destination axon, source) pairs are sorted by destination, stably: two writes to one axon keep
    #: their order, so the last one wins.
    cr_off: np.ndarray
    cr_dst: np.ndarray
    cr_src: np.ndarray
    cr_len: np.ndarray
    ent_path: np.ndarray  #: [E] path of router-table entry e's packets
    tp_off: np.ndarray  #: [C+1] taps of core c: tp_neur[tp_off[c]:tp_off[c+1]]
    tp_neur: np.ndarray
    path_off: np.ndarray
    path_link: np.ndarray
    path_lat: np.ndarray
    path_hops: np.ndarray
    path_cross: np.ndarray
    path_rank: np.ndarray  #: rank of every path position's link (``noc.link_ranks``: the flow model's order)
    max_pkt: int  #: most packets one phase (or input phase) can send
    max_flow: int  #: most slots of one phase: its router entries, or input destination cores
    # the flow model's program (``noc.FlowProgram``) of phases ``0 .. n_ph-1`` and the static (``n_ph``) and step
    # (``n_ph + 1``) input phases: slot ``s`` of a phase is its ``s``-th router entry (cores in phase order, entries
    # in table order) or input destination core (``sp_core``/``tp_core_in`` order)
    pg_s_off: np.ndarray
    pg_s_path: np.ndarray
    pg_g_off: np.ndarray
    pg_v_off: np.ndarray
    pg_v_slot: np.ndarray
    pg_v_prev: np.ndarray
    pg_v_tail: np.ndarray
    pg_v_fin: np.ndarray
    sf_dst: np.ndarray  #: static feeds: destination axon and column of the packed static input matrix
    sf_col: np.ndarray
    sp_core: np.ndarray  #: static input packets: per destination core, values and path from the host
    sp_n: np.ndarray
    sp_path: np.ndarray
    tf_dst: np.ndarray  #: the same for step inputs
    tf_col: np.ndarray
    tp_core_in: np.ndarray
    tp_n_in: np.ndarray
    tp_path_in: np.ndarray
    in_b: np.ndarray  #: [C] bytes per axon value
    st_b: np.ndarray  #: [C] state bytes per neuron
    w_row_b: np.ndarray  #: [C] bytes of one weight row
    soma_cyc: np.ndarray  #: [C] soma cycles per lane batch
    lut_rd: np.ndarray  #: [C] 1 when the core's soma reads its look-up table once per neuron update, else 0


def _i64(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x), dtype=np.int64)


def stage_phases(cm: CoreMap) -> list[list[tuple[int, np.ndarray]]]:
    """Per stage (static, step, readout): ``[(phase, cores ascending), ...]`` for the phases that have cores."""
    st, ph = cm.cores.stage, cm.cores.phase
    out = []
    for s in range(3):
        cores = np.flatnonzero(st == s)
        out.append([(int(p), cores[ph[cores] == p].astype(np.int64)) for p in np.unique(ph[cores])])
    return out


def phase_slots(cm: CoreMap) -> list[tuple[str, str]]:
    """Labels ``(stage, phase)`` of ``RawResult.phase_cycles``' slots: every phase that has cores, in stage
    order (phase = its ``cores.phase``), then ``("static", "input")`` and ``("step", "input")``."""
    out = [(STAGE_NAMES[s], str(p)) for s, phases in enumerate(stage_phases(cm)) for p, _ in phases]
    return out + [("static", "input"), ("step", "input")]


def stage_rounds_of(cm: CoreMap) -> np.ndarray:
    """Rounds of every stage (static, step, readout) as int64 ``[3]`` (``nmc.rules.stage_rounds``)."""
    r = stage_rounds(cm)
    return np.array([r[s] for s in STAGE_NAMES], np.int64)


def round_boundary_cycles(cm: CoreMap) -> int:
    """What one round boundary costs (docs/timing_energy.md, "Rounds"): the barrier that starts the next round
    plus ``timing.round_overhead_cycles``.  The emulators run a stage's phases one after the other as a chip with
    no phase budget does (so outputs, events and phase cycles do not depend on rounds); the cost model adds the
    boundaries."""
    t = cm.chip.timing
    return int(t.barrier_cycles + t.round_overhead_cycles)


def round_cycles(cm: CoreMap, steps: int) -> np.ndarray:
    """Cycles of the round boundaries of one task per stage, int64 ``[3]``: ``(R - 1)`` boundaries of the static
    and readout stages, ``steps * (R - 1)`` of the step stage (every step runs its ``R`` rounds)."""
    n = np.maximum(stage_rounds_of(cm) - 1, 0) * np.array([1, int(steps), 1], np.int64)
    return n * round_boundary_cycles(cm)


def input_columns(cm: CoreMap) -> tuple[dict[int, int], list[int]]:
    """Column of every static/step graph input in its kind's packed matrix, and the matrices' widths."""
    kinds = input_kind_codes(cm)
    col0, ncols = {}, [0, 0]
    for k, inp in enumerate(cm.meta["inputs"]):
        if kinds[k] in (0, 1):
            col0[k] = ncols[kinds[k]]
            ncols[kinds[k]] += n_elems(inp)
    return col0, ncols


def pack_inputs(cm: CoreMap, static: dict, step: dict, B: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """The quantised inputs (graph-input index -> ``[B, n]`` / ``[B, T, n]``) packed into the two matrices the
    schedule's feed columns index: ``S`` ``[B, static columns]`` and ``St`` ``[B, T, step columns]`` (the given
    array itself when it is the only step input, int64 and contiguous: the emulators only read it)."""
    col0, ncols = input_columns(cm)
    S = np.zeros((B, ncols[0]), np.int64)
    for k, v in static.items():
        S[:, col0[k]:col0[k] + v.shape[1]] = v
    whole = [v for k, v in step.items() if col0[k] == 0 and v.shape == (B, T, ncols[1])]
    if len(step) == 1 and whole and whole[0].dtype == np.int64 and whole[0].flags.c_contiguous:
        return S, whole[0]  # one step input with every step column: it is the matrix (not copied; read only)
    St = np.zeros((B, T, ncols[1]), np.int64)
    for k, v in step.items():
        St[:, :, col0[k]:col0[k] + v.shape[2]] = v
    return S, St


def copy_runs(dst, src, off=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Copies ``axons[dst[i]] = values[src[i]]``, done in order ``i = 0, 1, ..``, as runs of consecutive pairs:
    ``(roff, rdst, rsrc, rlen)``, run ``r`` copies ``rlen[r]`` values from ``rsrc[r]`` to ``rdst[r]`` (both + 1 a
    value).  A run is the longest stretch of pairs whose destination and source both grow by 1 from one pair to the
    next, so doing the runs in order does exactly the copies in order (a later write to the same axon still wins).
    ``off`` (default ``[0, len(dst)]``) cuts the pairs into lists ``off[l]:off[l+1]``; no run crosses a list
    boundary, and the runs of list ``l`` are ``roff[l]:roff[l+1]``."""
    dst = np.asarray(dst, np.int64).reshape(-1)
    src = np.asarray(src, np.int64).reshape(-1)
    n = dst.shape[0]
    off = np.array([0, n] if off is None else off, np.int64)
    brk = np.ones(n, bool)
    if n > 1:
        brk[1:] = (dst[1:] != dst[:-1] + 1) | (src[1:] != src[:-1] + 1)
    heads = off[:-1][off[:-1] < n]
    brk[heads] = True  # a list starts a run
    starts = np.flatnonzero(brk)
    rlen = np.diff(np.r_[starts, n]).astype(np.int64)
    roff = np.searchsorted(starts, off, side="left").astype(np.int64)
    return roff, _i64(dst[starts]), _i64(src[starts]), rlen


def build_schedule(cm: CoreMap, skip_axons: np.ndarray | None = None) -> Schedule:
    """The core map's run as arrays (:class:`Schedule`).  ``skip_axons`` ([A] bool, optional): axons the copies as runs
    (``cr_*``) do not write (the Numba kernel's class members, which read their class's first core's axons
    instead: ``kernels._axon_classes``); every other array is the same."""
    chip, c, rt = cm.chip, cm.cores, cm.router
    C = cm.num_cores
    P8 = 8 * chip.noc.packet_payload_bytes
    aer = chip.noc.spike_encoding == "aer"
    in_bits = chip.core.activation_bits
    axon_core = cm.axon_core()
    width, height = grid_shape(chip, chips_of(cm))
    paths = PathTable(chip, width, height)
    out_bits = c.out_bits.astype(np.int64)
    route_src_core = cm.neuron_core()[cm.routes.src]

    phases = stage_phases(cm)
    stage_ph = np.zeros(4, np.int64)
    ph_cores, ph_off = [], [0]
    slot_of_core = np.full(C, -1, np.int64)  # the phase each core runs in (a core runs in one)
    for s in range(3):
        for _, cores in phases[s]:
            slot_of_core[cores] = len(ph_off) - 1
            ph_cores += cores.tolist()
            ph_off.append(len(ph_cores))
        stage_ph[s + 1] = len(ph_off) - 1
    n_ph = len(ph_off) - 1
    nd = cm.routes.delayed == 0
    # the non-delayed routes written after each phase (those of its cores), ascending; and the same as (destination
    # axon, source neuron) pairs sorted by destination within each phase, stably (sequential writes; two routes to
    # one axon keep their order, so the last one wins)
    r_slot = slot_of_core[route_src_core]
    sel = np.flatnonzero(nd & (r_slot >= 0))
    ph_routes = sel[np.argsort(r_slot[sel], kind="stable")]
    ph_r_off = np.concatenate([[0], np.cumsum(np.bincount(r_slot[sel], minlength=n_ph))]).astype(np.int64)
    key = r_slot[ph_routes] * (int(cm.num_axons) + 1) + cm.routes.dst[ph_routes]
    by = ph_routes[np.argsort(key, kind="stable")]
    del key, r_slot, sel
    dl = np.flatnonzero(~nd)
    dl = dl[np.argsort(cm.routes.dst[dl], kind="stable")]

    # output taps per core, in tap order
    tap_core = cm.neuron_core()[cm.taps.src]
    t_order = np.argsort(tap_core, kind="stable")
    tp_off = np.zeros(C + 1, np.int64)
    np.add.at(tp_off, tap_core + 1, 1)
    tp_off = np.cumsum(tp_off)
    n_tap = np.diff(tp_off)

    # router entries: the path of each, and the most packets a core's entries send in one phase
    ent_core = np.repeat(np.arange(C), np.diff(rt.off))
    xy = np.stack([c.x, c.y], axis=1).astype(np.int64)
    dst_xy = np.where((rt.dst >= 0)[:, None], xy[np.maximum(rt.dst, 0)], -1) if rt.dst.size else np.zeros((0, 2), np.int64)
    ent_path = paths.add_many(xy[ent_core], dst_xy)
    n_val = np.where(rt.dst >= 0, np.diff(rt.route_off), n_tap[ent_core] if ent_core.size else 0)
    bits = out_bits[ent_core]
    val_bits = np.where(rt.dst >= 0, bits, 8 * value_bytes(bits))
    max_ent = np.where((bits == 1) & aer, n_val, -(-n_val * val_bits // P8))
    core_pkt = np.zeros(C, np.int64)
    np.add.at(core_pkt, ent_core, max_ent)

    # inputs: feeds per kind, packed columns, per destination core the values from the host
    kinds = input_kind_codes(cm)
    col0, _ = input_columns(cm)
    col0_arr = np.array([col0.get(k, 0) for k in range(len(cm.meta["inputs"]))], dtype=np.int64)
    feed_kind = kinds[cm.feeds.input] if cm.feeds.input.shape[0] else np.zeros(0, np.int64)
    inp = []
    max_pkt = 0
    for kind in (0, 1):
        f = np.flatnonzero(feed_kind == kind)
        f = f[np.argsort(cm.feeds.dst[f], kind="stable")]  # by destination axon (sequential writes)
        dst = cm.feeds.dst[f]
        col = col0_arr[cm.feeds.input[f]] + cm.feeds.elem[f]
        cores, counts = np.unique(axon_core[dst], return_counts=True)
        pth = paths.add_many(np.full((cores.shape[0], 2), -1, np.int64), xy[cores])
        inp.append((_i64(dst), _i64(col), _i64(cores), _i64(counts), _i64(pth)))
        max_pkt = max(max_pkt, int(sum(-(-int(n) * in_bits // P8) for n in counts)))
    for s in range(3):
        for _, cores in phases[s]:
            max_pkt = max(max_pkt, int(core_pkt[cores].sum()))

    models = [by_code(int(m)) for m in c.model]
    path_off, path_link, path_lat, path_hops, path_cross = paths.arrays()
    path_rank = _i64(paths.ranks())
    (sf_dst, sf_col, sp_core, sp_n, sp_path), (tf_dst, tf_col, tpc, tpn, tpp) = inp
    # the copies as runs: each phase's routes, the delayed routes, the step feeds, the static feeds
    c_dst = np.concatenate([cm.routes.dst[by], cm.routes.dst[dl], tf_dst, sf_dst])
    c_src = np.concatenate([cm.routes.src[by], cm.routes.src[dl], tf_col, sf_col])
    c_off = np.concatenate([ph_r_off, ph_r_off[-1] + np.cumsum([dl.shape[0], tf_dst.shape[0], sf_dst.shape[0]])])
    if skip_axons is not None:  # copies into axons the caller reads elsewhere left out (the lists keep their order)
        keep = ~np.asarray(skip_axons, bool)[c_dst]
        c_off = np.concatenate([[0], np.cumsum(keep)])[c_off]
        c_dst, c_src = c_dst[keep], c_src[keep]
    cr_off, cr_dst, cr_src, cr_len = copy_runs(c_dst, c_src, c_off)
    del by, dl
    # the NoC's flow program: per phase its router entries' paths (slot order), then the two input phases
    ph_paths = []
    for ph in range(len(ph_off) - 1):
        cores = np.asarray(ph_cores[ph_off[ph]:ph_off[ph + 1]], np.int64)
        ents = np.concatenate([np.arange(rt.off[k], rt.off[k + 1]) for k in cores]) if cores.size else []
        ph_paths.append(ent_path[np.asarray(ents, np.int64)])
    pg = flow_program(ph_paths + [sp_path, tpp], path_off, path_link, path_lat, path_rank)
    return Schedule(
        stage_ph=stage_ph, ph_off=_i64(ph_off), ph_cores=_i64(ph_cores), ph_r_off=_i64(ph_r_off),
        ph_routes=_i64(ph_routes), dl_routes=_i64(np.flatnonzero(~nd)),
        cr_off=cr_off, cr_dst=cr_dst, cr_src=cr_src, cr_len=cr_len, ent_path=_i64(ent_path), tp_off=_i64(tp_off),
        tp_neur=_i64(cm.taps.src[t_order]), path_off=path_off, path_link=path_link, path_lat=path_lat,
        path_hops=path_hops, path_cross=path_cross, path_rank=path_rank, max_pkt=max(max_pkt, 1),
        max_flow=max(int(np.diff(pg.s_off).max()), 1), pg_s_off=pg.s_off, pg_s_path=pg.s_path, pg_g_off=pg.g_off,
        pg_v_off=pg.v_off, pg_v_slot=pg.v_slot, pg_v_prev=pg.v_prev, pg_v_tail=pg.v_tail, pg_v_fin=pg.v_fin,
        sf_dst=sf_dst, sf_col=sf_col, sp_core=sp_core, sp_n=sp_n, sp_path=sp_path,
        tf_dst=tf_dst, tf_col=tf_col, tp_core_in=tpc, tp_n_in=tpn, tp_path_in=tpp,
        in_b=_i64(in_bytes(cm)), st_b=_i64([m.state_bytes(chip.core) for m in models]),
        w_row_b=_i64(-(-np.diff(c.neuron_off) * c.w_bits.astype(np.int64) // 8)),
        soma_cyc=_i64([soma_cycles(chip, m) for m in models]),
        lut_rd=_i64([int(m.reads_lut(chip.core)) for m in models]),
    )
