"""The panel's Git section in Chromium: branch, changed files from any writer, a commit whose
message the real model proposes and the user edits, the history, and the clear refusals of
a pull and a push when the branch and its remote have diverged.

The lab here is one of its own (`git_lab`), whose root is a git repository with a remote
(a bare repository on disk), so the other panel tests' lab is not a repository. The model
is the real SmolLM2 behind the real gateway; the tests assert on what git then holds, never
on the model's wording.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CodeyardPanel, Lab, _note_console, _stop, start_lab

SECTION = "#codeyard-ai-panel .cy-section-git"
GIT = ["git", "-c", "user.name=Colleague", "-c", "user.email=colleague@example.com"]


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def git_lab(
    labextension_dir: Path,
    model_stack: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Lab]:
    """A lab whose root is a clone of a bare repository (`origin`), on branch main."""
    base = tmp_path_factory.mktemp("git-lab")
    seed = base / "seed"
    seed.mkdir()
    (seed / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    git("init", "-q", "-b", "main", cwd=seed)
    git("add", ".", cwd=seed)
    git("commit", "-q", "-m", "first version of calc", cwd=seed)
    git("clone", "-q", "--bare", str(seed), str(base / "origin.git"), cwd=base)
    gateway_url, user_token = model_stack
    (base / "lab").mkdir()
    running = start_lab(base / "lab", labextension_dir, gateway_url, user_token)
    # The lab's root becomes a clone in place (the server watches that very folder).
    root = running.root
    git("init", "-q", "-b", "main", cwd=root)
    git("remote", "add", "origin", str(base / "origin.git"), cwd=root)
    git("fetch", "-q", "origin", cwd=root)
    git("reset", "-q", "--hard", "origin/main", cwd=root)
    git("branch", "-q", "--set-upstream-to=origin/main", "main", cwd=root)
    git("config", "user.name", "Panel User", cwd=root)
    git("config", "user.email", "panel@example.com", cwd=root)
    yield running
    _stop(running.proc)


@pytest.fixture
def git_page(browser: Any, git_lab: Lab, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.console_errors = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: _note_console(pg, m))
    pg.workspace = f"ui-git-{secrets.token_hex(3)}"  # type: ignore[attr-defined]
    pg.goto(git_lab.url(f"lab/workspaces/{pg.workspace}?reset"))
    pg.wait_for_selector("#jp-main-dock-panel", state="visible", timeout=60_000)
    pg.wait_for_selector(".jp-SideBar.jp-mod-right")
    yield pg
    context.close()


def cleaned(text: str) -> str:
    """`text` as `git commit -F -` keeps it (cleanup mode `whitespace`): trailing spaces
    dropped, runs of blank lines made one, no blank lines at either end."""
    lines: list[str] = []
    for line in text.splitlines():
        line = line.rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip("\n")


def section_text(page: Any, part: str) -> str:
    return str(page.locator(f"{SECTION} {part}").inner_text())


def wait_text(page: Any, part: str, needle: str, timeout: float = 30_000) -> str:
    page.wait_for_function(
        """([sel, needle]) => {
            const n = document.querySelector(sel);
            return n && n.textContent.includes(needle);
        }""",
        arg=[f"{SECTION} {part}", needle],
        timeout=timeout,
    )
    return section_text(page, part)


def test_commit_with_the_proposed_message_then_the_history_shows_it(
    git_page: Any, git_lab: Lab, shot: Any
) -> None:
    page, root = git_page, git_lab.root
    (root / "calc.py").write_text(
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
    )
    panel = CodeyardPanel(page, git_lab)
    panel.open()
    section = page.locator(SECTION)
    section.scroll_into_view_if_needed()
    assert "main" in wait_text(page, ".cy-git-branch", "tracks origin/main")
    wait_text(page, ".cy-git-files", "calc.py")
    assert section.locator('.cy-git-file[data-letter="M"]').count() == 1

    # A file written by another writer (a terminal, say) shows up on Refresh.
    (root / "NOTES.md").write_text("notes\n")
    section.locator(".cy-git-refresh").click()
    wait_text(page, ".cy-git-files", "NOTES.md")
    assert section.locator('.cy-git-file[data-letter="?"]').count() == 1
    assert wait_text(page, ".cy-git-summary", "2 changed files")

    # The model proposes; the user edits; the commit holds exactly the edited text.
    message = section.locator(".cy-git-message")
    assert message.input_value() == ""
    assert section.locator(".cy-git-commit").is_disabled()
    section.locator(".cy-git-propose").click()
    status = wait_text(page, ".cy-git-status", "Proposed a message", timeout=300_000)
    assert "2 files" in status, status
    proposed = message.input_value()
    assert proposed.strip(), "the model proposed an empty message"
    shot(page, "proposed")
    message.click()
    page.keyboard.press("Control+End")
    page.keyboard.type("\n\nReviewed in the panel.")
    edited = message.input_value()
    assert edited.startswith(proposed) and edited.endswith("Reviewed in the panel.")
    section.locator(".cy-git-commit").click()
    assert "Committed" in wait_text(page, ".cy-git-status", "Committed")

    body = git("log", "-1", "--format=%B", cwd=root)
    assert cleaned(body) == cleaned(edited)
    assert git("status", "--porcelain", cwd=root) == ""
    head = git("rev-parse", "--short", "HEAD", cwd=root)
    subject = git("log", "-1", "--format=%s", cwd=root)
    # The history lists it first, and the changed files are gone.
    wait_text(page, ".cy-git-log", head)
    first = section.locator(".cy-git-commit-row").first
    assert first.locator(".cy-git-short").inner_text() == head
    # HTML shows runs of spaces as one.
    assert first.locator(".cy-git-subject").inner_text() == " ".join(subject.split())
    assert "Panel User" in first.locator(".cy-git-when").inner_text()
    assert section.locator(".cy-git-commit-row").count() == 2
    assert wait_text(page, ".cy-git-summary", "No changes.")
    assert message.input_value() == ""
    assert "1 to push" in section_text(page, ".cy-git-branch")

    # Push: the remote has the commit.
    section.locator(".cy-git-push").click()
    assert "Pushed main to origin/main" in wait_text(page, ".cy-git-status", "Pushed")
    remote = root.parent.parent / "origin.git"
    assert git("rev-parse", "--short", "main", cwd=remote) == head
    shot(page, "committed")
    assert page.console_errors == [], page.console_errors


def test_a_diverged_pull_and_a_rejected_push_say_so_and_change_nothing(
    git_page: Any, git_lab: Lab, shot: Any, tmp_path: Path
) -> None:
    page, root = git_page, git_lab.root
    # A colleague pushes; meanwhile a local commit is made in a terminal.
    other = tmp_path / "colleague"
    git("clone", "-q", str(root.parent.parent / "origin.git"), str(other), cwd=tmp_path)
    (other / "calc.py").write_text("def add(a, b):\n    return b + a\n")
    git("commit", "-q", "-am", "colleague's change", cwd=other)
    git("push", "-q", "origin", "main", cwd=other)
    (root / "LOCAL.md").write_text("local\n")
    git("add", "LOCAL.md", cwd=root)
    git("commit", "-q", "-m", "local change", cwd=root)
    before = git("rev-parse", "HEAD", cwd=root)
    calc = (root / "calc.py").read_text()

    panel = CodeyardPanel(page, git_lab)
    panel.open()
    section = page.locator(SECTION)
    section.scroll_into_view_if_needed()
    wait_text(page, ".cy-git-log", "local change")

    section.locator(".cy-git-pull").click()
    status = wait_text(page, ".cy-git-status", "Not pulled", timeout=60_000)
    shot(page, "diverged")
    assert status.startswith("Not pulled. This branch and origin/main have diverged"), status
    assert "1 local and 1 remote commits" in status and "Nothing was changed" in status
    assert section.locator(".cy-git-status").get_attribute("role") == "alert"
    assert git("rev-parse", "HEAD", cwd=root) == before
    assert (root / "calc.py").read_text() == calc
    # The fetch updated origin/main, so the branch line now knows both sides.
    assert "1 to push, 1 to pull" in wait_text(page, ".cy-git-branch", "to pull")

    section.locator(".cy-git-push").click()
    status = wait_text(page, ".cy-git-status", "Not pushed", timeout=60_000)
    assert "has commits this branch does not have; pull first" in status, status
    assert "Nothing was pushed" in status
    assert git("rev-parse", "HEAD", cwd=root) == before
    shot(page, "rejected")
    # The two refusals are 409 answers, which Chromium logs; nothing else may be.
    unexpected = [e for e in page.console_errors if "status of 409" not in e]
    assert unexpected == [], page.console_errors
