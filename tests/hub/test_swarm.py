"""A workspace on a Docker Swarm, for real: the project Hub places it on a swarm host (three
namespace machines, `support.swarm`) and it runs as a Swarm service.

The swarm is registered once, by its manager's TLS endpoint, as kind "swarm" with region
"far"; two nodes carry the node label `codeyard.region=far`, the third `near`, so the region
constraint decides where the task may go. The Hub's own engine (`local`) is drained, so
placement must choose the swarm. Homes live on storage every node mounts (one folder of this
box bind-mounted into each machine's own mount namespace); the Hub never reads it.

What the workspace then does proves each part: Swarm starts the task on a `far` node with
the profile's limits and a host-mode port (dnsrr: no IPVS here); the proxy reaches that
node's port (Lab page, tree); the container reaches the Hub API and the gateway (explain,
with the shared vLLM); stop removes the service and start makes a new one that finds the
files; and `docker node update --availability drain` on the task's node makes Swarm start
the task on the other `far` node, where the spawner's poll finds it (new node address, new
port) and updates the Hub's route, so the same URL answers again with the same files.

The tests run in file order and share one Hub, one swarm and one workspace.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from conftest import HubLauncher
from support.browser import Browser, signed_in, user_token
from support.contents_api import write_text
from support.hub import HubProcess
from support.hub_workspaces import (
    explain_from_workspace,
    registry_of,
    server_model,
    spawn_and_time,
    stop,
)
from support.machines import can_run_machines
from support.swarm import Swarm, running_swarm

from codeyard.placement.models import ServerState

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
WS = "flock"
HOST = "swarm1"
# The Hub polls every few seconds (JupyterHub's default is 30), so a move is followed soon.
SITE_CONFIG = """
c.Spawner.args = ["--CodeyardLLM.explain_max_tokens=60"]
c.Spawner.poll_interval = 3
"""
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def swarm(image: str) -> Iterator[Swarm]:
    if why := can_run_machines():
        pytest.skip(f"namespace machines unavailable: {why}")
    started = time.monotonic()
    with running_swarm(3) as sw:
        print(f"\nswarm of 3 nodes up in {time.monotonic() - started:.1f}s")
        regions = [(sw.nodes[0], "far"), (sw.nodes[1], "far"), (sw.nodes[2], "near")]
        for node, region in regions:
            sw.label(node, "codeyard.region", region)
        # Only where a workspace may run (the region constraint keeps it off `near`): each
        # copy is a gigabyte written, and removed again at the end.
        far = [node for node, region in regions if region == "far"]
        took = sw.load_image(image, far)
        print(f"image {image} loaded into the {len(far)} far nodes in {took:.1f}s")
        yield sw


def _remove_user_objects(client: docker.APIClient, user: str) -> None:
    """The user's services, networks and containers on the swarm's manager (the Hub's own
    engine is cleaned by `hubs`)."""
    for s in client.services(filters={"label": f"codeyard.user={user}"}):
        client.remove_service(s["ID"])
    for n in client.networks(filters={"label": f"codeyard.user={user}"}):
        with contextlib.suppress(docker.errors.APIError):
            client.remove_network(n["Id"])
    for c in client.containers(all=True, filters={"label": f"codeyard.user={user}"}):
        client.remove_container(c["Id"], force=True)


@pytest.fixture(scope="module")
def swarm_hub(test_vllm: str, hubs: HubLauncher, users, swarm: Swarm) -> Iterator[HubProcess]:
    try:
        with hubs.running(
            "hubstate-swarm",
            extra_env={"CODEYARD_HUB_IP": "0.0.0.0"},  # the multi-machine setting
            site_config=SITE_CONFIG,
        ) as hub:
            yield hub
    finally:
        with swarm.manager.client() as c:
            for name in users.all():
                _remove_user_objects(c.api, name)


@pytest.fixture(scope="module")
def user(swarm_hub: HubProcess, users) -> Browser:
    return signed_in(swarm_hub.url, users.alice, PASSWORD)


@pytest.fixture(scope="module")
def token(user: Browser, users) -> dict[str, str]:
    return {"Authorization": f"token {user_token(user, users.alice, 'swarm')}"}


def the_service(swarm: Swarm, user: str) -> dict[str, Any]:
    with swarm.manager.client() as c:
        found = c.api.services(filters={"label": f"codeyard.user={user}"})
        assert len(found) == 1, found
        return dict(c.api.inspect_service(found[0]["ID"]))


def running_task(swarm: Swarm, service_id: str) -> dict[str, Any] | None:
    with swarm.manager.client() as c:
        tasks = c.api.tasks(filters={"service": service_id, "desired-state": "running"})
        running = [t for t in tasks if t["Status"]["State"] == "running"]
        return running[0] if running else None


def task_node_ip(swarm: Swarm, task: dict[str, Any]) -> str:
    with swarm.manager.client() as c:
        node = c.api.inspect_node(task["NodeID"])
    addr = node["Status"]["Addr"]
    if addr == "0.0.0.0":
        addr = node["ManagerStatus"]["Addr"].rsplit(":", 1)[0]
    return str(addr)


def user_networks(swarm: Swarm, user: str) -> list[dict[str, Any]]:
    """The networks on the manager labelled as `user`'s."""
    with swarm.manager.client() as c:
        return [
            dict(c.api.inspect_network(n["Id"]))
            for n in c.api.networks(filters={"label": f"codeyard.user={user}"})
        ]


def overlay_address(task: dict[str, Any], network: str) -> str:
    """The task's address on the network named `network`."""
    for attachment in task.get("NetworksAttachments") or []:
        if attachment["Network"]["Spec"]["Name"] == network:
            return str(attachment["Addresses"][0].split("/")[0])
    raise LookupError(f"task is not on {network}: {task.get('NetworksAttachments')}")


def run_in_task(swarm: Swarm, task: dict[str, Any], cmd: list[str]) -> tuple[int, str]:
    """`docker exec` in the task's container, on the node that runs it."""
    node = swarm.node_of(task_node_ip(swarm, task))
    cid = task["Status"]["ContainerStatus"]["ContainerID"]
    with node.client() as c:
        ex = c.api.exec_create(cid, cmd)
        out = c.api.exec_start(ex).decode("utf-8", "replace")
        return c.api.exec_inspect(ex["Id"])["ExitCode"], out


# From inside a workspace: one GET straight to the address (no proxy), status or error.
PROBE = r"""
import json, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=4) as r:
        print(json.dumps({"status": r.status}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "detail": str(e)}))
"""

# The no_new_privs flag of the workspace's Jupyter server (what its kernels inherit); not
# pid 1 (tini, whose own arguments name the server) and not this probe.
SERVER_NNP = r"""
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) in (1, os.getpid()):
        continue
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        continue
    if b"jupyterhub-singleuser" in cmd:
        print([l.split()[1] for l in status.splitlines() if l.startswith("NoNewPrivs")][0])
        break
"""


def probe(swarm: Swarm, task: dict[str, Any], url: str) -> dict[str, Any]:
    code, out = run_in_task(swarm, task, ["python3", "-c", PROBE, url])
    assert code == 0, out
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_register_the_swarm_and_drain_local(swarm_hub: HubProcess, swarm: Swarm) -> None:
    registry = registry_of(swarm_hub)
    server = registry.add_server(swarm.registration(HOST, region="far"))
    assert server["kind"] == "swarm" and server["storage_shared"] is True, server
    # the Hub's address on the test bridge: every node routes to it the same way
    assert server["addresses"]["hub_connect_ip"] == swarm.manager.gateway, server
    assert registry.set_state("local", ServerState.draining)["state"] == "draining"


def test_workspace_runs_as_a_swarm_service(
    swarm_hub: HubProcess, user: Browser, swarm: Swarm, users
) -> None:
    TIMES["spawn"] = spawn_and_time(swarm_hub, user, users.alice, WS)
    print(f"\nspawn to ready on the swarm: {TIMES['spawn']:.1f}s")
    status = user.api("GET", f"/codeyard/workspaces/{users.alice}/{WS}/status").json()
    assert status["state"] == "RUNNING" and status["host"] == HOST, status

    service = the_service(swarm, users.alice)
    spec = service["Spec"]
    assert spec["EndpointSpec"]["Mode"] == "dnsrr", spec["EndpointSpec"]
    assert [p["PublishMode"] for p in spec["EndpointSpec"]["Ports"]] == ["host"]
    template = spec["TaskTemplate"]
    # the "small" profile: 1 CPU and 2 GiB, the memory reserved
    assert template["Resources"]["Limits"]["NanoCPUs"] == 1_000_000_000, template
    assert template["Resources"]["Limits"]["MemoryBytes"] == 2 << 30, template
    assert template["Resources"]["Reservations"]["MemoryBytes"] == 2 << 30, template
    assert template["Placement"]["Constraints"] == ["node.labels.codeyard.region==far"]
    container = template["ContainerSpec"]
    assert container["User"] == "1000:1000" and container["ReadOnly"] is True, container
    assert container["CapabilityDrop"] == ["ALL"], container
    env = dict(e.split("=", 1) for e in container["Env"])
    hub_url = f"http://{swarm.manager.gateway}:{swarm_hub.hub_port}"
    assert env["JUPYTERHUB_API_URL"] == f"{hub_url}/hub/api", env
    assert "172.17.0.1" not in " ".join(env.values())

    task = running_task(swarm, service["ID"])
    assert task is not None
    node = task_node_ip(swarm, task)
    assert node in (swarm.nodes[0].ip, swarm.nodes[1].ip), f"{node} is not a far node"
    assert status.get("node") == node, status


def test_lab_page_and_tree_through_the_proxy(
    swarm_hub: HubProcess, user: Browser, token: dict[str, str], users
) -> None:
    base = f"{swarm_hub.url}/user/{users.alice}/{WS}/"
    page = user.s.get(f"{base}lab", timeout=60)
    assert page.status_code == 200 and page.url == f"{base}lab", page.status_code
    r = requests.get(
        f"{base}codeyard/api/tree", params={"path": "", "depth": "2"}, headers=token, timeout=60
    )
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["entries"], list)


def test_explain_through_the_gateway(swarm_hub: HubProcess, token: dict[str, str], users) -> None:
    base = f"{swarm_hub.url}/user/{users.alice}/{WS}"
    body, elapsed = explain_from_workspace(swarm_hub, base, token)
    assert body["text"].strip() and body["usage"]["completion_tokens"] > 0, body
    print(f"\nexplain from the swarm in {elapsed:.1f}s")


def test_files_survive_stop_and_start_on_shared_storage(
    swarm_hub: HubProcess, user: Browser, token: dict[str, str], swarm: Swarm, users
) -> None:
    base = f"{swarm_hub.url}/user/{users.alice}/{WS}"
    write_text(base, "notes.txt", "keep me", token)
    first_id = the_service(swarm, users.alice)["ID"]

    stop(swarm_hub, user, users.alice, WS)
    with swarm.manager.client() as c:
        assert c.api.services(filters={"label": f"codeyard.user={users.alice}"}) == []
    assert user_networks(swarm, users.alice) == []  # the workspace's network went with it
    TIMES["restart"] = spawn_and_time(swarm_hub, user, users.alice, WS)
    print(f"\nrestart on the swarm: {TIMES['restart']:.1f}s")
    assert the_service(swarm, users.alice)["ID"] != first_id  # a new service
    r = requests.get(f"{base}/api/contents/notes.txt", headers=token, timeout=30)
    assert r.status_code == 200 and r.json()["content"] == "keep me", r.text

    # The file is on the shared storage (what every node mounts), not under the storage
    # root on this box, which stays an empty mount point.
    found = list(Path(swarm.shared).rglob("notes.txt"))  # wherever the layout puts it
    assert len(found) == 1 and found[0].read_text() == "keep me", found
    assert not any(Path(swarm.storage_root).iterdir())
    for node in swarm.nodes:
        seen = swarm.on_node(node, "find", swarm.storage_root, "-name", "notes.txt")
        assert seen.stdout.strip(), f"{node.name} does not see the home: {seen}"


def test_each_workspace_has_its_own_network_and_cannot_reach_another(
    swarm_hub: HubProcess, user: Browser, swarm: Swarm, users
) -> None:
    """Overlay networks cannot turn inter-container traffic off, so each workspace is alone
    on its own; bob's server answers on his overlay address to himself, never to alice."""
    bob = signed_in(swarm_hub.url, users.bob, PASSWORD)
    spawn_and_time(swarm_hub, bob, users.bob, WS)

    nets = {}
    tasks = {}
    for name in (users.alice, users.bob):
        service = the_service(swarm, name)
        [attached] = service["Spec"]["TaskTemplate"]["Networks"]
        [net] = user_networks(swarm, name)
        assert attached["Target"] == net["Id"], (attached, net)
        assert net["Driver"] == "overlay" and net["Scope"] == "swarm", net
        assert net["Attachable"] is False, net
        assert net["Name"] == f"{service['Spec']['Name']}-net", net
        nets[name] = net
        task = running_task(swarm, service["ID"])
        assert task is not None
        tasks[name] = task
        # The task is on its own network only (the node's gateway bridge is implicit).
        on = {a["Network"]["Spec"]["Name"] for a in task["NetworksAttachments"]}
        assert on == {net["Name"]}, on
        # no-new-privileges, set by the command (the spec has no field for it at API 1.41)
        container = service["Spec"]["TaskTemplate"]["ContainerSpec"]
        assert container["Args"][:2] == ["setpriv", "--no-new-privs"], container["Args"]
        code, out = run_in_task(swarm, task, ["python3", "-c", SERVER_NNP])
        assert code == 0 and out.strip() == "1", out
    assert nets[users.alice]["Id"] != nets[users.bob]["Id"]

    bob_ip = overlay_address(tasks[users.bob], nets[users.bob]["Name"])
    alice_ip = overlay_address(tasks[users.alice], nets[users.alice]["Name"])
    url = f"http://{bob_ip}:8888/user/{users.bob}/{WS}/api"
    # Bob's server listens there: he reaches it on his own overlay address ...
    assert probe(swarm, tasks[users.bob], url).get("status") == 200
    # ... and alice, on her own network, does not; nor does bob reach alice.
    refused = probe(swarm, tasks[users.alice], url)
    assert "status" not in refused and refused.get("error"), refused
    back = probe(swarm, tasks[users.bob], f"http://{alice_ip}:8888/user/{users.alice}/{WS}/api")
    assert "status" not in back and back.get("error"), back
    print(
        f"\nalice {alice_ip} on {nets[users.alice]['Name']}, bob {bob_ip} on"
        f" {nets[users.bob]['Name']}: alice -> bob {refused['error']}"
    )

    stop(swarm_hub, bob, users.bob, WS)
    with swarm.manager.client() as c:
        assert c.api.services(filters={"label": f"codeyard.user={users.bob}"}) == []
    assert user_networks(swarm, users.bob) == []
    assert len(user_networks(swarm, users.alice)) == 1  # alice's stays with her workspace


def test_a_drained_node_moves_the_workspace_and_the_route_follows(
    swarm_hub: HubProcess, user: Browser, token: dict[str, str], swarm: Swarm, users
) -> None:
    service = the_service(swarm, users.alice)
    before = running_task(swarm, service["ID"])
    assert before is not None
    old_node = swarm.node_of(task_node_ip(swarm, before))
    old_route = server_model(swarm_hub, users.alice, WS)
    base = f"{swarm_hub.url}/user/{users.alice}/{WS}"

    started = time.monotonic()
    swarm.drain(old_node)
    try:
        deadline = started + 180
        while True:
            after = running_task(swarm, service["ID"])
            if after is not None and after["ID"] != before["ID"]:
                break
            assert time.monotonic() < deadline, "swarm did not move the task"
            time.sleep(0.5)
        moved = time.monotonic() - started
        new_ip = task_node_ip(swarm, after)
        assert new_ip != old_node.ip
        # the constraint holds: the other far node, never the near one
        assert new_ip in (swarm.nodes[0].ip, swarm.nodes[1].ip), new_ip

        # Through the same URL: the spawner's poll finds the new node and port, and
        # updates the route.
        while True:
            try:
                r = requests.get(f"{base}/api/contents/notes.txt", headers=token, timeout=10)
                if r.status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"not reachable again\n{swarm_hub.log_tail()}"
            time.sleep(1)
        TIMES["move"] = time.monotonic() - started
        print(
            f"\ndrain of {old_node.name}: task moved in {moved:.1f}s,"
            f" reachable through the proxy after {TIMES['move']:.1f}s"
        )
        assert r.json()["content"] == "keep me", r.text
        status = user.api("GET", f"/codeyard/workspaces/{users.alice}/{WS}/status").json()
        assert status["state"] == "RUNNING" and status["node"] == new_ip, status
        # the Hub never saw the workspace stop: same server, new address
        now = server_model(swarm_hub, users.alice, WS)
        assert now is not None and now["ready"] and now["started"] == old_route["started"]
        page = user.s.get(f"{base}/lab", timeout=60)
        assert page.status_code == 200, page.status_code
    finally:
        swarm.activate(old_node)
    stop(swarm_hub, user, users.alice, WS)
