from __future__ import annotations

import pytest

from realtime.session.awareness import OUTDATED_TIMEOUT_S, AwarenessRegistry
from realtime.session.protocol import AwarenessEntry, ProtocolError


def entry(cid: int, clock: int, state: str = '{"user":{"name":"a"}}') -> AwarenessEntry:
    return AwarenessEntry(cid, clock, state)


def test_newer_clock_wins_and_stale_is_ignored() -> None:
    reg = AwarenessRegistry()
    assert reg.apply(1, [entry(10, 1)], now=0) == [entry(10, 1)]
    assert reg.apply(1, [entry(10, 1)], now=1) == []
    assert reg.apply(1, [entry(10, 0)], now=1) == []
    assert reg.apply(1, [entry(10, 2, '{"x":1}')], now=2) == [entry(10, 2, '{"x":1}')]
    assert reg.snapshot() == [entry(10, 2, '{"x":1}')]


def test_null_at_same_clock_removes() -> None:
    reg = AwarenessRegistry()
    reg.apply(1, [entry(10, 4)], now=0)
    assert reg.apply(1, [AwarenessEntry(10, 4, "null")], now=0) == [AwarenessEntry(10, 4, "null")]
    assert reg.snapshot() == []
    assert len(reg) == 0


def test_drop_connection_removes_only_its_clients_with_bumped_clock() -> None:
    reg = AwarenessRegistry()
    reg.apply(1, [entry(10, 4)], now=0)
    reg.apply(2, [entry(20, 1)], now=0)
    assert reg.drop_connection(1) == [AwarenessEntry(10, 5, "null")]
    assert [e.client_id for e in reg.snapshot()] == [20]
    assert reg.drop_connection(1) == []


def test_echoes_of_another_connections_client_are_ignored() -> None:
    # y-websocket clients forward every awareness change they see, other peers' included.
    reg = AwarenessRegistry()
    reg.apply(1, [entry(10, 1)], now=0)
    assert reg.apply(2, [entry(20, 1), entry(10, 99, "null")], now=0) == [entry(20, 1)]
    assert sorted(e.client_id for e in reg.snapshot()) == [10, 20]
    assert reg.ids_of(2) == {20}


def test_echoed_removal_does_not_steal_a_returning_client() -> None:
    reg = AwarenessRegistry()
    reg.apply(1, [entry(10, 1)], now=0)
    reg.drop_connection(1)  # the server broadcasts (10, clock 2, null)
    assert reg.apply(2, [AwarenessEntry(10, 3, "null")], now=0) == []  # peer echoes the removal
    assert reg.apply(3, [entry(10, 4)], now=1) == [entry(10, 4)]  # the client comes back
    assert reg.ids_of(3) == {10}


def test_ids_per_connection_are_capped() -> None:
    reg = AwarenessRegistry(max_ids_per_connection=2)
    reg.apply(1, [entry(1, 1), entry(2, 1)], now=0)
    with pytest.raises(ProtocolError, match="at most 2"):
        reg.apply(1, [entry(3, 1)], now=0)


def test_silent_clients_expire() -> None:
    reg = AwarenessRegistry()
    reg.apply(1, [entry(10, 1)], now=0)
    reg.apply(2, [entry(20, 1)], now=20)
    assert reg.expire(OUTDATED_TIMEOUT_S - 1) == []
    assert reg.expire(OUTDATED_TIMEOUT_S) == [AwarenessEntry(10, 2, "null")]
    assert [e.client_id for e in reg.snapshot()] == [20]


def test_server_entry_is_the_servers_alone() -> None:
    from realtime.session.awareness import SERVER_CLIENT_ID

    reg = AwarenessRegistry()
    first = reg.set_server_state('{"meters":{}}', now=0)
    assert first.client_id == SERVER_CLIENT_ID
    # A client echoing (or forging) the server's entry changes nothing.
    assert reg.apply(1, [AwarenessEntry(SERVER_CLIENT_ID, 99, "null")], now=0) == []
    assert reg.expire(OUTDATED_TIMEOUT_S * 10) == []
    assert reg.set_server_state("null", now=1).clock == first.clock + 1
    assert reg.snapshot() == []
