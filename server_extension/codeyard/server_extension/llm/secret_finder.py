"""Where the secrets are in a text: character spans for `Redactor` (redaction.py) to hide.

What counts as a secret comes from detect-secrets' maintained rule set (its regex plugins
for AWS, Azure, GitHub, GitLab, Slack, Stripe, OpenAI, JWTs, credentials in URLs and more,
its secret keyword list, and its high-entropy string plugins), plus a few rules of our own
for shapes it reads only line by line or not at all: whole PEM private-key blocks (across
lines, and a block cut open at either end), `KEY=value` assignments, `.netrc` entries,
`Bearer` tokens, the `user:password` part of URLs, and token formats it lacks.

Every pattern runs on RE2 (google-re2), so finding takes time linear in the text: a
workspace file is the user's, and a crafted one must not hold the server's GIL for
seconds. detect-secrets' own patterns are translated to RE2 where they use look-arounds
RE2 lacks; each match is then widened over the token's characters so a translated pattern
finds at least what the original did.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, cast

import re2
from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.filters.heuristic import (
    is_potential_uuid,
    is_sequential_string,
    is_templated_secret,
)
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.high_entropy_strings import (
    Base64HighEntropyString,
    HexHighEntropyString,
    HighEntropyStringsPlugin,
)
from detect_secrets.plugins.ip_public import IPPublicDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.keyword import DENYLIST as KEYWORD_DENYLIST
from detect_secrets.plugins.private_key import PrivateKeyDetector

from .redaction import is_env_file

Span = tuple[int, int]


def _compile(pattern: str) -> Any:
    """An RE2 pattern that never matches across a newline: every rule is about one line,
    except the PEM block rule, which says `(?s)` and is compiled without this option."""
    options = re2.Options()
    options.never_nl = True
    options.log_errors = False
    return re2.compile(pattern, options)


def _compile_multiline(pattern: str) -> Any:
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


# Characters a token is made of: a match is widened over these so a secret is hidden whole
# even where a translated pattern stops early (RE2 has no `(?!\w)`).
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
# A JWT's signature follows a dot and may hold base64 padding; detect-secrets' pattern
# ends with a lazy group and so reports the token without it.
_JWT_CHARS = _TOKEN_CHARS | frozenset(".+/=")
# Delimiters some detect-secrets patterns consume around the token (`(?:\s|=|:|"|^)`).
_EDGE = " \t\r\f\v\"'`=:,;()[]{}<>"


# ---- detect-secrets' regex plugins on RE2 --------------------------------------------


@dataclass(frozen=True)
class _PluginRule:
    """One pattern of a detect-secrets regex plugin, compiled for RE2."""

    name: str
    regex: Any
    widen: frozenset[str]
    check: Callable[[str], bool] | None = None


# Plugins whose findings are handled elsewhere or are not credentials: the private-key
# plugin only flags the BEGIN line (the block rule below hides the whole block), and a
# public IP address is not a secret but is often what the code is about.
_SKIPPED_PLUGINS: tuple[type, ...] = (
    PrivateKeyDetector,
    IPPublicDetector,
    HighEntropyStringsPlugin,
)


def _translate(pattern: re.Pattern[str]) -> str:
    """detect-secrets' Python pattern in RE2 syntax: look-arounds become consuming groups
    (the consumed delimiter is trimmed off the match later) and repetition bounds above
    RE2's limit of 1000 become open-ended, which can only hide more."""
    src = pattern.pattern
    src = src.replace(r"(?:(?<=\W)|(?<=^))", r"(?:^|\W)")
    src = re.sub(r"\(\?!\\w\)", r"(?:\\W|$)", src)
    src = re.sub(r"\(\?!\[([^\]]*)\]\)", r"(?:[^\1]|$)", src)
    src = re.sub(r"\{(\d+),(\d{4,})\}", r"{\1,}", src)
    flags = "m"
    if pattern.flags & re.IGNORECASE:
        flags += "i"
    if pattern.flags & re.VERBOSE:
        src = re.sub(r"\s+", "", src)
    return f"(?{flags}){src}"


def _plugin_rules() -> tuple[list[_PluginRule], list[str]]:
    rules: list[_PluginRule] = []
    untranslated: list[str] = []
    plugins: list[type] = list(get_mapping_from_secret_type_to_class().values())
    for cls in sorted(plugins, key=lambda c: c.__name__):
        if not issubclass(cls, RegexBasedDetector) or issubclass(cls, _SKIPPED_PLUGINS):
            continue
        jwt = issubclass(cls, JwtTokenDetector)
        # A class attribute on every concrete plugin (declared as an abstract property).
        patterns = cast("Iterable[re.Pattern[str]]", cls.denylist)
        for pattern in patterns:
            try:
                regex = _compile(_translate(pattern))
            except re2.error:
                untranslated.append(f"{cls.__name__}: {pattern.pattern}")
                continue
            rules.append(
                _PluginRule(
                    cls.__name__,
                    regex,
                    _JWT_CHARS if jwt else _TOKEN_CHARS,
                    JwtTokenDetector.is_formally_valid if jwt else None,
                )
            )
    return rules, untranslated


# A test asserts UNTRANSLATED is empty: a detect-secrets upgrade with a pattern RE2 cannot
# run must be noticed, not silently lose a rule.
PLUGIN_RULES, UNTRANSLATED = _plugin_rules()


# Provider token formats detect-secrets 1.5 has no plugin for (OpenAI project, service and
# admin keys without the legacy `T3BlbkFJ` marker, Anthropic, Google API keys, Hugging
# Face, GitHub fine-grained tokens, AWS key-id prefixes beyond its list, Slack tokens with
# letters between the dashes). Each starts with a fixed prefix, so a plain search is safe.
_EXTRA_TOKENS = _compile(
    r"sk-(?:proj|svcacct|admin|ant-api[0-9]*|ant-admin[0-9]*)-[A-Za-z0-9_\-]{20,}"
    r"|\bsk-[A-Za-z0-9]{32,}"
    r"|AIza[0-9A-Za-z_\-]{35}"
    r"|\bhf_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{40,}"
    r"|(?:AGPA|AIDA|AROA|ANPA|ANVA|AIPA|APKA)[A-Z0-9]{16}"
    r"|xox[abprse]-[A-Za-z0-9\-]{10,}"
)


def _extra_token_spans(text: str) -> Iterator[Span]:
    for m in _EXTRA_TOKENS.finditer(text):
        yield _widen(text, m.start(), m.end(), _TOKEN_CHARS)


# ---- PEM private keys ----------------------------------------------------------------

_KEY_LABEL = r"[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?"
_BEGIN = rf"-{{4,5}} ?BEGIN {_KEY_LABEL} ?-{{4,5}}"
_END = rf"-{{4,5}} ?END {_KEY_LABEL} ?-{{4,5}}"
_PEM_BLOCK = _compile_multiline(rf"(?s){_BEGIN}.*?{_END}")
_PEM_BEGIN = _compile(_BEGIN + "|PuTTY-User-Key-File-[0-9]+:")
_PEM_END = _compile(_END)
# A line that can only be part of a key's body: base64 (possibly inside a string literal
# with a `\n` escape and concatenation), or an RFC 1421 header such as `Proc-Type: ...`.
_KEY_BODY_LINE = _compile(
    r"[ \t\"'+,(]*(?:[A-Za-z0-9+/=]+(?:\\n)?|"
    r"(?:Proc-Type|DEK-Info|Comment|Encryption|Private-Lines|Public-Lines|Private-MAC|"
    r"Key-Derivation|Argon2-[A-Za-z]+):[^\n]*)?[ \t\"'+,;)\\]*"
)


def _line_bounds(text: str, pos: int) -> Span:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return start, len(text) if end < 0 else end


def _pem_spans(text: str) -> list[Span]:
    """Whole BEGIN...END blocks, and blocks cut open at either end (a dangling BEGIN or
    END): from the marker through the run of key-body lines next to it."""
    if "PRIVATE KEY" not in text and "PuTTY-User-Key-File" not in text:
        return []
    blocks = [m.span() for m in _PEM_BLOCK.finditer(text)]
    spans = list(blocks)

    starts = [s for s, _ in blocks]

    def inside(pos: int) -> bool:
        i = bisect.bisect_right(starts, pos) - 1
        return i >= 0 and pos < blocks[i][1]

    for m in _PEM_BEGIN.finditer(text):
        if inside(m.start()):
            continue
        _, end = _line_bounds(text, m.start())
        while end < len(text):
            nxt_start = end + 1
            _, nxt_end = _line_bounds(text, nxt_start)
            line = text[nxt_start:nxt_end]
            if not line.strip() or not _KEY_BODY_LINE.fullmatch(line):
                break
            end = nxt_end
        spans.append((m.start(), end))
    for m in _PEM_END.finditer(text):
        if inside(m.start()):
            continue
        start, _ = _line_bounds(text, m.start())
        while start > 0:
            prev_start, prev_end = _line_bounds(text, start - 1)
            line = text[prev_start:prev_end]
            if not line.strip() or not _KEY_BODY_LINE.fullmatch(line):
                break
            start = prev_start
        spans.append((start, m.end()))
    return spans


# ---- assignments, .netrc, Authorization headers, URLs ---------------------------------

# Secret-sounding names: detect-secrets' keyword list plus names it leaves out.
_KEYWORDS = "|".join(
    (
        *KEYWORD_DENYLIST,
        "pass",
        "token",
        "auth",
        "credentials?",
        "access_?key",
        "secret_?key",
        "bearer",
        "session_?key",
        "signing_?key",
        "encryption_?key",
    )
)
_VALUE = (
    r"(?:\"(?P<dq>[^\"\n]*)\"|'(?P<sq>[^'\n]*)'|`(?P<bq>[^`\n]*)`"
    r"|(?P<bare>[^\s\"'`,;()\[\]{}<>]+))"
)
_ASSIGNMENT = _compile(
    rf"(?i)(?P<key>[A-Za-z0-9_.\-]*(?:{_KEYWORDS})[A-Za-z0-9_.\-]*)[\"'\]]{{0,2}}[ \t]*"
    rf"(?::=|=>|::|===?|!==?|=|:)[ \t]*@?{_VALUE}"
)
# `password("...")`, `.setPassword("...")`: a secret passed straight to a setter.
_CALL = _compile(rf"(?i)(?:{_KEYWORDS})[A-Za-z0-9_]*(?:\.assign)?\([ \t]*{_VALUE}")
# `"value" == password`
_COMPARED = _compile(
    rf"(?i)(?:\"(?P<dq>[^\"\n]*)\"|'(?P<sq>[^'\n]*)')[ \t]*[!=]{{2,3}}[ \t]*"
    rf"[A-Za-z0-9_]*(?:{_KEYWORDS})"
)
_ENV_LINE = _compile(
    r"(?m)^[ \t]*(?:export[ \t]+)?[A-Za-z_][A-Za-z0-9_.\-]*[ \t]*=[ \t]*(?P<value>.*?)[ \t]*$"
)
_NETRC = _compile(r"(?i)(?:^|[ \t])(?:password|passwd|account)[ \t]+(?P<value>[^\s\"'`]+)")
_NETRC_CONTEXT = _compile(r"(?i)(?:^|[ \t])(?:machine|login|default)(?:[ \t]|$)")
_AUTH_SCHEME = _compile(
    r"(?i)\b(?:bearer|basic|token|digest|negotiate)[ \t]+(?P<value>[A-Za-z0-9\-._~+/]+=*)"
)
_AUTH_HEADER = _compile(
    r"(?i)(?:authorization|x-api-key|api-key|private-token|x-auth-token)[\"']?[ \t]*[:=,][ \t]*"
    r"[\"']?(?:(?:bearer|basic|token|digest)[ \t]+)?(?P<value>[^\s\"',;]+)"
)
_URL_USERINFO = _compile(r"[A-Za-z][A-Za-z0-9+.\-]*://(?P<value>[^\s/?#@\"'<>]*:[^\s/?#@\"'<>]*)@")
_PLACEHOLDER = _compile(r"<redacted-[0-9]+>")

_CODE_SUFFIXES = frozenset(
    {
        ".py",
        ".pyi",
        ".ipynb",
        ".js",
        ".jsx",
        ".mjs",
        ".cjs",
        ".ts",
        ".tsx",
        ".go",
        ".rs",
        ".java",
        ".kt",
        ".scala",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".hpp",
        ".cs",
        ".rb",
        ".php",
        ".swift",
        ".r",
        ".jl",
        ".lua",
    }
)
_NETRC_NAMES = frozenset({".netrc", "_netrc", "netrc", ".authinfo"})
_LITERALS = frozenset({"none", "null", "nil", "true", "false", "undefined", "nan"})
_REFERENCE_PREFIXES = ("$", "%", "self.", "this.", "os.", "env.", "process.env", "settings.")
_DOTTED_NAME = _compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _is_code(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in _CODE_SUFFIXES


def _is_value(value: str, quoted: bool, code: bool) -> bool:
    """Whether an assigned value is data worth hiding rather than code that names one.

    A quoted value is a literal: hidden unless empty or a template (`{x}`, `<x>`, `${x}`).
    A bare value is hidden unless it reads as code: a reference (`$VAR`, `os.environ`,
    `self.x`, `a.b`), a small number (a count, `max_tokens = 64`), a keyword literal, or -
    in a programming language - a plain variable name (`login(password=password)`).
    """
    if not value or _PLACEHOLDER.fullmatch(value):
        return False
    if len(value) > 1 and is_templated_secret(value):
        return False
    if quoted:
        return True
    if value.lower() in _LITERALS or value.startswith(_REFERENCE_PREFIXES):
        return False
    if value.isdigit() and len(value) < 6:
        return False
    if code and (_DOTTED_NAME.fullmatch(value) or value.endswith(":")):
        return False
    return not (code and value.isidentifier() and not any(c.isdigit() for c in value))


def _group_span(m: Any, name: str) -> Span:
    """A named group's span (google-re2's `Match.span` takes group numbers only)."""
    index = m.re.groupindex.get(name)
    return (-1, -1) if index is None else m.span(index)


def _value_span(m: Any) -> tuple[Span, bool] | None:
    for group in ("dq", "sq", "bq", "bare"):
        start, end = _group_span(m, group)
        if start >= 0:
            return (start, end), group != "bare"
    return None


def _assignment_spans(text: str, path: str) -> Iterator[Span]:
    code = _is_code(path)
    for regex in (_ASSIGNMENT, _CALL, _COMPARED):
        for m in regex.finditer(text):
            found = _value_span(m)
            if found is None:
                continue
            (start, end), quoted = found
            if _is_value(text[start:end], quoted, code):
                yield start, end


def _env_spans(text: str) -> Iterator[Span]:
    for m in _ENV_LINE.finditer(text):
        start, end = _group_span(m, "value")
        line_start, _ = _line_bounds(text, m.start())
        if start < end and not text[line_start:start].lstrip().startswith("#"):
            yield start, end


def _netrc_spans(text: str, path: str) -> Iterator[Span]:
    netrc = PurePosixPath(path).name.lower() in _NETRC_NAMES
    for m in _NETRC.finditer(text):
        if not netrc:
            line_start, line_end = _line_bounds(text, m.start())
            if not _NETRC_CONTEXT.search(text[line_start:line_end]):
                continue
        yield _group_span(m, "value")


def _auth_spans(text: str) -> Iterator[Span]:
    for m in _AUTH_SCHEME.finditer(text):
        value = m.group("value")
        # `Bearer <token>`, not prose such as "basic usage": a token has a digit or is long.
        if len(value) >= 8 and (any(c.isdigit() for c in value) or len(value) >= 20):
            yield _group_span(m, "value")
    for m in _AUTH_HEADER.finditer(text):
        if _is_value(m.group("value"), quoted=False, code=False):
            yield _group_span(m, "value")


def _url_spans(text: str) -> Iterator[Span]:
    for m in _URL_USERINFO.finditer(text):
        start, end = _group_span(m, "value")
        if text[start:end] != ":":
            yield start, end


def _widen(text: str, start: int, end: int, chars: frozenset[str]) -> Span:
    while start < end and text[start] in _EDGE:
        start += 1
    while end > start and text[end - 1] in _EDGE:
        end -= 1
    while start > 0 and text[start - 1] in chars:
        start -= 1
    while end < len(text) and text[end] in chars:
        end += 1
    return start, end


def _plugin_spans(text: str) -> Iterator[Span]:
    for rule in PLUGIN_RULES:
        for m in rule.regex.finditer(text):
            groups = [m.span(i) for i in range(1, rule.regex.groups + 1)]
            spans = [(s, e) for s, e in groups if s >= 0 and e > s] or [m.span()]
            for start, end in spans:
                if rule.check is not None and not rule.check(text[start:end]):
                    continue
                start, end = _widen(text, start, end, rule.widen)
                if start < end:
                    yield start, end


@dataclass(frozen=True)
class _EntropyRule:
    plugin: HighEntropyStringsPlugin
    regex: Any


def _entropy_rules() -> list[_EntropyRule]:
    rules = []
    for plugin in (Base64HighEntropyString(), HexHighEntropyString()):
        # Fewer distinct characters than 2**limit cannot reach the limit: skip them in RE2.
        shortest = max(2, math.ceil(2**plugin.entropy_limit))
        chars = re.escape(plugin.charset)
        regex = _compile(
            rf"\"(?P<dq>[{chars}]{{{shortest},}})\"|'(?P<sq>[{chars}]{{{shortest},}})'"
        )
        rules.append(_EntropyRule(plugin, regex))
    return rules


_ENTROPY_RULES = _entropy_rules()


def _entropy_spans(text: str) -> Iterator[Span]:
    for rule in _ENTROPY_RULES:
        for m in rule.regex.finditer(text):
            found = _value_span(m)
            if found is None:
                continue
            (start, end), _ = found
            value = text[start:end]
            if (
                rule.plugin.calculate_shannon_entropy(value) > rule.plugin.entropy_limit
                and not is_sequential_string(value)
                and not is_potential_uuid(value)
            ):
                yield start, end


def find_secrets(text: str, path: str = "") -> list[Span]:
    """Character spans of `text` to hide, sorted and merged where they overlap."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # RE2 scans UTF-8; a lone surrogate (possible in a JSON question) becomes one `?`,
        # which keeps every character's index.
        text = text.encode("utf-8", "replace").decode("utf-8")
    spans: list[Span] = []
    spans.extend(_pem_spans(text))
    spans.extend(_plugin_spans(text))
    spans.extend(_extra_token_spans(text))
    spans.extend(_entropy_spans(text))
    spans.extend(_assignment_spans(text, path))
    spans.extend(_netrc_spans(text, path))
    spans.extend(_auth_spans(text))
    spans.extend(_url_spans(text))
    if is_env_file(path):
        spans.extend(_env_spans(text))
    merged: list[Span] = []
    for start, end in sorted(s for s in spans if s[0] < s[1]):
        if merged and start < merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged
