"""Local timeline playback in the browser, end to end: real Chromium pages against a real server.

Alice presses play: her page fetches the clip's audio (`/api/assets/{id}/audio`), decodes it and
plays it through the playback worklet, which reports its level. Bob, in another browser context,
mutes the track, unmutes it, pans it hard left, switches the loop off, seeks past the clip and
stops: Alice's local playback follows each change at once. Her "Local" switch and "Listen"
(the server's preview) turn only her own local playback off. The tone is a stereo sine of amplitude
0.5 at the centre (balance law: unity), so the worklet must play it at an RMS of
0.5/√2 = -9.03 dBFS on both sides.

A screenshot lands in tests/artifacts/playback-*.png.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from .browser_support import Person, open_page, shot, tone_wav, upload_asset, write_tracks
from .harness import PyDocClient, ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser

TONE_DB = 20 * math.log10(0.5 / math.sqrt(2))  # -9.03 dBFS: the RMS of a 0.5 sine
TOLERANCE_DB = 0.3
PPS = 40.0  # the timeline's default zoom (pixels per second)


def local_level(person: Person) -> tuple[float, float] | None:
    """The level Alice's playback worklet reported last (dBFS per side), None before any."""
    button = person.tid("local-audio")
    left = button.get_attribute("data-rms-left") or ""
    right = button.get_attribute("data-rms-right") or ""
    if not left or not right:
        return None
    return float(left), float(right)  # "-inf" parses as -inf


def wait_level(
    person: Person, want: tuple[float | None, float | None], what: str, timeout: float = 10.0
) -> None:
    """Wait until the left/right levels are the tone's (a number) or silence (None)."""

    def ok(got: tuple[float, float] | None) -> bool:
        if got is None:
            return False
        for value, target in zip(got, want, strict=True):
            if target is None and value != -math.inf:
                return False
            if target is not None and abs(value - target) > TOLERANCE_DB:
                return False
        return True

    deadline = time.monotonic() + timeout
    got = local_level(person)
    while not ok(got):
        assert time.monotonic() < deadline, f"timed out waiting for {what}: last level {got}"
        time.sleep(0.05)
        got = local_level(person)


def set_loop(server: ServerProcess, token: str, session_id: str, loop: tuple[float, float]) -> None:
    """Write `session.transport.loop` through a real Yjs client (as a collaborator would)."""
    import pycrdt

    writer = PyDocClient(server.ws_base, session_id, token)
    try:
        with writer.doc.transaction():
            session = writer.doc.get("session", type=pycrdt.Map)
            session["transport"] = pycrdt.Map(
                {"playing": False, "position": 0.0, "startedAt": 0, "loop": list(loop)}
            )
        writer.send_changes()
    finally:
        writer.close()


def test_local_playback_follows_the_shared_transport_and_mixer(
    server: ServerProcess, browser: Browser, cast: list[Person]
) -> None:
    from playwright.sync_api import expect

    started = time.monotonic()
    alice_token = server.signup("alice@example.com", name="Alice")
    sid = server.create_session(alice_token, "Playback")
    bob_token = server.signup("bob@example.com", name="Bob")
    server.add_member(alice_token, sid, "bob@example.com", "editor")
    asset = upload_asset(server, alice_token, sid, "tone.wav", tone_wav(4.0, 440.0, amp=0.5))
    write_tracks(
        server,
        alice_token,
        sid,
        [
            {
                "id": "t-tone",
                "name": "Tone",
                "clips": {"c1": {"assetId": asset, "start": 0.0, "offset": 0.0, "length": 4.0}},
            }
        ],
    )
    # 440 Hz for 3 s is a whole number of cycles: the loop wraps without a jump in the sine
    set_loop(server, alice_token, sid, (0.5, 3.5))
    url = f"{server.base_url}/#/s/{sid}"
    alice = open_page(browser, cast, "alice", alice_token, url, width=1400, height=820)
    bob = open_page(browser, cast, "bob", bob_token, url, width=1400, height=820)
    expect(alice.tid("clip")).to_have_count(1)
    expect(alice.tid("loop")).to_have_attribute("aria-pressed", "true")
    # nothing is fetched or decoded before the transport plays
    expect(alice.tid("local-audio")).to_have_attribute("data-state", "idle")
    expect(alice.tid("local-audio")).to_have_attribute("data-assets", "0")

    # -- Alice plays: her page plays the tone at its level, on both sides
    alice.tid("play").click()
    expect(alice.tid("local-audio")).to_have_attribute("data-state", "playing")
    expect(alice.tid("local-audio")).to_have_attribute("data-assets", "1")
    wait_level(alice, (TONE_DB, TONE_DB), "the tone at -9.03 dBFS")
    shot(alice, "playback-playing")

    # -- Bob mutes the track: Alice's playback goes silent; unmuted, the tone is back
    bob.tid("track-mute").click()
    wait_level(alice, (None, None), "silence after Bob muted the track")
    bob.tid("track-mute").click()
    wait_level(alice, (TONE_DB, TONE_DB), "the tone again after Bob unmuted")

    # -- Bob pans hard left: the balance law keeps the left at unity, the right goes silent
    bob.tid("track-pan").fill("-100")
    wait_level(alice, (TONE_DB, None), "left only after Bob panned hard left")
    shot(alice, "playback-panned")

    # -- Alice switches her local playback off (only hers: the transport plays on), then on
    alice.tid("local-audio").click()
    expect(alice.tid("local-audio")).to_have_attribute("data-state", "off")
    wait_level(alice, (None, None), "silence with local playback off")
    expect(bob.tid("local-audio")).to_have_attribute("data-state", "playing")
    alice.tid("local-audio").click()
    wait_level(alice, (TONE_DB, None), "the tone again with local playback on")

    # -- Bob turns the loop off and seeks past the clip: Alice's playhead jumps there, silent
    bob.tid("loop").click()
    expect(alice.tid("loop")).to_have_attribute("aria-pressed", "false")
    ruler = bob.tid("ruler")
    box = ruler.bounding_box()
    assert box is not None
    bob.page.mouse.click(box["x"] + 6.0 * PPS, box["y"] + box["height"] / 2)
    wait_level(alice, (None, None), "silence after Bob seeked past the clip")

    def alice_position() -> float:
        return float(alice.tid("local-audio").get_attribute("data-position") or "nan")

    deadline = time.monotonic() + 5
    while not 6.0 <= alice_position() < 9.0:
        assert time.monotonic() < deadline, f"Alice's playhead is at {alice_position()}, not past 6 s"
        time.sleep(0.05)

    # -- "Listen" (the server's preview) switches local playback off while it plays: no echo
    alice.tid("listen").click()
    expect(alice.tid("local-audio")).to_have_attribute("data-state", "off")
    alice.tid("listen").click()
    expect(alice.tid("local-audio")).to_have_attribute("data-state", "playing")

    # -- Bob stops: Alice's playback stops too
    bob.tid("stop").click()
    expect(alice.tid("local-audio")).to_have_attribute("data-state", "idle")

    for person in cast:
        assert person.unexpected_errors() == [], f"{person.name}: {person.unexpected_errors()}"
    assert time.monotonic() - started < 60
