"""`PlacementSpawner`: DockerSpawner that places each workspace on a Docker host.

A workspace is a JupyterHub named server. Its container runs on a host chosen by the
host provider (`codeyard.placement.hosts`), its files live in a persistent home on that
host, and it is created with the CPU and memory of its size profile. Every container runs
hardened (no capabilities, no new privileges, a pids limit, a read-only root) on the host's
workspace network, where workspaces cannot reach each other (`settings.py`, `network.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, ClassVar

import docker
import requests
from docker.errors import APIError, NotFound
from tornado import web
from tornado.httpclient import AsyncHTTPClient
from traitlets import Bool, Float, Integer, Unicode

from codeyard.placement.addresses import HubUnreachable
from codeyard.placement.hosts import DockerHost, HostProvider, UnknownHost
from codeyard.placement.probe import describe_error

from . import clients, egress, home_quota, homes, host_env, image_transfer, network, warm_pool
from .clone import HelperJob, HomeSetupFailed, last_lines, run_helper
from .credentials import CredentialStoreUnavailable, GitCredentialStore
from .profiles import InvalidOptions, WorkspaceOptions, git_host
from .settings import SpawnerSettings
from .swarm import SwarmWorkspace

# Exit codes of a container we stopped ourselves (clean exit, SIGTERM, SIGKILL after grace).
_STOPPED_EXIT_CODES = {0, 137, 143}


class PlacementSpawner(SpawnerSettings):
    """Spawns each workspace in its own container on a host chosen by a `HostProvider`.

    Its traitlets and options (profiles, images, the spawn form) are in `SpawnerSettings`
    (`settings.py`). On top of DockerSpawner's hooks (`create_object`, `start_object`,
    `stop_object`, `get_ip_and_port`, `poll`), a subclass or provider can change:

    - `host_provider_class`: where workspaces run (`choose`) and how a saved host name is
      found again (`get`). Docker calls go through a client and thread pool cached per
      host (`client`, `executor`), never DockerSpawner's class-wide single ones.
    - `prepare_home()`: how the home is made on first start (empty, or a git clone).
    - `workspace_status()` / `container_logs()`: what the status and logs API report.

    State (`get_state`) holds the container id and name, the host name, and whether the
    home was made. The host survives `clear_state()` on purpose: the workspace's files are
    on that host, so a stopped workspace starts again there.
    """

    #: JupyterHub's traitlet, typed here for mypy (which cannot infer it through traitlets).
    user_options: dict[str, Any]
    #: DockerSpawner's traitlet (a dict, or a callable returning one), typed for mypy.
    extra_host_config: Any

    # ---- state ---------------------------------------------------------------------

    host_name = Unicode("", help="Name of the host this workspace lives on (from state).")
    home_ready = Bool(False, help="Whether the home was made (from state).")
    home_layout = Integer(
        0, help="The layout the home was made or converted to (`homes.HOME_LAYOUT`; state)."
    )
    last_error = Unicode("", help="Why the last start failed, for the status API.")
    warm_slot = Unicode(
        "", help="The warm-pool slot the home is in while a claimed container runs (state)."
    )

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.host_name = state.get("host", "")
        self.home_ready = bool(state.get("home_ready", False))
        self.home_layout = int(state.get("home_layout", 0))
        self.last_error = state.get("last_error", "")
        self.warm_slot = state.get("warm_slot", "")
        self._host = None

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.host_name:
            state["host"] = self.host_name
        if self.home_ready:
            state["home_ready"] = True
        if self.home_layout:
            state["home_layout"] = self.home_layout
        if self.warm_slot:
            # Kept across clear_state: until the home is moved back, this is where it is.
            state["warm_slot"] = self.warm_slot
        if self.last_error:
            state["last_error"] = self.last_error
        return state

    def clear_state(self) -> None:
        # Keep host and home_ready: the files stay on that host across stop/start.
        super().clear_state()
        self._progress_events = []

    # ---- hosts, clients, executors -------------------------------------------------

    _providers: ClassVar[dict[type, HostProvider]] = {}
    _host: DockerHost | None = None

    @property
    def host_provider(self) -> HostProvider:
        cls = self.host_provider_class
        provider = PlacementSpawner._providers.get(cls)
        if provider is None:
            provider = cls(config=self.config, log=self.log)
            PlacementSpawner._providers[cls] = provider
        return provider

    @property
    def host(self) -> DockerHost:
        """The workspace's host; raises `UnknownHost` before placement or if it is gone."""
        if self._host is None:
            if not self.host_name:
                raise UnknownHost("workspace not placed yet")
            self._host = self.host_provider.get(self.host_name)
        return self._host

    @property
    def client(self) -> docker.APIClient:
        return clients.client_for(self.host)

    @property
    def executor(self) -> ThreadPoolExecutor:
        return clients.executor_for(self.host, self.docker_workers_per_host)

    # ---- a swarm host: the workspace is a Swarm service (`swarm.py`) ---------------------

    _swarm: SwarmWorkspace | None = None

    @property
    def on_swarm(self) -> bool:
        """Whether the workspace's host is a Docker Swarm (its object is then a service)."""
        try:
            return bool(self.host_name) and self.host.is_swarm
        except UnknownHost:
            return False

    @property
    def swarm(self) -> SwarmWorkspace:
        if self._swarm is None:
            self._swarm = SwarmWorkspace(self)
        return self._swarm

    @property  # type: ignore[override]
    def object_type(self) -> str:
        """DockerSpawner's kind of object, which names its inspect/remove calls."""
        return "service" if self.on_swarm else "container"

    @property  # type: ignore[override]
    def object_id_key(self) -> str:
        return "ID" if self.on_swarm else "Id"

    async def place(self) -> DockerHost:
        """Find this workspace's host for this start.

        Normally the saved host, and the provider chooses only on the first start. A
        provider with `decides_every_start` (the registry) is asked on every start instead:
        its answer is sticky while the host is usable, and it is where an admin's pin, a
        drain or failover from a dead host take effect. A different answer than the saved
        host means the workspace moved: the old container (on the old host) is forgotten and
        the home is prepared again on the new host, which keeps an existing home there
        (shared storage) and makes one otherwise.
        """
        provider = self.host_provider
        if self.host_name and not getattr(provider, "decides_every_start", False):
            try:
                return self.host
            except UnknownHost:
                raise web.HTTPError(
                    503,
                    f"Workspace host {self.host_name!r} is not available;"
                    " its files are on that host. Ask an admin.",
                ) from None
        host = await provider.choose(self)
        if self.host_name and host.name != self.host_name:
            self.log.info("%s: moves from host %s to %s", self._log_name, self.host_name, host.name)
            self.object_id = ""
            self.object_name = self._object_name_default()
            self.home_ready = False
        self.host_name, self._host = host.name, host
        return host

    # ---- addresses ---------------------------------------------------------------------

    _hub_address: str = ""
    _egress: egress.EgressPlan | None = None

    def use_host_addresses(self, host: DockerHost) -> None:
        """Publish on `host`'s address and tell the container where the Hub is from there.

        The proxy reaches the workspace at `host.host_ip` and its published port; the
        container reaches the Hub API, its activity URL and the gateway at the host's Hub
        address (`host_env`), so nothing on the spawn path assumes the Hub's own bridge.
        """
        try:
            self._hub_address = host_env.hub_address(self.hub.ip, host)
        except HubUnreachable as e:
            raise web.HTTPError(503, "%s", str(e)) from None
        self.host_ip = host.host_ip
        self.hub_connect_url = host_env.hub_connect_url(self._hub_address, self.hub.port)

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        # The extension keeps its state beside the working tree, in the persistent home.
        env.setdefault("CODEYARD_STATE_DIR", self.state_mount)
        if self._host is None or not self._hub_address:
            return env
        return host_env.host_environment(
            env,
            self._host,
            self._hub_address,
            self.hub_service_urls,
            self.environment,
            self.extra_volumes,
            egress=self._egress,
        )

    # ---- progress ------------------------------------------------------------------

    _progress_events: list[dict[str, Any]]
    _start_done: asyncio.Event | None = None

    def emit(self, progress: int, message: str) -> None:
        """Record a progress event for the spawn page."""
        self.log.info("%s: %s", self._log_name, message)
        self._progress_events.append({"progress": progress, "message": message})

    async def progress(self):  # type: ignore[override]
        sent = 0
        while True:
            events = getattr(self, "_progress_events", [])
            while sent < len(events):
                yield events[sent]
                sent += 1
            if self._start_done is None or self._start_done.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._start_done.wait(), 0.5)
        for event in getattr(self, "_progress_events", [])[sent:]:
            yield event

    # ---- lifecycle -----------------------------------------------------------------

    def home_location(self, host: DockerHost) -> homes.HomeLocation:
        home_name = self._escape(self.name) if self.name else homes.DEFAULT_SERVER_DIR
        return homes.HomeLocation(host, self.escaped_name, home_name)

    async def prepare_home(self, host: DockerHost, opts: WorkspaceOptions) -> None:
        """Make the home on first start: an empty working tree, or a clone of the
        repository. A home that is there already is kept; if it has the layout of older
        Hubs (the home was the working tree itself), the helper converts it (`homes.py`)."""
        home = self.home_location(host)
        local = homes.can_prepare_locally(host, self.home_uid)
        layout = None
        if local:
            layout = await asyncio.wrap_future(self.executor.submit(homes.home_layout, home))
            if layout == homes.HOME_LAYOUT:
                return
        if layout is None and not opts.repo_url and local:
            self.emit(20, "Creating workspace home")
            await asyncio.wrap_future(
                self.executor.submit(homes.make_empty_home, home, self.home_uid, self.work_dir)
            )
            return
        if self.home_ready or layout is not None:
            # Never cloned into: an existing home is kept as it is, only converted.
            opts = dataclasses.replace(opts, repo_url="", branch="")
            self.emit(20, "Converting the workspace home to the current layout")
        elif opts.repo_url:
            branch = f" (branch {opts.branch})" if opts.branch else ""
            self.emit(20, f"Cloning {opts.repo_url}{branch}")
        else:
            self.emit(20, "Creating workspace home")
        if local:
            # The helper runs as the workspace user: give it the user's folder.
            await asyncio.wrap_future(
                self.executor.submit(homes.ensure_user_dir, home, self.home_uid)
            )
        await self.ensure_workspace_network()
        # Behind the host's egress proxy and rules, as the workspace will be (egress.py).
        try:
            network_env, lock = await egress.prepare_clone(self, opts.repo_url)
        except egress.EgressUnavailable as e:
            raise HomeSetupFailed(f"git clone failed: {e}") from None
        job = HelperJob(
            mode="prepare",
            user_dir=home.user_dir,
            home_name=home.home_name,
            image=self.image,
            name=f"{self.object_name}-home",
            repo_url=opts.repo_url,
            branch=opts.branch,
            uid=self.home_uid,
            mem_limit=opts.profile.mem_bytes,
            cpu_limit=opts.profile.cpu,
            labels={"codeyard.user": self.user.name, "codeyard.helper": "home"},
            host_config=self.hardening_host_config(),
            fix_owner=not local,
            allowed_protocols=tuple(sorted(self.git_schemes)),
            work_dir=self.work_dir,
            network_env=network_env,
            **self.clone_credential(opts),
        )
        try:
            await run_helper(self.docker, self.client, job, self.clone_timeout, lock=lock)
        except HomeSetupFailed as e:
            if job.credential is not None:
                raise HomeSetupFailed(
                    f"{e} (with the credential stored for this workspace; store a new one"
                    " if it was refused)"
                ) from e
            raise

    def clone_credential(self, opts: WorkspaceOptions) -> dict[str, Any]:
        """The stored git credential for this workspace's clone (`credentials.py`), as
        `HelperJob` fields; none for URLs git sends no credential over (git://)."""
        host = git_host(opts.repo_url)
        if not host or not opts.repo_url.lower().startswith(("https://", "http://")):
            return {}
        try:
            credential = GitCredentialStore.instance(config=self.config).get(
                self.user.name, self.name
            )
        except CredentialStoreUnavailable as e:
            raise HomeSetupFailed(f"git clone failed: {e}") from None
        if credential is None:
            return {}
        self.emit(22, "Using the git credential stored for this workspace")
        return {"credential": credential, "credential_host": host}

    async def pull_image(self, image: str) -> None:
        """Put `image` on this workspace's host when it lacks it (`image_transfer`: a pull
        from the site's registry, else a stream from the Hub's engine), with progress."""
        if self.pull_policy == "skip":
            return
        await image_transfer.put_image_on_host(self, image)

    async def ensure_workspace_network(self) -> None:
        """Create `workspace_network` on this workspace's host if it is not there yet."""
        await network.ensure_network(
            self.docker,
            self.host.client_key,
            self.workspace_network,
            self.workspace_network_options,
            labels={"codeyard.network": "workspaces"},
        )

    async def start(self) -> tuple[str, int]:
        self._progress_events = []
        self._start_done = asyncio.Event()
        started = time.monotonic()
        try:
            try:
                opts = self.parse_options(self.user_options or {})
            except InvalidOptions as e:
                raise web.HTTPError(400, str(e)) from None
            self.user_options = opts.to_user_options()
            # The limits before placing: the provider reserves the profile's memory.
            self.cpu_limit = opts.profile.cpu
            self.mem_limit = opts.profile.mem_bytes
            self.emit(5, "Placing workspace")
            host = await self.place()
            self.emit(10, f"Placed on host {host.name}")
            self.use_host_addresses(host)
            self.image = await self.check_allowed(opts.image_key)
            home = self.home_location(host)
            extra = dict(self.extra_volumes) if host.storage_is_local else {}
            self.volumes = {**extra, home.path: {"bind": self.home_mount, "mode": "rw"}}
            await self.pull_image(self.image)
            if self.warm_slot:
                await self.return_warm_home(host)
            prepare = not self.home_ready or self.home_layout < homes.HOME_LAYOUT
            if self.home_ready:
                # Its quota'd file system (home_quota.py), mounted again after a host restart
                # (or made, for a home from before the quota) before anything reads it.
                await home_quota.ensure_home_quota(self, host, make=not prepare)
            if prepare:
                await self.prepare_home(host, opts)
                self.home_ready = True
                self.home_layout = homes.HOME_LAYOUT
                # A new home is copied into its own file system once it is made.
                await home_quota.ensure_home_quota(self, host)
            # A container left from the previous run is replaced, so the new one gets the
            # current token, image and limits. Its logs were readable until now.
            if await self.get_object() is not None:
                await self.remove_object()
                self.object_id = ""
            # A warm container of this profile and image on this host, else a cold start.
            warm = None if self.on_swarm else await warm_pool.claim(self, host, opts.profile.name)
            ip, port = warm or await super().start()
            await self.wait_for_server(ip, port)
            self.last_error = ""
            self._last_seen_up, self._death_recorded = time.time(), False
            await self._tell_provider("started")
            self.log.info(
                "%s: container up on %s in %.1fs",
                self._log_name,
                host.name,
                time.monotonic() - started,
            )
            return ip, port
        except HomeSetupFailed as e:
            self.last_error = str(e)
            self.emit(100, str(e))
            # An HTTPError, so the Hub shows git's message on the spawn page too, not only
            # in the progress stream. Nearly always the URL, branch or access is wrong.
            raise web.HTTPError(400, "%s", str(e)) from e
        except asyncio.CancelledError:
            # The Hub gave up (start_timeout): say so in the status API.
            self.last_error = f"did not start within {self.start_timeout}s (Spawner.start_timeout)"
            raise
        except web.HTTPError as e:
            # The reason the user should read ("an admin must confirm the move"), not
            # tornado's "HTTP 409: Conflict (...)" around it.
            if e.log_message:
                self.last_error = e.log_message % e.args if e.args else e.log_message
            else:
                self.last_error = str(e)
            raise
        except Exception as e:
            self.last_error = str(e) or type(e).__name__
            raise
        finally:
            self._start_done.set()

    async def wait_for_server(self, ip: str, port: int) -> None:
        """Return when the server answers HTTP; raise with its logs if the container exits."""
        base_url = self.server.base_url if self.server else "/"
        url = f"http://{ip}:{port}{base_url}api"
        # Our own client: the shared one queues the Hub's proxy calls behind these probes.
        client = AsyncHTTPClient(force_instance=True)
        deadline = time.monotonic() + self.start_timeout
        try:
            while time.monotonic() < deadline:
                try:
                    resp = await client.fetch(url, raise_error=False, request_timeout=3)
                    if resp.code < 500:
                        self.emit(90, "Jupyter server is up")
                        return
                except Exception:  # noqa: S110 - not answering yet (refused, reset, timeout)
                    pass
                container = await self.get_object()
                if self.on_swarm:
                    await self.swarm.check_alive()
                elif container is None or not container["State"]["Running"]:
                    state = container["State"] if container else {}
                    logs = await self.container_logs(tail=10, timestamps=False)
                    raise RuntimeError(
                        f"Workspace container exited during start-up"
                        f" (code {state.get('ExitCode', '?')}): {last_lines(logs)}"
                    )
                await asyncio.sleep(self.ready_poll_interval)
            raise TimeoutError(f"Jupyter server did not answer within {self.start_timeout}s")
        finally:
            client.close()

    async def create_object(self) -> dict[str, Any]:
        """Create the container with the hardening and network of `workspace_host_config`.

        They are merged under the admin's `extra_host_config` for this one call, so
        replacing `extra_host_config` in a site config never silently drops them, while a
        key set there on purpose (e.g. `pids_limit`) still wins. On a swarm host the
        workspace is a Swarm service instead (`swarm.py`), built from the same settings.
        """
        if self.on_swarm:
            return await self.swarm.create()
        self.emit(40, "Creating container")
        await self.ensure_workspace_network()
        # The host's egress proxy (egress.py), before get_env reads where the Hub is.
        try:
            self._egress = await egress.prepare_workspace(self)
        except egress.EgressUnavailable as e:
            raise web.HTTPError(503, "%s", str(e)) from None
        configured = self.extra_host_config
        extra = self._eval_if_callable(configured)
        if inspect.isawaitable(extra):
            extra = await extra
        self.extra_host_config = {**self.workspace_host_config(), **(extra or {})}
        try:
            return await super().create_object()
        finally:
            self.extra_host_config = configured

    async def get_command(self) -> list[str]:
        command = list(await super().get_command())
        # Behind the egress proxy nothing runs until the workspace's network rules are in.
        return egress.gated_command(command) if self._egress is not None else command

    async def start_object(self) -> None:
        if self.on_swarm:
            await self.swarm.wait_running(self.start_timeout)
            return
        self.emit(60, "Starting Jupyter server")
        await super().start_object()
        if self._egress is not None:
            try:
                await egress.lock_workspace(self, self._egress)
            except egress.EgressUnavailable as e:
                raise web.HTTPError(503, "%s", str(e)) from None

    async def stop_object(self) -> None:
        if self.on_swarm:
            # A service has no stopped state: removing it stops its task.
            await self.swarm.remove()
            return
        await super().stop_object()

    async def remove_object(self) -> None:
        if self.on_swarm:
            await self.swarm.remove()
            return
        await super().remove_object()

    async def get_ip_and_port(self) -> tuple[str, int]:
        """Where the proxy reaches the server: on a swarm, the task's node and its
        host-mode port (they change when Swarm moves the task; `poll` follows them)."""
        if self.on_swarm:
            return await self.swarm.address()
        return await super().get_ip_and_port()  # type: ignore[no-any-return]

    async def stop(self, now: bool = False) -> None:
        if not self.host_name or not self.object_id:
            # Never got a container (e.g. the clone failed): nothing to stop.
            self.clear_state()
            return
        await super().stop(now=now)
        if self.warm_slot:
            await self.return_warm_home(self.host)
        await self._tell_provider("stopped")

    async def return_warm_home(self, host: DockerHost) -> None:
        """The workspace ran in a claimed warm container (`warm_pool.py`): remove that
        container (it is never reused) and move the home back out of its slot."""
        with contextlib.suppress(NotFound):
            await self.docker("remove_container", self.object_name, force=True)
        await warm_pool.release_home(self, host)
        self.object_id, self.object_name = "", self._object_name_default()

    async def _tell_provider(self, event: str) -> None:
        """Tell the provider the workspace `started` or `stopped` (least-loaded counts these).

        Only bookkeeping: a failure is logged, not raised, so it never fails a start whose
        container is already up (the Hub would lose track of it) or a stop that happened.
        """
        try:
            await getattr(self.host_provider, event)(self)
        except Exception:
            self.log.exception("%s: host provider %s() failed", self._log_name, event)

    # ---- polling: is the container running, is its machine there ------------------------

    engine_status_timeout = Float(
        10.0,
        help="""Seconds a status check (the Hub's poll, the status API) waits for a host's
        engine: to connect, and for its answer.

        A machine that died leaves an endpoint that never answers. Past this limit the
        workspace is taken for lost: the poll reports it stopped, its state becomes ERROR
        with "machine <host> unreachable since <time>", and the host is marked down in the
        registry. The Hub so notices a dead machine within `Spawner.poll_interval` (plus its
        `poll_jitter`) plus this limit. Too short, and a busy engine's slow answer passes
        for a dead machine.
        """,
    ).tag(config=True)

    #: (wall-clock time of the first failed check, the reason) while the engine is unreachable.
    _unreachable: tuple[float, str] | None = None
    #: When the last check found the engine unreachable (monotonic), to answer repeats fast.
    _unreachable_checked: float = 0.0

    async def engine_status(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call `method` of the host's status client (`clients.status_client_for`), bounded
        by `engine_status_timeout`; raise `EngineUnreachable` when the engine does not
        answer. A failure that came at once (refused, reset) is tried once more a second
        later, so a restarting engine is not taken for a dead machine."""
        host = self.host
        client = clients.status_client_for(host, self.engine_status_timeout)
        pool = clients.status_executor_for(host)
        for attempt in (1, 2):
            started = time.monotonic()
            future = pool.submit(getattr(client, method), *args, **kwargs)
            try:
                # The client's own limit applies to the connect and to each read; this one
                # bounds the whole call, whatever the transport does.
                return await asyncio.wait_for(
                    asyncio.wrap_future(future), 2 * self.engine_status_timeout + 1
                )
            except TimeoutError:
                raise clients.EngineUnreachable(
                    f"no answer within {self.engine_status_timeout:g}s"
                ) from None
            except APIError:
                # The engine answered (404 for a removed container, 500...): it is there.
                # docker's errors are requests' HTTPError, an OSError, so this comes first.
                raise
            except (requests.ConnectionError, requests.Timeout, OSError) as e:
                if attempt == 1 and time.monotonic() - started < 1:
                    await asyncio.sleep(1)
                    continue
                raise clients.EngineUnreachable(describe_error(e)) from e
        raise AssertionError("unreachable")

    async def machine_lost(self, error: str) -> str:
        """The host's engine is unreachable: keep the reason (state, status API), tell the
        provider (the registry marks the host down), and return the reason."""
        prefix = f"machine {self.host_name} unreachable since "
        if self._unreachable is None and self.last_error.startswith(prefix):
            # Found by an earlier spawner object of this workspace (the Hub makes a new one
            # after a stop): the machine has been unreachable since then, not since now.
            self._unreachable = (time.time(), self.last_error)
        first = self._unreachable is None
        if self._unreachable is None:
            since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            reason = f"machine {self.host_name} unreachable since {since} ({error})"
            self._unreachable = (time.time(), reason)
        self._unreachable_checked = time.monotonic()
        reason = self._unreachable[1]
        self.last_error = reason
        if first:
            self.log.warning("%s: %s", self._log_name, reason)
            try:
                await self.host_provider.host_unreachable(self.host_name, error)
            except Exception:
                self.log.exception("%s: host provider host_unreachable() failed", self._log_name)
            await self._tell_provider("stopped")
        return reason

    #: When a poll last found the container running (epoch seconds), for `record_died`.
    _last_seen_up: float | None = None
    #: Whether this run's death has been recorded (the Hub polls again right after one).
    _death_recorded: bool = False

    async def poll(self) -> int | str | None:
        """None while the container runs; else why not (`poll_container`).

        A workspace found gone or exited that the Hub did not stop (no stop pending: the
        container was killed, exited or removed behind its back, or its machine was lost)
        gets a `workspace.stop` record with reason "died" and the time it was last seen
        running (`spawn_events.record_died`), once: JupyterHub cleans such a server up
        without its stop event, so its usage hours would count on.
        """
        # The time the engine was asked, not answered: a container killed while the answer
        # travels was still seen up, and its hours must not run past its death.
        asked = time.time()
        status = await self.poll_container()
        if status is None:
            self._last_seen_up = asked
            self._death_recorded = False
        elif not self._stop_pending and not self._death_recorded:
            self.record_death(status)
        return status

    def record_death(self, status: int | str) -> None:
        """Record the death `poll` found, if this workspace was running as far as the Hub
        knows: seen up by a poll, or (after a Hub restart) still having a server."""
        pending = getattr(self, "_spawn_pending", False) or getattr(self, "_start_pending", False)
        last_seen = self._last_seen_up
        if last_seen is None:
            if self.server is None or pending:
                return
            activity = getattr(self.orm_spawner, "last_activity", None)
            last_seen = activity.replace(tzinfo=UTC).timestamp() if activity else time.time()
        self._death_recorded = True
        self._last_seen_up = None
        self.log.warning(
            "%s: died without a stop (%s), last seen running %s",
            self._log_name,
            status,
            datetime.fromtimestamp(last_seen, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        )
        try:
            from codeyard.central_audit.spawn_events import record_died

            record_died(self.user.name, self.name, last_seen)
        except Exception:  # bookkeeping: never fail the Hub's clean-up of the server
            self.log.exception("%s: could not record its death", self._log_name)

    async def poll_container(self) -> int | str | None:
        """None while the container runs; else why not (its exit, or its machine lost).

        Unlike DockerSpawner's, the check is bounded (`engine_status`): a dead remote
        machine makes it answer with the reason within `engine_status_timeout`, never hang.
        The Hub polls again at once after a poll reports a stop (its callbacks, then
        `User.stop`); a loss found moments ago is answered from memory then, and a host
        the provider knows to be down (`HostProvider.host_down`) is not called at all.
        """
        if not self.host_name:
            return 0
        if self.on_swarm:
            # Swarm restarts or moves the task itself; the poll follows it (`swarm.py`).
            return await self.swarm.poll()
        recent = time.monotonic() - self._unreachable_checked < self.engine_status_timeout
        if self._unreachable is not None and recent:
            return self._unreachable[1]
        # A host known to be down is not asked (the Hub polls after every failed start too).
        down = await self._host_down()
        if down is not None:
            return self.last_error or down
        try:
            container = await self.engine_status("inspect_container", self.object_name)
        except UnknownHost:
            return f"host {self.host_name!r} is gone"
        except NotFound:
            self.log.warning("%s: container %s not found", self._log_name, self.object_name)
            return 0
        except clients.EngineUnreachable as e:
            return await self.machine_lost(str(e))
        self._unreachable = None
        self.object_id = container["Id"]
        state = container["State"]
        if state["Running"]:
            return None
        return "ExitCode={ExitCode}, Error='{Error}', FinishedAt={FinishedAt}".format(**state)

    async def delete_forever(self) -> None:
        """Remove the container and forget the workspace's git credential; remove the home
        too if `delete_data_on_remove`. A new workspace of the same name starts without it."""
        try:
            GitCredentialStore.instance(config=self.config).delete(self.user.name, self.name)
        except CredentialStoreUnavailable:
            self.log.warning("%s: could not forget its git credential", self._log_name)
        if not self.host_name:
            return
        try:
            host = self.host
        except UnknownHost:
            self.log.warning("%s: host %s gone, nothing to delete", self._log_name, self.host_name)
            return
        with contextlib.suppress(NotFound):
            if self.on_swarm:
                await self.swarm.remove()
            else:
                await self.docker("remove_container", self.object_name, force=True, v=True)
        if self.home_ready:
            # Unmounts the home's file system; its image goes only with the home.
            await home_quota.release_home_quota(self, host, delete=self.delete_data_on_remove)
        if self.delete_data_on_remove and self.home_ready:
            home = self.home_location(host)
            if homes.can_prepare_locally(host, self.home_uid):
                await asyncio.wrap_future(self.executor.submit(homes.remove_home, home))
            else:
                job = HelperJob(
                    mode="remove",
                    user_dir=home.user_dir,
                    home_name=home.home_name,
                    image=self.image,
                    name=f"{self.object_name}-home",
                    uid=self.home_uid,
                    # Removing files needs no network at all.
                    host_config={**self.hardening_host_config(), "network_mode": "none"},
                    fix_owner=True,
                )
                await run_helper(self.docker, self.client, job, self.clone_timeout)
            self.log.info("%s: removed home %s", self._log_name, home.path)

    # ---- status and logs -----------------------------------------------------------

    async def workspace_status(self) -> dict[str, Any]:
        """RUNNING, STOPPED or ERROR (with `reason`), from the container itself."""
        status: dict[str, Any] = {
            "user": self.user.name,
            "workspace": self.name,
            "host": self.host_name or None,
            "user_options": self.user_options or {},
        }
        if self.on_swarm:
            return await self.swarm.status(status)
        container = None
        if self.host_name:
            # A host known to be down is not asked: its endpoint may never answer.
            down = await self._host_down()
            if down is not None:
                return {**status, "state": "ERROR", "reason": self.last_error or down}
            try:
                container = await self.engine_status("inspect_container", self.object_name)
            except (NotFound, UnknownHost):
                container = None
            except clients.EngineUnreachable as e:
                return {**status, "state": "ERROR", "reason": await self.machine_lost(str(e))}
            except APIError as e:
                return {**status, "state": "ERROR", "reason": f"Docker host error: {e}"}
        if container is None:
            if self.last_error:
                return {**status, "state": "ERROR", "reason": self.last_error}
            return {**status, "state": "STOPPED", "reason": None, "container": None}
        st = container["State"]
        status["container"] = {"id": container["Id"][:12], "name": self.object_name}
        if st.get("Running"):
            return {**status, "state": "RUNNING", "reason": None, "started_at": st["StartedAt"]}
        if st.get("OOMKilled"):
            reason = f"out of memory (limit {self.size_profile_name() or 'profile'})"
            return {**status, "state": "ERROR", "reason": reason}
        if st.get("ExitCode") not in _STOPPED_EXIT_CODES or self.active:
            reason = f"exited with code {st.get('ExitCode')}"
            if st.get("Error"):
                reason += f": {st['Error']}"
            return {**status, "state": "ERROR", "reason": reason}
        return {**status, "state": "STOPPED", "reason": None, "finished_at": st["FinishedAt"]}

    async def _host_down(self) -> str | None:
        """The provider's word that this workspace's host is down (`host_down`), or None."""
        try:
            return await self.host_provider.host_down(self.host_name)
        except Exception:
            self.log.exception("%s: host provider host_down() failed", self._log_name)
            return None

    def size_profile_name(self) -> str:
        return str((self.user_options or {}).get("profile", ""))

    async def container_logs(self, tail: int = 200, timestamps: bool = True) -> str:
        """The container's stdout and stderr, last `tail` lines; empty if no container."""
        if not self.host_name:
            return ""
        if self.on_swarm:
            return await self.swarm.logs(tail, timestamps)
        try:
            raw = await self.docker(
                "logs", self.object_name, stdout=True, stderr=True, tail=tail, timestamps=timestamps
            )
        except NotFound:
            return ""
        return raw.decode("utf-8", "replace")
