"""The `Store` contract for migration 0006: a session's public preview share state.

Every backend must pass every test here unchanged.
"""

from __future__ import annotations

import pytest

from persistence.ports import NotFound, Role, Store

from .support import Backend
from .test_asset_contract import make_user


async def test_share_versions_grow_with_every_change(backend: Backend, store: Store) -> None:
    ana = await make_user(store)
    session = await store.create_session(owner_id=ana.id, title="S")
    assert await store.get_share(session.id) is None

    first = await store.set_share(session.id, enabled=True, expires_at=2_000_000_000.0, by=ana.id)
    assert (first.session_id, first.enabled, first.version) == (session.id, True, 1)
    assert (first.expires_at, first.updated_by, first.updated_at) == (
        2_000_000_000.0,
        ana.id,
        backend.clock.now,
    )
    assert await store.get_share(session.id) == first

    backend.clock.advance(5)
    reissued = await store.set_share(session.id, enabled=True, expires_at=2_000_000_100.0, by=ana.id)
    assert (reissued.version, reissued.expires_at, reissued.updated_at) == (
        2,
        2_000_000_100.0,
        backend.clock.now,
    )

    off = await store.set_share(session.id, enabled=False, expires_at=None, by=None)
    assert (off.enabled, off.version, off.expires_at, off.updated_by) == (False, 3, None, None)
    # Another store on the same database (another process) sees the same state.
    assert await backend.make().get_share(session.id) == off


async def test_shares_are_per_session(store: Store) -> None:
    ana = await make_user(store)
    one = await store.create_session(owner_id=ana.id, title="One")
    two = await store.create_session(owner_id=ana.id, title="Two")
    await store.set_share(one.id, enabled=True, expires_at=None, by=ana.id)
    await store.set_share(one.id, enabled=True, expires_at=None, by=ana.id)
    other = await store.set_share(two.id, enabled=True, expires_at=None, by=ana.id)
    assert other.version == 1
    share = await store.get_share(one.id)
    assert share is not None
    assert share.version == 2


async def test_share_of_an_unknown_session_or_user_is_not_found(store: Store) -> None:
    ana = await make_user(store)
    session = await store.create_session(owner_id=ana.id, title="S")
    with pytest.raises(NotFound):
        await store.set_share("no-such-session", enabled=True, expires_at=None, by=ana.id)
    with pytest.raises(NotFound):
        await store.set_share(session.id, enabled=True, expires_at=None, by="no-such-user")
    assert await store.get_share(session.id) is None


async def test_share_goes_with_its_session_and_forgets_an_erased_user(store: Store) -> None:
    ana = await make_user(store)
    bo = await make_user(store, "bo@example.com", "Bo")
    session = await store.create_session(owner_id=ana.id, title="S")
    await store.set_member(session.id, bo.id, Role.EDITOR)
    await store.set_share(session.id, enabled=True, expires_at=None, by=bo.id)
    assert await store.erase_user(bo.id, name="Bo", replacement="erased") is True
    share = await store.get_share(session.id)
    assert share is not None
    assert share.updated_by is None
    assert share.enabled
    assert await store.delete_session(session.id) is True
    assert await store.get_share(session.id) is None
