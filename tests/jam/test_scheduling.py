"""The tick thread's scheduling requests: switch interval and SCHED_FIFO."""

from __future__ import annotations

import logging
import os
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

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


def _held_value(path: str) -> int:
    with open(path, "rb") as f:
        return int(struct.unpack("@i", f.read(4))[0])


def test_a_cpu_latency_request_is_written_and_held_until_released(tmp_path: Path) -> None:
    device = tmp_path / "cpu_dma_latency"
    device.write_bytes(b"")
    hold = scheduling.hold_cpu_latency(25, str(device))
    assert hold is not None
    assert hold.held
    assert _held_value(str(device)) == 25  # the binary int32 the kernel reads
    hold.release()
    assert not hold.held
    hold.release()  # twice: harmless
    with pytest.raises(ValueError, match="wake-up latency"):
        scheduling.hold_cpu_latency(-1, str(device))


def test_a_refused_cpu_latency_request_is_logged_and_the_jam_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="realtime.jam.scheduling"):
        assert scheduling.hold_cpu_latency(0, str(tmp_path / "missing")) is None
    assert "cannot hold a CPU wake-up latency of 0 µs" in caplog.text


def test_the_kernel_keeps_the_request_while_it_is_held() -> None:
    """On Linux, as root, the device reads back the strictest request in force."""
    device = scheduling.CPU_LATENCY_DEVICE
    hold = scheduling.hold_cpu_latency(7)
    if not os.access(device, os.R_OK | os.W_OK):
        assert hold is None  # refused, and said so (previous test): nothing else to see here
        return
    assert hold is not None
    try:
        assert _held_value(device) <= 7
    finally:
        hold.release()


async def test_jams_hold_the_cpu_latency_while_any_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realtime.jam.sessions import JamSessions

    device = tmp_path / "cpu_dma_latency"
    device.write_bytes(b"")
    monkeypatch.setattr(scheduling, "CPU_LATENCY_DEVICE", str(device))
    off = JamSessions(EngineConfig(fade_in_s=0))
    off.acquire("s0")
    assert not off.cpu_latency_held  # -1: the OS's policy is left alone
    await off.close()

    jam = JamSessions(EngineConfig(fade_in_s=0, cpu_latency_us=50))
    a = jam.acquire("a")
    assert jam.cpu_latency_held
    assert _held_value(str(device)) == 50
    b = jam.acquire("b")
    jam.release_if_empty(a)
    await jam.settled()
    assert jam.cpu_latency_held  # b still runs
    jam.release_if_empty(b)
    await jam.settled()
    assert not jam.cpu_latency_held  # the last jam ended
    jam.acquire("c")
    assert jam.cpu_latency_held  # and the next one asks again
    await jam.close()
    assert not jam.cpu_latency_held
    with pytest.raises(ValueError, match="cpu_latency_us"):
        EngineConfig(cpu_latency_us=-2)
