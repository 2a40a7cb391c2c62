"""Recorded packet-arrival patterns for jitter-buffer tests, generated deterministically.

Each generator returns the arrivals of one sender's stream (sequence number, arrival time,
payload) as a network would deliver them to the server, from a seeded RNG so every run sees
the same "recording". :func:`replay` plays one into a :class:`JitterBuffer` with the server's
tick (``get`` every ``block_s``) interleaved in time order and returns what came out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from realtime.jam.jitter import JitterBuffer, JitterStats

BLOCK_S = 0.0025
BASE_DELAY_S = 0.010
U32 = 1 << 32


@dataclass(frozen=True, slots=True)
class Arrival:
    index: int  # the sender's packet number (0, 1, …), before any wrap
    seq: int  # wire sequence number (u32)
    arrival_s: float
    resync: bool = False

    @property
    def payload(self) -> bytes:
        return self.index.to_bytes(8, "big")


def _stream(
    send_s: Iterable[float],
    delay_s: Iterable[float],
    *,
    start_seq: int = 0,
    keep: Iterable[bool] | None = None,
) -> list[Arrival]:
    sends = list(send_s)
    delays = list(delay_s)
    kept = [True] * len(sends) if keep is None else list(keep)
    out = [
        Arrival(i, (start_seq + i) % U32, s + d)
        for i, (s, d, k) in enumerate(zip(sends, delays, kept, strict=True))
        if k
    ]
    out.sort(key=lambda a: (a.arrival_s, a.index))
    return out


def _sends(n: int, block_s: float = BLOCK_S, rate: float = 1.0) -> list[float]:
    """Send times of ``n`` packets by a sender whose clock runs ``rate`` times the server's."""
    return [i * block_s / rate for i in range(n)]


def steady(n: int, *, start_seq: int = 0) -> list[Arrival]:
    """A wired LAN: every packet takes exactly the same time."""
    return _stream(_sends(n), [BASE_DELAY_S] * n, start_seq=start_seq)


def pareto(
    n: int,
    *,
    seed: int = 1,
    alpha: float = 2.5,
    scale_s: float = 0.0005,
    cap_s: float = 0.05,
    until: int | None = None,
    start_seq: int = 0,
) -> list[Arrival]:
    """Wi-Fi-like jitter: independent heavy-tailed (Lomax) extra delays, so it reorders too.

    ``P(extra > x) = (1 + x / scale_s) ** -alpha``: with the defaults, 1.1 % of packets are more
    than one 2.5 ms block late, 5e-4 more than 10 ms, 1.3e-4 more than 17.5 ms. Packets from
    index ``until`` on are steady again (the Wi-Fi calmed down).
    """
    rng = np.random.default_rng(seed)
    extra = np.minimum(scale_s * rng.pareto(alpha, n), cap_s)
    if until is not None:
        extra[until:] = 0.0
    return _stream(_sends(n), (BASE_DELAY_S + extra).tolist(), start_seq=start_seq)


def bursts(n: int, *, hold_s: float = 0.020, period_s: float = 1.0, phase_s: float = 0.5) -> list[Arrival]:
    """Every ``period_s`` the network holds packets for ``hold_s``, then releases them together."""
    sends = _sends(n)
    delays = []
    for s in sends:
        k = np.floor((s - phase_s) / period_s)
        start = phase_s + k * period_s
        if s >= phase_s and s < start + hold_s:
            delays.append(start + hold_s - s + BASE_DELAY_S)
        else:
            delays.append(BASE_DELAY_S)
    return _stream(sends, delays)


def loss(n: int, p: float, *, seed: int = 2) -> list[Arrival]:
    """Independent random loss with probability ``p`` (steady delay otherwise)."""
    rng = np.random.default_rng(seed)
    return _stream(_sends(n), [BASE_DELAY_S] * n, keep=(rng.random(n) >= p).tolist())


def drift(n: int, ppm: float) -> list[Arrival]:
    """A sender whose clock is ``ppm`` parts per million fast (+) or slow (-)."""
    return _stream(_sends(n, rate=1.0 + ppm * 1e-6), [BASE_DELAY_S] * n)


def reordered(n: int, p: float = 0.05, *, seed: int = 3, by_s: float = 0.004) -> list[Arrival]:
    """A fraction ``p`` of packets is delayed by ``by_s`` (so later ones overtake them)."""
    rng = np.random.default_rng(seed)
    late = rng.random(n) < p
    return _stream(_sends(n), (BASE_DELAY_S + by_s * late).tolist())


def duplicated(n: int, p: float = 0.05, *, seed: int = 4, after_s: float = 0.003) -> list[Arrival]:
    """A fraction ``p`` of packets arrives twice, the copy ``after_s`` later."""
    rng = np.random.default_rng(seed)
    base = steady(n)
    dup = rng.random(n) < p
    extra = [Arrival(a.index, a.seq, a.arrival_s + after_s) for a in base if dup[a.index]]
    out = base + extra
    out.sort(key=lambda a: (a.arrival_s, a.index))
    return out


def outage(n: int, *, start_s: float, duration_s: float, delivered_late: bool = False) -> list[Arrival]:
    """Nothing gets through for ``duration_s``: lost, or (``delivered_late``) all released at its end."""
    sends = _sends(n)
    end = start_s + duration_s
    if delivered_late:
        delays = [end - s + BASE_DELAY_S if start_s <= s < end else BASE_DELAY_S for s in sends]
        return _stream(sends, delays)
    keep = [not start_s <= s < end for s in sends]
    return _stream(sends, [BASE_DELAY_S] * n, keep=keep)


def late_spikes(n: int, *, every: int, by_blocks: int, start: int = 0) -> list[Arrival]:
    """Steady, except every ``every``-th packet from ``start`` on arrives ``by_blocks`` blocks late."""
    delays = [
        BASE_DELAY_S + (by_blocks * BLOCK_S if i >= start and (i - start) % every == 0 else 0.0)
        for i in range(n)
    ]
    return _stream(_sends(n), delays)


def paused(n: int, *, at: int, pause: int, flag: bool) -> list[Arrival]:
    """The sender stops sending after packet ``at - 1`` for ``pause`` blocks (a mute), then resumes
    with the next sequence number; ``flag`` marks the first frame after the pause RESYNC."""
    out: list[Arrival] = []
    for i in range(n):
        send = i * BLOCK_S + (pause * BLOCK_S if i >= at else 0.0)
        out.append(Arrival(i, i % U32, send + BASE_DELAY_S, resync=flag and i == at))
    return out


def restarted(n: int, *, at: int, new_seq: int) -> list[Arrival]:
    """The sender restarts at packet ``at`` with an unrelated sequence number and no RESYNC flag."""
    return [
        Arrival(i, (i if i < at else new_seq + i - at) % U32, i * BLOCK_S + BASE_DELAY_S) for i in range(n)
    ]


@dataclass(slots=True)
class Trace:
    """What came out of the buffer, tick by tick."""

    played: list[int | None] = field(default_factory=list)  # sender packet index or None
    queued: list[int] = field(default_factory=list)  # packets queued after each get
    depth: list[int] = field(default_factory=list)  # target depth after each get
    concealed: list[int] = field(default_factory=list)  # cumulative concealment count
    stats: JitterStats | None = None

    def rate(self, start: int, counter: list[int] | None = None) -> float:
        """Concealments per tick from tick ``start`` on."""
        values = self.concealed if counter is None else counter
        ticks = len(values) - start
        return (values[-1] - values[start - 1 if start else 0]) / ticks


def replay(
    buffer: JitterBuffer,
    arrivals: list[Arrival],
    ticks: int,
    *,
    phase_s: float = 0.0011,
    block_s: float = BLOCK_S,
    redundant: bool = False,
) -> Trace:
    """Interleave ``arrivals`` with ``ticks`` gets at ``k * block_s + phase_s`` in time order.

    ``redundant``: every frame also carries a copy of the previous packet (offered with
    ``put_redundant`` after the packet itself, as the engine does).
    """
    trace = Trace()
    i = 0
    for k in range(ticks):
        t = k * block_s + phase_s
        while i < len(arrivals) and arrivals[i].arrival_s <= t:
            a = arrivals[i]
            buffer.put(a.seq, a.payload, a.arrival_s, resync=a.resync)
            if redundant and a.index > 0:
                buffer.put_redundant((a.seq - 1) % U32, (a.index - 1).to_bytes(8, "big"), a.arrival_s)
            i += 1
        out = buffer.get()
        trace.played.append(None if out is None else int.from_bytes(out, "big"))
        st = buffer.stats()
        trace.queued.append(st.queued)
        trace.depth.append(st.depth)
        trace.concealed.append(st.concealed)
    trace.stats = buffer.stats()
    return trace
