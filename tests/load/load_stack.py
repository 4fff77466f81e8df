"""The system a load run drives: the project's Hub as `make up` runs it, on its own state
folder, plus two namespace machines registered in its placement registry, so that
workspaces spread over three Docker hosts (this box's engine, "local", and the two).

The Hub is `jupyterhub -f hub_config/jupyterhub_config.py` with configurable-http-proxy,
the LLM gateway and the placement service, started by `support.hub.HubProcess` (the
launcher the suites use, which sets the same CODEYARD_* settings up.sh reads) on free ports
and a fresh state folder, so a load run never touches a developer's `make up` state. The
model is the shared vLLM (CODEYARD_TEST_VLLM_URL). The Hub listens on every interface
(CODEYARD_HUB_IP=0.0.0.0) because containers on the machines reach it over the test bridge
(docs/multi-machine.md).

The image is copied to each machine before the Hub starts (`Machine.load_image`), so spawn
times measure the spawn, not a 1 GB image transfer; the copy's time is reported apart.

Clean-up, also after a failed or interrupted run: the Hub and its proxy and services stop,
every container labelled with a load user is removed from each engine, the machines are
stopped (unless an outer `with-machines.sh` owns them), and the state folder is deleted.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.hub import HubProcess, ensure_proxy
from support.hub_workspaces import registry_of
from support.machines import Machine, from_env, start_machines

LOCAL_ENGINE = "unix:///var/run/docker.sock"


@dataclass
class LoadStack:
    hub: HubProcess
    machines: list[Machine]
    user_prefix: str
    image_copy_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def proxy_pid(self) -> int:
        return int((self.hub.state_dir / "proxy.pid").read_text().strip())

    @property
    def proxy_token(self) -> str:
        return (self.hub.state_dir / "proxy_token").read_text().strip()

    @property
    def proxy_api_url(self) -> str:
        return f"http://127.0.0.1:{self.hub.proxy_api_port}"

    @property
    def health_url(self) -> str:
        """/hub/health on the Hub itself (not through the proxy): the Hub's event loop."""
        return f"http://127.0.0.1:{self.hub.hub_port}/hub/health"


def remove_user_containers(client: docker.APIClient, prefix: str) -> int:
    """Remove every container whose `codeyard.user` label starts with `prefix`."""
    removed = 0
    for c in client.containers(all=True, filters={"label": "codeyard.user"}):
        if str(c["Labels"].get("codeyard.user", "")).startswith(prefix):
            with contextlib.suppress(docker.errors.NotFound):
                client.remove_container(c["Id"], force=True)
                removed += 1
    return removed


def copy_image(machine: Machine, image: str) -> float:
    return machine.load_image(image)


@contextlib.contextmanager
def run_machines(count: int, image_store: str) -> Iterator[list[Machine]]:
    """The machines of an outer `with-machines.sh` when it describes enough, else `count` of
    our own; `image_store` (e.g. "3g") puts each one's image store on a tmpfs of that size,
    which a machine's removal frees at once, where a disk-backed store of a 1 GB image takes
    minutes to delete on this box's discard-on-delete disk."""
    shared = from_env()
    if shared is not None and len(shared) >= count:
        yield shared[:count]
        return
    with start_machines(count, data_size=image_store) as running:
        yield running


@contextlib.contextmanager
def load_stack(
    image: str,
    user_prefix: str,
    site_config: str = "",
    machine_count: int = 2,
    image_store: str = "",
    log_copy: Path | None = None,
) -> Iterator[LoadStack]:
    """The stack for one run; the Hub's log is copied to `log_copy` before its state folder
    goes, so a failed request can be traced to the Hub's side of it."""
    with run_machines(machine_count, image_store) as running:
        started = time.monotonic()
        with ThreadPoolExecutor(len(running)) as pool:
            seconds = pool.map(lambda m: copy_image(m, image), running)
            copies = dict(zip([m.name for m in running], seconds, strict=True))
        print(
            f"[load] image on the machines in {time.monotonic() - started:.0f} s", file=sys.stderr
        )
        state = Path(tempfile.mkdtemp(prefix="codeyard-load-"))
        hub = HubProcess(
            state_dir=state,
            image=image,
            proxy_command=ensure_proxy(),
            extra_env={"CODEYARD_HUB_IP": "0.0.0.0"},
            site_config=site_config,
        )
        try:
            hub.start(timeout=180)
            registry = registry_of(hub)
            for m in running:
                registry.add_server(
                    {
                        "name": m.name,
                        "endpoint": m.endpoint,
                        "credential": m.credential,
                        "storage_root": m.storage_root,
                        "storage_shared": False,
                    }
                )
            yield LoadStack(hub, running, user_prefix, copies)
        finally:
            hub.stop()
            if log_copy is not None:
                log_copy.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(OSError):
                    shutil.copyfile(hub.log_path, log_copy)
                    print(f"[load] Hub log: {log_copy}", file=sys.stderr)
            local = docker.APIClient(base_url=LOCAL_ENGINE, version="1.41")
            try:
                removed = remove_user_containers(local, user_prefix)
            finally:
                local.close()
            for m in running:
                with contextlib.suppress(Exception), m.client() as c:
                    removed += remove_user_containers(c.api, user_prefix)
            print(f"[load] removed {removed} workspace containers", file=sys.stderr)
            shutil.rmtree(state, ignore_errors=True)
