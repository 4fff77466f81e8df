"""A built `Context` as prompt text: quoted code blocks with paths and line numbers.

Each block's fence is longer than any backtick run inside it, so quoted code cannot close
the fence and pass as instructions.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import Context


def _fence(text: str) -> str:
    # A fence longer than any backtick run inside, so quoted code cannot close it.
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _block(title: str, text: str, language: str) -> str:
    fence = _fence(text)
    return f"{title}\n{fence}{language}\n{text.rstrip(chr(10))}\n{fence}\n"


def render_context(ctx: Context) -> str:
    """The code parts of a prompt, as quoted data with paths and line numbers."""
    parts: list[str] = []
    if ctx.header:
        parts.append(_block(f"File header of {ctx.path}:", ctx.header, ctx.language))
    for d in ctx.definitions:
        parts.append(
            _block(
                f"Definition of `{d.name}` ({d.path}, line {d.start_line}):", d.text, ctx.language
            )
        )
    if ctx.before:
        parts.append(
            _block(
                f"Lines {ctx.before_start}-{ctx.start_line - 1} (before):", ctx.before, ctx.language
            )
        )
    parts.append(
        _block(
            f"SELECTED lines {ctx.start_line}-{ctx.end_line} of {ctx.path}:",
            ctx.selection,
            ctx.language,
        )
    )
    if ctx.after:
        after_end = ctx.end_line + ctx.after.count("\n")
        parts.append(
            _block(f"Lines {ctx.end_line + 1}-{after_end} (after):", ctx.after, ctx.language)
        )
    return "\n".join(parts)
