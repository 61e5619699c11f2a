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

from nmc.chip import load_chip
from nmc.emulator import EVENT_KINDS, run_numba, run_reference
from nmc.emulator.timing import core_cycles
from randmaps import build_coremap

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
