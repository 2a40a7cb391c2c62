"""Managing sessions in the browser, end to end: real Chromium contexts against a real server.

- The owner renames a session in the list (Escape cancels, Enter saves; the server agrees).
- From the session page the owner invites an existing user as a viewer: that user's list shows
  the session with role viewer, and their session page is read-only.
- Inviting an e-mail nobody uses offers an invite link; a new person opens it, signs up in the
  page and lands in the session as an editor.
- The owner deletes a session (a confirm step, then "Deleted — Undo"), it is gone from the
  server's list, and Undo restores it.
- Opening the link as someone already in the session says so in words.
- No console errors beyond the 404 and 409 those cases provoke.

Screenshot: tests/artifacts/sessions-invite.png.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .browser_support import Person, open_page, shot
from .harness import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser


def titles(server: ServerProcess, token: str) -> dict[str, tuple[str, str]]:
    res = server.api("GET", "/api/sessions", token=token)
    assert res.status_code == 200, res.text
    sessions: list[dict[str, Any]] = res.json()["sessions"]
    return {s["id"]: (s["title"], s["role"]) for s in sessions}


def row(person: Person, session_id: str) -> Any:
    return person.page.locator(f'[data-testid="session-row"][data-session-id="{session_id}"]')


def test_rename_invite_link_and_delete_from_the_page(
    server: ServerProcess, browser: Browser, cast: list[Person]
) -> None:
    from playwright.sync_api import expect

    alice_token = server.signup("alice@example.com", name="Alice")
    sid = server.create_session(alice_token, "Demo take")
    doomed = server.create_session(alice_token, "Scratch")
    vera_token = server.signup("vera@example.com", name="Vera")

    # -- rename in the list: Escape cancels, Enter saves ------------------------------------------
    alice = Person(browser, "alice", token=alice_token)
    cast.append(alice)
    alice.page.goto(f"{server.base_url}/#/")
    first = row(alice, sid)
    first.get_by_test_id("session-rename").click()
    field = first.get_by_test_id("session-rename-input")
    field.fill("Not this")
    field.press("Escape")
    expect(first.get_by_test_id("session-link")).to_have_text("Demo take")
    first.get_by_test_id("session-rename").click()
    field.fill("  Final take  ")
    field.press("Enter")
    expect(first.get_by_test_id("session-link")).to_have_text("Final take")
    assert titles(server, alice_token)[sid] == ("Final take", "owner")

    # -- delete with a confirm step, then Undo ----------------------------------------------------
    gone = row(alice, doomed)
    gone.get_by_test_id("session-delete").click()
    gone.get_by_test_id("session-delete-cancel").click()
    assert doomed in titles(server, alice_token)
    gone.get_by_test_id("session-delete").click()
    expect(gone.get_by_test_id("session-delete-question")).to_contain_text("Scratch")
    gone.get_by_test_id("session-delete-confirm").click()
    expect(gone.get_by_test_id("session-deleted")).to_contain_text("Deleted")
    assert doomed not in titles(server, alice_token)
    gone.get_by_test_id("session-undo").click()
    expect(gone.get_by_test_id("session-link")).to_have_text("Scratch")
    assert titles(server, alice_token)[doomed] == ("Scratch", "owner")
    gone.get_by_test_id("session-delete").click()
    gone.get_by_test_id("session-delete-confirm").click()
    expect(gone.get_by_test_id("session-undo")).to_be_visible()
    alice.page.reload()
    expect(row(alice, sid)).to_be_visible()
    expect(row(alice, doomed)).to_have_count(0)

    # -- invite an existing user as a viewer from the session page --------------------------------
    row(alice, sid).get_by_test_id("session-link").click()
    expect(alice.tid("status")).to_have_attribute("data-state", "synced")
    alice.tid("members-open").click()
    alice.tid("invite-email").fill("vera@example.com")
    alice.tid("invite-role").select_option("viewer")
    alice.tid("invite-submit").click()
    expect(alice.tid("invite-status")).to_contain_text("Vera can now open this session as viewer")
    assert titles(server, vera_token)[sid] == ("Final take", "viewer")

    vera = Person(browser, "vera", token=vera_token)
    cast.append(vera)
    vera.page.goto(f"{server.base_url}/#/")
    vrow = row(vera, sid)
    expect(vrow.get_by_test_id("session-role")).to_have_text("viewer")
    expect(vrow.get_by_test_id("session-rename")).to_have_count(0)
    expect(vrow.get_by_test_id("session-delete")).to_have_count(0)
    vrow.get_by_test_id("session-link").click()
    expect(vera.tid("status")).to_have_attribute("data-state", "synced")
    expect(vera.tid("role")).to_have_text("viewer")
    expect(vera.tid("session")).to_have_class(re.compile(r"\bread-only\b"))
    expect(vera.tid("add-track")).to_be_disabled()
    expect(vera.tid("members-open")).to_be_hidden()

    # -- an unknown e-mail: make an invite link; a new person signs up through it -----------------
    alice.tid("invite-email").fill("newbie@example.com")
    alice.tid("invite-role").select_option("editor")
    alice.provoked.append(404)  # the members call answers user_not_found
    alice.tid("invite-submit").click()
    expect(alice.tid("invite-error")).to_contain_text("Nobody has signed up with newbie@example.com")
    alice.tid("invite-link-create").click()
    link_field = alice.tid("invite-link")
    expect(link_field).to_be_visible()
    link = link_field.input_value()
    assert link.startswith(f"{server.base_url}/#/invite/"), link
    expect(alice.tid("invite-status")).to_contain_text("makes whoever opens it an editor")
    expect(alice.tid("invite-link-copy")).to_be_visible()
    shot(alice, "sessions-invite")

    newbie = Person(browser, "newbie")
    cast.append(newbie)
    newbie.page.goto(link)
    expect(newbie.tid("auth-note")).to_contain_text("invited")
    newbie.tid("signup-name").fill("Nina")
    newbie.tid("signup-email").fill("newbie@example.com")
    newbie.tid("signup-password").fill("correct horse battery")
    newbie.tid("signup-submit").click()
    expect(newbie.tid("status")).to_have_attribute("data-state", "synced")
    expect(newbie.tid("role")).to_have_text("editor")
    assert f"#/s/{sid}" in newbie.page.url
    nina_token = newbie.page.evaluate("window.localStorage.getItem('escenario.token')")
    assert titles(server, nina_token)[sid] == ("Final take", "editor")

    # someone already in the session is told so, in words
    second = open_page(browser, cast, "vera-again", vera_token, f"{server.base_url}/#/s/{sid}")
    second.provoked.append(409)  # Vera is already a member: the accept call answers 409
    second.page.goto(link)
    expect(second.tid("invite-failed")).to_contain_text("already a member")

    for person in cast:
        assert person.unexpected_errors() == [], (person.name, person.errors)
