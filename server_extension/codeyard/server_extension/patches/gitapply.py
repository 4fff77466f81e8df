"""Runs `git apply` in a staging folder and reads its verdict per file and per hunk.

git is the engine because it is the field's standard: all or nothing, exact context
matching, renames, modes, binary patches, and it refuses to write beyond symlinks. It runs
with no repository around it (`GIT_CEILING_DIRECTORIES`), no user or system config, and
the C locale so its messages can be parsed. Its own messages are never passed on: some
quote diff text, so results carry our wording with paths and numbers only.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .diffparse import FilePatch

_CHECKING = re.compile(r"^Checking patch (.*)\.\.\.$")
_OFFSET = re.compile(r"^Hunk #(\d+) succeeded at (\d+) \(offset (-?\d+) lines?\)\.$")
_FAILED_AT = re.compile(r"^error: patch failed: .*:(\d+)$")
_AT_LINE = re.compile(r"at line (\d+)")


@dataclass
class FileOutcome:
    """What git said about one file section."""

    applies: bool = True
    code: str | None = None  # hunk_failed | file_missing | file_exists | path_forbidden | ...
    hunk: int | None = None  # 1-based index of the failing hunk, when git names one
    offsets: list[dict[str, int]] = field(default_factory=list)


@dataclass
class GitVerdict:
    ok: bool
    files: list[FileOutcome]
    malformed_line: int | None = None  # set when git could not parse the patch at all
    malformed: bool = False


def _env(ceiling: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CEILING_DIRECTORIES=str(ceiling),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        HOME=str(ceiling),
        LC_ALL="C",
        LANGUAGE="C",
    )
    return env


def _classify(line: str) -> str:
    if "beyond a symbolic link" in line:
        return "path_forbidden"
    if "already exists" in line:
        return "file_exists"
    if "No such file or directory" in line or "does not exist" in line:
        return "file_missing"
    if "wrong type" in line:
        return "file_type"
    return "hunk_failed"


class EngineRun(Protocol):
    """A started patch engine: fed the patch once the files are staged, or cancelled."""

    def feed(self, text: bytes) -> None:
        """Hand over the patch text once the files are staged; may return before it is done."""

    def result(self, files: list[FilePatch]) -> GitVerdict:
        """Wait for the engine and report on each of `files` (what `text` patched)."""

    def cancel(self) -> None:
        """Stop an engine that will not be fed (staging failed)."""


class GitApplyRun:
    """A `git apply` started in `work` before the files are staged there.

    git reads the whole patch from stdin before it looks at any file, so the process can
    be spawned first and fed once staging is done: its start-up (exec, loading, config)
    then overlaps our staging instead of adding to it. Its stderr goes to an in-memory
    file rather than a pipe: `--verbose` writes two lines per file, and a pipe woke this
    thread (and wanted the GIL) for each of them.
    """

    def __init__(self, work: Path) -> None:
        self._closed = False
        self._err = _scratch_file()
        self.proc = subprocess.Popen(
            ["git", "apply", "--verbose", "--whitespace=nowarn", "-p1", "-"],
            cwd=work,
            env=_env(work.parent),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,  # --verbose and errors go to stderr
            stderr=self._err,
        )

    def feed(self, text: bytes) -> None:
        """Write `text` (a canonical git-form patch) and close stdin; git then works alone."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(text)
        except BrokenPipeError:
            pass  # git stopped early; its stderr says why
        finally:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()

    def result(self, files: list[FilePatch]) -> GitVerdict:
        """Wait for git and read its verdict on `files`."""
        returncode = self.proc.wait()
        return _verdict(files, returncode, self._read_stderr())

    def cancel(self) -> None:
        """Stop a run that will not be fed (staging failed); a no-op once it reported."""
        if self._closed:
            return
        self._closed = True
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        self.proc.wait()
        os.close(self._err)

    def _read_stderr(self) -> bytes:
        self._closed = True
        try:
            os.lseek(self._err, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(self._err, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(self._err)


def _scratch_file() -> int:
    """An unnamed read-write file descriptor: memfd where Linux has it, else a temp file."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("codeyard-git-apply", os.MFD_CLOEXEC)
    handle = tempfile.TemporaryFile()  # noqa: SIM115 - its descriptor outlives the object
    fd = os.dup(handle.fileno())
    handle.close()
    return fd


def run_git_apply(work: Path, files: list[FilePatch], text: bytes) -> GitVerdict:
    """Apply `text` (the canonical git-form patch of `files`) inside `work`."""
    run = GitApplyRun(work)
    run.feed(text)
    return run.result(files)


def _verdict(files: list[FilePatch], returncode: int, stderr: bytes) -> GitVerdict:
    outcomes = [FileOutcome() for _ in files]
    current = -1
    malformed_line: int | None = None
    malformed = False
    for raw in stderr.decode("utf-8", "replace").splitlines():
        if _CHECKING.match(raw):
            current += 1
            continue
        if current < 0 or current >= len(outcomes):
            if raw.startswith(("error:", "fatal:")):
                malformed = True
                m = _AT_LINE.search(raw)
                if m and malformed_line is None:
                    malformed_line = int(m[1])
            continue
        outcome = outcomes[current]
        if m := _OFFSET.match(raw):
            outcome.offsets.append({"hunk": int(m[1]), "line": int(m[2]), "offset": int(m[3])})
        elif m := _FAILED_AT.match(raw):
            outcome.applies, outcome.code = False, "hunk_failed"
            old_start = int(m[1])
            for index, hunk in enumerate(files[current].hunks, start=1):
                if hunk.old_start == old_start:
                    outcome.hunk = index
                    break
        elif raw.startswith("error:") and outcome.applies:
            outcome.applies, outcome.code = False, _classify(raw)
    if returncode != 0 and all(o.applies for o in outcomes) and not malformed:
        malformed = True
    return GitVerdict(returncode == 0, outcomes, malformed_line, malformed)


#: Below this many file sections per process a second `git apply` costs more than it saves.
MIN_FILES_PER_ENGINE = 16


def engine_shares(files: list[FilePatch], processes: int) -> list[list[int]]:
    """Indexes of `files` for each engine process: contiguous runs of about equal bytes.

    A patch is only shared out when every section modifies or creates a file: a deletion
    or rename makes git remove folders it emptied, which would race with another process
    creating a file in the same folder. (Each path is then in exactly one section.)
    """
    count = min(processes, len(files) // MIN_FILES_PER_ENGINE)
    if count < 2 or any(fp.op not in ("modify", "create") for fp in files):
        return [list(range(len(files)))]
    total = sum(len(fp.text) for fp in files)
    shares: list[list[int]] = [[] for _ in range(count)]
    done = 0
    for index, fp in enumerate(files):
        shares[min(count - 1, done * count // max(total, 1))].append(index)
        done += len(fp.text)
    return [share for share in shares if share]


def merge_verdicts(
    files: list[FilePatch], shares: list[list[int]], verdicts: list[GitVerdict]
) -> GitVerdict:
    """One verdict in the order of `files`; a malformed line counts from the whole patch."""
    outcomes: list[FileOutcome] = [FileOutcome() for _ in files]
    malformed_line: int | None = None
    lines_before = 0
    for share, verdict in zip(shares, verdicts, strict=True):
        for index, outcome in zip(share, verdict.files, strict=True):
            outcomes[index] = outcome
        if verdict.malformed_line is not None and malformed_line is None:
            malformed_line = lines_before + verdict.malformed_line
        lines_before += sum(files[i].text.count(b"\n") for i in share)
    return GitVerdict(
        all(v.ok for v in verdicts),
        outcomes,
        malformed_line,
        any(v.malformed for v in verdicts),
    )
