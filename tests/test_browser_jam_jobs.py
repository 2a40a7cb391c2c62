"""The jam panel and the AI jobs of the session view, in a real browser against the real server.

(a) Alice joins the session's live jam with Chromium's fake microphone: the page shows the round
trip and the server-added latency, the server's jam stats list her with packets flowing both
ways, the Record switch reaches the document, and leaving takes her out of the jam.
(b) Alice selects a clip and clicks "Master": a progress bar reaches done and the mastered track
appears in her page and in Bob's (another browser context); "Separate stems" on a server without
the model says, in plain words, that an admin must install it.
Screenshots land in tests/artifacts/jam-*.png.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .browser_support import (
    Person,
    launch_chromium,
    open_page,
    read_document,
    shot,
    tone_wav,
    upload_asset,
    wait_for,
    write_tracks,
)
from .conftest import require, require_browser
from .harness import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium with a fake microphone, granted without a prompt (overrides conftest's)."""
    require_browser()
    with launch_chromium(media=True) as b:
        yield b


def figure(person: Person, key: str) -> float | None:
    raw = person.tid(f"jam-{key}").get_attribute("data-value")
    return float(raw) if raw else None


def test_join_the_jam_and_see_latency(server: ServerProcess, browser: Browser, cast: list[Person]) -> None:
    from playwright.sync_api import expect

    token = server.signup("alice@example.com", name="Alice")
    sid = server.create_session(token, "Live set")
    alice = open_page(browser, cast, "alice", token, f"{server.base_url}/#/s/{sid}")

    expect(alice.tid("jam-status")).to_have_text("Not in the jam")
    alice.tid("jam-join").click()
    expect(alice.tid("jam-status")).to_have_text("In the jam")
    expect(alice.tid("jam-leave")).to_be_visible()
    expect(alice.tid("jam-participant")).to_have_count(1)
    expect(alice.tid("jam-participant")).to_contain_text("Alice (you)")

    # round trip from our own ping/pong, server-added latency from the server's stats
    rtt = wait_for(lambda: figure(alice, "rtt"), "a round trip figure")
    assert 0 < rtt < 1000
    server_ms = wait_for(lambda: figure(alice, "server-latency"), "a server-added latency figure")
    assert 0 < server_ms < 200
    expect(alice.tid("jam-rtt")).to_contain_text("ms")
    expect(alice.tid("jam-server-latency")).to_contain_text("ms")
    assert wait_for(lambda: figure(alice, "buffer"), "the server's buffer depth") >= 1
    # our own playout FIFO reports what it holds
    wait_for(lambda: figure(alice, "local-buffer") is not None, "the local buffer figure")

    # the server hears her microphone and sends her mix back
    def flowing() -> dict[str, Any] | None:
        stats = server.api("GET", f"/api/sessions/{sid}/jam/stats", token=token).json()
        ps = stats.get("participants", [])
        if len(ps) == 1 and ps[0]["in"].get("packets", 0) > 200 and ps[0]["out"]["sent"] > 200:
            return dict(ps[0])
        return None

    me = wait_for(flowing, "packets flowing both ways in the server's jam stats")
    assert me["name"] == "Alice"
    assert me["canSend"] is True
    assert me["codec"] == "opus"  # Chromium has WebCodecs' Opus (test_browser_jam_opus.py)
    assert me["in"]["corrupt"] == 0

    # personal mix, self-monitor and jitter mode go to the server without breaking the stream
    alice.tid("jam-monitor").uncheck()
    alice.tid("jam-jitter-mode").select_option("manual")
    alice.tid("jam-jitter-depth").fill("4")
    alice.tid("jam-jitter-depth").dispatch_event("change")
    alice.tid("jam-gain").first.fill("-6")
    alice.tid("jam-gain").first.dispatch_event("input")

    def monitor_off_manual_4() -> bool:
        stats = server.api("GET", f"/api/sessions/{sid}/jam/stats", token=token).json()
        p = stats["participants"][0]
        return p["selfMonitor"] is False and p["in"].get("mode") == "manual" and p["in"].get("depth") == 4

    wait_for(monitor_off_manual_4, "monitor off and a manual depth of 4 on the server")
    expect(alice.tid("jam-status")).to_have_text("In the jam")

    # Record is a shared transport flag in the document; pressing it starts the transport too
    alice.tid("jam-record").click()
    expect(alice.tid("jam-record")).to_have_attribute("aria-pressed", "true")
    expect(alice.tid("jam-record-state")).to_have_attribute("data-state", "recording")
    expect(alice.tid("transport")).to_have_attribute("data-playing", "true")
    wait_for(
        lambda: read_document(server, token, sid)["session"].get("transport", {}).get("recording") is True,
        "transport.recording in the document",
    )
    assert read_document(server, token, sid)["session"]["transport"].get("playing") is True
    expect(alice.tid("presence-activity")).to_contain_text("recording")
    shot(alice, "jam-joined", full_page=True)

    alice.tid("jam-record").click()
    wait_for(
        lambda: read_document(server, token, sid)["session"].get("transport", {}).get("recording") is False,
        "recording off again",
    )

    alice.tid("jam-leave").click()
    expect(alice.tid("jam-status")).to_have_text("Not in the jam")
    expect(alice.tid("jam-join")).to_be_visible()

    def left() -> bool:
        stats = server.api("GET", f"/api/sessions/{sid}/jam/stats", token=token).json()
        return not [p for p in stats.get("participants", []) if p.get("active", True)]

    wait_for(left, "Alice gone from the jam")
    assert alice.unexpected_errors() == []


def test_master_a_clip_and_see_the_result_everywhere(
    server: ServerProcess, browser: Browser, cast: list[Person]
) -> None:
    from playwright.sync_api import expect

    token = server.signup("alice@example.com", name="Alice")
    sid = server.create_session(token, "Mix day")
    server.signup("bob@example.com", name="Bob", password="bob's password")
    server.add_member(token, sid, "bob@example.com", "editor")
    bob_token = server.api(
        "POST", "/api/auth/login", json={"email": "bob@example.com", "password": "bob's password"}
    ).json()["token"]
    asset = upload_asset(server, token, sid, "Guitar.wav", tone_wav(2.0))
    write_tracks(
        server,
        token,
        sid,
        [
            {
                "id": "gtr",
                "name": "Guitar",
                "clips": {"c1": {"assetId": asset, "start": 0.5, "offset": 0.0, "length": 2.0}},
            }
        ],
    )
    url = f"{server.base_url}/#/s/{sid}"
    alice = open_page(browser, cast, "alice", token, url)
    bob = open_page(browser, cast, "bob", bob_token, url)
    expect(alice.tid("track")).to_have_count(1)
    expect(bob.tid("track")).to_have_count(1)

    # nothing selected: the AI tools wait for a clip
    expect(alice.tid("job-master")).to_be_disabled()
    expect(alice.tid("job-hint")).to_contain_text("Select an audio clip")
    alice.tid("clip").click()
    expect(alice.tid("job-master")).to_be_enabled()

    # separation without a model: refused at once, in words a musician understands
    alice.provoked.append(422)
    alice.tid("job-separate").click()
    expect(alice.tid("job-start-error")).to_be_visible()
    expect(alice.tid("job-start-error")).to_contain_text("Stem separation isn't installed on this server")
    expect(alice.tid("job-start-error")).to_contain_text("escenario models")

    alice.tid("job-master").click()
    expect(alice.tid("job-start-error")).to_be_hidden()
    for person in (alice, bob):
        row = person.tid("job-row")
        expect(row).to_have_count(1)
        expect(row).to_have_attribute("data-kind", "master")
        expect(row).to_have_attribute("data-status", "done", timeout=90_000)
        expect(row.get_by_test_id("job-label")).to_contain_text("Done")
        assert row.get_by_test_id("job-progress").evaluate("(el) => el.value") == 1
        expect(person.tid("track")).to_have_count(2)
        expect(person.page.locator("[data-testid=track-name]").nth(1)).to_have_value("Guitar — mastered")
        # the new track's clip lines up with the source clip
        clip = person.page.locator("[data-testid=track]").nth(1).get_by_test_id("clip")
        expect(clip).to_have_attribute("data-start", "0.5")
        expect(clip.get_by_test_id("clip-waveform")).to_have_attribute("data-drawn", "true")
    doc = read_document(server, token, sid)
    assert doc["trackOrder"][0] == "gtr"
    assert doc["tracks"][doc["trackOrder"][1]]["name"] == "Guitar — mastered"

    # a viewer sees the same jobs but cannot start, cancel or record
    server.signup("vera@example.com", name="Vera")
    server.add_member(token, sid, "vera@example.com", "viewer")
    vera_token = server.api(
        "POST", "/api/auth/login", json={"email": "vera@example.com", "password": "correct horse"}
    ).json()["token"]
    vera = open_page(browser, cast, "vera", vera_token, url)
    expect(vera.tid("job-row")).to_have_attribute("data-status", "done")
    vera.tid("clip").first.click()
    for kind in ("separate", "transcribe", "master"):
        expect(vera.tid(f"job-{kind}")).to_be_disabled()
    expect(vera.tid("job-hint")).to_contain_text("Viewers cannot run AI tools")
    expect(vera.tid("jam-record")).to_be_disabled()

    # To MIDI: a midi track whose clip draws its notes as a mini piano roll, for everyone
    alice.page.locator("[data-testid=track]").first.get_by_test_id("clip").click()
    alice.tid("job-transcribe").click()
    for person in (alice, bob, vera):
        row = person.page.locator("[data-testid=job-row][data-kind=transcribe]")
        expect(row).to_have_attribute("data-status", "done", timeout=90_000)
        expect(person.tid("track")).to_have_count(3)
        midi = person.page.locator("[data-testid=track][data-kind=midi]")
        expect(midi).to_have_count(1)
        expect(midi.locator("[data-testid=track-name]")).to_have_value("Guitar — MIDI")
        roll = midi.get_by_test_id("clip-notes")
        expect(roll).to_be_visible()
        expect(roll).not_to_have_attribute("data-notes", "0")
        wait_for(
            lambda roll=roll: int(roll.get_attribute("data-drawn") or 0) > 0, "notes drawn in the MIDI clip"
        )
        expect(midi.get_by_test_id("clip-waveform")).to_be_hidden()
    shot(alice, "jam-jobs-alice", full_page=True)
    shot(bob, "jam-jobs-bob", full_page=True)
    doc = read_document(server, token, sid)
    midi_id = next(t for t in doc["trackOrder"] if doc["tracks"][t]["kind"] == "midi")
    notes = next(iter(doc["tracks"][midi_id]["clips"].values()))["notes"]
    # a 440 Hz sine is A4
    assert notes
    assert {n["pitch"] for n in notes} == {69}
    for person in (alice, bob, vera):
        assert person.unexpected_errors() == []


def _redis_problem(url: str) -> str | None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except (OSError, redis.RedisError) as exc:
        return f"Redis at {url} is unreachable: {exc!r}"
    finally:
        client.close()
    return None


@pytest.fixture
def idle_server(tmp_path: Any) -> Iterator[ServerProcess]:
    """A server that queues jobs on Redis for `escenario worker`s and runs none itself: a job
    stays queued until it is cancelled."""
    url = os.environ.get("ESCENARIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    problem = _redis_problem(url)
    require(problem is None, problem or "")
    env = {
        "ESCENARIO_INFERENCE_WORKERS": "0",
        "ESCENARIO_REDIS_URL": url,
        "ESCENARIO_JOB_QUEUE_PREFIX": f"escenario-test-{uuid.uuid4().hex[:8]}",
    }
    srv = ServerProcess(tmp_path / "idle-data", env=env)
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


def test_cancel_a_queued_job_and_see_who_is_mastering(
    idle_server: ServerProcess, browser: Browser, cast: list[Person]
) -> None:
    from playwright.sync_api import expect

    server = idle_server
    token = server.signup("alice@example.com", name="Alice")
    sid = server.create_session(token, "Queue")
    server.signup("bob@example.com", name="Bob", password="bob's password")
    server.add_member(token, sid, "bob@example.com", "editor")
    bob_token = server.api(
        "POST", "/api/auth/login", json={"email": "bob@example.com", "password": "bob's password"}
    ).json()["token"]
    asset = upload_asset(server, token, sid, "Keys.wav", tone_wav(1.0, 220.0))
    write_tracks(
        server,
        token,
        sid,
        [
            {
                "id": "keys",
                "name": "Keys",
                "clips": {"k1": {"assetId": asset, "start": 0.0, "offset": 0.0, "length": 1.0}},
            }
        ],
    )
    url = f"{server.base_url}/#/s/{sid}"
    alice = open_page(browser, cast, "alice", token, url)
    bob = open_page(browser, cast, "bob", bob_token, url)

    alice.tid("clip").click()
    alice.tid("job-master").click()
    for person in (alice, bob):
        row = person.tid("job-row")
        expect(row).to_have_attribute("data-status", "queued")
        expect(row.get_by_test_id("job-label")).to_contain_text("Waiting for a free worker")
        # an indeterminate bar while queued
        assert row.get_by_test_id("job-progress").evaluate("(el) => el.hasAttribute('value')") is False
        expect(row.get_by_test_id("job-cancel")).to_be_visible()
    # Bob sees what Alice is doing
    alice_in_bobs_list = bob.tid("presence-user").filter(has_text="Alice")
    expect(alice_in_bobs_list.get_by_test_id("presence-activity")).to_contain_text("mastering…")
    shot(bob, "jam-queued-bob", full_page=True)

    alice.tid("job-cancel").click()
    for person in (alice, bob):
        row = person.tid("job-row")
        expect(row).to_have_attribute("data-status", "cancelled")
        expect(row.get_by_test_id("job-label")).to_have_text("Cancelled")
        expect(row.get_by_test_id("job-cancel")).to_be_hidden()
        expect(person.tid("track")).to_have_count(1)
    expect(alice_in_bobs_list.get_by_test_id("presence-activity")).to_have_count(0)
    job_id = alice.tid("job-row").get_attribute("data-job-id")
    assert server.api("GET", f"/api/jobs/{job_id}", token=token).json()["status"] == "cancelled"
    for person in (alice, bob):
        assert person.unexpected_errors() == []


def test_separate_stems_into_a_visible_group(tmp_path: Any, browser: Browser, cast: list[Person]) -> None:
    """With the tiny random-weight HTDemucs installed as `htdemucs` (the default model)."""
    from playwright.sync_api import expect

    from .inference.conftest import TINY_SIG, build_tiny_htdemucs, save_th, write_bag

    models = tmp_path / "models"
    save_th(build_tiny_htdemucs(0), models, TINY_SIG)
    write_bag(models, "htdemucs", [TINY_SIG])
    server = ServerProcess(
        tmp_path / "data",
        env={"ESCENARIO_MODELS_DIR": str(models), "ESCENARIO_INFERENCE_DEVICE": "cpu"},
    )
    server.start()
    try:
        token = server.signup("alice@example.com", name="Alice")
        sid = server.create_session(token, "Stems")
        server.signup("bob@example.com", name="Bob", password="bob's password")
        server.add_member(token, sid, "bob@example.com", "editor")
        bob_token = server.api(
            "POST", "/api/auth/login", json={"email": "bob@example.com", "password": "bob's password"}
        ).json()["token"]
        asset = upload_asset(server, token, sid, "Band.wav", tone_wav(1.5, 330.0))
        write_tracks(
            server,
            token,
            sid,
            [
                {
                    "id": "band",
                    "name": "Band",
                    "clips": {"b1": {"assetId": asset, "start": 1.0, "offset": 0.0, "length": 1.5}},
                },
                {"id": "after", "name": "After"},
            ],
        )
        url = f"{server.base_url}/#/s/{sid}"
        alice = open_page(browser, cast, "alice", token, url)
        bob = open_page(browser, cast, "bob", bob_token, url)
        alice.tid("clip").click()
        alice.tid("job-separate").click()
        for person in (alice, bob):
            expect(person.tid("job-row")).to_have_attribute("data-status", "done", timeout=120_000)
            expect(person.tid("track")).to_have_count(6)
            # the four stems sit right after the source, bracketed as one group
            grouped = person.page.locator("[data-testid=track].grouped")
            expect(grouped).to_have_count(4)
            names = [person.page.locator("[data-testid=track-name]").nth(i).input_value() for i in range(6)]
            assert names[0] == "Band"
            assert names[5] == "After"
            assert sorted(names[1:5]) == sorted(f"Band — {s}" for s in ("drums", "bass", "other", "vocals"))
            tracks = person.page.locator("[data-testid=track]")
            expect(tracks.nth(1)).to_have_class(re.compile(r"\bgroup-first\b"))
            expect(tracks.nth(4)).to_have_class(re.compile(r"\bgroup-last\b"))
            expect(tracks.nth(0)).not_to_have_class(re.compile(r"\bgrouped\b"))
            expect(tracks.nth(5)).not_to_have_class(re.compile(r"\bgrouped\b"))
            groups = {tracks.nth(i).get_attribute("data-group") for i in range(1, 5)}
            assert len(groups) == 1
            assert None not in groups
        shot(alice, "jam-stems-alice", full_page=True)
        for person in (alice, bob):
            assert person.unexpected_errors() == []
    finally:
        server.kill()
