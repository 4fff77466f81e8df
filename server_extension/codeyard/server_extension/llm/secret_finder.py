"""Where the secrets are in a text: character spans for `Redactor` (redaction.py) to hide.

What counts as a secret comes from detect-secrets' maintained rule set (its regex plugins
for AWS, Azure, GitHub, GitLab, Slack, Stripe, OpenAI, JWTs, credentials in URLs and more,
its secret keyword list, and its high-entropy string plugins), plus a few rules of our own
for shapes it reads only line by line or not at all: whole PEM private-key blocks (across
lines, and a block cut open at either end), `KEY=value` assignments, `.netrc` entries,
`Bearer` tokens, the `user:password` part of URLs, and token formats it lacks.

Finding takes time linear in the text, whatever the text holds: a workspace file is the
user's, and a crafted one must not hold the server's GIL for seconds. That rests on three
things, each tested (tests/server_extension/test_redaction.py) and benchmarked
(tests/bench/bench_redaction.py):

- Every pattern is an RE2 pattern (google-re2), including detect-secrets' own, translated
  where they use look-arounds RE2 lacks, and the UUID filter it applies to entropy hits.
  detect-secrets' line-by-line scan on Python's `re` is not used.
- The text is encoded to UTF-8 once (`_Scan`) and every search runs on those bytes, so no
  search re-encodes the whole text, and the spans are turned back into character offsets
  in one pass at the end.
- Work done in Python outside RE2 never goes over the same bytes twice: a match is widened
  over the token around it only up to where the previous widening of the same rule ended
  (a run of 100,000 `AKIA...` keys is widened once, not 100,000 times over a growing
  prefix), a match inside an already widened token is skipped, the key-body lines around a
  dangling PEM marker are found by one anchored RE2 match (backwards on the reversed
  text), and the line around a match is looked up once per line.
- Checks in Python are bounded per byte: a line, or a stretch of lines, packed with
  matches of one pattern beyond a fixed limit is hidden whole without checking the rest
  (`_Scan.matches`). That only ever hides more than the checks would have.

`Work` counts each unit of work, so a test can show that doubling a crafted input doubles
the count without timing anything.
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
from detect_secrets.filters import heuristic
from detect_secrets.filters.heuristic import is_sequential_string, is_templated_secret
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

# Every pattern the finder builds, so a test can check that each one is an RE2 pattern.
COMPILED: list[Any] = []


def _compile(pattern: str, capture: bool = True) -> Any:
    """An RE2 pattern that never matches across a newline: every rule is about one line,
    except the few multi-line ones, compiled with `_compile_multiline`. Without `capture`
    its groups are not reported, which spares RE2 the slower pass that finds them."""
    options = re2.Options()
    options.never_nl = True
    options.never_capture = not capture
    options.log_errors = False
    regex = re2.compile(pattern, options)
    COMPILED.append(regex)
    return regex


def _compile_multiline(pattern: str, latin1: bool = False) -> Any:
    options = re2.Options()
    options.log_errors = False
    if latin1:
        options.encoding = re2.Options.Encoding.LATIN1
        regex = re2.compile(pattern.encode("latin-1"), options)
    else:
        regex = re2.compile(pattern, options)
    COMPILED.append(regex)
    return regex


def _group_index(regex: Any, name: str) -> int:
    """A named group's number (google-re2's `Match.span` takes numbers only), looked up
    once here rather than on every match: `groupindex` builds a new dict each call."""
    return cast(int, regex.groupindex[name])


# ---- one text, searched as bytes --------------------------------------------------------


@dataclass
class Work:
    """Units of work spent finding the secrets of one text, counted rather than timed.

    `searched`: bytes handed to RE2 searches (each search scans its range once);
    `matches`: matches RE2 returned, each handled in Python; `walked`: bytes stepped over
    in Python or by an anchored RE2 run (widening a token, trimming a delimiter, the lines
    around a PEM marker); `checked`: bytes of candidate values given to a Python check
    (entropy, JWT decoding, detect-secrets' filters). Linear time means each of these
    grows at most in proportion to the text.
    """

    searched: int = 0
    matches: int = 0
    walked: int = 0
    checked: int = 0

    @property
    def total(self) -> int:
        return self.searched + self.matches + self.walked + self.checked


class _Scan:
    """A text being searched: its UTF-8 bytes, which RE2 scans (google-re2 would encode a
    `str` again on every call), and the work spent on it."""

    def __init__(self, text: str, work: Work) -> None:
        self.data = text.encode("utf-8")
        self.work = work
        self._reversed: bytes | None = None
        self._line: Span = (0, -1)
        # Rests of lines hidden whole because one rule matched too often on them.
        self.capped: list[Span] = []

    @property
    def reversed(self) -> bytes:
        """The bytes back to front, for walking left with an anchored RE2 match."""
        if self._reversed is None:
            self._reversed = self.data[::-1]
        return self._reversed

    def matches(
        self, regex: Any, cap: bool = True, grow: Callable[[Span], Span] | None = None
    ) -> Iterator[list[Span]]:
        """Each match of `regex`, left to right, as its group spans (0 is the match).

        This calls RE2 directly rather than through google-re2's `finditer`, which costs
        more in Python per match than the search costs in RE2. With `cap`, a line on
        which the pattern matches more than `MAX_MATCHES_PER_LINE` times is hidden whole
        and the search goes on at the next line; and once it matches more than
        `MAX_MATCHES_PER_WINDOW` times within `WINDOW` bytes, the next `SKIP` bytes (from
        the line of that match to a line's end) are hidden whole and the search goes on
        after them. Text packed with candidates, on one line or on many short ones, so
        costs a bounded number of checks in Python per byte, and nothing in it is shown
        that a check could have let through. `grow` widens such a stretch to cover what
        the skipped matches would have reached beyond it (a PEM marker's key-body lines).
        """
        data = self.data
        size = len(data)
        match = regex._regexp.Match
        self.work.searched += size
        pos = 0
        line_end = -1
        on_line = 0
        window_start = -WINDOW - 1
        in_window = 0
        while pos <= size:
            spans = match(_UNANCHORED, data, pos, size)
            start, end = spans[0]
            if start < 0:
                return
            self.work.matches += 1
            if cap:
                if start - window_start > WINDOW:
                    window_start = start
                    in_window = 0
                in_window += 1
                if in_window > MAX_MATCHES_PER_WINDOW:
                    line_start = data.rfind(b"\n", 0, start) + 1
                    skip_to = min(start + SKIP, size)
                    stop = data.find(b"\n", skip_to)
                    if stop < 0:
                        stop = size
                    self.work.walked += (start - line_start) + (stop - skip_to)
                    self.capped.append(grow((line_start, stop)) if grow else (line_start, stop))
                    pos = stop + 1
                    window_start, line_end = -WINDOW - 1, -1
                    continue
                if start > line_end:
                    line_end = data.find(b"\n", start)
                    if line_end < 0:
                        line_end = size
                    self.work.walked += line_end - start
                    on_line = 0
                on_line += 1
                if on_line > MAX_MATCHES_PER_LINE:
                    line_start = data.rfind(b"\n", 0, start) + 1
                    self.work.walked += start - line_start
                    stretch = (line_start, line_end)
                    self.capped.append(grow(stretch) if grow else stretch)
                    pos = line_end + 1
                    continue
            yield spans
            pos = end if end > start else end + 1

    def value(self, start: int, end: int) -> str:
        """The text of a candidate, for a check in Python. RE2's spans fall between UTF-8
        characters; `replace` is there so a check can never raise on one."""
        self.work.checked += end - start
        return self.data[start:end].decode("utf-8", "replace")

    def line(self, pos: int) -> Span:
        """The line around `pos` (without its newline). Matches come in order, so the last
        line found is kept: many matches on one long line find its bounds once."""
        start, end = self._line
        if start <= pos <= end:
            return self._line
        data = self.data
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", pos)
        if end < 0:
            end = len(data)
        self.work.walked += end - start
        self._line = (start, end)
        return self._line

    def run_right(self, run: Any, pos: int) -> int:
        """The end of the run of `run`'s characters that starts at `pos`."""
        spans = run._regexp.Match(_ANCHOR_START, self.data, pos, len(self.data))
        end = pos if spans[0][0] < 0 else spans[0][1]
        self.work.walked += end - pos + 1
        return cast(int, end)

    def run_left(self, run: Any, pos: int, floor: int) -> int:
        """The start of the run of `run`'s characters that ends at `pos`, not below
        `floor`."""
        size = len(self.data)
        spans = run._regexp.Match(_ANCHOR_START, self.reversed, size - pos, size - floor)
        start = pos if spans[0][0] < 0 else size - spans[0][1]
        self.work.walked += pos - start + 1
        return cast(int, start)

    def widen(self, start: int, end: int, run: Any, chars: frozenset[int], floor: int) -> Span:
        """`start:end` without the delimiters a pattern consumed around the token, then
        over the token's characters (`run`, also given as the set `chars` to skip RE2
        where the token already ends) on both sides, leftwards not below `floor`."""
        data = self.data
        first = start
        while start < end and data[start] in _EDGE:
            start += 1
        while end > start and data[end - 1] in _EDGE:
            end -= 1
        self.work.walked += (start - first) + 1
        if start == end:
            return start, end
        floor = max(floor, 0)
        if start > floor and data[start - 1] in chars:
            start = self.run_left(run, start, floor)
        if end < len(data) and data[end] in chars:
            end = self.run_right(run, end)
        return start, end


# A line with more matches of one pattern than this is hidden whole, and so are the SKIP
# bytes after a stretch of WINDOW bytes with more than MAX_MATCHES_PER_WINDOW matches of
# one pattern (`_Scan.matches`). Code has a handful per line and per page; text that
# reaches these is data (generated, minified, or a file of nothing but secrets).
MAX_MATCHES_PER_LINE = 32
MAX_MATCHES_PER_WINDOW = 32
WINDOW = 4096
SKIP = 16384
# google-re2's anchors, for calling RE2 without its per-match wrapper (`_Scan.matches`).
_UNANCHORED = re2._Anchor.UNANCHORED
_ANCHOR_START = re2._Anchor.ANCHOR_START
_ANCHOR_BOTH = re2._Anchor.ANCHOR_BOTH
# A match longer than this is hidden whole rather than split into its groups (`_token_spans`).
_LONG_MATCH = 4096

# Characters a token is made of: a match is widened over these so a secret is hidden whole
# even where a translated pattern stops early (RE2 has no `(?!\w)`).
_TOKEN_RUN = _compile(r"[A-Za-z0-9_\-]*")
_TOKEN_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
# A JWT's signature follows a dot and may hold base64 padding; detect-secrets' pattern
# ends with a lazy group and so reports the token without it.
_JWT_RUN = _compile(r"[A-Za-z0-9_\-.+/=]*")
_JWT_CHARS = _TOKEN_CHARS | frozenset(b".+/=")
# Delimiters some detect-secrets patterns consume around the token (`(?:\s|=|:|"|^)`).
_EDGE = frozenset(b" \t\r\f\v\"'`=:,;()[]{}<>")


# ---- detect-secrets' regex plugins on RE2 --------------------------------------------


@dataclass(frozen=True)
class _PluginRule:
    """One pattern of a detect-secrets regex plugin, compiled for RE2."""

    name: str
    regex: Any
    find: Any  # the same pattern without its groups
    run: Any
    chars: frozenset[int]
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
    RE2's limit of 1000 become open-ended, which can only hide more. Python's `re` only
    rewrites the pattern's source here; it never runs on a text."""
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
                find = _compile(_translate(pattern), capture=False)
            except re2.error:
                untranslated.append(f"{cls.__name__}: {pattern.pattern}")
                continue
            rules.append(
                _PluginRule(
                    cls.__name__,
                    regex,
                    find,
                    _JWT_RUN if jwt else _TOKEN_RUN,
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


def _token_spans(
    scan: _Scan,
    regex: Any,
    run: Any,
    chars: frozenset[int],
    check: Callable[[str], bool] | None = None,
    find: Any = None,
) -> Iterator[Span]:
    """Each match of `regex` (its groups if it has any), widened over `run`'s characters.

    A match inside the token the previous widening already covered adds nothing and is
    skipped, and a widening stops leftwards where the previous one ended: each byte is
    walked over once per rule, however many matches one long token holds.
    """
    covered_start, covered_end = -1, -1
    for found in scan.matches(regex if find is None or not regex.groups else find):
        if find is not None and regex.groups:
            # Groups are found on the match alone, and only on a short one: for a match
            # longer than that (one pattern's `.+` can take a whole line) the whole
            # match is hidden, which covers every group in it.
            start, end = found[0]
            if end - start <= _LONG_MATCH:
                found = regex._regexp.Match(_ANCHOR_BOTH, scan.data, start, end)
        spans = [(s, e) for s, e in found[1:] if s >= 0 and e > s] or found[:1]
        for start, end in spans:
            if covered_start <= start and end <= covered_end:
                continue
            if check is not None and not check(scan.value(start, end)):
                continue
            start, end = scan.widen(start, end, run, chars, covered_end - 1)
            if start < end:
                yield start, end
                if end > covered_end:
                    covered_start, covered_end = start, end


def _plugin_spans(scan: _Scan) -> Iterator[Span]:
    for rule in PLUGIN_RULES:
        yield from _token_spans(scan, rule.regex, rule.run, rule.chars, rule.check, rule.find)


def _extra_token_spans(scan: _Scan) -> Iterator[Span]:
    yield from _token_spans(scan, _EXTRA_TOKENS, _TOKEN_RUN, _TOKEN_CHARS)


# ---- PEM private keys ----------------------------------------------------------------

_KEY_LABEL = r"[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?"
_BEGIN = rf"-{{4,5}} ?BEGIN {_KEY_LABEL} ?-{{4,5}}"
_END = rf"-{{4,5}} ?END {_KEY_LABEL} ?-{{4,5}}"
_PEM_BLOCK = _compile_multiline(rf"(?s){_BEGIN}.*?{_END}")
_PEM_BEGIN = _compile(_BEGIN + "|PuTTY-User-Key-File-[0-9]+:")
_PEM_END = _compile(_END)

# A line that can only be part of a key's body: base64 (possibly inside a string literal
# with a `\n` escape and concatenation), or an RFC 1421 / PuTTY header such as
# `Proc-Type: ...`, with something on it besides spaces and tabs. Written out once forwards
# and once backwards (each piece reversed, in reverse order), so that the run of body lines
# after a BEGIN and the run before an END are each one anchored RE2 match; a test checks
# that both directions accept the same lines.
_KEY_HEADERS = (
    "Proc-Type",
    "DEK-Info",
    "Comment",
    "Encryption",
    "Private-Lines",
    "Public-Lines",
    "Private-MAC",
    "Key-Derivation",
)
_OPEN = "[\"'+,(]"
_OPENS = "[ \\t\"'+,(]*"
_CLOSE = "[\"'+,;)\\\\]"
_CLOSES = "[ \\t\"'+,;)\\\\]*"
_B64 = "[A-Za-z0-9+/=]+"
_HEADER = "(?:" + "|".join(_KEY_HEADERS) + "|Argon2-[A-Za-z]+):[^\\n]*"
_HEADER_BACKWARDS = "[^\\n]*:(?:" + "|".join(h[::-1] for h in _KEY_HEADERS) + "|[A-Za-z]+-2nogrA)"
_CORE = f"(?:{_B64}(?:\\\\n)?|{_HEADER})"
_CORE_BACKWARDS = f"(?:(?:n\\\\)?{_B64}|{_HEADER_BACKWARDS})"
KEY_BODY_LINE = f"[ \\t]*(?:{_OPEN}{_OPENS}{_CORE}?{_CLOSES}|{_CORE}{_CLOSES}|{_CLOSE}{_CLOSES})"
KEY_BODY_LINE_BACKWARDS = (
    f"(?:{_CLOSES}{_CORE_BACKWARDS}?{_OPENS}{_OPEN}|{_CLOSES}{_CORE_BACKWARDS}"
    f"|{_CLOSES}{_CLOSE})[ \\t]*"
)
# From the end of a marker's line: the run of body lines after it (forwards), or, on the
# reversed text from the start of the marker's line, the run before it.
_BODY_AFTER = _compile_multiline(f"(?m)(?:\\n(?:{KEY_BODY_LINE})$)*")
# The reversed text is not UTF-8 (a character's bytes come last byte first): that pattern
# runs on bytes (Latin-1), where `[^\n]` is any byte but a newline, as it is any character
# but a newline forwards.
_BODY_BEFORE = _compile_multiline(f"(?m)(?:\\n(?:{KEY_BODY_LINE_BACKWARDS})$)*", latin1=True)


def _pem_spans(scan: _Scan) -> list[Span]:
    """Whole BEGIN...END blocks, and blocks cut open at either end (a dangling BEGIN or
    END): from the marker through the run of key-body lines next to it."""
    data = scan.data
    if b"PRIVATE KEY" not in data and b"PuTTY-User-Key-File" not in data:
        return []
    blocks = [found[0] for found in scan.matches(_PEM_BLOCK, cap=False)]
    spans = list(blocks)
    starts = [s for s, _ in blocks]

    def inside(pos: int) -> bool:
        i = bisect.bisect_right(starts, pos) - 1
        return i >= 0 and pos < blocks[i][1]

    # Markers on one line share the run next to it: found once per line.
    runs: dict[int, int] = {}

    def body_after(stretch: Span) -> Span:
        return stretch[0], scan.run_right(_BODY_AFTER, stretch[1])

    def body_before(stretch: Span) -> Span:
        return scan.run_left(_BODY_BEFORE, stretch[0], 0), stretch[1]

    for found in scan.matches(_PEM_BEGIN, grow=body_after):
        start = found[0][0]
        if inside(start):
            continue
        _, line_end = scan.line(start)
        if line_end not in runs:
            runs[line_end] = scan.run_right(_BODY_AFTER, line_end)
        spans.append((start, runs[line_end]))
    runs = {}
    for found in scan.matches(_PEM_END, grow=body_before):
        start, end = found[0]
        if inside(start):
            continue
        line_start, _ = scan.line(start)
        if line_start not in runs:
            runs[line_start] = scan.run_left(_BODY_BEFORE, line_start, 0)
        spans.append((runs[line_start], end))
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


_VALUE_GROUPS = ("dq", "sq", "bq", "bare")


def _value_groups(regex: Any) -> list[tuple[int, bool]]:
    """(group number, quoted) of the value groups `regex` has, in `_VALUE`'s order."""
    index = regex.groupindex
    return [(index[name], name != "bare") for name in _VALUE_GROUPS if name in index]


def _value_span(found: list[Span], groups: list[tuple[int, bool]]) -> tuple[Span, bool] | None:
    for group, quoted in groups:
        start, end = found[group]
        if start >= 0:
            return (start, end), quoted
    return None


_ASSIGNMENT_RULES = [(regex, _value_groups(regex)) for regex in (_ASSIGNMENT, _CALL, _COMPARED)]


def _assignment_spans(scan: _Scan, path: str) -> Iterator[Span]:
    code = _is_code(path)
    for regex, groups in _ASSIGNMENT_RULES:
        for found in scan.matches(regex):
            value = _value_span(found, groups)
            if value is None:
                continue
            (start, end), quoted = value
            if _is_value(scan.value(start, end), quoted, code):
                yield start, end


_ENV_VALUE = _group_index(_ENV_LINE, "value")


def _env_spans(scan: _Scan) -> Iterator[Span]:
    for found in scan.matches(_ENV_LINE):
        start, end = found[_ENV_VALUE]
        # The pattern starts at the line's start (`^`), so the line before the value is
        # the match before it.
        if start < end and not scan.data[found[0][0] : start].lstrip().startswith(b"#"):
            yield start, end


_NETRC_VALUE = _group_index(_NETRC, "value")


def _netrc_spans(scan: _Scan, path: str) -> Iterator[Span]:
    netrc = PurePosixPath(path).name.lower() in _NETRC_NAMES
    # Whether the line has a `machine`/`login`/`default` word, asked once per line.
    context: dict[int, bool] = {}
    for found in scan.matches(_NETRC):
        if not netrc:
            line_start, line_end = scan.line(found[0][0])
            if line_start not in context:
                scan.work.walked += line_end - line_start
                words = _NETRC_CONTEXT.search(scan.data, line_start, line_end)
                context = {line_start: words is not None}
            if not context[line_start]:
                continue
        yield found[_NETRC_VALUE]


_AUTH_SCHEME_VALUE = _group_index(_AUTH_SCHEME, "value")
_AUTH_HEADER_VALUE = _group_index(_AUTH_HEADER, "value")


def _auth_spans(scan: _Scan) -> Iterator[Span]:
    for found in scan.matches(_AUTH_SCHEME):
        start, end = found[_AUTH_SCHEME_VALUE]
        value = scan.value(start, end)
        # `Bearer <token>`, not prose such as "basic usage": a token has a digit or is long.
        if len(value) >= 8 and (len(value) >= 20 or any(c.isdigit() for c in value)):
            yield start, end
    for found in scan.matches(_AUTH_HEADER):
        start, end = found[_AUTH_HEADER_VALUE]
        if _is_value(scan.value(start, end), quoted=False, code=False):
            yield start, end


_URL_VALUE = _group_index(_URL_USERINFO, "value")


def _url_spans(scan: _Scan) -> Iterator[Span]:
    for found in scan.matches(_URL_USERINFO):
        start, end = found[_URL_VALUE]
        if end - start != 1:  # not a lone `:`, which the pattern needs at least
            yield start, end


# ---- high-entropy strings --------------------------------------------------------------


@dataclass(frozen=True)
class _EntropyRule:
    plugin: HighEntropyStringsPlugin
    regex: Any
    groups: list[tuple[int, bool]]


def _entropy_rules() -> list[_EntropyRule]:
    rules = []
    for plugin in (Base64HighEntropyString(), HexHighEntropyString()):
        # Fewer distinct characters than 2**limit cannot reach the limit: skip them in RE2.
        shortest = max(2, math.ceil(2**plugin.entropy_limit))
        chars = re.escape(plugin.charset)
        regex = _compile(
            rf"\"(?P<dq>[{chars}]{{{shortest},}})\"|'(?P<sq>[{chars}]{{{shortest},}})'"
        )
        rules.append(_EntropyRule(plugin, regex, _value_groups(regex)))
    return rules


_ENTROPY_RULES = _entropy_rules()
# detect-secrets' own UUID filter pattern (`is_potential_uuid`), run on RE2 like the rest.
_UUID = _compile("(?i)" + heuristic._get_uuid_regex().pattern)


def _entropy_spans(scan: _Scan) -> Iterator[Span]:
    for rule in _ENTROPY_RULES:
        for found in scan.matches(rule.regex):
            value_span = _value_span(found, rule.groups)
            if value_span is None:
                continue
            (start, end), _ = value_span
            value = scan.value(start, end)
            if (
                rule.plugin.calculate_shannon_entropy(value) > rule.plugin.entropy_limit
                and not is_sequential_string(value)
                and _UUID.search(value) is None
            ):
                yield start, end


# ---- all rules -----------------------------------------------------------------------


def _char_spans(text: str, data: bytes, spans: list[Span]) -> list[Span]:
    """Byte offsets into `data` (`text` in UTF-8) as character offsets into `text`, for
    sorted, disjoint spans: one pass, decoding each stretch between offsets once."""
    if len(data) == len(text):
        return spans
    out: list[Span] = []
    byte_pos = char_pos = 0
    for start, end in spans:
        char_pos += len(data[byte_pos:start].decode("utf-8"))
        first = char_pos
        char_pos += len(data[start:end].decode("utf-8"))
        byte_pos = end
        out.append((first, char_pos))
    return out


def find_secrets(text: str, path: str = "", work: Work | None = None) -> list[Span]:
    """Character spans of `text` to hide, sorted and merged where they overlap. `work`, if
    given, adds up what the search cost (see `Work`)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # RE2 scans UTF-8; a lone surrogate (possible in a JSON question) becomes one `?`,
        # which keeps every character's index.
        text = text.encode("utf-8", "replace").decode("utf-8")
    scan = _Scan(text, work if work is not None else Work())
    spans: list[Span] = []
    spans.extend(_pem_spans(scan))
    spans.extend(_plugin_spans(scan))
    spans.extend(_extra_token_spans(scan))
    spans.extend(_entropy_spans(scan))
    spans.extend(_assignment_spans(scan, path))
    spans.extend(_netrc_spans(scan, path))
    spans.extend(_auth_spans(scan))
    spans.extend(_url_spans(scan))
    if is_env_file(path):
        spans.extend(_env_spans(scan))
    spans.extend(scan.capped)
    # Each rule yields its spans in order, so this sort merges a few sorted runs.
    merged: list[Span] = []
    for start, end in sorted(s for s in spans if s[0] < s[1]):
        if merged and start < merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return _char_spans(text, scan.data, merged)
