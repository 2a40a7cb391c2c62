"""The page in Firefox, end to end: Debian's Firefox ESR, driven over WebDriver BiDi, against a real server.

Alice signs up through the page's form, creates a session, goes back to the list and opens it
again, sees a track written by another (Python Yjs) client with its waveform drawn, adds a track
and names it by typing (trusted key events), and the server's document converges to it; a
remote rename reaches her page; she plays and stops the shared transport, and her page's local
playback (FLAC decoded, AudioWorklet) plays the clip at its level into a private PulseAudio null
sink (tests/null_audio.py); the shortcut list opens and closes from the keyboard. Not one
console error or uncaught exception for the whole run.

Playwright cannot drive this Firefox (see tests/bidi_firefox.py); Chromium covers the rest.
A screenshot lands in tests/artifacts/firefox-session.png.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import null_audio
from .bidi_firefox import FIREFOX, BiDiError, Firefox, Tab, local_value, user_js
from .browser_support import (
    ARTIFACTS,
    DIST_INDEX,
    WAVEFORM_INKED_PIXELS,
    read_document,
    tone_wav,
    upload_asset,
    write_tracks,
)
from .conftest import IN_CI, require
from .harness import PyDocClient, ServerProcess, wait_until

# The BiDi client evaluates functions without arguments: find the picture, then count its ink.
WAVEFORM_INKED = f"""() => {{
  const img = document.querySelector('[data-testid=clip-waveform]');
  if (!img || img.dataset.drawn !== 'true') return 0;
  return ({WAVEFORM_INKED_PIXELS})(img);
}}"""

TONE_DB = 20 * math.log10(0.5 / math.sqrt(2))  # -9.03 dBFS: the RMS of a 0.5 sine
TOLERANCE_DB = 0.3

# The local playback's last level per side when both are within `tol` dB of `db`, else null.
LOCAL_LEVEL = """(sel, db, tol) => {
  const b = document.querySelector(sel);
  const got = [Number(b.dataset.rmsLeft), Number(b.dataset.rmsRight)];
  const near = got.every((v) => Math.abs(v - db) <= tol);
  return b.dataset.state === 'playing' && b.dataset.rmsLeft !== '' && near ? got : null;
}"""

ATTR = "(sel, name) => document.querySelector(sel)?.getAttribute(name) ?? null"
TEXT = "(sel) => document.querySelector(sel)?.textContent ?? null"
VISIBLE = (
    "(sel) => { const el = document.querySelector(sel); return !!el && el.getClientRects().length > 0; }"
)
NAMES = "() => [...document.querySelectorAll('[data-testid=track-name]')].map((i) => i.value)"


def tid(testid: str) -> str:
    return f'[data-testid="{testid}"]'


def wait_attr(tab: Tab, testid: str, name: str, want: str) -> None:
    tab.wait_for(
        f"(sel, name, want) => ({ATTR})(sel, name) === want",
        tid(testid),
        name,
        want,
        what=f"{testid}[{name}={want}]",
    )


def wait_text(tab: Tab, testid: str, want: str) -> None:
    tab.wait_for(
        f"(sel, want) => ({TEXT})(sel) === want", tid(testid), want, what=f"{testid} to read {want!r}"
    )


def wait_visible(tab: Tab, testid: str, visible: bool = True) -> None:
    tab.wait_for(
        f"(sel, want) => ({VISIBLE})(sel) === want", tid(testid), visible, what=f"{testid} visible={visible}"
    )


def fill(tab: Tab, selector: str, text: str) -> None:
    """Click into a field, select what it holds and type over it: trusted events, key by key."""
    tab.click(selector)
    tab.press("Control+a")
    tab.type(text)


def track_names(tab: Tab) -> list[str]:
    got = tab.call(NAMES)
    assert isinstance(got, list)
    return [str(x) for x in got]


def rename_remotely(server: ServerProcess, token: str, session_id: str, track_id: str, name: str) -> None:
    """Rename a track through a real Yjs client, as another collaborator would."""
    import pycrdt

    writer = PyDocClient(server.ws_base, session_id, token)
    try:
        tracks = writer.doc.get("tracks", type=pycrdt.Map)
        tracks[track_id]["name"] = name
        writer.send_changes()
    finally:
        writer.close()


@pytest.fixture
def audio_env() -> Iterator[dict[str, str] | None]:
    """A null audio sink's client environment; None where PulseAudio is missing (a failure in CI)."""
    if not null_audio.available():
        if IN_CI:
            pytest.fail("CI requires this: pulseaudio, for Firefox's audio output (`make browser`)")
        yield None
        return
    # a short path of its own: a unix socket path must stay under 108 bytes
    with tempfile.TemporaryDirectory(prefix="pulse-") as directory:
        sink = null_audio.NullSink(Path(directory))
        sink.start()
        try:
            yield sink.client_env
        finally:
            sink.stop()


@pytest.fixture
def firefox(tmp_path: Path, audio_env: dict[str, str] | None) -> Iterator[Firefox]:
    require(FIREFOX.is_file(), f"{FIREFOX} is missing: run `make browser` (Debian package firefox-esr)")
    require(DIST_INDEX.is_file(), "web_client/dist is not built: run `make web`")
    ff = Firefox(tmp_path / "firefox-profile", env=audio_env or {})
    ff.start()
    try:
        yield ff
    finally:
        if ff.log:
            print("firefox console:", [str(e) for e in ff.log])
        ff.stop()


def test_the_page_works_in_firefox(
    server: ServerProcess, firefox: Firefox, audio_env: dict[str, str] | None
) -> None:
    started = time.monotonic()
    tab = firefox.new_tab()
    try:
        run_session(server, tab, has_audio=audio_env is not None)
    finally:
        try:
            tab.screenshot(ARTIFACTS / "firefox-session.png")
        except Exception as exc:  # the page may be the thing that broke; keep the real failure
            print(f"no screenshot: {exc!r}")
    assert firefox.errors() == []
    print(f"\nfirefox end-to-end run: {time.monotonic() - started:.1f} s")


def run_session(server: ServerProcess, tab: Tab, *, has_audio: bool) -> None:
    tab.navigate(server.base_url + "/")
    agent = tab.call("() => navigator.userAgent")
    assert "Firefox/" in agent, agent

    # -- Alice signs up through the page's form ----------------------------------------------
    wait_visible(tab, "signup-form")
    fill(tab, tid("signup-name"), "Alice")
    fill(tab, tid("signup-email"), "alice@example.com")
    fill(tab, tid("signup-password"), "correct horse")
    tab.click(tid("signup-submit"))
    wait_text(tab, "user-name", "Alice")
    wait_visible(tab, "no-sessions")

    # -- creates a session (which opens it), goes back to the list and in again ---------------
    fill(tab, tid("session-title-input"), "Firefox jam")
    tab.click(tid("create-session"))
    wait_attr(tab, "status", "data-state", "synced")
    url = tab.call("() => location.href")
    assert "#/s/" in url, url
    session_id = url.rsplit("/", 1)[1]
    wait_text(tab, "role", "owner")
    wait_text(tab, "doc-title", "Firefox jam")
    tab.click(tid("back"))
    wait_text(tab, "session-link", "Firefox jam")
    tab.click(tid("session-link"))
    wait_attr(tab, "status", "data-state", "synced")
    token = tab.call("() => localStorage.getItem('escenario.token')")
    assert isinstance(token, str)
    assert token

    # -- a track with a clip, written by another client: shown, its waveform drawn -----------
    asset = upload_asset(server, token, session_id, "tone.wav", tone_wav(4.0, 440.0))
    write_tracks(
        server,
        token,
        session_id,
        [
            {
                "id": "t-tone",
                "name": "Tone",
                "clips": {"c1": {"assetId": asset, "start": 0.0, "offset": 0.0, "length": 4.0}},
            }
        ],
    )
    wait_until(lambda: track_names(tab) == ["Tone"], 10, "the written track on the page")
    inked = tab.wait_for(WAVEFORM_INKED, what="the clip's waveform drawn")
    assert inked > 1000, inked  # 160 x ~28 px of sine

    # -- Alice adds a track and names it by typing; the server's document converges ----------
    tab.click(tid("add-track"))
    wait_until(lambda: track_names(tab) == ["Tone", "Track 2"], 10, "the added track")
    focused = tab.call("() => document.activeElement?.dataset?.testid ?? null")
    assert focused == "track-name", focused  # the new name is ready to type over
    tab.press("Control+a")
    tab.type("Bass line")
    tab.press("Enter")
    assert track_names(tab) == ["Tone", "Bass line"]

    def server_names() -> list[str]:
        doc = read_document(server, token, session_id)
        return [str(doc["tracks"][t]["name"]) for t in doc["trackOrder"] if t in doc["tracks"]]

    wait_until(lambda: server_names() == ["Tone", "Bass line"], 10, "the server's document to converge")

    # -- a remote rename reaches the page ------------------------------------------------------
    rename_remotely(server, token, session_id, "t-tone", "Sine")
    wait_until(lambda: track_names(tab) == ["Sine", "Bass line"], 10, "the remote rename on the page")

    # -- the shared transport plays and stops; local playback loads the clip's audio ----------
    wait_attr(tab, "local-audio", "data-state", "idle")
    tab.click(tid("play"))
    wait_attr(tab, "transport", "data-playing", "true")
    wait_until(lambda: transport(server, token, session_id)["playing"] is True, 10, "the server to play")
    # fetched, decoded (FLAC) and handed to the playback worklet: Firefox's Web Audio path
    wait_attr(tab, "local-audio", "data-assets", "1")
    if has_audio:
        # the worklet plays the tone at its level on both sides, as in Chromium
        level = tab.wait_for(LOCAL_LEVEL, tid("local-audio"), TONE_DB, TOLERANCE_DB, what="the tone's level")
        print(f"\nfirefox local playback level (dBFS): {level}")
    else:
        # no audio device: Firefox keeps the AudioContext suspended and the page says so
        wait_attr(tab, "local-audio", "data-state", "blocked")
        print("\nfirefox local playback: blocked (no pulseaudio here, so no audio output)")
    tab.wait_for(
        "(sel) => !document.querySelector(sel).textContent.includes('0:00.0')",
        tid("position"),
        what="the position to advance",
    )
    tab.click(tid("stop"))
    wait_attr(tab, "transport", "data-playing", "false")
    wait_until(lambda: transport(server, token, session_id)["playing"] is False, 10, "the server to stop")

    # -- keyboard: "?" lists the shortcuts, Escape closes the list -----------------------------
    tab.press("?")
    wait_visible(tab, "shortcuts-overlay")
    tab.press("Escape")
    wait_visible(tab, "shortcuts-overlay", False)


def transport(server: ServerProcess, token: str, session_id: str) -> dict[str, Any]:
    got = read_document(server, token, session_id)["session"].get("transport") or {}
    assert isinstance(got, dict)
    return got


# ---------------------------------------------------------------- the client itself


def test_the_client_hears_console_errors_uncaught_exceptions_and_rejections(firefox: Firefox) -> None:
    """What the test above relies on to say "no console errors": each kind is reported."""
    tab = firefox.new_tab(400, 300)
    tab.navigate(
        "data:text/html,<input id=name><script>"
        "console.error('logged');"
        "setTimeout(() => { throw new Error('thrown'); }, 0);"
        "Promise.reject(new Error('rejected'));"
        "</script>"
    )
    wait_until(lambda: len(firefox.errors()) >= 3, 10, "three errors")
    got = sorted(e.split(" @ ")[0] for e in firefox.errors())
    assert got == [
        "console.error: logged",
        "javascript.error: Error: rejected",
        "javascript.error: Error: thrown",
    ]
    # trusted typing lands in the field; a script that throws is an error here, not a hang
    tab.click("#name")
    tab.type("Hi")
    tab.press("Backspace")
    assert tab.call("() => document.querySelector('#name').value") == "H"
    with pytest.raises(BiDiError, match="no element matches #missing"):
        tab.click("#missing")
    firefox.log.clear()


def test_client_parts_without_a_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert user_js({"b": False, "a": 0, "c": "x"}) == (
        'user_pref("a", 0);\nuser_pref("b", false);\nuser_pref("c", "x");\n'
    )
    assert [local_value(v) for v in (None, True, 2.5, "s")] == [
        {"type": "null"},
        {"type": "boolean", "value": True},
        {"type": "number", "value": 2.5},
        {"type": "string", "value": "s"},
    ]
    with pytest.raises(BiDiError, match="not started"):
        Firefox(Path("/nonexistent")).command("session.status", {})
    # a browser that dies on start is an error that says so, not a wait for the full timeout
    with pytest.raises(BiDiError, match="firefox exited with 1"):
        Firefox(tmp_path / "profile", executable=Path("/bin/false"), start_timeout=10).start()
    monkeypatch.setattr(null_audio, "PULSEAUDIO", "no-such-pulseaudio")
    assert not null_audio.available()
    with pytest.raises(null_audio.NullAudioError, match="no-such-pulseaudio is not installed"):
        null_audio.NullSink(tmp_path / "pulse").start()
