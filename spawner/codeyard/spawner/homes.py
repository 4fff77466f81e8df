"""Where a workspace's files live on its host, and making or removing that folder.

A home is `<storage_root>/<escaped user>/<escaped workspace>` on the workspace's Docker
host, bind-mounted into the container. It outlives containers: stop, start and container
removal keep it; only deleting the workspace with `delete_data_on_remove` removes it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from codeyard.placement.hosts import DockerHost

# Escaped names use only [a-z0-9-], so this can never collide with a named workspace.
DEFAULT_SERVER_DIR = "_default"


@dataclass(frozen=True)
class HomeLocation:
    host: DockerHost
    user_dir_name: str
    home_name: str

    @property
    def user_dir(self) -> str:
        return os.path.join(self.host.storage_root, self.user_dir_name)

    @property
    def path(self) -> str:
        return os.path.join(self.user_dir, self.home_name)


def can_prepare_locally(host: DockerHost, uid: int) -> bool:
    """The Hub can make this home itself: same file system, and allowed to chown to `uid`."""
    return host.storage_is_local and os.geteuid() in (0, uid)


def ensure_user_dir(home: HomeLocation, uid: int) -> None:
    """Make the user's folder, owned by `uid`, so a helper running as `uid` can work in it.

    The home helper clones as the workspace user (never root), and it makes, renames and
    removes homes inside this folder. An existing folder owned by someone else (an older
    Hub made them as root) is handed over.
    """
    os.makedirs(home.user_dir, mode=0o755, exist_ok=True)
    st = os.stat(home.user_dir)
    if (st.st_uid, st.st_gid) != (uid, uid) and os.geteuid() != uid:
        os.chown(home.user_dir, uid, uid)


def make_empty_home(home: HomeLocation, uid: int) -> bool:
    """Create an empty home owned by `uid` unless it exists; return whether it was made."""
    ensure_user_dir(home, uid)
    if os.path.lexists(home.path):
        return False
    partial = os.path.join(home.user_dir, f".{home.home_name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    os.mkdir(partial, 0o755)
    if os.geteuid() != uid:
        os.chown(partial, uid, uid)
    os.rename(partial, home.path)
    return True


def remove_home(home: HomeLocation) -> None:
    shutil.rmtree(home.path, ignore_errors=True)
    shutil.rmtree(os.path.join(home.user_dir, f".{home.home_name}.partial"), ignore_errors=True)
