"""Where a workspace's files live on its host, and making or removing that folder.

A home is `<storage_root>/<escaped user>/<escaped workspace>` on the workspace's Docker
host, bind-mounted into the container. It outlives containers: stop, start and container
removal keep it; only deleting the workspace with `delete_data_on_remove` removes it.

Its layout: the home is mounted at the image user's HOME, the git working tree is
`work/` in it (`SpawnerSettings.work_dir`) and Codeyard's private state `.codeyard/`
beside the tree, so the user's tools in the tree never reach it. `.codeyard-layout`
(written last) says a home has that layout. A home without it was made when the home
was the working tree itself; the home helper converts it on its next start
(`clone.CONVERT_SCRIPT`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from codeyard.placement.hosts import DockerHost

# Escaped names use only [a-z0-9-], so this can never collide with a named workspace.
DEFAULT_SERVER_DIR = "_default"

#: The layout a home made or converted now has; spawner state remembers it per workspace.
HOME_LAYOUT = 2
#: The file in a home that says it has `HOME_LAYOUT`; its content is that number.
LAYOUT_MARKER = ".codeyard-layout"


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


def home_layout(home: HomeLocation) -> int | None:
    """None if the home is not there, else its layout: `HOME_LAYOUT`, or 1 (the home is
    the working tree itself) when it has no marker."""
    if not os.path.lexists(home.path):
        return None
    try:
        with open(os.path.join(home.path, LAYOUT_MARKER), encoding="utf-8") as fh:
            return int(fh.read().strip() or 1)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return 1


def make_empty_home(home: HomeLocation, uid: int, work_dir: str = "work") -> bool:
    """Create an empty home owned by `uid`, with its empty working tree `work_dir` and
    the layout marker, unless it exists; return whether it was made."""
    ensure_user_dir(home, uid)
    if os.path.lexists(home.path):
        return False
    partial = os.path.join(home.user_dir, f".{home.home_name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    os.mkdir(partial, 0o755)
    tree = os.path.join(partial, work_dir)
    os.makedirs(tree, 0o755)
    marker = os.path.join(partial, LAYOUT_MARKER)
    with open(marker, "w", encoding="utf-8") as fh:
        fh.write(f"{HOME_LAYOUT}\n")
    if os.geteuid() != uid:
        for folder, _dirs, files in os.walk(partial):
            os.chown(folder, uid, uid)
            for name in files:
                os.chown(os.path.join(folder, name), uid, uid)
    os.rename(partial, home.path)
    return True


def remove_home(home: HomeLocation) -> None:
    shutil.rmtree(home.path, ignore_errors=True)
    shutil.rmtree(os.path.join(home.user_dir, f".{home.home_name}.partial"), ignore_errors=True)
