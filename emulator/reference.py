"""The reference emulator: a plain, readable NumPy implementation of docs/numerics.md and
docs/timing_energy.md.  It *is* the executable numerics spec; ``emulator/kernels.py`` (Numba) must
equal it bit for bit on every field of :class:`RawResult`.

One task (sample) runs:

1. reset: neuron state ``v = v_init``, axons ``= axon_init``, output registers ``= 0``;
2. static stage: the static-input phase (only if the model has static inputs: the host writes them
   into their axons; NoC only), then the static phases in increasing order;
   static outputs are recorded;
3. ``T`` steps: the step-input phase (only if the model has step inputs), the step phases, then the
   delayed routes; step outputs are recorded after every step;
4. readout stage: the readout phases; readout outputs are recorded.

A phase: every core of the phase computes (dendrite, soma, output register) from its axons as they
were when the phase began, then sends its packets (routes to other cores, output taps to the host);
the NoC model gives the delivery times; then the non-delayed routes of the phase's cores write
their source's output register into their destination axon (in route order).
``phase latency = max(max compute, last delivery) + timing.barrier_cycles`` (an input phase: last
delivery + barrier).  Phases are the distinct ``core_phase`` values of a stage's cores, so a stage
without cores costs 0 cycles.

Where the docs leave a choice, this implementation decides (and the Numba kernel follows):

* an input phase exists when the header declares a graph input of that kind (static / step),
  even one without feeds (it then costs only the barrier); feeds of ``state`` inputs are refused;
* input packets: per destination core, ``ceil(n_feeds * activation_bits / 8 / P)`` (8-bit values
  from the host; every feed counts, also one element fed to two axons), ready at cycle 0, charged
  (packet, hop, chip_crossing) to the receiving core;
* route packets: per (source core, destination core) pair, ``n_values`` is the number of routes of
  the pair; with AER and 1-bit outputs, one packet per route whose source value is nonzero;
  delayed routes travel in their source core's phase like the others (only their write to the
  axon waits for the end of the step);
* output taps: every tap entry of a core is sent to the host each time the core runs; AER and
  1-bit: one packet per nonzero tapped value, else ``ceil(n * bytes / P)`` with 1 byte for 1- and
  8-bit values (also under bitmap encoding) and 4 bytes for 32-bit values;
* ``in_bytes`` of a core without sources is 1; ``spike`` counts nonzero outputs of every core with
  ``core_out_bits == 1`` (whatever its soma);
* delayed routes (from any core) are written after the step's phases, before the step outputs are
  recorded; two writers of one axon in one phase: the later route (route order) wins.
"""
from __future__ import annotations

import numpy as np

from nmc.coremap import CoreMap

from .noc import PathTable, grid_shape, simulate_heap
from .prepare import (check_coremap, chips_of, in_bytes, input_kind_codes, prepare_inputs, soma_cycles,
                      stage_phases, state_bytes, value_bytes)
from .result import EVENT_INDEX, EVENT_KINDS, RawResult

__all__ = ["run_reference"]

_STATIC, _STEP, _READOUT = 0, 1, 2


def _sat(x, bits):
    """sat_k: clamp to the signed range of ``bits`` bits."""
    return np.clip(x, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def _ceil_div(a, b):
    return -(-a // b)


class _Model:
    """What the reference derives once from the core map (no input values involved)."""

    def __init__(self, cm: CoreMap):
        a = cm.arrays
        self.cm, self.a, self.chip = cm, a, cm.chip
        self.C, self.N, self.A = cm.num_cores, cm.num_neurons, cm.num_axons
        self.phases = stage_phases(cm)
        self.n_phases = sum(len(p) for p in self.phases)
        self.in_bytes = in_bytes(cm)
        self.state_bytes = state_bytes(cm)
        self.soma_cycles = soma_cycles(cm)
        neuron_core, axon_core = cm.neuron_core(), cm.axon_core()
        self.route_src_core = neuron_core[a["route_src"]]
        self.route_dst_core = axon_core[a["route_dst"]]
        width, height = grid_shape(cm.chip, chips_of(cm))
        self.paths = PathTable(cm.chip, width, height)
        pos = [(int(a["core_x"][c]), int(a["core_y"][c])) for c in range(self.C)]
        # route pairs: source core -> [(destination core, route indices, path)], destinations ascending
        self.pairs: dict[int, list[tuple[int, np.ndarray, int]]] = {c: [] for c in range(self.C)}
        for c in range(self.C):
            mine = np.flatnonzero(self.route_src_core == c)
            for d in np.unique(self.route_dst_core[mine]):
                self.pairs[c].append((int(d), mine[self.route_dst_core[mine] == d], self.paths.add(pos[c], pos[d])))
        # output taps per core (tap entries, in out_src order) and their path to the host
        tap_core = neuron_core[a["out_src"]]
        self.taps = {c: a["out_src"][tap_core == c] for c in range(self.C)}
        self.tap_path = {c: self.paths.add(pos[c], None) for c in range(self.C) if self.taps[c].shape[0]}
        # input feeds per kind, and per destination core the path from the host
        kinds = input_kind_codes(cm)
        feed_kind = kinds[a["in_input"]] if a["in_input"].shape[0] else np.zeros(0, np.int64)
        self.feeds = {k: np.flatnonzero(feed_kind == k) for k in (_STATIC, _STEP)}
        self.has_inputs = {k: bool((kinds == k).any()) for k in (_STATIC, _STEP)}
        feed_core = axon_core[a["in_dst"]]
        self.input_pairs = {}
        for k in (_STATIC, _STEP):
            cores, counts = np.unique(feed_core[self.feeds[k]], return_counts=True)
            self.input_pairs[k] = [(int(c), int(n), self.paths.add(None, pos[c])) for c, n in zip(cores, counts)]
        self.path_off, self.path_link, self.path_lat, self.path_hops, self.path_cross = self.paths.arrays()
        self.delayed = np.flatnonzero(a["route_delayed"] == 1)
        outs = cm.meta.get("outputs", [])
        self.out_names = [o["name"] for o in outs]
        self.out_stage = [{"static": _STATIC, "step": _STEP, "readout": _READOUT}[o["stage"]] for o in outs]


class _Task:
    """State and counters of one sample."""

    def __init__(self, m: _Model):
        a = m.a
        self.m = m
        self.v = a["v_init"].astype(np.int64).copy()
        self.axons = a["axon_init"].astype(np.int64).copy()
        self.out = np.zeros(m.N, dtype=np.int64)
        self.events = np.zeros((m.C, len(EVENT_KINDS)), dtype=np.int64)
        self.core_cycles = np.zeros(m.C, dtype=np.int64)
        self.phase_cycles = np.zeros(m.n_phases + 2, dtype=np.int64)
        self.phase_compute = np.zeros(m.n_phases + 2, dtype=np.int64)

    # ------------------------------------------------------------------ one core
    def compute(self, c: int) -> int:
        """Run core ``c`` (dendrite, soma, output register); count its events; return its compute cycles."""
        m, a, chip = self.m, self.m.a, self.m.chip
        core, timing = chip.core, chip.timing
        n0, n1 = int(a["core_neuron_off"][c]), int(a["core_neuron_off"][c + 1])
        a0, a1 = int(a["core_axon_off"][c]), int(a["core_axon_off"][c + 1])
        n_n, n_a = n1 - n0, a1 - a0
        x = self.axons[a0:a1].copy()
        W = m.cm.core_weights(c).astype(np.int64)
        spike_in = bool(a["core_spike_in"][c])
        rows = int(np.count_nonzero(x)) if spike_in else n_a  # event driven: only nonzero axons are read

        # dendrite
        if a["core_dendrite"][c] == 0:  # mac
            acc = _sat(a["bias"][n0:n1] + x @ W, core.accumulator_bits)
        else:  # max over the axons with a nonzero weight
            acc = np.where(W != 0, x[:, None], np.iinfo(np.int64).min).max(axis=0)

        # soma
        soma = int(a["core_soma"][c])
        lo, hi = int(a["core_out_lo"][c]), int(a["core_out_hi"][c])
        if soma == 0:  # ann: requantise (round half up) and clamp
            mult, shift = a["req_mult"][n0:n1], a["req_shift"][n0:n1]
            prod = acc * mult
            half = np.left_shift(np.int64(1), np.maximum(shift - 1, 0))
            y = np.where(shift == 0, prod, (prod + half) >> shift)
            out = np.clip(y, lo, hi)
        elif soma == 2:  # partial
            out = acc
        elif soma == 3:  # count
            self.v[n0:n1] = np.clip(self.v[n0:n1] + acc, lo, hi)
            out = self.v[n0:n1].copy()
        else:  # lif
            M, Bs = core.membrane_bits, core.beta_shift
            thr, vr, vl, bm = (int(a[k][c]) for k in ("lif_threshold", "lif_v_reset", "lif_v_leak", "lif_beta_mult"))
            mode, ge, rd = int(a["lif_reset_mode"][c]), bool(a["lif_spike_ge"][c]), bool(a["lif_reset_delay"][c])

            def fire(u):
                return (u >= thr) if ge else (u > thr)

            def reset(u):
                if mode == 0:
                    return _sat(u - thr, M)
                if mode == 1:
                    return np.full_like(u, vr)
                return u

            v = self.v[n0:n1]
            r = fire(v) if rd else np.zeros(n_n, dtype=bool)
            u = _sat(vl + (((v - vl) * bm) >> Bs) + acc, M)
            if rd:
                u = np.where(r, reset(u), u)
            s = fire(u)
            self.v[n0:n1] = u if rd else np.where(s, reset(u), u)
            out = s.astype(np.int64)
        self.out[n0:n1] = out

        # events
        ev = self.events[c]
        out_bits = int(a["core_out_bits"][c])
        ib, sb = int(m.in_bytes[c]), int(m.state_bytes[c])
        w_row_bytes = _ceil_div(n_n * int(a["core_w_bits"][c]), 8)
        ev[EVENT_INDEX["mac"]] += 0 if spike_in else n_a * n_n
        ev[EVENT_INDEX["sop"]] += rows * n_n if spike_in else 0
        ev[EVENT_INDEX["neuron_update"]] += n_n
        ev[EVENT_INDEX["spike"]] += int(np.count_nonzero(out)) if out_bits == 1 else 0
        ev[EVENT_INDEX["sram_read_bytes"]] += rows * w_row_bytes + n_a * ib + n_n * sb
        ev[EVENT_INDEX["sram_write_bytes"]] += n_n * sb + n_n * int(value_bytes(out_bits))

        # cycles
        axon = _ceil_div(n_a * ib, core.axon_bandwidth_bytes_per_cycle)
        dendrite = _ceil_div(rows, core.mac_rows) * _ceil_div(n_n, core.mac_cols)
        soma_c = _ceil_div(n_n, core.soma_lanes) * int(m.soma_cycles[c])
        cycles = timing.core_overhead_cycles + axon + dendrite + soma_c
        self.core_cycles[c] += cycles
        return cycles

    # ------------------------------------------------------------------ packets
    def n_packets(self, out_bits: int, values: np.ndarray) -> int:
        """Packets to carry ``values`` (one per route or tap) of ``out_bits`` bits from one core to one place."""
        noc = self.m.chip.noc
        if out_bits == 1 and noc.spike_encoding == "aer":
            return int(np.count_nonzero(values))  # one packet per nonzero spike
        # values packed: ceil(n * bits / 8 / P); a bitmap is the 1-bit case, sent even when all zero
        return _ceil_div(values.shape[0] * out_bits, 8 * noc.packet_payload_bytes)

    def network(self, sends: list[tuple[int, int, int, int]]) -> int:
        """Run the NoC on ``sends`` = [(ready, path, n packets, core charged)] in packet-id order; last delivery."""
        m = self.m
        ready, path = [], []
        for r, p, n, c in sends:
            ready += [r] * n
            path += [p] * n
            ev = self.events[c]
            ev[EVENT_INDEX["packet"]] += n
            ev[EVENT_INDEX["hop"]] += n * int(m.path_hops[p])
            ev[EVENT_INDEX["chip_crossing"]] += n * int(m.path_cross[p])
        if not ready:
            return 0
        deliver = simulate_heap(np.array(ready, np.int64), np.array(path, np.int64), m.path_off, m.path_link,
                                m.path_lat)
        return int(deliver.max())

    # ------------------------------------------------------------------ phases
    def input_phase(self, kind: int, values: dict[int, np.ndarray]) -> int:
        """The host writes graph inputs of ``kind`` (``values``: input index -> [n] int64) into their axons."""
        m, a = self.m, self.m.a
        for i in m.feeds[kind]:
            self.axons[a["in_dst"][i]] = values[int(a["in_input"][i])][a["in_elem"][i]]
        P = m.chip.noc.packet_payload_bytes
        bits = m.chip.core.activation_bits  # inputs travel as 8-bit values from the host
        sends = [(0, path, _ceil_div(n * bits, 8 * P), c) for c, n, path in m.input_pairs[kind]]
        cyc = self.network(sends) + m.chip.timing.barrier_cycles
        self.phase_cycles[m.n_phases + kind] += cyc
        return cyc

    def phase(self, slot: int, cores: np.ndarray) -> int:
        m, a = self.m, self.m.a
        compute = {int(c): self.compute(int(c)) for c in cores}
        sends = []
        for c in cores:  # packet ids: source core ascending, destination ascending, host last
            c = int(c)
            bits = int(a["core_out_bits"][c])
            for d, ridx, path in m.pairs[c]:
                sends.append((compute[c], path, self.n_packets(bits, self.out[a["route_src"][ridx]]), c))
            if c in m.tap_path:  # output taps: 1 byte per spike / 8-bit value, 4 bytes per 32-bit value
                tap_bits = 1 if bits == 1 and m.chip.noc.spike_encoding == "aer" else 8 * int(value_bytes(bits))
                sends.append((compute[c], m.tap_path[c], self.n_packets(tap_bits, self.out[m.taps[c]]), c))
        last = self.network(sends)
        sel = np.flatnonzero((a["route_delayed"] == 0) & np.isin(m.route_src_core, cores))
        for r in sel:  # route order
            self.axons[a["route_dst"][r]] = self.out[a["route_src"][r]]
        cmax = max(compute.values())
        cyc = max(cmax, last) + m.chip.timing.barrier_cycles
        self.phase_cycles[slot] += cyc
        self.phase_compute[slot] += cmax
        return cyc

    def stage(self, s: int) -> int:
        first = sum(len(ph) for ph in self.m.phases[:s])
        return sum(self.phase(first + i, cores) for i, (_, cores) in enumerate(self.m.phases[s]))

    def delayed_routes(self) -> None:
        a = self.m.a
        for r in self.m.delayed:
            self.axons[a["route_dst"][r]] = self.out[a["route_src"][r]]


def run_reference(cm: CoreMap, static_inputs, step_inputs, steps: int, *, batch: int | None = None) -> RawResult:
    """Run every sample of the inputs on the core map with the reference (NumPy) emulator.

    Parameters
    ----------
    cm : CoreMap
    static_inputs : dict graph-input index -> int64 [B, n_elems]
        Quantised values of the inputs of kind ``static`` (indices into ``cm.meta["inputs"]``).
    step_inputs : dict graph-input index -> int64 [B, T, n_elems]
        Quantised values of the inputs of kind ``step``.
    steps : int
        Number of timesteps ``T``.
    batch : int, optional
        Number of samples when the model has no inputs (default 1).
    """
    check_coremap(cm)
    B, T, static, step = prepare_inputs(cm, static_inputs, step_inputs, steps, batch)
    m = _Model(cm)
    out_taps = [cm.arrays["out_src"][cm.arrays["out_off"][k]:cm.arrays["out_off"][k + 1]]
                for k in range(len(m.out_names))]
    outputs = {}
    for k, name in enumerate(m.out_names):
        shape = (B, T, len(out_taps[k])) if m.out_stage[k] == _STEP else (B, len(out_taps[k]))
        outputs[name] = np.zeros(shape, dtype=np.int64)
    v_final = np.zeros((B, m.N), np.int64)
    axon_final = np.zeros((B, m.A), np.int64)
    events = np.zeros((B, m.C, len(EVENT_KINDS)), np.int64)
    core_cycles = np.zeros((B, m.C), np.int64)
    stage_cycles = np.zeros((B, 3), np.int64)
    step_cycles = np.zeros((B, T), np.int64)
    phase_cycles = np.zeros((B, m.n_phases + 2), np.int64)
    phase_compute = np.zeros((B, m.n_phases + 2), np.int64)

    def record(task, stage, b, t=None):
        for k, name in enumerate(m.out_names):
            if m.out_stage[k] == stage:
                if t is None:
                    outputs[name][b] = task.out[out_taps[k]]
                else:
                    outputs[name][b, t] = task.out[out_taps[k]]

    for b in range(B):
        task = _Task(m)
        cyc = 0
        if m.has_inputs[_STATIC]:
            cyc += task.input_phase(_STATIC, {k: v[b] for k, v in static.items()})
        cyc += task.stage(_STATIC)
        stage_cycles[b, 0] = cyc
        record(task, _STATIC, b)
        for t in range(T):
            cyc = 0
            if m.has_inputs[_STEP]:
                cyc += task.input_phase(_STEP, {k: v[b, t] for k, v in step.items()})
            cyc += task.stage(_STEP)
            task.delayed_routes()
            step_cycles[b, t] = cyc
            record(task, _STEP, b, t)
        stage_cycles[b, 1] = step_cycles[b].sum()
        stage_cycles[b, 2] = task.stage(_READOUT)
        record(task, _READOUT, b)
        v_final[b], axon_final[b] = task.v, task.axons
        events[b], core_cycles[b] = task.events, task.core_cycles
        phase_cycles[b], phase_compute[b] = task.phase_cycles, task.phase_compute
    return RawResult(outputs=outputs, v_final=v_final, axon_final=axon_final, events=events,
                     core_cycles=core_cycles, stage_cycles=stage_cycles, step_cycles=step_cycles,
                     latency_cycles=stage_cycles.sum(axis=1), phase_cycles=phase_cycles,
                     phase_compute=phase_compute)
