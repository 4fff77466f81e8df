"""Admin pages in the Hub's look: dashboard, servers (test/drain), registration, placements.

Server-rendered with Jinja and plain HTML forms (with the Hub's XSRF token), so they work
without a JavaScript build. The Hub's own stylesheet is served from the installed
jupyterhub package under `<prefix>hub-static/`.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub._data import DATA_FILES_PATH
from tornado import web

from ...models import ServerState
from ...probe import probe
from ...registry import RegistryError
from ...servers import HostKeyUnconfirmed
from .base import BaseHandler

STATE_CLASS = {
    "active": "cy-state-active",
    "draining": "cy-state-draining",
    "down": "cy-state-down",
}


class PageHandler(BaseHandler):
    def render_page(self, template: str, **ns: Any) -> None:
        env: Environment = self.settings["codeyard_jinja"]
        html = env.get_template(template).render(
            prefix=self.settings["codeyard_prefix"],
            hub_prefix=self.hub_auth.hub_prefix,
            user=self.current_user,
            xsrf=self.xsrf_token.decode()
            if isinstance(self.xsrf_token, bytes)
            else self.xsrf_token,
            state_class=STATE_CLASS,
            # A page's own message (a failed form) wins over one carried in the URL.
            **{
                "message": self.get_argument("message", None),
                "message_kind": self.get_argument("kind", "info"),
                **ns,
            },
        )
        self.finish(html)

    def back(self, page: str, message: str, kind: str = "info") -> None:
        from urllib.parse import urlencode

        self.redirect(
            self.settings["codeyard_prefix"]
            + page
            + "?"
            + urlencode({"message": message, "kind": kind})
        )


class DashboardPage(PageHandler):
    @web.authenticated
    async def get(self) -> None:
        servers = await self.blocking(self.registry.list_servers)
        totals = {
            "hosts": len(servers),
            "active": sum(s["state"] == "active" for s in servers),
            "draining": sum(s["state"] == "draining" for s in servers),
            "down": sum(s["state"] == "down" for s in servers),
            "running": sum(s["load"]["running"] for s in servers),
            "capacity": sum(s["max_workspaces"] for s in servers)
            if all(s["max_workspaces"] for s in servers)
            else 0,
        }
        self.render_page("dashboard.html", page="dashboard", servers=servers, totals=totals)


class ServersPage(PageHandler):
    @web.authenticated
    async def get(self) -> None:
        servers = await self.blocking(self.registry.list_servers)
        images = await self.blocking(self.registry.host_images)
        logins = await self.blocking(self.registry.registry_logins.list)
        puller = self.ctx.image_puller
        self.render_page(
            "servers.html",
            page="servers",
            servers=servers,
            images=images,
            registry_logins=logins,
            image_registry=puller.distribution.registry if puller else "",
            pulled_images=puller.images if puller else [],
        )


class RegistryLoginPage(PageHandler):
    """The Servers page's "Image registry" form: store a registry's login (encrypted)."""

    @web.authenticated
    async def post(self) -> None:
        arg = self.get_body_argument
        user = self.current_user or {}
        try:
            view = await self.blocking(
                self.registry.registry_logins.set,
                arg("registry", ""),
                arg("username", ""),
                arg("password", ""),
                by=str(user.get("name", "")),
            )
        except RegistryError as e:
            self.back("servers", str(e), "danger")
            return
        self.back(
            "servers",
            f"Stored the login {view['username']} for {view['registry']} (encrypted)",
            "success",
        )


class ServerActionPage(PageHandler):
    @web.authenticated
    async def post(self, server_id: str, action: str) -> None:
        try:
            if action == "test":

                def test() -> dict[str, Any]:
                    endpoint, kind, secret = self.registry.connection(server_id)
                    result = probe(endpoint, kind, secret, timeout=self.ctx.probe_timeout)
                    self.registry.record_probe(int(server_id), result, details=True)
                    return result

                result = await self.blocking(test)
                name = (await self.blocking(self.registry.get_server, server_id))["name"]
                if result["ok"]:
                    self.back("servers", f"{name}: OK in {result['latency_ms']} ms", "success")
                else:
                    self.back("servers", f"{name}: {result['error']}", "danger")
                return
            if action == "pull":
                server = await self.blocking(self.registry.get_server, server_id)
                puller = self.ctx.image_puller
                if puller is None or not puller.images:
                    self.back("servers", "No images configured to pull", "warning")
                    return
                puller.start(server["name"])
                self.back("servers", f"{server['name']}: pulling {', '.join(puller.images)}")
                return
            if action == "pool":
                size = self.get_body_argument("pool_size", "0").strip() or "0"
                if not size.isdigit():
                    self.back("servers", "pool size must be a whole number (0: no pool)", "danger")
                    return
                server = await self.blocking(
                    self.registry.update_server, server_id, {"pool_size": int(size)}
                )
                self.back(
                    "servers",
                    f"{server['name']} keeps {server['pool_size']} warm workspaces per pool",
                    "success",
                )
                return
            state = ServerState.draining if action == "drain" else ServerState.active
            server = await self.blocking(self.registry.set_state, server_id, state)
            self.back("servers", f"{server['name']} is now {server['state']}", "success")
        except RegistryError as e:
            self.back("servers", str(e), "danger")


class RegisterPage(PageHandler):
    @web.authenticated
    async def get(self) -> None:
        self.render_page("register.html", page="register", form={})

    def _file_or_field(self, name: str) -> str:
        files = self.request.files.get(name)
        if files and files[0]["body"]:
            return files[0]["body"].decode("utf-8", "replace")
        return self.get_body_argument(name, "")

    @web.authenticated
    async def post(self) -> None:
        arg = self.get_body_argument
        fields = ("name", "endpoint", "region", "storage_root", "hub_connect_ip", "publish_ip")
        form = {k: arg(k, "") for k in fields}
        try:
            data: dict[str, Any] = {
                **{k: v.strip() for k, v in form.items()},
                "storage_shared": bool(arg("storage_shared", "")),
                "max_workspaces": int(arg("max_workspaces", "0") or 0),
                "cpu_capacity": float(arg("cpu_capacity", "0") or 0),
                "mem_capacity": int(arg("mem_capacity", "0") or 0),
            }
        except ValueError:
            self.render_page(
                "register.html",
                page="register",
                form=form,
                message="Capacity must be numbers",
                message_kind="danger",
            )
            return
        kind = arg("kind", "none")
        if kind == "tls":
            data["credential"] = {
                "kind": "tls",
                **{p: self._file_or_field(p) for p in ("ca", "cert", "key")},
            }
        elif kind == "ssh":
            data["credential"] = {
                "kind": "ssh",
                "key": self._file_or_field("key"),
                "known_hosts": self._file_or_field("known_hosts"),
                "host_key_fingerprint": arg("host_key_fingerprint", ""),
            }
        elif kind == "token":
            data["credential"] = {"kind": "token", "token": arg("token", "")}
        try:
            server = await self.blocking(self.registry.register_pinned, data)
        except HostKeyUnconfirmed as e:
            # Step two of an SSH registration: the admin compares the fingerprint with the
            # host's own, and registers again with it (the key file has to be chosen again:
            # a browser never refills a file field).
            self.set_status(e.status)
            self.render_page(
                "register.html",
                page="register",
                form={**form, "kind": "ssh"},
                host_key={"fingerprint": e.fingerprint, "known_hosts": e.known_hosts},
                message=f"Confirm the host key of {form['endpoint']}: {e.fingerprint}",
                message_kind="warning",
            )
            return
        except RegistryError as e:
            self.set_status(e.status)
            self.render_page(
                "register.html", page="register", form=form, message=str(e), message_kind="danger"
            )
            return
        note = ""
        puller = self.ctx.image_puller
        if puller is not None and puller.applies_to(server) and puller.start(server["name"]):
            note = " Its image pull runs in the background (Images column)."
        self.back(
            "servers",
            f"Registered {server['name']}. Test it to check the connection.{note}",
            "success",
        )


class PlacementsPage(PageHandler):
    @web.authenticated
    async def get(self) -> None:
        filters = {k: self.get_argument(k, "") or None for k in ("user", "server", "state")}
        placements = await self.blocking(self.registry.list_placements, **filters)
        servers = await self.blocking(self.registry.list_servers)
        self.render_page(
            "placements.html",
            page="placements",
            placements=placements,
            servers=servers,
            filters=filters,
        )


class WorkspaceActionPage(PageHandler):
    """Pin (optionally restarting now) or confirm a move off a dead local-storage host."""

    @web.authenticated
    async def post(self, user: str, name: str, action: str) -> None:
        arg = self.get_body_argument
        try:
            if action == "confirm-move":
                await self.blocking(self.registry.confirm_replacement, user, name)
                self.back("workspaces", f"{user}/{name} will be placed again at its next start")
                return
            view = await self.blocking(
                self.registry.pin,
                user,
                name,
                arg("server", ""),
                restart=bool(arg("restart", "")),
                confirm_data_loss=bool(arg("confirm_data_loss", "")),
            )
        except RegistryError as e:
            self.back("workspaces", str(e), "danger")
            return
        note = ""
        if view["restart_requested"]:
            note = "; " + await self.ctx.restart_workspace(user, name)
        self.back("workspaces", f"{user}/{name} pinned to {view['pinned_server']}{note}", "success")


def page_handlers(prefix: str) -> list[Any]:
    return [
        (prefix, DashboardPage),
        (prefix + "servers", ServersPage),
        (prefix + "servers/new", RegisterPage),
        (prefix + r"servers/(\d+)/(test|drain|undrain|pull|pool)", ServerActionPage),
        (prefix + "image-registries", RegistryLoginPage),
        (prefix + "workspaces", PlacementsPage),
        (prefix + r"workspaces/([^/]+)/([^/]*)/(place|confirm-move)", WorkspaceActionPage),
        (prefix + "hub-static/(.*)", web.StaticFileHandler, {"path": f"{DATA_FILES_PATH}/static"}),
    ]


def jinja_env(template_path: str) -> Environment:
    return Environment(
        loader=FileSystemLoader(template_path), autoescape=select_autoescape(["html"])
    )
