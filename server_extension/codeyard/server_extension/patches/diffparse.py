"""Reads the headers of a unified diff: which files, which operation, how many hunks.

`git apply` does the actual patching; this parser exists so that every path is checked
before git sees it, so that validate can report per-file results, and so that traditional
`diff -u` sections reach git in one canonical form (git headers, `-p1`). Errors name a
line number only, never the text of the diff.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from ..errors import CodeyardError, bad_request, forbidden_path

Op = Literal["modify", "create", "delete", "rename"]

_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_EPOCH = re.compile(rb"\t1970-01-01 00:00:00(?:\.0+)? \+0000")
_GIT_EXT = (
    b"old mode ",
    b"new mode ",
    b"deleted file mode ",
    b"new file mode ",
    b"similarity index ",
    b"dissimilarity index ",
    b"rename from ",
    b"rename to ",
    b"copy from ",
    b"copy to ",
    b"index ",
)
_C_ESCAPES = {
    ord("a"): 7,
    ord("b"): 8,
    ord("t"): 9,
    ord("n"): 10,
    ord("v"): 11,
    ord("f"): 12,
    ord("r"): 13,
    ord('"'): 34,
    ord("\\"): 92,
}


@dataclass(frozen=True)
class Hunk:
    """One `@@` block; `old_start` is what git names in `patch failed: path:LINE`."""

    old_start: int
    old_len: int
    new_start: int
    new_len: int


@dataclass
class FilePatch:
    """One file's section. `old_path`/`new_path` are None for /dev/null."""

    old_path: str | None
    new_path: str | None
    op: Op
    hunks: list[Hunk] = field(default_factory=list)
    binary: bool = False
    new_mode: str | None = None
    text: bytes = b""  # the section as handed to `git apply -p1`

    @property
    def path(self) -> str:
        """The path the user sees: the new name, or the old one for a deletion."""
        name = self.new_path if self.new_path is not None else self.old_path
        assert name is not None
        return name


def _malformed(lineno: int, why: str) -> CodeyardError:
    return bad_request(f"malformed diff at line {lineno}: {why}", line=lineno)


def _unquote(raw: bytes, lineno: int) -> tuple[bytes, bytes]:
    """Split a C-quoted name (as git writes names with odd bytes) off the front of `raw`."""
    out = bytearray()
    i = 1
    while i < len(raw):
        c = raw[i]
        if c == ord('"'):
            return bytes(out), raw[i + 1 :]
        if c == ord("\\"):
            i += 1
            if i >= len(raw):
                break
            e = raw[i]
            if e in _C_ESCAPES:
                out.append(_C_ESCAPES[e])
            elif 0x30 <= e <= 0x37 and i + 2 < len(raw):
                out.append(int(raw[i : i + 3], 8) & 0xFF)
                i += 2
            else:
                raise _malformed(lineno, "bad escape in quoted path")
        else:
            out.append(c)
        i += 1
    raise _malformed(lineno, "unterminated quoted path")


def _decode(name: bytes, lineno: int) -> str:
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed(lineno, "path is not valid UTF-8") from None


def _strip_prefix(name: bytes, lineno: int) -> str:
    """Drop the first component (`a/`, `b/`), as `git apply -p1` does.

    A name that is absolute before stripping (`+++ /etc/x`) is refused: stripping would turn
    it into the workspace path `etc/x`, a file the author never named.
    """
    if name.startswith(b"/"):
        raise forbidden_path(
            f"line {lineno}: absolute path in the patch; paths are relative to the workspace"
        )
    if b"/" not in name:
        raise _malformed(lineno, "path lacks the a/ or b/ prefix")
    return _decode(name.split(b"/", 1)[1], lineno)


def _header_name(rest: bytes, lineno: int) -> bytes | None:
    """The name in a `---`/`+++` line, without a trailing timestamp; None for /dev/null."""
    if rest.startswith(b'"'):
        name, _ = _unquote(rest, lineno)
    else:
        name = rest.split(b"\t", 1)[0].rstrip(b" ")
    if not name:
        raise _malformed(lineno, "empty file name")
    return None if name == b"/dev/null" else name


def _git_names(rest: bytes, lineno: int) -> tuple[bytes, bytes] | None:
    """Both names of `diff --git A B`; None if ambiguous (then ---/+++ or rename lines decide)."""
    if rest.startswith(b'"'):
        first, tail = _unquote(rest, lineno)
        tail = tail.lstrip(b" ")
        second = _unquote(tail, lineno)[0] if tail.startswith(b'"') else tail
        return first, second
    if rest.endswith(b'"'):
        idx = rest.rfind(b' "')
        if idx < 0:
            return None
        return rest[:idx], _unquote(rest[idx + 1 :], lineno)[0]
    # Unquoted: the two names are the same apart from their prefix, so split in the middle.
    if len(rest) % 2 == 1:
        half = len(rest) // 2
        a, b = rest[:half], rest[half + 1 :]
        if rest[half : half + 1] == b" " and a.split(b"/", 1)[-1] == b.split(b"/", 1)[-1]:
            return a, b
    return None


def _quote(path: str) -> bytes:
    raw = path.encode("utf-8")
    if re.search(rb'[\x00-\x20"\\\x7f-\xff]', raw) is None:
        return raw
    out = bytearray(b'"')
    for c in raw:
        if c in (34, 92):
            out += b"\\" + bytes([c])
        elif c < 0x20 or c >= 0x7F:
            out += b"\\%03o" % c
        else:
            out.append(c)
    return bytes(out) + b'"'


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.lines = data.splitlines(keepends=True)
        self.i = 0

    def peek(self) -> bytes | None:
        return self.lines[self.i] if self.i < len(self.lines) else None

    @property
    def lineno(self) -> int:
        return self.i + 1


def _bare(line: bytes) -> bytes:
    return line.rstrip(b"\r\n")


_CONTEXT = frozenset(b" \n\r")  # first bytes of a context line (an empty one too)
_MINUS, _PLUS, _BACKSLASH = ord("-"), ord("+"), ord("\\")


def _read_hunks(r: _Reader, hunks: list[Hunk]) -> None:
    """Consume consecutive `@@` blocks, checking each body against its line counts.

    The caller takes the consumed lines as one slice of `r.lines`; this loop only counts,
    comparing first bytes as ints (it runs once per line of the diff).
    """
    lines, n = r.lines, len(r.lines)
    i = r.i
    while i < n and lines[i].startswith(b"@@"):
        m = _HUNK.match(lines[i])
        if m is None:
            r.i = i
            raise _malformed(r.lineno, "bad hunk header")
        old_len = int(m[2]) if m[2] is not None else 1
        new_len = int(m[4]) if m[4] is not None else 1
        hunks.append(Hunk(int(m[1]), old_len, int(m[3]), new_len))
        i += 1
        old_left, new_left = old_len, new_len
        while old_left > 0 or new_left > 0:
            if i >= n:
                r.i = i
                raise _malformed(r.lineno, "hunk ends early")
            tag = lines[i][0]
            if tag in _CONTEXT:
                old_left -= 1
                new_left -= 1
            elif tag == _MINUS:
                old_left -= 1
            elif tag == _PLUS:
                new_left -= 1
            elif tag != _BACKSLASH:
                r.i = i
                raise _malformed(r.lineno, "unexpected line inside a hunk")
            if old_left < 0 or new_left < 0:
                r.i = i
                raise _malformed(r.lineno, "hunk longer than its header says")
            i += 1
        while i < n and lines[i][0] == _BACKSLASH:
            i += 1
    r.i = i
    # A stray +/- line right after a hunk would be dropped silently by git; refuse it.
    after = r.peek()
    if after is not None and after[:1] in (b"+", b"-") and not after.startswith(b"--- "):
        raise _malformed(r.lineno, "hunk longer than its header says")


def _parse_git(r: _Reader) -> FilePatch:
    start = r.lineno
    first = r.i
    header = r.lines[r.i]
    r.i += 1
    names = _git_names(_bare(header)[len(b"diff --git ") :], start)
    old: str | None = None
    new: str | None = None
    is_new = is_delete = is_rename = False
    new_mode: str | None = None
    while (line := r.peek()) is not None and _bare(line).startswith(_GIT_EXT):
        bare = _bare(line)
        if bare.startswith((b"copy from ", b"copy to ")):
            raise bad_request(f"diff at line {r.lineno}: copies are not supported", line=r.lineno)
        if bare.startswith(b"new file mode "):
            is_new, new_mode = True, _decode(bare[14:], r.lineno)
        elif bare.startswith(b"deleted file mode "):
            is_delete = True
        elif bare.startswith(b"new mode "):
            new_mode = _decode(bare[9:], r.lineno)
        elif bare.startswith(b"rename from "):
            is_rename, old = True, _decode(_header_name(bare[12:], r.lineno) or b"", r.lineno)
        elif bare.startswith(b"rename to "):
            is_rename, new = True, _decode(_header_name(bare[10:], r.lineno) or b"", r.lineno)
        r.i += 1
    binary = False
    hunks: list[Hunk] = []
    line = r.peek()
    if line is not None and line.startswith(b"--- "):
        old_name = _header_name(_bare(line)[4:], r.lineno)
        r.i += 1
        plus = r.peek()
        if plus is None or not plus.startswith(b"+++ "):
            raise _malformed(r.lineno, "expected a +++ line")
        new_name = _header_name(_bare(plus)[4:], r.lineno)
        r.i += 1
        if not is_rename:
            old = None if old_name is None else _strip_prefix(old_name, start)
            new = None if new_name is None else _strip_prefix(new_name, start)
        _read_hunks(r, hunks)
        if not hunks:
            raise _malformed(r.lineno, "file header without hunks")
    elif line is not None and line.startswith(b"GIT binary patch"):
        binary = True
        while (line := r.peek()) is not None and not line.startswith(b"diff --git "):
            r.i += 1
    elif line is not None and line.startswith(b"Binary files "):
        raise bad_request(
            f"diff at line {r.lineno}: binary change without data (use git diff --binary)",
            line=r.lineno,
        )
    if not is_rename and (old is None and new is None):
        if names is None:
            raise _malformed(start, "cannot tell the file name from the diff --git line")
        old, new = _strip_prefix(names[0], start), _strip_prefix(names[1], start)
    if is_new:
        old = None
    if is_delete:
        new = None
    if is_rename and (old is None or new is None):
        raise _malformed(start, "rename without both names")
    op: Op
    if old is None and new is None:
        raise _malformed(start, "no file name")
    if old is None:
        op = "create"
    elif new is None:
        op = "delete"
    elif old != new:
        op = "rename"
    else:
        op = "modify"
    # Every line from the header to here was consumed as it stands: git gets them verbatim.
    return FilePatch(old, new, op, hunks, binary, new_mode, b"".join(r.lines[first : r.i]))


def _parse_traditional(r: _Reader) -> FilePatch:
    """A `diff -u` section: rewritten with git headers so git never guesses `-p`."""
    start = r.lineno
    minus = _bare(r.lines[r.i])
    plus_line = r.lines[r.i + 1] if r.i + 1 < len(r.lines) else b""
    if not plus_line.startswith(b"+++ "):
        raise _malformed(start + 1, "expected a +++ line")
    plus = _bare(plus_line)
    old_raw = _header_name(minus[4:], start)
    new_raw = _header_name(plus[4:], start + 1)
    r.i += 2
    hunks: list[Hunk] = []
    body_start = r.i
    _read_hunks(r, hunks)
    body = r.lines[body_start : r.i]
    if not hunks:
        raise _malformed(r.lineno, "file header without hunks")

    # `diff -ru a b` writes `a/x`; `diff -u x y` writes bare names, used as they are.
    nested = all(b"/" in n for n in (old_raw, new_raw) if n is not None)

    def name(raw: bytes) -> str:
        return _strip_prefix(raw, start) if nested else _decode(raw, start)

    only = hunks[0] if len(hunks) == 1 else None
    created = old_raw is None or (
        only is not None
        and only.old_len == 0
        and only.old_start == 0
        and bool(_EPOCH.search(minus))
    )
    deleted = new_raw is None or (
        only is not None and only.new_len == 0 and only.new_start == 0 and bool(_EPOCH.search(plus))
    )
    if created and deleted:
        raise _malformed(start, "file both created and deleted")
    target_raw = new_raw if new_raw is not None else old_raw
    assert target_raw is not None
    target = name(target_raw)
    q = _quote(target)
    head = [b"diff --git a/" + q + b" b/" + q + b"\n"]
    if q.startswith(b'"'):
        head = [b'diff --git "a/' + q[1:] + b' "b/' + q[1:] + b"\n"]
    qa = b'"a/' + q[1:] if q.startswith(b'"') else b"a/" + q
    qb = b'"b/' + q[1:] if q.startswith(b'"') else b"b/" + q
    if created:
        head += [b"new file mode 100644\n", b"--- /dev/null\n", b"+++ " + qb + b"\n"]
        return FilePatch(None, target, "create", hunks, text=b"".join(head + body))
    if deleted:
        head += [b"deleted file mode 100644\n", b"--- " + qa + b"\n", b"+++ /dev/null\n"]
        return FilePatch(target, None, "delete", hunks, text=b"".join(head + body))
    head += [b"--- " + qa + b"\n", b"+++ " + qb + b"\n"]
    return FilePatch(target, target, "modify", hunks, text=b"".join(head + body))


def parse_diff(data: bytes) -> list[FilePatch]:
    """Split a unified diff into file sections; 400 on anything malformed or empty.

    Text before the first section (a commit message, `diff -ru` command lines, `Only in`
    notes) is skipped, as `git apply` and `patch` do. Inside a section every line must fit.
    """
    r = _Reader(data)
    files: list[FilePatch] = []
    while (line := r.peek()) is not None:
        if line.startswith(b"diff --git "):
            files.append(_parse_git(r))
        elif (
            line.startswith(b"--- ")
            and (r.i + 1 < len(r.lines))
            and r.lines[r.i + 1].startswith(b"+++ ")
        ):
            files.append(_parse_traditional(r))
        elif line.startswith(b"@@"):
            raise _malformed(r.lineno, "hunk outside a file section")
        else:
            r.i += 1
    if not files:
        raise bad_request("diff contains no file changes")
    # Each path at most once as a source and once as a result: a path may leave in one
    # section and return in another (git writes a type change as delete plus create).
    for side in ("old_path", "new_path"):
        names = [getattr(fp, side) for fp in files if getattr(fp, side) is not None]
        if len(names) != len(set(names)):
            dup = next(n for n in names if names.count(n) > 1)
            raise bad_request(f"diff touches {dup} more than once")
    return files
