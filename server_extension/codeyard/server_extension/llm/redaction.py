"""Secrets out of prompts: keys, tokens and passwords become numbered placeholders.

`secret_finder.py` says where the secrets are; `Redactor` replaces them with
`<redacted-N>` and remembers the values for one request. Redaction preserves line
structure (a multi-line secret becomes one placeholder per line), so the context builder
redacts a whole file once and only then cuts it into the pieces a prompt quotes: a key can
never be split between two pieces and slip through half-seen. `Redactor.restore` puts the
values back into a model's answer, locally, so a rewrite does not replace a real value
with a placeholder.

The finder needs detect-secrets and google-re2. They are imported on first use: without
them the server still starts, and every request that would send code to the model fails
closed with 503 instead of sending it unredacted.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from ..errors import CodeyardError

_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_PREFIX = "<redacted-"
_NAME = _PREFIX + "{}>"
# A secret over more lines than this (the finder hides a stretch of text packed with
# candidates whole) gets its placeholders in bulk, when `\n` is its only line break.
_BULK_LINES = 256
_OTHER_BREAKS = _LINE_BREAKS.replace("\n", "")


def is_env_file(path: str) -> bool:
    name = PurePosixPath(path).name
    return name == ".env" or name.startswith(".env.") or name.endswith(".env")


class Redactor:
    """Replaces secrets with `<redacted-N>` and remembers them to restore an answer.

    One instance serves one request: the same value gets the same placeholder in every
    piece it redacts, and `restore` knows all of them.
    """

    def __init__(self) -> None:
        # The value behind `<redacted-N>` is `_values[N - 1]`: a list, so a stretch of
        # millions of lines is added in one `extend`.
        self._values: list[str] = []
        self._placeholders: dict[str, str] = {}

    @property
    def secrets(self) -> dict[str, str]:
        """Each placeholder made so far and the value it stands for."""
        return {_NAME.format(i): value for i, value in enumerate(self._values, 1)}

    def _hide(self, value: str) -> str:
        placeholder = self._placeholders.get(value)
        if placeholder is None:
            self._values.append(value)
            placeholder = _NAME.format(len(self._values))
            self._placeholders[value] = placeholder
        return placeholder

    def _hide_lines(self, value: str) -> str:
        """One placeholder per line of `value`, keeping its line breaks, so the redacted
        text has exactly the lines of the original (`str.splitlines` counts them)."""
        if (
            value.count("\n") > _BULK_LINES
            and not value.startswith("\n")  # it could be the second half of a `\r\n`
            and not any(c in value for c in _OTHER_BREAKS)
        ):
            return self._hide_many(value.split("\n"))
        pieces = value.splitlines(keepends=True)
        if len(pieces) == 1 and pieces[0] == value.rstrip(_LINE_BREAKS):
            # Most secrets are one line without a break: no per-line work.
            return self._hide(value) if value.strip() else value
        parts = []
        for piece in pieces:
            body = piece.rstrip(_LINE_BREAKS)
            if body.strip():
                parts.append(self._hide(body))
            else:
                parts.append(body)
            parts.append(piece[len(body) :])
        return "".join(parts)

    def _hide_many(self, lines: list[str]) -> str:
        """`lines` (a stretch the finder hid whole, split at `\n`), each as a new
        placeholder, joined by `\n`. Made without a Python step per line: such a stretch
        can be millions of short lines. Unlike `_hide`, a value met again here gets a new
        number, and a blank line gets one too; `restore` puts each back all the same."""
        first = len(self._values) + 1
        self._values.extend(lines)
        numbers = map(str, range(first, first + len(lines)))
        return _PREFIX + (">\n" + _PREFIX).join(numbers) + ">"

    def redact(self, text: str, path: str = "") -> str:
        """`text` with every secret replaced; `path` (the file's) selects the rules that
        depend on the kind of file (`.env`, `.netrc`, a programming language)."""
        try:
            from .secret_finder import find_secrets
        except ImportError as exc:
            raise CodeyardError(
                503,
                "redaction_unavailable",
                f"secret redaction is not installed ({exc.name}); no code was sent",
            ) from None
        spans = find_secrets(text, path)
        if not spans:
            return text
        out: list[str] = []
        pos = 0
        for start, end in spans:
            out.append(text[pos:start])
            out.append(self._hide_lines(text[start:end]))
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def restore(self, text: str) -> str:
        """`text` (a model's answer) with each placeholder this instance made put back.

        Done with `str.split` rather than a pattern: an answer may hold lone surrogates,
        which RE2 cannot take, and this way no backtracking engine runs on it either.
        """
        if not self._values or _PREFIX not in text:
            return text
        pieces = text.split(_PREFIX)
        out = [pieces[0]]
        for piece in pieces[1:]:
            close = piece.find(">")
            number = piece[:close]
            if 0 < close <= 18 and number.isascii() and number.isdigit():
                index = int(number) - 1
                if 0 <= index < len(self._values) and number[0] != "0":
                    out.append(self._values[index] + piece[close + 1 :])
                    continue
            out.append(_PREFIX + piece)
        return "".join(out)
