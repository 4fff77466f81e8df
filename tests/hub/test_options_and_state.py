"""Fast checks of the pieces the end-to-end test cannot reach cheaply: option parsing,
secret files, and what the spawner keeps in its state."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from hub_secrets import ensure_secret

from codeyard.placement.hosts import LocalHostProvider, UnknownHost
from codeyard.spawner import PlacementSpawner
from codeyard.spawner.profiles import InvalidOptions, SizeProfile, WorkspaceOptions

PROFILES = {
    "small": SizeProfile.from_config("small", {"cpu": 1, "mem": "2G"}),
    "large": SizeProfile.from_config("large", {"cpu": 4, "mem": "8G"}),
}
IMAGES = {"Default": "codeyard/singleuser:abc"}


def parse(**opts: str) -> WorkspaceOptions:
    return WorkspaceOptions.parse(
        opts,
        profiles=PROFILES,
        default_profile="small",
        images=IMAGES,
        default_image="Default",
        git_schemes={"https", "git", "ssh"},
    )


def test_empty_options_give_the_default_profile_and_image() -> None:
    opts = parse()
    assert (opts.profile.name, opts.image_key, opts.repo_url) == ("small", "Default", "")
    assert opts.profile.mem_bytes == 2 * 1024**3


def test_git_url_and_branch_are_kept() -> None:
    opts = parse(repo_url="https://git.example.com/a/b.git", branch="release/1.2")
    assert opts.to_user_options() == {
        "profile": "small",
        "image": "Default",
        "repo_url": "https://git.example.com/a/b.git",
        "branch": "release/1.2",
    }
    assert parse(repo_url="git@git.example.com:a/b.git").repo_url.startswith("git@")


@pytest.mark.parametrize(
    "opts, message",
    [
        ({"image": "codeyard/singleuser:abc"}, "not offered"),  # the tag itself is not a key
        ({"profile": "huge"}, "Unknown size profile"),
        ({"repo_url": "file:///etc/passwd"}, "Unsupported git URL"),
        ({"repo_url": "-uhttps://x"}, "may not start with '-'"),
        ({"repo_url": "https://x/y z"}, "spaces"),
        ({"repo_url": "https://x/y.git", "branch": "--upload-pack=evil"}, "branch"),
        ({"repo_url": "https://x/y.git", "branch": "a..b"}, "branch"),
        ({"branch": "main"}, "needs a git URL"),
        ({"cmd": "bash"}, "Unknown workspace options"),
    ],
)
def test_options_beyond_what_the_admin_offers_are_refused(opts, message) -> None:
    with pytest.raises(InvalidOptions, match=message):
        parse(**opts)


def test_bad_profile_config_is_refused() -> None:
    with pytest.raises(ValueError, match="bad mem"):
        SizeProfile.from_config("x", {"cpu": 1, "mem": "lots"})
    with pytest.raises(ValueError, match="cpu must be positive"):
        SizeProfile.from_config("x", {"cpu": 0, "mem": "1G"})


def test_secret_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    first = ensure_secret(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ensure_secret(path) == first and len(first) == 64


def test_a_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_text("abc\n")
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="0600"):
        ensure_secret(str(path))


def make_spawner(**kw) -> PlacementSpawner:
    user = SimpleNamespace(name="alice", url="/user/alice/", settings={})
    return PlacementSpawner(user=user, **kw)


def test_host_and_home_survive_clear_state_so_a_stop_restarts_on_the_same_host() -> None:
    sp = make_spawner()
    sp.load_state(
        {
            "object_id": "abc",
            "object_name": "codeyard-alice--proj",
            "host": "local",
            "home_ready": True,
        }
    )
    sp.clear_state()
    state = sp.get_state()
    assert state["host"] == "local" and state["home_ready"] is True


def test_an_unknown_saved_host_is_reported_not_replaced() -> None:
    sp = make_spawner()
    sp.load_state({"host": "gone-host"})
    with pytest.raises(UnknownHost):
        sp.host  # noqa: B018


def test_clients_and_pools_are_per_host(tmp_path: Path) -> None:
    a = LocalHostProvider(base_url="unix:///tmp/a.sock", storage_root=str(tmp_path)).host
    b = LocalHostProvider(base_url="unix:///tmp/b.sock", storage_root=str(tmp_path)).host
    from codeyard.spawner import clients

    assert clients.client_for(a) is clients.client_for(a)
    assert clients.client_for(a) is not clients.client_for(b)
    assert clients.executor_for(a, 4) is not clients.executor_for(b, 4)
    assert clients.client_for(a).trust_env is False
    assert clients.client_for(a)._version == "1.41"


def test_allow_any_image_is_refused() -> None:
    with pytest.raises(Exception, match="allow-list"):
        make_spawner(allowed_images="*")
