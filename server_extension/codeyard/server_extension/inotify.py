"""Linux inotify through ctypes: an fd, watches on folders, and the events read from it.

ctypes over libc keeps the workspace image free of another compiled dependency; the three
calls used (`inotify_init1`, `inotify_add_watch`, `inotify_rm_watch`) are stable Linux ABI.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000

#: What a folder watch asks for: every way a name in it can get new bytes or disappear.
FOLDER_EVENTS = (
    IN_MODIFY
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
    | IN_EXCL_UNLINK
)

_HEADER = struct.Struct("iIII")


@dataclass(frozen=True)
class Event:
    """One inotify event: the watch it came from, its mask, rename cookie and name."""

    wd: int
    mask: int
    cookie: int
    name: str


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class Inotify:
    """One non-blocking inotify instance. `fd` can be polled; `read()` drains it."""

    def __init__(self) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd

    def add_watch(self, path: str, mask: int = FOLDER_EVENTS) -> int:
        """Watch `path`; its watch descriptor. OSError ENOSPC when the kernel's per-user
        limit (`fs.inotify.max_user_watches`) is reached."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), ctypes.c_uint32(mask))
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return int(wd)

    def rm_watch(self, wd: int) -> None:
        """Stop a watch; a watch the kernel already dropped (folder gone) is not an error."""
        self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[Event]:
        """Every event queued now (an empty list if none)."""
        try:
            data = os.read(self.fd, 256 * 1024)
        except BlockingIOError:
            return []
        events = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            raw = data[offset : offset + length].split(b"\0", 1)[0]
            offset += length
            events.append(Event(wd, mask, cookie, os.fsdecode(raw)))
        return events

    def close(self) -> None:
        os.close(self.fd)
