"""The workspace side of pulling and pushing with the credential stored in the Hub: the git
credential helper (`git/credential_helper.py`), run by real git, and how the manager names
it per command. The Hub side, with a real Hub, a real workspace container and a remote that
needs a credential, is tests/hub/test_git_push_credential.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from jpconfig import closed_port

from codeyard.server_extension.git import credential_helper
from codeyard.server_extension.git.manager import CodeyardGit, GitManager, _auth_message

HELPER = [sys.executable, "-I", credential_helper.__file__]
HUB_ENV = {
    "JUPYTERHUB_USER": "ws-alice",
    "JUPYTERHUB_SERVER_NAME": "proj",
}


def run_helper(op: str, stdin: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HELPER, op],
        input=stdin,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **env},
        timeout=60,
        check=False,
    )


def test_store_and_erase_keep_nothing_and_print_nothing() -> None:
    for op in ("store", "erase"):
        done = run_helper(op, "protocol=https\nhost=h\nusername=u\npassword=p\n\n", {})
        assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_get_is_only_for_http_remotes_and_only_under_a_hub() -> None:
    done = run_helper("get", "protocol=ssh\nhost=h\n\n", {})
    assert done.stdout == "" and done.stderr == ""
    done = run_helper("get", "protocol=https\nhost=h\n\n", {})
    assert done.returncode == 0 and done.stdout == ""
    assert done.stderr.startswith(f"{credential_helper.MARK} {credential_helper.HUB_FAILED}")


def test_the_hub_url_names_the_user_and_server_escaped() -> None:
    env = {**HUB_ENV, "JUPYTERHUB_API_URL": "http://hub:8081/hub/api/", "JUPYTERHUB_USER": "a/b"}
    url = credential_helper.fill_url(env, "https", "git.example.com:8443")
    assert url == (
        "http://hub:8081/hub/api/codeyard/workspaces/a%2Fb/proj/git-credential"
        "?protocol=https&host=git.example.com%3A8443"
    )
    unnamed = credential_helper.fill_url({**env, "JUPYTERHUB_SERVER_NAME": ""}, "http", "h")
    assert "/workspaces/a%2Fb//git-credential?" in unnamed


def test_real_git_asks_the_helper_and_never_prompts_when_the_hub_is_down(
    tmp_path: Path,
) -> None:
    """git's own `credential fill` with the helper named as the manager names it: the Hub
    address is a closed loopback port (a real refused connection)."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{closed_port()}/hub/api",
        credential_helper.TOKEN_ENV: "server-token",
        **HUB_ENV,
    }
    # The user's own helper would answer; the manager's empty value first drops it.
    (tmp_path / ".gitconfig").write_text("[credential]\n\thelper = !echo password=users-own\n")
    helper = "!" + " ".join(HELPER)
    done = subprocess.run(
        [
            "git",
            "-c",
            "credential.helper=",
            "-c",
            f"credential.helper={helper}",
            "credential",
            "fill",
        ],
        input="protocol=https\nhost=git.example.com\n\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert f"{credential_helper.MARK} {credential_helper.HUB_FAILED}" in done.stderr
    assert "users-own" not in done.stdout
    assert "terminal prompts disabled" in done.stderr or "could not read" in done.stderr


def test_the_manager_names_the_helper_only_under_a_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_SERVER_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTERHUB_USER", "ws-alice")
    manager = GitManager(tmp_path, CodeyardGit(), audit=None)  # type: ignore[arg-type]
    assert manager.remote_access() == ((), {})

    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://127.0.0.1:1/hub/api")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "server-token")
    monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "proj")
    config, env = manager.remote_access()
    assert config[0] == "credential.helper="
    assert config[1].startswith("credential.helper=!") and "credential_helper.py" in config[1]
    assert "server-token" not in " ".join(config)
    assert env[credential_helper.TOKEN_ENV] == "server-token"
    assert "JUPYTERHUB_API_TOKEN" not in env
    assert env["JUPYTERHUB_SERVER_NAME"] == "proj"

    off = GitManager(tmp_path, CodeyardGit(hub_credentials=False), audit=None)  # type: ignore[arg-type]
    assert off.remote_access() == ((), {})


@pytest.mark.parametrize(
    "outcome, words",
    [
        ("given", "refused the git credential stored for this workspace in the Hub"),
        ("none-stored", "none is stored for this workspace in the Hub"),
        ("refused", "only to its repository's own host"),
        ("denied", "the Hub did not accept this server's token"),
        ("hub-failed", "the Hub could not be asked"),
        (None, "refused the credentials (or none were available)"),
    ],
)
def test_auth_errors_say_what_the_helper_saw(outcome: str | None, words: str) -> None:
    err = "fatal: Authentication failed for 'https://h/r.git/'\n"
    if outcome:
        err = f"{credential_helper.MARK} {outcome}\n{err}"
    message = _auth_message(err, "origin", "push")
    assert words in message, message
    assert "https://h" not in message
