"""Placement strategies (zigzag, greedy, locality, profile), their measures, and ``--chips auto``: property tests on
seeded random traffic graphs and hand-derived figures on small ones."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

import nmc
from nmc.chip import load_chip
from nmc.errors import InputError
from nmc.mapper.place import PLACERS, place, placement_metrics
from nets import lossless_snn, spike_inputs

STRATEGIES = ("zigzag", "linear", "greedy", "locality", "profile")


def random_dag(seed: int) -> tuple[nx.DiGraph, int]:
    """A seeded random layered traffic graph: 5 .. 120 cores, forward edges with weights 1 .. 300, some cores
    talking to the host; the number of cores is returned too."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 121))
    g = nx.DiGraph()
    g.add_nodes_from(range(n), host=0.0)
    for u in range(n):
        for v in rng.choice(np.arange(u + 1, n), size=min(n - u - 1, int(rng.integers(0, 4))), replace=False) \
                if u + 1 < n else []:
            g.add_edge(u, int(v), weight=int(rng.integers(1, 301)))
        if rng.random() < 0.1:
            g.nodes[u]["host"] = float(rng.integers(1, 50))
    return g, n


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_core_is_placed_once_on_a_free_position_and_the_map_is_reproducible(seed, strategy):
    chip = load_chip("tianjic", {"cores_x": 6, "cores_y": 5})
    dag, n = random_dag(seed)
    chips = (-(-n // 30), 1) if seed % 2 else (2, -(-n // 60))
    W, H = chip.grid(*chips)
    pos = place(dag, chip, chips, strategy, ["l"] * n)
    assert pos.shape == (n, 2)
    assert np.all((pos[:, 0] >= 0) & (pos[:, 0] < W) & (pos[:, 1] >= 0) & (pos[:, 1] < H))
    assert len({tuple(p) for p in pos.tolist()}) == n  # no position used twice
    again = place(random_dag(seed)[0], chip, chips, strategy, ["l"] * n)  # same seed, a fresh graph
    np.testing.assert_array_equal(pos, again)


def test_locality_beats_zigzag_on_random_graphs():
    chip = load_chip("tianjic", {"cores_x": 8, "cores_y": 8})
    z = loc = 0.0
    for seed in range(6):
        dag, n = random_dag(100 + seed)
        z += placement_metrics(dag, place(dag, chip, (2, 2), "zigzag", ["l"] * n), chip)["traffic_hops"]
        loc += placement_metrics(dag, place(dag, chip, (2, 2), "locality", ["l"] * n), chip)["traffic_hops"]
    assert loc < 0.7 * z, (loc, z)


def test_metrics_by_hand():
    # 0 -> 1 (5 values) from (0, 0) to (2, 1): X links (0,0)->(1,0)->(2,0), then Y link (2,0)->(2,1): 3 hops;
    # 2 -> 1 (2 values) from (2, 0) to (2, 1): the same Y link, 1 hop.  Chips are 2 cores wide, so 0 -> 1 crosses
    # one chip boundary (x = 1 -> 2).  traffic x hops = 5*3 + 2*1 = 17; the Y link carries 7; crossings 5.
    chip = load_chip("tianjic", {"cores_x": 2, "cores_y": 2})
    dag = nx.DiGraph()
    dag.add_edge(0, 1, weight=5)
    dag.add_edge(2, 1, weight=2)
    m = placement_metrics(dag, np.array([[0, 0], [2, 1], [2, 0]]), chip)
    assert m == {"traffic_hops": 17.0, "max_link_load": 7.0, "chip_crossings": 5.0}


def test_locality_puts_two_cliques_on_two_squares():
    # two 4-cliques (weight 10 per pair) joined by one edge of weight 1 on a 4 x 2 grid.  A clique on a 2 x 2
    # square: 4 adjacent pairs (1 hop) + 2 diagonals (2 hops) = 8 hops, 80 per clique; the bridge at best 1 hop:
    # 161 is the optimum.  The zigzag puts each clique on a row: 1+2+3+1+2+1 = 10 hops, 100 per clique.
    chip = load_chip("tianjic", {"cores_x": 4, "cores_y": 2})
    dag = nx.DiGraph()
    for block in (range(0, 4), range(4, 8)):
        dag.add_edges_from(((u, v, {"weight": 10}) for u in block for v in block if u < v))
    dag.add_edge(3, 4, weight=1)
    z = placement_metrics(dag, place(dag, chip, (1, 1), "zigzag", ["l"] * 8), chip)["traffic_hops"]
    loc = placement_metrics(dag, place(dag, chip, (1, 1), "locality", ["l"] * 8), chip)["traffic_hops"]
    assert z == 200 + 1 and loc == 161


def test_zigzag_is_linear():
    assert PLACERS["zigzag"] is PLACERS["linear"]


def test_compile_reports_placement_measures_and_profile_placement_keeps_outputs():
    x = spike_inputs(0, 6, 2, 40)
    small = {"core.neurons": 8, "core.axons": 16, "core.memory_bytes": 1024}
    model = lossless_snn(seed=0, steps=6)
    with pytest.raises(InputError, match="profile_inputs"):
        nmc.compile(model, calib={"spikes": x}, overrides=small, placement="profile")
    with pytest.raises(InputError, match="placement='profile'"):
        nmc.compile(model, calib={"spikes": x}, overrides=small, profile_inputs={"spikes": x})
    ref = nmc.compile(model, calib={"spikes": x}, overrides=small, placement="zigzag", lint=True)
    prof = nmc.compile(model, calib={"spikes": x}, overrides=small, placement="profile", profile_inputs={"spikes": x},
                       lint=True)
    assert prof.meta["routing"]["placement"] == "profile" and ref.meta["routing"]["placement"] == "zigzag"
    for cm in (ref, prof):
        r = cm.meta["routing"]
        assert set(r) >= {"traffic_hops", "max_link_load", "chip_crossings"}
    assert prof.meta["routing"]["traffic_hops"] <= ref.meta["routing"]["traffic_hops"]
    a, b = nmc.emulate(ref, {"spikes": x}), nmc.emulate(prof, {"spikes": x})
    for k in a.raw:
        np.testing.assert_array_equal(a.raw[k], b.raw[k])


def test_chips_auto_picks_a_near_square_grid():
    # 4-core chips; the model needs more than 8 cores: a row of chips is never the lowest modelled latency
    x = spike_inputs(0, 4, 2, 40)
    chip = {"core.neurons": 8, "core.axons": 16, "core.memory_bytes": 1024, "cores_x": 2, "cores_y": 2}
    cm = nmc.compile(lossless_snn(seed=0, steps=4), calib={"spikes": x}, overrides=chip, chips="auto",
                     placement="locality")
    cx, cy = cm.meta["chips"]
    n_chips = -(-cm.num_cores // 4)
    assert n_chips >= 3 and cx * cy >= n_chips and min(cx, cy) >= 2, (cm.num_cores, cx, cy)


# ----------------------------------------------------------------------------- greedy: the pruned search
def _star(n_leaves: int) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(range(n_leaves + 1))
    g.add_edges_from((0, i, {"weight": 1}) for i in range(1, n_leaves + 1))
    return g


def test_greedy_hand_example_one_chip():
    # 3 x 3 cores, one chip: core 0 has no placed neighbour (lowest tie-break cost (x + y) 1e-3 + y 1e-6: (0, 0));
    # 1: next to 0, (1, 0) costs 1 + 1e-3, (0, 1) 1 + 1.001e-3; 2: (0, 1); 3 (a child of 1): (2, 0) and (1, 1) are
    # both one hop from (1, 0), (2, 0) has the lower tie-break
    chip = load_chip("tianjic", {"cores_x": 3, "cores_y": 3})
    g = nx.DiGraph([(0, 1, {"weight": 1}), (0, 2, {"weight": 1}), (1, 3, {"weight": 1})])
    pos = place(g, chip, (1, 1), "greedy", ["l"] * 4)
    assert pos.tolist() == [[0, 0], [1, 0], [0, 1], [2, 0]]


def test_greedy_hand_example_avoids_a_chip_crossing():
    # chips of 2 x 2 cores, 2 x 1 chips (W = 4, H = 2); tianjic: a crossing costs 40 / 2 = 20 hops.  A star of 4
    # leaves around core 0 at (0, 0): leaves 1, 2 at (1, 0), (0, 1); leaf 3 at (1, 1) (2 hops, same chip) rather
    # than (2, 0) (2 hops + 20); leaf 4 then has only the other chip: (2, 0) costs 2 + 20 + 2e-3, (2, 1) 3 + 20 + ...
    chip = load_chip("tianjic", {"cores_x": 2, "cores_y": 2})
    assert chip.noc.chip_link_latency_cycles / chip.noc.hop_latency_cycles == 20
    pos = place(_star(4), chip, (2, 1), "greedy", ["l"] * 5)
    assert pos.tolist() == [[0, 0], [1, 0], [0, 1], [1, 1], [2, 0]]


def _greedy_full_scan(dag: nx.DiGraph, chip, W: int, H: int) -> list[tuple[int, int]]:
    """The greedy placement by scanning every free position for every core (the oracle of the pruned search)."""
    n = dag.number_of_nodes()
    try:
        order = list(nx.lexicographical_topological_sort(dag))
    except nx.NetworkXUnfeasible:
        order = list(range(n))
    gx, gy = np.meshgrid(np.arange(W), np.arange(H), indexing="xy")
    gx, gy = gx.reshape(-1), gy.reshape(-1)
    k_cross = chip.noc.chip_link_latency_cycles / chip.noc.hop_latency_cycles
    und = dag.to_undirected()
    cost = (gx + gy) * 1e-3 + gy * 1e-6
    free = np.ones(W * H, bool)
    pos = {}
    for c in order:
        total = cost.copy()
        for m, a in und[c].items():
            if m in pos:
                px, py = pos[m]
                total = total + a.get("weight", 1) * (np.abs(gx - px) + np.abs(gy - py) + k_cross * (
                    np.abs(gx // chip.cores_x - px // chip.cores_x) + np.abs(gy // chip.cores_y - py // chip.cores_y)))
        total[~free] = np.inf
        k = int(np.argmin(total))
        free[k] = False
        pos[c] = (int(gx[k]), int(gy[k]))
    return [pos[c] for c in range(n)]


@pytest.mark.parametrize("seed", range(12))
def test_greedy_pruned_search_equals_the_full_scan(seed):
    # integer weights: every cost is exact in float64, so the sum order cannot break a tie differently
    chip = load_chip("tianjic", {"cores_x": 6, "cores_y": 5})
    dag, n = random_dag(seed)
    chips = (-(-n // 30) + seed % 3, 1) if seed % 2 else (2, -(-n // 60) + seed % 2)
    W, H = chip.grid(*chips)
    got = place(dag, chip, chips, "greedy", ["l"] * n)
    assert [tuple(p) for p in got.tolist()] == _greedy_full_scan(dag, chip, W, H)


def test_greedy_order_is_networkx_lexicographical_topological_order():
    from nmc.mapper.place import _topological_order
    # by hand: 3 -> 1, 0 -> 2, 1 -> 2: ready {0, 3}: 0; then {3}: 3; then {1}: 1; then 2
    order = _topological_order(4, np.array([3, 0, 1]), np.array([1, 2, 2]))
    assert order.tolist() == [0, 3, 1, 2]
    assert _topological_order(3, np.array([0, 1, 2]), np.array([1, 2, 0])).tolist() == [0, 1, 2]  # a cycle
    for seed in range(6):
        dag, n = random_dag(seed)
        relabel = np.random.default_rng(seed).permutation(n)  # edges no longer from lower to higher nodes
        g = nx.relabel_nodes(dag, {i: int(relabel[i]) for i in range(n)})
        s = np.array([u for u, v in g.edges()], np.int64)
        d = np.array([v for u, v in g.edges()], np.int64)
        assert _topological_order(n, s, d).tolist() == list(nx.lexicographical_topological_sort(g))
