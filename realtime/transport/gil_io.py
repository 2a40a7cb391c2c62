"""Non-blocking socket calls that keep the GIL, for the jam's tick thread (decision 0019).

Python's socket and epoll methods release the GIL around every system call. On the tick thread
that is a hazard: if the event loop's thread is waiting for the GIL, it takes it at once and
keeps it until it blocks or the switch interval runs out (0.5 ms while a jam runs), and the
tick waits that long for each call. The tick makes a few dozen such calls per block. These go
to libc through :class:`ctypes.PyDLL`, which keeps the GIL: a non-blocking call returns within
microseconds, so the GIL is never handed over in the middle of a tick. (The jam's libopus calls
work the same way; see :mod:`realtime.jam.opus`.)

Linux only: :func:`available` says whether these calls can be used here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import platform
import struct
import sys
from typing import Final

__all__ = ["Epoll", "Receiver", "available", "send"]

MSG_DONTWAIT: Final = 0x40
MSG_NOSIGNAL: Final = 0x4000
_EPOLLIN: Final = 0x001
_EPOLL_CTL_ADD: Final = 1
_EPOLL_CTL_DEL: Final = 2
_SOL_SOCKET: Final = 1
_SO_TIMESTAMPNS: Final = 35
_TIMESPEC: Final = struct.Struct("@qq")


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


if platform.machine() in ("x86_64", "AMD64"):

    class _EpollEvent(ctypes.Structure):
        _pack_ = 1  # struct epoll_event is packed on x86-64 (12 bytes)
        _fields_ = [("events", ctypes.c_uint32), ("data", ctypes.c_uint64)]

else:

    class _EpollEvent(ctypes.Structure):  # type: ignore[no-redef]
        _fields_ = [("events", ctypes.c_uint32), ("data", ctypes.c_uint64)]


def _load() -> ctypes.PyDLL | None:
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        libc = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    libc.send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.send.restype = ctypes.c_ssize_t
    libc.recvmsg.argtypes = [ctypes.c_int, ctypes.POINTER(_MsgHdr), ctypes.c_int]
    libc.recvmsg.restype = ctypes.c_ssize_t
    libc.epoll_create1.argtypes = [ctypes.c_int]
    libc.epoll_create1.restype = ctypes.c_int
    libc.epoll_ctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(_EpollEvent)]
    libc.epoll_ctl.restype = ctypes.c_int
    libc.epoll_wait.argtypes = [ctypes.c_int, ctypes.POINTER(_EpollEvent), ctypes.c_int, ctypes.c_int]
    libc.epoll_wait.restype = ctypes.c_int
    libc.close.argtypes = [ctypes.c_int]
    libc.close.restype = ctypes.c_int
    return libc


_libc = _load()


def available() -> bool:
    return _libc is not None


def send(fd: int, data: bytes | bytearray) -> int:
    """Send what the socket takes now: the byte count (0 when it is full). Raises OSError for a
    broken connection."""
    assert _libc is not None
    n = len(data)
    buf = (ctypes.c_char * n).from_buffer(data) if isinstance(data, bytearray) else data
    sent = int(_libc.send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL))
    if sent >= 0:
        return sent
    err = ctypes.get_errno()
    if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
        return 0
    raise OSError(err, f"send: {errno.errorcode.get(err, err)}")


class Receiver:
    """``recvmsg`` into one preallocated buffer, with the kernel's receive timestamp."""

    def __init__(self, size: int) -> None:
        assert _libc is not None
        self.size = size
        self._buf = ctypes.create_string_buffer(size)
        self._control = ctypes.create_string_buffer(64)
        self._iov = _IoVec(ctypes.cast(self._buf, ctypes.c_void_p), size)
        self._hdr = _MsgHdr()
        self._hdr.msg_iov = ctypes.pointer(self._iov)
        self._hdr.msg_iovlen = 1
        self._hdr_ref = ctypes.byref(self._hdr)
        self._control_addr = ctypes.addressof(self._control)

    def recv(self, fd: int) -> tuple[bytes | None, float | None]:
        """``(data, kernel time)``: ``b""`` at end of file, None when nothing is there; the time
        (``CLOCK_REALTIME`` seconds) when the socket has ``SO_TIMESTAMPNS`` on. Raises OSError."""
        assert _libc is not None
        hdr = self._hdr
        hdr.msg_control = self._control_addr
        hdr.msg_controllen = 64
        n = int(_libc.recvmsg(fd, self._hdr_ref, MSG_DONTWAIT))
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return None, None
            raise OSError(err, f"recvmsg: {errno.errorcode.get(err, err)}")
        data = self._buf.raw[:n] if n else b""
        stamp: float | None = None
        size = int(hdr.msg_controllen)
        if size >= 16 + _TIMESPEC.size:
            # A walk over the cmsghdrs ({size_t len; int level; int type;} then the data, each
            # 8-aligned): some kernels (sandboxes among them) give no stamp or put another
            # message first, and the caller then takes its own clock.
            raw = self._control.raw
            at = 0
            while at + 16 <= size:
                length, level, kind = struct.unpack_from("@Nii", raw, at)
                if length < 16:
                    break
                if (
                    level == _SOL_SOCKET
                    and kind == _SO_TIMESTAMPNS
                    and length >= 16 + _TIMESPEC.size
                    and at + 16 + _TIMESPEC.size <= size
                ):
                    sec, nsec = _TIMESPEC.unpack_from(raw, at + 16)
                    stamp = sec + nsec * 1e-9
                    break
                at += (length + 7) & ~7
        return data, stamp


class Epoll:
    """``epoll`` for readability, polled without a timeout."""

    def __init__(self, max_events: int = 256) -> None:
        assert _libc is not None
        fd = int(_libc.epoll_create1(0o2000000))  # EPOLL_CLOEXEC
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, "epoll_create1")
        self.fd = fd
        self._events = (_EpollEvent * max_events)()
        self._max = max_events

    def register(self, fd: int) -> None:
        assert _libc is not None
        ev = _EpollEvent(_EPOLLIN, fd)
        if _libc.epoll_ctl(self.fd, _EPOLL_CTL_ADD, fd, ctypes.byref(ev)) < 0:
            err = ctypes.get_errno()
            raise OSError(err, "epoll_ctl add")

    def unregister(self, fd: int) -> None:
        assert _libc is not None
        ev = _EpollEvent(0, fd)
        _libc.epoll_ctl(self.fd, _EPOLL_CTL_DEL, fd, ctypes.byref(ev))  # gone already: fine

    def ready(self) -> list[int]:
        """The registered descriptors with data (or end of file, or an error) now."""
        assert _libc is not None
        n = int(_libc.epoll_wait(self.fd, self._events, self._max, 0))
        if n <= 0:
            return []
        events = self._events
        return [int(events[i].data) for i in range(n)]

    def close(self) -> None:
        if self.fd >= 0 and _libc is not None:
            _libc.close(self.fd)
            self.fd = -1
