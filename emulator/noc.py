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

Four implementations, which the tests demand to agree exactly:

* :func:`simulate_flows` (Numba, by flows; :func:`noc_flows` is the kernel the emulator calls): the
  packets of one router-table entry in one phase leave one core together on one path, so they are
  one *flow*; links are visited once each, in an order in which every link comes after the links that
  feed it (XY routes: inject, X links, Y links, eject), and a flow's arrivals at a link are kept as one
  run ``t0, t0 + 1, ...`` (closed form) until it meets another flow whose arrivals overlap its own;
  only then are the packets of the overlapping flows put in ``(time, id)`` order, by a counting sort
  over the span of their arrival times;
* :func:`simulate` (Numba, event driven with a binary heap over packets; :func:`noc_run`),
* :func:`simulate_heap` (Python ``heapq``, event driven; used by ``emulator/reference.py``),
* :func:`simulate_per_cycle` (slow and obviously correct: loops over cycles and, for every link,
  starts the waiting packet with the smallest ``(ready time, id)``).

Packets are given as ``ready[p]`` (cycle the packet is ready at its first link) and ``path[p]``
(index of its path in a path table ``path_off``/``path_link``/``path_lat``).
"""
from __future__ import annotations

import heapq
from typing import NamedTuple

import numpy as np
from numba import njit

from nmc.chip import ChipSpec

from ._jit import NJIT

__all__ = [
    "LINK_KINDS", "grid_shape", "n_links", "link_path", "PathTable", "simulate", "simulate_heap",
    "simulate_per_cycle", "noc_run", "noc_program", "simulate_flows", "link_ranks", "sort_span_for",
    "FlowProgram", "flow_program",
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
    # a hop inside a chip, or across chips (chip = (x // cores_x, y // cores_y)); attributes read once
    cx, cy = chip.cores_x, chip.cores_y
    hop_ = (noc.hop_latency_cycles, _HOP)
    cross = (noc.chip_link_latency_cycles, _CHIP)
    while x != tx:
        nx = x + (1 if tx > x else -1)
        lt, kind = hop_ if x // cx == nx // cx else cross
        links.append(((y * width + x) * _LINKS_PER_ROUTER + (_XP if nx > x else _XM), lt, kind))
        x = nx
    while y != ty:
        ny = y + (1 if ty > y else -1)
        lt, kind = hop_ if y // cy == ny // cy else cross
        links.append(((y * width + x) * _LINKS_PER_ROUTER + (_YP if ny > y else _YM), lt, kind))
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
        self._n = 0  # paths so far
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # (lengths, link, lat, kind)
        self._arrays = None  # arrays() of the paths so far

    def add(self, src, dst) -> int:
        """Index of the path from ``src`` to ``dst`` (``(x, y)`` or ``None`` for I/O), added if new."""
        key = (None if src is None else (int(src[0]), int(src[1])), None if dst is None else (int(dst[0]), int(dst[1])))
        if key not in self._index:
            links = np.array(link_path(self.chip, self.width, self.height, key[0], key[1]), np.int64).reshape(-1, 3)
            self._push(np.array([links.shape[0]], np.int64), links[:, 0], links[:, 1], links[:, 2])
            self._index[key] = self._n - 1
        return self._index[key]

    def add_many(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Indices of the paths from ``src[i]`` to ``dst[i]`` (``[n, 2]`` router coordinates; a row of -1: the host
        I/O port), the new ones added, each computed as :func:`link_path` does, all at once."""
        src, dst = np.asarray(src, np.int64).reshape(-1, 2), np.asarray(dst, np.int64).reshape(-1, 2)
        n = src.shape[0]
        if not n:
            return np.zeros(0, np.int64)
        for p, name in ((src, "src"), (dst, "dst")):
            ok = (p[:, 0] < 0) | ((p[:, 0] < self.width) & (p[:, 1] >= 0) & (p[:, 1] < self.height))
            if not ok.all():
                raise ValueError(f"router {tuple(p[int(np.argmin(ok))].tolist())} is outside the {self.width} x "
                                 f"{self.height} grid")
        if np.any((src[:, 0] < 0) & (dst[:, 0] < 0)):
            raise ValueError("a packet needs a core at one end at least")
        W1, H1 = self.width + 1, self.height + 1  # (a coordinate + 1: 0 is the host)
        code = (((src[:, 0] + 1) * H1 + src[:, 1] + 1) * W1 + dst[:, 0] + 1) * H1 + dst[:, 1] + 1
        u, first, inv = np.unique(code, return_index=True, return_inverse=True)
        keys = [((int(a), int(b)) if a >= 0 else None, (int(c_), int(d)) if c_ >= 0 else None)
                for a, b, c_, d in np.concatenate([src[first], dst[first]], axis=1).tolist()]
        idx = np.array([self._index.get(k, -1) for k in keys], np.int64)
        new = np.flatnonzero(idx < 0)
        new = new[np.argsort(first[new], kind="stable")]  # numbered in the order of first use, as add() one by one
        if new.size:
            idx[new] = self._n + np.arange(new.size)
            self._push(*self._xy_paths(src[first[new]], dst[first[new]]))
            for k, i in zip(new.tolist(), idx[new].tolist()):
                self._index[keys[k]] = i
        return idx[inv.reshape(-1)]

    def _xy_paths(self, src: np.ndarray, dst: np.ndarray):
        """``(lengths, link, lat, kind)`` of XY routes (module doc, :func:`link_path`), vectorised."""
        noc, L, width = self.chip.noc, _LINKS_PER_ROUTER, self.width
        cx, cy = self.chip.cores_x, self.chip.cores_y
        io_in, io_out = L * width * self.height, L * width * self.height + 1
        s_io, d_io = src[:, 0] < 0, dst[:, 0] < 0
        x0, y0 = np.where(s_io, 0, src[:, 0]), np.where(s_io, 0, src[:, 1])
        tx, ty = np.where(d_io, 0, dst[:, 0]), np.where(d_io, 0, dst[:, 1])
        nx, ny = np.abs(tx - x0), np.abs(ty - y0)
        lens = nx + ny + 2
        total = int(lens.sum())
        path = np.repeat(np.arange(src.shape[0]), lens)
        p = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)  # position in its path
        link, lat, kind = np.zeros(total, np.int64), np.zeros(total, np.int64), np.zeros(total, np.int64)
        # the x hops (positions 1 .. nx), then the y hops at column tx
        dx, dy = np.sign(tx - x0)[path], np.sign(ty - y0)[path]
        is_x = (p >= 1) & (p <= nx[path])
        is_y = (p > nx[path]) & (p < lens[path] - 1)
        cur_x = x0[path] + (p - 1) * dx
        cur_y = y0[path] + (p - 1 - nx[path]) * dy
        same_x = (cur_x // cx) == ((cur_x + dx) // cx)
        same_y = (cur_y // cy) == ((cur_y + dy) // cy)
        link = np.where(is_x, (y0[path] * width + cur_x) * L + np.where(dx > 0, _XP, _XM), link)
        link = np.where(is_y, (cur_y * width + tx[path]) * L + np.where(dy > 0, _YP, _YM), link)
        hop = np.where(is_x, same_x, same_y)
        lat = np.where(is_x | is_y, np.where(hop, noc.hop_latency_cycles, noc.chip_link_latency_cycles), lat)
        kind = np.where(is_x | is_y, np.where(hop, _HOP, _CHIP), kind)
        # the first link (the host's or the source's injection port) and the last (the destination's ejection port,
        # or the host's)
        first, last = p == 0, p == lens[path] - 1
        fi, la = s_io[path], d_io[path]
        link = np.where(first, np.where(fi, io_in, (y0[path] * width + x0[path]) * L + _INJECT), link)
        link = np.where(last, np.where(la, io_out, (ty[path] * width + tx[path]) * L + _EJECT), link)
        lat = np.where(first, np.where(fi, noc.io_latency_cycles, noc.port_latency_cycles), lat)
        lat = np.where(last, np.where(la, noc.io_latency_cycles, noc.port_latency_cycles), lat)
        kind = np.where(first, np.where(fi, _IO, _PORT), kind)
        kind = np.where(last, np.where(la, _IO, _PORT), kind)
        return lens, link, lat, kind

    def _push(self, lens, link, lat, kind) -> None:
        self._chunks.append((np.asarray(lens, np.int64), np.asarray(link, np.int64), np.asarray(lat, np.int64),
                             np.asarray(kind, np.int64)))
        self._n += int(lens.shape[0])
        self._arrays = None

    def arrays(self):
        """``(off, link, lat, hops, crossings)`` int64 arrays, kept until a path is added (callers do not write them)."""
        if self._arrays is None:
            cat = [np.concatenate([ch[i] for ch in self._chunks]) if self._chunks else np.zeros(0, np.int64)
                   for i in range(4)]
            lens, link, lat, kind = cat
            off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
            which = np.repeat(np.arange(self._n), lens)
            hops = np.bincount(which, weights=kind == _HOP, minlength=self._n).astype(np.int64)
            cross = np.bincount(which, weights=(kind == _CHIP) | (kind == _IO), minlength=self._n).astype(np.int64)
            self._arrays = (off, link, lat, hops, cross)
        return self._arrays

    def ranks(self) -> np.ndarray:
        """Rank (:func:`link_ranks`) of every link of every path, aligned with ``arrays()[1]``."""
        _, link, _, _, _ = self.arrays()
        return link_ranks(self.width, self.height)[link] if link.size else np.zeros(0, np.int64)

    @property
    def n_ranks(self) -> int:
        return self.width + self.height + 3


def link_ranks(width: int, height: int) -> np.ndarray:
    """A rank per link such that every link of a path has a higher rank than the links before it on
    the path (XY routes): inject and I/O-in 0, X links ``1 .. width`` in the direction of travel, Y links
    ``width + 2 .. width + height + 1``, eject and I/O-out ``width + height + 2``."""
    r = np.zeros(n_links(width, height), np.int64)
    y, x = np.divmod(np.arange(width * height), width)
    b = (y * width + x) * _LINKS_PER_ROUTER
    r[b + _INJECT] = 0
    r[b + _EJECT] = width + height + 2
    r[b + _XP] = 1 + x
    r[b + _XM] = 1 + width - x
    r[b + _YP] = width + 2 + y
    r[b + _YM] = width + 2 + height - y
    r[-2] = 0
    r[-1] = width + height + 2
    return r


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


# --------------------------------------------------------------------------- flows (Numba)
def sort_span_for(max_pkt: int) -> int:
    """Length of :func:`noc_program`'s ``cnt`` for phases of up to ``max_pkt`` packets: clusters whose arrival
    times span fewer cycles are merged by counting sort, longer ones (only when the arrivals of a cluster's
    flows have long gaps) by scanning the flows' heads."""
    return 2 * int(max_pkt) + 64


class FlowProgram(NamedTuple):
    """The links the flows of each phase visit, fixed before any packet is sent (:func:`flow_program`).

    Phase ``p`` has *slots* ``0 .. S-1`` (``S = s_off[p+1] - s_off[p]``; slot ``s`` sends its packets on path
    ``s_path[s_off[p] + s]``; slots are in packet-id order) and *link groups* ``g_off[p] .. g_off[p+1]-1`` in
    rank order (every link after the links that feed it); group ``g`` is the *visits* ``v_off[g] ..
    v_off[g+1]-1`` of one link, in slot order.  A visit of slot ``v_slot`` has its previous link on the path
    ``v_prev`` (-1: the path's first link), ``v_tail``: the cycles from leaving the link to arriving at the
    slot's next visited link (the link's latency plus those of the links skipped after it), and ``v_fin`` = 1
    when the path has no visited link after it (``v_tail`` then leads to the delivery).

    Skipped (never visited): a link whose flows all come from one and the same previous link.  That link
    delivers at most one packet per cycle (it serves one per cycle), so on the next link the packets arrive at
    distinct cycles and none waits: crossing it adds its latency, whatever the traffic."""

    s_off: np.ndarray
    s_path: np.ndarray
    g_off: np.ndarray
    v_off: np.ndarray
    v_slot: np.ndarray
    v_prev: np.ndarray
    v_tail: np.ndarray
    v_fin: np.ndarray


def flow_program(phase_paths, path_off, path_link, path_lat, path_rank) -> FlowProgram:
    """The :class:`FlowProgram` of phases whose slots send on the paths ``phase_paths[p]`` (int arrays, slot
    order).  ``path_rank``: the rank of every path position's link (a link's rank above the ranks of the links
    before it on every path: :func:`link_ranks` for XY routes)."""
    path_off, path_link = np.asarray(path_off, np.int64), np.asarray(path_link, np.int64)
    path_lat, path_rank = np.asarray(path_lat, np.int64), np.asarray(path_rank, np.int64)
    s_off, g_off, v_off = [0], [0], [0]
    parts: list[tuple] = []
    nv = 0
    for sp in phase_paths:
        sp = np.asarray(sp, np.int64)
        s_off.append(s_off[-1] + sp.shape[0])
        L = path_off[sp + 1] - path_off[sp]
        total = int(L.sum())
        if total == 0:
            g_off.append(g_off[-1])
            continue
        first = np.cumsum(L) - L  # a slot's first visit (every path has a link)
        vslot = np.repeat(np.arange(sp.shape[0], dtype=np.int64), L)
        vpos = path_off[sp][vslot] + np.arange(total, dtype=np.int64) - first[vslot]
        vlink = path_link[vpos]
        is_first = np.zeros(total, bool)
        is_first[first] = True
        vprev = np.where(is_first, -1, path_link[vpos - 1])
        links, inv = np.unique(vlink, return_inverse=True)
        lo = np.full(links.shape[0], np.iinfo(np.int64).max)
        hi = np.full(links.shape[0], -2, np.int64)
        np.minimum.at(lo, inv, vprev)
        np.maximum.at(hi, inv, vprev)
        kept = ~((lo == hi) & (lo >= 0))[inv]  # a first visit is always kept
        K = np.flatnonzero(kept)
        cs = np.r_[0, np.cumsum(path_lat[vpos])]
        nxt = np.r_[K[1:], total]
        cont = np.r_[vslot[K[1:]] == vslot[K[:-1]], False]  # the slot visits another link after this one
        end = first[vslot[K]] + L[vslot[K]]
        upto = np.where(cont, nxt, end)
        tail = cs[upto] - cs[K]
        order = np.lexsort((vslot[K], vlink[K], path_rank[vpos[K]]))
        K, tail, fin = K[order], tail[order], (~cont)[order].astype(np.int64)
        glink = vlink[K]
        starts = np.flatnonzero(np.r_[True, glink[1:] != glink[:-1]])
        g_off.append(g_off[-1] + starts.shape[0])
        v_off.extend((nv + starts[1:]).tolist() + [nv + K.shape[0]])
        nv += K.shape[0]
        parts.append((vslot[K], vprev[K], tail, fin))
    cat = [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int64) for i in range(4)]
    s_path = (np.concatenate([np.asarray(sp, np.int64) for sp in phase_paths]) if len(phase_paths)
              else np.zeros(0, np.int64))
    i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    return FlowProgram(i64(s_off), i64(s_path), i64(g_off), i64(v_off), *(i64(a) for a in cat))


@njit(**NJIT, _nrt=False)
def noc_program(p, ns, f_ready, f_n, g_off, v_off, v_slot, v_prev, v_tail, v_fin, w, tbuf, cnt, deliver, want_deliver):
    """Flow-level contention model of phase ``p`` of a :class:`FlowProgram`, equal to :func:`noc_run` packet for
    packet; returns the last delivery.

    Slot ``s`` (``0 .. ns-1``) sends ``f_n[s] >= 0`` packets ready at ``f_ready[s]`` at its path's first link (its
    packets have consecutive ids, after those of the slots before it).  Work arrays (int64): ``w`` ``[>= 8, >= slots]``,
    ``tbuf`` [>= total packets], ``cnt`` (any length: clusters whose arrival times span fewer cycles are merged
    by counting sort, see below and :func:`sort_span_for`).  ``deliver`` [total packets] receives every
    packet's delivery time if ``want_deliver``.

    A flow's arrival times at the link of its current visit are kept as its first and last arrival and, when
    ``expl = 0``, in closed form: a *burst* (every packet at ``first``; a flow at its first link) or a
    *run* ``first, first + 1, .., last`` (after a link); when ``expl = 1`` they are explicit in
    ``tbuf[base .. base + n - 1]``.  The program's link groups are visited in order; the flows of one link in
    ``(first arrival, slot)`` order, cut into *clusters*: a flow joins the cluster before it when it arrives
    before that cluster's last arrival.  A cluster of one flow (a run or a burst leaves the link consecutively
    from ``max(first, free)``), of bursts only (served whole, one after the other) or of flows from one
    previous link that finds the link free (its packets arrive at distinct times: none waits) is served in
    closed form (and without sorting or clustering on a link where every flow starts and the flows with packets are
    ready in slot order, e.g. a core's inject link in the emulator: bursts served whole in slot order); any other is
    merged in ``(time, id)`` order by a counting sort over its span of arrival times (``O(packets + span)``; beyond
    ``cnt``'s length, by scanning the flows' heads), as the per-packet model serves it, except a cluster of two
    runs: a cluster of runs (closed form, after a link) leaves no time from its first to its last arrival without
    one, so the link is busy from ``max(first, free)`` until all have left and a packet's departure is that plus the
    packets before it by ``(time, id)``, counted in closed form.  Leaving a link, a flow's times advance by its
    visit's ``v_tail`` (the links skipped after it cannot delay it).  Without ``want_deliver`` (the emulator, which
    needs only the last delivery) a merged cluster whose flows all end with the same tail after this link is served
    by counting its arrivals per time only: its last departure, not every packet's (for a cluster of runs,
    ``max(first, free)`` + its packets).

    Everything is written out in this one function: helper calls cost reference-count updates on their
    arrays, which once made up most of the NoC's time (perf, 2026-12-03); and it is compiled without reference
    counting (``_nrt=False``: it allocates nothing), which saves the count updates of its arguments and of the rows
    of ``w`` at every call.  Every index is cast to ``np.uint64``
    (none is negative): with a signed index Numba emits code for negative-index wraparound on every access,
    which made the model about 30% slower (replayed phases of benchmarks/bench_emulator.py).
    """
    f_base, f_first, f_last, f_expl, rf, rv, rk, cj = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]
    base = 0
    last = 0
    for s in range(ns):
        f_base[np.uint64(s)] = base
        base += f_n[np.uint64(s)]
        f_first[np.uint64(s)] = f_ready[np.uint64(s)]  # a burst
        f_last[np.uint64(s)] = f_ready[np.uint64(s)]
        f_expl[np.uint64(s)] = 0
    if base == 0:
        return 0
    for gl in range(g_off[np.uint64(p)], g_off[np.uint64(p + 1)]):  # the phase's link groups
        # a link where every flow starts (a core's inject link: bursts) and whose flows with packets are ready in
        # slot order (the emulator: all of a core's slots at once): served whole, one after the other, in slot
        # order, as the clusters below would serve them; else (a visit with a previous link, or a flow ready
        # before the one of a lower slot) the general path
        va = v_off[np.uint64(gl)]
        vb = v_off[np.uint64(gl + 1)]
        in_order = True
        a = np.int64(-(1 << 62))
        for v in range(va, vb):
            s = v_slot[np.uint64(v)]
            if v_prev[np.uint64(v)] >= 0 or (f_n[np.uint64(s)] != 0 and f_first[np.uint64(s)] < a):
                in_order = False
                break
            if f_n[np.uint64(s)] != 0:
                a = f_first[np.uint64(s)]
        if in_order:
            free = np.int64(-(1 << 62))
            for v in range(va, vb):
                s = v_slot[np.uint64(v)]
                n = f_n[np.uint64(s)]
                if n == 0:
                    continue
                lat = v_tail[np.uint64(v)]
                d0 = max(f_first[np.uint64(s)], free)
                free = d0 + n
                f_first[np.uint64(s)] = d0 + lat
                f_last[np.uint64(s)] = d0 + lat + n - 1
                if v_fin[np.uint64(v)] != 0:
                    if d0 + lat + n - 1 > last:
                        last = d0 + lat + n - 1
                    if want_deliver:
                        b0 = f_base[np.uint64(s)]
                        for j in range(n):
                            deliver[np.uint64(b0 + j)] = d0 + lat + j
            continue
        # the link's flows with packets, sorted by (first arrival, slot) as they are gathered (insertion)
        s1 = 0
        for v in range(v_off[np.uint64(gl)], v_off[np.uint64(gl + 1)]):
            s = v_slot[np.uint64(v)]
            if f_n[np.uint64(s)] == 0:
                continue
            a = f_first[np.uint64(s)]
            i2 = s1 - 1
            while i2 >= 0 and (rk[np.uint64(i2)] > a or (rk[np.uint64(i2)] == a and rf[np.uint64(i2)] > s)):
                rf[np.uint64(i2 + 1)] = rf[np.uint64(i2)]
                rv[np.uint64(i2 + 1)] = rv[np.uint64(i2)]
                rk[np.uint64(i2 + 1)] = rk[np.uint64(i2)]
                i2 -= 1
            rf[np.uint64(i2 + 1)] = s
            rv[np.uint64(i2 + 1)] = v
            rk[np.uint64(i2 + 1)] = a
            s1 += 1
        free = np.int64(-(1 << 62))
        i = 0
        while i < s1:
            # the cluster rf[c0:i]: following flows whose first arrival is not after the latest arrival so far
            c0 = i
            hi = f_last[np.uint64(rf[np.uint64(i)])]
            pv = v_prev[np.uint64(rv[np.uint64(i)])]
            bursts = pv < 0
            same_prev = pv >= 0
            i += 1
            while i < s1 and f_first[np.uint64(rf[np.uint64(i)])] <= hi:
                g = rf[np.uint64(i)]
                hi = max(hi, f_last[np.uint64(g)])
                bursts = bursts and v_prev[np.uint64(rv[np.uint64(i)])] < 0
                same_prev = same_prev and v_prev[np.uint64(rv[np.uint64(i)])] == pv
                i += 1
            m = i - c0
            if m == 1 and f_expl[np.uint64(rf[np.uint64(c0)])] == 0:
                # a run or a burst: consecutive from max(first, free)
                g = rf[np.uint64(c0)]
                lat = v_tail[np.uint64(rv[np.uint64(c0)])]
                d0 = max(f_first[np.uint64(g)], free)
                free = d0 + f_n[np.uint64(g)]
                f_first[np.uint64(g)] = d0 + lat
                f_last[np.uint64(g)] = d0 + lat + f_n[np.uint64(g)] - 1
            elif bursts:  # bursts (explicit or not: all their packets at their first arrival), whole in order
                for c in range(c0, i):
                    g = rf[np.uint64(c)]
                    lat = v_tail[np.uint64(rv[np.uint64(c)])]
                    d0 = max(f_first[np.uint64(g)], free)
                    free = d0 + f_n[np.uint64(g)]
                    f_first[np.uint64(g)] = d0 + lat
                    f_last[np.uint64(g)] = d0 + lat + f_n[np.uint64(g)] - 1
                    f_expl[np.uint64(g)] = 0
            elif same_prev and free <= f_first[np.uint64(rf[np.uint64(c0)])]:
                # every packet comes from one link, so no two arrive at once: none waits
                for c in range(c0, i):
                    g = rf[np.uint64(c)]
                    lat = v_tail[np.uint64(rv[np.uint64(c)])]
                    f_first[np.uint64(g)] += lat
                    f_last[np.uint64(g)] += lat
                    if f_expl[np.uint64(g)] != 0:
                        for j in range(f_base[np.uint64(g)], f_base[np.uint64(g)] + f_n[np.uint64(g)]):
                            tbuf[np.uint64(j)] += lat
                free = hi + 1
            else:
                total = 0
                lo = np.int64(1 << 62)
                runs = True  # every flow a run (closed form, after a link): the arrivals cover [lo, hi] without a gap
                for c in range(c0, i):
                    g = rf[np.uint64(c)]
                    total += f_n[np.uint64(g)]
                    lo = min(lo, f_first[np.uint64(g)])
                    runs = runs and f_expl[np.uint64(g)] == 0 and v_prev[np.uint64(rv[np.uint64(c)])] >= 0
                span = hi - lo + 1
                final = m > 1 and span < cnt.shape[0] and not want_deliver
                if final:
                    lat = v_tail[np.uint64(rv[np.uint64(c0)])]
                    for c in range(c0, i):
                        if v_fin[np.uint64(rv[np.uint64(c)])] == 0 or v_tail[np.uint64(rv[np.uint64(c)])] != lat:
                            final = False
                            break
                if final and runs:
                    # runs whose arrivals leave no time empty from lo to hi: the link is busy from max(lo, free) until
                    # all have left (the k-th packet by (time, id) arrives by lo + k and leaves at max(lo, free) + k)
                    free = max(lo, free) + total
                    for c in range(c0, i):
                        g = rf[np.uint64(c)]
                        f_last[np.uint64(g)] = free - 1 + lat
                        f_first[np.uint64(g)] = f_last[np.uint64(g)]
                elif final:
                    # the last visit of every flow of the cluster, all with one tail, and only the phase's last
                    # delivery wanted: the last departure follows from the arrivals per time, without any
                    # packet's own time
                    for u in range(span + 1):
                        cnt[np.uint64(u)] = 0
                    for c in range(c0, i):
                        g = rf[np.uint64(c)]
                        if f_expl[np.uint64(g)] != 0:
                            for j in range(f_base[np.uint64(g)], f_base[np.uint64(g)] + f_n[np.uint64(g)]):
                                cnt[np.uint64(tbuf[np.uint64(j)] - lo)] += 1
                                cnt[np.uint64(tbuf[np.uint64(j)] - lo + 1)] -= 1
                        elif v_prev[np.uint64(rv[np.uint64(c)])] >= 0:
                            cnt[np.uint64(f_first[np.uint64(g)] - lo)] += 1
                            cnt[np.uint64(f_last[np.uint64(g)] - lo + 1)] -= 1
                        else:
                            cnt[np.uint64(f_first[np.uint64(g)] - lo)] += f_n[np.uint64(g)]
                            cnt[np.uint64(f_first[np.uint64(g)] - lo + 1)] -= f_n[np.uint64(g)]
                    k = 0
                    for u in range(span):  # (no branch on k: with no arrival at lo + u, k = 0 and free may become
                        # lo + u, which delays no later arrival; the last time of the span, hi, has arrivals)
                        k += cnt[np.uint64(u)]
                        free = max(lo + u, free) + k
                    for c in range(c0, i):
                        g = rf[np.uint64(c)]
                        f_last[np.uint64(g)] = free - 1 + lat  # (the cluster's last delivery, for every flow of it)
                        f_first[np.uint64(g)] = f_last[np.uint64(g)]
                        f_expl[np.uint64(g)] = 0
                elif m == 2 and runs:
                    # two runs x (the earlier first arrival) and y: the link is busy from d0 = max(lo, free) (as above);
                    # a packet leaves at d0 + the packets before it by (time, id): its own earlier ones, the other
                    # run's earlier ones and, at the same time, the other's if that has the lower id (slot)
                    gx = rf[np.uint64(c0)]
                    gy = rf[np.uint64(c0 + 1)]
                    d0 = max(lo, free)
                    fx, nx, lx = f_first[np.uint64(gx)], f_n[np.uint64(gx)], f_last[np.uint64(gx)]
                    fy, ny, ly = f_first[np.uint64(gy)], f_n[np.uint64(gy)], f_last[np.uint64(gy)]
                    # x: alone before fy; then one y packet before each of its packets at or after fy (while y
                    # lasts), plus the y packet of the same time when y has the lower id; after ly all ny before it
                    lat = v_tail[np.uint64(rv[np.uint64(c0)])]
                    b0 = f_base[np.uint64(gx)]
                    tie = 1 if gy < gx else 0
                    for j in range(nx):
                        t = fx + j
                        if t < fy:
                            r = j
                        elif t <= ly:
                            r = j + t - fy + tie
                        else:
                            r = j + ny
                        tbuf[np.uint64(b0 + j)] = d0 + r + lat
                    lat = v_tail[np.uint64(rv[np.uint64(c0 + 1)])]
                    b0 = f_base[np.uint64(gy)]
                    tie = 1 - tie
                    for j in range(ny):  # (fy >= fx)
                        t = fy + j
                        if t <= lx:
                            r = j + t - fx + tie
                        else:
                            r = j + nx
                        tbuf[np.uint64(b0 + j)] = d0 + r + lat
                    f_expl[np.uint64(gx)] = 1
                    f_expl[np.uint64(gy)] = 1
                    free = d0 + total
                elif m > 1 and span < cnt.shape[0]:
                    # a counting sort of the cluster's packets by (arrival, id), O(packets + span): the
                    # packets arriving at one time leave consecutively, in id order, from max(time, free)
                    for c in range(c0 + 1, i):  # the cluster's flows in id order (insertion sort)
                        g = rf[np.uint64(c)]
                        vg = rv[np.uint64(c)]
                        c2 = c - 1
                        while c2 >= c0 and rf[np.uint64(c2)] > g:
                            rf[np.uint64(c2 + 1)] = rf[np.uint64(c2)]
                            rv[np.uint64(c2 + 1)] = rv[np.uint64(c2)]
                            c2 -= 1
                        rf[np.uint64(c2 + 1)] = g
                        rv[np.uint64(c2 + 1)] = vg
                    for u in range(span + 1):
                        cnt[np.uint64(u)] = 0
                    for c in range(c0, i):  # arrivals per time, as differences: a run adds 1 over [first, last]
                        g = rf[np.uint64(c)]
                        if f_expl[np.uint64(g)] != 0:
                            for j in range(f_base[np.uint64(g)], f_base[np.uint64(g)] + f_n[np.uint64(g)]):
                                cnt[np.uint64(tbuf[np.uint64(j)] - lo)] += 1
                                cnt[np.uint64(tbuf[np.uint64(j)] - lo + 1)] -= 1
                        elif v_prev[np.uint64(rv[np.uint64(c)])] >= 0:
                            cnt[np.uint64(f_first[np.uint64(g)] - lo)] += 1
                            cnt[np.uint64(f_last[np.uint64(g)] - lo + 1)] -= 1
                        else:  # a burst: all at first
                            cnt[np.uint64(f_first[np.uint64(g)] - lo)] += f_n[np.uint64(g)]
                            cnt[np.uint64(f_first[np.uint64(g)] - lo + 1)] -= f_n[np.uint64(g)]
                    k = 0
                    for u in range(span):  # cnt[np.uint64(u)] becomes the first departure of the k arrivals at lo + u
                        k += cnt[np.uint64(u)]  # (no branch on k, as above: a time with none is not read back)
                        d = max(lo + u, free)
                        free = d + k
                        cnt[np.uint64(u)] = d
                    for c in range(c0, i):
                        g = rf[np.uint64(c)]
                        lat = v_tail[np.uint64(rv[np.uint64(c)])]
                        b0 = f_base[np.uint64(g)]
                        if f_expl[np.uint64(g)] != 0:
                            for j in range(b0, b0 + f_n[np.uint64(g)]):
                                u = tbuf[np.uint64(j)] - lo
                                tbuf[np.uint64(j)] = cnt[np.uint64(u)] + lat
                                cnt[np.uint64(u)] += 1
                        else:
                            u = f_first[np.uint64(g)] - lo
                            step = 0 if v_prev[np.uint64(rv[np.uint64(c)])] < 0 else 1
                            for j in range(b0, b0 + f_n[np.uint64(g)]):
                                tbuf[np.uint64(j)] = cnt[np.uint64(u)] + lat
                                cnt[np.uint64(u)] += 1
                                u += step
                            f_expl[np.uint64(g)] = 1
                else:  # packet by packet: the earliest head of the m flows, ties to the lower id
                    for c in range(c0, i):
                        cj[np.uint64(c)] = 0
                        g = rf[np.uint64(c)]
                        if f_expl[np.uint64(g)] == 0:  # explicit times (a burst: all at first; a run: first + j)
                            b0 = f_base[np.uint64(g)]
                            step = 0 if v_prev[np.uint64(rv[np.uint64(c)])] < 0 else 1
                            for j in range(f_n[np.uint64(g)]):
                                tbuf[np.uint64(b0 + j)] = f_first[np.uint64(g)] + step * j
                            f_expl[np.uint64(g)] = 1
                    for _ in range(total):
                        bc = -1
                        bt = np.int64(0)
                        for c in range(c0, i):
                            g = rf[np.uint64(c)]
                            if cj[np.uint64(c)] < f_n[np.uint64(g)]:
                                t = tbuf[np.uint64(f_base[np.uint64(g)] + cj[np.uint64(c)])]
                                if bc < 0 or t < bt or (t == bt and g < rf[np.uint64(bc)]):
                                    bc = c
                                    bt = t
                        g = rf[np.uint64(bc)]
                        d = max(bt, free)
                        free = d + 1
                        tj = np.uint64(f_base[np.uint64(g)] + cj[np.uint64(bc)])
                        tbuf[tj] = d + v_tail[np.uint64(rv[np.uint64(bc)])]
                        cj[np.uint64(bc)] += 1
                for c in range(c0, i):  # back to a run when the times are consecutive
                    if final:
                        break
                    g = rf[np.uint64(c)]
                    b0 = f_base[np.uint64(g)]
                    f_first[np.uint64(g)] = tbuf[np.uint64(b0)]
                    f_last[np.uint64(g)] = tbuf[np.uint64(b0 + f_n[np.uint64(g)] - 1)]
                    if f_last[np.uint64(g)] - f_first[np.uint64(g)] == f_n[np.uint64(g)] - 1:
                        f_expl[np.uint64(g)] = 0
            # the cluster's flows that end here are delivered (the others wait for their next visit)
            if want_deliver:
                for c in range(c0, i):
                    if v_fin[np.uint64(rv[np.uint64(c)])] != 0:
                        g = rf[np.uint64(c)]
                        if f_last[np.uint64(g)] > last:
                            last = f_last[np.uint64(g)]
                        b0 = f_base[np.uint64(g)]
                        for j in range(f_n[np.uint64(g)]):
                            uj = np.uint64(b0 + j)
                            deliver[uj] = tbuf[uj] if f_expl[np.uint64(g)] else f_first[np.uint64(g)] + j
            else:  # only the last delivery, without a branch per flow: one that does not end here counts 0 (v_fin is
                # 0 or 1; last starts at 0)
                for c in range(c0, i):
                    last = max(last, f_last[np.uint64(rf[np.uint64(c)])] * v_fin[np.uint64(rv[np.uint64(c)])])
    return last


def simulate_flows(ready, path, path_off, path_link, path_lat, path_rank=None, sort_span=None,
                   python: bool = False, last_only: bool = False):
    """Delivery time of every packet (flow model, Numba): consecutive packets with the same ready time
    and path form one flow.  ``path_rank`` (rank of every path position) defaults to ranks derived from
    the path order (valid for any set of paths whose link order is acyclic).  ``sort_span``: the longest
    span of arrival times merged by counting sort (default :func:`sort_span_for`; tests set it to 0 to
    exercise the packet-by-packet merge).  ``python``: run the kernel's Python source instead (tests).
    ``last_only``: return only the last delivery (an int), as the emulator asks for it: a cluster on the last
    link of all its flows is then served without the packets' own times."""
    ready = np.ascontiguousarray(ready, dtype=np.int64)
    path = np.ascontiguousarray(path, dtype=np.int64)
    path_off = np.ascontiguousarray(path_off, dtype=np.int64)
    path_link = np.ascontiguousarray(path_link, dtype=np.int64)
    path_lat = np.ascontiguousarray(path_lat, dtype=np.int64)
    nl = int(path_link.max()) + 1 if path_link.size else 1
    if path_rank is None:
        path_rank = _ranks_from_paths(path_off, path_link, nl)
    path_rank = np.ascontiguousarray(path_rank, dtype=np.int64)
    P = ready.shape[0]
    if P == 0:
        return 0 if last_only else np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, (ready[1:] != ready[:-1]) | (path[1:] != path[:-1])])
    f_n = np.diff(np.r_[starts, P]).astype(np.int64)
    nf = starts.shape[0]
    pg = flow_program([path[starts]], path_off, path_link, path_lat, path_rank)
    deliver = np.zeros(P, np.int64)
    span = sort_span_for(P) if sort_span is None else int(sort_span)
    last = (noc_program.py_func if python else noc_program)(
        0, nf, ready[starts].copy(), f_n, pg.g_off, pg.v_off, pg.v_slot, pg.v_prev, pg.v_tail, pg.v_fin,
        np.zeros((8, nf), np.int64), np.zeros(P, np.int64), np.zeros(span, np.int64), deliver, not last_only)
    return int(last) if last_only else deliver


def _ranks_from_paths(path_off, path_link, nl):
    """Longest-path ranks of the links (a link after every link that precedes it on some path)."""
    rank = np.zeros(nl, np.int64)
    for _ in range(nl + 1):
        changed = False
        for i in range(path_off.shape[0] - 1):
            for k in range(path_off[i] + 1, path_off[i + 1]):
                if rank[path_link[k]] <= rank[path_link[k - 1]]:
                    rank[path_link[k]] = rank[path_link[k - 1]] + 1
                    changed = True
        if not changed:
            break
    else:
        raise ValueError("the paths' link order has a cycle")
    return rank[path_link]


# --------------------------------------------------------------------------- Python event-driven model
def simulate_heap(ready, path, path_off, path_link, path_lat, starts: list | None = None) -> np.ndarray:
    """Delivery time of every packet (event driven, Python ``heapq``): same answers as :func:`simulate`.
    ``starts``, when given, receives ``(link, cycle)`` of every packet's start on every link (the trace)."""
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
        if starts is not None:
            starts.append((link, start))
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
