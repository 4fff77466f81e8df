"""Each workspace home is its own small file system: a full home is refused at once and
stops nothing else. Real Hub, real dockerd, real workspace containers, real loop mounts.

The Hub runs with `home_quota = "64M"` (`docs/home-quota.md`): every home is an ext4 image
loop-mounted at the home folder by the quota helper container. What the tests fill is that
64 MiB file system, never the machine's disk. They read what the kernel does, from inside the
workspace (`fallocate`, `dd`, `df`) and on the host (mountinfo, the image file's blocks).
The tests share one Hub and run in order: alice's home is filled, then used while full.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from conftest import Users, running_hub
from support.browser import Browser, signed_in, start_workspace
from support.hub import REPO, HubProcess
from support.machines import can_run_machines, start_machines
from support.mounts import mounts_under, unmount_all_under
from support.processes import run_last_line

from codeyard.spawner import home_quota

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
WS = "quota"
QUOTA = 64 * 1024 * 1024
SITE_CONFIG = """
c.PlacementSpawner.home_quota = "64M"
c.PlacementSpawner.home_quota_keep_free = "256M"
c.PlacementSpawner.delete_data_on_remove = True
"""


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory,
    image: str,
    proxy_command: str,
    users: Users,
    docker_client: docker.APIClient,
) -> Iterator[HubProcess]:
    state = tmp_path_factory.mktemp("hubstate-quota")
    try:
        with running_hub(
            state, image, proxy_command, users, docker_client, site_config=SITE_CONFIG
        ) as proc:
            yield proc
    finally:
        # The homes' loop mounts and the storage root's shared bind are the host's: undo
        # them (each loop device goes with its mount) so nothing outlives the test.
        unmount_all_under(state / "homes")


@pytest.fixture(scope="module")
def browsers(hub: HubProcess, users: Users) -> dict[str, Browser]:
    return {name: signed_in(hub.url, name, PASSWORD) for name in users.all()}


@pytest.fixture(scope="module")
def alice(hub: HubProcess, users: Users, browsers: dict[str, Browser]) -> dict[str, Any]:
    auth = start_workspace(hub, browsers[users.alice], users.alice, WS)
    return {"auth": auth, "base": f"{hub.url}/user/{users.alice}/{WS}"}


def home_of(hub: HubProcess, user: str) -> Path:
    return hub.state_dir / "homes" / user / WS


def container_of(docker_client: docker.APIClient, user: str) -> dict[str, Any]:
    found = docker_client.containers(
        filters={"label": [f"codeyard.user={user}", f"codeyard.workspace={WS}"]}
    )
    assert len(found) == 1, found
    return dict(docker_client.inspect_container(found[0]["Id"]))


def home_in_container(info: dict[str, Any], home: Path) -> str:
    """Where the container sees the home folder (whatever the workspace layout)."""
    for mount in info["Mounts"]:
        if mount["Source"] == str(home):
            return str(mount["Destination"])
    raise AssertionError(f"{home} is not mounted in {info['Name']}: {info['Mounts']}")


def run_in(docker_client: docker.APIClient, info: dict[str, Any], script: str) -> tuple[int, str]:
    """Run a shell script in the workspace container as its own user; exit code and output."""
    ex = docker_client.exec_create(info["Id"], ["sh", "-c", script], user=info["Config"]["User"])
    out = docker_client.exec_start(ex).decode("utf-8", "replace")
    return docker_client.exec_inspect(ex["Id"])["ExitCode"], out


def is_mount_point(path: Path) -> bool:
    return str(path) in mounts_under(path)


def test_home_is_a_file_system_of_the_quota_size(
    hub: HubProcess, users: Users, alice: dict[str, Any], docker_client: docker.APIClient
) -> None:
    home = home_of(hub, users.alice)
    image = home.with_name(f"{WS}.img")
    assert is_mount_point(home), mounts_under(hub.state_dir)
    fs = os.statvfs(home)
    assert fs.f_blocks * fs.f_frsize <= QUOTA
    # Preallocated: the image holds its whole size on the host's disk from the start.
    st = image.stat()
    assert st.st_size == QUOTA and st.st_blocks * 512 >= QUOTA
    info = container_of(docker_client, users.alice)
    inside = home_in_container(info, home)
    code, out = run_in(docker_client, info, f"df -B1 --output=size {inside} | tail -1")
    assert code == 0 and int(out.split()[-1]) <= QUOTA, out


def test_fallocate_past_the_quota_is_refused_at_once(
    hub: HubProcess, users: Users, alice: dict[str, Any], docker_client: docker.APIClient
) -> None:
    home = home_of(hub, users.alice)
    info = container_of(docker_client, users.alice)
    inside = home_in_container(info, home)
    code, out = run_in(
        docker_client,
        info,
        f"cd {inside} && s=$(date +%s%N); fallocate -l 128M big; rc=$?; e=$(date +%s%N);"
        ' echo "rc=$rc ms=$(( (e - s) / 1000000 ))"; rm -f big',
    )
    assert code == 0, out
    assert "No space left on device" in out, out
    m = re.search(r"rc=(\d+) ms=(\d+)", out)
    assert m and m.group(1) != "0", out
    assert int(m.group(2)) < 1000, f"fallocate took {m.group(2)} ms: {out}"
    image = home.with_name(f"{WS}.img")
    assert image.stat().st_size == QUOTA, "the image grew past its quota"


def test_dd_past_the_quota_is_refused_and_the_home_stays_full(
    hub: HubProcess, users: Users, alice: dict[str, Any], docker_client: docker.APIClient
) -> None:
    home = home_of(hub, users.alice)
    info = container_of(docker_client, users.alice)
    inside = home_in_container(info, home)
    code, out = run_in(
        docker_client, info, f"dd if=/dev/zero of={inside}/fill bs=1M count=128 2>&1"
    )
    assert code != 0 and "No space left on device" in out, out
    assert (home / "fill").stat().st_size < QUOTA
    # The last blocks, one at a time, so that not even a small file fits any more.
    code, out = run_in(docker_client, info, f"dd if=/dev/zero of={inside}/fill2 bs=1k 2>&1")
    assert code != 0 and "No space left on device" in out, out
    fs = os.statvfs(home)
    assert fs.f_bavail == 0, "the home should be full now"
    assert home.with_name(f"{WS}.img").stat().st_size == QUOTA


def test_the_hub_answers_and_starts_another_workspace_while_a_home_is_full(
    hub: HubProcess,
    users: Users,
    browsers: dict[str, Browser],
    alice: dict[str, Any],
    git_server: Any,
) -> None:
    full = os.statvfs(home_of(hub, users.alice))
    assert full.f_bavail == 0, "alice's home is not full"
    assert requests.get(f"{hub.url}/hub/health", timeout=10).status_code == 200
    assert requests.get(f"{hub.url}/hub/api", timeout=10).status_code == 200
    # The Hub's own state still takes writes: a new token is a database row.
    r = browsers[users.alice].api("POST", f"/users/{users.alice}/tokens", json={"note": "full"})
    assert r.status_code == 201, r.text
    # Bob's is cloned: the clone is made as without a quota, then copied into his image.
    r = browsers[users.bob].api(
        "POST",
        f"/users/{users.bob}/servers/{WS}",
        json={"profile": "small", "repo_url": git_server.url("project.git")},
    )
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + 300
    while not (hub.api("GET", f"/users/{users.bob}").json()["servers"].get(WS) or {}).get("ready"):
        assert time.monotonic() < deadline, f"bob's workspace not ready\n{hub.log_tail()}"
        time.sleep(0.5)
    home = home_of(hub, users.bob)
    assert is_mount_point(home)
    assert list(home.rglob("README.md")), sorted(str(p) for p in home.rglob("*"))[:20]
    bob_home = os.statvfs(home)
    assert bob_home.f_bavail * bob_home.f_frsize > QUOTA // 2


def test_a_full_home_gets_507_from_the_extension_not_500(
    hub: HubProcess, users: Users, alice: dict[str, Any]
) -> None:
    diff = "--- /dev/null\n+++ b/new.py\n@@ -0,0 +1 @@\n+print('no room')\n"
    r = requests.post(
        f"{alice['base']}/codeyard/api/patch/apply",
        json={"diff": diff},
        headers=alice["auth"],
        timeout=60,
    )
    assert r.status_code == 507, r.text
    assert r.json()["error"] == "state_unwritable", r.text


def _wait_stopped(hub: HubProcess, user: str) -> None:
    deadline = time.monotonic() + 120
    while hub.api("GET", f"/users/{user}").json()["servers"].get(WS):
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.3)


def test_files_survive_stop_start_and_a_host_restart(
    hub: HubProcess,
    users: Users,
    browsers: dict[str, Browser],
    alice: dict[str, Any],
    docker_client: docker.APIClient,
) -> None:
    home = home_of(hub, users.alice)
    info = container_of(docker_client, users.alice)
    inside = home_in_container(info, home)
    code, out = run_in(
        docker_client, info, f"rm -f {inside}/fill {inside}/fill2 && echo kept > {inside}/keep"
    )
    assert code == 0, out
    b = browsers[users.alice]
    r = b.api("DELETE", f"/users/{users.alice}/servers/{WS}")
    assert r.status_code in (202, 204), r.text
    _wait_stopped(hub, users.alice)
    # A stop keeps the home mounted; a host restart does not. Unmount it as a reboot would:
    # the folder on the host's own disk is then empty.
    assert is_mount_point(home)
    subprocess.run(["umount", str(home)], check=True)
    assert not is_mount_point(home) and not (home / "keep").exists()
    start_workspace(hub, b, users.alice, WS)
    assert is_mount_point(home), "the start did not mount the home again"
    assert (home / "keep").read_text() == "kept\n"
    info = container_of(docker_client, users.alice)
    code, out = run_in(docker_client, info, f"cat {home_in_container(info, home)}/keep")
    assert code == 0 and out == "kept\n", out


def test_deleting_the_workspace_unmounts_and_removes_the_image(
    hub: HubProcess, users: Users, browsers: dict[str, Browser], alice: dict[str, Any]
) -> None:
    home = home_of(hub, users.alice)
    image = home.with_name(f"{WS}.img")
    assert image.exists() and is_mount_point(home)
    st = image.stat()
    # losetup names a backing file by its device and inode (its path is the helper's).
    backing = f"[{st.st_dev:04d}]:{st.st_ino} "
    r = browsers[users.alice].api(
        "DELETE", f"/users/{users.alice}/servers/{WS}", json={"remove": True}
    )
    assert r.status_code in (202, 204), r.text
    deadline = time.monotonic() + 120
    while image.exists() or is_mount_point(home):
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.3)
    # No loop device keeps the image for good. One may still be attached while a mount
    # namespace made elsewhere while the home was mounted (another test's dockerd in its
    # own namespace, a service with a private /tmp) holds a copy of the mount; it is then
    # marked to be released by the kernel when that copy goes.
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    for line in loops.splitlines():
        if backing in line:
            device = line.split(":")[0].removeprefix("/dev/")
            autoclear = Path(f"/sys/block/{device}/loop/autoclear").read_text().strip()
            assert autoclear == "1", line


def test_the_quota_helper_works_over_a_remote_engine_api(tmp_path: Path) -> None:
    """On a namespace machine (its own dockerd, network and mounts; ENVIRONMENT.md §10) the
    Hub's quota helper, driven only through the machine's TLS engine API, makes, fills,
    remounts and deletes a home there; this box never sees the mount."""
    reason = can_run_machines()
    assert reason is None, f"namespace machines cannot run here: {reason}"
    # Any image with util-linux and e2fsprogs: the offline base is small to copy over.
    base = run_last_line([str(REPO / "images" / "bin" / "build-base.sh")])
    with start_machines(1) as [machine]:
        machine.load_image(base)
        storage = machine.storage_root
        # The host admin's one-time step (docs/home-quota.md), on that machine.
        subprocess.run(
            [
                "nsenter",
                "-t",
                str(machine.pid),
                "-m",
                "sh",
                "-c",
                f"mount --make-shared {storage} && mkdir -m 755 {storage}/u"
                f" && chown 1000:1000 {storage}/u",
            ],
            check=True,
        )
        host = machine.client()
        try:
            api = host.api

            async def call(method: str, *args: Any, **kwargs: Any) -> Any:
                return await asyncio.to_thread(getattr(api, method), *args, **kwargs)

            def job(mode: str) -> home_quota.QuotaJob:
                return home_quota.QuotaJob(
                    mode=mode,
                    user_dir=f"{storage}/u",
                    home_name="w",
                    image=base,
                    name=f"quota-test-{mode}",
                    size=QUOTA,
                )

            def run(script: str) -> tuple[int, str]:
                """A workspace-like container on the machine: uid 1000, no capabilities."""
                c = api.create_container(
                    base,
                    ["sh", "-c", script],
                    user="1000:1000",
                    host_config=api.create_host_config(
                        binds={f"{storage}/u/w": {"bind": "/home/jovyan", "mode": "rw"}},
                        cap_drop=["ALL"],
                        network_mode="none",
                    ),
                )
                try:
                    api.start(c)
                    code = api.wait(c, timeout=120)["StatusCode"]
                    return code, api.logs(c).decode("utf-8", "replace")
                finally:
                    api.remove_container(c, force=True)

            out = asyncio.run(home_quota.run_quota_helper(call, api, job("mount"), 120))
            assert "made home w" in out, out
            code, out = run(
                "cd /home/jovyan && df -B1 --output=size . | tail -1;"
                " fallocate -l 100M big; echo rc=$?; rm -f big; echo kept > keep"
            )
            assert code == 0 and "No space left on device" in out and "rc=1" in out, out
            assert int(out.split()[0]) <= QUOTA, out
            # Not on this box: the storage root here stays an empty folder.
            assert not os.listdir(storage)
            # A host restart, then the start's remount: the file is back.
            asyncio.run(home_quota.run_quota_helper(call, api, job("unmount"), 120))
            assert run("cat /home/jovyan/keep 2>&1")[1].strip() != "kept"
            asyncio.run(home_quota.run_quota_helper(call, api, job("mount"), 120))
            assert run("cat /home/jovyan/keep") == (0, "kept\n")
            asyncio.run(home_quota.run_quota_helper(call, api, job("delete"), 120))
            code, out = run("ls -a /home/jovyan")
            assert "keep" not in out, out
            listing = machine_ls(machine, f"{storage}/u")
            assert "w.img" not in listing and "w" in listing, listing
        finally:
            host.close()


def machine_ls(machine: Any, path: str) -> list[str]:
    """A folder's names as the machine sees it (inside its own mount namespace)."""
    out = subprocess.run(
        ["nsenter", "-t", str(machine.pid), "-m", "ls", "-A", path],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()
