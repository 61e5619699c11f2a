"""Connect the pieces: where every axon's value comes from, and which phase every core runs in.

Produces, per core, the source of each axon: a neuron of another core (a route, delayed when it
crosses a spike state pair), or an element of a graph input (a feed from the host).  Phases are
the longest-path depth of each core in the dataflow DAG of its stage (built with networkx), which
gives exactly the step graph's semantics with no added delay.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from nmc.errors import MappingError

from .lower import LayerGraph
from .partition import Piece

__all__ = ["Wiring", "connect", "dataflow", "phases_of"]


@dataclass(frozen=True, eq=False)
class Wiring:
    neuron_off: np.ndarray  #: [C+1] prefix sums of neurons per core
    axon_off: np.ndarray  #: [C+1]
    elem_neuron: dict[str, np.ndarray]  #: layer output tensor -> global neuron index per element
    route_src: np.ndarray
    route_dst: np.ndarray
    route_delayed: np.ndarray
    feed_input: np.ndarray  #: index into the list of host inputs
    feed_elem: np.ndarray
    feed_dst: np.ndarray
    axon_init: np.ndarray
    host_inputs: list[str]  #: static/step graph inputs, in feed index order
    phase: np.ndarray  #: [C]
    dag: nx.DiGraph  #: core dataflow graph (edge weight = values routed)
    out_taps: list[np.ndarray]  #: neurons of each reported graph output that is not a membrane, in report order

    def tap_neurons(self) -> np.ndarray:
        """Every neuron whose output register is sent to the host (the core-map ``out_src``)."""
        return np.concatenate(self.out_taps).astype(np.int64) if self.out_taps else np.zeros(0, np.int64)


def connect(lg: LayerGraph, pieces: list[Piece]) -> Wiring:
    g = lg.graph
    C = len(pieces)
    n_n = np.array([p.n_neurons for p in pieces], np.int64)
    n_a = np.array([p.n_axons for p in pieces], np.int64)
    neuron_off = np.concatenate([[0], np.cumsum(n_n)]).astype(np.int64)
    axon_off = np.concatenate([[0], np.cumsum(n_a)]).astype(np.int64)

    # which neuron holds each element of each layer's output
    elem_neuron: dict[str, np.ndarray] = {}
    for ci, p in enumerate(pieces):
        if p.kind == "partial":
            continue
        l = lg.layers[p.layer]
        arr = elem_neuron.setdefault(l.out, np.full(l.n, -1, np.int64))
        arr[p.neurons] = neuron_off[ci] + np.arange(p.n_neurons)
    for t, arr in elem_neuron.items():
        assert np.all(arr >= 0), f"tensor {t} has unplaced elements"  # internal invariant
    membranes = lg.membranes()
    out_taps = []
    for o, _ in lg.reported_outputs():
        if o in membranes:
            continue
        if lg.root(o) not in elem_neuron:
            raise MappingError(f"graph output '{o}' is not computed by any layer (it is a graph input or a state "
                               "passed through); drop it from the outputs")
        out_taps.append(elem_neuron[lg.root(o)])

    host_inputs = [n for n, k in g.inputs.items() if k in ("static", "step")]
    host_index = {n: i for i, n in enumerate(host_inputs)}
    spike_state = {}
    for s in g.states:
        out = lg.root(s.output)
        if out in elem_neuron:
            spike_state[s.input] = (out, np.broadcast_to(np.asarray(s.init, float), g.tensors[s.input].shape).reshape(-1))

    r_src, r_dst, r_del = [], [], []
    f_in, f_el, f_dst = [], [], []
    axon_init = np.zeros(int(axon_off[-1]), np.int64)
    for ci, p in enumerate(pieces):
        l = lg.layers[p.layer]
        base = axon_off[ci]
        if p.kind == "merge":
            for k, pi in enumerate(p.partials):
                r_src.append(neuron_off[pi] + np.arange(p.n_neurons))
                r_dst.append(base + k * p.n_neurons + np.arange(p.n_neurons))
                r_del.append(np.zeros(p.n_neurons, np.int8))
            continue
        col_off = np.concatenate([[0], np.cumsum(l.in_sizes)])
        which = np.searchsorted(col_off, p.cols, side="right") - 1
        for ti, t in enumerate(l.inputs):
            sel = np.flatnonzero(which == ti)
            if sel.size == 0:
                continue
            elems = p.cols[sel] - col_off[ti]
            axons = base + sel
            if t in elem_neuron:
                r_src.append(elem_neuron[t][elems])
                r_dst.append(axons)
                r_del.append(np.zeros(sel.size, np.int8))
            elif t in spike_state:
                out, init = spike_state[t]
                r_src.append(elem_neuron[out][elems])
                r_dst.append(axons)
                r_del.append(np.ones(sel.size, np.int8))
                axon_init[axons] = np.round(init[elems]).astype(np.int64)
            elif t in host_index:
                f_in.append(np.full(sel.size, host_index[t], np.int32))
                f_el.append(elems)
                f_dst.append(axons)
            else:
                raise MappingError(f"{l.where()}: input '{t}' comes from neither a layer, a spike state pair nor "
                                   "a graph input; membrane and count states cannot feed other layers")

    def cat(xs, dt):
        return np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)

    route_src, route_dst, route_delayed, dag, pairs = dataflow(neuron_off, axon_off, cat(r_src, np.int64),
                                                              cat(r_dst, np.int64), cat(r_del, np.int8))
    stage = [lg.layers[p.layer].stage for p in pieces]
    try:
        phase = phases_of(C, stage, pairs)
    except nx.NetworkXUnfeasible as e:
        names = sorted({lg.layers[pieces[s].layer].name for s, _ in e.args[1]})
        raise MappingError(f"layers {names} form a loop inside one timestep; a recurrence must go through a "
                           "spike state pair (previous step's spikes)") from None
    return Wiring(neuron_off=neuron_off, axon_off=axon_off, elem_neuron=elem_neuron, route_src=route_src,
                  route_dst=route_dst, route_delayed=route_delayed, feed_input=cat(f_in, np.int32),
                  feed_elem=cat(f_el, np.int64), feed_dst=cat(f_dst, np.int64), axon_init=axon_init,
                  host_inputs=host_inputs, phase=phase, dag=dag, out_taps=out_taps)


def dataflow(neuron_off: np.ndarray, axon_off: np.ndarray, route_src: np.ndarray, route_dst: np.ndarray,
             route_delayed: np.ndarray):
    """Routes sorted by (source core, destination core, destination axon), the core dataflow graph (edge
    weight = values routed) and the distinct (source core, destination core, delayed) triples ``[3, K]``."""
    C = neuron_off.shape[0] - 1
    src_core = np.searchsorted(neuron_off, route_src, side="right") - 1
    dst_core = np.searchsorted(axon_off, route_dst, side="right") - 1
    order = np.lexsort((route_dst, dst_core, src_core))
    route_src, route_dst, route_delayed = route_src[order], route_dst[order], route_delayed[order]
    src_core, dst_core = src_core[order], dst_core[order]
    dag = nx.DiGraph()
    dag.add_nodes_from(range(C))
    pairs, counts = _distinct_pairs(src_core, dst_core, route_delayed.astype(np.int64), C)
    for (s, d, _), cnt in zip(pairs.T.tolist(), counts.tolist()):
        w = dag.edges[s, d]["weight"] + cnt if dag.has_edge(s, d) else cnt
        dag.add_edge(s, d, weight=w)
    return route_src, route_dst, route_delayed, dag, pairs


def phases_of(C: int, stage: list[str], pairs: np.ndarray) -> np.ndarray:
    """Phase of every core: its longest path within its stage over non-delayed edges (``pairs`` as
    :func:`dataflow` gives them).  A loop raises ``networkx.NetworkXUnfeasible(message, cycle edges)``."""
    phase = np.zeros(C, np.int64)
    sub = nx.DiGraph()
    sub.add_nodes_from(range(C))
    sub.add_edges_from((s, d) for s, d, dl in pairs.T.tolist() if not dl and stage[s] == stage[d])
    if not nx.is_directed_acyclic_graph(sub):
        raise nx.NetworkXUnfeasible("a loop inside one timestep", nx.find_cycle(sub))
    for c in nx.topological_sort(sub):
        for d in sub.successors(c):
            phase[d] = max(phase[d], phase[c] + 1)
    return phase


def _distinct_pairs(src: np.ndarray, dst: np.ndarray, delayed: np.ndarray, C: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (source core, destination core, delayed) triples in ascending order, ``[3, P]``, and how many
    routes each has (one sort of a 1-D key)."""
    if not src.size:
        return np.zeros((3, 0), np.int64), np.zeros(0, np.int64)
    key = np.sort((src * C + dst) * 2 + delayed)
    new = np.concatenate([[True], key[1:] != key[:-1]])
    u = key[new]
    counts = np.diff(np.concatenate([np.flatnonzero(new), [key.shape[0]]]))
    return np.stack([u // 2 // C, u // 2 % C, u % 2]), counts
