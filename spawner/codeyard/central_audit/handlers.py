"""HTTP of the central audit: the JSON API, the exports and the admin page.

Authentication is HubOAuth (a token in `Authorization`, or the OAuth cookie of a browser
that signed in through the Hub); what a caller may do follows from its scopes (`scopes`).
Store calls (SQLAlchemy) run in a thread pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from typing import Any
from urllib.parse import urlencode

from jupyterhub.services.auth import HubOAuthenticated
from tornado import httpclient, web

from codeyard.jsonapi import JSONError, JSONHandlerMixin, status_shape

from .chain import sha256_text
from .scopes import Caller
from .store import AuditStore, BadBatch, Filters, parse_jsonl
from .usage_report import (
    DAY,
    by_group,
    charts,
    compute_usage,
    days_between,
    rows_of,
    to_csv,
)

CSV_COLUMNS = (
    "source",
    "user",
    "workspace",
    "pos",
    "epoch",
    "seq",
    "action",
    "outcome",
    "ts",
    "received",
    "record_hash",
    "prev_digest",
    "digest",
    "body",
)
PAGE_LIMIT = 200


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    caller: Caller | None = None

    @property
    def store(self) -> AuditStore:
        return self.settings["codeyard_audit"]  # type: ignore[no-any-return]

    @property
    def hub_auth(self):  # type: ignore[no-untyped-def,override]
        return self.settings["hub_auth"]

    async def prepare(self) -> None:
        # sync=False: the Hub round trip must not block the loop other workspaces post to
        model = await self.hub_auth.get_user(self, sync=False)
        self.caller = Caller.from_model(model) if model else None
        self._hub_auth_user_cache = model

    def check_xsrf_cookie(self) -> None:
        # a token in a header is never sent by a forged cross-site form
        if self.request.headers.get("Authorization"):
            return
        super().check_xsrf_cookie()

    async def blocking(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self.settings["codeyard_executor"], fn, *args
        )

    def filters(self) -> Filters:
        """The query's filters; a caller who is not admin is narrowed to their own records."""
        assert self.caller is not None

        def text(name: str) -> str | None:
            value = self.get_query_argument(name, "").strip()
            return value or None

        def number(name: str) -> float | None:
            value = text(name)
            if value is None:
                return None
            try:
                return float(value)
            except ValueError:
                raise JSONError(
                    400, "bad_request", f"{name} must be a number (epoch seconds)"
                ) from None

        path_hash = text("path_hash")
        path = self.get_query_argument("path", "")
        if path and not path_hash:
            path_hash = sha256_text(path)
        user = text("user")
        if not self.caller.admin:
            if user not in (None, self.caller.name):
                raise JSONError(403, "forbidden", "you may read only your own records")
            user = self.caller.name
        return Filters(
            user=user,
            workspace=text("workspace"),
            action=text("action"),
            path_hash=path_hash,
            since=number("since"),
            until=number("until"),
            outcome=text("outcome"),
        )


class APIHandler(JSONHandlerMixin, BaseHandler):
    error_shape = staticmethod(status_shape)

    def get_login_url(self) -> str:
        raise web.HTTPError(403, "no Hub token or OAuth cookie")

    def signed_in(self) -> Caller:
        if self.caller is None:
            raise JSONError(403, "forbidden", "no Hub token or OAuth cookie")
        return self.caller

    def admin(self) -> Caller:
        caller = self.signed_in()
        if not caller.admin:
            raise JSONError(403, "forbidden", "this needs the audit admin scope")
        return caller

    def send(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def body_json(self) -> Any:
        try:
            return json.loads(self.request.body or b"null")
        except ValueError:
            raise JSONError(400, "bad_request", "the body is not JSON") from None


class RecordsHandler(APIHandler):
    async def post(self) -> None:
        """A batch `{"records": [{"epoch", "seq", "hash", "record"}, ...]}` from its source."""
        caller = self.signed_in()
        source = caller.source()
        if source is None:
            raise JSONError(
                403, "forbidden", "only a workspace server's or a service's token may write"
            )
        owner, workspace, name, is_workspace = source
        body = self.body_json()
        entries = body.get("records") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise JSONError(400, "bad_request", 'the body must be {"records": [...]}')
        claimed = body.get("workspace")
        if is_workspace and claimed not in (None, workspace):
            raise JSONError(403, "forbidden", f"this token writes for workspace {workspace!r}")
        try:
            results = await self.blocking(
                lambda: self.store.ingest(
                    owner, workspace, name, entries, override_user=is_workspace
                )
            )
        except BadBatch as e:
            raise JSONError(400, "bad_request", str(e)) from None
        self.send({"source": name, "results": results})

    async def get(self) -> None:
        self.signed_in()
        filters = self.filters()
        fmt = self.get_query_argument("format", "json")
        if fmt == "jsonl":
            self.set_header("Content-Type", "application/x-ndjson")
            self.set_header("Content-Disposition", 'attachment; filename="codeyard-audit.jsonl"')
            lines = await self.blocking(lambda: list(self.store.export_lines(filters)))
            for line in lines:
                self.write(json.dumps(line, sort_keys=True) + "\n")
            self.finish()
        elif fmt == "csv":
            rows = await self.blocking(lambda: list(self.store.query(filters)))
            out = io.StringIO()
            writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", 'attachment; filename="codeyard-audit.csv"')
            self.finish(out.getvalue())
        elif fmt == "json":
            try:
                limit = int(self.get_query_argument("limit", "1000"))
            except ValueError:
                raise JSONError(400, "bad_request", "limit must be an integer") from None
            rows = await self.blocking(lambda: list(self.store.query(filters, limit)))
            self.send({"records": rows})
        else:
            raise JSONError(400, "bad_request", "format must be json, jsonl or csv")


class ChainsHandler(APIHandler):
    async def get(self) -> None:
        caller = self.signed_in()
        user = None if caller.admin else caller.name
        self.send({"chains": await self.blocking(lambda: self.store.chains(user))})


class CheckpointsHandler(APIHandler):
    async def post(self) -> None:
        self.admin()
        self.send({"checkpoints": await self.blocking(self.store.checkpoint)})


class PublicKeyHandler(web.RequestHandler):
    """The checkpoints' public key: public, so anyone can check an export."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/x-pem-file")
        self.finish(self.settings["codeyard_audit"].public_key_pem)


class VerifyLocalHandler(APIHandler):
    async def post(self) -> None:
        """`{"user", "workspace", "log": <the local audit.jsonl text>}`: what differs."""
        caller = self.signed_in()
        body = self.body_json()
        if not isinstance(body, dict) or not isinstance(body.get("log"), str):
            raise JSONError(400, "bad_request", 'the body must hold "log", the JSONL text')
        user = str(body.get("user") or caller.name)
        workspace = str(body.get("workspace") or "")
        if not workspace:
            raise JSONError(400, "bad_request", "workspace is required")
        if user != caller.name and not caller.admin:
            raise JSONError(403, "forbidden", "you may check only your own workspaces")
        local = parse_jsonl(body["log"])
        report = await self.blocking(lambda: self.store.compare_local(f"{user}/{workspace}", local))
        self.send(report)


class PageHandler(BaseHandler):
    """The admin page: filters, each chain's state, export links. Users see their own."""

    async def get(self) -> None:
        if self.caller is None:
            self.redirect(self.get_login_url())
            return
        filters = self.filters()
        user = None if self.caller.admin else self.caller.name
        rows, chains = await self.blocking(
            lambda: (list(self.store.query(filters, PAGE_LIMIT)), self.store.chains(user))
        )
        query = {k: v[0].decode() for k, v in self.request.query_arguments.items() if v}
        template = self.settings["codeyard_jinja"].get_template("records.html")
        self.finish(
            template.render(
                caller=self.caller,
                rows=rows,
                chains=chains,
                query=query,
                limit=PAGE_LIMIT,
                prefix=self.settings["codeyard_prefix"],
                qs=urlencode({k: v for k, v in query.items() if k not in ("format", "limit")}),
            )
        )


GROUPS_CACHE_SECONDS = 60.0


async def hub_groups(settings: dict[str, Any]) -> dict[str, list[str]]:
    """group -> members, from the Hub's API with the service's own token (cached a minute;
    {} when the Hub does not answer, so the page still shows users)."""
    cached = settings.get("codeyard_groups")
    now = time.monotonic()
    if cached is not None and now - cached[0] < GROUPS_CACHE_SECONDS:
        return cached[1]  # type: ignore[no-any-return]
    hub_auth = settings["hub_auth"]
    request = httpclient.HTTPRequest(
        hub_auth.api_url.rstrip("/") + "/groups",
        headers={"Authorization": f"token {hub_auth.api_token}"},
        request_timeout=10,
    )
    try:
        resp = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        listing = json.loads(resp.body) if resp.code == 200 else []
        groups = {str(g["name"]): [str(u) for u in g.get("users") or []] for g in listing}
    except (OSError, ValueError, KeyError, TypeError):
        groups = {}
    settings["codeyard_groups"] = (now, groups)
    return groups


class UsageMixin(BaseHandler):
    """The usage query: `days` (a window ending now, default 14), or `since`/`until`; a user
    who is not admin sees their own usage only, and no group sums."""

    async def usage(self) -> dict[str, Any]:
        assert self.caller is not None
        try:
            days = float(self.get_query_argument("days", "14") or 14)
        except ValueError:
            raise JSONError(400, "bad_request", "days must be a number") from None
        days = min(max(days, 1), 400)
        until = time.time()
        since = (int(until // DAY) + 1) * DAY - days * DAY
        user = self.get_query_argument("user", "").strip() or None
        if not self.caller.admin:
            if user not in (None, self.caller.name):
                raise JSONError(403, "forbidden", "you may read only your own usage")
            user = self.caller.name
        usage = await self.blocking(compute_usage, self.store, since, until, user)
        groups = await hub_groups(self.settings) if self.caller.admin else {}
        groups_of: dict[str, list[str]] = {}
        for group, members in sorted(groups.items()):
            for member in members:
                groups_of.setdefault(member, []).append(group)
        return {
            "since": since,
            "until": until,
            "days": days_between(since, until),
            "user": user,
            "usage": usage,
            "rows": rows_of(usage, groups_of),
            "group_rows": rows_of(by_group(usage, groups), group_rows=True)
            if self.caller.admin
            else [],
        }


class UsageAPIHandler(UsageMixin, APIHandler):
    async def get(self) -> None:
        """`api/usage?days=&user=&by=user|group&format=json|csv`."""
        self.signed_in()
        report = await self.usage()
        by = self.get_query_argument("by", "user")
        if by not in ("user", "group"):
            raise JSONError(400, "bad_request", "by must be user or group")
        rows = report["group_rows"] if by == "group" else report["rows"]
        fmt = self.get_query_argument("format", "json")
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header(
                "Content-Disposition", f'attachment; filename="codeyard-usage-by-{by}.csv"'
            )
            self.finish(to_csv(rows))
        elif fmt == "json":
            self.send({"since": report["since"], "until": report["until"], "rows": rows})
        else:
            raise JSONError(400, "bad_request", "format must be json or csv")


class UsagePageHandler(UsageMixin):
    """The usage page: charts per day, then tables per user and day and per group and day."""

    async def get(self) -> None:
        if self.caller is None:
            self.redirect(self.get_login_url())
            return
        try:
            report = await self.usage()
        except JSONError as err:
            raise web.HTTPError(err.status, err.message) from None
        query = {k: v[0].decode() for k, v in self.request.query_arguments.items() if v}
        template = self.settings["codeyard_jinja"].get_template("usage.html")
        self.finish(
            template.render(
                caller=self.caller,
                charts=charts(report["usage"], report["days"]),
                rows=report["rows"],
                group_rows=report["group_rows"],
                query=query,
                prefix=self.settings["codeyard_prefix"],
                qs=urlencode({k: v for k, v in query.items() if k in ("days", "user")}),
            )
        )
