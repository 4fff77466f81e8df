"""The host's mounts under a test's folder: the per-home quota's loop mounts, the warm pool's
slot binds and the storage root's shared bind are made in the host's mount namespace, so a
test that made them lists them here and undoes them, deepest first, before it removes the
folder."""

from __future__ import annotations

import subprocess
from pathlib import Path


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root` in this (the host's) mount namespace, deepest first."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target == str(root) or target.startswith(f"{root}/"):
                found.append(target)
    return sorted(set(found), key=len, reverse=True)


def unmount_all_under(root: Path) -> None:
    """Lazily unmount everything at or below `root` (a loop device goes with its mount)."""
    for target in mounts_under(root):
        subprocess.run(["umount", "-l", target], check=False)
