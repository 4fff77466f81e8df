"""The admin REST API, under `<service prefix>api/`.

    POST/GET            servers
    GET/PATCH/DELETE    servers/{id}                 ({id} is the numeric id or the name)
    POST                servers/{id}/test            connect, ping, report facts or the error
    POST                servers/{id}/drain | undrain
    POST                servers/{id}/pull            pull the configured images now (202)
    GET                 servers/{id}/images          images on the host, pulls and failures
    GET                 image-registries             stored registry logins (never passwords)
    PUT/GET/DELETE      image-registries/{host:port} {"username", "password"}
    GET                 workspaces?user=&server=&state=
    POST                workspaces/{user}/{name}/place   {"server", "restart", "confirm_data_loss"}
    POST                workspaces/{user}/{name}/confirm-move   (data stays on the dead host)
    GET                 decisions?limit=
    GET                 policies                     available, default, per-group overrides
    PUT                 policies                     {"group" ("" = default), "policy", "options"}
    DELETE              policies/{group}             drop an admin's group override

Shapes are `registry.ServerModel` and `registry.PlacementModel`; secrets are accepted in
`credential` on POST/PATCH and never returned (only fingerprints). A registered host gets the
configured images pulled in the background after the answer (`image_pulls.ImagePuller`).
"""

from __future__ import annotations

from typing import Any

from tornado import web

from codeyard.jsonapi import JSONError

from ...models import ServerState
from ...probe import probe
from .base import APIHandler


class ServersHandler(APIHandler):
    @web.authenticated
    async def get(self) -> None:
        self.write_json(await self.run(self.registry.list_servers))

    @web.authenticated
    async def post(self) -> None:
        server = await self.run(self.registry.register_pinned, self.json_body(required=False))
        self.write_json(server, 201)
        puller = self.ctx.image_puller
        if puller is not None and puller.applies_to(server):
            puller.start(server["name"])


class ServerHandler(APIHandler):
    @web.authenticated
    async def get(self, server_id: str) -> None:
        self.write_json(await self.run(self.registry.get_server, server_id))

    @web.authenticated
    async def patch(self, server_id: str) -> None:
        self.write_json(
            await self.run(self.registry.update_pinned, server_id, self.json_body(required=False))
        )

    @web.authenticated
    async def delete(self, server_id: str) -> None:
        await self.run(self.registry.delete_server, server_id)
        self.set_status(204)
        self.finish()


class ServerTestHandler(APIHandler):
    @web.authenticated
    async def post(self, server_id: str) -> None:
        def test() -> dict[str, Any]:
            endpoint, kind, secret = self.registry.connection(server_id)
            result = probe(endpoint, kind, secret, timeout=self.ctx.probe_timeout)
            sid = self.registry.get_server(server_id)["id"]
            self.registry.record_probe(sid, result, details=True)
            return result

        result = await self.run(test)
        server = await self.run(self.registry.get_server, server_id)
        self.write_json({"server": server, "result": result})


class ServerStateHandler(APIHandler):
    @web.authenticated
    async def post(self, server_id: str, action: str) -> None:
        state = ServerState.draining if action == "drain" else ServerState.active
        self.write_json(await self.run(self.registry.set_state, server_id, state))


class ServerPullHandler(APIHandler):
    """Pull the configured images onto the host now, in the background (202 at once)."""

    @web.authenticated
    async def post(self, server_id: str) -> None:
        server = await self.run(self.registry.get_server, server_id)
        puller = self.ctx.image_puller
        if puller is None or not puller.images:
            raise JSONError(
                409, "conflict", "no images configured (PlacementService.images) to pull"
            )
        started = puller.start(server["name"])
        self.write_json({"server": server["name"], "started": started}, 202)


class ServerImagesHandler(APIHandler):
    @web.authenticated
    async def get(self, server_id: str) -> None:
        server = await self.run(self.registry.get_server, server_id)
        images = await self.run(self.registry.host_images)
        self.write_json(images.get(server["name"], []))


class RegistryLoginsHandler(APIHandler):
    @web.authenticated
    async def get(self) -> None:
        self.write_json(await self.run(self.registry.registry_logins.list))


class RegistryLoginHandler(APIHandler):
    """One image registry's login: the password goes in, never out."""

    @web.authenticated
    async def get(self, registry: str) -> None:
        self.write_json(await self.run(self.registry.registry_logins.get, registry))

    @web.authenticated
    async def put(self, registry: str) -> None:
        body = self.json_body(required=False)
        user = self.current_user or {}
        view = await self.run(
            self.registry.registry_logins.set,
            registry,
            body.get("username", ""),
            body.get("password", ""),
            by=str(user.get("name", "")),
        )
        self.write_json(view)

    @web.authenticated
    async def delete(self, registry: str) -> None:
        await self.run(self.registry.registry_logins.delete, registry)
        self.set_status(204)
        self.finish()


class WorkspacesHandler(APIHandler):
    @web.authenticated
    async def get(self) -> None:
        filters = {k: self.get_argument(k, None) for k in ("user", "server", "state")}
        self.write_json(await self.run(self.registry.list_placements, **filters))


class WorkspacePlaceHandler(APIHandler):
    """Pin a workspace to a host; it moves at its next start, or now with `restart`."""

    @web.authenticated
    async def post(self, user: str, name: str) -> None:
        body = self.json_body(required=False)
        if "server" not in body:
            raise JSONError(400, "bad_request", "'server' (id or name) is required")
        restart = bool(body.get("restart", False))
        view = await self.run(
            self.registry.pin,
            user,
            name,
            body["server"],
            restart=restart,
            confirm_data_loss=bool(body.get("confirm_data_loss", False)),
        )
        result: dict[str, Any] = {"placement": view, "restart": None}
        if restart:
            result["restart"] = await self.ctx.restart_workspace(user, name)
        self.write_json(result)


class WorkspaceConfirmMoveHandler(APIHandler):
    """The admin accepts that the workspace's data stays on its dead, non-shared host."""

    @web.authenticated
    async def post(self, user: str, name: str) -> None:
        await self.run(self.registry.confirm_replacement, user, name)
        self.write_json(await self.run(self.registry.get_placement, user, name))


class PoliciesHandler(APIHandler):
    @web.authenticated
    async def get(self) -> None:
        self.write_json(await self.run(self.registry.policies))

    @web.authenticated
    async def put(self) -> None:
        body = self.json_body(required=False)
        if not isinstance(body.get("policy"), str) or not isinstance(body.get("options", {}), dict):
            raise JSONError(
                400, "bad_request", "'policy' (a name) is required; 'options' must be an object"
            )
        await self.run(
            self.registry.set_policy,
            body["policy"],
            str(body.get("group", "")),
            body.get("options"),
        )
        self.write_json(await self.run(self.registry.policies))


class PolicyHandler(APIHandler):
    @web.authenticated
    async def delete(self, group: str) -> None:
        await self.run(self.registry.clear_policy, group)
        self.set_status(204)
        self.finish()


class DecisionsHandler(APIHandler):
    @web.authenticated
    async def get(self) -> None:
        limit = int(self.get_argument("limit", "100"))
        self.write_json(await self.run(self.registry.decisions, min(max(limit, 1), 1000)))


def api_handlers(prefix: str) -> list[tuple[str, type, dict[str, Any]] | tuple[str, type]]:
    api = prefix + "api/"
    return [
        (api + "servers", ServersHandler),
        (api + r"servers/([^/]+)", ServerHandler),
        (api + r"servers/([^/]+)/test", ServerTestHandler),
        (api + r"servers/([^/]+)/(drain|undrain)", ServerStateHandler),
        (api + r"servers/([^/]+)/pull", ServerPullHandler),
        (api + r"servers/([^/]+)/images", ServerImagesHandler),
        (api + "image-registries", RegistryLoginsHandler),
        (api + r"image-registries/([^/]+)", RegistryLoginHandler),
        (api + "workspaces", WorkspacesHandler),
        (api + r"workspaces/([^/]+)/([^/]*)/place", WorkspacePlaceHandler),
        (api + r"workspaces/([^/]+)/([^/]*)/confirm-move", WorkspaceConfirmMoveHandler),
        (api + "policies", PoliciesHandler),
        (api + r"policies/([^/]+)", PolicyHandler),
        (api + "decisions", DecisionsHandler),
    ]
