"""The session view as a DAW, in a real browser against the real server.

Alice (owner) uploads a generated WAV and sees its clip and waveform; Bob (editor, another
browser context) sees her fader move and her transport start; Alice listens to the server's
live preview and exports a mixdown; Vera (viewer) gets every control disabled.
A screenshot lands in tests/artifacts/daw.png.
"""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path
from typing import TYPE_CHECKING

from .browser_support import ARTIFACTS, Person
from .browser_support import WAVEFORM_INKED_PIXELS as INKED_PIXELS
from .harness import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser


def write_tone(path: Path, seconds: float = 2.0, freq: float = 440.0, rate: int = 48_000) -> None:
    """A stereo 16-bit sine at -6 dBFS."""
    frames = bytearray()
    for i in range(int(seconds * rate)):
        v = int(0.5 * 32767 * math.sin(2 * math.pi * freq * i / rate))
        frames += struct.pack("<hh", v, v)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))


# fader at 500/1000 is -14.4 dB, shown with a real minus sign
GAIN_TEXT = "\u221214.4 dB"

AUDIO_TIME = "document.querySelector('[data-testid=preview-audio]').currentTime"

# Records whether the master and track meters ever showed a level.
WATCH_METERS = """() => {
  window.__meters = { master: false, track: false };
  const seen = (el, key) => {
    new MutationObserver(() => {
      if (el.dataset.level) window.__meters[key] = true;
    }).observe(el, { attributes: true, attributeFilter: ['data-level'] });
  };
  seen(document.querySelector('[data-testid=master-meter]'), 'master');
  seen(document.querySelector('[data-testid=track-meter]'), 'track');
}"""

SET_RANGE = """(input, value) => {
  input.value = String(value);
  input.dispatchEvent(new Event('input', { bubbles: true }));
}"""


def test_upload_mix_transport_listen_and_export(
    server: ServerProcess, browser: Browser, cast: list[Person], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    alice_token = server.signup("alice@example.com", name="Alice")
    session_id = server.create_session(alice_token, "Demo song")
    server.signup("bob@example.com", name="Bob", password="bob's password")
    bob_token = str(
        server.api(
            "POST", "/api/auth/login", json={"email": "bob@example.com", "password": "bob's password"}
        ).json()["token"]
    )
    server.add_member(alice_token, session_id, "bob@example.com", "editor")
    vera_token = server.signup("vera@example.com", name="Vera")
    server.add_member(alice_token, session_id, "vera@example.com", "viewer")
    url = f"{server.base_url}/#/s/{session_id}"

    alice = Person(browser, "alice", token=alice_token)
    cast.append(alice)
    alice.page.set_viewport_size({"width": 1400, "height": 760})
    alice.page.goto(url)
    expect(alice.tid("status")).to_have_attribute("data-state", "synced")
    expect(alice.tid("tempo")).to_contain_text("120 BPM")
    expect(alice.tid("upload")).to_be_visible()

    # -- upload a generated WAV: a track with one clip at 0 s, waveform drawn ----------
    wav = tmp_path / "Sine 440.wav"
    write_tone(wav)
    alice.tid("upload-input").set_input_files(str(wav))
    expect(alice.tid("track-name")).to_have_value("Sine 440")
    clip = alice.tid("clip")
    expect(clip).to_have_count(1)
    waveform = alice.tid("clip-waveform")
    expect(waveform).to_have_attribute("data-drawn", "true")
    assert waveform.evaluate(INKED_PIXELS) > 500
    box = clip.bounding_box()
    assert box is not None
    assert 70 < box["width"] < 90  # 2 s at the default 40 px/s
    expect(alice.tid("upload-progress")).to_be_hidden()
    expect(alice.tid("upload-error")).to_be_hidden()

    # -- Bob (editor) sees the clip and Alice's fader move --------------------------------
    bob = Person(browser, "bob", token=bob_token)
    cast.append(bob)
    bob.page.goto(url)
    expect(bob.tid("status")).to_have_attribute("data-state", "synced")
    expect(bob.tid("clip")).to_have_count(1)
    expect(bob.tid("clip-waveform")).to_have_attribute("data-drawn", "true")
    alice.tid("track-gain").evaluate(SET_RANGE, 500)
    expect(alice.tid("track-gain-value")).to_have_text(GAIN_TEXT)
    expect(bob.tid("track-gain-value")).to_have_text(GAIN_TEXT)
    expect(bob.tid("track-gain")).to_have_value("500")
    bob.tid("track-pan").evaluate(SET_RANGE, -30)
    expect(alice.tid("track-pan-value")).to_have_text("L30")
    bob.tid("track-solo").click()
    expect(alice.tid("track-solo")).to_have_attribute("aria-pressed", "true")
    bob.tid("track-solo").click()
    expect(alice.tid("track-solo")).to_have_attribute("aria-pressed", "false")

    # -- play: Bob's transport follows; listen to the server's live preview: the audio
    # advances and the server's meters reach the page (recorded as they come: the clip is 2 s)
    alice.page.evaluate(WATCH_METERS)
    alice.tid("play").click()
    expect(bob.tid("transport")).to_have_attribute("data-playing", "true")
    expect(bob.tid("play")).to_have_attribute("aria-pressed", "true")
    alice.tid("listen").click()
    expect(alice.tid("listen")).to_have_attribute("aria-pressed", "true")
    alice.page.wait_for_function("() => window.__meters.master && window.__meters.track")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    alice.page.screenshot(path=str(ARTIFACTS / "daw.png"))
    alice.page.wait_for_function(f"() => {AUDIO_TIME} > 0.5")
    alice.tid("listen").click()
    expect(alice.tid("listen")).to_have_attribute("aria-pressed", "false")

    bob.tid("stop").click()
    expect(alice.tid("transport")).to_have_attribute("data-playing", "false")

    # -- export a mixdown as a file ---------------------------------------------------------
    alice.tid("export-open").click()
    alice.tid("export-dialog-format").select_option("flac")
    with alice.page.expect_download() as dl:
        alice.tid("export-download").click()
    download = dl.value
    assert download.suggested_filename.endswith(".flac"), download.suggested_filename
    saved = tmp_path / "mix.flac"
    download.save_as(str(saved))
    assert saved.read_bytes()[:4] == b"fLaC"

    # -- Vera (viewer): sees it all, can change nothing ------------------------------------
    vera = Person(browser, "vera", token=vera_token)
    cast.append(vera)
    vera.page.goto(url)
    expect(vera.tid("status")).to_have_attribute("data-state", "synced")
    expect(vera.tid("clip")).to_have_count(1)
    expect(vera.tid("upload")).to_be_hidden()
    for testid in ("track-gain", "track-pan", "track-mute", "track-solo", "play", "stop"):
        expect(vera.tid(testid)).to_be_disabled()
    expect(vera.tid("track-gain-value")).to_have_text(GAIN_TEXT)

    for person in cast:
        assert person.unexpected_errors() == [], f"{person.name}: {person.unexpected_errors()}"
