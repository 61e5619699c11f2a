"""Emit the core map: flat arrays from the routed placement of the fitted, quantised layers (nmc/coremap.py)."""
from __future__ import annotations

from typing import Any

import numpy as np

from nmc.coremap import ARRAYS, DENDRITE, RESET, SOMA, STAGE, CoreMap
from nmc.resources import unit_weight_bits

from .route import Routes

__all__ = ["emit"]


def emit(routes: Routes, options: dict[str, Any]) -> CoreMap:
    """The core map of ``routes`` (and of the placement, fit and quantised layers it was built from);
    ``options`` (the compile options) go into the header."""
    placement = routes.placement
    f = placement.fit
    quant = f.quant
    lg, pieces, tq, wiring, pos, chip, chips = quant.lg, f.pieces, quant.tq, f.wiring, placement.pos, f.chip, placement.chips
    g = lg.graph
    num_steps = g.num_steps
    acc_hi = 2 ** (chip.core.accumulator_bits - 1) - 1
    a: dict[str, list] = {k: [] for k in ARRAYS}
    csr = {}
    for li, l in enumerate(lg.layers):
        order = np.argsort(l.rows, kind="stable")
        ptr = np.zeros(l.n + 1, np.int64)
        np.add.at(ptr, l.rows + 1, 1)
        csr[li] = (np.cumsum(ptr), l.rows[order], l.cols[order], quant.layers[li].wq[order])
    w_off = [0]
    for ci, p in enumerate(pieces):
        l = lg.layers[p.layer]
        q = quant.layers[p.layer]
        qs = q.soma
        kind = p.kind
        soma = "partial" if kind == "partial" else l.soma
        nn, na = p.n_neurons, p.n_axons
        a["core_layer"].append(p.layer)
        a["core_x"].append(int(pos[ci, 0]))
        a["core_y"].append(int(pos[ci, 1]))
        a["core_stage"].append(STAGE[l.stage])
        a["core_phase"].append(int(wiring.phase[ci]))
        a["core_dendrite"].append(DENDRITE[l.dendrite] if kind != "merge" else DENDRITE["mac"])
        a["core_spike_in"].append(int(kind != "merge" and all(tq[t].kind == "spike" for t in l.inputs)))
        a["core_soma"].append(SOMA[soma])
        a["core_out_bits"].append(32 if soma == "partial" else (1 if soma == "lif" else 8))
        a["core_w_bits"].append(unit_weight_bits(chip) if kind == "merge" else q.w_bits)
        if soma == "partial":
            lo, hi = -acc_hi - 1, acc_hi
        else:
            lo, hi = q.lo, q.hi
        a["core_out_lo"].append(lo)
        a["core_out_hi"].append(hi)
        is_lif = soma == "lif"
        a["lif_threshold"].append(qs["thr"] if is_lif else 0)
        a["lif_v_reset"].append(qs["v_reset"] if is_lif else 0)
        a["lif_v_leak"].append(qs["v_leak"] if is_lif else 0)
        a["lif_beta_mult"].append(qs["beta_mult"] if is_lif else 0)
        a["lif_reset_mode"].append(RESET[qs["reset_mode"]] if is_lif else 0)
        a["lif_spike_ge"].append(qs["spike_ge"] if is_lif else 0)
        a["lif_reset_delay"].append(qs["reset_delay"] if is_lif else 0)
        # weights [n_axons, n_neurons]
        block = np.zeros((na, nn), np.int8)
        if kind == "merge":
            k = len(p.partials)
            block[np.arange(k * nn), np.tile(np.arange(nn), k)] = 1
        else:
            ptr, rows, cols, wq = csr[p.layer]
            idx = np.concatenate([np.arange(ptr[r], ptr[r + 1]) for r in p.neurons]) if nn else np.zeros(0, np.int64)
            nslot = np.full(l.n, -1, np.int64)
            nslot[p.neurons] = np.arange(nn)
            aslot = np.full(l.n_cols, -1, np.int64)
            aslot[p.cols] = np.arange(na)
            sel = idx[aslot[cols[idx]] >= 0]
            block[aslot[cols[sel]], nslot[rows[sel]]] = wq[sel].astype(np.int8)
        a["weights"].append(block.reshape(-1))
        w_off.append(w_off[-1] + na * nn)
        a["bias"].append(np.zeros(nn, np.int64) if kind == "partial" else q.bias[p.neurons])
        if soma == "ann":
            a["req_mult"].append(qs["mult"][p.neurons])
            a["req_shift"].append(qs["shift"][p.neurons])
        else:
            a["req_mult"].append(np.ones(nn, np.int64))
            a["req_shift"].append(np.zeros(nn, np.int64))
        a["v_init"].append(qs["v_init"][p.neurons] if soma in ("lif", "count") else np.zeros(nn, np.int64))

    arrays: dict[str, np.ndarray] = {}
    for k, dt in ARRAYS.items():
        v = a[k]
        if v and isinstance(v[0], np.ndarray):
            arrays[k] = np.concatenate(v).astype(dt)
        else:
            arrays[k] = np.asarray(v, dtype=dt)
    arrays["core_w_off"] = np.asarray(w_off, np.int64)
    t = routes.table
    # copies: the core map is the caller's to change; the earlier results stay as their passes returned them
    for k, v in (("core_neuron_off", wiring.neuron_off), ("core_axon_off", wiring.axon_off),
                 ("axon_init", wiring.axon_init), ("route_src", wiring.route_src), ("route_dst", wiring.route_dst),
                 ("route_delayed", wiring.route_delayed), ("in_input", wiring.feed_input),
                 ("in_elem", wiring.feed_elem), ("in_dst", wiring.feed_dst), ("rt_off", t.rt_off),
                 ("rt_dst", t.rt_dst), ("rt_route_off", t.rt_route_off)):
        arrays[k] = np.array(v, dtype=ARRAYS[k])

    # ------------------------------------------------------------------ header
    producer = {l.out: l for l in lg.layers}
    membrane = lg.membranes()
    k_of = {l.state_out: quant.layers[li].soma["k"] for li, l in enumerate(lg.layers) if l.soma == "lif"}
    outputs, state_outputs = [], []
    for o, final in lg.reported_outputs():
        if o in membrane:
            l = membrane[o]
            state_outputs.append(dict(name=o, shape=list(g.tensors[o].shape), layer=l.name,
                                      neurons=wiring.elem_neuron[l.out].tolist(),
                                      scale=1.0 / k_of[o]))
            continue
        r = lg.root(o)
        l = producer[r]  # connect checked that a layer computes every reported output (wiring.out_taps)
        tr = tq[r]
        outputs.append(dict(name=o, stage=l.stage, shape=list(g.tensors[o].shape), scale=tr.scale,
                            signed=bool(tr.lo < 0), layer=l.name, kind=tr.kind, final=final))
    taps = wiring.out_taps
    arrays["out_off"] = np.concatenate([[0], np.cumsum([tp.shape[0] for tp in taps])]).astype(np.int64)
    arrays["out_src"] = wiring.tap_neurons()

    inputs = []
    for name in wiring.host_inputs:
        q = tq[name]
        inputs.append(dict(name=name, kind=g.inputs[name], shape=list(g.tensors[name].shape), scale=q.scale,
                           lo=q.lo, hi=q.hi))
    states = []
    by_state_in = {l.state_in: li for li, l in enumerate(lg.layers) if l.state_in}
    for s in g.states:
        entry: dict[str, Any] = dict(input=s.input, output=s.output, shape=list(g.tensors[s.input].shape))
        if s.input in by_state_in:
            li = by_state_in[s.input]
            l = lg.layers[li]
            entry.update(target="neuron", neurons=wiring.elem_neuron[l.out].tolist(),
                         scale=(1.0 / quant.layers[li].soma["k"]) if l.soma == "lif" else 1.0)
        else:
            sel = np.zeros(0, np.int64)
            src_root = lg.root(s.output)
            if src_root in wiring.elem_neuron:
                # axons fed by this state: delayed routes from the producer of its paired output
                src_n = wiring.elem_neuron[src_root]
                inv = np.full(int(wiring.neuron_off[-1]), -1, np.int64)
                inv[src_n] = np.arange(src_n.shape[0])
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
                                acc_bound=quant.layers[li].acc_bound, quant=dict(quant.layers[li].report)))
    phases = {st: int(arrays["core_phase"][arrays["core_stage"] == STAGE[st]].max(initial=-1)) + 1 for st in STAGE}
    warnings = []
    count_hi = 2 ** chip.core.activation_bits - 1
    if any(l.soma == "count" for l in lg.layers) and num_steps > count_hi:
        warnings.append(f"spike counts saturate at {count_hi} (8-bit values) but the model runs {num_steps} steps")
    meta = dict(model=g.name, num_steps=int(num_steps), chips=list(chips), layers=layers_meta, inputs=inputs,
                outputs=outputs, state_outputs=state_outputs, states=states, phases=phases,
                compile=dict(options, warnings=warnings), routing=routes.summary())
    return CoreMap(chip=chip, meta=meta, arrays=arrays)
