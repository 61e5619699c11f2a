"""The reference emulator: a plain, readable NumPy implementation of docs/numerics.md and
docs/timing_energy.md.  It *is* the executable numerics spec; ``emulator/kernels.py`` (Numba) must
equal it bit for bit on every field of :class:`RawResult`.

One task (sample) runs:

1. reset: neuron state words ``= neurons.state_init``, axons ``= axons.init``, output registers ``= 0``;
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
delivery + barrier).  Phases are the distinct ``cores.phase`` values of a stage's cores, so a stage
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
  ``out_bits == 1`` (whatever its soma);
* route packets go per router-table entry (``cm.router``), in entry order: destination cores
  ascending, the host port (output taps) last;
* delayed routes (from any core) are written after the step's phases, before the step outputs are
  recorded; two writers of one axon in one phase: the later route (route order) wins.
"""
from __future__ import annotations

import numpy as np

from nmc.coremap import CoreMap, check_coremap, value_bytes
from nmc.neurons._int import sat

from .noc import simulate_heap
from .prepare import prepare_inputs
from .result import EVENT_INDEX, EVENT_KINDS, RawResult
from .schedule import Schedule, build_schedule, pack_inputs
from .timing import cdiv, core_cycles, timing_rows

__all__ = ["run_reference"]

_STATIC, _STEP, _READOUT = 0, 1, 2


class _Task:
    """State and counters of one sample."""

    def __init__(self, cm: CoreMap, sch: Schedule):
        self.cm, self.sch, self.chip = cm, sch, cm.chip
        self.models = cm.models()
        self.state = cm.neurons.state_init.astype(np.int64).copy()
        self.axons = cm.axons.init.astype(np.int64).copy()
        self.out = np.zeros(cm.num_neurons, dtype=np.int64)
        self.events = np.zeros((cm.num_cores, len(EVENT_KINDS)), dtype=np.int64)
        self.core_cycles = np.zeros(cm.num_cores, dtype=np.int64)
        n_ph = sch.ph_off.shape[0] - 1
        self.phase_cycles = np.zeros(n_ph + 2, dtype=np.int64)
        self.phase_compute = np.zeros(n_ph + 2, dtype=np.int64)

    # ------------------------------------------------------------------ one core
    def compute(self, c: int) -> int:
        """Run core ``c`` (dendrite, soma, output register); count its events; return its compute cycles."""
        cm, sch, core = self.cm, self.sch, self.chip.core
        cs = cm.cores
        n0, n1 = int(cs.neuron_off[c]), int(cs.neuron_off[c + 1])
        a0, a1 = int(cs.axon_off[c]), int(cs.axon_off[c + 1])
        n_n, n_a = n1 - n0, a1 - a0
        x = self.axons[a0:a1].copy()
        W = cm.core_weights(c).astype(np.int64)
        spike_in = bool(cs.spike_in[c])
        rows = int(np.count_nonzero(x)) if spike_in else n_a  # event driven: only nonzero axons are read

        # dendrite
        if cs.dendrite[c] == 0:  # mac
            acc = sat(cm.neurons.bias[n0:n1].astype(np.int64) + x @ W, core.accumulator_bits)
        else:  # max over the axons with a nonzero weight
            acc = np.where(W != 0, x[:, None], np.iinfo(np.int64).min).max(axis=0)

        # soma: the core's neuron model (its state words are a view: the step updates them)
        model = self.models[c]
        out = model.ref_step(acc, self.state[n0:n1], cm.neurons.param[n0:n1].astype(np.int64), cs.param[c], int(cs.out_lo[c]),
                             int(cs.out_hi[c]), core)
        self.out[n0:n1] = out

        # events
        ev = self.events[c]
        out_bits = int(cs.out_bits[c])
        ib, sb, wb = int(sch.in_b[c]), int(sch.st_b[c]), int(sch.w_row_b[c])
        ev[EVENT_INDEX["mac"]] += 0 if spike_in else n_a * n_n
        ev[EVENT_INDEX["sop"]] += rows * n_n if spike_in else 0
        ev[EVENT_INDEX["neuron_update"]] += n_n
        ev[EVENT_INDEX["spike"]] += int(np.count_nonzero(out)) if out_bits == 1 else 0
        ev[EVENT_INDEX["sram_read_bytes"]] += rows * wb + n_a * ib + n_n * sb
        ev[EVENT_INDEX["sram_write_bytes"]] += n_n * sb + n_n * int(value_bytes(out_bits))
        ev[EVENT_INDEX["lut_read"]] += n_n * int(sch.lut_rd[c])  # one table read per update of a table soma

        t = self.chip.timing
        t_rows = int(timing_rows(spike_in, int(np.count_nonzero(x)), n_a, t.spike_input_timing == "dense"))
        cycles = int(core_cycles(t.core_overhead_cycles, n_a, ib, core.axon_bandwidth_bytes_per_cycle, t_rows,
                                 core.mac_rows, n_n, core.mac_cols, core.soma_lanes, int(sch.soma_cyc[c]), wb,
                                 core.weight_bandwidth_bytes_per_cycle))
        self.core_cycles[c] += cycles
        return cycles

    # ------------------------------------------------------------------ packets
    def n_packets(self, out_bits: int, values: np.ndarray) -> int:
        """Packets to carry ``values`` (one per route or tap) of ``out_bits`` bits from one core to one place."""
        noc = self.chip.noc
        if out_bits == 1 and noc.spike_encoding == "aer":
            return int(np.count_nonzero(values))  # one packet per nonzero spike
        # values packed: ceil(n * bits / 8 / P); a bitmap is the 1-bit case, sent even when all zero
        return cdiv(values.shape[0] * out_bits, 8 * noc.packet_payload_bytes)

    def network(self, sends: list[tuple[int, int, int, int]]) -> int:
        """Run the NoC on ``sends`` = [(ready, path, n packets, core charged)] in packet-id order; last delivery."""
        sch = self.sch
        ready, path = [], []
        for r, p, n, c in sends:
            ready += [r] * n
            path += [p] * n
            ev = self.events[c]
            ev[EVENT_INDEX["packet"]] += n
            ev[EVENT_INDEX["hop"]] += n * int(sch.path_hops[p])
            ev[EVENT_INDEX["chip_crossing"]] += n * int(sch.path_cross[p])
        if not ready:
            return 0
        deliver = simulate_heap(np.array(ready, np.int64), np.array(path, np.int64), sch.path_off, sch.path_link,
                                sch.path_lat)
        return int(deliver.max())

    # ------------------------------------------------------------------ phases
    def input_phase(self, kind: int, values: np.ndarray) -> int:
        """The host writes the packed graph inputs of ``kind`` (``values`` [n columns]) into their axons."""
        sch = self.sch
        dst, col, cores, counts, paths = ((sch.sf_dst, sch.sf_col, sch.sp_core, sch.sp_n, sch.sp_path) if kind == _STATIC
                                          else (sch.tf_dst, sch.tf_col, sch.tp_core_in, sch.tp_n_in, sch.tp_path_in))
        self.axons[dst] = values[col]
        P = self.chip.noc.packet_payload_bytes
        bits = self.chip.core.activation_bits  # inputs travel as 8-bit values from the host
        sends = [(0, int(p), cdiv(int(n) * bits, 8 * P), int(c)) for c, n, p in zip(cores, counts, paths)]
        cyc = self.network(sends) + self.chip.timing.barrier_cycles
        self.phase_cycles[sch.ph_off.shape[0] - 1 + kind] += cyc
        return cyc

    def phase(self, ph: int) -> int:
        cm, sch = self.cm, self.sch
        cores = sch.ph_cores[sch.ph_off[ph]:sch.ph_off[ph + 1]]
        compute = {int(c): self.compute(int(c)) for c in cores}
        sends = []
        rt = cm.router
        for c in cores:  # packet ids: source core ascending, then its router entries in order (host last)
            c = int(c)
            bits = int(cm.cores.out_bits[c])
            for e in range(int(rt.off[c]), int(rt.off[c + 1])):
                if rt.dst[e] >= 0:
                    src = cm.routes.src[rt.route_off[e]:rt.route_off[e + 1]]
                    n = self.n_packets(bits, self.out[src])
                else:  # output taps: 1 byte per spike / 8-bit value, 4 bytes per 32-bit value
                    tap_bits = 1 if bits == 1 and self.chip.noc.spike_encoding == "aer" else 8 * int(value_bytes(bits))
                    n = self.n_packets(tap_bits, self.out[sch.tp_neur[sch.tp_off[c]:sch.tp_off[c + 1]]])
                sends.append((compute[c], int(sch.ent_path[e]), n, c))
        last = self.network(sends)
        for r in sch.ph_routes[sch.ph_r_off[ph]:sch.ph_r_off[ph + 1]]:  # route order
            self.axons[cm.routes.dst[r]] = self.out[cm.routes.src[r]]
        cmax = max(compute.values())
        cyc = max(cmax, last) + self.chip.timing.barrier_cycles
        self.phase_cycles[ph] += cyc
        self.phase_compute[ph] += cmax
        return cyc

    def stage(self, s: int) -> int:
        return sum(self.phase(ph) for ph in range(int(self.sch.stage_ph[s]), int(self.sch.stage_ph[s + 1])))

    def delayed_routes(self) -> None:
        r = self.sch.dl_routes
        self.axons[self.cm.routes.dst[r]] = self.out[self.cm.routes.src[r]]


def run_reference(cm: CoreMap, static_inputs, step_inputs, steps: int, *, batch: int | None = None,
                  jobs: int = 1, checked: bool = False) -> RawResult:
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
    jobs : int
        Accepted for the runners' common signature; the reference runs one sample after another.
    checked : bool
        The caller has run :func:`nmc.coremap.check_coremap` on ``cm`` already (``nmc.emulate`` validates every
        core map it runs); else it runs here.
    """
    if not checked:
        check_coremap(cm)
    B, T, static, step = prepare_inputs(cm, static_inputs, step_inputs, steps, batch)
    sch = build_schedule(cm)
    S, St = pack_inputs(cm, static, step, B, T)
    kinds = [inp["kind"] for inp in cm.meta["inputs"]]
    has_static, has_step = "static" in kinds, "step" in kinds
    outs = cm.meta["outputs"]
    stage_code = {"static": _STATIC, "step": _STEP, "readout": _READOUT}
    out_taps = [cm.taps.src[cm.taps.off[k]:cm.taps.off[k + 1]] for k in range(len(outs))]
    outputs = {o["name"]: np.zeros((B, T, len(t)) if o["stage"] == "step" else (B, len(t)), dtype=np.int64)
               for o, t in zip(outs, out_taps)}
    n_ph = sch.ph_off.shape[0] - 1
    state_final = np.zeros((B,) + cm.neurons.state_init.shape, np.int64)
    axon_final = np.zeros((B, cm.num_axons), np.int64)
    events = np.zeros((B, cm.num_cores, len(EVENT_KINDS)), np.int64)
    core_cyc = np.zeros((B, cm.num_cores), np.int64)
    stage_cycles = np.zeros((B, 3), np.int64)
    step_cycles = np.zeros((B, T), np.int64)
    phase_cycles = np.zeros((B, n_ph + 2), np.int64)
    phase_compute = np.zeros((B, n_ph + 2), np.int64)

    def record(task, stage, b, t=None):
        for o, taps in zip(outs, out_taps):
            if stage_code[o["stage"]] == stage:
                if t is None:
                    outputs[o["name"]][b] = task.out[taps]
                else:
                    outputs[o["name"]][b, t] = task.out[taps]

    for b in range(B):
        task = _Task(cm, sch)
        cyc = task.input_phase(_STATIC, S[b]) if has_static else 0
        cyc += task.stage(_STATIC)
        stage_cycles[b, 0] = cyc
        record(task, _STATIC, b)
        for t in range(T):
            cyc = task.input_phase(_STEP, St[b, t]) if has_step else 0
            cyc += task.stage(_STEP)
            task.delayed_routes()
            step_cycles[b, t] = cyc
            record(task, _STEP, b, t)
        stage_cycles[b, 1] = step_cycles[b].sum()
        stage_cycles[b, 2] = task.stage(_READOUT)
        record(task, _READOUT, b)
        state_final[b], axon_final[b] = task.state, task.axons
        events[b], core_cyc[b] = task.events, task.core_cycles
        phase_cycles[b], phase_compute[b] = task.phase_cycles, task.phase_compute
    return RawResult(outputs=outputs, state_final=state_final, axon_final=axon_final, events=events,
                     core_cycles=core_cyc, stage_cycles=stage_cycles, step_cycles=step_cycles,
                     latency_cycles=stage_cycles.sum(axis=1), phase_cycles=phase_cycles,
                     phase_compute=phase_compute)
