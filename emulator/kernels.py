"""The Numba emulator: same semantics as ``emulator/reference.py``, bit for bit, much faster.

:func:`run_numba` (the public driver) validates the core map and the inputs, builds the schedule
(``emulator/schedule.py``, shared with the reference) and calls the private ``@njit`` kernel
:func:`_run` with a few grouped arguments: the network's arrays (:class:`Net`), the schedule, the inputs
and output taps (:class:`IO`), the chip's constants (:class:`ChipConsts`) and the result buffers
(:class:`Buffers`).  The soma of a core runs its neuron model's ``nb_step`` through :func:`_soma`, a
dispatcher generated from the neuron-model registry (``nmc.neurons``), so a new model needs no edit here.
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from nmc.coremap import KGEOM, CoreMap, check_coremap, kblock_overlap_cores, n_elems
from nmc.errors import InputError
from nmc.neurons import MODELS

from . import noc, result, schedule, timing
from ._jit import NJIT, guard_caches
from .noc import noc_program
from .prepare import prepare_inputs
from .result import EVENT_INDEX, EVENT_KINDS, RawResult
from .schedule import build_schedule, pack_inputs
from .timing import cdiv, core_cycles, timing_rows

__all__ = ["run_numba", "check_jobs", "trace_buffers", "TraceBuf", "kernels_compiled"]

_I64_MIN = np.iinfo(np.int64).min
_K = len(EVENT_KINDS)
_MAC, _SOP, _UPD, _SPK, _RD, _WR, _PKT, _HOP, _CROSS, _LUT = (EVENT_INDEX[k] for k in (
    "mac", "sop", "neuron_update", "spike", "sram_read_bytes", "sram_write_bytes", "packet", "hop", "chip_crossing",
    "lut_read"))


class Net(NamedTuple):
    """The core map's arrays the kernel reads (int64 unless noted)."""

    n_off: np.ndarray
    a_off: np.ndarray
    w_off: np.ndarray
    weights: np.ndarray  #: int8
    dend: np.ndarray
    spike_in: np.ndarray
    model: np.ndarray
    out_bits: np.ndarray
    out_lo: np.ndarray
    out_hi: np.ndarray
    cparam: np.ndarray  #: [C, P]
    bias: np.ndarray
    nparam: np.ndarray  #: [N, Q]
    state_init: np.ndarray  #: [N, S]
    axon_init: np.ndarray
    route_src: np.ndarray
    route_dst: np.ndarray
    rt_off: np.ndarray
    rt_dst: np.ndarray
    rt_route_off: np.ndarray
    sparse: np.ndarray  #: [C] how the dendrite reads its weights: 0 dense block, 1 rows of nonzeros (below), 2 one
    #: nonzero per row (a merge core: axon a's weight is row_col/row_w[row_off[a]]), 3 kernels
    row_off: np.ndarray  #: [A+1] nonzero weights of axon a (global index) of a sparse core: row_off[a]:row_off[a+1]
    row_col: np.ndarray  #: int32 neuron index within the core
    row_w: np.ndarray  #: int64 weight
    kb_off: np.ndarray  #: [C+1] kernel blocks of a shared-kernel core (sparse == 3): kb_off[c]:kb_off[c+1]
    kb_geom: np.ndarray  #: [K, G] nmc.coremap.KGEOM
    kb_w: np.ndarray  #: [K] its kernel at weights[kb_w[k]:]
    kb_ax_off: np.ndarray  #: [K+1] its patch map kb_ax[kb_ax_off[k]:kb_ax_off[k+1]] (core-local axon or -1)
    kb_ax: np.ndarray
    ent_whole: np.ndarray  #: [E] 1: router entry e's routes read every neuron of its core once (AER: one count a core)
    ev_cls: np.ndarray  #: [C] the event-list class of a dense mac core (:func:`_axon_classes`), or -1
    ev_off: np.ndarray  #: [K+1] class k's event list at ev_buf[ev_off[k]:ev_off[k+1]] (its cores' axon count)
    ev_a0: np.ndarray  #: [K] the first axon of class k's first core: the axons its cores read (see _run)


class IO(NamedTuple):
    has_static: bool
    has_step: bool
    S: np.ndarray  #: [B, static columns] quantised static inputs
    St: np.ndarray  #: [B, T, step columns] quantised step inputs
    once_src: np.ndarray  #: neurons recorded once (static / readout outputs), and their stage
    once_stage: np.ndarray
    step_src: np.ndarray  #: neurons recorded after every step


class ChipConsts(NamedTuple):
    acc_bits: int
    mem_bits: int
    beta_shift: int
    overhead: int
    axon_bw: int
    weight_bw: int
    spike_dense: bool
    mac_rows: int
    mac_cols: int
    soma_lanes: int
    barrier: int
    payload: int
    aer: bool
    in_bits: int


class Buffers(NamedTuple):
    """Per-sample result buffers.  The kernel runs steps ``t0 .. t1-1`` of a task per call (a chunk):
    ``rec_step`` and ``step_cycles`` hold the chunk's steps (index ``t - t0``); the rest accumulate over the
    chunks of a task (``out_reg``: the output registers, kept between chunks)."""

    rec_once: np.ndarray
    rec_step: np.ndarray
    state_final: np.ndarray
    axon_final: np.ndarray
    events: np.ndarray
    core_cycles: np.ndarray
    stage_cycles: np.ndarray
    step_cycles: np.ndarray
    phase_cycles: np.ndarray
    phase_compute: np.ndarray
    out_reg: np.ndarray  #: [B, N] output registers


class TraceBuf(NamedTuple):
    """What the kernel records for a timeline (``emulator/trace.py``) of one sample: rows are the static
    stage (0), steps ``0 .. steps-1`` (``1 + t``) and the readout stage (``steps + 1``); columns are the
    slots of ``RawResult.phase_cycles``.  ``sample < 0``: nothing is recorded."""

    sample: int  #: the sample (index within the kernel call), or -1
    steps: int  #: steps recorded
    ph: np.ndarray  #: [R, P] phase latency (cycles) of every phase run in row r
    cmax: np.ndarray  #: [R, P] its slowest core's compute cycles
    last: np.ndarray  #: [R, P] its last packet delivery (cycles after the phase began)
    core: np.ndarray  #: [R, C] compute cycles of every core in row r
    fo: np.ndarray  #: [R, P] the phase's flows: flows[fo:fo + fn]
    fn: np.ndarray
    flows: np.ndarray  #: [F, 3] ready, path, packets of every flow (in packet-id order)
    nflow: np.ndarray  #: [1] flows recorded


def no_trace() -> TraceBuf:
    """A trace buffer that records nothing (same Numba types as a real one: no second compilation)."""
    z = np.zeros((1, 1), np.int64)
    return TraceBuf(-1, 0, z, z, z, z, z, z, np.zeros((1, 3), np.int64), np.zeros(1, np.int64))


@njit(inline="always", **NJIT)
def _trace_phase(tr, row, slot, pc, cmax, last, npk, f_ready, s_path, f_n):
    """Record phase ``slot``'s latency and its flows: the slots ``0 .. npk-1`` that sent packets (path
    ``s_path[i]``)."""
    tr.ph[row, slot] = pc
    tr.cmax[row, slot] = cmax
    tr.last[row, slot] = last
    f0 = tr.nflow[0]
    tr.fo[row, slot] = f0
    nf = 0
    for i in range(npk):
        if f_n[i] > 0:
            tr.flows[f0 + nf, 0] = f_ready[i]
            tr.flows[f0 + nf, 1] = s_path[i]
            tr.flows[f0 + nf, 2] = f_n[i]
            nf += 1
    tr.fn[row, slot] = nf
    tr.nflow[0] = f0 + nf


# --------------------------------------------------------------------------- soma dispatch
def _make_soma():
    """``_soma(code, n0, nn, acc, state, nparam, cparam, c, ...)``: call the ``nb_step`` of the neuron model with that
    code, with core ``c``'s parameters ``cparam[c]`` (generated from the registry).

    A function of its own without reference counting (``_nrt=False``), called by ``_run``: inlined (it was
    ``inline="always"``), its array arguments became variables of ``_run``, each counted up and down (atomically) at
    every call, and so was the row ``cparam[c]``: about 1,600 of the 1,900 count updates per step of
    benchmarks/bench_emulator.py (``NUMBA_DEBUG_NRT``), about 8% of its time.  The models' steps count none either
    when they are compiled with ``neurons._int.NJIT_STEP``."""
    args = "n0, nn, acc, state, nparam, cp, lo, hi, mem_bits, beta_shift, out"
    lines = ["def _soma(code, n0, nn, acc, state, nparam, cparam, c, lo, hi, mem_bits, beta_shift, out):",
             "    cp = cparam[c]"]
    env = {}
    for m in MODELS.values():
        env[f"step_{m.code}"] = m.nb_step
        lines.append(f"    if code == {m.code}:\n        return step_{m.code}({args})")
    lines.append("    return 0")
    exec(compile("\n".join(lines), f"<nmc soma dispatch of {len(MODELS)} neuron models>", "exec"), env)
    return njit(nogil=True, _nrt=False)(env["_soma"])  # not cached itself: _run, which calls it, is


_soma = _make_soma()


# --------------------------------------------------------------------------- kernels
@intrinsic
def _prefetch(typingctx, arr, idx):
    """Hint the CPU to fetch ``arr[idx]``'s cache line (LLVM's ``llvm.prefetch``: read, high locality); no
    effect on results."""
    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.void(arr, idx), codegen


# Performance note: every array taken out of a NamedTuple, and every slice, costs Numba two atomic reference
# count updates; in the loops below that was about half of the run time.  So ``_run`` unpacks the
# NamedTuples' arrays into locals once and indexes the flat arrays with offsets (no per-row slices).
# The same holds for a helper taking arrays, even one inlined (``inline="always"``), and for a variable assigned
# one array or another in a loop: the packets of a router entry (a flow) are therefore written out where made
# (measured: kernel CPU time 0.355-0.362 s -> 0.330-0.338 s on benchmarks/bench_emulator.py).
@njit(**NJIT)
def _kblock(g, weights, w0, kb_ax, x0, axons, a0, acc, mac):
    """Add one kernel block's taps (nmc.coremap module doc) to ``acc``: ``x * w`` for a mac dendrite, the largest
    ``x`` of a nonzero weight for a max dendrite.  The dense block of a core whose blocks read distinct axons
    holds exactly these taps, one per weight (``_net`` expands the others), so the result is the same."""
    tc, th, tw, kc, kh, kw, pc, ph, pw = g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8]
    sh, sw, dh, dw, co_g, ci_g, oc0, kc0, pc0 = g[9], g[10], g[11], g[12], g[13], g[14], g[15], g[16], g[17]
    for t in range(tc):
        cb = ((oc0 + t) // co_g) * ci_g + kc0 - pc0
        for kk in range(kc):
            pci = cb + kk
            if pci < 0 or pci >= pc:
                continue
            for ky in range(kh):
                for kx in range(kw):
                    w = np.int64(weights[w0 + ((t * kc + kk) * kh + ky) * kw + kx])
                    if w == 0:
                        continue
                    for ty in range(th):
                        r0 = x0 + (pci * ph + ty * sh + ky * dh) * pw + kx * dw
                        s0 = (t * th + ty) * tw
                        for tx in range(tw):
                            a = kb_ax[r0 + tx * sw]
                            if a >= 0:
                                x = axons[a0 + a]
                                if mac:
                                    acc[s0 + tx] += w * x
                                elif x > acc[s0 + tx]:
                                    acc[s0 + tx] = x


@njit(**NJIT)
def _run(B, T, t0, t1, net, sch, io, k, res, tr):
    """Run steps ``t0 .. t1-1`` of ``B`` tasks of ``T`` steps: the static stage when ``t0 == 0`` (after a
    reset), the readout stage when ``t1 == T``; state, axons and output registers carry over between calls.

    Core ``c`` of a phase: the dendrite (mac: bias plus the weight rows of its nonzero axons, saturated to the
    accumulator; max: the largest input over the axons with a nonzero weight), then the soma (its neuron
    model's ``nb_step``), its events, and its compute cycles (``timing.core_cycles``)."""
    (n_off, a_off, w_off, weights, dend, spike_in, model, out_bits, out_lo, out_hi, cparam, bias, nparam,
     state_init, axon_init, route_src, route_dst, rt_off, rt_dst, rt_route_off, sparse, row_off, row_col,
     row_w, kb_off, kb_geom, kb_w, kb_ax_off, kb_ax, ent_whole, ev_cls, ev_off, ev_a0) = net
    ph_off, ph_cores = sch.ph_off, sch.ph_cores
    cr_off, cr_dst, cr_src, cr_len = sch.cr_off, sch.cr_dst, sch.cr_src, sch.cr_len
    ent_path, tp_off, tp_neur, stage_ph = sch.ent_path, sch.tp_off, sch.tp_neur, sch.stage_ph
    path_hops, path_cross = sch.path_hops, sch.path_cross
    pg_s_off, pg_s_path, pg_g_off, pg_v_off = sch.pg_s_off, sch.pg_s_path, sch.pg_g_off, sch.pg_v_off
    pg_v_slot, pg_v_prev, pg_v_tail, pg_v_fin = sch.pg_v_slot, sch.pg_v_prev, sch.pg_v_tail, sch.pg_v_fin
    in_b, st_b, w_row_b, soma_cyc, lut_rd = sch.in_b, sch.st_b, sch.w_row_b, sch.soma_cyc, sch.lut_rd
    sp_core, sp_n, sp_path = sch.sp_core, sch.sp_n, sch.sp_path
    tp_core_in, tp_n_in, tp_path_in = sch.tp_core_in, sch.tp_n_in, sch.tp_path_in
    S_in, St_in, once_src, once_stage, step_src = io.S, io.St, io.once_src, io.once_stage, io.step_src
    rec_once, rec_step, state_fin, axon_fin, events = res.rec_once, res.rec_step, res.state_final, res.axon_final, res.events
    core_cyc, stage_cyc, step_cyc, phase_cyc, phase_comp = (res.core_cycles, res.stage_cycles, res.step_cycles,
                                                            res.phase_cycles, res.phase_compute)
    out_reg = res.out_reg
    mem_bits, beta_shift, overhead, axon_bw = k.mem_bits, k.beta_shift, k.overhead, k.axon_bw
    weight_bw, spike_dense = k.weight_bw, k.spike_dense
    mac_rows, mac_cols, soma_lanes, barrier = k.mac_rows, k.mac_cols, k.soma_lanes, k.barrier
    amax = (np.int64(1) << (k.acc_bits - 1)) - 1
    amin = -(np.int64(1) << (k.acc_bits - 1))
    C = n_off.shape[0] - 1
    n_ph = ph_off.shape[0] - 1
    max_nn = 1
    max_na = 1
    for c in range(C):
        max_nn = max(max_nn, n_off[c + 1] - n_off[c])
        max_na = max(max_na, a_off[c + 1] - a_off[c])
    acc = np.zeros(max_nn, np.int64)
    # the nonzero axons (event list) of a dense mac core: of its class (shared by the cores of one phase whose axons
    # hold the same values, see _axon_classes), built by the first of them in each phase run, or (class -1) in the
    # scratch list at the end
    ev_scr = np.uint64(ev_off[ev_off.shape[0] - 1])
    ev_buf = np.zeros(ev_off[ev_off.shape[0] - 1] + max_na + 1, np.int64)
    ev_nz = np.zeros(max(ev_off.shape[0] - 1, 1), np.int64)
    ev_stamp = np.full(max(ev_off.shape[0] - 1, 1), -1, np.int64)  # the phase run (ps) that built the class's list
    ps = 0
    comp = np.zeros(C, np.int64)
    f_ready = np.zeros(sch.max_flow, np.int64)  # a phase's slots (noc.FlowProgram): ready time and packets
    f_n = np.zeros(sch.max_flow, np.int64)
    fw = np.zeros((8, sch.max_flow), np.int64)
    tbuf = np.zeros(sch.max_pkt, np.int64)
    cnt = np.zeros(2 * sch.max_pkt + 64, np.int64)  # noc.sort_span_for(sch.max_pkt)
    deliver = np.zeros(1, np.int64)
    P8 = 8 * k.payload
    in_bits, aer = k.in_bits, k.aer
    for b in range(B):
        state = state_fin[b]
        axons = axon_fin[b]
        ev = events[b]
        out = out_reg[b]
        if t0 == 0:
            state[:, :] = state_init
            axons[:] = axon_init
            out[:] = 0
        for s in range(3):
            if (s == 0 and t0 != 0) or (s == 2 and t1 != T):
                continue
            ta = 0 if s != 1 else t0
            tb = 1 if s != 1 else t1
            total = 0
            for t in range(ta, tb):
                cyc = 0
                row = -1
                if b == tr.sample:
                    row = 0 if s == 0 else (tr.steps + 1 if s == 2 else (1 + t if t < tr.steps else -1))
                # ---- input phase (NoC only)
                if (s == 0 and io.has_static) or (s == 1 and io.has_step):
                    npk = 0
                    if s == 0:
                        for q in range(cr_off[n_ph + 2], cr_off[n_ph + 3]):  # the static feeds, as runs
                            d = np.uint64(cr_dst[np.uint64(q)])
                            o = np.uint64(cr_src[np.uint64(q)])
                            for j in range(np.uint64(cr_len[np.uint64(q)])):
                                axons[d + j] = S_in[b, o + j]
                        for q in range(sp_core.shape[0]):
                            n = cdiv(sp_n[q] * in_bits, P8)
                            pth = sp_path[q]
                            f_ready[npk] = 0  # slot q: n packets ready at 0 on path pth, charged to core c
                            f_n[npk] = n
                            npk += 1
                            c = sp_core[q]
                            ev[c, _PKT] += n
                            ev[c, _HOP] += n * path_hops[pth]
                            ev[c, _CROSS] += n * path_cross[pth]
                    else:
                        tt = t - t0
                        for q in range(cr_off[n_ph + 1], cr_off[n_ph + 2]):  # the step feeds, as runs
                            d = np.uint64(cr_dst[np.uint64(q)])
                            o = np.uint64(cr_src[np.uint64(q)])
                            for j in range(np.uint64(cr_len[np.uint64(q)])):
                                axons[d + j] = St_in[b, tt, o + j]
                        for q in range(tp_core_in.shape[0]):
                            n = cdiv(tp_n_in[q] * in_bits, P8)
                            pth = tp_path_in[q]
                            f_ready[npk] = 0
                            f_n[npk] = n
                            npk += 1
                            c = tp_core_in[q]
                            ev[c, _PKT] += n
                            ev[c, _HOP] += n * path_hops[pth]
                            ev[c, _CROSS] += n * path_cross[pth]
                    last = noc_program(n_ph + s, npk, f_ready, f_n, pg_g_off, pg_v_off, pg_v_slot, pg_v_prev,
                                       pg_v_tail, pg_v_fin, fw, tbuf, cnt, deliver, False)
                    cyc += last + barrier
                    phase_cyc[b, n_ph + s] += last + barrier
                    if row >= 0:
                        _trace_phase(tr, row, n_ph + s, last + barrier, 0, last, npk, f_ready,
                                     pg_s_path[pg_s_off[n_ph + s]:], f_n)
                # ---- the stage's phases
                for ph in range(stage_ph[s], stage_ph[s + 1]):
                    cmax = 0
                    ps += 1
                    for q in range(ph_off[ph], ph_off[ph + 1]):
                        c = ph_cores[q]
                        # -- the dendrite of core c
                        n0 = n_off[c]
                        nn = n_off[c + 1] - n0
                        a0 = a_off[c]
                        na = a_off[c + 1] - a0
                        w0 = w_off[c]
                        nz = 0
                        if sparse[c] == 3:  # shared kernels: each block's taps, as the dense block would add them
                            mac = dend[c] == 0
                            for j in range(nn):
                                acc[j] = bias[n0 + j] if mac else _I64_MIN
                            for i in range(na):
                                nz += axons[a0 + i] != 0
                            for kb in range(kb_off[c], kb_off[c + 1]):
                                _kblock(kb_geom[kb], weights, kb_w[kb], kb_ax, kb_ax_off[kb], axons, a0, acc, mac)
                            if mac:
                                for j in range(nn):
                                    acc[j] = min(max(acc[j], amin), amax)
                        elif dend[c] == 0:  # mac
                            for j in range(nn):
                                acc[j] = bias[n0 + j]
                            if sparse[c] == 2:  # one nonzero weight per axon (a merge core): no loop per row
                                r0 = np.uint64(row_off[a0])
                                ua0 = np.uint64(a0)  # (unsigned indices: no negative-index wraparound code)
                                for i in range(na):
                                    x = axons[ua0 + np.uint64(i)]
                                    nz += x != 0
                                    r = r0 + np.uint64(i)
                                    acc[np.uint64(row_col[r])] += x * row_w[r]
                            elif sparse[c]:  # few nonzero weights: visit only those; same sum
                                for i in range(na):
                                    x = axons[a0 + i]
                                    if x != 0:
                                        nz += 1
                                        for r in range(row_off[a0 + i], row_off[a0 + i + 1]):
                                            acc[row_col[r]] += x * row_w[r]
                            else:
                                # the nonzero axons first (an event list, without a branch per axon), a request for
                                # each of their rows, then the rows: the rows are scattered cache lines, whose misses
                                # cost more than the additions (measured: 8% of the kernel's time on the bench)
                                kc = ev_cls[c]
                                eo = np.uint64(ev_off[kc]) if kc >= 0 else ev_scr
                                # a class's cores read the axons of its first core (the others' are not written
                                # during the run, see the end of this function)
                                xa = ev_a0[kc] if kc >= 0 else a0
                                if kc < 0 or ev_stamp[kc] != ps:
                                    ua0 = np.uint64(xa)
                                    for i in range(na):
                                        ev_buf[eo + np.uint64(nz)] = i
                                        nz += axons[ua0 + np.uint64(i)] != 0
                                    if kc >= 0:
                                        ev_stamp[kc] = ps
                                        ev_nz[kc] = nz
                                else:  # a core of this phase with the same axon values built it
                                    nz = ev_nz[kc]
                                for u in range(nz):
                                    _prefetch(weights, np.uint64(w0 + ev_buf[eo + np.uint64(u)] * nn))
                                for u in range(nz):
                                    i = ev_buf[eo + np.uint64(u)]
                                    x = axons[xa + i]
                                    # unsigned offsets: no negative-index wraparound, so contiguous vector loads
                                    o = np.uint64(w0 + i * nn)
                                    if x == 1:  # a spike: add the row
                                        for j in range(nn):
                                            acc[j] += weights[o + np.uint64(j)]
                                    else:
                                        for j in range(nn):
                                            acc[j] += x * weights[o + np.uint64(j)]
                            for j in range(nn):
                                acc[j] = min(max(acc[j], amin), amax)
                        else:  # max over axons with a nonzero weight
                            for j in range(nn):
                                acc[j] = _I64_MIN
                            for i in range(na):
                                x = axons[a0 + i]
                                if x != 0:
                                    nz += 1
                                o = w0 + i * nn
                                for j in range(nn):
                                    if weights[o + j] != 0 and x > acc[j]:
                                        acc[j] = x
                        # -- the soma, the events, the cycles
                        spiking = spike_in[c] != 0
                        rows = nz if spiking else na
                        nspk = _soma(model[c], n0, nn, acc, state, nparam, cparam, c, out_lo[c], out_hi[c],
                                     mem_bits, beta_shift, out)
                        bits = out_bits[c]
                        if spiking:
                            ev[c, _SOP] += rows * nn
                        else:
                            ev[c, _MAC] += na * nn
                        ev[c, _UPD] += nn
                        if bits == 1:
                            ev[c, _SPK] += nspk
                        ev[c, _RD] += rows * w_row_b[c] + na * in_b[c] + nn * st_b[c]
                        ev[c, _WR] += nn * st_b[c] + nn * ((bits + 7) // 8)
                        ev[c, _LUT] += nn * lut_rd[c]
                        cc = core_cycles(overhead, na, in_b[c], axon_bw, timing_rows(spiking, nz, na, spike_dense),
                                         mac_rows, nn, mac_cols, soma_lanes, soma_cyc[c], w_row_b[c], weight_bw)
                        comp[c] = cc
                        core_cyc[b, c] += cc
                        if row >= 0:
                            tr.core[row, c] = cc
                        cmax = max(cmax, cc)
                    npk = 0
                    for q in range(ph_off[ph], ph_off[ph + 1]):
                        c = ph_cores[q]
                        bits = out_bits[c]
                        aer_spikes = bits == 1 and aer
                        nzc = -1  # the core's nonzero outputs, counted once for its entries that send them all
                        pk = 0
                        hp = 0
                        cr = 0
                        for e in range(rt_off[c], rt_off[c + 1]):
                            # packets: one per nonzero spike under AER, else the values packed P8 bits a packet
                            if rt_dst[e] >= 0:
                                i0, i1, vb = rt_route_off[e], rt_route_off[e + 1], bits
                            else:  # the host port: output taps, 1 byte per 1- or 8-bit value, 4 per 32-bit value
                                i0, i1, vb = tp_off[c], tp_off[c + 1], 8 * ((bits + 7) // 8)
                            if aer_spikes:  # (two loops: an array chosen at run time costs reference counting)
                                n = 0
                                if ent_whole[e] != 0:
                                    if nzc < 0:
                                        nzc = 0
                                        for j in range(n_off[c], n_off[c + 1]):
                                            nzc += out[np.uint64(j)] != 0
                                    n = nzc
                                elif rt_dst[e] >= 0:
                                    for r in range(i0, i1):
                                        n += out[np.uint64(route_src[np.uint64(r)])] != 0
                                else:
                                    for r in range(i0, i1):
                                        n += out[np.uint64(tp_neur[np.uint64(r)])] != 0
                            else:
                                n = cdiv((i1 - i0) * vb, P8)
                            pth = ent_path[e]
                            f_ready[npk] = comp[c]  # the phase's slot npk (noc.FlowProgram)
                            f_n[npk] = n
                            npk += 1
                            pk += n
                            hp += n * path_hops[pth]
                            cr += n * path_cross[pth]
                        ev[c, _PKT] += pk
                        ev[c, _HOP] += hp
                        ev[c, _CROSS] += cr
                    last = noc_program(ph, npk, f_ready, f_n, pg_g_off, pg_v_off, pg_v_slot, pg_v_prev, pg_v_tail,
                                       pg_v_fin, fw, tbuf, cnt, deliver, False)
                    for q in range(cr_off[ph], cr_off[ph + 1]):  # the routes as runs (schedule.copy_runs)
                        # (indices are never negative: unsigned, no wraparound checks)
                        d = np.uint64(cr_dst[np.uint64(q)])
                        o = np.uint64(cr_src[np.uint64(q)])
                        for j in range(np.uint64(cr_len[np.uint64(q)])):
                            axons[d + j] = out[o + j]
                    pc = max(cmax, last) + barrier
                    cyc += pc
                    phase_cyc[b, ph] += pc
                    phase_comp[b, ph] += cmax
                    if row >= 0:
                        _trace_phase(tr, row, ph, pc, cmax, last, npk, f_ready, pg_s_path[pg_s_off[ph]:], f_n)
                if s == 1:
                    for q in range(cr_off[n_ph], cr_off[n_ph + 1]):  # the delayed routes, as runs
                        d = np.uint64(cr_dst[np.uint64(q)])
                        o = np.uint64(cr_src[np.uint64(q)])
                        for j in range(np.uint64(cr_len[np.uint64(q)])):
                            axons[d + j] = out[o + j]
                    step_cyc[b, t - t0] = cyc
                    for j in range(step_src.shape[0]):
                        rec_step[b, t - t0, j] = out[step_src[j]]
                total += cyc
            stage_cyc[b, s] += total
            if s != 1:
                for j in range(once_src.shape[0]):
                    if once_stage[j] == s:
                        rec_once[b, j] = out[once_src[j]]
        # the axons of a class's other cores, which the run did not write (build_schedule(skip_axons=)): the values
        # of its first core's, which their writers gave the same values at the same times
        for c in range(C):
            kc = ev_cls[c]
            if kc >= 0 and ev_a0[kc] != a_off[c]:
                u_src = np.uint64(ev_a0[kc])
                u_dst = np.uint64(a_off[c])
                for j in range(np.uint64(a_off[c + 1] - a_off[c])):
                    axons[u_dst + j] = axons[u_src + j]


# every cached function the kernels inline: the neuron models' steps, the NoC model, the cycle formula
guard_caches([sys.modules[name] for name in sorted(sys.modules) if name.startswith("nmc.neurons.")]
             + [noc, timing, schedule, result, sys.modules[__name__]])


# --------------------------------------------------------------------------- driver
def _i64(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.int64)


#: a mac core whose share of nonzero weights is below this reads them as rows of nonzeros
SPARSE_DENSITY = 0.25


def _sparse_rows(cm: CoreMap, dense: tuple[np.ndarray, np.ndarray] | None = None, native: np.ndarray | None = None):
    """``(sparse [C], row_off [A+1], row_col, row_w)``: the nonzero weights, row by row, of the mac cores
    whose density is below :data:`SPARSE_DENSITY` (the rows of the other cores are empty; ``sparse`` is 2 for a
    core with exactly one nonzero weight in every row, else 1); ``dense``: the ``(data, w_off)`` of the cores' dense
    blocks (default: :meth:`CoreMap.dense_weights`); ``native``: [C] the shared-kernel cores the kernel reads as
    kernels (they have no dense block; ``sparse`` 3).

    It runs before every run, so the work per core is one NumPy call: each candidate block's nonzeros counted
    (``count_nonzero``), each sparse block searched (``flatnonzero``, row-major as ``np.nonzero``); rows, columns,
    weights and the one-per-row test are then computed for all sparse cores at once.  (Measured on the bench map:
    one ``reduceat`` over all blocks, or one search over the sparse blocks gathered into one array, was slower.)"""
    data, w_off = cm.dense_weights() if dense is None else dense
    c = cm.cores
    C, A = cm.num_cores, cm.num_axons
    sparse = np.zeros(C, np.int64)
    if native is not None:
        sparse[native] = 3
    na, nn = np.diff(c.axon_off).astype(np.int64), np.diff(c.neuron_off).astype(np.int64)
    size = na * nn
    cand = np.flatnonzero((sparse == 0) & (c.dendrite == 0) & (size > 0))
    counts = np.zeros(A + 1, np.int64)
    empty = (sparse, np.cumsum(counts), np.zeros(0, np.int32), np.zeros(0, np.int64))
    if not cand.size:
        return empty
    # nonzeros of each candidate block [w0, w0 + size)
    w0 = np.asarray(w_off, np.int64)[cand]
    w1 = w0 + size[cand]
    nnz = np.array([np.count_nonzero(data[a:b]) for a, b in zip(w0.tolist(), w1.tolist())], np.int64)
    sp = nnz < SPARSE_DENSITY * size[cand]
    ks, s0, sz = cand[sp], w0[sp], size[cand][sp]
    if not ks.size:
        return empty
    # the sparse blocks' nonzeros, core by core, row-major (as each block's np.nonzero)
    loc = [np.flatnonzero(data[a:a + n]) for a, n in zip(s0.tolist(), sz.tolist())]
    kk = np.repeat(np.arange(ks.size), [x.shape[0] for x in loc])  # which sparse core
    loc = np.concatenate(loc)
    w = data[s0[kk] + loc]
    nnk = nn[ks][kk]
    r = loc // nnk
    gax = c.axon_off[ks][kk].astype(np.int64) + r  # global axon of each nonzero
    per_ax = np.bincount(gax, minlength=A)
    counts[1:] = per_ax
    # sparse 2: every row (axon) of the core holds exactly one nonzero
    ax_core = np.repeat(np.arange(ks.size), na[ks])
    ax_glob = np.repeat(c.axon_off[ks].astype(np.int64), na[ks]) + (np.arange(int(na[ks].sum())) -
                                                                    np.repeat(np.cumsum(na[ks]) - na[ks], na[ks]))
    not_one = np.bincount(ax_core, weights=per_ax[ax_glob] != 1, minlength=ks.size)
    sparse[ks] = np.where(not_one == 0, 2, 1)
    return sparse, np.cumsum(counts), (loc - r * nnk).astype(np.int32), w.astype(np.int64)


def shared_kernel_cores(cm: CoreMap) -> np.ndarray:
    """[C] the shared-kernel cores the kernel reads as kernels (no dense block): those whose blocks read distinct
    axons, so that every weight of the dense block is one tap.  The others (:func:`nmc.coremap.kblock_overlap_cores`:
    taps of two blocks may add up on one weight) are expanded to dense blocks, as the reference expands them."""
    return (cm.cores.w_fmt == 1) & ~kblock_overlap_cores(cm)


def _weights(cm: CoreMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(data, w_off, native)``: the core map's weights with the dense blocks of the shared-kernel cores that are
    not read as kernels appended (``w_off[c]``: where core c's dense block of ``n_axons x n_neurons`` starts), and the
    cores read as kernels [C]."""
    c = cm.cores
    native = shared_kernel_cores(cm)
    expand = np.flatnonzero((c.w_fmt == 1) & ~native)
    if not expand.size:
        return cm.weights.data, c.w_off, native
    w_off = np.array(c.w_off, np.int64)
    blocks, at = [], int(cm.weights.data.shape[0])
    for k in expand:
        blocks.append(cm.core_weights(int(k)).reshape(-1))
        w_off[k] = at
        at += blocks[-1].shape[0]
    return np.concatenate([cm.weights.data] + blocks).astype(np.int8, copy=False), w_off, native


def _net(cm: CoreMap) -> Net:
    c, n, kb = cm.cores, cm.neurons, cm.kblocks
    data, w_off, native = _weights(cm)  # shared-kernel cores are read as kernels (no dense blocks), see _kblock
    sparse, row_off, row_col, row_w = _sparse_rows(cm, (data, w_off), native)
    kb_off = np.searchsorted(kb.core, np.arange(cm.num_cores + 1)).astype(np.int64)
    # router entries (to a core) whose routes read every neuron of their core exactly once
    rt, E = cm.router, cm.router.dst.shape[0]
    cnt = np.diff(rt.route_off)
    ent_core = np.repeat(np.arange(cm.num_cores, dtype=np.int64), np.diff(rt.off))
    n0, nn = c.neuron_off[:-1][ent_core], np.diff(c.neuron_off)[ent_core]
    re = np.repeat(np.arange(E, dtype=np.int64), cnt)
    src = cm.routes.src[np.repeat(rt.route_off[:-1] - (np.cumsum(cnt) - cnt), cnt) + np.arange(cnt.sum())]
    outside = np.bincount(re, weights=(src < n0[re]) | (src >= n0[re] + nn[re]), minlength=E)
    cand = (rt.dst >= 0) & (cnt == nn) & (outside == 0)  # as many routes as neurons, all of the core's
    # ... and each neuron once: every neuron of the core hit (counted in a slot per candidate entry and neuron)
    base = np.cumsum(np.where(cand, nn, 0)) - np.where(cand, nn, 0)
    on = cand[re]
    hits = np.bincount((base[re] + src - n0[re])[on], minlength=int(np.where(cand, nn, 0).sum()))
    slot_ent = np.repeat(np.arange(E, dtype=np.int64), np.where(cand, nn, 0))
    missed = np.bincount(slot_ent, weights=hits == 0, minlength=E)
    ent_whole = (cand & (missed == 0)).astype(np.int64)
    ev_cls, ev_off, ev_a0 = _axon_classes(cm, (sparse == 0) & (c.dendrite == 0))
    return Net(n_off=_i64(c.neuron_off), a_off=_i64(c.axon_off), w_off=_i64(w_off),
               weights=np.ascontiguousarray(data, dtype=np.int8), dend=_i64(c.dendrite),
               spike_in=_i64(c.spike_in), model=_i64(c.model), out_bits=_i64(c.out_bits), out_lo=_i64(c.out_lo),
               out_hi=_i64(c.out_hi), cparam=_i64(c.param), bias=_i64(n.bias), nparam=_i64(n.param),
               state_init=_i64(n.state_init), axon_init=_i64(cm.axons.init), route_src=_i64(cm.routes.src),
               route_dst=_i64(cm.routes.dst), rt_off=_i64(cm.router.off), rt_dst=_i64(cm.router.dst),
               rt_route_off=_i64(cm.router.route_off), sparse=sparse, row_off=row_off, row_col=row_col, row_w=row_w,
               kb_off=kb_off, kb_geom=_i64(kb.geom.reshape(-1, len(KGEOM))), kb_w=_i64(kb.w_off),
               kb_ax_off=_i64(kb.ax_off), kb_ax=np.ascontiguousarray(cm.kpatch.ax, dtype=np.int32),
               ent_whole=ent_whole, ev_cls=ev_cls, ev_off=ev_off, ev_a0=ev_a0)


def _axon_classes(cm: CoreMap, dense_mac: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ev_cls [C], ev_off [K+1], ev_a0 [K])``: classes of the dense mac cores (``dense_mac`` [C]) whose axons
    always hold the same values, axon for axon, within a phase: same axon count and, for every axon, the same initial value and the
    same single writer (a route from one source neuron, delayed or not, or an input feed of one input element) or
    none.  Then the axons of two such cores were written by the same writes of the same values, so while a phase
    runs (no axon is written until its cores are done) their nonzero axons, the event list, are the same: the
    kernel builds it once per class and phase run.  A core with an axon of two or more writers, and a core alike
    to no other, gets -1 (its own list, each time).  ``ev_a0[k]``: the first axon of class k's first core, whose axons
    the kernel reads for all of them (so the copies into the others' axons can be left out of the run)."""
    c = cm.cores
    C, A = cm.num_cores, cm.num_axons
    ev_cls = np.full(C, -1, np.int64)
    na = np.diff(c.axon_off).astype(np.int64)
    cores = np.flatnonzero(dense_mac & (na > 0) & (np.diff(c.neuron_off) > 0))
    if cores.size < 2:
        return ev_cls, np.zeros(1, np.int64), np.zeros(0, np.int64)
    # every axon's writer as one code: route 2 * src + delayed (>= 0); feed -2 - (its input element's index among
    # all inputs' elements); none -1; two or more writers: the core is left out
    e0 = np.concatenate([[0], np.cumsum([n_elems(i) for i in cm.meta["inputs"]])]).astype(np.int64)
    dst = np.concatenate([cm.routes.dst, cm.feeds.dst]).astype(np.int64)
    code = np.concatenate([2 * cm.routes.src.astype(np.int64) + (cm.routes.delayed != 0),
                           -2 - (e0[cm.feeds.input.astype(np.int64)] + cm.feeds.elem.astype(np.int64))])
    writers = np.bincount(dst, minlength=A)
    w_code = np.full(A, -1, np.int64)
    w_code[dst] = code
    multi = np.bincount(cm.axon_core()[writers > 1], minlength=C) > 0
    groups: dict[bytes, list[int]] = {}
    init = cm.axons.init.astype(np.int64)
    for k in cores[~multi[cores]].tolist():
        a0, a1 = int(c.axon_off[k]), int(c.axon_off[k + 1])
        groups.setdefault(w_code[a0:a1].tobytes() + init[a0:a1].tobytes(), []).append(k)
    off, a0s = [0], []
    for ks in groups.values():
        if len(ks) > 1:
            ev_cls[ks] = len(off) - 1
            off.append(off[-1] + int(na[ks[0]]))
            a0s.append(int(c.axon_off[ks[0]]))  # (ks in core order: its first core)
    return ev_cls, np.asarray(off, np.int64), np.asarray(a0s, np.int64)


def class_members(net: Net) -> np.ndarray:
    """[A] bool: the axons of the event-list classes' cores other than the first, which ``_run`` reads from the first
    core's axons and does not write during the run (they are restored at the end of every kernel call)."""
    member = np.zeros(int(net.a_off[-1]), bool)
    for c in np.flatnonzero(net.ev_cls >= 0).tolist():
        if net.ev_a0[net.ev_cls[c]] != net.a_off[c]:
            member[net.a_off[c]:net.a_off[c + 1]] = True
    return member


def _consts(cm: CoreMap) -> ChipConsts:
    core, timing, noc = cm.chip.core, cm.chip.timing, cm.chip.noc
    return ChipConsts(acc_bits=core.accumulator_bits, mem_bits=core.membrane_bits, beta_shift=core.beta_shift,
                      overhead=timing.core_overhead_cycles, axon_bw=core.axon_bandwidth_bytes_per_cycle,
                      weight_bw=core.weight_bandwidth_bytes_per_cycle, spike_dense=timing.spike_input_timing == "dense",
                      mac_rows=core.mac_rows, mac_cols=core.mac_cols, soma_lanes=core.soma_lanes,
                      barrier=timing.barrier_cycles, payload=noc.packet_payload_bytes,
                      aer=noc.spike_encoding == "aer", in_bits=core.activation_bits)


def check_jobs(jobs) -> int:
    """``jobs`` as a thread count: a positive integer, or 0 for every CPU of the machine."""
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs < 0:
        raise InputError(f"jobs = {jobs!r}: give a positive number of threads, or 0 for every CPU "
                         f"({os.cpu_count()} here)")
    return int(jobs) or (os.cpu_count() or 1)


def _slice(t, b0: int, b1: int):
    """The samples ``b0:b1`` of a NamedTuple of per-sample arrays (views: the kernel writes into them)."""
    return type(t)(*(None if v is None else v[b0:b1] for v in t))


def kernels_compiled() -> bool:
    """True when the kernel is compiled in this process or its on-disk cache (Numba ``cache=True``) holds a
    compiled version for the current sources; False when the next run will compile it (about 10 s)."""
    if _run.signatures:
        return True
    try:  # Numba's cache index for the kernel: empty when missing or written from other sources
        return bool(_run._cache._cache_file._load_index())
    except Exception:  # noqa: BLE001 - private Numba API: when it changes, assume a compile is due
        return False


def trace_buffers(cm: CoreMap, steps: int, sample: int, trace_steps: int) -> TraceBuf:
    """Buffers for the timeline of ``sample``: the static stage, the first ``min(trace_steps, steps)`` steps and
    the readout stage (``emulator/trace.py`` turns them into a Chrome trace)."""
    sch = build_schedule(cm)
    n = min(int(trace_steps), int(steps))
    R, P, C = n + 2, sch.ph_off.shape[0] + 1, cm.num_cores
    per_row = int(cm.router.dst.shape[0] + sch.sp_core.shape[0] + sch.tp_core_in.shape[0]) + 1
    z = lambda: np.zeros((R, P), np.int64)  # noqa: E731
    return TraceBuf(int(sample), n, z(), z(), z(), np.zeros((R, C), np.int64), z(), z(),
                    np.zeros((R * per_row, 3), np.int64), np.zeros(1, np.int64))


#: chunk buffers of per-step outputs are kept under this many bytes when a run is chunked
CHUNK_BYTES = 64 << 20
#: a run with a progress bar is cut into about this many pieces
PROGRESS_PIECES = 50


def _chunks(B: int, T: int, jobs: int, n_rec: int, chunked: bool, progress: bool):
    """Sample blocks and step chunks ``([(b0, b1)], [(t0, t1)])`` of a run."""
    if not chunked:
        return [(0, B)], [(0, T)]
    bs = B
    if progress and T < PROGRESS_PIECES:
        bs = min(B, max(jobs, -(-B // PROGRESS_PIECES)))
    tc = max(1, min(T, CHUNK_BYTES // max(1, bs * (n_rec + 1) * 8)))
    if progress:
        tc = min(tc, max(1, -(-T // PROGRESS_PIECES)))
    blocks = [(b, min(B, b + bs)) for b in range(0, B, bs)] or [(0, 0)]
    chunks = [(t, min(T, t + tc)) for t in range(0, T, tc)] or [(0, 0)]
    return blocks, chunks


def run_numba(cm: CoreMap, static_inputs, step_inputs, steps: int, *, batch: int | None = None,
              jobs: int = 1, trace: TraceBuf | None = None, step_out: dict | None = None,
              step_cycles_out: np.ndarray | None = None, progress=None, checked: bool = False) -> RawResult:
    """Run every sample of the inputs on the core map with the Numba emulator.

    Same parameters and result as :func:`emulator.reference.run_reference`, equal bit for bit.  ``jobs``
    threads (0: every CPU) run the samples in parallel, each thread a contiguous block of samples
    (samples are independent tasks, so the result is the same as with one thread).

    ``trace``: buffers of :func:`trace_buffers`, filled for their sample.  ``step_out`` (output name ->
    writable ``[B, T, n]`` array, e.g. a view of a memory-mapped file) and ``step_cycles_out`` (``[B, T]``)
    receive the per-step outputs and cycles instead of arrays in memory: the run then goes in chunks of
    steps (:data:`CHUNK_BYTES`).  ``progress``: called with the number of sample-steps done after each chunk
    (the run goes in about :data:`PROGRESS_PIECES` chunks).  Chunks change no result.  ``checked``: the caller
    has run :func:`nmc.coremap.check_coremap` on ``cm`` already (``nmc.emulate`` validates every core map it runs).
    """
    jobs = check_jobs(jobs)
    if not checked:
        check_coremap(cm)
    B, T, static, step = prepare_inputs(cm, static_inputs, step_inputs, steps, batch)
    net, k = _net(cm), _consts(cm)
    sch = build_schedule(cm, skip_axons=class_members(net))
    S, St = pack_inputs(cm, static, step, B, T)
    outs = cm.meta["outputs"]
    once_src, once_stage, step_src, cols = [], [], [], []
    for j, o in enumerate(outs):
        src = cm.taps.src[cm.taps.off[j]:cm.taps.off[j + 1]].tolist()
        if o["stage"] == "step":
            cols.append(("step", len(step_src), len(src)))
            step_src += src
        else:
            cols.append(("once", len(once_src), len(src)))
            once_src += src
            once_stage += [0 if o["stage"] == "static" else 2] * len(src)
    kinds = [inp["kind"] for inp in cm.meta["inputs"]]
    io = IO(has_static="static" in kinds, has_step="step" in kinds, S=S, St=St, once_src=_i64(once_src),
            once_stage=_i64(once_stage), step_src=_i64(step_src))
    n_ph = sch.ph_off.shape[0] - 1
    C = cm.num_cores
    streamed = step_out is not None or step_cycles_out is not None
    blocks, chunks = _chunks(B, T, min(jobs, max(B, 1)), len(step_src), streamed or progress is not None,
                             progress is not None)
    whole = len(blocks) == 1 and len(chunks) == 1 and not streamed
    res = Buffers(rec_once=np.zeros((B, len(once_src)), np.int64),
                  rec_step=np.zeros((B, T, len(step_src)), np.int64) if whole else None,
                  state_final=np.zeros((B,) + cm.neurons.state_init.shape, np.int64),
                  axon_final=np.zeros((B, cm.num_axons), np.int64), events=np.zeros((B, C, _K), np.int64),
                  core_cycles=np.zeros((B, C), np.int64), stage_cycles=np.zeros((B, 3), np.int64),
                  step_cycles=np.zeros((B, T), np.int64) if whole else None,
                  phase_cycles=np.zeros((B, n_ph + 2), np.int64), phase_compute=np.zeros((B, n_ph + 2), np.int64),
                  out_reg=np.zeros((B, cm.num_neurons), np.int64))
    rec_dest = {}
    if not whole:  # where the chunks' per-step outputs and cycles go
        for o, (where, j0, n) in zip(outs, cols):
            if where == "step":
                given = (step_out or {}).get(o["name"])
                rec_dest[o["name"]] = given if given is not None else np.zeros((B, T, n), np.int64)
        cyc_dest = step_cycles_out if step_cycles_out is not None else np.zeros((B, T), np.int64)
    trace = trace if trace is not None else no_trace()
    done = 0
    for b0, b1 in blocks:
        for t0, t1 in chunks:
            if whole:
                rb = res
            else:
                rb = _slice(res, b0, b1)._replace(rec_step=np.zeros((b1 - b0, t1 - t0, len(step_src)), np.int64),
                                                  step_cycles=np.zeros((b1 - b0, t1 - t0), np.int64))
            _run_block(T, t0, t1, net, sch, io._replace(S=io.S[b0:b1], St=np.ascontiguousarray(io.St[b0:b1, t0:t1])), k, rb,
                       trace._replace(sample=trace.sample - b0), jobs)
            if not whole:
                for o, (where, j0, n) in zip(outs, cols):
                    if where == "step":
                        rec_dest[o["name"]][b0:b1, t0:t1] = rb.rec_step[:, :, j0:j0 + n]
                cyc_dest[b0:b1, t0:t1] = rb.step_cycles
            done += (b1 - b0) * (t1 - t0)
            if progress is not None:
                progress(done)
    outputs = {}
    for o, (where, j0, n) in zip(outs, cols):
        if where == "step":
            outputs[o["name"]] = res.rec_step[:, :, j0:j0 + n].copy() if whole else rec_dest[o["name"]]
        else:
            outputs[o["name"]] = res.rec_once[:, j0:j0 + n].copy()
    step_cycles = res.step_cycles if whole else cyc_dest
    return RawResult(outputs=outputs, state_final=res.state_final, axon_final=res.axon_final, events=res.events,
                     core_cycles=res.core_cycles, stage_cycles=res.stage_cycles, step_cycles=step_cycles,
                     latency_cycles=res.stage_cycles.sum(axis=1), phase_cycles=res.phase_cycles,
                     phase_compute=res.phase_compute)


def _run_block(T, t0, t1, net, sch, io, k, res, trace, jobs):
    """One kernel call over the samples of ``res`` (steps ``t0 .. t1-1``), split over ``jobs`` threads."""
    B = res.state_final.shape[0]
    jobs = min(jobs, B)
    if jobs <= 1:
        _run(B, T, t0, t1, net, sch, io, k, res, trace)
        return
    bounds = np.linspace(0, B, jobs + 1).astype(int)

    def part(i):
        b0, b1 = int(bounds[i]), int(bounds[i + 1])
        io_p = io._replace(S=io.S[b0:b1], St=io.St[b0:b1])
        _run(b1 - b0, T, t0, t1, net, sch, io_p, k, _slice(res, b0, b1), trace._replace(sample=trace.sample - b0))

    with ThreadPoolExecutor(jobs) as ex:  # the kernel releases the GIL
        list(ex.map(part, range(jobs)))
