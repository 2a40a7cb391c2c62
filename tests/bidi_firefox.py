"""A small WebDriver BiDi client that drives Debian's Firefox ESR directly.

Playwright cannot drive this Firefox: every new context sends `emulation.setMediaFeaturesOverride`,
which Firefox ESR does not implement, so it fails before a page opens. The W3C protocol itself is
enough for what the browser tests need: navigate, run script, dispatch trusted input, capture a
screenshot, and hear every console error and uncaught exception (`log.entryAdded`).

One socket, one thread: a command is sent and messages are read until its answer comes back;
events read on the way are recorded, so nothing is lost between commands.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIREFOX = Path("/usr/bin/firefox-esr")
LISTENING = re.compile(r"WebDriver BiDi listening on (ws://[\d.]+:\d+)")

# Firefox's Remote Agent already applies its recommended automation preferences (no first-run
# pages, no default-browser check, no updates); these are what the tests need on top: audio that
# starts without a gesture (as Chromium's --autoplay-policy flag) and no calls home, which this
# closed network refuses and which would only slow start-up down.
PREFS: dict[str, bool | int | str] = {
    "media.autoplay.default": 0,
    "media.autoplay.block-webaudio": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "app.normandy.enabled": False,
    "app.update.disabledForTesting": True,
    "messaging-system.rsexperimentloader.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "extensions.update.enabled": False,
    "signon.rememberSignons": False,
}

# WebDriver's code points for keys that are not characters.
KEYS = {
    "Backspace": "\ue003",
    "Tab": "\ue004",
    "Enter": "\ue007",
    "Shift": "\ue008",
    "Control": "\ue009",
    "Alt": "\ue00a",
    "Escape": "\ue00c",
    "Space": " ",
    "End": "\ue010",
    "Home": "\ue011",
    "Delete": "\ue017",
}


class BiDiError(RuntimeError):
    """The browser answered a command with an error, or a script threw."""


def user_js(prefs: dict[str, bool | int | str]) -> str:
    """The profile's user.js for `prefs` (values written as JSON, which is what user.js expects)."""
    return "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in sorted(prefs.items()))


@dataclass
class LogEntry:
    """One `log.entryAdded` event: a console call or an uncaught exception."""

    kind: str  # "console" or "javascript" (an uncaught exception or unhandled rejection)
    level: str
    text: str
    where: str

    def __str__(self) -> str:
        return f"{self.kind}.{self.level}: {self.text} @ {self.where}"

    @staticmethod
    def from_event(params: dict[str, Any]) -> LogEntry:
        frames = (params.get("stackTrace") or {}).get("callFrames") or []
        where = f"{frames[0].get('url')}:{frames[0].get('lineNumber')}" if frames else ""
        return LogEntry(
            kind=str(params.get("type", "")),
            level=str(params.get("level", "")),
            text=str(params.get("text", "")),
            where=where,
        )


@dataclass
class Firefox:
    """A headless Firefox on a fresh profile, with one BiDi session."""

    profile: Path
    executable: Path = FIREFOX
    env: dict[str, str] = field(default_factory=dict)  # added to the browser's environment
    start_timeout: float = 30.0
    command_timeout: float = 20.0
    log: list[LogEntry] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = None
    _cm: Any = None
    _ws: Any = None
    _next_id: int = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        from websockets.sync.client import connect

        self.profile.mkdir(parents=True, exist_ok=True)
        (self.profile / "user.js").write_text(user_js(PREFS))
        stderr_path = self.profile.parent / f"{self.profile.name}-stderr.log"
        with stderr_path.open("wb") as err:
            self._proc = subprocess.Popen(
                [
                    str(self.executable),
                    "--headless",
                    "--no-remote",
                    "--remote-debugging-port=0",
                    "--profile",
                    str(self.profile),
                    "about:blank",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1", **self.env},
                start_new_session=True,
            )
        try:
            url = self._wait_listening(stderr_path)
            self._cm = connect(f"{url}/session", max_size=None, open_timeout=10)
            self._ws = self._cm.__enter__()
            self.command("session.new", {"capabilities": {"alwaysMatch": {"acceptInsecureCerts": True}}})
            self.command("session.subscribe", {"events": ["log.entryAdded"]})
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, stderr_path: Path) -> str:
        """The BiDi address Firefox prints on stderr once its Remote Agent listens."""
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while (m := LISTENING.search(stderr_path.read_text(errors="replace"))) is None:
            if self._proc.poll() is not None:
                raise BiDiError(
                    f"firefox exited with {self._proc.returncode}: {stderr_path.read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise BiDiError(f"firefox never listened for BiDi: {stderr_path.read_text()[-2000:]}")
            time.sleep(0.05)
        return m.group(1)

    def stop(self) -> None:
        """End the session and the browser (its whole process group: content processes too)."""
        if self._ws is not None:
            with contextlib.suppress(BiDiError, OSError, TimeoutError):  # it goes below either way
                self.command("session.end", {}, timeout=5)
            self._cm.__exit__(None, None, None)
            self._ws = self._cm = None
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)

    def __enter__(self) -> Firefox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ protocol

    def command(self, method: str, params: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Send one command; record events until its answer; return its result."""
        if self._ws is None:
            raise BiDiError("the browser is not started")
        self._next_id += 1
        mine = self._next_id
        self._ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        deadline = time.monotonic() + (timeout or self.command_timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BiDiError(f"{method}: no answer in time")
            try:
                msg = json.loads(self._ws.recv(timeout=remaining))
            except TimeoutError:
                raise BiDiError(f"{method}: no answer in {timeout or self.command_timeout:g} s") from None
            if msg.get("type") == "event":
                if msg.get("method") == "log.entryAdded":
                    self.log.append(LogEntry.from_event(msg["params"]))
                continue
            if msg.get("id") != mine:
                continue  # an answer to a command that timed out earlier
            if msg.get("type") == "error":
                raise BiDiError(f"{method}: {msg.get('error')}: {msg.get('message')}")
            result = msg.get("result")
            return result if isinstance(result, dict) else {}

    def errors(self) -> list[str]:
        """Every console error and uncaught exception so far (after a round trip, so none is left unread)."""
        self.command("session.status", {})
        return [str(e) for e in self.log if e.level == "error"]

    def new_tab(self, width: int = 1400, height: int = 820) -> Tab:
        ctx = self.command("browsingContext.create", {"type": "tab"})["context"]
        tab = Tab(self, str(ctx))
        self.command(
            "browsingContext.setViewport",
            {"context": tab.context, "viewport": {"width": width, "height": height}},
        )
        return tab


@dataclass
class Tab:
    """One top-level browsing context."""

    browser: Firefox
    context: str

    def navigate(self, url: str) -> None:
        self.browser.command(
            "browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"}
        )

    def call(self, function: str, *args: str | float | bool | None) -> Any:
        """Run `function` (JS source, may be async) with `args` in the page; its JSON-able result.

        The result travels as JSON text so that nested objects and arrays need no BiDi
        value decoding; a script that throws raises BiDiError with the page's message."""
        wrapped = (
            f"async (...a) => {{ const r = await ({function})(...a);"
            " return r === undefined ? 'null' : JSON.stringify(r); }"
        )
        res = self.browser.command(
            "script.callFunction",
            {
                "functionDeclaration": wrapped,
                "arguments": [local_value(a) for a in args],
                "target": {"context": self.context},
                "awaitPromise": True,
                "userActivation": False,
            },
        )
        if res.get("type") == "exception":
            details = res.get("exceptionDetails") or {}
            raise BiDiError(f"script threw: {details.get('text')}")
        return json.loads(res["result"]["value"])

    def wait_for(
        self, function: str, *args: str | float | bool | None, timeout: float = 15.0, what: str = ""
    ) -> Any:
        """Poll `function` until it returns something truthy; that value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = self.call(function, *args)
            if last:
                return last
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or function} (last: {last!r})")
            time.sleep(0.05)

    def center(self, selector: str) -> tuple[int, int]:
        """The viewport centre of the first element matching `selector`, scrolled into view."""
        box = self.call(
            """(sel) => {
              const el = document.querySelector(sel);
              if (!el) throw new Error(`no element matches ${sel}`);
              el.scrollIntoView({ block: 'center', inline: 'center' });
              const r = el.getBoundingClientRect();
              return [r.left + r.width / 2, r.top + r.height / 2];
            }""",
            selector,
        )
        return round(box[0]), round(box[1])

    def click(self, selector: str) -> None:
        """A trusted mouse click (pointer move, press, release) at the element's centre."""
        x, y = self.center(selector)
        self.perform(
            [
                {
                    "type": "pointer",
                    "id": "mouse",
                    "parameters": {"pointerType": "mouse"},
                    "actions": [
                        {"type": "pointerMove", "x": x, "y": y},
                        {"type": "pointerDown", "button": 0},
                        {"type": "pointerUp", "button": 0},
                    ],
                }
            ]
        )

    def press(self, *keys: str) -> None:
        """Trusted key presses; each item is a character or a `KEYS` name, `+` joins a chord (Control+a)."""
        actions: list[dict[str, str]] = []
        for chord in keys:
            parts = [KEYS.get(k, k) for k in (chord.split("+") if len(chord) > 1 else [chord])]
            actions += [{"type": "keyDown", "value": k} for k in parts]
            actions += [{"type": "keyUp", "value": k} for k in reversed(parts)]
        self.perform([{"type": "key", "id": "keyboard", "actions": actions}])

    def type(self, text: str) -> None:
        self.press(*text)

    def perform(self, actions: list[dict[str, Any]]) -> None:
        self.browser.command("input.performActions", {"context": self.context, "actions": actions})
        self.browser.command("input.releaseActions", {"context": self.context})

    def screenshot(self, path: Path) -> None:
        data = self.browser.command("browsingContext.captureScreenshot", {"context": self.context})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))


def local_value(v: str | float | bool | None) -> dict[str, Any]:
    """A Python scalar as a BiDi LocalValue."""
    if v is None:
        return {"type": "null"}
    if isinstance(v, bool):
        return {"type": "boolean", "value": v}
    if isinstance(v, str):
        return {"type": "string", "value": v}
    return {"type": "number", "value": v}
