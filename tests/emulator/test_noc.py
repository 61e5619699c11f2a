"""NoC model: hand-derived latencies, and flows (Numba) == packets (Numba heap, Python heap) == slow cycle-by-cycle model."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from nmc.emulator.noc import (PathTable, flow_program, link_path, simulate, simulate_flows, simulate_heap,
                              simulate_per_cycle)
from nmc.chip import load_chip

MODELS = (simulate, simulate_heap, simulate_per_cycle, simulate_flows)


@pytest.fixture(scope="module")
def chip():
    # port 1, hop 2, chip link 40, I/O 40, pinned so that the hand numbers stay right
    return load_chip("tianjic", overrides={"noc.port_latency_cycles": 1, "noc.hop_latency_cycles": 2,
                                           "noc.chip_link_latency_cycles": 40, "noc.io_latency_cycles": 40,
                                           "cores_x": 12, "cores_y": 13})


def _run_all(table, ready, path):
    off, link, lat, _, _ = table.arrays()
    res = [m(np.array(ready, np.int64), np.array(path, np.int64), off, link, lat) for m in MODELS]
    for r in res[1:]:
        np.testing.assert_array_equal(r, res[0])
    return res[0]


def test_single_packet_latency(chip):
    t = PathTable(chip, 12, 13)
    p = t.add((0, 0), (2, 1))  # inject 1 + 3 hops x 2 + eject 1
    assert _run_all(t, [5], [p]).tolist() == [5 + 1 + 3 * 2 + 1]
    _, _, _, hops, cross = t.arrays()
    assert (hops[p], cross[p]) == (3, 0)


def test_self_packet_is_inject_plus_eject(chip):
    t = PathTable(chip, 12, 13)
    p = t.add((3, 4), (3, 4))
    assert _run_all(t, [0], [p]).tolist() == [2]



def test_path_table_arrays_follow_added_paths(chip):
    """``arrays()`` is kept between calls: a path added later is in the next call's arrays."""
    t = PathTable(chip, 12, 13)
    a = t.add((0, 0), (1, 1))  # links 0, 2, 10, 79 (test_xy_order_x_first)
    off, link, lat, hops, cross = t.arrays()
    assert off.tolist() == [0, 4] and link.tolist() == [0, 2, 10, 79] and lat.tolist() == [1, 2, 2, 1]
    assert t.add((0, 0), (1, 1)) == a and t.arrays()[1] is link  # nothing new: the same arrays
    b = t.add(None, (0, 0))  # I/O in (6 * 12 * 13 = 936), eject of router (0, 0)
    off, link, lat, hops, cross = t.arrays()
    assert b == 1 and off.tolist() == [0, 4, 6] and link.tolist() == [0, 2, 10, 79, 936, 1]
    assert lat.tolist() == [1, 2, 2, 1, 40, 1] and hops.tolist() == [2, 0] and cross.tolist() == [0, 1]
    assert t.ranks().tolist() == [0, 1, 12 + 2 + 0, 12 + 13 + 2, 0, 12 + 13 + 2]

def test_xy_order_x_first(chip):
    links = link_path(chip, 12, 13, (0, 0), (1, 1))
    # inject of router 0, +x link of router (0,0), +y link of router (1,0), eject of router (1,1)
    assert [l for l, _, _ in links] == [0 * 6 + 0, 0 * 6 + 2, 1 * 6 + 4, (1 * 12 + 1) * 6 + 1]


def test_same_path_packets_pipeline(chip):
    t = PathTable(chip, 12, 13)
    p = t.add((0, 0), (2, 1))
    # the second packet waits one cycle at the inject link, then follows one cycle behind
    assert _run_all(t, [0, 0, 0], [p, p, p]).tolist() == [8, 9, 10]


def test_two_packet_contention_tie_goes_to_lower_id(chip):
    t = PathTable(chip, 12, 13)
    a = t.add((0, 0), (2, 0))  # inject, +x, +x: ready at eject of (2,0) at 1+2+2 = 5
    b = t.add((1, 1), (2, 0))  # inject, +x, -y: ready at the same eject at 5
    assert _run_all(t, [0, 0], [a, b]).tolist() == [6, 7]
    assert _run_all(t, [0, 0], [b, a]).tolist() == [6, 7]  # ids swapped: b (id 0) goes first
    # a later-ready packet never overtakes: b ready 1 cycle later arrives at 6 and waits for nobody
    assert _run_all(t, [0, 1], [a, b]).tolist() == [6, 7]
    assert _run_all(t, [1, 0], [a, b]).tolist() == [7, 6]


def test_io_packets(chip):
    t = PathTable(chip, 12, 13)
    i = t.add(None, (1, 0))  # I/O link 40, hop 2, eject 1
    o = t.add((1, 0), None)  # inject 1, hop 2, I/O 40
    assert _run_all(t, [0], [i]).tolist() == [43]
    assert _run_all(t, [10], [o]).tolist() == [53]
    # five input packets share the I/O link: one start per cycle
    assert _run_all(t, [0] * 5, [i] * 5).tolist() == [43, 44, 45, 46, 47]
    _, _, _, hops, cross = t.arrays()
    assert (hops[i], cross[i], hops[o], cross[o]) == (1, 1, 1, 1)


def test_chip_crossing(chip):
    t = PathTable(chip, 24, 13)  # two chips side by side
    p = t.add((11, 0), (12, 0))  # inject 1 + chip link 40 + eject 1
    q = t.add((10, 0), (13, 1))  # inject, hop, chip link, hop (x), hop (y), eject
    assert _run_all(t, [0, 100], [p, q]).tolist() == [42, 100 + 1 + 2 + 40 + 2 + 2 + 1]
    _, _, _, hops, cross = t.arrays()
    assert (hops[p], cross[p], hops[q], cross[q]) == (0, 1, 3, 1)


def _random_grid(rng, seed):
    """A path table on 1, 2 or 4 chips of a small random grid with random link latencies; and its width, height."""
    chips = [(1, 1), (2, 1), (1, 2), (2, 2)][seed % 4]
    over = {"cores_x": int(rng.integers(2, 5)), "cores_y": int(rng.integers(2, 5)),
            "noc.hop_latency_cycles": int(rng.integers(1, 4)), "noc.port_latency_cycles": int(rng.integers(1, 3)),
            "noc.chip_link_latency_cycles": int(rng.integers(3, 12)),
            "noc.io_latency_cycles": int(rng.integers(2, 10))}
    chip = load_chip("tianjic", overrides=over)
    w, h = chip.cores_x * chips[0], chip.cores_y * chips[1]
    return PathTable(chip, w, h), w, h


@pytest.mark.parametrize("seed", range(40))
def test_fast_equals_slow_random(seed):
    rng = np.random.default_rng(seed)
    t, w, h = _random_grid(rng, seed)
    n = int(rng.integers(1, 80))
    ready, path = [], []
    hot = (int(rng.integers(w)), int(rng.integers(h)))  # a hot spot: many packets to one core
    for _ in range(n):
        u = rng.random()
        src = None if u < 0.15 else (int(rng.integers(w)), int(rng.integers(h)))
        dst = None if (src is not None and u > 0.85) else (hot if rng.random() < 0.4 else
                                                           (int(rng.integers(w)), int(rng.integers(h))))
        path.append(t.add(src, dst))
        ready.append(int(rng.integers(0, 15)))
    _run_all(t, ready, path)


def test_the_three_way_comparison_sees_a_model_that_ignores_contention(chip, monkeypatch):
    # _run_all (which test_fast_equals_slow_random relies on) must fail when one model differs: here a model
    # that lets every packet cross its path alone (no waiting at a busy link)
    def no_contention(ready, path, off, link, lat):
        return np.array([r + int(lat[off[p]:off[p + 1]].sum()) for r, p in zip(ready, path)], np.int64)

    t = PathTable(chip, 12, 13)
    p = t.add((0, 0), (2, 1))
    monkeypatch.setattr(sys.modules[__name__], "MODELS", (simulate, no_contention))
    assert _run_all(t, [0], [p]).tolist() == [8]  # one packet alone: the two agree
    with pytest.raises(AssertionError):
        _run_all(t, [0, 0], [p, p])  # [8, 9] with contention, [8, 8] without


def _congested(seed, per_cycle):
    """Seeded random flows (bursts of 1-12 packets) with a hot spot, on 1, 2 or 4 chips."""
    rng = np.random.default_rng(1000 + seed)
    t, w, h = _random_grid(rng, seed)
    ready, path = [], []
    hot = (int(rng.integers(w)), int(rng.integers(h)))
    for _ in range(int(rng.integers(1, 30 if per_cycle else 60))):
        u = rng.random()
        src = None if u < 0.15 else (int(rng.integers(w)), int(rng.integers(h)))
        dst = None if (src is not None and u > 0.85) else (hot if rng.random() < 0.4 else
                                                           (int(rng.integers(w)), int(rng.integers(h))))
        p = t.add(src, dst)
        n, r = int(rng.integers(1, 13)), int(rng.integers(0, 15))
        ready += [r] * n
        path += [p] * n
    return t, np.array(ready, np.int64), np.array(path, np.int64)


@pytest.mark.parametrize("seed", range(60))
def test_flows_equal_packets_and_per_cycle_with_congestion(seed):
    t, ready, path = _congested(seed, per_cycle=seed < 20)
    off, link, lat, _, _ = t.arrays()
    packets = simulate(ready, path, off, link, lat)
    np.testing.assert_array_equal(simulate_flows(ready, path, off, link, lat, t.ranks()), packets)
    np.testing.assert_array_equal(simulate_flows(ready, path, off, link, lat), packets)  # ranks from the paths
    assert simulate_flows(ready, path, off, link, lat, t.ranks(), last_only=True) == packets.max()
    np.testing.assert_array_equal(simulate_heap(ready, path, off, link, lat), packets)
    if seed < 20:
        np.testing.assert_array_equal(simulate_per_cycle(ready, path, off, link, lat), packets)
    # packets waited for each other (contention), so the models were compared on more than sums of latencies
    free_flight = ready + np.array([lat[off[p]:off[p + 1]].sum() for p in path], np.int64)
    assert (packets > free_flight).any()


def test_link_ranks_order_every_path(chip):
    t = PathTable(chip, 24, 26)
    for s in [(0, 0), (5, 7), (23, 25), None]:
        for d in [(0, 0), (11, 3), (23, 0), (0, 25), None]:
            if s is None and d is None:
                continue
            t.add(s, d)
    off, _, _, _, _ = t.arrays()
    r = t.ranks()
    for i in range(off.shape[0] - 1):
        assert (np.diff(r[off[i]:off[i + 1]]) > 0).all()


def _converging(seed):
    """Many multi-packet flows from the cores of a few rows and columns to a few destination cores, ready at a
    few nearby cycles (partial-sum cores sending to their merge cores): flows meet on shared links, overlap
    and are merged, in long clusters."""
    rng = np.random.default_rng(2000 + seed)
    t, w, h = _random_grid(rng, seed)
    dests = [(int(rng.integers(w)), int(rng.integers(h))) for _ in range(int(rng.integers(1, 4)))]
    rows = rng.choice(h, size=min(h, 2), replace=False)
    ready, path = [], []
    for y in rows:
        for x in range(w):
            for d in dests:
                if rng.random() < 0.7:
                    n = int(rng.integers(1, 9)) if rng.random() < 0.5 else 8
                    ready += [int(rng.choice([0, 1, 3, 4, 20]))] * n
                    path += [t.add((x, int(y)), d)] * n
    if rng.random() < 0.5:  # input packets from the host as well
        for d in dests:
            ready += [0] * 5
            path += [t.add(None, d)] * 5
    return t, np.array(ready, np.int64), np.array(path, np.int64)


@pytest.mark.parametrize("seed", range(40))
def test_flows_equal_packets_where_many_flows_converge(seed):
    t, ready, path = _converging(seed)
    off, link, lat, _, _ = t.arrays()
    packets = simulate(ready, path, off, link, lat)
    np.testing.assert_array_equal(simulate_heap(ready, path, off, link, lat), packets)
    if seed < 8:
        np.testing.assert_array_equal(simulate_per_cycle(ready, path, off, link, lat), packets)
    # merged by counting sort (the default), and packet by packet (no span fits the merge buffer)
    np.testing.assert_array_equal(simulate_flows(ready, path, off, link, lat, t.ranks()), packets)
    np.testing.assert_array_equal(simulate_flows(ready, path, off, link, lat, t.ranks(), sort_span=0), packets)
    # the emulator's call: only the last delivery (clusters on their flows' last link served without packet times)
    for span in (None, 0):
        assert simulate_flows(ready, path, off, link, lat, t.ranks(), sort_span=span, last_only=True) == packets.max()
    free_flight = ready + np.array([lat[off[p]:off[p + 1]].sum() for p in path], np.int64)
    assert (packets > free_flight).sum() > len(ready) // 4  # congested: many packets waited


@pytest.mark.parametrize("seed", range(6))
def test_flow_model_in_python_equals_packets(seed):
    """The flow model's Python source (``py_func``, what Numba compiles) run by the interpreter: same answers,
    and every branch of it can be checked with a coverage tool on these cases."""
    t, ready, path = _converging(seed) if seed % 2 else _congested(seed, per_cycle=False)
    off, link, lat, _, _ = t.arrays()
    packets = simulate(ready, path, off, link, lat)
    for span in (None, 0):
        got = simulate_flows(ready, path, off, link, lat, t.ranks(), sort_span=span, python=True)
        np.testing.assert_array_equal(got, packets)
        assert simulate_flows(ready, path, off, link, lat, t.ranks(), sort_span=span, python=True,
                              last_only=True) == packets.max()


@pytest.mark.parametrize("seed", range(30))
def test_flows_equal_packets_on_paths_that_start_mid_way(seed):
    """Paths of any acyclic link order (not XY routes): a link can be the first link of some paths and a later
    one of others, so bursts (all packets ready at once) meet runs and explicit arrivals in one cluster."""
    rng = np.random.default_rng(3000 + seed)
    n_links = int(rng.integers(3, 9))
    link_lat = rng.integers(1, 4, n_links)  # a link has one latency on every path
    paths = [np.sort(rng.choice(n_links, size=int(rng.integers(1, min(n_links, 4) + 1)), replace=False))
             for _ in range(int(rng.integers(2, 7)))]
    off = np.r_[0, np.cumsum([len(p) for p in paths])].astype(np.int64)
    link = np.concatenate(paths).astype(np.int64)
    lat = link_lat[link].astype(np.int64)
    ready, path = [], []
    for _ in range(int(rng.integers(2, 12))):
        n, r, p = int(rng.integers(1, 7)), int(rng.integers(0, 6)), int(rng.integers(len(paths)))
        ready += [r] * n
        path += [p] * n
    ready, path = np.array(ready, np.int64), np.array(path, np.int64)
    packets = simulate(ready, path, off, link, lat)
    np.testing.assert_array_equal(simulate_per_cycle(ready, path, off, link, lat), packets)
    np.testing.assert_array_equal(simulate_heap(ready, path, off, link, lat), packets)
    for span in (None, 0):
        np.testing.assert_array_equal(simulate_flows(ready, path, off, link, lat, sort_span=span), packets)
        assert simulate_flows(ready, path, off, link, lat, sort_span=span, last_only=True) == packets.max()
        if seed < 10:
            np.testing.assert_array_equal(simulate_flows(ready, path, off, link, lat, sort_span=span, python=True),
                                          packets)


def test_burst_meets_a_run_by_hand():
    # link 0 then link 1 (path 0), link 1 alone (path 1); every latency 1.  Packets 0-2 (path 0, ready 0) cross
    # link 0 at 0, 1, 2 and reach link 1 at 1, 2, 3; packets 3, 4 (path 1) are ready at link 1 at 2.  Link 1
    # serves by (time, id): 0 at 1 (delivered 2); at time 2 packets 1, 3, 4 in id order, leaving at 2, 3, 4
    # (delivered 3, 4, 5); packet 2 (arrived at 3) leaves at 5 (delivered 6).
    off, link, lat = np.array([0, 2, 3]), np.array([0, 1, 1]), np.array([1, 1, 1])
    ready, path = np.array([0, 0, 0, 2, 2]), np.array([0, 0, 0, 1, 1])
    for m in MODELS:
        assert m(ready, path, off, link, lat).tolist() == [2, 3, 6, 4, 5]
    for span in (None, 0):
        for python in (False, True):
            got = simulate_flows(ready, path, off, link, lat, sort_span=span, python=python)
            assert got.tolist() == [2, 3, 6, 4, 5]
            assert simulate_flows(ready, path, off, link, lat, sort_span=span, python=python, last_only=True) == 6


def test_flow_program_skips_a_link_fed_by_one_link_by_hand():
    # path 0: links 0, 1, 2 (latencies 1, 2, 1); path 1: links 3, 2 (latencies 3, 1).  Link 1 carries only packets
    # that left link 0, one per cycle at most, so none waits there: it is skipped and its latency added to link 0's
    # (tail 1 + 2 = 3).  Link 2 is fed by links 1 and 3: visited, the last link of both paths (fin).
    off, link, lat = np.array([0, 3, 5]), np.array([0, 1, 2, 3, 2]), np.array([1, 2, 1, 3, 1])
    rank = np.array([0, 1, 2, 0, 2])
    pg = flow_program([np.array([0, 1])], off, link, lat, rank)
    assert pg.s_off.tolist() == [0, 2] and pg.s_path.tolist() == [0, 1]
    assert pg.g_off.tolist() == [0, 3]  # links 0 and 3 (rank 0), link 2 (rank 2)
    assert pg.v_off.tolist() == [0, 1, 2, 4]
    assert pg.v_slot.tolist() == [0, 1, 0, 1]
    assert pg.v_prev.tolist() == [-1, -1, 1, 3]
    assert pg.v_tail.tolist() == [3, 3, 1, 1]
    assert pg.v_fin.tolist() == [0, 0, 1, 1]
    # packets 0-2 (path 0, ready 0) leave link 0 at 0, 1, 2, link 1 at 1, 2, 3 and reach link 2 at 3, 4, 5;
    # packets 3, 4 (path 1, ready 1) leave link 3 at 1, 2 and reach link 2 at 4, 5.  Link 2 by (arrival, id):
    # 0 at 3 (delivered 4); at 4 packets 1, 3 leave at 4, 5 (delivered 5, 6); at 5 packets 2, 4 leave at 6, 7
    # (delivered 7, 8)
    ready, path = np.array([0, 0, 0, 1, 1]), np.array([0, 0, 0, 1, 1])
    for m in MODELS:
        assert m(ready, path, off, link, lat).tolist() == [4, 5, 7, 6, 8]
    for python in (False, True):
        assert simulate_flows(ready, path, off, link, lat, rank, python=python).tolist() == [4, 5, 7, 6, 8]
        assert simulate_flows(ready, path, off, link, lat, rank, python=python, last_only=True) == 8


def test_flows_starting_on_one_link_by_hand():
    # Three paths share their first link 0 (latency 1), then go to links 1, 2 and 1 (latency 1, their last).  Link 0
    # serves bursts whole, by (ready, id).  With the slots ready in slot order (0, 0, 1) the flow model serves link 0
    # without sorting: packets 0, 1 (slot 0) leave at 0, 1; packet 2 (slot 1) at 2; packets 3, 4 (slot 2) at 3, 4.
    # Link 1 (fed by link 0 only, skipped) adds 1: deliveries 2, 3 | 4 | 5, 6 (link 2 likewise).
    off, link, lat = np.array([0, 2, 4, 6]), np.array([0, 1, 0, 2, 0, 1]), np.array([1, 1, 1, 1, 1, 1])
    path = np.array([0, 0, 1, 2, 2])
    in_order = np.array([0, 0, 0, 1, 1])
    # Ready out of slot order (slot 0 at 2, slot 1 at 0, slot 2 at 1): the general path sorts them: packet 2 (slot
    # 1, ready 0) leaves at 0; packets 3, 4 (slot 2, ready 1) at 1, 2; packets 0, 1 (slot 0, ready 2) at 3, 4.
    out_of_order = np.array([2, 2, 0, 1, 1])
    for ready, want in ((in_order, [2, 3, 4, 5, 6]), (out_of_order, [5, 6, 2, 3, 4])):
        for m in MODELS:
            assert m(ready, path, off, link, lat).tolist() == want
        for python in (False, True):
            assert simulate_flows(ready, path, off, link, lat, python=python).tolist() == want
            assert simulate_flows(ready, path, off, link, lat, python=python, last_only=True) == max(want)


def test_two_runs_merge_by_hand():
    # Path 0: links 0, 2, 3; path 1: links 1, 2, 4; every latency 1.  Links 3 and 4 are fed by link 2 only (skipped),
    # so link 2 is the last visited link of both.  Three packets ready at link 0 at 0 reach link 2 as a run at 1, 2, 3
    # (x); three ready at link 1 at 1 reach it at 2, 3, 4 (y): one cluster of two runs.  Link 2 is busy from 1 until
    # all six have left (1 .. 6), in (time, id) order, then 2 cycles to delivery.
    off, link, lat = np.array([0, 3, 6]), np.array([0, 2, 3, 1, 2, 4]), np.array([1, 1, 1, 1, 1, 1])
    cases = (
        # x has the lower ids: 1: x0; 2: x1, y0; 3: x2, y1; 4: y2 -> leave 1, 2, 4 (x) and 3, 5, 6 (y)
        (np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 0, 1, 1, 1]), [3, 4, 6, 5, 7, 8]),
        # y has the lower ids: 1: x0; 2: y0, x1; 3: y1, x2; 4: y2 -> leave 2, 4, 6 (y) and 1, 3, 5 (x)
        (np.array([1, 1, 1, 0, 0, 0]), np.array([1, 1, 1, 0, 0, 0]), [4, 6, 8, 3, 5, 7]),
        # y arrives after x's last (4, 5 against 1, 2, 3): two clusters, none waits
        (np.array([0, 0, 0, 3, 3]), np.array([0, 0, 0, 1, 1]), [3, 4, 5, 6, 7]),
    )
    for ready, path, want in cases:
        for m in MODELS:
            assert m(ready, path, off, link, lat).tolist() == want
        for python in (False, True):
            assert simulate_flows(ready, path, off, link, lat, python=python).tolist() == want
            assert simulate_flows(ready, path, off, link, lat, python=python, last_only=True) == max(want)


def test_runs_merge_behind_a_busy_link_by_hand():
    # As above (x on links 0, 2, 3; y on links 1, 2, 4), and a third path z starting at link 2 (links 2, 3): its four
    # packets, ready at link 2 at 1, leave it at 1 .. 4.  x and y (ready at 1 at links 0 and 1) reach link 2 at 2, 3
    # each: a cluster of two runs that finds the link busy until 5, then leaves by (time, id): x0, y0, x1, y1 at
    # 5 .. 8.  Ids: z 0-3, x 4-5, y 6-7; every latency 1, two cycles from link 2 to delivery.
    off, link, lat = np.array([0, 3, 6, 8]), np.array([0, 2, 3, 1, 2, 4, 2, 3]), np.ones(8, np.int64)
    ready, path = np.array([1, 1, 1, 1, 1, 1, 1, 1]), np.array([2, 2, 2, 2, 0, 0, 1, 1])
    want = [3, 4, 5, 6, 7, 9, 8, 10]
    for m in MODELS:
        assert m(ready, path, off, link, lat).tolist() == want
    for python in (False, True):
        assert simulate_flows(ready, path, off, link, lat, python=python).tolist() == want
        assert simulate_flows(ready, path, off, link, lat, python=python, last_only=True) == 10


def test_flow_program_of_no_packets_and_empty_phases():
    off, link, lat = np.array([0, 2]), np.array([0, 1]), np.array([1, 1])
    pg = flow_program([np.zeros(0, np.int64), np.array([0, 0])], off, link, lat, np.array([0, 1]))
    assert pg.s_off.tolist() == [0, 0, 2] and pg.g_off.tolist() == [0, 0, 1] and pg.v_off.tolist() == [0, 2]
    # link 1 is fed by link 0 only (skipped): one group (link 0) with a visit per slot, with the whole path's latency
    assert pg.v_slot.tolist() == [0, 1] and pg.v_tail.tolist() == [2, 2] and pg.v_fin.tolist() == [1, 1]


@pytest.mark.parametrize("chip_name", ["tianjic", "tianjicx", "loihi"])
def test_paths_added_at_once_are_link_path_s_routes_numbered_in_order_of_first_use(chip_name):
    """PathTable.add_many (vectorised XY routes, used for large maps) against link_path one path at a time: the
    same links, latencies, hop and crossing counts and path numbers, with host ends and chip boundaries."""
    from nmc.chip import load_chip
    from nmc.emulator.noc import PathTable
    chip = load_chip(chip_name)
    rng = np.random.default_rng(0)
    W, H = chip.cores_x * 3, chip.cores_y * 2
    n = 2000
    src = np.stack([rng.integers(0, W, n), rng.integers(0, H, n)], 1)
    dst = np.stack([rng.integers(0, W, n), rng.integers(0, H, n)], 1)
    src[rng.random(n) < 0.1] = -1
    dst[(src[:, 0] >= 0) & (rng.random(n) < 0.1)] = -1
    one, many = PathTable(chip, W, H), PathTable(chip, W, H)
    want = [one.add(None if s[0] < 0 else tuple(s), None if d[0] < 0 else tuple(d)) for s, d in zip(src, dst)]
    got = np.concatenate([many.add_many(src[:700], dst[:700]), many.add_many(src[700:], dst[700:])])
    np.testing.assert_array_equal(got, want)
    for a, b in zip(one.arrays(), many.arrays()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="outside"):
        many.add_many(np.array([[W, 0]]), np.array([[0, 0]]))
    with pytest.raises(ValueError, match="one end"):
        many.add_many(np.array([[-1, -1]]), np.array([[-1, -1]]))
