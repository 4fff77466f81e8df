"""Reading one workspace file with its hash, refusing binary and oversized files by default.

The sha256 returned here is the `base` a client sends back with a patch, so it is computed
over the exact bytes on disk (CRLF and all).
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from typing import Any

from .errors import CodeyardError, bad_request, not_found
from .paths import WorkspacePaths

SNIFF_BYTES = 8192


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def looks_binary(data: bytes) -> bool:
    """Git's rule of thumb (a NUL in the first 8 KiB), plus text that is not UTF-8."""
    if b"\x00" in data[:SNIFF_BYTES]:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


class FileReader:
    """Reads files under the workspace root for `GET files`."""

    def __init__(self, paths: WorkspacePaths, *, max_size: int) -> None:
        self.paths = paths
        self.max_size = max_size

    def read(self, path: str, *, encoding: str | None = None) -> dict[str, Any]:
        if encoding not in (None, "", "utf-8", "base64"):
            raise bad_request("encoding must be 'utf-8' or 'base64'")
        target = self.paths.resolve(path)
        try:
            # O_NOFOLLOW: the last component was checked by resolve(); refuse a swap race.
            fd = os.open(target.abs, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise not_found(f"no such file: {target.rel}") from None
        except OSError:
            # A symlink inside the workspace is fine: open its resolved target instead.
            real = os.path.realpath(target.abs)
            if not os.path.exists(real):
                raise not_found(f"no such file: {target.rel}") from None
            fd = os.open(real, os.O_RDONLY)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            kind = "is a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise bad_request(f"{kind}: {target.rel}")
        with os.fdopen(fd, "rb") as fh:
            if st.st_size > self.max_size:
                raise CodeyardError(
                    413,
                    "file_too_large",
                    f"{target.rel} is {st.st_size} bytes; the limit is {self.max_size}",
                    size=st.st_size,
                    limit=self.max_size,
                )
            data = fh.read(self.max_size + 1)
        if len(data) > self.max_size:
            raise CodeyardError(413, "file_too_large", f"{target.rel} grew past the limit")
        if encoding == "base64":
            content, used = base64.b64encode(data).decode("ascii"), "base64"
        else:
            if looks_binary(data):
                raise CodeyardError(
                    415,
                    "binary_file",
                    f"{target.rel} is binary; ask for encoding=base64 to read it",
                )
            content, used = data.decode("utf-8"), "utf-8"
        return {
            "path": target.rel,
            "content": content,
            "encoding": used,
            "sha256": sha256_bytes(data),
            "size": len(data),
            "mtime": st.st_mtime,
        }
