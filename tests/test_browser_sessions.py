"""Managing sessions in the browser, end to end: real Chromium contexts against a real server.

- The owner renames a session in the list (Escape cancels, Enter saves; the server agrees).
- From the session page the owner invites an existing user as a viewer: that user's list shows
  the session with role viewer, and their session page is read-only.
- Inviting an e-mail nobody uses offers an invite link; a new person opens it, signs up in the
  page and lands in the session as an editor.
- The owner deletes a session (a confirm step, then "Deleted — Undo"), it is gone from the
  server's list, and Undo restores it.
- Opening the link as someone already in the session says so in words.
- Members… lists everyone: read-only for a viewer; the owner changes Nina to viewer (the server
  and her reloaded page agree) and removes her after a confirm step (gone from the server's
  list and the dialog's; her open page loses access).
- No console errors beyond the 404 and 409 those cases provoke.

Screenshots: tests/artifacts/sessions-invite.png, tests/artifacts/sessions-members.png.
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
    expect(alice.tid("member-name")).to_have_text(["Alice", "Vera"])  # the list refreshed

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
    # Everyone sees who is in the session; only the owner changes it.
    vera.tid("members-open").click()
    expect(vera.tid("member-name")).to_have_text(["Alice", "Vera"])
    expect(vera.tid("member-role-badge")).to_have_text(["owner", "viewer"])
    expect(vera.tid("member-role")).to_have_count(0)
    expect(vera.tid("member-remove")).to_have_count(0)
    expect(vera.tid("invite-email")).to_be_hidden()
    vera.tid("members-close").click()
    expect(vera.tid("members-dialog")).to_be_hidden()

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

    # -- the owner manages members: the list, a role change, a removal -----------------------------
    nina_id = server.api("GET", "/api/me", token=nina_token).json()["user"]["id"]
    alice.tid("members-close").click()
    alice.tid("members-open").click()  # reopening loads the list again: Nina joined by the link
    expect(alice.tid("member-name")).to_have_text(["Alice", "Nina", "Vera"])
    expect(alice.tid("member-role-badge")).to_have_text(["owner"])  # the owner's row has no controls
    nina_row = alice.page.locator(f'[data-testid="member-row"][data-user-id="{nina_id}"]')
    expect(nina_row.get_by_test_id("member-email")).to_have_text("newbie@example.com")
    expect(nina_row.get_by_test_id("member-role")).to_have_value("editor")
    nina_row.get_by_test_id("member-role").select_option("viewer")
    expect(alice.tid("member-status")).to_have_text("Nina is now a viewer.")
    expect(nina_row).to_have_attribute("data-role", "viewer")  # redrawn from the server's list
    assert titles(server, nina_token)[sid] == ("Final take", "viewer")
    newbie.page.reload()  # her page, opened again, is a viewer's
    expect(newbie.tid("status")).to_have_attribute("data-state", "synced")
    expect(newbie.tid("role")).to_have_text("viewer")
    expect(newbie.tid("add-track")).to_be_disabled()

    nina_row.get_by_test_id("member-remove").click()
    expect(nina_row.get_by_test_id("member-remove-question")).to_contain_text(
        "Remove Nina from this session?"
    )
    nina_row.get_by_test_id("member-remove-cancel").click()
    expect(nina_row.get_by_test_id("member-remove")).to_be_visible()
    assert sid in titles(server, nina_token)
    nina_row.get_by_test_id("member-remove").click()
    nina_row.get_by_test_id("member-remove-confirm").click()
    expect(alice.tid("member-status")).to_have_text("Nina was removed from this session.")
    expect(nina_row).to_have_count(0)
    expect(alice.tid("member-name")).to_have_text(["Alice", "Vera"])
    assert sid not in titles(server, nina_token)
    res = server.api("GET", f"/api/sessions/{sid}/members", token=alice_token)
    assert [m["name"] for m in res.json()["members"]] == ["Alice", "Vera"], res.text
    expect(newbie.tid("status")).to_have_attribute("data-state", "forbidden")  # her socket was closed
    shot(alice, "sessions-members")

    for person in cast:
        assert person.unexpected_errors() == [], (person.name, person.errors)
