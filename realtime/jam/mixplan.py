"""Personal-mix planner: participants and mixer settings in, one tick's gain matrix out. Pure.

Every listener hears every sender through a personal mix: ``Y = G · X`` with X the senders'
mono blocks (N x B) and rows ``2m``/``2m + 1`` of G (2M x N) the left/right of mix ``m``
(:func:`realtime.dsp.mixer.mix_and_limit`). Gains in dB, constant-power pans
(:func:`realtime.dsp.units.pan_gains`), mutes and self-monitoring are folded into G by
:func:`realtime.dsp.mixer.build_gain_matrix`.

**Distinct mixes.** Listeners whose row pairs are bit-identical share one mix, so the engine
encodes once per *distinct* mix and fans the packet out (Jamulus #535: in a band where nobody
touched a fader, everyone hears the same mix). With default settings and self-monitoring on
(the Jamulus "golden rule": hear yourself through the server) there is exactly one mix.

**Click-free changes.** A new sender fades in linearly over ``fade_in_s`` (3 s, as Jamulus);
any settings change ramps over one block. Both are expressed as ``gains`` (where the block
starts) → ``gains_end`` (where it ends), for :func:`realtime.dsp.mixer.mix_matrix_ramp`.

:meth:`MixPlanner.plan` runs once per tick; when nothing changed and nothing is moving it
returns the previous :class:`MixPlan` object itself, allocating nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from realtime.dsp.mixer import build_gain_matrix

__all__ = ["InputDefaults", "MixPlan", "MixPlanner"]


def _check_gain(db: float, what: str) -> float:
    value = float(db)
    if math.isnan(value) or value == math.inf:
        raise ValueError(f"{what} must be a finite level in dB (or -inf for silence), got {db!r}")
    return value


def _check_pan(pan: float, what: str) -> float:
    value = float(pan)
    if not -1.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{what} must be within -1…1, got {pan!r}")
    return value


@dataclass(frozen=True, slots=True)
class InputDefaults:
    """A sender's level in everyone's mix unless a listener overrides it (the document's live track)."""

    gain_db: float = 0.0
    pan: float = 0.0
    mute: bool = False

    def __post_init__(self) -> None:
        _check_gain(self.gain_db, "gain_db")
        _check_pan(self.pan, "pan")


@dataclass(slots=True, eq=False)
class MixPlan:
    """What the engine needs for one tick: ``Y = gains · X`` (or the ramp to ``gains_end``).

    - ``inputs``: pids of the senders, the column (and X row) order.
    - ``gains``: (2M x N) float32, C-contiguous; rows 2m, 2m+1 are distinct mix m's left/right.
    - ``gains_end``: same shape when gains move during this block (fade-in, a change):
      ramp with ``mix_matrix_ramp(gains, gains_end, X)``; None when static.
    - ``mix_of``: listener pid -> distinct mix index (encode once per mix, fan out).
    - ``listeners_of``: mix index -> listener pids (the inverse of ``mix_of``).

    Treat every field as read-only: a static plan is handed out again on the next tick.
    """

    version: int
    inputs: tuple[str, ...]
    gains: NDArray[np.float32]
    gains_end: NDArray[np.float32] | None
    mix_of: dict[str, int]
    listeners_of: tuple[tuple[str, ...], ...] = ()

    @property
    def mixes(self) -> int:
        """M, the number of distinct mixes."""
        return len(self.listeners_of)


@dataclass(slots=True)
class _Member:
    sends: bool
    listens: bool
    defaults: InputDefaults
    self_monitor: bool = True
    fade: int = 0  # blocks of fade-in done (senders)
    gains: dict[str, float] = field(default_factory=dict)  # this listener's overrides by source
    pans: dict[str, float] = field(default_factory=dict)
    mutes: dict[str, bool] = field(default_factory=dict)


class MixPlanner:
    """The live mixer state of one jam; :meth:`plan` once per tick."""

    def __init__(self, *, block: int = 120, sample_rate: int = 48000, fade_in_s: float = 3.0) -> None:
        if block <= 0 or sample_rate <= 0:
            raise ValueError(f"block and sample_rate must be positive, got {block}, {sample_rate}")
        if not (math.isfinite(fade_in_s) and fade_in_s >= 0):
            raise ValueError(f"fade_in_s must be a non-negative number of seconds, got {fade_in_s!r}")
        self._fade_blocks = max(0, math.ceil(fade_in_s * sample_rate / block))
        self._members: dict[str, _Member] = {}
        self._dirty = True
        self._fading: dict[str, None] = {}  # senders still fading in (insertion-ordered set)
        self._version = 0
        # How the listeners group into distinct mixes under the current settings (self._base).
        self._mix_of: dict[str, int] = {}
        self._listeners_of: tuple[tuple[str, ...], ...] = ()
        self._rep_rows: NDArray[np.intp] = np.zeros(0, dtype=np.intp)
        # The gains every listener ended the last block on (2L x N, in the last plan's order).
        self._last_end: NDArray[np.float32] = np.zeros((0, 0), dtype=np.float32)
        self._last_inputs: tuple[str, ...] = ()
        self._last_listeners: tuple[str, ...] = ()
        self._base: NDArray[np.float32] = np.zeros((0, 0), dtype=np.float32)
        self._plan = MixPlan(0, (), np.zeros((0, 0), dtype=np.float32), None, {}, ())

    @property
    def fade_blocks(self) -> int:
        """Blocks a new sender takes to reach full gain."""
        return self._fade_blocks

    # --- membership and settings ---------------------------------------------------------------

    def _member(self, pid: str) -> _Member:
        try:
            return self._members[pid]
        except KeyError:
            raise KeyError(f"no participant {pid!r} in this mix") from None

    def add(self, pid: str, *, sends: bool, listens: bool, defaults: InputDefaults = InputDefaults()) -> None:
        """A participant joins: a sender gets a column (fading in), a listener a mix. Viewers: sends=False."""
        if pid in self._members:
            raise ValueError(f"participant {pid!r} is already in the mix")
        self._members[pid] = _Member(sends=sends, listens=listens, defaults=defaults)
        self._dirty = True
        if sends and self._fade_blocks:
            self._fading[pid] = None

    def remove(self, pid: str) -> None:
        """A participant leaves: its column and its mix go, and so do others' overrides for it."""
        self._member(pid)
        del self._members[pid]
        self._fading.pop(pid, None)
        for member in self._members.values():
            member.gains.pop(pid, None)
            member.pans.pop(pid, None)
            member.mutes.pop(pid, None)
        self._dirty = True

    def set_defaults(self, pid: str, defaults: InputDefaults) -> None:
        """The session document's live-track level for this sender changed."""
        member = self._member(pid)
        if member.defaults != defaults:
            member.defaults = defaults
            self._dirty = True

    def set_overrides(
        self,
        listener: str,
        *,
        gains: Mapping[str, float | None] | None = None,
        pans: Mapping[str, float | None] | None = None,
        mutes: Mapping[str, bool | None] | None = None,
        reset: bool = False,
    ) -> None:
        """One listener's personal mix: dB, pan and mute per source pid; None clears one override.

        ``reset`` clears all of this listener's overrides before applying the given ones.
        Sources that are not in the jam are ignored (they may have just left). Validated as a
        whole before anything changes: a bad value raises ``ValueError`` and changes nothing.
        """
        member = self._member(listener)
        known = self._members
        new_gains = {} if reset else dict(member.gains)
        new_pans = {} if reset else dict(member.pans)
        new_mutes = {} if reset else dict(member.mutes)
        for src, db in (gains or {}).items():
            if db is None:
                new_gains.pop(src, None)
            elif src in known:
                new_gains[src] = _check_gain(db, f"gain for {src!r}")
        for src, pan in (pans or {}).items():
            if pan is None:
                new_pans.pop(src, None)
            elif src in known:
                new_pans[src] = _check_pan(pan, f"pan for {src!r}")
        for src, mute in (mutes or {}).items():
            if mute is None:
                new_mutes.pop(src, None)
            elif src in known:
                new_mutes[src] = bool(mute)
        if (new_gains, new_pans, new_mutes) != (member.gains, member.pans, member.mutes):
            member.gains, member.pans, member.mutes = new_gains, new_pans, new_mutes
            self._dirty = True

    def set_self_monitor(self, listener: str, on: bool) -> None:
        """Whether ``listener`` hears their own signal through the server (default on)."""
        member = self._member(listener)
        if member.self_monitor != on:
            member.self_monitor = bool(on)
            self._dirty = True

    # --- planning -------------------------------------------------------------------------------

    def _build_base(self, inputs: tuple[str, ...], listeners: tuple[str, ...]) -> NDArray[np.float32]:
        """Full-gain (no fade) 2L x N matrix of every listener's settings."""
        n, count = len(inputs), len(listeners)
        column = {pid: j for j, pid in enumerate(inputs)}
        defaults = [self._members[src].defaults for src in inputs]
        # Everyone starts from the session defaults; overrides are sparse, so patch them in.
        gain_db = np.empty((count, n), dtype=np.float64)
        pan = np.empty((count, n), dtype=np.float64)
        mute = np.empty((count, n), dtype=bool)
        gain_db[:] = [d.gain_db for d in defaults]
        pan[:] = [d.pan for d in defaults]
        mute[:] = [d.mute for d in defaults]
        self_input: list[int | None] = []
        monitor: list[bool] = []
        for i, pid in enumerate(listeners):
            member = self._members[pid]
            for table, values in ((gain_db, member.gains), (pan, member.pans), (mute, member.mutes)):
                for src, value in values.items():
                    j = column.get(src)
                    if j is not None:
                        table[i, j] = value
            self_input.append(column.get(pid))
            monitor.append(member.self_monitor)
        out = np.empty((2 * count, n), dtype=np.float32)
        if count:
            build_gain_matrix(gain_db, pan, mute=mute, self_input=self_input, self_monitor=monitor, out=out)
        return out

    def _fade_factors(
        self, inputs: tuple[str, ...]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
        """Each column's fade gain at the start and the end of this block (advancing the fades).

        None when every column is at full gain.
        """
        if not self._fading:
            return None
        total = self._fade_blocks
        before = np.ones(len(inputs), dtype=np.float32)
        after = np.ones(len(inputs), dtype=np.float32)
        for src in list(self._fading):
            member = self._members[src]
            j = inputs.index(src)
            before[j] = member.fade / total
            member.fade += 1
            after[j] = member.fade / total
            if member.fade >= total:
                del self._fading[src]
        return before, after

    @staticmethod
    def _group(
        listeners: tuple[str, ...], start: NDArray[np.float32], end: NDArray[np.float32] | None
    ) -> tuple[dict[str, int], tuple[tuple[str, ...], ...], NDArray[np.intp]]:
        """Listeners whose row pairs (of ``start``, and of ``end`` if given) are bit-identical."""
        groups: dict[bytes, int] = {}
        mix_of: dict[str, int] = {}
        members: list[list[str]] = []
        reps: list[int] = []
        for i, pid in enumerate(listeners):
            key = start[2 * i : 2 * i + 2].tobytes()
            if end is not None:
                key += end[2 * i : 2 * i + 2].tobytes()
            m = groups.get(key)
            if m is None:
                m = groups[key] = len(members)
                reps += (2 * i, 2 * i + 1)
                members.append([])
            mix_of[pid] = m
            members[m].append(pid)
        return mix_of, tuple(tuple(g) for g in members), np.array(reps, dtype=np.intp)

    def plan(self) -> MixPlan:
        """This tick's plan. The same object as last tick when nothing changed or moved."""
        last = self._plan
        if not self._dirty and not self._fading and last.gains_end is None:
            return last
        inputs = tuple(pid for pid, m in self._members.items() if m.sends)
        listeners = tuple(pid for pid, m in self._members.items() if m.listens)
        same_layout = inputs == self._last_inputs and listeners == self._last_listeners
        changed = self._dirty
        if changed:
            self._base = self._build_base(inputs, listeners)
            self._mix_of, self._listeners_of, self._rep_rows = self._group(listeners, self._base, None)
            self._dirty = False
        factors = self._fade_factors(inputs)
        end = self._base if factors is None else self._base * factors[1]
        if same_layout:
            start = self._last_end  # where every listener's gains stand now
        else:
            # Someone joined or left: carry the gains of those who stayed over to the new layout.
            # A new listener, and a new column, start where the fade stands (silence for a sender).
            start = self._base.copy() if factors is None else self._base * factors[0]
            old_row = {pid: i for i, pid in enumerate(self._last_listeners)}
            old_col = {pid: j for j, pid in enumerate(self._last_inputs)}
            new_r: list[int] = []
            old_r: list[int] = []
            for i, pid in enumerate(listeners):
                o = old_row.get(pid)
                if o is not None:
                    new_r += (2 * i, 2 * i + 1)
                    old_r += (2 * o, 2 * o + 1)
            cols = [(j, old_col[src]) for j, src in enumerate(inputs) if src in old_col]
            if new_r and cols:
                new_c = [j for j, _ in cols]
                old_c = [k for _, k in cols]
                start[np.ix_(new_r, new_c)] = self._last_end[np.ix_(old_r, old_c)]
        moving = not np.array_equal(start, end)
        if changed and moving:
            # Mid-ramp, listeners must also agree on where they start to share a mix.
            mix_of, listeners_of, rows = self._group(listeners, start, end)
        else:
            # Fades scale whole columns by factors > 0 at the block's end, so they keep the
            # grouping of the settings; after a ramp, start is last block's end: the settings.
            mix_of, listeners_of, rows = self._mix_of, self._listeners_of, self._rep_rows
        gains = start[rows]
        gains_end = end[rows] if moving else None
        self._last_end = end
        self._last_inputs = inputs
        self._last_listeners = listeners
        self._version += 1
        self._plan = MixPlan(
            version=self._version,
            inputs=inputs,
            gains=gains,
            gains_end=gains_end,
            mix_of=mix_of,
            listeners_of=listeners_of,
        )
        return self._plan
