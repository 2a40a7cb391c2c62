"""The tick thread's scheduling requests: switch interval and SCHED_FIFO."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator

import pytest

from realtime.jam import scheduling
from realtime.jam.engine import EngineConfig
from realtime.jam.scheduling import lower_switch_interval, raise_thread_priority, request_realtime


@pytest.fixture
def restore_switch_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_the_switch_interval_is_only_ever_lowered(restore_switch_interval: None) -> None:
    sys.setswitchinterval(0.005)
    assert lower_switch_interval(0.0005) == pytest.approx(0.0005)
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert lower_switch_interval(0.002) == pytest.approx(0.0005)  # another engine asks for more
    assert sys.getswitchinterval() == pytest.approx(0.0005)


def _in_thread(priority: int) -> tuple[str, int]:
    out: list[tuple[str, int]] = []

    def run() -> None:
        got = request_realtime(priority)
        out.append((got, os.sched_getscheduler(0)))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out[0]


@pytest.mark.skipif(not hasattr(os, "SCHED_FIFO"), reason="SCHED_FIFO is Linux-only")
def test_only_the_calling_thread_moves_to_fifo_or_says_why_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduling._refusal_logged = False
    caplog.set_level(logging.WARNING, "realtime.jam.scheduling")
    got, policy = _in_thread(7)
    if got == "fifo:7":
        assert policy == os.SCHED_FIFO
    else:  # no privilege here: it says so once and the thread keeps its normal policy
        assert got == "normal"
        assert policy == os.SCHED_OTHER
        assert "normal priority" in caplog.text
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the test's own thread is untouched
    assert _in_thread(0) == ("normal", os.SCHED_OTHER)


def test_out_of_range_priorities_are_refused() -> None:
    with pytest.raises(ValueError, match="1…99"):
        request_realtime(100)
    with pytest.raises(ValueError, match="realtime_priority"):
        EngineConfig(realtime_priority=-1)
    with pytest.raises(ValueError, match="switch_interval_s"):
        EngineConfig(switch_interval_s=0.0)


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="needs os.setpriority")
def test_the_loop_thread_only_ever_gains_priority(caplog: pytest.LogCaptureFixture) -> None:
    scheduling._refusal_logged = False
    caplog.set_level(logging.WARNING, "realtime.jam.scheduling")
    out: list[tuple[int, int | None, int, int | None]] = []

    def run() -> None:
        tid = threading.get_native_id()
        # Threads inherit their creator's nice value: an earlier jam in this process may have
        # raised it already, so start from a known value (raising a nice value is always allowed).
        os.setpriority(os.PRIO_PROCESS, tid, 0)
        before = os.getpriority(os.PRIO_PROCESS, tid)
        got = raise_thread_priority(-5)
        seen = os.getpriority(os.PRIO_PROCESS, tid)
        out.append((before, got, seen, raise_thread_priority(5)))  # a lower priority is never taken

    t = threading.Thread(target=run)
    t.start()
    t.join()
    before, got, seen, again = out[0]
    if got is None:  # no privilege here: refused, logged, unchanged
        assert "needs CAP_SYS_NICE" in caplog.text
        assert seen == before
    else:
        assert got == seen == -5
        assert again == -5
    assert raise_thread_priority(0) is None
    with pytest.raises(ValueError, match="-20"):
        raise_thread_priority(-21)
