"""Codeyard's Hub settings and the state folder's secrets.

`CodeyardHub` holds the few choices an admin makes (admin user, approval, database,
addresses, limits, culling). Each can be set in the site config file as
`c.CodeyardHub.<name> = ...`, or through the `CODEYARD_*` environment variable named in
its help. `jupyterhub_config.py` turns them into JupyterHub, authenticator and spawner
config, but only where the site config did not already set that value.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Float, Integer, Unicode, default, validate
from traitlets.config import Configurable


def _env(name: str, fallback: str) -> str:
    return os.environ.get(name) or fallback


def _env_bool(name: str, fallback: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return fallback
    return value.strip().lower() in {"1", "true", "yes", "on"}


class CodeyardHub(Configurable):
    """Site settings for a Codeyard Hub."""

    state_dir = Unicode(
        help="""Folder for the Hub's database, secrets, workspace homes and logs.

        Env: CODEYARD_STATE. Default: ~/.cache/codeyard/state.
        """,
    ).tag(config=True)

    @default("state_dir")
    def _default_state_dir(self) -> str:
        return _env("CODEYARD_STATE", str(Path.home() / ".cache" / "codeyard" / "state"))

    @validate("state_dir")
    def _check_state_dir(self, proposal: dict[str, Any]) -> str:
        return os.path.abspath(os.path.expanduser(proposal["value"]))

    admin_user = Unicode(
        help="""User name that becomes admin. Sign up with this name to become admin.

        NativeAuthenticator approves it without an admin (there is none yet), so sign it
        up right after the first start. Env: CODEYARD_ADMIN. Default: admin.
        """,
    ).tag(config=True)

    @default("admin_user")
    def _default_admin_user(self) -> str:
        return _env("CODEYARD_ADMIN", "admin")

    @validate("admin_user")
    def _check_admin_user(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"].strip().lower()
        if not value or "/" in value:
            raise ValueError(f"Bad admin user name {proposal['value']!r}")
        return value

    require_approval = Bool(
        help="""Whether an admin must approve each sign-up before it can log in.

        Env: CODEYARD_REQUIRE_APPROVAL (1/0). Default: off (open sign-up).
        """,
    ).tag(config=True)

    @default("require_approval")
    def _default_require_approval(self) -> bool:
        return _env_bool("CODEYARD_REQUIRE_APPROVAL", False)

    database_url = Unicode(
        help="""SQLAlchemy URL of the Hub database, e.g. postgresql://user@db/jupyterhub.

        PostgreSQL needs a driver in the Hub's environment (`pip install psycopg2`).
        Env: CODEYARD_DATABASE_URL. Default: SQLite in the state folder.
        """,
    ).tag(config=True)

    @default("database_url")
    def _default_database_url(self) -> str:
        url = os.environ.get("CODEYARD_DATABASE_URL", "")
        return url or f"sqlite:///{os.path.join(self.state_dir, 'jupyterhub.sqlite')}"

    @validate("database_url")
    def _check_database_url(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"]
        if not value.startswith(("sqlite://", "postgresql", "mysql")):
            raise ValueError(f"Unsupported database URL {value!r}")
        return value

    bind_url = Unicode(
        help="""Public URL of the Hub (its proxy). Env: CODEYARD_BIND_URL.

        Default http://127.0.0.1:8000: local only. Put a TLS-terminating reverse proxy in
        front for other machines.
        """,
    ).tag(config=True)

    @default("bind_url")
    def _default_bind_url(self) -> str:
        return _env("CODEYARD_BIND_URL", "http://127.0.0.1:8000")

    hub_ip = Unicode(
        help="""Address the Hub API listens on, reachable from workspace containers.

        Default: the docker0 gateway 172.17.0.1, so containers reach the Hub and nothing
        outside does. Env: CODEYARD_HUB_IP.
        """,
    ).tag(config=True)

    @default("hub_ip")
    def _default_hub_ip(self) -> str:
        return _env("CODEYARD_HUB_IP", "172.17.0.1")

    hub_port = Integer(
        help="""Port of the Hub API on `hub_ip`. Env: CODEYARD_HUB_PORT. Default 8081.""",
    ).tag(config=True)

    @default("hub_port")
    def _default_hub_port(self) -> int:
        return int(_env("CODEYARD_HUB_PORT", "8081"))

    proxy_api_port = Integer(
        help="""Loopback port of the proxy's REST API. Env: CODEYARD_PROXY_API_PORT.""",
    ).tag(config=True)

    @default("proxy_api_port")
    def _default_proxy_api_port(self) -> int:
        return int(_env("CODEYARD_PROXY_API_PORT", "8001"))

    proxy_command = Unicode(
        help="""configurable-http-proxy executable.

        Default: the copy `hub_config/bin/install-proxy.sh` put in
        $CODEYARD_PROXY_DIR (~/.cache/codeyard/proxy), else one on PATH.
        """,
    ).tag(config=True)

    @default("proxy_command")
    def _default_proxy_command(self) -> str:
        folder = _env("CODEYARD_PROXY_DIR", str(Path.home() / ".cache" / "codeyard" / "proxy"))
        local = Path(folder) / "node_modules" / ".bin" / "configurable-http-proxy"
        return str(local) if local.exists() else "configurable-http-proxy"

    image = Unicode(
        help="""Default single-user image.

        Env: CODEYARD_IMAGE. Default: the tag `images/bin/build-images.sh` wrote to
        `<state_dir>/singleuser-image`.
        """,
    ).tag(config=True)

    @default("image")
    def _default_image(self) -> str:
        if os.environ.get("CODEYARD_IMAGE"):
            return os.environ["CODEYARD_IMAGE"]
        tag_file = Path(self.state_dir) / "singleuser-image"
        if tag_file.exists():
            return tag_file.read_text().strip()
        return "codeyard/singleuser:latest"

    images = Dict(
        help="""Images users may pick, as display name -> image. Users never type an image.

        Default: {"Codeyard (Python, JupyterLab, Jupyter AI)": <image>}.
        """,
    ).tag(config=True)

    @default("images")
    def _default_images(self) -> dict[str, str]:
        return {"Codeyard (Python, JupyterLab, Jupyter AI)": self.image}

    workspaces_per_user = Integer(
        help="""Most workspaces (named servers) one user may have. Env:
        CODEYARD_WORKSPACES_PER_USER. Default 5; 0 means no limit.""",
    ).tag(config=True)

    @default("workspaces_per_user")
    def _default_workspaces_per_user(self) -> int:
        return int(_env("CODEYARD_WORKSPACES_PER_USER", "5"))

    cull_idle_timeout = Integer(
        help="""Seconds without activity before a workspace is stopped (its files stay).

        Env: CODEYARD_CULL_TIMEOUT. Default 3600; 0 turns the idle culler off.
        """,
    ).tag(config=True)

    @default("cull_idle_timeout")
    def _default_cull_idle_timeout(self) -> int:
        return int(_env("CODEYARD_CULL_TIMEOUT", "3600"))

    cull_every = Integer(
        help="""Seconds between idle checks. Default: a tenth of the timeout, at least 60.""",
    ).tag(config=True)

    @default("cull_every")
    def _default_cull_every(self) -> int:
        return max(60, self.cull_idle_timeout // 10)

    spawn_timeout = Float(
        help="""Seconds a workspace may take from request to answering, clone included.

        Sized for a loaded 2-core host starting many jupyter-ai servers at once (20
        concurrent starts took about 300 s there). Env: CODEYARD_SPAWN_TIMEOUT. Default 600.
        """,
    ).tag(config=True)

    @default("spawn_timeout")
    def _default_spawn_timeout(self) -> float:
        return float(_env("CODEYARD_SPAWN_TIMEOUT", "600"))

    @validate("spawn_timeout")
    def _check_spawn_timeout(self, proposal: dict[str, Any]) -> float:
        if proposal["value"] <= 0:
            raise ValueError("spawn_timeout must be positive")
        return float(proposal["value"])

    profiles = Dict(
        help="""Size profiles, name -> {"display_name", "cpu", "mem"}; see
        `PlacementSpawner.profiles`. Env: CODEYARD_PROFILES as JSON. Empty: the spawner's
        defaults (small 1 CPU/2G, medium 2/4G, large 4/8G).""",
    ).tag(config=True)

    @default("profiles")
    def _default_profiles(self) -> dict[str, Any]:
        raw = os.environ.get("CODEYARD_PROFILES")
        return json.loads(raw) if raw else {}

    # ---- Placement: the host registry (docs/hub.md "Docker hosts") ----------------------

    host_provider = Unicode(
        help="""Where workspaces run: "registry" (the placement registry of Docker hosts,
        with its admin service; the local engine is registered in it at every start) or
        "local" (only the local engine, no registry or admin service). A site config that
        sets `c.PlacementSpawner.host_provider_class` wins over both.
        Env: CODEYARD_HOST_PROVIDER. Default: registry.""",
    ).tag(config=True)

    @default("host_provider")
    def _default_host_provider(self) -> str:
        return _env("CODEYARD_HOST_PROVIDER", "registry")

    @validate("host_provider")
    def _check_host_provider(self, proposal: dict[str, Any]) -> str:
        if proposal["value"] not in ("registry", "local"):
            raise ValueError(f"host_provider must be registry or local, not {proposal['value']!r}")
        return proposal["value"]

    placement_db_url = Unicode(
        help="""SQLAlchemy URL of the placement registry (hosts, credentials, placements).

        Env: CODEYARD_PLACEMENT_DB_URL. Default: SQLite `placement.sqlite` in the state
        folder.""",
    ).tag(config=True)

    @default("placement_db_url")
    def _default_placement_db_url(self) -> str:
        url = os.environ.get("CODEYARD_PLACEMENT_DB_URL", "")
        return url or f"sqlite:///{os.path.join(self.state_dir, 'placement.sqlite')}"

    placement_port = Integer(
        help="""Loopback port of the placement admin service (`codeyard-placement`); the
        Hub's proxy serves it under /services/codeyard-placement/.
        Env: CODEYARD_PLACEMENT_PORT. Default 10101.""",
    ).tag(config=True)

    @default("placement_port")
    def _default_placement_port(self) -> int:
        return int(_env("CODEYARD_PLACEMENT_PORT", "10101"))

    local_host_name = Unicode(
        help="""Registry name of the Hub's own Docker engine, registered at every start
        (once; an existing host of that name is left as the admin set it). Workspaces save
        it in their state, so keep it. Default: local.""",
    ).tag(config=True)

    @default("local_host_name")
    def _default_local_host_name(self) -> str:
        return "local"

    @property
    def placement_crypt_key(self) -> str:
        """Keys for host credentials: CODEYARD_PLACEMENT_CRYPT_KEY (`;`-separated, the first
        encrypts), else `<state>/placement_crypt_key`, made once with mode 0600."""
        return os.environ.get("CODEYARD_PLACEMENT_CRYPT_KEY") or ensure_secret(
            self.state_path("placement_crypt_key")
        )

    # ---- The shared model (docs/hub.md, hub_config/vllm/README.md) ----------------------

    llm_port = Integer(
        help="""Port of the LLM gateway (the managed service `codeyard-llm`) on `hub_ip`,
        where workspace containers reach it. Env: CODEYARD_LLM_PORT. Default 8002.""",
    ).tag(config=True)

    @default("llm_port")
    def _default_llm_port(self) -> int:
        return int(_env("CODEYARD_LLM_PORT", "8002"))

    @property
    def llm_url(self) -> str:
        """The gateway's base URL as a workspace container sees it (CODEYARD_LLM_URL)."""
        return f"http://{self.hub_ip}:{self.llm_port}"

    llm_model = Unicode(
        help="""Model name workspaces ask the gateway for (vLLM's served model name).
        Env: CODEYARD_SERVED_MODEL_NAME. Default smollm2.""",
    ).tag(config=True)

    @default("llm_model")
    def _default_llm_model(self) -> str:
        return _env("CODEYARD_SERVED_MODEL_NAME", "smollm2")

    vllm_url = Unicode(
        help="""An already-running (external) vLLM the gateway forwards to. Set, nothing is
        started; empty, `make up` starts vLLM on 127.0.0.1:`vllm_port` (hub_config/up.d).
        Env: CODEYARD_VLLM_URL.""",
    ).tag(config=True)

    @default("vllm_url")
    def _default_vllm_url(self) -> str:
        return os.environ.get("CODEYARD_VLLM_URL", "")

    vllm_port = Integer(
        help="""Loopback port of the vLLM `make up` starts. Env: CODEYARD_VLLM_PORT.
        Default 8003 (8001 is the proxy API); keep in step with hub_config/up.d/10-vllm.sh.""",
    ).tag(config=True)

    @default("vllm_port")
    def _default_vllm_port(self) -> int:
        return int(_env("CODEYARD_VLLM_PORT", "8003"))

    @property
    def vllm_upstream_url(self) -> str:
        return self.vllm_url or f"http://127.0.0.1:{self.vllm_port}"

    vllm_key_file = Unicode(
        help="""File with vLLM's API key, read only by the gateway. Env:
        CODEYARD_VLLM_KEY_FILE. Default <state_dir>/vllm.key (serve.sh makes it, 0600).""",
    ).tag(config=True)

    @default("vllm_key_file")
    def _default_vllm_key_file(self) -> str:
        return _env("CODEYARD_VLLM_KEY_FILE", os.path.join(self.state_dir, "vllm.key"))

    tokenizer_file = Unicode(
        help="""The served model's tokenizer.json on this machine, mounted read-only into
        workspaces so explain/rewrite count their context budget exactly (missing: they
        estimate). Env: CODEYARD_TOKENIZER_FILE. Default: tokenizer.json in
        CODEYARD_MODEL_DIR, else in $CODEYARD_CACHE/models/smollm2.""",
    ).tag(config=True)

    @default("tokenizer_file")
    def _default_tokenizer_file(self) -> str:
        if os.environ.get("CODEYARD_TOKENIZER_FILE"):
            return os.environ["CODEYARD_TOKENIZER_FILE"]
        cache = _env("CODEYARD_CACHE", str(Path.home() / ".cache" / "codeyard"))
        model_dir = _env("CODEYARD_MODEL_DIR", os.path.join(cache, "models", "smollm2"))
        return os.path.join(model_dir, "tokenizer.json")

    site_config = Unicode(
        help="""Extra JupyterHub config file loaded first (OAuth, LDAP, overrides).

        Env: CODEYARD_SITE_CONFIG. Default: <state_dir>/site_config.py if it exists.
        """,
    )

    @default("site_config")
    def _default_site_config(self) -> str:
        return _env("CODEYARD_SITE_CONFIG", os.path.join(self.state_dir, "site_config.py"))

    def state_path(self, *parts: str) -> str:
        return os.path.join(self.state_dir, *parts)


def ensure_secret(path: str, nbytes: int = 32) -> str:
    """Return the hex secret in `path`, creating it once with mode 0600.

    An existing file readable by group or others is refused, not silently fixed: its
    secret may already have leaked and should be replaced by an admin.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            raise PermissionError(
                f"{path} has mode {mode:o}; secrets must be 0600. Replace the secret"
                " (delete the file and restart) and check who could read it."
            ) from None
        with open(path) as f:
            return f.read().strip()
    with os.fdopen(fd, "w") as f:
        value = secrets.token_hex(nbytes)
        f.write(value + "\n")
    return value


SECRET_FILES = (
    "jupyterhub_cookie_secret",
    "crypt_key",
    "proxy_token",
    "metrics_token",
    "placement_crypt_key",
)


def ensure_secrets(settings: CodeyardHub) -> list[str]:
    """Create every secret the Hub needs in the state folder (once, 0600)."""
    os.makedirs(settings.state_dir, mode=0o700, exist_ok=True)
    paths = [settings.state_path(name) for name in SECRET_FILES]
    for path in paths:
        ensure_secret(path)
    return paths


if __name__ == "__main__":
    for p in ensure_secrets(CodeyardHub()):
        print(p)
