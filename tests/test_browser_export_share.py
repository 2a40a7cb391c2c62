"""Export and share in the browser DAW, end to end: real Chromium against a real server.

- The owner exports the whole session as WAV from the Export dialog and gets a download that
  is a valid WAV of the session's length; "loop range only" gives the loop's length; stems
  come as a zip with one file per track.
- The owner turns on a listening link; a fresh browser context with no account opens it and
  its `<audio>` element plays (currentTime advances); once the owner turns it off, the page
  says so. An editor is never offered the Share control.

Screenshots land in tests/artifacts/export-*.png.
"""

from __future__ import annotations

import time
import wave
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pycrdt
import pytest

from .browser_support import Person, read_document, shot, tone_wav, upload_asset, write_tracks
from .harness import PyDocClient, ServerProcess, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CLIP_S = 3.0
LOOP = (1.0, 2.0)


def set_transport(server: ServerProcess, token: str, sid: str, **fields: Any) -> None:
    client = PyDocClient(server.ws_base, sid, token)
    try:
        with client.doc.transaction():
            transport = client.doc.get("session", type=pycrdt.Map)["transport"]
            assert isinstance(transport, pycrdt.Map)
            for key, value in fields.items():
                transport[key] = value
        client.send_changes()
    finally:
        client.close()


def export(
    person: Person, tmp_path: Path, name: str, *, fmt: str, loop: bool = False, stems: bool = False
) -> Path:
    from playwright.sync_api import expect

    page = person.page
    if person.tid("export-dialog").is_hidden():  # it stays open after a download
        person.tid("export-open").click()
    expect(person.tid("export-dialog")).to_be_visible()
    person.tid("export-dialog-format").select_option(fmt)
    person.tid("export-loop").set_checked(loop)
    person.tid("export-stems").set_checked(stems)
    with page.expect_download() as info:
        person.tid("export-download").click()
    path = tmp_path / name
    info.value.save_as(path)
    expect(person.tid("export-status")).to_contain_text("Saved")
    assert person.tid("export-error").is_hidden()
    return path


def wav_seconds(path: Path) -> tuple[int, int, float]:
    with wave.open(str(path)) as w:
        return w.getnchannels(), w.getframerate(), w.getnframes() / w.getframerate()


def test_export_dialog_downloads_mixdowns_and_the_owner_shares_a_listening_link(
    server: ServerProcess, browser: Browser, cast: list[Person], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    owner_token = server.signup("olga@example.com", "Olga")
    editor_token = server.signup("ed@example.com", "Ed")
    sid = server.create_session(owner_token, "Demo song")
    server.add_member(owner_token, sid, "ed@example.com", "editor")
    asset = upload_asset(server, owner_token, sid, "tone.wav", tone_wav(CLIP_S, 440.0))
    write_tracks(
        server,
        owner_token,
        sid,
        [
            {
                "id": "t1",
                "name": "Tone",
                "clips": {"c1": {"assetId": asset, "start": 0.0, "offset": 0.0, "length": CLIP_S}},
            }
        ],
    )
    set_transport(server, owner_token, sid, loop=list(LOOP), lastLoop=list(LOOP))
    url = f"{server.base_url}/#/s/{sid}"

    olga = Person(browser, "export-olga", token=owner_token)
    cast.append(olga)
    olga.page.goto(url)
    expect(olga.tid("status")).to_have_attribute("data-state", "synced")
    expect(olga.tid("track")).to_have_count(1)

    # -- export: the whole session, the loop range, stems ---------------------------------
    whole = export(olga, tmp_path, "whole.wav", fmt="wav")
    channels, rate, seconds = wav_seconds(whole)
    assert (channels, rate) == (2, 48000)
    assert seconds == pytest.approx(CLIP_S, abs=0.01)
    shot(olga, "export-dialog")
    # Space in the dialog ticks the box under focus and does not start the transport behind it.
    olga.tid("export-stems").focus()
    olga.page.keyboard.press("Space")
    expect(olga.tid("export-stems")).to_be_checked()
    olga.page.wait_for_timeout(300)
    assert not read_document(server, owner_token, sid)["session"]["transport"].get("playing")

    looped = export(olga, tmp_path, "loop.wav", fmt="wav", loop=True)
    assert wav_seconds(looped)[2] == pytest.approx(LOOP[1] - LOOP[0], abs=0.01)

    stems = export(olga, tmp_path, "stems.zip", fmt="flac", stems=True)
    with zipfile.ZipFile(stems) as archive:
        assert [i.filename for i in archive.infolist()] == ["Tone.flac"]
        assert archive.read("Tone.flac")[:4] == b"fLaC"
    olga.tid("export-close").click()
    expect(olga.tid("export-dialog")).to_be_hidden()

    # -- an editor is not offered sharing ----------------------------------------------------
    ed = Person(browser, "export-ed", token=editor_token)
    cast.append(ed)
    ed.page.goto(url)
    expect(ed.tid("status")).to_have_attribute("data-state", "synced")
    expect(ed.tid("export-open")).to_be_visible()
    expect(ed.tid("share-open")).to_be_hidden()

    # -- share: turn on, listen without an account, turn off --------------------------------
    set_transport(server, owner_token, sid, position=0.0, startedAt=time.time() * 1000, playing=True)
    olga.tid("share-open").click()
    expect(olga.tid("share-status")).to_contain_text("Listening link is off")
    olga.tid("share-enable").click()
    expect(olga.tid("share-url")).to_be_visible()
    expect(olga.tid("share-status")).to_contain_text("listen live for 7 days")
    link = olga.tid("share-url").input_value()
    assert link.startswith(f"{server.base_url}/listen/")
    shot(olga, "export-share-dialog")

    listener = Person(browser, "export-listener")  # a fresh context: no token, no cookie
    cast.append(listener)
    listener.page.goto(link)
    expect(listener.tid("listen-title")).to_have_text("Demo song")
    audio = listener.tid("listen-audio")
    audio.evaluate("(a) => a.play()")
    wait_until(
        lambda: float(audio.evaluate("(a) => a.currentTime")) > 1.0,
        15,
        "the listener's <audio> element to play",
    )
    assert audio.evaluate("(a) => a.error") is None
    shot(listener, "export-listener")

    olga.tid("share-disable").click()
    expect(olga.tid("share-status")).to_contain_text("Listening link is off")
    listener.provoked.append(410)  # Chromium logs the page's own 410 as a console error
    listener.page.reload()
    expect(listener.tid("listen-error")).to_contain_text("turned off by the session's owner")
    shot(listener, "export-listener-revoked")

    for person in cast:
        assert person.unexpected_errors() == [], f"{person.name}: {person.unexpected_errors()}"
    # The server's own record of the link's life.
    r = server.api("GET", f"/api/sessions/{sid}/audit", token=owner_token)
    actions = [e["action"] for e in r.json()["entries"]]
    assert "session.share_enable" in actions
    assert "session.share_disable" in actions


def test_export_errors_are_in_plain_words(
    server: ServerProcess, browser: Browser, cast: list[Person]
) -> None:
    from playwright.sync_api import expect

    token = server.signup("olga@example.com", "Olga")
    sid = server.create_session(token, "Empty")
    olga = Person(browser, "export-empty", token=token)
    cast.append(olga)
    olga.page.goto(f"{server.base_url}/#/s/{sid}")
    expect(olga.tid("status")).to_have_attribute("data-state", "synced")
    olga.tid("export-open").click()
    expect(olga.tid("export-loop")).to_be_disabled()  # no loop was ever set
    olga.provoked.append(422)
    olga.tid("export-download").click()
    expect(olga.tid("export-error")).to_have_text(
        "There is nothing to export: no clips play in that part of the session."
    )
    shot(olga, "export-empty-error")
    assert olga.unexpected_errors() == []
