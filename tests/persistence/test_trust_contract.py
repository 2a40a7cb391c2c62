"""The `Store` contract for migration 0004: soft deletion, source purges, consent, the audit log.

Every backend must pass every test here unchanged.
"""

from __future__ import annotations

import pytest

from persistence.ports import AssetKind, Store

from .support import Backend
from .test_asset_contract import make_asset, make_user


async def test_a_deleted_session_is_hidden_until_restored(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    kept = await store.create_session(owner_id=ana.id, title="Kept")
    gone = await store.create_session(owner_id=ana.id, title="Gone")
    deleted_at = backend.clock.now
    assert await store.mark_session_deleted(gone.id) is True
    assert await store.mark_session_deleted(gone.id) is False  # already hidden
    assert await store.get_session(gone.id) is None
    assert [s.id for s, _ in await store.list_sessions(ana.id)] == [kept.id]
    assert await store.update_session(gone.id, title="x") is None
    # Memberships stay, so the owner can still be recognised for the undo.
    assert await store.get_role(gone.id, ana.id) is not None

    assert await store.list_deleted_sessions(before=deleted_at - 1) == []
    assert [s.id for s in await store.list_deleted_sessions(before=deleted_at)] == [gone.id]
    # Only a deletion after the cutoff can be undone (the grace period).
    assert await store.restore_session(gone.id, deleted_after=deleted_at) is None
    restored = await store.restore_session(gone.id, deleted_after=deleted_at - 10)
    assert restored is not None
    assert restored.title == "Gone"
    assert await store.get_session(gone.id) is not None
    assert await store.list_deleted_sessions(before=deleted_at + 1e6) == []
    assert await store.restore_session(kept.id, deleted_after=0) is None  # never deleted


async def test_soft_deleted_assets_can_be_restored_within_the_cutoff(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    session = await store.create_session(owner_id=ana.id, title="S")
    asset = await make_asset(store, session.id, ana.id)
    assert await store.get_deleted_asset(asset.id) is None
    deleted_at = backend.clock.now
    assert await store.mark_asset_deleted(asset.id)
    assert await store.get_asset(asset.id) is None
    hidden = await store.get_deleted_asset(asset.id)
    assert hidden is not None
    assert hidden.deleted_at == deleted_at
    assert await store.list_deleted_assets_before(deleted_at - 1) == []
    assert [a.id for a in await store.list_deleted_assets_before(deleted_at)] == [asset.id]
    assert await store.restore_asset(asset.id, deleted_after=deleted_at) is None
    back = await store.restore_asset(asset.id, deleted_after=deleted_at - 1)
    assert back is not None
    assert back.deleted_at is None
    assert await store.get_asset(asset.id) == back


async def test_only_processed_unpurged_sources_are_due_for_purging(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    session = await store.create_session(owner_id=ana.id, title="S")
    source = await make_asset(store, session.id, ana.id)
    unprocessed = await make_asset(store, session.id, ana.id)
    output = await make_asset(store, session.id, ana.id, kind=AssetKind.OUTPUT)
    deleted = await make_asset(store, session.id, ana.id)
    for asset in (source, output, deleted):
        assert await store.mark_asset_processed(asset.id, 1000.0)
    await store.mark_asset_deleted(deleted.id)

    assert await store.list_purgeable_sources(processed_before=999.0) == []
    due = await store.list_purgeable_sources(processed_before=1000.0)
    assert [a.id for a in due] == [source.id]
    assert unprocessed.id not in {a.id for a in due}

    assert await store.mark_asset_purged(source.id, at=2000.0, reason="source purged after processing")
    assert not await store.mark_asset_purged(source.id, at=3000.0, reason="again")
    purged = await store.get_asset(source.id)
    assert purged is not None
    assert (purged.purged_at, purged.purge_reason) == (2000.0, "source purged after processing")
    assert await store.list_purgeable_sources(processed_before=1e12) == []


async def test_consent_defaults_to_no_and_records_when_it_changed(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    consent = await store.get_consent(ana.id)
    assert consent is not None
    assert (consent.training_opt_in, consent.marketing_opt_in) == (False, False)
    assert (consent.training_opt_in_at, consent.marketing_opt_in_at) == (None, None)

    changed = await store.set_consent(ana.id, at=100.0, training=True)
    assert changed is not None
    assert changed.training_opt_in
    assert changed.training_opt_in_at == 100.0
    assert not changed.marketing_opt_in
    assert changed.marketing_opt_in_at is None
    # Setting the same value again does not move the timestamp; a real change does.
    again = await store.set_consent(ana.id, at=200.0, training=True, marketing=True)
    assert again is not None
    assert (again.training_opt_in_at, again.marketing_opt_in_at) == (100.0, 200.0)
    assert await store.get_consent(ana.id) == again
    assert await store.set_consent("nobody", at=1.0, training=True) is None
    assert await store.get_consent("nobody") is None


async def test_training_assets_are_only_those_of_opted_in_uploaders(backend: Backend, store: Store) -> None:
    yes = await make_user(store, "yes@example.com")
    no = await make_user(store, "no@example.com")
    session = await store.create_session(owner_id=yes.id, title="S")
    gone_session = await store.create_session(owner_id=yes.id, title="Gone")
    await store.set_consent(yes.id, at=1.0, training=True)
    mine = await make_asset(store, session.id, yes.id)
    theirs = await make_asset(store, session.id, no.id)
    # A stem `yes` made from `no`'s upload carries `yes` as its uploader: outputs never qualify.
    await make_asset(store, session.id, yes.id, kind=AssetKind.OUTPUT)
    purged = await make_asset(store, session.id, yes.id)
    await store.mark_asset_purged(purged.id, at=5.0, reason="r")
    deleted = await make_asset(store, session.id, yes.id)
    await store.mark_asset_deleted(deleted.id)
    in_deleted_session = await make_asset(store, gone_session.id, yes.id)
    await store.mark_session_deleted(gone_session.id)

    listed = await store.list_training_assets()
    assert [a.id for a in listed] == [mine.id]
    assert theirs.id not in {a.id for a in listed}
    assert in_deleted_session.id not in {a.id for a in listed}
    assert await store.list_training_assets(after_id=mine.id) == []
    # Withdrawing consent takes effect at once.
    await store.set_consent(yes.id, at=2.0, training=False)
    assert await store.list_training_assets() == []


async def test_audit_log_is_filtered_append_only_and_anonymisable(backend: Backend, store: Store) -> None:
    first = await store.append_audit(
        action="auth.login", at=10.0, actor_id="u1", target_type="user", target_id="u1", ip="203.0.113.9"
    )
    await store.append_audit(
        action="session.delete", at=20.0, actor_id="u1", session_id="s1", detail={"title": "Ñ"}
    )
    await store.append_audit(
        action="auth.login_failed", at=30.0, target_type="user", target_id="u2", ip="::1"
    )
    await store.append_audit(action="member.add", at=40.0, actor_id="u2", session_id="s2")
    assert first.id > 0
    assert first.ip == "203.0.113.9"
    assert first.detail == {}

    mine = await store.list_audit(user_id="u1")
    assert [e.action for e in mine] == ["session.delete", "auth.login"]  # newest first
    assert mine[0].detail == {"title": "Ñ"}
    # A failed login on u2's account is u2's to see (target), not anyone else's.
    assert [e.action for e in await store.list_audit(user_id="u2")] == ["member.add", "auth.login_failed"]
    assert [e.session_id for e in await store.list_audit(session_id="s1")] == ["s1"]
    assert await store.list_audit(session_id="nope") == []
    assert [e.id for e in await store.list_audit(user_id="u1", before_id=mine[0].id)] == [first.id]
    assert len(await store.list_audit(user_id="u1", limit=1)) == 1
    with pytest.raises(ValueError, match="exactly one"):
        await store.list_audit()
    with pytest.raises(ValueError, match="exactly one"):
        await store.list_audit(user_id="u1", session_id="s1")
    with pytest.raises(ValueError, match="JSON object"):
        await store.append_audit(action="x", at=1.0, detail=["not", "an", "object"])  # type: ignore[arg-type]

    assert await store.anonymise_audit_ips(before=10.0) == 1
    assert await store.anonymise_audit_ips(before=10.0) == 0
    entries = {e.action: e for e in await store.list_audit(user_id="u2")}
    assert entries["auth.login_failed"].ip == "::1"  # newer than the cutoff
    assert (await store.list_audit(user_id="u1"))[-1].ip is None

    # Append-only in the database itself, not just in the port.
    for sql in (
        "UPDATE audit_log SET action = 'forged'",
        "UPDATE audit_log SET ip = '198.51.100.1' WHERE ip IS NULL",
        "UPDATE audit_log SET actor_id = 'someone-else'",
    ):
        with pytest.raises(Exception, match="append-only"):
            await backend.execute(sql)
    assert [e.action for e in await store.list_audit(user_id="u1")] == ["session.delete", "auth.login"]
