"""End-to-end smoke test of the placeholder page in a real browser against the real server.

Playwright (sync API) drives Debian's Chromium (`/usr/bin/chromium`, installed by `make browser`);
Playwright's own browser downloads are never used. Three browser contexts are three people:
Alice (owner, signs up through the page), Bob (editor, logs in through the page after a wrong
password) and Vera (viewer, opens the page with a token already in localStorage).
Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .browser_support import FAILED_RESOURCE, Person
from .harness import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture
def people(browser: Browser) -> Iterator[list[Person]]:
    made: list[Person] = []
    try:
        yield made
    finally:
        # screenshots and the console are most useful when the test failed half-way; all are
        # taken before any context closes (a closed one would vanish from the others' presence)
        for person in made:
            try:
                person.screenshot()
            except Exception as exc:
                print(f"{person.name}: no screenshot: {exc!r}")
            if person.errors:
                print(f"{person.name} console: {person.errors}")
        for person in made:
            person.context.close()


def test_two_editors_and_a_viewer_share_a_session_live(
    server: ServerProcess, browser: Browser, people: list[Person]
) -> None:
    from playwright.sync_api import expect

    base = server.base_url + "/"

    # -- Alice signs up through the page, creates a session and opens it ---------------
    alice = Person(browser, "alice")
    people.append(alice)
    alice.page.goto(base)
    alice.tid("signup-name").fill("Alice")
    alice.tid("signup-email").fill("alice@example.com")
    alice.tid("signup-password").fill("correct horse")
    alice.tid("signup-submit").click()
    expect(alice.tid("user-name")).to_have_text("Alice")
    expect(alice.tid("no-sessions")).to_be_visible()
    alice.tid("session-title-input").fill("Friday jam")
    alice.tid("create-session").click()
    # creating navigates straight into the session
    expect(alice.page).to_have_url(re.compile(r"#/s/[^/]+$"))
    session_id = alice.page.url.rsplit("/", 1)[1]
    expect(alice.tid("status")).to_have_attribute("data-state", "synced")
    expect(alice.tid("role")).to_have_text("owner")
    expect(alice.tid("doc-title")).to_have_text("Friday jam")
    expect(alice.tid("no-tracks")).to_be_visible()
    # back to the list and in again through the link
    alice.tid("back").click()
    expect(alice.tid("session-link")).to_have_text("Friday jam")
    expect(alice.tid("session-role")).to_have_text("owner")
    alice.tid("session-link").click()
    expect(alice.tid("status")).to_have_attribute("data-state", "synced")

    alice.tid("add-track").click()
    alice_track = alice.tid("track-name")
    expect(alice_track).to_have_count(1)
    expect(alice_track).to_have_value("Track 1")
    expect(alice_track).to_be_focused()
    alice_track.fill("Drums")

    # -- Bob (editor, made through the API) opens the link and logs in on the page -------
    alice_token = alice.page.evaluate("window.localStorage.getItem('escenario.token')")
    assert isinstance(alice_token, str)
    assert alice_token
    server.signup("bob@example.com", name="Bob", password="bob's password")
    server.add_member(alice_token, session_id, "bob@example.com", "editor")

    bob = Person(browser, "bob")
    people.append(bob)
    bob.page.goto(f"{base}#/s/{session_id}")
    expect(bob.tid("auth-note")).to_contain_text("Sign in to open this session")
    # a wrong password first: the page says so, and the browser logs the 401 itself
    bob.provoked.append(401)
    bob.tid("login-email").fill("bob@example.com")
    bob.tid("login-password").fill("not bob's password")
    bob.tid("login-submit").click()
    expect(bob.tid("error")).to_be_visible()
    expect(bob.tid("error")).not_to_be_empty()
    bob.tid("login-password").fill("bob's password")
    bob.tid("login-submit").click()
    expect(bob.tid("user-name")).to_have_text("Bob")
    expect(bob.tid("error")).to_be_hidden()
    expect(bob.tid("status")).to_have_attribute("data-state", "synced")
    expect(bob.tid("role")).to_have_text("editor")
    expect(bob.tid("doc-title")).to_have_text("Friday jam")
    bob_track = bob.tid("track-name")
    expect(bob_track).to_have_value("Drums")
    expect(bob_track).to_be_enabled()

    # Bob renames it; Alice sees it live
    bob_track.fill("Bass line")
    expect(alice_track).to_have_value("Bass line")
    # and Alice's edit shows up for Bob again
    alice_track.fill("Bass line 2")
    expect(bob_track).to_have_value("Bass line 2")

    # both see both (self first, then by name)
    expect(alice.tid("presence-user")).to_have_text(["Alice (you)", "Bob"])
    expect(bob.tid("presence-user")).to_have_text(["Bob (you)", "Alice"])

    # -- Vera, a viewer whose token is already stored, opens the link -------------------
    vera_token = server.signup("vera@example.com", name="Vera", password="vera's password")
    server.add_member(alice_token, session_id, "vera@example.com", "viewer")
    vera = Person(browser, "vera", token=vera_token)
    people.append(vera)
    vera.page.goto(f"{base}#/s/{session_id}")
    expect(vera.tid("user-name")).to_have_text("Vera")
    expect(vera.tid("status")).to_have_attribute("data-state", "synced")
    expect(vera.tid("role")).to_have_text("viewer")
    expect(vera.tid("session")).to_have_class(re.compile(r"\bread-only\b"))
    vera_track = vera.tid("track-name")
    expect(vera_track).to_have_value("Bass line 2")
    expect(vera_track).to_be_disabled()
    expect(vera.tid("add-track")).to_be_disabled()
    expect(vera.tid("delete-track")).to_be_disabled()
    expect(vera.tid("presence-user")).to_have_text(["Vera (you)", "Alice", "Bob"])
    expect(alice.tid("presence-user")).to_have_text(["Alice (you)", "Bob", "Vera"])
    # edits keep reaching the viewer
    bob.tid("add-track").click()
    expect(vera.tid("track-name")).to_have_count(2)
    expect(vera.tid("track-name").nth(1)).to_have_value("Track 2")
    expect(alice.tid("track-name").nth(1)).to_have_value("Track 2")

    # Alice reloads: the token survives, the document comes back from the server
    alice.page.reload()
    expect(alice.tid("status")).to_have_attribute("data-state", "synced")
    expect(alice.tid("track-name")).to_have_count(2)
    expect(alice.tid("track-name").first).to_have_value("Bass line 2")
    expect(alice.tid("presence-user")).to_have_text(["Alice (you)", "Bob", "Vera"])
    # the others drop the old Alice and see the new one, once
    expect(bob.tid("presence-user")).to_have_text(["Bob (you)", "Alice", "Vera"])
    expect(vera.tid("presence-user")).to_have_text(["Vera (you)", "Alice", "Bob"])

    for person in people:
        assert person.unexpected_errors() == [], f"{person.name}: {person.unexpected_errors()}"
    # every provoked failure was actually seen (so the allowance above is not silently unused)
    assert any(FAILED_RESOURCE.search(e) for e in bob.errors), bob.errors
