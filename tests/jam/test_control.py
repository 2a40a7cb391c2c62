"""JSON control messages: every client message, every way it can be malformed, server messages."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.jam.control import (
    MAX_CONTROL_BYTES,
    ControlError,
    Jitter,
    Join,
    Leave,
    Mix,
    Monitor,
    ParticipantInfo,
    Ping,
    StatsRequest,
    error_message,
    parse_control,
    participants_message,
    pong_message,
    stats_message,
    welcome_message,
)
from realtime.jam.jitter import JitterBuffer


def test_join_parses_with_and_without_name() -> None:
    assert parse_control('{"type":"join","codec":"opus","channels":2,"name":"  Ana "}') == Join(
        "opus", 2, "Ana"
    )
    assert parse_control(b'{"type":"join","codec":"pcm16","channels":1}') == Join("pcm16", 1, None)
    blank = parse_control('{"type":"join","codec":"opus","channels":1,"name":"   "}')
    assert isinstance(blank, Join)
    assert blank.name is None


def test_simple_messages() -> None:
    assert parse_control('{"type":"leave"}') == Leave()
    assert parse_control('{"type":"stats"}') == StatsRequest()
    assert parse_control('{"type":"monitor","self":false}') == Monitor(self_monitor=False)
    assert parse_control('{"type":"ping","t":12.5}') == Ping(12.5)
    assert parse_control('{"type":"ping","t":3}') == Ping(3.0)
    assert parse_control('{"type":"jitter","mode":"manual","depth":6}') == Jitter("manual", 6)
    assert parse_control('{"type":"jitter","mode":"auto"}') == Jitter("auto", None)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert parse_control('{"type":"leave","reason":"bye","v":2}') == Leave()


def test_mix_maps_including_null_to_clear() -> None:
    msg = parse_control(
        json.dumps(
            {
                "type": "mix",
                "gains": {"p1": -6, "p2": None, "p3": -144},
                "pans": {"p1": -1, "p2": 0.25},
                "mutes": {"p3": True, "p4": None},
                "reset": True,
            }
        )
    )
    assert isinstance(msg, Mix)
    assert msg.gains == {"p1": -6.0, "p2": None, "p3": -144.0}
    assert msg.pans == {"p1": -1.0, "p2": 0.25}
    assert msg.mutes == {"p3": True, "p4": None}
    assert msg.reset is True
    empty = parse_control('{"type":"mix"}')
    assert empty == Mix(None, None, None, False)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "not_json"),
        ('{"type":"leave"', "not_json"),
        ("[1,2]", "not_object"),
        ('"join"', "not_object"),
        ("null", "not_object"),
        ("{}", "missing_field"),
        ('{"type":3}', "bad_field"),
        ('{"type":"dance"}', "unknown_type"),
        ('{"type":"join","channels":1}', "missing_field"),
        ('{"type":"join","codec":"aac","channels":1}', "unknown_codec"),
        ('{"type":"join","codec":7,"channels":1}', "bad_field"),
        ('{"type":"join","codec":"opus"}', "missing_field"),
        ('{"type":"join","codec":"opus","channels":3}', "out_of_range"),
        ('{"type":"join","codec":"opus","channels":true}', "bad_field"),
        ('{"type":"join","codec":"opus","channels":1.0}', "bad_field"),
        ('{"type":"join","codec":"opus","channels":1,"name":5}', "bad_field"),
        ('{"type":"join","codec":"opus","channels":1,"name":"' + "x" * 101 + '"}', "out_of_range"),
        ('{"type":"mix","gains":[1]}', "bad_field"),
        ('{"type":"mix","gains":{"p":"loud"}}', "bad_field"),
        ('{"type":"mix","gains":{"p":true}}', "bad_field"),
        ('{"type":"mix","gains":{"p":13}}', "out_of_range"),
        ('{"type":"mix","gains":{"p":-145}}', "out_of_range"),
        ('{"type":"mix","gains":{"p":NaN}}', "out_of_range"),
        ('{"type":"mix","gains":{"p":-Infinity}}', "out_of_range"),
        ('{"type":"mix","gains":{"p":1e400}}', "out_of_range"),
        ('{"type":"mix","gains":{"":0}}', "out_of_range"),
        ('{"type":"mix","pans":{"p":1.5}}', "out_of_range"),
        ('{"type":"mix","pans":{"p":"left"}}', "bad_field"),
        ('{"type":"mix","mutes":{"p":1}}', "bad_field"),
        ('{"type":"mix","reset":"yes"}', "bad_field"),
        ('{"type":"monitor"}', "missing_field"),
        ('{"type":"monitor","self":"on"}', "bad_field"),
        ('{"type":"jitter","mode":"turbo"}', "out_of_range"),
        ('{"type":"jitter","mode":1}', "bad_field"),
        ('{"type":"jitter"}', "missing_field"),
        ('{"type":"jitter","mode":"manual","depth":0}', "out_of_range"),
        ('{"type":"jitter","mode":"manual","depth":21}', "out_of_range"),
        ('{"type":"jitter","mode":"manual","depth":4.5}', "bad_field"),
        ('{"type":"ping"}', "missing_field"),
        ('{"type":"ping","t":"now"}', "bad_field"),
        ('{"type":"ping","t":Infinity}', "out_of_range"),
        ('{"type":"ping","t":' + "9" * 400 + "}", "out_of_range"),
    ],
)
def test_malformed_messages_are_refused_with_a_code(text: str, code: str) -> None:
    with pytest.raises(ControlError) as err:
        parse_control(text)
    assert err.value.code == code
    assert err.value.message
    assert err.value.close_code == {"unknown_codec": 1003, "too_long": 1009}.get(code, 1007)


def test_too_long_is_checked_before_parsing() -> None:
    padding = " " * MAX_CONTROL_BYTES
    with pytest.raises(ControlError) as err:
        parse_control('{"type":"leave"}' + padding)
    assert err.value.code == "too_long"
    assert err.value.close_code == 1009
    # Multi-byte characters count as their UTF-8 size.
    name = "é" * (MAX_CONTROL_BYTES // 2)
    with pytest.raises(ControlError) as err:
        parse_control('{"type":"join","name":"' + name + '","codec":"opus","channels":1}')
    assert err.value.code == "too_long"
    with pytest.raises(ControlError) as err:
        parse_control(('{"type":"leave"}' + padding).encode())
    assert err.value.code == "too_long"


def test_invalid_utf8_and_deep_nesting_are_not_json() -> None:
    with pytest.raises(ControlError) as err:
        parse_control(b'{"type":"leave","x":"\xff"}')
    assert err.value.code == "not_json"
    with pytest.raises(ControlError) as err:
        parse_control("[" * 30_000 + "]" * 30_000)
    assert err.value.code == "not_json"


def test_too_many_mix_entries() -> None:
    gains = {f"p{i}": 0 for i in range(1025)}
    with pytest.raises(ControlError) as err:
        parse_control(json.dumps({"type": "mix", "gains": gains}))
    assert err.value.code == "out_of_range"


@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_raises_control_error(text: str) -> None:
    codes = {
        "not_json",
        "not_object",
        "unknown_type",
        "missing_field",
        "bad_field",
        "out_of_range",
        "unknown_codec",
        "too_long",
    }
    try:
        parse_control(text)
    except ControlError as err:
        code = err.code
    else:
        code = "ok"
    assert code in codes or code == "ok"


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
        max_leaves=10,
    ),
    st.sampled_from(["join", "leave", "mix", "monitor", "jitter", "ping", "stats"]),
)
def test_arbitrary_fields_never_escape_as_other_exceptions(value: object, kind: str) -> None:
    for key in ("codec", "channels", "name", "gains", "pans", "mutes", "reset", "self", "mode", "depth", "t"):
        try:
            text = json.dumps({"type": kind, key: value})
        except ValueError:
            continue
        with contextlib.suppress(ControlError):
            parse_control(text)


def test_server_messages_are_compact_json() -> None:
    people = [ParticipantInfo("p1", "Ana", "u1", True), ParticipantInfo("p2", None, "u2", False)]
    welcome = json.loads(
        welcome_message(
            participant_id="p1",
            block=120,
            sample_rate=48000,
            codec="opus",
            channels=2,
            can_send=True,
            participants=people,
            jitter_mode="auto",
            jitter_depth=1,
        )
    )
    assert welcome == {
        "type": "welcome",
        "participantId": "p1",
        "block": 120,
        "sampleRate": 48000,
        "codec": "opus",
        "channels": 2,
        "canSend": True,
        "selfMonitor": True,
        "jitter": {"mode": "auto", "depth": 1},
        "participants": [
            {"id": "p1", "name": "Ana", "userId": "u1", "canSend": True},
            {"id": "p2", "name": None, "userId": "u2", "canSend": False},
        ],
    }
    assert json.loads(participants_message(people))["participants"][1]["canSend"] is False
    assert json.loads(pong_message(1.5, 99.25)) == {"type": "pong", "t": 1.5, "serverTime": 99.25}
    assert json.loads(error_message("bad_field", "nope")) == {
        "type": "error",
        "code": "bad_field",
        "message": "nope",
    }
    assert " " not in pong_message(1.0, 2.0)


def test_stats_message_carries_the_jitter_counters() -> None:
    buf = JitterBuffer()
    for seq in range(4):
        buf.put(seq, b"x", seq * 0.0025)
        buf.get()
    up = json.loads(stats_message(up=buf.stats(), down={"sent": 10}, server={"tickP99Ms": 0.4}))
    assert up["type"] == "stats"
    assert up["up"]["packets"] == 4
    assert up["up"]["played"] == 4
    assert up["up"]["mode"] == "auto"
    assert set(up["up"]) >= {
        "packets",
        "lost",
        "late",
        "duplicates",
        "concealed",
        "underruns",
        "overflows",
        "depth",
        "jitterMs",
        "queued",
    }
    assert up["down"] == {"sent": 10}
    assert up["server"] == {"tickP99Ms": 0.4}
    assert json.loads(stats_message(up=None))["up"] is None
