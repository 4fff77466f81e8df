"""Secrets out of prompts: obvious keys, tokens and passwords become numbered placeholders.

The context builder runs every piece of code through one `Redactor` before it is counted or
sent, so secrets never leave the container; `Redactor.restore` puts them back into a model's
answer, locally, so a rewrite does not replace a real value with a placeholder.
"""

from __future__ import annotations

import re
from pathlib import Path

_PEM = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    re.DOTALL,
)
_TOKENS = re.compile(
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[A-Z0-9]{16}\b"  # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b"  # GitHub tokens
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}\b"  # Slack tokens
    r"|\bAIza[0-9A-Za-z_-]{35}\b"  # Google API keys
    r"|\bsk-[A-Za-z0-9_-]{20,}\b"  # OpenAI-style keys
)
_ASSIGNMENT = re.compile(
    r"""(?P<key>\b[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|"""
    r"""private[_-]?key|credentials?|auth)[\w.-]*["']?\s*(?::=|=|:)\s*)"""
    r"""(?P<quote>["']?)(?P<value>[^\s"',;]+)""",
    re.IGNORECASE,
)
_ENV_LINE = re.compile(r"^(?P<key>\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*\s*=\s*)(?P<value>.+)$")


def is_env_file(path: str) -> bool:
    name = Path(path).name
    return name == ".env" or name.startswith(".env.") or name.endswith(".env")


class Redactor:
    """Replaces secrets with `<redacted-N>` and remembers them to restore an answer."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}

    def _hide(self, value: str) -> str:
        for placeholder, known in self.secrets.items():
            if known == value:
                return placeholder
        placeholder = f"<redacted-{len(self.secrets) + 1}>"
        self.secrets[placeholder] = value
        return placeholder

    def redact(self, text: str, path: str = "") -> str:
        text = _PEM.sub(lambda m: self._hide(m.group(0)), text)
        text = _TOKENS.sub(lambda m: self._hide(m.group(0)), text)

        def assignment(m: re.Match[str]) -> str:
            value = m.group("value")
            if value.startswith("<redacted-") or not _looks_secret(value):
                return m.group(0)
            return m.group("key") + m.group("quote") + self._hide(value)

        text = _ASSIGNMENT.sub(assignment, text)
        if is_env_file(path):
            lines = []
            for line in text.splitlines(keepends=True):
                body = line.rstrip("\r\n")
                m = _ENV_LINE.match(body)
                if m and not body.lstrip().startswith("#") and "<redacted-" not in body:
                    line = m.group("key") + self._hide(m.group("value")) + line[len(body) :]
                lines.append(line)
            text = "".join(lines)
        return text

    def restore(self, text: str) -> str:
        for placeholder, value in self.secrets.items():
            text = text.replace(placeholder, value)
        return text


def _looks_secret(value: str) -> bool:
    # Skip code like `password=password` or `token=get_token()`: only literal-looking values.
    if value.isidentifier() and not any(c.isdigit() for c in value) and len(value) < 12:
        return False
    return not (value.endswith(")") or value.startswith(("self.", "os.", "$")))
