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

import re
from pathlib import PurePosixPath

from ..errors import CodeyardError

_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# `restore` works on a model's answer, which may hold lone surrogates RE2 cannot take; this
# pattern is a literal followed by one digit run, linear on Python's engine too.
_PLACEHOLDER = re.compile(r"<redacted-[0-9]+>")


def is_env_file(path: str) -> bool:
    name = PurePosixPath(path).name
    return name == ".env" or name.startswith(".env.") or name.endswith(".env")


class Redactor:
    """Replaces secrets with `<redacted-N>` and remembers them to restore an answer.

    One instance serves one request: the same value gets the same placeholder in every
    piece it redacts, and `restore` knows all of them.
    """

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self._placeholders: dict[str, str] = {}

    def _hide(self, value: str) -> str:
        placeholder = self._placeholders.get(value)
        if placeholder is None:
            placeholder = f"<redacted-{len(self.secrets) + 1}>"
            self.secrets[placeholder] = value
            self._placeholders[value] = placeholder
        return placeholder

    def _hide_lines(self, value: str) -> str:
        """One placeholder per line of `value`, keeping its line breaks, so the redacted
        text has exactly the lines of the original (`str.splitlines` counts them)."""
        parts = []
        for piece in value.splitlines(keepends=True):
            body = piece.rstrip(_LINE_BREAKS)
            if body.strip():
                parts.append(self._hide(body))
            else:
                parts.append(body)
            parts.append(piece[len(body) :])
        return "".join(parts)

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
        if not self.secrets or "<redacted-" not in text:
            return text
        return _PLACEHOLDER.sub(lambda m: self.secrets.get(m.group(0), m.group(0)), text)
