"""Codeyard's JupyterHub configuration.

Start with `jupyterhub -f hub_config/jupyterhub_config.py` (`make up` does this).

Order: the site config file (`CodeyardHub.site_config`, default
`<state>/site_config.py`) is loaded first, then every value below is applied only where the
site config left it unset. So OAuth, LDAP, another database or other limits are switched on
by config alone (docs/hub.md), without editing this file.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hub_secrets import ensure_secret
from hub_settings import CodeyardHub
from login_setup import configure_login
from placement_setup import PROVIDERS, configure_registry, uses_registry

from codeyard.central_audit.hubconfig import SERVICE_NAME as AUDIT_SERVICE
from codeyard.central_audit.hubconfig import configure_audit_service
from codeyard.gateway.hubconfig import SERVICE_NAME as LLM_SERVICE
from codeyard.gateway.hubconfig import configure_llm_service
from codeyard.spawner import handlers as workspace_handlers
from codeyard.spawner.warm_pool import run_with_hub

c = get_config()  # provided by traitlets when it loads this file

_site = CodeyardHub().site_config
if os.path.exists(_site):
    load_subconfig(_site)

settings = CodeyardHub(config=c)
os.makedirs(settings.state_dir, mode=0o700, exist_ok=True)


def setdefault(section, name, value):
    """Set `section.name` unless the site config set it."""
    if name not in section:
        section[name] = value


# ---- Network: public proxy on loopback, Hub API on the docker bridge -------------------
setdefault(c.JupyterHub, "bind_url", settings.bind_url)
setdefault(c.JupyterHub, "hub_ip", settings.hub_ip)
if settings.subdomain_host:
    setdefault(c.JupyterHub, "subdomain_host", settings.subdomain_host)
setdefault(c.JupyterHub, "hub_port", settings.hub_port)
# A Hub that serves other machines listens on every interface (docs/multi-machine.md): its
# own services then call it on loopback, and each workspace is told its host's address for
# the Hub (PlacementSpawner, codeyard.placement.addresses).
if settings.hub_listens_everywhere:
    setdefault(c.JupyterHub, "hub_connect_ip", "127.0.0.1")
setdefault(c.ConfigurableHTTPProxy, "api_url", f"http://127.0.0.1:{settings.proxy_api_port}")
setdefault(c.ConfigurableHTTPProxy, "command", [settings.proxy_command])
setdefault(c.ConfigurableHTTPProxy, "pid_file", settings.state_path("proxy.pid"))

# ---- State: database and secrets (made once, 0600) --------------------------------------
setdefault(c.JupyterHub, "db_url", settings.database_url)
setdefault(c.JupyterHub, "cookie_secret_file", settings.state_path("jupyterhub_cookie_secret"))
ensure_secret(c.JupyterHub.cookie_secret_file)
setdefault(c.JupyterHub, "pid_file", settings.state_path("jupyterhub.pid"))
setdefault(
    c.CryptKeeper,
    "keys",
    ensure_secret(settings.state_path("crypt_key")).split(";"),
)
setdefault(c.ConfigurableHTTPProxy, "auth_token", ensure_secret(settings.state_path("proxy_token")))

# ---- Hub restart keeps workspaces running ----------------------------------------------
setdefault(c.JupyterHub, "cleanup_servers", False)

# ---- Login: Codeyard's sign-up (hub_config/login_setup.py) ---------------------------
# NativeAuthenticator sign-up with admin names only through the one-time bootstrap link,
# a lock after failed logins, and bcrypt off the event loop (codeyard.hubauth).
configure_login(c, settings)

# ---- Workspaces: named servers in PlacementSpawner containers -------------------------
setdefault(c.JupyterHub, "spawner_class", "codeyard.spawner.PlacementSpawner")
setdefault(c.JupyterHub, "allow_named_servers", True)
setdefault(c.JupyterHub, "named_server_limit_per_user", settings.workspaces_per_user)
setdefault(c.JupyterHub, "default_url", "/hub/home")
setdefault(c.Spawner, "default_url", "/lab")
setdefault(c.Spawner, "start_timeout", int(settings.spawn_timeout))
setdefault(c.Spawner, "http_timeout", int(settings.spawn_timeout))
setdefault(c.Spawner, "poll_interval", settings.poll_interval)
setdefault(c.DockerSpawner, "image", settings.image)
setdefault(c.DockerSpawner, "allowed_images", settings.images)
setdefault(c.DockerSpawner, "remove", False)
# Egress: each host's proxy with the admin's allow-list (codeyard.spawner.egress).
setdefault(c.EgressProxy, "image", settings.egress_image)
setdefault(c.EgressProxy, "allowed_hosts", settings.egress_allow)
if settings.profiles:
    setdefault(c.PlacementSpawner, "profiles", settings.profiles)
setdefault(c.LocalHostProvider, "storage_root", settings.state_path("homes"))
# Each home its own file system of this size (codeyard.spawner.home_quota); "0" = none.
setdefault(c.PlacementSpawner, "home_quota", settings.home_quota)
# Where workspaces run: the placement registry by default (hub_config/placement_setup.py);
# CODEYARD_HOST_PROVIDER=local, or a site config's host_provider_class, chooses otherwise.
setdefault(c.PlacementSpawner, "host_provider_class", PROVIDERS[settings.host_provider])
setdefault(c.JupyterHub, "extra_handlers", list(workspace_handlers.handlers))
# Warm pools (docs/warm-pool.md): idle until an admin gives a host a pool size.
run_with_hub()
# Hosts without the image pull it from the registry (or get it streamed when there is none).
setdefault(c.ImageDistribution, "registry", settings.registry)
setdefault(c.ImageDistribution, "registry_username", settings.registry_username)
setdefault(c.ImageDistribution, "registry_password", settings.registry_password)
setdefault(c.ImageDistribution, "registry_ca_file", settings.registry_ca_file)
# The home page lists workspaces, and a link to a stopped one starts it (hub_config/templates).
# No unnamed "My Server": links without a workspace (user-redirect) go to one named "default".
setdefault(
    c.JupyterHub,
    "template_paths",
    [os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")],
)
setdefault(c.JupyterHub, "default_server_name", "default")

# ---- Services: idle culler and a metrics scraper --------------------------------------
services = list(c.JupyterHub.get("services", []))
roles = list(c.JupyterHub.get("load_roles", []))
if settings.cull_idle_timeout > 0:
    services.append(
        {
            "name": "idle-culler",
            # A Hub started in the background (`make up`) runs with SIGINT ignored, and its
            # services inherit that; the Hub stops a service with SIGINT and waits 10 s
            # before SIGTERM. The culler keeps no state, so SIGINT ends it at once.
            "command": [
                sys.executable,
                "-c",
                "import runpy, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                "runpy.run_module('jupyterhub_idle_culler', run_name='__main__', alter_sys=True)",
                f"--timeout={settings.cull_idle_timeout}",
                f"--cull-every={settings.cull_every}",
            ],
        }
    )
    roles.append(
        {
            "name": "idle-culler",
            "description": "Stop idle workspaces; their files stay.",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        }
    )
# /hub/metrics answers only tokens with read:metrics (admins, and this service's token,
# which a Prometheus scrape job reads from <state>/metrics_token).
setdefault(c.JupyterHub, "authenticate_prometheus", True)
services.append(
    {"name": "metrics", "api_token": ensure_secret(settings.state_path("metrics_token"))}
)
roles.append({"name": "metrics", "scopes": ["read:metrics"], "services": ["metrics"]})
c.JupyterHub.services = services
c.JupyterHub.load_roles = roles

# ---- Placement: the host registry's admin service, the local engine registered ---------
if uses_registry(c):
    configure_registry(c, settings)

# ---- The shared model: the LLM gateway as a managed service ---------------------------
# The gateway listens on the docker bridge (hub_ip) so workspace containers reach it, and
# forwards to vLLM on loopback: the one `make up` starts (hub_config/up.d/10-vllm.sh) or
# the external `CodeyardHub.vllm_url`. vLLM is not a Hub service, so a Hub restart does not
# reload the model. Its settings (`c.GatewayApp.*` in the site config) go on its command line.
# It runs at niceness -10: it uses a few ms of CPU per call but sits on the path of every
# token, and on busy cores its wake-ups otherwise queue behind vLLM and the workspaces
# (docs/gateway.md, "Several processes under contention"). Without CAP_SYS_NICE it warns.
setdefault(c.GatewayApp, "nice", -10)
if not any(s.get("name") == LLM_SERVICE for s in c.JupyterHub.services):
    configure_llm_service(
        c,
        ip=settings.hub_ip,
        port=settings.llm_port,
        upstream_url=settings.vllm_upstream_url,
        key_file=settings.vllm_key_file,
        audit_log=settings.llm_audit_log,
        central_audit_url=f"http://{settings.hub_ip}:{settings.audit_port}/services/{AUDIT_SERVICE}",
    )
# Workspaces call it with their own JUPYTERHUB_API_TOKEN (explain, rewrite, Jupyternaut), at
# the address their own host reaches the Hub at: PlacementSpawner sets CODEYARD_LLM_URL and
# CODEYARD_AUDIT_URL per host from `hub_service_urls` (a site config's own value in
# c.Spawner.environment wins).
TOKENIZER_IN_WORKSPACE = "/opt/codeyard/tokenizer.json"
setdefault(
    c.PlacementSpawner,
    "hub_service_urls",
    {
        "CODEYARD_LLM_URL": settings.llm_url_template,
        "CODEYARD_AUDIT_URL": settings.audit_url_template,
    },
)
workspace_env = dict(c.Spawner.environment) if "environment" in c.Spawner else {}
workspace_env.setdefault("CODEYARD_LLM_MODEL", settings.llm_model)
if settings.patch_only:
    workspace_env.setdefault("CODEYARD_PATCH_ONLY", "1")
# ---- The central audit: every workspace (and the gateway) sends its records there ------
if not any(s.get("name") == AUDIT_SERVICE for s in c.JupyterHub.services):
    configure_audit_service(
        c,
        ip=settings.hub_ip,
        port=settings.audit_port,
        db_url=settings.audit_db_url,
        hmac_key_file=settings.audit_hmac_key_file,
        signing_key_file=settings.audit_signing_key_file,
        retention_days=settings.audit_retention_days,
        admin_users=[settings.admin_user],
        writer_services=[LLM_SERVICE],
        spawn_events_dir=settings.state_path("spawn-events"),
    )
if os.path.isfile(settings.tokenizer_file) and "extra_volumes" not in c.PlacementSpawner:
    c.PlacementSpawner.extra_volumes = {
        settings.tokenizer_file: {"bind": TOKENIZER_IN_WORKSPACE, "mode": "ro"}
    }
    workspace_env.setdefault("CODEYARD_TOKENIZER_FILE", TOKENIZER_IN_WORKSPACE)
c.Spawner.environment = workspace_env
