"""Workspaces on a Docker Swarm: one Swarm service per workspace, on a host of kind "swarm".

A swarm is registered once, by its manager's endpoint (`DockerHost.kind == "swarm"`), and
Swarm's own scheduler picks the node inside it. `PlacementSpawner` keeps everything else
(placement, the home, the image on the manager, the environment) and hands the workspace's
object to `SwarmWorkspace` instead of creating a container:

- the **size profile** becomes the service's resources: limits (CPU, memory, pids) and a
  memory reservation, so the scheduler only picks a node with that much memory unreserved
  (`service_resources`);
- the host's **region** becomes a placement constraint on a node label
  (`placement_constraints`): register the swarm once per region it spans, each with its
  region, and the placement policy's region choice keeps the workspace on that region's
  nodes;
- this kernel has no IPVS, so neither the routing mesh nor a virtual IP works: the service
  uses `endpoint_mode=dnsrr` and publishes Jupyter's port in **host mode** on the node the
  task runs on (`endpoint_spec`). The proxy reaches the workspace at that node's address
  and the port Docker chose there (`task_address`);
- the container gets the hardening the engine path gives, as far as a Swarm service can
  carry it (`container_spec`): the home's uid, no capabilities (`CapabilityDrop`, API
  1.41), a read-only root with tmpfs folders, the pids limit in the resources.
  `no-new-privileges` has no field in a service spec before API 1.46 (Docker 20.10, the
  engine here, speaks 1.41), so the workspace's command sets it on itself instead:
  `setpriv --no-new-privs` (util-linux) runs before the server, and the kernel keeps the
  flag for every process the server starts (kernels, terminals), which cannot clear it;
- **each workspace gets its own overlay network** (`network_spec`). An overlay network
  has no switch for inter-container traffic (`enable_icc` is a bridge option), and a
  service with no network lands on its node's default bridge, where every container
  reaches every other one. Alone on its overlay, a workspace has no address another
  workspace can route to. The network is not attachable (no stand-alone container joins
  it), is made before the service and removed after it (`remove`). The task still goes
  out through the node's `docker_gwbridge` (inter-container traffic off there too), and
  the Hub's proxy reaches it through the host-mode published port on that bridge.

**When Swarm moves the task** (a node drained, a node lost, a crash restarted elsewhere),
the new task runs on another node with another published port. JupyterHub never re-routes
by itself, so the spawner's `poll()` (the Hub calls it every `Spawner.poll_interval`) finds
the running task, its node's address and port, and when they differ from the route the
Hub has it updates the server's address in the Hub's database and the proxy's route
(`SwarmWorkspace.follow_task`). The workspace keeps running and keeps its token; its files
are on storage every node mounts, so nothing is lost. Between the move and the next poll
the proxy answers 503.

Images: the service names the image by its id (`sha256:...`) when no registry is set, so a
node never tries a registry for it (a name without a registry would be looked up on Docker
Hub first); every node must then hold the image (an admin loads it). With a registry
(`ImageDistribution.registry`) the service names `<registry>/<repo>@<digest>` when the
manager pulled it from there, and each node pulls it on first use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from docker.errors import APIError, NotFound
from traitlets import Bool, Integer, List, Unicode
from traitlets.config import Configurable

if TYPE_CHECKING:
    from .spawner import PlacementSpawner

#: Node label that `placement_constraints` matches a region against.
REGION_LABEL = "codeyard.region"
#: Task states on the way to running.
STARTING = frozenset(
    {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
)
#: Desired states of a task Swarm means to run (a replacement waits in "ready" first).
LIVE = frozenset({"ready", "running"})
#: Task states that end a task.
ENDED = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})


# ---- the service spec, from the spawner's settings (pure) -----------------------------


def service_resources(
    cpu: float,
    mem_bytes: int,
    pids_limit: int = 0,
    mem_reservation: int | None = None,
    cpu_reservation: float | None = None,
) -> dict[str, Any]:
    """The service's `Resources` for a size profile: `cpu` cores and `mem_bytes` as limits,
    the pids limit, and a memory reservation (the whole limit unless `mem_reservation` says
    otherwise) so Swarm places the task only where that memory is not promised to others.
    CPU is reserved only when asked (`cpu_reservation`): it is shared, not lost, when short."""
    limits: dict[str, Any] = {}
    if cpu:
        limits["NanoCPUs"] = round(cpu * 1e9)
    if mem_bytes:
        limits["MemoryBytes"] = int(mem_bytes)
    if pids_limit:
        limits["Pids"] = int(pids_limit)
    reservations: dict[str, Any] = {}
    reserve_mem = mem_bytes if mem_reservation is None else mem_reservation
    if reserve_mem:
        reservations["MemoryBytes"] = int(reserve_mem)
    if cpu_reservation:
        reservations["NanoCPUs"] = round(cpu_reservation * 1e9)
    resources: dict[str, Any] = {}
    if limits:
        resources["Limits"] = limits
    if reservations:
        resources["Reservations"] = reservations
    return resources


def placement_constraints(
    region: str, extra: list[str] | tuple[str, ...] = (), label: str = REGION_LABEL
) -> list[str]:
    """Swarm placement constraints: the host's region as `node.labels.<label>==<region>`
    (none when the host has no region, so every node is a candidate), then `extra`."""
    constraints = []
    if region:
        constraints.append(f"node.labels.{label}=={region}")
    constraints.extend(c for c in extra if c not in constraints)
    return constraints


def endpoint_spec(port: int) -> dict[str, Any]:
    """DNS round robin (no virtual IP, which needs IPVS) and `port` published in host mode
    on the task's own node, on a port Docker picks there (no routing mesh either)."""
    return {
        "Mode": "dnsrr",
        "Ports": [{"Protocol": "tcp", "TargetPort": int(port), "PublishMode": "host"}],
    }


def tmpfs_mounts(tmpfs: Mapping[str, str]) -> list[dict[str, Any]]:
    """The engine's tmpfs folders (`{path: "rw,exec,mode=0755,uid=1000,..."}`) as Swarm
    mounts. A service's own tmpfs mount takes only a size and a mode: no owner and no
    `exec`, and under a nested bind (the home inside /home/jovyan) Docker even drops the
    mode, leaving a root-owned folder the workspace user cannot write. So each folder is
    an anonymous volume of the `local` driver with `type=tmpfs` instead, which mounts a
    tmpfs with exactly the engine path's options on the task's node and goes with it."""
    return [
        {
            "Target": target,
            "Type": "volume",
            "VolumeOptions": {
                "DriverConfig": {
                    "Name": "local",
                    "Options": {"type": "tmpfs", "device": "tmpfs", "o": options},
                }
            },
        }
        for target, options in tmpfs.items()
    ]


def bind_mounts(binds: Mapping[str, Mapping[str, str]]) -> list[dict[str, Any]]:
    """DockerSpawner's `volume_binds` (`{host path: {"bind": path, "mode": "rw"}}`) as
    Swarm bind mounts. The host path must exist on every node: shared storage."""
    return [
        {
            "Target": spec["bind"],
            "Source": source,
            "Type": "bind",
            "ReadOnly": spec.get("mode", "rw") == "ro",
        }
        for source, spec in binds.items()
    ]


#: The command prefix that sets no-new-privileges on the workspace's own process tree.
NO_NEW_PRIVS_COMMAND = ("setpriv", "--no-new-privs")


def wants_no_new_privileges(security_opt: list[str] | tuple[str, ...] | None) -> bool:
    """Whether the engine path's `security_opt` asks for no-new-privileges."""
    for opt in security_opt or ():
        key, _, value = opt.replace("=", ":").partition(":")
        if key == "no-new-privileges" and value in ("", "true"):
            return True
    return False


def network_name(service: str) -> str:
    """The name of `service`'s own overlay network."""
    return f"{service}-net"


def network_spec(service: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """The keyword arguments of `create_network` for `service`'s own overlay network:
    swarm-scoped, not attachable (only the service's task joins it), labelled like the
    service so an admin and the clean-up find it."""
    return {
        "name": network_name(service),
        "driver": "overlay",
        "attachable": False,
        "scope": "swarm",
        "labels": {**labels, "codeyard.network": "workspace", "codeyard.service": service},
    }


def container_spec(
    image: str,
    command: list[str],
    env: Mapping[str, str],
    user: str,
    labels: Mapping[str, str],
    mounts: list[dict[str, Any]],
    host_config: Mapping[str, Any],
) -> dict[str, Any]:
    """The service's `ContainerSpec` from the engine path's host config (`hardening_host_config`
    and friends): capabilities, read-only root, sysctls, and no-new-privileges through the
    command (`NO_NEW_PRIVS_COMMAND`: the spec has no field for it at API 1.41). Mounts come
    in ready-made."""
    args = list(command)
    if wants_no_new_privileges(host_config.get("security_opt")):
        args = [*NO_NEW_PRIVS_COMMAND, *args]
    spec: dict[str, Any] = {
        "Image": image,
        "Args": args,
        "Env": [f"{k}={v}" for k, v in env.items()],
        "User": user,
        "Labels": dict(labels),
        "Mounts": list(mounts),
    }
    if host_config.get("cap_drop"):
        spec["CapabilityDrop"] = list(host_config["cap_drop"])
    if host_config.get("cap_add"):
        spec["CapabilityAdd"] = list(host_config["cap_add"])
    if host_config.get("read_only"):
        spec["ReadOnly"] = True
    if host_config.get("sysctls"):
        spec["Sysctls"] = dict(host_config["sysctls"])
    return spec


def service_spec(
    name: str,
    container: dict[str, Any],
    resources: dict[str, Any],
    constraints: list[str],
    port: int,
    labels: Mapping[str, str],
    restart_attempts: int = 3,
    networks: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """The whole `ServiceSpec` (the body of POST /services/create): one replica, restarted
    on failure up to `restart_attempts` times (a clean exit is the user's stop), on the
    overlay `networks` (ids or names)."""
    template: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": resources,
        "RestartPolicy": {"Condition": "on-failure", "MaxAttempts": restart_attempts},
        "Placement": {"Constraints": constraints},
    }
    if networks:
        template["Networks"] = [{"Target": n} for n in networks]
    return {
        "Name": name,
        "Labels": dict(labels),
        "TaskTemplate": template,
        "Mode": {"Replicated": {"Replicas": 1}},
        "EndpointSpec": endpoint_spec(port),
    }


def node_address(node: Mapping[str, Any]) -> str:
    """A node's address as the manager knows it. A manager may report `0.0.0.0` in
    `Status.Addr` (it listens everywhere); its `ManagerStatus.Addr` names the real one."""
    addr = str((node.get("Status") or {}).get("Addr") or "")
    if addr in ("", "0.0.0.0"):  # noqa: S104 - a value Docker reports, not a bind
        manager = str((node.get("ManagerStatus") or {}).get("Addr") or "")
        addr = manager.rsplit(":", 1)[0] if manager else addr
    return addr


def published_port(task: Mapping[str, Any], target: int) -> int | None:
    """The host-mode port published for `target` by this task, or None (not yet)."""
    ports = ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []
    for p in ports:
        if p.get("TargetPort") == target and p.get("PublishedPort"):
            return int(p["PublishedPort"])
    return None


def current_task(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The task that stands for the workspace now: the newest Swarm means to run (during
    a move the old task is still shutting down); else the newest."""
    if not tasks:
        return None
    ordered = sorted(tasks, key=lambda t: t.get("Version", {}).get("Index", 0), reverse=True)
    wanted = [t for t in ordered if t.get("DesiredState") in LIVE]
    return (wanted or ordered)[0]


def task_problem(task: Mapping[str, Any]) -> str:
    """Why a task is not running, in words for the status API and the spawn page."""
    status = task.get("Status") or {}
    state = status.get("State", "?")
    err = status.get("Err") or status.get("Message") or ""
    exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
    text = f"swarm task {state}"
    if exit_code not in (None, 0):
        text += f" (exit code {exit_code})"
    return f"{text}: {err}" if err else text


# ---- settings ----------------------------------------------------------------------


class SwarmSettings(Configurable):
    """How workspaces on a swarm host are scheduled, as `c.SwarmSettings.<name>`."""

    region_label = Unicode(
        REGION_LABEL,
        help="""Node label that holds a node's region. A workspace placed on a swarm host
        with a region runs only on nodes with `<label>=<region>` (`docker node update
        --label-add codeyard.region=eu <node>`).""",
    ).tag(config=True)

    constrain_region = Bool(
        True,
        help="""Whether a swarm host's region becomes a placement constraint. Off: the
        region is only the placement policy's label for the whole swarm, and any node may
        run the workspace.""",
    ).tag(config=True)

    constraints = List(
        Unicode(),
        help="""More Swarm placement constraints for every workspace service, e.g.
        ["node.role==worker"] to keep workspaces off the managers, or
        ["node.labels.codeyard.workspaces==true"] for the nodes set aside for them.""",
    ).tag(config=True)

    restart_attempts = Integer(
        3,
        help="""How often Swarm restarts a workspace whose server failed (not a stop),
        possibly on another node, before it reports the workspace failed.""",
    ).tag(config=True)


# ---- one workspace's service -------------------------------------------------------


class SwarmWorkspace:
    """The Swarm service of one `PlacementSpawner`: created, waited for, found, followed
    across nodes and removed through the spawner's per-host Docker calls (`docker()`), on
    the swarm's manager."""

    def __init__(self, spawner: PlacementSpawner) -> None:
        self.spawner = spawner
        self.settings = SwarmSettings(config=spawner.config)

    @property
    def name(self) -> str:
        return str(self.spawner.object_name)

    async def service_image(self) -> str:
        """How the service names the image (see the module docstring)."""
        sp = self.spawner
        info = await sp.docker("inspect_image", sp.image)
        from .image_transfer import distribution_for, split_image

        registry = distribution_for(sp).registry
        if registry:
            repo, _tag = split_image(sp.image)
            remote = f"{registry}/{repo}@"
            for digest in info.get("RepoDigests") or []:
                if digest.startswith(remote):
                    return str(digest)
        return str(info["Id"])

    @property
    def labels(self) -> dict[str, str]:
        sp = self.spawner
        return {"codeyard.user": sp.user.name, "codeyard.workspace": sp.name or ""}

    async def spec(self, networks: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        sp = self.spawner
        host = sp.host
        labels = self.labels
        extra = sp._eval_if_callable(sp.extra_host_config)
        if asyncio.iscoroutine(extra):
            extra = await extra
        host_config = {**sp.workspace_host_config(), **(extra or {})}
        mounts = bind_mounts(sp.volume_binds) + tmpfs_mounts(host_config.get("tmpfs") or {})
        container = container_spec(
            image=await self.service_image(),
            command=await sp.get_command(),
            env=sp.get_env(),
            user=f"{sp.home_uid}:{sp.home_uid}",
            labels=labels,
            mounts=mounts,
            host_config=host_config,
        )
        mem_guarantee = int(sp.mem_guarantee) if sp.mem_guarantee else None
        resources = service_resources(
            float(sp.cpu_limit or 0),
            int(sp.mem_limit or 0),
            int(host_config.get("pids_limit") or 0),
            mem_reservation=mem_guarantee,
            cpu_reservation=float(sp.cpu_guarantee) if sp.cpu_guarantee else None,
        )
        settings = self.settings
        constraints = placement_constraints(
            host.region if settings.constrain_region else "",
            list(settings.constraints),
            label=settings.region_label,
        )
        return service_spec(
            self.name,
            container,
            resources,
            constraints,
            sp.port,
            labels,
            restart_attempts=settings.restart_attempts,
            networks=networks,
        )

    async def create(self) -> dict[str, Any]:
        """Create the service; return `{"ID": ...}`, which the spawner keeps as `object_id`."""
        sp = self.spawner
        sp.emit(38, "Creating the workspace's own overlay network")
        net_id = await self.ensure_network()
        sp.emit(40, "Creating Swarm service")
        spec = await self.spec(networks=[net_id])
        created = await sp.docker(
            "create_service",
            task_template=spec["TaskTemplate"],
            name=spec["Name"],
            labels=spec["Labels"],
            mode=spec["Mode"],
            endpoint_spec=spec["EndpointSpec"],
        )
        return {"ID": created["ID"]}

    async def ensure_network(self) -> str:
        """Make the workspace's own overlay network (or find it, left by a start that
        failed after making it); return its id."""
        sp = self.spawner
        spec = network_spec(self.name, self.labels)
        for _attempt in range(2):
            found = [
                n
                for n in await sp.docker("networks", names=[spec["name"]])
                if n.get("Name") == spec["name"]
            ]
            if found:
                return str(found[0]["Id"])
            try:
                created = await sp.docker("create_network", **spec)
                return str(created["Id"])
            except APIError as e:
                if e.status_code != 409:  # made meanwhile by a concurrent start: look again
                    raise
        raise RuntimeError(f"overlay network {spec['name']} could not be made")

    async def remove_network(self, limit: float = 60) -> None:
        """Remove the workspace's network and wait until it is gone, up to `limit` seconds.

        While the removed service's task still shuts down on its node, the manager either
        refuses (retried here) or only marks the network for deletion and drops it once
        the task let go; either way a stopped workspace leaves no network behind."""
        sp = self.spawner
        name = network_name(self.name)
        deadline = time.monotonic() + limit
        asked = False
        while True:
            found = [n for n in await sp.docker("networks", names=[name]) if n.get("Name") == name]
            if not found:
                return
            if time.monotonic() > deadline:
                sp.log.warning("%s: network %s still there after %ss", sp._log_name, name, limit)
                return
            try:
                if not asked:
                    await sp.docker("remove_network", found[0]["Id"])
                    asked = True
            except NotFound:
                return
            except APIError as e:
                sp.log.debug("%s: network %s not removed yet: %s", sp._log_name, name, e)
            await asyncio.sleep(0.5)

    async def tasks(self) -> list[dict[str, Any]]:
        try:
            return list(await self.spawner.docker("tasks", filters={"service": self.name}))
        except NotFound:
            return []

    async def task(self) -> dict[str, Any] | None:
        return current_task(await self.tasks())

    async def wait_running(self, limit: float) -> dict[str, Any]:
        """Return the running task; raise with Swarm's reason when it fails or does not
        run within `limit` seconds (e.g. no node has the memory the profile reserves)."""
        sp = self.spawner
        sp.emit(60, "Waiting for Swarm to start the workspace")
        deadline = time.monotonic() + limit
        last = ""
        while True:
            task = await self.task()
            if task is not None:
                state = task["Status"]["State"]
                if state == "running" and published_port(task, sp.port):
                    node = await sp.docker("inspect_node", task["NodeID"])
                    sp.emit(70, f"Running on swarm node {node_address(node)}")
                    return task
                if state in ENDED and task.get("DesiredState") not in LIVE:
                    problem = task_problem(task)
                    raise RuntimeError(f"Workspace did not start on the swarm: {problem}")
                message = task_problem(task)
                if message != last and state == "pending" and task["Status"].get("Err"):
                    sp.emit(65, message)  # e.g. "no suitable node (insufficient resources)"
                last = message
            if time.monotonic() > deadline:
                raise TimeoutError(f"Workspace did not run on the swarm in {limit:.0f}s: {last}")
            await asyncio.sleep(0.5)

    async def check_alive(self) -> None:
        """Raise, with the last log lines, when the server exited during start-up.

        Swarm would restart it (possibly elsewhere), but a server that dies at start-up
        nearly always dies again: the spawn page gets its logs now instead. A task Swarm
        rejected (a node without the image) is not an exit; Swarm tries another node."""
        tasks = await self.tasks()
        if not tasks:
            raise RuntimeError(f"Swarm service {self.name} disappeared during start-up")
        exited = [t for t in tasks if t["Status"]["State"] in ("failed", "complete")]
        if exited:
            task = exited[0]
            from .clone import last_lines

            logs = await self.logs(10, False)
            raise RuntimeError(
                f"Workspace exited during start-up ({task_problem(task)}): {last_lines(logs)}"
            )

    async def address(self) -> tuple[str, int]:
        """(node address, published port) of the running task."""
        sp = self.spawner
        task = await self.task()
        if task is None:
            raise RuntimeError(f"Swarm service {self.name} has no task")
        port = published_port(task, sp.port)
        if port is None or not task.get("NodeID"):
            raise RuntimeError(f"Swarm service {self.name}: {task_problem(task)}")
        node = await sp.docker("inspect_node", task["NodeID"])
        return node_address(node), port

    async def poll(self) -> int | str | None:
        """None while the workspace runs or Swarm is bringing it back (a move or a
        restart); otherwise why it stopped. A running task elsewhere is followed."""
        task = await self.task()
        if task is None:
            return 0
        state = task["Status"]["State"]
        if task.get("DesiredState") in LIVE and (state in STARTING or state == "running"):
            if state == "running":
                await self.follow_task()
            return None
        return task_problem(task)

    async def follow_task(self) -> bool:
        """Point the Hub's route at where the task runs now; True when it moved.

        JupyterHub keeps a server's address in its database and the proxy's table and
        never re-reads it from the spawner, so both are updated here: the Server's ip and
        port (committed), then the proxy route (`Proxy.add_user`, the call the Hub makes
        after a spawn)."""
        sp = self.spawner
        server = sp.server
        if server is None:
            return False
        try:
            ip, port = await self.address()
        except RuntimeError:
            return False
        if (server.ip, int(server.port)) == (ip, port):
            return False
        sp.log.warning(
            "%s: swarm moved the workspace from %s:%s to %s:%s; updating the route",
            sp._log_name,
            server.ip,
            server.port,
            ip,
            port,
        )
        server.ip, server.port = ip, port
        if sp.db is not None:
            sp.db.commit()
        proxy = (getattr(sp.user, "settings", None) or {}).get("proxy")
        if proxy is not None and not sp.pending:
            await proxy.add_user(sp.user, sp.name)
        return True

    async def remove(self) -> None:
        sp = self.spawner
        target = sp.object_id or self.name
        try:
            await sp.docker("remove_service", target)
        except NotFound:
            pass
        except APIError as e:
            if e.status_code != 404:
                raise
        await self.remove_network()

    async def status(self, base: dict[str, Any]) -> dict[str, Any]:
        """RUNNING, STOPPED or ERROR (with `reason`) from the service's task, with the node."""
        sp = self.spawner
        try:
            service = await sp.docker("inspect_service", self.name)
        except NotFound:
            service = None
        except APIError as e:
            return {**base, "state": "ERROR", "reason": f"Docker swarm error: {e}"}
        if service is None:
            if sp.last_error:
                return {**base, "state": "ERROR", "reason": sp.last_error}
            return {**base, "state": "STOPPED", "reason": None, "container": None}
        task = await self.task()
        base = {**base, "container": {"id": service["ID"][:12], "name": self.name}}
        if task is None:
            return {**base, "state": "ERROR", "reason": "swarm service has no task"}
        state = task["Status"]["State"]
        if state == "running" and task.get("DesiredState") == "running":
            node = await sp.docker("inspect_node", task["NodeID"])
            base["node"] = node_address(node)
            return {
                **base,
                "state": "RUNNING",
                "reason": None,
                "started_at": task["Status"].get("Timestamp"),
            }
        if task.get("DesiredState") in LIVE and state in STARTING:
            return {**base, "state": "RUNNING", "reason": None, "pending": task_problem(task)}
        return {**base, "state": "ERROR", "reason": task_problem(task)}

    async def logs(self, tail: int, timestamps: bool) -> str:
        try:
            raw = await self.spawner.docker(
                "service_logs",
                self.name,
                stdout=True,
                stderr=True,
                tail=tail,
                timestamps=timestamps,
            )
        except NotFound:
            return ""
        if isinstance(raw, bytes | bytearray):
            return bytes(raw).decode("utf-8", "replace")
        return b"".join(raw).decode("utf-8", "replace")
