"""Emit the core map: its typed tables and header from the routed placement of the fitted, quantised layers
(nmc/coremap.py)."""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from nmc.coremap import (DENDRITE, KGEOM, STAGE, Axons, CoreMap, Cores, Feeds, KBlocks, KPatch, Neurons, Router, Routes,
                         Taps, Weights, widths)
from nmc.ir import MODEL_SEP
from nmc.neurons import get_model
from nmc.resources import unit_weight_bits
from nmc.version import __version__

from .relay import RELAY_LIF_PARAMS, relay_model
from .structured import merge_geom, tile_geoms, tile_patch
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
    cores = {k: np.zeros(C, np.int64) for k in ("layer", "stage", "phase", "dendrite", "spike_in", "model", "out_bits",
                                               "w_bits", "out_lo", "out_hi")}
    cparam = np.zeros((C, W["P"]), np.int64)
    N = int(wiring.neuron_off[-1])
    bias, nparam, state_init = np.zeros(N, np.int64), np.zeros((N, W["Q"]), np.int64), np.zeros((N, W["S"]), np.int64)
    # every core's dense weight block [n_axons, n_neurons] or its kernel slices (a tile of a structured layer:
    # mapper/structured.py), written in place (no per-core copies to join)
    geoms = {ci: tile_geoms(lg.layers[p.layer].blocks, p.tile) for ci, p in enumerate(pieces)
             if p.tile is not None and p.kind != "merge"}
    eyes = {ci: merge_geom(p.tile) for ci, p in enumerate(pieces) if p.tile is not None and p.kind == "merge"}
    w_size = [0 if ci in geoms or ci in eyes else p.n_axons * p.n_neurons for ci, p in enumerate(pieces)]
    # kernel slices, each stored once however many cores hold it: (layer, block, oc0, tc, kc0, kc) -> offset
    pool: dict[tuple, int] = {}
    n_dense = sum(w_size)
    for ci, gs in geoms.items():
        for bi, gm in gs:
            G = dict(zip(KGEOM, gm))
            pool.setdefault((pieces[ci].layer, bi, G["oc0"], G["tc"], G["kc0"], G["kc"]), -1)  # (placed below)
    for gm in eyes.values():
        pool.setdefault(("eye", gm[0]), -1)
    at = n_dense
    for key in pool:
        pool[key] = at
        at += key[1] if key[0] == "eye" else key[3] * key[5] * int(np.prod(quant.layers[key[0]].wk[key[1]].shape[2:]))
    w_data = np.zeros(at, np.int8)
    for key, o in pool.items():
        if key[0] == "eye":  # a merge core's identity kernel: ones
            w_data[o:o + key[1]] = 1
            continue
        li, bi, oc0, tc, kc0, kc = key
        K = quant.layers[li].wk[bi][oc0:oc0 + tc, kc0:kc0 + kc]
        w_data[o:o + K.size] = K.reshape(-1)
    w_off = [0]
    w_fmt = np.zeros(C, np.int8)
    kb_core, kb_woff, kb_geom, kb_ax = [], [], [], []
    group = None  # (neurons, their synapses' slots, synapse indices and columns, by column)
    for ci, p in enumerate(pieces):
        l = lg.layers[p.layer]
        q = quant.layers[p.layer]
        kind = p.kind
        m = get_model("partial") if kind == "partial" else l.model  # a merge core runs the layer's soma
        if kind == "relay":  # forwards its source's values unchanged (mapper/relay.py)
            m = get_model(relay_model(l.model.out_bits))
        nn, na = p.n_neurons, p.n_axons
        cores["layer"][ci] = p.layer
        cores["stage"][ci] = STAGE[l.stage]
        cores["phase"][ci] = wiring.phase[ci]
        cores["dendrite"][ci] = DENDRITE[l.dendrite] if kind not in ("merge", "relay") else DENDRITE["mac"]
        cores["spike_in"][ci] = (int(m.out_bits == 1) if kind == "relay" else
                                 int(kind != "merge" and all(tq[t].kind == "spike" for t in l.inputs)))
        cores["model"][ci] = m.code
        cores["out_bits"][ci] = m.out_bits
        cores["w_bits"][ci] = unit_weight_bits(chip) if kind in ("merge", "relay") else q.w_bits
        cores["out_lo"][ci], cores["out_hi"][ci] = (-acc_hi - 1, acc_hi) if kind == "partial" else (q.lo, q.hi)
        if kind == "relay":
            names = [par.name for par in m.core_params]
            for k, v in RELAY_LIF_PARAMS.items() if m.name == "lif" else ():
                cparam[ci, names.index(k)] = v
        elif kind != "partial":
            cparam[ci, :q.cparam.shape[0]] = q.cparam
        # weights [n_axons, n_neurons]
        block = None if ci in geoms or ci in eyes else w_data[w_off[-1]:w_off[-1] + na * nn].reshape(na, nn)
        if ci in eyes:  # a merge core of a tiled layer: one identity kernel per partial sum
            w_fmt[ci] = 1
            for j in range(len(p.partials)):
                kb_core.append(ci)
                kb_woff.append(pool[("eye", eyes[ci][0])])
                kb_geom.append(eyes[ci])
                kb_ax.append(np.arange(j * nn, (j + 1) * nn, dtype=np.int32))
        elif ci in geoms:  # shared kernels: each block's kernel slice (in the pool) and its patch's axons
            w_fmt[ci] = 1
            for bi, gm in geoms[ci]:
                G = dict(zip(KGEOM, gm))
                at = pool[(p.layer, bi, G["oc0"], G["tc"], G["kc0"], G["kc"])]
                cols, _ = tile_patch(lg.layers[p.layer].blocks[bi], p.tile, bi)
                ax = np.searchsorted(p.cols, cols)
                hit = (cols >= 0) & (ax < na)
                hit[hit] = p.cols[ax[hit]] == cols[hit]
                if np.any(hit != (cols >= 0)):  # internal invariant: the partitioner gave the core its patch
                    raise AssertionError(f"core {ci}: its patch reads columns it does not hold")
                kb_core.append(ci)
                kb_woff.append(at)
                kb_geom.append(gm)
                kb_ax.append(np.where(hit, ax, -1).astype(np.int32))  # (int32 as kpatch.ax: half the list)
        elif kind == "relay":
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
        w_off.append(w_off[-1] + w_size[ci])
        n0 = int(wiring.neuron_off[ci])  # this core's rows of the neuron tables (zero unless set here)
        if kind == "relay" and m.name == "ann":  # y = acc * 1, no shift
            nparam[n0:n0 + nn, [par.name for par in m.neuron_params].index("mult")] = 1
        elif kind not in ("partial", "relay"):
            bias[n0:n0 + nn] = q.bias[p.neurons]
            nparam[n0:n0 + nn, :q.nparam.shape[1]] = q.nparam[p.neurons]
            state_init[n0:n0 + nn, :q.state_init.shape[1]] = q.state_init[p.neurons]

    held.clear()
    group = None
    kb_ax_off = np.concatenate([[0], np.cumsum([a.shape[0] for a in kb_ax])]).astype(np.int64)
    kpatch_ax = np.concatenate(kb_ax).astype(np.int32, copy=False) if kb_ax else np.zeros(0, np.int32)
    del kb_ax  # (before the axons' table: DenseNet-121's patches are 0.17 GB)
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
        routes=Routes(src=np.asarray(wiring.route_src, np.int64), dst=np.asarray(wiring.route_dst, np.int64),
                      delayed=np.asarray(wiring.route_delayed, np.int8)),
        router=Router(off=np.asarray(t.rt_off, np.int64), dst=np.asarray(t.rt_dst, np.int64),
                      route_off=np.asarray(t.rt_route_off, np.int64)),
        feeds=Feeds(input=np.array(wiring.feed_input, np.int32), elem=np.array(wiring.feed_elem, np.int64),
                    dst=np.array(wiring.feed_dst, np.int64)),
        kblocks=KBlocks(core=np.array(kb_core, np.int32), w_off=np.array(kb_woff, np.int64),
                        geom=np.array(kb_geom, np.int32).reshape(-1, len(KGEOM)),
                        ax_off=kb_ax_off),
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
