"""Shared set-up for tests that drive Debian's Chromium through Playwright (never its downloads)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .harness import ROOT, PyDocClient, ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
DIST_INDEX = ROOT / "web_client" / "dist" / "index.html"
CHROMIUM_ARGS = [
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # without these Chromium keeps calling home, which this closed network refuses
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Several pages share one headless browser: without these, Chromium may treat a page as
    # occluded or in the background and stop its animation frames and timers, which stalls
    # anything that waits for them (the scroll frame-rate probe, the metronome, the jam worklet).
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
]
TIMEOUT_MS = 15_000

# Chromium's fake microphone (a beeping tone) granted without a prompt: for jam tests.
MEDIA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]

# What Chromium itself logs (as a console error) for every non-2xx fetch; only tolerated for
# statuses a test provokes on purpose.
FAILED_RESOURCE = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})")


# ---------------------------------------------------------------- browsers, people, screenshots


@contextmanager
def launch_chromium(*, media: bool = False) -> Iterator[Browser]:
    """Debian's Chromium through Playwright (``media``: with the fake microphone, granted)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        args = CHROMIUM_ARGS + MEDIA_ARGS if media else CHROMIUM_ARGS
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


class Person:
    """One browser context + page, with every console error and page error recorded."""

    def __init__(self, browser: Browser, name: str, token: str | None = None) -> None:
        self.name = name
        self.context: BrowserContext = browser.new_context(viewport={"width": 1100, "height": 700})
        self.context.set_default_timeout(TIMEOUT_MS)
        if token is not None:
            self.context.add_init_script(
                f"window.localStorage.setItem('escenario.token', {json.dumps(token)});"
            )
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.provoked: list[int] = []
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _on_console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"console.error: {msg.text} @ {msg.location}")

    def tid(self, testid: str) -> Any:
        return self.page.get_by_test_id(testid)

    def unexpected_errors(self) -> list[str]:
        allowed = list(self.provoked)
        left: list[str] = []
        for e in self.errors:
            m = FAILED_RESOURCE.search(e)
            if m and int(m.group(1)) in allowed:
                allowed.remove(int(m.group(1)))
            else:
                left.append(e)
        return left

    def screenshot(self) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"browser-{self.name}.png"), full_page=True)


def open_page(
    browser: Browser,
    cast: list[Person],
    name: str,
    token: str,
    url: str,
    *,
    width: int = 1280,
    height: int = 900,
) -> Person:
    """A signed-in person on ``url``, once the page's document is synced."""
    from playwright.sync_api import expect

    person = Person(browser, name, token=token)
    cast.append(person)
    person.page.set_viewport_size({"width": width, "height": height})
    person.page.goto(url)
    expect(person.tid("status")).to_have_attribute("data-state", "synced")
    return person


def wait_for(predicate: Any, what: str, timeout: float = 15.0) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def shot(person: Person, name: str, *, full_page: bool = False) -> None:
    """A screenshot artifact, ``tests/artifacts/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    person.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


# ---------------------------------------------------------------- session set-up for edit tests


def tone_wav(seconds: float = 2.0, freq: float = 440.0, rate: int = 48_000, amp: float = 0.5) -> bytes:
    """A stereo 16-bit sine as WAV bytes."""
    import io
    import math
    import struct
    import wave

    frames = bytearray()
    for i in range(int(seconds * rate)):
        v = int(amp * 32767 * math.sin(2 * math.pi * freq * i / rate))
        frames += struct.pack("<hh", v, v)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return buf.getvalue()


def upload_asset(server: ServerProcess, token: str, session_id: str, name: str, data: bytes) -> str:
    r = server.api(
        "POST", f"/api/sessions/{session_id}/assets", token=token, files={"file": (name, data, "audio/wav")}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["asset_id"])


def write_tracks(server: ServerProcess, token: str, session_id: str, tracks: list[dict[str, Any]]) -> None:
    """Add tracks (`{"id", "name", "color", "clips": {id: {assetId, start, offset, length}}}`) in
    one transaction through a real Yjs client, and return once the server serves them."""
    import pycrdt

    writer = PyDocClient(server.ws_base, session_id, token)
    try:
        with writer.doc.transaction():
            tmap = writer.doc.get("tracks", type=pycrdt.Map)
            order = writer.doc.get("trackOrder", type=pycrdt.Array)
            for t in tracks:
                clips = pycrdt.Map(
                    {
                        cid: pycrdt.Map({"gainDb": 0.0, "fadeIn": 0.0, "fadeOut": 0.0, **c})
                        for cid, c in t.get("clips", {}).items()
                    }
                )
                tmap[t["id"]] = pycrdt.Map(
                    {
                        "name": t["name"],
                        "kind": "audio",
                        "gainDb": 0.0,
                        "pan": 0.0,
                        "mute": False,
                        "solo": False,
                        "color": t.get("color", "#61afef"),
                        "clips": clips,
                    }
                )
                order.append(t["id"])
        writer.send_changes()
    finally:
        writer.close()
    want = {t["id"] for t in tracks}
    deadline = time.monotonic() + 15
    while not want <= set(read_document(server, token, session_id)["tracks"]):
        assert time.monotonic() < deadline, "the server never served the written tracks"
        time.sleep(0.05)


def read_document(server: ServerProcess, token: str, session_id: str) -> dict[str, Any]:
    """The session document as the server has it now: a fresh client's sync step 2.

    Unlike `PyDocClient`, messages may come in any order (a broadcast can precede the
    server's sync step 1 when another client just wrote)."""
    import pycrdt
    from websockets.sync.client import connect

    from realtime.session import protocol as p

    doc: Any = pycrdt.Doc()
    with connect(f"{server.ws_base}/{session_id}?token={token}", max_size=None) as ws:
        ws.send(p.sync_step1_message(doc.get_state()))
        deadline = time.monotonic() + 10
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no sync step 2 from the server"
            msg = p.decode_message(ws.recv(timeout=remaining))  # type: ignore[arg-type]
            if isinstance(msg, p.SyncStep2 | p.SyncUpdate):
                doc.apply_update(msg.update)
            if isinstance(msg, p.SyncStep2):
                break
    return {
        "session": doc.get("session", type=pycrdt.Map).to_py() or {},
        "tracks": doc.get("tracks", type=pycrdt.Map).to_py() or {},
        "trackOrder": list(doc.get("trackOrder", type=pycrdt.Array).to_py() or []),
    }


# Counts the pixels of a clip's waveform picture (`<img data-testid=clip-waveform>`) that are
# not fully transparent.
WAVEFORM_INKED_PIXELS = """(img) => {
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n += 1;
  return n;
}"""
