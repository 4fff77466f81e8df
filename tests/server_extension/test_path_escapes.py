"""Every way a patch could write outside the workspace, or into `.git/`, answers 403.

Each case runs through both `patch/validate` and `patch/apply`, and afterwards neither the
workspace nor the folder outside it has changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

OUTSIDE_NAME = "outside-target"


def modify(path: str) -> str:
    return f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-a\n+b\n"


def create(path: str, quoted: bool = False) -> str:
    head = f'"b/{path}"' if quoted else f"b/{path}"
    git = f'"a/{path}" "b/{path}"' if quoted else f"a/{path} b/{path}"
    return (
        f"diff --git {git}\nnew file mode 100644\n--- /dev/null\n+++ {head}\n"
        "@@ -0,0 +1 @@\n+planted\n"
    )


def symlink(path: str, target: str) -> str:
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 120000\n--- /dev/null\n+++ b/{path}\n"
        f"@@ -0,0 +1 @@\n+{target}\n\\ No newline at end of file\n"
    )


def rename(src: str, dst: str) -> str:
    return (
        f"diff --git a/{src} b/{dst}\nsimilarity index 100%\nrename from {src}\nrename to {dst}\n"
    )


# (id, diff); "{out}" is replaced with the absolute path of a folder outside the workspace.
CASES = [
    ("dotdot", create("../escaped.txt")),
    ("dotdot-deep", create("sub/../../escaped.txt")),
    ("dotdot-traditional", "--- a/../a.txt\n+++ b/../a.txt\n@@ -1 +1 @@\n-a\n+b\n"),
    ("absolute-git", create("{out}/abs.txt")),
    ("absolute-rename", rename("a.txt", "{out}/moved.txt")),
    # Absolute before -p1 stripping: git would write them as `etc/...` inside the workspace.
    ("absolute-traditional-create", "--- /dev/null\n+++ /etc/planted\n@@ -0,0 +1 @@\n+x\n"),
    ("absolute-traditional-modify", "--- /a.txt\n+++ /a.txt\n@@ -1 +1 @@\n-a\n+b\n"),
    (
        "absolute-traditional-outside",
        "--- {out}/secret.txt\n+++ {out}/secret.txt\n@@ -1 +1 @@\n-a\n+b\n",
    ),
    (
        "absolute-git-headers",
        "diff --git /a.txt /a.txt\n--- /a.txt\n+++ /a.txt\n@@ -1 +1 @@\n-a\n+b\n",
    ),
    ("dotdot-rename", rename("a.txt", "../moved.txt")),
    ("nul-byte", create("x\\000y.txt", quoted=True)),
    ("url-encoded-dotdot", create("%2e%2e/escaped.txt")),
    ("url-encoded-slash", create("sub%2f..%2f..%2fescaped.txt")),
    ("existing-symlink-dir-outside", create("outlink/planted.txt")),
    ("existing-symlink-file-outside", modify("outfile")),
    ("symlink-inside-dir", create("inlink/planted.txt")),
    ("new-symlink-absolute", symlink("evil", "{out}")),
    ("new-symlink-relative", symlink("evil", "../..")),
    ("new-symlink-nested", symlink("sub/evil", "../../x")),
    ("new-symlink-then-write-through", symlink("hop", "sub") + create("hop/x.txt")),
    (
        "existing-symlink-retargeted-outside",
        "diff --git a/inlink b/inlink\n--- a/inlink\n+++ b/inlink\n@@ -1 +1 @@\n-sub\n"
        "\\ No newline at end of file\n+../..\n\\ No newline at end of file\n",
    ),
    # The paths of one patch share one walk of the tree (each folder is looked at once):
    # an escape after harmless files, or below a folder an earlier file went through.
    ("after-safe-files", modify("a.txt") + create("sub/new.txt") + create("outlink/p.txt")),
    ("symlink-dir-seen-twice", create("inlink/one.txt") + create("inlink/two/p.txt")),
    ("outside-below-shared-folder", modify("sub/keep.txt") + create("sub/../../p.txt")),
    ("git-dir", create(".git/hooks/pre-commit")),
    ("git-config-modify", modify(".git/config")),
    ("nested-git-dir", create("sub/.git/config")),
    ("state-dir", create(".codeyard/audit.jsonl")),
]


def snapshot(*roots: Path) -> dict[str, tuple[str, bytes]]:
    seen: dict[str, tuple[str, bytes]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            if Path(dirpath) == root and ".codeyard" in dirnames:
                dirnames.remove(".codeyard")
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                if p.is_symlink():
                    seen[str(p)] = ("link", os.fsencode(os.readlink(p)))
                elif p.is_file():
                    seen[str(p)] = ("file", p.read_bytes())
                else:
                    seen[str(p)] = ("dir", b"")
    return seen


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp(OUTSIDE_NAME)
    (folder / "secret.txt").write_bytes(b"a\n")
    return folder


@pytest.fixture
def seeded(workspace: Path, outside: Path) -> Path:
    (workspace / "a.txt").write_bytes(b"a\n")
    (workspace / "sub").mkdir()
    (workspace / "sub" / "keep.txt").write_bytes(b"a\n")
    (workspace / ".git" / "hooks").mkdir(parents=True)
    (workspace / ".git" / "config").write_bytes(b"a\n")
    (workspace / "outlink").symlink_to(outside, target_is_directory=True)
    (workspace / "outfile").symlink_to(outside / "secret.txt")
    (workspace / "inlink").symlink_to("sub", target_is_directory=True)
    return workspace


@pytest.mark.parametrize("endpoint", ["patch/validate", "patch/apply"])
@pytest.mark.parametrize(("case", "diff"), CASES, ids=[c[0] for c in CASES])
async def test_escape_gives_403_and_writes_nothing(
    api, seeded: Path, outside: Path, endpoint: str, case: str, diff: str
) -> None:
    before = snapshot(seeded, outside)
    text = diff.replace("{out}", str(outside))
    status, body = await api(endpoint, body={"diff": text})
    assert status == 403, (case, body)
    assert body["error"] == "path_forbidden"
    assert snapshot(seeded, outside) == before


async def test_base_path_escape_gives_403(api, seeded: Path) -> None:
    status, body = await api(
        "patch/validate", body={"diff": modify("a.txt"), "base": {"../x": None}}
    )
    assert status == 403
    assert body["error"] == "path_forbidden"


async def test_symlink_inside_the_workspace_may_be_created(api, seeded: Path) -> None:
    status, body = await api("patch/apply", body={"diff": symlink("sub/up", "../a.txt")})
    assert status == 200, body
    assert os.readlink(seeded / "sub" / "up") == "../a.txt"
