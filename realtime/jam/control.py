"""JSON control messages of a live jam (text WebSocket frames, or the ``jam-control`` DataChannel).

Client → server messages are parsed into frozen dataclasses by :func:`parse_control`, which
rejects anything malformed with a :class:`ControlError` (a short ``code`` and a readable
message); unknown *fields* are ignored so newer clients keep working. Server → client messages
are built as compact JSON text by the ``*_message`` helpers. The shapes are documented in
``docs/jam-protocol.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from .jitter import JitterStats

__all__ = [
    "CODECS",
    "JITTER_MODES",
    "MAX_CONTROL_BYTES",
    "MAX_GAIN_DB",
    "MAX_ID_LENGTH",
    "MAX_LATENCY_MS",
    "MAX_MIX_ENTRIES",
    "MAX_NAME_LENGTH",
    "MAX_RTT_MS",
    "MIN_GAIN_DB",
    "ClientMessage",
    "ControlError",
    "Jitter",
    "Join",
    "Leave",
    "Mix",
    "Monitor",
    "ParticipantInfo",
    "Ping",
    "StatsRequest",
    "error_message",
    "jitter_stats_json",
    "parse_control",
    "participants_message",
    "pong_message",
    "stats_message",
    "welcome_message",
]

MAX_CONTROL_BYTES: Final = 64 * 1024
MAX_NAME_LENGTH: Final = 100
MAX_ID_LENGTH: Final = 128
MAX_MIX_ENTRIES: Final = 1024
MIN_GAIN_DB: Final = -144.0
"""At or below this a gain is silence (realtime.dsp.units.SILENCE_DB)."""
MAX_GAIN_DB: Final = 12.0
MAX_LATENCY_MS: Final = 2000.0
"""The largest client audio latency ``join.latencyMs`` may report."""
MAX_RTT_MS: Final = 10000.0
"""The largest round trip ``ping.rttMs`` may report."""
MIN_DEPTH: Final = 1
MAX_DEPTH: Final = 20
CODECS: Final = ("opus", "pcm16")
JITTER_MODES: Final = ("auto", "safe", "manual")

Codec = Literal["opus", "pcm16"]
JitterMode = Literal["auto", "safe", "manual"]


class ControlError(ValueError):
    """A control message the server refuses. ``code`` is one of:

    ``too_long`` (over 64 KiB: close 1009), ``not_json``, ``not_object``, ``unknown_type``,
    ``missing_field``, ``bad_field`` (wrong JSON type), ``out_of_range`` (including NaN/inf),
    ``unknown_codec`` (close 1003). :attr:`close_code` gives the WebSocket close code
    (1007 unless noted) for endpoints that close on a bad message.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def close_code(self) -> int:
        if self.code == "too_long":
            return 1009
        if self.code == "unknown_codec":
            return 1003
        return 1007


@dataclass(frozen=True, slots=True)
class Join:
    """``{"type":"join","name"?:str,"codec":"opus"|"pcm16","channels":1|2,"latencyMs"?:number}``

    ``latency_ms`` is the client's own audio latency (output + input, 0…2000 ms), used to align
    its recordings (:mod:`realtime.jam.recorder`); None when not reported.
    """

    codec: Codec
    channels: int
    name: str | None = None
    latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    """``{"type":"leave"}``"""


@dataclass(frozen=True, slots=True)
class Mix:
    """``{"type":"mix","gains"?:{pid: dB},"pans"?:{pid: -1..1},"mutes"?:{pid: bool},"reset"?:bool}``

    A ``null`` value clears that override (back to the session default). ``reset`` clears all
    overrides first, then applies the maps given with it. Absent maps are None.
    """

    gains: Mapping[str, float | None] | None = None
    pans: Mapping[str, float | None] | None = None
    mutes: Mapping[str, bool | None] | None = None
    reset: bool = False


@dataclass(frozen=True, slots=True)
class Monitor:
    """``{"type":"monitor","self":bool}``: hear yourself through the server (default on)."""

    self_monitor: bool


@dataclass(frozen=True, slots=True)
class Jitter:
    """``{"type":"jitter","mode":"auto"|"safe"|"manual","depth"?:1..20}``

    ``depth`` is the fixed depth for "manual" and the margin over auto for "safe".
    """

    mode: JitterMode
    depth: int | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """``{"type":"ping","t":number,"rttMs"?:number}``: echoed in a pong with the server's time.

    ``rtt_ms`` is the round trip the client measured from earlier pongs (0…10000 ms), reported so
    the server can align the client's recordings; None when not reported.
    """

    t: float
    rtt_ms: float | None = None


@dataclass(frozen=True, slots=True)
class StatsRequest:
    """``{"type":"stats"}``: ask for a stats message now."""


ClientMessage = Join | Leave | Mix | Monitor | Jitter | Ping | StatsRequest


def _reject_constant(name: str) -> float:
    raise ControlError("out_of_range", f"{name} is not a valid number")


def _number(obj: Mapping[str, object], key: str, where: str) -> float:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ControlError("bad_field", f"{where} must be a number")
    try:
        result = float(value)
    except OverflowError:  # an integer literal too large for a double
        result = math.inf
    if not math.isfinite(result):
        raise ControlError("out_of_range", f"{where} must be finite")
    return result


def _pid(key: str, field: str) -> str:
    if not key or len(key) > MAX_ID_LENGTH:
        raise ControlError("out_of_range", f"{field}: participant id must be 1 to {MAX_ID_LENGTH} characters")
    return key


def _id_map(msg: Mapping[str, object], field: str) -> Mapping[str, object] | None:
    if field not in msg or msg[field] is None:
        return None
    value = msg[field]
    if not isinstance(value, dict):
        raise ControlError("bad_field", f"{field} must be an object keyed by participant id")
    if len(value) > MAX_MIX_ENTRIES:
        raise ControlError("out_of_range", f"{field} has more than {MAX_MIX_ENTRIES} entries")
    return value


def _parse_gains(msg: Mapping[str, object]) -> dict[str, float | None] | None:
    raw = _id_map(msg, "gains")
    if raw is None:
        return None
    out: dict[str, float | None] = {}
    for key, value in raw.items():
        pid = _pid(key, "gains")
        if value is None:
            out[pid] = None
            continue
        db = _number(raw, key, f"gains[{key!r}]")
        if not MIN_GAIN_DB <= db <= MAX_GAIN_DB:
            raise ControlError(
                "out_of_range", f"gains[{key!r}] must be within {MIN_GAIN_DB}…{MAX_GAIN_DB} dB"
            )
        out[pid] = db
    return out


def _parse_pans(msg: Mapping[str, object]) -> dict[str, float | None] | None:
    raw = _id_map(msg, "pans")
    if raw is None:
        return None
    out: dict[str, float | None] = {}
    for key, value in raw.items():
        pid = _pid(key, "pans")
        if value is None:
            out[pid] = None
            continue
        pan = _number(raw, key, f"pans[{key!r}]")
        if not -1.0 <= pan <= 1.0:
            raise ControlError("out_of_range", f"pans[{key!r}] must be within -1…1")
        out[pid] = pan
    return out


def _parse_mutes(msg: Mapping[str, object]) -> dict[str, bool | None] | None:
    raw = _id_map(msg, "mutes")
    if raw is None:
        return None
    out: dict[str, bool | None] = {}
    for key, value in raw.items():
        pid = _pid(key, "mutes")
        if value is not None and not isinstance(value, bool):
            raise ControlError("bad_field", f"mutes[{key!r}] must be true, false or null")
        out[pid] = value
    return out


def _require(msg: Mapping[str, object], key: str, kind: str) -> object:
    if key not in msg:
        raise ControlError("missing_field", f"{kind} needs a {key!r} field")
    return msg[key]


def _parse_join(msg: Mapping[str, object]) -> Join:
    codec = _require(msg, "codec", "join")
    if not isinstance(codec, str):
        raise ControlError("bad_field", "join.codec must be a string")
    if codec not in CODECS:
        raise ControlError("unknown_codec", f"codec {codec[:32]!r} is not supported (opus, pcm16)")
    channels = _require(msg, "channels", "join")
    if isinstance(channels, bool) or not isinstance(channels, int):
        raise ControlError("bad_field", "join.channels must be an integer")
    if channels not in (1, 2):
        raise ControlError("out_of_range", "join.channels must be 1 or 2")
    name = msg.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise ControlError("bad_field", "join.name must be a string")
        name = name.strip()
        if len(name) > MAX_NAME_LENGTH:
            raise ControlError("out_of_range", f"join.name is longer than {MAX_NAME_LENGTH} characters")
        name = name or None
    latency = _optional_ms(msg, "latencyMs", "join.latencyMs", MAX_LATENCY_MS)
    return Join(
        codec="opus" if codec == "opus" else "pcm16", channels=channels, name=name, latency_ms=latency
    )


def _parse_mix(msg: Mapping[str, object]) -> Mix:
    reset = msg.get("reset", False)
    if not isinstance(reset, bool):
        raise ControlError("bad_field", "mix.reset must be a boolean")
    return Mix(gains=_parse_gains(msg), pans=_parse_pans(msg), mutes=_parse_mutes(msg), reset=reset)


def _parse_monitor(msg: Mapping[str, object]) -> Monitor:
    value = _require(msg, "self", "monitor")
    if not isinstance(value, bool):
        raise ControlError("bad_field", "monitor.self must be a boolean")
    return Monitor(self_monitor=value)


def _parse_jitter(msg: Mapping[str, object]) -> Jitter:
    mode = _require(msg, "mode", "jitter")
    if not isinstance(mode, str):
        raise ControlError("bad_field", "jitter.mode must be a string")
    if mode not in JITTER_MODES:
        raise ControlError("out_of_range", f"jitter.mode must be one of {', '.join(JITTER_MODES)}")
    depth = msg.get("depth")
    if depth is not None:
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise ControlError("bad_field", "jitter.depth must be an integer")
        if not MIN_DEPTH <= depth <= MAX_DEPTH:
            raise ControlError("out_of_range", f"jitter.depth must be within {MIN_DEPTH}…{MAX_DEPTH} blocks")
    typed: JitterMode = "auto" if mode == "auto" else "safe" if mode == "safe" else "manual"
    return Jitter(mode=typed, depth=depth)


def _optional_ms(msg: Mapping[str, object], key: str, where: str, limit: float) -> float | None:
    if msg.get(key) is None:
        return None
    value = _number(msg, key, where)
    if not 0.0 <= value <= limit:
        raise ControlError("out_of_range", f"{where} must be within 0…{limit:g} ms")
    return value


def _parse_ping(msg: Mapping[str, object]) -> Ping:
    _require(msg, "t", "ping")
    return Ping(t=_number(msg, "t", "ping.t"), rtt_ms=_optional_ms(msg, "rttMs", "ping.rttMs", MAX_RTT_MS))


def parse_control(text: str | bytes | bytearray | memoryview) -> ClientMessage:
    """Parse one client → server control message; raises :class:`ControlError` when malformed."""
    size = len(text) if isinstance(text, str) else memoryview(text).nbytes
    # A str of n characters is at least n UTF-8 bytes, so this check never lets a long one through.
    if size > MAX_CONTROL_BYTES:
        raise ControlError("too_long", f"control message is over {MAX_CONTROL_BYTES} bytes")
    if isinstance(text, str):
        if len(text.encode("utf-8", "surrogatepass")) > MAX_CONTROL_BYTES:
            raise ControlError("too_long", f"control message is over {MAX_CONTROL_BYTES} bytes")
        source: str = text
    else:
        try:
            source = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ControlError("not_json", "control message is not valid UTF-8") from exc
    try:
        msg = json.loads(source, parse_constant=_reject_constant)
    except ControlError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ControlError("not_json", "control message is not valid JSON") from exc
    if not isinstance(msg, dict):
        raise ControlError("not_object", "control message must be a JSON object")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise ControlError(
            "missing_field" if kind is None else "bad_field", "control message needs a string 'type'"
        )
    if kind == "join":
        return _parse_join(msg)
    if kind == "leave":
        return Leave()
    if kind == "mix":
        return _parse_mix(msg)
    if kind == "monitor":
        return _parse_monitor(msg)
    if kind == "jitter":
        return _parse_jitter(msg)
    if kind == "ping":
        return _parse_ping(msg)
    if kind == "stats":
        return StatsRequest()
    raise ControlError("unknown_type", f"unknown control message type {kind[:32]!r}")


# --- server → client -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    """One entry of the participants list. ``can_send`` is false for viewers."""

    id: str
    name: str | None
    user_id: str
    can_send: bool

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "userId": self.user_id, "canSend": self.can_send}


def _dump(obj: Mapping[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def welcome_message(
    *,
    participant_id: str,
    block: int,
    sample_rate: int,
    codec: str,
    channels: int,
    can_send: bool,
    participants: Sequence[ParticipantInfo],
    jitter_mode: str = "auto",
    jitter_depth: int | None = None,
    self_monitor: bool = True,
) -> str:
    """The first message after a valid join: who you are and how the jam is clocked."""
    return _dump(
        {
            "type": "welcome",
            "participantId": participant_id,
            "block": block,
            "sampleRate": sample_rate,
            "codec": codec,
            "channels": channels,
            "canSend": can_send,
            "selfMonitor": self_monitor,
            "jitter": {"mode": jitter_mode, "depth": jitter_depth},
            "participants": [p.to_json() for p in participants],
        }
    )


def participants_message(participants: Sequence[ParticipantInfo]) -> str:
    """Sent to everyone whenever someone joins or leaves (the full list, not a delta)."""
    return _dump({"type": "participants", "participants": [p.to_json() for p in participants]})


def pong_message(t: float, server_time: float) -> str:
    """Answer to a ping: the client's ``t`` echoed and the server's clock (seconds)."""
    return _dump({"type": "pong", "t": t, "serverTime": server_time})


def jitter_stats_json(stats: JitterStats) -> dict[str, object]:
    """A :class:`~realtime.jam.jitter.JitterStats` as the camelCase object used on the wire."""
    return {
        "packets": stats.packets,
        "played": stats.played,
        "lost": stats.lost,
        "late": stats.late,
        "duplicates": stats.duplicates,
        "concealed": stats.concealed,
        "underruns": stats.underruns,
        "overflows": stats.overflows,
        "recovered": stats.recovered,
        "depth": stats.depth,
        "autoDepth": stats.auto_depth,
        "jitterMs": round(stats.jitter_ms, 3),
        "queued": stats.queued,
        "mode": stats.mode,
    }


def stats_message(
    *,
    up: JitterStats | None,
    down: Mapping[str, int | float] | None = None,
    server: Mapping[str, int | float] | None = None,
) -> str:
    """Per-direction quality counters for one participant.

    ``up``: the server's jitter buffer for this participant's audio (what the server heard);
    ``down``: what the server sent this participant (frames sent, frames dropped because the
    connection was behind, …); ``server``: tick health (e.g. ``tickP99Ms``, ``missedTicks``).
    """
    return _dump(
        {
            "type": "stats",
            "up": None if up is None else jitter_stats_json(up),
            "down": dict(down) if down is not None else None,
            "server": dict(server) if server is not None else None,
        }
    )


def error_message(code: str, message: str) -> str:
    """A non-fatal error report (the connection stays open unless a close follows)."""
    return _dump({"type": "error", "code": code, "message": message})
