"""The Numba emulator: same semantics as ``emulator/reference.py``, bit for bit, much faster.

:func:`run_numba` (the public driver) validates the core map and the inputs, derives static tables
(per-phase core lists and route lists, per (source, destination) route groups, link paths, input
and output tables) and calls the private ``@njit`` kernel :func:`_run`, which takes only arrays and
scalars and loops over samples, steps, phases and cores.  Numba options come from
``emulator/_jit.py``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from nmc.coremap import CoreMap

from ._jit import NJIT
from .noc import PathTable, grid_shape, noc_run
from .prepare import (check_coremap, chips_of, in_bytes, input_kind_codes, prepare_inputs, soma_cycles,
                      stage_phases, state_bytes, value_bytes)
from .result import EVENT_INDEX, EVENT_KINDS, RawResult

__all__ = ["run_numba"]

_I64_MIN = np.iinfo(np.int64).min
_K = len(EVENT_KINDS)
_MAC, _SOP, _UPD, _SPK, _RD, _WR, _PKT, _HOP, _CROSS = (EVENT_INDEX[k] for k in EVENT_KINDS)


# --------------------------------------------------------------------------- kernels
@njit(**NJIT)
def _cdiv(a, b):
    return (a + b - 1) // b


@njit(**NJIT)
def _clamp(x, lo, hi):
    return lo if x < lo else (hi if x > hi else x)


@njit(**NJIT)
def _reset(u, mode, thr, vr, mmin, mmax):
    """LIF reset of membrane ``u``: 0 subtract (saturating), 1 to ``vr``, 2 none."""
    if mode == 0:
        return _clamp(u - thr, mmin, mmax)
    if mode == 1:
        return vr
    return u


@njit(**NJIT)
def _compute_core(c, axons, v, out, acc, ev,
                  n_off, a_off, w_off, weights, dend, spike_in, soma, out_bits, w_row_bytes, in_b, st_b,
                  out_lo, out_hi, thr_a, vr_a, vl_a, bm_a, mode_a, ge_a, rd_a, soma_cyc,
                  bias, req_mult, req_shift,
                  acc_bits, mem_bits, beta_shift, overhead, axon_bw, mac_rows, mac_cols, soma_lanes):
    """Run core ``c``; add its events to ``ev[c]``; return its compute cycles."""
    n0 = n_off[c]
    nn = n_off[c + 1] - n0
    a0 = a_off[c]
    na = a_off[c + 1] - a0
    w0 = w_off[c]
    nz = 0
    if dend[c] == 0:  # mac
        for j in range(nn):
            acc[j] = bias[n0 + j]
        for i in range(na):
            x = axons[a0 + i]
            if x != 0:
                nz += 1
                base = w0 + i * nn
                for j in range(nn):
                    acc[j] += x * weights[base + j]
        amax = (np.int64(1) << (acc_bits - 1)) - 1
        amin = -(np.int64(1) << (acc_bits - 1))
        for j in range(nn):
            acc[j] = _clamp(acc[j], amin, amax)
    else:  # max over axons with a nonzero weight
        for j in range(nn):
            acc[j] = _I64_MIN
        for i in range(na):
            x = axons[a0 + i]
            if x != 0:
                nz += 1
            base = w0 + i * nn
            for j in range(nn):
                if weights[base + j] != 0 and x > acc[j]:
                    acc[j] = x
    rows = nz if spike_in[c] != 0 else na

    s_mode = soma[c]
    lo = out_lo[c]
    hi = out_hi[c]
    bits = out_bits[c]
    nspk = 0
    if s_mode == 0:  # ann
        for j in range(nn):
            sh = req_shift[n0 + j]
            y = acc[j] * req_mult[n0 + j]
            if sh > 0:
                y = (y + (np.int64(1) << (sh - 1))) >> sh
            y = _clamp(y, lo, hi)
            out[n0 + j] = y
            if y != 0:
                nspk += 1
    elif s_mode == 2:  # partial
        for j in range(nn):
            out[n0 + j] = acc[j]
            if acc[j] != 0:
                nspk += 1
    elif s_mode == 3:  # count
        for j in range(nn):
            y = _clamp(v[n0 + j] + acc[j], lo, hi)
            v[n0 + j] = y
            out[n0 + j] = y
            if y != 0:
                nspk += 1
    else:  # lif
        mmax = (np.int64(1) << (mem_bits - 1)) - 1
        mmin = -(np.int64(1) << (mem_bits - 1))
        thr = thr_a[c]
        vr = vr_a[c]
        vl = vl_a[c]
        bm = bm_a[c]
        mode = mode_a[c]
        ge = ge_a[c] != 0
        rd = rd_a[c] != 0
        for j in range(nn):
            vj = v[n0 + j]
            r = False
            if rd:
                r = (vj >= thr) if ge else (vj > thr)
            u = _clamp(vl + (((vj - vl) * bm) >> beta_shift) + acc[j], mmin, mmax)
            if rd and r:
                u = _reset(u, mode, thr, vr, mmin, mmax)
            s = (u >= thr) if ge else (u > thr)
            nv = _reset(u, mode, thr, vr, mmin, mmax) if (not rd) and s else u
            v[n0 + j] = nv
            if s:
                out[n0 + j] = 1
                nspk += 1
            else:
                out[n0 + j] = 0

    sb = st_b[c]
    ib = in_b[c]
    if spike_in[c] != 0:
        ev[c, _SOP] += rows * nn
    else:
        ev[c, _MAC] += na * nn
    ev[c, _UPD] += nn
    if bits == 1:
        ev[c, _SPK] += nspk
    ev[c, _RD] += rows * w_row_bytes[c] + na * ib + nn * sb
    ev[c, _WR] += nn * sb + nn * ((bits + 7) // 8)
    return (overhead + _cdiv(na * ib, axon_bw) + _cdiv(rows, mac_rows) * _cdiv(nn, mac_cols)
            + _cdiv(nn, soma_lanes) * soma_cyc[c])


@njit(**NJIT)
def _add_packets(n, ready, path, charge, ev, pk_ready, pk_path, npk, path_hops, path_cross):
    for _ in range(n):
        pk_ready[npk] = ready
        pk_path[npk] = path
        npk += 1
    ev[charge, _PKT] += n
    ev[charge, _HOP] += n * path_hops[path]
    ev[charge, _CROSS] += n * path_cross[path]
    return npk


@njit(**NJIT)
def _run(B, T,
         # cores
         n_off, a_off, w_off, weights, dend, spike_in, soma, out_bits, w_row_bytes, in_b, st_b,
         out_lo, out_hi, thr_a, vr_a, vl_a, bm_a, mode_a, ge_a, rd_a, soma_cyc,
         bias, req_mult, req_shift, v_init, axon_init, route_src, route_dst,
         # schedule
         stage_ph, ph_off, ph_cores, ph_r_off, ph_routes, dl_routes,
         # packets
         cp_off, pr_r_off, pr_routes, pr_path, tp_off, tp_neur, tp_path,
         path_off, path_link, path_lat, path_hops, path_cross, n_links, max_pkt,
         # inputs
         has_static, sf_dst, sf_col, sp_core, sp_n, sp_path, S,
         has_step, tf_dst, tf_col, tp_core_in, tp_n_in, tp_path_in, St,
         # outputs
         once_src, once_stage, step_src,
         # chip
         acc_bits, mem_bits, beta_shift, overhead, axon_bw, mac_rows, mac_cols, soma_lanes, barrier,
         payload, aer, in_bits,
         # results
         rec_once, rec_step, v_final, axon_final, events, core_cycles, stage_cycles, step_cycles,
         phase_cycles, phase_compute):
    C = n_off.shape[0] - 1
    n_ph = ph_off.shape[0] - 1
    N = v_init.shape[0]
    max_nn = 1
    for c in range(C):
        if n_off[c + 1] - n_off[c] > max_nn:
            max_nn = n_off[c + 1] - n_off[c]
    acc = np.zeros(max_nn, np.int64)
    out = np.zeros(N, np.int64)
    comp = np.zeros(C, np.int64)
    pk_ready = np.zeros(max_pkt, np.int64)
    pk_path = np.zeros(max_pkt, np.int64)
    heap = np.zeros(max_pkt, np.int64)
    hop = np.zeros(max_pkt, np.int64)
    cur = np.zeros(max_pkt, np.int64)
    deliver = np.zeros(max_pkt, np.int64)
    link_free = np.zeros(n_links, np.int64)
    link_epoch = np.zeros(n_links, np.int64)
    epoch = 0
    P8 = 8 * payload
    for b in range(B):
        v = v_final[b]
        axons = axon_final[b]
        ev = events[b]
        v[:] = v_init
        axons[:] = axon_init
        out[:] = 0
        for s in range(3):
            reps = 1 if s != 1 else T
            total = 0
            for t in range(reps):
                cyc = 0
                # ---- input phase (NoC only)
                if (s == 0 and has_static) or (s == 1 and has_step):
                    npk = 0
                    if s == 0:
                        for f in range(sf_dst.shape[0]):
                            axons[sf_dst[f]] = S[b, sf_col[f]]
                        for q in range(sp_core.shape[0]):
                            npk = _add_packets(_cdiv(sp_n[q] * in_bits, P8), 0, sp_path[q], sp_core[q], ev,
                                               pk_ready, pk_path, npk, path_hops, path_cross)
                    else:
                        for f in range(tf_dst.shape[0]):
                            axons[tf_dst[f]] = St[b, t, tf_col[f]]
                        for q in range(tp_core_in.shape[0]):
                            npk = _add_packets(_cdiv(tp_n_in[q] * in_bits, P8), 0, tp_path_in[q], tp_core_in[q],
                                               ev, pk_ready, pk_path, npk, path_hops, path_cross)
                    epoch += 1
                    last = noc_run(npk, pk_ready, pk_path, path_off, path_link, path_lat, link_free, link_epoch,
                                   epoch, heap, hop, cur, deliver)
                    cyc += last + barrier
                    phase_cycles[b, n_ph + s] += last + barrier
                # ---- the stage's phases
                for ph in range(stage_ph[s], stage_ph[s + 1]):
                    cmax = 0
                    for k in range(ph_off[ph], ph_off[ph + 1]):
                        c = ph_cores[k]
                        cc = _compute_core(c, axons, v, out, acc, ev,
                                           n_off, a_off, w_off, weights, dend, spike_in, soma, out_bits,
                                           w_row_bytes, in_b, st_b, out_lo, out_hi, thr_a, vr_a, vl_a, bm_a,
                                           mode_a, ge_a, rd_a, soma_cyc, bias, req_mult, req_shift,
                                           acc_bits, mem_bits, beta_shift, overhead, axon_bw, mac_rows,
                                           mac_cols, soma_lanes)
                        comp[c] = cc
                        core_cycles[b, c] += cc
                        if cc > cmax:
                            cmax = cc
                    npk = 0
                    for k in range(ph_off[ph], ph_off[ph + 1]):
                        c = ph_cores[k]
                        bits = out_bits[c]
                        for pr in range(cp_off[c], cp_off[c + 1]):
                            r0 = pr_r_off[pr]
                            r1 = pr_r_off[pr + 1]
                            if bits == 1 and aer:
                                n = 0
                                for q in range(r0, r1):
                                    if out[route_src[pr_routes[q]]] != 0:
                                        n += 1
                            else:
                                n = _cdiv((r1 - r0) * bits, P8)
                            npk = _add_packets(n, comp[c], pr_path[pr], c, ev, pk_ready, pk_path, npk,
                                               path_hops, path_cross)
                        t0 = tp_off[c]
                        t1 = tp_off[c + 1]
                        if t1 > t0:
                            if bits == 1 and aer:
                                n = 0
                                for q in range(t0, t1):
                                    if out[tp_neur[q]] != 0:
                                        n += 1
                            else:
                                n = _cdiv((t1 - t0) * 8 * ((bits + 7) // 8), P8)
                            npk = _add_packets(n, comp[c], tp_path[c], c, ev, pk_ready, pk_path, npk,
                                               path_hops, path_cross)
                    epoch += 1
                    last = noc_run(npk, pk_ready, pk_path, path_off, path_link, path_lat, link_free, link_epoch,
                                   epoch, heap, hop, cur, deliver)
                    for k in range(ph_r_off[ph], ph_r_off[ph + 1]):
                        r = ph_routes[k]
                        axons[route_dst[r]] = out[route_src[r]]
                    pc = (cmax if cmax > last else last) + barrier
                    cyc += pc
                    phase_cycles[b, ph] += pc
                    phase_compute[b, ph] += cmax
                if s == 1:
                    for k in range(dl_routes.shape[0]):
                        r = dl_routes[k]
                        axons[route_dst[r]] = out[route_src[r]]
                    step_cycles[b, t] = cyc
                    for j in range(step_src.shape[0]):
                        rec_step[b, t, j] = out[step_src[j]]
                total += cyc
            stage_cycles[b, s] = total
            if s != 1:
                for j in range(once_src.shape[0]):
                    if once_stage[j] == s:
                        rec_once[b, j] = out[once_src[j]]


# --------------------------------------------------------------------------- driver
def _i64(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.int64)


def _tables(cm: CoreMap):
    """Static tables of the kernel (depend on the core map only)."""
    a, chip = cm.arrays, cm.chip
    C = cm.num_cores
    P8 = 8 * chip.noc.packet_payload_bytes
    aer = chip.noc.spike_encoding == "aer"
    in_bits = chip.core.activation_bits
    neuron_core, axon_core = cm.neuron_core(), cm.axon_core()
    R = a["route_src"].shape[0]
    rsc = neuron_core[a["route_src"]] if R else np.zeros(0, np.int64)
    rdc = axon_core[a["route_dst"]] if R else np.zeros(0, np.int64)
    width, height = grid_shape(chip, chips_of(cm))
    paths = PathTable(chip, width, height)
    pos = [(int(a["core_x"][c]), int(a["core_y"][c])) for c in range(C)]
    out_bits = a["core_out_bits"].astype(np.int64)

    # schedule: phases of every stage, with their cores (ascending) and non-delayed routes (route order)
    phases = stage_phases(cm)
    stage_ph = np.zeros(4, np.int64)
    ph_cores, ph_off, ph_routes, ph_r_off = [], [0], [], [0]
    nd = a["route_delayed"] == 0
    for s in range(3):
        for _, cores in phases[s]:
            ph_cores += cores.tolist()
            ph_off.append(len(ph_cores))
            ph_routes += np.flatnonzero(nd & np.isin(rsc, cores)).tolist()
            ph_r_off.append(len(ph_routes))
        stage_ph[s + 1] = len(ph_off) - 1
    dl_routes = np.flatnonzero(~nd)

    # route pairs (source core, destination core), sorted; a core's pairs are contiguous
    order = np.lexsort((np.arange(R), rdc, rsc))
    key_s, key_d = rsc[order], rdc[order]
    starts = np.flatnonzero(np.r_[True, (key_s[1:] != key_s[:-1]) | (key_d[1:] != key_d[:-1])]) if R else \
        np.zeros(0, np.int64)
    pr_r_off = np.r_[starts, R].astype(np.int64)
    pr_routes = order
    pr_src, pr_dst = key_s[starts], key_d[starts]
    pr_path = [paths.add(pos[c], pos[d]) for c, d in zip(pr_src.tolist(), pr_dst.tolist())]
    cp_off = np.zeros(C + 1, np.int64)
    np.add.at(cp_off, pr_src + 1, 1)
    n_pr = np.diff(pr_r_off)
    bits_pr = out_bits[pr_src]
    max_pkt_pr = np.where((bits_pr == 1) & aer, n_pr, -(-n_pr * bits_pr // P8))
    max_pairs_pkt = np.zeros(C, np.int64)  # most packets a core's routes and taps can send in a phase
    np.add.at(max_pairs_pkt, pr_src, max_pkt_pr)
    cp_off = np.cumsum(cp_off)

    # output taps per core
    tap_core = neuron_core[a["out_src"]] if a["out_src"].shape[0] else np.zeros(0, np.int64)
    t_order = np.argsort(tap_core, kind="stable")
    tp_neur = a["out_src"][t_order]
    tp_off = np.zeros(C + 1, np.int64)
    np.add.at(tp_off, tap_core + 1, 1)
    tp_off = np.cumsum(tp_off)
    tp_path = np.full(C, -1, np.int64)
    for c in range(C):
        n = int(tp_off[c + 1] - tp_off[c])
        if n:
            tp_path[c] = paths.add(pos[c], None)
            max_pairs_pkt[c] += n if (out_bits[c] == 1 and aer) else -(-n * 8 * int(value_bytes(out_bits[c])) // P8)

    # inputs: feeds per kind, packed columns, and per destination core the packets from the host
    kinds = input_kind_codes(cm)
    inputs = cm.meta.get("inputs", [])
    col0 = {}
    ncols = [0, 0]
    for k, inp in enumerate(inputs):
        if kinds[k] in (0, 1):
            col0[k] = ncols[kinds[k]]
            ncols[kinds[k]] += int(np.prod(inp.get("shape", []), dtype=np.int64))
    feed_kind = kinds[a["in_input"]] if a["in_input"].shape[0] else np.zeros(0, np.int64)
    inp_tab = []
    max_in_pkt = 0
    for kind in (0, 1):
        f = np.flatnonzero(feed_kind == kind)
        dst = a["in_dst"][f]
        col0_arr = np.array([col0.get(k, 0) for k in range(len(inputs))], dtype=np.int64)
        col = col0_arr[a["in_input"][f]] + a["in_elem"][f] if f.shape[0] else np.zeros(0, np.int64)
        cores, counts = np.unique(axon_core[dst], return_counts=True)
        pth = np.array([paths.add(None, pos[int(c)]) for c in cores], dtype=np.int64)
        inp_tab.append((_i64(dst), col, _i64(cores), _i64(counts), pth))
        max_in_pkt = max(max_in_pkt, int(sum(-(-int(n) * in_bits // P8) for n in counts)))

    max_pkt = max_in_pkt
    for s in range(3):
        for _, cores in phases[s]:
            max_pkt = max(max_pkt, int(max_pairs_pkt[cores].sum()))
    path_off, path_link, path_lat, path_hops, path_cross = paths.arrays()
    w_row_bytes = -(-np.diff(a["core_neuron_off"]) * a["core_w_bits"].astype(np.int64) // 8)
    return dict(
        stage_ph=stage_ph, ph_off=_i64(ph_off), ph_cores=_i64(ph_cores), ph_r_off=_i64(ph_r_off),
        ph_routes=_i64(ph_routes), dl_routes=_i64(dl_routes), cp_off=_i64(cp_off), pr_r_off=_i64(pr_r_off),
        pr_routes=_i64(pr_routes), pr_path=_i64(pr_path), tp_off=_i64(tp_off), tp_neur=_i64(tp_neur),
        tp_path=tp_path, path_off=path_off, path_link=path_link, path_lat=path_lat, path_hops=path_hops,
        path_cross=path_cross, n_links=paths.n_links, max_pkt=max(max_pkt, 1), inp_tab=inp_tab, col0=col0,
        ncols=ncols, w_row_bytes=_i64(w_row_bytes),
    )


def run_numba(cm: CoreMap, static_inputs, step_inputs, steps: int, *, batch: int | None = None) -> RawResult:
    """Run every sample of the inputs on the core map with the Numba emulator.

    Same parameters and result as :func:`emulator.reference.run_reference`, equal bit for bit.
    """
    check_coremap(cm)
    B, T, static, step = prepare_inputs(cm, static_inputs, step_inputs, steps, batch)
    a, chip = cm.arrays, cm.chip
    tb = _tables(cm)
    C, N, A = cm.num_cores, cm.num_neurons, cm.num_axons
    S = np.zeros((B, tb["ncols"][0]), np.int64)
    St = np.zeros((B, T, tb["ncols"][1]), np.int64)
    for k, v in static.items():
        S[:, tb["col0"][k]:tb["col0"][k] + v.shape[1]] = v
    for k, v in step.items():
        St[:, :, tb["col0"][k]:tb["col0"][k] + v.shape[2]] = v
    kinds = input_kind_codes(cm)

    outs = cm.meta.get("outputs", [])
    once_src, once_stage, step_src, cols = [], [], [], []
    for k, o in enumerate(outs):
        src = a["out_src"][a["out_off"][k]:a["out_off"][k + 1]].tolist()
        if o["stage"] == "step":
            cols.append(("step", len(step_src), len(src)))
            step_src += src
        else:
            cols.append(("once", len(once_src), len(src)))
            once_src += src
            once_stage += [0 if o["stage"] == "static" else 2] * len(src)
    rec_once = np.zeros((B, len(once_src)), np.int64)
    rec_step = np.zeros((B, T, len(step_src)), np.int64)
    v_final = np.zeros((B, N), np.int64)
    axon_final = np.zeros((B, A), np.int64)
    events = np.zeros((B, C, _K), np.int64)
    core_cycles = np.zeros((B, C), np.int64)
    stage_cycles = np.zeros((B, 3), np.int64)
    step_cycles = np.zeros((B, T), np.int64)
    n_ph = tb["ph_off"].shape[0] - 1
    phase_cycles = np.zeros((B, n_ph + 2), np.int64)
    phase_compute = np.zeros((B, n_ph + 2), np.int64)
    core, timing, noc = chip.core, chip.timing, chip.noc
    (sf_dst, sf_col, sp_core, sp_n, sp_path), (tf_dst, tf_col, tpc, tpn, tpp) = tb["inp_tab"]
    _run(B, T,
         _i64(a["core_neuron_off"]), _i64(a["core_axon_off"]), _i64(a["core_w_off"]),
         np.ascontiguousarray(a["weights"], dtype=np.int8),
         _i64(a["core_dendrite"]), _i64(a["core_spike_in"]), _i64(a["core_soma"]), _i64(a["core_out_bits"]),
         tb["w_row_bytes"], _i64(in_bytes(cm)), _i64(state_bytes(cm)), _i64(a["core_out_lo"]),
         _i64(a["core_out_hi"]), _i64(a["lif_threshold"]), _i64(a["lif_v_reset"]), _i64(a["lif_v_leak"]),
         _i64(a["lif_beta_mult"]), _i64(a["lif_reset_mode"]), _i64(a["lif_spike_ge"]), _i64(a["lif_reset_delay"]),
         _i64(soma_cycles(cm)), _i64(a["bias"]), _i64(a["req_mult"]), _i64(a["req_shift"]), _i64(a["v_init"]),
         _i64(a["axon_init"]), _i64(a["route_src"]), _i64(a["route_dst"]),
         tb["stage_ph"], tb["ph_off"], tb["ph_cores"], tb["ph_r_off"], tb["ph_routes"], tb["dl_routes"],
         tb["cp_off"], tb["pr_r_off"], tb["pr_routes"], tb["pr_path"], tb["tp_off"], tb["tp_neur"], tb["tp_path"],
         tb["path_off"], tb["path_link"], tb["path_lat"], tb["path_hops"], tb["path_cross"], tb["n_links"],
         tb["max_pkt"],
         bool((kinds == 0).any()), sf_dst, sf_col, sp_core, sp_n, sp_path, S,
         bool((kinds == 1).any()), tf_dst, tf_col, tpc, tpn, tpp, St,
         _i64(once_src), _i64(once_stage), _i64(step_src),
         core.accumulator_bits, core.membrane_bits, core.beta_shift, timing.core_overhead_cycles,
         core.axon_bandwidth_bytes_per_cycle, core.mac_rows, core.mac_cols, core.soma_lanes,
         timing.barrier_cycles, noc.packet_payload_bytes, noc.spike_encoding == "aer", core.activation_bits,
         rec_once, rec_step, v_final, axon_final, events, core_cycles, stage_cycles, step_cycles,
         phase_cycles, phase_compute)
    outputs = {}
    for o, (where, j0, n) in zip(outs, cols):
        outputs[o["name"]] = (rec_step[:, :, j0:j0 + n] if where == "step" else rec_once[:, j0:j0 + n]).copy()
    return RawResult(outputs=outputs, v_final=v_final, axon_final=axon_final, events=events,
                     core_cycles=core_cycles, stage_cycles=stage_cycles, step_cycles=step_cycles,
                     latency_cycles=stage_cycles.sum(axis=1), phase_cycles=phase_cycles,
                     phase_compute=phase_compute)
