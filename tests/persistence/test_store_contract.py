"""The `Store` contract: every backend must pass every test here unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from persistence._migrate import load_migrations
from persistence.ports import Conflict, Member, NotFound, Role, RoomRecord, Store, User

from .support import Backend

EMPTY_ROOM = RoomRecord(snapshot=None, snapshot_seq=0, epoch=0, updates=[])
ALL_VERSIONS = [m.version for m in load_migrations("sqlite")]


async def make_user(store: Store, email: str = "ana@example.com", name: str = "Ana") -> User:
    return await store.create_user(email=email, name=name, password_hash=f"hash-of-{email}")


# migrations -------------------------------------------------------------------------------


async def test_migrate_is_idempotent_and_recorded(backend: Backend, store: Store) -> None:
    user = await make_user(store)
    await store.migrate()
    other = backend.make()
    await other.migrate()
    assert await other.get_user(user.id) == user
    versions = await backend.execute("SELECT version, applied_at FROM schema_migrations ORDER BY version")
    assert [v for v, _ in versions] == ALL_VERSIONS
    assert all(applied_at > 0 for _, applied_at in versions)


async def test_migrate_refuses_a_schema_from_newer_code(backend: Backend, store: Store) -> None:
    await backend.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)")
    with pytest.raises(RuntimeError, match="9999"):
        await backend.make().migrate()


async def test_concurrent_first_migrations_do_not_collide(backend: Backend) -> None:
    stores = [backend.make() for _ in range(4)]
    await asyncio.gather(*(s.migrate() for s in stores))
    assert [v for (v,) in await backend.execute("SELECT version FROM schema_migrations")] == ALL_VERSIONS


async def test_closed_store_refuses_calls(backend: Backend, store: Store) -> None:
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(RuntimeError):
        await store.get_user("x")


# accounts ---------------------------------------------------------------------------------


async def test_create_and_get_user(backend: Backend, store: Store) -> None:
    user = await make_user(store, "Ana.Lopez@Example.com", "Ana López")
    assert user.email == "Ana.Lopez@Example.com"  # stored as given
    assert user.name == "Ana López"
    assert user.created_at == backend.clock.now
    assert await store.get_user(user.id) == user
    assert await store.get_user("missing") is None


async def test_user_ids_are_random_opaque_strings(store: Store) -> None:
    users = [await make_user(store, f"u{i}@example.com") for i in range(5)]
    ids = [u.id for u in users]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(i, str) and len(i) >= 16 for i in ids)
    assert sorted(ids) != ids or sorted(ids, reverse=True) != ids  # not a counter


async def test_emails_are_unique_case_insensitively(store: Store) -> None:
    await make_user(store, "ana@example.com")
    with pytest.raises(Conflict):
        await make_user(store, "ANA@Example.COM")
    other = await make_user(store, "bob@example.com")
    assert other.email == "bob@example.com"


async def test_get_credentials_is_case_insensitive(store: Store) -> None:
    user = await make_user(store, "Ana@Example.com")
    creds = await store.get_credentials("aNA@example.COM")
    assert creds is not None
    assert creds.user == user
    assert creds.password_hash == "hash-of-Ana@Example.com"
    assert await store.get_credentials("nobody@example.com") is None


async def test_set_password_hash(store: Store) -> None:
    user = await make_user(store)
    await store.set_password_hash(user.id, "argon2id$new")
    creds = await store.get_credentials(user.email)
    assert creds is not None
    assert creds.password_hash == "argon2id$new"
    with pytest.raises(NotFound):
        await store.set_password_hash("missing", "x")


# tokens -----------------------------------------------------------------------------------


async def test_token_lookup_respects_expiry(store: Store) -> None:
    user = await make_user(store)
    await store.create_token(token_hash="h1", user_id=user.id, expires_at=2000.0)
    assert await store.user_for_token("h1", now=1000.0) == user
    assert await store.user_for_token("h1", now=1999.999) == user
    assert await store.user_for_token("h1", now=2000.0) is None
    assert await store.user_for_token("h1", now=3000.0) is None
    assert await store.user_for_token("other", now=1000.0) is None


async def test_revoke_token(store: Store) -> None:
    user = await make_user(store)
    await store.create_token(token_hash="h1", user_id=user.id, expires_at=2000.0)
    await store.create_token(token_hash="h2", user_id=user.id, expires_at=2000.0)
    assert await store.revoke_token("h1") is True
    assert await store.revoke_token("h1") is False
    assert await store.user_for_token("h1", now=1000.0) is None
    assert await store.user_for_token("h2", now=1000.0) == user


async def test_token_rules(store: Store) -> None:
    user = await make_user(store)
    await store.create_token(token_hash="h1", user_id=user.id, expires_at=2000.0)
    with pytest.raises(Conflict):
        await store.create_token(token_hash="h1", user_id=user.id, expires_at=5000.0)
    with pytest.raises(NotFound):
        await store.create_token(token_hash="h2", user_id="missing", expires_at=2000.0)
    assert await store.user_for_token("h1", now=3000.0) is None  # the duplicate changed nothing


# sessions ---------------------------------------------------------------------------------


async def test_create_session_makes_the_owner_a_member(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    backend.clock.advance()
    session = await store.create_session(owner_id=ana.id, title="Demo")
    assert session.title == "Demo"
    assert session.owner_id == ana.id
    assert session.created_at == session.updated_at == backend.clock.now
    assert await store.get_session(session.id) == session
    assert await store.get_role(session.id, ana.id) is Role.OWNER
    assert await store.list_members(session.id) == [Member(ana.id, ana.email, ana.name, Role.OWNER)]
    assert await store.get_session("missing") is None


async def test_create_session_for_unknown_owner_writes_nothing(backend: Backend, store: Store) -> None:
    with pytest.raises(NotFound):
        await store.create_session(owner_id="missing", title="Orphan")
    assert await backend.execute("SELECT id FROM sessions") == []
    assert await backend.execute("SELECT session_id FROM session_members") == []


async def test_list_sessions_most_recently_updated_first(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    bob = await make_user(store, "bob@example.com", "Bob")
    first = await store.create_session(owner_id=ana.id, title="first")
    backend.clock.advance()
    second = await store.create_session(owner_id=ana.id, title="second")
    backend.clock.advance()
    bobs = await store.create_session(owner_id=bob.id, title="bob's")
    await store.set_member(bobs.id, ana.id, Role.VIEWER)

    listed = await store.list_sessions(ana.id)
    assert [(s.title, role) for s, role in listed] == [
        ("bob's", Role.VIEWER),
        ("second", Role.OWNER),
        ("first", Role.OWNER),
    ]
    assert listed[1][0] == second

    backend.clock.advance()
    renamed = await store.update_session(first.id, title="first, renamed")
    assert renamed is not None
    assert [s.id for s, _ in await store.list_sessions(ana.id)] == [first.id, bobs.id, second.id]
    assert [s.id for s, _ in await store.list_sessions(bob.id)] == [bobs.id]
    assert await store.list_sessions("missing") == []


async def test_update_session_bumps_updated_at(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    session = await store.create_session(owner_id=ana.id, title="Demo")
    backend.clock.advance(5)
    updated = await store.update_session(session.id, title="Demo 2")
    assert updated is not None
    assert updated.title == "Demo 2"
    assert updated.created_at == session.created_at
    assert updated.updated_at == session.updated_at + 5
    assert await store.get_session(session.id) == updated
    assert await store.update_session("missing", title="x") is None


async def test_updated_at_never_goes_back_when_the_clock_does(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    session = await store.create_session(owner_id=ana.id, title="Demo")
    backend.clock.advance(-60)
    updated = await store.update_session(session.id, title="Demo 2")
    assert updated is not None
    assert updated.updated_at == session.updated_at


async def test_delete_session_removes_members_and_room(store: Store) -> None:
    ana = await make_user(store)
    bob = await make_user(store, "bob@example.com", "Bob")
    session = await store.create_session(owner_id=ana.id, title="Demo")
    kept = await store.create_session(owner_id=ana.id, title="Kept")
    await store.set_member(session.id, bob.id, Role.EDITOR)
    await store.append_updates(session.id, [b"a", b"b", b"c"])
    await store.compact(session.id, upto_seq=2, state=b"ab")
    await store.append_updates(kept.id, [b"k"])

    assert await store.delete_session(session.id) is True
    assert await store.get_session(session.id) is None
    assert await store.get_role(session.id, bob.id) is None
    assert await store.list_members(session.id) == []
    assert [s.id for s, _ in await store.list_sessions(bob.id)] == []
    assert await store.load_room(session.id) == EMPTY_ROOM
    assert await store.delete_session(session.id) is False
    assert await store.delete_session("missing") is False
    assert (await store.load_room(kept.id)).updates == [(1, b"k")]
    assert await store.get_user(bob.id) == bob


async def test_set_member_upserts_and_get_role(store: Store) -> None:
    ana = await make_user(store)
    bob = await make_user(store, "bob@example.com", "Bob")
    session = await store.create_session(owner_id=ana.id, title="Demo")
    assert await store.get_role(session.id, bob.id) is None
    await store.set_member(session.id, bob.id, Role.VIEWER)
    assert await store.get_role(session.id, bob.id) is Role.VIEWER
    await store.set_member(session.id, bob.id, Role.EDITOR)
    assert await store.get_role(session.id, bob.id) is Role.EDITOR
    assert len(await store.list_members(session.id)) == 2
    with pytest.raises(NotFound):
        await store.set_member("missing", bob.id, Role.EDITOR)
    with pytest.raises(NotFound):
        await store.set_member(session.id, "missing", Role.EDITOR)


async def test_list_members_owner_first_then_by_name(store: Store) -> None:
    zoe = await make_user(store, "zoe@example.com", "Zoe")
    names = ["carla", "Bob", "alice", "Dan"]
    others = [await make_user(store, f"{n.lower()}@example.com", n) for n in names]
    session = await store.create_session(owner_id=zoe.id, title="Demo")
    for user, role in zip(others, [Role.VIEWER, Role.EDITOR, Role.EDITOR, Role.VIEWER], strict=True):
        await store.set_member(session.id, user.id, role)
    members = await store.list_members(session.id)
    assert [m.name for m in members] == ["Zoe", "alice", "Bob", "carla", "Dan"]
    assert members[0] == Member(zoe.id, "zoe@example.com", "Zoe", Role.OWNER)
    assert members[2].role is Role.EDITOR


async def test_remove_member(store: Store) -> None:
    ana = await make_user(store)
    bob = await make_user(store, "bob@example.com", "Bob")
    session = await store.create_session(owner_id=ana.id, title="Demo")
    await store.set_member(session.id, bob.id, Role.EDITOR)
    assert await store.remove_member(session.id, bob.id) is True
    assert await store.remove_member(session.id, bob.id) is False
    assert await store.get_role(session.id, bob.id) is None
    assert await store.remove_member("missing", bob.id) is False


async def test_memberships_cascade_when_a_user_row_goes(backend: Backend, store: Store) -> None:
    # Deleting users is not in the port yet; the foreign key must already clean up after it.
    ana = await make_user(store)
    bob = await make_user(store, "bob@example.com", "Bob")
    session = await store.create_session(owner_id=ana.id, title="Demo")
    await store.set_member(session.id, bob.id, Role.EDITOR)
    await store.create_token(token_hash="bob-token", user_id=bob.id, expires_at=2e9)
    await backend.execute(f"DELETE FROM users WHERE id = '{bob.id}'")
    assert [m.user_id for m in await store.list_members(session.id)] == [ana.id]
    assert await store.user_for_token("bob-token", now=0) is None


# CRDT log ---------------------------------------------------------------------------------


async def test_unknown_room_is_empty(store: Store) -> None:
    assert await store.load_room("nowhere") == EMPTY_ROOM
    assert EMPTY_ROOM.last_seq == 0


async def test_append_allocates_consecutive_seqs(store: Store) -> None:
    assert await store.append_updates("r", [b"a"]) == 1
    assert await store.append_updates("r", [b"b", b"c", b"d"]) == 4
    assert await store.append_updates("other", [b"x"]) == 1
    record = await store.load_room("r")
    assert record == RoomRecord(None, 0, 0, [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d")])
    assert record.last_seq == 4


async def test_append_nothing_writes_nothing(backend: Backend, store: Store) -> None:
    assert await store.append_updates("r", []) == 0
    assert await backend.execute("SELECT room FROM crdt_rooms") == []
    await store.append_updates("r", [b"a", b"b"])
    assert await store.append_updates("r", []) == 2
    assert (await store.load_room("r")).updates == [(1, b"a"), (2, b"b")]


async def test_binary_payloads_round_trip(store: Store) -> None:
    payloads = [b"", b"\x00\x01\xff" * 7, bytes(range(256)), b"\x00" * (1 << 20)]
    await store.append_updates("r", payloads)
    assert [data for _, data in (await store.load_room("r")).updates] == payloads
    await store.compact("r", upto_seq=4, state=bytes(range(256)) * 3)
    assert (await store.load_room("r")).snapshot == bytes(range(256)) * 3


async def test_compact_keeps_rows_after_upto_seq(store: Store) -> None:
    await store.append_updates("r", [b"1", b"2", b"3", b"4", b"5"])
    await store.compact("r", upto_seq=3, state=b"S3")
    assert await store.load_room("r") == RoomRecord(b"S3", 3, 0, [(4, b"4"), (5, b"5")])


async def test_older_or_equal_compaction_is_ignored(store: Store) -> None:
    await store.append_updates("r", [b"1", b"2", b"3", b"4", b"5"])
    await store.compact("r", upto_seq=4, state=b"S4")
    await store.compact("r", upto_seq=2, state=b"S2")
    await store.compact("r", upto_seq=4, state=b"other S4")
    assert await store.load_room("r") == RoomRecord(b"S4", 4, 0, [(5, b"5")])


async def test_compaction_beyond_the_log_is_refused(store: Store) -> None:
    await store.append_updates("r", [b"1", b"2"])
    with pytest.raises(ValueError, match="last seq is 2"):
        await store.compact("r", upto_seq=3, state=b"S3")
    assert await store.load_room("r") == RoomRecord(None, 0, 0, [(1, b"1"), (2, b"2")])
    with pytest.raises(ValueError, match="last seq is 0"):
        await store.compact("nowhere", upto_seq=1, state=b"S")
    await store.compact("nowhere", upto_seq=0, state=b"S")  # nothing to compact: a no-op
    assert await store.load_room("nowhere") == EMPTY_ROOM


async def test_seqs_stay_monotonic_after_full_compaction(store: Store) -> None:
    await store.append_updates("r", [b"1", b"2", b"3"])
    await store.compact("r", upto_seq=3, state=b"S3")
    record = await store.load_room("r")
    assert record == RoomRecord(b"S3", 3, 0, [])
    assert record.last_seq == 3
    assert await store.append_updates("r", [b"4"]) == 4
    assert await store.load_room("r") == RoomRecord(b"S3", 3, 0, [(4, b"4")])


async def test_reset_room_replaces_history_and_bumps_epoch(store: Store) -> None:
    await store.append_updates("r", [b"1", b"2", b"3"])
    await store.compact("r", upto_seq=1, state=b"S1")
    assert await store.reset_room("r", b"restored") == 1
    record = await store.load_room("r")
    assert record == RoomRecord(b"restored", 3, 1, [])
    assert await store.append_updates("r", [b"4", b"5"]) == 5
    assert await store.reset_room("r", b"restored again") == 2
    assert await store.load_room("r") == RoomRecord(b"restored again", 5, 2, [])
    assert await store.append_updates("r", [b"6"]) == 6


async def test_reset_unknown_room(store: Store) -> None:
    assert await store.reset_room("new", b"state") == 1
    assert await store.load_room("new") == RoomRecord(b"state", 0, 1, [])
    assert await store.append_updates("new", [b"1"]) == 1


async def test_compaction_computed_before_a_reset_is_ignored(store: Store) -> None:
    await store.append_updates("r", [b"1", b"2", b"3"])
    stale = await store.load_room("r")
    await store.reset_room("r", b"restored")
    await store.append_updates("r", [b"4"])
    await store.compact("r", upto_seq=stale.last_seq, state=b"stale state")
    assert await store.load_room("r") == RoomRecord(b"restored", 3, 1, [(4, b"4")])


async def test_concurrent_appends_get_unique_gap_free_seqs(backend: Backend, store: Store) -> None:
    # Two stores, as two server processes would be, plus many tasks on each.
    stores = [store, backend.make()]

    async def append(task: int) -> tuple[int, list[bytes]]:
        batch = [f"{task}:{i}".encode() for i in range(1 + task % 3)]
        return await stores[task % 2].append_updates("r", batch), batch

    results = await asyncio.gather(*(append(task) for task in range(20)))
    record = await store.load_room("r")
    total = sum(len(batch) for _, batch in results)
    assert [seq for seq, _ in record.updates] == list(range(1, total + 1))
    logged = dict(record.updates)
    for last_seq, batch in results:
        first_seq = last_seq - len(batch) + 1
        assert [logged[seq] for seq in range(first_seq, last_seq + 1)] == batch


async def test_concurrent_appends_and_compaction(store: Store) -> None:
    await store.append_updates("r", [b"0"])

    async def compact() -> None:
        await store.compact("r", upto_seq=1, state=b"S1")

    results = await asyncio.gather(
        *(store.append_updates("r", [f"{i}".encode()]) for i in range(1, 11)), compact()
    )
    record = await store.load_room("r")
    assert record.snapshot_seq == 1
    assert [seq for seq, _ in record.updates] == list(range(2, 12))
    assert sorted(r for r in results if r is not None) == list(range(2, 12))


async def test_pycrdt_round_trip(store: Store) -> None:
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("notes", type=Text)
    tracks = doc.get("tracks", type=Map)
    for i in range(6):
        text += f"line {i}\n"
    tracks["t1"] = Map({"name": "Drums", "gainDb": -3.0})
    tracks["t2"] = Map({"name": "Bass", "gainDb": 0.0})
    assert len(updates) == 8

    compact_at = await store.append_updates("room", updates[:5])
    loaded = await store.load_room("room")
    replay: Doc[Any] = Doc()
    for _, update in loaded.updates:
        replay.apply_update(update)
    await store.compact("room", upto_seq=compact_at, state=replay.get_update())
    for update in updates[5:]:
        await store.append_updates("room", [update])

    record = await store.load_room("room")
    assert record.snapshot is not None
    assert record.snapshot_seq == compact_at == 5
    assert [seq for seq, _ in record.updates] == [6, 7, 8]
    rebuilt: Doc[Any] = Doc()
    rebuilt.apply_update(record.snapshot)
    for _, update in record.updates:
        rebuilt.apply_update(update)
    assert str(rebuilt.get("notes", type=Text)) == str(text)
    assert rebuilt.get("tracks", type=Map).to_py() == tracks.to_py()
