"""Emit the core map: its typed tables and header from the routed placement of the fitted, quantised layers
(nmc/coremap.py)."""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from nmc.coremap import (DENDRITE, FORMAT_VERSION, KGEOM, MAX_INDEX, STAGE, Axons, CoreMap, Cores, Feeds, KBlocks, KPatch, Neurons, Router, Routes,
                         Taps, Weights, widths)
from nmc.errors import MappingError
from nmc.ir import MODEL_SEP
from nmc.neurons import get_model
from nmc.resources import unit_weight_bits
from nmc.version import __version__

from .relay import RELAY_LIF_PARAMS, relay_model
from .structured import concat_ranges, gather_segments, merge_geom, tile_geom_rows, tile_patches
from .route import Routes as RoutedPlacement

__all__ = ["emit"]


def emit(routes: RoutedPlacement, options: dict[str, Any]) -> CoreMap:
    """The core map of ``routes`` (and of the placement, fit and quantised layers it was built from);
    ``options`` (the compile options) go into the header."""
    placement = routes.placement
    f = placement.fit
    quant = f.quant
    lg, pieces, tq, wiring, pos, chip, chips = quant.lg, f.pieces, quant.tq, f.wiring, placement.pos, f.chip, placement.chips
    g = lg.graph
    num_steps = g.num_steps
    big = max(int(wiring.neuron_off[-1]), int(wiring.axon_off[-1]))
    if big > MAX_INDEX:
        raise MappingError(f"the mapping has {int(wiring.neuron_off[-1]):,} neurons and {int(wiring.axon_off[-1]):,} "
                           f"axons; a core map indexes at most {MAX_INDEX:,} of each (int32, format "
                           f"{FORMAT_VERSION}): compile the model in parts")
    acc_hi = 2 ** (chip.core.accumulator_bits - 1) - 1
    used = {l.model.name for l in lg.layers} | {"partial" for p in f.pieces if p.kind == "partial"}
    used |= {relay_model(lg.layers[p.layer].model.out_bits) for p in f.pieces if p.kind == "relay"}
    W = widths(get_model(m) for m in used)  # (the models this map uses)
    held: dict[int, tuple] = {}  # the CSR of the layer being emitted (one at a time: a layer's cores are adjacent)

    def csr(li: int) -> tuple:
        if li not in held:
            held.clear()
            l = lg.layers[li]
            order = np.argsort(l.rows, kind="stable")
            ptr = np.zeros(l.n + 1, np.int64)
            ptr[1:] = np.bincount(l.rows, minlength=l.n)
            held[li] = (np.cumsum(ptr), l.rows[order], l.cols[order], quant.layers[li].weights(l)[order])
        return held[li]

    C = len(pieces)
    KINDS = ("full", "partial", "merge", "relay")
    kcode = {k: i for i, k in enumerate(KINDS)}
    p_layer = np.fromiter((p.layer for p in pieces), np.int64, C)
    p_kind = np.fromiter((kcode[p.kind] for p in pieces), np.int64, C)
    p_nn = np.diff(np.asarray(wiring.neuron_off, np.int64))  # (p.n_neurons)
    p_tiled = np.fromiter((p.tile is not None for p in pieces), bool, C)
    cores = {k: np.zeros(C, np.int64) for k in ("layer", "stage", "phase", "dendrite", "spike_in", "model", "out_bits",
                                               "w_bits", "out_lo", "out_hi")}
    cparam = np.zeros((C, W["P"]), np.int64)
    N = int(wiring.neuron_off[-1])
    # (bias and per-neuron parameters int32, core-map format 5: each layer's checked to fit below before it is written)
    bias, nparam, state_init = np.zeros(N, np.int32), np.zeros((N, W["Q"]), np.int32), np.zeros((N, W["S"]), np.int64)
    cores["layer"][:] = p_layer
    cores["phase"][:] = wiring.phase
    # the per-core fields: one value per (layer, kind)
    combo = p_layer * len(KINDS) + p_kind
    u_combo, c_inv = np.unique(combo, return_inverse=True)
    c_inv = c_inv.reshape(-1)
    vals = {k: np.zeros(u_combo.shape[0], np.int64) for k in cores if k not in ("layer", "phase")}
    u_cparam = np.zeros((u_combo.shape[0], W["P"]), np.int64)
    for u, cb in enumerate(u_combo.tolist()):
        li, kind = cb // len(KINDS), KINDS[cb % len(KINDS)]
        l = lg.layers[li]
        q = quant.layers[li]
        m = get_model("partial") if kind == "partial" else l.model  # a merge core runs the layer's soma
        if kind == "relay":  # forwards its source's values unchanged (mapper/relay.py)
            m = get_model(relay_model(l.model.out_bits))
        vals["stage"][u] = STAGE[l.stage]
        vals["dendrite"][u] = DENDRITE[l.dendrite] if kind not in ("merge", "relay") else DENDRITE["mac"]
        vals["spike_in"][u] = (int(m.out_bits == 1) if kind == "relay" else
                               int(kind != "merge" and all(tq[t].kind == "spike" for t in l.inputs)))
        vals["model"][u] = m.code
        vals["out_bits"][u] = m.out_bits
        vals["w_bits"][u] = unit_weight_bits(chip) if kind in ("merge", "relay") else q.w_bits
        vals["out_lo"][u], vals["out_hi"][u] = (-acc_hi - 1, acc_hi) if kind == "partial" else (q.lo, q.hi)
        if kind == "relay":
            names = [par.name for par in m.core_params]
            for k, v in RELAY_LIF_PARAMS.items() if m.name == "lif" else ():
                u_cparam[u, names.index(k)] = v
        elif kind != "partial":
            u_cparam[u, :q.cparam.shape[0]] = q.cparam
    for k, v in vals.items():
        cores[k][:] = v[c_inv]
    cparam[:] = u_cparam[c_inv]
    # the neuron tables: each core's rows (zero unless set here)
    n_start = np.asarray(wiring.neuron_off, np.int64)[:-1]
    soma = np.flatnonzero((p_kind == kcode["full"]) | (p_kind == kcode["merge"]))
    for li in np.unique(p_layer[soma]).tolist():
        cs = soma[p_layer[soma] == li]
        q = quant.layers[li]
        src = np.concatenate([pieces[c].neurons for c in cs.tolist()]).astype(np.int64, copy=False)
        if cs[-1] - cs[0] + 1 == cs.shape[0]:  # adjacent cores: one range of rows
            dst = slice(int(n_start[cs[0]]), int(n_start[cs[0]]) + src.shape[0])
        else:
            dst = concat_ranges(n_start[cs], p_nn[cs])
        for what, v in (("a bias", q.bias), ("a per-neuron parameter", q.nparam)):
            if v.size and (int(v.min()) < I32[0] or int(v.max()) > I32[1]):
                bad = int(v.max()) if int(v.max()) > I32[1] else int(v.min())
                raise MappingError(f"{lg.layers[li].where()}: {what} is {bad}, outside the core map's int32 range "
                                   f"{I32[0]} .. {I32[1]} (the accumulator and every neuron parameter are at most 32 "
                                   "bits): scale the layer's bias (or its weights and threshold) down")
        bias[dst] = q.bias[src]
        nparam[dst, :q.nparam.shape[1]] = q.nparam[src]
        state_init[dst, :q.state_init.shape[1]] = q.state_init[src]
    for ci in np.flatnonzero(p_kind == kcode["relay"]).tolist():
        m = get_model(relay_model(lg.layers[pieces[ci].layer].model.out_bits))
        if m.name == "ann":  # y = acc * 1, no shift
            n0, nn = int(n_start[ci]), int(p_nn[ci])
            nparam[n0:n0 + nn, [par.name for par in m.neuron_params].index("mult")] = 1

    # every core's dense weight block [n_axons, n_neurons] or its kernel slices (a tile of a structured layer:
    # mapper/structured.py), written in place (no per-core copies to join)
    dense = np.flatnonzero(~p_tiled)
    w_size = np.zeros(C, np.int64)
    w_size[dense] = [pieces[ci].n_axons * pieces[ci].n_neurons for ci in dense.tolist()]
    w_off = np.zeros(C + 1, np.int64)
    np.cumsum(w_size, out=w_off[1:])
    n_dense = int(w_off[-1])
    # kernel blocks, one per (core, block of its layer) or per (merge core, partial sum): built layer by layer
    kb = _kernel_blocks(pieces, lg, p_layer, p_kind == kcode["merge"], p_tiled, p_nn)
    # kernel slices, each stored once however many cores hold it, in the order the cores first read them (the tiled
    # cores' slices, then the merge cores' identity kernels): (layer, block, oc0, tc, kc0, kc) or ("eye", tc)
    keys, first, k_inv = _first_order(kb["key"])
    rank = np.lexsort((first, keys[:, 0] < 0))
    keys, k_inv = keys[rank], np.argsort(rank)[k_inv]
    size = np.zeros(keys.shape[0], np.int64)
    for j in range(keys.shape[0]):
        li, bi, oc0, tc, kc0, kc = keys[j].tolist()
        size[j] = tc if li < 0 else tc * kc * int(np.prod(quant.layers[li].wk[bi].shape[2:]))
    slot = np.zeros(keys.shape[0] + 1, np.int64)
    np.cumsum(size, out=slot[1:])
    slot += n_dense
    w_data = np.zeros(int(slot[-1]), np.int8)
    for j in range(keys.shape[0]):
        li, bi, oc0, tc, kc0, kc = keys[j].tolist()
        o = int(slot[j])
        if li < 0:  # a merge core's identity kernel: ones
            w_data[o:o + tc] = 1
            continue
        K = quant.layers[li].wk[bi][oc0:oc0 + tc, kc0:kc0 + kc]
        w_data[o:o + K.size] = K.reshape(-1)
    w_fmt = p_tiled.astype(np.int8)
    kb_core, kb_woff, kb_geom = kb["core"], slot[:-1][k_inv], kb["geom"]
    kb_ax_off, kpatch_ax = kb["ax_off"], kb["ax"]
    del kb
    group = None  # (neurons, their synapses' slots, synapse indices and columns, by column)
    for ci in dense.tolist():
        p = pieces[ci]
        kind = p.kind
        nn, na = p.n_neurons, p.n_axons
        block = w_data[w_off[ci]:w_off[ci] + na * nn].reshape(na, nn)  # weights [n_axons, n_neurons]
        if kind == "relay":
            block[np.arange(nn), np.arange(nn)] = 1
        elif kind == "merge":
            k = len(p.partials)
            block[np.arange(k * nn), np.tile(np.arange(nn), k)] = 1
        else:
            ptr, rows, cols, wq = csr(p.layer)
            if group is None or group[0] is not p.neurons:
                # the synapses of the core's neurons (slot j: neuron p.neurons[j]), by input column (stable: the
                # last of two writes to one weight stays last); the partial cores of one group share them
                lo = ptr[p.neurons]
                lens = ptr[p.neurons + 1] - lo
                nslot = np.repeat(np.arange(nn), lens)
                idx = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(lo, lens)
                by_col = np.argsort(cols[idx], kind="stable")
                group = (p.neurons, nslot[by_col], idx[by_col], cols[idx][by_col])
            _, g_slot, g_idx, g_col = group
            if na:  # the synapses reading a column in this core's range (p.cols ascending), then those it holds
                a, b = np.searchsorted(g_col, [p.cols[0], p.cols[-1] + 1])
                c_sel = g_col[a:b]
                aslot = np.minimum(np.searchsorted(p.cols, c_sel), na - 1)
                hit = p.cols[aslot] == c_sel
                block[aslot[hit], g_slot[a:b][hit]] = wq[g_idx[a:b][hit]].astype(np.int8)

    held.clear()
    group = None
    t = routes.table
    # the large per-axon and per-route arrays are the Fit's own (np.asarray: no copies; at ResNet-50's size they are
    # about 1 GB): a caller who edits them in place edits that pass's result too
    tables = dict(
        cores=Cores(layer=cores["layer"].astype(np.int32), x=pos[:, 0].astype(np.int32), y=pos[:, 1].astype(np.int32),
                    stage=cores["stage"].astype(np.int8), phase=cores["phase"].astype(np.int32),
                    dendrite=cores["dendrite"].astype(np.int8), spike_in=cores["spike_in"].astype(np.int8),
                    model=cores["model"].astype(np.int8), out_bits=cores["out_bits"].astype(np.int8),
                    w_bits=cores["w_bits"].astype(np.int8), out_lo=cores["out_lo"], out_hi=cores["out_hi"],
                    param=cparam, neuron_off=np.array(wiring.neuron_off, np.int64),
                    axon_off=np.array(wiring.axon_off, np.int64), w_off=np.asarray(w_off, np.int64),
                    w_fmt=w_fmt),
        neurons=Neurons(bias=bias, param=nparam, state_init=state_init),
        axons=Axons(init=wiring.axon_init()),
        weights=Weights(data=w_data),
        routes=Routes(src=np.asarray(wiring.route_src, np.int32), dst=np.asarray(wiring.route_dst, np.int32),
                      delayed=np.asarray(wiring.route_delayed, np.int8)),
        router=Router(off=np.asarray(t.rt_off, np.int64), dst=np.asarray(t.rt_dst, np.int64),
                      route_off=np.asarray(t.rt_route_off, np.int64)),
        feeds=Feeds(input=np.array(wiring.feed_input, np.int32), elem=np.array(wiring.feed_elem, np.int64),
                    dst=np.array(wiring.feed_dst, np.int64)),
        kblocks=KBlocks(core=np.asarray(kb_core, np.int32), w_off=np.asarray(kb_woff, np.int64),
                        geom=np.asarray(kb_geom, np.int32).reshape(-1, len(KGEOM)),
                        ax_off=np.asarray(kb_ax_off, np.int64)),
        kpatch=KPatch(ax=kpatch_ax),
    )

    # ------------------------------------------------------------------ header
    producer = {l.out: l for l in lg.layers}
    membrane = lg.membranes()
    index = {id(l): li for li, l in enumerate(lg.layers)}

    def word_scale(l, w: int) -> float:
        """Float value of one unit of state word ``w`` of layer ``l``'s neurons."""
        return 1.0 / quant.layers[index[id(l)]].k if l.model.state[w].scaled else 1.0

    outputs, state_outputs = [], []
    for o, final in lg.reported_outputs():
        if o in membrane:
            l, w = membrane[o]
            state_outputs.append(dict(name=o, shape=list(g.tensors[o].shape), layer=l.name,
                                      neurons=wiring.elem_neuron[l.out].tolist(), scale=word_scale(l, w), word=w))
            continue
        r = lg.root(o)
        l = producer[r]  # connect checked that a layer computes every reported output (wiring.out_taps)
        tr = tq[r]
        outputs.append(dict(name=o, stage=l.stage, shape=list(g.tensors[o].shape), scale=float(tr.scale),
                            signed=bool(tr.lo < 0), layer=l.name, kind=tr.kind, final=final))
    taps = wiring.out_taps
    tables["taps"] = Taps(off=np.concatenate([[0], np.cumsum([tp.shape[0] for tp in taps])]).astype(np.int64),
                          src=np.array(wiring.tap_neurons(), np.int64))

    inputs = []
    for name in wiring.host_inputs:
        q = tq[name]
        inputs.append(dict(name=name, kind=g.inputs[name], shape=list(g.tensors[name].shape), scale=float(q.scale),
                           lo=int(q.lo), hi=int(q.hi)))
    states = []
    by_state_in = {t: (l, w) for l in lg.layers for w, t in enumerate(l.state_in)}
    for s in g.states:
        entry: dict[str, Any] = dict(input=s.input, output=s.output, shape=list(g.tensors[s.input].shape))
        if s.input in by_state_in:
            l, w = by_state_in[s.input]
            entry.update(target="neuron", neurons=wiring.elem_neuron[l.out].tolist(), scale=word_scale(l, w), word=w)
        else:
            sel = np.zeros(0, np.int64)
            src_root = lg.root(s.output)
            if src_root in wiring.elem_neuron:
                # axons fed by this state: delayed routes from the producer of its paired output
                src_n = wiring.elem_neuron[src_root]
                inv = np.full(int(wiring.neuron_off[-1]), -1, np.int64)
                inv[src_n] = np.arange(src_n.shape[0])
                for ci, p in enumerate(pieces):  # a relay's neurons carry its source's elements
                    if p.kind == "relay" and lg.layers[p.layer].out == src_root:
                        inv[wiring.neuron_off[ci] + np.arange(p.n_neurons)] = inv[src_n[p.neurons]]
                sel = np.flatnonzero((wiring.route_delayed == 1) & (inv[wiring.route_src] >= 0))
                entry.update(target="axon", axons=wiring.route_dst[sel].tolist(),
                             elems=inv[wiring.route_src[sel]].tolist(), scale=1.0)
            else:
                entry.update(target="none")
        states.append(entry)

    layers_meta = []
    cores_of: dict[int, list[int]] = {}
    for ci, p in enumerate(pieces):
        cores_of.setdefault(p.layer, []).append(ci)
    for li, l in enumerate(lg.layers):
        kinds = {pieces[c].kind for c in cores_of.get(li, [])}
        layers_meta.append(dict(name=l.name, op=l.op, stage=l.stage, source=l.source, neurons=l.n,
                                cores=cores_of.get(li, []), split="merge" in kinds, w_bits=int(quant.layers[li].w_bits),
                                acc_bound=float(quant.layers[li].acc_bound), quant=dict(quant.layers[li].report)))
    c = tables["cores"]
    phases = {st: int(c.phase[c.stage == STAGE[st]].max(initial=-1)) + 1 for st in STAGE}
    warnings = []
    count_hi = 2 ** chip.core.activation_bits - 1
    if any(l.soma == "count" for l in lg.layers) and num_steps > count_hi:
        warnings.append(f"spike counts saturate at {count_hi} (8-bit values) but the model runs {num_steps} steps")
    for a in json.loads(g.metadata.get("nmc.approximated", "[]")):  # load_onnx(approximate=...)
        warnings.append(f"{a['op']} node '{a['node']}' is approximated as {a['as']} (the cores cannot compute it; "
                        "asked for with approximate / --approximate): outputs differ from the ONNX model's")
    if "nmc.models" in g.metadata:  # several models on one system (nmc.ir.merge_graphs)
        meta_models = []
        for name in json.loads(g.metadata["nmc.models"]):
            pre = name + MODEL_SEP
            meta_models.append(dict(name=name, inputs=[i["name"] for i in inputs if i["name"].startswith(pre)],
                                    outputs=[o["name"] for o in outputs + state_outputs if o["name"].startswith(pre)],
                                    layers=[k for k, l in enumerate(layers_meta) if l["name"].startswith(pre)]))
    meta = dict(model=g.name, num_steps=int(num_steps), chips=list(chips), layers=layers_meta, inputs=inputs,
                host_encoders=json.loads(g.metadata.get("nmc.host_encoders", "[]")),
                outputs=outputs, state_outputs=state_outputs, states=states, phases=phases,
                compile=dict(options, warnings=warnings), routing=routes.summary(), nmc_version=__version__)
    if "nmc.host_ops" in g.metadata:  # softmax/argmax after the chip (mapper.lower.split_host)
        meta["host"] = json.loads(g.metadata["nmc.host_ops"])
    if "nmc.models" in g.metadata:
        meta["models"] = meta_models
    return CoreMap(chip=chip, meta=meta, **tables)


def _first_order(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct rows of ``keys`` in the order they first appear, the index of each one's first appearance and
    every row's distinct row."""
    if not keys.shape[0]:
        return keys, np.zeros(0, np.int64), np.zeros(0, np.int64)
    u, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    return u[order], first[order], rank[inv]


#: the range of neurons.bias and neurons.param (int32, core-map format 5)
I32 = (-2 ** 31, 2 ** 31 - 1)

#: columns of a layer's pieces kept apart in one sorted search (piece rank * _SPAN + column)
_SPAN = 1 << 32


def _kernel_blocks(pieces, lg, p_layer: np.ndarray, is_merge: np.ndarray, tiled: np.ndarray,
                   p_nn: np.ndarray) -> dict[str, np.ndarray]:
    """The kernel blocks of the tiled cores, ordered by core, then block (a tile: one per block of its layer it
    reads; a merge core: one identity kernel per partial sum): ``core``, kernel slice ``key`` rows ``(layer,
    block, oc0, tc, kc0, kc)`` (``(-1, 0, 0, tc, 0, 0)``: a merge core's identity kernel of ``tc`` ones), KGEOM
    ``geom`` rows, and each block's patch map (the axon of every patch element, -1: none) as ``ax`` and
    ``ax_off``.  Computed for all tiles of a layer together (mapper/structured.tile_patches)."""
    out = [[] for _ in range(6)]  # (core, sub, key, geom, ax, lens) of every layer, each ordered by core
    for li in np.unique(p_layer[tiled]).tolist():
        core, sub, key, geom, ax, lens = [], [], [], [], [], []
        blocks = lg.layers[li].blocks
        c_dt = np.int32 if lg.layers[li].n_cols < 2 ** 31 else np.int64  # (as the pieces' columns)
        T = np.flatnonzero(tiled & ~is_merge & (p_layer == li))
        if T.shape[0]:
            tl = [pieces[c].tile for c in T.tolist()]
            tt = np.array([(t.oc0, t.tc, t.y0, t.th, t.x0, t.tw) for t in tl], np.int64).reshape(-1, 6)
            ch = np.array([t.chunks for t in tl], np.int64).reshape(len(tl), len(blocks), 2)
            pcols = [pieces[c].cols for c in T.tolist()]
            na = np.fromiter((x.shape[0] for x in pcols), np.int64, len(pcols))
            seg = np.zeros(na.shape[0] + 1, np.int64)
            np.cumsum(na, out=seg[1:])
            allcols = np.concatenate(pcols)
            del pcols
            allkeys = allcols.astype(np.int64) + np.repeat(np.arange(na.shape[0], dtype=np.int64) * _SPAN, na)
            for bi, b in enumerate(blocks):
                sel = np.flatnonzero(ch[:, bi, 1] > 0)
                if not sel.shape[0]:
                    continue
                oc0, tc, y0, th, x0, tw = tt[sel].T
                pc0, pc = ch[sel, bi, 0], ch[sel, bi, 1]
                cols, off = tile_patches(b, y0, x0, th, tw, pc0, pc, c_dt)
                n_el = np.diff(off)
                valid = cols >= 0
                if sel.shape[0] == T.shape[0] and int(valid.sum()) == allkeys.shape[0] and np.array_equal(
                        cols[valid], allcols):
                    # every core holds exactly its patch's columns, in patch order (one block): element k of a
                    # patch reads the core's axon "valid elements before k"
                    hit = valid
                    it = np.int32 if cols.shape[0] < 2 ** 31 else np.int64  # (as kpatch.ax)
                    local = np.cumsum(valid, dtype=it)
                    local -= np.repeat(seg[:-1].astype(it) + 1, n_el)
                else:  # the axon of each patch column in its core's columns (ascending)
                    rk = np.repeat(sel, n_el)
                    q = rk * _SPAN + cols
                    pos = np.searchsorted(allkeys, q)
                    local = pos - seg[rk]
                    hit = valid & (local < na[rk])
                    hit[hit] = allkeys[pos[hit]] == q[hit]
                    del q, pos
                    bad = hit != valid
                    if bad.any():  # internal invariant: the partitioner gave the core its patch
                        ci = int(T[rk[np.argmax(bad)]])
                        raise AssertionError(f"core {ci}: its patch reads columns it does not hold")
                del valid
                gm = tile_geom_rows(b, oc0, tc, th, tw, pc0, pc)
                G = dict(zip(KGEOM, gm.T))
                core.append(T[sel])
                sub.append(np.full(sel.shape[0], bi, np.int64))
                key.append(np.stack([np.full(sel.shape[0], li, np.int64), np.full(sel.shape[0], bi, np.int64),
                                     G["oc0"], G["tc"], G["kc0"], G["kc"]], axis=1))
                geom.append(gm)
                ax.append(np.where(hit, local, np.int32(-1)).astype(np.int32, copy=False))  # (int32 as kpatch.ax)
                lens.append(n_el)
        M = np.flatnonzero(tiled & is_merge & (p_layer == li))
        if M.shape[0]:  # one identity kernel per partial sum: merge core m's k[m] blocks, each of nn[m] patch axons
            k = np.fromiter((len(pieces[ci].partials) for ci in M.tolist()), np.int64, M.shape[0])
            nn = p_nn[M].astype(np.int64)
            gm = np.array([merge_geom(pieces[ci].tile) for ci in M.tolist()], np.int64).reshape(M.shape[0], len(KGEOM))
            n_rows = int(k.sum())
            core.append(np.repeat(M.astype(np.int64), k))
            sub.append(concat_ranges(np.zeros_like(k), k))
            kk = np.zeros((n_rows, 6), np.int64)
            kk[:, 0] = -1
            kk[:, 3] = np.repeat(gm[:, 0], k)
            key.append(kk)
            geom.append(np.repeat(gm, k, axis=0))
            ax.append(concat_ranges(np.zeros_like(k), k * nn).astype(np.int32))  # (merge core m's axons, in order)
            lens.append(np.repeat(nn, k))
        core, key, geom, ax, lens = _by_core(core, sub, key, geom, ax, lens)
        for o, x in zip(out, (core, np.arange(core.shape[0], dtype=np.int64), key, geom, ax, lens)):
            o.append(x)  # (then in order within the layer)
    core, key, geom, parts, lens = _by_core(*out)
    del out
    # joined a part at a time, each freed once copied (np.concatenate would hold every part and the whole: 2 x 0.6 GB
    # at VGG-19; the untouched pages of np.empty take no memory until written)
    flat = np.empty(sum(x.shape[0] for x in parts), np.result_type(*parts))
    parts.reverse()
    o = 0
    while parts:
        x = parts.pop()
        flat[o:o + x.shape[0]] = x
        o += x.shape[0]
        del x
    ax_off = np.zeros(lens.shape[0] + 1, np.int64)
    np.cumsum(lens, out=ax_off[1:])
    return dict(core=core, key=key, geom=geom, ax=flat, ax_off=ax_off)


def _by_core(core, sub, key, geom, ax, lens):
    """Kernel block lists (of arrays: cores, their block or partial sum, slice keys, KGEOM rows, patch maps as one
    flat list each (or lists of them) and their lengths) joined and ordered by core, then block; the patch maps
    are returned as a list of flat lists to join (moved only when out of order)."""
    if not core:
        return (np.zeros(0, np.int64), np.zeros((0, 6), np.int64), np.zeros((0, len(KGEOM)), np.int64),
                [np.zeros(0, np.int32)], np.zeros(0, np.int64))
    cat = lambda xs: np.concatenate(xs) if len(xs) > 1 else xs[0]  # noqa: E731
    core, sub, lens, key, geom = cat(core), cat(sub), cat(lens), cat(key), cat(geom)
    parts = [a for x in ax for a in (x if isinstance(x, list) else [x])]  # (patch maps: joined once, at the end)
    del ax[:]
    if core.shape[0] > 1 and np.any((core[1:] < core[:-1]) | ((core[1:] == core[:-1]) & (sub[1:] <= sub[:-1]))):
        order = np.lexsort((sub, core))
        start = np.zeros(lens.shape[0], np.int64)
        np.cumsum(lens[:-1], out=start[1:])
        flat = cat(parts)
        del parts[:]
        parts = [gather_segments(flat, start, lens, order)]
        del flat
        core, key, geom, lens = core[order], key[order], geom[order], lens[order]
    return core, key, geom, parts, lens
