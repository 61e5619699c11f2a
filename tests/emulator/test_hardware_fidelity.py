"""The presets reproduce the published timing of the chips they model (docs/timing_energy.md).

Every expected number here is a published figure or a hand derivation from the preset's sourced fields:
* Tianjic: one compute + communicate round of a full core (256 inputs x 256 neurons) takes about 5,050 clock
  cycles (IEEE Circuits and Systems Magazine 2022 Q2); the > 610 GB/s internal memory bandwidth (Nature 2019)
  is 13 B per cycle per core at 300 MHz and 156 cores.
* TianjicX: BiMap's primitive cycle model runs fully connected layers at 32 MACs per cycle per core and a
  256-neuron LIF update in 454 cycles (7 per 4 neurons), whatever the number of input spikes.
* Loihi: 128 cores behind an 8 x 4 mesh of routers, 4 cores per router (Davies et al. 2018).
"""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nmc.calibration import snn_benchmark
from nmc.chip import load_chip
from nmc.emulator import EVENT_KINDS, run_numba, run_reference
from nmc.emulator.cost import check_schedule, pipeline, price_run
from nmc.emulator.timing import core_cycles
from nmc.errors import InputError
from randmaps import build_coremap, hand_chip

#: CAS Magazine 2022 Q2: clock cycles of one compute + communicate round of a 256 x 256 Tianjic core
PUBLISHED_TIANJIC_ROUND = 5050


def _round(chip, snn: bool, rate: float = 1.0, seed: int = 0):
    """A full core (256 axons x 256 neurons, ternary weights: 16 KB, the only precision whose 256 x 256 block
    fits Tianjic's 22 KB) in phase 0 sending its 256 outputs to a neighbour in phase 1; returns the run."""
    rng = np.random.default_rng(seed)
    W = rng.integers(-1, 2, (256, 256))
    if snn:
        c0 = dict(W=W, x=0, y=0, phase=0, model="lif", bits=1, lo=0, hi=1, spike_in=1, w_bits=2,
                  cparam=dict(threshold=1, spike_ge=1))
        inp = {"name": "s", "kind": "step", "shape": [256], "scale": 1.0, "lo": 0, "hi": 1}
        x = (rng.random((1, 1, 256)) < rate).astype(np.int64)
    else:
        c0 = dict(W=W, x=0, y=0, phase=0, bits=8, w_bits=2, mult=1, shift=4)
        inp = {"name": "s", "kind": "step", "shape": [256], "scale": 1.0, "lo": -128, "hi": 127}
        x = rng.integers(0, 128, (1, 1, 256))
    c1 = dict(W=np.ones((256, 1), dtype=int), x=1, y=0, phase=1, bits=8, spike_in=int(snn), w_bits=2)
    cm = build_coremap(chip, [c0, c1], inputs=[inp], feeds=[(0, i, 0, i) for i in range(256)],
                       routes=[(0, j, 1, j, 0) for j in range(256)])
    ref = run_reference(cm, {}, {0: x}, 1)
    nb = run_numba(cm, {}, {0: x}, 1)
    assert ref.differences(nb) == []
    return ref


@pytest.mark.parametrize("snn", [False, True], ids=["ann", "snn"])
def test_tianjic_full_core_round_takes_the_published_5050_cycles(snn):
    r = _round(load_chip("tianjic"), snn)  # SNN: every input spikes, the round's dense case
    round_cycles = int(r.phase_cycles[0, 0])  # phase 0: compute, the 256 outputs to the neighbour, barrier
    assert round_cycles == pytest.approx(PUBLISHED_TIANJIC_ROUND, rel=0.25)
    # by hand from the preset's fields: 420 overhead + 256*1/16 axon + max(256 rows * 16 neuron groups,
    # ceil(256 rows * 64 B / 13 B)) + 64 lane batches * (7 LIF | 4 ANN)
    assert int(r.core_cycles[0, 0]) == 420 + 16 + max(256 * 16, -(-256 * 64 // 13)) + 64 * (7 if snn else 4)


def test_tianjic_spike_rounds_are_event_driven():
    """Tianjic's SNN dendrite reads only the weight rows of the axons that spiked (Nature 2019)."""
    dense = _round(load_chip("tianjic"), True, rate=1.0)
    sparse = _round(load_chip("tianjic"), True, rate=0.2, seed=1)
    nz = int(sparse.events[0, 0, list(EVENT_KINDS).index("sop")]) // 256  # rows that spiked
    assert int(sparse.core_cycles[0, 0]) == 420 + 16 + nz * 16 + 64 * 7 < int(dense.core_cycles[0, 0])


def test_tianjic_weight_reads_are_bounded_by_the_published_bandwidth():
    # int8 rows of 256 weights: the MAC array would need 16 cycles a row, the 13 B/cycle SRAM needs 256/13
    chip = load_chip("tianjic")
    assert chip.core.weight_bandwidth_bytes_per_cycle == 610_000_000_000 // 156 // 300_000_000  # 13
    W = np.ones((64, 256), dtype=int)
    cm = build_coremap(chip, [dict(W=W, x=0, y=0, bits=8, w_bits=8, mult=1, shift=8)],
                       inputs=[{"name": "s", "kind": "step", "shape": [64], "scale": 1.0, "lo": -128, "hi": 127}],
                       feeds=[(0, i, 0, i) for i in range(64)])
    r = run_reference(cm, {}, {0: np.ones((1, 1, 64), np.int64)}, 1)
    assert int(r.core_cycles[0, 0]) == 420 + 4 + -(-64 * 256 // 13) + 64 * 4  # 1,261 > 64 * 16 = 1,024


def test_tianjicx_primitive_cycles_match_bimap():
    chip = load_chip("tianjicx")
    c, t = chip.core, chip.timing
    # a 256-neuron LIF update alone (no axon rows): BiMap's 454 cycles
    assert core_cycles(t.core_overhead_cycles, 0, 1, c.axon_bandwidth_bytes_per_cycle, 0, c.mac_rows, 256,
                       c.mac_cols, c.soma_lanes, t.soma_lif_cycles, 0, c.weight_bandwidth_bytes_per_cycle) == 454
    # fully connected 256 x 256 at 32 MACs per cycle: 2,048 dendrite cycles
    assert c.mac_rows * c.mac_cols == 32
    ann = _round(chip, snn=False)
    assert int(ann.core_cycles[0, 0]) == 6 + 256 // 32 + 65536 // 32 + 64 * 4


def test_tianjicx_cycle_counts_do_not_depend_on_input_spikes():
    chip = load_chip("tianjicx")
    counts = {int(_round(chip, True, rate=r, seed=s).core_cycles[0, 0]) for r, s in ((0.05, 1), (0.5, 2), (1.0, 3))}
    assert counts == {6 + 256 // 32 + 65536 // 32 + 454 - 6}  # overhead, axon, FC rows, LIF soma


def test_loihi_grid_is_8_x_4_router_tiles_of_4_cores():
    chip = load_chip("loihi")
    assert (chip.cores_x, chip.cores_y) == (8, 4)
    assert chip.cores_per_chip * chip.core.neurons // 1024 == 128  # 128 Loihi cores of 1,024 compartments
    # static power: 0.8 mW per Loihi core (see the preset's derivation) = about 0.1 W per chip
    assert chip.energy.static_power_per_core_w * chip.cores_per_chip == pytest.approx(0.8e-3 * 128)


# --------------------------------------------------------------------------- the pipelined schedule
def test_pipelined_schedule_throughput_is_one_over_the_slowest_stage_by_hand():
    """Three ANN cores in a chain, phases 0, 1, 2, on the HAND chip (tests/randmaps.py): the busiest slot sets
    the interval; one task's latency is 3 slots (+ the input slot) of the slowest per stage."""
    chip = hand_chip()
    cores = [dict(W=np.ones((1, 1), int), x=0, y=0, stage=0, phase=0), dict(W=np.ones((1, 40), int), x=1, y=0, stage=0,
             phase=1), dict(W=np.ones((40, 1), int), x=2, y=0, stage=0, phase=2)]
    cm = build_coremap(chip, cores, inputs=[{"name": "x", "kind": "static", "shape": [1], "scale": 1.0, "lo": -128,
                                            "hi": 127}], feeds=[(0, 0, 0, 0)],
                       routes=[(0, 0, 1, 0, 0)] + [(1, j, 2, j, 0) for j in range(40)], outputs=[("y", "static", [(2, 0)])])
    r = run_reference(cm, {0: np.array([[1]])}, {}, 1)
    # compute: core 0: 16 + 1 + 1 + 1 = 19; core 1: 16 + 1 + 1*ceil(40/16)=3 + ceil(40/16)*1=3 -> 23;
    # core 2: 16 + ceil(40/16)=3 + ceil(40/16)*1=3 + 1 = 23
    assert r.core_cycles.tolist() == [[19, 23, 23]]
    # phase 0: 1 packet (0,0)->(1,0): 19 + 1 + 2 + 1 = 23, + barrier 32 = 55
    # phase 1: 40 values = 5 packets to (2,0): 23 + 4 + 4 = 31, + 32 = 63
    # phase 2: 1 tap to the host from (2,0): 23 + 1 + 2 * 2 + 40 = 68, + 32 = 100
    # input: 1 packet host -> (0,0): 40 + 1 = 41, + 32 = 73
    assert r.phase_cycles.tolist() == [[55, 63, 100, 73, 0]]
    pl = pipeline(cm, r)
    assert pl.interval_cycles.tolist() == [100]  # the readout-like phase 2 is the slowest stage
    assert pl.latency_cycles.tolist() == [4 * 100]  # 4 busy slots of the static stage, each 100
    pr = price_run(cm, r, "pipelined")
    assert pr.interval_s.tolist() == [100 / chip.clock_hz]
    seq = price_run(cm, r)
    assert seq.interval_s.tolist() == [(55 + 63 + 100 + 73) / chip.clock_hz]
    # static energy is paid for the interval: 156 cores * P * 100 cycles
    assert pr.static_used_j.sum() + pr.static_idle_j.sum() == pytest.approx(
        chip.energy.static_power_per_core_w * 156 * 100 / chip.clock_hz)


def test_pipelined_snn_steps_overlap_and_outputs_are_unchanged():
    """A feed-forward SNN: the pipelined report's outputs equal the sequential one's; the interval is the
    busiest phase's cycles over the task, the latency (T + n - 1) slots of the slowest per-step phase."""
    chip = load_chip("tianjic")
    model, inputs = snn_benchmark(chip, width=64, layers=3, steps=5, rate=0.3, threshold=8.0, w_lo=-2, seed=9)
    cm = nmc.compile(model, chip=chip, calib=inputs)
    seq = nmc.emulate(cm, inputs)
    pip = nmc.emulate(cm, inputs, schedule="pipelined")
    for k in seq.outputs:
        np.testing.assert_array_equal(seq.outputs[k], pip.outputs[k])
    pc = seq.result.phase_cycles[0]
    busy = pc[pc > 0]  # 3 layer phases + the step input phase, each over 5 steps
    assert busy.shape == (4,)
    per_step = np.ceil(busy.max() / 5)
    assert pip.report["per_task"]["latency_cycles"][0] == (5 + 4 - 1) * per_step
    assert pip.report["interval_cycles"] == pytest.approx(seq.result.phase_cycles.max(axis=1).mean())
    assert pip.report["throughput_tasks_per_s"] == pytest.approx(chip.clock_hz / pip.report["interval_cycles"])
    assert seq.report["interval_cycles"] == seq.report["latency_cycles"]


def test_pipelined_schedule_refuses_recurrent_models():
    chip = load_chip("tianjic")
    cm = build_coremap(chip, [dict(W=np.ones((1, 1), int), x=0, y=0)], routes=[(0, 0, 0, 0, 1)])
    with pytest.raises(InputError, match="recurrent"):
        check_schedule(cm, "pipelined")
    with pytest.raises(InputError, match="unknown schedule"):
        check_schedule(cm, "fast")
