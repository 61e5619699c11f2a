"""The network on chip: XY routes, link paths and the packet-level contention model.

Nodes are the routers of the global core grid (``width = chip.cores_x * chips_x``,
``height = chip.cores_y * chips_y``; ``chips`` from ``cm.meta["chips"]``) and the host I/O port,
west of global core (0, 0).  Every router has six outgoing links: the *inject* link of its core
(core -> router), the *eject* link (router -> core) and one link towards each neighbour (+x, -x,
+y, -y).  Two more links join the I/O port and router (0, 0).

A packet follows a path of links: the source core's inject link (or the I/O -> (0, 0) link for an
input), the router-to-router links of its XY route (X first, then Y), and the destination's eject
link (or the (0, 0) -> I/O link for an output).  Link latencies come from ``chip.noc``:
``port_latency_cycles`` (inject, eject), ``hop_latency_cycles`` (router to router on one chip),
``chip_link_latency_cycles`` (router to router across chips, chip = (gx // cores_x, gy // cores_y)),
``io_latency_cycles`` (the I/O link).

Contention: a packet ready at a link at cycle ``r`` starts at ``max(r, link_next_free)``; then
``link_next_free = start + 1`` and the packet is ready at the next link at ``start + latency``.
Its delivery time is the exit time of its last link.  Links serve first come first served; ties
go to the lower packet id.

Three implementations, which the tests demand to agree exactly:

* :func:`simulate` (Numba, event driven with a binary heap; :func:`noc_run` is the kernel the
  emulator calls),
* :func:`simulate_heap` (Python ``heapq``, event driven; used by ``emulator/reference.py``),
* :func:`simulate_per_cycle` (slow and obviously correct: loops over cycles and, for every link,
  starts the waiting packet with the smallest ``(ready time, id)``).

Packets are given as ``ready[p]`` (cycle the packet is ready at its first link) and ``path[p]``
(index of its path in a path table ``path_off``/``path_link``/``path_lat``).
"""
from __future__ import annotations

import heapq

import numpy as np
from numba import njit

from nmc.chip import ChipSpec

from ._jit import NJIT

__all__ = [
    "LINK_KINDS", "grid_shape", "n_links", "link_path", "PathTable", "simulate", "simulate_heap",
    "simulate_per_cycle", "noc_run",
]

#: link kinds: core port (inject/eject), router hop inside a chip, chip-to-chip link, host I/O link
LINK_KINDS = ("port", "hop", "chip", "io")
_PORT, _HOP, _CHIP, _IO = range(4)
# outgoing links of a router, in link-id order
_INJECT, _EJECT, _XP, _XM, _YP, _YM = range(6)
_LINKS_PER_ROUTER = 6


def grid_shape(chip: ChipSpec, chips: tuple[int, int] | list[int] | None = None) -> tuple[int, int]:
    """Global core grid ``(width, height)`` of a system of ``chips = [chips_x, chips_y]``."""
    if chips is None:
        return chip.grid()
    return chip.grid(int(chips[0]), int(chips[1]))


def n_links(width: int, height: int) -> int:
    """Number of links of a ``width x height`` grid plus the two I/O links."""
    return _LINKS_PER_ROUTER * width * height + 2


def _router_link(width: int, x: int, y: int, k: int) -> int:
    return (y * width + x) * _LINKS_PER_ROUTER + k


def link_path(chip: ChipSpec, width: int, height: int, src, dst) -> list[tuple[int, int, int]]:
    """Links crossed by a packet from ``src`` to ``dst``: list of ``(link_id, latency, kind)``.

    ``src``/``dst`` are global router coordinates ``(x, y)`` or ``None`` for the host I/O port.
    ``kind`` indexes :data:`LINK_KINDS`.
    """
    if src is None and dst is None:
        raise ValueError("a packet needs a core at one end at least")
    noc = chip.noc
    io_in, io_out = _LINKS_PER_ROUTER * width * height, _LINKS_PER_ROUTER * width * height + 1
    for p in (src, dst):
        if p is not None and not (0 <= p[0] < width and 0 <= p[1] < height):
            raise ValueError(f"router {tuple(p)} is outside the {width} x {height} grid")
    links: list[tuple[int, int, int]] = []
    if src is None:
        x, y = 0, 0
        links.append((io_in, noc.io_latency_cycles, _IO))
    else:
        x, y = int(src[0]), int(src[1])
        links.append((_router_link(width, x, y, _INJECT), noc.port_latency_cycles, _PORT))
    tx, ty = (0, 0) if dst is None else (int(dst[0]), int(dst[1]))

    def hop(x0, y0, x1, y1, k):
        same = (x0 // chip.cores_x == x1 // chip.cores_x) and (y0 // chip.cores_y == y1 // chip.cores_y)
        if same:
            links.append((_router_link(width, x0, y0, k), noc.hop_latency_cycles, _HOP))
        else:
            links.append((_router_link(width, x0, y0, k), noc.chip_link_latency_cycles, _CHIP))

    while x != tx:
        nx = x + (1 if tx > x else -1)
        hop(x, y, nx, y, _XP if nx > x else _XM)
        x = nx
    while y != ty:
        ny = y + (1 if ty > y else -1)
        hop(x, y, x, ny, _YP if ny > y else _YM)
        y = ny
    if dst is None:
        links.append((io_out, noc.io_latency_cycles, _IO))
    else:
        links.append((_router_link(width, tx, ty, _EJECT), noc.port_latency_cycles, _PORT))
    return links


class PathTable:
    """Paths as flat arrays: path ``i`` is ``link[off[i]:off[i+1]]`` with latencies ``lat``.

    ``hops[i]`` counts its router-to-router links inside a chip, ``crossings[i]`` its chip-to-chip
    links plus the I/O link (the ``hop`` and ``chip_crossing`` events of one packet).
    """

    def __init__(self, chip: ChipSpec, width: int, height: int):
        self.chip, self.width, self.height = chip, width, height
        self._index: dict = {}
        self._paths: list[list[tuple[int, int, int]]] = []

    def add(self, src, dst) -> int:
        """Index of the path from ``src`` to ``dst`` (``(x, y)`` or ``None`` for I/O), added if new."""
        key = (None if src is None else (int(src[0]), int(src[1])), None if dst is None else (int(dst[0]), int(dst[1])))
        if key not in self._index:
            self._index[key] = len(self._paths)
            self._paths.append(link_path(self.chip, self.width, self.height, key[0], key[1]))
        return self._index[key]

    def arrays(self):
        """``(off, link, lat, hops, crossings)`` int64 arrays."""
        off = np.zeros(len(self._paths) + 1, dtype=np.int64)
        off[1:] = np.cumsum([len(p) for p in self._paths])
        link = np.array([l for p in self._paths for (l, _, _) in p], dtype=np.int64)
        lat = np.array([t for p in self._paths for (_, t, _) in p], dtype=np.int64)
        hops = np.array([sum(k == _HOP for (_, _, k) in p) for p in self._paths], dtype=np.int64)
        cross = np.array([sum(k in (_CHIP, _IO) for (_, _, k) in p) for p in self._paths], dtype=np.int64)
        return off, link, lat, hops, cross

    @property
    def n_links(self) -> int:
        return n_links(self.width, self.height)


# --------------------------------------------------------------------------- fast model (Numba)
@njit(**NJIT)
def _less(cur, p, q):
    return cur[p] < cur[q] or (cur[p] == cur[q] and p < q)


@njit(**NJIT)
def _sift_down(heap, n, i, cur):
    while True:
        l = 2 * i + 1
        if l >= n:
            return
        m = l
        r = l + 1
        if r < n and _less(cur, heap[r], heap[l]):
            m = r
        if _less(cur, heap[m], heap[i]):
            t = heap[m]
            heap[m] = heap[i]
            heap[i] = t
            i = m
        else:
            return


@njit(**NJIT)
def noc_run(n_pkt, pkt_ready, pkt_path, path_off, path_link, path_lat,
            link_free, link_epoch, epoch, heap, hop, cur, deliver):
    """Event-driven contention model over packets ``0 .. n_pkt-1``; returns the last delivery time.

    ``link_free``/``link_epoch`` [n_links] are work arrays: a link is free unless
    ``link_epoch[l] == epoch`` (so no reset is needed between calls with distinct ``epoch``).
    ``heap``, ``hop``, ``cur`` [>= n_pkt] are work arrays; ``deliver[p]`` receives delivery times.
    """
    if n_pkt == 0:
        return 0
    for p in range(n_pkt):
        heap[p] = p
        hop[p] = 0
        cur[p] = pkt_ready[p]
    n = n_pkt
    for i in range(n // 2 - 1, -1, -1):
        _sift_down(heap, n, i, cur)
    last = 0
    while n > 0:
        p = heap[0]
        k = path_off[pkt_path[p]] + hop[p]
        link = path_link[k]
        start = cur[p]
        if link_epoch[link] == epoch and link_free[link] > start:
            start = link_free[link]
        link_epoch[link] = epoch
        link_free[link] = start + 1
        t = start + path_lat[k]
        hop[p] += 1
        if path_off[pkt_path[p]] + hop[p] == path_off[pkt_path[p] + 1]:
            deliver[p] = t
            if t > last:
                last = t
            n -= 1
            heap[0] = heap[n]
        else:
            cur[p] = t
        _sift_down(heap, n, 0, cur)
    return last


def simulate(ready, path, path_off, path_link, path_lat) -> np.ndarray:
    """Delivery time of every packet (fast event-driven model, Numba)."""
    ready = np.ascontiguousarray(ready, dtype=np.int64)
    path = np.ascontiguousarray(path, dtype=np.int64)
    path_off = np.ascontiguousarray(path_off, dtype=np.int64)
    path_link = np.ascontiguousarray(path_link, dtype=np.int64)
    path_lat = np.ascontiguousarray(path_lat, dtype=np.int64)
    P = ready.shape[0]
    nl = int(path_link.max()) + 1 if path_link.size else 1
    deliver = np.zeros(P, dtype=np.int64)
    noc_run(P, ready, path, path_off, path_link, path_lat, np.zeros(nl, np.int64), np.zeros(nl, np.int64), 1,
            np.zeros(P, np.int64), np.zeros(P, np.int64), np.zeros(P, np.int64), deliver)
    return deliver


# --------------------------------------------------------------------------- Python event-driven model
def simulate_heap(ready, path, path_off, path_link, path_lat) -> np.ndarray:
    """Delivery time of every packet (event driven, Python ``heapq``): same answers as :func:`simulate`."""
    P = len(ready)
    deliver = np.zeros(P, dtype=np.int64)
    heap = [(int(ready[p]), p, 0) for p in range(P)]  # (ready at current link, id, link index on the path)
    heapq.heapify(heap)
    next_free: dict[int, int] = {}
    while heap:
        r, p, h = heapq.heappop(heap)
        k = int(path_off[path[p]]) + h
        link = int(path_link[k])
        start = max(r, next_free.get(link, r))
        next_free[link] = start + 1
        t = start + int(path_lat[k])
        if k + 1 == path_off[path[p] + 1]:
            deliver[p] = t
        else:
            heapq.heappush(heap, (t, p, h + 1))
    return deliver


# --------------------------------------------------------------------------- slow, obviously correct model
def simulate_per_cycle(ready, path, path_off, path_link, path_lat) -> np.ndarray:
    """Delivery time of every packet, cycle by cycle.

    At every cycle ``t``, for every link, among the packets waiting at that link (ready at it at
    or before ``t``, not yet started) the one with the smallest ``(ready time, id)`` starts at
    ``t`` and becomes ready at its next link at ``t + latency``.
    """
    P = len(ready)
    deliver = [None] * P
    hop = [0] * P
    at = [int(r) for r in ready]  # ready time at the current link
    remaining = P
    t = 0
    while remaining:
        chosen: dict[int, int] = {}
        for p in range(P):
            if deliver[p] is None and at[p] <= t:
                link = int(path_link[path_off[path[p]] + hop[p]])
                q = chosen.get(link)
                if q is None or (at[p], p) < (at[q], q):
                    chosen[link] = p
        for link, p in chosen.items():
            k = int(path_off[path[p]]) + hop[p]
            hop[p] += 1
            if k + 1 == path_off[path[p] + 1]:
                deliver[p] = t + int(path_lat[k])
                remaining -= 1
            else:
                at[p] = t + int(path_lat[k])
        t += 1
    return np.array(deliver, dtype=np.int64).reshape(P)
