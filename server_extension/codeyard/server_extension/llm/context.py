"""The context builder: what the model sees about a selection, inside a token budget.

A prompt is assembled from, in order of priority:

1. the selected lines (required: if they alone do not fit, the request is refused);
2. up to N lines around them;
3. the file's header: leading comments/docstring and its import lines;
4. definitions of names the selection uses that live elsewhere in the file or workspace.

Each part is added only while the total stays under the budget, counted with the model's
own tokenizer (`TokenCounter`, tokens.py).

Before anything is cut or counted, the whole file is redacted once: secrets become
numbered placeholders (`Redactor`, redaction.py) and never leave the container. Redaction
keeps every line where it was, so the parts above are then cut from the redacted text at
the same line numbers; a key spanning the selection's edge is hidden whole, not seen half
in the selection and half in the lines after it. Definitions from other workspace files are
cut from those files redacted whole in the same way.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CodeyardError, bad_request
from ..paths import STATE_DIRNAME, WorkspacePaths
from .redaction import Redactor
from .tokens import TokenCounter

# ---- context ---------------------------------------------------------------------------


@dataclass
class Definition:
    name: str
    path: str
    start_line: int
    text: str


@dataclass
class Context:
    path: str
    start_line: int
    end_line: int
    selection: str
    before: str = ""
    before_start: int = 0
    after: str = ""
    header: str = ""
    definitions: list[Definition] = field(default_factory=list)
    tokens: int = 0
    dropped: list[str] = field(default_factory=list)
    redactor: Redactor = field(default_factory=Redactor)
    language: str = ""
    surrounding: int = 0  # lines shown on each side of the selection (asked for, then fitted)


_LANGS = {
    ".py": "python",
    ".js": "javascript",
    ".ts": "typescript",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c",
    ".h": "c",
    ".cpp": "cpp",
    ".sh": "bash",
    ".rb": "ruby",
    ".sql": "sql",
}
_IMPORT = re.compile(
    r"^\s*(?:import\s|from\s+\S+\s+import\s|#include\s|using\s|require\(|package\s|use\s)"
    r"|^\s*(?:const|let|var)\s+\w+\s*=\s*require\("
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SKIP_DIRS = {
    ".git",
    STATE_DIRNAME,
    "node_modules",
    ".venv",
    "venv",
    "__pycache__",
    ".ipynb_checkpoints",
}
# `redacted` is the word inside placeholders (`<redacted-1>`), not a name to look up.
_IGNORED_NAMES = set(keyword.kwlist) | set(dir(builtins)) | {"self", "cls", "redacted"}


def split_lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def check_range(lines: list[str], start: int | None, end: int | None) -> tuple[int, int]:
    """Validate 1-based inclusive line numbers; missing ones mean the whole file."""
    total = len(lines)
    start = 1 if start is None else start
    end = total if end is None else end
    for name, value in (("start_line", start), ("end_line", end)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad_request(f"{name} must be an integer")
    if total == 0:
        raise bad_request("the file is empty")
    if not 1 <= start <= end <= total:
        raise bad_request(f"lines must satisfy 1 <= start_line <= end_line <= {total}")
    return start, end


def file_header(
    lines: list[str], language: str, limit: int = 40, shown: list[str] | None = None
) -> str:
    """Leading comments/docstring plus the import lines anywhere at top level.

    The header is found in `lines`; its text is taken from `shown` (the same lines,
    redacted) when given, since a redacted file may no longer parse.
    """
    picked = header_lines(lines, language)[:limit]
    source = lines if shown is None else shown
    return "".join(source[i] for i in picked)


def header_lines(lines: list[str], language: str) -> list[int]:
    """Indexes (0-based) of the lines `file_header` quotes, in order."""
    head: list[int] = []
    i = 0
    if language == "python":
        text = "".join(lines)
        try:
            tree = ast.parse(text)
        except SyntaxError:
            tree = None
        if tree and tree.body and isinstance(tree.body[0], ast.Expr):
            value = tree.body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                i = tree.body[0].end_lineno or 0
                head.extend(range(i))
    while i < len(lines) and lines[i].lstrip().startswith(("#", "//", "/*", " *")):
        head.append(i)
        i += 1
    imports = [
        j
        for j in range(i, len(lines))
        if _IMPORT.match(lines[j]) and not lines[j].startswith((" ", "\t"))
    ]
    return head + imports


def used_names(selection: str) -> list[str]:
    """Identifiers the selection uses but does not define itself, in order of first use."""
    defined: set[str] = set(re.findall(r"\b(?:def|class|function|func|fn)\s+(\w+)", selection))
    seen: dict[str, None] = {}
    for name in _IDENT.findall(selection):
        if name not in _IGNORED_NAMES and name not in defined and len(name) > 1:
            seen.setdefault(name, None)
    return list(seen)


def python_definitions(text: str) -> dict[str, tuple[int, int]]:
    """Top-level and class-level `def`/`class`/assignment names -> (first, last) line."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return {}
    found: dict[str, tuple[int, int]] = {}

    def visit(body: Iterable[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                found.setdefault(node.name, (first, node.end_lineno or node.lineno))
                if isinstance(node, ast.ClassDef):
                    visit(node.body)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        found.setdefault(target.id, (node.lineno, node.end_lineno or node.lineno))

    visit(tree.body)
    return found


_OTHER_DEF = r"^\s*(?:export\s+)?(?:async\s+)?(?:def|class|function|func|fn|type|struct)\s+{name}\b"


def other_definition(lines: list[str], name: str, max_lines: int) -> tuple[int, int] | None:
    """Regex fallback for non-Python files: the definition line plus its indented block."""
    pattern = re.compile(_OTHER_DEF.format(name=re.escape(name)))
    for i, line in enumerate(lines):
        if pattern.match(line):
            indent = len(line) - len(line.lstrip())
            j = i + 1
            while j < len(lines) and j - i < max_lines:
                stripped = lines[j].strip()
                if stripped and len(lines[j]) - len(lines[j].lstrip()) <= indent:
                    if stripped in ("}", "};", "end"):
                        j += 1
                    break
                j += 1
            return i + 1, j
    return None


def redacted_lines(redactor: Redactor, text: str, rel: str, lines: list[str]) -> list[str]:
    """`text` redacted whole, as lines that match `lines` (its unredacted lines) one to one.

    Redaction keeps line structure by design; if it ever did not, line numbers would point
    at the wrong code, so the request fails rather than quote misaligned (or unredacted)
    text.
    """
    shown = split_lines(redactor.redact(text, rel))
    if len(shown) != len(lines):
        raise CodeyardError(
            500, "redaction_failed", "redacting the file changed its lines; nothing was sent"
        )
    return shown


class ContextBuilder:
    """Builds a `Context` for a file region. Pure logic over the workspace; no HTTP."""

    def __init__(
        self,
        paths: WorkspacePaths,
        counter: TokenCounter,
        *,
        budget: int = 1500,
        surrounding_lines: int = 20,
        max_definition_lines: int = 40,
        max_workspace_files: int = 2000,
        max_workspace_file_bytes: int = 512 * 1024,
    ) -> None:
        self.paths = paths
        self.counter = counter
        self.budget = budget
        self.surrounding_lines = surrounding_lines
        self.max_definition_lines = max_definition_lines
        self.max_workspace_files = max_workspace_files
        self.max_workspace_file_bytes = max_workspace_file_bytes

    def build(
        self,
        rel: str,
        text: str,
        start: int | None,
        end: int | None,
        *,
        overhead: int = 0,
        surrounding_lines: int | None = None,
    ) -> Context:
        """`surrounding_lines` is the request's `context_lines` (None: the server default)."""
        wanted = self.surrounding_lines if surrounding_lines is None else surrounding_lines
        lines = split_lines(text)
        start, end = check_range(lines, start, end)
        language = _LANGS.get(Path(rel).suffix.lower(), "")
        redactor = Redactor()
        # Structure (ranges, definitions, header) is read from `lines`; every text that goes
        # into the prompt is cut from `shown_lines`, the file redacted whole.
        shown_lines = redacted_lines(redactor, text, rel, lines)
        selection = "".join(shown_lines[start - 1 : end])
        ctx = Context(rel, start, end, selection, redactor=redactor, language=language)
        used = overhead + self.counter.count(selection)
        if used > self.budget:
            raise CodeyardError(
                413,
                "selection_too_large",
                f"the selection is about {used} tokens; the context budget is {self.budget}",
                tokens=used,
                budget=self.budget,
            )

        # Surrounding lines: shrink N until it fits.
        n = wanted
        while n > 0:
            before_start = max(1, start - n)
            before = "".join(shown_lines[before_start - 1 : start - 1])
            after = "".join(shown_lines[end : end + n])
            cost = self.counter.count(before) + self.counter.count(after)
            if used + cost <= self.budget:
                ctx.before, ctx.before_start, ctx.after = before, before_start, after
                used += cost
                break
            n //= 2
        ctx.surrounding = n
        if n < wanted:
            ctx.dropped.append(f"surrounding lines reduced to {n}")

        # The header is taken from above the visible window: what is shown is not repeated.
        above = lines[: (ctx.before_start or start) - 1]
        header = file_header(above, language, shown=shown_lines[: len(above)])
        if header.strip():
            cost = self.counter.count(header)
            if used + cost <= self.budget:
                ctx.header = header
                used += cost
            else:
                ctx.dropped.append("file header")

        shown = (ctx.before_start or start, end + (ctx.after.count("\n") if ctx.after else 0))
        found = self._definitions(
            rel, text, lines, shown_lines, used_names(selection), shown, redactor
        )
        for definition in found:
            cost = self.counter.count(definition.text) + 10
            if used + cost > self.budget:
                ctx.dropped.append(f"definition of {definition.name}")
                continue
            ctx.definitions.append(definition)
            used += cost
        ctx.tokens = used
        return ctx

    def _definitions(
        self,
        rel: str,
        text: str,
        lines: list[str],
        shown_lines: list[str],
        names: list[str],
        shown: tuple[int, int],
        redactor: Redactor,
    ) -> list[Definition]:
        found: list[Definition] = []
        missing: list[str] = []
        local = python_definitions(text) if rel.endswith(".py") else {}
        for name in names:
            span = (
                local.get(name)
                if local
                else other_definition(lines, name, self.max_definition_lines)
            )
            if span is None:
                missing.append(name)
                continue
            first, last = span
            if first >= shown[0] and last <= shown[1]:
                continue  # already visible in the selection or around it
            last = min(last, first + self.max_definition_lines - 1)
            found.append(Definition(name, rel, first, "".join(shown_lines[first - 1 : last])))
        if missing:
            found.extend(self._workspace_definitions(rel, missing, redactor))
        return found

    def _workspace_definitions(
        self, rel: str, names: list[str], redactor: Redactor
    ) -> list[Definition]:
        """Search other files of the same kind for top-level definitions of `names`; a file
        a definition is quoted from is redacted whole first, like the selected one."""
        suffix = Path(rel).suffix
        if not suffix:
            return []
        wanted = set(names)
        pattern = re.compile(
            r"^(?:export\s+)?(?:async\s+)?(?:def|class|function|func|fn)\s+("
            + "|".join(re.escape(n) for n in names)
            + r")\b|^("
            + "|".join(re.escape(n) for n in names)
            + r")\s*=",
            re.MULTILINE,
        )
        results: list[Definition] = []
        seen = 0
        root = self.paths.root
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(
                d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")
            )
            for filename in sorted(filenames):
                if not filename.endswith(suffix):
                    continue
                full = Path(dirpath) / filename
                other = full.relative_to(root).as_posix()
                if other == rel:
                    continue
                seen += 1
                if seen > self.max_workspace_files or not wanted:
                    return results
                try:
                    if full.stat().st_size > self.max_workspace_file_bytes or full.is_symlink():
                        continue
                    content = full.read_text("utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                if not pattern.search(content):
                    continue
                other_lines = split_lines(content)
                other_shown: list[str] | None = None
                spans = python_definitions(content) if suffix == ".py" else {}
                for name in sorted(wanted):
                    span = (
                        spans.get(name)
                        if spans
                        else other_definition(other_lines, name, self.max_definition_lines)
                    )
                    if span is None:
                        continue
                    first, last = span
                    last = min(last, first + self.max_definition_lines - 1)
                    if other_shown is None:
                        other_shown = redacted_lines(redactor, content, other, other_lines)
                    results.append(
                        Definition(name, other, first, "".join(other_shown[first - 1 : last]))
                    )
                    wanted.discard(name)
        return results
