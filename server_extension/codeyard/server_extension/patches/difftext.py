"""Writing a unified diff: the text form in which changes reach the patch engine.

Server-side changes (a rewritten region, a patched notebook cell) are turned into a diff
here, so they go through `patch/validate` and `patch/apply` like any diff a client sends.
"""

from __future__ import annotations

import difflib


def unified_diff(rel: str, before: str, after: str) -> str:
    """A git-style unified diff of one file, with `\\ No newline at end of file` markers."""
    out = [f"diff --git a/{rel} b/{rel}\n"]
    for line in difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        f"a/{rel}",
        f"b/{rel}",
        n=3,
    ):
        if line.startswith(("---", "+++")):
            line = line.rstrip("\n") + "\n"
        out.append(line)
        if not line.endswith("\n"):
            out.append("\n\\ No newline at end of file\n")
    return "".join(out)
