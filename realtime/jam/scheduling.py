"""How the tick thread asks the OS and the interpreter to run it on time.

Two things make a 2.5 ms tick late that its own work does not explain:

- **The interpreter's switch interval.** A thread waking from ``sleep`` needs the GIL; if the
  event loop thread holds it, CPython waits ``sys.getswitchinterval()`` (5 ms by default, two
  whole blocks) before asking it to let go. The jam lowers it to a fraction of a block, process-
  wide; only threads that contend for the GIL switch more often.
- **The OS scheduler.** A load generator, an encoder or an inference worker at normal priority
  can hold the tick's core when its deadline comes. A real-time policy (``SCHED_FIFO``) runs the
  tick before every normal thread; Linux's RT throttling (``sched_rt_runtime_us``, 95 % by
  default) keeps a runaway tick from starving the machine. It needs ``CAP_SYS_NICE`` or an
  ``RLIMIT_RTPRIO`` (containers and systemd units grant it); without it the tick runs as before
  and says so once.
- **The event loop's thread.** Frames reach the jitter buffers and mixes leave for the sockets
  through the asyncio loop: when it waits behind other processes, arrivals look late (the
  buffers deepen) and mixes leave late. A negative nice value for that thread (not the whole
  process, and not real-time: the loop does everything else too) gives it the larger share
  under CFS. Threads it creates later inherit the value.
- **Idle CPUs waking up.** Between ticks the tick's CPU idles; in a deep idle state (or, in a
  virtual machine, a halted vCPU) the next wake-up and the cold caches after it cost more than
  a small jam's tick itself (measured in docs/benchmarks.md). A PM QoS request
  (``/dev/cpu_dma_latency``, what tuned's latency-performance profile sets) keeps idle CPUs in
  states that wake within the given microseconds while a jam runs: less CPU per tick, for more
  power (and, in a VM, idle vCPUs that poll). Off unless the operator asks for it.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import threading

__all__ = [
    "CPU_LATENCY_DEVICE",
    "CpuLatencyHold",
    "hold_cpu_latency",
    "lower_switch_interval",
    "raise_thread_priority",
    "request_realtime",
]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_refusal_logged = False


def lower_switch_interval(seconds: float) -> float:
    """Make the GIL switch interval at most ``seconds`` (never raise it); returns the one in force."""
    with _lock:
        current = sys.getswitchinterval()
        if 0 < seconds < current:
            sys.setswitchinterval(seconds)
            return seconds
        return current


def request_realtime(priority: int) -> str:
    """Put the calling thread in ``SCHED_FIFO`` at ``priority`` (1-99; 0: leave it as it is).

    Returns the policy it runs under: ``"fifo:<priority>"`` or ``"normal"``. A refusal (no
    privilege, not Linux) is logged once per process, not raised: the jam still works.
    """
    global _refusal_logged
    if priority <= 0:
        return "normal"
    if not 1 <= priority <= 99:
        raise ValueError(f"real-time priority must be within 1…99, got {priority}")
    setter = getattr(os, "sched_setscheduler", None)
    policy = getattr(os, "SCHED_FIFO", None)
    if setter is None or policy is None:
        reason = "this OS has no SCHED_FIFO"
    else:
        try:
            # pid 0 is the calling thread on Linux: only the tick thread changes class.
            setter(0, policy, os.sched_param(priority))
            return f"fifo:{priority}"
        except OSError as exc:
            reason = f"{exc.strerror or exc} (needs CAP_SYS_NICE or an RLIMIT_RTPRIO)"
    with _lock:
        if not _refusal_logged:
            _refusal_logged = True
            log.warning("jam tick thread runs at normal priority: %s", reason)
    return "normal"


def raise_thread_priority(nice: int) -> int | None:
    """Set the calling thread's nice value to ``nice`` (-20…19; 0 leaves it) if that raises its
    priority; returns the value in force, or None if the OS refused (logged once)."""
    global _refusal_logged
    if not -20 <= nice <= 19:
        raise ValueError(f"nice must be within -20…19, got {nice}")
    getter = getattr(os, "getpriority", None)
    setter = getattr(os, "setpriority", None)
    if nice == 0 or getter is None or setter is None:
        return None
    tid = threading.get_native_id()  # PRIO_PROCESS with a thread id: that thread only (Linux)
    current = int(getter(os.PRIO_PROCESS, tid))
    if current <= nice:
        return current
    try:
        setter(os.PRIO_PROCESS, tid, nice)
        return nice
    except OSError as exc:
        with _lock:
            if not _refusal_logged:
                _refusal_logged = True
                log.warning(
                    "jam event loop keeps nice %d: %s (needs CAP_SYS_NICE)", current, exc.strerror or exc
                )
        return None


CPU_LATENCY_DEVICE = "/dev/cpu_dma_latency"


class CpuLatencyHold:
    """A PM QoS request held open: the kernel keeps it while the file descriptor is open."""

    def __init__(self, fd: int, microseconds: int) -> None:
        self._fd: int | None = fd
        self.microseconds = microseconds

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            log.info("released the CPU wake-up latency request")


def hold_cpu_latency(microseconds: int, device: str | None = None) -> CpuLatencyHold | None:
    """Ask that idle CPUs wake within ``microseconds`` (0: do not idle deeply at all) until the
    returned hold is released. None, logged, when the OS refuses (the device needs root or a
    udev rule; it exists on Linux only): the jam runs as before."""
    if not 0 <= microseconds <= 2_000_000_000:
        raise ValueError(f"CPU wake-up latency must be within 0…2000000000 µs, got {microseconds}")
    path = CPU_LATENCY_DEVICE if device is None else device
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        log.warning("cannot hold a CPU wake-up latency of %d µs: %s", microseconds, exc)
        return None
    try:
        os.write(fd, struct.pack("@i", microseconds))  # the binary form the kernel reads
    except OSError as exc:
        os.close(fd)
        log.warning("cannot hold a CPU wake-up latency of %d µs: %s", microseconds, exc)
        return None
    log.info("holding the CPUs' wake-up latency at %d µs while jams run", microseconds)
    return CpuLatencyHold(fd, microseconds)
