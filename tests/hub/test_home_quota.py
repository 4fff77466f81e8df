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

from codeyard.placement.hosts import DockerHost
from codeyard.spawner import home_quota
from codeyard.spawner.homes import HomeLocation

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


# ---- the Hub's own machine: the mount check, attach and detach in-process ------------------

SLOT = "0123456789abcdef01234567"


def _make_image(path: Path, size: str = "16M") -> None:
    subprocess.run(["truncate", "-s", size, str(path)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(path)], check=True)


def _loop_mount(image: Path, at: Path) -> None:
    """Mount `image` at `at` as the quota helper does (a loop device, nosuid,nodev)."""
    dev = subprocess.run(
        ["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        subprocess.run(["mount", "-t", "ext4", "-o", "nosuid,nodev", dev, str(at)], check=True)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)  # released with the mount


@pytest.fixture
def local_home(tmp_path: Path) -> Iterator[HomeLocation]:
    """Alice's home `w` under a storage root in `tmp_path`, its image made, not mounted; a
    warm slot beside it. Every mount under `tmp_path` is undone afterwards."""
    root = tmp_path / "homes"
    (root / "alice" / "w").mkdir(parents=True)
    (root / ".pool" / SLOT).mkdir(parents=True)
    _make_image(root / "alice" / "w.img")
    host = DockerHost(name="local", storage_root=str(root), storage_is_local=True)
    try:
        yield HomeLocation(host, "alice", "w")
    finally:
        unmount_all_under(tmp_path)


def test_in_process_mount_check_wants_the_homes_own_image(
    local_home: HomeLocation, tmp_path: Path
) -> None:
    home = Path(local_home.path)
    assert home_quota.hub_can_mount(local_home.host)
    assert not home_quota.home_is_mounted(local_home)
    # Some other file system at the home is not its quota: the helper is left to decide.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "nosuid,nodev", "tmpfs", str(home)], check=True)
    assert not home_quota.home_is_mounted(local_home)
    subprocess.run(["umount", str(home)], check=True)
    other = tmp_path / "other.img"
    _make_image(other)
    _loop_mount(other, home)
    assert not home_quota.home_is_mounted(local_home), "another image's file system"
    subprocess.run(["umount", str(home)], check=True)
    _loop_mount(home.with_name("w.img"), home)
    assert home_quota.home_is_mounted(local_home)
    # The home's place planted as a symlink to its mounted folder: not the home.
    subprocess.run(["umount", str(home)], check=True)
    home.with_name("w-real").mkdir()
    _loop_mount(home.with_name("w.img"), home.with_name("w-real"))
    home.rmdir()
    home.symlink_to(home.with_name("w-real"))
    assert not home_quota.home_is_mounted(local_home)


def test_in_process_attach_binds_the_home_and_never_follows_a_symlink(
    local_home: HomeLocation, tmp_path: Path
) -> None:
    home = Path(local_home.path)
    root = Path(local_home.host.storage_root)
    slot = root / ".pool" / SLOT
    # Not mounted: refused, nothing made in the slot.
    with pytest.raises(home_quota.QuotaUnavailable, match="not mounted"):
        home_quota.attach_locally(local_home, str(slot), "jovyan", 1000)
    assert os.listdir(slot) == []
    _loop_mount(home.with_name("w.img"), home)
    (home / "mine.txt").write_text("mine")
    # A symlink the warm container left at the home's name goes; its target stays as it was.
    precious = tmp_path / "precious"
    precious.mkdir()
    (slot / "jovyan").symlink_to(precious)
    home_quota.attach_locally(local_home, str(slot), "jovyan", 1000)
    assert str(slot / "jovyan") in mounts_under(slot)
    assert (slot / "jovyan" / "mine.txt").read_text() == "mine"
    assert os.listdir(precious) == [] and str(precious) not in mounts_under(tmp_path)
    with pytest.raises(home_quota.QuotaUnavailable, match="already holds a home"):
        home_quota.attach_locally(local_home, str(slot), "jovyan", 1000)
    home_quota.detach_locally(str(root), str(slot), "jovyan")
    assert mounts_under(slot) == [] and os.listdir(slot / "jovyan") == []
    home_quota.detach_locally(str(root), str(slot), "jovyan")  # idempotent
    assert is_mount_point(home) and (home / "mine.txt").read_text() == "mine"
    # A slot planted as a symlink (to a folder elsewhere): refused, nothing mounted there.
    other_slot = root / ".pool" / ("f" * 24)
    other_slot.symlink_to(precious)
    with pytest.raises(OSError):
        home_quota.attach_locally(local_home, str(other_slot), "jovyan", 1000)
    assert os.listdir(precious) == [] and mounts_under(precious) == []
    # Only a hex slot under the storage root's `.pool` is a slot at all.
    with pytest.raises(ValueError):
        home_quota.attach_locally(local_home, str(root / "alice"), "jovyan", 1000)
    with pytest.raises(ValueError):
        home_quota.attach_locally(local_home, str(slot), "../jovyan", 1000)


def test_the_quota_helper_attaches_and_detaches_a_home_in_a_slot(
    tmp_path: Path, image: str, docker_client: docker.APIClient
) -> None:
    """The helper path that hosts other than the Hub's own take (`attach`/`detach` modes),
    driven here through the local engine: the helper binds the mounted home into a slot,
    the bind reaches the host, and `detach` takes it away again."""
    root = tmp_path / "homes"
    (root / "u").mkdir(parents=True)
    os.chown(root / "u", 1000, 1000)
    slot = root / ".pool" / SLOT
    slot.mkdir(parents=True)
    os.chown(slot, 1000, 1000)
    try:
        assert home_quota.ensure_shared_mount(str(root))

        async def call(method: str, *args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(getattr(docker_client, method), *args, **kwargs)

        def run(mode: str, slot_dir: str = "", slot_home: str = "") -> str:
            job = home_quota.QuotaJob(
                mode=mode,
                user_dir=str(root / "u"),
                home_name="w",
                image=image,
                name=f"quota-slot-test-{mode}-{SLOT[:6]}",
                size=QUOTA,
                slot_dir=slot_dir,
                slot_home=slot_home,
            )
            return asyncio.run(home_quota.run_quota_helper(call, docker_client, job, 120))

        assert "made home w" in run("mount")
        home = root / "u" / "w"
        (home / "mine.txt").write_text("mine")
        assert "attached" in run("attach", str(slot), "jovyan")
        assert str(slot / "jovyan") in mounts_under(slot)
        assert (slot / "jovyan" / "mine.txt").read_text() == "mine"
        run("detach", str(slot), "jovyan")
        assert mounts_under(slot) == []
        run("detach", str(slot), "jovyan")  # idempotent
        assert is_mount_point(home) and (home / "mine.txt").read_text() == "mine"
        run("delete")
        assert not is_mount_point(home) and not (root / "u" / "w.img").exists()
    finally:
        unmount_all_under(tmp_path)
